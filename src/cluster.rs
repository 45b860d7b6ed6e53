//! The daemon's side of the World: joining it (embedded store or etcd), publishing a program
//! as the first deploy, following the cluster's deploys (fetch, compile, swap; a deploy that
//! does not compile is rejected and the previous program keeps running), and keeping this
//! host's registration (deploy it runs, converged or not) up to date.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use tend_engine::Registry;
use tend_lang::funcs::world::{Export as LangExport, WorldView};
use tend_world::{
    Backend, Deploy, DeployWorld, FsWorld, HostWorld, NewDeploy, ResWorld, World, WorldConfig,
    WorldError,
};
use tokio::sync::watch;

use crate::api::{ApiState, DeployInfo, Health};
use crate::run::FrameResult;

/// Creates the state directory and joins the World selected by `backend`.
pub async fn open(
    backend: Backend,
    namespace: &str,
    hostname: &str,
    session_ttl: Duration,
    state_dir: &Path,
) -> Result<World> {
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
    World::connect(cfg)
        .await
        .with_context(|| format!("joining the world ({what})"))
}

/// What the daemon reports about the deploy it runs: the deploy, and why the newest one was
/// rejected (if it was). Shared between the deploy follower and [`report_host`].
#[derive(Clone, Default)]
pub struct Running {
    deploy: Arc<Mutex<Option<Deploy>>>,
    rejected: Arc<Mutex<Option<String>>>,
}

