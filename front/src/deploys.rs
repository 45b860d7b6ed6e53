//! The deploy front end: publishing a program as the first deploy, and following the World's
//! deploys (verify, fetch, compile, check; a deploy that is not signed by a trusted key when
//! the host has some, or does not compile or check, is rejected and the previous program keeps
//! running).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use tend_engine::Engine;
use tend_lang::funcs::world::WorldView;
use tend_world::{
    Deploy, DeployWorld, FsWorld, HostWorld, NewDeploy, TreeEntry, World, WorldError,
};
use tokio::sync::watch;

use crate::signing::{manifest, ManifestHead, Trust};
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

    fn reject(&self, d: &Deploy, why: &Rejected) {
        let text = match why {
            Rejected::Failed(errs) => {
                for e in errs {
                    tracing::error!(deploy = d.id, error = %e, "deploy rejected: it does not compile here; keeping the running program");
                }
                errs.join("; ")
            }
            Rejected::Refused(reason) => {
                tracing::error!(deploy = d.id, error = %reason, "deploy rejected by the signature check; keeping the running program");
                reason.clone()
            }
            Rejected::Unavailable(e) => {
                tracing::warn!(deploy = d.id, error = %e, "cannot fetch the deploy now; keeping the running program and trying again");
                return;
            }
        };
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("deploy {} rejected: {text}", d.id));
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
            target: None,
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

/// Why a host does not take a deploy.
enum Rejected {
    /// Its signature does not verify against the host's trusted keys, or it replays an older
    /// one.
    Refused(String),
    /// It does not compile or its first graph does not check.
    Failed(Vec<String>),
    /// The World could not serve its bundle now (etcd overloaded or unreachable): not a
    /// verdict on the deploy, which is fetched again later.
    Unavailable(String),
}

/// Whether an error of fetching comes from the World's store (a transient failure).
fn from_store(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<WorldError>(), Some(WorldError::Store(_))))
}

/// The first wait before fetching a deploy again, and the longest.
const REFETCH: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// The deploy a host with trusted keys verified last (the replay guard): its id and the
/// BLAKE3 hash of its signed manifest, in `<state-dir>/deploys/verified`.
fn verified_path(state_dir: &Path) -> PathBuf {
    state_dir.join("deploys").join("verified")
}

fn read_verified(state_dir: &Path) -> Result<Option<(u64, String)>, String> {
    let path = verified_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|w| w.parse::<u64>().ok()),
        words.next(),
    ) {
        (Some(id), Some(digest)) => Ok(Some((id, digest.to_string()))),
        _ => Err(format!(
            "{}: not `<deploy id> <manifest hash>`; remove it to trust the cluster's latest deploy again",
            path.display()
        )),
    }
}

fn write_verified(state_dir: &Path, id: u64, digest: &str) -> Result<(), String> {
    let path = verified_path(state_dir);
    let dir = state_dir.join("deploys");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut tmp, format!("{id} {digest}\n").as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| {
        format!(
            "cannot record the verified deploy in {}: {e}",
            path.display()
        )
    })
}

