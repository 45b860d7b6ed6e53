//! The Store layer: a small revisioned key/value interface (get, range, transactions with
//! compares, watches from a revision, leases) with two backends, [`etcd::Etcd`] and
//! [`embedded::Embedded`]. The World logic is written once over [`Store`]; the conformance
//! suite (`world/tests`) decides what "the same behaviour" means.
//!
//! Semantics follow etcd v3: every write transaction bumps the store revision by one; a key
//! carries its create and mod revisions and a version (number of writes since creation); a
//! compare on a missing key compares against zero values, except a value compare, which fails.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use tend_model::world::StoreError;

pub mod counting;
pub mod embedded;
pub mod etcd;

/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// One stored key with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is bound to, 0 for none.
    pub lease: LeaseId,
}

/// A set of keys: one key, or the half-open interval `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// First key.
    pub start: String,
    /// End (exclusive); `None` means the single key `start`.
    pub end: Option<String>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<String>) -> Self {
        KeyRange {
            start: key.into(),
            end: None,
        }
    }

    /// Every key starting with `prefix` (which must not be empty).
    pub fn prefix(prefix: impl Into<String>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        KeyRange {
            start,
            end: Some(end),
        }
    }

    /// Every key `k` with `start <= k < end`.
    pub fn between(start: impl Into<String>, end: impl Into<String>) -> Self {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        match &self.end {
            None => key == self.start,
            Some(end) => key >= self.start.as_str() && key < end.as_str(),
        }
    }
}

/// The smallest string greater than every string starting with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Only reachable for a prefix made of char::MAX: no upper bound expressible; use a high key.
    "\u{10FFFF}".repeat(2)
}

/// A condition of a transaction (all compares are equalities, as the World needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and holds exactly this value (false when missing).
    Value(String, Vec<u8>),
    /// The key's version equals (0 means missing).
    Version(String, i64),
    /// The key's mod revision equals (0 means missing).
    ModRevision(String, i64),
    /// The key is bound to this lease (0 means no lease or missing).
    Lease(String, LeaseId),
    /// The key exists.
    Exists(String),
    /// The key does not exist.
    Missing(String),
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write a key (optionally bound to a lease).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease, 0 for none.
        lease: LeaseId,
    },
    /// Delete every key of a range.
    Delete(KeyRange),
    /// Read every key of a range.
    Get(KeyRange),
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Self {
        Op::Put {
            key: key.into(),
            value,
            lease: 0,
        }
    }
}

/// The result of one [`Op`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A put happened.
    Put,
    /// This many keys were deleted.
    Deleted(i64),
    /// The keys read, sorted by key.
    Range(Vec<KeyValue>),
}

/// A transaction: if every compare holds, run `success`, else run `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, AND-ed.
    pub compares: Vec<Compare>,
    /// Operations when every compare holds.
    pub success: Vec<Op>,
    /// Operations otherwise.
    pub failure: Vec<Op>,
}

impl Txn {
    /// A transaction without conditions: runs `ops`.
    pub fn ops(ops: Vec<Op>) -> Txn {
        Txn {
            compares: Vec::new(),
            success: ops,
            failure: Vec::new(),
        }
    }
}

/// The outcome of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held.
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
    /// One result per operation run.
    pub results: Vec<OpResult>,
}

/// The keys of a range read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The store revision of the read.
    pub revision: i64,
    /// The keys, sorted.
    pub kvs: Vec<KeyValue>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted (explicitly or by its lease expiring) at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: i64,
    },
}

impl WatchEvent {
    /// The key concerned.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// What a watch delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMsg {
    /// Changes, in revision order, all in the watched range.
    Events(Vec<WatchEvent>),
    /// The history needed to resume was compacted: here is the whole current content of the
    /// watched range at `revision`; replace what you knew. Later events follow from there.
    Resync {
        /// The revision of the snapshot.
        revision: i64,
        /// Every key of the range.
        kvs: Vec<KeyValue>,
    },
}

/// A running watch. Dropping it stops the watch.
pub struct Watch {
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    _task: Option<AbortOnDrop>,
}

impl Watch {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<WatchMsg>, task: Option<AbortOnDrop>) -> Self {
        Watch { rx, _task: task }
    }

    /// The next message; `None` when the store was closed.
    pub async fn next(&mut self) -> Option<WatchMsg> {
        self.rx.recv().await
    }
}

/// Aborts a tokio task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A revisioned key/value store with watches and leases.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short description for messages (`etcd http://127.0.0.1:2379`, `embedded /var/lib/...`).
    fn describe(&self) -> String;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key of a range, sorted, with the store revision of the read.
    async fn range(&self, range: KeyRange) -> Result<Range, StoreError>;

    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Watches a range from `from_revision` (inclusive; 0 means "changes after now"). The watch
    /// never misses an update: after a disconnect it resumes from the last revision it
    /// delivered, and when that history was compacted it sends a [`WatchMsg::Resync`].
    async fn watch(&self, range: KeyRange, from_revision: i64) -> Result<Watch, StoreError>;

    /// Grants a lease with a time to live.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refreshes a lease once; returns its TTL. Fails with [`StoreError::LeaseNotFound`] when it
    /// has expired.
    async fn lease_keepalive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Revokes a lease, deleting every key bound to it.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
}
