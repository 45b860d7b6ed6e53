//! The exporter of exported resources (their payload codec is `tend_model::export`).
//!
//! The exporter publishes every resource with `Meta:export` through the World once it is processed
//! (converged, after its dependencies), and withdraws its records when it leaves the graph.
//! `Meta:hidden` resources are exported without being applied here. Nothing is exported in
//! noop mode (global or `Meta:noop`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tend_model::export::encode;
use tend_model::world::{Export, ExportKey, ResWorld};
use tend_model::{ResId, ResSpec};

use crate::executor::{Engine, RunningGraph};
use crate::status::VertexState;

/// The records a graph should have exported now: resources with `Meta:export` whose vertex
/// is converged and whose predecessors are all converged, one record per recipient.
fn wanted(
    exporting: &[&ResSpec],
    graph: &RunningGraph,
    engine: &Engine,
    noop: bool,
) -> BTreeMap<(String, String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    if noop || exporting.is_empty() {
        return out;
    }
    let status = engine.status();
    let s = status.borrow();
    let converged = |id: &ResId| {
        s.vertices
            .get(id)
            .is_some_and(|v| v.state == VertexState::Converged)
    };
    let ids: HashSet<ResId> = exporting.iter().map(|r| r.id()).collect();
    let mut preds: HashMap<&ResId, Vec<&ResId>> = HashMap::new();
    for e in &graph.edges {
        if ids.contains(&e.to) {
            preds.entry(&e.to).or_default().push(&e.from);
        }
    }
    for r in exporting {
        if r.meta.noop {
            continue;
        }
        let id = r.id();
        if !converged(&id) || !preds.get(&id).into_iter().flatten().all(|p| converged(p)) {
            continue;
        }
        let data = encode(r);
        let to: BTreeSet<&String> = r.meta.export.iter().collect();
        for host in to {
            out.insert((r.kind.clone(), r.name.clone(), host.clone()), data.clone());
        }
    }
    out
}

/// Keeps the World's records of this host in line with the engine: publishes what is
/// processed, withdraws what left the graph. Runs until the engine's status channel closes.
pub fn spawn_exporter(
    engine: Engine,
    world: Arc<dyn ResWorld>,
    noop: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut status = engine.status();
        let mut published: BTreeMap<(String, String, String), Vec<u8>> = BTreeMap::new();
        loop {
            let graph = engine.graph();
            // Only resources with `Meta:export` matter: a graph without any costs one scan.
            let exporting: Vec<&ResSpec> = graph
                .resources()
                .filter(|r| !r.meta.export.is_empty())
                .collect();
            let want = wanted(&exporting, &graph, &engine, noop);
            // Records still exported by a resource of the graph are kept while it is not
            // processed (e.g. re-checking); the others are withdrawn.
            let exports_now: HashSet<(&str, &str, &str)> = exporting
                .iter()
                .flat_map(|r| {
                    r.meta
                        .export
                        .iter()
                        .map(|to| (r.kind.as_str(), r.name.as_str(), to.as_str()))
                })
                .collect();
            let gone: Vec<ExportKey> = published
                .keys()
                .filter(|key| {
                    !want.contains_key(*key)
                        && !exports_now.contains(&(key.0.as_str(), key.1.as_str(), key.2.as_str()))
                })
                .map(|(kind, name, to)| ExportKey {
                    kind: kind.clone(),
                    name: name.clone(),
                    to: to.clone(),
                })
                .collect();
            let fresh: Vec<Export> = want
                .iter()
                .filter(|(k, d)| published.get(*k) != Some(*d))
                .map(|((kind, name, to), data)| Export {
                    kind: kind.clone(),
                    name: name.clone(),
                    from: String::new(),
                    to: to.clone(),
                    data: data.clone(),
                })
                .collect();
            let mut ok = true;
            if !gone.is_empty() {
                match world.res_delete(gone.clone()).await {
                    Ok(_) => {
                        for g in &gone {
                            published.remove(&(g.kind.clone(), g.name.clone(), g.to.clone()));
                        }
                        tracing::info!(records = gone.len(), "exports withdrawn");
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(error = %e, "cannot withdraw exports; will retry");
                    }
                }
            }
            if !fresh.is_empty() {
                let n = fresh.len();
                match world.res_export(fresh).await {
                    Ok(_) => {
                        for (k, d) in &want {
                            published.insert(k.clone(), d.clone());
                        }
                        tracing::info!(records = n, "resources exported");
                    }
                    Err(e) => {
                        ok = false;
                        tracing::warn!(error = %e, "cannot export resources; will retry");
                    }
                }
            }
            if ok {
                if status.changed().await.is_err() {
                    return;
                }
            } else {
                tokio::select! {
                    c = status.changed() => if c.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    })
}
