//! `value`: holds a value (`any`, of any type) on this host, for mcl's `value.get*` to read
//! (mgmt's `value` resource and its local value API).
//!
//! Applying puts `any` into the host's table ([`tend_model::values`]) or removes the key when
//! `any` is not set; the check compares with the table. Each value is also kept under the
//! state directory (`kinds/value/<key, hex>.json`, lossless JSON, written atomically), and
//! [`warm`] loads those back when `tend run` starts, so functions, which run before the
//! resources, see the last value at once instead of `ready: false` until the first apply.
//! It sends `any` (send/recv), as mgmt's, and can receive it like any field.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tend_engine::{CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type, Value};

use crate::params::Params;

/// The `value` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("value")
            .field(
                Field::new(
                    "any",
                    Type::Any,
                    "the value to hold, of any type (unset: the key is removed)",
                )
                .optional(),
            )
            .sends("any", Type::Any, "the value it holds (nothing while unset)")
    })
}

/// Builds a `value`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    if spec.name.is_empty() {
        return Err(ResError::new("value: the name (the key) is empty"));
    }
    Ok(Box::new(ValueRes {
        key: spec.name.clone(),
        any: p.get("any").cloned(),
        dir: Mutex::new(None),
    }))
}

struct ValueRes {
    key: String,
    any: Option<Value>,
    /// `<state>/kinds/value`, from `init`.
    dir: Mutex<Option<PathBuf>>,
}

fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("kinds").join("value")
}

/// A key as a file name: hex of its bytes (keys may hold `/` or anything else).
fn file_name(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

fn key_of(file: &str) -> Option<String> {
    let hex = file.strip_suffix(".json")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Loads the values kept under `state_dir` into the host's table (at `tend run`'s start);
/// returns how many. A file that does not decode is skipped with a warning.
pub fn warm(state_dir: &Path) -> usize {
    let dir = cache_dir(state_dir);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = key_of(&name) else {
            continue;
        };
        let decoded = std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .and_then(|j| tend_model::json::from_lossless(&j));
        match decoded {
            Ok(v) => {
                tend_model::values::set(&key, Some(v));
                n += 1;
            }
            Err(err) => tracing::warn!(
                path = %e.path().display(),
                "value[{key}]: the kept value does not decode ({err}); ignored"
            ),
        }
    }
    n
}

impl ValueRes {
    fn id(&self) -> String {
        format!("value[{}]", self.key)
    }

    fn keep(&self) -> Result<(), ResError> {
        let Some(dir) = self.dir.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let path = dir.join(file_name(&self.key));
        match &self.any {
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ResError::io("removing", &path, e))
                }
                _ => Ok(()),
            },
            Some(v) => {
                std::fs::create_dir_all(&dir).map_err(|e| ResError::io("creating", &dir, e))?;
                let tmp = dir.join(format!(".{}.tmp", file_name(&self.key)));
                let text = tend_model::json::to_lossless(v).to_string();
                std::fs::write(&tmp, text).map_err(|e| ResError::io("writing", &tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| ResError::io("renaming to", &path, e))
            }
        }
    }
}

#[async_trait::async_trait]
impl Resource for ValueRes {
    async fn init(&self, ctx: &InitCtx) -> Result<(), ResError> {
        if !ctx.state_dir.as_os_str().is_empty() {
            *self.dir.lock().unwrap_or_else(|e| e.into_inner()) = Some(cache_dir(&ctx.state_dir));
        }
        Ok(())
    }

    /// Nothing outside the process changes the table.
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        w.running();
        std::future::pending::<()>().await;
        Ok(())
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    fn sent(&self) -> Vec<(String, Value)> {
        self.any
            .iter()
            .map(|v| ("any".to_string(), v.clone()))
            .collect()
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        if tend_model::values::get(&self.key) == self.any {
            return Ok(Checked::InState);
        }
        if !ctx.apply {
            tracing::info!(resource = %self.id(), "would set the value");
            return Ok(Checked::Changed);
        }
        self.keep()?;
        tend_model::values::set(&self.key, self.any.clone());
        tracing::info!(resource = %self.id(), "value set");
        Ok(Checked::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_file_names() {
        for k in ["a", "web/port", "ünï", ""] {
            assert_eq!(key_of(&file_name(k)).as_deref(), Some(k));
        }
        assert_eq!(key_of("zz.json"), None);
        assert_eq!(key_of("abc.json"), None);
    }
}
