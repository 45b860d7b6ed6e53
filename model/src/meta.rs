//! Meta parameters (spec/mcl.md §8.4): the one table.
//!
//! [`META`] is the only place a meta parameter is declared: its name, Rust type, default,
//! documentation, range check and whether it travels with an export. Everything else is
//! derived from it: the [`Meta`] struct and its [`Default`], parsing ([`Meta::set`], used by
//! every front end), the language's types ([`MetaParam::ty`]), rendering ([`Meta::to_value`],
//! which the API and the export codec use) and [`META`] itself, in the canonical order of
//! `Meta => struct{...}`.
//!
//! Adding a meta parameter is one entry in the `meta_table!` invocation below (plus, when it
//! needs one, its combination check in [`Meta::validate`] and its effect in the engine).

use std::time::Duration;

use crate::schema::Type;
use crate::value::Value;

/// The Rust types a meta parameter can have: how a [`Value`] becomes one (with the messages
/// front ends show) and back, and its type in the language.
trait MetaType: Sized {
    fn ty() -> Type;
    fn from_value(v: &Value) -> Result<Self, String>;
    fn to_value(&self) -> Value;
}

fn want_int(v: &Value) -> Result<i64, String> {
    v.as_int()
        .ok_or_else(|| format!("expected int, got {}", v.type_name()))
}

impl MetaType for bool {
    fn ty() -> Type {
        Type::Bool
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        v.as_bool()
            .ok_or_else(|| format!("expected bool, got {}", v.type_name()))
    }
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl MetaType for i16 {
    fn ty() -> Type {
        Type::Int
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let i = want_int(v)?;
        i16::try_from(i).map_err(|_| format!("{i} is outside -32768..32767"))
    }
    fn to_value(&self) -> Value {
        Value::Int((*self).into())
    }
}

impl MetaType for i32 {
    fn ty() -> Type {
        Type::Int
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let i = want_int(v)?;
        i32::try_from(i).map_err(|_| format!("{i} is outside the 32-bit range"))
    }
    fn to_value(&self) -> Value {
        Value::Int((*self).into())
    }
}

impl MetaType for u32 {
    fn ty() -> Type {
        Type::Int
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let i = want_int(v)?;
        u32::try_from(i).map_err(|_| format!("{i} is out of range"))
    }
    fn to_value(&self) -> Value {
        Value::Int((*self).into())
    }
}

impl MetaType for u64 {
    fn ty() -> Type {
        Type::Int
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let i = want_int(v)?;
        u64::try_from(i).map_err(|_| format!("{i} is negative"))
    }
    fn to_value(&self) -> Value {
        // Front ends only accept values that came from an i64.
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl MetaType for f64 {
    fn ty() -> Type {
        Type::Float
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Float(f) => Ok(*f),
            // An int where a float is expected: front ends that cannot tell (YAML `1`).
            Value::Int(i) => Ok(*i as f64),
            _ => Err(format!("expected float, got {}", v.type_name())),
        }
    }
    fn to_value(&self) -> Value {
        Value::Float(*self)
    }
}

impl MetaType for Vec<String> {
    fn ty() -> Type {
        Type::List(Box::new(Type::Str))
    }
    fn from_value(v: &Value) -> Result<Self, String> {
        let l = v
            .as_list()
            .ok_or_else(|| format!("expected []str, got {}", v.type_name()))?;
        l.iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("expected []str, got a {} element", e.type_name()))
            })
            .collect()
    }
    fn to_value(&self) -> Value {
        Value::List(self.iter().map(|s| Value::Str(s.clone())).collect())
    }
}

/// One meta parameter, as the table declares it.
pub struct MetaParam {
    /// Its name, as programs write it (`Meta:retry`, YAML `meta: {retry: 3}`).
    pub name: &'static str,
    doc: &'static str,
    /// Whether an export carries it (`export` itself does not: a collector never
    /// re-exports).
    pub exported: bool,
    ty: fn() -> Type,
    get: fn(&Meta) -> Value,
    set: fn(&mut Meta, &Value) -> Result<(), String>,
}

impl MetaParam {
    /// One line for humans.
    pub fn doc(&self) -> &'static str {
        self.doc.trim()
    }

    /// Its type in the language (and in front ends' conversions).
    pub fn ty(&self) -> Type {
        (self.ty)()
    }

    /// Its value in `meta`.
    pub fn get(&self, meta: &Meta) -> Value {
        (self.get)(meta)
    }

    /// Sets it in `meta` from a value, checking type and range.
    pub fn set(&self, meta: &mut Meta, value: &Value) -> Result<(), MetaError> {
        (self.set)(meta, value).map_err(|reason| MetaError {
            name: self.name.to_string(),
            reason,
        })
    }
}