impl Running {
    /// The deploy id the daemon runs, if it runs one.
    pub fn id(&self) -> Option<u64> {
        self.deploy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|d| d.id)
    }

    fn set(&self, d: &Deploy) {
        *self.deploy.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn reject(&self, d: &Deploy, errs: &[String]) {
        for e in errs {
            tracing::error!(deploy = d.id, error = %e, "deploy rejected: it does not compile here; keeping the running program");
        }
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("deploy {} rejected: {}", d.id, errs.join("; ")));
    }

    fn snapshot(&self) -> (Option<Deploy>, Option<String>) {
        (
            self.deploy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            self.rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Publishes `program` as a deploy when that is what the daemon should run:
/// when the cluster has no deploy yet, or, on the embedded (single-host) store, when the
/// program differs from the latest deploy. On etcd, an existing deploy chain wins: the host
/// follows it, and `tend deploy` is how a program is published.
pub async fn publish_initial(world: &World, program: &Path, embedded: bool) -> Result<()> {
    let latest = world.latest_deploy().await?;
    if latest.is_some() && !embedded {
        let d = latest.as_ref().map(|d| d.id).unwrap_or_default();
        tracing::info!(
            deploy = d,
            program = %program.display(),
            "the cluster already has deploys: following them (publish a program with `tend deploy`)"
        );
        return Ok(());
    }
    let bundle = crate::deploy_cmd::make_bundle(program)?;
    let hash = world
        .fs_put_tree(bundle.path())
        .await
        .with_context(|| format!("uploading the bundle of {}", program.display()))?;
    if latest.as_ref().is_some_and(|d| d.bundle == hash) {
        return Ok(());
    }
    let deploy = world
        .add_deploy(NewDeploy {
            bundle: hash,
            message: format!("tend run {}", program.display()),
            author: format!("tend run@{}", world.hostname()),
            parent: latest.map(|d| d.id),
            force: false,
        })
        .await;
    match deploy {
        Ok(d) => {
            tracing::info!(deploy = d.id, program = %program.display(), "published the program as a deploy");
            Ok(())
        }
        // Another host published first: follow the chain.
        Err(WorldError::DeployConflict { latest, .. }) => {
            tracing::info!(deploy = ?latest, "another host published a deploy first: following it");
            Ok(())
        }
        Err(e) => Err(e).context("publishing the program as a deploy"),
    }
}

/// Fetches a deploy's bundle into the state directory (once) and returns its entry file.
async fn fetch(world: &World, d: &Deploy, state_dir: &Path) -> Result<PathBuf> {
    let dir = state_dir.join("deploys").join(d.id.to_string());
    if !dir.join("main.mcl").is_file() {
        let tmp = state_dir.join("deploys").join(format!(".{}.tmp", d.id));
        let _ = std::fs::remove_dir_all(&tmp);
        world
            .fs_get_tree(&d.bundle, &tmp)
            .await
            .with_context(|| format!("fetching the bundle of deploy {}", d.id))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving deploy {} into {}", d.id, dir.display()))?;
    }
    Ok(dir.join("main.mcl"))
}

/// Fetches and compiles a deploy; returns its frames.
async fn load(
    world: &World,
    d: &Deploy,
    state_dir: &Path,
    registry: &Arc<Registry>,
    hostname: &str,
) -> Result<watch::Receiver<Arc<FrameResult>>, Vec<String>> {
    let entry = fetch(world, d, state_dir)
        .await
        .map_err(|e| vec![format!("{e:#}")])?;
    let view: Arc<dyn WorldView> = ClusterView::new(world.clone());
    crate::mcl_front::start(entry, registry.clone(), hostname.to_string(), view)
}

/// Follows the cluster's deploys: waits (saying so) until a deploy compiles, then returns the
/// frames of the program it runs; a background task switches to every newer deploy that
/// compiles and rejects (logging why) those that do not.
pub async fn follow(
    world: World,
    state_dir: PathBuf,
    registry: Arc<Registry>,
    hostname: String,
    running: Running,
) -> Result<watch::Receiver<Arc<FrameResult>>> {
    let mut deploys = world.watch_deploys();
    let waiting = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!("no deploy yet: waiting for one (publish a program with `tend deploy`)");
    });
    let mut current = loop {
        let Some(d) = deploys.next().await else {
            anyhow::bail!("the world's deploy watch ended");
        };
        match load(&world, &d, &state_dir, &registry, &hostname).await {
            Ok(rx) => {
                tracing::info!(deploy = d.id, "running deploy");
                running.set(&d);
                break rx;
            }
            Err(errs) => running.reject(&d, &errs),
        }
    };
    waiting.abort();
    let (tx, out) = watch::channel(current.borrow_and_update().clone());
    tokio::spawn(async move {
        let mut program_alive = true;
        loop {
            tokio::select! {
                changed = current.changed(), if program_alive => {
                    if changed.is_err() {
                        program_alive = false;
                        continue;
                    }
                    let f = current.borrow_and_update().clone();
                    if tx.send(f).is_err() {
                        return;
                    }
                }
                next = deploys.next() => {
                    let Some(d) = next else { return };
                    if running.id() == Some(d.id) {
                        continue;
                    }
                    match load(&world, &d, &state_dir, &registry, &hostname).await {
                        Ok(mut rx) => {
                            tracing::info!(deploy = d.id, "switching to deploy");
                            running.set(&d);
                            let f = rx.borrow_and_update().clone();
                            current = rx;
                            program_alive = true;
                            if tx.send(f).is_err() {
                                return;
                            }
                        }
                        Err(errs) => running.reject(&d, &errs),
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Keeps this host's registration (deploy, converged) and the API's world health current.
pub fn report_host(
    world: World,
    running: Running,
    engine: tend_engine::Engine,
    api: ApiState,
) -> tokio::task::JoinHandle<()> {
    // The World was joined before the API started: say so at once.
    api.set_world_health(world_health(&world));
    tokio::spawn(async move {
        let mut status = engine.status();
        let mut last: Option<(Option<u64>, bool)> = None;
        let mut last_rejected: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let (deploy, rejected) = running.snapshot();
            api.set_deploy(deploy.as_ref().map(|d| DeployInfo {
                id: d.id,
                hash: d.hash.clone(),
            }));
            if rejected != last_rejected {
                api.set_program_error(rejected.clone());
                match world.host_set_error(rejected.clone()).await {
                    Ok(()) => last_rejected = rejected,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot report the rejected deploy in this host's registration")
                    }
                }
            }
            let now = (deploy.map(|d| d.id), status.borrow_and_update().converged);
            if last != Some(now) {
                match world.host_update(now.0, now.1).await {
                    Ok(()) => last = Some(now),
                    Err(e) => tracing::warn!(error = %e, "cannot update this host's registration"),
                }
            }
            api.set_world_health(world_health(&world));
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    })
}

/// Keeps the API's view of the exports this host may collect current, from the World's watch
/// cache (a local subscription: no store watch is opened).
pub fn report_exports(world: World, api: ApiState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = world.res_watch(None);
        // This host's own count can change without a collectable record changing.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                c = changes.next() => if c.is_none() { return },
                _ = tick.tick() => {}
            }
            let records = match world.res_collect(&[]).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the exports for the API");
                    continue;
                }
            };
            let docs: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    let (params, meta) = match tend_engine::export::decode(&r.data) {
                        Ok((p, m)) => (
                            p.iter()
                                .map(|(k, v)| (k.clone(), tend_engine::export::value_to_json(v)))
                                .collect::<serde_json::Map<_, _>>(),
                            m.iter()
                                .map(|(k, v)| (k.clone(), tend_engine::export::value_to_json(v)))
                                .collect::<serde_json::Map<_, _>>(),
                        ),
                        Err(_) => Default::default(),
                    };
                    serde_json::json!({
                        "kind": r.kind, "name": r.name, "from": r.from, "to": r.to,
                        "params": params, "meta": meta,
                    })
                })
                .collect();
            let metrics = crate::api::metrics::WorldMetrics {
                exports: world.own_export_count() as u64,
                collected: docs.len() as u64,
                operations_total: world
                    .op_counts()
                    .into_iter()
                    .map(|((op, result), n)| ((op.to_string(), result.to_string()), n))
                    .collect(),
                watch_events_total: world.watch_events(),
            };
            api.set_exports(docs, metrics);
        }
    })
}

