//! The World: the traits the rest of tend uses, and [`World`], their one implementation over
//! any [`Store`]. A `World` owns the host's session (a lease kept alive in the background,
//! re-granted with a re-registration and a re-export when it was lost), and the watch cache
//! that serves every read and every subscription.

mod deploys;
mod exports;
mod files;
mod hosts;
mod sched;
mod strings;

pub(crate) use deploys::decode_deploy;
pub(crate) use hosts::decode_host;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::StreamExt;

use crate::cache::Cache;
use crate::codec::{encode, HostRecord};
use crate::keys::{check_host, Keys, DEFAULT_NAMESPACE};
use crate::store::embedded::Embedded;
use crate::store::etcd::{Etcd, EtcdConfig};
use crate::store::{AbortOnDrop, Compare, KeyRange, LeaseId, Op, OpResult, Store, Txn};
use tend_model::world::{Changes, StoreError, WorldError};

/// Size of one file chunk in the store (etcd refuses requests above 1.5 MiB).
pub const CHUNK_SIZE: usize = 512 * 1024;

/// Which store to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An etcd cluster.
    Etcd(EtcdConfig),
    /// The embedded store under a state directory.
    Embedded {
        /// The state directory.
        state_dir: PathBuf,
    },
}

/// Opens a backend's store.
pub async fn open_store(backend: &Backend) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match backend {
        Backend::Etcd(cfg) => Arc::new(Etcd::connect(cfg.clone()).await?),
        Backend::Embedded { state_dir } => {
            // Replaying the log is blocking file I/O: keep it off the async workers.
            let dir = state_dir.clone();
            let opened = tokio::task::spawn_blocking(move || Embedded::open(&dir))
                .await
                .map_err(|e| {
                    StoreError::Unsupported(format!("opening the embedded store failed: {e}"))
                })?;
            Arc::new(opened?)
        }
    })
}

/// Everything [`World::connect`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldConfig {
    /// The store.
    pub backend: Backend,
    /// Key namespace (default `/tend`).
    pub namespace: String,
    /// This host's name.
    pub hostname: String,
    /// Session TTL: exports and the registration of a host gone this long disappear.
    pub session_ttl: Duration,
    /// Deploys kept (older ones and unreferenced files are removed).
    pub deploy_retention: usize,
    /// Unreferenced files younger than this are kept (an upload may be in flight).
    pub file_gc_grace: Duration,
    /// Version string registered for this host.
    pub version: String,
    /// Register this process as a host (a daemon does; a controller such as `tend deploy`
    /// does not, so it never shows up in the cluster's membership).
    pub register: bool,
    /// This host's labels, in its registration (deploy selectors match them).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl WorldConfig {
    /// Defaults for a host on the embedded store under `state_dir`.
    pub fn embedded(state_dir: impl Into<PathBuf>, hostname: impl Into<String>) -> Self {
        WorldConfig::with_backend(
            Backend::Embedded {
                state_dir: state_dir.into(),
            },
            hostname,
        )
    }

    /// Defaults for a host on etcd.
    pub fn etcd(endpoints: Vec<String>, hostname: impl Into<String>) -> Self {
        WorldConfig::with_backend(Backend::Etcd(EtcdConfig::new(endpoints)), hostname)
    }

    /// Defaults for a host on any backend.
    pub fn with_backend(backend: Backend, hostname: impl Into<String>) -> Self {
        WorldConfig {
            backend,
            namespace: DEFAULT_NAMESPACE.to_string(),
            hostname: hostname.into(),
            session_ttl: Duration::from_secs(10),
            deploy_retention: 50,
            file_gc_grace: Duration::from_secs(3600),
            version: env!("CARGO_PKG_VERSION").to_string(),
            register: true,
            labels: std::collections::BTreeMap::new(),
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    counting: Arc<crate::store::counting::Counting>,
    keys: Keys,
    cfg: WorldConfig,
    cache: Cache,
    lease: AtomicI64,
    renew: tokio::sync::Mutex<()>,
    own_exports: Mutex<BTreeMap<String, Vec<u8>>>,
    host: Mutex<HostRecord>,
    last_write: AtomicI64,
    last_contact_ms: AtomicI64,
    tasks: Mutex<Vec<AbortOnDrop>>,
    /// This process's scheduling memberships, by namespace.
    sched: Mutex<BTreeMap<String, sched::SchedEntry>>,
}

/// A snapshot of a World's health, for probes and `/info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldStatus {
    /// The store (`etcd http://...` or `embedded /path/world.log`).
    pub backend: String,
    /// This host's name.
    pub hostname: String,
    /// Whether the session was confirmed alive within its TTL.
    pub session_ok: bool,
    /// Last confirmation of the session, milliseconds since the Unix epoch.
    pub last_contact_ms: u64,
    /// The last store revision the watch cache applied.
    pub cache_revision: i64,
    /// Live local subscriptions.
    pub subscribers: usize,
}

