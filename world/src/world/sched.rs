//! [`SchedWorld`]: mgmt's distributed scheduler, written once over the [`Store`], so it runs
//! the same on etcd and on the embedded store.
//!
//! Keys, under `<ns>/sched/<namespace>/`:
//!
//! - `members/<host>`: one per host in the pool, bound to a lease of the pool's TTL that a
//!   task of the joining `World` keeps alive (a host that dies leaves the pool when it
//!   expires); no lease with `persist` (the entry stays until withdrawn).
//! - `leader`: the elected member, bound to its host's session. A member campaigns (a
//!   create-if-missing transaction) when there is no leader, and takes over (a
//!   compare-and-swap on the old value) when the leader is no longer a member.
//! - `result`: the leader's choice ([`SchedResultRecord`]): the chosen hosts, sorted, and the
//!   round-robin order, so that a new leader keeps the choice of the previous one.
//!
//! Every member re-evaluates on any change under its namespace (one subscription of the watch
//! cache: no store watch of its own). Readers ([`SchedWorld::scheduled`]) see the choice
//! minus the hosts that have already left the pool, so a dead host disappears from the
//! answer when its entry expires, even before the leader has chosen its replacement.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{changes, Inner, World};
use crate::codec::{decode, encode, SchedMemberRecord, SchedResultRecord};
use crate::keys::unescape;
use crate::store::{AbortOnDrop, Compare, KeyRange, LeaseId, Op, Txn};
use tend_model::world::{
    Changes, SchedOpts, SchedWorld, StoreError, WorldError, SCHED_DEFAULT_TTL, SCHED_STRATEGIES,
};

/// This host's part in one scheduling namespace.
pub(crate) struct SchedEntry {
    opts: SchedOpts,
    /// Who needs the membership (see [`SchedWorld::sched_join`]).
    holders: std::collections::BTreeSet<String>,
    /// The lease of the member key (0: none, `persist`).
    lease: Arc<AtomicI64>,
    _task: AbortOnDrop,
}

fn ttl_of(opts: &SchedOpts) -> Duration {
    Duration::from_secs(u64::from(if opts.ttl == 0 {
        SCHED_DEFAULT_TTL
    } else {
        opts.ttl
    }))
}

