//! Reading a store directly, for humans and tools (`tend world`): every export (whoever it
//! is addressed to), strings, string maps, deploys and hosts, decoded. No session, no cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::{decode, ExportRecord};
use crate::keys::{unescape, Keys};
use crate::store::{KeyRange, Store, Watch};
use tend_model::world::WorldError;
use tend_model::world::{Deploy, Export, HostInfo};

/// Reads the World's areas from a store.
pub struct Inspector {
    store: Arc<dyn Store>,
    keys: Keys,
}

/// Strings and string maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strings {
    /// Global strings: key -> value.
    pub strings: BTreeMap<String, String>,
    /// String maps: key -> host -> value.
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inspector {
    /// An inspector of namespace `namespace` in `store`.
    pub fn new(store: Arc<dyn Store>, namespace: &str) -> Inspector {
        Inspector {
            store,
            keys: Keys::new(namespace),
        }
    }

    /// Every export, sorted by recipient, kind, source, name.
    pub async fn exports(&self) -> Result<Vec<Export>, WorldError> {
        let r = self
            .store
            .range(KeyRange::prefix(self.keys.exports_area()))
            .await?;
        let mut out = Vec::new();
        for kv in r.kvs {
            let Some((to, kind, from, name)) = self.keys.parse_export(&kv.key) else {
                continue;
            };
            let rec: ExportRecord = decode(&kv.key, &kv.value)?;
            out.push(Export {
                kind,
                name,
                from,
                to,
                data: rec.data,
            });
        }
        Ok(out)
    }

    /// Strings and string maps.
    pub async fn strings(&self) -> Result<Strings, WorldError> {
        let mut out = Strings::default();
        let prefix = self.keys.area("strings");
        for kv in self.store.range(KeyRange::prefix(&prefix)).await?.kvs {
            let v: String = decode(&kv.key, &kv.value)?;
            out.strings.insert(unescape(&kv.key[prefix.len()..]), v);
        }
        let prefix = self.keys.legacy_strmap_area();
        for kv in self.store.range(KeyRange::prefix(&prefix)).await?.kvs {
            let rest = &kv.key[prefix.len()..];
            let Some((key, host)) = rest.split_once('/') else {
                continue;
            };
            let v: String = decode(&kv.key, &kv.value)?;
            out.maps
                .entry(unescape(key))
                .or_default()
                .insert(unescape(host), v);
        }
        // The current layout wins over an entry not moved yet.
        for kv in self
            .store
            .range(KeyRange::prefix(self.keys.maps_area()))
            .await?
            .kvs
        {
            let Some((host, key)) = self.keys.parse_strmap_entry(&kv.key) else {
                continue;
            };
            let v: String = decode(&kv.key, &kv.value)?;
            out.maps.entry(key).or_default().insert(host, v);
        }
        Ok(out)
    }

    /// The latest deploy id and every retained deploy, oldest first.
    pub async fn deploys(&self) -> Result<(Option<u64>, Vec<Deploy>), WorldError> {
        let latest = match self.store.get(&self.keys.deploy_latest()).await? {
            Some(kv) => Some(decode::<u64>(&kv.key, &kv.value)?),
            None => None,
        };
        let mut out = Vec::new();
        for kv in self
            .store
            .range(KeyRange::prefix(self.keys.deploy_ids()))
            .await?
            .kvs
        {
            out.push(crate::world::decode_deploy(&kv.key, &kv.value)?);
        }
        Ok((latest, out))
    }

    /// Every registered host.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>, WorldError> {
        let prefix = self.keys.area("hosts");
        let mut out = Vec::new();
        for kv in self.store.range(KeyRange::prefix(&prefix)).await?.kvs {
            out.push(crate::world::decode_host(&kv.key, &kv.value, &prefix)?);
        }
        Ok(out)
    }

    /// A watch over the area `area` (`to` for exports, `strings`, ...), from now.
    pub async fn watch(&self, areas: &[&str]) -> Result<Vec<Watch>, WorldError> {
        let mut out = Vec::new();
        for a in areas {
            out.push(
                self.store
                    .watch(KeyRange::prefix(self.keys.area(a)), 0)
                    .await?,
            );
        }
        Ok(out)
    }
}