/// Declares [`Meta`], its [`Default`] and [`META`] from one list of
/// `/// doc` `[[local]] name: Type = default [, check = fn];` entries. `check` is a further
/// range check on the converted value; `[local]` marks a parameter an export does not carry.
macro_rules! meta_table {
    ($(
        #[doc = $doc:literal]
        $([$local:ident])? $name:ident : $ty:ty = $default:expr $(, check = $check:expr)? ;
    )*) => {
        /// Meta parameters of a resource (spec/mcl.md §8.4). Defaults are the language's
        /// defaults. Declared by the table in `meta.rs` (see [`META`]).
        #[derive(Clone, Debug, PartialEq)]
        pub struct Meta {
            $(
                #[doc = $doc]
                pub $name: $ty,
            )*
        }

        impl Default for Meta {
            fn default() -> Self {
                Meta { $( $name: $default, )* }
            }
        }

        /// Every meta parameter, in the canonical order of `Meta => struct{...}`.
        pub static META: &[MetaParam] = &[
            $(
                MetaParam {
                    name: stringify!($name),
                    doc: $doc,
                    exported: !meta_table!(@local $($local)?),
                    ty: <$ty as MetaType>::ty,
                    get: |m| MetaType::to_value(&m.$name),
                    set: |m, v| {
                        let x = <$ty as MetaType>::from_value(v)?;
                        $( ($check)(&x)?; )?
                        m.$name = x;
                        Ok(())
                    },
                },
            )*
        ];
    };
    (@local local) => { true };
    (@local) => { false };
}

meta_table! {
    /// Check only, never change anything.
    noop: bool = false;
    /// Retries after a failed check/apply; -1 = forever (the default; with `delay` 0 they back off, 1 s doubling to 5 min).
    retry: i16 = -1, check = |r: &i16| at_least_minus_one(i64::from(*r), "use -1 for forever");
    /// Reset the retry counter after a success.
    retryreset: bool = false;
    /// Milliseconds between retries (0 with `retry` -1: the backoff of [`Backoff`]).
    delay: u64 = 0;
    /// Milliseconds allowed per check/apply; 0 = no limit.
    timeout: u64 = 0;
    /// Poll every N seconds instead of watching; 0 = watch; -1 = check once, no watch.
    poll: i32 = 0, check = |p: &i32| at_least_minus_one(i64::from(*p), "0 = watch, -1 = once");
    /// Events per second (rate limit of check/apply runs); +inf = unlimited.
    limit: f64 = f64::INFINITY, check = |l: &f64| {
        if l.is_nan() || *l < 0.0 { Err(format!("{l} is not a rate")) } else { Ok(()) }
    };
    /// Burst allowed by `limit`.
    burst: u32 = 0;
    /// Forget retry/limiter state when the params change between graphs.
    reset: bool = false;
    /// Named counting semaphores: `"id"` (count 1) or `"id:N"`.
    sema: Vec<String> = Vec::new();
    /// Restart a failed watcher when the graph is swapped.
    rewatch: bool = false;
    /// Converge at least once before a swap removes or changes it.
    realize: bool = false;
    /// Allow names starting with `$`.
    dollar: bool = false;
    /// Do not apply locally (export only).
    hidden: bool = false;
    /// Export to these hosts; `"*"` = every host.
    [local] export: Vec<String> = Vec::new();
    /// Undo the resource when it disappears (kinds supporting it).
    reverse: bool = false;
    /// Let the engine add automatic edges.
    autoedge: bool = true;
    /// Let the engine group compatible resources.
    autogroup: bool = true;
}

fn at_least_minus_one(i: i64, hint: &str) -> Result<(), String> {
    if i < -1 {
        Err(format!("{i} is invalid ({hint})"))
    } else {
        Ok(())
    }
}

/// Why a meta parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("meta parameter `{name}`: {reason}")]
pub struct MetaError {
    /// The meta parameter's name.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The table entry of a meta parameter.
pub fn meta_param(name: &str) -> Option<&'static MetaParam> {
    META.iter().find(|p| p.name == name)
}

