//! `/metrics`: the Prometheus text exposition format (version 0.0.4), written by hand from the
//! engine's [`MetricsSnapshot`], its [`Status`] and the daemon's world counters.
//!
//! Names are `tend_*`, counters end in `_total`, durations are histograms in seconds, and label
//! values are bounded: resource kinds, states, results and world operations, never resource
//! names.

use std::fmt::Write as _;

use tend_engine::{CheckResult, Histogram, MetricsSnapshot, Status, VertexState};

/// What the world side contributes to `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct WorldMetrics {
    /// Resources this host exports.
    pub exports: u64,
    /// Resources this host collected from others.
    pub collected: u64,
    /// World operations by `(operation, result)`.
    pub operations_total: Vec<((String, String), u64)>,
    /// Events received on the host's one store watch.
    pub watch_events_total: u64,
}

/// Everything one scrape renders.
pub struct Scrape<'a> {
    /// `tend_build_info` labels.
    pub version: &'a str,
    /// Git commit of the build.
    pub commit: &'a str,
    /// Process start, seconds since the epoch.
    pub start_time: f64,
    /// Engine counters.
    pub engine: &'a MetricsSnapshot,
    /// Engine status (for the per-state resource gauges).
    pub status: &'a Status,
    /// World counters.
    pub world: &'a WorldMetrics,
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus writes it.
fn num(x: f64) -> String {
    if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else if x.is_nan() {
        "NaN".into()
    } else {
        format!("{x}")
    }
}

fn family(t: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(t, "# HELP {name} {help}");
    let _ = writeln!(t, "# TYPE {name} {kind}");
}

