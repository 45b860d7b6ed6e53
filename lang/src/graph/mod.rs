//! Evaluation (spec §7): turns the program plus the current values of its stream sources into
//! a *table* ([`Output`]): every resource statement and edge that currently produces output,
//! with its evaluated names, fields, conditions and meta values.
//!
//! The function graph is evaluated as a whole against one snapshot of the stream values, so a
//! table never mixes old and new values of one event (glitch freedom). Only what is live is
//! evaluated: the taken branch of an `if`, one body instance per loop element, one callee
//! instance per call, the fallback of `<|>` only while its primary side is in error (dynamic
//! subgraphs). Stream sources are started the first time a live call reaches them and stopped
//! by the driver ([`crate::program`]) when a new evaluation no longer reaches them.
//!
//! Errors: a catchable error travels in place of a value until a `<|>` catches it or a sink
//! reads it (then it is fatal, positioned at the node that failed first).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use tend_model::{KindSchema, Value};

use crate::diag::{Error, Stage};
use crate::funcs::stream::{self, Source, StreamCtx, StreamKey};
use crate::funcs::{self, Builtin, FuncError, FuncKind, Invoke};
use crate::scope::{
    find_class, find_func, find_var, resolve_path, split_dotted, FuncDef, Modules, Opener, Scope,
    Target, VarDef,
};
use crate::syntax::ast::{
    BinOp, Bind, Block, Callee, EdgeProp, EntryKind, Expr, ExprKind, Include, Lambda, Param, Stmt,
    StmtKind,
};
use crate::syntax::span::Span;

/// A runtime value: data, or a function value (lambda closure).
#[derive(Clone)]
pub enum Rv<'a> {
    /// Plain data.
    V(Value),
    /// A lambda with the scope it was written in.
    F(Rc<Closure<'a>>),
}

/// A lambda value.
pub struct Closure<'a> {
    params: &'a [Param],
    body: &'a Expr,
    scope: Sc<'a>,
}

/// A runtime error travelling through the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct RtErr {
    /// What failed.
    pub msg: String,
    /// The node that failed first.
    pub span: Span,
    /// Whether `<|>` may catch it.
    pub catchable: bool,
}

impl RtErr {
    fn fatal(msg: impl Into<String>, span: Span) -> Self {
        RtErr {
            msg: msg.into(),
            span,
            catchable: false,
        }
    }

    fn from_func(e: FuncError, span: Span) -> Self {
        RtErr {
            msg: e.msg,
            span,
            catchable: e.catchable,
        }
    }

    /// The stream-stage error a sink reports for it.
    pub fn to_error(&self) -> Error {
        let msg = if self.catchable {
            format!("{} (not caught by <|>)", self.msg)
        } else {
            self.msg.clone()
        };
        Error::new(Stage::Stream, msg, self.span)
    }
}

type R<T> = Result<T, RtErr>;
type Slot<'a> = R<Rv<'a>>;
type Sc<'a> = Rc<Scope<'a, Slot<'a>>>;

/// One resource statement instance of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct ResOut {
    /// Kind as written.
    pub kind: String,
    /// Whether this is a collect statement.
    pub collect: bool,
    /// The evaluated names (`str`, `[]str`, or collect pairs).
    pub names: Value,
    /// The statement's span.
    pub span: Span,
    /// Fields whose condition holds, in body order.
    pub fields: Vec<(String, Value, Span)>,
    /// `Meta:x` entries whose condition holds.
    pub metas: Vec<(String, Value, Span)>,
    /// `Meta => s`, if its condition holds.
    pub meta_all: Option<(Value, Span)>,
    /// Edge properties whose condition holds: (property, kind, names).
    pub edges: Vec<(EdgeProp, String, Value, Span)>,
}

/// One edge statement instance: a chain of (kind, names, send/recv field).
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeOut {
    /// The halves in order.
    pub halves: Vec<(String, Value, Option<String>)>,
    /// The statement's span.
    pub span: Span,
}

/// A table: everything the interpreter needs from one evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Resource statements, in evaluation order.
    pub resources: Vec<ResOut>,
    /// Edge statements.
    pub edges: Vec<EdgeOut>,
}

