//! The YAML front end: reads a graph file into a [`GraphSpec`], validating every resource
//! against the kinds of a [`Registry`] and reporting every mistake at once, each naming the
//! file, the line, the resource and the field.
//!
//! The format (documented in README.md):
//!
//! ```yaml
//! resources:
//!   file:
//!     - name: /tmp/demo/motd
//!       content: "hello\n"
//!       meta: { retry: 3, delay: 500 }
//!   exec:
//!     - name: reload
//!       cmd: /bin/true
//! edges:
//!   - { from: "file[/tmp/demo/motd]", to: "exec[reload]", notify: true }
//! ```
//!
//! String values (names, params, edge endpoints) expand `${VAR}` from the environment
//! (`${VAR:-default}` falls back to a default; `$${` is a literal `${`).
//!
//! The text goes through `saphyr-parser`'s event parser into a small tree of nodes, each with
//! the line it starts on (so errors name the lines the parser saw, in block and flow style
//! alike). Scalars resolve as `serde_yaml_ng` resolves them into its `Value` (YAML 1.2 core
//! schema: `0644` plain is a string, `644` an int, `"644"` a string; `!!int`-style core tags
//! apply, any other `!tag` is a tagged value, which no field accepts); aliases expand to their
//! anchor's node; duplicate keys, several documents and over-deep nesting are invalid. Invalid
//! YAML is reported with `serde_yaml_ng`'s message (libyaml's wording), the message this front
//! end has always given.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, ScalarStyle, ScanError, StrInput, Tag};

mod quick;
use tend_engine::schema::check_field;
use tend_engine::{EdgeSpec, GraphSpec, Registry, ResId, ResSpec, Type, Value};

/// One mistake in a graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The resource involved, if any.
    pub res: Option<ResId>,
    /// The field involved, if any (`meta.retry` for a meta parameter).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(r) = &self.res {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where a resource was written: the line of its `name` key, and its keys' entries in
/// [`Lines::fields`].
#[derive(Clone, Debug)]
struct ResLines {
    line: usize,
    fields: std::ops::Range<usize>,
}

/// Where the resources of a file and their keys were written.
#[derive(Clone, Debug, Default)]
struct Lines {
    res: foldhash::HashMap<ResId, ResLines>,
    /// The key (its number in `index`) and line of each key of each resource, resource after
    /// resource.
    fields: Vec<(u32, usize)>,
    /// Each key name met, numbered in order of appearance.
    index: foldhash::HashMap<String, u32>,
}

impl Lines {
    /// Records that the current resource has key `name` on `line`.
    fn field(&mut self, name: &str, line: usize) {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                let i = self.index.len() as u32;
                self.index.insert(name.to_string(), i);
                i
            }
        };
        self.fields.push((i, line));
    }

    /// The line of key `field` of `res`, else of the resource.
    fn line_of(&self, res: &ResId, field: Option<&str>) -> Option<usize> {
        let at = self.res.get(res)?;
        let fline = field.and_then(|f| {
            let i = *self.index.get(f)?;
            self.fields[at.fields.clone()]
                .iter()
                .find(|(k, _)| *k == i)
                .map(|(_, l)| *l)
        });
        Some(fline.unwrap_or(at.line))
    }
}

/// A graph read from a file, with where each resource and field was written (to locate later
/// errors, e.g. the engine's cycle check, in the source).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The graph.
    pub graph: GraphSpec,
    path: PathBuf,
    lines: Lines,
}

impl Loaded {
    /// An error about `res`/`field` of this file, located in the source when possible (the line
    /// of the field's key, else of the resource's `name`; a meta parameter is located at its
    /// resource's `meta` key).
    pub fn error(&self, res: Option<ResId>, field: Option<String>, message: String) -> LoadError {
        let field = field.map(|f| match f.strip_prefix("Meta:") {
            Some(m) => format!("meta.{m}"),
            None => f,
        });
        let line = res.as_ref().and_then(|r| {
            let key = field
                .as_deref()
                .map(|f| if f.starts_with("meta.") { "meta" } else { f });
            self.lines.line_of(r, key)
        });
        LoadError {
            path: self.path.clone(),
            line,
            res,
            field,
            message,
        }
    }
}

/// Reads and validates a graph file. `env` looks environment variables up.
pub fn load(
    path: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<LoadError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![LoadError {
            path: path.to_path_buf(),
            line: None,
            res: None,
            field: None,
            message: format!("cannot read the graph file: {e}"),
        }]
    })?;
    parse(path, text, registry, env)
}

/// Parses and validates graph text read from `path`.
pub fn parse(
    path: &Path,
    text: String,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<LoadError>> {
    let mut p = Parser {
        path: path.to_path_buf(),
        text: &text,
        registry,
        env,
        errors: Vec::new(),
        lines: Lines::default(),
    };
    let graph = p.document();
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    let lines = p.lines;
    Ok(Loaded {
        graph,
        path: path.to_path_buf(),
        lines,
    })
}

/// The error message of a conversion whose error was already recorded.
const REPORTED: &str = "";

struct Parser<'a> {
    path: PathBuf,
    text: &'a str,
    registry: &'a Registry,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<LoadError>,
    lines: Lines,
}

impl<'a> Parser<'a> {
    /// Records an error (unless `msg` is [`REPORTED`]).
    fn err(&mut self, line: Option<usize>, res: Option<&ResId>, field: Option<&str>, msg: String) {
        if msg == REPORTED {
            return;
        }
        self.errors.push(LoadError {
            path: self.path.clone(),
            line,
            res: res.cloned(),
            field: field.map(str::to_string),
            message: msg,
        });
    }

    /// Records that the text is not valid YAML, in `serde_yaml_ng`'s words when it agrees
    /// (its libyaml messages are the ones this front end has always given), else in ours.
    fn invalid_yaml(&mut self, ours: Invalid) {
        let (line, msg) = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(self.text) {
            Err(e) => (e.location().map(|l| l.line()), e.to_string()),
            Ok(_) => (ours.line, ours.message),
        };
        self.err(line, None, None, format!("invalid YAML: {msg}"));
    }

    fn document(&mut self) -> GraphSpec {
        let mut graph = GraphSpec::default();
        let doc = match read_tree(self.text) {
            Ok(Some(d)) => d,
            Ok(None) => return graph,
            Err(e) => {
                self.invalid_yaml(e);
                return graph;
            }
        };
        let top = match doc.yaml {
            Yaml::Null => return graph,
            Yaml::Map(m) => m,
            other => {
                self.err(
                    Some(doc.line),
                    None,
                    None,
                    format!(
                        "expected a mapping with `resources` and `edges`, got {}",
                        yaml_kind(&other)
                    ),
                );
                return graph;
            }
        };
        let mut resources = None;
        let mut edges = None;
        for (k, v) in top {
            match &k.yaml {
                Yaml::Str(s) if s == "resources" => resources = Some((k.line, v)),
                Yaml::Str(s) if s == "edges" => edges = Some((k.line, v)),
                _ => {
                    let key = key_text(&k.yaml);
                    self.err(
                        Some(k.line),
                        None,
                        None,
                        format!("unknown top-level key `{key}` (expected `resources` or `edges`)"),
                    );
                }
            }
        }
        if let Some((line, r)) = resources {
            self.resources(line, r, &mut graph);
        }
        if let Some((line, e)) = edges {
            self.edges(line, e, &mut graph);
        }
        graph
    }

