//! What the engine tells the outside about the graph it runs: [`Status`] per generation, with a
//! [`VertexStatus`] per resource.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tend_model::ResId;

/// The state of one vertex, kept from events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VertexState {
    /// Never checked yet (waiting for its watch, its dependencies, or its first check).
    Pending,
    /// Its last check succeeded and nothing has happened since.
    Converged,
    /// It may be out of state: a check is queued, running, or waiting for a retry.
    Dirty,
    /// It failed: it retries forever (the default) and waits for its next retry, or its
    /// retries are exhausted and it waits for a spec change or a drift event (either of which
    /// also cuts a retry's wait short).
    Failed,
    /// A resource it depends on (directly or not) failed, so it cannot run.
    Blocked,
}

impl VertexState {
    /// The lower-case name (`pending`, `converged`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VertexState::Pending => "pending",
            VertexState::Converged => "converged",
            VertexState::Dirty => "dirty",
            VertexState::Failed => "failed",
            VertexState::Blocked => "blocked",
        }
    }

    /// Every state, in order.
    pub const ALL: [VertexState; 5] = [
        VertexState::Pending,
        VertexState::Converged,
        VertexState::Dirty,
        VertexState::Failed,
        VertexState::Blocked,
    ];
}

impl fmt::Display for VertexState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine knows about one vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VertexStatus {
    /// Its state.
    pub state: VertexState,
    /// When its last `check_apply` finished.
    pub last_check: Option<SystemTime>,
    /// When its last `check_apply` changed something (or would have, in noop mode).
    pub last_change: Option<SystemTime>,
    /// The last error (cleared by a successful check).
    pub last_error: Option<String>,
    /// `check_apply` runs finished (any result).
    pub checks: u64,
    /// `check_apply` runs that changed something (or would have, in noop mode).
    pub changes: u64,
    /// Its last check was a dry run (noop) that found it out of state: it would change.
    pub would_change: bool,
}

impl Default for VertexStatus {
    fn default() -> Self {
        VertexStatus {
            state: VertexState::Pending,
            last_check: None,
            last_change: None,
            last_error: None,
            checks: 0,
            changes: 0,
            would_change: false,
        }
    }
}

/// The state of the running graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The number of graph swaps started so far (0 before the first one).
    pub generation: u64,
    /// Every vertex is converged, failed or blocked, and no check is running or queued.
    /// Always `false` before the first swap.
    pub converged: bool,
    /// Vertices in the graph.
    pub total: usize,
    /// Vertices per state (every state is present, possibly with 0).
    pub counts: BTreeMap<VertexState, usize>,
    /// Per-vertex details (unordered: sort the ids to show them). Keyed by the engine's own
    /// shared identities; look up with a `&ResId`.
    pub vertices: foldhash::HashMap<Arc<ResId>, VertexStatus>,
}

impl Status {
    /// The number of vertices in `state`.
    pub fn count(&self, state: VertexState) -> usize {
        self.counts.get(&state).copied().unwrap_or(0)
    }

    /// Every vertex with its details, in identity order.
    pub fn sorted(&self) -> Vec<(&ResId, &VertexStatus)> {
        sorted(self.vertices.iter().map(|(k, v)| (&**k, v)))
    }

    /// The vertices in one of `states`, in identity order.
    pub fn sorted_in(&self, states: &[VertexState]) -> Vec<(&ResId, &VertexStatus)> {
        sorted(
            self.vertices
                .iter()
                .map(|(k, v)| (&**k, v))
                .filter(|(_, v)| states.contains(&v.state)),
        )
    }

    /// The vertices whose last check was a dry run that found them out of state (they are
    /// converged: nothing more is to be done in noop mode).
    pub fn would_change(&self) -> usize {
        self.vertices
            .values()
            .filter(|v| v.would_change && v.state == VertexState::Converged)
            .count()
    }

    /// Whether any vertex failed.
    pub fn any_failed(&self) -> bool {
        self.count(VertexState::Failed) > 0
    }
}

fn sorted<'a>(
    it: impl Iterator<Item = (&'a ResId, &'a VertexStatus)>,
) -> Vec<(&'a ResId, &'a VertexStatus)> {
    let mut v: Vec<_> = it.collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}
