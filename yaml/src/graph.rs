//! Reading a graph: the tree of the document becomes a [`GraphSpec`], with the line of every
//! resource and key kept to locate errors.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use tend_model::{EdgeSpec, GraphError, GraphSpec, KindSchema, ResId, ResSpec, Type, Value};

use crate::error::LoadError;
use crate::tree::{key_str, key_text, read_tree, yaml_kind, Invalid, Node, Yaml};

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

    /// The place of key `field` among the keys of `res` (0 for the first).
    fn place_of(&self, res: &ResId, field: &str) -> Option<usize> {
        let at = self.res.get(res)?;
        let i = *self.index.get(field)?;
        self.fields[at.fields.clone()]
            .iter()
            .position(|(k, _)| *k == i)
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

/// A graph read from a file, with where each resource and field was written (to locate the
/// engine's errors about it in the source), and the mistakes found while reading it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The graph (when [`Loaded::errors`] is not empty, only what could be read: resources
    /// with a mistake keep the fields that could be read, and are in `incomplete`).
    pub graph: GraphSpec,
    path: PathBuf,
    lines: Lines,
    errors: Vec<LoadError>,
    incomplete: HashSet<ResId>,
}

impl Loaded {
    /// The mistakes found while reading the file.
    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }

    /// An engine error about the graph, located in the file (see [`Loaded::error`]).
    pub fn locate(&self, e: &GraphError) -> LoadError {
        self.error(e.res.clone(), e.field.clone(), e.message.clone())
    }

    /// The engine's errors about the graph, located, in the file's order.
    pub fn locate_all(&self, errors: &[GraphError]) -> Vec<LoadError> {
        let mut out: Vec<LoadError> = errors.iter().map(|e| self.locate(e)).collect();
        self.sort(&mut out);
        out
    }

    /// The graph, if reading found no mistake; else every mistake at once: those found while
    /// reading, and those `check` (the engine's check of a graph) finds in what could be read
    /// (resources with a mistake are checked without their kind's constructor, which would
    /// complain about what was not read), in the file's order. The check of a graph read
    /// without mistakes is left to the caller (the engine runs it before swapping the graph
    /// in), so that a graph is checked once.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        self,
        check: impl FnOnce(
            &GraphSpec,
            &(dyn Fn(&ResSpec) -> bool + Sync),
        ) -> Result<(), Vec<GraphError>>,
    ) -> Result<Loaded, Vec<LoadError>> {
        if self.errors.is_empty() {
            return Ok(self);
        }
        let mut errors = self.errors.clone();
        let complete = |r: &ResSpec| !self.incomplete.contains(&r.id());
        if let Err(errs) = check(&self.graph, &complete) {
            errors.extend(errs.iter().map(|e| self.locate(e)));
        }
        self.sort(&mut errors);
        Err(errors)
    }

    /// Sorts errors by where they are in the file: line, then the field's place among its
    /// resource's keys (an error without a line goes last; ties keep their order).
    fn sort(&self, errors: &mut [LoadError]) {
        errors.sort_by_cached_key(|e| {
            let line = e.line.unwrap_or(usize::MAX);
            let key = e
                .field
                .as_deref()
                .map(|f| if f.starts_with("meta.") { "meta" } else { f });
            let place = match (&e.res, key) {
                (Some(r), Some(k)) => self.lines.place_of(r, k).unwrap_or(0),
                _ => 0,
            };
            (line, place)
        });
    }

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

/// Reads a graph file against the kinds' schemas. `env` looks environment variables up.
pub fn load(
    path: &Path,
    schemas: &BTreeMap<String, KindSchema>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, text, schemas, env),
        Err(e) => Loaded {
            graph: GraphSpec::default(),
            path: path.to_path_buf(),
            lines: Lines::default(),
            errors: vec![LoadError {
                path: path.to_path_buf(),
                line: None,
                res: None,
                field: None,
                message: format!("cannot read the graph file: {e}"),
            }],
            incomplete: HashSet::new(),
        },
    }
}

/// Reads graph text read from `path` against the kinds' schemas.
pub fn parse(
    path: &Path,
    text: String,
    schemas: &BTreeMap<String, KindSchema>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let mut p = Parser {
        path: path.to_path_buf(),
        text: &text,
        schemas,
        env,
        errors: Vec::new(),
        lines: Lines::default(),
        incomplete: HashSet::new(),
    };
    let graph = p.document();
    Loaded {
        graph,
        path: path.to_path_buf(),
        lines: p.lines,
        errors: p.errors,
        incomplete: p.incomplete,
    }
}

/// The error message of a conversion whose error was already recorded.
const REPORTED: &str = "";

struct Parser<'a> {
    path: PathBuf,
    text: &'a str,
    schemas: &'a BTreeMap<String, KindSchema>,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<LoadError>,
    lines: Lines,
    /// Resources read with a mistake (kept in the graph with what could be read).
    incomplete: HashSet<ResId>,
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
            let schemas = self.schemas;
            let Some(schema) = schemas.get(&kind) else {
                let known: Vec<&str> = schemas.keys().map(String::as_str).collect();
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
                            // Read by the field's type; whether the value fits the field is
                            // the engine's check.
                            match self.value(fv, Some(&def.ty)) {
                                Ok(v) => {
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
                if !ok {
                    self.incomplete.insert(id.clone());
                }
                self.lines.res.insert(id, ResLines { line, fields });
                // Fields, meta and the kind's own validation are the engine's check of the
                // whole graph (`Engine::prepare`), whose errors `Loaded::locate` places here.
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
                graph.edges.push(EdgeSpec::new(from, to, notify));
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
