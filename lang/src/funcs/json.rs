//! `encoding.decode_json(data str, type str) T` and `decode_json_flexible`: JSON text to an
//! mcl value of the type named by a static type string (`"struct{name str; ports []int}"`),
//! which is also the call's result type; with one argument the result type is the one
//! unification solves for the call (`$x struct{a int} = decode_json($s)`). As in mgmt, the
//! data is the first JSON value of the text, a struct takes an object with exactly its fields
//! (the flexible form: a missing field is the zero value of its type, extra keys are
//! ignored), a map takes an object (so its keys are `str`), and `null` fits no type.

use std::collections::BTreeMap;

use tend_model::Value;

use super::golang::s;
use super::{FuncError, Invoke};
use crate::types::{Ty, Unifier};

/// Reads a type JSON can be decoded into (`bool`, `str`, `int`, `float`, `[]T`, `map{K: V}`,
/// `struct{a T; b U}`), through the one type reader ([`super::sig::parse_static`]).
pub fn parse_type(text: &str) -> Result<Ty, String> {
    let t = super::sig::parse_static(text)?;
    decodable(&t)?;
    Ok(t)
}

/// Whether JSON can be decoded into `t`.
fn decodable(t: &Ty) -> Result<(), String> {
    match t {
        Ty::Bool | Ty::Str | Ty::Int | Ty::Float => Ok(()),
        Ty::List(e) => decodable(e),
        Ty::Map(k, v) => decodable(k).and_then(|()| decodable(v)),
        Ty::Struct(fs) => fs.iter().try_for_each(|(_, t)| decodable(t)),
        other => Err(format!(
            "invalid type: `{other}` cannot be decoded from JSON"
        )),
    }
}

/// The one-argument forms decode to the result type solved for the call.
pub(super) const SOLVED: super::SolvedResult = super::SolvedResult {
    check: decodable,
    two_types: "pass the type as a second argument",
};

fn name(flexible: bool) -> &'static str {
    if flexible {
        "encoding.decode_json_flexible"
    } else {
        "encoding.decode_json"
    }
}

fn sig(u: &mut Unifier, flexible: bool, statics: &[Option<Value>]) -> Result<Ty, String> {
    let n = name(flexible);
    match statics {
        [_, Some(Value::Str(t))] => {
            let t = parse_type(t).map_err(|e| format!("{n}: {e}"))?;
            Ok(Ty::func(vec![Ty::Str, Ty::Str], t))
        }
        [_, _] => Err(format!(
            "{n}: the type (second argument) must be a static string such as \"struct{{a int}}\""
        )),
        // The result type comes from unification; the solved type reaches the call at run
        // time (`unify::CallTypes`).
        [_] => Ok(Ty::func(vec![Ty::Str], u.fresh())),
        _ => Err(format!("{n} takes 1 or 2 arguments, got {}", statics.len())),
    }
}

/// Signature of `encoding.decode_json`.
pub(super) fn decode_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    sig(u, false, statics)
}

/// Signature of `encoding.decode_json_flexible`.
pub(super) fn decode_flexible_sig(
    u: &mut Unifier,
    statics: &[Option<Value>],
) -> Result<Ty, String> {
    sig(u, true, statics)
}

fn run(a: &[Value], flexible: bool) -> Result<Value, FuncError> {
    let n = name(flexible);
    let data = s(a, 0, n)?;
    let t = parse_type(s(a, 1, n)?).map_err(|e| FuncError::fatal(format!("{n}: {e}")))?;
    // Like Go's `json.Decoder`, read the first value and leave what follows it.
    let first = serde_json::Deserializer::from_str(data)
        .into_iter::<serde_json::Value>()
        .next();
    let j = match first {
        Some(r) => r.map_err(|e| FuncError::catchable(format!("{n}: invalid JSON: {e}")))?,
        None => return Err(FuncError::catchable(format!("{n}: invalid JSON: EOF"))),
    };
    let mut path = String::from("$");
    convert(&j, &t, flexible, &mut path)
        .map_err(|e| FuncError::catchable(format!("{n}: at {path}: {e}")))
}

/// Runs `encoding.decode_json`.
pub(super) fn decode_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    run(a, false)
}

/// Runs `encoding.decode_json_flexible`.
pub(super) fn decode_flexible_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    run(a, true)
}

