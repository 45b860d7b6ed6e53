//! One inotify watcher for the whole process, shared by every `file` resource.
//!
//! inotify is a scarce resource (by default 128 instances and 8192 watches per user), so
//! instead of one watcher per resource, the process holds one inotify instance, watches each
//! *directory* once (reference counted), and dispatches events by path to the subscriptions
//! that care. The inotify mask leaves out reads (`IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE`):
//! programs reading managed files, and our own checks, cost nothing and cannot flood the queue.
//!
//! The hub's state sits behind a mutex. Subscribing locks it and arms the watch right there
//! (adding an inotify watch is one fast syscall, and a directory already watched costs none),
//! so no thread is woken; a reader thread blocks on the inotify descriptor and locks the state
//! to dispatch each batch of events.
//!
//! A subscription is for a target path; it is armed on the target's nearest existing ancestor
//! directory. Each watched directory holds its parent (a watched directory's parent is always
//! watched, up to `/`), so an ancestor moved away or deleted is noticed: every subscription
//! armed on or below it is re-armed and its watcher gets an event. When a missing directory
//! between the armed one and the target appears, the subscription is re-armed too. 10,000
//! files in one directory cost one inotify watch for the directory plus one per ancestor, and
//! no allocation per file beyond the subscription's own slot. A directory that is only an
//! ancestor is watched for its entries coming and going, not for what happens inside them
//! (see [`ancestor_mask`]).

use std::borrow::Borrow;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tend_engine::{ResError, Watcher};
use tokio::sync::oneshot;

/// What a directory is watched for when subscriptions are armed on it: changes of its entries
/// (their content and metadata too) and of itself.
fn full_mask() -> WatchMask {
    WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::CLOSE_WRITE | ancestor_mask()
}

/// What a directory that is only an ancestor of armed ones is watched for: entries created,
/// deleted or moved, and itself deleted or moved. Leaving out the events that come from
/// inside its entries matters: for those, the kernel marks every cached entry of the
/// directory when the watch is added (negative ones included), which took 5 ms for a busy
/// `/tmp`, under the hub lock, at every start.
fn ancestor_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// A path as a map key, hashed and compared by its bytes: std's `Path` hashes and compares
/// component by component, which dominated the hub's cost with 10,000 subscriptions. Every
/// path in the hub is normalized (see [`normalized`]), so byte equality is path equality.
#[derive(Clone)]
struct Key(Arc<Path>);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        bytes(&self.0).hash(h)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        bytes(&self.0) == bytes(&other.0)
    }
}

impl Eq for Key {}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        bytes(&self.0)
    }
}

/// The lookup form of a [`Key`].
fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// `p` without doubled slashes, `.` components or a trailing slash (`file` already refuses
/// `..`), so that paths built from it by `parent` and `join` compare equal byte for byte.
fn normalized(p: &Arc<Path>) -> Arc<Path> {
    let b = bytes(p);
    let clean = !b.windows(2).any(|w| w == b"//")
        && !b.windows(3).any(|w| w == b"/./")
        && !(b.len() > 1 && (b.ends_with(b"/") || b.ends_with(b"/.")));
    if clean {
        return p.clone();
    }
    Arc::from(p.components().collect::<PathBuf>())
}

