//! Client subcommands (`tend status`, `tend graph`, `tend resources`, `tend exports`): thin
//! clients of the daemon's HTTP API (see `crate::api`). They print what the API says, as text
//! for people or, with `--json`, as the API's JSON documents for scripts. An `https://`
//! `--addr` is reached over TLS (`--ca`, and `--cert`/`--key` for mTLS).

mod http;

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value as Json;

/// The daemon's default API address (`tend run --listen`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9488";

/// Options every client subcommand takes.
#[derive(clap::Args, Debug)]
pub struct ClientOpts {
    /// Address of the daemon's HTTP API: host:port (or http://host:port), or
    /// https://host:port for an API served over TLS (`tend run --api-tls-cert`).
    #[arg(long, env = "TEND_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    /// Print the API's JSON instead of text (one JSON document per line with --watch).
    #[arg(long)]
    json: bool,
    /// A file whose first line is the API's bearer token (the daemon's `--api-token-file`);
    /// the token may also come from the TEND_TOKEN environment variable.
    #[arg(long, env = "TEND_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// For an https:// address: a PEM file of the CA certificate(s) to trust for the daemon's
    /// certificate (default: the system's CA bundle).
    #[arg(long, env = "TEND_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// For an https:// address: a PEM client certificate to present, for an API that requires
    /// one (`tend run --api-client-ca`); with --key.
    #[arg(long, env = "TEND_CERT", value_name = "FILE")]
    cert: Option<std::path::PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, env = "TEND_KEY", value_name = "FILE")]
    key: Option<std::path::PathBuf>,
}

/// Arguments of `tend status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    opts: ClientOpts,
}

/// Arguments of `tend graph`.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Print the graph in Graphviz dot format.
    #[arg(long, conflicts_with = "json")]
    dot: bool,
}

/// Arguments of `tend resources` and `tend exports`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Keep printing changes as they happen, until interrupted.
    #[arg(long)]
    watch: bool,
}

/// Runs one client command on a small runtime and maps its error to exit status 1.
fn run_client<F>(name: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tend {name}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tend {name}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints to stdout, treating a closed pipe (e.g. `| head`) as the end of the output.
fn out(text: &str) -> anyhow::Result<ControlFlow<()>> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Prints to stdout (see [`out`]); a closed pipe ends the output quietly.
fn print(text: &str) -> anyhow::Result<()> {
    out(text).map(drop)
}

/// The daemon's endpoint; also sets the bearer token the requests send, if any.
fn addr(opts: &ClientOpts) -> anyhow::Result<http::Endpoint> {
    let token = match &opts.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?;
            Some(t.lines().next().unwrap_or("").trim().to_string())
        }
        None => std::env::var("TEND_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    };
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        http::set_token(t);
    }
    http::Endpoint::new(
        &opts.addr,
        http::TlsFiles {
            ca: opts.ca.as_deref(),
            cert: opts.cert.as_deref(),
            key: opts.key.as_deref(),
        },
    )
}

