//! The resource engine: the data model ([`Value`], [`ResSpec`], [`GraphSpec`]), the
//! [`Resource`] contract, the kind [`Registry`], and the executor that converges a host onto a
//! graph and keeps it there.
//!
//! **`engine` knows no concrete resource kind and no store**: kinds come in through the
//! [`Registry`], the cluster only through the World traits of `tend-world`.

pub mod events;
pub mod executor;
pub mod graph;
pub mod metrics;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod spec;
pub mod status;
pub mod value;

pub use events::Event;
pub use executor::{Engine, EngineConfig, SwapStats};
pub use graph::GraphError;
pub use metrics::{CheckResult, Histogram, MetricsSnapshot};
pub use registry::{AutoEdges, Kind, Registry, ValidateError};
pub use resource::{
    CheckCtx, Checked, InitCtx, ResError, Resource, WatchReceiver, WatchSignal, Watcher,
};
pub use schema::{Field, KindSchema, SchemaError, Type};
pub use spec::{EdgeSpec, GraphSpec, Meta, MetaError, ResId, ResSpec};
pub use status::{Status, VertexState, VertexStatus};
pub use value::Value;