fn histogram(t: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in &h.buckets {
        let _ = writeln!(
            t,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {n}",
            num(*bound)
        );
    }
    let _ = writeln!(t, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(t, "{name}_sum{braces} {}", num(h.sum));
    let _ = writeln!(t, "{name}_count{braces} {}", h.count);
}

/// Renders one scrape.
pub fn render(s: &Scrape<'_>) -> String {
    let mut t = String::with_capacity(4096);
    family(
        &mut t,
        "tend_build_info",
        "gauge",
        "Version and git commit of this tend build (always 1).",
    );
    let _ = writeln!(
        t,
        "tend_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        esc(s.version),
        esc(s.commit)
    );
    family(
        &mut t,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    );
    let _ = writeln!(t, "process_start_time_seconds {}", num(s.start_time));

    family(
        &mut t,
        "tend_graph_generation",
        "gauge",
        "Graph swaps started since the daemon started (0 before the first graph).",
    );
    let _ = writeln!(t, "tend_graph_generation {}", s.status.generation);

    family(
        &mut t,
        "tend_resources",
        "gauge",
        "Resources in the running graph, by kind and state.",
    );
    // Every state of every kind present, 0 included.
    let mut by_kind: std::collections::BTreeMap<&str, [usize; VertexState::ALL.len()]> =
        std::collections::BTreeMap::new();
    for (id, v) in &s.status.vertices {
        by_kind.entry(id.kind.as_str()).or_default()[v.state as usize] += 1;
    }
    for (kind, counts) in &by_kind {
        for state in VertexState::ALL {
            let _ = writeln!(
                t,
                "tend_resources{{kind=\"{}\",state=\"{state}\"}} {}",
                esc(kind),
                counts[state as usize]
            );
        }
    }

    family(
        &mut t,
        "tend_check_apply_total",
        "counter",
        "check_apply runs by kind and result (in_state, changed, failed, noop).",
    );
    let mut seen_kinds: Vec<&str> = s
        .engine
        .check_apply_total
        .keys()
        .map(|(k, _)| k.as_str())
        .collect();
    seen_kinds.dedup();
    for kind in seen_kinds {
        for result in [
            CheckResult::InState,
            CheckResult::Changed,
            CheckResult::Failed,
            CheckResult::Noop,
        ] {
            let n = s
                .engine
                .check_apply_total
                .get(&(kind.to_string(), result))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                t,
                "tend_check_apply_total{{kind=\"{}\",result=\"{result}\"}} {n}",
                esc(kind)
            );
        }
    }

    family(
        &mut t,
        "tend_check_apply_duration_seconds",
        "histogram",
        "Duration of check_apply runs by kind, in seconds.",
    );
    for (kind, h) in &s.engine.check_apply_duration_seconds {
        histogram(
            &mut t,
            "tend_check_apply_duration_seconds",
            &format!("kind=\"{}\"", esc(kind)),
            h,
        );
    }

    family(
        &mut t,
        "tend_drift_events_total",
        "counter",
        "Watch events (drift) on running resources, by kind.",
    );
    for (kind, n) in &s.engine.drift_events_total {
        let _ = writeln!(t, "tend_drift_events_total{{kind=\"{}\"}} {n}", esc(kind));
    }
    family(
        &mut t,
        "tend_resource_failures_total",
        "counter",
        "Resources that failed (retries exhausted, init or watch failure), by kind.",
    );
    for (kind, n) in &s.engine.failures_total {
        let _ = writeln!(
            t,
            "tend_resource_failures_total{{kind=\"{}\"}} {n}",
            esc(kind)
        );
    }
    family(
        &mut t,
        "tend_refreshes_total",
        "counter",
        "Refreshes sent along notify edges.",
    );
    let _ = writeln!(t, "tend_refreshes_total {}", s.engine.refreshes_total);

    family(
        &mut t,
        "tend_graph_swaps_total",
        "counter",
        "Graph swaps completed.",
    );
    let _ = writeln!(t, "tend_graph_swaps_total {}", s.engine.graph_swaps_total);
    family(
        &mut t,
        "tend_graph_swap_duration_seconds",
        "histogram",
        "Duration of graph swaps, in seconds.",
    );
    histogram(
        &mut t,
        "tend_graph_swap_duration_seconds",
        "",
        &s.engine.graph_swap_duration_seconds,
    );

    family(
        &mut t,
        "tend_converged",
        "gauge",
        "1 when no resource has work pending, else 0.",
    );
    let _ = writeln!(t, "tend_converged {}", u8::from(s.status.converged));

    family(
        &mut t,
        "tend_exports",
        "gauge",
        "Resources this host exports through the World.",
    );
    let _ = writeln!(t, "tend_exports {}", s.world.exports);
    family(
        &mut t,
        "tend_collected",
        "gauge",
        "Resources this host collected from other hosts.",
    );
    let _ = writeln!(t, "tend_collected {}", s.world.collected);
    family(
        &mut t,
        "tend_world_operations_total",
        "counter",
        "World operations by operation and result.",
    );
    for ((op, result), n) in &s.world.operations_total {
        let _ = writeln!(
            t,
            "tend_world_operations_total{{operation=\"{}\",result=\"{}\"}} {n}",
            esc(op),
            esc(result)
        );
    }
    family(
        &mut t,
        "tend_world_watch_events_total",
        "counter",
        "Events received on this host's store watch.",
    );
    let _ = writeln!(
        t,
        "tend_world_watch_events_total {}",
        s.world.watch_events_total
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use tend_engine::VertexStatus;
    use tend_model::ResId;

    #[test]
    fn renders_parseable_text() {
        let mut engine = MetricsSnapshot::default();
        engine
            .check_apply_total
            .insert(("file".into(), CheckResult::Changed), 2);
        let mut h = Histogram::default();
        h.observe(std::time::Duration::from_millis(3));
        engine.check_apply_duration_seconds.insert("file".into(), h);
        let mut status = Status::default();
        status.vertices.insert(
            std::sync::Arc::new(ResId::new("file", "/a\"b")),
            VertexStatus {
                state: VertexState::Converged,
                ..VertexStatus::default()
            },
        );
        let text = render(&Scrape {
            version: "0.1.0",
            commit: "abc",
            start_time: 1.5,
            engine: &engine,
            status: &status,
            world: &WorldMetrics::default(),
        });
        assert!(
            text.contains("tend_check_apply_total{kind=\"file\",result=\"changed\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tend_check_apply_total{kind=\"file\",result=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "tend_check_apply_duration_seconds_bucket{kind=\"file\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("tend_resources{kind=\"file\",state=\"converged\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("/a"),
            "resource names never become labels: {text}"
        );
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("parses");
        assert!(parsed.samples.iter().any(|s| s.metric == "tend_converged"));
    }
}
