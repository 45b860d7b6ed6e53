//! The deploy front end: publishing a program as the first deploy, and following the World's
//! deploys (fetch, compile, check; a deploy that does not compile or check is rejected and the
//! previous program keeps running).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use tend_engine::Engine;
use tend_lang::funcs::world::WorldView;
use tend_world::{Deploy, DeployWorld, FsWorld, NewDeploy, World, WorldError};
use tokio::sync::watch;

use crate::view::ClusterView;
use crate::FrameResult;

/// What the daemon reports about the deploy it runs: the deploy, and why the newest one was
/// rejected (if it was). Shared between the deploy follower and whoever reports it (the host record, the API).
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

    /// The deploy the daemon runs, and why the newest one was rejected (if it was).
    pub fn snapshot(&self) -> (Option<Deploy>, Option<String>) {
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
    let bundle = crate::bundle::make_bundle(program)?;
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
            signature: None,
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

/// Fetches and compiles a deploy, and has the engine check its first graph (what it built is
/// kept in the frame for the swap); returns its frames.
async fn load(
    world: &World,
    d: &Deploy,
    state_dir: &Path,
    engine: &Engine,
    hostname: &str,
) -> Result<watch::Receiver<Arc<FrameResult>>, Vec<String>> {
    let entry = fetch(world, d, state_dir)
        .await
        .map_err(|e| vec![format!("{e:#}")])?;
    let view: Arc<dyn WorldView> = ClusterView::new(world.clone());
    let schemas = engine.registry().schemas().clone();
    let mut frames = crate::mcl::start(entry, schemas, hostname.to_string(), view)?;
    let first = frames.borrow_and_update().clone();
    if let Ok(f) = &*first {
        match engine.prepare(f.graph.clone()) {
            Ok(p) => f.set_prepared(p),
            Err(errs) => return Err(f.describe(&errs)),
        }
    }
    Ok(frames)
}

/// Follows the cluster's deploys: waits (saying so) until a deploy compiles, then returns the
/// frames of the program it runs; a background task switches to every newer deploy that
/// compiles and rejects (logging why) those that do not.
pub async fn follow(
    world: World,
    state_dir: PathBuf,
    engine: Engine,
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
        match load(&world, &d, &state_dir, &engine, &hostname).await {
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
                    match load(&world, &d, &state_dir, &engine, &hostname).await {
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
