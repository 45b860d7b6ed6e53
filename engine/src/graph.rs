//! Checking a [`GraphSpec`] before anything runs: kinds, params, meta, constructors, duplicate
//! identities, dangling edges, automatic edges and cycles. Every error is collected, so a user
//! sees all mistakes at once. Nothing here touches the host.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::sync::Arc;

use crate::registry::{AutoEdgeSink, Registry};
use crate::resource::Resource;
use tend_model::{EdgeSpec, ErrorKind, GraphError, GraphSpec, ResId, ResSpec};

/// A checked graph: its full edge list and its resources, built.
pub(crate) struct Analyzed {
    /// Explicit edges plus automatic edges, deduplicated (an explicit edge wins over an
    /// automatic one between the same pair).
    pub(crate) edges: Vec<EdgeSpec>,
    /// One instance per resource of the graph, in order (constructors have no side effects,
    /// so the executor can use them instead of building again).
    pub(crate) built: Vec<Arc<dyn Resource>>,
}

/// Checks `g` completely; see [`Analyzed`].
pub(crate) fn analyze(
    registry: &Registry,
    g: &GraphSpec,
    complete: &(dyn Fn(&ResSpec) -> bool + Sync),
) -> Result<Analyzed, Vec<GraphError>> {
    let mut errors = Vec::new();
    let mut built: Vec<Arc<dyn Resource>> = Vec::with_capacity(g.resources.len());
    // Each identity's first resource, by index into the graph.
    let mut seen: HashMap<(&str, &str), u32> = HashMap::with_capacity(g.resources.len());
    // Each resource alone, and the keys it provides for automatic edges, part by part.
    let parts = by_core(&g.resources, |part, first| {
        let mut provides = HashMap::new();
        let checked: Vec<_> = part
            .iter()
            .map(|spec| check_one(registry, spec, complete(spec)))
            .collect();
        for (i, spec) in part.iter().enumerate() {
            if let Some(f) = registry.get(&spec.kind).and_then(|k| k.autoedges) {
                f(spec, &mut Provides(&mut provides, first + i));
            }
        }
        (checked, provides)
    });
    let (each, providers): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    for (i, (spec, checked)) in g
        .resources
        .iter()
        .zip(each.into_iter().flatten())
        .enumerate()
    {
        let key = (spec.kind.as_str(), spec.name.as_str());
        if seen.contains_key(&key) {
            errors.push(GraphError::res(
                ErrorKind::Graph,
                &spec.id(),
                None,
                "duplicate resource (kind and name must be unique)",
            ));
            continue;
        }
        seen.insert(key, i as u32);
        match checked {
            Ok(r) => built.push(r),
            Err(e) => errors.extend(e),
        }
    }

    let mut edges: Vec<EdgeSpec> = Vec::with_capacity(g.edges.len());
    // The same edges by index, for the cycle check.
    let mut links: Vec<(u32, u32)> = Vec::with_capacity(g.edges.len());
    let mut pairs: HashSet<(ResId, ResId)> = HashSet::with_capacity(g.edges.len());
    for e in &g.edges {
        let mut ok = true;
        for end in [&e.from, &e.to] {
            if !seen.contains_key(&(end.kind.as_str(), end.name.as_str())) {
                errors.push(GraphError::res(
                    ErrorKind::Graph,
                    end,
                    None,
                    format!(
                        "edge {} -> {} refers to a resource that is not in the graph",
                        e.from, e.to
                    ),
                ));
                ok = false;
            }
        }
        if ok && pairs.insert((e.from.clone(), e.to.clone())) {
            let at = |r: &ResId| seen[&(r.kind.as_str(), r.name.as_str())];
            links.push((at(&e.from), at(&e.to)));
            edges.push(e.clone());
        } else if ok {
            // A duplicate edge: keep one, with notify if any copy asks for it.
            if e.notify {
                if let Some(x) = edges.iter_mut().find(|x| x.from == e.from && x.to == e.to) {
                    x.notify = true;
                }
            }
        }
    }

    // Automatic edges: every provider of a key -> every requirer of it, by index into the
    // graph: keys are looked up as the kinds lend them, and no identity is cloned unless an edge
    // is made. The providers are in one map per part, in the graph's order.
    let auto_pairs = if providers.iter().all(HashMap::is_empty) {
        Vec::new()
    } else {
        by_core(&g.resources, |part, first| {
            let mut out = Vec::new();
            for (i, spec) in part.iter().enumerate() {
                if !spec.meta.autoedge {
                    continue;
                }
                if let Some(f) = registry.get(&spec.kind).and_then(|k| k.autoedges) {
                    f(
                        spec,
                        &mut Requires {
                            providers: &providers,
                            to: first + i,
                            out: &mut out,
                        },
                    );
                }
            }
            out
        })
    };
    for (from_i, to_i) in auto_pairs.into_iter().flatten() {
        let (from, to) = (g.resources[from_i].id(), g.resources[to_i].id());
        if from != to && pairs.insert((from.clone(), to.clone())) {
            links.push((from_i as u32, to_i as u32));
            edges.push(EdgeSpec::new(from, to, false));
        }
    }

    for cycle in cycles(g, &links) {
        let path = cycle
            .iter()
            .chain(cycle.first())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" -> ");
        errors.push(GraphError::res(
            ErrorKind::Graph,
            &cycle[0],
            None,
            format!("dependency cycle: {path}"),
        ));
    }

    if errors.is_empty() {
        Ok(Analyzed { edges, built })
    } else {
        Err(errors)
    }
}

