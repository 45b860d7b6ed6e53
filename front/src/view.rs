//! [`ClusterView`]: the language's view of the World.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tend_lang::funcs::world::{Export as LangExport, WorldView};
use tend_world::{ResWorld, World, WorldError};
use tokio::sync::watch;

/// The language's view of the cluster ([`WorldView`]) over the real World: exports addressed
/// to this host or to `*`, global strings, per-host string maps. Reads are served by the
/// World's watch cache; a change of anything the program read bumps [`WorldView::changes`],
/// so a new graph comes out without recompiling.
pub struct ClusterView {
    world: World,
    handle: tokio::runtime::Handle,
    tx: watch::Sender<u64>,
    watched: Mutex<std::collections::BTreeSet<String>>,
    /// The watch tasks stop once the view (its program) is gone.
    alive: Arc<()>,
    /// Scheduling pools this program joined with `world.schedule(ns, opts)`: left when the
    /// view (its program) is gone, as mgmt's function shuts its scheduler down.
    joined: Mutex<std::collections::BTreeSet<String>>,
    /// This view's name as a holder of scheduling memberships.
    holder: String,
}

impl Drop for ClusterView {
    fn drop(&mut self) {
        use tend_world::SchedWorld;
        let joined = std::mem::take(&mut *self.joined.lock().unwrap_or_else(|p| p.into_inner()));
        if joined.is_empty() {
            return;
        }
        let world = self.world.clone();
        let holder = self.holder.clone();
        self.handle.spawn(async move {
            for ns in joined {
                if let Err(e) = world.sched_leave(&ns, &holder).await {
                    tracing::warn!(namespace = %ns, error = %e, "cannot leave the scheduling pool");
                }
            }
        });
    }
}

impl ClusterView {
    /// A view for this host. Must be called inside the daemon's (multi-thread) runtime.
    pub fn new(world: World) -> Arc<Self> {
        let (tx, _) = watch::channel(0u64);
        let view = Arc::new(ClusterView {
            world: world.clone(),
            handle: tokio::runtime::Handle::current(),
            tx,
            watched: Mutex::new(Default::default()),
            alive: Arc::new(()),
            joined: Mutex::new(Default::default()),
            holder: format!("program:{}", view_number()),
        });
        view.follow("exports", world.res_watch(None));
        view
    }

    /// Bumps the change counter on every item of `changes` (once per `what`).
    fn follow(&self, what: &str, mut changes: tend_world::Changes) {
        let fresh = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(what.to_string());
        if !fresh {
            return;
        }
        let tx = self.tx.clone();
        let alive = Arc::downgrade(&self.alive);
        self.handle.spawn(async move {
            // The first item is the current state, which the caller may be reading right now;
            // but a change made since may be coalesced into it: bump for it too (an unchanged
            // table is not emitted again, so a spurious bump costs one evaluation).
            while changes.next().await.is_some() {
                if alive.strong_count() == 0 {
                    return;
                }
                tx.send_modify(|n| *n += 1);
            }
        });
    }

    /// Runs a World call from the language's evaluation (a plain thread, or a runtime worker).
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.handle.block_on(f))
        } else {
            self.handle.block_on(f)
        }
    }
}

impl WorldView for ClusterView {
    fn hostname(&self) -> String {
        self.world.hostname().to_string()
    }

    fn getval(&self, key: &str) -> Result<Option<String>, String> {
        use tend_world::StrWorld;
        self.follow(&format!("str:{key}"), self.world.str_watch(key));
        match self.block(self.world.str_get(key)) {
            Ok(v) => Ok(Some(v)),
            Err(WorldError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn kvlookup(&self, ns: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
        use tend_world::StrWorld;
        self.follow(&format!("strmap:{ns}"), self.world.strmap_watch(ns));
        self.block(self.world.strmap_get(ns))
            .map_err(|e| e.to_string())
    }

    fn schedule(&self, ns: &str) -> Result<Vec<String>, String> {
        use tend_world::SchedWorld;
        self.follow(&format!("sched:{ns}"), self.world.scheduled_watch(ns));
        self.block(self.world.scheduled(ns))
            .map_err(|e| format!("world.schedule({ns:?}): {e}"))
    }

    fn schedule_join(&self, ns: &str, opts: &tend_world::SchedOpts) -> Result<(), String> {
        use tend_world::SchedWorld;
        self.block(self.world.sched_join(ns, opts, &self.holder, true))
            .map_err(|e| format!("world.schedule({ns:?}, opts): {e}"))?;
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string());
        Ok(())
    }

    fn exports(&self, kind: &str) -> Result<Vec<LangExport>, String> {
        let filter = tend_world::ExportFilter {
            kind: kind.to_string(),
            ..Default::default()
        };
        let records = self
            .block(self.world.res_collect(&[filter]))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in records {
            match tend_model::export::decode(&r.data) {
                Ok((params, meta)) => out.push(LangExport {
                    to: r.to,
                    from: r.from,
                    kind: r.kind,
                    name: r.name,
                    params,
                    meta,
                }),
                Err(e) => {
                    tracing::warn!(kind = %kind, name = %r.name, from = %r.from, error = %e, "skipping an export that does not decode")
                }
            }
        }
        Ok(out)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// A name unique in this process, for one view.
fn view_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
