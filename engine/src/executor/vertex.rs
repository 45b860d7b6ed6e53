//! One vertex of the running graph: its resource, what the coordinator knows of it, and
//! the `Meta:limit` token bucket.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashSet, HashSetExt};
use tend_model::{GraphSpec, ResId, ResSpec, Value};

use tokio::task::JoinHandle;

use crate::resource::Resource;
use crate::status::{VertexState, VertexStatus};

/// A token bucket for `Meta:limit`/`Meta:burst`.
pub(super) struct Bucket {
    pub(super) rate: f64,
    pub(super) burst: f64,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64, burst: u32) -> Self {
        Bucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub(super) fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_secs(86_400))
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / self.rate).min(86_400.0),
            ))
        }
    }
}

pub(super) struct Vertex {
    /// Shared with `Coord::by_id` and the published status (one allocation per vertex).
    pub(super) id: Arc<ResId>,
    /// The graph this vertex's spec is in (shared with the engine's published graph).
    pub(super) graph: Arc<GraphSpec>,
    /// Index of the spec in `graph.resources`.
    pub(super) idx: usize,
    pub(super) res: Arc<dyn Resource>,
    /// The driver (init + watch/poll) has been spawned.
    pub(super) started: bool,
    pub(super) driver: Option<JoinHandle<()>>,
    pub(super) check: Option<JoinHandle<()>>,
    pub(super) watch_running: bool,
    pub(super) watch_failed: bool,
    pub(super) dirty: bool,
    pub(super) running: bool,
    pub(super) ever_ok: bool,
    pub(super) failed: Option<String>,
    pub(super) retries_left: i16,
    pub(super) retry_wait: bool,
    /// Numbers the waits for a retry, so that a wait cut short (by a drift event) does not
    /// end the next one early.
    pub(super) retry_seq: u64,
    /// Failures in a row (checks, inits, watches), for the backoff; 0 after a success.
    pub(super) failures: u32,
    pub(super) limit_wait: bool,
    pub(super) bucket: Option<Bucket>,
    pub(super) refresh_from: HashSet<ResId>,
    pub(super) refresh_inflight: Vec<ResId>,
    /// Shared with its driver and checks.
    pub(super) flags: Arc<Flags>,
    /// An ancestor changed since this vertex last ran: tell the successors after running.
    pub(super) upstream_changed: bool,
    /// `upstream_changed` taken by the running check.
    pub(super) upstream_inflight: bool,
    pub(super) preds: Vec<u64>,
    pub(super) succs: Vec<u64>,
    pub(super) notify_succs: Vec<u64>,
    pub(super) state: VertexState,
    pub(super) status: VertexStatus,
    /// `status` changed since it was last published.
    pub(super) status_changed: bool,
    /// Waiting in the coordinator's ready queue for a free slot.
    pub(super) queued: bool,
    /// Numbers its drivers (see [`super::Msg::Watch`]).
    pub(super) epoch: u32,
    /// The values it sent after its last successful check (send/recv), sorted by name.
    pub(super) sent: Vec<(String, Value)>,
    /// The values it receives: from which predecessor, which sent value, into which param.
    pub(super) recv: Vec<Recv>,
    /// The received params `res` was built with (sorted by param): the rest of its spec is
    /// the graph's.
    pub(super) received: Vec<(String, Value)>,
    /// It applies a pending reversal (`Meta:reverse` of a resource that left the graph),
    /// whose record is still to be deleted.
    pub(super) reversal: bool,
    /// `Meta:reverse`: its reversal is kept (a check succeeded since it was).
    pub(super) reverse_kept: bool,
    /// A send/recv receiver not started yet: its driver starts once its predecessors are
    /// converged, with its resource built with what they sent.
    pub(super) deferred: bool,
}

/// One value a vertex receives (an edge's `SendRecv`, by vertex).
pub(super) struct Recv {
    pub(super) from: u64,
    pub(super) send: String,
    pub(super) recv: String,
}

/// What a vertex shares with the tasks it spawns.
pub(super) struct Flags {
    /// Cleared when the vertex leaves the graph: a queued check then never starts.
    pub(super) alive: AtomicBool,
    /// Init succeeded (so cleanup is due on removal, and a rewatch skips init).
    pub(super) inited: AtomicBool,
}

impl Flags {
    /// A new vertex's (or resource's) flags: alive, not initialised.
    pub(super) fn fresh() -> Arc<Flags> {
        Arc::new(Flags {
            alive: AtomicBool::new(true),
            inited: AtomicBool::new(false),
        })
    }
}

impl Vertex {
    pub(super) fn new(graph: Arc<GraphSpec>, idx: usize, res: Arc<dyn Resource>) -> Self {
        let spec = &graph.resources[idx];
        let bucket = spec
            .meta
            .limit
            .is_finite()
            .then(|| Bucket::new(spec.meta.limit, spec.meta.burst));
        Vertex {
            id: Arc::new(spec.id()),
            retries_left: spec.meta.retry,
            graph,
            idx,
            res,
            started: false,
            driver: None,
            check: None,
            watch_running: false,
            watch_failed: false,
            dirty: true,
            running: false,
            ever_ok: false,
            failed: None,
            retry_wait: false,
            retry_seq: 0,
            failures: 0,
            limit_wait: false,
            bucket,
            refresh_from: HashSet::new(),
            refresh_inflight: Vec::new(),
            flags: Flags::fresh(),
            upstream_changed: false,
            upstream_inflight: false,
            preds: Vec::new(),
            succs: Vec::new(),
            notify_succs: Vec::new(),
            state: VertexState::Pending,
            status: VertexStatus::default(),
            status_changed: true,
            queued: false,
            epoch: 0,
            sent: Vec::new(),
            recv: Vec::new(),
            received: Vec::new(),
            reversal: false,
            reverse_kept: false,
            deferred: false,
        }
    }

    /// What a replacement of this vertex may inherit (see [`Vertex::carry_over`]); the rest of
    /// `self` stays behind for the removal.
    pub(super) fn take_carried(&mut self) -> Vertex {
        let mut c = Vertex::new(self.graph.clone(), self.idx, self.res.clone());
        c.refresh_from = std::mem::take(&mut self.refresh_from);
        c.upstream_changed = self.upstream_changed || self.upstream_inflight;
        c.retries_left = self.retries_left;
        c.bucket = self.bucket.take();
        c
    }

    /// Inherits from the vertex this one replaces: pending refreshes and upstream changes
    /// always; retry and rate-limit state too, unless `Meta:reset` (or the meta that governs
    /// that state changed).
    pub(super) fn carry_over(&mut self, mut old: Vertex) {
        self.refresh_from = std::mem::take(&mut old.refresh_from);
        self.upstream_changed = old.upstream_changed;
        if self.spec().meta.reset {
            return;
        }
        if old.spec().meta.retry == self.spec().meta.retry {
            self.retries_left = old.retries_left;
        }
        if old.spec().meta.limit == self.spec().meta.limit
            && old.spec().meta.burst == self.spec().meta.burst
        {
            self.bucket = old.bucket;
        }
    }

    pub(super) fn spec(&self) -> &ResSpec {
        &self.graph.resources[self.idx]
    }

    pub(super) fn hidden(&self) -> bool {
        self.spec().meta.hidden
    }

    pub(super) fn is_converged(&self) -> bool {
        self.hidden()
            || (self.started
                && self.ever_ok
                && !self.dirty
                && !self.running
                && !self.retry_wait
                && self.failed.is_none())
    }
}

/// What a caught panic says, as an error message.
pub(super) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}