/// Verifies a deploy against the host's trusted keys and the replay guard; returns the
/// bundle's entries the signature covers.
async fn verify(
    world: &World,
    d: &Deploy,
    state_dir: &Path,
    trust: &Trust,
) -> Result<Vec<TreeEntry>, Rejected> {
    // Unsigned or signed by another key: refused before anything is read.
    trust
        .signer(d.signature.as_ref())
        .map_err(|r| Rejected::Refused(r.to_string()))?;
    let entries = world.fs_tree(&d.bundle).await.map_err(|e| {
        let text = format!("fetching the bundle of deploy {}: {e}", d.id);
        match e {
            WorldError::Store(_) => Rejected::Unavailable(text),
            _ => Rejected::Failed(vec![text]),
        }
    })?;
    let started = std::time::Instant::now();
    let signed = manifest(&ManifestHead::of(world.keys().namespace(), d), &entries);
    trust
        .verify(d.signature.as_ref(), &signed)
        .map_err(|r| Rejected::Refused(r.to_string()))?;
    tracing::info!(
        deploy = d.id,
        key = %d.signature.as_ref().map(|s| crate::signing::fingerprint(&s.key)).unwrap_or_default(),
        entries = entries.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "deploy signature verified"
    );
    let digest = blake3::hash(&signed).to_hex().to_string();
    let guard = verified_path(state_dir);
    match read_verified(state_dir).map_err(|e| Rejected::Failed(vec![e]))? {
        Some((id, _)) if d.id < id => {
            return Err(Rejected::Refused(format!(
                "older than deploy {id}, which this host already verified (a replayed deploy? after resetting the cluster's deploys, remove {})",
                guard.display()
            )))
        }
        Some((id, seen)) if d.id == id && seen != digest => {
            return Err(Rejected::Refused(format!(
                "this host already verified another deploy {id} (after resetting the cluster's deploys, remove {})",
                guard.display()
            )))
        }
        _ => {}
    }
    write_verified(state_dir, d.id, &digest).map_err(|e| Rejected::Failed(vec![e]))?;
    Ok(entries)
}

/// Whether `dir` holds exactly the files of `entries`, with their content.
fn holds_exactly(dir: &Path, entries: &[TreeEntry]) -> bool {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            let path = e.path();
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let hash = if ft.is_file() {
                    blake3::hash(&std::fs::read(&path)?).to_hex().to_string()
                } else {
                    String::new()
                };
                out.push((rel.to_string_lossy().into_owned(), hash));
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    if walk(dir, dir, &mut found).is_err() {
        return false;
    }
    found.sort();
    let mut want: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| match e {
            TreeEntry::File { path, blob, .. } => Some((path.clone(), blob.clone())),
            TreeEntry::Dir { .. } => None,
        })
        .collect();
    want.sort();
    found == want
}

/// Fetches a deploy's bundle into the state directory (once) and returns its entry file.
/// With `verified` (the entries its signature covers), a copy fetched earlier is used only
/// when it holds exactly those files, and a new copy must too.
async fn fetch(
    world: &World,
    d: &Deploy,
    state_dir: &Path,
    verified: Option<&[TreeEntry]>,
) -> Result<PathBuf> {
    let dir = state_dir.join("deploys").join(d.id.to_string());
    let stale = verified.is_some_and(|e| !holds_exactly(&dir, e));
    if stale || !dir.join("main.mcl").is_file() {
        let tmp = state_dir.join("deploys").join(format!(".{}.tmp", d.id));
        let _ = std::fs::remove_dir_all(&tmp);
        world
            .fs_get_tree(&d.bundle, &tmp)
            .await
            .with_context(|| format!("fetching the bundle of deploy {}", d.id))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving deploy {} into {}", d.id, dir.display()))?;
        if verified.is_some_and(|e| !holds_exactly(&dir, e)) {
            anyhow::bail!(
                "the fetched bundle of deploy {} in {} does not match its signed manifest",
                d.id,
                dir.display()
            );
        }
    }
    Ok(dir.join("main.mcl"))
}

/// How the host follows the World's deploys.
#[derive(Clone)]
pub struct Follow {
    /// The World.
    pub world: World,
    /// The host's state directory (fetched bundles, the replay guard).
    pub state_dir: PathBuf,
    /// The engine that checks each deploy's first graph.
    pub engine: Engine,
    /// This host's name.
    pub hostname: String,
    /// What the daemon reports.
    pub running: Running,
    /// The keys a deploy must be signed with; `None`: deploys are not verified.
    pub trust: Option<Arc<Trust>>,
}

/// Whether deploy `d` is for this host (its target, if any, matches the host's name and
/// labels).
fn is_for(f: &Follow, d: &Deploy) -> bool {
    d.target
        .as_ref()
        .is_none_or(|t| t.matches(&f.hostname, f.world.labels()))
}

