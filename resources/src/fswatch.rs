//! One inotify watcher for the whole process, shared by every `file` resource.
//!
//! inotify is a scarce resource (by default 128 instances and 8192 watches per user), so
//! instead of one watcher per resource, a single hub thread owns one inotify instance
//! (a reader thread blocks on it and forwards events in batches), watches each *directory*
//! once (reference counted), and dispatches events by path to the subscriptions that care.
//! The inotify mask leaves out reads (`IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE`): programs
//! reading managed files, and our own checks, cost nothing and cannot flood the queue. A subscription is for a target
//! path; it is armed on the target's nearest existing ancestor directory, and also holds every
//! directory above that one. When any of them is deleted or moved, or when a missing directory
//! between it and the target appears, the subscription is re-armed and its watcher gets an
//! event. 10,000 files in one directory cost one inotify watch for the directory plus one per
//! ancestor (shared by everyone).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor, WatchMask, Watches};
use tend_engine::{ResError, Watcher};
use tokio::sync::oneshot;

enum Msg {
    Subscribe {
        target: PathBuf,
        watcher: Watcher,
        fatal: oneshot::Sender<ResError>,
        reply: oneshot::Sender<Result<u64, ResError>>,
    },
    Unsubscribe(u64),
    Fs(Vec<EventOwned>),
    FsError(String),
}

/// What the directories are watched for: changes of their entries and of themselves.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

fn hub() -> &'static mpsc::Sender<Msg> {
    static TX: OnceLock<mpsc::Sender<Msg>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        std::thread::Builder::new()
            .name("tend-fswatch".into())
            .spawn(move || Hub::new(events).run(rx))
            .expect("spawning the file watch thread");
        tx
    })
}

/// A live subscription: events flow to its [`Watcher`] until it is dropped.
pub(crate) struct Subscription {
    id: u64,
    fatal: oneshot::Receiver<ResError>,
}

