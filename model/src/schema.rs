//! Per-kind schemas: field names, types, defaults and allowed values.
//!
//! The resources registry builds one [`KindSchema`] per kind; the YAML front end validates
//! params against it, and the language type-checks resource bodies against it.

use std::fmt;

use crate::value::Value;

/// The type of a resource field, in the language's terms (spec/mcl.md §8.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// `bool`.
    Bool,
    /// `str`.
    Str,
    /// `int`.
    Int,
    /// `float`.
    Float,
    /// `[]T`.
    List(Box<Type>),
    /// `map{K: V}`.
    Map(Box<Type>, Box<Type>),
    /// `struct{a T; b U}`.
    Struct(Vec<(String, Type)>),
    /// Any single type (`variant`).
    Any,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Str => f.write_str("str"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::List(t) => write!(f, "[]{t}"),
            Type::Map(k, v) => write!(f, "map{{{k}: {v}}}"),
            Type::Struct(fields) => {
                f.write_str("struct{")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str("}")
            }
            Type::Any => f.write_str("variant"),
        }
    }
}

impl Type {
    /// Whether `v` has this type (structurally; `Any` accepts everything).
    pub fn accepts(&self, v: &Value) -> bool {
        match (self, v) {
            (Type::Any, _) => true,
            (Type::Bool, Value::Bool(_))
            | (Type::Str, Value::Str(_))
            | (Type::Int, Value::Int(_))
            | (Type::Float, Value::Float(_)) => true,
            (Type::List(t), Value::List(l)) => l.iter().all(|e| t.accepts(e)),
            (Type::Map(k, t), Value::Map(m)) => m.iter().all(|(a, b)| k.accepts(a) && t.accepts(b)),
            (Type::Struct(fs), Value::Struct(vs)) => {
                fs.len() == vs.len()
                    && fs
                        .iter()
                        .zip(vs)
                        .all(|((fname, ft), (vname, vv))| fname == vname && ft.accepts(vv))
            }
            _ => false,
        }
    }
}

/// One field of a kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Lower-case field name.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// The value used when the field is not set; `None` means "not managed".
    pub default: Option<Value>,
    /// For `int` fields: the native range (inclusive).
    pub range: Option<(i128, i128)>,
    /// For `str` fields: the only values allowed (empty = any). These are also published as
    /// language constants `$const.res.<kind>.<field>.<value>`.
    pub allowed: Vec<String>,
    /// Optional (pointer) field: unset is distinct from any value.
    pub optional: bool,
    /// One line for humans.
    pub doc: String,
}

impl Field {
    /// A field of type `ty` with no default.
    pub fn new(name: &str, ty: Type, doc: &str) -> Self {
        Field {
            name: name.into(),
            ty,
            default: None,
            range: None,
            allowed: Vec::new(),
            optional: false,
            doc: doc.into(),
        }
    }

    /// Sets the default (builder style).
    pub fn default_value(mut self, v: impl Into<Value>) -> Self {
        self.default = Some(v.into());
        self
    }

    /// Restricts an `int` field to a native range (builder style).
    pub fn range(mut self, lo: i128, hi: i128) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// Restricts a `str` field to named values (builder style).
    pub fn allowed(mut self, values: &[&str]) -> Self {
        self.allowed = values.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Marks the field optional (builder style).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// A named value a kind publishes to the language: `$const.res.<kind>.<param>.<name>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// The param it belongs to, e.g. `state`.
    pub param: String,
    /// The constant's name, e.g. `exists`.
    pub name: String,
    /// Its value, e.g. `"exists"`.
    pub value: Value,
}

/// Everything a front end needs to know about a kind.
#[derive(Clone, Debug, PartialEq)]
pub struct KindSchema {
    /// The kind, e.g. `file`.
    pub kind: String,
    /// Its fields, in declaration order.
    pub fields: Vec<Field>,
    /// Values it can send after applying (send/recv): name, type and documentation (the
    /// other parts of a `Field` mean nothing here). Any of its `fields` can receive one.
    pub sends: Vec<Field>,
    /// Whether a refresh (notify edge) means something to it.
    pub refreshable: bool,
    /// Whether it can undo itself when it leaves the graph (`Meta:reverse`); the engine
    /// refuses `reverse: true` on a kind that cannot (no kind can yet).
    pub reversible: bool,
    /// Whether it groups compatible resources (`Meta:autogroup`, a hint that is true by
    /// default): `pkg` joins concurrent applies into one apt transaction. Kinds that do not
    /// group have nothing to group, whatever `autogroup` says.
    pub groups: bool,
    /// Extra constants besides the `allowed` values of its fields.
    pub constants: Vec<Constant>,
}

/// A param that does not fit the schema. `field` is empty when the problem is the kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("field `{field}`: ") })]
pub struct SchemaError {
    /// The field involved.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl KindSchema {
    /// A kind with no fields yet.
    pub fn new(kind: &str) -> Self {
        KindSchema {
            kind: kind.into(),
            fields: Vec::new(),
            sends: Vec::new(),
            refreshable: false,
            reversible: false,
            groups: false,
            constants: Vec::new(),
        }
    }

