//! The set-scope stage: resolves every name of the code that can contribute to output (binds
//! and function bodies even when unused; class bodies only when included), and reports
//! undefined names, include arity, forbidden statements in modules and recursion.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::{
    find_class, find_func, find_var, resolve_path, split_dotted, FuncDef, Modules, Opener, Scope,
    Target, VarDef,
};
use crate::diag::{Error, Stage};
use crate::syntax::ast::{
    Bind, Block, Callee, ClassStmt, EntryKind, Expr, ExprKind, FuncStmt, Include, Lambda, Param,
    Stmt, StmtKind,
};
use crate::syntax::span::Span;

type Sc<'a> = Rc<Scope<'a, ()>>;
type ClassVisit<'a> = (Visit, Option<Sc<'a>>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Being walked; the number of references followed when it started.
    Active(usize),
    Done,
}

struct Checker<'a> {
    m: &'a Modules,
    global: Sc<'a>,
    is_const: &'a dyn Fn(&str) -> bool,
    files: RefCell<HashMap<usize, Sc<'a>>>,
    binds: RefCell<HashMap<(usize, usize), Visit>>,
    funcs: RefCell<HashMap<(usize, usize), Visit>>,
    classes: RefCell<HashMap<(usize, usize), ClassVisit<'a>>>,
    refs: RefCell<Vec<Span>>,
    errors: RefCell<Vec<Error>>,
}

/// Runs the set-scope stage over the program; `is_const` says whether `res.<kind>.<p>.<v>`
/// (the part after `$const.`) names a published constant.
pub fn check(m: &Modules, is_const: &dyn Fn(&str) -> bool) -> Vec<Error> {
    let mut global = Scope::new(None);
    global.vars.insert("hostname", VarDef::Val(()));
    let c = Checker {
        m,
        global: Rc::new(global),
        is_const,
        files: RefCell::new(HashMap::new()),
        binds: RefCell::new(HashMap::new()),
        funcs: RefCell::new(HashMap::new()),
        classes: RefCell::new(HashMap::new()),
        refs: RefCell::new(Vec::new()),
        errors: RefCell::new(Vec::new()),
    };
    let main = &m.files[0];
    let mut sc = Scope::new(Some(c.global.clone()));
    let errs = sc.define(main.file, &main.stmts, m);
    c.errors.borrow_mut().extend(errs);
    let sc = Rc::new(sc);
    c.stmts(&sc, &main.stmts);
    let mut errors = c.errors.into_inner();
    errors.sort_by_key(|e| (e.span.file, e.span.lo));
    errors.dedup();
    errors
}

impl<'a> Opener<'a, ()> for Checker<'a> {
    fn open_file(&self, idx: usize, _at: Span) -> Result<Sc<'a>, Error> {
        if let Some(s) = self.files.borrow().get(&idx) {
            return Ok(s.clone());
        }
        let f = &self.m.files[idx];
        let mut sc = Scope::new(Some(self.global.clone()));
        let errs = sc.define(f.file, &f.stmts, self.m);
        self.errors.borrow_mut().extend(errs);
        let sc = Rc::new(sc);
        self.files.borrow_mut().insert(idx, sc.clone());
        for st in &f.stmts {
            match &st.kind {
                StmtKind::Bind(_)
                | StmtKind::Func(_)
                | StmtKind::Class(_)
                | StmtKind::Import(_) => {}
                _ => self.err(Error::new(
                    Stage::SetScope,
                    "module contains unused statements",
                    st.span,
                )),
            }
        }
        self.stmts(&sc, &f.stmts);
        Ok(sc)
    }

    fn open_include(&self, sc: &Sc<'a>, inc: &'a Include) -> Result<Sc<'a>, Error> {
        self.include(sc, inc, inc.name.span)
    }
}

/// How deep references may nest (definitions using definitions), so no program can exhaust
/// the stack of a later pass.
pub const MAX_NESTING: usize = 1000;

const NEST_MSG: &str = "definitions nest more than 1000 levels deep";

