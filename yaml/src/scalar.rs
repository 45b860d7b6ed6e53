//! Scalars resolved as `serde_yaml_ng` resolves them into its `Value` (YAML 1.2 core schema
//! and core tags).

use std::borrow::Cow;

use saphyr_parser::{ScalarStyle, Tag};

use crate::tree::{full_tag, Yaml};

/// Resolves a scalar as `serde_yaml_ng` does for its `Value`: a plain scalar by the YAML 1.2
/// core schema, any other as a string, the core tags `!!bool`, `!!int`, `!!float`, `!!null`
/// by their type (whatever the style); an `Err` is a value `serde_yaml_ng` rejects.
pub(crate) fn scalar<'a>(
    value: Cow<'a, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Yaml<'a>, String> {
    let Some(tag) = tag else {
        return match style {
            ScalarStyle::Plain => plain(value),
            _ => Ok(Yaml::Str(value)),
        };
    };
    let full = full_tag(tag);
    let wrong = |what: &str| format!("invalid value: string {:?}, expected {what}", &*value);
    match full.strip_prefix("tag:yaml.org,2002:") {
        _ if full.starts_with('!') => match style {
            ScalarStyle::Plain => plain(value),
            _ => Ok(Yaml::Str(value)),
        },
        Some("bool") => parse_bool(&value)
            .map(Yaml::Bool)
            .ok_or_else(|| wrong("a boolean")),
        Some("int") => match int(&value) {
            Some(r) => r,
            None => Err(wrong("an integer")),
        },
        Some("float") => parse_f64(&value)
            .map(Yaml::Float)
            .ok_or_else(|| wrong("a float")),
        Some("null") => match parse_null(&value) {
            true => Ok(Yaml::Null),
            false => Err(wrong("null")),
        },
        _ => Ok(Yaml::Str(value)),
    }
}

/// Resolves a plain untagged scalar: null, bool, int, float (YAML 1.2 core schema, with
/// `serde_yaml_ng`'s details: `0x`/`0o`/`0b` ints, leading zeros make a string), else string.
fn plain(value: Cow<'_, str>) -> Result<Yaml<'_>, String> {
    let s: &str = &value;
    if s.is_empty() || parse_null(s) {
        return Ok(Yaml::Null);
    }
    if let Some(b) = parse_bool(s) {
        return Ok(Yaml::Bool(b));
    }
    // Every number starts with a digit, a sign or a dot (`.5`, `.inf`).
    if s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        if let Some(r) = int(s) {
            return r;
        }
        if !digits_but_not_number(s) {
            if let Some(f) = parse_f64(s) {
                return Ok(Yaml::Float(f));
            }
        }
    }
    Ok(Yaml::Str(value))
}

/// An integer as `serde_yaml_ng` reads one: `None` if `s` is none, an `Err` if it is one that
/// its `Value` cannot hold (beyond 64 bits).
fn int(s: &str) -> Option<Result<Yaml<'static>, String>> {
    if let Some(n) = parse_unsigned_int(s, u64::from_str_radix) {
        return Some(Ok(match i64::try_from(n) {
            Ok(i) => Yaml::Int(i),
            Err(_) => Yaml::BigInt(n),
        }));
    }
    if let Some(i) = parse_negative_int(s, i64::from_str_radix) {
        return Some(Ok(Yaml::Int(i)));
    }
    if parse_unsigned_int(s, u128::from_str_radix).is_some()
        || parse_negative_int(s, i128::from_str_radix).is_some()
    {
        return Some(Err(format!("integer {s} does not fit 64 bits")));
    }
    None
}

// The scalar rules below are `serde_yaml_ng`'s (src/de.rs), kept word for word in behaviour so
// that a graph means what it meant when it was read through `serde_yaml_ng::Value`.

fn parse_null(s: &str) -> bool {
    matches!(s, "null" | "Null" | "NULL" | "~")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

type Radix<T> = fn(&str, u32) -> Result<T, std::num::ParseIntError>;

fn parse_unsigned_int<T>(scalar: &str, from_str_radix: Radix<T>) -> Option<T> {
    let unpositive = scalar.strip_prefix('+').unwrap_or(scalar);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(int) = from_str_radix(rest, radix) {
                return Some(int);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) {
        return None;
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

fn parse_negative_int<T>(scalar: &str, from_str_radix: Radix<T>) -> Option<T> {
    for (prefix, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = scalar.strip_prefix(prefix) {
            if let Ok(int) = from_str_radix(&format!("-{rest}"), radix) {
                return Some(int);
            }
        }
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(scalar, 10).ok()
}

fn parse_f64(scalar: &str) -> Option<f64> {
    let unpositive = if let Some(unpositive) = scalar.strip_prefix('+') {
        if unpositive.starts_with(['+', '-']) {
            return None;
        }
        unpositive
    } else {
        scalar
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = scalar {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = scalar {
        return Some(f64::NAN.copysign(1.0));
    }
    unpositive.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Leading zero(s) followed by digits is a string in YAML 1.2.
fn digits_but_not_number(scalar: &str) -> bool {
    let scalar = scalar.strip_prefix(['-', '+']).unwrap_or(scalar);
    scalar.len() > 1 && scalar.starts_with('0') && scalar[1..].bytes().all(|b| b.is_ascii_digit())
}