/// The stream sources of a running program and their latest values.
#[derive(Default)]
pub struct Streams {
    /// Running sources and their current values.
    pub sources: HashMap<StreamKey, (Result<Value, FuncError>, Source)>,
    /// Snapshots of impure functions (taken once).
    pub snapshots: HashMap<StreamKey, Result<Value, FuncError>>,
    /// Keys reached by the last evaluation.
    pub used: HashSet<StreamKey>,
    /// Watch calls (`world.*`, `collect.res`) by call site, in the current evaluation.
    sites: HashMap<Span, HashSet<StreamKey>>,
    /// The same for the previous evaluation.
    prev_sites: HashMap<Span, HashSet<StreamKey>>,
    /// `history` per call instance (site, nth call of it in an evaluation): the values seen,
    /// newest first.
    history: HashMap<(Span, usize), Vec<Value>>,
    /// Calls of each `history` site in the current evaluation.
    history_calls: HashMap<Span, usize>,
}

impl Streams {
    /// Stops the sources the last evaluation did not reach.
    pub fn prune(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.sources.retain(|k, _| used.contains(k));
        // The history of instances the evaluation did not reach is forgotten.
        let calls = std::mem::take(&mut self.history_calls);
        self.history
            .retain(|(span, n), _| calls.get(span).is_some_and(|c| n < c));
    }

    /// `history(value, index)` at call site `span`: records `value` when it differs from the
    /// newest one seen, keeps `index + 1` values, and returns the one `index` changes back
    /// (mgmt's history), or "no value yet" until there are that many.
    fn history(&mut self, span: Span, value: Value, index: i64) -> Result<Value, FuncError> {
        if index < 0 {
            return Err(FuncError::fatal(format!(
                "history: can't use a negative index of {index}"
            )));
        }
        let nth = self.history_calls.entry(span).or_default();
        let key = (span, *nth);
        *nth += 1;
        let h = self.history.entry(key).or_default();
        if h.first() != Some(&value) {
            h.insert(0, value);
        }
        let keep = usize::try_from(index)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        h.truncate(keep);
        match usize::try_from(index).ok().and_then(|i| h.get(i)) {
            Some(v) => Ok(v.clone()),
            None => Err(FuncError::pending(format!(
                "history: {index} earlier value(s)"
            ))),
        }
    }

    /// Records a new value; returns whether it differs from the current one.
    pub fn update(&mut self, key: &StreamKey, v: Result<Value, FuncError>) -> bool {
        match self.sources.get_mut(key) {
            Some((cur, _)) if *cur != v => {
                *cur = v;
                true
            }
            _ => false,
        }
    }
}

/// What evaluation needs besides the program.
pub struct EvalEnv<'s> {
    /// `$hostname`.
    pub hostname: String,
    /// Kind schemas (for `$const.res.*` and `collect.res` kinds).
    pub schemas: &'s BTreeMap<String, KindSchema>,
    /// Where sources send their events.
    pub ctx: &'s StreamCtx,
    /// Solved result types that calls need at run time (`Builtin::solved_result`).
    pub call_types: &'s crate::unify::CallTypes,
}

struct Eval<'a, 's> {
    m: &'a Modules,
    env: &'s EvalEnv<'s>,
    streams: RefCell<&'s mut Streams>,
    global: Sc<'a>,
    files: RefCell<HashMap<usize, Sc<'a>>>,
    includes: RefCell<HashMap<(usize, usize), Sc<'a>>>,
    out: RefCell<Output>,
    depth: RefCell<u32>,
    /// Results of named-function calls with data arguments in this evaluation (a named
    /// function is deterministic given its definition scope and arguments).
    calls: RefCell<HashMap<CallKey, Slot<'a>>>,
}

type CallKey = (usize, usize, Vec<Value>);

/// Looks up `$const.<rest>` (`res.file.state.exists`) in the schemas.
pub fn constant(schemas: &BTreeMap<String, KindSchema>, rest: &str) -> Option<Value> {
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != 4 || parts[0] != "res" {
        return None;
    }
    let s = schemas.get(parts[1])?;
    s.all_constants()
        .into_iter()
        .find(|c| c.param == parts[2] && c.name == parts[3])
        .map(|c| c.value)
}