impl<'a> Checker<'a> {
    /// Pushes a reference onto the stack being followed; false (with an error) when too deep.
    fn follow(&self, span: Span) -> bool {
        let mut refs = self.refs.borrow_mut();
        if refs.len() >= MAX_NESTING {
            drop(refs);
            self.err(Error::new(Stage::SetScope, NEST_MSG, span));
            return false;
        }
        refs.push(span);
        true
    }

    fn err(&self, e: Error) {
        self.errors.borrow_mut().push(e);
    }

    fn stmts(&self, sc: &Sc<'a>, stmts: &'a [Stmt]) {
        for st in stmts {
            self.stmt(sc, st);
        }
    }

    fn block(&self, sc: &Sc<'a>, b: &'a Block, vars: &[&'a str]) {
        let mut s = Scope::new(Some(sc.clone()));
        for v in vars {
            s.vars.insert(v, VarDef::Val(()));
        }
        let file = b.span.file;
        let errs = s.define(file, &b.stmts, self.m);
        self.errors.borrow_mut().extend(errs);
        let s = Rc::new(s);
        self.stmts(&s, &b.stmts);
    }

    fn stmt(&self, sc: &Sc<'a>, st: &'a Stmt) {
        match &st.kind {
            StmtKind::Bind(b) => self.bind(sc, b),
            StmtKind::Func(f) => self.func(sc, f),
            StmtKind::Class(_) => {}
            StmtKind::Import(im) => {
                if let Some(i) = self.m.imports.get(&(im.path_span.file, im.path.clone())) {
                    if let Err(e) = self.open_file(*i, im.path_span) {
                        self.err(e);
                    }
                }
            }
            StmtKind::Include(inc) => {
                if let Err(e) = self.include(sc, inc, st.span) {
                    self.err(e);
                }
            }
            StmtKind::Resource(r) => {
                self.expr(sc, &r.name);
                for e in &r.entries {
                    if let Some(c) = &e.cond {
                        self.expr(sc, c);
                    }
                    match &e.kind {
                        EntryKind::Field { value, .. }
                        | EntryKind::Meta { value, .. }
                        | EntryKind::MetaAll { value } => self.expr(sc, value),
                        EntryKind::Edge { target, .. } => self.expr(sc, &target.name),
                    }
                }
            }
            StmtKind::Edge(e) => {
                for h in &e.halves {
                    self.expr(sc, &h.res.name);
                }
            }
            StmtKind::If(i) => {
                self.expr(sc, &i.cond);
                self.block(sc, &i.then, &[]);
                if let Some(b) = &i.els {
                    self.block(sc, b, &[]);
                }
            }
            StmtKind::For(f) | StmtKind::ForKv(f) => {
                self.expr(sc, &f.iter);
                self.block(sc, &f.body, &[&f.key.text, &f.value.text]);
            }
            StmtKind::Panic(p) => {
                for a in &p.args {
                    self.expr(sc, a);
                }
            }
        }
    }

    fn bind(&self, sc: &Sc<'a>, b: &'a Bind) {
        let key = (sc.id, b as *const Bind as usize);
        match self.binds.borrow().get(&key) {
            Some(Visit::Done) => return,
            Some(Visit::Active(at)) => {
                self.recursion(*at);
                return;
            }
            None => {}
        }
        self.binds
            .borrow_mut()
            .insert(key, Visit::Active(self.refs.borrow().len()));
        self.expr(sc, &b.value);
        self.binds.borrow_mut().insert(key, Visit::Done);
    }

    /// Reports a cycle: the references followed since the definition at depth `at` started.
    fn recursion(&self, at: usize) {
        let refs = self.refs.borrow();
        if let Some(last) = refs.last() {
            let start = at.min(refs.len() - 1);
            let also: Vec<Span> = refs[start..refs.len() - 1].to_vec();
            self.err(Error::new(Stage::SetScope, "recursive reference", *last).with_also(also));
        }
    }

    fn func(&self, sc: &Sc<'a>, f: &'a FuncStmt) {
        let key = (sc.id, f as *const FuncStmt as usize);
        match self.funcs.borrow().get(&key) {
            Some(Visit::Done) => return,
            Some(Visit::Active(at)) => {
                self.recursion(*at);
                return;
            }
            None => {}
        }
        self.funcs
            .borrow_mut()
            .insert(key, Visit::Active(self.refs.borrow().len()));
        self.body(sc, &f.params, &f.body);
        self.funcs.borrow_mut().insert(key, Visit::Done);
    }

    fn body(&self, sc: &Sc<'a>, params: &'a [Param], body: &'a Expr) {
        let mut s = Scope::new(Some(sc.clone()));
        for p in params {
            s.vars.insert(&p.name.text, VarDef::Val(()));
        }
        self.expr(&Rc::new(s), body);
    }

    fn lambda(&self, sc: &Sc<'a>, l: &'a Lambda) {
        self.body(sc, &l.params, &l.body);
    }

    fn include(&self, sc: &Sc<'a>, inc: &'a Include, span: Span) -> Result<Sc<'a>, Error> {
        for a in &inc.args {
            self.expr(sc, a);
        }
        let (path, last) = split_dotted(&inc.name.text);
        let found = if path.is_empty() {
            find_class(self, sc, last)
        } else {
            match resolve_path(self, sc, &path, inc.name.span)? {
                Target::Scope(s) => find_class(self, &s, last),
                Target::Core(m) => {
                    return Err(Error::new(
                        Stage::SetScope,
                        format!("module `{m}` has no classes"),
                        inc.name.span,
                    ))
                }
            }
        };
        let Some((class, at)) = found else {
            return Err(Error::new(
                Stage::SetScope,
                format!("no class `{}` in scope", inc.name.text),
                inc.name.span,
            ));
        };
        if class.params.len() != inc.args.len() {
            return Err(Error::new(
                Stage::SetScope,
                format!(
                    "class `{}` takes {} arguments but {} were given",
                    inc.name.text,
                    class.params.len(),
                    inc.args.len()
                ),
                span,
            ));
        }
        if !self.follow(inc.name.span) {
            return Err(Error::new(Stage::SetScope, NEST_MSG, inc.name.span));
        }
        let r = self.class_body(&at, class);
        self.refs.borrow_mut().pop();
        r
    }

