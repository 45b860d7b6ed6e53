//! Scopes (spec §6): the scope tree shared by every later pass, name lookup through the chain
//! and through namespaces (`$a.b.c`, `ns.f()`, `include ns.c`), and the set-scope stage
//! ([`check`]): undefined names, duplicates in one scope, class arity, imports and recursion.
//!
//! A [`Scope`] is generic over the payload `P` a pass stores for parameters and loop variables
//! (nothing for set-scope, a type for unify, a value for evaluation); binds, functions and
//! classes are stored as references into the AST and evaluated by the pass in the scope where
//! they were found (lexical scoping).

mod check;

pub use check::{check, MAX_NESTING};

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::diag::{Error, Stage};
use crate::syntax::ast::{self, Bind, ClassStmt, FuncStmt, ImportAlias, Include, StmtKind};
use crate::syntax::span::{FileId, Span};

/// What a variable name is bound to in one scope.
pub enum VarDef<'a, P> {
    /// A bind statement, evaluated lazily in the scope that holds it.
    Bind(&'a Bind),
    /// A parameter, loop variable or constant, with the pass's payload.
    Val(P),
}

/// What a namespace name is bound to in one scope.
#[derive(Clone)]
pub enum NsDef<'a> {
    /// A core module (`fmt`, `world/collect`), by import path.
    Core(String),
    /// A local file or module directory, by index into [`Modules::files`].
    File(usize),
    /// `include c as ns`: the include statement.
    Include(&'a Include),
}

/// The program's files as the scope passes see them.
pub struct Modules {
    /// Every parsed file; index 0 is the entry point.
    pub files: Vec<ast::Program>,
    /// `(importing file, import path)` -> index into `files`.
    pub imports: HashMap<(FileId, String), usize>,
    /// `(file index)` -> span of the import statement that first loaded it.
    pub imported_at: HashMap<usize, Span>,
    /// The program's root directory on disk (the entry file's directory; a deploy's bundle).
    pub root: std::path::PathBuf,
    /// Each file's directory inside the program, `/` or `/lib/` (what `deploy.*` paths are
    /// relative to).
    pub dirs: HashMap<FileId, String>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// One scope of the chain: global, file, or block (spec §6.1).
pub struct Scope<'a, P> {
    /// Unique id (for memo tables).
    pub id: usize,
    /// The enclosing scope.
    pub parent: Option<Rc<Scope<'a, P>>>,
    /// Variables.
    pub vars: HashMap<&'a str, VarDef<'a, P>>,
    /// Named functions.
    pub funcs: HashMap<&'a str, &'a FuncStmt>,
    /// Classes.
    pub classes: HashMap<&'a str, &'a ClassStmt>,
    /// Namespaces (imports and include aliases).
    pub nss: HashMap<String, NsDef<'a>>,
    /// Modules merged unprefixed by `import "..." as *`, in textual order (a later one wins
    /// a clash; the scope's own definitions win over all of them, as in mgmt).
    pub stars: Vec<NsDef<'a>>,
    /// Results of binds already evaluated in this scope (by bind address).
    pub memo: RefCell<HashMap<usize, P>>,
}

