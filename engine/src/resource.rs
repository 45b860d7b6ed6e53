//! The [`Resource`] contract every kind implements, and the [`Watcher`] it signals drift on.
//!
//! Life cycle, driven by the executor: construct (validates the spec, no side effects) ->
//! [`Resource::init`] -> [`Resource::watch`] in its own task (or polling, per `Meta:poll`) ->
//! [`Resource::check_apply`] whenever the resource may be out of state -> [`Resource::cleanup`]
//! when it leaves the graph. After each successful `check_apply` the engine reads
//! [`Resource::sent`], the values a send/recv edge carries to another resource. All methods take `&self`: `watch` runs concurrently with
//! `check_apply`, so a kind keeps any mutable state behind its own lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The outcome of [`Resource::check_apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Checked {
    /// Already in state: nothing was (or, in a dry run, would be) changed.
    InState,
    /// Out of state: it was changed (or, in a dry run, would be).
    Changed,
}

/// An error from a resource, with a message that names what was being done
/// (`writing /etc/motd: permission denied`), and the field of the spec at fault when there is
/// one (a constructor refusing a param), so front ends can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ResError {
    /// What went wrong.
    pub message: String,
    /// The spec's field at fault, if any.
    pub field: Option<String>,
}

impl ResError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        ResError {
            message: msg.into(),
            field: None,
        }
    }

    /// An error about one field of the spec.
    pub fn field(field: impl Into<String>, msg: impl Into<String>) -> Self {
        ResError {
            message: msg.into(),
            field: Some(field.into()),
        }
    }

    /// An I/O error with what was being done and on which path.
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        ResError::new(format!("{what} {}: {e}", path.display()))
    }
}

/// What a resource may know about where it runs.
#[derive(Clone, Debug, Default)]
pub struct InitCtx {
    /// This host's name.
    pub hostname: String,
    /// The daemon's state directory (a kind may keep private state under `kinds/<kind>/`).
    pub state_dir: PathBuf,
    /// The World's shared strings, once the daemon has joined a World.
    pub world: WorldSlot,
}

/// The World as resources see it: shared strings (`kv`) and the scheduler (`schedule`). Set
/// once by the daemon with [`crate::Engine::set_world`]; empty in tests and without a World.
#[derive(Clone, Default)]
pub struct WorldSlot(Arc<std::sync::OnceLock<Arc<dyn tend_model::world::ResourceWorld>>>);

impl WorldSlot {
    /// The World, if the daemon joined one.
    pub fn get(&self) -> Option<Arc<dyn tend_model::world::ResourceWorld>> {
        self.0.get().cloned()
    }

    /// Sets the World (the first call wins).
    pub fn set(&self, world: Arc<dyn tend_model::world::ResourceWorld>) {
        let _ = self.0.set(world);
    }
}

impl std::fmt::Debug for WorldSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "WorldSlot(set)"
        } else {
            "WorldSlot(empty)"
        })
    }
}

/// Arguments of one [`Resource::check_apply`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckCtx {
    /// `false` is a dry run: check and report, change nothing.
    pub apply: bool,
    /// A refresh arrived through a notify edge since the last run.
    pub refresh: bool,
}

/// A resource kind's implementation.
#[async_trait::async_trait]
pub trait Resource: Send + Sync + 'static {
    /// One-time preparation before the watch starts (resolve names, open handles).
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        Ok(())
    }

    /// Runs until cancelled (the executor drops the future). Calls [`Watcher::running`] once
    /// the watch is established, then [`Watcher::event`] whenever the resource may have drifted.
    /// Returning `Err` fails the vertex; returning `Ok` means "nothing more to watch".
    async fn watch(&self, w: Watcher) -> Result<(), ResError>;

    /// Checks the resource and, when `ctx.apply`, puts it in state.
    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError>;

    /// Releases what `init`/`watch` acquired. Called once, when the resource leaves the graph.
    async fn cleanup(&self) -> Result<(), ResError> {
        Ok(())
    }

    /// The values it sends (send/recv: its kind's `KindSchema::sends`, by name), read by the
    /// engine after each successful [`Resource::check_apply`], dry runs included. A value it
    /// has none of yet (an `exec` that never ran) is left out: the receiver then keeps its
    /// own param. Receivers need nothing: the engine builds them again with the received
    /// params (see the executor's `sendrecv.rs`).
    fn sent(&self) -> Vec<(String, tend_model::Value)> {
        Vec::new()
    }

    /// Whether its watch must be stopped and its cleanup called when the process exits
    /// ([`crate::Engine::shutdown_for_exit`]). Answer `false` only when `cleanup` does nothing
    /// and the watch holds nothing the kernel does not reclaim at exit (memory, file
    /// descriptors, inotify watches; not a child process, a lock file or a remote session).
    fn stop_at_exit(&self) -> bool {
        true
    }
}

/// Stands in for a `Meta:hidden` resource: the executor never initialises, watches or
/// applies a hidden vertex (it is only exported), so its kind is never built.
pub(crate) struct Hidden;

#[async_trait::async_trait]
impl Resource for Hidden {
    async fn watch(&self, _w: Watcher) -> Result<(), ResError> {
        std::future::pending().await
    }

    async fn check_apply(&self, _ctx: CheckCtx) -> Result<Checked, ResError> {
        Ok(Checked::InState)
    }
}

#[derive(Debug, Default)]
struct WatchShared {
    running: AtomicBool,
    dirty: AtomicBool,
    notify: Notify,
}

/// The handle a resource's watch uses to tell the executor what it saw. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Watcher {
    shared: Arc<WatchShared>,
}

/// The executor's side of a [`Watcher`]: waits for and takes its signals. Events that arrive
/// while one is pending are coalesced into it.
#[derive(Debug)]
pub struct WatchReceiver {
    shared: Arc<WatchShared>,
}

/// What a [`WatchReceiver`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSignal {
    /// The watch is running (this stays true once set).
    pub running: bool,
    /// At least one drift event arrived since the last signal was taken.
    pub dirty: bool,
}

impl Watcher {
    /// A connected pair.
    pub fn channel() -> (Watcher, WatchReceiver) {
        let shared = Arc::new(WatchShared::default());
        (
            Watcher {
                shared: shared.clone(),
            },
            WatchReceiver { shared },
        )
    }

    /// The watch is established: from now on, every change will produce an event.
    pub fn running(&self) {
        self.shared.running.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }

    /// The resource may have drifted: check it again.
    pub fn event(&self) {
        self.shared.dirty.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }
}

impl WatchReceiver {
    /// Takes the current signal without waiting (clears `dirty`).
    pub fn take(&self) -> WatchSignal {
        WatchSignal {
            running: self.shared.running.load(Ordering::SeqCst),
            dirty: self.shared.dirty.swap(false, Ordering::SeqCst),
        }
    }

    /// Waits until the watcher signals something, then takes it.
    pub async fn next(&self) -> WatchSignal {
        self.shared.notify.notified().await;
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_coalesce() {
        let (w, r) = Watcher::channel();
        w.running();
        w.event();
        w.event();
        let s = r.next().await;
        assert!(s.running && s.dirty);
        assert!(!r.take().dirty);
    }
}
