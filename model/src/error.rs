//! [`GraphError`]: one problem found in a graph, as the engine's check reports it and front
//! ends locate it in their source.

use std::fmt;

use crate::spec::ResId;

/// Which check found a [`GraphError`]: front ends word and locate them by it (a param at
/// its field, a constructor's refusal at its resource, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The resource's kind is not registered.
    UnknownKind,
    /// A param does not fit its kind's schema (unknown field, type, range, allowed values).
    Param,
    /// A combination of meta parameters is refused ([`crate::Meta::validate`]).
    Meta,
    /// The kind's constructor refused the spec.
    Build,
    /// The graph as a whole: duplicates, edges to missing resources, cycles.
    Graph,
}

/// One problem found in a graph. Displays as
/// `file[/tmp/x]: field `mode`: expected str, got 5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// Which check found it.
    pub kind: ErrorKind,
    /// The resource involved, if the problem is about one.
    pub res: Option<ResId>,
    /// The field (param, or `Meta:<name>` for a meta parameter) involved, if any.
    pub field: Option<String>,
    /// What is wrong, as a short lower-case phrase.
    pub message: String,
}

impl GraphError {
    /// An error about a whole graph (no resource, no field).
    pub fn graph(message: impl Into<String>) -> Self {
        GraphError {
            kind: ErrorKind::Graph,
            res: None,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one resource, and one of its fields if `field` is set.
    pub fn res(
        kind: ErrorKind,
        res: &ResId,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        GraphError {
            kind,
            res: Some(res.clone()),
            field,
            message: message.into(),
        }
    }

    /// The meta parameter involved, when the field is `Meta:<name>`.
    pub fn meta_param(&self) -> Option<&str> {
        self.field.as_deref()?.strip_prefix("Meta:")
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.res {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for GraphError {}
