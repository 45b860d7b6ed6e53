//! `tend deploy --wait`: after publishing, follow the hosts' registrations until every host
//! runs the deploy converged, or one rejects it or fails a resource, or the time is up.
//!
//! The hosts waited for are the registered ones the deploy targets (all of them for a deploy
//! without `--hosts`/`--selector`), taken again at each change, so a host that joins while the
//! deploy rolls out is waited for too; a host whose registration disappears (its session
//! expired) fails the wait.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use serde_json::json;
use tend_world::{DeployWorld, HostInfo, HostWorld, World};

/// How long a host seen during the wait may be missing from the registrations before the
/// wait fails on it (three default session TTLs).
const GONE_AFTER: Duration = Duration::from_secs(30);

/// Where one host stands with the deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stand {
    /// Runs it, converged, nothing failed.
    Converged,
    /// Not there yet: what it runs now and whether it is converged.
    Pending(String),
    /// Rejected it (does not compile or check there).
    Rejected(String),
    /// Runs it with failed resources (the first one named).
    Failed(String),
    /// Its registration disappeared while we waited.
    Gone,
}

impl Stand {
    fn word(&self) -> &'static str {
        match self {
            Stand::Converged => "converged",
            Stand::Pending(_) => "pending",
            Stand::Rejected(_) => "rejected",
            Stand::Failed(_) => "failed",
            Stand::Gone => "gone",
        }
    }

    fn detail(&self) -> String {
        match self {
            Stand::Converged => String::new(),
            Stand::Pending(s) | Stand::Rejected(s) | Stand::Failed(s) => s.clone(),
            Stand::Gone => "its registration expired (the host stopped or lost etcd)".into(),
        }
    }

    fn is_bad(&self) -> bool {
        matches!(self, Stand::Rejected(_) | Stand::Failed(_) | Stand::Gone)
    }
}

/// Judges one host's registration against deploy `id`.
fn stand(h: &HostInfo, id: u64) -> Stand {
    if let Some(e) = &h.error {
        if e.starts_with(&format!("deploy {id} rejected")) {
            return Stand::Rejected(e.clone());
        }
    }
    if h.deploy != Some(id) {
        return Stand::Pending(match h.deploy {
            Some(d) => format!("runs deploy {d}"),
            None => "runs no deploy yet".into(),
        });
    }
    if h.failed > 0 && h.converged {
        return Stand::Failed(format!(
            "{} failed resource(s), {} blocked; first: {}",
            h.failed,
            h.blocked,
            h.first_failure.as_deref().unwrap_or("?")
        ));
    }
    if h.converged {
        return Stand::Converged;
    }
    Stand::Pending(match (&h.first_failure, h.failed) {
        (Some(f), n) if n > 0 => format!("converging, {n} failing (retrying): {f}"),
        _ => "converging".into(),
    })
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Converged,
    /// A host rejected it, failed a resource, or disappeared.
    Failed,
    Timeout,
    /// A newer deploy was published meanwhile.
    Superseded(u64),
}

