//! `tend world`: reads the World's store directly (etcd, or the embedded store in the state
//! directory, opened read-only) and prints decoded records: a table by default, JSON with
//! `--json`, again after every change with `--watch`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tend_world::inspect::Inspector;
use tend_world::store::embedded::{Embedded, LOG_FILE};
use tend_world::store::etcd::Etcd;
use tend_world::store::Store;
use tend_world::Backend;

/// Arguments of `tend world`.
#[derive(clap::Args)]
pub struct WorldArgs {
    #[command(flatten)]
    flags: crate::cli::WorldFlags,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Clone, Copy)]
enum What {
    /// Exported resources (every recipient).
    Exports(View),
    /// Global strings and per-host string maps.
    Strings(View),
    /// The deploy chain (`*` marks the latest).
    Deploys(View),
    /// Registered hosts.
    Hosts(View),
}

#[derive(clap::Args, Clone, Copy)]
struct View {
    /// Print again after every change.
    #[arg(long)]
    watch: bool,
    /// JSON instead of a table (one document per line with --watch).
    #[arg(long)]
    json: bool,
}

impl What {
    fn view(self) -> View {
        match self {
            What::Exports(v) | What::Strings(v) | What::Deploys(v) | What::Hosts(v) => v,
        }
    }

    fn areas(self) -> &'static [&'static str] {
        match self {
            What::Exports(_) => &["to"],
            What::Strings(_) => &["strings", "maps", "strmap"],
            What::Deploys(_) => &["deploys"],
            What::Hosts(_) => &["hosts"],
        }
    }
}