impl<'a, P> Scope<'a, P> {
    /// An empty scope under `parent`.
    pub fn new(parent: Option<Rc<Scope<'a, P>>>) -> Self {
        Scope {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            parent,
            vars: HashMap::new(),
            funcs: HashMap::new(),
            classes: HashMap::new(),
            nss: HashMap::new(),
            stars: Vec::new(),
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// Adds the definitions of a list of statements (binds, functions, classes, imports,
    /// include aliases). Returns set-scope errors for duplicates in this scope.
    pub fn define(
        &mut self,
        file: FileId,
        stmts: &'a [ast::Stmt],
        modules: &Modules,
    ) -> Vec<Error> {
        let mut errs = Vec::new();
        let mut paths: Vec<&str> = Vec::new();
        for st in stmts {
            match &st.kind {
                StmtKind::Bind(b) => {
                    if self.vars.contains_key(b.name.text.as_str()) {
                        errs.push(dup("variable", &b.name.text, b.name.span));
                    } else {
                        self.vars.insert(&b.name.text, VarDef::Bind(b));
                    }
                }
                StmtKind::Func(f) => {
                    if self.funcs.contains_key(f.name.text.as_str()) {
                        errs.push(dup("function", &f.name.text, f.name.span));
                    } else {
                        self.funcs.insert(&f.name.text, f);
                    }
                }
                StmtKind::Class(c) => {
                    // Duplicate classes are an interpolate error, reported earlier.
                    self.classes.entry(&c.name.text).or_insert(c);
                }
                StmtKind::Import(im) => {
                    if paths.contains(&im.path.as_str()) {
                        errs.push(Error::new(
                            Stage::SetScope,
                            format!("`{}` is imported twice in one scope", im.path),
                            st.span,
                        ));
                        continue;
                    }
                    paths.push(&im.path);
                    let def = if crate::funcs::is_core_module(&im.path) {
                        NsDef::Core(im.path.clone())
                    } else if let Some(i) = modules.imports.get(&(file, im.path.clone())) {
                        NsDef::File(*i)
                    } else {
                        errs.push(Error::new(
                            Stage::SetScope,
                            format!("no module `{}`", im.path),
                            st.span,
                        ));
                        continue;
                    };
                    let alias = match &im.alias {
                        Some(ImportAlias::Name(n)) => n.text.clone(),
                        Some(ImportAlias::Star(_)) => {
                            self.stars.push(def);
                            continue;
                        }
                        None => crate::funcs::default_namespace(&im.path),
                    };
                    match self.nss.entry(alias.clone()) {
                        // At the whole import statement, as mgmt.
                        std::collections::hash_map::Entry::Occupied(_) => {
                            errs.push(dup("namespace", &alias, st.span))
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(def);
                        }
                    }
                }
                StmtKind::Include(inc) => {
                    if let Some(a) = &inc.alias {
                        if self.nss.contains_key(a.text.as_str()) {
                            errs.push(dup("namespace", &a.text, a.span));
                        } else {
                            self.nss.insert(a.text.clone(), NsDef::Include(inc));
                        }
                    }
                }
                _ => {}
            }
        }
        errs
    }
}

fn dup(what: &str, name: &str, span: Span) -> Error {
    Error::new(
        Stage::SetScope,
        format!("{what} `{name}` is defined twice in one scope"),
        span,
    )
}

/// Where a name was found: in the own definitions of a scope (the chain's, or an imported
/// file's merged by `import ... as *`), or in a core module merged by `import "m" as *`.
enum Hit<'a, P> {
    Scope(Rc<Scope<'a, P>>),
    Core(String),
}

/// How deep `as *` imports may be followed through files that merge other files.
const MAX_STAR_DEPTH: usize = 64;

/// Looks `name` up through the chain, innermost first: at each scope its own definitions
/// (`own`), then its `as *` imports, the later one first (`core` says whether a core module
/// has the name). An import that cannot be opened defines nothing here; set-scope reports it
/// at the import statement.
fn find_in<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    own: &dyn Fn(&Scope<'a, P>) -> bool,
    core: &dyn Fn(&str) -> bool,
) -> Option<Hit<'a, P>> {
    let mut s = sc.clone();
    loop {
        if let Some(h) = find_level(o, &s, own, core, 0) {
            return Some(h);
        }
        s = s.parent.clone()?;
    }
}

/// One scope of the chain: its own definitions, then what its `as *` imports merge in.
fn find_level<'a, P>(
    o: &dyn Opener<'a, P>,
    s: &Rc<Scope<'a, P>>,
    own: &dyn Fn(&Scope<'a, P>) -> bool,
    core: &dyn Fn(&str) -> bool,
    depth: usize,
) -> Option<Hit<'a, P>> {
    if own(s) {
        return Some(Hit::Scope(s.clone()));
    }
    if depth >= MAX_STAR_DEPTH {
        return None;
    }
    for star in s.stars.iter().rev() {
        match star {
            NsDef::Core(m) if core(m) => return Some(Hit::Core(m.clone())),
            NsDef::File(idx) => {
                let Ok(fs) = o.open_file(*idx, Span::default()) else {
                    continue;
                };
                if let Some(h) = find_level(o, &fs, own, core, depth + 1) {
                    return Some(h);
                }
            }
            NsDef::Core(_) | NsDef::Include(_) => {}
        }
    }
    None
}

