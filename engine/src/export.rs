//! Exported resources: the payload codec and the exporter.
//!
//! An export's payload is the resource's params and meta in a lossless JSON form (see
//! [`encode`]): readable with `tend world exports --json`, decodable by any collector. The
//! exporter publishes every resource with `Meta:export` through the World once it is processed
//! (converged, after its dependencies), and withdraws its records when it leaves the graph.
//! `Meta:hidden` resources are exported without being applied here. Nothing is exported in
//! noop mode (global or `Meta:noop`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use tend_world::{Export, ExportKey, ResWorld};

use crate::executor::{Engine, RunningGraph};
use crate::spec::{ResId, ResSpec};
use crate::status::VertexState;
use crate::value::Value;

/// Encodes a value losslessly: bools, ints and strings as JSON scalars, lists as arrays,
/// floats as `{"float": f}`, maps as `{"map": [[k, v], ...]}`, structs as
/// `{"struct": [[name, v], ...]}` (field order kept).
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => {
            if f.is_finite() {
                json!({ "float": f })
            } else {
                json!({ "float": f.to_string() })
            }
        }
        Value::Str(s) => json!(s),
        Value::List(l) => Json::Array(l.iter().map(value_to_json).collect()),
        Value::Map(m) => json!({
            "map": m.iter().map(|(k, v)| json!([value_to_json(k), value_to_json(v)])).collect::<Vec<_>>()
        }),
        Value::Struct(s) => json!({
            "struct": s.iter().map(|(k, v)| json!([k, value_to_json(v)])).collect::<Vec<_>>()
        }),
    }
}

/// Decodes [`value_to_json`]'s form.
pub fn value_from_json(j: &Json) -> Result<Value, String> {
    Ok(match j {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::List(a.iter().map(value_from_json).collect::<Result<_, _>>()?),
        Json::Object(o) => {
            if let Some(f) = o.get("float") {
                match f {
                    Json::Number(n) => Value::Float(n.as_f64().ok_or("a float out of range")?),
                    Json::String(s) => {
                        Value::Float(s.parse().map_err(|_| format!("bad float {s:?}"))?)
                    }
                    _ => return Err("bad float".into()),
                }
            } else if let Some(Json::Array(pairs)) = o.get("map") {
                let mut m = BTreeMap::new();
                for p in pairs {
                    let (k, v) = pair(p)?;
                    m.insert(value_from_json(k)?, value_from_json(v)?);
                }
                Value::Map(m)
            } else if let Some(Json::Array(fields)) = o.get("struct") {
                let mut s = Vec::new();
                for p in fields {
                    let (k, v) = pair(p)?;
                    let k = k
                        .as_str()
                        .ok_or("a struct field name that is not a string")?;
                    s.push((k.to_string(), value_from_json(v)?));
                }
                Value::Struct(s)
            } else {
                return Err(format!("unknown value form {j}"));
            }
        }
        Json::Null => return Err("null is not a value".into()),
    })
}

fn pair(p: &Json) -> Result<(&Json, &Json), String> {
    match p.as_array().map(Vec::as_slice) {
        Some([k, v]) => Ok((k, v)),
        _ => Err(format!("expected a [key, value] pair, got {p}")),
    }
}

/// The payload of an export of `spec`: `{"params": {...}, "meta": {...}}` (every meta
/// parameter but `export`, so a collector never re-exports).
pub fn encode(spec: &ResSpec) -> Vec<u8> {
    let params: Map<String, Json> = spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect();
    let mut meta = Map::new();
    if let Value::Struct(fields) = spec.meta.to_value() {
        for (k, v) in fields {
            if k != "export" {
                meta.insert(k, value_to_json(&v));
            }
        }
    }
    serde_json::to_vec(&json!({ "params": params, "meta": meta })).unwrap_or_default()
}

/// Params and meta parameters (name -> value) of an export payload.
pub type Decoded = (crate::spec::Params, BTreeMap<String, Value>);

/// Decodes an export payload made by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("export payload: {e}"))?;
    // Collected straight into whichever map the caller keeps (params and meta differ).
    fn section<M: FromIterator<(String, Value)>>(j: &Json, name: &str) -> Result<M, String> {
        match j.get(name) {
            None => Ok(std::iter::empty().collect()),
            Some(Json::Object(o)) => o
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        value_from_json(v).map_err(|e| format!("{name}.{k}: {e}"))?,
                    ))
                })
                .collect(),
            Some(_) => Err(format!("export payload: `{name}` is not an object")),
        }
    }
    Ok((section(&j, "params")?, section(&j, "meta")?))
}

