//! The coordinator: the one task that owns the graph and every vertex's state, and reacts to
//! the messages of everything else (drivers, checks, timers, removals, the [`super::Engine`]
//! handle). Swaps are in `swap.rs`, dispatching checks in `dispatch.rs`, publishing the
//! status in `publish.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tend_model::{EdgeSpec, GraphSpec, ResId};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::vertex::Vertex;
use super::{stopped_error, Msg, SwapReply, SwapStats};
use crate::events::{Event, EventSink};
use crate::metrics::CheckResult;
use crate::registry::Registry;
use crate::resource::{Checked, InitCtx, Resource};
use crate::status::{Status, VertexState};

/// A checked graph waiting for its turn.
pub(super) struct QueuedSwap {
    pub(super) graph: Arc<GraphSpec>,
    pub(super) edges: Vec<EdgeSpec>,
    /// The graph's resources, built by the check, in order.
    pub(super) built: Vec<Arc<dyn Resource>>,
    pub(super) started: Instant,
    /// `None` for the shutdown's swap to the empty graph.
    pub(super) reply: Option<SwapReply>,
    /// The shutdown of a process about to exit.
    pub(super) exiting: bool,
}

pub(super) struct PendingSwap {
    pub(super) reply: Option<SwapReply>,
    pub(super) started: Instant,
    pub(super) stats: SwapStats,
    pub(super) to_start: Vec<u64>,
}

pub(super) struct Coord {
    /// Shared by every driver (one `Arc` each, not a copy of its strings).
    pub(super) init_ctx: Arc<InitCtx>,
    pub(super) noop: bool,
    /// The waits between retries of a resource retrying forever without a fixed delay.
    pub(super) backoff: tend_model::Backoff,
    pub(super) registry: Arc<Registry>,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) status_tx: watch::Sender<Status>,
    pub(super) sink: EventSink,
    pub(super) cancel_tx: watch::Sender<u64>,
    /// Maximum concurrent checks.
    pub(super) parallel: usize,
    /// Vertices ready to run, waiting for a free slot (in order).
    pub(super) ready: VecDeque<u64>,
    pub(super) semas: HashMap<String, Arc<Semaphore>>,
    pub(super) next_inc: u64,
    /// Boxed: a hash table keeps about a third of its slots free, and an inline vertex makes
    /// each slot 400 bytes (6.7 MB of table for 10,000 vertices, against 4 MB of boxes).
    pub(super) verts: HashMap<u64, Box<Vertex>>,
    pub(super) by_id: HashMap<Arc<ResId>, u64>,
    pub(super) generation: u64,
    pub(super) running: usize,
    pub(super) candidates: Vec<u64>,
    pub(super) touched: Vec<u64>,
    /// Vertices per state, indexed by `VertexState as usize`.
    pub(super) counts: [usize; VertexState::ALL.len()],
    pub(super) swap_queue: VecDeque<QueuedSwap>,
    pub(super) swapping: Option<PendingSwap>,
    pub(super) shutting_down: bool,
    /// Shared with [`Inner`]: set when the shutdown's removals are all cleaned up.
    pub(super) shut_down: Arc<AtomicBool>,
    pub(super) shutdown_waiters: Vec<oneshot::Sender<()>>,
    pub(super) converged: bool,
    /// Rebuild the whole per-vertex status map at the next publish.
    pub(super) status_dirty: bool,
    /// Publish at the next opportunity even if no vertex changed.
    pub(super) republish: bool,
    /// Vertices whose status changed since the last publish.
    pub(super) pending_status: HashSet<u64>,
    pub(super) last_publish: Instant,
    /// A [`Msg::Publish`] is on its way.
    pub(super) publish_armed: bool,
    pub(super) published_generation: u64,
    /// The next swap is held for a `Meta:realize` vertex (see `swap.rs`).
    pub(super) realize_wait: bool,
}

/// The shortest interval between two status publications that do not change convergence.
pub(super) const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

