//! tend's data model, shared by every other crate and depending on none of them.
//!
//! - [`Value`]: the one value type of mcl and of resource parameters.
//! - [`ResSpec`], [`GraphSpec`], [`EdgeSpec`], [`ResId`]: resource graphs as plain data.
//! - [`Meta`] and [`META`]: the meta parameters, declared once in one table from which
//!   parsing, the language's types, rendering and the export codec are derived.
//! - [`KindSchema`], [`Field`], [`Type`]: what a kind accepts, and the one check of a param
//!   against it ([`KindSchema::check_param`]).
//! - [`GraphError`]: a problem found in a graph, for front ends to locate in their source.
//! - [`json`]: `Value` <-> JSON at the edges; [`export`]: the payload of an exported resource.
//! - [`world`]: the World traits (what hosts share) and their records and errors.
//! - [`values`]: the table of `value` resources' values on this host, for `value.get*`.
//! - [`secrets`]: the secrets this process read, and their redaction wherever values are shown.
//!
//! Nothing here does I/O, and nothing here knows a concrete kind, a store or the language.

pub mod error;
pub mod export;
pub mod json;
pub mod meta;
pub mod schema;
pub mod secrets;
pub mod spec;
pub mod value;
pub mod values;
pub mod world;

pub use error::{ErrorKind, GraphError};
pub use meta::{meta_param, parse_sema, Backoff, Meta, MetaError, MetaParam, META};
pub use schema::{check_field, Constant, Field, KindSchema, SchemaError, Type};
pub use spec::{EdgeSpec, GraphSpec, Params, ResId, ResSpec, SendRecv};
pub use value::Value;
