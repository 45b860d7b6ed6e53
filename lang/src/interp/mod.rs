//! Interpretation (spec §8, §9): one table ([`Output`]) becomes one `GraphSpec`. Fields are
//! checked against the kinds' schemas (native ranges), meta parameters go through
//! `Meta::set`, names are checked, collect statements are resolved against the world,
//! duplicates merge or fail, hidden resources live in their own pool, edges must reach existing
//! resources, and the graph must be acyclic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tend_engine::spec::META_FIELDS;
use tend_engine::{EdgeSpec, GraphSpec, KindSchema, ResId, ResSpec, Value};

use crate::diag::{Error, Stage};
use crate::funcs::world::WorldView;
use crate::graph::{Output, ResOut};
use crate::syntax::span::Span;

/// A check of one whole resource spec beyond its schema (the kind's own validation).
pub type Validator = dyn Fn(&ResSpec) -> Result<(), String> + Send + Sync;

/// What interpretation needs besides the table.
pub struct InterpEnv<'s> {
    /// Kind schemas.
    pub schemas: &'s BTreeMap<String, KindSchema>,
    /// The world (for collect statements).
    pub world: &'s dyn WorldView,
    /// Validation of non-hidden resources, if any.
    pub validate: Option<&'s Validator>,
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

/// Builds the resource graph of one table.
pub fn build(out: &Output, env: &InterpEnv<'_>) -> Result<GraphSpec, Error> {
    let mut specs: Vec<(ResSpec, Span)> = Vec::new();
    for r in &out.resources {
        specs.extend(resource(r, env)?);
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

    let mut edges: BTreeMap<(ResId, ResId), bool> = BTreeMap::new();
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
        *edges.entry((from, to)).or_insert(false) |= notify;
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
    let mut receivers: BTreeMap<(ResId, String), ResId> = BTreeMap::new();
    for e in &out.edges {
        for w in e.halves.windows(2) {
            for a in names_of(&w[0].1) {
                for b in names_of(&w[1].1) {
                    if let (Some(_), Some(rf)) = (&w[0].2, &w[1].2) {
                        let from = ResId::new(w[0].0.clone(), a.clone());
                        let to = ResId::new(w[1].0.clone(), b.clone());
                        if !visible.contains_key(&from) && hidden.iter().any(|h| h.id() == from) {
                            return Err(err(
                                format!("{from} is hidden and cannot send values"),
                                e.span,
                            ));
                        }
                        if let Some(prev) = receivers.insert((to.clone(), rf.clone()), from.clone())
                        {
                            if prev != from {
                                return Err(err(
                                    format!(
                                        "{to} field `{rf}` receives from both {prev} and {from}"
                                    ),
                                    e.span,
                                ));
                            }
                        }
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

    // Acyclicity (Kahn).
    let mut indeg: BTreeMap<&ResId, usize> = BTreeMap::new();
    let mut succ: BTreeMap<&ResId, Vec<&ResId>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        indeg.entry(a).or_insert(0);
        *indeg.entry(b).or_insert(0) += 1;
        succ.entry(a).or_default().push(b);
    }
    let mut ready: Vec<&ResId> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut seen = 0;
    while let Some(n) = ready.pop() {
        seen += 1;
        for s in succ.get(n).into_iter().flatten() {
            let d = indeg.get_mut(s).expect("counted");
            *d -= 1;
            if *d == 0 {
                ready.push(s);
            }
        }
    }
    if seen < indeg.len() {
        let inside: Vec<String> = indeg
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(k, _)| k.to_string())
            .collect();
        let span = edge_spans
            .iter()
            .find(|((a, b), _)| {
                indeg.get(a).is_some_and(|d| *d > 0) && indeg.get(b).is_some_and(|d| *d > 0)
            })
            .map(|(_, s)| *s)
            .unwrap_or_default();
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
    Ok(GraphSpec {
        resources,
        edges: edges
            .into_iter()
            .map(|((from, to), notify)| EdgeSpec { from, to, notify })
            .collect(),
    })
}

fn apply_body(spec: &mut ResSpec, r: &ResOut, schema: &KindSchema) -> Result<(), Error> {
    for (name, v, span) in &r.fields {
        schema
            .check_param(name, v)
            .map_err(|e| err(format!("{}: {e}", spec.id()), *span))?;
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
        for f in META_FIELDS {
            if let Some(v) = all.field(f) {
                spec.meta
                    .set(f, v)
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
    let Some(schema) = env.schemas.get(&r.kind) else {
        return Err(err(format!("unknown resource kind `{}`", r.kind), r.span));
    };
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
            apply_body(&mut spec, r, schema)?;
            check_spec(&spec, r.span, env)?;
            out.push((spec, r.span));
        }
        return Ok(out);
    }
    let names = names_of(&r.names);
    for n in names {
        let mut spec = ResSpec::new(r.kind.clone(), n.clone());
        apply_body(&mut spec, r, schema)?;
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
        check_spec(&spec, r.span, env)?;
        out.push((spec, r.span));
    }
    Ok(out)
}

fn check_spec(spec: &ResSpec, span: Span, env: &InterpEnv<'_>) -> Result<(), Error> {
    if spec.meta.hidden {
        return Ok(());
    }
    spec.meta
        .validate()
        .map_err(|e| err(format!("{}: {e}", spec.id()), span))?;
    if let Some(v) = env.validate {
        v(spec).map_err(|e| err(format!("{}: {e}", spec.id()), span))?;
    }
    Ok(())
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
