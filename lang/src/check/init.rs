//! Stage init (spec §11.1): static checks on the AST that need no scope or type information.
//!
//! Checked here: a field or `Meta:x` set twice in one resource body, edge properties other than
//! `Before`/`Depend`/`Notify`/`Listen`, kinds starting with `_`, duplicate struct-literal
//! fields, duplicate static map keys and static keys of different types, unhashable map key
//! types (in literals and annotations), `import` inside `for`/`forkv` bodies, and duplicate
//! parameter names. Each error is positioned at the node that carries the mistake; every error
//! of the program is reported.

use std::collections::HashSet;

use crate::diag::{Error, Stage};
use crate::syntax::ast::*;
use crate::syntax::parser::decode_escapes;

/// Runs every init check on a program and returns the errors found (all of them).
pub fn check(prog: &Program) -> Vec<Error> {
    let mut c = Checker { errors: Vec::new() };
    for s in &prog.stmts {
        c.stmt(s, false);
    }
    c.errors
}

struct Checker {
    errors: Vec<Error>,
}

/// A static map key value, for duplicate detection.
#[derive(PartialEq)]
enum KeyVal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl KeyVal {
    fn type_name(&self) -> &'static str {
        match self {
            KeyVal::Bool(_) => "bool",
            KeyVal::Int(_) => "int",
            KeyVal::Float(_) => "float",
            KeyVal::Str(_) => "str",
        }
    }
}

impl Checker {
    fn err(&mut self, msg: String, span: Span) {
        self.errors.push(Error::new(Stage::Init, msg, span));
    }

    fn stmt(&mut self, s: &Stmt, in_for: bool) {
        match &s.kind {
            StmtKind::Bind(b) => {
                if let Some(t) = &b.ty {
                    self.ty(t);
                }
            }
            StmtKind::Resource(r) => self.resource(r, s.span),
            StmtKind::Edge(e) => {
                for h in &e.halves {
                    self.kind(&h.res.kind, h.res.span);
                }
            }
            StmtKind::Func(f) => {
                self.params(&f.params);
                if let Some(t) = &f.ret {
                    self.ty(t);
                }
            }
            StmtKind::Class(c) => self.params(&c.params),
            StmtKind::Import(_) if in_for => self.err(
                "`import` is not allowed inside a `for` or `forkv` body".to_string(),
                s.span,
            ),
            _ => {}
        }
        for e in s.exprs() {
            self.expr(e);
        }
        let inner_for = in_for || matches!(s.kind, StmtKind::For(_) | StmtKind::ForKv(_));
        for b in s.blocks() {
            for st in &b.stmts {
                self.stmt(st, inner_for);
            }
        }
    }

    fn kind(&mut self, kind: &Name, span: Span) {
        if kind.text.starts_with('_') || kind.text.split(':').any(|k| k.starts_with('_')) {
            self.err(
                format!(
                    "resource kind `{}` is reserved (starts with `_`)",
                    kind.text
                ),
                span,
            );
        }
    }

    fn resource(&mut self, r: &Resource, span: Span) {
        self.kind(&r.kind, span);
        let mut fields = HashSet::new();
        let mut metas = HashSet::new();
        for e in &r.entries {
            match &e.kind {
                EntryKind::Field { name, .. } => {
                    if !fields.insert(name.text.as_str()) {
                        self.err(
                            format!("field `{}` is set twice in one resource", name.text),
                            span,
                        );
                    }
                }
                EntryKind::Meta { name, .. } => {
                    if !metas.insert(name.text.as_str()) {
                        self.err(
                            format!(
                                "meta parameter `Meta:{}` is set twice in one resource",
                                name.text
                            ),
                            span,
                        );
                    }
                }
                EntryKind::Edge { prop, target } => {
                    if EdgeProp::from_name(&prop.text).is_none() {
                        self.err(
                            format!(
                                "invalid property `{}` (expected Before, Depend, Notify or Listen)",
                                prop.text
                            ),
                            e.span,
                        );
                    }
                    self.kind(&target.kind, target.span);
                }
                EntryKind::MetaAll { .. } => {}
            }
        }
    }