impl Coord {
    /// A coordinator for an engine configured by `cfg`, with an empty graph.
    pub(super) fn new(
        cfg: &super::EngineConfig,
        world: crate::resource::WorldSlot,
        registry: Arc<Registry>,
        tx: mpsc::UnboundedSender<Msg>,
        status_tx: watch::Sender<Status>,
        sink: EventSink,
        shut_down: Arc<AtomicBool>,
    ) -> Coord {
        let parallel = if cfg.parallel == 0 {
            super::default_parallel()
        } else {
            cfg.parallel
        };
        Coord {
            init_ctx: Arc::new(InitCtx {
                hostname: cfg.hostname.clone(),
                state_dir: cfg.state_dir.clone(),
                world,
            }),
            noop: cfg.noop,
            backoff: cfg.backoff,
            registry,
            tx,
            status_tx,
            sink,
            cancel_tx: watch::channel(0u64).0,
            parallel,
            ready: VecDeque::new(),
            semas: HashMap::new(),
            next_inc: 1,
            verts: HashMap::new(),
            by_id: HashMap::new(),
            generation: 0,
            running: 0,
            candidates: Vec::new(),
            touched: Vec::new(),
            counts: [0; VertexState::ALL.len()],
            swap_queue: VecDeque::new(),
            swapping: None,
            shutting_down: false,
            shut_down,
            shutdown_waiters: Vec::new(),
            converged: false,
            status_dirty: true,
            republish: false,
            pending_status: HashSet::new(),
            last_publish: Instant::now(),
            publish_armed: false,
            published_generation: 0,
            realize_wait: false,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            let mut n = 0;
            while n < 1024 {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
                n += 1;
            }
            if self.realize_wait && self.swapping.is_none() {
                self.next_swap();
            }
            self.schedule();
            self.publish();
        }
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Swap {
                graph,
                edges,
                built,
                started,
                reply,
            } => {
                if self.shutting_down {
                    let _ = reply.send(Err(stopped_error()));
                } else {
                    self.swap_queue.push_back(QueuedSwap {
                        graph,
                        edges,
                        built,
                        started,
                        reply: Some(reply),
                        exiting: false,
                    });
                    self.next_swap();
                }
            }
            Msg::RemovalsDone => self.finish_swap(),
            Msg::Shutdown { reply, exiting } => {
                if !self.shutting_down {
                    self.shutting_down = true;
                    if exiting {
                        for f in self.registry.kinds().filter_map(|k| k.at_exit) {
                            f();
                        }
                    }
                    self.swap_queue.push_back(QueuedSwap {
                        graph: Arc::new(GraphSpec::default()),
                        edges: Vec::new(),
                        built: Vec::new(),
                        started: Instant::now(),
                        reply: None,
                        exiting,
                    });
                    self.next_swap();
                }
                self.shutdown_waiters.push(reply);
                self.maybe_shutdown_done();
            }
            Msg::Cancel => {
                self.cancel_tx.send_modify(|g| *g += 1);
            }
            Msg::Watch {
                inc,
                epoch,
                running,
                dirty,
            } => {
                if self.verts.get(&inc).is_some_and(|v| v.epoch == epoch) {
                    self.on_watch(inc, running, dirty)
                }
            }
            Msg::Failed {
                inc,
                epoch,
                phase,
                error,
            } => {
                if self.verts.get(&inc).is_some_and(|v| v.epoch == epoch) {
                    self.on_failed(inc, phase, error)
                }
            }
            Msg::CheckDone {
                inc,
                result,
                duration,
                apply,
                refresh,
                sent,
            } => self.on_check_done(inc, result, duration, apply, refresh, sent),
            Msg::RetryReady(inc, seq) => {
                if let Some(v) = self.verts.get_mut(&inc) {
                    if v.retry_wait && v.retry_seq == seq {
                        v.retry_wait = false;
                        if !v.watch_failed {
                            // Retrying forever: failed until this retry runs.
                            v.failed = None;
                        }
                        self.candidates.push(inc);
                        self.touched.push(inc);
                    }
                }
            }
            Msg::Restart(inc, seq) => {
                let due = self
                    .verts
                    .get_mut(&inc)
                    .is_some_and(|v| v.retry_wait && v.retry_seq == seq && v.watch_failed);
                if due {
                    let v = self.verts.get_mut(&inc).expect("present");
                    v.retry_wait = false;
                    // `start` restarts the driver: init again if it failed, then the watch.
                    self.start(inc);
                }
            }
            Msg::Publish => {
                self.publish_armed = false;
                self.republish = true;
            }
            Msg::ReversalDeleted(inc) => self.on_reversal_deleted(inc),
            Msg::LimitReady(inc) => {
                if let Some(v) = self.verts.get_mut(&inc) {
                    v.limit_wait = false;
                    self.candidates.push(inc);
                }
            }
        }
    }

    pub(super) fn maybe_shutdown_done(&mut self) {
        if self.shutting_down && self.swapping.is_none() && self.swap_queue.is_empty() {
            self.shut_down.store(true, Ordering::SeqCst);
            for w in self.shutdown_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    pub(super) fn on_watch(&mut self, inc: u64, running: bool, dirty: bool) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        let was_running = v.watch_running;
        if running && !was_running {
            v.watch_running = true;
            self.candidates.push(inc);
        }
        if dirty && was_running && !v.watch_failed {
            if v.spec().meta.poll == 0 {
                Event::Drift { id: v.id.clone() }.emit(&self.sink);
            }
            // Something happened to a failed resource, or one waiting for a retry: try again
            // now (the backoff goes on from where it was, so a resource whose failed attempts
            // themselves make events still backs off).
            if v.failed.is_some() || v.retry_wait {
                v.failed = None;
                v.retry_wait = false;
                v.retry_seq += 1;
                v.retries_left = v.spec().meta.retry;
            }
            v.dirty = true;
            self.candidates.push(inc);
            self.touched.push(inc);
        }
    }

    pub(super) fn on_failed(&mut self, inc: u64, phase: &'static str, error: String) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        v.watch_failed = true;
        let error = format!("{phase}: {error}");
        let first = v.failed.is_none() && v.failures == 0;
        v.failed = Some(error.clone());
        v.status.last_error = Some(error.clone());
        v.status_changed = true;
        v.failures = v.failures.saturating_add(1);
        // A resource retrying forever restarts its init and watch after the wait, as it
        // retries its checks.
        let retry_in =
            (v.spec().meta.retry < 0).then(|| v.spec().meta.retry_wait(v.failures, &self.backoff));
        if let Some(wait) = retry_in {
            v.retry_wait = true;
            v.retry_seq += 1;
            after(&self.tx, wait, Msg::Restart(inc, v.retry_seq));
        }
        if first {
            Event::VertexFailed {
                id: v.id.clone(),
                phase,
                error,
                retry_in,
            }
            .emit(&self.sink);
        }
        self.touched.push(inc);
    }

    pub(super) fn on_check_done(
        &mut self,
        inc: u64,
        result: Result<Checked, String>,
        duration: Duration,
        apply: bool,
        refresh: bool,
        sent: Vec<(String, tend_model::Value)>,
    ) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        self.running -= 1;
        v.running = false;
        v.check = None;
        let now = SystemTime::now();
        v.status.checks += 1;
        v.status.last_check = Some(now);
        v.status_changed = true;
        self.touched.push(inc);
        self.candidates.push(inc);
        match result {
            Ok(c) => {
                v.ever_ok = true;
                v.failures = 0;
                if !v.watch_failed {
                    v.failed = None;
                    v.status.last_error = None;
                }
                if v.spec().meta.retryreset {
                    v.retries_left = v.spec().meta.retry;
                }
                v.refresh_inflight.clear();
                let result = match (c, apply) {
                    (Checked::InState, _) => CheckResult::InState,
                    (Checked::Changed, true) => CheckResult::Changed,
                    (Checked::Changed, false) => CheckResult::Noop,
                };
                v.status.would_change = result == CheckResult::Noop;
                if c == Checked::Changed {
                    v.status.changes += 1;
                    v.status.last_change = Some(now);
                }
                let propagate =
                    std::mem::take(&mut v.upstream_inflight) || result == CheckResult::Changed;
                let sent_changed = sent != v.sent;
                if sent_changed {
                    v.sent = sent;
                }
                let reversed = v.reversal && apply;
                if apply && v.spec().meta.reverse {
                    v.reverse_kept = true;
                }
                let id = v.id.clone();
                let notify = v.notify_succs.clone();
                let succs = v.succs.clone();
                Event::CheckApplied {
                    id: id.clone(),
                    result,
                    duration,
                    refresh,
                }
                .emit(&self.sink);
                self.candidates.extend(succs.iter().copied());
                self.touched.extend(succs.iter().copied());
                if result == CheckResult::Changed {
                    for n in notify {
                        if let Some(s) = self.verts.get_mut(&n) {
                            s.refresh_from.insert(ResId::clone(&id));
                            Event::Refresh {
                                from: id.clone(),
                                to: s.id.clone(),
                            }
                            .emit(&self.sink);
                        }
                    }
                }
                if propagate {
                    self.mark_successors_dirty(&succs);
                }
                if sent_changed {
                    self.sent_changed(inc);
                }
                if reversed {
                    self.reversal_done(inc);
                }
            }
            Err(error) => {
                v.refresh_from.extend(v.refresh_inflight.drain(..));
                v.upstream_changed |= std::mem::take(&mut v.upstream_inflight);
                v.status.last_error = Some(error.clone());
                v.failures = v.failures.saturating_add(1);
                let retry_in = (v.retries_left != 0)
                    .then(|| v.spec().meta.retry_wait(v.failures, &self.backoff));
                Event::CheckFailed {
                    id: v.id.clone(),
                    error: error.clone(),
                    duration,
                    retry_in,
                }
                .emit(&self.sink);
                let forever = v.spec().meta.retry < 0;
                // Failed until it is retried (a resource retrying forever: its dependents are
                // blocked meanwhile, and the graph counts as converged, so a one-shot run ends
                // and reports it), or for good (no retries left). With retries left it is
                // dirty: the retries are part of this run.
                let became_failed = if forever {
                    v.failures == 1
                } else {
                    v.failed.is_none() && retry_in.is_none()
                };
                if forever || retry_in.is_none() {
                    v.failed = Some(error.clone());
                }
                if let Some(wait) = retry_in {
                    if v.retries_left > 0 {
                        v.retries_left -= 1;
                    }
                    v.retry_wait = true;
                    v.retry_seq += 1;
                    v.dirty = true;
                    after(&self.tx, wait, Msg::RetryReady(inc, v.retry_seq));
                } else {
                    v.dirty = false;
                }
                if became_failed {
                    Event::VertexFailed {
                        id: v.id.clone(),
                        phase: "check_apply",
                        error,
                        retry_in,
                    }
                    .emit(&self.sink);
                }
            }
        }
    }

    /// Something upstream changed: the successors must be checked again, and they pass the
    /// word on to their own successors once they ran (whatever their result), so every
    /// descendant is re-checked, each after its predecessors, in O(edges). Hidden vertices
    /// never run, so the word passes through them at once.
    pub(super) fn mark_successors_dirty(&mut self, start: &[u64]) {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack: Vec<u64> = start.to_vec();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let Some(v) = self.verts.get_mut(&i) else {
                continue;
            };
            if v.hidden() {
                stack.extend(v.succs.iter().copied());
                continue;
            }
            v.upstream_changed = true;
            if v.failed.is_none() {
                v.dirty = true;
                self.touched.push(i);
                self.candidates.push(i);
            }
        }
    }

    pub(super) fn dec_count(&mut self, s: VertexState) {
        let n = &mut self.counts[s as usize];
        *n = n.saturating_sub(1);
    }
}

/// Sends `msg` to the coordinator after `wait`.
fn after(tx: &mpsc::UnboundedSender<Msg>, wait: Duration, msg: Msg) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = tx.send(msg);
    });
}