/// What can be checked of one resource alone: its kind, params and meta, and its constructor.
fn check_one(
    registry: &Registry,
    spec: &ResSpec,
    complete: bool,
) -> Result<Arc<dyn Resource>, Vec<GraphError>> {
    let Some(kind) = registry.get(&spec.kind) else {
        return Err(vec![GraphError::res(
            ErrorKind::UnknownKind,
            &spec.id(),
            None,
            format!("unknown resource kind `{}`", spec.kind),
        )]);
    };
    let mut errors = Vec::new();
    for (name, value) in &spec.params {
        if let Err(e) = kind.schema.check_param(name, value) {
            errors.push(GraphError::res(
                ErrorKind::Param,
                &spec.id(),
                Some(e.field),
                e.reason,
            ));
        }
    }
    if let Err(e) = spec.meta.validate() {
        errors.push(GraphError::res(
            ErrorKind::Meta,
            &spec.id(),
            Some(format!("Meta:{}", e.name)),
            e.reason,
        ));
    }
    // A secret never reaches the World.
    if !spec.meta.export.is_empty() && spec.params.values().any(tend_model::secrets::holds_secret) {
        errors.push(GraphError::res(
            ErrorKind::Meta,
            &spec.id(),
            Some("Meta:export".into()),
            "the resource holds a secret (from `secret.*`), and secrets are never exported",
        ));
    }
    // Meta parameters the engine or the kind cannot honour yet are refused, never ignored.
    if spec.meta.reverse && kind.reverse.is_none() {
        errors.push(GraphError::res(
            ErrorKind::Meta,
            &spec.id(),
            Some("Meta:reverse".into()),
            format!(
                "kind `{}` cannot be reversed (set `reverse` to false)",
                spec.kind
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if spec.meta.hidden || !complete {
        // Hidden resources are never applied here (only exported): the kind's own
        // validation does not apply to them (spec/mcl.md §9). Nor to a resource its front end
        // could not read completely (see `check_partial`).
        return Ok(Arc::new(crate::resource::Hidden));
    }
    match (kind.build)(spec) {
        Ok(r) => Ok(Arc::from(r)),
        Err(e) => Err(vec![GraphError::res(
            ErrorKind::Build,
            &spec.id(),
            e.field,
            e.message,
        )]),
    }
}

/// Below this many resources per core, a graph is checked on one thread: a thread costs more
/// than it saves.
const PER_CORE: usize = 1024;

/// `f(part, index of its first item)` for consecutive parts of `items`, one part per core when
/// the list is long enough (checking 10,000 resources takes several milliseconds of a 100 ms
/// run), in order.
fn by_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T], usize) -> R + Sync) -> Vec<R> {
    // Asked once: the answer reads the cgroup's CPU quota from /proc and /sys.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(items.len() / PER_CORE).max(1);
    if threads == 1 {
        return vec![f(items, 0)];
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        // A part whose thread cannot be started (a process limit) is done on this one.
        let rest: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .skip(1)
            .map(|(c, part)| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || f(part, c * chunk))
                    .map_err(|_| (part, c * chunk))
            })
            .collect();
        let mut out = vec![f(&items[..chunk], 0)];
        for h in rest {
            match h {
                Ok(h) => match h.join() {
                    Ok(r) => out.push(r),
                    Err(p) => std::panic::resume_unwind(p),
                },
                Err((part, first)) => out.push(f(part, first)),
            }
        }
        out
    })
}

