//! The executor: runs a resource graph and keeps the host converged.
//!
//! One coordinator task owns the graph and every vertex's state; everything else (init and
//! watch drivers, `check_apply` runs, retry and rate-limit timers, removals) runs in its own
//! task and reports back to the coordinator through one channel. A panic in a resource is
//! caught (`catch_unwind` around each resource call) and fails that vertex only.
//!
//! Scheduling: a vertex runs `check_apply` when its watch is up, it is dirty (first run, drift,
//! refresh, new spec), it is not failed nor waiting for a retry or a rate-limit token, and every
//! predecessor is converged. A vertex that changed something marks its descendants dirty (and
//! sets the refresh flag of its notify edges). Runs are bounded by `parallel` (the coordinator
//! starts no more checks than that; the others wait in a FIFO queue, not as tasks) and the
//! named `Meta:sema` semaphores (acquired in sorted order).

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::events::{Event, EventSink};
use crate::graph::{analyze, GraphError};
use crate::metrics::{CheckResult, MetricsSnapshot};
use crate::registry::Registry;
use crate::resource::{CheckCtx, Checked, InitCtx, Resource, Watcher};
use crate::spec::{parse_sema, EdgeSpec, GraphSpec, ResId, ResSpec};
use crate::status::{Status, VertexState, VertexStatus};

/// Hidden resources may share their identity with a visible one, or with each other
/// (spec/mcl.md §8.6): they are never applied here, only exported. The engine runs one vertex
/// per identity (the visible resource, else the first hidden copy); the other hidden copies
/// ("twins") are set aside for the exporter. `None` when the graph has no twins.
fn split_hidden_twins(g: &GraphSpec) -> Option<(GraphSpec, Vec<ResSpec>)> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(g.resources.len());
    let dup = g
        .resources
        .iter()
        .any(|r| !seen.insert((r.kind.as_str(), r.name.as_str())));
    if !dup {
        return None;
    }
    let mut visible: HashSet<ResId> = HashSet::new();
    for r in g.resources.iter().filter(|r| !r.meta.hidden) {
        visible.insert(r.id());
    }
    let mut kept_hidden: HashSet<ResId> = HashSet::new();
    let mut resources = Vec::with_capacity(g.resources.len());
    let mut twins = Vec::new();
    for r in &g.resources {
        if r.meta.hidden {
            let id = r.id();
            if visible.contains(&id) || !kept_hidden.insert(id) {
                twins.push(r.clone());
                continue;
            }
        }
        resources.push(r.clone());
    }
    Some((
        GraphSpec {
            resources,
            edges: g.edges.clone(),
        },
        twins,
    ))
}

/// Checks a graph against the kinds of `registry`, without side effects and without an
/// engine: unknown kinds, params against the schema, meta, constructor refusals, duplicate
/// identities, edges to missing vertices, and cycles (automatic edges included). Returns
/// every error found.
pub fn check_graph(registry: &Registry, g: &GraphSpec) -> Result<(), Vec<GraphError>> {
    match split_hidden_twins(g) {
        Some((g, _)) => analyze(registry, &g).map(drop),
        None => analyze(registry, g).map(drop),
    }
}

/// The default bound on concurrent checks: eight per CPU, from 64 to 256. Checks mostly wait
/// (on fsync, on commands, on the network) or end in a few microseconds (a file already in
/// state), rather than compute, so many more of them than cores pays. On 2 CPUs, 10,000 files
/// converge in 1.0 s with 64 at once against 1.2 s with 16, and are found in state in 80 ms
/// against 91 ms: with few slots, the coordinator wakes for every check that ends, to start the
/// next one. The upper bound keeps a large machine from running hundreds of commands at once.
pub fn default_parallel() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 8).clamp(64, 256)
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This host's name (handed to resources in [`InitCtx`]).
    pub hostname: String,
    /// The daemon's state directory (handed to resources in [`InitCtx`]).
    pub state_dir: PathBuf,
    /// Maximum concurrent `check_apply` runs; 0 = [`default_parallel`].
    pub parallel: usize,
    /// Global noop: check and report, change nothing.
    pub noop: bool,
}

/// What a graph swap did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapStats {
    /// Vertices new in this graph.
    pub added: usize,
    /// Vertices no longer in the graph (stopped and cleaned up).
    pub removed: usize,
    /// Vertices whose spec changed (replaced).
    pub changed: usize,
    /// Vertices kept running untouched.
    pub kept: usize,
    /// From the call to the moment additions were started.
    pub duration: Duration,
}

/// A graph checked by [`Engine::prepare`], ready for [`Engine::swap_prepared`].
pub struct Prepared {
    /// The graph, hidden twins set aside.
    graph: Arc<GraphSpec>,
    twins: Vec<ResSpec>,
    /// Every edge, automatic ones included.
    edges: Vec<EdgeSpec>,
    /// The graph's resources, built by the check, in order.
    built: Vec<Arc<dyn Resource>>,
    started: Instant,
}

/// The graph the engine was last asked to run ([`Engine::graph`]).
#[derive(Debug, Default)]
pub struct RunningGraph {
    /// The graph as given, without the hidden twins (its `edges` are the given ones).
    pub graph: Arc<GraphSpec>,
    /// Hidden resources sharing their identity with another resource of the graph: exported,
    /// never run.
    pub twins: Vec<ResSpec>,
    /// Every edge, automatic ones included.
    pub edges: Vec<EdgeSpec>,
}

