//! Staged rollouts: `tend deploy PROGRAM --canary N|P% [--batch N|P%] [--rollback-on-failure]`
//! and `tend deploy --resume`.
//!
//! The hosts the deploy is for (the registered ones, or those `--hosts`/`--selector` pick),
//! in name order, are split into stages: the first N (or P%) are the canaries, the rest
//! batches of `--batch` (default: the rest at once). Stage k is a deploy of the same bundle
//! targeted at every host of stages 1..=k by name (and the selector), waited for as `--wait`
//! does; hosts of later stages keep their program. The first stage that fails stops the
//! rollout; with `--rollback-on-failure` the bundle that ran before is deployed again to the
//! hosts of the stages reached. The plan and how far it got are kept in the World (the
//! string [`KEY`]), so a controller that died or timed out can be followed by another with
//! `tend deploy --resume`, which goes on from the first stage not done.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tend_world::{DeployTarget, DeployWorld, HostWorld, StrWorld, World};

use super::{append, signing, Draft, SigningKey};

/// Where a rollout keeps its plan and progress in the World.
pub(super) const KEY: &str = "tend/rollout";

/// A stage size: a count or a percentage of the hosts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Size {
    Count(usize),
    Percent(f64),
}

impl Size {
    /// `5` or `25%`.
    pub(super) fn parse(s: &str) -> Result<Size, String> {
        let bad = || format!("{s:?} is not a host count (5) or a percentage (25%)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("{s:?}: a percentage is above 0 and at most 100"));
                }
                Ok(Size::Percent(p))
            }
            None => match s.trim().parse::<usize>() {
                Ok(0) => Err(format!("{s:?}: at least one host")),
                Ok(n) => Ok(Size::Count(n)),
                Err(_) => Err(bad()),
            },
        }
    }

    /// How many of `n` hosts (at least one).
    fn of(self, n: usize) -> usize {
        match self {
            Size::Count(c) => c.min(n),
            Size::Percent(p) => ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1)),
        }
    }
}

/// A rollout as the World keeps it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct Rollout {
    pub bundle: String,
    pub message: String,
    /// The selector every stage keeps (from `--selector`).
    pub selector: std::collections::BTreeMap<String, String>,
    /// The hosts of each stage.
    pub stages: Vec<Vec<String>>,
    /// Stages done (waited for, converged).
    pub done: usize,
    /// The deploy of each stage published so far.
    pub deploys: Vec<u64>,
    /// The bundle that ran before (for `--rollback-on-failure`), if there was a deploy.
    pub previous: Option<String>,
    pub rollback: bool,
}

/// Splits `hosts` (sorted) into the canary stage and batches.
pub(super) fn stages(hosts: &[String], canary: Size, batch: Option<Size>) -> Vec<Vec<String>> {
    let n = hosts.len();
    let c = canary.of(n);
    let mut out = vec![hosts[..c].to_vec()];
    let rest = &hosts[c..];
    if !rest.is_empty() {
        let b = batch.map_or(rest.len(), |b| b.of(n).max(1));
        out.extend(rest.chunks(b).map(<[String]>::to_vec));
    }
    out
}

/// Plans a rollout of `bundle` over the hosts `target` picks, stores it and runs it.
pub(super) async fn start(
    world: &World,
    key: Option<&SigningKey>,
    base: Draft,
    (canary, batch, rollback): (Size, Option<Size>, bool),
    timeout: Duration,
    json: bool,
) -> Result<bool> {
    if recorded(world).await?.is_some() && !base.force {
        bail!(
            "a rollout is in progress (the World's string {KEY}): finish it with `tend deploy --resume`, or start this one over it with --force"
        );
    }
    let mut hosts: Vec<String> = world
        .hosts()
        .await?
        .into_iter()
        .filter(|h| {
            base.target
                .as_ref()
                .is_none_or(|t| t.matches(&h.hostname, &h.labels))
        })
        .map(|h| h.hostname)
        .collect();
    hosts.sort();
    if hosts.is_empty() {
        bail!("no registered host is targeted: nothing to roll out to");
    }
    let previous = world.latest_deploy().await?.map(|d| d.bundle);
    let r = Rollout {
        bundle: base.bundle.clone(),
        message: base.message.clone(),
        selector: base
            .target
            .as_ref()
            .map(|t| t.selector.clone())
            .unwrap_or_default(),
        stages: stages(&hosts, canary, batch),
        done: 0,
        deploys: Vec::new(),
        previous,
        rollback,
    };
    save(world, &r).await?;
    run(world, key, r, &base.author, timeout, json).await
}