/// Evaluates the program once against the current stream values.
pub fn evaluate(m: &Modules, env: &EvalEnv<'_>, streams: &mut Streams) -> Result<Output, Error> {
    let mut global: Scope<'_, Slot<'_>> = Scope::new(None);
    global.vars.insert(
        "hostname",
        VarDef::Val(Ok(Rv::V(Value::Str(env.hostname.clone())))),
    );
    let ev = Eval {
        m,
        env,
        streams: RefCell::new(streams),
        global: Rc::new(global),
        files: RefCell::new(HashMap::new()),
        includes: RefCell::new(HashMap::new()),
        out: RefCell::new(Output::default()),
        depth: RefCell::new(0),
        calls: RefCell::new(HashMap::new()),
    };
    let main = &m.files[0];
    let mut sc = Scope::new(Some(ev.global.clone()));
    sc.define(main.file, &main.stmts, m);
    let sc = Rc::new(sc);
    let r = ev.stmts(&sc, &main.stmts).map_err(|e| e.to_error());
    let out = ev.out.into_inner();
    drop(sc);
    r?;
    watch_args_unchanged(streams)?;
    Ok(out)
}

/// The arguments of a call that opens a watch (`world.*`, `collect.res`) must not change at
/// run time (spec §10): a call site that had one key and now has another one is fatal. Sites
/// reached with several keys (inside loops) are not compared.
fn watch_args_unchanged(streams: &mut Streams) -> Result<(), Error> {
    let now = std::mem::take(&mut streams.sites);
    let prev = std::mem::replace(&mut streams.prev_sites, now);
    for (span, keys) in &streams.prev_sites {
        let (Some(old), true) = (prev.get(span), keys.len() == 1) else {
            continue;
        };
        if old.len() == 1 && old != keys {
            let (a, b) = (
                old.iter().next().expect("one key"),
                keys.iter().next().expect("one key"),
            );
            let show = |k: &StreamKey| {
                k.1.iter()
                    .map(|v| funcs::text::show(v, false))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::new(
                Stage::Stream,
                format!(
                    "the arguments of {} changed at run time (from ({}) to ({}))",
                    b.0,
                    show(a),
                    show(b)
                ),
                *span,
            ));
        }
    }
    Ok(())
}

struct Caller<'e, 'a, 's> {
    ev: &'e Eval<'a, 's>,
    funcs: Vec<Option<Rc<Closure<'a>>>>,
    span: Span,
    /// The last error of a callback, so its original position survives the built-in.
    last: Option<RtErr>,
}

impl Invoke for Caller<'_, '_, '_> {
    fn call(&mut self, arg: usize, args: Vec<Value>) -> Result<Value, FuncError> {
        let Some(Some(c)) = self.funcs.get(arg) else {
            return Err(FuncError::fatal(format!(
                "argument {arg} is not a function"
            )));
        };
        let c = c.clone();
        let args = args.into_iter().map(|v| Ok(Rv::V(v))).collect();
        match self.ev.call_closure(&c, args, self.span) {
            Ok(Rv::V(v)) => Ok(v),
            Ok(Rv::F(_)) => Err(FuncError::fatal(
                "a callback returning a function is not supported yet",
            )),
            Err(e) => {
                let fe = FuncError {
                    msg: e.msg.clone(),
                    catchable: e.catchable,
                };
                self.last = Some(e);
                Err(fe)
            }
        }
    }
}

impl<'a> Opener<'a, Slot<'a>> for Eval<'a, '_> {
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
        self.include(sc, inc).map_err(|e| e.to_error())
    }
}

fn data(v: Rv<'_>, span: Span) -> R<Value> {
    match v {
        Rv::V(v) => Ok(v),
        Rv::F(_) => Err(RtErr::fatal(
            "a function value cannot be stored in a list, map, struct or resource",
            span,
        )),
    }
}

