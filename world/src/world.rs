//! The World: the traits the rest of tend uses, and [`World`], their one implementation over
//! any [`Store`]. A `World` owns the host's session (a lease kept alive in the background,
//! re-granted with a re-registration and a re-export when it was lost), and the watch cache
//! that serves every read and every subscription.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::cache::Cache;
use crate::codec::{
    decode, encode, BlobMeta, DeployRecord, ExportRecord, HostRecord, Manifest, ManifestEntry,
};
use crate::keys::{check_host, unescape, Keys, DEFAULT_NAMESPACE};
use crate::store::embedded::Embedded;
use crate::store::etcd::{Etcd, EtcdConfig};
use crate::store::{AbortOnDrop, Compare, KeyRange, LeaseId, Op, OpResult, Store, Txn};
use tend_model::world::{
    Changes, Deploy, DeployWorld, Export, ExportFilter, ExportKey, FsWorld, HostInfo, HostWorld,
    NewDeploy, ResWorld, StoreError, StrWorld, TreeEntry, WorldError,
};

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
        let (cache, cache_task) = Cache::start(store.clone(), &keys, &cfg.hostname).await?;
        let host = HostRecord {
            version: cfg.version.clone(),
            started_ms: now_ms(),
            deploy: None,
            converged: false,
            error: None,
            updated_ms: now_ms(),
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
                tasks: Mutex::new(vec![cache_task]),
            }),
        };
        world.put_host().await?;
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

    async fn put_host(&self) -> Result<bool, WorldError> {
        if !self.inner.cfg.register {
            return Ok(false);
        }
        let record = self
            .inner
            .host
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.put_leased(
            &self.inner.keys.host(&self.inner.cfg.hostname),
            encode(&record),
        )
        .await
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

    fn cached_latest(&self) -> Result<Option<Deploy>, WorldError> {
        let keys = &self.inner.keys;
        let Some(bytes) = self.inner.cache.get(&keys.deploy_latest()) else {
            return Ok(None);
        };
        let id: u64 = decode(&keys.deploy_latest(), &bytes)?;
        let key = keys.deploy(id);
        match self.inner.cache.get(&key) {
            Some(b) => decode_deploy(&key, &b).map(Some),
            None => Err(WorldError::DeployNotFound(id)),
        }
    }

    async fn store_deploy(&self, id: u64) -> Result<Deploy, WorldError> {
        let key = self.inner.keys.deploy(id);
        match self.inner.store.get(&key).await? {
            Some(kv) => decode_deploy(&key, &kv.value),
            None => Err(WorldError::DeployNotFound(id)),
        }
    }

    /// Retention after a deploy: a failure is logged, never reported as a failed deploy.
    async fn retention_best_effort(&self) {
        if let Err(e) = self.apply_retention().await {
            tracing::warn!(error = %e, "deploy retention failed; old deploys and files are kept");
        }
    }

    /// Removes deploys beyond the retention count, then unreferenced files.
    pub async fn apply_retention(&self) -> Result<(), WorldError> {
        let keys = &self.inner.keys;
        let ids = self
            .inner
            .store
            .range(KeyRange::prefix(keys.deploy_ids()))
            .await?;
        let keep = self.inner.cfg.deploy_retention.max(1);
        if ids.kvs.len() > keep {
            let old: Vec<Op> = ids.kvs[..ids.kvs.len() - keep]
                .iter()
                .map(|kv| Op::Delete(KeyRange::key(kv.key.clone())))
                .collect();
            for chunk in old.chunks(100) {
                self.txn(Txn::ops(chunk.to_vec())).await?;
            }
        }
        self.gc_files().await
    }

    /// Deletes stored files that no retained deploy references (older than the grace time).
    pub async fn gc_files(&self) -> Result<(), WorldError> {
        let keys = &self.inner.keys;
        let deploys = self
            .inner
            .store
            .range(KeyRange::prefix(keys.deploy_ids()))
            .await?;
        let mut referenced = BTreeSet::new();
        for kv in &deploys.kvs {
            let d = decode_deploy(&kv.key, &kv.value)?;
            referenced.insert(d.bundle.clone());
            match self.fs_tree(&d.bundle).await {
                Ok(entries) => {
                    for e in entries {
                        if let TreeEntry::File { blob, .. } = e {
                            referenced.insert(blob);
                        }
                    }
                }
                Err(WorldError::FileNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let metas = self
            .inner
            .store
            .range(KeyRange::prefix(keys.area("blobs") + "meta/"))
            .await?;
        let now = now_ms();
        let grace = self.inner.cfg.file_gc_grace.as_millis() as u64;
        for kv in metas.kvs {
            let hash = kv.key.rsplit('/').next().unwrap_or_default().to_string();
            if referenced.contains(&hash) {
                continue;
            }
            let meta: BlobMeta = decode(&kv.key, &kv.value)?;
            if now.saturating_sub(meta.created_ms) < grace {
                continue;
            }
            // Straight to the store: blobs are outside the watch cache's range.
            self.inner
                .store
                .txn(Txn {
                    compares: vec![Compare::ModRevision(kv.key.clone(), kv.mod_revision)],
                    success: vec![
                        Op::Delete(KeyRange::key(kv.key.clone())),
                        Op::Delete(KeyRange::prefix(keys.blob_data(&hash))),
                    ],
                    failure: vec![],
                })
                .await?;
        }
        Ok(())
    }

    async fn put_chunks(&self, hash: &str, bytes: &[u8]) -> Result<u32, WorldError> {
        let writes: Vec<(String, Vec<u8>)> = bytes
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, c)| {
                (
                    self.inner.keys.blob_chunk(hash, i as u32),
                    encode(&c.to_vec()),
                )
            })
            .collect();
        let n = writes.len() as u32;
        let store = self.inner.store.clone();
        stream::iter(writes)
            .map(move |(key, value)| {
                let store = store.clone();
                async move {
                    store
                        .txn(Txn::ops(vec![Op::put(key, value)]))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }
    /// Stores blobs of at most one chunk, skipping those already stored: a few read
    /// transactions to find what is missing, then a few write transactions (each blob's
    /// chunk and metadata together, at most 64 operations and 1 MiB per transaction).
    async fn put_small_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<(), WorldError> {
        let keys = &self.inner.keys;
        let mut unique: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (hash, bytes) in blobs {
            unique.entry(hash).or_insert(bytes);
        }
        let hashes: Vec<String> = unique.keys().cloned().collect();
        let mut missing = Vec::new();
        for batch in hashes.chunks(64) {
            let r = self
                .get_each(batch.iter().map(|h| keys.blob_meta(h)))
                .await?;
            for (h, res) in batch.iter().zip(r) {
                if matches!(res, OpResult::Range(kvs) if kvs.is_empty()) {
                    missing.push(h.clone());
                }
            }
        }
        let now = now_ms();
        let mut ops: Vec<Op> = Vec::new();
        let mut size = 0;
        for h in missing {
            let bytes = &unique[&h];
            if !ops.is_empty() && (ops.len() + 2 > 64 || size + bytes.len() > 1 << 20) {
                self.inner
                    .store
                    .txn(Txn::ops(std::mem::take(&mut ops)))
                    .await?;
                size = 0;
            }
            size += bytes.len();
            let meta = BlobMeta {
                size: bytes.len() as u64,
                chunks: 1,
                created_ms: now,
            };
            // Data first, metadata (which says "complete") second, in one transaction.
            ops.push(Op::put(keys.blob_chunk(&h, 0), encode(bytes)));
            ops.push(Op::put(keys.blob_meta(&h), encode(&meta)));
        }
        if !ops.is_empty() {
            self.inner.store.txn(Txn::ops(ops)).await?;
        }
        Ok(())
    }

    /// Reads blobs of one chunk, 64 per read transaction, verifying their hashes.
    async fn get_small_blobs(
        &self,
        hashes: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<u8>>, WorldError> {
        let keys = &self.inner.keys;
        let unique: Vec<String> = hashes
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = BTreeMap::new();
        for batch in unique.chunks(64) {
            let r = self
                .get_each(batch.iter().map(|h| keys.blob_chunk(h, 0)))
                .await?;
            for (h, res) in batch.iter().zip(r) {
                let OpResult::Range(kvs) = res else { continue };
                let Some(kv) = kvs.into_iter().next() else {
                    return Err(WorldError::FileNotFound { hash: h.clone() });
                };
                let bytes: Vec<u8> = decode(&kv.key, &kv.value)?;
                if blake3::hash(&bytes).to_hex().as_str() != h {
                    return Err(WorldError::Decode {
                        key: kv.key,
                        message: "content does not match its hash".into(),
                    });
                }
                out.insert(h.clone(), bytes);
            }
        }
        Ok(out)
    }

    /// Reads and verifies a blob's `chunks` chunks.
    async fn read_chunks(&self, hash: &str, chunks: u32) -> Result<Vec<u8>, WorldError> {
        let meta_key = self.inner.keys.blob_meta(hash);
        let parts: Vec<Vec<u8>> = stream::iter(0..chunks)
            .map(|i| {
                let key = self.inner.keys.blob_chunk(hash, i);
                async move {
                    match self.inner.store.get(&key).await? {
                        Some(kv) => decode::<Vec<u8>>(&key, &kv.value),
                        None => Err(WorldError::FileNotFound {
                            hash: format!("{hash} (chunk {i} missing)"),
                        }),
                    }
                }
            })
            .buffered(4)
            .try_collect()
            .await?;
        let bytes = parts.concat();
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(WorldError::Decode {
                key: meta_key,
                message: "content does not match its hash".into(),
            });
        }
        Ok(bytes)
    }
}

fn manifest_entries(m: Manifest) -> Vec<TreeEntry> {
    m.entries
        .into_iter()
        .map(|e| match e {
            ManifestEntry::Dir { path, mode } => TreeEntry::Dir { path, mode },
            ManifestEntry::File {
                path,
                mode,
                size,
                blob,
            } => TreeEntry::File {
                path,
                mode,
                size,
                blob,
            },
        })
        .collect()
}

fn walk(
    root: &Path,
    rel: &str,
    out: &mut Vec<(String, PathBuf, bool, u32)>,
) -> Result<(), WorldError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorldError::Io { path, source }
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(&dir))?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.push((rel_path.clone(), path, true, mode));
            walk(root, &rel_path, out)?;
        } else if meta.is_file() {
            out.push((rel_path, path, false, mode));
        } else {
            return Err(WorldError::Invalid {
                what: "bundle file",
                value: path.display().to_string(),
                reason:
                    "only regular files and directories can be stored (symlink or special file)",
            });
        }
    }
    Ok(())
}

