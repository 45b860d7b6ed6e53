//! `print`: prints `msg` (to stdout and the log) when the message changes or on a refresh.

use std::sync::{Mutex, OnceLock};

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::Params;

/// The `print` schema (spec/mcl.md §8.2).
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("print")
            .field(Field::new("msg", Type::Str, "the message to print").default_value(""))
            .field(
                Field::new(
                    "refresh_only",
                    Type::Bool,
                    "print only when refreshed through a notify edge",
                )
                .default_value(false),
            );
        s.refreshable = true;
        s
    })
}

/// Builds a `print`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    Ok(Box::new(Print {
        name: spec.name.clone(),
        msg: p.str("msg")?,
        refresh_only: p.bool("refresh_only")?,
        printed: Mutex::new(None),
    }))
}

struct Print {
    name: String,
    msg: String,
    refresh_only: bool,
    /// The message last printed by this instance.
    printed: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Resource for Print {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        w.running();
        std::future::pending::<()>().await;
        Ok(())
    }

    /// Its watch holds nothing outside the process.
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let mut printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        let due = if self.refresh_only {
            ctx.refresh
        } else {
            ctx.refresh || printed.as_deref() != Some(self.msg.as_str())
        };
        if !due {
            return Ok(Checked::InState);
        }
        if ctx.apply {
            let msg = tend_model::secrets::redact(&self.msg);
            println!("print[{}]: {msg}", self.name);
            tracing::info!(resource = %format!("print[{}]", self.name), msg = %msg, "print");
            *printed = Some(self.msg.clone());
        }
        Ok(Checked::Changed)
    }
}
