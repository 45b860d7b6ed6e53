//! The unify stage (spec §5): walks the code that contributes to output (§13 W8), gives every
//! expression a type, solves the constraints with [`Unifier`], then checks that every type is
//! ground (ambiguity) and that every polymorphic built-in accepts its solved instantiation.
//!
//! Named functions are polymorphic by copying: each call site types its own copy of the body.
//! Classes are copied per `include`. Lambdas are typed once where they are written.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use tend_model::META;
use tend_model::{KindSchema, Value};

use crate::diag::{Error, Stage};
use crate::funcs::{self, Builtin, Sig, SolvedResult};
use crate::scope::{
    find_class, find_func, find_var, resolve_path, split_dotted, FuncDef, Modules, Opener, Scope,
    Target, VarDef,
};
use crate::syntax::ast::{
    BinOp, Bind, Block, Callee, EntryKind, Expr, ExprKind, Include, Lambda, Name, Param, Stmt,
    StmtKind, TypeExpr, TypeKind,
};
use crate::syntax::span::Span;
use crate::types::{Ty, Unifier, UnifyError};

type Sc<'a> = Rc<Scope<'a, Ty>>;

enum Deferred {
    Index {
        base: Ty,
        index: Ty,
        out: Ty,
        span: Span,
    },
    Field {
        base: Ty,
        field: String,
        out: Ty,
        span: Span,
    },
    OptField {
        base: Ty,
        field: String,
        default: Ty,
        out: Ty,
        span: Span,
    },
}

enum Check {
    Builtin(&'static Builtin, Ty, Span),
    Op(BinOp, Ty, Span),
}

struct Typer<'a> {
    m: &'a Modules,
    schemas: &'a BTreeMap<String, KindSchema>,
    u: RefCell<Unifier>,
    global: Sc<'a>,
    files: RefCell<HashMap<usize, Sc<'a>>>,
    includes: RefCell<HashMap<(usize, usize), Sc<'a>>>,
    exprs: RefCell<Vec<(Span, Ty)>>,
    deferred: RefCell<Vec<Deferred>>,
    checks: RefCell<Vec<Check>>,
    fcache: RefCell<HashMap<FnKey, Ty>>,
    depth: RefCell<usize>,
    /// Calls that need their solved result type at run time
    /// ([`Builtin::solved_result`]), with the built-in and that type.
    solved_calls: RefCell<Vec<(Span, &'static Builtin, &'static SolvedResult, Ty)>>,
    /// Where parameters and loop variables are declared, by (scope id, name): a conflict in
    /// calling one of them as a function is reported there, as mgmt.
    decls: RefCell<HashMap<(usize, &'a str), Span>>,
}

/// The solved result type (as type text), by call span, of each call that needs it at run
/// time ([`Builtin::solved_result`]: one-argument `encoding.decode_json`, `value.get`).
pub type CallTypes = HashMap<Span, String>;

/// A named function (address, defining scope) called with ground argument types.
type FnKey = (usize, usize, Vec<Ty>);

/// The type of a meta parameter (spec §8.4).
pub fn meta_type(name: &str) -> Option<Ty> {
    tend_model::meta_param(name).map(|p| Ty::from_schema(&p.ty()))
}

/// The struct type of `Meta => …`.
pub fn meta_struct() -> Ty {
    Ty::Struct(
        META.iter()
            .map(|p| (p.name.to_string(), Ty::from_schema(&p.ty())))
            .collect(),
    )
}

/// Runs the unify stage over the program; returns what calls need of the solved types.
pub fn check(m: &Modules, schemas: &BTreeMap<String, KindSchema>) -> Result<CallTypes, Error> {
    let mut global = Scope::new(None);
    global.vars.insert("hostname", VarDef::Val(Ty::Str));
    let t = Typer {
        m,
        schemas,
        u: RefCell::new(Unifier::new()),
        global: Rc::new(global),
        files: RefCell::new(HashMap::new()),
        includes: RefCell::new(HashMap::new()),
        exprs: RefCell::new(Vec::new()),
        deferred: RefCell::new(Vec::new()),
        checks: RefCell::new(Vec::new()),
        fcache: RefCell::new(HashMap::new()),
        depth: RefCell::new(0),
        solved_calls: RefCell::new(Vec::new()),
        decls: RefCell::new(HashMap::new()),
    };
    let main = &m.files[0];
    let mut sc = Scope::new(Some(t.global.clone()));
    sc.define(main.file, &main.stmts, m);
    let sc = Rc::new(sc);
    t.stmts(&sc, &main.stmts)?;
    t.solve()?;
    t.call_types()
}

fn conflict(e: UnifyError, span: Span) -> Error {
    Error::new(Stage::Unify, e.to_string(), span)
}

impl<'a> Opener<'a, Ty> for Typer<'a> {
    fn open_file(&self, idx: usize, _at: Span) -> Result<Sc<'a>, Error> {
        if let Some(s) = self.files.borrow().get(&idx) {
            return Ok(s.clone());
        }
        let f = &self.m.files[idx];
        let mut sc = Scope::new(Some(self.global.clone()));
        sc.define(f.file, &f.stmts, self.m);
        let sc = Rc::new(sc);
        self.files.borrow_mut().insert(idx, sc.clone());
        Ok(sc)
    }

    fn open_include(&self, sc: &Sc<'a>, inc: &'a Include) -> Result<Sc<'a>, Error> {
        let key = (sc.id, inc as *const Include as usize);
        if let Some(s) = self.includes.borrow().get(&key) {
            return Ok(s.clone());
        }
        let (path, last) = split_dotted(&inc.name.text);
        let found = if path.is_empty() {
            find_class(self, sc, last)
        } else {
            match resolve_path(self, sc, &path, inc.name.span)? {
                Target::Scope(s) => find_class(self, &s, last),
                Target::Core(_) => None,
            }
        };
        let Some((class, at)) = found else {
            return Err(Error::new(
                Stage::SetScope,
                format!("no class `{}` in scope", inc.name.text),
                inc.name.span,
            ));
        };
        let mut params = Scope::new(Some(at));
        for (p, a) in class.params.iter().zip(&inc.args) {
            let t = self.param(p)?;
            let at = self.expr(sc, a)?;
            self.unify(&t, &at, a.span)?;
            params.vars.insert(&p.name.text, VarDef::Val(t));
            self.decls
                .borrow_mut()
                .insert((params.id, &p.name.text), p.span);
        }
        let mut body = Scope::new(Some(Rc::new(params)));
        body.define(class.body.span.file, &class.body.stmts, self.m);
        let body = Rc::new(body);
        self.includes.borrow_mut().insert(key, body.clone());
        self.nested(inc.name.span, || self.stmts(&body, &class.body.stmts))?;
        Ok(body)
    }
}