fn safe_rel(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[async_trait]
impl ResWorld for World {
    async fn res_export(&self, exports: Vec<Export>) -> Result<bool, WorldError> {
        let me = self.inner.cfg.hostname.clone();
        let mut writes = Vec::with_capacity(exports.len());
        for e in exports {
            if !e.from.is_empty() && e.from != me {
                return Err(WorldError::Invalid {
                    what: "export source host",
                    value: e.from,
                    reason: "a host exports only as itself",
                });
            }
            if e.to != "*" {
                check_host(&e.to)?;
            }
            if e.kind.is_empty() {
                return Err(WorldError::Invalid {
                    what: "export kind",
                    value: e.kind,
                    reason: "empty",
                });
            }
            let key = self.inner.keys.export(&e.to, &e.kind, &me, &e.name);
            let value = encode(&ExportRecord { data: e.data });
            self.inner
                .own_exports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), value.clone());
            writes.push((key, value));
        }
        // Batches of at most 64 records or 512 KiB (etcd limits operations and request size).
        let mut batches: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
        let mut size = 0;
        for (key, value) in writes {
            let last = batches.last_mut().expect("never empty");
            if !last.is_empty() && (last.len() >= 64 || size + value.len() > 512 * 1024) {
                batches.push(Vec::new());
                size = 0;
            }
            size += key.len() + value.len();
            batches.last_mut().expect("never empty").push((key, value));
        }
        let changed: Vec<bool> = stream::iter(batches)
            .map(|batch| async move { self.put_leased_batch(batch).await })
            .buffer_unordered(4)
            .try_collect()
            .await?;
        Ok(changed.into_iter().any(|c| c))
    }

    async fn res_delete(&self, keys: Vec<ExportKey>) -> Result<bool, WorldError> {
        let me = self.inner.cfg.hostname.clone();
        let mut any = false;
        for k in keys {
            let key = self.inner.keys.export(&k.to, &k.kind, &me, &k.name);
            self.inner
                .own_exports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            let r = self
                .txn(Txn::ops(vec![Op::Delete(KeyRange::key(key))]))
                .await?;
            if matches!(r.results.first(), Some(OpResult::Deleted(n)) if *n > 0) {
                any = true;
            }
        }
        Ok(any)
    }

    async fn res_collect(&self, filters: &[ExportFilter]) -> Result<Vec<Export>, WorldError> {
        self.settle().await;
        let keys = &self.inner.keys;
        // When every filter names a kind, read only those kinds' key ranges.
        let kinds: Option<BTreeSet<&str>> = (!filters.is_empty()
            && filters.iter().all(|f| !f.kind.is_empty()))
        .then(|| filters.iter().map(|f| f.kind.as_str()).collect());
        let mut prefixes = Vec::new();
        for to in [self.inner.cfg.hostname.as_str(), "*"] {
            match &kinds {
                Some(kinds) => prefixes.extend(kinds.iter().map(|k| keys.exports_to(to, Some(k)))),
                None => prefixes.push(keys.exports_to(to, None)),
            }
        }
        let mut out = Vec::new();
        for prefix in prefixes {
            for (key, value) in self.inner.cache.prefix(&prefix) {
                let Some((to, kind, from, name)) = keys.parse_export(&key) else {
                    continue;
                };
                let mut e = Export {
                    kind,
                    name,
                    from,
                    to,
                    data: Vec::new(),
                };
                if !filters.is_empty() && !filters.iter().any(|f| f.matches(&e)) {
                    continue;
                }
                let r: ExportRecord = decode(&key, &value)?;
                e.data = r.data;
                out.push(e);
            }
        }
        out.sort();
        Ok(out)
    }

    fn res_watch(&self, kind: Option<&str>) -> Changes {
        let keys = &self.inner.keys;
        let ranges = [self.inner.cfg.hostname.as_str(), "*"]
            .iter()
            .map(|to| KeyRange::prefix(keys.exports_to(to, kind)))
            .collect();
        changes(self.inner.cache.subscribe(ranges))
    }
}

