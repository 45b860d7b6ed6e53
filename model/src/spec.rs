//! Resource graphs as plain data: [`ResSpec`], [`Meta`], [`GraphSpec`], [`EdgeSpec`].
//!
//! A front end (YAML, mcl) produces a [`GraphSpec`]; the executor diffs it against the running
//! graph. Two specs are *the same resource* when kind, name, params and meta are all equal.

use std::fmt;

use crate::meta::Meta;
use crate::value::Value;

/// The identity of a resource: `kind[name]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResId {
    /// Resource kind, e.g. `file`.
    pub kind: String,
    /// Resource name, e.g. `/etc/motd`.
    pub name: String,
}

impl ResId {
    /// Builds an identity.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ResId {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.name)
    }
}

/// A resource's parameters, by name, in name order. A sorted vector rather than a B-tree:
/// resources have a handful of parameters, and a graph of 10,000 resources held 6 MB of
/// mostly empty B-tree nodes.
pub type Params = litemap::LiteMap<String, Value>;

/// One resource as data.
#[derive(Clone, Debug, PartialEq)]
pub struct ResSpec {
    /// Resource kind.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Parameters set by the program (fields not mentioned keep the kind's defaults).
    pub params: Params,
    /// Meta parameters.
    pub meta: Meta,
}

impl ResSpec {
    /// A resource with no params and default meta.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ResSpec {
            kind: kind.into(),
            name: name.into(),
            params: Params::new(),
            meta: Meta::default(),
        }
    }

    /// Adds a parameter (builder style).
    pub fn param(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// The identity `kind[name]`.
    pub fn id(&self) -> ResId {
        ResId::new(self.kind.clone(), self.name.clone())
    }
}

/// A dependency edge `from -> to`; with `notify`, a change of `from` refreshes `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeSpec {
    /// The resource that runs first.
    pub from: ResId,
    /// The resource that depends on it.
    pub to: ResId,
    /// Carry a refresh when `from` changed something.
    pub notify: bool,
}

/// A resource graph as data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphSpec {
    /// The vertices.
    pub resources: Vec<ResSpec>,
    /// The edges.
    pub edges: Vec<EdgeSpec>,
}
