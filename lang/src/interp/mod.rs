//! Interpretation (spec §8, §9): one table ([`Output`]) becomes one `GraphSpec`, with the
//! [`Locations`] of its resources and fields in the program. Meta parameters go through
//! `Meta::set`, names are checked, collect statements are resolved against the world,
//! duplicates merge or fail, hidden resources live in their own pool, edges must reach existing
//! resources, and the graph must be acyclic.
//!
//! Fields are not checked here against their kind (native ranges, allowed values, the kind's
//! own validation): that is the engine's one check of a graph (`tend_engine::check_graph`,
//! `Engine::prepare`), whose errors [`Locations::error`] places back in the program.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graphmap::DiGraphMap;
use petgraph::visit::Dfs;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use tend_model::{
    EdgeSpec, ErrorKind, GraphError, GraphSpec, KindSchema, ResId, ResSpec, Value, META,
};

use crate::diag::{Error, Stage};
use crate::funcs::world::WorldView;
use crate::graph::{Output, ResOut};
use crate::syntax::span::Span;

/// What interpretation needs besides the table.
pub struct InterpEnv<'s> {
    /// Kind schemas.
    pub schemas: &'s BTreeMap<String, KindSchema>,
    /// The world (for collect statements).
    pub world: &'s dyn WorldView,
}

/// Where each resource of a graph, and each field the program set, was written: the first
/// statement that produced it.
#[derive(Clone, Debug, Default)]
pub struct Locations {
    res: HashMap<ResId, (Span, Vec<(String, Span)>)>,
}

impl Locations {
    fn add(&mut self, spec: &ResSpec, r: &ResOut) {
        self.res.entry(spec.id()).or_insert_with(|| {
            let fields = r.fields.iter().map(|(n, _, s)| (n.clone(), *s)).collect();
            (r.span, fields)
        });
    }

    /// An engine error about the graph as a language error, placed in the program: a param
    /// that does not fit its kind at the field that set it (else at its statement), anything
    /// else about a resource at its statement.
    pub fn error(&self, e: &GraphError) -> Error {
        let at = e.res.as_ref().and_then(|r| self.res.get(r));
        let span = match (at, e.kind, &e.field) {
            (Some((_, fields)), ErrorKind::Param, Some(f)) => fields
                .iter()
                .find(|(n, _)| n == f)
                .map(|(_, s)| *s)
                .unwrap_or(at.map(|a| a.0).unwrap_or_default()),
            (Some((span, _)), _, _) => *span,
            (None, _, _) => Span::default(),
        };
        let message = match (e.kind, e.meta_param(), &e.res) {
            (ErrorKind::Meta, Some(name), Some(r)) => {
                format!("{r}: meta parameter `{name}`: {}", e.message)
            }
            _ => e.to_string(),
        };
        err(message, span)
    }
}

fn err(msg: impl Into<String>, span: Span) -> Error {
    Error::new(Stage::Interpret, msg, span)
}

