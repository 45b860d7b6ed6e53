//! The YAML front end: reads a graph file into a [`GraphSpec`], validating every resource
//! against the kinds of a [`Registry`] and reporting every mistake at once, each naming the
//! file, the line (when it can be found), the resource and the field.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;
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

/// A graph read from a file, with where each resource was written (to locate later errors,
/// e.g. the engine's cycle check, in the source).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The graph.
    pub graph: GraphSpec,
    path: PathBuf,
    text: String,
    res_lines: HashMap<ResId, usize>,
}

impl Loaded {
    /// An error about `res`/`field` of this file, located in the source when possible.
    pub fn error(&self, res: Option<ResId>, field: Option<String>, message: String) -> LoadError {
        let loc = Locator::new(&self.text);
        let field = field.map(|f| match f.strip_prefix("Meta:") {
            Some(m) => format!("meta.{m}"),
            None => f,
        });
        let line = res.as_ref().and_then(|r| {
            let start = *self.res_lines.get(r).filter(|l| **l > 0)?;
            let key = field
                .as_deref()
                .map(|f| if f.starts_with("meta.") { "meta" } else { f });
            match key {
                Some(k) => Some(loc.field_line(start, k).unwrap_or(start)),
                None => Some(start),
            }
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
        loc: Locator::new(&text),
        registry,
        env,
        errors: Vec::new(),
        res_lines: HashMap::new(),
    };
    let graph = p.document(&text);
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    let res_lines = p.res_lines;
    Ok(Loaded {
        graph,
        path: path.to_path_buf(),
        text,
        res_lines,
    })
}

/// The error message of a conversion whose error was already recorded.
const REPORTED: &str = "";

struct Parser<'a> {
    path: PathBuf,
    loc: Locator<'a>,
    registry: &'a Registry,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<LoadError>,
    res_lines: HashMap<ResId, usize>,
}

impl Parser<'_> {
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

