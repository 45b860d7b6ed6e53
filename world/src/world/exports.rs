//! [`ResWorld`]: exports, bound to the session, sent to one host or to all (`*`).

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{changes, World};
use crate::codec::{decode, encode, ExportRecord};
use crate::keys::check_host;
use crate::store::{KeyRange, Op, OpResult, Txn};
use tend_model::world::{Changes, Export, ExportFilter, ExportKey, ResWorld, WorldError};

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
        let prefixes = [
            keys.exports_to(&self.inner.cfg.hostname),
            keys.exports_to("*"),
        ];
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
            .map(|to| KeyRange::prefix(keys.exports_to(to)))
            .collect();
        let filter: Option<crate::cache::KeyFilter> = kind.map(|kind| {
            let keys = keys.clone();
            let kind = crate::keys::escape(kind);
            std::sync::Arc::new(move |key: &str| keys.export_kind_escaped(key) == Some(&kind))
                as crate::cache::KeyFilter
        });
        changes(self.inner.cache.subscribe_filtered(ranges, filter))
    }
}
