//! [`WorldCell`]: the World a kind reaches (`kv`, `schedule`, `json:edit`'s `etcd:///`
//! store), taken from `InitCtx` in `init`.

use std::sync::{Arc, Mutex};

use tend_engine::{InitCtx, ResError};
use tend_model::world::ResourceWorld;

/// The World of one resource, once `init` found one.
#[derive(Default)]
pub(crate) struct WorldCell(Mutex<Option<Arc<dyn ResourceWorld>>>);

impl WorldCell {
    /// Takes the daemon's World; without one, an error naming the resource and `what` it
    /// needed it for.
    pub(crate) fn init(&self, ctx: &InitCtx, id: &str, what: &str) -> Result<(), ResError> {
        let w = ctx
            .world
            .get()
            .ok_or_else(|| ResError::new(format!("{id}: this daemon has no World {what}")))?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        Ok(())
    }

    /// The World (an error naming the resource before `init` took one).
    pub(crate) fn get(&self, id: &str) -> Result<Arc<dyn ResourceWorld>, ResError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| ResError::new(format!("{id}: this daemon has no World")))
    }
}
