//! [`HostWorld`]: this host's registration (kept bound to the session) and the membership.

use async_trait::async_trait;

use super::{changes, now_ms, World};
use crate::codec::{decode_host_record, encode};
use crate::keys::unescape;
use crate::store::KeyRange;
use tend_model::world::{Changes, HostInfo, HostStatus, HostWorld, WorldError};

impl World {
    /// Writes this host's registration, bound to the session (unless unchanged, or this
    /// process does not register).
    pub(super) async fn put_host(&self) -> Result<bool, WorldError> {
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
}

/// Decodes a host's registration stored at `key`, below `prefix`.
pub(crate) fn decode_host(key: &str, bytes: &[u8], prefix: &str) -> Result<HostInfo, WorldError> {
    let r = decode_host_record(key, bytes)?;
    Ok(HostInfo {
        hostname: unescape(&key[prefix.len()..]),
        version: r.version,
        started_ms: r.started_ms,
        deploy: r.deploy,
        converged: r.converged,
        error: r.error,
        updated_ms: r.updated_ms,
        instance: r.instance,
        failed: r.failed,
        blocked: r.blocked,
        first_failure: r.first_failure,
        converged_ms: r.converged_ms,
        labels: r.labels.into_iter().collect(),
    })
}

#[async_trait]
impl HostWorld for World {
    async fn host_update(&self, s: &HostStatus) -> Result<(), WorldError> {
        {
            let mut h = self.inner.host.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            if !s.converged {
                h.converged_ms = 0;
            } else if !h.converged || h.deploy != s.deploy || h.converged_ms == 0 {
                h.converged_ms = now;
            }
            h.deploy = s.deploy;
            h.converged = s.converged;
            h.failed = s.failed;
            h.blocked = s.blocked;
            h.first_failure = s.first_failure.clone();
            h.updated_ms = now;
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