    fn params(&mut self, params: &[Param]) {
        let mut seen = HashSet::new();
        for p in params {
            if !seen.insert(p.name.text.as_str()) {
                self.err(format!("duplicate parameter `${}`", p.name.text), p.span);
            }
            if let Some(t) = &p.ty {
                self.ty(t);
            }
        }
    }

    fn ty(&mut self, t: &TypeExpr) {
        match &t.kind {
            TypeKind::List(e) => self.ty(e),
            TypeKind::Map(k, v) => {
                if !hashable_type(k) {
                    self.err(
                        format!(
                            "map key type `{}` is not hashable (lists, maps and functions cannot be keys)",
                            crate::syntax::sexp::ty(k)
                        ),
                        k.span,
                    );
                }
                self.ty(k);
                self.ty(v);
            }
            TypeKind::Struct(fields) => {
                for (_, f) in fields {
                    self.ty(f);
                }
            }
            TypeKind::Func { params, ret } => {
                for (_, p) in params {
                    self.ty(p);
                }
                self.ty(ret);
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Struct(fields) => {
                let mut seen = HashSet::new();
                for f in fields {
                    if !seen.insert(f.name.text.as_str()) {
                        self.err(
                            format!("struct field `{}` is given twice", f.name.text),
                            e.span,
                        );
                    }
                }
            }
            ExprKind::Map(entries) => self.map(entries, e.span),
            ExprKind::Lambda(l) => self.lambda(l),
            ExprKind::Call {
                callee: Callee::Lambda(l),
                ..
            } => self.lambda(l),
            _ => {}
        }
        for c in e.children() {
            self.expr(c);
        }
    }

    fn lambda(&mut self, l: &Lambda) {
        self.params(&l.params);
        if let Some(t) = &l.ret {
            self.ty(t);
        }
    }

    fn map(&mut self, entries: &[MapEntry], span: Span) {
        let mut keys: Vec<KeyVal> = Vec::new();
        for m in entries {
            if !hashable_expr(&m.key) {
                self.err(
                    "map key is not hashable (lists, maps and functions cannot be keys)"
                        .to_string(),
                    m.key.span,
                );
                continue;
            }
            let Some(k) = static_key(&m.key) else {
                continue;
            };
            if let Some(first) = keys.first() {
                if first.type_name() != k.type_name() {
                    self.err(
                        format!(
                            "map keys have different types ({} and {})",
                            first.type_name(),
                            k.type_name()
                        ),
                        span,
                    );
                    return;
                }
            }
            if keys.contains(&k) {
                // At the whole literal, as mgmt.
                self.err("duplicate key in map literal".to_string(), span);
                continue;
            }
            keys.push(k);
        }
    }
}

/// The value of a literal key, when statically known.
fn static_key(e: &Expr) -> Option<KeyVal> {
    match &e.kind {
        ExprKind::Bool(b) => Some(KeyVal::Bool(*b)),
        ExprKind::Int(i) => Some(KeyVal::Int(*i)),
        ExprKind::Float(x) => Some(KeyVal::Float(*x)),
        ExprKind::RawStr(raw) if !raw.contains("${") => decode_escapes(raw).ok().map(KeyVal::Str),
        ExprKind::Str(s) => Some(KeyVal::Str(s.clone())),
        _ => None,
    }
}

/// False for key expressions that are syntactically a list, map or function.
fn hashable_expr(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::List(_) | ExprKind::Map(_) | ExprKind::Lambda(_) => false,
        ExprKind::Struct(fields) => fields.iter().all(|f| hashable_expr(&f.value)),
        _ => true,
    }
}

/// Whether values of this type may be map keys.
fn hashable_type(t: &TypeExpr) -> bool {
    match &t.kind {
        TypeKind::Bool | TypeKind::Str | TypeKind::Int | TypeKind::Float => true,
        TypeKind::Struct(fields) => fields.iter().all(|(_, f)| hashable_type(f)),
        TypeKind::List(_) | TypeKind::Map(..) | TypeKind::Func { .. } => false,
        TypeKind::Variant => true,
    }
}
