//! mcl types (spec §5) and their unification: union-find over type variables with an occurs
//! check. Errors distinguish a *conflict* (two constraints demand different types) from
//! *ambiguity* (a type left without a ground solution).

use std::fmt;

use tend_model::{Type, Value};

/// A type, possibly holding unification variables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// `bool`.
    Bool,
    /// `str`.
    Str,
    /// `int`.
    Int,
    /// `float`.
    Float,
    /// `[]T`.
    List(Box<Ty>),
    /// `map{K: V}`.
    Map(Box<Ty>, Box<Ty>),
    /// `struct{a T; b U}`: field order is part of the type.
    Struct(Vec<(String, Ty)>),
    /// `func(T, U) R`.
    Func(Vec<Ty>, Box<Ty>),
    /// `variant`: a resource field of any single type.
    Variant,
    /// A unification variable `?n`.
    Var(u32),
}

impl Ty {
    /// `[]t`.
    pub fn list(t: Ty) -> Ty {
        Ty::List(Box::new(t))
    }

    /// `map{k: v}`.
    pub fn map(k: Ty, v: Ty) -> Ty {
        Ty::Map(Box::new(k), Box::new(v))
    }

    /// `func(args) ret`.
    pub fn func(args: Vec<Ty>, ret: Ty) -> Ty {
        Ty::Func(args, Box::new(ret))
    }

    /// The type of `collect.res` results and of collect statement names.
    pub fn name_host_list() -> Ty {
        Ty::list(Ty::Struct(vec![
            ("name".into(), Ty::Str),
            ("host".into(), Ty::Str),
        ]))
    }

    /// The language type of a schema field type.
    pub fn from_schema(t: &Type) -> Ty {
        match t {
            Type::Bool => Ty::Bool,
            Type::Str => Ty::Str,
            Type::Int => Ty::Int,
            Type::Float => Ty::Float,
            Type::List(t) => Ty::list(Ty::from_schema(t)),
            Type::Map(k, v) => Ty::map(Ty::from_schema(k), Ty::from_schema(v)),
            Type::Struct(fs) => Ty::Struct(
                fs.iter()
                    .map(|(n, t)| (n.clone(), Ty::from_schema(t)))
                    .collect(),
            ),
            Type::Any => Ty::Variant,
        }
    }

    /// The schema type of a type values can have (`variant` is `Any`); `None` for function
    /// types and unsolved variables.
    pub fn to_schema(&self) -> Option<Type> {
        Some(match self {
            Ty::Bool => Type::Bool,
            Ty::Str => Type::Str,
            Ty::Int => Type::Int,
            Ty::Float => Type::Float,
            Ty::List(t) => Type::List(Box::new(t.to_schema()?)),
            Ty::Map(k, v) => Type::Map(Box::new(k.to_schema()?), Box::new(v.to_schema()?)),
            Ty::Struct(fs) => Type::Struct(
                fs.iter()
                    .map(|(n, t)| Some((n.clone(), t.to_schema()?)))
                    .collect::<Option<_>>()?,
            ),
            Ty::Variant => Type::Any,
            Ty::Func(..) | Ty::Var(_) => return None,
        })
    }

    /// The zero value of the type (`false`, `""`, `0`, `0.0`, empty, zero fields; `""` for
    /// the types without one: `variant`, functions, variables).
    pub fn zero(&self) -> Value {
        match self {
            Ty::Bool => Value::Bool(false),
            Ty::Int => Value::Int(0),
            Ty::Float => Value::Float(0.0),
            Ty::List(_) => Value::List(Vec::new()),
            Ty::Map(..) => Value::Map(Default::default()),
            Ty::Struct(fs) => {
                Value::Struct(fs.iter().map(|(n, t)| (n.clone(), t.zero())).collect())
            }
            _ => Value::Str(String::new()),
        }
    }

