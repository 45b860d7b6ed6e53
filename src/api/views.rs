//! The JSON documents (and the dot text) the API serves, built from the daemon's own state.
//! Serialization of core types happens here, at the edge; the core types carry no serde.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};
use tend_engine::{RunningGraph, Status, VertexState};
use tend_model::{Meta, ResId, Value};

/// A resource value as JSON, as people read it (`tend_model::json::to_plain`), with the
/// secrets the program read masked.
pub fn value_json(v: &Value) -> Json {
    if tend_model::secrets::any() {
        tend_model::json::to_plain(&tend_model::secrets::redact_value(v))
    } else {
        tend_model::json::to_plain(v)
    }
}

/// The meta parameters that differ from their defaults (in the table's order).
pub fn meta_json(m: &Meta) -> Json {
    Json::Object(
        m.non_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), value_json(&v)))
            .collect(),
    )
}

/// `/v1/graph` as JSON.
pub fn graph_json(generation: u64, g: &RunningGraph) -> Json {
    let resources: Vec<Json> = g
        .resources()
        .map(|r| {
            json!({
                "kind": r.kind,
                "name": r.name,
                "id": ResId::new(r.kind.clone(), r.name.clone()).to_string(),
                "params": Json::Object(r.params.iter().map(|(k, v)| (k.clone(), value_json(v))).collect()),
                "meta": meta_json(&r.meta),
            })
        })
        .collect();
    let edges: Vec<Json> = g
        .edges
        .iter()
        .map(|e| {
            let send: Vec<Json> = e
                .send
                .iter()
                .map(|sr| json!({ "send": sr.send, "recv": sr.recv }))
                .collect();
            json!({ "from": e.from.to_string(), "to": e.to.to_string(), "notify": e.notify, "send": send })
        })
        .collect();
    json!({ "generation": generation, "resources": resources, "edges": edges })
}

/// A string as a dot quoted identifier.
fn dot_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `/v1/graph?format=dot`: Graphviz text, vertices coloured by their state.
pub fn graph_dot(g: &RunningGraph, status: &Status) -> String {
    let mut t = String::from("digraph tend {\n  node [shape=box];\n");
    for r in g.resources() {
        let id = ResId::new(r.kind.clone(), r.name.clone());
        let state = status.vertices.get(&id).map(|v| v.state);
        let color = match state {
            Some(VertexState::Converged) => "green",
            Some(VertexState::Failed) => "red",
            Some(VertexState::Blocked) => "orange",
            Some(VertexState::Dirty) => "yellow",
            Some(VertexState::Pending) | None => "grey",
        };
        let label = match state {
            Some(s) => format!("{id}\n{s}"),
            None => id.to_string(),
        };
        let _ = writeln!(
            t,
            "  {} [label={}, color={color}];",
            dot_quote(&id.to_string()),
            dot_quote(&label)
        );
    }
    for e in &g.edges {
        let style = if e.notify {
            " [style=bold, label=\"notify\"]"
        } else {
            ""
        };
        let _ = writeln!(
            t,
            "  {} -> {}{style};",
            dot_quote(&e.from.to_string()),
            dot_quote(&e.to.to_string())
        );
    }
    t.push_str("}\n");
    t
}

/// A time in milliseconds since the Unix epoch as [`rfc3339`].
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// A time as RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T11:30:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn time_json(t: Option<SystemTime>) -> Json {
    t.map(|t| Json::String(rfc3339(t))).unwrap_or(Json::Null)
}

/// Vertex counts by state name (every state present).
pub fn counts_json(status: &Status) -> Json {
    Json::Object(
        VertexState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), json!(status.count(*s))))
            .collect(),
    )
}

/// `/v1/resources`: every resource with its state, last check, last change and last error.
pub fn resources_json(host: &str, status: &Status) -> Json {
    let resources: Vec<Json> = status
        .sorted()
        .into_iter()
        .map(|(id, v)| {
            json!({
                "kind": id.kind,
                "name": id.name,
                "id": id.to_string(),
                "state": v.state.as_str(),
                "last_check": time_json(v.last_check),
                "last_change": time_json(v.last_change),
                "last_error": v.last_error.as_deref().map(|e| tend_model::secrets::redact(e).into_owned()),
                "checks": v.checks,
                "changes": v.changes,
                "would_change": v.would_change,
            })
        })
        .collect();
    json!({
        "host": host,
        "generation": status.generation,
        "converged": status.converged,
        "counts": counts_json(status),
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_347_000, 123), "2026-11-22T11:30:00.123Z");
    }

    #[test]
    fn values_and_meta() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(Value::Str("a".into()), Value::Int(1));
        assert_eq!(value_json(&Value::Map(m)).to_string(), r#"{"a":1}"#);
        let mut m = std::collections::BTreeMap::new();
        m.insert(Value::Int(2), Value::Float(f64::INFINITY));
        assert_eq!(value_json(&Value::Map(m)).to_string(), r#"[[2,"inf"]]"#);
        let meta = Meta {
            retry: 3,
            ..Meta::default()
        };
        assert_eq!(meta_json(&meta).to_string(), r#"{"retry":3}"#);
    }

    #[test]
    fn dot_escapes() {
        let mut g = tend_model::GraphSpec::default();
        g.resources
            .push(tend_model::ResSpec::new("file", "/tmp/\"x\""));
        let g = RunningGraph {
            graph: std::sync::Arc::new(g),
            ..RunningGraph::default()
        };
        let dot = graph_dot(&g, &Status::default());
        assert!(
            dot.contains(r#""file[/tmp/\"x\"]" [label="file[/tmp/\"x\"]", color=grey];"#),
            "{dot}"
        );
    }
}
