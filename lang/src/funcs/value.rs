//! `value.get(key) struct{value T; ready bool}` and its typed variants
//! `value.get_str|get_int|get_bool|get_float`: the value a `value` resource holds on this host
//! ([`tend_model::values`]), as a stream: a new value each time a resource sets or removes the
//! key. `ready` is false (and `value` the type's zero) until one does; a value of another type
//! is an error naming the key, as mgmt's.
//!
//! `value.get`'s `T` is the type unification solves for each call (`$v = value.get("k")` then
//! `$v->value + 1` makes it `int`); the evaluator passes it as a hidden second argument
//! ([`super::Builtin::solved_result`]), from which come the zero value and the check of what
//! the resource holds.

use tend_model::Value;

use super::{FuncError, Invoke, SolvedResult};
use crate::types::Ty;

/// `value.get` needs the solved type of its `value` field at run time.
pub(super) const SOLVED: SolvedResult = SolvedResult {
    check: check_solved,
    two_types: "use the typed value.get_str, get_int, get_bool or get_float, \
                or call value.get outside the function",
};

/// The `value` field's type of `value.get`'s result type.
fn value_type(t: &Ty) -> Option<&Ty> {
    match t {
        Ty::Struct(fs) => fs.iter().find(|(n, _)| n == "value").map(|(_, t)| t),
        _ => None,
    }
}

/// Whether a `value` resource can hold values of `t`: data of one known type.
fn holdable(t: &Ty) -> bool {
    match t {
        Ty::Bool | Ty::Str | Ty::Int | Ty::Float => true,
        Ty::List(e) => holdable(e),
        Ty::Map(k, v) => holdable(k) && holdable(v),
        Ty::Struct(fs) => fs.iter().all(|(_, t)| holdable(t)),
        Ty::Func(..) | Ty::Variant | Ty::Var(_) => false,
    }
}

fn check_solved(t: &Ty) -> Result<(), String> {
    match value_type(t) {
        Some(v) if holdable(v) => Ok(()),
        Some(v) => Err(format!(
            "a `value` resource holds data of one known type, not {v}"
        )),
        None => Err(format!("invalid result type {t}")),
    }
}

/// Reads `key` (the first argument) as a value of type `ty`.
fn get(a: &[Value], func: &str, ty: &Ty) -> Result<Value, FuncError> {
    let key = match a.first() {
        Some(Value::Str(s)) => s,
        _ => return Err(FuncError::fatal(format!("{func}: expected a str argument"))),
    };
    if key.is_empty() {
        return Err(FuncError::fatal(format!("{func}: can't use an empty key")));
    }
    let fits = |v: &Value| ty.to_schema().is_some_and(|s| s.accepts(v));
    let (value, ready) = match tend_model::values::get(key) {
        Some(v) if fits(&v) => (v, true),
        Some(v) => {
            return Err(FuncError::fatal(format!(
                "{func}: type mismatch, check type in Value[{key}]: it holds a {}, not a {ty}",
                super::text::type_of(&v)
            )))
        }
        None => (ty.zero(), false),
    };
    Ok(Value::Struct(vec![
        ("value".into(), value),
        ("ready".into(), Value::Bool(ready)),
    ]))
}

/// Runs `value.get` over `(key, solved result type)`.
pub(super) fn get_any(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    const NAME: &str = "value.get";
    let t = match a.get(1) {
        Some(Value::Str(t)) => super::sig::parse_static(t).map_err(|e| format!("{NAME}: {e}")),
        _ => Err(format!("{NAME}: no solved result type")),
    }
    .map_err(FuncError::fatal)?;
    match value_type(&t) {
        Some(ty) if holdable(ty) => get(a, NAME, ty),
        _ => Err(FuncError::fatal(format!("{NAME}: invalid result type {t}"))),
    }
}

pub(super) fn get_str(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_str", &Ty::Str)
}

pub(super) fn get_int(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_int", &Ty::Int)
}

pub(super) fn get_bool(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_bool", &Ty::Bool)
}

pub(super) fn get_float(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_float", &Ty::Float)
}