/// The process-wide hub state.
fn hub() -> MutexGuard<'static, Hub> {
    static HUB: OnceLock<Mutex<Hub>> = OnceLock::new();
    HUB.get_or_init(|| Mutex::new(Hub::default()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A live subscription: events flow to its [`Watcher`] until it is dropped.
pub(crate) struct Subscription {
    id: u32,
    fatal: oneshot::Receiver<ResError>,
}

impl Subscription {
    /// Waits until the watch can no longer work (e.g. the inotify watch limit was hit while
    /// re-arming), and returns why.
    pub(crate) async fn failed(&mut self) -> ResError {
        match (&mut self.fatal).await {
            Ok(e) => e,
            Err(_) => ResError::new("the file watch stopped"),
        }
    }
}

/// The process is about to exit: removes every inotify watch now, so that the kernel frees
/// them in the background while the process winds down. Closing an inotify instance that still
/// holds watches waits for an RCU grace period (8-14 ms measured here), and the exit would
/// wait for it. (The close still waits when the grace period of these removals has not ended
/// by then: 10-18 ms in about one run of three at 10,000 files.) Watches stop reporting
/// changes; later subscriptions are not armed.
pub(crate) fn release_for_exit() {
    hub().release_for_exit();
}

impl Drop for Subscription {
    fn drop(&mut self) {
        hub().remove(self.id);
    }
}

/// Watches `target` (an absolute path without trailing slash): its content, metadata,
/// creation and deletion, including through deletion and re-creation of its ancestors.
/// When this returns, the watch is armed; it never waits for another thread.
pub(crate) fn subscribe(target: &Arc<Path>, watcher: Watcher) -> Result<Subscription, ResError> {
    subscribe_as(target, watcher, false)
}

/// Watches the directory `dir` and its entries: an entry created, deleted, moved, written or
/// changed in its metadata, and the directory itself (as [`subscribe`]). Entries of its
/// subdirectories are not included: subscribe to each directory of a tree (see [`follow`]).
pub(crate) fn subscribe_entries(
    dir: &Arc<Path>,
    watcher: Watcher,
) -> Result<Subscription, ResError> {
    subscribe_as(dir, watcher, true)
}

fn subscribe_as(
    target: &Arc<Path>,
    watcher: Watcher,
    entries: bool,
) -> Result<Subscription, ResError> {
    let target = &normalized(target);
    let (fatal, fatal_rx) = oneshot::channel();
    let mut hub = hub();
    let id = hub.insert(Sub {
        target: target.clone(),
        watcher,
        armed: None,
        armed_pos: 0,
        deep_pos: None,
        fatal: Some(fatal),
        entries,
    });
    hub.by_target
        .entry(Key(target.clone()))
        .and_modify(|ids| ids.push(id))
        .or_insert(Ids::One(id));
    if entries {
        hub.by_dir
            .entry(Key(target.clone()))
            .and_modify(|ids| ids.push(id))
            .or_insert(Ids::One(id));
    }
    match hub.arm(id) {
        Ok(()) => Ok(Subscription {
            id,
            fatal: fatal_rx,
        }),
        Err(e) => {
            hub.remove(id);
            Err(e)
        }
    }
}

/// What [`follow`] watches: a path (as [`subscribe`]) or a directory's entries (as
/// [`subscribe_entries`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Path(Arc<Path>),
    Entries(Arc<Path>),
}

/// The watch of a resource whose set of watched paths changes with what it sees (a user's
/// home read from `/etc/passwd`, the directories of a tree): subscribes to `targets()`,
/// reports running, then after every event computes `targets()` again, subscribes to what is
/// new and drops what is gone, and only then tells `w` (so the check that follows runs with
/// the new set already armed). `targets` runs on a blocking thread (it may read files or walk
/// directories). Returns only when a subscription fails.
pub(crate) async fn follow<F>(id: &str, w: Watcher, targets: F) -> Result<(), ResError>
where
    F: Fn() -> Vec<Target> + Send + Sync + 'static,
{
    let targets = Arc::new(targets);
    let (iw, irx) = Watcher::channel();
    let mut subs: HashMap<Target, Subscription> = HashMap::default();
    let mut first = true;
    loop {
        let (t, iw2, mut old) = (targets.clone(), iw.clone(), std::mem::take(&mut subs));
        subs = tokio::task::spawn_blocking(move || {
            let mut new = HashMap::default();
            for x in t() {
                if new.contains_key(&x) {
                    continue;
                }
                let sub = match old.remove(&x) {
                    Some(s) => s,
                    None => match &x {
                        Target::Path(p) => subscribe(p, iw2.clone())?,
                        Target::Entries(d) => subscribe_entries(d, iw2.clone())?,
                    },
                };
                new.insert(x, sub);
            }
            Ok::<_, ResError>(new)
        })
        .await
        .map_err(|e| ResError::new(format!("{id}: watching: {e}")))??;
        if first {
            w.running();
            first = false;
        } else {
            w.event();
        }
        if subs.is_empty() {
            irx.next().await;
            continue;
        }
        let failed = futures::future::select_all(subs.values_mut().map(|s| Box::pin(s.failed())));
        tokio::select! {
            _ = irx.next() => {}
            (e, _, _) = failed => return Err(ResError::new(format!("{id}: {e}"))),
        }
    }
}

struct Sub {
    target: Arc<Path>,
    watcher: Watcher,
    /// The directory it is armed on: the nearest existing ancestor of the target.
    armed: Option<Arc<Path>>,
    /// Its place in that directory's `armed` list.
    armed_pos: usize,
    /// Its place in that directory's `deep` list, when the directory is not the target's
    /// parent (the parent is missing).
    deep_pos: Option<usize>,
    fatal: Option<oneshot::Sender<ResError>>,
    /// For the entries of the target (a directory, armed on itself), not the target alone.
    entries: bool,
}

/// A watched directory.
struct Dir {
    /// Its path (the map's key, shared).
    path: Arc<Path>,
    wd: WatchDescriptor,
    /// Watched for [`full_mask`] (some subscription was armed here), not just
    /// [`ancestor_mask`].
    full: bool,
    /// Subscriptions armed here, plus watched directories right below (each holds its parent).
    refs: usize,
    /// The subscriptions armed here.
    armed: Vec<u32>,
    /// Those of them whose target's parent is missing: they care about directories being
    /// created below this one.
    deep: Vec<u32>,
}

/// Ids of the subscriptions for one target: almost always one, kept inline.
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }

    fn push(&mut self, id: u32) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(v) => v.push(id),
        }
    }

    /// Removes `id`; returns whether none is left.
    fn remove(&mut self, id: u32) -> bool {
        match self {
            Ids::One(first) => *first == id,
            Ids::Many(v) => {
                v.retain(|&i| i != id);
                v.is_empty()
            }
        }
    }
}