    fn class_body(&self, at: &Sc<'a>, class: &'a ClassStmt) -> Result<Sc<'a>, Error> {
        let key = (at.id, class as *const ClassStmt as usize);
        match self.classes.borrow().get(&key) {
            Some((Visit::Done, Some(s))) => return Ok(s.clone()),
            Some((v, _)) => {
                self.recursion(match v {
                    Visit::Active(at) => *at,
                    Visit::Done => 0,
                });
                return Ok(Rc::new(Scope::new(Some(at.clone()))));
            }
            None => {}
        }
        self.classes
            .borrow_mut()
            .insert(key, (Visit::Active(self.refs.borrow().len()), None));
        let mut params = Scope::new(Some(at.clone()));
        for p in &class.params {
            params.vars.insert(&p.name.text, VarDef::Val(()));
        }
        let mut s = Scope::new(Some(Rc::new(params)));
        let errs = s.define(class.body.span.file, &class.body.stmts, self.m);
        self.errors.borrow_mut().extend(errs);
        let s = Rc::new(s);
        // Register the scope before walking the body, so `$alias.x` inside works.
        self.classes.borrow_mut().insert(
            key,
            (Visit::Active(self.refs.borrow().len()), Some(s.clone())),
        );
        self.stmts(&s, &class.body.stmts);
        self.classes
            .borrow_mut()
            .insert(key, (Visit::Done, Some(s.clone())));
        Ok(s)
    }

    fn var(&self, sc: &Sc<'a>, text: &str, span: Span) {
        let (path, last) = split_dotted(text);
        if path.is_empty() {
            match find_var(self, sc, last) {
                Some(s) => {
                    if let Some(VarDef::Bind(b)) = s.vars.get(last) {
                        let s = s.clone();
                        if !self.follow(span) {
                            return;
                        }
                        self.bind(&s, b);
                        self.refs.borrow_mut().pop();
                    }
                }
                None => self.err(Error::new(
                    Stage::SetScope,
                    format!("no variable `${last}` in scope"),
                    span,
                )),
            }
            return;
        }
        if path[0] == "const" && super::find_ns(self, sc, "const").is_none() {
            let rest = text
                .split('.')
                .map(str::trim)
                .skip(1)
                .collect::<Vec<_>>()
                .join(".");
            if !(self.is_const)(&rest) {
                self.err(Error::new(
                    Stage::SetScope,
                    format!("no constant `${text}`"),
                    span,
                ));
            }
            return;
        }
        match resolve_path(self, sc, &path, span) {
            Ok(Target::Scope(s)) => match find_var(self, &s, last) {
                Some(s) => {
                    if let Some(VarDef::Bind(b)) = s.vars.get(last) {
                        let s = s.clone();
                        if !self.follow(span) {
                            return;
                        }
                        self.bind(&s, b);
                        self.refs.borrow_mut().pop();
                    }
                }
                None => self.err(Error::new(
                    Stage::SetScope,
                    format!("no variable `${text}` in scope"),
                    span,
                )),
            },
            Ok(Target::Core(m)) => self.err(Error::new(
                Stage::SetScope,
                format!("module `{m}` has no variable `{last}`"),
                span,
            )),
            Err(e) => self.err(e),
        }
    }

    fn call_named(&self, sc: &Sc<'a>, text: &str, span: Span) {
        let (path, last) = split_dotted(text);
        let found = if path.is_empty() {
            if let Some(f) = find_func(self, sc, last) {
                Some(f)
            } else if crate::funcs::lookup("", last).is_some() {
                return;
            } else {
                None
            }
        } else {
            match resolve_path(self, sc, &path, span) {
                Ok(Target::Scope(s)) => find_func(self, &s, last),
                Ok(Target::Core(m)) => {
                    if crate::funcs::lookup(&m, last).is_none() {
                        self.err(Error::new(
                            Stage::SetScope,
                            format!("module `{m}` has no function `{last}`"),
                            span,
                        ));
                    }
                    return;
                }
                Err(e) => {
                    self.err(e);
                    return;
                }
            }
        };
        match found {
            Some(FuncDef::Core(_)) => {}
            Some(FuncDef::User(f, at)) => {
                if !self.follow(span) {
                    return;
                }
                self.func(&at, f);
                self.refs.borrow_mut().pop();
            }
            None => self.err(Error::new(
                Stage::SetScope,
                format!("no function `{text}` in scope"),
                span,
            )),
        }
    }

    fn expr(&self, sc: &Sc<'a>, e: &'a Expr) {
        match &e.kind {
            ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::RawStr(_)
            | ExprKind::Str(_) => {}
            ExprKind::Concat(parts) | ExprKind::List(parts) => {
                for p in parts {
                    self.expr(sc, p);
                }
            }
            ExprKind::Map(es) => {
                for me in es {
                    self.expr(sc, &me.key);
                    self.expr(sc, &me.value);
                }
            }
            ExprKind::Struct(fs) => {
                for f in fs {
                    self.expr(sc, &f.value);
                }
            }
            ExprKind::Var(n) => self.var(sc, &n.text, n.span),
            ExprKind::Call { callee, args } => {
                for a in args {
                    self.expr(sc, a);
                }
                match callee {
                    Callee::Named(n) => self.call_named(sc, &n.text, n.span),
                    Callee::Var(n) => self.var(sc, &n.text, n.span),
                    Callee::Lambda(l) => self.lambda(sc, l),
                }
            }
            ExprKind::Lambda(l) => self.lambda(sc, l),
            ExprKind::If { cond, then, els } => {
                self.expr(sc, cond);
                self.expr(sc, then);
                self.expr(sc, els);
            }
            ExprKind::Binary { lhs, rhs, .. } | ExprKind::Except { lhs, rhs } => {
                self.expr(sc, lhs);
                self.expr(sc, rhs);
            }
            ExprKind::Not(x) => self.expr(sc, x),
            ExprKind::Index { base, index } => {
                self.expr(sc, base);
                self.expr(sc, index);
            }
            ExprKind::Field { base, .. } => self.expr(sc, base),
            ExprKind::OptField { base, default, .. } => {
                self.expr(sc, base);
                self.expr(sc, default);
            }
        }
    }
}