/// A host's handle on the World: implements every World trait. Cheap to clone; the session
/// and the watch cache stop when the last clone is dropped (the session then expires after
/// its TTL), or at once with [`World::close`].
#[derive(Clone)]
pub struct World {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn changes(rx: tokio::sync::watch::Receiver<u64>) -> Changes {
    tokio_stream::wrappers::WatchStream::new(rx)
        .map(|_| ())
        .boxed()
}

impl World {
    /// Opens the store and joins the World: grants the session, registers the host, loads
    /// the watch cache and starts its one store watch.
    pub async fn connect(cfg: WorldConfig) -> Result<World, WorldError> {
        let store = open_store(&cfg.backend).await?;
        World::with_store(store, cfg).await
    }

    /// Joins the World over an already open store (`cfg.backend` is only informative).
    pub async fn with_store(store: Arc<dyn Store>, cfg: WorldConfig) -> Result<World, WorldError> {
        check_host(&cfg.hostname)?;
        let counting = Arc::new(crate::store::counting::Counting::new(store));
        let store: Arc<dyn Store> = counting.clone();
        let keys = Keys::new(&cfg.namespace);
        let lease = store.lease_grant(cfg.session_ttl).await?;
        let (cache, cache_tasks) = Cache::start(store.clone(), &keys, &cfg.hostname).await?;
        let host = HostRecord {
            version: cfg.version.clone(),
            started_ms: now_ms(),
            deploy: None,
            converged: false,
            error: None,
            updated_ms: now_ms(),
            instance: uuid::Uuid::new_v4().to_string(),
            failed: 0,
            blocked: 0,
            first_failure: None,
            converged_ms: 0,
            labels: cfg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let world = World {
            inner: Arc::new(Inner {
                store,
                counting,
                keys,
                cfg,
                cache,
                lease: AtomicI64::new(lease),
                renew: tokio::sync::Mutex::new(()),
                own_exports: Mutex::new(BTreeMap::new()),
                host: Mutex::new(host),
                last_write: AtomicI64::new(0),
                last_contact_ms: AtomicI64::new(now_ms() as i64),
                tasks: Mutex::new(cache_tasks),
                sched: Mutex::new(BTreeMap::new()),
            }),
        };
        world.put_host().await?;
        if world.inner.cfg.register {
            world.migrate_strmap().await;
        }
        let weak = Arc::downgrade(&world.inner);
        let ttl = world.inner.cfg.session_ttl;
        let keepalive = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(200));
            let mut delay = period;
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                let w = World { inner };
                let lease = w.lease();
                delay = match w.inner.store.lease_keepalive(lease).await {
                    Ok(_) => {
                        w.inner
                            .last_contact_ms
                            .store(now_ms() as i64, Ordering::SeqCst);
                        period
                    }
                    Err(StoreError::LeaseNotFound(_)) => match w.renew_session(lease).await {
                        Ok(()) => {
                            w.inner
                                .last_contact_ms
                                .store(now_ms() as i64, Ordering::SeqCst);
                            period
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, host = %w.inner.cfg.hostname, "cannot renew the world session");
                            Duration::from_millis(500)
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, host = %w.inner.cfg.hostname, "world session keepalive failed");
                        Duration::from_millis(500)
                    }
                };
            }
        });
        world.lock_tasks().push(AbortOnDrop(keepalive));
        Ok(world)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<AbortOnDrop>> {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease(&self) -> LeaseId {
        self.inner.lease.load(Ordering::SeqCst)
    }

    /// Store operations so far, by `(operation, "ok" | "error")`.
    pub fn op_counts(&self) -> crate::store::counting::OpCounts {
        self.inner.counting.counts()
    }

    /// Events the host's one store watch delivered so far.
    pub fn watch_events(&self) -> u64 {
        self.inner.cache.events()
    }

    /// How many export records this host currently publishes.
    pub fn own_export_count(&self) -> usize {
        self.inner
            .own_exports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// This host's name.
    pub fn hostname(&self) -> &str {
        &self.inner.cfg.hostname
    }

    /// This host's labels (as registered).
    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.inner.cfg.labels
    }

    /// The key schema.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The store under this World.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// Health for probes: the session is OK when it was confirmed within its TTL.
    pub fn status(&self) -> WorldStatus {
        let last = self.inner.last_contact_ms.load(Ordering::SeqCst).max(0) as u64;
        let ttl = self.inner.cfg.session_ttl.as_millis() as u64;
        WorldStatus {
            backend: self.inner.store.describe(),
            hostname: self.inner.cfg.hostname.clone(),
            session_ok: now_ms().saturating_sub(last) <= ttl,
            last_contact_ms: last,
            cache_revision: self.inner.cache.revision(),
            subscribers: self.inner.cache.subscribers(),
        }
    }

    /// The number of live local subscriptions (for tests and metrics).
    pub fn subscribers(&self) -> usize {
        self.inner.cache.subscribers()
    }

    /// Leaves the World now: stops the cache and revokes the session (this host's exports
    /// and registration disappear at once).
    pub async fn close(self) -> Result<(), WorldError> {
        self.sched_close().await;
        self.lock_tasks().clear();
        match self.inner.store.lease_revoke(self.lease()).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn note_write(&self, revision: i64) {
        self.inner.last_write.fetch_max(revision, Ordering::SeqCst);
    }

    async fn settle(&self) {
        let rev = self.inner.last_write.load(Ordering::SeqCst);
        self.inner.cache.wait_for(rev).await;
    }

    /// Writes `v` at `k` unless it is already there (no revision, no watch event then).
    async fn put_if_changed(&self, k: String, v: Vec<u8>) -> Result<(), WorldError> {
        self.txn(Txn {
            compares: vec![Compare::Value(k.clone(), v.clone())],
            success: vec![],
            failure: vec![Op::put(k, v)],
        })
        .await?;
        Ok(())
    }

    /// Runs a transaction on keys the watch cache sees, remembering the revision it wrote.
    async fn txn(&self, txn: Txn) -> Result<crate::store::TxnResult, WorldError> {
        let r = self.inner.store.txn(txn).await?;
        // Only a write produces an event the cache will see; reads and no-ops must not make
        // later reads wait for a revision that may belong to keys the cache does not watch.
        let wrote = r
            .results
            .iter()
            .any(|x| matches!(x, OpResult::Put) || matches!(x, OpResult::Deleted(n) if *n > 0));
        if wrote {
            self.note_write(r.revision);
        }
        Ok(r)
    }

    /// Writes `value` under `key` bound to the session, unless it is already there.
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> Result<bool, WorldError> {
        for attempt in 0..3 {
            let lease = self.lease();
            let txn = Txn {
                compares: vec![
                    Compare::Value(key.to_string(), value.clone()),
                    Compare::Lease(key.to_string(), lease),
                ],
                success: vec![],
                failure: vec![Op::Put {
                    key: key.to_string(),
                    value: value.clone(),
                    lease,
                }],
            };
            match self.txn(txn).await {
                Ok(r) => return Ok(!r.succeeded),
                Err(WorldError::Store(StoreError::LeaseNotFound(_))) if attempt < 2 => {
                    self.renew_session(lease).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(WorldError::Store(StoreError::LeaseNotFound(self.lease())))
    }

    /// Reads each key, in one transaction; one result per key, in order.
    async fn get_each(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<OpResult>, WorldError> {
        let ops = keys.map(|k| Op::Get(KeyRange::key(k))).collect();
        Ok(self.inner.store.txn(Txn::ops(ops)).await?.results)
    }

    /// Writes the records of `batch` that differ from the store (value or session), in one
    /// read and one write transaction. Only this host writes its own export keys.
    async fn put_leased_batch(&self, batch: Vec<(String, Vec<u8>)>) -> Result<bool, WorldError> {
        match batch.len() {
            0 => return Ok(false),
            // One record: a single compare-and-put transaction.
            1 => {
                let (key, value) = batch.into_iter().next().expect("one record");
                return self.put_leased(&key, value).await;
            }
            _ => {}
        }
        for attempt in 0..3 {
            let lease = self.lease();
            let read = self.get_each(batch.iter().map(|(k, _)| k.clone())).await?;
            let stale: Vec<Op> = batch
                .iter()
                .zip(read.iter())
                .filter(|((_, v), res)| match res {
                    OpResult::Range(kvs) => kvs
                        .first()
                        .is_none_or(|kv| &kv.value != v || kv.lease != lease),
                    _ => true,
                })
                .map(|((k, v), _)| Op::Put {
                    key: k.clone(),
                    value: v.clone(),
                    lease,
                })
                .collect();
            if stale.is_empty() {
                return Ok(false);
            }
            match self.txn(Txn::ops(stale)).await {
                Ok(_) => return Ok(true),
                Err(WorldError::Store(StoreError::LeaseNotFound(_))) if attempt < 2 => {
                    self.renew_session(lease).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(WorldError::Store(StoreError::LeaseNotFound(self.lease())))
    }

    /// Grants a new session after `lost` expired, then re-registers and re-exports.
    async fn renew_session(&self, lost: LeaseId) -> Result<(), WorldError> {
        let _guard = self.inner.renew.lock().await;
        if self.lease() == lost {
            let lease = self
                .inner
                .store
                .lease_grant(self.inner.cfg.session_ttl)
                .await?;
            self.inner.lease.store(lease, Ordering::SeqCst);
            tracing::info!(host = %self.inner.cfg.hostname, "world session lost; re-registering and re-exporting");
        }
        let lease = self.lease();
        let host = self
            .inner
            .host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut ops = Vec::new();
        if self.inner.cfg.register {
            ops.push(Op::Put {
                key: self.inner.keys.host(&self.inner.cfg.hostname),
                value: encode(&host),
                lease,
            });
        }
        let exports = self
            .inner
            .own_exports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (key, value) in exports {
            ops.push(Op::Put { key, value, lease });
        }
        // At most 64 operations and about 512 KiB per transaction (etcd's limits).
        let mut batch: Vec<Op> = Vec::new();
        let mut size = 0;
        for op in ops {
            let len = match &op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                _ => 0,
            };
            if !batch.is_empty() && (batch.len() >= 64 || size + len > 512 * 1024) {
                self.txn(Txn::ops(std::mem::take(&mut batch))).await?;
                size = 0;
            }
            size += len;
            batch.push(op);
        }
        if !batch.is_empty() {
            self.txn(Txn::ops(batch)).await?;
        }
        Ok(())
    }
}