/// Runs `tend world`.
pub fn main(args: WorldArgs) -> ExitCode {
    let rt = match crate::cli::runtime("world", Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tend world: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn open_embedded(state_dir: &std::path::Path) -> Result<Arc<dyn Store>> {
    let log = state_dir.join(LOG_FILE);
    if !log.exists() {
        bail!(
            "no embedded store at {} (run `tend run` with this --state-dir first, or pass --etcd URL)",
            log.display()
        );
    }
    Ok(Arc::new(Embedded::open_read_only(state_dir)?))
}

async fn run(args: WorldArgs) -> Result<()> {
    let what = args.what;
    let args = args.flags;
    let view = what.view();
    let cfg = match args.backend() {
        Backend::Etcd(cfg) => cfg,
        Backend::Embedded { state_dir } => {
            let log = state_dir.join(LOG_FILE);
            let mut last = None;
            loop {
                // The owner may be running: poll the log and re-read it when it changes.
                let stamp = std::fs::metadata(&log)
                    .ok()
                    .map(|m| (m.len(), m.modified().ok()));
                if stamp != last || last.is_none() {
                    let store = open_embedded(&state_dir)?;
                    print(&Inspector::new(store, args.namespace()), what, view).await?;
                    last = stamp;
                }
                if !view.watch {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let store: Arc<dyn Store> = Arc::new(
        Etcd::connect(cfg)
            .await
            .with_context(|| format!("connecting to etcd at {}", args.cluster.etcd.join(",")))?,
    );
    let inspector = Inspector::new(store, args.namespace());
    if !view.watch {
        return print(&inspector, what, view).await;
    }
    let watches = inspector.watch(what.areas()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut w in watches {
        let tx = tx.clone();
        tokio::spawn(async move {
            while w.next().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    print(&inspector, what, view).await?;
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        print(&inspector, what, view).await?;
    }
    bail!("the watch on etcd ended")
}

async fn print(ins: &Inspector, what: What, view: View) -> Result<()> {
    let (doc, table) = match what {
        What::Exports(_) => {
            let exports = ins.exports().await?;
            let doc = Value::Array(
                exports
                    .iter()
                    .map(|e| {
                        let mut o = json!({
                            "to": e.to, "kind": e.kind, "name": e.name, "from": e.from,
                        });
                        match std::str::from_utf8(&e.data) {
                            Ok(s) => o["data"] = json!(s),
                            Err(_) => o["data_hex"] = json!(hex(&e.data)),
                        }
                        o
                    })
                    .collect(),
            );
            let rows = exports
                .iter()
                .map(|e| {
                    vec![
                        e.to.clone(),
                        e.kind.clone(),
                        e.name.clone(),
                        e.from.clone(),
                        e.data.len().to_string(),
                    ]
                })
                .collect();
            (doc, table(&["TO", "KIND", "NAME", "FROM", "BYTES"], rows))
        }
        What::Strings(_) => {
            let s = ins.strings().await?;
            let doc = json!({ "strings": s.strings, "maps": s.maps });
            let mut rows: Vec<Vec<String>> = s
                .strings
                .iter()
                .map(|(k, v)| vec![k.clone(), "".into(), v.clone()])
                .collect();
            for (k, m) in &s.maps {
                for (h, v) in m {
                    rows.push(vec![k.clone(), h.clone(), v.clone()]);
                }
            }
            (doc, table(&["KEY", "HOST (map)", "VALUE"], rows))
        }
        What::Deploys(_) => {
            let (latest, deploys) = ins.deploys().await?;
            let doc = json!({
                "latest": latest,
                "deploys": deploys.iter().map(|d| json!({
                    "id": d.id, "hash": d.hash, "bundle": d.bundle, "parent": d.parent,
                    "message": d.message, "author": d.author, "time": rfc3339(d.time_ms),
                    "signed_by": d.signature.as_ref().map(|s| tend_front::signing::fingerprint(&s.key)),
                })).collect::<Vec<_>>(),
            });
            let rows = deploys
                .iter()
                .map(|d| {
                    vec![
                        format!("{}{}", d.id, if Some(d.id) == latest { " *" } else { "" }),
                        short(&d.hash),
                        short(&d.bundle),
                        d.parent.as_deref().map(short).unwrap_or_else(|| "-".into()),
                        rfc3339(d.time_ms),
                        d.author.clone(),
                        d.signature
                            .as_ref()
                            .map_or("-".into(), |s| tend_front::signing::fingerprint(&s.key)),
                        d.message.clone(),
                    ]
                })
                .collect();
            (
                doc,
                table(
                    &[
                        "ID",
                        "HASH",
                        "BUNDLE",
                        "PARENT",
                        "TIME",
                        "AUTHOR",
                        "SIGNED BY",
                        "MESSAGE",
                    ],
                    rows,
                ),
            )
        }
        What::Hosts(_) => {
            let hosts = ins.hosts().await?;
            let doc = Value::Array(
                hosts
                    .iter()
                    .map(|h| {
                        json!({
                            "hostname": h.hostname, "version": h.version, "deploy": h.deploy,
                            "converged": h.converged, "started": rfc3339(h.started_ms),
                            "updated": rfc3339(h.updated_ms), "error": h.error,
                            "instance": (!h.instance.is_empty()).then_some(&h.instance),
                            "failed": h.failed, "blocked": h.blocked,
                            "first_failure": h.first_failure,
                            "converged_at": (h.converged_ms > 0).then(|| rfc3339(h.converged_ms)),
                            "labels": h.labels,
                        })
                    })
                    .collect(),
            );
            let rows = hosts
                .iter()
                .map(|h| {
                    vec![
                        h.hostname.clone(),
                        short_instance(&h.instance),
                        h.version.clone(),
                        if h.labels.is_empty() {
                            "-".into()
                        } else {
                            h.labels
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        h.deploy
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                        if h.converged { "yes" } else { "no" }.into(),
                        format!("{}/{}", h.failed, h.blocked),
                        rfc3339(h.updated_ms),
                        rfc3339(h.started_ms),
                        h.error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            (
                doc,
                table(
                    &[
                        "HOST",
                        "INSTANCE",
                        "VERSION",
                        "LABELS",
                        "DEPLOY",
                        "CONVERGED",
                        "FAILED/BLOCKED",
                        "LAST SEEN",
                        "STARTED",
                        "ERROR",
                    ],
                    rows,
                ),
            )
        }
    };
    if view.json {
        if view.watch {
            println!("{doc}");
        } else {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    } else {
        if view.watch {
            println!("--");
        }
        print!("{table}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    Ok(())
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
fn rfc3339(ms: u64) -> String {
    crate::api::views::rfc3339_ms(ms)
}

/// A host's instance id for the table: its first 8 hex digits (`-` when the registration
/// has none).
fn short_instance(instance: &str) -> String {
    if instance.is_empty() {
        "-".into()
    } else {
        instance.chars().take(8).collect()
    }
}