/// The newest deploy for this host at or before `d` (a host that starts while the latest
/// deploy targets other hosts runs the one before it that was for it).
async fn newest_for(f: &Follow, d: Deploy) -> Option<Deploy> {
    if is_for(f, &d) {
        return Some(d);
    }
    let all = match f.world.list_deploys().await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the deploys to find one for this host");
            return None;
        }
    };
    all.into_iter()
        .rev()
        .filter(|x| x.id < d.id)
        .find(|x| is_for(f, x))
}

/// Says that deploy `d` is for other hosts.
fn not_for_us(d: &Deploy, keeping: Option<u64>) {
    let target = d.target.as_ref().map(|t| t.to_string()).unwrap_or_default();
    match keeping {
        Some(k) => tracing::info!(
            deploy = d.id,
            "deploy {} is for {target}, not this host: keeping deploy {k}",
            d.id
        ),
        None => tracing::info!(
            deploy = d.id,
            "deploy {} is for {target}, not this host, and no earlier deploy is: waiting for one",
            d.id
        ),
    }
}

/// Verifies (with trusted keys), fetches and compiles a deploy, and has the engine check its
/// first graph (what it built is kept in the frame for the swap); returns its frames.
async fn load(f: &Follow, d: &Deploy) -> Result<watch::Receiver<Arc<FrameResult>>, Rejected> {
    let verified = match &f.trust {
        Some(trust) => Some(verify(&f.world, d, &f.state_dir, trust).await?),
        None => None,
    };
    let entry = fetch(&f.world, d, &f.state_dir, verified.as_deref())
        .await
        .map_err(|e| {
            if from_store(&e) {
                Rejected::Unavailable(format!("{e:#}"))
            } else {
                Rejected::Failed(vec![format!("{e:#}")])
            }
        })?;
    let view: Arc<dyn WorldView> = ClusterView::new(f.world.clone());
    let schemas = f.engine.registry().schemas().clone();
    let mut frames =
        crate::mcl::start(entry, schemas, f.hostname.clone(), view).map_err(Rejected::Failed)?;
    let first = frames.borrow_and_update().clone();
    if let Ok(fr) = &*first {
        match f.engine.prepare(fr.graph.clone()) {
            Ok(p) => fr.set_prepared(p),
            Err(errs) => return Err(Rejected::Failed(fr.describe(&errs))),
        }
    }
    Ok(frames)
}