    /// Whether the type contains no unification variable.
    pub fn is_ground(&self) -> bool {
        match self {
            Ty::Var(_) => false,
            Ty::List(t) => t.is_ground(),
            Ty::Map(k, v) => k.is_ground() && v.is_ground(),
            Ty::Struct(fs) => fs.iter().all(|(_, t)| t.is_ground()),
            Ty::Func(a, r) => a.iter().all(Ty::is_ground) && r.is_ground(),
            _ => true,
        }
    }

    /// Whether the type contains a function type.
    pub fn has_func(&self) -> bool {
        match self {
            Ty::Func(..) => true,
            Ty::List(t) => t.has_func(),
            Ty::Map(k, v) => k.has_func() || v.has_func(),
            Ty::Struct(fs) => fs.iter().any(|(_, t)| t.has_func()),
            _ => false,
        }
    }

    /// Whether values of this type may be map keys (spec §5.1).
    pub fn is_hashable(&self) -> bool {
        match self {
            Ty::Bool | Ty::Str | Ty::Int | Ty::Float | Ty::Var(_) => true,
            Ty::Struct(fs) => fs.iter().all(|(_, t)| t.is_hashable()),
            _ => false,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Bool => f.write_str("bool"),
            Ty::Str => f.write_str("str"),
            Ty::Int => f.write_str("int"),
            Ty::Float => f.write_str("float"),
            Ty::List(t) => write!(f, "[]{t}"),
            Ty::Map(k, v) => write!(f, "map{{{k}: {v}}}"),
            Ty::Struct(fs) => {
                f.write_str("struct{")?;
                for (i, (n, t)) in fs.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str("}")
            }
            Ty::Func(a, r) => {
                f.write_str("func(")?;
                for (i, t) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                write!(f, ") {r}")
            }
            Ty::Variant => f.write_str("variant"),
            Ty::Var(n) => write!(f, "?{n}"),
        }
    }
}

/// Why two types do not unify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnifyError {
    /// Two different types (as far as they are known).
    Conflict(Ty, Ty),
    /// A type would contain itself (`$f($f)`).
    Infinite(Ty, Ty),
}

impl fmt::Display for UnifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnifyError::Conflict(a, b) => write!(f, "{a}/{b} conflict"),
            UnifyError::Infinite(a, b) => write!(f, "infinite type: {a} occurs in {b}"),
        }
    }
}

/// The substitution being solved: one slot per variable.
#[derive(Default, Debug, Clone)]
pub struct Unifier {
    slots: Vec<Option<Ty>>,
}

impl Unifier {
    /// An empty substitution.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh variable.
    pub fn fresh(&mut self) -> Ty {
        self.slots.push(None);
        Ty::Var(self.slots.len() as u32 - 1)
    }

    /// Follows variable bindings at the top of `t`.
    pub fn shallow(&self, t: &Ty) -> Ty {
        let mut t = t.clone();
        while let Ty::Var(n) = t {
            match &self.slots[n as usize] {
                Some(b) => t = b.clone(),
                None => return t,
            }
        }
        t
    }

    /// Applies the substitution everywhere in `t`.
    pub fn zonk(&self, t: &Ty) -> Ty {
        match self.shallow(t) {
            Ty::List(e) => Ty::list(self.zonk(&e)),
            Ty::Map(k, v) => Ty::map(self.zonk(&k), self.zonk(&v)),
            Ty::Struct(fs) => {
                Ty::Struct(fs.iter().map(|(n, t)| (n.clone(), self.zonk(t))).collect())
            }
            Ty::Func(a, r) => Ty::func(a.iter().map(|t| self.zonk(t)).collect(), self.zonk(&r)),
            t => t,
        }
    }