fn kind(j: &serde_json::Value) -> &'static str {
    match j {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Converts `j` to a value of type `t`; on error `path` names the offending place.
fn convert(
    j: &serde_json::Value,
    t: &Ty,
    flexible: bool,
    path: &mut String,
) -> Result<Value, String> {
    use serde_json::Value as J;
    let mismatch = || format!("expected {t}, got {}", kind(j));
    match (t, j) {
        (Ty::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Ty::Str, J::String(s)) => Ok(Value::Str(s.clone())),
        (Ty::Int, J::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("{n} is not an int")),
        (Ty::Float, J::Number(n)) => n
            .as_f64()
            .map(Value::Float)
            .ok_or_else(|| format!("{n} is not a float")),
        (Ty::List(e), J::Array(xs)) => {
            let mut out = Vec::with_capacity(xs.len());
            for (i, x) in xs.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(convert(x, e, flexible, path)?);
                path.truncate(len);
            }
            Ok(Value::List(out))
        }
        (Ty::Map(k, v), J::Object(o)) => {
            let mut out = BTreeMap::new();
            for (key, x) in o {
                let len = path.len();
                path.push_str(&format!("[{}]", super::text::quote(key)));
                let kv = match &**k {
                    Ty::Str => Value::Str(key.clone()),
                    other => return Err(format!("expected {other}, got a string (a key)")),
                };
                out.insert(kv, convert(x, v, flexible, path)?);
                path.truncate(len);
            }
            Ok(Value::Map(out))
        }
        (Ty::Struct(fs), J::Object(o)) => {
            if !flexible && o.len() != fs.len() {
                return Err(format!(
                    "expected {t}, got an object with {} fields",
                    o.len()
                ));
            }
            let mut out = Vec::with_capacity(fs.len());
            for (f, ft) in fs {
                let len = path.len();
                path.push('.');
                path.push_str(f);
                let v = match o.get(f) {
                    Some(x) => convert(x, ft, flexible, path)?,
                    None if flexible => ft.zero(),
                    None => return Err(format!("missing field {f}")),
                };
                path.truncate(len);
                out.push((f.clone(), v));
            }
            Ok(Value::Struct(out))
        }
        _ => Err(mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(data: &str, t: &str, flexible: bool) -> Result<Value, FuncError> {
        run(&[data.into(), t.into()], flexible)
    }

    #[test]
    fn reads_types() {
        for t in [
            "int",
            "[]str",
            "map{str: []float}",
            "struct{a int; b struct{}}",
            "struct{}",
        ] {
            assert_eq!(parse_type(t).unwrap().to_string(), t);
        }
        for t in [
            "",
            "func() int",
            "struct{a int; a str}",
            "map{[]int: int}",
            "[]",
            "int int",
        ] {
            assert!(parse_type(t).is_err(), "{t}");
        }
    }

    #[test]
    fn decodes_by_type() {
        let v = dec(
            r#"{"a": [1, 2], "b": {"x": 1.5}}"#,
            "struct{a []int; b map{str: float}}",
            false,
        )
        .unwrap();
        assert_eq!(
            crate::funcs::text::show(&v, true),
            "struct{a: [1, 2]; b: {\"x\": 1.5}}"
        );
        let e = dec(r#"{"a": [1, "x"]}"#, "struct{a []int}", false).unwrap_err();
        assert_eq!(
            e.msg,
            "encoding.decode_json: at $.a[1]: expected int, got a string"
        );
        assert!(e.catchable);
        let e = dec("{\"a\": ", "struct{a int}", false).unwrap_err();
        assert!(e.msg.contains("line 1 column 6"), "{}", e.msg);
        assert!(dec("{}", "struct{a int}", false).is_err());
        assert_eq!(
            crate::funcs::text::show(
                &dec(r#"{"c": 1} trailing"#, "struct{a int; b []str}", true).unwrap(),
                true
            ),
            "struct{a: 0; b: []}"
        );
        assert!(dec(r#"{"a": null}"#, "struct{a int}", true).is_err());
        assert!(dec(r#"{"a": 1, "b": 2}"#, "struct{a int}", false).is_err());
        assert!(dec(r#"{"1": 2}"#, "map{int: int}", false).is_err());
        assert!(dec("", "int", false)
            .unwrap_err()
            .msg
            .ends_with("invalid JSON: EOF"));
        assert!(dec("1.5", "int", false).is_err());
    }
}
