//! Reading a spec's params with the kind's defaults applied, with errors that name the field.

use std::collections::BTreeMap;

use tend_engine::ResError;
use tend_model::{KindSchema, ResSpec, Value};

/// An error about one field: ``field `mode`: "0999" is not an octal mode``.
pub(crate) fn field_err(field: &str, msg: impl std::fmt::Display) -> ResError {
    ResError::field(field, msg.to_string())
}

/// A spec's params seen through its kind's schema: an unset field reads as its default.
pub(crate) struct Params<'a> {
    spec: &'a ResSpec,
    schema: &'a KindSchema,
}

impl<'a> Params<'a> {
    /// Reads `spec` against `schema`; refuses unknown fields and values of the wrong type.
    pub(crate) fn new(spec: &'a ResSpec, schema: &'a KindSchema) -> Result<Self, ResError> {
        if spec.name.is_empty() {
            return Err(ResError::new(format!(
                "{}: the resource name is empty",
                spec.kind
            )));
        }
        schema.check_params(&spec.params).map_err(|e| {
            if e.field.is_empty() {
                ResError::new(e.reason)
            } else {
                ResError::field(e.field, e.reason)
            }
        })?;
        Ok(Params { spec, schema })
    }

    /// The value set, else the default; `None` when neither.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.spec
            .params
            .get(name)
            .or_else(|| self.schema.get(name).and_then(|f| f.default.as_ref()))
    }

    /// Whether the program set the field (as opposed to leaving the default).
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.spec.params.contains_key(name)
    }

    fn wrong(&self, name: &str, want: &str, v: &Value) -> ResError {
        field_err(name, format!("expected {want}, got {}", v.type_name()))
    }

    /// An optional string, borrowed from the spec (or the schema's default).
    pub(crate) fn opt_str_ref(&self, name: &str) -> Result<Option<&'a str>, ResError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "str", v)),
        }
    }

    /// An optional string.
    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<String>, ResError> {
        Ok(self.opt_str_ref(name)?.map(str::to_string))
    }

    /// A string; empty when unset without default.
    pub(crate) fn str(&self, name: &str) -> Result<String, ResError> {
        Ok(self.opt_str(name)?.unwrap_or_default())
    }

    /// A boolean; false when unset without default.
    pub(crate) fn bool(&self, name: &str) -> Result<bool, ResError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.wrong(name, "bool", v)),
        }
    }

    /// An optional integer.
    pub(crate) fn opt_int(&self, name: &str) -> Result<Option<i64>, ResError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(v) => Err(self.wrong(name, "int", v)),
        }
    }

    /// A list of strings; empty when unset.
    pub(crate) fn strs(&self, name: &str) -> Result<Vec<String>, ResError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::List(l)) => l
                .iter()
                .map(|e| match e {
                    Value::Str(s) => Ok(s.clone()),
                    v => Err(self.wrong(name, "[]str", v)),
                })
                .collect(),
            Some(v) => Err(self.wrong(name, "[]str", v)),
        }
    }

    /// A map of strings to strings; empty when unset.
    pub(crate) fn str_map(&self, name: &str) -> Result<BTreeMap<String, String>, ResError> {
        match self.get(name) {
            None => Ok(BTreeMap::new()),
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Str(v)) => Ok((k.clone(), v.clone())),
                    _ => Err(field_err(name, "expected map{str: str}")),
                })
                .collect(),
            Some(v) => Err(self.wrong(name, "map{str: str}", v)),
        }
    }
}