fn world_health(world: &World) -> Health {
    let ws = world.status();
    let details = serde_json::json!({
        "backend": ws.backend,
        "session_ok": ws.session_ok,
        "cache_revision": ws.cache_revision,
        "subscribers": ws.subscribers,
    });
    if ws.session_ok {
        Health::Up(details)
    } else {
        Health::Down(details)
    }
}

/// The language's view of the cluster ([`WorldView`]) over the real World: exports addressed
/// to this host or to `*`, global strings, per-host string maps. Reads are served by the
/// World's watch cache; a change of anything the program read bumps [`WorldView::changes`],
/// so a new graph comes out without recompiling.
pub struct ClusterView {
    world: World,
    handle: tokio::runtime::Handle,
    tx: watch::Sender<u64>,
    watched: Mutex<std::collections::BTreeSet<String>>,
    /// The watch tasks stop once the view (its program) is gone.
    alive: Arc<()>,
}

impl ClusterView {
    /// A view for this host. Must be called inside the daemon's (multi-thread) runtime.
    pub fn new(world: World) -> Arc<Self> {
        let (tx, _) = watch::channel(0u64);
        let view = Arc::new(ClusterView {
            world: world.clone(),
            handle: tokio::runtime::Handle::current(),
            tx,
            watched: Mutex::new(Default::default()),
            alive: Arc::new(()),
        });
        view.follow("exports", world.res_watch(None));
        view
    }

    /// Bumps the change counter on every item of `changes` (once per `what`).
    fn follow(&self, what: &str, mut changes: tend_world::Changes) {
        let fresh = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(what.to_string());
        if !fresh {
            return;
        }
        let tx = self.tx.clone();
        let alive = Arc::downgrade(&self.alive);
        self.handle.spawn(async move {
            // The first item is the current state, which the caller may be reading right now;
            // but a change made since may be coalesced into it: bump for it too (an unchanged
            // table is not emitted again, so a spurious bump costs one evaluation).
            while changes.next().await.is_some() {
                if alive.strong_count() == 0 {
                    return;
                }
                tx.send_modify(|n| *n += 1);
            }
        });
    }

    /// Runs a World call from the language's evaluation (a plain thread, or a runtime worker).
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.handle.block_on(f))
        } else {
            self.handle.block_on(f)
        }
    }
}

impl WorldView for ClusterView {
    fn hostname(&self) -> String {
        self.world.hostname().to_string()
    }

    fn getval(&self, key: &str) -> Result<Option<String>, String> {
        use tend_world::StrWorld;
        self.follow(&format!("str:{key}"), self.world.str_watch(key));
        match self.block(self.world.str_get(key)) {
            Ok(v) => Ok(Some(v)),
            Err(WorldError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn kvlookup(&self, ns: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
        use tend_world::StrWorld;
        self.follow(&format!("strmap:{ns}"), self.world.strmap_watch(ns));
        self.block(self.world.strmap_get(ns))
            .map_err(|e| e.to_string())
    }

    fn schedule(&self, ns: &str) -> Result<Vec<String>, String> {
        Err(format!(
            "world.schedule({ns:?}): the scheduler is not supported yet by this build"
        ))
    }

    fn exports(&self, kind: &str) -> Result<Vec<LangExport>, String> {
        let filter = tend_world::ExportFilter {
            kind: kind.to_string(),
            ..Default::default()
        };
        let records = self
            .block(self.world.res_collect(&[filter]))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in records {
            match tend_engine::export::decode(&r.data) {
                Ok((params, meta)) => out.push(LangExport {
                    to: r.to,
                    from: r.from,
                    kind: r.kind,
                    name: r.name,
                    params,
                    meta,
                }),
                Err(e) => {
                    tracing::warn!(kind = %kind, name = %r.name, from = %r.from, error = %e, "skipping an export that does not decode")
                }
            }
        }
        Ok(out)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
