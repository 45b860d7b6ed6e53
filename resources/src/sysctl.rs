//! `sysctl`: a kernel parameter, as mgmt's: the name is the dotted key (`net.ipv4.ip_forward`),
//! `value` the value; `runtime` (default true) sets it in `/proc/sys/<key with / for .>` now,
//! `persist` (default true) writes `<key> = <value>` to `path` (default
//! `/etc/sysctl.d/99-<key>.conf`) for the next boot.
//!
//! Values are compared with their whitespace normalised (the kernel prints `kernel.printk` as
//! `4\t4\t1\t7`; `"4 4 1 7"` is the same value), so a value written as people write it does
//! not flap. The persisted file is written atomically (the `file` kind's write) and watched
//! with the inotify hub; `/proc/sys` sends no inotify events, so the runtime value is read
//! again every second and a change behind tend's back is repaired within about a second.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};

/// How often the watch reads the runtime value.
const POLL: Duration = Duration::from_secs(1);

/// The `sysctl` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("sysctl")
            .field(Field::new(
                "value",
                Type::Str,
                "the value, as the kernel reads it back",
            ))
            .field(
                Field::new("runtime", Type::Bool, "set the value in the running kernel")
                    .default_value(true),
            )
            .field(
                Field::new("persist", Type::Bool, "write the value for the next boot")
                    .default_value(true),
            )
            .field(
                Field::new(
                    "path",
                    Type::Str,
                    "the persisted file (default /etc/sysctl.d/99-<name>.conf)",
                )
                .default_value(""),
            )
    })
}

/// Builds a `sysctl`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let key = spec.name.as_str();
    let bad = |why: &str| ResError::new(format!("the name {why}"));
    if key.contains('/') {
        return Err(bad(
            "contains slashes: use the dotted form (net.ipv4.ip_forward)",
        ));
    }
    if key.contains('=') {
        return Err(bad("contains `=`"));
    }
    if key.is_empty() || key.starts_with('.') || key.ends_with('.') || key.contains("..") {
        return Err(bad("must be dotted words (net.ipv4.ip_forward)"));
    }
    if key.trim() != key || key.contains(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    let value = p
        .opt_str("value")?
        .ok_or_else(|| field_err("value", "is required"))?;
    if value.is_empty() {
        return Err(field_err("value", "is empty"));
    }
    if value.trim() != value {
        return Err(field_err("value", "has leading or trailing whitespace"));
    }
    let (runtime, persist) = (p.bool("runtime")?, p.bool("persist")?);
    if !runtime && !persist {
        return Err(field_err(
            "persist",
            "and `runtime` are both false: there is nothing to do",
        ));
    }
    let path = match p.str("path")? {
        s if s.is_empty() => PathBuf::from(format!("/etc/sysctl.d/99-{key}.conf")),
        s => PathBuf::from(s),
    };
    if persist && !path.is_absolute() {
        return Err(field_err(
            "path",
            format!("must be absolute: {}", path.display()),
        ));
    }
    if persist && path.extension().and_then(|e| e.to_str()) != Some("conf") {
        return Err(field_err(
            "path",
            format!("must end with .conf: {}", path.display()),
        ));
    }
    Ok(Box::new(Sysctl {
        id: format!("sysctl[{key}]"),
        key: key.to_string(),
        proc: PathBuf::from("/proc/sys").join(key.replace('.', "/")),
        value,
        runtime,
        persist,
        path: Arc::from(path.as_path()),
        seen: std::sync::Mutex::new(None),
    }))
}

/// After the `file` of its directory, and any `file` managing its persisted file.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let path = match spec.params.get("path").and_then(|v| v.as_str()) {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => format!("/etc/sysctl.d/99-{}.conf", spec.name),
    };
    out.requires(&format!("file:{path}"));
    if let Some(dir) = Path::new(&path).parent() {
        out.requires(&format!("file:{}/", dir.display()));
    }
}

struct Sysctl {
    id: String,
    key: String,
    proc: PathBuf,
    value: String,
    runtime: bool,
    persist: bool,
    path: Arc<Path>,
    /// The runtime value as last seen, by the watch's poll or by a check (which may set it
    /// between two polls: a change back to the old value before the next poll is then not
    /// missed).
    seen: std::sync::Mutex<Option<String>>,
}

impl Sysctl {
    /// Records the runtime value seen; whether it differs from the one seen before.
    fn see(&self, now: Option<String>) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }
}

/// A value with its whitespace normalised.
fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Sysctl {
    fn read_runtime(&self) -> Result<String, ResError> {
        std::fs::read_to_string(&self.proc).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ResError::new(format!(
                    "{}: no such kernel parameter ({} does not exist)",
                    self.id,
                    self.proc.display()
                ))
            } else {
                ResError::io("reading", &self.proc, e)
            }
        })
    }

    fn persisted(&self) -> String {
        format!("{} = {}\n", self.key, self.value)
    }
}

#[async_trait::async_trait]
impl Resource for Sysctl {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let mut sub = if self.persist {
            let (path, w2) = (self.path.clone(), w.clone());
            Some(
                tokio::task::spawn_blocking(move || fswatch::subscribe(&path, w2))
                    .await
                    .map_err(|e| ResError::new(format!("{}: watching: {e}", self.id)))??,
            )
        } else {
            None
        };
        // Read before saying the watch runs: a change made between the two (the first apply
        // runs once the watch runs) must differ from what the watch saw first.
        if self.runtime {
            self.see(self.read_runtime().ok());
        }
        w.running();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick(), if self.runtime => {
                    let now = self.read_runtime().ok();
                    if self.see(now) {
                        w.event();
                    }
                }
                e = async { sub.as_mut().expect("persist").failed().await }, if sub.is_some() => {
                    return Err(ResError::new(format!("{}: {e}", self.id)));
                }
            }
        }
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let mut changed = false;
        if self.runtime {
            let now = self.read_runtime()?;
            self.see(Some(now.clone()));
            if norm(&now) != norm(&self.value) {
                changed = true;
                if ctx.apply {
                    std::fs::write(&self.proc, format!("{}\n", self.value)).map_err(|e| {
                        ResError::new(format!(
                            "{}: setting {} to {:?}: {e}",
                            self.id,
                            self.proc.display(),
                            self.value
                        ))
                    })?;
                    let back = self.read_runtime()?;
                    self.see(Some(back.clone()));
                    if norm(&back) != norm(&self.value) {
                        return Err(ResError::new(format!(
                            "{}: the kernel took {:?} as {:?}: write the value as it reads back",
                            self.id,
                            self.value,
                            back.trim_end()
                        )));
                    }
                    tracing::info!(resource = %self.id, "set {} = {} (was {})", self.key, self.value, now.trim_end());
                } else {
                    tracing::info!(resource = %self.id, "would set {} = {} (is {})", self.key, self.value, now.trim_end());
                }
            }
        }
        if self.persist {
            let want = self.persisted();
            let have = match std::fs::read_to_string(&self.path) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(ResError::io("reading", &self.path, e)),
            };
            if have.as_deref() != Some(want.as_str()) {
                changed = true;
                if ctx.apply {
                    crate::file::write_atomic(&self.path, want.as_bytes(), 0o644, (None, None))?;
                    tracing::info!(resource = %self.id, "wrote {}", self.path.display());
                } else {
                    tracing::info!(resource = %self.id, "would write {}", self.path.display());
                }
            }
        }
        Ok(if changed {
            Checked::Changed
        } else {
            Checked::InState
        })
    }
}