impl Subscription {
    /// Waits until the watch can no longer work (e.g. the inotify watch limit was hit while
    /// re-arming), and returns why.
    pub(crate) async fn failed(&mut self) -> ResError {
        match (&mut self.fatal).await {
            Ok(e) => e,
            Err(_) => ResError::new("the file watch thread stopped"),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = hub().send(Msg::Unsubscribe(self.id));
    }
}

/// Watches `target` (an absolute path without trailing slash): its content, metadata,
/// creation and deletion, including through deletion and re-creation of its ancestors.
/// When this returns, the watch is armed.
pub(crate) async fn subscribe(target: &Path, watcher: Watcher) -> Result<Subscription, ResError> {
    let (reply, rx) = oneshot::channel();
    let (fatal, fatal_rx) = oneshot::channel();
    hub()
        .send(Msg::Subscribe {
            target: target.to_path_buf(),
            watcher,
            fatal,
            reply,
        })
        .map_err(|_| ResError::new("the file watch thread stopped"))?;
    let id = rx
        .await
        .map_err(|_| ResError::new("the file watch thread stopped"))??;
    Ok(Subscription {
        id,
        fatal: fatal_rx,
    })
}

struct Sub {
    target: PathBuf,
    watcher: Watcher,
    /// The directories it holds a watch on: the nearest existing ancestor of the target
    /// (where it is armed), then each directory above it up to `/`.
    held: Vec<PathBuf>,
    fatal: Option<oneshot::Sender<ResError>>,
}

struct Hub {
    events: mpsc::Sender<Msg>,
    watches: Option<Watches>,
    /// Watched directory -> its watch and the number of subscriptions holding it.
    dirs: HashMap<PathBuf, (WatchDescriptor, usize)>,
    /// Watch -> the directory paths it stands for (several when reached through symlinks).
    wd_paths: HashMap<WatchDescriptor, Vec<PathBuf>>,
    subs: HashMap<u64, Sub>,
    by_target: HashMap<PathBuf, HashSet<u64>>,
    by_armed: HashMap<PathBuf, HashSet<u64>>,
    /// Subscriptions armed on a directory that is not their target's parent (the parent is
    /// missing), by armed directory: they care about directories being created below it.
    deep: HashMap<PathBuf, HashSet<u64>>,
    /// Subscriptions holding a directory above the one they are armed on, by that directory.
    under: HashMap<PathBuf, HashSet<u64>>,
    next_id: u64,
    last_rescan: Option<Instant>,
    rescan_due: bool,
}

/// The shortest time between two full rescans.
const RESCAN_GAP: Duration = Duration::from_secs(1);

/// The nearest existing directory that is an ancestor of `target`.
fn nearest_dir(target: &Path) -> PathBuf {
    let mut d = target.parent().unwrap_or(Path::new("/"));
    loop {
        if d.is_dir() {
            return d.to_path_buf();
        }
        match d.parent() {
            Some(p) => d = p,
            None => return PathBuf::from("/"),
        }
    }
}

impl Hub {
    fn new(events: mpsc::Sender<Msg>) -> Self {
        Hub {
            events,
            watches: None,
            dirs: HashMap::new(),
            wd_paths: HashMap::new(),
            subs: HashMap::new(),
            by_target: HashMap::new(),
            by_armed: HashMap::new(),
            deep: HashMap::new(),
            under: HashMap::new(),
            next_id: 1,
            last_rescan: None,
            rescan_due: false,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = if self.rescan_due {
                let since = self.last_rescan.map_or(RESCAN_GAP, |t| t.elapsed());
                match rx.recv_timeout(RESCAN_GAP.saturating_sub(since)) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.rescan_now();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            };
            match msg {
                Msg::Subscribe {
                    target,
                    watcher,
                    fatal,
                    reply,
                } => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.by_target.entry(target.clone()).or_default().insert(id);
                    self.subs.insert(
                        id,
                        Sub {
                            target,
                            watcher,
                            held: Vec::new(),
                            fatal: Some(fatal),
                        },
                    );
                    match self.arm(id) {
                        Ok(()) => {
                            let _ = reply.send(Ok(id));
                        }
                        Err(e) => {
                            self.remove(id);
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Msg::Unsubscribe(id) => self.remove(id),
                Msg::Fs(evs) => self.on_events(evs),
                Msg::FsError(e) => {
                    // Lost events (e.g. a queue overflow): everyone must look again.
                    tracing::warn!(error = %e, "file watch error; re-checking every file");
                    self.rescan();
                }
            }
        }
    }

    fn watches(&mut self) -> std::io::Result<&mut Watches> {
        if self.watches.is_none() {
            let mut ino = Inotify::init()?;
            let w = ino.watches();
            let tx = self.events.clone();
            std::thread::Builder::new()
                .name("tend-inotify".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match ino.read_events_blocking(&mut buf) {
                            Ok(evs) => {
                                let batch: Vec<EventOwned> = evs.map(|e| e.to_owned()).collect();
                                if tx.send(Msg::Fs(batch)).is_err() {
                                    return;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = tx.send(Msg::FsError(e.to_string()));
                                return;
                            }
                        }
                    }
                })?;
            self.watches = Some(w);
        }
        Ok(self.watches.as_mut().expect("just set"))
    }

    fn acquire(&mut self, dir: &Path) -> std::io::Result<()> {
        if let Some((_, n)) = self.dirs.get_mut(dir) {
            *n += 1;
            return Ok(());
        }
        let wd = self.watches()?.add(dir, mask())?;
        self.wd_paths
            .entry(wd.clone())
            .or_default()
            .push(dir.to_path_buf());
        self.dirs.insert(dir.to_path_buf(), (wd, 1));
        Ok(())
    }

    /// Stops watching `dir` (whatever its count).
    fn forget(&mut self, dir: &Path) {
        let Some((wd, _)) = self.dirs.remove(dir) else {
            return;
        };
        if let Some(paths) = self.wd_paths.get_mut(&wd) {
            paths.retain(|p| p != dir);
            if paths.is_empty() {
                self.wd_paths.remove(&wd);
                if let Some(w) = self.watches.as_mut() {
                    // Fails harmlessly when the kernel already dropped the watch.
                    let _ = w.remove(wd);
                }
            }
        }
    }

    fn release(&mut self, dir: &Path) {
        if let Some((_, n)) = self.dirs.get_mut(dir) {
            *n -= 1;
            if *n == 0 {
                self.forget(dir);
            }
        }
    }

    /// Forgets where a subscription is armed; returns the directories it held.
    fn detach(&mut self, id: u64) -> Vec<PathBuf> {
        let Some(sub) = self.subs.get_mut(&id) else {
            return Vec::new();
        };
        let held = std::mem::take(&mut sub.held);
        let unindex = |map: &mut HashMap<PathBuf, HashSet<u64>>, dir: &Path| {
            if let Some(set) = map.get_mut(dir) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(dir);
                }
            }
        };
        if let Some(armed) = held.first() {
            unindex(&mut self.by_armed, armed);
            unindex(&mut self.deep, armed);
        }
        for a in held.iter().skip(1) {
            unindex(&mut self.under, a);
        }
        held
    }

