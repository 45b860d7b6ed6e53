//! The kinds the engine can run, as a table from kind name to schema and constructor.
//!
//! The engine knows no concrete kind: the `resources` crate fills a [`Registry`] and the binary
//! hands it to the engine and to the language.

use std::collections::BTreeMap;

use crate::resource::{ResError, Resource};
use tend_model::{KindSchema, ResSpec};

/// Builds a resource from its spec. Validates the params (beyond the schema's type checks) and
/// has no side effects on the host.
pub type Constructor = fn(&ResSpec) -> Result<Box<dyn Resource>, ResError>;

/// Receives what a resource offers to and needs from others, for automatic edges: an edge
/// is added from every resource that provides a key to every resource that requires it.
/// Keys are lent, not given: a kind builds them in a reused buffer.
pub trait AutoEdgeSink {
    /// This resource provides `key` (e.g. `file:/etc/app/`).
    fn provides(&mut self, key: &str);
    /// This resource depends on whatever provides `key` (e.g. its parent directories).
    fn requires(&mut self, key: &str);
}

/// A resource's automatic-edge keys, collected (for tests and tools).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoEdges {
    /// Keys this resource provides.
    pub provides: Vec<String>,
    /// Keys this resource depends on.
    pub requires: Vec<String>,
}

impl AutoEdges {
    /// Collects what `f` says of `spec`.
    pub fn of(f: AutoEdgeFn, spec: &ResSpec) -> AutoEdges {
        let mut out = AutoEdges::default();
        f(spec, &mut out);
        out
    }
}

impl AutoEdgeSink for AutoEdges {
    fn provides(&mut self, key: &str) {
        self.provides.push(key.to_string());
    }
    fn requires(&mut self, key: &str) {
        self.requires.push(key.to_string());
    }
}

/// Tells `sink` a resource's automatic-edge keys, from its spec.
pub type AutoEdgeFn = fn(&ResSpec, &mut dyn AutoEdgeSink);

/// One registered kind.
#[derive(Clone)]
pub struct Kind {
    /// Field names, types, defaults.
    pub schema: KindSchema,
    /// Builds an instance.
    pub build: Constructor,
    /// Automatic edges, if the kind has any.
    pub autoedges: Option<AutoEdgeFn>,
    /// Releases process-wide state of the kind when the process is about to exit
    /// ([`crate::Engine::shutdown_for_exit`] calls it before stopping anything), if it holds
    /// any whose release the exit would otherwise wait for.
    pub at_exit: Option<fn()>,
    /// How to undo a resource of this kind (`Meta:reverse`), if the kind can; without it
    /// the check refuses `Meta:reverse`. Its schema's `reversible` is set from it.
    pub reverse: Option<ReverseFn>,
}

/// Observes the host and says how to undo a resource (`Meta:reverse`): the spec of a resource
/// of the same identity that puts back what the resource is about to change, as found now
/// (mgmt's `Reversible`). Called once, before the resource first runs, on a blocking thread;
/// the engine keeps the answer under the state directory and applies it when the resource
/// leaves the graph.
pub type ReverseFn = fn(&ResSpec) -> Result<ResSpec, ResError>;

/// Kind name -> [`Kind`].
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Kind>,
    /// The kinds' schemas again, by kind, for front ends (lent, not copied).
    schemas: BTreeMap<String, KindSchema>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a kind (replacing any kind of the same name).
    pub fn register(&mut self, mut kind: Kind) {
        kind.schema.reversible = kind.reverse.is_some();
        self.schemas
            .insert(kind.schema.kind.clone(), kind.schema.clone());
        self.kinds.insert(kind.schema.kind.clone(), kind);
    }

    /// Looks a kind up.
    pub fn get(&self, kind: &str) -> Option<&Kind> {
        self.kinds.get(kind)
    }

    /// All kinds, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Kind> {
        self.kinds.values()
    }

    /// All schemas, by kind name (what front ends convert values with and the language
    /// type-checks against).
    pub fn schemas(&self) -> &BTreeMap<String, KindSchema> {
        &self.schemas
    }
}
