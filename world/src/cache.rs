//! The watch cache: one store watch per World over the namespace (every area but the file
//! blobs), a local copy of what this host may read (exports addressed to it or to `*`,
//! strings, string maps, deploys, hosts), and fan-out to any number of local subscribers.
//!
//! A subscriber is a `tokio::sync::watch` receiver of a change counter: the store watch never
//! waits for a subscriber, and a slow subscriber sees one coalesced change and then reads the
//! latest state, never a stale one. Subscribing opens no store watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::keys::{escape, Keys};
use crate::store::{AbortOnDrop, KeyRange, Op, OpResult, Store, Txn, WatchEvent, WatchMsg};
use tend_model::world::StoreError;

/// Narrows a subscription to the keys of its ranges it accepts.
pub(crate) type KeyFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct Sub {
    ranges: Vec<KeyRange>,
    filter: Option<KeyFilter>,
    tx: watch::Sender<u64>,
}

struct State {
    kvs: BTreeMap<String, Vec<u8>>,
    subs: Vec<Sub>,
}

struct Inner {
    exports_prefix: String,
    mine: String,
    state: Mutex<State>,
    rev: watch::Sender<i64>,
    /// Events received on the store watch.
    events: std::sync::atomic::AtomicU64,
}

/// The cache (cheap to clone).
#[derive(Clone)]
pub(crate) struct Cache {
    inner: Arc<Inner>,
}

impl Cache {
    /// How many events the store watch delivered so far.
    pub(crate) fn events(&self) -> u64 {
        self.inner.events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Loads the namespace and starts the one store watch. The returned guard stops it.
    /// When etcd's RBAC refuses this host the whole namespace (other hosts' exports), it
    /// loads and watches the ranges the host may read instead (`Keys::readable_ranges`).
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        keys: &Keys,
        host: &str,
    ) -> Result<(Cache, Vec<AbortOnDrop>), StoreError> {
        let whole = keys.cached_range();
        let (ranges, revision, kvs) = match store.range(whole.clone()).await {
            Ok(snapshot) => (vec![whole], snapshot.revision, snapshot.kvs),
            Err(StoreError::PermissionDenied { .. }) => {
                let ranges = keys.readable_ranges(host);
                tracing::info!(
                    host,
                    ranges = ranges.len(),
                    "etcd's permissions isolate this host's exports: watching the ranges it may read"
                );
                let r = store
                    .txn(Txn::ops(ranges.iter().cloned().map(Op::Get).collect()))
                    .await?;
                let mut kvs = Vec::new();
                for res in r.results {
                    if let OpResult::Range(mut part) = res {
                        kvs.append(&mut part);
                    }
                }
                (ranges, r.revision, kvs)
            }
            Err(e) => return Err(e),
        };
        let cache = Cache {
            inner: Arc::new(Inner {
                exports_prefix: keys.exports_area(),
                mine: format!("{}/", escape(host)),
                state: Mutex::new(State {
                    kvs: BTreeMap::new(),
                    subs: Vec::new(),
                }),
                rev: watch::channel(revision).0,
                events: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        {
            let mut st = cache.lock();
            for kv in kvs {
                if cache.wanted(&kv.key) {
                    st.kvs.insert(kv.key, kv.value);
                }
            }
        }
        let mut tasks = Vec::new();
        for range in ranges {
            let mut w = store.watch(range.clone(), revision + 1).await?;
            let weak = Arc::downgrade(&cache.inner);
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                while let Some(msg) = w.next().await {
                    let Some(inner) = weak.upgrade() else { return };
                    Cache { inner }.apply(msg, &range);
                }
            })));
        }
        Ok((cache, tasks))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wanted(&self, key: &str) -> bool {
        match key.strip_prefix(&self.inner.exports_prefix) {
            Some(rest) => rest.starts_with(&self.inner.mine) || rest.starts_with("*/"),
            None => true,
        }
    }

    /// Applies what the watch of `range` delivered.
    fn apply(&self, msg: WatchMsg, range: &KeyRange) {
        let mut changed: Vec<String> = Vec::new();
        let mut st = self.lock();
        let revision = match msg {
            WatchMsg::Events(events) => {
                self.inner
                    .events
                    .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let mut rev = 0;
                for ev in events {
                    rev = rev.max(ev.revision());
                    match ev {
                        WatchEvent::Put(kv) => {
                            if self.wanted(&kv.key) {
                                changed.push(kv.key.clone());
                                st.kvs.insert(kv.key, kv.value);
                            }
                        }
                        WatchEvent::Delete { key, .. } => {
                            if st.kvs.remove(&key).is_some() {
                                changed.push(key);
                            }
                        }
                    }
                }
                rev
            }
            WatchMsg::Resync { revision, kvs } => {
                let mut fresh = BTreeMap::new();
                for kv in kvs {
                    if self.wanted(&kv.key) {
                        fresh.insert(kv.key, kv.value);
                    }
                }
                for (k, v) in &fresh {
                    if st.kvs.get(k) != Some(v) {
                        changed.push(k.clone());
                    }
                }
                let gone: Vec<String> = st
                    .kvs
                    .keys()
                    .filter(|k| range.contains(k) && !fresh.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    st.kvs.remove(&k);
                    changed.push(k);
                }
                st.kvs.extend(fresh);
                revision
            }
        };
        st.subs.retain(|s| !s.tx.is_closed());
        if !changed.is_empty() {
            for sub in &st.subs {
                if changed.iter().any(|k| {
                    sub.ranges.iter().any(|r| r.contains(k))
                        && sub.filter.as_ref().is_none_or(|f| f(k))
                }) {
                    sub.tx.send_modify(|g| *g += 1);
                }
            }
        }
        drop(st);
        self.inner.rev.send_if_modified(|r| {
            if revision > *r {
                *r = revision;
                true
            } else {
                false
            }
        });
    }

    /// A change counter bumped whenever a key in one of `ranges` changes.
    pub(crate) fn subscribe(&self, ranges: Vec<KeyRange>) -> watch::Receiver<u64> {
        self.subscribe_filtered(ranges, None)
    }

    /// Like [`Cache::subscribe`], for the keys of `ranges` that `filter` accepts.
    pub(crate) fn subscribe_filtered(
        &self,
        ranges: Vec<KeyRange>,
        filter: Option<KeyFilter>,
    ) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        self.lock().subs.push(Sub { ranges, filter, tx });
        rx
    }

    /// The number of live subscribers.
    pub(crate) fn subscribers(&self) -> usize {
        let mut st = self.lock();
        st.subs.retain(|s| !s.tx.is_closed());
        st.subs.len()
    }

    /// One cached value.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().kvs.get(key).cloned()
    }

    /// Every cached key/value under a prefix.
    pub(crate) fn prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let range = KeyRange::prefix(prefix);
        let end = range.end.clone().unwrap_or_default();
        self.lock()
            .kvs
            .range(range.start..end)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The last store revision applied.
    pub(crate) fn revision(&self) -> i64 {
        *self.inner.rev.borrow()
    }

    /// Waits (at most 10 s) until the cache has applied `revision`: read-your-writes.
    pub(crate) async fn wait_for(&self, revision: i64) {
        if self.revision() >= revision {
            return;
        }
        let mut rx = self.inner.rev.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r >= revision)).await;
    }
}
