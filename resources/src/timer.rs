//! `timer`: its watch fires an event every `interval` seconds; a refresh restarts the count.
//! When it fires, its check reports a change, so notify edges out of it refresh their targets
//! periodically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::{field_err, Params};

/// The `timer` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("timer").field(
            Field::new("interval", Type::Int, "seconds between two events (>= 1)")
                .range(0, u32::MAX as i128),
        );
        s.refreshable = true;
        s
    })
}

/// Builds a `timer`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let interval = match p.opt_int("interval")? {
        None => {
            return Err(field_err(
                "interval",
                "is required (seconds between events)",
            ))
        }
        Some(i) if i < 1 => return Err(field_err("interval", format!("{i} is not >= 1"))),
        Some(i) => i as u64,
    };
    Ok(Box::new(Timer {
        interval: Duration::from_secs(interval),
        fired: AtomicBool::new(false),
        reset: Notify::new(),
    }))
}

struct Timer {
    interval: Duration,
    /// The interval elapsed since the last check.
    fired: AtomicBool,
    /// Restarts the count (a refresh arrived).
    reset: Notify,
}

#[async_trait::async_trait]
impl Resource for Timer {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        w.running();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {
                    self.fired.store(true, Ordering::SeqCst);
                    w.event();
                }
                _ = self.reset.notified() => {}
            }
        }
    }

    /// Its watch holds only a timer.
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        if ctx.refresh && ctx.apply {
            self.reset.notify_one();
        }
        let fired = if ctx.apply {
            self.fired.swap(false, Ordering::SeqCst)
        } else {
            self.fired.load(Ordering::SeqCst)
        };
        Ok(if fired {
            Checked::Changed
        } else {
            Checked::InState
        })
    }
}