/// Waits for deploy `id` (see the module docs). Prints progress on a terminal, then either a
/// summary line or, with `json`, the per-host table on stdout. Returns whether every host
/// converged.
pub(super) async fn wait(world: &World, id: u64, timeout: Duration, json: bool) -> Result<bool> {
    let start = Instant::now();
    let mut changes = world.hosts_watch();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} deploy {prefix}: [{bar:30}] {pos}/{len} hosts converged {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix(id.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    // Every host seen during the wait, with its latest stand and record.
    let mut seen: BTreeMap<String, (Stand, Option<HostInfo>)> = BTreeMap::new();
    // Since when each host seen before has been missing from the registrations.
    let mut missing: BTreeMap<String, Instant> = BTreeMap::new();
    let target = world.get_deploy(id).await?.target;
    let end = loop {
        let latest = world.latest_deploy().await?.map(|d| d.id);
        if let Some(l) = latest.filter(|l| *l > id) {
            break End::Superseded(l);
        }
        let hosts = world.hosts().await?;
        // A registration can lapse for a moment (a starved host renews its session late and
        // registers again): a host is gone only when it has been missing for GONE_AFTER.
        let now = Instant::now();
        for (name, (s, _)) in seen.iter_mut() {
            let since = *missing.entry(name.clone()).or_insert(now);
            *s = if now.duration_since(since) >= GONE_AFTER {
                Stand::Gone
            } else {
                Stand::Pending("its registration is missing (renewing its session?)".into())
            };
        }
        for h in hosts {
            missing.remove(&h.hostname);
            if target
                .as_ref()
                .is_some_and(|t| !t.matches(&h.hostname, &h.labels))
            {
                continue;
            }
            let s = stand(&h, id);
            seen.insert(h.hostname.clone(), (s, Some(h)));
        }
        let done = seen
            .values()
            .filter(|(s, _)| *s == Stand::Converged)
            .count();
        let slowest = seen
            .iter()
            .find(|(_, (s, _))| matches!(s, Stand::Pending(_)))
            .map(|(n, (s, _))| format!("(waiting for {n}: {})", s.detail()));
        if let Some(b) = &bar {
            b.set_length(seen.len() as u64);
            b.set_position(done as u64);
            b.set_message(slowest.clone().unwrap_or_default());
        }
        if seen.values().any(|(s, _)| s.is_bad()) {
            break End::Failed;
        }
        if !seen.is_empty() && done == seen.len() {
            break End::Converged;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break End::Timeout;
        }
        tokio::select! {
            c = changes.next() => if c.is_none() {
                changes = world.hosts_watch();
            },
            _ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {}
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let result_word = match end {
        End::Converged => "converged",
        End::Timeout => "timeout",
        End::Failed => "failed",
        End::Superseded(_) => "superseded",
    };
    if json {
        let hosts: Vec<_> = seen
            .iter()
            .map(|(n, (s, h))| {
                json!({
                    "host": n,
                    "state": s.word(),
                    "detail": s.detail(),
                    "deploy": h.as_ref().and_then(|h| h.deploy),
                    "failed": h.as_ref().map_or(0, |h| h.failed),
                    "blocked": h.as_ref().map_or(0, |h| h.blocked),
                    "converged_at": h.as_ref().filter(|h| h.converged_ms > 0)
                        .map(|h| crate::api::views::rfc3339_ms(h.converged_ms)),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "deploy": id, "result": result_word,
                "seconds": (elapsed * 1000.0).round() / 1000.0, "hosts": hosts,
            }))?
        );
    }
    let (head, shown): (String, fn(&Stand) -> bool) = match end {
        End::Converged => {
            if !json {
                println!(
                    "deploy {id} converged on {} host(s) in {elapsed:.2} s",
                    seen.len()
                );
            }
            return Ok(true);
        }
        End::Failed => (
            format!("deploy {id} failed after {elapsed:.2} s on:"),
            Stand::is_bad,
        ),
        End::Timeout if seen.is_empty() => (
            format!(
                "deploy {id}: no host registered within {:.0} s",
                timeout.as_secs_f64()
            ),
            |_| false,
        ),
        End::Timeout => (
            format!(
                "deploy {id}: not converged within {:.0} s on:",
                timeout.as_secs_f64()
            ),
            |s| *s != Stand::Converged,
        ),
        End::Superseded(l) => (format!("deploy {id} was superseded by deploy {l}"), |_| {
            false
        }),
    };
    eprintln!("tend deploy: {head}");
    for (n, (s, _)) in seen.iter().filter(|(_, (s, _))| shown(s)) {
        eprintln!("  {n}: {}: {}", s.word(), s.detail());
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(deploy: Option<u64>, converged: bool) -> HostInfo {
        HostInfo {
            hostname: "h1".into(),
            version: "0".into(),
            started_ms: 0,
            deploy,
            converged,
            error: None,
            updated_ms: 0,
            instance: String::new(),
            failed: 0,
            blocked: 0,
            first_failure: None,
            converged_ms: 0,
            labels: Default::default(),
        }
    }

    #[test]
    fn stands() {
        assert_eq!(stand(&host(Some(3), true), 3), Stand::Converged);
        assert!(matches!(stand(&host(Some(2), true), 3), Stand::Pending(_)));
        assert!(matches!(stand(&host(Some(3), false), 3), Stand::Pending(_)));
        let mut r = host(Some(2), true);
        r.error = Some("deploy 3 rejected: x".into());
        assert!(matches!(stand(&r, 3), Stand::Rejected(_)));
        // An older rejection is not this deploy's.
        assert!(matches!(stand(&r, 4), Stand::Pending(_)));
        let mut f = host(Some(3), true);
        f.failed = 1;
        f.first_failure = Some("file[/x]: no space".into());
        let Stand::Failed(d) = stand(&f, 3) else {
            panic!()
        };
        assert!(d.contains("file[/x]: no space"), "{d}");
        f.converged = false;
        assert!(matches!(stand(&f, 3), Stand::Pending(_)));
    }
}
