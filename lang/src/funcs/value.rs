//! `value.get_str|get_int|get_bool|get_float(key) struct{value T; ready bool}`: the value a
//! `value` resource holds on this host ([`tend_model::values`]), as a stream: a new value
//! each time a resource sets or removes the key. `ready` is false (and `value` the type's
//! zero) until one does; a value of another type is an error naming the key, as mgmt's.
//!
//! mgmt's polymorphic `value.get` needs the solved return type at run time for its zero
//! value; tend offers the four typed variants.

use tend_model::Value;

use super::{FuncError, Invoke};

fn get(a: &[Value], func: &str, ty: &str, zero: Value) -> Result<Value, FuncError> {
    let key = match a.first() {
        Some(Value::Str(s)) => s,
        _ => return Err(FuncError::fatal(format!("{func}: expected a str argument"))),
    };
    if key.is_empty() {
        return Err(FuncError::fatal(format!("{func}: can't use an empty key")));
    }
    let (value, ready) = match tend_model::values::get(key) {
        Some(v) if v.type_name() == ty => (v, true),
        Some(v) => {
            return Err(FuncError::fatal(format!(
                "{func}: type mismatch, check type in Value[{key}]: it holds a {}, not a {ty}",
                v.type_name()
            )))
        }
        None => (zero, false),
    };
    Ok(Value::Struct(vec![
        ("value".into(), value),
        ("ready".into(), Value::Bool(ready)),
    ]))
}

pub(super) fn get_str(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_str", "str", Value::Str(String::new()))
}

pub(super) fn get_int(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_int", "int", Value::Int(0))
}

pub(super) fn get_bool(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_bool", "bool", Value::Bool(false))
}

pub(super) fn get_float(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    get(a, "value.get_float", "float", Value::Float(0.0))
}
