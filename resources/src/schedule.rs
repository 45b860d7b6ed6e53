//! `schedule`: this host's membership of a distributed scheduling pool, as mgmt's `schedule`
//! resource. Every host with a `schedule` of the same namespace joins the pool; an elected
//! member chooses up to `max` of the live members (`strategy` `rr` or `alpha`); any host reads
//! the choice with `world.schedule(namespace)`. A host that dies leaves the pool when its
//! entry's TTL (`ttl`, default 10 s) runs out, and the leader chooses a replacement.
//!
//! The resource is in state when this host's entry is in the pool with these options
//! (`withdraw`: when it is not). When the resource leaves the graph the entry is withdrawn at
//! once, unless it `persist`s or has a `ttl` of its own (then it runs down), as in mgmt.
//! The work is the World's (`tend_model::world::SchedWorld`); the watch fires when the
//! namespace changes, so a lost entry is put back.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tend_engine::{CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::world::{ResourceWorld, SchedOpts, SCHED_STRATEGIES};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::{field_err, Params};

/// Who holds the membership, for the World (a program calling `world.schedule(ns, opts)`
/// may hold the same one).
const HOLDER: &str = "resource";

/// The `schedule` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("schedule")
            .field(Field::new(
                "namespace",
                Type::Str,
                "the pool to join (default: the resource name)",
            ))
            .field(
                Field::new("strategy", Type::Str, "how the leader chooses: rr or alpha")
                    .allowed(SCHED_STRATEGIES),
            )
            .field(
                Field::new("max", Type::Int, "how many hosts to choose (default 1)")
                    .range(1, 1 << 20),
            )
            .field(
                Field::new(
                    "persist",
                    Type::Bool,
                    "stay in the pool when the resource leaves the graph or the host stops",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "ttl",
                    Type::Int,
                    "seconds an entry outlives its host (default 10; etcd rounds below 2 up)",
                )
                .range(1, 86_400),
            )
            .field(
                Field::new(
                    "withdraw",
                    Type::Bool,
                    "leave the pool instead of joining it",
                )
                .default_value(false),
            )
    })
}

/// Builds a `schedule`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let namespace = p.opt_str("namespace")?.unwrap_or_else(|| spec.name.clone());
    if namespace.is_empty() {
        return Err(field_err("namespace", "the namespace is empty"));
    }
    let withdraw = p.bool("withdraw")?;
    let persist = p.bool("persist")?;
    let ttl = p.opt_int("ttl")?;
    if persist && ttl.is_some() {
        return Err(field_err("ttl", "cannot be combined with `persist`"));
    }
    if withdraw {
        for f in ["strategy", "max", "ttl"] {
            if p.is_set(f) {
                return Err(field_err(f, "cannot be combined with `withdraw`"));
            }
        }
        if persist {
            return Err(field_err("persist", "cannot be combined with `withdraw`"));
        }
    }
    let opts = SchedOpts {
        strategy: p
            .opt_str("strategy")?
            .unwrap_or_else(|| SCHED_STRATEGIES[0].to_string()),
        max: p.opt_int("max")?.unwrap_or(1) as u32,
        ttl: ttl.unwrap_or(0) as u32,
        persist,
    };
    Ok(Box::new(Schedule {
        id: format!("schedule[{}]", spec.name),
        namespace,
        opts,
        withdraw,
        world: Default::default(),
    }))
}

struct Schedule {
    id: String,
    namespace: String,
    opts: SchedOpts,
    withdraw: bool,
    world: crate::worldcell::WorldCell,
}

impl Schedule {
    fn world(&self) -> Result<Arc<dyn ResourceWorld>, ResError> {
        self.world.get(&self.id)
    }
}

#[async_trait::async_trait]
impl Resource for Schedule {
    async fn init(&self, ctx: &InitCtx) -> Result<(), ResError> {
        self.world.init(ctx, &self.id, "to schedule in")
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let world = self.world()?;
        let mut changes = world.scheduled_watch(&self.namespace);
        // The first item is the current state.
        let _ = changes.next().await;
        w.running();
        while changes.next().await.is_some() {
            w.event();
        }
        Ok(())
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let world = self.world()?;
        let err = |e: tend_model::world::WorldError| {
            ResError::new(format!("{}: namespace {:?}: {e}", self.id, self.namespace))
        };
        let changed = if self.withdraw {
            world
                .sched_withdraw(&self.namespace, ctx.apply)
                .await
                .map_err(err)?
        } else {
            world
                .sched_join(&self.namespace, &self.opts, HOLDER, ctx.apply)
                .await
                .map_err(err)?
        };
        if !changed {
            return Ok(Checked::InState);
        }
        let what = if self.withdraw { "withdrawn" } else { "joined" };
        if ctx.apply {
            tracing::info!(resource = %self.id, namespace = %self.namespace, "{what}");
        } else {
            tracing::info!(resource = %self.id, namespace = %self.namespace, "would be {what}");
        }
        Ok(Checked::Changed)
    }

    async fn cleanup(&self) -> Result<(), ResError> {
        if self.withdraw {
            return Ok(());
        }
        let Ok(world) = self.world() else {
            return Ok(());
        };
        world
            .sched_leave(&self.namespace, HOLDER)
            .await
            .map_err(|e| {
                ResError::new(format!(
                    "{}: leaving namespace {:?}: {e}",
                    self.id, self.namespace
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: ResSpec) -> String {
        match build(&spec) {
            Ok(_) => panic!("{spec:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mgmt_s_incompatible_fields_are_refused_by_name() {
        let s = || ResSpec::new("schedule", "web");
        assert!(build(&s().param("max", 3i64).param("ttl", 5i64)).is_ok());
        assert!(err(s().param("persist", true).param("ttl", 5i64)).contains("`ttl`"));
        assert!(err(s().param("withdraw", true).param("max", 2i64)).contains("`max`"));
        assert!(err(s().param("withdraw", true).param("persist", true)).contains("`persist`"));
        assert!(err(s().param("namespace", "")).contains("`namespace`"));
        assert!(build(&s().param("withdraw", true)).is_ok());
    }

    #[test]
    fn the_schema_checks_strategy_and_max() {
        let s = schema();
        assert!(s
            .check_param("strategy", &tend_model::Value::Str("fifo".into()))
            .is_err());
        assert!(s.check_param("max", &tend_model::Value::Int(0)).is_err());
        assert!(s
            .check_param("strategy", &tend_model::Value::Str("alpha".into()))
            .is_ok());
    }
}