    fn resources(&mut self, section: usize, r: Node<'_>, graph: &mut GraphSpec) {
        let kinds = match r.yaml {
            Yaml::Null => return,
            Yaml::Map(m) => m,
            other => {
                self.err(
                    Some(section),
                    None,
                    None,
                    format!(
                        "`resources` must map each kind to a list of resources, got {}",
                        yaml_kind(&other)
                    ),
                );
                return;
            }
        };
        for (k, items) in kinds {
            let kind = key_text(&k.yaml);
            let kind_line = Some(k.line);
            let registry: &Registry = self.registry;
            let Some(kind_def) = registry.get(&kind) else {
                let known: Vec<&str> = self
                    .registry
                    .kinds()
                    .map(|k| k.schema.kind.as_str())
                    .collect();
                self.err(
                    kind_line,
                    None,
                    None,
                    format!(
                        "unknown resource kind `{kind}` (known kinds: {})",
                        known.join(", ")
                    ),
                );
                continue;
            };
            let schema = &kind_def.schema;
            let items = match items.yaml {
                Yaml::Null => continue,
                Yaml::Seq(s) => s,
                other => {
                    self.err(
                        kind_line,
                        None,
                        None,
                        format!(
                            "kind `{kind}` must hold a list of resources, got {}",
                            yaml_kind(&other)
                        ),
                    );
                    continue;
                }
            };
            // Grown once, not by doubling: each doubling of a 10,000-entry table touches
            // fresh memory, and page faults were a third of the time spent here.
            graph.resources.reserve(items.len());
            self.lines.res.reserve(items.len());
            self.lines.fields.reserve(items.len() * 4);
            for item in items {
                let Yaml::Map(fields) = &item.yaml else {
                    self.err(
                        Some(item.line),
                        None,
                        None,
                        format!(
                            "each `{kind}` resource must be a mapping with a `name`, got {}",
                            yaml_kind(&item.yaml)
                        ),
                    );
                    continue;
                };
                let (line, raw) = match fields.iter().find(|(k, _)| k.is_str("name")) {
                    Some((k, v)) => match &v.yaml {
                        Yaml::Str(s) => (k.line, (s.clone(), v.line)),
                        Yaml::Int(_) | Yaml::BigInt(_) | Yaml::Float(_) => {
                            (k.line, (Cow::Owned(key_text(&v.yaml)), v.line))
                        }
                        other => {
                            self.err(
                                Some(k.line),
                                None,
                                Some("name"),
                                format!(
                                    "a `{kind}` name must be a string, got {}",
                                    yaml_kind(other)
                                ),
                            );
                            continue;
                        }
                    },
                    None => {
                        self.err(
                            Some(item.line),
                            None,
                            None,
                            format!("a `{kind}` resource has no `name`"),
                        );
                        continue;
                    }
                };
                let Some(name) = self.expand(&raw.0, raw.1) else {
                    continue;
                };
                let mut spec = ResSpec::new(kind.clone(), name);
                let id = spec.id();
                if spec.name.is_empty() {
                    self.err(Some(line), Some(&id), None, "empty resource name".into());
                    continue;
                }
                if let Some(first) = self.lines.res.get(&id) {
                    let msg = format!("duplicate resource (first defined on line {})", first.line);
                    self.err(Some(line), Some(&id), None, msg);
                    continue;
                }
                let mut ok = true;
                let first_field = self.lines.fields.len();
                for (fk, fv) in fields {
                    let field = key_str(&fk.yaml);
                    let fline = Some(fk.line);
                    self.lines.field(&field, fk.line);
                    match &*field {
                        "name" => {}
                        "meta" => ok &= self.meta(fv, &mut spec, fline),
                        _ => {
                            let Some(def) = schema.get(&field) else {
                                let fields: Vec<&str> =
                                    schema.fields.iter().map(|f| f.name.as_str()).collect();
                                self.err(
                                    fline,
                                    Some(&id),
                                    Some(&field),
                                    format!(
                                        "kind `{kind}` has no such field (its fields: {})",
                                        fields.join(", ")
                                    ),
                                );
                                ok = false;
                                continue;
                            };
                            match self.value(fv, Some(&def.ty)) {
                                Ok(v) => {
                                    if let Err(e) = check_field(def, &v) {
                                        self.err(fline, Some(&id), Some(&field), e.reason);
                                        ok = false;
                                    }
                                    spec.params.insert(field.into_owned(), v);
                                }
                                Err(msg) => {
                                    self.err(fline, Some(&id), Some(&field), msg);
                                    ok = false;
                                }
                            }
                        }
                    }
                }
                // Recorded even when a field is wrong: edges to it are then not reported too.
                let fields = first_field..self.lines.fields.len();
                self.lines.res.insert(id, ResLines { line, fields });
                if !ok {
                    continue;
                }
                // Constructor checks are left to the engine's check of the whole graph
                // (`Engine::prepare`), whose errors `Loaded::error` locates in this file.
                graph.resources.push(spec);
            }
        }
    }

    fn meta(&mut self, v: &Node<'_>, spec: &mut ResSpec, line: Option<usize>) -> bool {
        let id = spec.id();
        let Yaml::Map(m) = &v.yaml else {
            self.err(
                line,
                Some(&id),
                Some("meta"),
                format!("`meta` must be a mapping, got {}", yaml_kind(&v.yaml)),
            );
            return false;
        };
        let mut ok = true;
        for (k, v) in m {
            let name = key_text(&k.yaml);
            let field = format!("meta.{name}");
            let line = Some(k.line);
            let value = match self.value(v, None) {
                Ok(v) => v,
                Err(msg) => {
                    self.err(line, Some(&id), Some(&field), msg);
                    ok = false;
                    continue;
                }
            };
            if let Err(e) = spec.meta.set(&name, &value) {
                self.err(line, Some(&id), Some(&field), e.reason);
                ok = false;
            }
        }
        ok
    }