#[derive(Default)]
struct Hub {
    watches: Option<Watches>,
    /// Watched directory -> its watch, holders and subscriptions.
    dirs: HashMap<Key, Dir>,
    /// Watch -> the directory paths it stands for (several when reached through symlinks).
    wd_paths: HashMap<WatchDescriptor, Vec<Arc<Path>>>,
    /// Subscriptions by id (a slot is reused once its subscription is dropped).
    subs: Vec<Option<Sub>>,
    free: Vec<u32>,
    by_target: HashMap<Key, Ids>,
    /// The subscriptions to the entries of a directory, by directory.
    by_dir: HashMap<Key, Ids>,
    last_rescan: Option<Instant>,
    /// A rescan is scheduled (one happened less than [`RESCAN_GAP`] ago).
    rescan_due: bool,
    /// The process is about to exit: every watch is gone and none is armed again.
    exiting: bool,
}

/// The shortest time between two full rescans.
const RESCAN_GAP: Duration = Duration::from_secs(1);

/// The nearest existing directory that is an ancestor of `target`.
fn nearest_dir(target: &Path) -> &Path {
    let mut d = target.parent().unwrap_or(Path::new("/"));
    loop {
        if d.is_dir() {
            return d;
        }
        match d.parent() {
            Some(p) => d = p,
            None => return Path::new("/"),
        }
    }
}

/// Removes `id` from `list` at `pos` (swap-remove); returns the id moved into `pos`, if any.
fn take_at(list: &mut Vec<u32>, pos: usize) -> Option<u32> {
    list.swap_remove(pos);
    list.get(pos).copied()
}

/// Reads events until the descriptor fails, dispatching each batch under the hub lock.
fn read_events(mut ino: Inotify) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match ino.read_events_blocking(&mut buf) {
            Ok(evs) => {
                let mut hub = hub();
                for e in evs {
                    hub.on_event(&e.wd, e.mask, e.name);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Nobody reads this instance any more: its watches are dead.
                hub().reader_failed(&e);
                return;
            }
        }
    }
}

impl Hub {
    fn sub(&self, id: u32) -> Option<&Sub> {
        self.subs.get(id as usize).and_then(Option::as_ref)
    }