impl<'a, 's> Eval<'a, 's> {
    fn include(&self, sc: &Sc<'a>, inc: &'a Include) -> R<Sc<'a>> {
        let key = (sc.id, inc as *const Include as usize);
        if let Some(s) = self.includes.borrow().get(&key) {
            return Ok(s.clone());
        }
        let (path, last) = split_dotted(&inc.name.text);
        let found = if path.is_empty() {
            find_class(self, sc, last)
        } else {
            match resolve_path(self, sc, &path, inc.name.span)
                .map_err(|e| RtErr::fatal(e.message, e.span))?
            {
                Target::Scope(s) => find_class(self, &s, last),
                Target::Core(_) => None,
            }
        };
        let Some((class, at)) = found else {
            return Err(RtErr::fatal(
                format!("no class `{}`", inc.name.text),
                inc.name.span,
            ));
        };
        // Parameters live in a scope of their own so the body may rebind them.
        let mut params = Scope::new(Some(at));
        for (p, a) in class.params.iter().zip(&inc.args) {
            params
                .vars
                .insert(&p.name.text, VarDef::Val(self.expr(sc, a)));
        }
        let mut body = Scope::new(Some(Rc::new(params)));
        body.define(class.body.span.file, &class.body.stmts, self.m);
        let body = Rc::new(body);
        self.includes.borrow_mut().insert(key, body.clone());
        self.enter(inc.name.span)?;
        let r = self.stmts(&body, &class.body.stmts);
        self.leave();
        r?;
        Ok(body)
    }

    fn stmts(&self, sc: &Sc<'a>, stmts: &'a [Stmt]) -> R<()> {
        for st in stmts {
            self.stmt(sc, st)?;
        }
        Ok(())
    }

    fn block(&self, sc: &Sc<'a>, b: &'a Block, vars: Vec<(&'a str, Value)>) -> R<()> {
        let mut s = Scope::new(Some(sc.clone()));
        for (n, v) in vars {
            s.vars.insert(n, VarDef::Val(Ok(Rv::V(v))));
        }
        s.define(b.span.file, &b.stmts, self.m);
        self.stmts(&Rc::new(s), &b.stmts)
    }

    /// Evaluates an expression read by a sink: errors become fatal here.
    fn sink(&self, sc: &Sc<'a>, e: &'a Expr) -> R<Value> {
        let v = self.expr(sc, e).map_err(|mut err| {
            if err.catchable {
                err.msg = format!("{} (not caught by <|>)", err.msg);
                err.catchable = false;
            }
            err
        })?;
        data(v, e.span)
    }

    fn cond(&self, sc: &Sc<'a>, c: &'a Option<Expr>) -> R<bool> {
        match c {
            None => Ok(true),
            Some(c) => Ok(self.sink(sc, c)? == Value::Bool(true)),
        }
    }

    fn stmt(&self, sc: &Sc<'a>, st: &'a Stmt) -> R<()> {
        match &st.kind {
            StmtKind::Bind(_) | StmtKind::Func(_) | StmtKind::Class(_) | StmtKind::Import(_) => {
                Ok(())
            }
            StmtKind::Include(inc) => self.include(sc, inc).map(drop),
            StmtKind::Resource(r) => {
                let names = self.sink(sc, &r.name)?;
                if r.collect {
                    // Reading the exports makes the table depend on them.
                    self.stream_value(
                        funcs::lookup("world/collect", "res").expect("exists"),
                        vec![Value::Str(r.kind.text.clone())],
                        r.kind.span,
                    )
                    .map_err(|mut e| {
                        e.catchable = false;
                        e
                    })?;
                }
                let mut out = ResOut {
                    kind: r.kind.text.clone(),
                    collect: r.collect,
                    names,
                    span: st.span,
                    fields: Vec::new(),
                    metas: Vec::new(),
                    meta_all: None,
                    edges: Vec::new(),
                };
                for en in &r.entries {
                    if !self.cond(sc, &en.cond)? {
                        continue;
                    }
                    match &en.kind {
                        EntryKind::Field { name, value } => {
                            out.fields
                                .push((name.text.clone(), self.sink(sc, value)?, en.span))
                        }
                        EntryKind::Meta { name, value } => {
                            out.metas
                                .push((name.text.clone(), self.sink(sc, value)?, en.span))
                        }
                        EntryKind::MetaAll { value } => {
                            out.meta_all = Some((self.sink(sc, value)?, en.span))
                        }
                        EntryKind::Edge { prop, target } => {
                            let p = EdgeProp::from_name(&prop.text).unwrap_or(EdgeProp::Before);
                            let names = self.sink(sc, &target.name)?;
                            out.edges
                                .push((p, target.kind.text.clone(), names, en.span));
                        }
                    }
                }
                self.out.borrow_mut().resources.push(out);
                Ok(())
            }
            StmtKind::Edge(e) => {
                let mut halves = Vec::new();
                for h in &e.halves {
                    let n = self.sink(sc, &h.res.name)?;
                    halves.push((
                        h.res.kind.text.clone(),
                        n,
                        h.field.as_ref().map(|f| f.text.clone()),
                    ));
                }
                self.out.borrow_mut().edges.push(EdgeOut {
                    halves,
                    span: st.span,
                });
                Ok(())
            }
            StmtKind::If(i) => {
                if self.sink(sc, &i.cond)? == Value::Bool(true) {
                    self.block(sc, &i.then, vec![])
                } else if let Some(b) = &i.els {
                    self.block(sc, b, vec![])
                } else {
                    Ok(())
                }
            }
            StmtKind::For(f) => {
                let l = self.sink(sc, &f.iter)?;
                for (i, v) in l.as_list().unwrap_or_default().iter().enumerate() {
                    self.block(
                        sc,
                        &f.body,
                        vec![
                            (&f.key.text, Value::Int(i as i64)),
                            (&f.value.text, v.clone()),
                        ],
                    )?;
                }
                Ok(())
            }
            StmtKind::ForKv(f) => {
                let m = self.sink(sc, &f.iter)?;
                if let Value::Map(m) = m {
                    for (k, v) in m {
                        self.block(sc, &f.body, vec![(&f.key.text, k), (&f.value.text, v)])?;
                    }
                }
                Ok(())
            }
            StmtKind::Panic(p) => {
                let mut vals = Vec::new();
                for a in &p.args {
                    vals.push(self.sink(sc, a)?);
                }
                let (fire, msg) = match vals.as_slice() {
                    [Value::Bool(b)] => (*b, String::new()),
                    [Value::Str(s)] => (!s.is_empty(), s.clone()),
                    [Value::Bool(b), Value::Str(s)] => (*b, s.clone()),
                    _ => (false, String::new()),
                };
                if fire {
                    let msg = if msg.is_empty() {
                        "panic".to_string()
                    } else {
                        format!("panic: {msg}")
                    };
                    return Err(RtErr::fatal(msg, st.span));
                }
                Ok(())
            }
        }
    }

    fn bind(&self, sc: &Sc<'a>, b: &'a Bind) -> Slot<'a> {
        let key = b as *const Bind as usize;
        if let Some(v) = sc.memo.borrow().get(&key) {
            return v.clone();
        }
        self.enter(b.value.span)?;
        let v = self.expr(sc, &b.value);
        self.leave();
        sc.memo.borrow_mut().insert(key, v.clone());
        v
    }

    fn var(&self, sc: &Sc<'a>, text: &str, span: Span) -> Slot<'a> {
        let (path, last) = split_dotted(text);
        if !path.is_empty()
            && path[0] == "const"
            && crate::scope::find_ns(self, sc, "const").is_none()
        {
            let rest = text
                .split('.')
                .map(str::trim)
                .skip(1)
                .collect::<Vec<_>>()
                .join(".");
            return constant(self.env.schemas, &rest)
                .map(Rv::V)
                .ok_or_else(|| RtErr::fatal(format!("no constant `${text}`"), span));
        }
        let s = if path.is_empty() {
            sc.clone()
        } else {
            match resolve_path(self, sc, &path, span)
                .map_err(|e| RtErr::fatal(e.message, e.span))?
            {
                Target::Scope(s) => s,
                Target::Core(m) => {
                    return Err(RtErr::fatal(format!("module `{m}` has no variables"), span))
                }
            }
        };
        let Some(s) = find_var(self, &s, last) else {
            return Err(RtErr::fatal(format!("no variable `${text}`"), span));
        };
        match s.vars.get(last) {
            Some(VarDef::Bind(b)) => {
                let s = s.clone();
                self.bind(&s, b)
            }
            Some(VarDef::Val(v)) => v.clone(),
            None => Err(RtErr::fatal(format!("no variable `${text}`"), span)),
        }
    }

    fn enter(&self, span: Span) -> R<()> {
        let mut d = self.depth.borrow_mut();
        *d += 1;
        if *d > 2 * crate::scope::MAX_NESTING as u32 {
            return Err(RtErr::fatal("calls nest too deeply", span));
        }
        Ok(())
    }

    fn leave(&self) {
        *self.depth.borrow_mut() -= 1;
    }

    fn call_closure(&self, c: &Rc<Closure<'a>>, args: Vec<Slot<'a>>, span: Span) -> Slot<'a> {
        self.enter(span)?;
        let mut s = Scope::new(Some(c.scope.clone()));
        for (p, a) in c.params.iter().zip(args) {
            s.vars.insert(&p.name.text, VarDef::Val(a));
        }
        let r = self.expr(&Rc::new(s), c.body);
        self.leave();
        r
    }

    fn stream_value(&self, b: &'static Builtin, args: Vec<Value>, span: Span) -> R<Value> {
        let key: StreamKey = (b.display_name(), args);
        let mut st = self.streams.borrow_mut();
        st.used.insert(key.clone());
        if b.module.starts_with("world") {
            st.sites.entry(span).or_default().insert(key.clone());
        }
        let v = match st.sources.get(&key) {
            Some((v, _)) => v.clone(),
            None => {
                let schemas = self.env.schemas;
                let (v, src) = stream::start(b, &key.1, self.env.ctx, &|k| schemas.contains_key(k));
                st.sources.insert(key, (v.clone(), src));
                v
            }
        };
        v.map_err(|e| RtErr::from_func(e, span))
    }

    fn builtin(&self, b: &'static Builtin, args: Vec<Rv<'a>>, span: Span) -> Slot<'a> {
        let nargs = args.len();
        let mut vals = Vec::with_capacity(args.len() + 2);
        let mut fns = Vec::with_capacity(args.len() + 2);
        if b.module == "deploy" {
            // Where the call is: the program's root and the calling file's directory.
            let dir = self.m.dirs.get(&span.file).map_or("/", String::as_str);
            for v in funcs::deploy::call_site(&self.m.root, dir) {
                vals.push(v);
                fns.push(None);
            }
        }
        for a in args {
            match a {
                Rv::V(v) => {
                    vals.push(v);
                    fns.push(None);
                }
                Rv::F(f) => {
                    vals.push(Value::Str("<func>".into()));
                    fns.push(Some(f));
                }
            }
        }
        if b.solved_result(nargs).is_some() {
            // The result type unification solved for this call, as a hidden last argument.
            let t = self.env.call_types.get(&span).ok_or_else(|| {
                RtErr::fatal(format!("{}: no solved result type", b.display_name()), span)
            })?;
            vals.push(Value::Str(t.clone()));
        }
        if b.module.is_empty() && b.name == "history" {
            let (Some(v), Some(Value::Int(i))) = (vals.first(), vals.get(1)) else {
                return Err(RtErr::fatal("history: expected (value, int)", span));
            };
            let r = self.streams.borrow_mut().history(span, v.clone(), *i);
            return r.map(Rv::V).map_err(|e| RtErr::from_func(e, span));
        }
        match b.kind {
            FuncKind::Stream => self.stream_value(b, vals, span).map(Rv::V),
            FuncKind::Impure => {
                let key: StreamKey = (b.display_name(), vals);
                let mut st = self.streams.borrow_mut();
                let v = st
                    .snapshots
                    .entry(key.clone())
                    .or_insert_with(|| funcs::call_simple(b, &key.1))
                    .clone();
                v.map(Rv::V).map_err(|e| RtErr::from_func(e, span))
            }
            FuncKind::Pure => {
                let mut caller = Caller {
                    ev: self,
                    funcs: fns,
                    span,
                    last: None,
                };
                let r = (b.run)(&vals, &mut caller);
                let last = caller.last.take();
                r.map(Rv::V).map_err(|e| match last {
                    Some(l) if l.msg == e.msg && l.catchable == e.catchable => l,
                    _ => RtErr::from_func(e, span),
                })
            }
        }
    }

    fn call(&self, sc: &Sc<'a>, e: &'a Expr, callee: &'a Callee, args: &'a [Expr]) -> Slot<'a> {
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(self.expr(sc, a)?);
        }
        match callee {
            Callee::Named(n) => {
                let (path, last) = split_dotted(&n.text);
                let found = if path.is_empty() {
                    match find_func(self, sc, last) {
                        Some(f) => f,
                        None => {
                            let b = funcs::lookup("", last).ok_or_else(|| {
                                RtErr::fatal(format!("no function `{}`", n.text), n.span)
                            })?;
                            return self.builtin(b, vals, e.span);
                        }
                    }
                } else {
                    match resolve_path(self, sc, &path, n.span)
                        .map_err(|e| RtErr::fatal(e.message, e.span))?
                    {
                        Target::Core(m) => FuncDef::Core(m),
                        Target::Scope(s) => find_func(self, &s, last).ok_or_else(|| {
                            RtErr::fatal(format!("no function `{}`", n.text), n.span)
                        })?,
                    }
                };
                let (f, fsc) = match found {
                    FuncDef::User(f, fsc) => (f, fsc),
                    FuncDef::Core(m) => {
                        let b = funcs::lookup(&m, last).ok_or_else(|| {
                            RtErr::fatal(format!("no function `{}`", n.text), n.span)
                        })?;
                        return self.builtin(b, vals, e.span);
                    }
                };
                let key: Option<CallKey> = vals
                    .iter()
                    .map(|v| match v {
                        Rv::V(v) => Some(v.clone()),
                        Rv::F(_) => None,
                    })
                    .collect::<Option<Vec<Value>>>()
                    .map(|args| (f as *const _ as usize, fsc.id, args));
                if let Some(k) = &key {
                    if let Some(r) = self.calls.borrow().get(k) {
                        return r.clone();
                    }
                }
                self.enter(e.span)?;
                let mut s = Scope::new(Some(fsc));
                for (p, v) in f.params.iter().zip(vals) {
                    s.vars.insert(&p.name.text, VarDef::Val(Ok(v)));
                }
                let r = self.expr(&Rc::new(s), &f.body);
                self.leave();
                if let Some(k) = key {
                    self.calls.borrow_mut().insert(k, r.clone());
                }
                r
            }
            Callee::Var(n) => match self.var(sc, &n.text, n.span)? {
                Rv::F(c) => self.call_closure(&c, vals.into_iter().map(Ok).collect(), e.span),
                Rv::V(_) => Err(RtErr::fatal(
                    format!("${} is not a function", n.text),
                    n.span,
                )),
            },
            Callee::Lambda(l) => {
                let c = self.closure(sc, l);
                self.call_closure(&c, vals.into_iter().map(Ok).collect(), e.span)
            }
        }
    }

    fn closure(&self, sc: &Sc<'a>, l: &'a Lambda) -> Rc<Closure<'a>> {
        Rc::new(Closure {
            params: &l.params,
            body: &l.body,
            scope: sc.clone(),
        })
    }

    fn value(&self, sc: &Sc<'a>, e: &'a Expr) -> R<Value> {
        data(self.expr(sc, e)?, e.span)
    }

    fn expr(&self, sc: &Sc<'a>, e: &'a Expr) -> Slot<'a> {
        let v = match &e.kind {
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Str(s) | ExprKind::RawStr(s) => Value::Str(s.clone()),
            ExprKind::Concat(parts) => {
                let mut out = String::new();
                for p in parts {
                    match self.value(sc, p)? {
                        Value::Str(s) => out.push_str(&s),
                        o => out.push_str(&funcs::text::show(&o, true)),
                    }
                }
                Value::Str(out)
            }
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.value(sc, i)?);
                }
                Value::List(out)
            }
            ExprKind::Map(es) => {
                let mut out = BTreeMap::new();
                for me in es {
                    let k = self.value(sc, &me.key)?;
                    let v = self.value(sc, &me.value)?;
                    out.insert(k, v);
                }
                Value::Map(out)
            }
            ExprKind::Struct(fs) => {
                let mut out = Vec::with_capacity(fs.len());
                for f in fs {
                    out.push((f.name.text.clone(), self.value(sc, &f.value)?));
                }
                Value::Struct(out)
            }
            ExprKind::Var(n) => return self.var(sc, &n.text, n.span),
            ExprKind::Call { callee, args } => return self.call(sc, e, callee, args),
            ExprKind::Lambda(l) => return Ok(Rv::F(self.closure(sc, l))),
            ExprKind::If { cond, then, els } => {
                return if self.value(sc, cond)? == Value::Bool(true) {
                    self.expr(sc, then)
                } else {
                    self.expr(sc, els)
                };
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                // Both sides are evaluated (no short circuit, spec §13 W2).
                let a = self.value(sc, lhs);
                let b = self.value(sc, rhs);
                binop(*op, a?, b?, e.span)?
            }
            ExprKind::Not(x) => Value::Bool(self.value(sc, x)? != Value::Bool(true)),
            ExprKind::Except { lhs, rhs } => {
                return match self.expr(sc, lhs) {
                    Err(err) if err.catchable => self.expr(sc, rhs),
                    r => r,
                };
            }
            ExprKind::Index { base, index } => {
                let b = self.value(sc, base)?;
                let i = self.value(sc, index)?;
                match (&b, &i) {
                    (Value::List(l), Value::Int(i)) => {
                        funcs::list_index(l, *i).map_err(|er| RtErr::from_func(er, e.span))?
                    }
                    (Value::Map(m), k) => {
                        funcs::map_key(m, k).map_err(|er| RtErr::from_func(er, e.span))?
                    }
                    _ => {
                        return Err(RtErr::fatal(
                            format!("cannot index a {}", b.type_name()),
                            e.span,
                        ))
                    }
                }
            }
            ExprKind::Field { base, field } => {
                let b = self.value(sc, base)?;
                b.field(&field.text)
                    .cloned()
                    .ok_or_else(|| RtErr::fatal(format!("no field `{}`", field.text), e.span))?
            }
            ExprKind::OptField {
                base,
                field,
                default,
            } => {
                let b = self.value(sc, base)?;
                match b.field(&field.text) {
                    Some(v) => v.clone(),
                    None => return self.expr(sc, default),
                }
            }
        };
        Ok(Rv::V(v))
    }
}

