//! [`StrWorld`]: shared strings, and string maps with one entry per host.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{changes, World};
use crate::cache::KeyFilter;
use crate::codec::{decode, encode};
use crate::keys::unescape;
use crate::store::{KeyRange, Op, OpResult, Txn};
use tend_model::world::{Changes, StrWorld, WorldError};

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
        let keys = &self.inner.keys;
        let mut out = BTreeMap::new();
        for (k, v) in self.inner.cache.prefix(&keys.maps_area()) {
            if let Some((host, entry)) = keys.parse_strmap_entry(&k) {
                if entry == key {
                    out.insert(host, decode(&k, &v)?);
                }
            }
        }
        // Entries of hosts that have not moved theirs to `maps/` yet (an older tend).
        let legacy = keys.legacy_strmap(key);
        for (k, v) in self.inner.cache.prefix(&legacy) {
            let host = unescape(&k[legacy.len()..]);
            if let std::collections::btree_map::Entry::Vacant(e) = out.entry(host) {
                e.insert(decode(&k, &v)?);
            }
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
        let keys = self.inner.keys.clone();
        let legacy = keys.legacy_strmap(key);
        let want = crate::keys::escape(key);
        let filter: KeyFilter = Arc::new(move |k: &str| {
            k.starts_with(&legacy) || keys.strmap_entry_key_escaped(k) == Some(want.as_str())
        });
        changes(self.inner.cache.subscribe_filtered(
            vec![
                KeyRange::prefix(self.inner.keys.maps_area()),
                KeyRange::prefix(self.inner.keys.legacy_strmap(key)),
            ],
            Some(filter),
        ))
    }
}

impl World {
    /// Moves this host's string-map entries from the layout of older tends
    /// (`strmap/<key>/<host>`) to `maps/<host>/<key>`, one transaction per entry (put the new,
    /// delete the old). Where this host may not touch the old area (etcd RBAC enabled before
    /// the upgrade), the entries stay and are still read.
    pub(crate) async fn migrate_strmap(&self) {
        let keys = self.inner.keys.clone();
        let area = keys.legacy_strmap_area();
        let me = crate::keys::escape(&self.inner.cfg.hostname);
        for (k, v) in self.inner.cache.prefix(&area) {
            let Some((entry, host)) = k[area.len()..].rsplit_once('/') else {
                continue;
            };
            if host != me {
                continue;
            }
            let new = keys.strmap_entry(&unescape(entry), &self.inner.cfg.hostname);
            let r = self
                .txn(Txn {
                    compares: vec![crate::store::Compare::Value(k.clone(), v.clone())],
                    success: vec![Op::put(new, v), Op::Delete(KeyRange::key(k.clone()))],
                    failure: vec![],
                })
                .await;
            match r {
                Ok(_) => tracing::info!(key = %k, "moved a string-map entry to the new layout"),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "cannot move a string-map entry to the new layout; it is still read");
                    return;
                }
            }
        }
    }
}