    fn edges(&mut self, section: usize, e: Node<'_>, graph: &mut GraphSpec) {
        let items = match e.yaml {
            Yaml::Null => return,
            Yaml::Seq(s) => s,
            other => {
                self.err(
                    Some(section),
                    None,
                    None,
                    format!("`edges` must be a list, got {}", yaml_kind(&other)),
                );
                return;
            }
        };
        let ids: BTreeSet<ResId> = graph.resources.iter().map(ResSpec::id).collect();
        for item in items {
            let line = Some(item.line);
            let Yaml::Map(m) = &item.yaml else {
                self.err(
                    line,
                    None,
                    None,
                    format!(
                        "an edge must be a mapping `{{from: \"kind[name]\", to: \"kind[name]\"}}`, got {}",
                        yaml_kind(&item.yaml)
                    ),
                );
                continue;
            };
            let mut from = None;
            let mut to = None;
            let mut notify = false;
            let mut ok = true;
            for (k, v) in m {
                let key = key_text(&k.yaml);
                let kline = Some(k.line);
                match (key.as_str(), &v.yaml) {
                    ("from" | "to", Yaml::Str(s)) => {
                        let Some(s) = self.expand(s, v.line) else {
                            ok = false;
                            continue;
                        };
                        match parse_res_id(&s) {
                            Some(id) => {
                                if key == "from" {
                                    from = Some(id)
                                } else {
                                    to = Some(id)
                                }
                            }
                            None => {
                                self.err(
                                    kline,
                                    None,
                                    Some(&key),
                                    format!("edge endpoint {s:?} is not `kind[name]`"),
                                );
                                ok = false;
                            }
                        }
                    }
                    ("notify", Yaml::Bool(b)) => notify = *b,
                    ("from" | "to" | "notify", other) => {
                        let want = if key == "notify" {
                            "a bool"
                        } else {
                            "a string `kind[name]`"
                        };
                        self.err(
                            kline,
                            None,
                            Some(&key),
                            format!("expected {want}, got {}", yaml_kind(other)),
                        );
                        ok = false;
                    }
                    _ => {
                        self.err(
                            kline,
                            None,
                            Some(&key),
                            "unknown edge key (expected `from`, `to`, `notify`)".into(),
                        );
                        ok = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            let (Some(from), Some(to)) = (from, to) else {
                self.err(
                    line,
                    None,
                    None,
                    "an edge needs both `from` and `to`".into(),
                );
                continue;
            };
            let mut missing = false;
            for end in [&from, &to] {
                if !ids.contains(end) && !self.lines.res.contains_key(end) {
                    self.err(
                        line,
                        Some(end),
                        None,
                        format!("edge {from} -> {to}: no such resource in the graph"),
                    );
                    missing = true;
                }
            }
            if !missing {
                graph.edges.push(EdgeSpec { from, to, notify });
            }
        }
    }

    /// Converts a YAML value, guided by the expected type when known (an int where a float
    /// is expected becomes a float; a mapping where a struct is expected becomes a struct).
    fn value(&mut self, v: &Node<'_>, ty: Option<&Type>) -> Result<Value, String> {
        Ok(match (&v.yaml, ty) {
            (Yaml::Null, _) => {
                return Err("null is not a value (leave the field out to keep its default)".into())
            }
            (Yaml::Bool(b), _) => Value::Bool(*b),
            (Yaml::Int(i), Some(Type::Float)) => Value::Float(*i as f64),
            (Yaml::Int(i), _) => Value::Int(*i),
            (Yaml::BigInt(n), _) => {
                return Err(format!("{n} does not fit a 64-bit signed integer"));
            }
            (Yaml::Float(f), _) => Value::Float(*f),
            (Yaml::Str(s), _) => match self.expand(s, v.line) {
                Some(s) => Value::Str(s),
                None => return Err(REPORTED.into()),
            },
            (Yaml::Seq(items), t) => {
                let inner = match t {
                    Some(Type::List(inner)) => Some(&**inner),
                    _ => None,
                };
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.value(i, inner)?);
                }
                Value::List(out)
            }
            (Yaml::Map(m), Some(Type::Struct(fields))) => {
                let mut out = Vec::with_capacity(fields.len());
                for (fname, fty) in fields {
                    let fv = m
                        .iter()
                        .find(|(k, _)| k.is_str(fname))
                        .map(|(_, v)| v)
                        .ok_or_else(|| format!("missing struct field `{fname}`"))?;
                    out.push((fname.clone(), self.value(fv, Some(fty))?));
                }
                if let Some(extra) = m
                    .iter()
                    .map(|(k, _)| key_text(&k.yaml))
                    .find(|k| !fields.iter().any(|(f, _)| f == k))
                {
                    return Err(format!("no struct field `{extra}`"));
                }
                Value::Struct(out)
            }
            (Yaml::Map(m), t) => {
                let (kt, vt) = match t {
                    Some(Type::Map(k, v)) => (Some(&**k), Some(&**v)),
                    _ => (None, None),
                };
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    out.insert(self.value(k, kt)?, self.value(v, vt)?);
                }
                Value::Map(out)
            }
            (Yaml::Tagged(tag, _), _) => {
                return Err(format!("YAML tags ({tag}) are not supported"))
            }
        })
    }

    /// Expands `${VAR}` in `s`, a string written from line `line` on; on an unset variable
    /// records an error (on the line that names the variable) and returns `None`.
    fn expand(&mut self, s: &str, line: usize) -> Option<String> {
        match expand_env(s, self.env) {
            Ok(s) => Some(s),
            Err(var) => {
                let needle = format!("${{{var}");
                let line = self
                    .text
                    .lines()
                    .enumerate()
                    .skip(line.saturating_sub(1))
                    .find(|(_, l)| l.contains(&needle))
                    .map_or(line, |(i, _)| i + 1);
                self.err(
                    Some(line),
                    None,
                    None,
                    format!("environment variable `{var}` is not set (used as `${{{var}}}`)"),
                );
                None
            }
        }
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. Returns the name of the
/// first unset variable (without default) as the error.
pub fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `kind[name]`.
pub fn parse_res_id(s: &str) -> Option<ResId> {
    let open = s.find('[')?;
    let inner = s[open + 1..].strip_suffix(']')?;
    let kind = s[..open].trim();
    if kind.is_empty() || inner.is_empty() {
        return None;
    }
    Some(ResId::new(kind, inner))
}

fn yaml_kind(v: &Yaml<'_>) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a bool",
        Yaml::Float(_) => "a float",
        Yaml::Int(_) | Yaml::BigInt(_) => "an int",
        Yaml::Str(_) => "a string",
        Yaml::Seq(_) => "a list",
        Yaml::Map(_) => "a mapping",
        Yaml::Tagged(..) => "a tagged value",
    }
}

/// A key as text, borrowed when it is a string.
fn key_str<'k>(k: &'k Yaml<'_>) -> Cow<'k, str> {
    match k {
        Yaml::Str(s) => Cow::Borrowed(s),
        other => Cow::Owned(key_text(other)),
    }
}

/// A key (or a number used as a name) as text, numbers written as `serde_yaml_ng` writes them.
fn key_text(k: &Yaml<'_>) -> String {
    match k {
        Yaml::Str(s) => s.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(i) => i.to_string(),
        Yaml::BigInt(n) => n.to_string(),
        Yaml::Float(f) => serde_yaml_ng::Number::from(*f).to_string(),
        Yaml::Null => "null".into(),
        other => yaml_kind(other).into(),
    }
}

/// A YAML node and the 1-based line it starts on.
#[derive(Clone, Debug)]
struct Node<'a> {
    line: usize,
    yaml: Yaml<'a>,
}

impl Node<'_> {
    /// Whether this is the string `s`.
    fn is_str(&self, s: &str) -> bool {
        matches!(&self.yaml, Yaml::Str(v) if v == s)
    }
}

/// A YAML value as `serde_yaml_ng::Value` holds it (strings borrowed from the text when they
/// can be).
#[derive(Clone, Debug)]
enum Yaml<'a> {
    Null,
    Bool(bool),
    /// An integer that fits an `i64`.
    Int(i64),
    /// A positive integer above `i64::MAX`.
    BigInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Seq(Vec<Node<'a>>),
    /// Entries in document order (keys are unique).
    Map(Vec<(Node<'a>, Node<'a>)>),
    /// A value under a `!tag` (shown as `serde_yaml_ng` shows it).
    Tagged(String, Box<Node<'a>>),
}

impl PartialEq for Yaml<'_> {
    /// Equality of keys as `serde_yaml_ng` sees it (maps compare without order; all NaNs are
    /// one value).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            (Yaml::BigInt(a), Yaml::BigInt(b)) => a == b,
            (Yaml::Float(a), Yaml::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            (Yaml::Seq(a), Yaml::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.yaml == y.yaml)
            }
            (Yaml::Map(a), Yaml::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(ka, va)| {
                        b.iter()
                            .any(|(kb, vb)| ka.yaml == kb.yaml && va.yaml == vb.yaml)
                    })
            }
            (Yaml::Tagged(ta, a), Yaml::Tagged(tb, b)) => ta == tb && a.yaml == b.yaml,
            _ => false,
        }
    }
}

/// Why the text is not valid YAML (or not what `serde_yaml_ng` accepts), in our words.
#[derive(Debug)]
struct Invalid {
    line: Option<usize>,
    message: String,
}

impl Invalid {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Invalid {
            line: Some(line),
            message: format!("{} at line {line}", message.into()),
        }
    }
}

impl From<ScanError> for Invalid {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        Invalid {
            line: Some(m.line()),
            message: format!("{} at line {} column {}", e.info(), m.line(), m.col() + 1),
        }
    }
}

/// How deep collections may nest, and how many times (per event of the document) aliases
/// may be expanded: `serde_yaml_ng`'s limits.
const MAX_DEPTH: usize = 128;
const JUMPS_PER_EVENT: usize = 100;

/// Reads the text into the tree of its only document (`None` for a stream with no document):
/// with the fast reader for the common subset of YAML, else with `saphyr-parser`.
fn read_tree(text: &str) -> Result<Option<Node<'_>>, Invalid> {
    let mut quick = Reader::new(text, Source::Quick(quick::Quick::new(text)));
    match quick.document() {
        Err(_) if quick.gave_up => read_tree_full(text),
        read => read,
    }
}