    fn sub_mut(&mut self, id: u32) -> Option<&mut Sub> {
        self.subs.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn insert(&mut self, sub: Sub) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.subs[id as usize] = Some(sub);
                id
            }
            None => {
                self.subs.push(Some(sub));
                u32::try_from(self.subs.len() - 1).expect("fewer than 2^32 file watches")
            }
        }
    }

    fn watches(&mut self) -> std::io::Result<&mut Watches> {
        if self.watches.is_none() {
            let ino = Inotify::init()?;
            let w = ino.watches();
            std::thread::Builder::new()
                .name("tend-inotify".into())
                .spawn(move || read_events(ino))?;
            self.watches = Some(w);
        }
        Ok(self.watches.as_mut().expect("just set"))
    }

    /// Takes one reference on `dir`, watching it (and the directories above it that are not
    /// watched yet, for [`ancestor_mask`]) when needed; `full`: for [`full_mask`]. Returns
    /// the directory's interned path.
    fn acquire(&mut self, dir: &Path, full: bool) -> std::io::Result<Arc<Path>> {
        if let Some(d) = self.dirs.get(bytes(dir)) {
            if full && !d.full {
                let path = d.path.clone();
                // Added to the mask (`MASK_ADD`), never replacing it: another path to the
                // same directory (through a symlink) shares the kernel's watch.
                self.watches()?
                    .add(&*path, full_mask() | WatchMask::MASK_ADD)?;
            }
            let d = self.dirs.get_mut(bytes(dir)).expect("looked up above");
            d.full |= full;
            d.refs += 1;
            return Ok(d.path.clone());
        }
        // The directories to watch, from `dir` up to (excluding) the first watched one.
        let mut missing: Vec<&Path> = vec![dir];
        let mut up = dir.parent();
        while let Some(p) = up {
            if let Some(d) = self.dirs.get_mut(bytes(p)) {
                d.refs += 1;
                break;
            }
            missing.push(p);
            up = p.parent();
        }
        // Top-down, so that each new directory's parent is already held.
        let mut key = None;
        for (i, m) in missing.iter().enumerate().rev() {
            let full = full && i == 0;
            let mask = if full { full_mask() } else { ancestor_mask() };
            let wd = match self
                .watches()
                .and_then(|w| w.add(m, mask | WatchMask::MASK_ADD))
            {
                Ok(wd) => wd,
                Err(e) => {
                    if let Some(p) = m.parent() {
                        self.release(p);
                    }
                    return Err(e);
                }
            };
            let k: Arc<Path> = Arc::from(*m);
            self.wd_paths.entry(wd.clone()).or_default().push(k.clone());
            self.dirs.insert(
                Key(k.clone()),
                Dir {
                    path: k.clone(),
                    wd,
                    full,
                    refs: 1,
                    armed: Vec::new(),
                    deep: Vec::new(),
                },
            );
            if i == 0 {
                key = Some(k);
            }
        }
        Ok(key.expect("dir itself was missing"))
    }

    /// Drops one reference on `dir`; a directory nobody holds is no longer watched (nor,
    /// transitively, its parent).
    fn release(&mut self, dir: &Path) {
        let mut cur = Some(dir);
        while let Some(d) = cur {
            match self.dirs.get_mut(bytes(d)) {
                Some(e) if e.refs > 1 => {
                    e.refs -= 1;
                    return;
                }
                Some(_) => {
                    self.forget(d);
                    cur = d.parent();
                }
                None => return,
            }
        }
    }

    /// Stops watching `dir` (whatever its count); returns it.
    fn forget(&mut self, dir: &Path) -> Option<Dir> {
        let d = self.dirs.remove(bytes(dir))?;
        if let Some(paths) = self.wd_paths.get_mut(&d.wd) {
            paths.retain(|p| &**p != dir);
            if paths.is_empty() {
                self.wd_paths.remove(&d.wd);
                if let Some(w) = self.watches.as_mut() {
                    // Fails harmlessly when the kernel already dropped the watch.
                    let _ = w.remove(d.wd.clone());
                }
            }
        }
        Some(d)
    }

    /// Forgets where a subscription is armed; returns the directory (still held by it).
    fn detach(&mut self, id: u32) -> Option<Arc<Path>> {
        let sub = self.sub_mut(id)?;
        let armed = sub.armed.take()?;
        let (pos, deep) = (sub.armed_pos, sub.deep_pos.take());
        let dir = self.dirs.get_mut(bytes(&armed))?;
        let moved = take_at(&mut dir.armed, pos);
        let moved_deep = deep.and_then(|p| take_at(&mut dir.deep, p).map(|m| (m, p)));
        if let Some(m) = moved {
            if let Some(s) = self.sub_mut(m) {
                s.armed_pos = pos;
            }
        }
        if let Some((m, p)) = moved_deep {
            if let Some(s) = self.sub_mut(m) {
                s.deep_pos = Some(p);
            }
        }
        Some(armed)
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

    /// Arms (or re-arms) a subscription on its target's nearest existing ancestor.
    fn arm(&mut self, id: u32) -> Result<(), ResError> {
        if self.exiting {
            return Ok(());
        }
        for _ in 0..32 {
            let Some(sub) = self.sub(id) else {
                return Ok(());
            };
            let (target, entries) = (sub.target.clone(), sub.entries);
            let parent = target.parent().unwrap_or(Path::new("/"));
            // Where it belongs: on its parent, or on itself for its entries.
            let home = if entries { &*target } else { parent };
            // The nearest existing directory it can be armed on now.
            let nearest = || {
                if entries && target.is_dir() {
                    &*target
                } else {
                    nearest_dir(&target)
                }
            };
            // A watched home exists (if it went away since, its events are queued and
            // will re-arm everyone armed there): no need to look.
            let want = if self.dirs.contains_key(bytes(home)) {
                home
            } else {
                nearest()
            };
            if sub.armed.as_deref() == Some(want) {
                return Ok(());
            }
            let deep = want != home;
            // A subscription armed on its target's parent needs the events from inside the
            // target; one armed higher up (the parent is missing) waits for directories to
            // appear, which the ancestor mask reports.
            let key = match self.acquire(want, !deep) {
                Ok(k) => k,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    // It vanished between the look and the watch: look again.
                    continue;
                }
                Err(e) => return Err(Self::watch_error(want, e)),
            };
            if let Some(old) = self.detach(id) {
                self.release(&old);
            }
            let dir = self.dirs.get_mut(bytes(&key)).expect("just acquired");
            let pos = dir.armed.len();
            dir.armed.push(id);
            let deep_pos = deep.then(|| {
                dir.deep.push(id);
                dir.deep.len() - 1
            });
            let sub = self.sub_mut(id).expect("checked above");
            sub.armed = Some(key);
            sub.armed_pos = pos;
            sub.deep_pos = deep_pos;
            // A directory below `want` created before its watch was added sent no event:
            // look again, and go deeper if one did appear.
            if deep && nearest() != want {
                continue;
            }
            return Ok(());
        }
        Ok(())
    }

    fn release_for_exit(&mut self) {
        self.exiting = true;
        let wds = self.unarm_all();
        if let Some(w) = self.watches.as_mut() {
            for wd in wds {
                let _ = w.remove(wd);
            }
        }
    }

    /// Forgets every watched directory and where each subscription is armed; returns the
    /// watches that stood for them.
    fn unarm_all(&mut self) -> Vec<WatchDescriptor> {
        self.dirs.clear();
        for sub in self.subs.iter_mut().flatten() {
            sub.armed = None;
            sub.deep_pos = None;
        }
        self.wd_paths.drain().map(|(wd, _)| wd).collect()
    }

    fn remove(&mut self, id: u32) {
        if let Some(old) = self.detach(id) {
            self.release(&old);
        }
        let Some(sub) = self.subs.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(id);
        if let Some(ids) = self.by_target.get_mut(bytes(&sub.target)) {
            if ids.remove(id) {
                self.by_target.remove(bytes(&sub.target));
            }
        }
        if sub.entries {
            if let Some(ids) = self.by_dir.get_mut(bytes(&sub.target)) {
                if ids.remove(id) {
                    self.by_dir.remove(bytes(&sub.target));
                }
            }
        }
    }

    /// Re-arms a subscription and tells its watcher to look again.
    fn rearm_and_signal(&mut self, id: u32) {
        if let Err(e) = self.arm(id) {
            if let Some(f) = self.sub_mut(id).and_then(|s| s.fatal.take()) {
                let _ = f.send(e);
            }
        }
        if let Some(sub) = self.sub(id) {
            sub.watcher.event();
        }
    }

    /// A watched directory was deleted or moved away: its watch, and the watches of every
    /// directory below it, are stale. Everyone armed there or below is re-armed.
    fn dir_gone(&mut self, dir: &Path) {
        if !self.dirs.contains_key(bytes(dir)) {
            return;
        }
        let stale: Vec<Arc<Path>> = self
            .dirs
            .values()
            .filter(|d| d.path.starts_with(dir))
            .map(|d| d.path.clone())
            .collect();
        let mut ids: Vec<u32> = Vec::new();
        for d in &stale {
            if let Some(gone) = self.forget(d) {
                ids.extend(gone.armed);
            }
        }
        for &id in &ids {
            // Its directory is gone, and with it the reference it held.
            if let Some(sub) = self.sub_mut(id) {
                sub.armed = None;
                sub.deep_pos = None;
            }
        }
        for id in ids {
            self.rearm_and_signal(id);
        }
        // The stale directories below `dir` held each other; `dir` held its parent.
        if let Some(p) = dir.parent() {
            self.release(p);
        }
    }

    /// The inotify instance can no longer be read: every subscription's watch fails (its
    /// resource reports it, and `Meta:rewatch` can start a new one), and the next
    /// subscription opens a new instance.
    fn reader_failed(&mut self, e: &std::io::Error) {
        tracing::error!(error = %e, "reading file watch events failed; every file watch stops");
        self.watches = None;
        self.unarm_all();
        for sub in self.subs.iter_mut().flatten() {
            if let Some(f) = sub.fatal.take() {
                let _ = f.send(ResError::new(format!("reading file watch events: {e}")));
            }
        }
    }

    /// Events were lost: everyone must look again. At most once per [`RESCAN_GAP`], so that
    /// the re-checks (which read files) cannot feed an overflow loop.
    fn rescan(&mut self) {
        match self.last_rescan {
            Some(t) if t.elapsed() < RESCAN_GAP => {
                if !self.rescan_due {
                    self.rescan_due = true;
                    let wait = RESCAN_GAP.saturating_sub(t.elapsed());
                    let spawned = std::thread::Builder::new()
                        .name("tend-rescan".into())
                        .spawn(move || {
                            std::thread::sleep(wait);
                            hub().rescan_now();
                        });
                    if spawned.is_err() {
                        self.rescan_now();
                    }
                }
            }
            _ => self.rescan_now(),
        }
    }

    fn rescan_now(&mut self) {
        self.rescan_due = false;
        self.last_rescan = Some(Instant::now());
        let dirs: Vec<Arc<Path>> = self.dirs.values().map(|d| d.path.clone()).collect();
        for d in dirs {
            if !d.is_dir() {
                self.dir_gone(&d);
            }
        }
        for id in 0..self.subs.len() as u32 {
            self.rearm_and_signal(id);
        }
    }

    fn on_event(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) {
        if self.exiting {
            return;
        }
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflow; re-checking every file");
            self.rescan();
            return;
        }
        let Some(bases) = self.wd_paths.get(wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::IGNORED) {
            // The kernel dropped the watch (its directory is gone).
            for b in &bases {
                self.dir_gone(b);
            }
            return;
        }
        for base in bases {
            match name {
                None if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) => {
                    self.dir_gone(&base)
                }
                None => self.on_path(&base, mask),
                Some(name) => self.on_path(&base.join(name), mask),
            }
        }
    }

    fn on_path(&mut self, path: &Path, mask: EventMask) {
        let by_dir = path.parent().and_then(|p| self.by_dir.get(bytes(p)));
        for ids in [self.by_target.get(bytes(path)), by_dir]
            .into_iter()
            .flatten()
        {
            for &id in ids.as_slice() {
                if let Some(sub) = self.sub(id) {
                    sub.watcher.event();
                }
            }
        }
        let gone = mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO);
        if !gone && !mask.contains(EventMask::CREATE) {
            return;
        }
        // A watched directory deleted, moved away or renamed over: its watch is stale.
        if gone && self.dirs.contains_key(bytes(path)) {
            self.dir_gone(path);
        }
        let Some(parent) = path.parent() else {
            return;
        };
        let Some(dir) = self.dirs.get(bytes(parent)) else {
            return;
        };
        if dir.deep.is_empty() {
            return;
        }
        let hit: Vec<u32> = dir
            .deep
            .iter()
            .copied()
            .filter(|&id| {
                self.sub(id).is_some_and(|s| {
                    s.target.starts_with(path) && (*s.target != *path || s.entries)
                })
            })
            .collect();
        for id in hit {
            self.rearm_and_signal(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn arc(p: &Path) -> Arc<Path> {
        Arc::from(p)
    }

    /// Whether `dir` is watched, and how many subscriptions are armed on it.
    fn armed_on(dir: &Path) -> Option<usize> {
        hub().dirs.get(bytes(dir)).map(|d| d.armed.len())
    }

    #[tokio::test]
    async fn a_failed_reader_fails_every_watch_instead_of_going_quiet() {
        // On a hub of its own: the process-wide one serves the other tests.
        let mut h = Hub::default();
        let (w, _rx) = Watcher::channel();
        let (fatal, mut fatal_rx) = oneshot::channel();
        h.insert(Sub {
            target: arc(Path::new("/x/y")),
            watcher: w,
            armed: Some(arc(Path::new("/x"))),
            armed_pos: 0,
            deep_pos: None,
            fatal: Some(fatal),
            entries: false,
        });
        h.reader_failed(&std::io::Error::other("boom"));
        let e = (&mut fatal_rx).await.expect("the watch was told");
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(
            h.watches.is_none() && h.dirs.is_empty(),
            "a new instance starts next time"
        );
        assert!(h.sub(0).is_some_and(|s| s.armed.is_none()));
    }

    #[test]
    fn releasing_for_exit_removes_every_watch_and_arms_no_more() {
        // On a hub of its own: the process-wide one serves the other tests.
        let t = tempfile::tempdir().unwrap();
        let mut h = Hub::default();
        let (w, _rx) = Watcher::channel();
        let sub = |target: &Path| Sub {
            target: arc(target),
            watcher: w.clone(),
            armed: None,
            armed_pos: 0,
            deep_pos: None,
            fatal: None,
            entries: false,
        };
        let a = h.insert(sub(&t.path().join("a")));
        h.arm(a).unwrap();
        let wd = h.dirs[bytes(t.path())].wd.clone();
        h.release_for_exit();
        assert!(h.dirs.is_empty() && h.wd_paths.is_empty());
        assert!(h.sub(a).is_some_and(|s| s.armed.is_none()));
        // The kernel watch is gone already (removing it again fails).
        assert!(h.watches.as_mut().unwrap().remove(wd.clone()).is_err());
        // Nothing is armed again: not a new subscription, not on an event.
        let b = h.insert(sub(&t.path().join("b")));
        h.arm(b).unwrap();
        h.on_event(&wd, EventMask::IGNORED, None);
        assert!(h.dirs.is_empty(), "re-armed after the release");
        h.remove(a);
        h.remove(b);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_under_ancestors_created_at_once_is_watched() {
        // `create_dir_all` races the re-arm that its first directory triggers: the deeper
        // directory may appear before the watch on its parent is added, which sends no event.
        let t = tempfile::tempdir().unwrap();
        for i in 0..100 {
            let target = t.path().join(format!("g{i}/h/child"));
            let (w, rx) = Watcher::channel();
            let _s = subscribe(&arc(&target), w).unwrap();
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            // Wait until the subscription is armed on the new parent, then write the file.
            let deadline = Instant::now() + Duration::from_secs(5);
            while armed_on(target.parent().unwrap()).is_none() {
                assert!(
                    Instant::now() < deadline,
                    "round {i}: never armed on the parent"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            rx.take();
            std::fs::write(&target, "x").unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                // (A signal left from before `take` may come first.)
                while !rx.next().await.dirty {}
            })
            .await;
            assert!(got.is_ok(), "round {i}: no event for the new file");
        }
    }

    /// Waits for a drift event on `rx` (a signal left from before may come first).
    async fn next_event(rx: &tend_engine::WatchReceiver, what: &str) {
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            while !rx.next().await.dirty {}
        })
        .await;
        assert!(got.is_ok(), "no event for: {what}");
    }

    #[tokio::test]
    async fn a_directorys_entries_are_watched_through_its_removal() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let (w, rx) = Watcher::channel();
        let _s = subscribe_entries(&arc(&dir), w).unwrap();
        assert_eq!(armed_on(&dir), Some(1), "armed on the directory itself");
        rx.take();
        std::fs::write(dir.join("new"), "x").unwrap();
        next_event(&rx, "an entry created").await;
        rx.take();
        std::fs::write(dir.join("new"), "y").unwrap();
        next_event(&rx, "an entry written").await;
        // Gone, and back: armed on the parent meanwhile, then on the directory again.
        std::fs::remove_dir_all(&dir).unwrap();
        next_event(&rx, "the directory removed").await;
        std::fs::create_dir(&dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while armed_on(&dir).is_none() {
            assert!(Instant::now() < deadline, "never armed again");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        rx.take();
        std::fs::write(dir.join("again"), "z").unwrap();
        next_event(&rx, "an entry of the new directory").await;
        // A subdirectory's entries are not its entries.
        std::fs::create_dir(dir.join("sub")).unwrap();
        next_event(&rx, "a subdirectory created").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        rx.take();
        std::fs::write(dir.join("sub/deep"), "z").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !rx.take().dirty,
            "an entry of a subdirectory is not watched"
        );
    }

    #[test]
    fn paths_are_normalized_for_byte_keys() {
        let n = |s: &str| normalized(&arc(Path::new(s)));
        assert_eq!(&*n("/a/b"), Path::new("/a/b"));
        assert_eq!(bytes(&n("/a//b")), b"/a/b");
        assert_eq!(bytes(&n("/a/./b/")), b"/a/b");
        assert_eq!(bytes(&n("/a/b/.")), b"/a/b");
        assert_eq!(bytes(&n("/")), b"/");
    }

    #[tokio::test]
    async fn a_target_written_with_a_doubled_slash_still_gets_its_events() {
        let t = tempfile::tempdir().unwrap();
        let odd = format!("{}//f", t.path().display());
        let (w, rx) = Watcher::channel();
        let _s = subscribe(&arc(Path::new(&odd)), w).unwrap();
        rx.take();
        std::fs::write(t.path().join("f"), "x").unwrap();
        let sig = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("no event for the file");
        assert!(sig.dirty);
    }

    #[test]
    fn many_subscriptions_share_one_directory_and_release_it() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        let (w, _rx) = Watcher::channel();
        let subs: Vec<_> = (0..300)
            .map(|i| subscribe(&arc(&base.join(format!("f{i}"))), w.clone()).unwrap())
            .collect();
        assert_eq!(armed_on(&base), Some(300));
        assert!(hub().dirs.contains_key(bytes(Path::new("/"))));
        drop(subs);
        assert_eq!(armed_on(&base), None, "the directory is released");
    }

    #[tokio::test]
    async fn an_ancestor_armed_on_later_reports_changes_inside_its_entries() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path();
        std::fs::create_dir(top.join("a")).unwrap();
        std::fs::write(top.join("g"), "old").unwrap();
        // `top` is only an ancestor: watched for entries coming and going, not their content.
        let (w, _rx) = Watcher::channel();
        let _deep = subscribe(&arc(&top.join("a/f")), w).unwrap();
        assert!(!hub().dirs[bytes(top)].full);
        assert!(hub().dirs[bytes(&top.join("a"))].full);
        // Armed on it now: an edit in place of an existing entry is seen.
        let (w, rx) = Watcher::channel();
        let _g = subscribe(&arc(&top.join("g")), w).unwrap();
        assert!(hub().dirs[bytes(top)].full);
        rx.take();
        std::fs::OpenOptions::new()
            .append(true)
            .open(top.join("g"))
            .unwrap()
            .write_all(b"new")
            .unwrap();
        let sig = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("no event for the edit");
        assert!(sig.dirty);
    }

    #[test]
    fn a_missing_parent_arms_on_the_nearest_ancestor() {
        let t = tempfile::tempdir().unwrap();
        let (w, _rx) = Watcher::channel();
        let target = t.path().join("a/b/c");
        let s = subscribe(&arc(&target), w.clone()).unwrap();
        assert_eq!(armed_on(t.path()), Some(1));
        assert_eq!(hub().dirs[bytes(t.path())].deep.len(), 1);
        // Unsubscribe, create the parent, subscribe again: armed on the parent now.
        drop(s);
        assert_eq!(armed_on(t.path()), None);
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let s = subscribe(&arc(&target), w).unwrap();
        assert_eq!(armed_on(&t.path().join("a/b")), Some(1));
        assert!(hub().dirs[bytes(&t.path().join("a/b"))].deep.is_empty());
        // Its ancestors are watched (held by the directory below each).
        assert!(hub().dirs.contains_key(bytes(&t.path().join("a"))));
        drop(s);
        assert!(!hub().dirs.contains_key(bytes(&t.path().join("a"))));
    }

    #[test]
    fn removal_from_the_middle_keeps_positions_right() {
        let t = tempfile::tempdir().unwrap();
        let (w, _rx) = Watcher::channel();
        let mut subs: Vec<Option<Subscription>> = (0..50)
            .map(|i| Some(subscribe(&arc(&t.path().join(format!("x/f{i}"))), w.clone()).unwrap()))
            .collect();
        // All deep (x is missing); drop every other one, then the rest, in a mixed order.
        for i in (0..50).step_by(2) {
            subs[i] = None;
        }
        assert_eq!(armed_on(t.path()), Some(25));
        assert_eq!(hub().dirs[bytes(t.path())].deep.len(), 25);
        {
            let h = hub();
            for (i, s) in subs.iter().enumerate() {
                if let Some(s) = s {
                    let sub = h.sub(s.id).unwrap();
                    assert_eq!(
                        h.dirs[bytes(t.path())].armed[sub.armed_pos],
                        s.id,
                        "sub {i}"
                    );
                    assert_eq!(h.dirs[bytes(t.path())].deep[sub.deep_pos.unwrap()], s.id);
                }
            }
        }
        for i in (1..50).step_by(2).rev() {
            subs[i] = None;
        }
        assert_eq!(armed_on(t.path()), None);
    }
}