#[async_trait]
impl StrWorld for World {
    async fn str_get(&self, key: &str) -> Result<String, WorldError> {
        self.settle().await;
        let k = self.inner.keys.string(key);
        match self.inner.cache.get(&k) {
            Some(v) => decode(&k, &v),
            None => Err(WorldError::NotFound {
                key: format!("strings/{key}"),
            }),
        }
    }

    async fn str_set(&self, key: &str, value: &str) -> Result<(), WorldError> {
        let k = self.inner.keys.string(key);
        let v = encode(&value.to_string());
        self.put_if_changed(k, v).await
    }

    async fn str_del(&self, key: &str) -> Result<(), WorldError> {
        let k = self.inner.keys.string(key);
        let r = self
            .txn(Txn::ops(vec![Op::Delete(KeyRange::key(k))]))
            .await?;
        match r.results.first() {
            Some(OpResult::Deleted(n)) if *n > 0 => Ok(()),
            _ => Err(WorldError::NotFound {
                key: format!("strings/{key}"),
            }),
        }
    }

    fn str_watch(&self, key: &str) -> Changes {
        changes(
            self.inner
                .cache
                .subscribe(vec![KeyRange::key(self.inner.keys.string(key))]),
        )
    }

    async fn strmap_get(&self, key: &str) -> Result<BTreeMap<String, String>, WorldError> {
        self.settle().await;
        let prefix = self.inner.keys.strmap(key);
        let mut out = BTreeMap::new();
        for (k, v) in self.inner.cache.prefix(&prefix) {
            let host = unescape(&k[prefix.len()..]);
            out.insert(host, decode(&k, &v)?);
        }
        Ok(out)
    }