/// `tend deploy --resume`: goes on with the rollout the World holds.
pub(super) async fn resume(
    world: &World,
    key: Option<&SigningKey>,
    author: &str,
    timeout: Duration,
    json: bool,
) -> Result<bool> {
    let Some(text) = recorded(world).await? else {
        bail!("no rollout to resume (the World holds no {KEY})");
    };
    let r: Rollout = serde_json::from_str(&text)
        .with_context(|| format!("the World's {KEY} is not a rollout"))?;
    eprintln!(
        "tend deploy: resuming the rollout of bundle {} at stage {}/{}",
        &r.bundle[..r.bundle.len().min(12)],
        r.done + 1,
        r.stages.len()
    );
    run(world, key, r, author, timeout, json).await
}

/// The rollout the World records, if any (a store that cannot be read is an error, not "no
/// rollout").
async fn recorded(world: &World) -> Result<Option<String>> {
    match world.str_get(KEY).await {
        Ok(t) if !t.is_empty() => Ok(Some(t)),
        Ok(_) | Err(tend_world::WorldError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the World's {KEY}")),
    }
}

async fn save(world: &World, r: &Rollout) -> Result<()> {
    world
        .str_set(KEY, &serde_json::to_string(r)?)
        .await
        .context("recording the rollout in the World")
}

async fn run(
    world: &World,
    key: Option<&SigningKey>,
    mut r: Rollout,
    author: &str,
    timeout: Duration,
    json: bool,
) -> Result<bool> {
    let total = r.stages.len();
    while r.done < total {
        let k = r.done;
        let reached: Vec<String> = r.stages[..=k].concat();
        let target = DeployTarget {
            hosts: reached.clone(),
            selector: r.selector.clone(),
        };
        let d = publish(
            world,
            key,
            &r.bundle,
            &format!("{} (stage {}/{total})", r.message, k + 1),
            author,
            target,
        )
        .await?;
        r.deploys.push(d);
        save(world, &r).await?;
        eprintln!(
            "tend deploy: stage {}/{total}: deploy {d} for {} ({})",
            k + 1,
            r.stages[k].join(", "),
            if k == 0 { "canary" } else { "batch" }
        );
        if !super::wait::wait(world, d, timeout, json).await? {
            eprintln!(
                "tend deploy: the rollout stopped at stage {}/{total}",
                k + 1
            );
            if r.rollback {
                match r.previous.clone() {
                    Some(prev) => {
                        let target = DeployTarget {
                            hosts: reached.clone(),
                            selector: r.selector.clone(),
                        };
                        let back = publish(
                            world,
                            key,
                            &prev,
                            &format!("rollback of: {}", r.message),
                            author,
                            target,
                        )
                        .await?;
                        eprintln!(
                            "tend deploy: rolled back {} to the previous bundle (deploy {back})",
                            reached.join(", ")
                        );
                        let _ = super::wait::wait(world, back, timeout, json).await?;
                        world.str_del(KEY).await.ok();
                    }
                    None => eprintln!("tend deploy: no earlier deploy to roll back to"),
                }
            } else {
                eprintln!(
                    "tend deploy: fix the cause and run `tend deploy --resume` to retry this stage"
                );
            }
            return Ok(false);
        }
        r.done += 1;
        save(world, &r).await?;
    }
    world.str_del(KEY).await.ok();
    eprintln!(
        "tend deploy: rollout done: {} host(s) in {total} stage(s)",
        r.stages.iter().map(Vec::len).sum::<usize>()
    );
    Ok(true)
}

/// Appends one stage's deploy on top of the latest.
async fn publish(
    world: &World,
    key: Option<&SigningKey>,
    bundle: &str,
    message: &str,
    author: &str,
    target: DeployTarget,
) -> Result<u64> {
    let draft = Draft {
        bundle: bundle.to_string(),
        message: message.to_string(),
        author: author.to_string(),
        target: Some(target),
        parent: world.latest_deploy().await?.map(|d| d.id),
        force: true,
    };
    let d = append(world, key, &draft)
        .await?
        .context("appending a stage's deploy")?;
    if let Some(s) = &d.signature {
        eprintln!(
            "tend deploy: deploy {} signed by {}",
            d.id,
            signing::fingerprint(&s.key)
        );
    }
    Ok(d.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i:03}")).collect()
    }

    #[test]
    fn sizes_and_stages() {
        assert_eq!(Size::parse("5").unwrap(), Size::Count(5));
        assert_eq!(Size::parse("25%").unwrap(), Size::Percent(25.0));
        assert!(
            Size::parse("0").is_err() && Size::parse("150%").is_err() && Size::parse("x").is_err()
        );
        let s = stages(&names(10), Size::Count(1), Some(Size::Percent(25.0)));
        let lens: Vec<usize> = s.iter().map(Vec::len).collect();
        assert_eq!(lens, [1, 3, 3, 3]);
        let s = stages(&names(4), Size::Percent(50.0), None);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        let s = stages(&names(2), Size::Count(5), Some(Size::Count(1)));
        assert_eq!(s, [names(2)]);
    }
}
