//! What the language needs from the cluster: [`WorldView`], a narrow read-and-watch view of
//! shared values and exported resources, plus [`MemWorld`], an in-memory implementation seeded
//! from the `-- WORLD --` JSON of golden tests (spec §12) and used by `tend check`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tend_model::world::{SchedOpts, SCHED_STRATEGIES};
use tend_model::{Params, Value};

use crate::types::Ty;
use crate::types::Unifier;
use tokio::sync::watch;

/// One exported resource as a collector sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// Recipient host, or `*`.
    pub to: String,
    /// Exporting host.
    pub from: String,
    /// Resource kind.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// Fields.
    pub params: Params,
    /// Meta parameters that were set (name -> value).
    pub meta: BTreeMap<String, Value>,
}

/// The cluster data mcl programs read. Implementations must be cheap to query: a stream
/// re-queries after every change notification.
pub trait WorldView: Send + Sync {
    /// This host's name.
    fn hostname(&self) -> String;
    /// A shared string value (`None` when unset).
    fn getval(&self, key: &str) -> Result<Option<String>, String>;
    /// Per-host values of namespace `ns` (host -> value).
    fn kvlookup(&self, ns: &str) -> Result<BTreeMap<String, String>, String>;
    /// Hosts currently scheduled for `ns`.
    fn schedule(&self, ns: &str) -> Result<Vec<String>, String>;
    /// Joins this host to the scheduling pool `ns` (mgmt's `world.schedule(ns, opts)` form),
    /// for the life of this view. Joining again with the same options changes nothing.
    fn schedule_join(&self, ns: &str, opts: &SchedOpts) -> Result<(), String> {
        let _ = opts;
        Err(format!(
            "world.schedule({ns:?}, opts): this world cannot join a scheduling pool"
        ))
    }
    /// Exports of `kind` addressed to this host or to `*`.
    fn exports(&self, kind: &str) -> Result<Vec<Export>, String>;
    /// A receiver that changes whenever any of the above may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
}

#[derive(Default)]
struct MemData {
    values: BTreeMap<String, String>,
    kv: BTreeMap<String, BTreeMap<String, String>>,
    schedules: BTreeMap<String, Vec<String>>,
    exports: Vec<Export>,
}

/// An in-memory world for check mode and tests.
pub struct MemWorld {
    hostname: String,
    data: Mutex<MemData>,
    tx: watch::Sender<u64>,
}

impl MemWorld {
    /// An empty world for host `hostname`.
    pub fn new(hostname: &str) -> Arc<Self> {
        Arc::new(MemWorld {
            hostname: hostname.into(),
            data: Mutex::new(MemData::default()),
            tx: watch::channel(0).0,
        })
    }

    /// Builds a world from the golden-test seed JSON:
    /// `{"hostname": "h", "exports": [{"to", "from", "kind", "name", "res": {...}}],
    /// "values": {"k": "v"}, "kv": {"ns": {"host": "v"}}, "schedule": {"ns": ["h"]}}`.
    /// `hostname` (when given) overrides the seed's host name.
    pub fn from_json(text: &str, hostname: Option<&str>) -> Result<Arc<Self>, String> {
        let j: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("world seed: {e}"))?;
        let host = hostname
            .map(str::to_string)
            .or_else(|| {
                j.get("hostname")
                    .and_then(|h| h.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let w = MemWorld::new(&host);
        {
            let mut d = w.data.lock().expect("poisoned");
            if let Some(vals) = j.get("values").and_then(|v| v.as_object()) {
                for (k, v) in vals {
                    d.values.insert(k.clone(), json_text(v));
                }
            }
            if let Some(kv) = j.get("kv").and_then(|v| v.as_object()) {
                for (ns, m) in kv {
                    let e = d.kv.entry(ns.clone()).or_default();
                    for (h, v) in m.as_object().into_iter().flatten() {
                        e.insert(h.clone(), json_text(v));
                    }
                }
            }
            if let Some(s) = j.get("schedule").and_then(|v| v.as_object()) {
                for (ns, l) in s {
                    let hosts = l.as_array().into_iter().flatten().map(json_text).collect();
                    d.schedules.insert(ns.clone(), hosts);
                }
            }
            for (i, e) in j
                .get("exports")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .enumerate()
            {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| format!("world seed: export {i}: missing string `{k}`"))
                };
                let mut params = Params::new();
                let mut meta = BTreeMap::new();
                if let Some(res) = e.get("res").and_then(|v| v.as_object()) {
                    for (k, v) in res {
                        if k == "meta" {
                            for (mk, mv) in v.as_object().into_iter().flatten() {
                                meta.insert(mk.clone(), from_json(mv));
                            }
                        } else {
                            params.insert(k.clone(), from_json(v));
                        }
                    }
                }
                d.exports.push(Export {
                    to: field("to")?,
                    from: field("from")?,
                    kind: field("kind")?,
                    name: field("name")?,
                    params,
                    meta,
                });
            }
        }
        Ok(w)
    }