/// The records a graph should have exported now: resources with `Meta:export` whose vertex
/// is converged and whose predecessors are all converged, one record per recipient.
fn wanted(
    exporting: &[&ResSpec],
    graph: &RunningGraph,
    engine: &Engine,
    noop: bool,
) -> BTreeMap<(String, String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    if noop || exporting.is_empty() {
        return out;
    }
    let status = engine.status();
    let s = status.borrow();
    let converged = |id: &ResId| {
        s.vertices
            .get(id)
            .is_some_and(|v| v.state == VertexState::Converged)
    };
    let ids: HashSet<ResId> = exporting.iter().map(|r| r.id()).collect();
    let mut preds: HashMap<&ResId, Vec<&ResId>> = HashMap::new();
    for e in &graph.edges {
        if ids.contains(&e.to) {
            preds.entry(&e.to).or_default().push(&e.from);
        }
    }
    for r in exporting {
        if r.meta.noop {
            continue;
        }
        let id = r.id();
        if !converged(&id) || !preds.get(&id).into_iter().flatten().all(|p| converged(p)) {
            continue;
        }
        let data = encode(r);
        let to: BTreeSet<&String> = r.meta.export.iter().collect();
        for host in to {
            out.insert((r.kind.clone(), r.name.clone(), host.clone()), data.clone());
        }
    }
    out
}

/// Keeps the World's records of this host in line with the engine: publishes what is
/// processed, withdraws what left the graph. Runs until the engine's status channel closes.
pub fn spawn_exporter(
    engine: Engine,
    world: Arc<dyn ResWorld>,
    noop: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut status = engine.status();
        let mut published: BTreeMap<(String, String, String), Vec<u8>> = BTreeMap::new();
        loop {
            let graph = engine.graph();
            // Only resources with `Meta:export` matter: a graph without any costs one scan.
            let exporting: Vec<&ResSpec> = graph
                .resources()
                .filter(|r| !r.meta.export.is_empty())
                .collect();
            let want = wanted(&exporting, &graph, &engine, noop);
            // Records still exported by a resource of the graph are kept while it is not
            // processed (e.g. re-checking); the others are withdrawn.
            let exports_now: HashSet<(&str, &str, &str)> = exporting
                .iter()
                .flat_map(|r| {
                    r.meta
                        .export
                        .iter()
                        .map(|to| (r.kind.as_str(), r.name.as_str(), to.as_str()))
                })
                .collect();
            let gone: Vec<ExportKey> = published
                .keys()
                .filter(|key| {
                    !want.contains_key(*key)
                        && !exports_now.contains(&(key.0.as_str(), key.1.as_str(), key.2.as_str()))
                })
                .map(|(kind, name, to)| ExportKey {
                    kind: kind.clone(),
                    name: name.clone(),
                    to: to.clone(),
                })
                .collect();
            let fresh: Vec<Export> = want
                .iter()
                .filter(|(k, d)| published.get(*k) != Some(*d))
                .map(|((kind, name, to), data)| Export {
                    kind: kind.clone(),
                    name: name.clone(),
                    from: String::new(),
                    to: to.clone(),
                    data: data.clone(),
                })
                .collect();
            let mut ok = true;
            if !gone.is_empty() {
                match world.res_delete(gone.clone()).await {
                    Ok(_) => {
                        for g in &gone {
                            published.remove(&(g.kind.clone(), g.name.clone(), g.to.clone()));
                        }
                        tracing::info!(records = gone.len(), "exports withdrawn");
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(error = %e, "cannot withdraw exports; will retry");
                    }
                }
            }
            if !fresh.is_empty() {
                let n = fresh.len();
                match world.res_export(fresh).await {
                    Ok(_) => {
                        for (k, d) in &want {
                            published.insert(k.clone(), d.clone());
                        }
                        tracing::info!(records = n, "resources exported");
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(error = %e, "cannot export resources; will retry");
                    }
                }
            }
            if ok {
                if status.changed().await.is_err() {
                    return;
                }
            } else {
                tokio::select! {
                    c = status.changed() => if c.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Meta;

    #[test]
    fn payload_round_trips_every_value_form() {
        let mut spec = ResSpec::new("test", "a")
            .param("s", "x")
            .param("i", -3i64)
            .param("f", 1.0f64)
            .param("l", vec!["a", "b"]);
        let mut m = BTreeMap::new();
        m.insert(Value::Int(2), Value::Float(0.5));
        spec.params.insert("m".into(), Value::Map(m));
        spec.params.insert(
            "st".into(),
            Value::Struct(vec![
                ("z".into(), Value::Bool(true)),
                ("a".into(), Value::Int(1)),
            ]),
        );
        spec.meta = Meta {
            hidden: true,
            export: vec!["h2".into()],
            ..Meta::default()
        };
        let (params, meta) = decode(&encode(&spec)).unwrap();
        assert_eq!(params, spec.params);
        assert_eq!(meta.get("hidden"), Some(&Value::Bool(true)));
        assert!(!meta.contains_key("export"));
        assert_eq!(meta.get("limit"), Some(&Value::Float(f64::INFINITY)));
        assert!(decode(b"{\"params\": 3}").is_err());
    }
}
