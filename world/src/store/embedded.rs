//! The embedded backend: an in-process, revisioned store persisted as an fsync'ed append-only
//! log (`world.log`) under the state directory. Every acknowledged write has been written and
//! `fdatasync`ed before the call returns, so it survives `kill -9` (and power loss). A torn
//! last record (a write that was never acknowledged) is dropped on open; any other damage, or
//! a file that is not ours, is an error naming the file, never a panic.
//!
//! One process owns a state directory at a time (an `flock` on `world.lock`); `tend world`
//! can read it with [`Embedded::open_read_only`] while the owner runs. Leases live in memory:
//! when the store is reopened, the keys of the previous owner's leases are deleted (their
//! owner is gone). Watches keep a bounded in-memory history; a watch from an older revision
//! gets a [`WatchMsg::Resync`], like a compacted etcd.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Compare, KeyRange, KeyValue, LeaseId, Op, OpResult, Range, Store, Txn, TxnResult, Watch,
    WatchEvent, WatchMsg,
};
use tend_model::world::StoreError;

const MAGIC: &[u8; 8] = b"TENDWLG1";
/// The log file name under the state directory.
pub const LOG_FILE: &str = "world.log";
const LOCK_FILE: &str = "world.lock";
const FRAME: usize = 12;
const HISTORY_MAX_BYTES: usize = 64 << 20;
const HISTORY_MAX_REVS: usize = 100_000;
const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// The same when the store is opened.
const OPEN_COMPACT_MIN_BYTES: u64 = 256 << 10;
/// The largest tail that may be a torn (never acknowledged) record.
const TORN_MAX: usize = 16 << 20;

#[derive(Serialize, Deserialize)]
enum LogRecord {
    Txn {
        revision: i64,
        ops: Vec<LogOp>,
    },
    Snapshot {
        revision: i64,
        kvs: Vec<(String, Vec<u8>, i64, i64, i64)>,
    },
}

#[derive(Serialize, Deserialize)]
enum LogOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

struct Watcher {
    range: KeyRange,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: i64,
    history: VecDeque<(i64, Vec<WatchEvent>, usize)>,
    history_bytes: usize,
    compacted: i64,
    watchers: Vec<Watcher>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    log: Option<File>,
    log_len: u64,
    /// The log is rewritten as a snapshot once it exceeds this size and 4x the live data.
    compact_at: u64,
    compact_min: u64,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    _lock: Option<File>,
}

/// The embedded store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn checksum(payload: &[u8]) -> u64 {
    let h = blake3::hash(payload);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

fn frame(record: &LogRecord) -> Vec<u8> {
    let payload = postcard::to_stdvec(record).expect("log records always encode");
    let mut out = Vec::with_capacity(payload.len() + FRAME);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

impl Embedded {
    /// Opens (creating if needed) the store under `state_dir`, taking its lock.
    pub fn open(state_dir: &Path) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let lock_path = state_dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StoreError::Locked { path: lock_path });
        }
        let path = state_dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut state = State::new();
        let valid_len = replay(&path, &mut file, &mut state)?;
        let on_disk = file.metadata().map_err(io_err(&path))?.len();
        if valid_len != on_disk {
            // A torn tail: the last write was never acknowledged. Drop it.
            tracing::warn!(file = %path.display(), at = valid_len, "dropping torn last record");
            file.set_len(valid_len).map_err(io_err(&path))?;
        }
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(valid_len))
            .map_err(io_err(&path))?;
        if valid_len == 0 {
            file.write_all(MAGIC).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            if let Ok(dir) = File::open(state_dir) {
                let _ = dir.sync_all();
            }
            state.log_len = MAGIC.len() as u64;
        } else {
            state.log_len = valid_len;
        }
        state.log = Some(file);
        // The previous owner's leases are gone: delete the keys bound to them.
        let leased: Vec<String> = state
            .kvs
            .values()
            .filter(|kv| kv.lease != 0)
            .map(|kv| kv.key.clone())
            .collect();
        if !leased.is_empty() {
            let txn = Txn::ops(
                leased
                    .into_iter()
                    .map(|k| Op::Delete(KeyRange::key(k)))
                    .collect(),
            );
            state.apply(&path, txn)?;
        }
        // A mostly dead log is compacted from a much smaller size here than while running:
        // every start replays it (about 6 ms per MiB), and a daemon started often (a one-shot
        // run from a timer) appends a few records each time.
        state.compact_at = OPEN_COMPACT_MIN_BYTES.min(state.compact_min);
        state.maybe_compact(&path);
        let inner = Arc::new(Inner {
            path,
            state: Mutex::new(state),
            _lock: Some(lock),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("tend-world-leases".into())
            .spawn(move || expire_leases(weak))
            .map_err(io_err(state_dir))?;
        Ok(Embedded { inner })
    }

    /// Opens the store under `state_dir` read-only, without taking its lock (for inspection
    /// while its owner runs). Writes and leases fail with [`StoreError::ReadOnly`]. When no
    /// process owns the store, keys bound to leases are hidden (their owner is gone).
    pub fn open_read_only(state_dir: &Path) -> Result<Embedded, StoreError> {
        let path = state_dir.join(LOG_FILE);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let mut state = State::new();
        let len = replay(&path, &mut file, &mut state)?;
        state.log_len = len;
        // When nobody holds the lock, the owner is gone and so are its leases: hide their keys.
        if let Ok(lock) = File::open(state_dir.join(LOCK_FILE)) {
            // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
            let free = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
            if free {
                state.kvs.retain(|_, kv| kv.lease == 0);
            }
        }
        Ok(Embedded {
            inner: Arc::new(Inner {
                path,
                state: Mutex::new(state),
                _lock: None,
            }),
        })
    }

    /// Sets the log size past which the log is rewritten as a snapshot when it is mostly
    /// dead records (default 64 MiB; mainly for tests).
    pub fn set_compaction_threshold(&self, bytes: u64) {
        let mut st = self.lock();
        st.compact_min = bytes;
        st.compact_at = bytes;
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Embedded) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || f(&me)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Unsupported(format!(
                "embedded store task failed: {e}"
            ))),
        }
    }
}