/// Reads the text into a tree with `saphyr-parser` alone.
fn read_tree_full(text: &str) -> Result<Option<Node<'_>>, Invalid> {
    Reader::new(
        text,
        Source::Full(Box::new(saphyr_parser::Parser::new_from_str(text))),
    )
    .document()
}

/// Where events come from.
enum Source<'a> {
    Quick(quick::Quick<'a>),
    Full(Box<saphyr_parser::Parser<'a, StrInput<'a>>>),
}

/// An anchored node, with the alias expansions it took and how deep its collections nest.
struct Anchored<'a> {
    node: Node<'a>,
    jumps: usize,
    height: usize,
}

struct Reader<'a> {
    events: Source<'a>,
    /// The fast reader met something outside its subset.
    gave_up: bool,
    /// By anchor id (`None` while the anchored node is being read).
    anchors: Vec<Option<Anchored<'a>>>,
    /// Alias expansions so far, counted as `serde_yaml_ng` counts them (an alias whose node
    /// holds aliases replays those too).
    jumps: usize,
    max_jumps: usize,
    /// Node events so far (the measure of `serde_yaml_ng`'s repetition limit).
    count: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &str, events: Source<'a>) -> Self {
        Reader {
            events,
            gave_up: false,
            anchors: Vec::new(),
            jumps: 0,
            // The document has at most this many events (each takes at least half a
            // character, an empty scalar aside), which bounds the work aliases may cause
            // before the end.
            max_jumps: JUMPS_PER_EVENT * (2 * text.len() + 8),
            count: 0,
        }
    }

    /// Reads the only document.
    fn document(&mut self) -> Result<Option<Node<'a>>, Invalid> {
        let mut doc = None;
        loop {
            let (event, line) = self.next()?;
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart(_) if doc.is_none() => {
                    doc = match self.node(0)? {
                        Some((node, _)) => Some(node),
                        None => return Err(Invalid::at(line, "empty document")),
                    };
                }
                Event::DocumentStart(_) => return Err(Invalid::at(
                    line,
                    "deserializing from YAML containing more than one document is not supported",
                )),
                _ => {}
            }
        }
        if self.jumps > JUMPS_PER_EVENT * self.count {
            return Err(Invalid::at(1, "repetition limit exceeded"));
        }
        Ok(doc)
    }

    /// The next event and the line it starts on.
    fn next(&mut self) -> Result<(Event<'a>, usize), Invalid> {
        match &mut self.events {
            Source::Quick(q) => q.next().ok_or_else(|| {
                self.gave_up = true;
                Invalid::at(1, "outside the fast reader's subset")
            }),
            Source::Full(p) => match p.next_event() {
                Some(Ok((event, span))) => Ok((event, span.start.line())),
                Some(Err(e)) => Err(e.into()),
                None => Err(Invalid::at(1, "unexpected end of the event stream")),
            },
        }
    }

    /// Reads the next node at `depth` collections deep, with the depth of its own nesting;
    /// `None` at the end of the enclosing collection.
    fn node(&mut self, depth: usize) -> Result<Option<(Node<'a>, usize)>, Invalid> {
        let (event, line) = self.next()?;
        let jumps = self.jumps;
        let (yaml, height, anchor, tag) = match event {
            Event::SequenceEnd | Event::MappingEnd => return Ok(None),
            Event::Alias(id) => {
                self.count += 1;
                let Some(Some(a)) = self.anchors.get(id) else {
                    return Err(Invalid::at(line, "alias to an unknown or enclosing anchor"));
                };
                self.jumps += 1 + a.jumps;
                if depth + a.height > MAX_DEPTH {
                    return Err(Invalid::at(line, "recursion limit exceeded"));
                }
                if self.jumps > self.max_jumps {
                    return Err(Invalid::at(line, "repetition limit exceeded"));
                }
                return Ok(Some((a.node.clone(), a.height)));
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.count += 1;
                let yaml =
                    scalar(value, style, tag.as_deref()).map_err(|m| Invalid::at(line, m))?;
                (yaml, 0, anchor, tag)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count += 1;
                self.nest(depth, line)?;
                let mut items = Vec::new();
                let mut height = 0;
                while let Some((item, h)) = self.node(depth + 1)? {
                    height = height.max(h);
                    items.push(item);
                }
                self.count += 1;
                (Yaml::Seq(items), height + 1, anchor, tag)
            }
            Event::MappingStart(anchor, tag) => {
                self.count += 1;
                self.nest(depth, line)?;
                let mut entries: Vec<(Node<'a>, Node<'a>)> = Vec::new();
                let mut height = 0;
                while let Some((key, hk)) = self.node(depth + 1)? {
                    let Some((value, hv)) = self.node(depth + 1)? else {
                        return Err(Invalid::at(line, "mapping key without a value"));
                    };
                    height = height.max(hk).max(hv);
                    entries.push((key, value));
                }
                self.count += 1;
                if let Some(dup) = duplicate_key(&entries) {
                    return Err(Invalid::at(dup, "duplicate entry in YAML map"));
                }
                (Yaml::Map(entries), height + 1, anchor, tag)
            }
            _ => return Err(Invalid::at(line, "unexpected YAML event")),
        };
        let yaml = match tag.as_deref().map(full_tag) {
            Some(t) if t.starts_with('!') => {
                Yaml::Tagged(show_tag(&t), Box::new(Node { line, yaml }))
            }
            _ => yaml,
        };
        Ok(Some(self.anchor(
            anchor,
            Node { line, yaml },
            height,
            jumps,
        )))
    }

    /// Checks that a collection may start `depth` collections deep.
    fn nest(&self, depth: usize, line: usize) -> Result<(), Invalid> {
        if depth >= MAX_DEPTH {
            return Err(Invalid::at(line, "recursion limit exceeded"));
        }
        Ok(())
    }

    /// Records `node` under its anchor id (0: none); `jumps` is the expansion count before it.
    fn anchor(
        &mut self,
        anchor: usize,
        node: Node<'a>,
        height: usize,
        jumps: usize,
    ) -> (Node<'a>, usize) {
        if anchor > 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize_with(anchor + 1, || None);
            }
            self.anchors[anchor] = Some(Anchored {
                node: node.clone(),
                jumps: self.jumps - jumps,
                height,
            });
        }
        (node, height)
    }
}

/// The line of a key that repeats an earlier key of the same mapping, if any.
fn duplicate_key(entries: &[(Node<'_>, Node<'_>)]) -> Option<usize> {
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate().skip(1) {
            if entries[..i].iter().any(|(e, _)| e.yaml == k.yaml) {
                return Some(k.line);
            }
        }
        return None;
    }
    /// A hashable stand-in for a scalar key (floats by value, all NaNs and both zeros alike).
    #[derive(PartialEq, Eq, Hash)]
    enum Scalar<'k> {
        Null,
        Bool(bool),
        Int(i64),
        BigInt(u64),
        Float(u64),
        Str(&'k str),
    }
    let mut seen = HashSet::with_capacity(entries.len());
    let mut complex: Vec<&Node<'_>> = Vec::new();
    for (k, _) in entries {
        let s = match &k.yaml {
            Yaml::Null => Scalar::Null,
            Yaml::Bool(b) => Scalar::Bool(*b),
            Yaml::Int(i) => Scalar::Int(*i),
            Yaml::BigInt(n) => Scalar::BigInt(*n),
            Yaml::Float(f) if f.is_nan() => Scalar::Float(f64::NAN.to_bits()),
            Yaml::Float(f) if *f == 0.0 => Scalar::Float(0),
            Yaml::Float(f) => Scalar::Float(f.to_bits()),
            Yaml::Str(s) => Scalar::Str(s),
            _ => {
                if complex.iter().any(|c| c.yaml == k.yaml) {
                    return Some(k.line);
                }
                complex.push(k);
                continue;
            }
        };
        if !seen.insert(s) {
            return Some(k.line);
        }
    }
    None
}

