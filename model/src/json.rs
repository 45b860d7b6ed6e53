//! [`Value`] <-> JSON, in the two forms tend uses at its edges. Core types carry no serde: the
//! conversions are written here, once.
//!
//! - **Lossless** ([`to_lossless`], [`from_lossless`]): what export payloads and
//!   `tend world exports --json` hold. Bools, ints and strings are JSON scalars, lists arrays,
//!   floats `{"float": f}` (non-finite ones as a string), maps `{"map": [[k, v], ...]}` and
//!   structs `{"struct": [[name, v], ...]}` (field order kept): decoding gives back the very
//!   value, ints stay ints and floats floats.
//! - **Plain** ([`to_plain`], [`from_plain`]): what people and scripts read (the HTTP API) and
//!   write (the `-- WORLD --` seeds of golden tests, `tend check --world`). Maps with string
//!   keys and structs become objects, other maps a list of `[key, value]` pairs, non-finite
//!   floats strings. Reading plain JSON back is a guess: numbers without a fraction become
//!   ints, objects maps, `null` the empty string.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::value::Value;

/// Encodes a value losslessly (see the module docs).
pub fn to_lossless(v: &Value) -> Json {
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
        Value::List(l) => Json::Array(l.iter().map(to_lossless).collect()),
        Value::Map(m) => json!({
            "map": m.iter().map(|(k, v)| json!([to_lossless(k), to_lossless(v)])).collect::<Vec<_>>()
        }),
        Value::Struct(s) => json!({
            "struct": s.iter().map(|(k, v)| json!([k, to_lossless(v)])).collect::<Vec<_>>()
        }),
    }
}

/// Decodes [`to_lossless`]'s form.
pub fn from_lossless(j: &Json) -> Result<Value, String> {
    Ok(match j {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::List(a.iter().map(from_lossless).collect::<Result<_, _>>()?),
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
                    m.insert(from_lossless(k)?, from_lossless(v)?);
                }
                Value::Map(m)
            } else if let Some(Json::Array(fields)) = o.get("struct") {
                let mut s = Vec::new();
                for p in fields {
                    let (k, v) = pair(p)?;
                    let k = k
                        .as_str()
                        .ok_or("a struct field name that is not a string")?;
                    s.push((k.to_string(), from_lossless(v)?));
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

/// A value as people read it (see the module docs).
pub fn to_plain(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(f.to_string())),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(l) => Json::Array(l.iter().map(to_plain).collect()),
        Value::Map(m) => {
            if m.keys().all(|k| matches!(k, Value::Str(_))) {
                Json::Object(
                    m.iter()
                        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_plain(v)))
                        .collect(),
                )
            } else {
                Json::Array(
                    m.iter()
                        .map(|(k, v)| Json::Array(vec![to_plain(k), to_plain(v)]))
                        .collect(),
                )
            }
        }
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_plain(v)))
                .collect(),
        ),
    }
}

/// Reads plain JSON as a value (see the module docs).
pub fn from_plain(v: &Json) -> Value {
    match v {
        Json::Null => Value::Str(String::new()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::List(a.iter().map(from_plain).collect()),
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::Str(k.clone()), from_plain(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_form() -> Value {
        let mut m = BTreeMap::new();
        m.insert(Value::Int(2), Value::Float(0.5));
        Value::List(vec![
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(1.0),
            Value::Float(f64::INFINITY),
            Value::from("x"),
            Value::Map(m),
            Value::Struct(vec![
                ("z".into(), Value::Int(1)),
                ("a".into(), Value::Int(2)),
            ]),
        ])
    }

    #[test]
    fn lossless_round_trips_every_form() {
        let v = every_form();
        assert_eq!(from_lossless(&to_lossless(&v)).unwrap(), v);
        assert!(from_lossless(&Json::Null).is_err());
        assert!(from_lossless(&json!({"what": 1})).is_err());
    }

    #[test]
    fn plain_is_for_people() {
        let mut m = BTreeMap::new();
        m.insert(Value::from("a"), Value::Int(1));
        assert_eq!(to_plain(&Value::Map(m)).to_string(), r#"{"a":1}"#);
        let mut m = BTreeMap::new();
        m.insert(Value::Int(2), Value::Float(f64::INFINITY));
        assert_eq!(to_plain(&Value::Map(m)).to_string(), r#"[[2,"inf"]]"#);
        assert_eq!(
            from_plain(&json!({"k": [1, 2.5]})).to_string(),
            "{\"k\": [1, 2.5]}"
        );
    }
}