    async fn strmap_set(&self, key: &str, value: &str) -> Result<(), WorldError> {
        let k = self.inner.keys.strmap_entry(key, &self.inner.cfg.hostname);
        let v = encode(&value.to_string());
        self.put_if_changed(k, v).await
    }

    async fn strmap_del(&self, key: &str) -> Result<(), WorldError> {
        let k = self.inner.keys.strmap_entry(key, &self.inner.cfg.hostname);
        self.txn(Txn::ops(vec![Op::Delete(KeyRange::key(k))]))
            .await?;
        Ok(())
    }

    fn strmap_watch(&self, key: &str) -> Changes {
        changes(
            self.inner
                .cache
                .subscribe(vec![KeyRange::prefix(self.inner.keys.strmap(key))]),
        )
    }
}

#[async_trait]
impl FsWorld for World {
    async fn fs_put_blob(&self, bytes: &[u8]) -> Result<String, WorldError> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let meta_key = self.inner.keys.blob_meta(&hash);
        if self.inner.store.get(&meta_key).await?.is_some() {
            return Ok(hash);
        }
        let mut meta = BlobMeta {
            size: bytes.len() as u64,
            chunks: 1,
            created_ms: now_ms(),
        };
        let mut success = vec![Op::put(meta_key.clone(), Vec::new())];
        if bytes.len() <= CHUNK_SIZE {
            // One chunk: data and metadata in one transaction.
            success.push(Op::put(
                self.inner.keys.blob_chunk(&hash, 0),
                encode(&bytes.to_vec()),
            ));
        } else {
            // Chunks first; the metadata, written last, says the blob is complete.
            meta.chunks = self.put_chunks(&hash, bytes).await?;
        }
        success[0] = Op::put(meta_key.clone(), encode(&meta));
        self.inner
            .store
            .txn(Txn {
                compares: vec![Compare::Missing(meta_key)],
                success,
                failure: vec![],
            })
            .await?;
        Ok(hash)
    }

    async fn fs_get_blob(&self, hash: &str) -> Result<Vec<u8>, WorldError> {
        let meta_key = self.inner.keys.blob_meta(hash);
        let Some(kv) = self.inner.store.get(&meta_key).await? else {
            return Err(WorldError::FileNotFound {
                hash: hash.to_string(),
            });
        };
        let meta: BlobMeta = decode(&meta_key, &kv.value)?;
        self.read_chunks(hash, meta.chunks).await
    }

    async fn fs_put_tree(&self, root: &Path) -> Result<String, WorldError> {
        let mut found = Vec::new();
        walk(root, "", &mut found)?;
        let mut entries = Vec::with_capacity(found.len());
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (rel, path, is_dir, mode) in found {
            if is_dir {
                entries.push(ManifestEntry::Dir { path: rel, mode });
                continue;
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| WorldError::Io {
                    path: path.clone(),
                    source,
                })?;
            let blob = blake3::hash(&bytes).to_hex().to_string();
            entries.push(ManifestEntry::File {
                path: rel,
                mode,
                size: bytes.len() as u64,
                blob: blob.clone(),
            });
            if bytes.len() <= CHUNK_SIZE {
                small.push((blob, bytes));
            } else {
                large.push(bytes);
            }
        }
        self.put_small_blobs(small).await?;
        for bytes in large {
            self.fs_put_blob(&bytes).await?;
        }
        self.fs_put_blob(&encode(&Manifest { entries })).await
    }

    async fn fs_tree(&self, hash: &str) -> Result<Vec<TreeEntry>, WorldError> {
        let bytes = self.fs_get_blob(hash).await?;
        let m: Manifest = decode(&self.inner.keys.blob_meta(hash), &bytes)?;
        Ok(manifest_entries(m))
    }

    async fn fs_get_tree(&self, hash: &str, dest: &Path) -> Result<(), WorldError> {
        use std::os::unix::fs::PermissionsExt;
        let entries = self.fs_tree(hash).await?;
        let io = |path: PathBuf| move |source| WorldError::Io { path, source };
        for e in &entries {
            let path = match e {
                TreeEntry::Dir { path, .. } | TreeEntry::File { path, .. } => path,
            };
            if !safe_rel(path) {
                return Err(WorldError::Invalid {
                    what: "bundle path",
                    value: path.clone(),
                    reason: "not a relative path inside the bundle",
                });
            }
        }
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(io(dest.to_path_buf()))?;
        for e in &entries {
            if let TreeEntry::Dir { path, .. } = e {
                let p = dest.join(path);
                tokio::fs::create_dir_all(&p).await.map_err(io(p.clone()))?;
            }
        }
        // Small files: their one chunk, many per read transaction. Large ones: chunk by chunk.
        let small: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                TreeEntry::File { size, blob, .. } if *size as usize <= CHUNK_SIZE => {
                    Some(blob.clone())
                }
                _ => None,
            })
            .collect();
        let mut contents = self.get_small_blobs(small).await?;
        for e in &entries {
            if let TreeEntry::File { blob, .. } = e {
                if !contents.contains_key(blob) {
                    let bytes = self.fs_get_blob(blob).await?;
                    contents.insert(blob.clone(), bytes);
                }
            }
        }
        let writes: Vec<(PathBuf, u32, Vec<u8>)> = entries
            .iter()
            .filter_map(|e| match e {
                TreeEntry::File {
                    path, mode, blob, ..
                } => Some((dest.join(path), *mode, contents[blob].clone())),
                TreeEntry::Dir { .. } => None,
            })
            .collect();
        drop(contents);
        stream::iter(writes)
            .map(|(p, mode, bytes)| async move {
                if let Some(parent) = p.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io(parent.to_path_buf()))?;
                }
                tokio::fs::write(&p, &bytes).await.map_err(io(p.clone()))?;
                tokio::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .await
                    .map_err(io(p.clone()))
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        for e in entries {
            if let TreeEntry::Dir { path, mode } = e {
                let p = dest.join(&path);
                tokio::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .await
                    .map_err(io(p.clone()))?;
            }
        }
        Ok(())
    }

    async fn fs_read(&self, hash: &str, path: &str) -> Result<Vec<u8>, WorldError> {
        let wanted = path.trim_start_matches("./").trim_start_matches('/');
        for e in self.fs_tree(hash).await? {
            if let TreeEntry::File { path: p, blob, .. } = e {
                if p == wanted {
                    return self.fs_get_blob(&blob).await;
                }
            }
        }
        Err(WorldError::PathNotFound {
            hash: hash.to_string(),
            path: path.to_string(),
        })
    }
}