/// A tag written out in full, as libyaml resolves it (`!!int` is `tag:yaml.org,2002:int`).
fn full_tag(t: &Tag) -> String {
    format!("{}{}", t.handle, t.suffix)
}

/// How `serde_yaml_ng` shows a local tag `!…`.
fn show_tag(full: &str) -> String {
    let unbang = |s: &'_ str| -> String {
        match s.strip_prefix('!') {
            Some("") | None => s.to_string(),
            Some(rest) => rest.to_string(),
        }
    };
    format!("!{}", unbang(&unbang(full)))
}

/// Resolves a scalar as `serde_yaml_ng` does for its `Value`: a plain scalar by the YAML 1.2
/// core schema, any other as a string, the core tags `!!bool`, `!!int`, `!!float`, `!!null`
/// by their type (whatever the style); an `Err` is a value `serde_yaml_ng` rejects.
fn scalar<'a>(
    value: Cow<'a, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Yaml<'a>, String> {
    let Some(tag) = tag else {
        return match style {
            ScalarStyle::Plain => plain(value),
            _ => Ok(Yaml::Str(value)),
        };
    };
    let full = full_tag(tag);
    let wrong = |what: &str| format!("invalid value: string {:?}, expected {what}", &*value);
    match full.strip_prefix("tag:yaml.org,2002:") {
        _ if full.starts_with('!') => match style {
            ScalarStyle::Plain => plain(value),
            _ => Ok(Yaml::Str(value)),
        },
        Some("bool") => parse_bool(&value)
            .map(Yaml::Bool)
            .ok_or_else(|| wrong("a boolean")),
        Some("int") => match int(&value) {
            Some(r) => r,
            None => Err(wrong("an integer")),
        },
        Some("float") => parse_f64(&value)
            .map(Yaml::Float)
            .ok_or_else(|| wrong("a float")),
        Some("null") => match parse_null(&value) {
            true => Ok(Yaml::Null),
            false => Err(wrong("null")),
        },
        _ => Ok(Yaml::Str(value)),
    }
}

/// Resolves a plain untagged scalar: null, bool, int, float (YAML 1.2 core schema, with
/// `serde_yaml_ng`'s details: `0x`/`0o`/`0b` ints, leading zeros make a string), else string.
fn plain(value: Cow<'_, str>) -> Result<Yaml<'_>, String> {
    let s: &str = &value;
    if s.is_empty() || parse_null(s) {
        return Ok(Yaml::Null);
    }
    if let Some(b) = parse_bool(s) {
        return Ok(Yaml::Bool(b));
    }
    // Every number starts with a digit, a sign or a dot (`.5`, `.inf`).
    if s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        if let Some(r) = int(s) {
            return r;
        }
        if !digits_but_not_number(s) {
            if let Some(f) = parse_f64(s) {
                return Ok(Yaml::Float(f));
            }
        }
    }
    Ok(Yaml::Str(value))
}

/// An integer as `serde_yaml_ng` reads one: `None` if `s` is none, an `Err` if it is one that
/// its `Value` cannot hold (beyond 64 bits).
fn int(s: &str) -> Option<Result<Yaml<'static>, String>> {
    if let Some(n) = parse_unsigned_int(s, u64::from_str_radix) {
        return Some(Ok(match i64::try_from(n) {
            Ok(i) => Yaml::Int(i),
            Err(_) => Yaml::BigInt(n),
        }));
    }
    if let Some(i) = parse_negative_int(s, i64::from_str_radix) {
        return Some(Ok(Yaml::Int(i)));
    }
    if parse_unsigned_int(s, u128::from_str_radix).is_some()
        || parse_negative_int(s, i128::from_str_radix).is_some()
    {
        return Some(Err(format!("integer {s} does not fit 64 bits")));
    }
    None
}

// The scalar rules below are `serde_yaml_ng`'s (src/de.rs), kept word for word in behaviour so
// that a graph means what it meant when it was read through `serde_yaml_ng::Value`.