fn no_core(_: &str) -> bool {
    false
}

/// Finds the scope (innermost first) defining variable `name`.
pub fn find_var<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    name: &str,
) -> Option<Rc<Scope<'a, P>>> {
    match find_in(o, sc, &|s| s.vars.contains_key(name), &no_core)? {
        Hit::Scope(s) => Some(s),
        Hit::Core(_) => None,
    }
}

/// A named function as found by [`find_func`].
pub enum FuncDef<'a, P> {
    /// A `func` statement and the scope defining it.
    User(&'a FuncStmt, Rc<Scope<'a, P>>),
    /// A function of the core module with this import path, merged by `import "m" as *`.
    Core(String),
}

/// Finds a named function: a `func` statement and the scope defining it, or a core module's
/// function merged into a scope of the chain by `import "m" as *`. Top-level built-ins
/// (`len`) are not found here; callers try them when this finds nothing.
pub fn find_func<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    name: &str,
) -> Option<FuncDef<'a, P>> {
    let core = |m: &str| crate::funcs::lookup(m, name).is_some();
    match find_in(o, sc, &|s| s.funcs.contains_key(name), &core)? {
        Hit::Scope(s) => Some(FuncDef::User(s.funcs.get(name).copied()?, s)),
        Hit::Core(m) => Some(FuncDef::Core(m)),
    }
}

/// Finds a class and the scope defining it.
pub fn find_class<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    name: &str,
) -> Option<(&'a ClassStmt, Rc<Scope<'a, P>>)> {
    match find_in(o, sc, &|s| s.classes.contains_key(name), &no_core)? {
        Hit::Scope(s) => Some((s.classes.get(name).copied()?, s)),
        Hit::Core(_) => None,
    }
}

/// Finds a namespace and the scope defining it.
pub fn find_ns<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    name: &str,
) -> Option<(NsDef<'a>, Rc<Scope<'a, P>>)> {
    match find_in(o, sc, &|s| s.nss.contains_key(name), &no_core)? {
        Hit::Scope(s) => Some((s.nss.get(name)?.clone(), s)),
        Hit::Core(_) => None,
    }
}

/// Where a dotted prefix leads.
pub enum Target<'a, P> {
    /// A scope (a file, an included class body).
    Scope(Rc<Scope<'a, P>>),
    /// A core module, by import path.
    Core(String),
}

/// Opens namespaces for one pass: imported files and include aliases.
pub trait Opener<'a, P> {
    /// The top scope of imported file `idx`.
    fn open_file(&self, idx: usize, at: Span) -> Result<Rc<Scope<'a, P>>, Error>;
    /// The body scope of the include statement `inc` found in scope `sc`.
    fn open_include(
        &self,
        sc: &Rc<Scope<'a, P>>,
        inc: &'a Include,
    ) -> Result<Rc<Scope<'a, P>>, Error>;
}

/// Resolves the namespace path `parts` (e.g. `["a", "b"]` of `$a.b.c`) from scope `sc`.
pub fn resolve_path<'a, P>(
    o: &dyn Opener<'a, P>,
    sc: &Rc<Scope<'a, P>>,
    parts: &[&str],
    span: Span,
) -> Result<Target<'a, P>, Error> {
    let mut cur = sc.clone();
    for (i, p) in parts.iter().enumerate() {
        let Some((def, at)) = find_ns(o, &cur, p) else {
            return Err(Error::new(
                Stage::SetScope,
                format!("no namespace `{}` in scope", parts[..=i].join(".")),
                span,
            ));
        };
        cur = match def {
            NsDef::Core(m) => {
                if i + 1 != parts.len() {
                    return Err(Error::new(
                        Stage::SetScope,
                        format!("module `{m}` has no namespace `{}`", parts[i + 1]),
                        span,
                    ));
                }
                return Ok(Target::Core(m));
            }
            NsDef::File(idx) => o.open_file(idx, span)?,
            NsDef::Include(inc) => o.open_include(&at, inc)?,
        };
    }
    Ok(Target::Scope(cur))
}

/// Splits a dotted name into its namespace path and final name.
pub fn split_dotted(text: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = text.split('.').map(str::trim).collect();
    let last = parts.pop().unwrap_or_default();
    (parts, last)
}
