//! [`StrWorld`]: shared strings, and string maps with one entry per host.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{changes, World};
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