/// `tend status`: one screen about the host.
pub fn status(args: StatusArgs) -> ExitCode {
    run_client("status", async move {
        let a = addr(&args.opts)?;
        let info = http::get_json(&a, "/info", &[]).await?;
        let health = http::get_json(&a, "/health", &[503]).await?;
        let resources = http::get_json(&a, "/v1/resources", &[]).await?;
        if args.opts.json {
            let doc = serde_json::json!({ "info": info, "health": health, "resources": resources });
            print(&format!("{doc:#}\n"))?;
        } else {
            print(&render_status(&info, &health, &resources))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn s<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("-")
}

/// The text of `tend status`.
fn render_status(info: &Json, health: &Json, resources: &Json) -> String {
    let mut t = String::new();
    let world = &info["world"];
    let endpoints: Vec<&str> = world["endpoints"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let deploy = match info.get("deploy") {
        Some(d) if !d.is_null() => format!("{} (hash {})", d["id"], s(d, "hash")),
        _ => match info.get("program").and_then(Json::as_str) {
            Some(p) => format!("none (local program {p})"),
            None => "none".to_string(),
        },
    };
    t += &format!("host:       {}\n", s(info, "hostname"));
    t += &format!(
        "tend:       {} (build {}), up {}s\n",
        s(info, "version"),
        s(info, "build"),
        info["uptime_seconds"].as_f64().unwrap_or(0.0).round()
    );
    t += &format!(
        "world:      {}{}\n",
        s(world, "backend"),
        if endpoints.is_empty() {
            String::new()
        } else {
            format!(" ({})", endpoints.join(", "))
        }
    );
    t += &format!("deploy:     {deploy}\n");
    t += &format!(
        "graph:      generation {}, {} resources, {} edges\n",
        info["graph"]["generation"], info["graph"]["resources"], info["graph"]["edges"]
    );
    let comps: Vec<String> = health["components"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", s(v, "status")))
                .collect()
        })
        .unwrap_or_default();
    t += &format!(
        "health:     {} ({})\n",
        s(health, "status"),
        comps.join(", ")
    );
    let converged = match resources["converged"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    t += &format!("converged:  {converged}\n");
    let counts: Vec<String> = resources["counts"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    t += &format!(
        "resources:  {} total: {}\n",
        resources["resources"].as_array().map_or(0, Vec::len),
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    let list = resources["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let failed: Vec<&Json> = list.iter().filter(|r| s(r, "state") == "failed").collect();
    if !failed.is_empty() {
        t += "failed:\n";
        for r in failed {
            t += &format!("  {}: {}\n", s(r, "id"), s(r, "last_error"));
        }
    }
    let blocked: Vec<&Json> = list.iter().filter(|r| s(r, "state") == "blocked").collect();
    if !blocked.is_empty() {
        t += "blocked (a dependency failed):\n";
        for r in blocked {
            t += &format!("  {}\n", s(r, "id"));
        }
    }
    t
}

/// `tend graph [--dot]`.
pub fn graph(args: GraphArgs) -> ExitCode {
    run_client("graph", async move {
        let a = addr(&args.opts)?;
        if args.dot {
            let (_, body) = http::get(&a, "/v1/graph?format=dot", &[]).await?;
            print(&String::from_utf8_lossy(&body))?;
            return Ok(ExitCode::SUCCESS);
        }
        let g = http::get_json(&a, "/v1/graph", &[]).await?;
        if args.opts.json {
            print(&format!("{g:#}\n"))?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = format!("generation {}\n", g["generation"]);
        let res = g["resources"].as_array().cloned().unwrap_or_default();
        t += &format!("resources ({}):\n", res.len());
        for r in &res {
            t += &format!("  {}[{}]\n", s(r, "kind"), s(r, "name"));
        }
        let edges = g["edges"].as_array().cloned().unwrap_or_default();
        t += &format!("edges ({}):\n", edges.len());
        for e in &edges {
            let notify = if e["notify"].as_bool() == Some(true) {
                " (notify)"
            } else {
                ""
            };
            t += &format!("  {} -> {}{notify}\n", s(e, "from"), s(e, "to"));
        }
        print(&t)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// One row of `tend resources`.
fn resource_row(r: &Json) -> String {
    let err = r
        .get("last_error")
        .and_then(Json::as_str)
        .map(|e| format!("  error: {e}"))
        .unwrap_or_default();
    format!(
        "{:<40} {:<10} checks {:<5} changes {:<5} last change {}{err}\n",
        s(r, "id"),
        s(r, "state"),
        r["checks"],
        r["changes"],
        r.get("last_change")
            .and_then(Json::as_str)
            .unwrap_or("never"),
    )
}

/// Resources of a `/v1/resources` document by id.
fn by_id(doc: &Json, list: &str, id: impl Fn(&Json) -> String) -> BTreeMap<String, Json> {
    doc[list]
        .as_array()
        .map(|a| a.iter().map(|r| (id(r), r.clone())).collect())
        .unwrap_or_default()
}

/// Shared code of `tend resources` and `tend exports`: print a document, or watch it and print
/// each change.
async fn list_or_watch(
    args: &WatchArgs,
    path: &str,
    list: &str,
    id: fn(&Json) -> String,
    row: fn(&Json) -> String,
) -> anyhow::Result<ExitCode> {
    let a = addr(&args.opts)?;
    if !args.watch {
        let doc = http::get_json(&a, path, &[]).await?;
        if args.opts.json {
            print(&format!("{doc:#}\n"))?;
        } else {
            let items = by_id(&doc, list, id);
            if items.is_empty() {
                print(&format!("no {list}\n"))?;
            }
            for item in items.values() {
                if out(&row(item))?.is_break() {
                    break;
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut prev: BTreeMap<String, Json> = BTreeMap::new();
    let json = args.opts.json;
    http::watch(&a, &format!("{path}?watch=1"), move |ev| {
        if json {
            let data: Json = serde_json::from_str(&ev.data).unwrap_or(Json::String(ev.data));
            let line = serde_json::json!({ "id": ev.id, "event": ev.event, "data": data });
            return out(&format!("{line}\n"));
        }
        match ev.event.as_str() {
            "init" | "update" => {
                let doc: Json = serde_json::from_str(&ev.data)
                    .with_context(|| format!("event {} of {path}: data is not JSON", ev.id))?;
                let now = by_id(&doc, list, id);
                let mut t = String::new();
                if ev.event == "init" {
                    for item in now.values() {
                        t += &row(item);
                    }
                    if now.is_empty() {
                        t += &format!("no {list} yet\n");
                    }
                } else {
                    for (k, item) in &now {
                        if prev.get(k) != Some(item) {
                            t += &row(item);
                        }
                    }
                    for k in prev.keys().filter(|k| !now.contains_key(*k)) {
                        t += &format!("{k} removed\n");
                    }
                }
                prev = now;
                out(&t)
            }
            "error" => anyhow::bail!("the daemon reported an error: {}", ev.data),
            _ => Ok(ControlFlow::Continue(())),
        }
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `tend resources [--watch]`.
pub fn resources(args: WatchArgs) -> ExitCode {
    run_client("resources", async move {
        list_or_watch(
            &args,
            "/v1/resources",
            "resources",
            |r| s(r, "id").to_string(),
            resource_row,
        )
        .await
    })
}

/// One row of `tend exports`.
fn export_row(e: &Json) -> String {
    format!(
        "{}[{}] from {} to {}\n",
        s(e, "kind"),
        s(e, "name"),
        s(e, "from"),
        s(e, "to")
    )
}

/// `tend exports [--watch]`.
pub fn exports(args: WatchArgs) -> ExitCode {
    run_client("exports", async move {
        list_or_watch(
            &args,
            "/v1/exports",
            "exports",
            |e| format!("{}[{}] from {}", s(e, "kind"), s(e, "name"), s(e, "from")),
            export_row,
        )
        .await
    })
}