/// Decodes a host's registration stored at `key`, below `prefix`.
pub(crate) fn decode_host(key: &str, bytes: &[u8], prefix: &str) -> Result<HostInfo, WorldError> {
    let r: HostRecord = decode(key, bytes)?;
    Ok(HostInfo {
        hostname: unescape(&key[prefix.len()..]),
        version: r.version,
        started_ms: r.started_ms,
        deploy: r.deploy,
        converged: r.converged,
        error: r.error,
        updated_ms: r.updated_ms,
    })
}

/// Decodes a stored deploy record.
pub(crate) fn decode_deploy(key: &str, bytes: &[u8]) -> Result<Deploy, WorldError> {
    let r: DeployRecord = decode(key, bytes)?;
    Ok(Deploy {
        id: r.id,
        bundle: r.bundle,
        parent: r.parent,
        hash: r.hash,
        message: r.message,
        author: r.author,
        time_ms: r.time_ms,
    })
}

fn deploy_hash(r: &DeployRecord) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&r.id.to_le_bytes());
    for s in [
        r.bundle.as_str(),
        r.parent.as_deref().unwrap_or(""),
        r.message.as_str(),
        r.author.as_str(),
    ] {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update(&r.time_ms.to_le_bytes());
    h.finalize().to_hex().to_string()
}