impl<'a> Typer<'a> {
    /// Runs `f` one nesting level deeper (binds, calls, includes), refusing runaway depth.
    fn nested<T>(&self, span: Span, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        {
            let mut d = self.depth.borrow_mut();
            if *d >= crate::scope::MAX_NESTING {
                return Err(Error::new(
                    Stage::Unify,
                    "definitions nest more than 1000 levels deep",
                    span,
                ));
            }
            *d += 1;
        }
        let r = f();
        *self.depth.borrow_mut() -= 1;
        r
    }

    fn fresh(&self) -> Ty {
        self.u.borrow_mut().fresh()
    }

    fn unify(&self, a: &Ty, b: &Ty, span: Span) -> Result<(), Error> {
        self.u
            .borrow_mut()
            .unify(a, b)
            .map_err(|e| conflict(e, span))
    }

    fn shallow(&self, t: &Ty) -> Ty {
        self.u.borrow().shallow(t)
    }

    fn annotation(&self, t: &TypeExpr) -> Ty {
        match &t.kind {
            TypeKind::Bool => Ty::Bool,
            TypeKind::Str => Ty::Str,
            TypeKind::Int => Ty::Int,
            TypeKind::Float => Ty::Float,
            TypeKind::Variant => Ty::Variant,
            TypeKind::List(e) => Ty::list(self.annotation(e)),
            TypeKind::Map(k, v) => Ty::map(self.annotation(k), self.annotation(v)),
            TypeKind::Struct(fs) => Ty::Struct(
                fs.iter()
                    .map(|(n, t)| (n.text.clone(), self.annotation(t)))
                    .collect(),
            ),
            TypeKind::Func { params, ret } => Ty::func(
                params.iter().map(|(_, t)| self.annotation(t)).collect(),
                self.annotation(ret),
            ),
        }
    }

    fn param(&self, p: &Param) -> Result<Ty, Error> {
        Ok(match &p.ty {
            Some(t) => self.annotation(t),
            None => self.fresh(),
        })
    }

    fn stmts(&self, sc: &Sc<'a>, stmts: &'a [Stmt]) -> Result<(), Error> {
        for st in stmts {
            self.stmt(sc, st)?;
        }
        Ok(())
    }

