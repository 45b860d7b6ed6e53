//! `tend run`: converge this host onto a program and keep it there.
//!
//! The wiring is a stream: a *front end* turns the program into a sequence of graphs
//! ([`Frame`]s) published on a watch channel (so a burst of new graphs coalesces to the
//! newest), and the loop here swaps each one into the engine. The YAML front end yields one
//! graph, and a new one whenever the file changes; the mcl front end (when built) yields a new
//! graph whenever a value the program reads changes.
//!
//! Exit status: 0 after an orderly stop (signal) or a converged one-shot run; 1 when a
//! one-shot run ends with failed resources, or at a run-time error; 2 when the program is
//! invalid (nothing was changed on the host).

mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tend_engine::{Engine, EngineConfig, Prepared, Status, VertexState};
use tend_front::deploys::{Follow, Running};
use tend_front::signing::Trust;
use tend_front::{Frame, Program};
use tend_model::GraphSpec;
use tend_world::{Backend, World, WorldConfig};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{default_state_dir, machine_hostname, parse_seconds, print_error_lines};
use crate::logging::{self, LogFormat};
use crate::progress;

/// Arguments of `tend run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The program: a YAML graph (`.yaml`, `.yml`) or an mcl program (`.mcl`, or a directory
    /// holding `main.mcl`). An mcl program is published as the first deploy when the World
    /// has none (on the embedded store: whenever it changed); without a program, the daemon
    /// follows the World's deploys.
    pub program: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: crate::cli::ClusterFlags,
    /// Session TTL in seconds: when this host is gone longer than that, its exports and its
    /// registration disappear from the World.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub session_ttl: Duration,
    /// This host's name (default: the machine's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A label of this host, `k=v` (repeatable), in its registration: `tend deploy --selector`
    /// targets hosts by label. `os` (the OS family, e.g. `debian`) is set unless given.
    #[arg(long = "label", value_name = "K=V", value_parser = crate::cli::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where the daemon keeps its state (default: /var/lib/tend as root, else
    /// $XDG_STATE_HOME/tend or ~/.local/state/tend). Created if missing.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How many resources may be checked or applied at once (0 = automatic: eight per CPU,
    /// from 64 to 256).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub parallel: usize,
    /// Check and report what would change; change nothing.
    #[arg(long)]
    pub noop: bool,
    /// Exit once the host has been converged for this many seconds (0 = as soon as it is):
    /// status 0, or 1 when any resource failed.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub converged_timeout: Option<Duration>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter when RUST_LOG is not set (`error`, `warn`, `info`, `debug`, `trace`, or
    /// directives like `info,tend_engine=debug`).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
    /// Address of the HTTP API (health probes, metrics, state; see README): `HOST:PORT`, or
    /// `none` to disable it. Default 127.0.0.1:9488; when the default is taken the daemon
    /// warns and runs without the API.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<crate::api::Listen>,
    /// A file whose first line is the API's bearer token: every request must then send
    /// `Authorization: Bearer <token>`. A `--listen` address that is not loopback needs a
    /// token or `--api-client-ca`.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// With a token or client certificates: leave the probes (`/livez`, `/readyz`,
    /// `/health/liveness`, `/health/readiness`) open, for kubelets (with `--api-client-ca`, a
    /// client without a certificate may then connect, and is served the probes only).
    #[arg(long)]
    pub api_open_probes: bool,
    /// Serve the API over HTTPS with this PEM certificate (chain), with `--api-tls-key`.
    #[arg(long, value_name = "FILE")]
    pub api_tls_cert: Option<PathBuf>,
    /// The PEM private key of `--api-tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub api_tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA of this PEM file (mutual TLS; needs
    /// `--api-tls-cert` and `--api-tls-key`). Counts as authentication for a non-loopback
    /// `--listen`.
    #[arg(long, value_name = "FILE")]
    pub api_client_ca: Option<PathBuf>,
    /// A directory of trusted public keys (its `*.pub` files, from `tend keygen`): the host
    /// runs only deploys signed by one of them and rejects the others, keeping its program.
    /// Default: `<state-dir>/trust` when it exists; with neither, deploys are not verified.
    #[arg(long, value_name = "DIR")]
    pub trust: Option<PathBuf>,
}

/// Where a host's trusted keys live when `--trust` is not given.
fn default_trust_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("trust")
}