#[async_trait]
impl DeployWorld for World {
    async fn add_deploy(&self, nd: NewDeploy) -> Result<Deploy, WorldError> {
        let keys = self.inner.keys.clone();
        if self
            .inner
            .store
            .get(&keys.blob_meta(&nd.bundle))
            .await?
            .is_none()
        {
            return Err(WorldError::FileNotFound {
                hash: nd.bundle.clone(),
            });
        }
        let time_ms = now_ms();
        loop {
            let latest_kv = self.inner.store.get(&keys.deploy_latest()).await?;
            let (latest, mod_rev) = match &latest_kv {
                Some(kv) => (Some(decode::<u64>(&kv.key, &kv.value)?), kv.mod_revision),
                None => (None, 0),
            };
            if !nd.force && nd.parent != latest {
                return Err(WorldError::DeployConflict {
                    expected: nd.parent,
                    latest,
                });
            }
            let parent = match latest {
                Some(id) => Some(self.store_deploy(id).await?.hash),
                None => None,
            };
            let id = latest.unwrap_or(0) + 1;
            let mut record = DeployRecord {
                id,
                bundle: nd.bundle.clone(),
                parent,
                hash: String::new(),
                message: nd.message.clone(),
                author: nd.author.clone(),
                time_ms,
            };
            record.hash = deploy_hash(&record);
            let r = self
                .txn(Txn {
                    compares: vec![Compare::ModRevision(keys.deploy_latest(), mod_rev)],
                    success: vec![
                        Op::put(keys.deploy(id), encode(&record)),
                        Op::put(keys.deploy_latest(), encode(&id)),
                    ],
                    failure: vec![],
                })
                .await;
            let succeeded = match r {
                Ok(r) => r.succeeded,
                Err(e) => return Err(e),
            };
            if !succeeded {
                // Our own retried write may have landed: check before calling it a conflict.
                if let Ok(d) = self.store_deploy(id).await {
                    if d.hash == record.hash {
                        self.retention_best_effort().await;
                        return Ok(d);
                    }
                }
                if nd.force {
                    continue;
                }
                let latest = match self.inner.store.get(&keys.deploy_latest()).await? {
                    Some(kv) => Some(decode::<u64>(&kv.key, &kv.value)?),
                    None => None,
                };
                return Err(WorldError::DeployConflict {
                    expected: nd.parent,
                    latest,
                });
            }
            self.retention_best_effort().await;
            return Ok(Deploy {
                id,
                bundle: record.bundle,
                parent: record.parent,
                hash: record.hash,
                message: record.message,
                author: record.author,
                time_ms,
            });
        }
    }

