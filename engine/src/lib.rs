//! The resource engine: the [`Resource`] contract, the kind [`Registry`], and the executor
//! that converges a host onto a graph and keeps it there.
//!
//! The executor ([`Engine`]) is event-driven: a resource is checked only when it may be out of
//! state (first run, drift reported by its watch, a refresh on a notify edge, a new spec), after
//! every resource it depends on is converged, in parallel with independent ones. A new graph is
//! swapped in by diff; startup is a swap from the empty graph. [`Engine::status`] publishes the
//! per-vertex states, [`Engine::events`] and [`Engine::metrics`] what happened.
//!
//! **`engine` knows no concrete resource kind and no store**: kinds come in through the
//! [`Registry`], the cluster only through the World traits of `tend-model`. The data model
//! it runs (`ResSpec`, `GraphSpec`, ...) is `tend-model`'s.

pub mod events;
pub mod executor;
pub mod export;
pub mod graph;
pub mod metrics;
pub mod registry;
pub mod resource;
pub mod status;

pub use events::Event;
pub use executor::{
    check_graph, check_partial, default_parallel, Engine, EngineConfig, GraphDiff, Prepared,
    RunningGraph, SwapStats,
};
pub use metrics::{CheckResult, Histogram, MetricsSnapshot};
pub use registry::{AutoEdgeFn, AutoEdgeSink, AutoEdges, Constructor, Kind, Registry, ReverseFn};
pub use resource::{
    CheckCtx, Checked, InitCtx, ResError, Resource, WatchReceiver, WatchSignal, Watcher, WorldSlot,
};
pub use status::{Status, VertexState, VertexStatus};