fn parse_null(s: &str) -> bool {
    matches!(s, "null" | "Null" | "NULL" | "~")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

type Radix<T> = fn(&str, u32) -> Result<T, std::num::ParseIntError>;

fn parse_unsigned_int<T>(scalar: &str, from_str_radix: Radix<T>) -> Option<T> {
    let unpositive = scalar.strip_prefix('+').unwrap_or(scalar);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(int) = from_str_radix(rest, radix) {
                return Some(int);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) {
        return None;
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

fn parse_negative_int<T>(scalar: &str, from_str_radix: Radix<T>) -> Option<T> {
    for (prefix, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = scalar.strip_prefix(prefix) {
            if let Ok(int) = from_str_radix(&format!("-{rest}"), radix) {
                return Some(int);
            }
        }
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(scalar, 10).ok()
}

fn parse_f64(scalar: &str) -> Option<f64> {
    let unpositive = if let Some(unpositive) = scalar.strip_prefix('+') {
        if unpositive.starts_with(['+', '-']) {
            return None;
        }
        unpositive
    } else {
        scalar
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = scalar {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = scalar {
        return Some(f64::NAN.copysign(1.0));
    }
    unpositive.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Leading zero(s) followed by digits is a string in YAML 1.2.
fn digits_but_not_number(scalar: &str) -> bool {
    let scalar = scalar.strip_prefix(['-', '+']).unwrap_or(scalar);
    scalar.len() > 1 && scalar.starts_with('0') && scalar[1..].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::tests_support::quick_agrees;
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ROOT" => Some("/tmp/r".into()),
            _ => None,
        }
    }

    /// Parses `src` as `g.yaml` against the real registry; renders the graph (one line per
    /// resource and edge) or the errors (one per line), and compares with `expect`.
    fn check(src: &str, expect: &str) {
        let reg = tend_resources::registry();
        let got = match parse(Path::new("g.yaml"), src.to_string(), &reg, &env) {
            Ok(l) => {
                let mut out = String::new();
                for r in &l.graph.resources {
                    out.push_str(&format!("{}", r.id()));
                    for (k, v) in &r.params {
                        out.push_str(&format!(" {k}={v}"));
                    }
                    if r.meta != tend_engine::Meta::default() {
                        out.push_str(&format!(" retry={}", r.meta.retry));
                    }
                    out.push('\n');
                }
                for e in &l.graph.edges {
                    out.push_str(&format!("{} -> {} notify={}\n", e.from, e.to, e.notify));
                }
                out
            }
            Err(errs) => errs.iter().map(|e| format!("{e}\n")).collect(),
        };
        assert_eq!(got.trim(), expect.trim(), "\n--- got:\n{got}");
    }

    #[test]
    fn a_good_graph() {
        check(
            r#"
resources:
  file:
    - name: ${ROOT}/a
      content: "x"
      meta: { retry: 2 }
  test:
    - name: t
      float64: 3
      mixedstruct: { somebool: true, somestr: s, someint: 1, somefloat: 2 }
      mapintfloat: { 1: 2 }
edges:
  - { from: "file[/tmp/r/a]", to: "test[t]", notify: true }
"#,
            r#"
file[/tmp/r/a] content="x" retry=2
test[t] float64=3 mapintfloat={1: 2} mixedstruct=struct{somebool: true; somestr: "s"; someint: 1; somefloat: 2}
file[/tmp/r/a] -> test[t] notify=true
"#,
        );
    }

    #[test]
    fn every_error_at_once() {
        check(
            r#"
top: 1
resources:
  file:
    - name: /a
      content: 5
      colour: red
    - { name: /a }
    - { content: x }
  nosuch:
    - name: x
  test:
    - { name: t, mixedstruct: { somebool: true } }
    - { name: u, int8: 300, meta: { retry: -5 } }
    - { name: v, str: ~ }
edges:
  - { from: "file[/a]", to: "test[zz]" }
  - { from: "file/a", to: "test[t]", extra: 1 }
  - { from: "file[/a]" }
"#,
            r#"
g.yaml:2: unknown top-level key `top` (expected `resources` or `edges`)
g.yaml:6: file[/a]: field `content`: expected str, got 5
g.yaml:7: file[/a]: field `colour`: kind `file` has no such field (its fields: path, state, content, source, symlink, mode, owner, group, recurse)
g.yaml:8: file[/a]: duplicate resource (first defined on line 5)
g.yaml:9: a `file` resource has no `name`
g.yaml:10: unknown resource kind `nosuch` (known kinds: exec, file, kv, noop, print, test, timer)
g.yaml:13: test[t]: field `mixedstruct`: missing struct field `somestr`
g.yaml:14: test[u]: field `int8`: 300 is outside -128..=127
g.yaml:14: test[u]: field `meta.retry`: -5 is invalid (use -1 for forever)
g.yaml:15: test[v]: field `str`: null is not a value (leave the field out to keep its default)
g.yaml:17: test[zz]: edge file[/a] -> test[zz]: no such resource in the graph
g.yaml:18: field `from`: edge endpoint "file/a" is not `kind[name]`
g.yaml:18: field `extra`: unknown edge key (expected `from`, `to`, `notify`)
g.yaml:19: an edge needs both `from` and `to`
"#,
        );
    }

    #[test]
    fn unset_variables_and_bad_yaml() {
        check(
            "resources:\n  file:\n    - name: /a\n      content: ${NOPE}\n",
            "g.yaml:4: environment variable `NOPE` is not set (used as `${NOPE}`)",
        );
        check("resources: [\n", "g.yaml:2: invalid YAML: did not find expected node content at line 2 column 1, while parsing a flow node");
        check("", "");
        check(
            "- a\n",
            "g.yaml:1: expected a mapping with `resources` and `edges`, got a list",
        );
    }

    #[test]
    fn expands_variables() {
        assert_eq!(expand_env("${ROOT}/a", &env).unwrap(), "/tmp/r/a");
        assert_eq!(expand_env("${NOPE:-x}/a", &env).unwrap(), "x/a");
        assert_eq!(expand_env("$${ROOT} $5", &env).unwrap(), "${ROOT} $5");
        assert_eq!(expand_env("${NOPE}", &env).unwrap_err(), "NOPE");
    }

    #[test]
    fn parses_ids() {
        assert_eq!(
            parse_res_id("file[/a[1]]").unwrap(),
            ResId::new("file", "/a[1]")
        );
        assert!(parse_res_id("file/a").is_none());
        assert!(parse_res_id("[x]").is_none());
    }

    /// Renders `Loaded::error` for each (resource, field) of a graph that loads.
    fn located(src: &str, asks: &[(&str, Option<&str>)]) -> String {
        let reg = tend_resources::registry();
        let l = parse(Path::new("g.yaml"), src.to_string(), &reg, &env).expect("loads");
        asks.iter()
            .map(|(res, field)| {
                let e = l.error(parse_res_id(res), field.map(str::to_string), "x".into());
                format!("{e}\n")
            })
            .collect()
    }

    #[test]
    fn locates_resources_and_fields() {
        let text = "resources:\n  file:\n    - name: /a\n      mode: \"5\"\n      meta:\n        retry: 1\n    - { name: /b, mode: \"6\" }\n    -\n      content: c\n      name: /c\nedges:\n  - {from: \"file[/a]\", to: \"file[/b]\"}\n";
        let got = located(
            text,
            &[
                ("file[/a]", Some("mode")),
                ("file[/a]", Some("Meta:retry")),
                ("file[/a]", Some("owner")),
                ("file[/a]", None),
                ("file[/b]", Some("mode")),
                ("file[/c]", Some("content")),
                ("file[/c]", None),
                ("file[/zz]", None),
            ],
        );
        let want = "g.yaml:4: file[/a]: field `mode`: x
g.yaml:5: file[/a]: field `meta.retry`: x
g.yaml:3: file[/a]: field `owner`: x
g.yaml:3: file[/a]: x
g.yaml:7: file[/b]: field `mode`: x
g.yaml:9: file[/c]: field `content`: x
g.yaml:10: file[/c]: x
g.yaml: file[/zz]: x
";
        assert_eq!(got, want);
    }

    #[test]
    fn lines_of_fields_in_block_and_flow_style() {
        check(
            r#"
resources:
  test:
    - name: a
      int8: 300
      meta:
        retry: -5
    - { name: b,
        int8: 301,
        meta: { retry: -6 } }
    - name: "c"
      str: ${NOPE}
edges:
  - from: "test[a]"
    to: "test[zz]"
  -
    from: x
    extra: 1
"#,
            r#"
g.yaml:5: test[a]: field `int8`: 300 is outside -128..=127
g.yaml:7: test[a]: field `meta.retry`: -5 is invalid (use -1 for forever)
g.yaml:9: test[b]: field `int8`: 301 is outside -128..=127
g.yaml:10: test[b]: field `meta.retry`: -6 is invalid (use -1 for forever)
g.yaml:12: environment variable `NOPE` is not set (used as `${NOPE}`)
g.yaml:14: test[zz]: edge test[a] -> test[zz]: no such resource in the graph
g.yaml:17: field `from`: edge endpoint "x" is not `kind[name]`
g.yaml:18: field `extra`: unknown edge key (expected `from`, `to`, `notify`)
"#,
        );
    }

    #[test]
    fn each_unset_variable_on_its_own_line() {
        check(
            "resources:\n  file:\n    - name: /a\n      content: ${NOPE}\n    - name: /b\n      content: |\n        x\n        ${NOPE}\n",
            "g.yaml:4: environment variable `NOPE` is not set (used as `${NOPE}`)\n\
             g.yaml:8: environment variable `NOPE` is not set (used as `${NOPE}`)",
        );
    }

    /// A tree as the `serde_yaml_ng::Value` it stands for.
    fn to_serde(n: &Node<'_>) -> serde_yaml_ng::Value {
        use serde_yaml_ng::value::{Tag, TaggedValue};
        use serde_yaml_ng::Value as V;
        match &n.yaml {
            Yaml::Null => V::Null,
            Yaml::Bool(b) => V::Bool(*b),
            Yaml::Int(i) => V::Number((*i).into()),
            Yaml::BigInt(u) => V::Number((*u).into()),
            Yaml::Float(f) => V::Number((*f).into()),
            Yaml::Str(s) => V::String(s.to_string()),
            Yaml::Seq(items) => V::Sequence(items.iter().map(to_serde).collect()),
            Yaml::Map(m) => V::Mapping(m.iter().map(|(k, v)| (to_serde(k), to_serde(v))).collect()),
            Yaml::Tagged(tag, v) => V::Tagged(Box::new(TaggedValue {
                tag: Tag::new(tag.clone()),
                value: to_serde(v),
            })),
        }
    }

    /// Whether the tree of `doc` is the `Value` that `serde_yaml_ng` reads (same structure,
    /// order, scalar types and tags shown alike), or both reject it. A disagreement is noted
    /// in `out`.
    fn same_as_serde(doc: &str, out: &mut Vec<String>) {
        let theirs = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(doc);
        match (read_tree(doc), theirs) {
            (Ok(ours), Ok(theirs)) => {
                let ours = ours.as_ref().map_or(serde_yaml_ng::Value::Null, to_serde);
                let (o, t) = (format!("{ours:?}"), format!("{theirs:?}"));
                if o != t || ours != theirs {
                    out.push(format!("{doc:?}: ours {o}, serde_yaml_ng {t}"));
                }
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => out.push(format!("{doc:?}: only serde_yaml_ng rejects: {e}")),
            (Err(e), Ok(_)) => out.push(format!("{doc:?}: only we reject: {}", e.message)),
        }
    }

    /// Small documents with each scalar form, in each style, as key and value, tagged.
    fn scalar_documents() -> Vec<String> {
        let scalars = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nul",
            "true",
            "True",
            "TRUE",
            "tRue",
            "false",
            "no",
            "yes",
            "on",
            "0",
            "-0",
            "+0",
            "00",
            "0644",
            "-0644",
            "+0644",
            "644",
            "+644",
            "-644",
            "0x1F",
            "0X1F",
            "-0x1F",
            "+0x1F",
            "0x-1",
            "0o17",
            "-0o17",
            "0b101",
            "-0b101",
            "0b",
            "0x",
            "1_000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "1.5",
            "-1.5",
            "+1.5",
            ".5",
            "-.5",
            "1.",
            "1e3",
            "1E3",
            "1e+3",
            "1e-3",
            "06.5",
            "0.5",
            "00.5",
            "1.0",
            "3.0e20",
            ".inf",
            "-.inf",
            "+.inf",
            ".Inf",
            ".INF",
            ".nan",
            ".NaN",
            ".NAN",
            "-.nan",
            "inf",
            "nan",
            "infinity",
            "1e999",
            "0644.",
            "12:30",
            "1,000",
            "- a",
            "a b",
            "/tmp/x",
            "é",
            "${HOME}/x",
        ];
        let mut docs = Vec::new();
        for s in scalars {
            docs.push(format!("k: {s}\n"));
            docs.push(format!("k: [{s}]\n"));
            docs.push(format!("k: '{s}'\n"));
            docs.push(format!("k: \"{s}\"\n"));
            docs.push(format!("{s}: v\n"));
            for tag in [
                "!!str", "!!int", "!!float", "!!bool", "!!null", "!foo", "!", "!!binary",
            ] {
                docs.push(format!("k: {tag} {s}\n"));
                docs.push(format!("k: {tag} \"{s}\"\n"));
            }
        }
        docs
    }

    #[test]
    fn scalars_resolve_as_serde_yaml_ng_resolves_them() {
        let mut out = Vec::new();
        for doc in scalar_documents() {
            same_as_serde(&doc, &mut out);
        }
        // libyaml (YAML 1.1) rejects an empty implicit key; YAML 1.2 (saphyr) reads a null key.
        assert_eq!(
            out.join("\n"),
            "\": v\\n\": only serde_yaml_ng rejects: did not find expected key, while parsing a block mapping"
        );
    }

    /// Documents of every shape, valid and not.
    fn documents() -> Vec<String> {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        vec![
            String::new(),
            include_str!("../examples/hello.yaml").into(),
            "# only a comment\n".into(),
            "---\n".into(),
            "---\n...\n".into(),
            "a: 1\n---\nb: 2\n".into(),
            "---\n---\n".into(),
            "a: 1\na: 2\n".into(),
            "{a: 1, \"a\": 2}\n".into(),
            "{1: a, 1.0: b, '1': c}\n".into(),
            "{~: a, null: b}\n".into(),
            "{.nan: a, .NaN: b}\n".into(),
            "{[a]: 1, [a]: 2}\n".into(),
            "{{a: 1, b: 2}: x, {b: 2, a: 1}: y}\n".into(),
            (0..40).map(|i| format!("k{i}: {i}\n")).collect::<String>(),
            (0..40).map(|i| format!("k{}: {i}\n", i % 39)).collect::<String>(),
            "a: &x {b: 1, c: [1, 2]}\nd: *x\ne: *x\n".into(),
            "a: &x 5\nb: [*x, *x]\n".into(),
            "a: &x [1, *x]\n".into(),
            "a: *nope\n".into(),
            "a: &x 1\na2: &x 2\nb: *x\n".into(),
            "<<: {a: 1}\nb: 2\n".into(),
            "a: !foo {b: 1}\n".into(),
            "a: !!map {b: 1}\n".into(),
            "a: !!seq [1]\n".into(),
            "a: !!str [1]\n".into(),
            "a: !<tag:yaml.org,2002:int> 5\n".into(),
            "a: !<!bar> 5\n".into(),
            "%TAG !e! tag:example.com,2000:\n---\na: !e!foo 1\n".into(),
            "%TAG !! !x-\n---\na: !!int 1\n".into(),
            "a: |\n  line\n   more\n\nb: >\n  folded\n  text\n".into(),
            "a: \"esc \\t \\u00e9 \\n\"\nb: 'it''s'\n".into(),
            "a: plain\n  continued\n".into(),
            "- a\n- - b\n  - c\n- {d: e}\n".into(),
            "? [complex]\n: key\n".into(),
            "a: [1, 2\n".into(),
            "a: b: c\n".into(),
            "\ta: 1\n".into(),
            "a:\n\t- 1\n".into(),
            format!("a: {}\n", deep(127)),
            format!("a: {}\n", deep(128)),
            format!("{}\n", deep(128)),
            format!("{}\n", deep(129)),
            "a: &a [1,2,3,4,5,6,7,8,9]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n".into(),
        ]
    }

    #[test]
    fn documents_read_as_serde_yaml_ng_reads_them() {
        let docs = documents();
        let mut out = Vec::new();
        for doc in &docs {
            same_as_serde(doc, &mut out);
        }
        // A tab before the first key: libyaml rejects it, saphyr reads past it.
        assert_eq!(
            out.join("\n"),
            "\"\\ta: 1\\n\": only serde_yaml_ng rejects: found character that cannot start any token, while scanning for the next token"
        );
    }

    #[test]
    fn a_tag_or_an_alias_in_a_graph() {
        check(
            "resources:\n  file:\n    - name: /a\n      content: !secret x\n",
            "g.yaml:4: file[/a]: field `content`: YAML tags (!secret) are not supported",
        );
        check(
            "resources:\n  file:\n    - name: &n /a\n      content: *n\n    - { name: /b, content: !!str 5 }\n",
            "file[/a] content=\"/a\"\nfile[/b] content=\"5\"",
        );
        check(
            "resources:\n  file:\n    - name: /a\n      content: x\n      content: y\n",
            "g.yaml:3: invalid YAML: resources.file[0]: duplicate entry with key \"content\" at line 3 column 7",
        );
    }
    /// Graph-like documents in the shapes people write: block and flow, compact and nested,
    /// with comments, blank lines and odd spacing.
    fn shapes() -> Vec<String> {
        let mut docs: Vec<String> = [
            "resources:\n  file:\n    - name: /a\n      content: \"x\\n\"\n      mode: \"0644\"\n      meta: { retry: 3, delay: 500 }\n  exec:\n    - name: reload\n      cmd: /bin/true\nedges:\n  - { from: \"file[/a]\", to: \"exec[reload]\", notify: true }\n",
            "resources:\n  file:\n  - name: /a\n    list:\n    - a\n    - b\n  - name: /b\n",
            "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
            "a:\n- 1\n- 2\nb:\n  - 3\n",
            "- a\n- b: 1\n  c: 2\n-\n  d: 3\n- [x, y]\n- {k: v}\n-\n- 'q'\n",
            "a:\nb: ~\nc:\n",
            "a: # comment\n  b: 1 # more\n# full line\n\n  c: 'it''s' # x\n",
            "k: v # c\nk2: \"q\" # c\nk3: [a, b] # c\nk4: {a: 1} # c\n",
            "k: a #b\nk2: a#b\nk3: 'a #b'\n",
            "k: [a, [b, [c, {d: e}]], {f: [g]}]\n",
            "k: {a: [1, 2], b: {c: d}, \"e\": 'f', 'g': \"h\"}\n",
            "k: [ a , b ]\nk2: {  a:  1 ,  b:  2  }\nk3: []\nk4: {}\n",
            "k: [a, b,]\nk2: [,]\nk3: {a: 1,}\nk4: {a}\nk5: {a: }\nk6: {\"a\":1}\n",
            "k: [a: b]\nk2: {a:b}\nk3: {a :b}\nk4: [a b, c  d]\n",
            "url: http://x.y/z?a=b#frag\nt: 12:30:00\nk: a:b\n",
            "k: a: b\n",
            "k: a:\n",
            "k: \"a\" b\n",
            "k: [a] b\n",
            "k: [a\n  , b]\n",
            "k: \"multi\n  line\"\n",
            "k: plain\n  continued\n",
            "k: 'multi\n  line'\n",
            "k: \"esc \\\\ \\\" \\/ \\n \\t \\0 \\e \\N \\_ \\L \\P \\x41 \\u00e9\"\n",
            "k: \"bad \\q\"\n",
            "k: \"trail\" \nk2: plain   \n",
            "from: file[/a]\nto: exec[b]\n",
            "- - a\n  - b\n- - c\n",
            "? a\n: b\n",
            "a: 1\n b: 2\n",
            "a: 1\n  b: 2\n",
            "  a: 1\n  b: 2\nc: 3\n",
            "a:\n    b: 1\n  c: 2\n",
            "- a\n  - b\n",
            "- a\nb: 1\n",
            "a: 1\n- b\n",
            "a: -1\nb: - 1\nc: -\nd: -x\n",
            "a: &x 1\n",
            "a: *x\n",
            "a: !t 1\n",
            "a: |\n  x\n",
            "a: >-\n  x\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n...\n",
            "a: @x\nb: `x`\nc: %x\n",
            "\"a b\": 1\n'c''d': 2\n\"e\" : 3\n\"f\":4\n",
            "a: 1\r\nb: 2\r\n",
            "\u{feff}a: 1\n",
            "a:\tb\n",
            "é: ü\nk: 日本\n",
            "a: 1",
            "a:",
            "-",
            "- ",
            "just a scalar\n",
            "[a, b]\n",
            "{a: 1}\n",
            "[a, b]: c\n",
            "- [a]: b\n",
            "a: 1 #c\n#c\n  # c\nb: 2\n",
            "k: '#x'\nk2: \"#x\"\nk3: x#\n",
            "k: - a\n",
            "- ? a\n",
            "k: {a: [1, 2, {b: c}], d: e}\n",
            "k: [\"a\", 'b', c]\n",
            "k: ['', \"\", '''']\n",
            "k: ,a\nk2: ]a\nk3: }a\n",
        ]
        .iter()
        .map(|d| d.to_string())
        .collect();
        let mut flat = String::from("resources:\n  file:\n");
        for i in 0..50 {
            flat.push_str(&format!(
                "    - {{ name: \"/tmp/d/f{i}\", content: \"hello {i}\\n\", mode: \"0644\" }}\n"
            ));
        }
        docs.push(flat);
        docs
    }

    #[test]
    fn the_fast_reader_reads_as_saphyr_does() {
        let mut docs = shapes();
        docs.extend(documents());
        docs.extend(scalar_documents());
        docs.push(include_str!("../examples/hello.yaml").into());
        // Each document cut after each of its lines, and with each line indented one more.
        let mut variants = Vec::new();
        for d in &docs {
            let lines: Vec<&str> = d.split_inclusive('\n').collect();
            for n in 1..lines.len() {
                variants.push(lines[..n].concat());
                let mut shifted = lines.clone();
                let more = format!(" {}", lines[n]);
                shifted[n] = &more;
                variants.push(shifted.concat());
            }
        }
        docs.extend(variants);
        let mut out = Vec::new();
        let read: Vec<&String> = docs.iter().filter(|d| quick_agrees(d, &mut out)).collect();
        assert_eq!(out.join("\n"), "");
        // The common shapes (the first twelve, and the benchmark's flat graph) are in the
        // subset; a block scalar (as in examples/hello.yaml) is not.
        let shapes = shapes();
        for doc in shapes[..12].iter().chain(shapes.last()) {
            assert!(read.contains(&doc), "not read fast:\n{doc}");
        }
        assert!(!read.contains(&&include_str!("../examples/hello.yaml").to_string()));
    }
}

#[cfg(test)]
mod tests_support {
    use super::quick;
    use saphyr_parser::Event;

    /// Whether the fast reader gives `saphyr-parser`'s events and lines for `doc`, up to where
    /// it gives up; a disagreement is noted in `out`. True if it read the whole document.
    pub(super) fn quick_agrees(doc: &str, out: &mut Vec<String>) -> bool {
        let mut full = saphyr_parser::Parser::new_from_str(doc);
        let mut q = quick::Quick::new(doc);
        loop {
            let Some((event, line)) = q.next() else {
                return false;
            };
            let theirs = match full.next_event() {
                Some(Ok((e, span))) => (e, span.start.line()),
                Some(Err(e)) => {
                    // saphyr may see an error further on before it gives this event; that only
                    // matters if the fast reader would read the whole document.
                    while let Some((event, _)) = q.next() {
                        if event == Event::StreamEnd {
                            out.push(format!("{doc:?}: only saphyr rejects: {e}"));
                            break;
                        }
                    }
                    return false;
                }
                None => {
                    out.push(format!("{doc:?}: saphyr ended first"));
                    return false;
                }
            };
            // Only where nodes start matters (ends are not located).
            let starts = matches!(
                event,
                Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
            );
            if event != theirs.0 || (starts && line != theirs.1) {
                out.push(format!(
                    "{doc:?}: ours {event:?}@{line}, saphyr {:?}@{}",
                    theirs.0, theirs.1
                ));
                return false;
            }
            if event == Event::StreamEnd {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests_support::quick_agrees;

    /// Random lines built from the pieces graph files are made of (and a few that are not):
    /// wherever the fast reader does not give up, it must give `saphyr-parser`'s events.
    #[test]
    fn the_fast_reader_agrees_with_saphyr_on_random_documents() {
        const PIECES: &[&str] = &[
            "a", "b", "k", "- ", "-", ": ", ":", "[", "]", "{", "}", ", ", ",", "'x'", "\"y\"",
            "\"e\\n\"", "'i''s'", " #c", "#", " ", "  ", "1", "-1", "0644", "~", "true", "?", "&a",
            "*a", "!t", "|", ">", "a b", "x:y", "\"\"", "''",
        ];
        // xorshift64*: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let mut out = Vec::new();
        let mut read_whole = 0;
        for _ in 0..200_000 {
            let mut doc = String::new();
            for _ in 0..1 + rnd(6) {
                doc.push_str(&" ".repeat(2 * rnd(4)));
                if rnd(2) == 0 {
                    // Shaped like a graph line: an item and/or a key, then a value.
                    doc.push_str(["", "- ", "- - "][rnd(3)]);
                    doc.push_str(["", "k: ", "'q k': ", "\"d\": ", "k:"][rnd(5)]);
                    let value = match rnd(5) {
                        0 => PIECES[rnd(PIECES.len())].to_string(),
                        1 => format!("[{}, {}]", PIECES[rnd(8)], PIECES[rnd(PIECES.len())]),
                        2 => format!("{{ a: {}, b: {} }}", PIECES[rnd(16)], PIECES[rnd(16)]),
                        3 => format!("\"{}\"", PIECES[rnd(PIECES.len())]),
                        _ => String::new(),
                    };
                    doc.push_str(&value);
                } else {
                    for _ in 0..1 + rnd(5) {
                        doc.push_str(PIECES[rnd(PIECES.len())]);
                    }
                }
                doc.push('\n');
            }
            if quick_agrees(&doc, &mut out) {
                read_whole += 1;
            }
            assert!(out.is_empty(), "{}", out.join("\n"));
        }
        // The generator must reach the fast path often enough to test it.
        assert!(read_whole > 5_000, "only {read_whole} documents read fast");
    }
}