    /// Adds a field (builder style).
    pub fn field(mut self, f: Field) -> Self {
        self.fields.push(f);
        self
    }

    /// Declares a value it sends after applying (builder style), e.g.
    /// `.sends("output", Type::Str, "standard output and error")`.
    pub fn sends(mut self, name: &str, ty: Type, doc: &str) -> Self {
        self.sends.push(Field::new(name, ty, doc));
        self
    }

    /// Looks a field up by name.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Looks a sent value up by name.
    pub fn sent(&self, name: &str) -> Option<&Field> {
        self.sends.iter().find(|f| f.name == name)
    }

    /// All constants this kind publishes (from `allowed` values and `constants`).
    pub fn all_constants(&self) -> Vec<Constant> {
        let mut out: Vec<Constant> = self
            .fields
            .iter()
            .flat_map(|f| {
                f.allowed.iter().map(move |a| Constant {
                    param: f.name.clone(),
                    name: if a.is_empty() {
                        "undefined".into()
                    } else {
                        a.clone()
                    },
                    value: Value::Str(a.clone()),
                })
            })
            .collect();
        out.extend(self.constants.iter().cloned());
        out
    }

    /// Checks params against the schema: known fields, types, native ranges, allowed values.
    pub fn check_params(&self, params: &crate::spec::Params) -> Result<(), SchemaError> {
        for (name, value) in params {
            self.check_param(name, value)?;
        }
        Ok(())
    }

    /// Checks one param: a known field, and a value it accepts.
    pub fn check_param(&self, name: &str, value: &Value) -> Result<(), SchemaError> {
        let f = self.get(name).ok_or_else(|| SchemaError {
            field: name.to_string(),
            reason: format!("kind `{}` has no such field", self.kind),
        })?;
        check_field(f, value)
    }
}

/// Checks one value against one field.
pub fn check_field(f: &Field, value: &Value) -> Result<(), SchemaError> {
    let err = |reason: String| SchemaError {
        field: f.name.clone(),
        reason,
    };
    // An int where a float is expected is accepted by front ends that cannot tell (YAML `1`).
    let coerced_ok = matches!((&f.ty, value), (Type::Float, Value::Int(_)));
    if !coerced_ok && !f.ty.accepts(value) {
        return Err(err(format!("expected {}, got {}", f.ty, value)));
    }
    if let (Some((lo, hi)), Value::Int(i)) = (f.range, value) {
        let i = *i as i128;
        if i < lo || i > hi {
            return Err(err(format!("{i} is outside {lo}..={hi}")));
        }
    }
    if let (false, Value::Str(s)) = (f.allowed.is_empty(), value) {
        if !f.allowed.iter().any(|a| a == s) {
            return Err(err(format!(
                "{s:?} is not one of {}",
                f.allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> KindSchema {
        KindSchema::new("file")
            .field(Field::new("state", Type::Str, "").allowed(&["exists", "absent", ""]))
            .field(Field::new("int8", Type::Int, "").range(-128, 127))
            .field(Field::new("ratio", Type::Float, ""))
    }

    #[test]
    fn params_are_checked() {
        let s = schema();
        let mut p = crate::spec::Params::new();
        p.insert("state".to_string(), Value::from("exists"));
        p.insert("ratio".to_string(), Value::Int(1));
        s.check_params(&p).unwrap();
        p.insert("int8".to_string(), Value::Int(300));
        let e = s.check_params(&p).unwrap_err();
        assert_eq!(e.field, "int8");
        p.remove("int8");
        p.insert("state".to_string(), Value::from("gone"));
        assert_eq!(s.check_params(&p).unwrap_err().field, "state");
        p.insert("nope".to_string(), Value::Int(1));
        assert_eq!(s.check_params(&p).unwrap_err().field, "nope");
    }

    #[test]
    fn constants_include_undefined() {
        let c = schema().all_constants();
        assert!(c
            .iter()
            .any(|c| c.name == "undefined" && c.value == Value::from("")));
    }
}