impl RunningGraph {
    /// Every resource, hidden twins included.
    pub fn resources(&self) -> impl Iterator<Item = &ResSpec> {
        self.graph.resources.iter().chain(&self.twins)
    }
}

/// The graph executor. Cheap to clone; must be created inside a tokio runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    tx: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<Status>,
    sink: EventSink,
    /// The last graph swapped in, with every edge (automatic ones included).
    graph: std::sync::Mutex<Arc<RunningGraph>>,
    /// The World handed to resources' `init`.
    world: crate::resource::WorldSlot,
    /// Set once a shutdown is complete (see [`Engine::is_shut_down`]).
    shut_down: Arc<AtomicBool>,
}

type SwapReply = oneshot::Sender<Result<SwapStats, Vec<GraphError>>>;

enum Msg {
    Swap {
        graph: Arc<GraphSpec>,
        edges: Vec<EdgeSpec>,
        built: Vec<Arc<dyn Resource>>,
        started: Instant,
        reply: SwapReply,
    },
    RemovalsDone,
    Shutdown {
        reply: oneshot::Sender<()>,
        /// The process exits next (see [`Engine::shutdown_for_exit`]).
        exiting: bool,
    },
    Cancel,
    Watch {
        inc: u64,
        running: bool,
        dirty: bool,
    },
    Failed {
        inc: u64,
        phase: &'static str,
        error: String,
    },
    CheckDone {
        inc: u64,
        result: Result<Checked, String>,
        duration: Duration,
        apply: bool,
        refresh: bool,
    },
    RetryReady(u64),
    LimitReady(u64),
    /// Time to publish a throttled status.
    Publish,
}

fn stopped_error() -> Vec<GraphError> {
    vec![GraphError::graph("the engine is shut down")]
}

impl Engine {
    /// Creates an engine running an empty graph. Must be called inside a tokio runtime.
    pub fn new(cfg: EngineConfig, registry: Arc<Registry>) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Status {
            counts: VertexState::ALL.iter().map(|s| (*s, 0)).collect(),
            ..Status::default()
        });
        let (events_tx, _) = broadcast::channel(4096);
        let sink = EventSink {
            metrics: Arc::new(Mutex::new(MetricsSnapshot::default())),
            tx: events_tx,
        };
        let parallel = if cfg.parallel == 0 {
            default_parallel()
        } else {
            cfg.parallel
        };
        let (cancel_tx, _) = watch::channel(0u64);
        let world_slot = crate::resource::WorldSlot::default();
        let shut_down = Arc::new(AtomicBool::new(false));
        let coord = Coord {
            init_ctx: Arc::new(InitCtx {
                hostname: cfg.hostname.clone(),
                state_dir: cfg.state_dir.clone(),
                world: world_slot.clone(),
            }),
            noop: cfg.noop,
            registry: registry.clone(),
            tx: tx.clone(),
            status_tx,
            sink: sink.clone(),
            cancel_tx,
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
            shut_down: shut_down.clone(),
            shutdown_waiters: Vec::new(),
            converged: false,
            status_dirty: true,
            republish: false,
            pending_status: HashSet::new(),
            last_publish: Instant::now(),
            publish_armed: false,
            published_generation: 0,
        };
        tokio::spawn(coord.run(rx));
        Engine {
            inner: Arc::new(Inner {
                registry,
                tx,
                status: status_rx,
                sink,
                graph: std::sync::Mutex::new(Arc::new(RunningGraph::default())),
                world: world_slot,
                shut_down,
            }),
        }
    }

    /// Hands the World's shared strings to resources (their `InitCtx::world`). Resources
    /// initialised before this call do not see it: call it before the first swap.
    pub fn set_world(&self, world: Arc<dyn tend_world::StrWorld>) {
        self.inner.world.set(world);
    }

    /// Checks a graph without side effects (see [`check_graph`]).
    pub fn check_graph(&self, g: &GraphSpec) -> Result<(), Vec<GraphError>> {
        check_graph(&self.inner.registry, g)
    }

    /// Checks `g` like [`Engine::check_graph`] and keeps what the check built, so that
    /// [`Engine::swap_prepared`] does not do the work again. Has no side effects.
    pub fn prepare(&self, g: impl Into<Arc<GraphSpec>>) -> Result<Prepared, Vec<GraphError>> {
        let started = Instant::now();
        let g = g.into();
        let (graph, twins) = match split_hidden_twins(&g) {
            Some((g, twins)) => (Arc::new(g), twins),
            None => (g, Vec::new()),
        };
        let a = analyze(&self.inner.registry, &graph)?;
        Ok(Prepared {
            graph,
            twins,
            edges: a.edges,
            built: a.built,
            started,
        })
    }

    /// Checks `g`, then swaps the running graph to it by diff (see the crate docs). On error
    /// nothing changes on the host. Returns once removals are cleaned up and additions started
    /// (not once converged: watch [`Engine::status`] for that).
    pub async fn swap(&self, g: impl Into<Arc<GraphSpec>>) -> Result<SwapStats, Vec<GraphError>> {
        let p = self.prepare(g)?;
        self.swap_prepared(p).await
    }

    /// Swaps the running graph to a prepared one by diff (see [`Engine::swap`]).
    pub async fn swap_prepared(&self, p: Prepared) -> Result<SwapStats, Vec<GraphError>> {
        let (reply, rx) = oneshot::channel();
        // Published before the swap starts (and so before the generation moves), so that a
        // reader woken by the new generation sees this graph (hidden twins included: they
        // are exported like any other resource).
        *self.inner.graph.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(RunningGraph {
            graph: p.graph.clone(),
            twins: p.twins,
            edges: p.edges.clone(),
        });
        self.inner
            .tx
            .send(Msg::Swap {
                graph: p.graph,
                edges: p.edges,
                built: p.built,
                started: p.started,
                reply,
            })
            .map_err(|_| stopped_error())?;
        rx.await.unwrap_or_else(|_| Err(stopped_error()))
    }

    /// The graph of the last swap started, with every edge (automatic ones included); empty
    /// before the first swap.
    pub fn graph(&self) -> Arc<RunningGraph> {
        self.inner
            .graph
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The graph's status, updated as vertices change state.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// A stream of internal events (lagging receivers lose the oldest ones).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.sink.tx.subscribe()
    }

    /// The counters and histograms at this moment.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner
            .sink
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Orderly stop: cancels every watch, waits for running checks to finish, calls every
    /// resource's cleanup. Later swaps fail.
    pub async fn shutdown(&self) {
        self.stop(false).await
    }

    /// [`Engine::shutdown`] for a process about to exit. A vertex whose resource holds nothing
    /// outside the process ([`Resource::stop_at_exit`] is `false`) and runs no check leaves the
    /// graph without its watch being stopped: it ends with the process. The others are
    /// stopped and cleaned up as by [`Engine::shutdown`]. A graph of 10,000 files then exits
    /// without tearing down 10,000 watches one by one.
    pub async fn shutdown_for_exit(&self) {
        self.stop(true).await
    }

    async fn stop(&self, exiting: bool) {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown { reply, exiting }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether a shutdown has completed: every watch stopped, no check running, every
    /// resource cleaned up.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::SeqCst)
    }

    /// Aborts running `check_apply` calls (they fail with "cancelled").
    pub fn cancel_running(&self) {
        let _ = self.inner.tx.send(Msg::Cancel);
    }
}

