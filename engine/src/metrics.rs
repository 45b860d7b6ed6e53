//! Counters and histograms the engine keeps, as plain data ([`MetricsSnapshot`]). Rendering
//! (Prometheus text) happens at the edge, in the binary.

use std::collections::BTreeMap;
use std::time::Duration;

/// The result label of a `check_apply` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckResult {
    /// Already in state.
    InState,
    /// Changed something.
    Changed,
    /// Returned an error, timed out, panicked or was cancelled.
    Failed,
    /// Would have changed something, but ran in noop mode.
    Noop,
}

impl CheckResult {
    /// The label value: `in_state`, `changed`, `failed` or `noop`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::InState => "in_state",
            CheckResult::Changed => "changed",
            CheckResult::Failed => "failed",
            CheckResult::Noop => "noop",
        }
    }
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bounds (seconds) of the histogram buckets, Prometheus style (`+Inf` is implicit).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A duration histogram in seconds with cumulative buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `(upper bound, observations <= bound)`, cumulative, for each bound of [`BUCKETS`].
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, in seconds.
    pub sum: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: BUCKETS.iter().map(|b| (*b, 0)).collect(),
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, n) in &mut self.buckets {
            if s <= *bound {
                *n += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }
}

/// Everything the engine counts, at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// `check_apply` runs by `(kind, result)`.
    pub check_apply_total: BTreeMap<(String, CheckResult), u64>,
    /// `check_apply` durations by kind.
    pub check_apply_duration_seconds: BTreeMap<String, Histogram>,
    /// Graph swaps completed.
    pub graph_swaps_total: u64,
    /// Graph swap durations.
    pub graph_swap_duration_seconds: Histogram,
    /// Drift events (watch events on a running vertex) by kind.
    pub drift_events_total: BTreeMap<String, u64>,
    /// Vertices that failed (retries exhausted, init or watch failure), by kind.
    pub failures_total: BTreeMap<String, u64>,
    /// Refreshes sent along notify edges.
    pub refreshes_total: u64,
    /// Whether the graph is converged (0/1 as a gauge).
    pub converged: bool,
}