fn check(namespace: &str, opts: Option<&SchedOpts>) -> Result<(), WorldError> {
    if namespace.is_empty() {
        return Err(WorldError::Invalid {
            what: "scheduling namespace",
            value: String::new(),
            reason: "empty",
        });
    }
    if let Some(o) = opts {
        if !SCHED_STRATEGIES.contains(&o.strategy.as_str()) {
            return Err(WorldError::Invalid {
                what: "scheduling strategy",
                value: o.strategy.clone(),
                reason: "not one of rr, alpha",
            });
        }
        if o.max == 0 {
            return Err(WorldError::Invalid {
                what: "scheduling max",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
    }
    Ok(())
}

/// The choice of a leader with these options, given the live members (sorted) and the
/// previous choice.
pub(crate) fn choose(
    opts: &SchedOpts,
    members: &[String],
    previous: Option<&SchedResultRecord>,
    leader: &str,
) -> SchedResultRecord {
    let order: Vec<String> = if opts.strategy == "alpha" {
        members.to_vec()
    } else {
        // Round robin: members keep their place while they live; newcomers join at the end
        // (in name order when several arrive at once).
        let mut order: Vec<String> = previous
            .map(|p| {
                p.order
                    .iter()
                    .filter(|h| members.contains(h))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for m in members {
            if !order.contains(m) {
                order.push(m.clone());
            }
        }
        order
    };
    let mut hosts: Vec<String> = order.iter().take(opts.max as usize).cloned().collect();
    hosts.sort();
    SchedResultRecord {
        hosts,
        order,
        leader: leader.to_string(),
    }
}

impl World {
    fn sched_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SchedEntry>> {
        self.inner.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn member_record(opts: &SchedOpts) -> Vec<u8> {
        encode(&SchedMemberRecord {
            strategy: opts.strategy.clone(),
            max: opts.max,
            ttl: opts.ttl,
            persist: opts.persist,
        })
    }

    /// The live members of a namespace, sorted.
    fn sched_members(&self, namespace: &str) -> Vec<String> {
        let prefix = self.inner.keys.sched_members(namespace);
        self.inner
            .cache
            .prefix(&prefix)
            .into_iter()
            .map(|(k, _)| unescape(&k[prefix.len()..]))
            .collect()
    }

    fn sched_result(&self, namespace: &str) -> Option<SchedResultRecord> {
        let key = self.inner.keys.sched_result(namespace);
        let bytes = self.inner.cache.get(&key)?;
        match decode(&key, &bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a scheduling result that does not decode");
                None
            }
        }
    }

    fn sched_leader(&self, namespace: &str) -> Option<(Vec<u8>, String)> {
        let key = self.inner.keys.sched_leader(namespace);
        let bytes = self.inner.cache.get(&key)?;
        let name = decode::<String>(&key, &bytes).unwrap_or_default();
        Some((bytes, name))
    }

    /// Writes this host's member key with `lease` (0: none, for `persist`), granting a new
    /// lease of the pool's TTL when that one is gone. Returns the lease used.
    async fn put_member(
        &self,
        namespace: &str,
        opts: &SchedOpts,
        lease: LeaseId,
    ) -> Result<LeaseId, WorldError> {
        let key = self
            .inner
            .keys
            .sched_member(namespace, &self.inner.cfg.hostname);
        let value = World::member_record(opts);
        let mut lease = lease;
        for attempt in 0..2 {
            let put = Op::Put {
                key: key.clone(),
                value: value.clone(),
                lease,
            };
            match self.txn(Txn::ops(vec![put])).await {
                Ok(_) => return Ok(lease),
                Err(WorldError::Store(StoreError::LeaseNotFound(_))) if attempt == 0 => {
                    lease = self.inner.store.lease_grant(ttl_of(opts)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(WorldError::Store(StoreError::LeaseNotFound(lease)))
    }

    /// One round of a member: campaign when there is no (living) leader; as the leader,
    /// write the choice when it changed.
    async fn sched_step(&self, namespace: &str, opts: &SchedOpts) -> Result<(), WorldError> {
        let me = self.inner.cfg.hostname.clone();
        let members = self.sched_members(namespace);
        if !members.contains(&me) {
            return Ok(()); // not (yet, or any more) in the pool: no say
        }
        let leader_key = self.inner.keys.sched_leader(namespace);
        let mine = encode(&me);
        let leader = match self.sched_leader(namespace) {
            Some((_, name)) if name == me => me.clone(),
            Some((_, name)) if members.contains(&name) => name,
            current => {
                // No leader, or one that left the pool: take over, unless someone else
                // was quicker.
                let compares = match &current {
                    None => vec![Compare::Missing(leader_key.clone())],
                    Some((bytes, _)) => vec![Compare::Value(leader_key.clone(), bytes.clone())],
                };
                let r = self
                    .txn(Txn {
                        compares,
                        success: vec![Op::Put {
                            key: leader_key.clone(),
                            value: mine.clone(),
                            lease: self.lease(),
                        }],
                        failure: vec![],
                    })
                    .await?;
                if !r.succeeded {
                    return Ok(()); // another member won; its choice will follow
                }
                tracing::info!(namespace, host = %me, "elected to schedule");
                me.clone()
            }
        };
        if leader != me {
            return Ok(());
        }
        let previous = self.sched_result(namespace);
        let next = choose(opts, &members, previous.as_ref(), &me);
        if previous.as_ref() != Some(&next) {
            tracing::info!(namespace, hosts = ?next.hosts, "scheduled");
            self.put_if_changed(self.inner.keys.sched_result(namespace), encode(&next))
                .await?;
        }
        Ok(())
    }

    fn spawn_member(
        &self,
        namespace: &str,
        opts: &SchedOpts,
        lease: Arc<AtomicI64>,
    ) -> AbortOnDrop {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let ns = namespace.to_string();
        let opts = opts.clone();
        let mut rx = self
            .inner
            .cache
            .subscribe(vec![KeyRange::prefix(self.inner.keys.sched(namespace))]);
        AbortOnDrop(tokio::spawn(async move {
            let period = (ttl_of(&opts) / 3).max(Duration::from_millis(200));
            let mut renew_at = tokio::time::Instant::now() + period;
            loop {
                {
                    let Some(inner) = weak.upgrade() else { return };
                    let w = World { inner };
                    if tokio::time::Instant::now() >= renew_at {
                        renew_at = tokio::time::Instant::now() + period;
                        let current = lease.load(Ordering::SeqCst);
                        if current != 0 {
                            match w.inner.store.lease_keepalive(current).await {
                                Ok(_) => {}
                                Err(StoreError::LeaseNotFound(_)) => {
                                    // Expired (a partition longer than the TTL): rejoin,
                                    // with a new lease (`put_member` grants one when the
                                    // one it is given is gone).
                                    match w.put_member(&ns, &opts, current).await {
                                        Ok(l) => lease.store(l, Ordering::SeqCst),
                                        Err(e) => {
                                            tracing::warn!(namespace = %ns, error = %e, "cannot rejoin the scheduling pool")
                                        }
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(namespace = %ns, error = %e, "scheduling pool keepalive failed");
                                    renew_at =
                                        tokio::time::Instant::now() + Duration::from_millis(500);
                                }
                            }
                        }
                    }
                    if let Err(e) = w.sched_step(&ns, &opts).await {
                        tracing::warn!(namespace = %ns, error = %e, "scheduling round failed");
                    }
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep_until(renew_at) => {}
                }
            }
        }))
    }

    /// Resigns the leadership of `namespace` if this host holds it.
    async fn resign(&self, namespace: &str) -> Result<(), WorldError> {
        let key = self.inner.keys.sched_leader(namespace);
        self.txn(Txn {
            compares: vec![Compare::Value(
                key.clone(),
                encode(&self.inner.cfg.hostname),
            )],
            success: vec![Op::Delete(KeyRange::key(key))],
            failure: vec![],
        })
        .await?;
        Ok(())
    }

    /// Stops every scheduling membership of this process (for [`World::close`]).
    pub(crate) async fn sched_close(&self) {
        let names: Vec<String> = self.sched_lock().keys().cloned().collect();
        for ns in names {
            let holders: Vec<String> = self
                .sched_lock()
                .get(&ns)
                .map(|e| e.holders.iter().cloned().collect())
                .unwrap_or_default();
            for h in holders {
                if let Err(e) = self.sched_leave(&ns, &h).await {
                    tracing::warn!(namespace = %ns, error = %e, "cannot leave the scheduling pool");
                }
            }
        }
    }
}

#[async_trait]
impl SchedWorld for World {
    async fn sched_join(
        &self,
        namespace: &str,
        opts: &SchedOpts,
        holder: &str,
        apply: bool,
    ) -> Result<bool, WorldError> {
        check(namespace, Some(opts))?;
        self.settle().await;
        let key = self
            .inner
            .keys
            .sched_member(namespace, &self.inner.cfg.hostname);
        let record = World::member_record(opts);
        let (same_opts, lease) = match self.sched_lock().get_mut(namespace) {
            Some(e) => {
                if apply {
                    e.holders.insert(holder.to_string());
                }
                (e.opts == *opts, Some(e.lease.clone()))
            }
            None => (false, None),
        };
        let stored = self.inner.cache.get(&key);
        if same_opts && stored.as_deref() == Some(record.as_slice()) {
            return Ok(false);
        }
        if !apply {
            return Ok(true);
        }
        if same_opts {
            // Same membership, entry gone (expired): put it back with the current lease.
            let lease = lease.expect("an entry has a lease cell");
            let l = self
                .put_member(namespace, opts, lease.load(Ordering::SeqCst))
                .await?;
            lease.store(l, Ordering::SeqCst);
            return Ok(true);
        }
        // New membership, or new options: a lease of the (new) TTL, then the entry.
        let new_lease = if opts.persist {
            0
        } else {
            self.inner.store.lease_grant(ttl_of(opts)).await?
        };
        let used = self.put_member(namespace, opts, new_lease).await?;
        let cell = Arc::new(AtomicI64::new(used));
        let task = self.spawn_member(namespace, opts, cell.clone());
        let old = {
            let mut map = self.sched_lock();
            let mut holders = map
                .get(namespace)
                .map(|e| e.holders.clone())
                .unwrap_or_default();
            holders.insert(holder.to_string());
            map.insert(
                namespace.to_string(),
                SchedEntry {
                    opts: opts.clone(),
                    holders,
                    lease: cell,
                    _task: task,
                },
            )
        };
        if let Some(old) = old {
            let l = old.lease.load(Ordering::SeqCst);
            if l != 0 && l != used {
                let _ = self.inner.store.lease_revoke(l).await;
            }
        }
        Ok(true)
    }

    async fn sched_withdraw(&self, namespace: &str, apply: bool) -> Result<bool, WorldError> {
        check(namespace, None)?;
        self.settle().await;
        let key = self
            .inner
            .keys
            .sched_member(namespace, &self.inner.cfg.hostname);
        let present = self.inner.cache.get(&key).is_some();
        let joined = self.sched_lock().contains_key(namespace);
        if !apply || !(present || joined) {
            return Ok(present);
        }
        let old = self.sched_lock().remove(namespace);
        self.txn(Txn::ops(vec![Op::Delete(KeyRange::key(key))]))
            .await?;
        self.resign(namespace).await?;
        if let Some(old) = old {
            let l = old.lease.load(Ordering::SeqCst);
            if l != 0 {
                let _ = self.inner.store.lease_revoke(l).await;
            }
        }
        Ok(present)
    }

    async fn sched_leave(&self, namespace: &str, holder: &str) -> Result<(), WorldError> {
        // The entry leaves the map under the lock, so a join that follows (a replacing
        // program, a changed resource) starts a new one; what is deleted below is bound to
        // this entry's lease, never to the new entry's.
        let old = {
            let mut map = self.sched_lock();
            let Some(e) = map.get_mut(namespace) else {
                return Ok(());
            };
            e.holders.remove(holder);
            if !e.holders.is_empty() {
                return Ok(());
            }
            map.remove(namespace).expect("present")
        };
        self.resign(namespace).await?;
        // mgmt: an entry that persists, or has a TTL of its own, runs down by itself; any
        // other is withdrawn at once (revoking its lease deletes it).
        let l = old.lease.load(Ordering::SeqCst);
        if !old.opts.persist && old.opts.ttl == 0 && l != 0 {
            match self.inner.store.lease_revoke(l).await {
                Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn scheduled(&self, namespace: &str) -> Result<Vec<String>, WorldError> {
        check(namespace, None)?;
        self.settle().await;
        let members = self.sched_members(namespace);
        Ok(self
            .sched_result(namespace)
            .map(|r| {
                r.hosts
                    .into_iter()
                    .filter(|h| members.contains(h))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn scheduled_watch(&self, namespace: &str) -> Changes {
        changes(
            self.inner
                .cache
                .subscribe(vec![KeyRange::prefix(self.inner.keys.sched(namespace))]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(strategy: &str, max: u32) -> SchedOpts {
        SchedOpts {
            strategy: strategy.into(),
            max,
            ..Default::default()
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn round_robin_keeps_the_living_in_place_and_appends_newcomers() {
        let first = choose(&opts("rr", 2), &v(&["b", "c"]), None, "b");
        assert_eq!(first.hosts, v(&["b", "c"]));
        // `a` arrives: it sorts first but joins the end of the queue.
        let second = choose(&opts("rr", 2), &v(&["a", "b", "c"]), Some(&first), "b");
        assert_eq!(second.hosts, v(&["b", "c"]));
        assert_eq!(second.order, v(&["b", "c", "a"]));
        // `c` dies: `a` replaces it.
        let third = choose(&opts("rr", 2), &v(&["a", "b"]), Some(&second), "b");
        assert_eq!(third.hosts, v(&["a", "b"]));
        // `c` comes back: behind `a` now.
        let fourth = choose(&opts("rr", 2), &v(&["a", "b", "c"]), Some(&third), "b");
        assert_eq!(fourth.hosts, v(&["a", "b"]));
    }

    #[test]
    fn alpha_takes_the_first_names() {
        let r = choose(&opts("alpha", 2), &v(&["a", "b", "c"]), None, "c");
        assert_eq!(r.hosts, v(&["a", "b"]));
        let all = choose(&opts("alpha", 5), &v(&["a", "b"]), None, "a");
        assert_eq!(all.hosts, v(&["a", "b"]));
    }

    #[test]
    fn bad_options_are_refused_with_the_field() {
        assert!(check("", None).is_err());
        let e = check("ns", Some(&opts("fifo", 1))).unwrap_err().to_string();
        assert!(e.contains("fifo"), "{e}");
        assert!(check("ns", Some(&opts("rr", 0))).is_err());
    }
}