    fn watch_error(dir: &Path, e: std::io::Error) -> ResError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            ResError::new(format!(
                "watching {}: the inotify watch limit is reached \
                 (raise fs.inotify.max_user_watches)",
                dir.display()
            ))
        } else {
            ResError::new(format!("watching {}: {e}", dir.display()))
        }
    }

    /// Arms (or re-arms) a subscription on its target's nearest existing ancestor, and holds
    /// every directory above it too, so that an ancestor moved away is noticed.
    fn arm(&mut self, id: u64) -> Result<(), ResError> {
        'again: for _ in 0..32 {
            let Some(sub) = self.subs.get(&id) else {
                return Ok(());
            };
            let target = sub.target.clone();
            let want = nearest_dir(&target);
            if sub.held.first() == Some(&want) {
                return Ok(());
            }
            let chain: Vec<PathBuf> = want.ancestors().map(Path::to_path_buf).collect();
            for (i, dir) in chain.iter().enumerate() {
                if let Err(e) = self.acquire(dir) {
                    for d in &chain[..i] {
                        self.release(d);
                    }
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR)
                    {
                        // It vanished between the look and the watch: look again.
                        continue 'again;
                    }
                    return Err(Self::watch_error(dir, e));
                }
            }
            for old in self.detach(id) {
                self.release(&old);
            }
            self.by_armed.entry(want.clone()).or_default().insert(id);
            if target.parent() != Some(want.as_path()) {
                self.deep.entry(want.clone()).or_default().insert(id);
            }
            for a in chain.iter().skip(1) {
                self.under.entry(a.clone()).or_default().insert(id);
            }
            if let Some(sub) = self.subs.get_mut(&id) {
                sub.held = chain;
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: u64) {
        for old in self.detach(id) {
            self.release(&old);
        }
        if let Some(sub) = self.subs.remove(&id) {
            if let Some(set) = self.by_target.get_mut(&sub.target) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_target.remove(&sub.target);
                }
            }
        }
    }

    /// Re-arms a subscription and tells its watcher to look again.
    fn rearm_and_signal(&mut self, id: u64) {
        if let Err(e) = self.arm(id) {
            if let Some(sub) = self.subs.get_mut(&id) {
                if let Some(f) = sub.fatal.take() {
                    let _ = f.send(e);
                }
            }
        }
        if let Some(sub) = self.subs.get(&id) {
            sub.watcher.event();
        }
    }

    /// A watched directory was deleted or moved away: its watch, and the watches of every
    /// directory below it, are stale. Everyone armed there or below is re-armed.
    fn dir_gone(&mut self, dir: &Path) {
        if !self.dirs.contains_key(dir) {
            return;
        }
        let stale: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|d| d.starts_with(dir))
            .cloned()
            .collect();
        let mut ids: Vec<u64> = Vec::new();
        for d in &stale {
            self.forget(d);
            for map in [&self.by_armed, &self.under] {
                if let Some(set) = map.get(d) {
                    ids.extend(set.iter().copied());
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            // Stale directories are no longer counted: releasing them does nothing.
            for old in self.detach(id) {
                self.release(&old);
            }
        }
        for id in ids {
            self.rearm_and_signal(id);
        }
    }

    /// Events were lost: everyone must look again. At most once per [`RESCAN_GAP`], so that
    /// the re-checks (which read files) cannot feed an overflow loop.
    fn rescan(&mut self) {
        match self.last_rescan {
            Some(t) if t.elapsed() < RESCAN_GAP => self.rescan_due = true,
            _ => self.rescan_now(),
        }
    }

    fn rescan_now(&mut self) {
        self.rescan_due = false;
        self.last_rescan = Some(Instant::now());
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        let dirs: Vec<PathBuf> = self.dirs.keys().cloned().collect();
        for d in dirs {
            if !d.is_dir() {
                self.dir_gone(&d);
            }
        }
        for id in ids {
            self.rearm_and_signal(id);
        }
    }

    fn on_events(&mut self, evs: Vec<EventOwned>) {
        for e in evs {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                tracing::warn!("inotify queue overflow; re-checking every file");
                self.rescan();
                continue;
            }
            let Some(bases) = self.wd_paths.get(&e.wd).cloned() else {
                continue;
            };
            if e.mask.contains(EventMask::IGNORED) {
                // The kernel dropped the watch (its directory is gone).
                for b in &bases {
                    self.dir_gone(b);
                }
                continue;
            }
            for base in bases {
                match &e.name {
                    None if e
                        .mask
                        .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) =>
                    {
                        self.dir_gone(&base)
                    }
                    None => self.on_path(&base, e.mask),
                    Some(name) => self.on_path(&base.join(name), e.mask),
                }
            }
        }
    }

    fn on_path(&mut self, path: &Path, mask: EventMask) {
        if let Some(ids) = self.by_target.get(path) {
            for id in ids {
                if let Some(sub) = self.subs.get(id) {
                    sub.watcher.event();
                }
            }
        }
        let gone = mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO);
        if !gone && !mask.contains(EventMask::CREATE) {
            return;
        }
        // A watched directory deleted, moved away or renamed over: its watch is stale.
        if gone && self.dirs.contains_key(path) {
            self.dir_gone(path);
        }
        if let Some(parent) = path.parent() {
            if let Some(ids) = self.deep.get(parent) {
                let hit: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        self.subs
                            .get(id)
                            .is_some_and(|s| s.target.starts_with(path) && s.target != *path)
                    })
                    .collect();
                for id in hit {
                    self.rearm_and_signal(id);
                }
            }
        }
    }
}