impl Meta {
    /// Sets one meta parameter from a value, checking its type and range.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<(), MetaError> {
        match meta_param(name) {
            Some(p) => p.set(self, value),
            None => Err(MetaError {
                name: name.to_string(),
                reason: "no such meta parameter".into(),
            }),
        }
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
        Value::Struct(
            META.iter()
                .map(|p| (p.name.to_string(), p.get(self)))
                .collect(),
        )
    }

    /// The meta parameters that differ from their defaults, in canonical order.
    pub fn non_default(&self) -> Vec<(&'static str, Value)> {
        let d = Meta::default();
        META.iter()
            .filter_map(|p| {
                let v = p.get(self);
                (v != p.get(&d)).then_some((p.name, v))
            })
            .collect()
    }
}

/// The waits between the retries of a resource that retries forever without a fixed delay
/// (`retry` -1 and `delay` 0, the defaults): the first wait is `first`, each next one twice the
/// last, at most `max`. Self-healing: a failed resource is tried again until it succeeds, which
/// starts the waits over. The default is 1 s doubling to 5 min; the engine can be given other
/// figures (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 = the first).
    pub fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.first
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }
}

impl Meta {
    /// Whether a failure is retried with [`Backoff`] rather than after `delay` (a resource
    /// that retries forever without a fixed delay: the defaults).
    pub fn backs_off(&self) -> bool {
        self.retry == -1 && self.delay == 0
    }

    /// How long to wait before retrying after `failures` failures in a row (1 = the first):
    /// the backoff's wait when [`Meta::backs_off`], else `delay` milliseconds (mgmt's meaning,
    /// where 0 retries at once).
    pub fn retry_wait(&self, failures: u32, backoff: &Backoff) -> Duration {
        if self.backs_off() {
            backoff.wait(failures)
        } else {
            Duration::from_millis(self.delay)
        }
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
        assert_eq!(m.to_value().as_struct().unwrap().len(), META.len());
    }

    #[test]
    fn messages_name_the_problem() {
        let mut m = Meta::default();
        let e = |m: &mut Meta, n: &str, v: Value| m.set(n, &v).unwrap_err().reason;
        assert_eq!(
            e(&mut m, "retry", Value::Int(-2)),
            "-2 is invalid (use -1 for forever)"
        );
        assert_eq!(
            e(&mut m, "retry", Value::Int(40000)),
            "40000 is outside -32768..32767"
        );
        assert_eq!(
            e(&mut m, "poll", Value::Int(-5)),
            "-5 is invalid (0 = watch, -1 = once)"
        );
        assert_eq!(e(&mut m, "noop", Value::Int(1)), "expected bool, got int");
        assert_eq!(e(&mut m, "limit", Value::Float(-1.0)), "-1 is not a rate");
        assert_eq!(
            e(&mut m, "sema", Value::List(vec![Value::Int(1)])),
            "expected []str, got a int element"
        );
        m.set("limit", &Value::Int(3)).unwrap();
        assert_eq!(m.limit, 3.0);
    }

    #[test]
    fn failures_back_off_by_default() {
        let b = Backoff::default();
        let d = Meta::default();
        assert!(d.backs_off());
        let secs = |n| d.retry_wait(n, &b).as_secs();
        assert_eq!(
            (1..=11).map(secs).collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        );
        assert_eq!(secs(u32::MAX), 300);
        // A fixed delay or a finite count keeps mgmt's meaning.
        let m = Meta {
            delay: 500,
            ..Meta::default()
        };
        assert!(!m.backs_off());
        assert_eq!(m.retry_wait(7, &b), Duration::from_millis(500));
        let m = Meta {
            retry: 3,
            ..Meta::default()
        };
        assert_eq!(m.retry_wait(1, &b), Duration::ZERO);
    }

    #[test]
    fn the_table_agrees_with_the_struct() {
        let d = Meta::default();
        let mut m = Meta::default();
        for p in META {
            // Every default round-trips through its own setter.
            p.set(&mut m, &p.get(&d)).unwrap();
            assert!(!p.doc().is_empty(), "{} has no doc", p.name);
        }
        assert_eq!(m, d);
        let names: Vec<_> = META.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), 18);
        assert_eq!(names[0], "noop");
        assert!(!meta_param("export").unwrap().exported);
        assert!(meta_param("hidden").unwrap().exported);
        assert!(d.non_default().is_empty());
        m.hidden = true;
        assert_eq!(m.non_default(), vec![("hidden", Value::Bool(true))]);
    }
}
