//! A [`Store`] decorator that counts every operation by name and result, for the daemon's
//! `tend_world_operations_total` metric.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{KeyRange, KeyValue, LeaseId, Range, Store, Txn, TxnResult, Watch};
use tend_model::world::StoreError;

/// Operation counts: `(operation, "ok" | "error") -> count`.
pub type OpCounts = BTreeMap<(&'static str, &'static str), u64>;

/// Counts the operations on the store it wraps.
pub struct Counting {
    inner: Arc<dyn Store>,
    counts: Mutex<OpCounts>,
}

impl Counting {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Counting {
            inner,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> OpCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count<T>(&self, op: &'static str, r: &Result<T, StoreError>) {
        let result = if r.is_ok() { "ok" } else { "error" };
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((op, result))
            .or_default() += 1;
    }
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.inner.get(key).await;
        self.count("get", &r);
        r
    }

    async fn range(&self, range: KeyRange) -> Result<Range, StoreError> {
        let r = self.inner.range(range).await;
        self.count("range", &r);
        r
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let r = self.inner.txn(txn).await;
        self.count("txn", &r);
        r
    }

    async fn watch(&self, range: KeyRange, from_revision: i64) -> Result<Watch, StoreError> {
        let r = self.inner.watch(range, from_revision).await;
        self.count("watch", &r);
        r
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let r = self.inner.lease_grant(ttl).await;
        self.count("lease_grant", &r);
        r
    }

    async fn lease_keepalive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let r = self.inner.lease_keepalive(lease).await;
        self.count("lease_keepalive", &r);
        r
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let r = self.inner.lease_revoke(lease).await;
        self.count("lease_revoke", &r);
        r
    }
}