/// The resources that provide a key: the first, and any others (most keys have one provider,
/// which then costs no allocation of its own).
type Providers = HashMap<Box<str>, (usize, Vec<usize>)>;

/// Records the keys resource `.1` provides.
struct Provides<'a>(&'a mut Providers, usize);

impl AutoEdgeSink for Provides<'_> {
    fn provides(&mut self, key: &str) {
        match self.0.get_mut(key) {
            Some((_, more)) => more.push(self.1),
            None => {
                self.0.insert(key.into(), (self.1, Vec::new()));
            }
        }
    }
    fn requires(&mut self, _: &str) {}
}

/// Pairs resource `to` with the providers of the keys it requires.
struct Requires<'a> {
    providers: &'a [Providers],
    to: usize,
    out: &'a mut Vec<(usize, usize)>,
}

impl AutoEdgeSink for Requires<'_> {
    fn provides(&mut self, _: &str) {}
    fn requires(&mut self, key: &str) {
        let all = self.providers.iter().filter_map(|p| p.get(key));
        for from in
            all.flat_map(|(first, more)| std::iter::once(*first).chain(more.iter().copied()))
        {
            if from != self.to {
                self.out.push((from, self.to));
            }
        }
    }
}

/// Finds dependency cycles: one per strongly connected component that has an edge (a
/// self-loop or two vertices or more), found by petgraph's Tarjan. Each is reported as a cycle
/// of its vertices in edge order, walked from the component's smallest identity along the first
/// edge (in graph order) that stays in the component; components in the order of their
/// smallest identity.
fn cycles(g: &GraphSpec, links: &[(u32, u32)]) -> Vec<Vec<ResId>> {
    if links.is_empty() {
        return Vec::new();
    }
    let mut dg: DiGraph<(), (), u32> = DiGraph::with_capacity(g.resources.len(), links.len());
    for _ in 0..g.resources.len() {
        dg.add_node(());
    }
    dg.extend_with_edges(links.iter().copied());
    let key = |n: NodeIndex| {
        let r = &g.resources[n.index()];
        (r.kind.as_str(), r.name.as_str())
    };
    let mut knots: Vec<Vec<NodeIndex>> = tarjan_scc(&dg)
        .into_iter()
        .filter(|c| c.len() > 1 || dg.contains_edge(c[0], c[0]))
        .collect();
    for c in &mut knots {
        c.sort_unstable_by_key(|n| key(*n));
    }
    knots.sort_unstable_by_key(|c| key(c[0]));
    let mut out = Vec::with_capacity(knots.len());
    let mut pos: HashMap<NodeIndex, usize> = HashMap::new();
    for c in knots {
        let inside: HashSet<NodeIndex> = c.iter().copied().collect();
        let mut path: Vec<NodeIndex> = Vec::new();
        pos.clear();
        let mut cur = c[0];
        loop {
            if let Some(&i) = pos.get(&cur) {
                out.push(
                    path[i..]
                        .iter()
                        .map(|n| g.resources[n.index()].id())
                        .collect(),
                );
                break;
            }
            pos.insert(cur, path.len());
            path.push(cur);
            // petgraph lists the newest edge first: the last in the component is the first in
            // graph order. Every vertex of a component with an edge has a successor in it.
            cur = dg
                .neighbors(cur)
                .filter(|n| inside.contains(n))
                .last()
                .expect("a vertex of a cyclic component has a successor in it");
        }
    }
    out
}