    fn document(&mut self, text: &str) -> GraphSpec {
        let mut graph = GraphSpec::default();
        let doc: Yaml = match serde_yaml_ng::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                self.err(line, None, None, format!("invalid YAML: {e}"));
                return graph;
            }
        };
        let top = match doc {
            Yaml::Null => return graph,
            Yaml::Mapping(m) => m,
            other => {
                self.err(
                    Some(1),
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
            match k.as_str() {
                Some("resources") => resources = Some(v),
                Some("edges") => edges = Some(v),
                _ => {
                    let key = key_text(&k);
                    let line = self.loc.top_key_line(&key);
                    self.err(
                        line,
                        None,
                        None,
                        format!("unknown top-level key `{key}` (expected `resources` or `edges`)"),
                    );
                }
            }
        }
        if let Some(r) = resources {
            self.resources(r, &mut graph);
        }
        if let Some(e) = edges {
            self.edges(e, &mut graph);
        }
        graph
    }

    fn resources(&mut self, r: Yaml, graph: &mut GraphSpec) {
        let section = self.loc.top_key_line("resources");
        let kinds = match r {
            Yaml::Null => return,
            Yaml::Mapping(m) => m,
            other => {
                self.err(
                    section,
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
        let mut cursor = section.unwrap_or(1);
        for (k, items) in kinds {
            let kind = key_text(&k);
            let kind_line = self.loc.key_line_after(cursor, &kind);
            if let Some(l) = kind_line {
                cursor = l;
            }
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
            let items = match items {
                Yaml::Null => continue,
                Yaml::Sequence(s) => s,
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
            graph.resources.reserve(items.len());
            for item in items {
                let Yaml::Mapping(fields) = item else {
                    self.err(
                        self.loc.item_line_after(cursor),
                        None,
                        None,
                        format!(
                            "each `{kind}` resource must be a mapping with a `name`, got {}",
                            yaml_kind(&item)
                        ),
                    );
                    continue;
                };
                let raw = match fields.get("name") {
                    Some(Yaml::String(s)) => s.clone(),
                    Some(Yaml::Number(n)) => n.to_string(),
                    Some(other) => {
                        let line = self.loc.key_line_after(cursor, "name");
                        if let Some(l) = line {
                            cursor = l + 1;
                        }
                        self.err(
                            line,
                            None,
                            Some("name"),
                            format!("a `{kind}` name must be a string, got {}", yaml_kind(other)),
                        );
                        continue;
                    }
                    None => {
                        let line = self.loc.item_line_after(cursor);
                        if let Some(l) = line {
                            cursor = l + 1;
                        }
                        self.err(
                            line,
                            None,
                            None,
                            format!("a `{kind}` resource has no `name`"),
                        );
                        continue;
                    }
                };
                let line = self.loc.name_line_after(cursor, &raw);
                if let Some(l) = line {
                    cursor = l + 1;
                }
                let Some(name) = self.expand(&raw, line) else {
                    continue;
                };
                let mut spec = ResSpec::new(kind.clone(), name);
                let id = spec.id();
                if spec.name.is_empty() {
                    self.err(line, Some(&id), None, "empty resource name".into());
                    continue;
                }
                // The line of each resource (0: not found), which also finds duplicates.
                match self.res_lines.entry(id.clone()) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let msg = match *first.get() {
                            0 => "duplicate resource".to_string(),
                            l => format!("duplicate resource (first defined on line {l})"),
                        };
                        self.err(line, Some(&id), None, msg);
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(line.unwrap_or(0));
                    }
                }
                let mut ok = true;
                for (fk, fv) in &fields {
                    let field = key_text(fk);
                    let fline = line.and_then(|l| self.loc.field_line(l, &field)).or(line);
                    match field.as_str() {
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
                            match self.value(fv, Some(&def.ty), fline) {
                                Ok(v) => {
                                    if let Err(e) = check_field(def, &v) {
                                        self.err(fline, Some(&id), Some(&field), e.reason);
                                        ok = false;
                                    }
                                    spec.params.insert(field, v);
                                }
                                Err(msg) => {
                                    self.err(fline, Some(&id), Some(&field), msg);
                                    ok = false;
                                }
                            }
                        }
                    }
                }
                if !ok {
                    continue;
                }
                // Constructor checks are left to the engine's check of the whole graph
                // (`Engine::prepare`), whose errors `Loaded::error` locates in this file.
                graph.resources.push(spec);
            }
        }
    }

    fn meta(&mut self, v: &Yaml, spec: &mut ResSpec, line: Option<usize>) -> bool {
        let id = spec.id();
        let Yaml::Mapping(m) = v else {
            self.err(
                line,
                Some(&id),
                Some("meta"),
                format!("`meta` must be a mapping, got {}", yaml_kind(v)),
            );
            return false;
        };
        let mut ok = true;
        for (k, v) in m {
            let name = key_text(k);
            let field = format!("meta.{name}");
            let line = line.and_then(|l| self.loc.field_line(l, &name)).or(line);
            let value = match self.value(v, None, line) {
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

    fn edges(&mut self, e: Yaml, graph: &mut GraphSpec) {
        let section = self.loc.top_key_line("edges");
        let items = match e {
            Yaml::Null => return,
            Yaml::Sequence(s) => s,
            other => {
                self.err(
                    section,
                    None,
                    None,
                    format!("`edges` must be a list, got {}", yaml_kind(&other)),
                );
                return;
            }
        };
        let ids: BTreeSet<ResId> = graph.resources.iter().map(ResSpec::id).collect();
        let mut cursor = section.unwrap_or(1);
        for item in items {
            let line = self.loc.item_line_after(cursor);
            if let Some(l) = line {
                cursor = l + 1;
            }
            let Yaml::Mapping(m) = item else {
                self.err(
                    line,
                    None,
                    None,
                    format!(
                        "an edge must be a mapping `{{from: \"kind[name]\", to: \"kind[name]\"}}`, got {}",
                        yaml_kind(&item)
                    ),
                );
                continue;
            };
            let mut from = None;
            let mut to = None;
            let mut notify = false;
            let mut ok = true;
            for (k, v) in &m {
                let key = key_text(k);
                match (key.as_str(), v) {
                    ("from" | "to", Yaml::String(s)) => {
                        let Some(s) = self.expand(s, line) else {
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
                                    line,
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
                            line,
                            None,
                            Some(&key),
                            format!("expected {want}, got {}", yaml_kind(other)),
                        );
                        ok = false;
                    }
                    _ => {
                        self.err(
                            line,
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
                if !ids.contains(end) && !self.res_lines.contains_key(end) {
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
    fn value(&mut self, v: &Yaml, ty: Option<&Type>, line: Option<usize>) -> Result<Value, String> {
        Ok(match (v, ty) {
            (Yaml::Null, _) => {
                return Err("null is not a value (leave the field out to keep its default)".into())
            }
            (Yaml::Bool(b), _) => Value::Bool(*b),
            (Yaml::Number(n), t) => {
                if let Some(i) = n.as_i64() {
                    if matches!(t, Some(Type::Float)) {
                        Value::Float(i as f64)
                    } else {
                        Value::Int(i)
                    }
                } else if n.as_u64().is_some() {
                    return Err(format!("{n} does not fit a 64-bit signed integer"));
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            (Yaml::String(s), _) => match self.expand(s, line) {
                Some(s) => Value::Str(s),
                None => return Err(REPORTED.into()),
            },
            (Yaml::Sequence(items), t) => {
                let inner = match t {
                    Some(Type::List(inner)) => Some(&**inner),
                    _ => None,
                };
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.value(i, inner, line)?);
                }
                Value::List(out)
            }
            (Yaml::Mapping(m), Some(Type::Struct(fields))) => {
                let mut out = Vec::with_capacity(fields.len());
                for (fname, fty) in fields {
                    let fv = m
                        .get(fname.as_str())
                        .ok_or_else(|| format!("missing struct field `{fname}`"))?;
                    out.push((fname.clone(), self.value(fv, Some(fty), line)?));
                }
                if let Some(extra) = m
                    .keys()
                    .map(key_text)
                    .find(|k| !fields.iter().any(|(f, _)| f == k))
                {
                    return Err(format!("no struct field `{extra}`"));
                }
                Value::Struct(out)
            }
            (Yaml::Mapping(m), t) => {
                let (kt, vt) = match t {
                    Some(Type::Map(k, v)) => (Some(&**k), Some(&**v)),
                    _ => (None, None),
                };
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    out.insert(self.value(k, kt, line)?, self.value(v, vt, line)?);
                }
                Value::Map(out)
            }
            (Yaml::Tagged(t), _) => return Err(format!("YAML tags ({}) are not supported", t.tag)),
        })
    }

    /// Expands `${VAR}` in `s`; on an unset variable records an error and returns `None`.
    fn expand(&mut self, s: &str, line: Option<usize>) -> Option<String> {
        match expand_env(s, self.env) {
            Ok(s) => Some(s),
            Err(var) => {
                let line = self.loc.text_line(&format!("${{{var}")).or(line);
                self.err(
                    line,
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

fn yaml_kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a bool",
        Yaml::Number(n) if n.is_f64() => "a float",
        Yaml::Number(_) => "an int",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

fn key_text(k: &Yaml) -> String {
    match k {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Null => "null".into(),
        other => yaml_kind(other).into(),
    }
}

/// Finds where things were written in the source text. YAML parsers do not hand out
/// positions for values, so this scans lines in document order; it handles block and flow
/// style and answers `None` when unsure.
struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            lines: text.lines().collect(),
        }
    }

    /// 1-based line of a top-level key (no indentation).
    fn top_key_line(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| !l.starts_with([' ', '\t', '#']) && has_key(l, key))
            .map(|i| i + 1)
    }

    /// First line at or after `from` (1-based) holding `key:`.
    fn key_line_after(&self, from: usize, key: &str) -> Option<usize> {
        self.find_from(from, |l| has_key(l, key))
    }

    /// First line at or after `from` starting a list item.
    fn item_line_after(&self, from: usize) -> Option<usize> {
        self.find_from(from, |l| l.trim_start().starts_with('-'))
    }

    /// First line at or after `from` holding `name:` with this name.
    fn name_line_after(&self, from: usize, name: &str) -> Option<usize> {
        self.find_from(from, |l| has_key(l, "name") && l.contains(name))
            .or_else(|| self.key_line_after(from, "name"))
    }

    /// The line of `field` in the resource starting on line `start`: from the start of its
    /// list item to the start of the next one.
    fn field_line(&self, start: usize, field: &str) -> Option<usize> {
        let first = (1..=start)
            .rev()
            .find(|&n| self.lines[n - 1].trim_start().starts_with('-'))
            .unwrap_or(start);
        let indent = indent_of(self.lines[first - 1]);
        for n in first..=self.lines.len() {
            let l = self.lines[n - 1];
            if n > first && !l.trim().is_empty() && indent_of(l) <= indent {
                break;
            }
            if has_key(l, field) {
                return Some(n);
            }
        }
        None
    }

    /// First line containing `needle` anywhere.
    fn text_line(&self, needle: &str) -> Option<usize> {
        self.find_from(1, |l| l.contains(needle))
    }

    fn find_from(&self, from: usize, f: impl Fn(&str) -> bool) -> Option<usize> {
        let start = from.max(1) - 1;
        self.lines
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, l)| !l.trim_start().starts_with('#') && f(l))
            .map(|(i, _)| i + 1)
    }
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// Whether `line` has `key` as a mapping key (`key:`, `"key":`, `{ key: ...`, `- key:`).
fn has_key(line: &str, key: &str) -> bool {
    let bytes = line.as_bytes();
    let mut start = 0;
    while let Some(i) = line[start..].find(key) {
        let at = start + i;
        let before_ok = at == 0 || {
            let c = bytes[at - 1];
            matches!(c, b' ' | b'\t' | b'{' | b',' | b'-' | b'"' | b'\'')
        };
        let after = line[at + key.len()..].trim_start_matches(['"', '\'']);
        let after = after.trim_start();
        if before_ok && after.starts_with(':') {
            return true;
        }
        start = at + key.len();
    }
    false
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn locates_keys() {
        let text = "resources:\n  file:\n    - name: /a\n      mode: 5\n    - { name: /b, mode: 6 }\nedges:\n  - {from: x, to: y}\n";
        let loc = Locator::new(text);
        assert_eq!(loc.top_key_line("edges"), Some(6));
        assert_eq!(loc.name_line_after(1, "/b"), Some(5));
        assert_eq!(loc.field_line(3, "mode"), Some(4));
        assert_eq!(loc.field_line(5, "mode"), Some(5));
        assert_eq!(loc.item_line_after(7), Some(7));
        assert!(!has_key("    content: modes", "mode"));
    }
}