fn replay(path: &Path, file: &mut File, state: &mut State) -> Result<u64, StoreError> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io_err(path))?;
    if buf.is_empty() {
        return Ok(0);
    }
    if buf.len() < MAGIC.len() {
        if MAGIC.starts_with(&buf) {
            return Ok(0); // torn creation
        }
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
        });
    }
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
        });
    }
    let mut off = MAGIC.len();
    let corrupt = |offset: usize, message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        message,
    };
    while off < buf.len() {
        if buf.len() - off < FRAME {
            break; // torn frame header
        }
        let n = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(buf[off + 4..off + 12].try_into().expect("8 bytes"));
        let end = off + FRAME + n;
        if end > buf.len() {
            break; // torn payload
        }
        let payload = &buf[off + FRAME..end];
        if checksum(payload) != sum {
            if end == buf.len() {
                break; // torn last record
            }
            return Err(corrupt(off, "checksum mismatch".into()));
        }
        let record: LogRecord = postcard::from_bytes(payload)
            .map_err(|e| corrupt(off, format!("undecodable record: {e}")))?;
        match record {
            LogRecord::Txn { revision, ops } => {
                if revision != state.revision + 1 {
                    return Err(corrupt(
                        off,
                        format!("revision {revision} follows revision {}", state.revision),
                    ));
                }
                state.revision = revision;
                let mut events = Vec::with_capacity(ops.len());
                for op in ops {
                    match op {
                        LogOp::Put { key, value, lease } => {
                            events.push(WatchEvent::Put(state.put_kv(key, value, lease, revision)))
                        }
                        LogOp::Delete { key } => {
                            if state.kvs.remove(&key).is_some() {
                                events.push(WatchEvent::Delete { key, revision });
                            }
                        }
                    }
                }
                state.push_history(revision, events);
            }
            LogRecord::Snapshot { revision, kvs } => {
                state.kvs.clear();
                for (key, value, create_revision, mod_revision, version) in kvs {
                    state.kvs.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            value,
                            create_revision,
                            mod_revision,
                            version,
                            lease: 0,
                        },
                    );
                }
                state.revision = revision;
                state.history.clear();
                state.history_bytes = 0;
                state.compacted = revision;
            }
        }
        off = end;
    }
    // A torn tail is at most one unacknowledged record; much more than that is damage, and
    // truncating it would lose acknowledged writes.
    if buf.len() - off > TORN_MAX {
        return Err(corrupt(
            off,
            format!(
                "{} unreadable bytes at the end (more than one record could leave)",
                buf.len() - off
            ),
        ));
    }
    Ok(off as u64)
}

/// Rewrites the log as one snapshot record (temporary file, fsync, rename). When it fails
/// before the rename, the log is untouched and still appended to; after it, the replaced file
/// is never appended to again.
fn compact_log(path: &Path, state: &mut State) -> Result<(), StoreError> {
    let tmp = path.with_extension("log.compact");
    let kvs = state
        .kvs
        .values()
        .filter(|kv| kv.lease == 0)
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.clone(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect();
    let bytes = frame(&LogRecord::Snapshot {
        revision: state.revision,
        kvs,
    });
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(MAGIC)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .map_err(io_err(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_err(path)));
    if let Err(e) = written {
        // Nothing replaced the log: it is still whole, and still the one being appended to.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // From here the open log is the replaced file: never append to it again, even if the new
    // one cannot be opened (writes then fail with an error instead of going nowhere).
    state.log = None;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    use std::io::Seek;
    state.log_len = f.seek(std::io::SeekFrom::End(0)).map_err(io_err(path))?;
    state.log = Some(f);
    Ok(())
}

fn expire_leases(weak: Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let Some(inner) = weak.upgrade() else { return };
        let mut st = inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            st.leases.remove(&id);
            if let Err(e) = st.delete_lease_keys(&inner.path, id) {
                tracing::error!(error = %e, lease = id, "cannot delete the keys of an expired lease");
            }
        }
    }
}

