//! Internal events: everything notable the engine does. `Event::emit` logs the event (tracing
//! key/value pairs, the error field is always `error`), counts it in the metrics, and broadcasts
//! it to [`crate::Engine::events`] subscribers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::executor::SwapStats;
use crate::metrics::{CheckResult, MetricsSnapshot};
use tend_model::ResId;

/// One internal event. Identities are the engine's own, shared (no copy per event).
#[derive(Clone, Debug)]
pub enum Event {
    /// A graph swap finished (removals cleaned up, additions started).
    GraphSwapped {
        /// The new generation.
        generation: u64,
        /// What changed.
        stats: SwapStats,
    },
    /// A running watch reported that a resource may have drifted.
    Drift {
        /// The resource.
        id: Arc<ResId>,
    },
    /// A `check_apply` run succeeded.
    CheckApplied {
        /// The resource.
        id: Arc<ResId>,
        /// `InState`, `Changed` or `Noop`.
        result: CheckResult,
        /// How long `check_apply` took.
        duration: Duration,
        /// Whether it ran with a refresh.
        refresh: bool,
    },
    /// A `check_apply` run failed (error, timeout, panic, cancellation).
    CheckFailed {
        /// The resource.
        id: Arc<ResId>,
        /// Why.
        error: String,
        /// How long it took.
        duration: Duration,
        /// When it is retried, if it is (otherwise the vertex is now failed for good).
        retry_in: Option<Duration>,
    },
    /// A vertex became failed: its retries are exhausted (it stays failed until its spec
    /// changes or a drift event arrives), or it retries forever and failed for the first time
    /// since it last succeeded (it is retried after `retry_in`).
    VertexFailed {
        /// The resource.
        id: Arc<ResId>,
        /// `init`, `watch` or `check_apply`.
        phase: &'static str,
        /// Why.
        error: String,
        /// When it is tried again, if it is.
        retry_in: Option<Duration>,
    },
    /// A refresh was sent along a notify edge.
    Refresh {
        /// The upstream resource that changed.
        from: Arc<ResId>,
        /// The downstream resource that will be refreshed.
        to: Arc<ResId>,
    },
    /// A removed resource's cleanup failed.
    CleanupFailed {
        /// The resource.
        id: Arc<ResId>,
        /// Why.
        error: String,
    },
    /// The graph became converged, or stopped being so.
    Converged {
        /// The current generation.
        generation: u64,
        /// The new value.
        converged: bool,
    },
}

/// Where events go: the metrics and the broadcast channel.
#[derive(Clone)]
pub(crate) struct EventSink {
    pub(crate) metrics: Arc<Mutex<MetricsSnapshot>>,
    pub(crate) tx: broadcast::Sender<Event>,
}

impl Event {
    /// Logs, counts and broadcasts the event.
    pub(crate) fn emit(self, sink: &EventSink) {
        let mut m = sink.metrics.lock().unwrap_or_else(|e| e.into_inner());
        match &self {
            Event::GraphSwapped { generation, stats } => {
                tracing::info!(
                    generation,
                    added = stats.added,
                    removed = stats.removed,
                    changed = stats.changed,
                    kept = stats.kept,
                    duration_ms = stats.duration.as_secs_f64() * 1e3,
                    "graph swapped"
                );
                m.graph_swaps_total += 1;
                m.graph_swap_duration_seconds.observe(stats.duration);
            }
            Event::Drift { id } => {
                tracing::debug!(resource = %id, "drift");
                *m.drift_events_total.entry(id.kind.clone()).or_default() += 1;
            }
            Event::CheckApplied {
                id,
                result,
                duration,
                refresh,
            } => {
                let ms = duration.as_secs_f64() * 1e3;
                match result {
                    CheckResult::Changed => {
                        tracing::info!(resource = %id, refresh, duration_ms = ms, "changed")
                    }
                    CheckResult::Noop => {
                        tracing::info!(resource = %id, refresh, duration_ms = ms, "would change (noop)")
                    }
                    _ => tracing::debug!(resource = %id, refresh, duration_ms = ms, "in state"),
                }
                count_check(&mut m, &id.kind, *result, *duration);
            }
            Event::CheckFailed {
                id,
                error,
                duration,
                retry_in,
            } => {
                match retry_in {
                    Some(d) => {
                        tracing::warn!(resource = %id, error = %error, retry_in_ms = d.as_millis() as u64, "check_apply failed")
                    }
                    None => {
                        tracing::warn!(resource = %id, error = %error, retry = false, "check_apply failed")
                    }
                }
                count_check(&mut m, &id.kind, CheckResult::Failed, *duration);
            }
            Event::VertexFailed {
                id,
                phase,
                error,
                retry_in,
            } => {
                match retry_in {
                    Some(d) => {
                        tracing::error!(resource = %id, phase, error = %error, retry_in_ms = d.as_millis() as u64, "resource failed; retrying")
                    }
                    None => {
                        tracing::error!(resource = %id, phase, error = %error, "resource failed")
                    }
                }
                *m.failures_total.entry(id.kind.clone()).or_default() += 1;
            }
            Event::Refresh { from, to } => {
                tracing::debug!(from = %from, to = %to, "refresh");
                m.refreshes_total += 1;
            }
            Event::CleanupFailed { id, error } => {
                tracing::warn!(resource = %id, error = %error, "cleanup failed");
            }
            Event::Converged {
                generation,
                converged,
            } => {
                tracing::info!(generation, converged, "convergence changed");
                m.converged = *converged;
            }
        }
        drop(m);
        let _ = sink.tx.send(self);
    }
}

fn count_check(m: &mut MetricsSnapshot, kind: &str, result: CheckResult, d: Duration) {
    // Looked up before inserting: no allocation on the hot path.
    match m
        .check_apply_total
        .iter_mut()
        .find(|((k, r), _)| k == kind && *r == result)
    {
        Some((_, n)) => *n += 1,
        None => {
            m.check_apply_total.insert((kind.to_string(), result), 1);
        }
    }
    match m.check_apply_duration_seconds.get_mut(kind) {
        Some(h) => h.observe(d),
        None => m
            .check_apply_duration_seconds
            .entry(kind.to_string())
            .or_default()
            .observe(d),
    }
}
