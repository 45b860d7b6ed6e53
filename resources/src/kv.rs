//! `kv`: a string in the World. With `mapped` (the default, as in mgmt) it is this host's entry
//! of the per-host map `key` (read by every host with `world.kvlookup(key)`); without, the
//! global string `key` (read with `world.getval(key)`). An unset `value` removes the entry.

use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use tend_engine::{CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::world::{ResourceWorld, StrWorld, WorldError};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::{field_err, Params};

/// The `kv` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("kv")
            .field(Field::new(
                "key",
                Type::Str,
                "the key (default: the resource name)",
            ))
            .field(Field::new("value", Type::Str, "the value; unset removes the entry").optional())
            .field(
                Field::new(
                    "mapped",
                    Type::Bool,
                    "this host's entry of a per-host map (true) or a global string (false)",
                )
                .default_value(true),
            )
    })
}

/// Builds a `kv`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let key = p.opt_str("key")?.unwrap_or_else(|| spec.name.clone());
    if key.is_empty() {
        return Err(field_err("key", "the key is empty"));
    }
    // The World holds what a kv writes, in clear: no secret goes there.
    for f in ["key", "value"] {
        if p.get(f).is_some_and(tend_model::secrets::holds_secret) {
            return Err(field_err(
                f,
                "holds a secret (from `secret.*`), and secrets never go to the World",
            ));
        }
    }
    if tend_model::secrets::holds_secret(&tend_model::Value::Str(spec.name.clone())) {
        return Err(ResError::new(
            "the name holds a secret (from `secret.*`), and secrets never go to the World",
        ));
    }
    Ok(Box::new(Kv {
        id: format!("kv[{}]", spec.name),
        key,
        value: p.opt_str("value")?,
        mapped: p.bool("mapped")?,
        world: Default::default(),
        host: Mutex::new(String::new()),
    }))
}

struct Kv {
    id: String,
    key: String,
    value: Option<String>,
    mapped: bool,
    world: crate::worldcell::WorldCell,
    /// This host's name (its key in per-host maps), from `init`.
    host: Mutex<String>,
}

impl Kv {
    fn world(&self) -> Result<Arc<dyn ResourceWorld>, ResError> {
        self.world.get(&self.id)
    }

    async fn current(&self, w: &dyn StrWorld) -> Result<Option<String>, ResError> {
        let err =
            |e: WorldError| ResError::new(format!("{}: reading key {:?}: {e}", self.id, self.key));
        if self.mapped {
            let host = w.strmap_get(&self.key).await.map_err(err)?;
            Ok(host.get(&self.hostname()).cloned())
        } else {
            match w.str_get(&self.key).await {
                Ok(v) => Ok(Some(v)),
                Err(WorldError::NotFound { .. }) => Ok(None),
                Err(e) => Err(err(e)),
            }
        }
    }

    fn hostname(&self) -> String {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Resource for Kv {
    async fn init(&self, ctx: &InitCtx) -> Result<(), ResError> {
        *self.host.lock().unwrap_or_else(|p| p.into_inner()) = ctx.hostname.clone();
        self.world.init(ctx, &self.id, "to write into")?;
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let world = self.world()?;
        let mut changes = if self.mapped {
            world.strmap_watch(&self.key)
        } else {
            world.str_watch(&self.key)
        };
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
        let now = self.current(world.as_ref()).await?;
        if now == self.value {
            return Ok(Checked::InState);
        }
        if ctx.apply {
            let err = |e: WorldError| {
                ResError::new(format!("{}: writing key {:?}: {e}", self.id, self.key))
            };
            match (&self.value, self.mapped) {
                (Some(v), true) => world.strmap_set(&self.key, v).await.map_err(err)?,
                (Some(v), false) => world.str_set(&self.key, v).await.map_err(err)?,
                (None, true) => world.strmap_del(&self.key).await.map_err(err)?,
                (None, false) => world.str_del(&self.key).await.map_err(err)?,
            }
            tracing::info!(resource = %self.id, key = %self.key, value = ?self.value, "set");
        } else {
            tracing::info!(resource = %self.id, key = %self.key, "would set the value: {now:?} -> {:?}", self.value);
        }
        Ok(Checked::Changed)
    }
}