impl State {
    fn new() -> State {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(1);
        State {
            kvs: BTreeMap::new(),
            revision: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            compacted: 1,
            watchers: Vec::new(),
            leases: HashMap::new(),
            next_lease: (seed & 0x0fff_ffff_ffff) << 8,
            log: None,
            log_len: 0,
            compact_at: COMPACT_MIN_BYTES,
            compact_min: COMPACT_MIN_BYTES,
        }
    }

    fn put_kv(&mut self, key: String, value: Vec<u8>, lease: LeaseId, revision: i64) -> KeyValue {
        let kv = match self.kvs.get(&key) {
            Some(old) => KeyValue {
                key: key.clone(),
                value,
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
                lease,
            },
            None => KeyValue {
                key: key.clone(),
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease,
            },
        };
        self.kvs.insert(key, kv.clone());
        kv
    }

    fn push_history(&mut self, revision: i64, events: Vec<WatchEvent>) {
        let size: usize = events
            .iter()
            .map(|e| match e {
                WatchEvent::Put(kv) => kv.key.len() + kv.value.len() + 48,
                WatchEvent::Delete { key, .. } => key.len() + 16,
            })
            .sum();
        self.history.push_back((revision, events, size));
        self.history_bytes += size;
        while self.history.len() > HISTORY_MAX_REVS || self.history_bytes > HISTORY_MAX_BYTES {
            match self.history.pop_front() {
                Some((rev, _, sz)) => {
                    self.compacted = rev;
                    self.history_bytes -= sz;
                }
                None => break,
            }
        }
    }

    /// Rewrites the log as one snapshot when it is large and mostly dead records. A failure
    /// is only logged: the log as it is stays valid (see [`compact_log`]), and compaction is
    /// tried again at the next threshold, not at every write.
    fn maybe_compact(&mut self, path: &Path) {
        if self.log_len <= self.compact_at || self.log.is_none() {
            return;
        }
        let live: u64 = self
            .kvs
            .values()
            .map(|kv| (kv.key.len() + kv.value.len() + 32) as u64)
            .sum();
        if self.log_len > 4 * live {
            if let Err(e) = compact_log(path, self) {
                tracing::warn!(error = %e, "cannot compact the embedded store's log");
            }
        }
        // Check again when the log has grown by half or past the minimum, whichever is more.
        self.compact_at = (self.log_len + self.log_len / 2).max(self.compact_min);
    }

    fn compare(&self, c: &Compare) -> bool {
        let get = |k: &String| self.kvs.get(k);
        match c {
            Compare::Value(k, v) => get(k).is_some_and(|kv| &kv.value == v),
            Compare::Version(k, n) => get(k).map_or(0, |kv| kv.version) == *n,
            Compare::ModRevision(k, r) => get(k).map_or(0, |kv| kv.mod_revision) == *r,
            Compare::Lease(k, l) => get(k).map_or(0, |kv| kv.lease) == *l,
            Compare::Exists(k) => get(k).is_some(),
            Compare::Missing(k) => get(k).is_none(),
        }
    }

    fn keys_in(&self, range: &KeyRange) -> Vec<String> {
        match &range.end {
            None => self
                .kvs
                .get(&range.start)
                .map(|kv| kv.key.clone())
                .into_iter()
                .collect(),
            Some(end) => {
                if end.as_str() <= range.start.as_str() {
                    return vec![];
                }
                self.kvs
                    .range(range.start.clone()..end.clone())
                    .map(|(k, _)| k.clone())
                    .collect()
            }
        }
    }

    fn read(&self, range: &KeyRange) -> Vec<KeyValue> {
        match &range.end {
            None => self.kvs.get(&range.start).cloned().into_iter().collect(),
            Some(end) => {
                if end.as_str() <= range.start.as_str() {
                    return vec![];
                }
                self.kvs
                    .range(range.start.clone()..end.clone())
                    .map(|(_, kv)| kv.clone())
                    .collect()
            }
        }
    }