fn num_cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

/// Applies a binary operator to two values (spec §5.4, §13 W1).
pub fn binop(op: BinOp, a: Value, b: Value, span: Span) -> R<Value> {
    use Value::*;
    let bad = |a: &Value, b: &Value| {
        RtErr::fatal(
            format!(
                "operator {} does not apply to {} and {}",
                op.as_str(),
                a.type_name(),
                b.type_name()
            ),
            span,
        )
    };
    Ok(match op {
        BinOp::Add => match (&a, &b) {
            (Str(x), Str(y)) => Str(format!("{x}{y}")),
            (Int(x), Int(y)) => Int(x.wrapping_add(*y)),
            (Float(x), Float(y)) => Float(x + y),
            _ => return Err(bad(&a, &b)),
        },
        BinOp::Sub => match (&a, &b) {
            (Int(x), Int(y)) => Int(x.wrapping_sub(*y)),
            (Float(x), Float(y)) => Float(x - y),
            _ => return Err(bad(&a, &b)),
        },
        BinOp::Mul => match (&a, &b) {
            (Int(x), Int(y)) => Int(x.wrapping_mul(*y)),
            (Float(x), Float(y)) => Float(x * y),
            _ => return Err(bad(&a, &b)),
        },
        BinOp::Div => {
            let (x, y) = match (&a, &b) {
                (Int(x), Int(y)) => (*x as f64, *y as f64),
                (Float(x), Float(y)) => (*x, *y),
                _ => return Err(bad(&a, &b)),
            };
            if y == 0.0 {
                return Err(RtErr {
                    msg: "division by zero".into(),
                    span,
                    catchable: true,
                });
            }
            Float(x / y)
        }
        BinOp::Eq => Bool(a == b),
        BinOp::Ne => Bool(a != b),
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let o = num_cmp(&a, &b).ok_or_else(|| bad(&a, &b))?;
            use std::cmp::Ordering::*;
            Bool(match op {
                BinOp::Lt => o == Less,
                BinOp::Gt => o == Greater,
                BinOp::Le => o != Greater,
                _ => o != Less,
            })
        }
        BinOp::And => Bool(a == Bool(true) && b == Bool(true)),
        BinOp::Or => Bool(a == Bool(true) || b == Bool(true)),
        BinOp::In => Bool(b.as_list().is_some_and(|l| l.contains(&a))),
    })
}