/// Follows the cluster's deploys: waits (saying so) until a deploy verifies and compiles,
/// then returns the frames of the program it runs; a background task switches to every newer
/// deploy that does and rejects (logging why) those that do not.
pub async fn follow(f: Follow) -> Result<watch::Receiver<Arc<FrameResult>>> {
    let running = f.running.clone();
    let mut deploys = f.world.watch_deploys();
    let waiting = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!("no deploy yet: waiting for one (publish a program with `tend deploy`)");
    });
    let mut backoff = Backoff::default();
    let mut next_latest: Option<Deploy> = None;
    let mut current = loop {
        let latest = match next_latest.take() {
            Some(d) => d,
            None => match deploys.next().await {
                Some(d) => d,
                None => anyhow::bail!("the world's deploy watch ended"),
            },
        };
        let Some(d) = newest_for(&f, latest.clone()).await else {
            not_for_us(&latest, None);
            continue;
        };
        if d.id != latest.id {
            not_for_us(&latest, Some(d.id));
        }
        match load(&f, &d).await {
            Ok(rx) => {
                tracing::info!(deploy = d.id, "running deploy");
                running.set(&d);
                break rx;
            }
            Err(why @ Rejected::Unavailable(_)) => {
                running.reject(&d, &why);
                // Again after a while, unless a newer deploy comes first.
                let wait = backoff.get(d.id);
                tokio::select! {
                    newer = deploys.next() => match newer {
                        Some(n) => next_latest = Some(n),
                        None => anyhow::bail!("the world's deploy watch ended"),
                    },
                    _ = tokio::time::sleep(wait) => next_latest = Some(latest),
                }
            }
            Err(why) => {
                running.reject(&d, &why);
                // The daemon's reporter starts with the first program: until then, say it here.
                if let Err(e) = f.world.host_set_error(running.snapshot().1).await {
                    tracing::warn!(error = %e, "cannot report the rejected deploy in this host's registration");
                }
            }
        }
    };
    waiting.abort();
    let (tx, out) = watch::channel(current.borrow_and_update().clone());
    tokio::spawn(async move {
        let mut program_alive = true;
        // A deploy the World could not serve yet, and when to fetch it again.
        let mut retry: Option<(Deploy, tokio::time::Instant)> = None;
        loop {
            let retry_at = retry.as_ref().map(|(_, at)| *at);
            tokio::select! {
                _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                    let (d, _) = retry.take().expect("guarded");
                    if running.id() == Some(d.id) {
                        continue;
                    }
                    if let Some(mut rx) = switch(&f, d, &mut backoff, &mut retry).await {
                        let frame = rx.borrow_and_update().clone();
                        current = rx;
                        program_alive = true;
                        if tx.send(frame).is_err() {
                            return;
                        }
                    }
                }
                changed = current.changed(), if program_alive => {
                    if changed.is_err() {
                        program_alive = false;
                        continue;
                    }
                    let frame = current.borrow_and_update().clone();
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
                next = deploys.next() => {
                    let Some(d) = next else { return };
                    // A newer deploy supersedes one waiting to be fetched again.
                    retry = None;
                    if running.id() == Some(d.id) {
                        continue;
                    }
                    if !is_for(&f, &d) {
                        not_for_us(&d, running.id());
                        continue;
                    }
                    if let Some(mut rx) = switch(&f, d, &mut backoff, &mut retry).await {
                        let frame = rx.borrow_and_update().clone();
                        current = rx;
                        program_alive = true;
                        if tx.send(frame).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Ok(out)
}

/// Loads deploy `d` for a host that runs a program: its frames when it loads; otherwise says
/// why it does not (and, when the World could not serve it, sets when to try again).
async fn switch(
    f: &Follow,
    d: Deploy,
    backoff: &mut Backoff,
    retry: &mut Option<(Deploy, tokio::time::Instant)>,
) -> Option<watch::Receiver<Arc<FrameResult>>> {
    match load(f, &d).await {
        Ok(rx) => {
            tracing::info!(deploy = d.id, "switching to deploy");
            f.running.set(&d);
            Some(rx)
        }
        Err(why @ Rejected::Unavailable(_)) => {
            f.running.reject(&d, &why);
            *retry = Some((d.clone(), tokio::time::Instant::now() + backoff.get(d.id)));
            None
        }
        Err(why) => {
            f.running.reject(&d, &why);
            None
        }
    }
}

/// Capped exponential waits between fetches of one deploy ([`REFETCH`]), started over for
/// another deploy.
#[derive(Default)]
struct Backoff {
    deploy: Option<u64>,
    next: Duration,
}

impl Backoff {
    fn get(&mut self, deploy: u64) -> Duration {
        if self.deploy != Some(deploy) {
            self.deploy = Some(deploy);
            self.next = REFETCH.0;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(REFETCH.1);
        wait
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_for_another_deploy() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.get(3).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.get(4).as_secs(), 1);
    }

    #[test]
    fn only_the_stores_failures_are_unavailable() {
        let store = anyhow::Error::new(WorldError::Store(tend_world::StoreError::Unsupported(
            "timed out".into(),
        )))
        .context("fetching the bundle of deploy 9");
        assert!(from_store(&store));
        let missing = anyhow::Error::new(WorldError::NotFound {
            key: "blobs/x".into(),
        })
        .context("fetching the bundle of deploy 9");
        assert!(!from_store(&missing));
        assert!(!from_store(&anyhow::anyhow!(
            "does not match its signed manifest"
        )));
    }
}