    fn block(&self, sc: &Sc<'a>, b: &'a Block, vars: Vec<(&'a Name, Ty)>) -> Result<(), Error> {
        let mut s = Scope::new(Some(sc.clone()));
        for (n, t) in vars {
            s.vars.insert(&n.text, VarDef::Val(t));
            self.decls.borrow_mut().insert((s.id, &n.text), n.span);
        }
        s.define(b.span.file, &b.stmts, self.m);
        self.stmts(&Rc::new(s), &b.stmts)
    }

    /// The static name type of spec §13 W7.
    fn static_str(&self, sc: &Sc<'a>, e: &'a Expr, depth: u32) -> bool {
        if depth > 64 {
            return false;
        }
        match &e.kind {
            ExprKind::Str(_) | ExprKind::RawStr(_) | ExprKind::Concat(_) => true,
            ExprKind::Var(n)
                if n.text.trim_start().starts_with("const") && n.text.contains('.') =>
            {
                true
            }
            ExprKind::Var(n) => match self.find_bind(sc, &n.text) {
                Some((b, bsc)) => {
                    matches!(b.ty.as_ref().map(|t| &t.kind), Some(TypeKind::Str))
                        || self.static_str(&bsc, &b.value, depth + 1)
                }
                None => false,
            },
            ExprKind::If { then, els, .. } => {
                self.static_str(sc, then, depth + 1) || self.static_str(sc, els, depth + 1)
            }
            ExprKind::Except { lhs, rhs } => {
                self.static_str(sc, lhs, depth + 1) || self.static_str(sc, rhs, depth + 1)
            }
            ExprKind::OptField { default, .. } => self.static_str(sc, default, depth + 1),
            ExprKind::Call {
                callee: Callee::Named(n),
                ..
            } => {
                let (path, last) = split_dotted(&n.text);
                let found = if path.is_empty() {
                    match find_func(self, sc, last) {
                        Some(f) => f,
                        None => return funcs::lookup("", last).is_some_and(builtin_returns_str),
                    }
                } else {
                    match resolve_path(self, sc, &path, n.span) {
                        Ok(Target::Core(m)) => FuncDef::Core(m),
                        Ok(Target::Scope(s)) => match find_func(self, &s, last) {
                            Some(f) => f,
                            None => return false,
                        },
                        Err(_) => return false,
                    }
                };
                match found {
                    FuncDef::Core(m) => funcs::lookup(&m, last).is_some_and(builtin_returns_str),
                    FuncDef::User(f, fsc) => {
                        matches!(f.ret.as_ref().map(|t| &t.kind), Some(TypeKind::Str))
                            || self.static_str(&fsc, &f.body, depth + 1)
                    }
                }
            }
            _ => false,
        }
    }

    /// Where the parameter or loop variable `text` (undotted) is declared.
    fn decl_of(&self, sc: &Sc<'a>, text: &str) -> Option<Span> {
        let s = find_var(self, sc, text)?;
        let key = (s.id, *s.vars.get_key_value(text)?.0);
        self.decls.borrow().get(&key).copied()
    }

    fn find_bind(&self, sc: &Sc<'a>, text: &str) -> Option<(&'a Bind, Sc<'a>)> {
        let (path, last) = split_dotted(text);
        let s = if path.is_empty() {
            sc.clone()
        } else {
            match resolve_path(self, sc, &path, Span::default()).ok()? {
                Target::Scope(s) => s,
                Target::Core(_) => return None,
            }
        };
        let s = find_var(self, &s, last)?;
        match s.vars.get(last)? {
            VarDef::Bind(b) => Some((*b, s.clone())),
            VarDef::Val(_) => None,
        }
    }

    /// A statically known value (printf formats, spec §5.5).
    fn static_value(&self, sc: &Sc<'a>, e: &'a Expr, depth: u32) -> Option<Value> {
        if depth > 64 {
            return None;
        }
        match &e.kind {
            ExprKind::Str(s) | ExprKind::RawStr(s) => Some(Value::Str(s.clone())),
            ExprKind::Int(i) => Some(Value::Int(*i)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::Float(f) => Some(Value::Float(*f)),
            ExprKind::Concat(parts) => {
                let mut out = String::new();
                for p in parts {
                    out.push_str(self.static_value(sc, p, depth + 1)?.as_str()?);
                }
                Some(Value::Str(out))
            }
            ExprKind::Binary {
                op: BinOp::Add,
                lhs,
                rhs,
                ..
            } => {
                let (a, b) = (
                    self.static_value(sc, lhs, depth + 1)?,
                    self.static_value(sc, rhs, depth + 1)?,
                );
                Some(Value::Str(format!("{}{}", a.as_str()?, b.as_str()?)))
            }
            ExprKind::Var(n) => {
                let (b, bsc) = self.find_bind(sc, &n.text)?;
                self.static_value(&bsc, &b.value, depth + 1)
            }
            _ => None,
        }
    }

    fn name_type(&self, sc: &Sc<'a>, e: &'a Expr, collect: bool) -> Result<(), Error> {
        let t = self.expr(sc, e)?;
        let want = if self.static_str(sc, e, 0) {
            Ty::Str
        } else if collect {
            match self.shallow(&t) {
                Ty::List(el) if self.shallow(&el) == Ty::Str => Ty::list(Ty::Str),
                _ => Ty::name_host_list(),
            }
        } else {
            Ty::list(Ty::Str)
        };
        let r = self.u.borrow_mut().unify(&want, &t);
        r.map_err(|_| {
            let found = self.u.borrow().zonk(&t);
            Error::new(
                Stage::Unify,
                format!("name: {want} assumed, {found} found"),
                e.span,
            )
        })
    }

    fn stmt(&self, sc: &Sc<'a>, st: &'a Stmt) -> Result<(), Error> {
        match &st.kind {
            StmtKind::Bind(_) | StmtKind::Func(_) | StmtKind::Class(_) | StmtKind::Import(_) => {
                Ok(())
            }
            StmtKind::Include(inc) => self.open_include(sc, inc).map(drop),
            StmtKind::Resource(r) => {
                let schema = self.schemas.get(&r.kind.text);
                self.name_type(sc, &r.name, r.collect)?;
                for en in &r.entries {
                    if let Some(c) = &en.cond {
                        let t = self.expr(sc, c)?;
                        self.unify(&Ty::Bool, &t, c.span)?;
                    }
                    match &en.kind {
                        EntryKind::Field { name, value } => {
                            let Some(schema) = schema else {
                                return Err(Error::new(
                                    Stage::Unify,
                                    format!("unknown resource kind `{}`", r.kind.text),
                                    r.kind.span,
                                ));
                            };
                            let Some(f) = schema.get(&name.text) else {
                                return Err(Error::new(
                                    Stage::Unify,
                                    format!("kind `{}` has no field `{}`", r.kind.text, name.text),
                                    name.span,
                                ));
                            };
                            let t = self.expr(sc, value)?;
                            let want = Ty::from_schema(&f.ty);
                            self.unify(&want, &t, value.span)?;
                        }
                        EntryKind::Meta { name, value } => {
                            let Some(want) = meta_type(&name.text) else {
                                return Err(Error::new(
                                    Stage::Unify,
                                    format!("no meta parameter `{}`", name.text),
                                    name.span,
                                ));
                            };
                            let t = self.expr(sc, value)?;
                            self.unify(&want, &t, value.span)?;
                        }
                        EntryKind::MetaAll { value } => {
                            let t = self.expr(sc, value)?;
                            self.unify(&meta_struct(), &t, value.span)?;
                        }
                        EntryKind::Edge { target, .. } => {
                            self.name_type(sc, &target.name, false)?
                        }
                    }
                }
                Ok(())
            }
            StmtKind::Edge(e) => {
                if e.halves.len() < 2 {
                    return Err(Error::new(Stage::Unify, "edge with only one half", st.span));
                }
                for h in &e.halves {
                    self.name_type(sc, &h.res.name, false)?;
                }
                if let (Some(sf), Some(rf)) = (
                    &e.halves[0].field,
                    e.halves.get(1).and_then(|h| h.field.as_ref()),
                ) {
                    let (k1, k2) = (&e.halves[0].res.kind, &e.halves[1].res.kind);
                    let s1 = self.schemas.get(&k1.text);
                    let Some(sent) = s1.and_then(|s| s.sent(&sf.text)) else {
                        return Err(Error::new(
                            Stage::Unify,
                            format!("kind `{}` cannot send `{}`", k1.text, sf.text),
                            sf.span,
                        ));
                    };
                    // Any param can receive (as in mgmt).
                    let s2 = self.schemas.get(&k2.text);
                    let Some(f2) = s2.and_then(|s| s.get(&rf.text)) else {
                        return Err(Error::new(
                            Stage::Unify,
                            format!(
                                "kind `{}` has no field `{}` to receive into",
                                k2.text, rf.text
                            ),
                            rf.span,
                        ));
                    };
                    let (t1, t2) = (Ty::from_schema(&sent.ty), Ty::from_schema(&f2.ty));
                    if self.u.borrow_mut().unify(&t1, &t2).is_err() {
                        return Err(Error::new(
                            Stage::Unify,
                            format!(
                                "kind `{}` sends `{}` as {}, but field `{}` of kind `{}` is {}",
                                k1.text, sf.text, sent.ty, rf.text, k2.text, f2.ty
                            ),
                            st.span,
                        ));
                    }
                }
                Ok(())
            }
            StmtKind::If(i) => {
                let t = self.expr(sc, &i.cond)?;
                self.unify(&Ty::Bool, &t, i.cond.span)?;
                self.block(sc, &i.then, vec![])?;
                if let Some(b) = &i.els {
                    self.block(sc, b, vec![])?;
                }
                Ok(())
            }
            StmtKind::For(f) => {
                let t = self.expr(sc, &f.iter)?;
                let el = self.fresh();
                self.unify(&Ty::list(el.clone()), &t, f.iter.span)?;
                self.block(sc, &f.body, vec![(&f.key, Ty::Int), (&f.value, el)])
            }
            StmtKind::ForKv(f) => {
                let t = self.expr(sc, &f.iter)?;
                let (k, v) = (self.fresh(), self.fresh());
                self.unify(&Ty::map(k.clone(), v.clone()), &t, f.iter.span)?;
                self.block(sc, &f.body, vec![(&f.key, k), (&f.value, v)])
            }
            StmtKind::Panic(p) => {
                let ts: Vec<Ty> = p
                    .args
                    .iter()
                    .map(|a| self.expr(sc, a))
                    .collect::<Result<_, _>>()?;
                match ts.len() {
                    1 => match self.shallow(&ts[0]) {
                        Ty::Bool | Ty::Str => Ok(()),
                        t => self.unify(&Ty::Bool, &t, p.args[0].span),
                    },
                    2 => {
                        self.unify(&Ty::Bool, &ts[0], p.args[0].span)?;
                        self.unify(&Ty::Str, &ts[1], p.args[1].span)
                    }
                    n => Err(Error::new(
                        Stage::Unify,
                        format!("panic takes 1 or 2 arguments, got {n}"),
                        st.span,
                    )),
                }
            }
        }
    }

    fn bind_type(&self, sc: &Sc<'a>, b: &'a Bind) -> Result<Ty, Error> {
        let key = b as *const Bind as usize;
        if let Some(t) = sc.memo.borrow().get(&key) {
            return Ok(t.clone());
        }
        // A placeholder first, so a (rejected earlier) cycle cannot loop forever.
        let v = self.fresh();
        sc.memo.borrow_mut().insert(key, v.clone());
        let t = self.nested(b.value.span, || self.expr(sc, &b.value))?;
        if let Some(a) = &b.ty {
            let at = self.annotation(a);
            self.unify(&at, &t, b.value.span)?;
        }
        self.unify(&v, &t, b.value.span)?;
        Ok(t)
    }

    fn var(&self, sc: &Sc<'a>, text: &str, span: Span) -> Result<Ty, Error> {
        let (path, last) = split_dotted(text);
        if !path.is_empty()
            && path[0] == "const"
            && crate::scope::find_ns(self, sc, "const").is_none()
        {
            // A kind's constant has the type of its value: mostly `str`, an `int` where the
            // field is one (`tar.format.*`, `gzip.level.*`, as mgmt).
            let rest = text
                .split('.')
                .map(str::trim)
                .skip(1)
                .collect::<Vec<_>>()
                .join(".");
            return Ok(match crate::graph::constant(self.schemas, &rest) {
                Some(Value::Int(_)) => Ty::Int,
                _ => Ty::Str,
            });
        }
        let s = if path.is_empty() {
            sc.clone()
        } else {
            match resolve_path(self, sc, &path, span)? {
                Target::Scope(s) => s,
                Target::Core(m) => {
                    return Err(Error::new(
                        Stage::SetScope,
                        format!("module `{m}` has no variable `{last}`"),
                        span,
                    ))
                }
            }
        };
        let Some(s) = find_var(self, &s, last) else {
            return Err(Error::new(
                Stage::SetScope,
                format!("no variable `${text}` in scope"),
                span,
            ));
        };
        match s.vars.get(last) {
            Some(VarDef::Bind(b)) => {
                let s = s.clone();
                self.bind_type(&s, b)
            }
            Some(VarDef::Val(t)) => Ok(t.clone()),
            None => Err(Error::new(
                Stage::SetScope,
                format!("no variable `${text}` in scope"),
                span,
            )),
        }
    }

    fn lambda(&self, sc: &Sc<'a>, l: &'a Lambda) -> Result<Ty, Error> {
        let mut s = Scope::new(Some(sc.clone()));
        let mut args = Vec::new();
        for p in &l.params {
            let t = self.param(p)?;
            s.vars.insert(&p.name.text, VarDef::Val(t.clone()));
            self.decls.borrow_mut().insert((s.id, &p.name.text), p.span);
            args.push(t);
        }
        let r = self.expr(&Rc::new(s), &l.body)?;
        if let Some(rt) = &l.ret {
            let want = self.annotation(rt);
            self.unify(&want, &r, l.body.span)?;
        }
        Ok(Ty::func(args, r))
    }

    fn call(
        &self,
        sc: &Sc<'a>,
        e: &'a Expr,
        callee: &'a Callee,
        args: &'a [Expr],
    ) -> Result<Ty, Error> {
        let mut ats = Vec::new();
        for a in args {
            ats.push(self.expr(sc, a)?);
        }
        let ret = self.fresh();
        let want = Ty::func(ats.clone(), ret.clone());
        match callee {
            Callee::Named(n) => {
                let (path, last) = split_dotted(&n.text);
                let found = if path.is_empty() {
                    match find_func(self, sc, last) {
                        Some(f) => Some(f),
                        None => {
                            let b = funcs::lookup("", last).ok_or_else(|| {
                                Error::new(
                                    Stage::SetScope,
                                    format!("no function `{}` in scope", n.text),
                                    n.span,
                                )
                            })?;
                            return self.builtin(sc, b, e, args, &want, &ret);
                        }
                    }
                } else {
                    match resolve_path(self, sc, &path, n.span)? {
                        Target::Core(m) => Some(FuncDef::Core(m)),
                        Target::Scope(s) => find_func(self, &s, last),
                    }
                };
                let (f, fsc) = match found {
                    Some(FuncDef::User(f, fsc)) => (f, fsc),
                    Some(FuncDef::Core(m)) => {
                        let b = funcs::lookup(&m, last).ok_or_else(|| {
                            Error::new(
                                Stage::SetScope,
                                format!("module `{m}` has no function `{last}`"),
                                n.span,
                            )
                        })?;
                        return self.builtin(sc, b, e, args, &want, &ret);
                    }
                    None => {
                        return Err(Error::new(
                            Stage::SetScope,
                            format!("no function `{}` in scope", n.text),
                            n.span,
                        ))
                    }
                };
                if f.params.len() != args.len() {
                    // At the definition, as mgmt; the call follows as a second place.
                    return Err(Error::new(
                        Stage::Unify,
                        format!(
                            "function `{}` takes {} arguments, got {}",
                            n.text,
                            f.params.len(),
                            args.len()
                        ),
                        f.span,
                    )
                    .with_also([e.span]));
                }
                // A fresh copy of the function per call site (polymorphism). A call with the
                // same ground argument types as an earlier one has the same result type, so
                // it is not typed again (this keeps chains of calls linear).
                let zonked: Vec<Ty> = ats.iter().map(|t| self.u.borrow().zonk(t)).collect();
                let key = (f as *const _ as usize, fsc.id, zonked);
                let ground = key.2.iter().all(Ty::is_ground);
                if ground {
                    if let Some(r) = self.fcache.borrow().get(&key).cloned() {
                        self.unify(&ret, &r, e.span)?;
                        return Ok(ret);
                    }
                }
                let mut s = Scope::new(Some(fsc));
                for ((p, a), at) in f.params.iter().zip(args).zip(&ats) {
                    let t = self.param(p)?;
                    self.unify(&t, at, a.span)?;
                    s.vars.insert(&p.name.text, VarDef::Val(t));
                    self.decls.borrow_mut().insert((s.id, &p.name.text), p.span);
                }
                let s = Rc::new(s);
                let r = self.nested(e.span, || self.expr(&s, &f.body))?;
                if let Some(rt) = &f.ret {
                    let w = self.annotation(rt);
                    self.unify(&w, &r, f.body.span)?;
                }
                self.unify(&ret, &r, e.span)?;
                let rz = self.u.borrow().zonk(&r);
                if ground && rz.is_ground() {
                    self.fcache.borrow_mut().insert(key, rz);
                }
                Ok(ret)
            }
            Callee::Var(n) => {
                let ft = self.var(sc, &n.text, n.span)?;
                // A conflict is reported where the function value comes from (as mgmt): the
                // lambda of a bind, the declaration of a parameter or loop variable.
                let at = match self.find_bind(sc, &n.text) {
                    Some((b, _)) if matches!(b.value.kind, ExprKind::Lambda(_)) => b.value.span,
                    Some(_) => e.span,
                    None => self.decl_of(sc, &n.text).unwrap_or(e.span),
                };
                if let Ty::Func(ps, _) = self.shallow(&ft) {
                    if ps.len() != args.len() {
                        return Err(Error::new(
                            Stage::Unify,
                            format!("function takes {} arguments, got {}", ps.len(), args.len()),
                            e.span,
                        ));
                    }
                }
                self.unify(&ft, &want, at)?;
                Ok(ret)
            }
            Callee::Lambda(l) => {
                let ft = self.lambda(sc, l)?;
                self.unify(&ft, &want, e.span)?;
                Ok(ret)
            }
        }
    }

    fn builtin(
        &self,
        sc: &Sc<'a>,
        b: &'static Builtin,
        e: &'a Expr,
        args: &'a [Expr],
        want: &Ty,
        ret: &Ty,
    ) -> Result<Ty, Error> {
        let statics: Vec<Option<Value>> =
            args.iter().map(|a| self.static_value(sc, a, 0)).collect();
        let sig = {
            let mut u = self.u.borrow_mut();
            b.signature(&mut u, &statics)
        }
        .map_err(|m| Error::new(Stage::Unify, m, e.span))?;
        if let Ty::Func(ps, _) = &sig {
            if ps.len() != args.len() {
                return Err(Error::new(
                    Stage::Unify,
                    format!(
                        "{} takes {} arguments, got {}",
                        b.display_name(),
                        ps.len(),
                        args.len()
                    ),
                    e.span,
                ));
            }
            for (i, a) in args.iter().enumerate() {
                let at = match want {
                    Ty::Func(w, _) => w[i].clone(),
                    _ => unreachable!("built above"),
                };
                let r = self.u.borrow_mut().unify(&ps[i], &at);
                r.map_err(|err| {
                    let (w, g) = (self.u.borrow().zonk(&ps[i]), self.u.borrow().zonk(&at));
                    if b.name == "printf" {
                        let verb = match statics.first() {
                            Some(Some(Value::Str(f))) => {
                                funcs::text::parse_format(f).ok().and_then(|ps| {
                                    ps.into_iter()
                                        .filter_map(|p| match p {
                                            funcs::text::Piece::Verb(v) => Some(v),
                                            funcs::text::Piece::Text(_) => None,
                                        })
                                        .nth(i.wrapping_sub(1))
                                })
                            }
                            _ => None,
                        };
                        let what = match verb {
                            Some(v) => format!("printf verb %{v}"),
                            None => format!("printf argument {i}"),
                        };
                        Error::new(Stage::Unify, format!("{what} needs {w}, got {g}"), e.span)
                    } else {
                        let _ = a;
                        conflict(err, e.span)
                    }
                })?;
            }
        }
        self.unify(&sig, want, e.span)?;
        if let Some(need) = b.solved_result(args.len()) {
            self.solved_calls
                .borrow_mut()
                .push((e.span, b, need, ret.clone()));
        }
        if b.check.is_some() {
            self.checks
                .borrow_mut()
                .push(Check::Builtin(b, sig, e.span));
        }
        Ok(ret.clone())
    }

    fn expr(&self, sc: &Sc<'a>, e: &'a Expr) -> Result<Ty, Error> {
        let t = self.expr_inner(sc, e)?;
        self.exprs.borrow_mut().push((e.span, t.clone()));
        Ok(t)
    }

    fn expr_inner(&self, sc: &Sc<'a>, e: &'a Expr) -> Result<Ty, Error> {
        Ok(match &e.kind {
            ExprKind::Bool(_) => Ty::Bool,
            ExprKind::Int(_) => Ty::Int,
            ExprKind::Float(_) => Ty::Float,
            ExprKind::Str(_) | ExprKind::RawStr(_) => Ty::Str,
            ExprKind::Concat(parts) => {
                for p in parts {
                    let t = self.expr(sc, p)?;
                    let r = self.u.borrow_mut().unify(&Ty::Str, &t);
                    r.map_err(|_| {
                        let g = self.u.borrow().zonk(&t);
                        Error::new(
                            Stage::Unify,
                            format!("cannot use {g} where str is expected"),
                            p.span,
                        )
                    })?;
                }
                Ty::Str
            }
            ExprKind::List(items) => {
                let el = self.fresh();
                for i in items {
                    let t = self.expr(sc, i)?;
                    self.unify(&el, &t, i.span)?;
                }
                Ty::list(el)
            }
            ExprKind::Map(es) => {
                let (k, v) = (self.fresh(), self.fresh());
                for me in es {
                    let kt = self.expr(sc, &me.key)?;
                    self.unify(&k, &kt, me.key.span)?;
                    let vt = self.expr(sc, &me.value)?;
                    self.unify(&v, &vt, me.value.span)?;
                }
                self.checks
                    .borrow_mut()
                    .push(Check::Op(BinOp::In, k.clone(), e.span));
                Ty::map(k, v)
            }
            ExprKind::Struct(fs) => {
                let mut out = Vec::new();
                for f in fs {
                    out.push((f.name.text.clone(), self.expr(sc, &f.value)?));
                }
                Ty::Struct(out)
            }
            ExprKind::Var(n) => self.var(sc, &n.text, n.span)?,
            ExprKind::Call { callee, args } => self.call(sc, e, callee, args)?,
            ExprKind::Lambda(l) => self.lambda(sc, l)?,
            ExprKind::If { cond, then, els } => {
                let c = self.expr(sc, cond)?;
                self.unify(&Ty::Bool, &c, cond.span)?;
                let a = self.expr(sc, then)?;
                let b = self.expr(sc, els)?;
                self.unify(&a, &b, e.span)?;
                a
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                let a = self.expr(sc, lhs)?;
                let b = self.expr(sc, rhs)?;
                match op {
                    BinOp::And | BinOp::Or => {
                        self.unify(&Ty::Bool, &a, lhs.span)?;
                        self.unify(&Ty::Bool, &b, rhs.span)?;
                        Ty::Bool
                    }
                    BinOp::In => {
                        self.unify(&Ty::list(a), &b, e.span)?;
                        Ty::Bool
                    }
                    _ => {
                        self.unify(&a, &b, e.span)?;
                        self.checks
                            .borrow_mut()
                            .push(Check::Op(*op, a.clone(), e.span));
                        match op {
                            BinOp::Add | BinOp::Sub | BinOp::Mul => a,
                            BinOp::Div => Ty::Float,
                            _ => Ty::Bool,
                        }
                    }
                }
            }
            ExprKind::Not(x) => {
                let t = self.expr(sc, x)?;
                self.unify(&Ty::Bool, &t, x.span)?;
                Ty::Bool
            }
            ExprKind::Except { lhs, rhs } => {
                let a = self.expr(sc, lhs)?;
                let b = self.expr(sc, rhs)?;
                self.unify(&a, &b, e.span)?;
                a
            }
            ExprKind::Index { base, index } => {
                let b = self.expr(sc, base)?;
                let i = self.expr(sc, index)?;
                let out = self.fresh();
                self.deferred.borrow_mut().push(Deferred::Index {
                    base: b,
                    index: i,
                    out: out.clone(),
                    span: e.span,
                });
                self.progress()?;
                out
            }
            ExprKind::Field { base, field } => {
                let b = self.expr(sc, base)?;
                let out = self.fresh();
                self.deferred.borrow_mut().push(Deferred::Field {
                    base: b,
                    field: field.text.clone(),
                    out: out.clone(),
                    span: e.span,
                });
                self.progress()?;
                out
            }
            ExprKind::OptField {
                base,
                field,
                default,
            } => {
                let b = self.expr(sc, base)?;
                let d = self.expr(sc, default)?;
                let out = self.fresh();
                self.deferred.borrow_mut().push(Deferred::OptField {
                    base: b,
                    field: field.text.clone(),
                    default: d,
                    out: out.clone(),
                    span: e.span,
                });
                self.progress()?;
                out
            }
        })
    }

    /// Resolves deferred lookups whose base type became known. Returns whether any did.
    fn progress(&self) -> Result<bool, Error> {
        let mut any = false;
        loop {
            let pending = std::mem::take(&mut *self.deferred.borrow_mut());
            let mut keep = Vec::new();
            let mut moved = false;
            for d in pending {
                let base = match &d {
                    Deferred::Index { base, .. }
                    | Deferred::Field { base, .. }
                    | Deferred::OptField { base, .. } => self.shallow(base),
                };
                if let Ty::Var(_) = base {
                    keep.push(d);
                    continue;
                }
                moved = true;
                match d {
                    Deferred::Index {
                        index, out, span, ..
                    } => match &base {
                        Ty::List(el) => {
                            self.unify(&Ty::Int, &index, span)?;
                            self.unify(el, &out, span)?;
                        }
                        Ty::Map(k, v) => {
                            self.unify(k, &index, span)?;
                            self.unify(v, &out, span)?;
                        }
                        t => {
                            let t = self.u.borrow().zonk(t);
                            return Err(Error::new(
                                Stage::Unify,
                                format!("cannot index a value of type {t}"),
                                span,
                            ));
                        }
                    },
                    Deferred::Field {
                        field, out, span, ..
                    } => match &base {
                        Ty::Struct(fs) => match fs.iter().find(|(n, _)| *n == field) {
                            Some((_, ft)) => self.unify(ft, &out, span)?,
                            None => {
                                let t = self.u.borrow().zonk(&base);
                                return Err(Error::new(
                                    Stage::Unify,
                                    format!("{t} has no field `{field}`"),
                                    span,
                                ));
                            }
                        },
                        t => {
                            let t = self.u.borrow().zonk(t);
                            return Err(Error::new(
                                Stage::Unify,
                                format!("cannot use -> on a value of type {t}"),
                                span,
                            ));
                        }
                    },
                    Deferred::OptField {
                        field,
                        default,
                        out,
                        span,
                        ..
                    } => match &base {
                        Ty::Struct(fs) => {
                            if let Some((_, ft)) = fs.iter().find(|(n, _)| *n == field) {
                                self.unify(ft, &default, span)?;
                            }
                            self.unify(&default, &out, span)?;
                        }
                        t => {
                            let t = self.u.borrow().zonk(t);
                            return Err(Error::new(
                                Stage::Unify,
                                format!("cannot use -> on a value of type {t}"),
                                span,
                            ));
                        }
                    },
                }
            }
            self.deferred.borrow_mut().extend(keep);
            if !moved {
                return Ok(any);
            }
            any = true;
        }
    }

    /// The solved result types of the calls that need them at run time, each accepted by its
    /// built-in's check; a call typed twice (in a named function called at two types) must
    /// get one type.
    fn call_types(&self) -> Result<CallTypes, Error> {
        let u = self.u.borrow();
        let mut out = CallTypes::new();
        for (span, b, need, t) in self.solved_calls.borrow().iter() {
            // Ground: `solve` reported the others.
            let name = b.display_name();
            let t = u.zonk(t);
            (need.check)(&t)
                .map_err(|m| Error::new(Stage::Unify, format!("{name}: {m}"), *span))?;
            let text = t.to_string();
            match out.get(span) {
                Some(prev) if *prev != text => {
                    return Err(Error::new(
                        Stage::Unify,
                        format!(
                            "{name} is used here at two types ({prev} and {text}); {}",
                            need.two_types
                        ),
                        *span,
                    ))
                }
                _ => {
                    out.insert(*span, text);
                }
            }
        }
        Ok(out)
    }

    fn solve(&self) -> Result<(), Error> {
        self.progress()?;
        if let Some(d) = self.deferred.borrow().first() {
            let span = match d {
                Deferred::Index { span, .. }
                | Deferred::Field { span, .. }
                | Deferred::OptField { span, .. } => *span,
            };
            return Err(Error::new(
                Stage::Unify,
                "ambiguous type: cannot tell what is looked up here; add an annotation",
                span,
            ));
        }
        let u = self.u.borrow();
        // A call that needs its result type at run time is named when that type is unknown.
        let mut solved = self.solved_calls.borrow().clone();
        solved.sort_by_key(|(s, ..)| (s.file, s.lo, std::cmp::Reverse(s.hi)));
        for (span, b, _, t) in &solved {
            let z = u.zonk(t);
            if !z.is_ground() {
                return Err(Error::new(
                    Stage::Unify,
                    format!(
                        "{}: ambiguous result type {z}; add a type annotation",
                        b.display_name()
                    ),
                    *span,
                ));
            }
        }
        let mut exprs = self.exprs.borrow().clone();
        exprs.sort_by_key(|(s, _)| (s.file, s.lo, std::cmp::Reverse(s.hi)));
        for (span, t) in &exprs {
            let z = u.zonk(t);
            if !z.is_ground() {
                return Err(Error::new(
                    Stage::Unify,
                    format!("ambiguous type {z}; add a type annotation"),
                    *span,
                ));
            }
        }
        for c in self.checks.borrow().iter() {
            match c {
                Check::Builtin(b, t, span) => {
                    if let Some(f) = b.check {
                        f(&u.zonk(t)).map_err(|m| Error::new(Stage::Unify, m, *span))?;
                    }
                }
                Check::Op(op, t, span) => {
                    let t = u.zonk(t);
                    let ok = match op {
                        BinOp::Add => matches!(t, Ty::Str | Ty::Int | Ty::Float),
                        BinOp::Sub
                        | BinOp::Mul
                        | BinOp::Div
                        | BinOp::Lt
                        | BinOp::Gt
                        | BinOp::Le
                        | BinOp::Ge => {
                            matches!(t, Ty::Int | Ty::Float)
                        }
                        BinOp::Eq | BinOp::Ne => !t.has_func(),
                        // `In` marks a map key type check.
                        BinOp::In => t.is_hashable(),
                        BinOp::And | BinOp::Or => true,
                    };
                    if !ok {
                        let msg = if *op == BinOp::In {
                            format!("{t} cannot be a map key")
                        } else {
                            format!("operator {} does not accept {t}", op.as_str())
                        };
                        return Err(Error::new(Stage::Unify, msg, *span));
                    }
                }
            }
        }
        Ok(())
    }
}

fn builtin_returns_str(b: &Builtin) -> bool {
    matches!(b.sig, Sig::Text(t) if t.ends_with(") str"))
}