    fn changed(&self) {
        self.tx.send_modify(|n| *n += 1);
    }

    /// Sets a shared value (tests).
    pub fn set_value(&self, key: &str, value: &str) {
        self.data
            .lock()
            .expect("poisoned")
            .values
            .insert(key.into(), value.into());
        self.changed();
    }

    /// Adds an export (tests).
    pub fn add_export(&self, e: Export) {
        self.data.lock().expect("poisoned").exports.push(e);
        self.changed();
    }

    /// Removes every export named `name` (tests).
    pub fn remove_exports(&self, name: &str) {
        self.data
            .lock()
            .expect("poisoned")
            .exports
            .retain(|e| e.name != name);
        self.changed();
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// Converts seed JSON into a value: numbers without a fraction become ints.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Str(String::new()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::List(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::Str(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

impl WorldView for MemWorld {
    fn hostname(&self) -> String {
        self.hostname.clone()
    }

    fn getval(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.data.lock().expect("poisoned").values.get(key).cloned())
    }

    fn kvlookup(&self, ns: &str) -> Result<BTreeMap<String, String>, String> {
        Ok(self
            .data
            .lock()
            .expect("poisoned")
            .kv
            .get(ns)
            .cloned()
            .unwrap_or_default())
    }

    fn schedule(&self, ns: &str) -> Result<Vec<String>, String> {
        Ok(self
            .data
            .lock()
            .expect("poisoned")
            .schedules
            .get(ns)
            .cloned()
            .unwrap_or_default())
    }

    fn schedule_join(&self, _ns: &str, _opts: &SchedOpts) -> Result<(), String> {
        // Check mode and golden tests: the seed's `schedule` is the answer; nothing to join.
        Ok(())
    }

    fn exports(&self, kind: &str) -> Result<Vec<Export>, String> {
        let d = self.data.lock().expect("poisoned");
        Ok(d.exports
            .iter()
            .filter(|e| e.kind == kind && (e.to == "*" || e.to == self.hostname))
            .cloned()
            .collect())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// `collect.res(kind)`: (name, host) pairs sorted by name then host, each once (§13 W6).
pub fn collect_pairs(w: &dyn WorldView, kind: &str) -> Result<Value, String> {
    let mut pairs: Vec<(String, String)> = w
        .exports(kind)?
        .into_iter()
        .map(|e| (e.name, e.from))
        .collect();
    pairs.sort();
    pairs.dedup();
    Ok(Value::List(
        pairs
            .into_iter()
            .map(|(n, h)| {
                Value::Struct(vec![
                    ("name".into(), Value::Str(n)),
                    ("host".into(), Value::Str(h)),
                ])
            })
            .collect(),
    ))
}

/// The options `world.schedule(ns, opts)` accepts, with their types (mgmt's, strictly).
const SCHEDULE_OPTS: &[(&str, Ty)] = &[
    ("strategy", Ty::Str),
    ("max", Ty::Int),
    ("reuse", Ty::Bool),
    ("ttl", Ty::Int),
];

/// Signature of `world.schedule`: `func(namespace str) []str`, or with the options struct
/// of mgmt's older form, `func(namespace str, opts struct{...}) []str`.
pub(super) fn schedule_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    match statics.len() {
        1 => Ok(super::sig::parse("func(str) []str", u)),
        2 => Ok(super::sig::parse("func(str, ?1) []str", u)),
        n => Err(format!(
            "world.schedule takes a namespace and optionally its options, not {n} arguments"
        )),
    }
}

/// Accepts the solved type of a `world.schedule` call: the options must be a struct of
/// mgmt's fields (any subset, in any order).
pub(super) fn check_schedule_opts(t: &Ty) -> Result<(), String> {
    let Ty::Func(args, _) = t else {
        return Ok(());
    };
    let Some(opts) = args.get(1) else {
        return Ok(());
    };
    let Ty::Struct(fields) = opts else {
        return Err(format!("the opts argument must be a struct, got {opts}"));
    };
    for (name, ty) in fields {
        match SCHEDULE_OPTS.iter().find(|(n, _)| n == name) {
            None => return Err(format!("unexpected opts field: `{name}`")),
            Some((_, want)) if want != ty => {
                return Err(format!(
                    "expected different type for opts field: `{name}` ({want}, got {ty})"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The options of a `world.schedule(ns, opts)` call's value (mgmt's defaults for what is
/// absent: strategy `rr`, max 1, ttl 10 s).
pub fn schedule_opts(v: &Value) -> Result<SchedOpts, String> {
    let mut o = SchedOpts::default();
    let Value::Struct(fields) = v else {
        return Err("world.schedule: the opts must be a struct".into());
    };
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("strategy", Value::Str(s)) if s.is_empty() => {}
            ("strategy", Value::Str(s)) => {
                if !SCHED_STRATEGIES.contains(&s.as_str()) {
                    return Err(format!(
                        "world.schedule: unknown strategy {s:?} (known: {})",
                        SCHED_STRATEGIES.join(", ")
                    ));
                }
                o.strategy = s.clone();
            }
            // mgmt ignores a max or a ttl that is not positive.
            ("max", Value::Int(n)) if *n > 0 => o.max = u32::try_from(*n).unwrap_or(u32::MAX),
            ("ttl", Value::Int(n)) if *n > 0 => o.ttl = u32::try_from(*n).unwrap_or(u32::MAX),
            ("max" | "ttl", Value::Int(_)) => {}
            // Each tend process holds its own entry for its life: there is no lease to reuse.
            ("reuse", Value::Bool(_)) => {}
            (other, _) => return Err(format!("world.schedule: unexpected opts field: `{other}`")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_filters_by_recipient_and_sorts() {
        let w = MemWorld::from_json(
            r#"{"hostname": "lb", "exports": [
              {"to": "lb", "from": "web1", "kind": "test", "name": "b", "res": {"anotherstr": "x", "meta": {"hidden": true}}},
              {"to": "*", "from": "web2", "kind": "test", "name": "a", "res": {}},
              {"to": "*", "from": "web2", "kind": "test", "name": "a", "res": {}},
              {"to": "db", "from": "web3", "kind": "test", "name": "c", "res": {}}],
              "values": {"k": "v"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(w.hostname(), "lb");
        let v = collect_pairs(w.as_ref(), "test").unwrap();
        assert_eq!(v.as_list().unwrap().len(), 2);
        assert_eq!(
            v.as_list().unwrap()[0].field("name"),
            Some(&Value::from("a"))
        );
        assert_eq!(w.getval("k").unwrap().as_deref(), Some("v"));
        let e = &w.exports("test").unwrap()[0];
        assert_eq!(e.meta.get("hidden"), Some(&Value::Bool(true)));
        assert!(MemWorld::from_json("{", None).is_err());
    }
}