    fn apply(&mut self, path: &Path, txn: Txn) -> Result<TxnResult, StoreError> {
        let Some(_) = self.log else {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
            });
        };
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        let revision = self.revision + 1;
        let mut undo: Vec<(String, Option<KeyValue>)> = Vec::new();
        let mut log_ops = Vec::new();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    undo.push((key.clone(), self.kvs.get(&key).cloned()));
                    let kv = self.put_kv(key.clone(), value.clone(), lease, revision);
                    log_ops.push(LogOp::Put { key, value, lease });
                    events.push(WatchEvent::Put(kv));
                    results.push(OpResult::Put);
                }
                Op::Delete(range) => {
                    let keys = self.keys_in(&range);
                    for key in &keys {
                        undo.push((key.clone(), self.kvs.remove(key)));
                        log_ops.push(LogOp::Delete { key: key.clone() });
                        events.push(WatchEvent::Delete {
                            key: key.clone(),
                            revision,
                        });
                    }
                    results.push(OpResult::Deleted(keys.len() as i64));
                }
                Op::Get(range) => results.push(OpResult::Range(self.read(&range))),
            }
        }
        if log_ops.is_empty() {
            return Ok(TxnResult {
                succeeded,
                revision: self.revision,
                results,
            });
        }
        let bytes = frame(&LogRecord::Txn {
            revision,
            ops: log_ops,
        });
        let file = self.log.as_mut().expect("checked above");
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // Not durable: undo in memory and cut the partial record off the file.
            for (key, old) in undo.into_iter().rev() {
                match old {
                    Some(kv) => self.kvs.insert(key, kv),
                    None => self.kvs.remove(&key),
                };
            }
            let _ = file.set_len(self.log_len);
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        self.log_len += bytes.len() as u64;
        self.revision = revision;
        // The write itself is durable whatever becomes of the compaction.
        self.maybe_compact(path);
        self.notify(&events);
        self.push_history(revision, events);
        Ok(TxnResult {
            succeeded,
            revision,
            results,
        })
    }

    fn notify(&mut self, events: &[WatchEvent]) {
        self.watchers.retain(|w| {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| w.range.contains(e.key()))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchMsg::Events(mine)).is_ok()
        });
    }

    fn delete_lease_keys(&mut self, path: &Path, lease: LeaseId) -> Result<(), StoreError> {
        let keys: Vec<String> = self
            .kvs
            .values()
            .filter(|kv| kv.lease == lease)
            .map(|kv| kv.key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.apply(
            path,
            Txn::ops(
                keys.into_iter()
                    .map(|k| Op::Delete(KeyRange::key(k)))
                    .collect(),
            ),
        )
        .map(|_| ())
    }
}

#[async_trait]
impl Store for Embedded {
    fn describe(&self) -> String {
        format!("embedded {}", self.inner.path.display())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    async fn range(&self, range: KeyRange) -> Result<Range, StoreError> {
        let st = self.lock();
        Ok(Range {
            revision: st.revision,
            kvs: st.read(&range),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let read_only = txn
            .success
            .iter()
            .chain(txn.failure.iter())
            .all(|op| matches!(op, Op::Get(_)));
        if read_only {
            let st = self.lock();
            let succeeded = txn.compares.iter().all(|c| st.compare(c));
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let results = ops
                .iter()
                .map(|op| match op {
                    Op::Get(r) => OpResult::Range(st.read(r)),
                    _ => unreachable!("read-only transaction"),
                })
                .collect();
            return Ok(TxnResult {
                succeeded,
                revision: st.revision,
                results,
            });
        }
        self.blocking(move |me| {
            let path = me.inner.path.clone();
            me.lock().apply(&path, txn)
        })
        .await
    }

    async fn watch(&self, range: KeyRange, from_revision: i64) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let from = if from_revision <= 0 {
            st.revision + 1
        } else {
            from_revision
        };
        if from <= st.compacted {
            let kvs = st.read(&range);
            let _ = tx.send(WatchMsg::Resync {
                revision: st.revision,
                kvs,
            });
        } else {
            for (rev, events, _) in &st.history {
                if *rev < from {
                    continue;
                }
                let mine: Vec<WatchEvent> = events
                    .iter()
                    .filter(|e| range.contains(e.key()))
                    .cloned()
                    .collect();
                if !mine.is_empty() {
                    let _ = tx.send(WatchMsg::Events(mine));
                }
            }
        }
        st.watchers.push(Watcher { range, tx });
        Ok(Watch::new(rx, None))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut st = self.lock();
        if st.log.is_none() {
            return Err(StoreError::ReadOnly {
                path: self.inner.path.clone(),
            });
        }
        let ttl = ttl.max(Duration::from_secs(1));
        st.next_lease += 1;
        let id = st.next_lease;
        st.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(id)
    }

    async fn lease_keepalive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut st = self.lock();
        match st.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                Ok(l.ttl)
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |me| {
            let path = me.inner.path.clone();
            let mut st = me.lock();
            if st.leases.remove(&lease).is_none() {
                return Err(StoreError::LeaseNotFound(lease));
            }
            st.delete_lease_keys(&path, lease)
        })
        .await
    }
}