    async fn latest_deploy(&self) -> Result<Option<Deploy>, WorldError> {
        self.settle().await;
        self.cached_latest()
    }

    async fn get_deploy(&self, id: u64) -> Result<Deploy, WorldError> {
        self.settle().await;
        let key = self.inner.keys.deploy(id);
        match self.inner.cache.get(&key) {
            Some(b) => decode_deploy(&key, &b),
            None => Err(WorldError::DeployNotFound(id)),
        }
    }

    async fn list_deploys(&self) -> Result<Vec<Deploy>, WorldError> {
        self.settle().await;
        self.inner
            .cache
            .prefix(&self.inner.keys.deploy_ids())
            .into_iter()
            .map(|(k, v)| decode_deploy(&k, &v))
            .collect()
    }

    fn watch_deploys(&self) -> BoxStream<'static, Deploy> {
        let rx = self
            .inner
            .cache
            .subscribe(vec![KeyRange::key(self.inner.keys.deploy_latest())]);
        let world = Arc::downgrade(&self.inner);
        let ticks = tokio_stream::wrappers::WatchStream::new(rx);
        stream::unfold(
            (ticks, world, 0u64),
            |(mut ticks, world, last)| async move {
                loop {
                    ticks.next().await?;
                    let inner = world.upgrade()?;
                    let w = World { inner };
                    match w.cached_latest() {
                        Ok(Some(d)) if d.id != last => {
                            let id = d.id;
                            return Some((d, (ticks, world, id)));
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read the latest deploy"),
                    }
                }
            },
        )
        .boxed()
    }
}

#[async_trait]
impl HostWorld for World {
    async fn host_update(&self, deploy: Option<u64>, converged: bool) -> Result<(), WorldError> {
        {
            let mut h = self.inner.host.lock().unwrap_or_else(|p| p.into_inner());
            h.deploy = deploy;
            h.converged = converged;
            h.updated_ms = now_ms();
        }
        self.put_host().await.map(|_| ())
    }

    async fn host_set_error(&self, error: Option<String>) -> Result<(), WorldError> {
        {
            let mut h = self.inner.host.lock().unwrap_or_else(|p| p.into_inner());
            h.error = error;
            h.updated_ms = now_ms();
        }
        self.put_host().await.map(|_| ())
    }

    async fn hosts(&self) -> Result<Vec<HostInfo>, WorldError> {
        self.settle().await;
        let prefix = self.inner.keys.area("hosts");
        self.inner
            .cache
            .prefix(&prefix)
            .into_iter()
            .map(|(k, v)| decode_host(&k, &v, &prefix))
            .collect()
    }

    fn hosts_watch(&self) -> Changes {
        changes(
            self.inner
                .cache
                .subscribe(vec![KeyRange::prefix(self.inner.keys.area("hosts"))]),
        )
    }
}
