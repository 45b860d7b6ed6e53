//! The daemon's reports: this host's registration in the World (the deploy it runs,
//! converged or not, why a deploy was rejected) and what the API shows of the World.

use std::time::Duration;

use futures::StreamExt;
use tend_engine::VertexState;
use tend_front::deploys::Running;
use tend_world::{HostStatus, HostWorld, ResWorld, World};

use crate::api::{ApiState, DeployInfo, Health};

/// The shortest time between two writes of this host's registration.
const MIN_GAP: Duration = Duration::from_millis(200);

/// Keeps this host's registration (deploy, converged) and the API's world health current.
pub fn report_host(
    world: World,
    running: Running,
    engine: tend_engine::Engine,
    api: ApiState,
) -> tokio::task::JoinHandle<()> {
    // The World was joined before the API started: say so at once.
    api.set_world_health(world_health(&world));
    tokio::spawn(async move {
        let mut status = engine.status();
        let mut last: Option<HostStatus> = None;
        // `None` until written once: a rejection reported while the host waited for its
        // first program is cleared here when that program runs.
        let mut last_rejected: Option<Option<String>> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_write: Option<tokio::time::Instant> = None;
        loop {
            let (deploy, rejected) = running.snapshot();
            api.set_deploy(deploy.as_ref().map(|d| DeployInfo {
                id: d.id,
                hash: d.hash.clone(),
            }));
            if last_rejected.as_ref() != Some(&rejected) {
                api.set_program_error(rejected.clone());
                match world.host_set_error(rejected.clone()).await {
                    Ok(()) => last_rejected = Some(rejected),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot report the rejected deploy in this host's registration")
                    }
                }
            }
            let now = host_status(deploy.map(|d| d.id), &status.borrow_and_update());
            // Every host's cache holds every registration: a host converging through many
            // swaps writes its other changes at most every MIN_GAP (the latest state, at the
            // end of the gap), so a fleet's records do not flood etcd's watchers.
            // Becoming converged, or a new deploy, is what `tend deploy --wait` waits for:
            // written at once.
            let urgent = last
                .as_ref()
                .is_none_or(|l| l.deploy != now.deploy || (now.converged && !l.converged));
            let due =
                urgent || last_write.is_none_or(|t: tokio::time::Instant| t.elapsed() >= MIN_GAP);
            let pending = last.as_ref() != Some(&now);
            if pending && due {
                match world.host_update(&now).await {
                    Ok(()) => last = Some(now),
                    Err(e) => tracing::warn!(error = %e, "cannot update this host's registration"),
                }
                last_write = Some(tokio::time::Instant::now());
            }
            api.set_world_health(world_health(&world));
            let gap_end = last_write.map(|t| t + MIN_GAP);
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
                _ = async { tokio::time::sleep_until(gap_end.expect("guarded")).await }, if pending && !due && gap_end.is_some() => {}
            }
        }
    })
}

/// What the registration says of the engine: converged or not, and the failed resources
/// (those whose last check failed, even while they wait for a retry) with the first one's
/// error.
fn host_status(deploy: Option<u64>, s: &tend_engine::Status) -> HostStatus {
    // Runs at each status change: count in one pass, without sorting every vertex.
    let failing = s
        .vertices
        .iter()
        .filter(|(_, v)| v.state == VertexState::Failed || v.last_error.is_some());
    let failed = failing.clone().count();
    let first = failing.min_by(|a, b| a.0.cmp(b.0));
    HostStatus {
        deploy,
        converged: s.converged,
        failed: failed as u32,
        blocked: s.count(VertexState::Blocked) as u32,
        // The record goes to the World: no secret in it.
        first_failure: first.map(|(id, v)| {
            let e = v.last_error.as_deref().unwrap_or("failed");
            format!("{id}: {}", tend_model::secrets::redact(e))
        }),
    }
}

/// Keeps the API's view of the exports this host may collect current, from the World's watch
/// cache (a local subscription: no store watch is opened).
pub fn report_exports(world: World, api: ApiState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = world.res_watch(None);
        // This host's own count can change without a collectable record changing.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                c = changes.next() => if c.is_none() { return },
                _ = tick.tick() => {}
            }
            let records = match world.res_collect(&[]).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the exports for the API");
                    continue;
                }
            };
            let docs: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    let (params, meta) = match tend_model::export::decode(&r.data) {
                        Ok((p, m)) => (
                            p.iter()
                                .map(|(k, v)| (k.clone(), tend_model::json::to_lossless(v)))
                                .collect::<serde_json::Map<_, _>>(),
                            m.iter()
                                .map(|(k, v)| (k.clone(), tend_model::json::to_lossless(v)))
                                .collect::<serde_json::Map<_, _>>(),
                        ),
                        Err(_) => Default::default(),
                    };
                    serde_json::json!({
                        "kind": r.kind, "name": r.name, "from": r.from, "to": r.to,
                        "params": params, "meta": meta,
                    })
                })
                .collect();
            let metrics = crate::api::metrics::WorldMetrics {
                exports: world.own_export_count() as u64,
                collected: docs.len() as u64,
                operations_total: world
                    .op_counts()
                    .into_iter()
                    .map(|((op, result), n)| ((op.to_string(), result.to_string()), n))
                    .collect(),
                watch_events_total: world.watch_events(),
            };
            api.set_exports(docs, metrics);
        }
    })
}

fn world_health(world: &World) -> Health {
    let ws = world.status();
    let details = serde_json::json!({
        "backend": ws.backend,
        "session_ok": ws.session_ok,
        "cache_revision": ws.cache_revision,
        "subscribers": ws.subscribers,
    });
    if ws.session_ok {
        Health::Up(details)
    } else {
        Health::Down(details)
    }
}