/// A token bucket for `Meta:limit`/`Meta:burst`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: u32) -> Self {
        Bucket {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self) -> Result<(), Duration> {
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

struct Vertex {
    /// Shared with `Coord::by_id` and the published status (one allocation per vertex).
    id: Arc<ResId>,
    /// The graph this vertex's spec is in (shared with the engine's published graph).
    graph: Arc<GraphSpec>,
    /// Index of the spec in `graph.resources`.
    idx: usize,
    res: Arc<dyn Resource>,
    /// The driver (init + watch/poll) has been spawned.
    started: bool,
    driver: Option<JoinHandle<()>>,
    check: Option<JoinHandle<()>>,
    watch_running: bool,
    watch_failed: bool,
    dirty: bool,
    running: bool,
    ever_ok: bool,
    failed: Option<String>,
    retries_left: i16,
    retry_wait: bool,
    limit_wait: bool,
    bucket: Option<Bucket>,
    refresh_from: HashSet<ResId>,
    refresh_inflight: Vec<ResId>,
    /// Shared with its driver and checks.
    flags: Arc<Flags>,
    /// An ancestor changed since this vertex last ran: tell the successors after running.
    upstream_changed: bool,
    /// `upstream_changed` taken by the running check.
    upstream_inflight: bool,
    preds: Vec<u64>,
    succs: Vec<u64>,
    notify_succs: Vec<u64>,
    state: VertexState,
    status: VertexStatus,
    /// `status` changed since it was last published.
    status_changed: bool,
    /// Waiting in the coordinator's ready queue for a free slot.
    queued: bool,
}

/// What a vertex shares with the tasks it spawns.
struct Flags {
    /// Cleared when the vertex leaves the graph: a queued check then never starts.
    alive: AtomicBool,
    /// Init succeeded (so cleanup is due on removal, and a rewatch skips init).
    inited: AtomicBool,
}

impl Vertex {
    fn new(graph: Arc<GraphSpec>, idx: usize, res: Arc<dyn Resource>) -> Self {
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
            limit_wait: false,
            bucket,
            refresh_from: HashSet::new(),
            refresh_inflight: Vec::new(),
            flags: Arc::new(Flags {
                alive: AtomicBool::new(true),
                inited: AtomicBool::new(false),
            }),
            upstream_changed: false,
            upstream_inflight: false,
            preds: Vec::new(),
            succs: Vec::new(),
            notify_succs: Vec::new(),
            state: VertexState::Pending,
            status: VertexStatus::default(),
            status_changed: true,
            queued: false,
        }
    }

    /// What a replacement of this vertex may inherit (see [`Vertex::carry_over`]); the rest of
    /// `self` stays behind for the removal.
    fn take_carried(&mut self) -> Vertex {
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
    fn carry_over(&mut self, mut old: Vertex) {
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

    fn spec(&self) -> &ResSpec {
        &self.graph.resources[self.idx]
    }

    fn hidden(&self) -> bool {
        self.spec().meta.hidden
    }

    fn is_converged(&self) -> bool {
        self.hidden()
            || (self.started
                && self.ever_ok
                && !self.dirty
                && !self.running
                && !self.retry_wait
                && self.failed.is_none())
    }
}

/// A checked graph waiting for its turn.
struct QueuedSwap {
    graph: Arc<GraphSpec>,
    edges: Vec<EdgeSpec>,
    /// The graph's resources, built by the check, in order.
    built: Vec<Arc<dyn Resource>>,
    started: Instant,
    /// `None` for the shutdown's swap to the empty graph.
    reply: Option<SwapReply>,
    /// The shutdown of a process about to exit.
    exiting: bool,
}

struct PendingSwap {
    reply: Option<SwapReply>,
    started: Instant,
    stats: SwapStats,
    to_start: Vec<u64>,
}

struct Coord {
    /// Shared by every driver (one `Arc` each, not a copy of its strings).
    init_ctx: Arc<InitCtx>,
    noop: bool,
    registry: Arc<Registry>,
    tx: mpsc::UnboundedSender<Msg>,
    status_tx: watch::Sender<Status>,
    sink: EventSink,
    cancel_tx: watch::Sender<u64>,
    /// Maximum concurrent checks.
    parallel: usize,
    /// Vertices ready to run, waiting for a free slot (in order).
    ready: VecDeque<u64>,
    semas: HashMap<String, Arc<Semaphore>>,
    next_inc: u64,
    /// Boxed: a hash table keeps about a third of its slots free, and an inline vertex makes
    /// each slot 400 bytes (6.7 MB of table for 10,000 vertices, against 4 MB of boxes).
    verts: HashMap<u64, Box<Vertex>>,
    by_id: HashMap<Arc<ResId>, u64>,
    generation: u64,
    running: usize,
    candidates: Vec<u64>,
    touched: Vec<u64>,
    /// Vertices per state, indexed by `VertexState as usize`.
    counts: [usize; VertexState::ALL.len()],
    swap_queue: VecDeque<QueuedSwap>,
    swapping: Option<PendingSwap>,
    shutting_down: bool,
    /// Shared with [`Inner`]: set when the shutdown's removals are all cleaned up.
    shut_down: Arc<AtomicBool>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    converged: bool,
    /// Rebuild the whole per-vertex status map at the next publish.
    status_dirty: bool,
    /// Publish at the next opportunity even if no vertex changed.
    republish: bool,
    /// Vertices whose status changed since the last publish.
    pending_status: HashSet<u64>,
    last_publish: Instant,
    /// A [`Msg::Publish`] is on its way.
    publish_armed: bool,
    published_generation: u64,
}

/// The shortest interval between two status publications that do not change convergence.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// What a caught panic says, as an error message.
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

impl Coord {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
            self.schedule();
            self.publish();
        }
    }

    fn handle(&mut self, msg: Msg) {
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
                running,
                dirty,
            } => self.on_watch(inc, running, dirty),
            Msg::Failed { inc, phase, error } => self.on_failed(inc, phase, error),
            Msg::CheckDone {
                inc,
                result,
                duration,
                apply,
                refresh,
            } => self.on_check_done(inc, result, duration, apply, refresh),
            Msg::RetryReady(inc) => {
                if let Some(v) = self.verts.get_mut(&inc) {
                    v.retry_wait = false;
                    self.candidates.push(inc);
                    self.touched.push(inc);
                }
            }
            Msg::Publish => {
                self.publish_armed = false;
                self.republish = true;
            }
            Msg::LimitReady(inc) => {
                if let Some(v) = self.verts.get_mut(&inc) {
                    v.limit_wait = false;
                    self.candidates.push(inc);
                }
            }
        }
    }

    fn maybe_shutdown_done(&mut self) {
        if self.shutting_down && self.swapping.is_none() && self.swap_queue.is_empty() {
            self.shut_down.store(true, Ordering::SeqCst);
            for w in self.shutdown_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Starts the next queued swap if none is in progress: installs the new topology, stops
    /// removed and changed vertices at once, and spawns their cleanup; additions start when the
    /// cleanup is done ([`Coord::finish_swap`]).
    fn next_swap(&mut self) {
        if self.swapping.is_some() {
            return;
        }
        let Some(QueuedSwap {
            graph,
            edges,
            built: prebuilt,
            started,
            reply,
            exiting,
        }) = self.swap_queue.pop_front()
        else {
            return;
        };
        let mut prebuilt = prebuilt.into_iter();
        // Build new and changed resources first: if a constructor fails, nothing changes.
        let mut built: Vec<(usize, Arc<dyn Resource>, bool)> = Vec::new();
        let mut kept: Vec<(u64, usize)> = Vec::new();
        let mut errors = Vec::new();
        // (The first graph has nothing to compare with.)
        let diff = !self.by_id.is_empty();
        let mut new_ids: HashSet<(&str, &str)> =
            HashSet::with_capacity(if diff { graph.resources.len() } else { 0 });
        for (idx, spec) in graph.resources.iter().enumerate() {
            let pre = prebuilt.next();
            let old = if diff {
                new_ids.insert((spec.kind.as_str(), spec.name.as_str()));
                self.by_id.get(&spec.id()).copied()
            } else {
                None
            };
            if let Some(inc) = old {
                if self.verts[&inc].spec() == spec {
                    kept.push((inc, idx));
                    continue;
                }
            }
            if let Some(r) = pre {
                built.push((idx, r, old.is_some()));
                continue;
            }
            let Some(kind) = self.registry.get(&spec.kind) else {
                errors.push(GraphError {
                    res: Some(spec.id()),
                    field: None,
                    message: format!("unknown resource kind `{}`", spec.kind),
                });
                continue;
            };
            if spec.meta.hidden {
                built.push((idx, Arc::new(crate::resource::Hidden), old.is_some()));
                continue;
            }
            match (kind.build)(spec) {
                Ok(r) => built.push((idx, Arc::from(r), old.is_some())),
                Err(e) => errors.push(GraphError {
                    res: Some(spec.id()),
                    field: None,
                    message: e.to_string(),
                }),
            }
        }
        if !errors.is_empty() {
            if let Some(r) = reply {
                let _ = r.send(Err(errors));
            }
            self.next_swap();
            return;
        }
        let mut stats = SwapStats {
            kept: kept.len(),
            ..SwapStats::default()
        };
        // Kept vertices now read their (equal) spec from the new graph.
        for &(inc, idx) in &kept {
            let v = self.verts.get_mut(&inc).expect("present");
            v.graph = graph.clone();
            v.idx = idx;
        }

        // Stop removed and replaced vertices now; clean them up in the background.
        let mut carried: HashMap<Arc<ResId>, Vertex> = HashMap::new();
        let mut removals = Vec::new();
        let replaced: HashSet<ResId> = built
            .iter()
            .filter(|(_, _, changed)| *changed)
            .map(|(idx, _, _)| graph.resources[*idx].id())
            .collect();
        if exiting {
            // The process exits next: a vertex with nothing to stop (see `shutdown_for_exit`)
            // is left as it is, its driver running, its memory not freed (freeing 10,000
            // vertices would only delay the exit). The others are stopped below.
            let mut stop = Vec::new();
            let mut stay = 0;
            for (inc, v) in &self.verts {
                if v.running || v.res.stop_at_exit() {
                    stop.push(*inc);
                } else {
                    v.flags.alive.store(false, Ordering::SeqCst);
                    let n = &mut self.counts[v.state as usize];
                    *n = n.saturating_sub(1);
                    stay += 1;
                }
            }
            if stay > 0 {
                stats.removed += stay;
                let mut verts = HashMap::with_capacity(stop.len());
                let mut by_id = HashMap::with_capacity(stop.len());
                for inc in stop {
                    let v = self.verts.remove(&inc).expect("present");
                    by_id.insert(v.id.clone(), inc);
                    verts.insert(inc, v);
                }
                std::mem::forget(std::mem::replace(&mut self.verts, verts));
                std::mem::forget(std::mem::replace(&mut self.by_id, by_id));
            }
        }
        let gone: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(id, _)| {
                !new_ids.contains(&(id.kind.as_str(), id.name.as_str())) || replaced.contains(*id)
            })
            .map(|(_, inc)| *inc)
            .collect();
        // Everything goes (e.g. at shutdown): take the maps whole instead of entry by entry.
        let leaving: Vec<Box<Vertex>> = if gone.len() == self.verts.len() {
            self.by_id.clear();
            self.verts.drain().map(|(_, v)| v).collect()
        } else {
            gone.iter()
                .map(|inc| {
                    let v = self.verts.remove(inc).expect("present");
                    self.by_id.remove(&v.id);
                    v
                })
                .collect()
        };
        removals.reserve(leaving.len());
        for mut v in leaving {
            self.dec_count(v.state);
            if new_ids.contains(&(v.id.kind.as_str(), v.id.name.as_str())) {
                stats.changed += 1;
                carried.insert(v.id.clone(), v.take_carried());
            } else {
                stats.removed += 1;
            }
            v.flags.alive.store(false, Ordering::SeqCst);
            if let Some(d) = &v.driver {
                d.abort();
            }
            if v.running {
                self.running -= 1;
            }
            removals.push((v.id, v.res, v.driver.take(), v.check.take(), v.flags));
        }

        // Insert additions. With nothing to remove first (always so for the first graph),
        // each one starts at once: its driver (init, watch) runs on another worker while the
        // rest are inserted. A driver's messages wait until this swap is done, so no check
        // runs before the adjacency below is complete. Otherwise they start once the
        // removals are cleaned up.
        let start_now = removals.is_empty();
        let mut to_start = Vec::with_capacity(if start_now { 0 } else { built.len() });
        self.verts.reserve(built.len());
        self.by_id.reserve(built.len());
        for (idx, res, changed) in built {
            if !changed {
                stats.added += 1;
            }
            let inc = self.next_inc;
            self.next_inc += 1;
            let mut v = Vertex::new(graph.clone(), idx, res);
            if let Some(old) = carried.remove(&v.id) {
                v.carry_over(old);
            }
            self.by_id.insert(v.id.clone(), inc);
            self.counts[v.state as usize] += 1;
            self.verts.insert(inc, Box::new(v));
            if start_now {
                self.start(inc);
            } else {
                to_start.push(inc);
            }
        }

        // Rebuild the adjacency of the whole graph.
        for v in self.verts.values_mut() {
            v.preds.clear();
            v.succs.clear();
            v.notify_succs.clear();
        }
        let mut notify_pairs: HashSet<(ResId, ResId)> = HashSet::new();
        for e in &edges {
            let (Some(&f), Some(&t)) = (self.by_id.get(&e.from), self.by_id.get(&e.to)) else {
                continue;
            };
            let from = self.verts.get_mut(&f).expect("present");
            from.succs.push(t);
            if e.notify {
                from.notify_succs.push(t);
                notify_pairs.insert((e.from.clone(), e.to.clone()));
            }
            self.verts.get_mut(&t).expect("present").preds.push(f);
        }
        // Refresh flags survive on kept notify edges only.
        for v in self.verts.values_mut() {
            if v.refresh_from.is_empty() {
                continue;
            }
            let to = ResId::clone(&v.id);
            v.refresh_from
                .retain(|from| notify_pairs.contains(&(from.clone(), to.clone())));
        }
        // Restart failed watches on request.
        for &(inc, _) in &kept {
            let v = &self.verts[&inc];
            if v.watch_failed && v.spec().meta.rewatch && !v.hidden() {
                to_start.push(inc);
            }
        }

        self.generation += 1;
        // Every vertex's state may depend on new predecessors.
        self.touched.extend(self.verts.keys().copied());
        self.candidates.extend(self.verts.keys().copied());
        self.status_dirty = true;
        self.swapping = Some(PendingSwap {
            reply,
            started,
            stats,
            to_start,
        });

        if start_now {
            // Nothing to wait for: the additions are started; the rewatches start now.
            self.finish_swap();
            return;
        }
        let tx = self.tx.clone();
        let sink = self.sink.clone();
        tokio::spawn(async move {
            // Aborted drivers end at their next await point: wait for each in turn (cheap:
            // most are done by then), so that no watch outlives its removal.
            let mut rest = Vec::with_capacity(removals.len());
            for (id, res, driver, check, flags) in removals {
                if let Some(d) = driver {
                    let _ = d.await;
                }
                // Read once the driver is over: an init that just succeeded counts.
                rest.push((id, res, check, flags.inited.load(Ordering::SeqCst)));
            }
            // Then each vertex waits for its running check (never cut short) and is cleaned
            // up; cleanups that finish at once are not queued, the others run concurrently.
            let mut failed = Vec::new();
            let mut slow = futures::stream::FuturesUnordered::new();
            for (id, res, check, inited) in rest {
                let mut fut = Box::pin(async move {
                    if let Some(c) = check {
                        let _ = c.await;
                    }
                    if !inited {
                        return None;
                    }
                    match AssertUnwindSafe(res.cleanup()).catch_unwind().await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some((id, e.to_string())),
                        Err(p) => Some((id, panic_message(p))),
                    }
                });
                match futures::poll!(fut.as_mut()) {
                    std::task::Poll::Ready(r) => failed.extend(r),
                    std::task::Poll::Pending => slow.push(fut),
                }
            }
            while let Some(r) = futures::StreamExt::next(&mut slow).await {
                failed.extend(r);
            }
            for (id, error) in failed {
                Event::CleanupFailed { id, error }.emit(&sink);
            }
            let _ = tx.send(Msg::RemovalsDone);
        });
    }

    fn finish_swap(&mut self) {
        let Some(p) = self.swapping.take() else {
            return;
        };
        for inc in p.to_start {
            self.start(inc);
        }
        // Published before the reply, so that whoever awaited the swap sees its generation;
        // after the drivers are spawned, which meanwhile start on the other workers.
        self.republish = true;
        self.publish();
        let mut stats = p.stats;
        stats.duration = p.started.elapsed();
        Event::GraphSwapped {
            generation: self.generation,
            stats: stats.clone(),
        }
        .emit(&self.sink);
        if let Some(r) = p.reply {
            let _ = r.send(Ok(stats));
        }
        self.next_swap();
        self.maybe_shutdown_done();
    }

    /// Spawns a vertex's driver: init (unless done), then its watch or its poll timer.
    fn start(&mut self, inc: u64) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        self.touched.push(inc);
        self.candidates.push(inc);
        if v.hidden() {
            v.started = true;
            v.dirty = false;
            v.ever_ok = true;
            return;
        }
        let restart = v.started;
        v.started = true;
        if restart {
            // A rewatch: forget the watch failure, check again once the watch is up.
            v.watch_failed = false;
            v.watch_running = false;
            v.failed = None;
            v.dirty = true;
            v.retries_left = v.spec().meta.retry;
        }
        let skip_init = v.flags.inited.load(Ordering::SeqCst);
        let flags = v.flags.clone();
        let res = v.res.clone();
        let tx = self.tx.clone();
        let ctx = self.init_ctx.clone();
        let poll = v.spec().meta.poll;
        v.driver = Some(tokio::spawn(async move {
            if !skip_init {
                let out = AssertUnwindSafe(res.init(&ctx)).catch_unwind().await;
                let err = match out {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(p) => Some(panic_message(p)),
                };
                if let Some(error) = err {
                    let _ = tx.send(Msg::Failed {
                        inc,
                        phase: "init",
                        error,
                    });
                    return;
                }
                // No message: the coordinator only needs this at removal (cleanup is due)
                // and at a restart (init is not repeated), both after the driver is over.
                flags.inited.store(true, Ordering::SeqCst);
            }
            if poll != 0 {
                let _ = tx.send(Msg::Watch {
                    inc,
                    running: true,
                    dirty: false,
                });
                if poll < 0 {
                    return;
                }
                let period = Duration::from_secs(poll as u64);
                let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    iv.tick().await;
                    if tx
                        .send(Msg::Watch {
                            inc,
                            running: true,
                            dirty: true,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let (w, r) = Watcher::channel();
            // The watch runs inside this task: aborting the driver drops it.
            let mut h = AssertUnwindSafe(res.watch(w)).catch_unwind();
            loop {
                tokio::select! {
                    out = &mut h => {
                        let sig = r.take();
                        let msg = match out {
                            Ok(Ok(())) => Msg::Watch { inc, running: true, dirty: sig.dirty },
                            Ok(Err(e)) => Msg::Failed { inc, phase: "watch", error: e.to_string() },
                            Err(p) => Msg::Failed { inc, phase: "watch", error: panic_message(p) },
                        };
                        let _ = tx.send(msg);
                        return;
                    }
                    sig = r.next() => {
                        if tx.send(Msg::Watch { inc, running: sig.running, dirty: sig.dirty }).is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }

    fn on_watch(&mut self, inc: u64, running: bool, dirty: bool) {
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
            if v.failed.is_some() {
                v.failed = None;
                v.retries_left = v.spec().meta.retry;
            }
            v.dirty = true;
            self.candidates.push(inc);
            self.touched.push(inc);
        }
    }

    fn on_failed(&mut self, inc: u64, phase: &'static str, error: String) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        v.watch_failed = true;
        let error = format!("{phase}: {error}");
        v.failed = Some(error.clone());
        v.status.last_error = Some(error.clone());
        v.status_changed = true;
        Event::VertexFailed {
            id: v.id.clone(),
            phase,
            error,
        }
        .emit(&self.sink);
        self.touched.push(inc);
    }

    fn on_check_done(
        &mut self,
        inc: u64,
        result: Result<Checked, String>,
        duration: Duration,
        apply: bool,
        refresh: bool,
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
                if c == Checked::Changed {
                    v.status.changes += 1;
                    v.status.last_change = Some(now);
                }
                let propagate =
                    std::mem::take(&mut v.upstream_inflight) || result == CheckResult::Changed;
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
            }
            Err(error) => {
                v.refresh_from.extend(v.refresh_inflight.drain(..));
                v.upstream_changed |= std::mem::take(&mut v.upstream_inflight);
                v.status.last_error = Some(error.clone());
                let retry = v.retries_left != 0;
                Event::CheckFailed {
                    id: v.id.clone(),
                    error: error.clone(),
                    duration,
                    retry,
                }
                .emit(&self.sink);
                if retry {
                    if v.retries_left > 0 {
                        v.retries_left -= 1;
                    }
                    v.retry_wait = true;
                    v.dirty = true;
                    let tx = self.tx.clone();
                    let delay = Duration::from_millis(v.spec().meta.delay);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Msg::RetryReady(inc));
                    });
                } else {
                    v.failed = Some(error.clone());
                    v.dirty = false;
                    Event::VertexFailed {
                        id: v.id.clone(),
                        phase: "check_apply",
                        error,
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
    fn mark_successors_dirty(&mut self, start: &[u64]) {
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

    /// Dispatches every candidate that may run now.
    fn schedule(&mut self) {
        // Those already waiting for a slot go first.
        while self.running < self.parallel {
            let Some(inc) = self.ready.pop_front() else {
                break;
            };
            if let Some(v) = self.verts.get_mut(&inc) {
                v.queued = false;
            }
            self.try_dispatch(inc);
        }
        let mut cands = std::mem::take(&mut self.candidates);
        cands.sort_unstable();
        cands.dedup();
        for inc in cands {
            self.try_dispatch(inc);
        }
    }

    fn try_dispatch(&mut self, inc: u64) {
        let Some(v) = self.verts.get(&inc) else {
            return;
        };
        if !v.started
            || v.hidden()
            || !v.watch_running
            || !v.dirty
            || v.running
            || v.failed.is_some()
            || v.retry_wait
            || v.limit_wait
        {
            return;
        }
        if v.queued || !v.preds.iter().all(|p| self.verts[p].is_converged()) {
            return;
        }
        let full = self.running >= self.parallel;
        let v = self.verts.get_mut(&inc).expect("present");
        if full {
            // Started when a slot frees up (see `schedule`).
            v.queued = true;
            self.ready.push_back(inc);
            return;
        }
        if let Some(b) = &mut v.bucket {
            if let Err(wait) = b.take() {
                v.limit_wait = true;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Msg::LimitReady(inc));
                });
                return;
            }
        }
        v.running = true;
        v.dirty = false;
        v.upstream_inflight = std::mem::take(&mut v.upstream_changed);
        let refresh = !v.refresh_from.is_empty();
        v.refresh_inflight = v.refresh_from.drain().collect();
        let apply = !(self.noop || v.spec().meta.noop);
        let timeout = v.spec().meta.timeout;
        let mut names: Vec<(String, usize)> = v
            .spec()
            .meta
            .sema
            .iter()
            .filter_map(|s| parse_sema(s).ok())
            .collect();
        names.sort();
        names.dedup_by(|a, b| a.0 == b.0);
        let semas: Vec<Arc<Semaphore>> = names
            .into_iter()
            .map(|(name, n)| {
                self.semas
                    .entry(name)
                    .or_insert_with(|| Arc::new(Semaphore::new(n)))
                    .clone()
            })
            .collect();
        let res = v.res.clone();
        let tx = self.tx.clone();
        let mut cancel = self.cancel_tx.subscribe();
        let flags = v.flags.clone();
        self.running += 1;
        self.touched.push(inc);
        v.check = Some(tokio::spawn(async move {
            let mut cancelled = std::pin::pin!(async move {
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            let acquire = async {
                let mut permits = Vec::with_capacity(semas.len() + 1);
                for s in semas {
                    permits.push(s.acquire_owned().await);
                }
                permits
            };
            // Biased, the cancellation polled last: a check that finishes in its first poll
            // (most do) never registers with the shared cancellation channel.
            let permits = tokio::select! {
                biased;
                p = acquire => p,
                () = &mut cancelled => {
                    let _ = tx.send(Msg::CheckDone {
                        inc,
                        result: Err("cancelled".to_string()),
                        duration: Duration::ZERO,
                        apply,
                        refresh,
                    });
                    return;
                }
            };
            if !flags.alive.load(Ordering::SeqCst) {
                // Removed from the graph while queued: never start.
                return;
            }
            let start = Instant::now();
            // check_apply runs inside this task; a timeout or a cancellation drops it.
            let call =
                AssertUnwindSafe(res.check_apply(CheckCtx { apply, refresh })).catch_unwind();
            let run = async {
                let joined = if timeout > 0 {
                    match tokio::time::timeout(Duration::from_millis(timeout), call).await {
                        Ok(j) => j,
                        Err(_) => return Err(format!("timed out after {timeout} ms")),
                    }
                } else {
                    call.await
                };
                match joined {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(p) => Err(panic_message(p)),
                }
            };
            let result = tokio::select! {
                biased;
                r = run => r,
                () = &mut cancelled => Err("cancelled".to_string()),
            };
            drop(permits);
            let _ = tx.send(Msg::CheckDone {
                inc,
                result,
                duration: start.elapsed(),
                apply,
                refresh,
            });
        }));
    }

    fn dec_count(&mut self, s: VertexState) {
        let n = &mut self.counts[s as usize];
        *n = n.saturating_sub(1);
    }

    fn compute_state(&self, v: &Vertex) -> VertexState {
        if v.failed.is_some() {
            VertexState::Failed
        } else if v.preds.iter().any(|p| {
            matches!(
                self.verts[p].state,
                VertexState::Failed | VertexState::Blocked
            )
        }) {
            VertexState::Blocked
        } else if v.is_converged() {
            VertexState::Converged
        } else if !v.ever_ok {
            VertexState::Pending
        } else {
            VertexState::Dirty
        }
    }

    /// Recomputes the state of touched vertices (propagating failed/blocked to descendants)
    /// and publishes the status if anything changed.
    fn publish(&mut self) {
        let mut work = std::mem::take(&mut self.touched);
        let touched_any = !work.is_empty();
        let mut changed = std::mem::take(&mut self.pending_status);
        while let Some(inc) = work.pop() {
            let Some(v) = self.verts.get(&inc) else {
                continue;
            };
            let new = self.compute_state(v);
            let old = v.state;
            if new == old && !v.status_changed {
                continue;
            }
            changed.insert(inc);
            self.verts.get_mut(&inc).expect("present").status_changed = false;
            if new != old {
                self.dec_count(old);
                self.counts[new as usize] += 1;
                let v = self.verts.get_mut(&inc).expect("present");
                v.state = new;
                v.status.state = new;
                let blockish = |s| matches!(s, VertexState::Failed | VertexState::Blocked);
                if blockish(old) || blockish(new) {
                    work.extend(v.succs.iter().copied());
                }
            }
        }
        if changed.is_empty() && !touched_any && !self.status_dirty && !self.republish {
            return;
        }
        let count = |s: VertexState| self.counts[s as usize];
        let converged = self.generation > 0
            && self.swapping.is_none()
            && self.swap_queue.is_empty()
            && self.running == 0
            && count(VertexState::Pending) == 0
            && count(VertexState::Dirty) == 0;
        // Convergence flips and new generations are published at once; progress in between
        // at most every PUBLISH_INTERVAL, so a watcher cloning the status is not swamped.
        let urgent = converged != self.converged
            || self.generation != self.published_generation
            || self.status_dirty;
        let now = Instant::now();
        if !urgent && now < self.last_publish + PUBLISH_INTERVAL {
            self.pending_status = changed;
            if !self.publish_armed {
                self.publish_armed = true;
                let tx = self.tx.clone();
                let at = self.last_publish + PUBLISH_INTERVAL;
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.send(Msg::Publish);
                });
            }
            return;
        }
        self.republish = false;
        self.last_publish = now;
        self.published_generation = self.generation;
        let full = std::mem::replace(&mut self.status_dirty, false);
        let verts = &self.verts;
        let counts: std::collections::BTreeMap<VertexState, usize> =
            VertexState::ALL.iter().map(|s| (*s, count(*s))).collect();
        let generation = self.generation;
        // Emit first, so the metrics agree with the status as soon as a watcher sees it.
        if converged != self.converged {
            self.converged = converged;
            Event::Converged {
                generation,
                converged,
            }
            .emit(&self.sink);
        }
        self.status_tx.send_modify(|s| {
            s.generation = generation;
            s.converged = converged;
            s.total = verts.len();
            s.counts = counts;
            if full {
                s.vertices = verts
                    .values()
                    .map(|v| (v.id.clone(), v.status.clone()))
                    .collect();
            } else {
                for inc in &changed {
                    if let Some(v) = verts.get(inc) {
                        match s.vertices.get_mut(&v.id) {
                            Some(e) => e.clone_from(&v.status),
                            None => {
                                s.vertices.insert(v.id.clone(), v.status.clone());
                            }
                        }
                    }
                }
            }
        });
    }
}
