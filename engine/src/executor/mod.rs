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

mod coord;
mod diff;
mod dispatch;
mod publish;
mod reverse;
mod sendrecv;
mod swap;
mod vertex;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::{HashSet, HashSetExt};
use tend_model::{EdgeSpec, GraphError, GraphSpec, ResId, ResSpec};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::events::{Event, EventSink};
use crate::graph::analyze;
use crate::metrics::MetricsSnapshot;
use crate::registry::Registry;
use crate::resource::{Checked, Resource};
use crate::status::{Status, VertexState};

use coord::Coord;
pub use diff::GraphDiff;

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
/// every error found. This is the one check of a graph ([`Engine::prepare`] runs it too):
/// front ends only read their source into a [`GraphSpec`] and locate these errors in it.
pub fn check_graph(registry: &Registry, g: &GraphSpec) -> Result<(), Vec<GraphError>> {
    check_partial(registry, g, &|_| true)
}

/// [`check_graph`] for a graph a front end could only read in part (it found mistakes of its
/// own): resources for which `complete` is false are checked without their constructor, which
/// would complain about what was not read.
pub fn check_partial(
    registry: &Registry,
    g: &GraphSpec,
    complete: &(dyn Fn(&ResSpec) -> bool + Sync),
) -> Result<(), Vec<GraphError>> {
    match split_hidden_twins(g) {
        Some((g, _)) => analyze(registry, &g, complete).map(drop),
        None => analyze(registry, g, complete).map(drop),
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
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// This host's name (handed to resources in [`InitCtx`]).
    pub hostname: String,
    /// The daemon's state directory (handed to resources in [`InitCtx`]).
    pub state_dir: PathBuf,
    /// Maximum concurrent `check_apply` runs; 0 = [`default_parallel`].
    pub parallel: usize,
    /// Global noop: check and report, change nothing.
    pub noop: bool,
    /// The waits between the retries of a resource that retries forever without a fixed
    /// delay (the default meta parameters): 1 s doubling to 5 min unless set otherwise.
    pub backoff: tend_model::Backoff,
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

pub(crate) type SwapReply = oneshot::Sender<Result<SwapStats, Vec<GraphError>>>;

pub(crate) enum Msg {
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
    /// From a driver: `epoch` numbers the drivers of a vertex (a vertex whose resource is
    /// built again for received values gets a new driver), so an old driver's word is ignored.
    Watch {
        inc: u64,
        epoch: u32,
        running: bool,
        dirty: bool,
    },
    Failed {
        inc: u64,
        epoch: u32,
        phase: &'static str,
        error: String,
    },
    CheckDone {
        inc: u64,
        result: Result<Checked, String>,
        duration: Duration,
        apply: bool,
        refresh: bool,
        /// What the resource sends (send/recv), read after a successful check.
        sent: Vec<(String, tend_model::Value)>,
    },
    /// A retry's wait is over (the vertex and the number of the wait).
    RetryReady(u64, u64),
    /// A failed init or watch is to be tried again (the vertex and the number of the wait).
    Restart(u64, u64),
    LimitReady(u64),
    /// The record of an applied reversal is deleted.
    ReversalDeleted(u64),
    /// Time to publish a throttled status.
    Publish,
}

pub(crate) fn stopped_error() -> Vec<GraphError> {
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
        let world_slot = crate::resource::WorldSlot::default();
        let shut_down = Arc::new(AtomicBool::new(false));
        let coord = Coord::new(
            &cfg,
            world_slot.clone(),
            registry.clone(),
            tx.clone(),
            status_tx,
            sink.clone(),
            shut_down.clone(),
        );
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

    /// Hands the World (shared strings, the scheduler) to resources (their `InitCtx::world`).
    /// Resources initialised before this call do not see it: call it before the first swap.
    pub fn set_world(&self, world: Arc<dyn tend_model::world::ResourceWorld>) {
        self.inner.world.set(world);
    }

    /// The kinds this engine runs.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
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
        let a = analyze(&self.inner.registry, &graph, &|_| true)?;
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
