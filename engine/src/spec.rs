//! Resource graphs as plain data: [`ResSpec`], [`Meta`], [`GraphSpec`], [`EdgeSpec`].
//!
//! A front end (YAML, mcl) produces a [`GraphSpec`]; the executor diffs it against the running
//! graph. Two specs are *the same resource* when kind, name, params and meta are all equal.

use std::fmt;

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

/// Meta parameters of a resource (spec/mcl.md §8.4). Defaults are the language's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// Check only, never change anything.
    pub noop: bool,
    /// Retries after a failed check/apply; -1 = forever.
    pub retry: i16,
    /// Reset the retry counter after a success.
    pub retryreset: bool,
    /// Milliseconds between retries.
    pub delay: u64,
    /// Milliseconds allowed per check/apply; 0 = no limit.
    pub timeout: u64,
    /// Poll every N seconds instead of watching; 0 = watch; -1 = check once, no watch.
    pub poll: i32,
    /// Events per second (rate limit of check/apply runs); +inf = unlimited.
    pub limit: f64,
    /// Burst allowed by `limit`.
    pub burst: u32,
    /// Forget retry/limiter state when the params change between graphs.
    pub reset: bool,
    /// Named counting semaphores: `"id"` (count 1) or `"id:N"`.
    pub sema: Vec<String>,
    /// Restart a failed watcher when the graph is swapped.
    pub rewatch: bool,
    /// Converge at least once before a swap removes or changes it.
    pub realize: bool,
    /// Allow names starting with `$`.
    pub dollar: bool,
    /// Do not apply locally (export only).
    pub hidden: bool,
    /// Export to these hosts; `"*"` = every host.
    pub export: Vec<String>,
    /// Undo the resource when it disappears (kinds supporting it).
    pub reverse: bool,
    /// Let the engine add automatic edges.
    pub autoedge: bool,
    /// Let the engine group compatible resources.
    pub autogroup: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            noop: false,
            retry: 0,
            retryreset: false,
            delay: 0,
            timeout: 0,
            poll: 0,
            limit: f64::INFINITY,
            burst: 0,
            reset: false,
            sema: Vec::new(),
            rewatch: false,
            realize: false,
            dollar: false,
            hidden: false,
            export: Vec::new(),
            reverse: false,
            autoedge: true,
            autogroup: true,
        }
    }
}

/// The meta parameter names, in the canonical order of `Meta => struct{...}`.
pub const META_FIELDS: [&str; 18] = [
    "noop",
    "retry",
    "retryreset",
    "delay",
    "timeout",
    "poll",
    "limit",
    "burst",
    "reset",
    "sema",
    "rewatch",
    "realize",
    "dollar",
    "hidden",
    "export",
    "reverse",
    "autoedge",
    "autogroup",
];