fn names_of(v: &Value) -> Vec<String> {
    match v {
        Value::Str(s) => vec![s.clone()],
        Value::List(l) => l
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn same_resource(a: &ResSpec, b: &ResSpec) -> bool {
    let set = |l: &[String]| l.iter().cloned().collect::<BTreeSet<_>>();
    let mut ma = a.meta.clone();
    let mut mb = b.meta.clone();
    if set(&ma.sema) == set(&mb.sema) {
        ma.sema = Vec::new();
        mb.sema = Vec::new();
    }
    if set(&ma.export) == set(&mb.export) {
        ma.export = Vec::new();
        mb.export = Vec::new();
    }
    a.kind == b.kind && a.name == b.name && a.params == b.params && ma == mb
}

/// Builds the resource graph of one table, with where its resources were written.
pub fn build(out: &Output, env: &InterpEnv<'_>) -> Result<(GraphSpec, Locations), Error> {
    let mut specs: Vec<(ResSpec, Span)> = Vec::new();
    let mut locations = Locations::default();
    for r in &out.resources {
        for (spec, span) in resource(r, env)? {
            locations.add(&spec, r);
            specs.push((spec, span));
        }
    }

    // Exports: the same (kind, name, host) must be identical.
    let mut exports: HashMap<(String, String, String), &ResSpec> = HashMap::new();
    for (s, span) in &specs {
        for h in &s.meta.export {
            let k = (s.kind.clone(), s.name.clone(), h.clone());
            match exports.get(&k) {
                Some(prev) if !same_resource(prev, s) => {
                    return Err(err(
                        format!("{} is exported to {h} twice with different values", s.id()),
                        *span,
                    ));
                }
                _ => {
                    exports.insert(k, s);
                }
            }
        }
    }

    let mut visible: BTreeMap<ResId, ResSpec> = BTreeMap::new();
    let mut order: Vec<ResId> = Vec::new();
    let mut hidden: Vec<ResSpec> = Vec::new();
    for (s, span) in specs {
        if s.meta.hidden {
            if hidden.last() != Some(&s) {
                hidden.push(s);
            }
            continue;
        }
        match visible.get(&s.id()) {
            Some(prev) => {
                if !same_resource(prev, &s) {
                    let what: Vec<String> = s
                        .params
                        .keys()
                        .chain(prev.params.keys())
                        .filter(|k| s.params.get(*k) != prev.params.get(*k))
                        .cloned()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let what = if what.is_empty() {
                        "meta".to_string()
                    } else {
                        what.join(", ")
                    };
                    return Err(err(format!("duplicate {} differs ({what})", s.id()), span));
                }
            }
            None => {
                order.push(s.id());
                visible.insert(s.id(), s);
            }
        }
    }
    let exists = |id: &ResId| visible.contains_key(id) || hidden.iter().any(|h| h.id() == *id);

    let mut edges: BTreeMap<(ResId, ResId), EdgeSpec> = BTreeMap::new();
    let mut edge_spans: BTreeMap<(ResId, ResId), Span> = BTreeMap::new();
    let mut add = |from: ResId, to: ResId, notify: bool, span: Span| -> Result<(), Error> {
        for id in [&from, &to] {
            if !exists(id) {
                return Err(err(
                    format!("edge refers to {id}, which is not in the graph"),
                    span,
                ));
            }
        }
        edge_spans.entry((from.clone(), to.clone())).or_insert(span);
        edges
            .entry((from.clone(), to.clone()))
            .or_insert_with(|| EdgeSpec::new(from, to, false))
            .notify |= notify;
        Ok(())
    };
    for r in &out.resources {
        if r.collect {
            continue;
        }
        for me in names_of(&r.names) {
            let me = ResId::new(r.kind.clone(), me);
            for (prop, kind, names, span) in &r.edges {
                for n in names_of(names) {
                    let other = ResId::new(kind.clone(), n);
                    if prop.outgoing() {
                        add(me.clone(), other, prop.refresh(), *span)?;
                    } else {
                        add(other, me.clone(), prop.refresh(), *span)?;
                    }
                }
            }
        }
    }
    // Send/recv: one transfer per receiving field; hidden resources cannot send.
    let mut receivers: BTreeMap<(ResId, String), (ResId, String)> = BTreeMap::new();
    let mut sends: Vec<(ResId, ResId, String, String)> = Vec::new();
    for e in &out.edges {
        for w in e.halves.windows(2) {
            for a in names_of(&w[0].1) {
                for b in names_of(&w[1].1) {
                    if let (Some(sf), Some(rf)) = (&w[0].2, &w[1].2) {
                        let from = ResId::new(w[0].0.clone(), a.clone());
                        let to = ResId::new(w[1].0.clone(), b.clone());
                        if !visible.contains_key(&from) && hidden.iter().any(|h| h.id() == from) {
                            return Err(err(
                                format!("{from} is hidden and cannot send values"),
                                e.span,
                            ));
                        }
                        let by = (from.clone(), sf.clone());
                        if let Some((prev, psf)) = receivers.insert((to.clone(), rf.clone()), by) {
                            if prev != from || psf != *sf {
                                return Err(err(
                                    format!(
                                        "{to} field `{rf}` receives from both {prev}.{psf} and {from}.{sf}"
                                    ),
                                    e.span,
                                ));
                            }
                        }
                        sends.push((from, to, sf.clone(), rf.clone()));
                    }
                    add(
                        ResId::new(w[0].0.clone(), a.clone()),
                        ResId::new(w[1].0.clone(), b),
                        false,
                        e.span,
                    )?;
                }
            }
        }
    }

    for (from, to, sf, rf) in sends {
        if let Some(e) = edges.remove(&(from.clone(), to.clone())) {
            edges.insert((from, to), e.sending(sf, rf));
        }
    }

    // Acyclicity. The error names every vertex on a cycle or after one (those a topological
    // sort never reaches), in identity order, at the first edge between two of them.
    let mut dg: DiGraphMap<&ResId, ()> = DiGraphMap::with_capacity(edges.len() * 2, edges.len());
    for (a, b) in edges.keys() {
        dg.add_edge(a, b, ());
    }
    if toposort(&dg, None).is_err() {
        let mut inside: BTreeSet<&ResId> = BTreeSet::new();
        for c in tarjan_scc(&dg) {
            if c.len() > 1 || dg.contains_edge(c[0], c[0]) {
                let mut dfs = Dfs::new(&dg, c[0]);
                while let Some(n) = dfs.next(&dg) {
                    inside.insert(n);
                }
            }
        }
        let span = edge_spans
            .iter()
            .find(|((a, b), _)| inside.contains(a) && inside.contains(b))
            .map(|(_, s)| *s)
            .unwrap_or_default();
        let inside: Vec<String> = inside.iter().map(ToString::to_string).collect();
        return Err(err(
            format!("the graph has a cycle through {}", inside.join(", ")),
            span,
        ));
    }

    let mut resources: Vec<ResSpec> = order
        .into_iter()
        .filter_map(|id| visible.remove(&id))
        .collect();
    resources.extend(hidden);
    let graph = GraphSpec {
        resources,
        edges: edges.into_values().collect(),
    };
    Ok((graph, locations))
}

fn apply_body(spec: &mut ResSpec, r: &ResOut) -> Result<(), Error> {
    for (name, v, _) in &r.fields {
        spec.params.insert(name.clone(), v.clone());
    }
    if let Some((all, span)) = &r.meta_all {
        if let Some((_, _, s)) = r.metas.first() {
            return Err(Error::new(
                Stage::Graph,
                "`Meta =>` cannot be combined with `Meta:x =>`",
                *s,
            ));
        }
        for p in META {
            if let Some(v) = all.field(p.name) {
                p.set(&mut spec.meta, v)
                    .map_err(|e| err(format!("{}: {e}", spec.id()), *span))?;
            }
        }
    }
    for (name, v, span) in &r.metas {
        spec.meta
            .set(name, v)
            .map_err(|e| err(format!("{}: {e}", spec.id()), *span))?;
    }
    Ok(())
}

fn resource(r: &ResOut, env: &InterpEnv<'_>) -> Result<Vec<(ResSpec, Span)>, Error> {
    if !env.schemas.contains_key(&r.kind) {
        return Err(err(format!("unknown resource kind `{}`", r.kind), r.span));
    }
    let mut out = Vec::new();
    if r.collect {
        // (name, host) filters; an empty host means any host (spec §13 W5).
        let mut filters: Vec<(String, String)> = Vec::new();
        match &r.names {
            Value::Str(s) => filters.push((s.clone(), String::new())),
            Value::List(l) => {
                for x in l {
                    match x {
                        Value::Str(s) => filters.push((s.clone(), String::new())),
                        s @ Value::Struct(_) => {
                            let name = s.field("name").and_then(Value::as_str).unwrap_or_default();
                            let host = s.field("host").and_then(Value::as_str).unwrap_or_default();
                            filters.push((name.to_string(), host.to_string()));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        for (n, h) in &filters {
            if n.is_empty() {
                return Err(err("collect: empty resource name", r.span));
            }
            if h == "*" {
                return Err(err(
                    format!("collect: `*` is not a host (name {n})"),
                    r.span,
                ));
            }
        }
        let exports = env
            .world
            .exports(&r.kind)
            .map_err(|e| Error::new(Stage::Stream, format!("collect {}: {e}", r.kind), r.span))?;
        let mut seen = BTreeSet::new();
        let mut matched: Vec<_> = exports
            .into_iter()
            .filter(|e| {
                filters
                    .iter()
                    .any(|(n, h)| *n == e.name && (h.is_empty() || *h == e.from))
            })
            .filter(|e| seen.insert((e.name.clone(), e.from.clone())))
            .collect();
        matched.sort_by(|a, b| (&a.name, &a.from).cmp(&(&b.name, &b.from)));
        for e in matched {
            let mut spec = ResSpec::new(r.kind.clone(), e.name.clone());
            spec.params = e.params.clone();
            for (k, v) in &e.meta {
                let _ = spec.meta.set(k, v);
            }
            spec.meta.export.clear();
            apply_body(&mut spec, r)?;
            out.push((spec, r.span));
        }
        return Ok(out);
    }
    let names = names_of(&r.names);
    for n in names {
        let mut spec = ResSpec::new(r.kind.clone(), n.clone());
        apply_body(&mut spec, r)?;
        if n.is_empty() {
            return Err(err(format!("{}: empty resource name", r.kind), r.span));
        }
        if n.starts_with('$') && !spec.meta.dollar {
            return Err(err(
                format!(
                    "{}: name starts with `$` (a forgotten `${{…}}`? set Meta:dollar to allow it)",
                    spec.id()
                ),
                r.span,
            ));
        }
        out.push((spec, r.span));
    }
    Ok(out)
}

/// Prints a graph the way `check --print-graph` does (spec §12): sorted `Edge:` and `Vertex:`
/// lines, each ending with a newline.
pub fn print_graph(g: &GraphSpec) -> String {
    let mut text = String::new();
    for r in &g.resources {
        text.push_str(&format!("Vertex: {}[{}]\n", r.kind, r.name));
    }
    for e in &g.edges {
        text.push_str(&format!(
            "Edge: {} -> {} # {} -> {}\n",
            e.from, e.to, e.from, e.to
        ));
    }
    let mut lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    lines.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    lines.iter().map(|l| format!("{l}\n")).collect()
}