/// The host's trusted keys: `--trust DIR`, else `<state-dir>/trust` when it exists, else none
/// (deploys are not verified). A PROGRAM given to `tend run` is published unsigned, so it
/// cannot be combined with trusted keys (it would be refused).
fn trusted_keys(
    flag: Option<&Path>,
    state_dir: &Path,
    program: Option<&Program>,
) -> Result<Option<Arc<Trust>>, String> {
    let dir = match flag {
        Some(d) => d.to_path_buf(),
        None => {
            let d = default_trust_dir(state_dir);
            if !d.exists() || matches!(program, Some(Program::Yaml(_))) {
                return Ok(None);
            }
            d
        }
    };
    if let Some(p) = program {
        let path = match p {
            Program::Yaml(p) | Program::Mcl(p) => p,
        };
        return Err(format!(
            "{}: this host verifies deploys against the keys in {}, and a program given to `tend run` is not a signed deploy; publish it with `tend deploy --key` and run without a program",
            path.display(),
            dir.display()
        ));
    }
    Trust::load(&dir)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| e.to_string())
}

/// Runs `tend run`.
pub fn main(args: RunArgs) -> ExitCode {
    STARTED.get_or_init(Instant::now);
    if let Err(e) = logging::init(args.log_format, &args.log_level) {
        eprintln!("tend run: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match crate::cli::runtime("run", None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (code, shut_down) = rt.block_on(run(args));
    phase("run done");
    progress::finish();
    if shut_down {
        // The engine is shut down and every resource cleaned up: what is left is memory to
        // free, which the process exit does at once.
        std::mem::forget(rt);
    } else {
        // A forced stop or an error: dropping the remaining tasks kills the processes they
        // own; blocking work of a hung resource is not waited for long.
        rt.shutdown_timeout(Duration::from_millis(200));
    }
    code
}

/// Checks a frame's graph for the engine (unless its front end already had it checked); on
/// errors prints them, located in the program.
fn prepare(engine: &Engine, f: &Frame) -> Option<Prepared> {
    if let Some(p) = f.take_prepared() {
        return Some(p);
    }
    match engine.prepare(f.graph.clone()) {
        Ok(p) => Some(p),
        Err(errs) => {
            print_errors(&f.describe(&errs));
            None
        }
    }
}

/// Creates the state directory and joins the World selected by `backend`.
async fn open_world(
    backend: Backend,
    namespace: &str,
    hostname: &str,
    session_ttl: Duration,
    state_dir: &Path,
    labels: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<World> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
    let what = match &backend {
        Backend::Etcd(cfg) => format!("etcd at {}", cfg.endpoints.join(",")),
        Backend::Embedded { state_dir } => {
            format!("the embedded store in {}", state_dir.display())
        }
    };
    let mut cfg = WorldConfig::with_backend(backend, hostname);
    cfg.namespace = namespace.to_string();
    cfg.session_ttl = session_ttl;
    cfg.labels = labels.clone();
    World::connect(cfg)
        .await
        .with_context(|| format!("joining the world ({what})"))
}

fn print_errors(errors: &[String]) {
    print_error_lines(errors);
    eprintln!(
        "tend run: the program is invalid ({} error{}); nothing was changed",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// Runs `tend run`; also says whether the engine finished its shutdown (every resource
/// cleaned up), after which nothing is left to wait for.
async fn run(args: RunArgs) -> (ExitCode, bool) {
    let engine = OnceLock::new();
    let code = match run_inner(args, &engine).await {
        Ok(code) => code,
        Err(e) => {
            progress::finish();
            eprintln!("tend run: {e:#}");
            ExitCode::from(1)
        }
    };
    (code, engine.get().is_some_and(Engine::is_shut_down))
}

/// When `tend run` started (for the startup phase timings).
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Logs how long after the start a phase of the run ended (`--log-level tend::timing=debug`).
fn phase(what: &str) {
    let ms = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3;
    tracing::debug!(target: "tend::timing", phase = what, ms, "phase done");
}

async fn run_inner(args: RunArgs, engine_out: &OnceLock<Engine>) -> anyhow::Result<ExitCode> {
    let listen_addr = match args.listen {
        Some(crate::api::Listen::Addr(a)) => Some(a),
        _ => None,
    };
    let api_tls = match crate::api::tls::ApiTls::configure(
        args.api_tls_cert.as_deref(),
        args.api_tls_key.as_deref(),
        args.api_client_ca.as_deref(),
        args.api_open_probes,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tend run: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let api_auth = match crate::api::auth::ApiAuth::configure(
        listen_addr,
        args.api_token_file.as_deref(),
        api_tls.as_ref().is_some_and(|t| t.mtls),
        args.api_open_probes,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tend run: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let program = match args.program.as_deref().map(Program::of).transpose() {
        Ok(p) => p,
        Err(e) => {
            print_errors(&[e]);
            return Ok(ExitCode::from(2));
        }
    };
    let registry = Arc::new(tend_resources::registry());
    let hostname = args.hostname.clone().unwrap_or_else(machine_hostname);
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let backend = args.cluster.backend(&state_dir);
    // `local.vardir` and `local.pool` keep what they hand out here.
    tend_lang::funcs::local::set_dir(Some(state_dir.join("local")));
    // `value` resources' last values, for `value.get*` before the resources run.
    let warmed = tend_resources::value::warm(&state_dir);
    if warmed > 0 {
        tracing::debug!(values = warmed, "loaded the values kept by value resources");
    }
    let embedded = matches!(backend, Backend::Embedded { .. });
    let trust = match trusted_keys(args.trust.as_deref(), &state_dir, program.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tend run: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let running = Running::default();
    let engine = Engine::new(
        EngineConfig {
            hostname: hostname.clone(),
            state_dir: state_dir.clone(),
            parallel: args.parallel,
            noop: args.noop,
            ..EngineConfig::default()
        },
        registry.clone(),
    );
    let _ = engine_out.set(engine.clone());
    // Joining the World creates the state directory: only once the program is known valid.
    let mut labels: std::collections::BTreeMap<String, String> =
        args.labels.iter().cloned().collect();
    if !labels.contains_key("os") {
        let family = tend_lang::funcs::facts::os_family();
        if !family.is_empty() {
            labels.insert("os".into(), family);
        }
    }
    let join_world = || {
        open_world(
            backend.clone(),
            args.cluster.namespace(),
            &hostname,
            args.session_ttl,
            &state_dir,
            &labels,
        )
    };
    // A YAML graph runs locally; an mcl program (or none) goes through the World's deploys.
    let (mut frames, first, world, prepared) = match program {
        Some(Program::Yaml(path)) => {
            let mut frames = tend_front::yaml::start(path, registry.clone());
            phase("program loaded");
            let first = frames.borrow_and_update().clone();
            // Checked once: the swap below uses what this check built.
            let prepared = match &*first {
                Err(e) => {
                    print_errors(e);
                    return Ok(ExitCode::from(2));
                }
                Ok(f) => match prepare(&engine, f) {
                    Some(p) => p,
                    None => return Ok(ExitCode::from(2)),
                },
            };
            phase("program checked");
            let world = join_world().await?;
            phase("world joined");
            (frames, first, world, Some(prepared))
        }
        other => {
            if let Some(Program::Mcl(entry)) = &other {
                // Nothing is published or changed unless the program checks.
                if let Err(text) = tend_front::bundle::check_program(entry, registry.schemas()) {
                    eprint!("{text}");
                    eprintln!("tend run: the program is invalid; nothing was changed");
                    return Ok(ExitCode::from(2));
                }
            }
            let world = join_world().await?;
            if let Some(Program::Mcl(entry)) = &other {
                tend_front::deploys::publish_initial(&world, entry, embedded).await?;
            }
            say_how_deploys_are_verified(trust.as_deref(), &state_dir, embedded);
            let follow = tend_front::deploys::follow(Follow {
                world: world.clone(),
                state_dir: state_dir.clone(),
                engine: engine.clone(),
                hostname: hostname.clone(),
                running: running.clone(),
                trust: trust.clone(),
            });
            let mut sigint =
                signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
            let mut sigterm =
                signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
            let mut frames = tokio::select! {
                f = follow => f?,
                _ = sigint.recv() => return Ok(ExitCode::SUCCESS),
                _ = sigterm.recv() => return Ok(ExitCode::SUCCESS),
            };
            let first = frames.borrow_and_update().clone();
            (frames, first, world, None)
        }
    };
    let first = match &*first {
        Ok(f) => f,
        Err(errs) => {
            print_errors(errs);
            return Ok(ExitCode::from(2));
        }
    };
    let Some(prepared) = prepared.or_else(|| prepare(&engine, first)) else {
        return Ok(ExitCode::from(2));
    };
    let api_state = crate::api::ApiState::new(
        engine.clone(),
        crate::api::ApiInfo {
            hostname: hostname.clone(),
            program: args
                .program
                .as_deref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())),
            world: crate::api::WorldInfo::of(&backend),
        },
    );
    crate::api::start(args.listen, api_state.clone(), api_auth, api_tls).await?;
    // The World's reporters stop when this function returns, before the runtime does (a
    // write cut short by the runtime's shutdown is not an error worth a warning).
    let _reporters = AbortOnDrop(vec![
        report::report_host(
            world.clone(),
            running.clone(),
            engine.clone(),
            api_state.clone(),
        ),
        report::report_exports(world.clone(), api_state.clone()),
    ]);
    engine.set_world(Arc::new(world.clone()));
    tend_engine::export::spawn_exporter(engine.clone(), Arc::new(world.clone()), args.noop);

    phase("api started");
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let mut status = engine.status();
    let mut conv = Convergence {
        generation: 0,
        since: None,
        was_converged: false,
        started: Instant::now(),
        progress: args.converged_timeout.is_some() && progress::start(),
    };
    tracing::info!(
        program = %args.program.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "(following deploys)".into()),
        host = %hostname,
        state_dir = %state_dir.display(),
        resources = first.graph.resources.len(),
        noop = args.noop,
        "starting"
    );
    match engine.swap_prepared(prepared).await {
        Ok(stats) => {
            phase("first graph swapped");
            tracing::debug!(added = stats.added, duration = ?stats.duration, "first graph swapped in");
            // (Never clone a Status: it holds every vertex.)
            conv.swapped(&status.borrow_and_update(), &first.graph);
        }
        Err(errs) => {
            print_errors(&first.describe(&errs));
            engine.shutdown().await;
            return Ok(ExitCode::from(2));
        }
    };

    let mut front_end_done = false;
    loop {
        let deadline = match (args.converged_timeout, conv.since) {
            (Some(t), Some(since)) => Some(since + t),
            _ => None,
        };
        tokio::select! {
            _ = sigint.recv() => return Ok(stop(&engine, &mut sigint, &mut sigterm, "SIGINT").await),
            _ = sigterm.recv() => return Ok(stop(&engine, &mut sigint, &mut sigterm, "SIGTERM").await),
            changed = status.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the engine stopped unexpectedly");
                }
                conv.observe(&status.borrow_and_update());
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                progress::finish();
                phase("converged");
                let code = report_final(&engine, args.noop);
                phase("reported");
                engine.shutdown_for_exit().await;
                phase("engine stopped");
                return Ok(code);
            }
            changed = frames.changed(), if !front_end_done => {
                if changed.is_err() {
                    // The front end has nothing more to say: the current graph stays.
                    front_end_done = true;
                    continue;
                }
                let frame = frames.borrow_and_update().clone();
                match &*frame {
                    Err(errs) => {
                        for e in errs {
                            tracing::error!(error = %e, "new graph rejected; keeping the running one");
                        }
                        api_state.set_program_error(Some(errs.join("; ")));
                    }
                    Ok(f) => match swap(&engine, f).await {
                        Ok(stats) => {
                            api_state.set_program_error(None);
                            tracing::info!(
                                added = stats.added,
                                removed = stats.removed,
                                changed = stats.changed,
                                kept = stats.kept,
                                "new graph swapped in"
                            );
                            conv.swapped(&status.borrow_and_update(), &f.graph);
                        }
                        Err(errs) => {
                            let msgs = f.describe(&errs);
                            for e in &msgs {
                                tracing::error!(error = %e, "new graph rejected; keeping the running one");
                            }
                            api_state.set_program_error(Some(msgs.join("; ")));
                        }
                    },
                }
            }
        }
    }
}

/// Logs once, at start, whether the deploys this host follows are verified, and against what.
fn say_how_deploys_are_verified(trust: Option<&Trust>, state_dir: &Path, embedded: bool) {
    match trust {
        Some(t) => tracing::info!(
            trust = %t.dir().display(),
            keys = %t.fingerprints().join(","),
            "deploys are verified: this host runs only deploys signed by one of its trusted keys"
        ),
        // On the embedded store the deploys live in this host's own state directory.
        None if embedded => tracing::info!(
            "deploys are not verified (no trusted keys: --trust DIR or {})",
            default_trust_dir(state_dir).display()
        ),
        None => tracing::warn!(
            "deploys are not verified: whoever can write the World's deploys can run code on this host (trust signing keys with --trust DIR or {})",
            default_trust_dir(state_dir).display()
        ),
    }
}

/// Swaps a frame's graph in (as its front end prepared it, if it did).
async fn swap(
    engine: &Engine,
    f: &Frame,
) -> Result<tend_engine::SwapStats, Vec<tend_model::GraphError>> {
    match f.take_prepared() {
        Some(p) => engine.swap_prepared(p).await,
        None => engine.swap(f.graph.clone()).await,
    }
}

/// Tracks since when the host has been converged on the current graph.
struct Convergence {
    /// The engine generation of our latest swap: older statuses do not count.
    generation: u64,
    /// Converged (on the current graph) since then.
    since: Option<Instant>,
    was_converged: bool,
    started: Instant,
    /// Whether the progress bar is shown.
    progress: bool,
}

impl Convergence {
    /// A new graph was swapped in; `s` is the status right after.
    fn swapped(&mut self, s: &Status, graph: &GraphSpec) {
        self.generation = s.generation;
        self.since = None;
        self.was_converged = false;
        self.observe(s);
        if graph.resources.is_empty() {
            // Nothing can have work pending (the engine may not publish a new status for an
            // empty graph).
            self.was_converged = true;
            self.since = Some(Instant::now());
        }
    }

    /// A new status from the engine.
    fn observe(&mut self, s: &Status) {
        let failed = s.count(VertexState::Failed);
        let blocked = s.count(VertexState::Blocked);
        if self.progress {
            let settled = s.count(VertexState::Converged) + failed + blocked;
            let msg = if failed > 0 {
                format!("({failed} failed)")
            } else {
                String::new()
            };
            progress::update(settled, s.total, msg);
        }
        let converged = s.converged && s.generation >= self.generation;
        if converged && !self.was_converged {
            tracing::info!(
                resources = s.total,
                failed,
                blocked,
                elapsed = ?self.started.elapsed(),
                "converged"
            );
        }
        self.was_converged = converged;
        self.since = if converged {
            self.since.or(Some(Instant::now()))
        } else {
            None
        };
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Prints the outcome of a one-shot run and chooses the exit status.
fn report_final(engine: &Engine, noop: bool) -> ExitCode {
    let status = engine.status();
    // Read in place: the status holds every vertex.
    let s = status.borrow();
    let count = |st: VertexState| s.count(st);
    let failed = count(VertexState::Failed);
    for (id, v) in s.sorted_in(&[VertexState::Failed, VertexState::Blocked]) {
        match v.state {
            VertexState::Failed => eprintln!(
                "tend run: {id} failed: {}",
                v.last_error.as_deref().unwrap_or("unknown error")
            ),
            VertexState::Blocked => eprintln!("tend run: {id} blocked by a failed dependency"),
            _ => {}
        }
    }
    // A dry run's "would change" is converged too (nothing more to do): counted apart.
    let would = s.would_change();
    let would_text = if noop || would > 0 {
        format!("{would} would change (noop), ")
    } else {
        String::new()
    };
    eprintln!(
        "tend run: converged: {} resources, {} in state, {would_text}{} failed, {} blocked",
        s.total,
        count(VertexState::Converged).saturating_sub(would),
        failed,
        count(VertexState::Blocked)
    );
    if failed > 0 || count(VertexState::Blocked) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Orderly stop on the first signal; a second signal cancels running checks.
async fn stop(
    engine: &Engine,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
    which: &str,
) -> ExitCode {
    progress::finish();
    tracing::info!(
        signal = which,
        "shutting down (send it again to cancel running checks)"
    );
    let shutdown = engine.shutdown_for_exit();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => ExitCode::SUCCESS,
        _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
            tracing::warn!("second signal: cancelling running checks");
            engine.cancel_running();
            let _ = tokio::time::timeout(Duration::from_secs(2), shutdown).await;
            ExitCode::from(1)
        }
    }
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