/// Why a meta parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("meta parameter `{name}`: {reason}")]
pub struct MetaError {
    /// The meta parameter's name.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Meta {
    /// Sets one meta parameter from a value, checking its type and range.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<(), MetaError> {
        let err = |reason: String| MetaError {
            name: name.to_string(),
            reason,
        };
        let want_bool = || {
            value
                .as_bool()
                .ok_or_else(|| err(format!("expected bool, got {}", value.type_name())))
        };
        let want_int = || {
            value
                .as_int()
                .ok_or_else(|| err(format!("expected int, got {}", value.type_name())))
        };
        let want_strs = || -> Result<Vec<String>, MetaError> {
            let l = value
                .as_list()
                .ok_or_else(|| err(format!("expected []str, got {}", value.type_name())))?;
            l.iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        err(format!("expected []str, got a {} element", v.type_name()))
                    })
                })
                .collect()
        };
        match name {
            "noop" => self.noop = want_bool()?,
            "retry" => {
                let i = want_int()?;
                self.retry =
                    i16::try_from(i).map_err(|_| err(format!("{i} is outside -32768..32767")))?;
                if self.retry < -1 {
                    return Err(err(format!("{i} is invalid (use -1 for forever)")));
                }
            }
            "retryreset" => self.retryreset = want_bool()?,
            "delay" => {
                let i = want_int()?;
                self.delay = u64::try_from(i).map_err(|_| err(format!("{i} is negative")))?;
            }
            "timeout" => {
                let i = want_int()?;
                self.timeout = u64::try_from(i).map_err(|_| err(format!("{i} is negative")))?;
            }
            "poll" => {
                let i = want_int()?;
                self.poll = i32::try_from(i)
                    .map_err(|_| err(format!("{i} is outside the 32-bit range")))?;
                if self.poll < -1 {
                    return Err(err(format!("{i} is invalid (0 = watch, -1 = once)")));
                }
            }
            "limit" => {
                self.limit = match value {
                    Value::Float(f) => *f,
                    Value::Int(i) => *i as f64,
                    _ => return Err(err(format!("expected float, got {}", value.type_name()))),
                };
                if self.limit.is_nan() || self.limit < 0.0 {
                    return Err(err(format!("{} is not a rate", self.limit)));
                }
            }
            "burst" => {
                let i = want_int()?;
                self.burst = u32::try_from(i).map_err(|_| err(format!("{i} is out of range")))?;
            }
            "reset" => self.reset = want_bool()?,
            "sema" => self.sema = want_strs()?,
            "rewatch" => self.rewatch = want_bool()?,
            "realize" => self.realize = want_bool()?,
            "dollar" => self.dollar = want_bool()?,
            "hidden" => self.hidden = want_bool()?,
            "export" => self.export = want_strs()?,
            "reverse" => self.reverse = want_bool()?,
            "autoedge" => self.autoedge = want_bool()?,
            "autogroup" => self.autogroup = want_bool()?,
            _ => return Err(err("no such meta parameter".into())),
        }
        Ok(())
    }

    /// Checks combinations that each field alone cannot: a finite `limit` needs `burst > 0`,
    /// `sema` entries are `id` or `id:N` with N >= 1, `export` entries are non-empty.
    pub fn validate(&self) -> Result<(), MetaError> {
        let err = |name: &str, reason: String| MetaError {
            name: name.to_string(),
            reason,
        };
        if self.limit.is_finite() && self.burst == 0 {
            return Err(err("burst", "a finite limit needs burst > 0".into()));
        }
        for s in &self.sema {
            parse_sema(s).map_err(|reason| err("sema", reason))?;
        }
        if self.export.iter().any(String::is_empty) {
            return Err(err("export", "an empty host name".into()));
        }
        Ok(())
    }

    /// The meta parameters as a struct value, fields in canonical order.
    pub fn to_value(&self) -> Value {
        let strs = |l: &[String]| Value::List(l.iter().map(|s| Value::Str(s.clone())).collect());
        Value::Struct(vec![
            ("noop".into(), self.noop.into()),
            ("retry".into(), Value::Int(self.retry.into())),
            ("retryreset".into(), self.retryreset.into()),
            ("delay".into(), Value::Int(self.delay as i64)),
            ("timeout".into(), Value::Int(self.timeout as i64)),
            ("poll".into(), Value::Int(self.poll.into())),
            ("limit".into(), Value::Float(self.limit)),
            ("burst".into(), Value::Int(self.burst.into())),
            ("reset".into(), self.reset.into()),
            ("sema".into(), strs(&self.sema)),
            ("rewatch".into(), self.rewatch.into()),
            ("realize".into(), self.realize.into()),
            ("dollar".into(), self.dollar.into()),
            ("hidden".into(), self.hidden.into()),
            ("export".into(), strs(&self.export)),
            ("reverse".into(), self.reverse.into()),
            ("autoedge".into(), self.autoedge.into()),
            ("autogroup".into(), self.autogroup.into()),
        ])
    }
}

/// Parses a semaphore entry `"id"` or `"id:N"` into its id and count.
pub fn parse_sema(s: &str) -> Result<(String, usize), String> {
    let (id, n) = match s.rsplit_once(':') {
        Some((id, n)) => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("`{s}`: the count after `:` must be a positive integer"))?;
            (id, n)
        }
        None => (s, 1),
    };
    if id.is_empty() || n == 0 || id.parse::<u64>().is_ok() {
        return Err(format!("`{s}` is not `id` or `id:N` (N >= 1)"));
    }
    Ok((id.to_string(), n))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sema_entries() {
        assert_eq!(parse_sema("db").unwrap(), ("db".into(), 1));
        assert_eq!(parse_sema("db:3").unwrap(), ("db".into(), 3));
        assert!(parse_sema("3").is_err());
        assert!(parse_sema("db:0").is_err());
        assert!(parse_sema("db:x").is_err());
        assert!(parse_sema("").is_err());
    }

    #[test]
    fn meta_ranges_and_combinations() {
        let mut m = Meta::default();
        assert!(m.set("retry", &Value::Int(-2)).is_err());
        assert!(m.set("retry", &Value::Int(40000)).is_err());
        m.set("retry", &Value::Int(-1)).unwrap();
        assert!(m.set("delay", &Value::Int(-1)).is_err());
        assert!(m.set("bogus", &Value::Int(1)).is_err());
        m.set("limit", &Value::Float(2.0)).unwrap();
        assert!(m.validate().is_err());
        m.set("burst", &Value::Int(1)).unwrap();
        m.validate().unwrap();
        assert_eq!(m.to_value().as_struct().unwrap().len(), META_FIELDS.len());
    }
}
