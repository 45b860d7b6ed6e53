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

/// A dependency edge `from -> to`; with `notify`, a change of `from` refreshes `to`; with
/// `send`, values of `from` are copied into params of `to` after `from` ran (send/recv).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeSpec {
    /// The resource that runs first.
    pub from: ResId,
    /// The resource that depends on it.
    pub to: ResId,
    /// Carry a refresh when `from` changed something.
    pub notify: bool,
    /// The values the edge carries, sorted, at most one per receiving param.
    pub send: Vec<SendRecv>,
}

impl EdgeSpec {
    /// A plain dependency edge (with a refresh when `notify`), carrying no value.
    pub fn new(from: ResId, to: ResId, notify: bool) -> Self {
        EdgeSpec {
            from,
            to,
            notify,
            send: Vec::new(),
        }
    }

    /// Adds a send/recv pair (builder style), keeping `send` sorted and without duplicates.
    pub fn sending(mut self, send: impl Into<String>, recv: impl Into<String>) -> Self {
        let sr = SendRecv {
            send: send.into(),
            recv: recv.into(),
        };
        if let Err(at) = self.send.binary_search(&sr) {
            self.send.insert(at, sr);
        }
        self
    }
}

/// One value carried by an edge: the sender's sent value `send` becomes the receiver's param
/// `recv` (spec/mcl.md §8.3, `Kind1[a].send -> Kind2[b].recv`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendRecv {
    /// The field the sender sends (one of its kind's `KindSchema::sends`).
    pub send: String,
    /// The receiver's param it overrides.
    pub recv: String,
}

impl fmt::Display for SendRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.send, self.recv)
    }
}

/// A resource graph as data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphSpec {
    /// The vertices.
    pub resources: Vec<ResSpec>,
    /// The edges.
    pub edges: Vec<EdgeSpec>,
}
