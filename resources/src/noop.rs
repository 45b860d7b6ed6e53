//! `noop`: does nothing; a refresh is logged. Useful as a join point in a graph.

use std::sync::OnceLock;

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::Params;

/// The `noop` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("noop")
            .field(Field::new("comment", Type::Str, "free text for humans").default_value(""));
        s.refreshable = true;
        s
    })
}

/// Builds a `noop`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    Ok(Box::new(Noop {
        name: spec.name.clone(),
        comment: p.str("comment")?,
    }))
}

struct Noop {
    name: String,
    comment: String,
}

#[async_trait::async_trait]
impl Resource for Noop {
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
        if ctx.refresh {
            tracing::info!(resource = %format!("noop[{}]", self.name), comment = %self.comment, "refreshed");
        }
        Ok(Checked::InState)
    }
}