    fn occurs(&self, v: u32, t: &Ty) -> bool {
        match self.shallow(t) {
            Ty::Var(n) => n == v,
            Ty::List(e) => self.occurs(v, &e),
            Ty::Map(k, x) => self.occurs(v, &k) || self.occurs(v, &x),
            Ty::Struct(fs) => fs.iter().any(|(_, t)| self.occurs(v, t)),
            Ty::Func(a, r) => a.iter().any(|t| self.occurs(v, t)) || self.occurs(v, &r),
            _ => false,
        }
    }

    /// Makes `a` and `b` equal, or says why they cannot be.
    pub fn unify(&mut self, a: &Ty, b: &Ty) -> Result<(), UnifyError> {
        let (a, b) = (self.shallow(a), self.shallow(b));
        let conflict = |s: &Self| Err(UnifyError::Conflict(s.zonk(&a), s.zonk(&b)));
        match (&a, &b) {
            (Ty::Var(x), Ty::Var(y)) if x == y => Ok(()),
            (Ty::Var(x), t) | (t, Ty::Var(x)) => {
                if self.occurs(*x, t) {
                    return Err(UnifyError::Infinite(Ty::Var(*x), self.zonk(t)));
                }
                self.slots[*x as usize] = Some(t.clone());
                Ok(())
            }
            (Ty::Variant, _) | (_, Ty::Variant) => Ok(()),
            (Ty::Bool, Ty::Bool) | (Ty::Str, Ty::Str) | (Ty::Int, Ty::Int) => Ok(()),
            (Ty::Float, Ty::Float) => Ok(()),
            (Ty::List(x), Ty::List(y)) => self.unify(x, y),
            (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
                self.unify(k1, k2)?;
                self.unify(v1, v2)
            }
            (Ty::Struct(f1), Ty::Struct(f2)) => {
                if f1.len() != f2.len() || f1.iter().zip(f2).any(|((n1, _), (n2, _))| n1 != n2) {
                    return conflict(self);
                }
                for ((_, t1), (_, t2)) in f1.iter().zip(f2) {
                    self.unify(t1, t2)?;
                }
                Ok(())
            }
            (Ty::Func(a1, r1), Ty::Func(a2, r2)) => {
                if a1.len() != a2.len() {
                    return conflict(self);
                }
                for (x, y) in a1.iter().zip(a2) {
                    self.unify(x, y)?;
                }
                self.unify(r1, r2)
            }
            _ => conflict(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unify_binds_and_detects_conflicts() {
        let mut u = Unifier::new();
        let a = u.fresh();
        let b = u.fresh();
        u.unify(&Ty::list(a.clone()), &Ty::list(b.clone())).unwrap();
        u.unify(&b, &Ty::Int).unwrap();
        assert_eq!(u.zonk(&a), Ty::Int);
        let e = u.unify(&a, &Ty::Str).unwrap_err();
        assert_eq!(e.to_string(), "int/str conflict");
    }

    #[test]
    fn occurs_check_rejects_infinite_types() {
        let mut u = Unifier::new();
        let a = u.fresh();
        let r = u.fresh();
        let e = u.unify(&a, &Ty::func(vec![a.clone()], r)).unwrap_err();
        assert!(matches!(e, UnifyError::Infinite(..)));
    }

    #[test]
    fn struct_field_order_matters() {
        let mut u = Unifier::new();
        let s1 = Ty::Struct(vec![("a".into(), Ty::Int), ("b".into(), Ty::Int)]);
        let s2 = Ty::Struct(vec![("b".into(), Ty::Int), ("a".into(), Ty::Int)]);
        assert!(u.unify(&s1, &s2).is_err());
        assert!(u.unify(&s1, &s1.clone()).is_ok());
    }

    #[test]
    fn groundness_and_hashability() {
        let mut u = Unifier::new();
        let v = u.fresh();
        assert!(!Ty::list(v).is_ground());
        assert!(Ty::map(Ty::Str, Ty::Int).is_ground());
        assert!(!Ty::list(Ty::Int).is_hashable());
        assert_eq!(
            Ty::name_host_list().to_string(),
            "[]struct{name str; host str}"
        );
    }
}