/// A shareable handle on a world (re-exported for the driver).
pub type World = Arc<dyn crate::funcs::world::WorldView>;

/// Static checks of function-graph construction (stage *graph*): a resource body may not hold
/// both `Meta => …` and `Meta:x => …`.
pub fn check_static(m: &Modules) -> Result<(), Error> {
    fn walk(stmts: &[Stmt]) -> Result<(), Error> {
        for st in stmts {
            match &st.kind {
                StmtKind::Resource(r) => {
                    let all = r
                        .entries
                        .iter()
                        .any(|e| matches!(e.kind, EntryKind::MetaAll { .. }));
                    if let Some(one) = r
                        .entries
                        .iter()
                        .find(|e| matches!(e.kind, EntryKind::Meta { .. }))
                    {
                        if all {
                            return Err(Error::new(
                                Stage::Graph,
                                "`Meta =>` cannot be combined with `Meta:x =>` in one resource",
                                one.span,
                            ));
                        }
                    }
                }
                StmtKind::If(i) => {
                    walk(&i.then.stmts)?;
                    if let Some(b) = &i.els {
                        walk(&b.stmts)?;
                    }
                }
                StmtKind::For(f) | StmtKind::ForKv(f) => walk(&f.body.stmts)?,
                StmtKind::Class(c) => walk(&c.body.stmts)?,
                _ => {}
            }
        }
        Ok(())
    }
    for f in &m.files {
        walk(&f.stmts)?;
    }
    Ok(())
}
