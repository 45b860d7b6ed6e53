//! [`DeployWorld`]: the deploy chain (compare-and-swap on `latest`) and its retention.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};

use super::{now_ms, World};
use crate::codec::{
    decode, decode_deploy_record, encode, DeployRecord, SignatureRecord, TargetRecord,
};
use crate::store::{Compare, KeyRange, Op, Txn};
use tend_model::world::{
    Deploy, DeploySignature, DeployTarget, DeployWorld, NewDeploy, WorldError,
};

impl World {
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
}

/// Decodes a stored deploy record.
pub(crate) fn decode_deploy(key: &str, bytes: &[u8]) -> Result<Deploy, WorldError> {
    Ok(deploy_of(decode_deploy_record(key, bytes)?))
}

fn deploy_of(r: DeployRecord) -> Deploy {
    Deploy {
        id: r.id,
        bundle: r.bundle,
        parent: r.parent,
        hash: r.hash,
        message: r.message,
        author: r.author,
        time_ms: r.time_ms,
        signature: r.signature.map(|s| DeploySignature {
            key: s.key,
            signature: s.signature,
        }),
        target: r.target.map(|t| DeployTarget {
            hosts: t.hosts,
            selector: t.selector.into_iter().collect(),
        }),
    }
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
    // A targeted deploy's hash covers its target (an untargeted one hashes as before).
    if let Some(t) = &r.target {
        h.update(b"target");
        h.update(&(t.hosts.len() as u64).to_le_bytes());
        h.update(&(t.selector.len() as u64).to_le_bytes());
        for s in t
            .hosts
            .iter()
            .chain(t.selector.iter().flat_map(|(k, v)| [k, v]))
        {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
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
        // A signature is made for one id and parent: a signed deploy lands there or not at all.
        let force = nd.force && nd.signature.is_none();
        loop {
            let latest_kv = self.inner.store.get(&keys.deploy_latest()).await?;
            let (latest, mod_rev) = match &latest_kv {
                Some(kv) => (Some(decode::<u64>(&kv.key, &kv.value)?), kv.mod_revision),
                None => (None, 0),
            };
            if !force && nd.parent != latest {
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
                signature: nd.signature.as_ref().map(|s| SignatureRecord {
                    key: s.key.clone(),
                    signature: s.signature.clone(),
                }),
                target: nd.target.as_ref().map(|t| TargetRecord {
                    hosts: t.hosts.clone(),
                    selector: t
                        .selector
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }),
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
                if force {
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
            return Ok(deploy_of(record));
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
        let mut ticks = tokio_stream::wrappers::WatchStream::new(rx);
        async_stream::stream! {
            let mut last = 0u64;
            while ticks.next().await.is_some() {
                // The World is held only while the cache is read, never across a `yield`: a
                // consumer that stops polling does not keep a closed World alive.
                let Some(inner) = world.upgrade() else { break };
                let latest = World { inner }.cached_latest();
                match latest {
                    Ok(Some(d)) if d.id != last => {
                        last = d.id;
                        yield d;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the latest deploy"),
                }
            }
        }
        .boxed()
    }
}
