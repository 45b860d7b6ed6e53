//! `cron`: a systemd timer, as mgmt's `cron`: the resource writes the timer unit
//! `<name>.timer` (in `/etc/systemd/system`, or `~/.config/systemd/user` with `session`) from
//! its fields (`trigger` = `time`, `accuracysec`, `randomizeddelaysec`, `unit`, `persistent`,
//! `wakesystem`, `remainafterelapse`) and keeps the timer enabled and started (`state:
//! exists`), or stopped, disabled and its file gone (`absent`). The service the timer starts
//! (`unit`, default `<name>.service`) is not written: as in mgmt it is managed on its own
//! (a `file` and a `svc`, or a package's).
//!
//! systemd is reached through the `svc` kind's D-Bus code ([`crate::svc::systemd`]): the
//! same shared connection, the same coalesced `daemon-reload`s (one after the file changed),
//! jobs waited for on their `JobRemoved` signal. A timer whose file changed while it was
//! running is restarted, so the new schedule takes effect.
//!
//! The watch is the unit file (the inotify hub) and the timer's signals from systemd
//! (`PropertiesChanged`, the end of a `daemon-reload`, `UnitFilesChanged`): a timer stopped
//! or disabled behind tend's back is repaired within milliseconds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};
use crate::svc::systemd::{self, Bus, Systemd, UnitInfo};

/// The triggers a timer can have (`man systemd.timer`).
const TRIGGERS: &[&str] = &[
    "OnCalendar",
    "OnActiveSec",
    "OnBootSec",
    "OnStartupSec",
    "OnUnitActiveSec",
    "OnUnitInactiveSec",
];

/// The system unit directory set by [`set_unit_dir`], which wins over `/etc/systemd/system`.
static UNIT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes every system (not `session`) `cron` of this process write its timer in `dir` (the
/// first call wins). For tests, which talk to a systemd in a container.
pub(crate) fn set_unit_dir(dir: PathBuf) {
    let _ = UNIT_DIR.set(dir);
}

fn system_unit_dir() -> &'static Path {
    UNIT_DIR
        .get()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new("/etc/systemd/system"))
}

/// The `cron` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut triggers: Vec<&str> = TRIGGERS.to_vec();
        triggers.push("");
        KindSchema::new("cron")
            .field(
                Field::new(
                    "unit",
                    Type::Str,
                    "the unit the timer starts (default: <name>.service)",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "state",
                    Type::Str,
                    "\"exists\" (written, enabled, started) or \"absent\"",
                )
                .default_value("exists")
                .allowed(&["exists", "absent"]),
            )
            .field(
                Field::new(
                    "session",
                    Type::Bool,
                    "a user timer of this user's session bus (~/.config/systemd/user) instead of a system one",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "trigger",
                    Type::Str,
                    "OnCalendar, OnActiveSec, OnBootSec, OnStartupSec, OnUnitActiveSec or OnUnitInactiveSec",
                )
                .default_value("")
                .allowed(&triggers),
            )
            .field(
                Field::new(
                    "time",
                    Type::Str,
                    "the trigger's value: a calendar event for OnCalendar, else a time span (man systemd.time)",
                )
                .default_value(""),
            )
            .field(
                Field::new("accuracysec", Type::Str, "AccuracySec= (systemd: 1min)")
                    .default_value(""),
            )
            .field(
                Field::new(
                    "randomizeddelaysec",
                    Type::Str,
                    "RandomizedDelaySec=: a random delay up to this span",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "persistent",
                    Type::Bool,
                    "Persistent=: catch up on a run missed while the timer was inactive",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "wakesystem",
                    Type::Bool,
                    "WakeSystem=: resume the system from suspend to run",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "remainafterelapse",
                    Type::Bool,
                    "RemainAfterElapse=: an elapsed timer stays loaded",
                )
                .default_value(true),
            )
    })
}

/// A value that goes on one line of a unit file.
fn one_line(field: &str, v: &str) -> Result<(), ResError> {
    if v.chars().any(char::is_control) {
        return Err(field_err(
            field,
            format!("{v:?} has a control character (a newline, ...)"),
        ));
    }
    if v.trim() != v {
        return Err(field_err(
            field,
            format!("{v:?} has leading or trailing whitespace"),
        ));
    }
    Ok(())
}

/// The timer's unit file (mgmt's layout: `[Unit]`, `[Timer]` with the options that differ
/// from systemd's defaults, `[Install]` for `timers.target`).
fn timer_unit(p: &Params) -> Result<String, ResError> {
    let mut s = String::from("[Unit]\nDescription=timer generated by tend\n\n[Timer]\n");
    s.push_str(&format!("{}={}\n", p.str("trigger")?, p.str("time")?));
    for (field, key) in [
        ("accuracysec", "AccuracySec"),
        ("randomizeddelaysec", "RandomizedDelaySec"),
    ] {
        let v = p.str(field)?;
        if !v.is_empty() {
            s.push_str(&format!("{key}={v}\n"));
        }
    }
    let unit = p.str("unit")?;
    if !unit.is_empty() {
        // systemd wants the unit's full name (`backup.service`).
        let unit = crate::svc::unit_name(&unit).map_err(|e| field_err("unit", e))?;
        s.push_str(&format!("Unit={unit}\n"));
    }
    if p.bool("persistent")? {
        s.push_str("Persistent=true\n");
    }
    if p.bool("wakesystem")? {
        s.push_str("WakeSystem=true\n");
    }
    if !p.bool("remainafterelapse")? {
        s.push_str("RemainAfterElapse=false\n");
    }
    s.push_str("\n[Install]\nWantedBy=timers.target\n");
    Ok(s)
}

/// Builds a `cron`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let name = spec.name.as_str();
    if name.ends_with(".timer") {
        // The graph check puts the resource (`cron[...]`) in front of a constructor's error.
        return Err(ResError::new(format!(
            "the name is the timer without its suffix (\"{}\"): .timer is appended",
            name.trim_end_matches(".timer")
        )));
    }
    let timer = crate::svc::unit_name(&format!("{name}.timer")).map_err(ResError::new)?;
    let present = p.str("state")? != "absent";
    let trigger = p.str("trigger")?;
    let time = p.str("time")?;
    if present && (trigger.is_empty() || time.is_empty()) {
        return Err(field_err(
            if trigger.is_empty() {
                "trigger"
            } else {
                "time"
            },
            "is required: `trigger` and `time` are set together (e.g. OnCalendar and \"daily\")",
        ));
    }
    for f in ["time", "accuracysec", "randomizeddelaysec"] {
        one_line(f, &p.str(f)?)?;
    }
    let unit = p.str("unit")?;
    let session = p.bool("session")?;
    let dir = if session {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                field_err(
                    "session",
                    "is true, but HOME is not set: no user unit directory",
                )
            })?;
        PathBuf::from(home).join(".config/systemd/user")
    } else {
        system_unit_dir().to_path_buf()
    };
    let content = if present { Some(timer_unit(&p)?) } else { None };
    let service = if unit.is_empty() {
        format!("{name}.service")
    } else {
        crate::svc::unit_name(&unit).map_err(|e| field_err("unit", e))?
    };
    Ok(Box::new(Cron {
        id: format!("cron[{name}]"),
        service,
        path: Arc::from(dir.join(&timer).as_path()),
        timer,
        bus: if session { Bus::Session } else { Bus::System },
        content,
    }))
}

/// After the `file` of the unit directory, and the `svc` of the unit it starts (mgmt's svc ->
/// cron edge).
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let session = spec
        .params
        .get("session")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if !session {
        out.requires(&format!("file:{}/", system_unit_dir().display()));
    }
    let unit = match spec.params.get("unit").and_then(|v| v.as_str()) {
        Some(u) if !u.is_empty() => crate::svc::unit_name(u).ok(),
        _ => Some(format!("{}.service", spec.name)),
    };
    if let Some(u) = unit {
        out.requires(&if session {
            format!("svc:session:{u}")
        } else {
            format!("svc:{u}")
        });
    }
}

struct Cron {
    id: String,
    /// `<name>.timer`.
    timer: String,
    /// The unit the timer starts (`unit`, else `<name>.service`).
    service: String,
    /// The timer's unit file.
    path: Arc<Path>,
    bus: Bus,
    /// The unit file's content; `None` for `absent`.
    content: Option<String>,
}

impl Cron {
    fn err(&self, msg: impl std::fmt::Display) -> ResError {
        ResError::new(format!("{}: {msg}", self.id))
    }

    async fn connect(&self, file_done: &str) -> Result<Arc<Systemd>, ResError> {
        systemd::connect(self.bus).await.map_err(|e| {
            self.err(format!(
                "{e}; the timer's unit file {} {file_done}, but enabling, starting or stopping the timer needs systemd",
                self.path.display()
            ))
        })
    }

    async fn unit(&self, sd: &Systemd) -> Result<UnitInfo, ResError> {
        self.unit_of(sd, &self.timer).await
    }

    async fn unit_of(&self, sd: &Systemd, unit: &str) -> Result<UnitInfo, ResError> {
        sd.unit(unit).await.map_err(|e| self.err(e))
    }

    async fn job(&self, sd: &Systemd, method: &str, verb: &str) -> Result<(), ResError> {
        let result = sd.job(method, &self.timer).await.map_err(|e| self.err(e))?;
        if result != "done" {
            let now = sd
                .unit(&self.timer)
                .await
                .map(|i| format!("; it is {}", i.state()))
                .unwrap_or_default();
            return Err(self.err(format!(
                "{verb} {} failed: systemd's job result is {result:?}{now} (see `journalctl -u {}`; \
                 a timer started more than 5 times in 10 s hits systemd's start limit)",
                self.timer, self.timer
            )));
        }
        Ok(())
    }

    fn read_file(&self) -> Result<Option<String>, ResError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(ResError::io("reading", &self.path, e))),
        }
    }

    async fn exists(&self, want: &str, apply: bool) -> Result<bool, ResError> {
        let file_out = self.read_file()?.as_deref() != Some(want);
        let verb = if apply { "" } else { "would " };
        if file_out {
            if apply {
                // A user's unit directory may not exist yet.
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| self.err(ResError::io("creating", dir, e)))?;
                }
                crate::file::write_atomic(&self.path, want.as_bytes(), 0o644, (None, None))
                    .map_err(|e| self.err(e))?;
            }
            tracing::info!(resource = %self.id, "{verb}write {}", self.path.display());
        }
        let sd = self
            .connect(match (file_out, apply) {
                (true, true) => "was written",
                (true, false) => "would be written",
                _ => "is in state",
            })
            .await?;
        let mut info = self.unit(&sd).await?;
        if !apply {
            if file_out || info.need_daemon_reload {
                tracing::info!(resource = %self.id, "would reload systemd and (re)start {}", self.timer);
                return Ok(true);
            }
            let mut out = false;
            if info.unit_file_state != "enabled" {
                tracing::info!(resource = %self.id, "would enable {} (unit file state {:?})", self.timer, info.unit_file_state);
                out = true;
            }
            if info.active_state != "active" {
                tracing::info!(resource = %self.id, "would start {} (it is {})", self.timer, info.state());
                out = true;
            }
            return Ok(file_out || out);
        }
        if file_out {
            tracing::info!(resource = %self.id, "reload systemd (daemon-reload): {} changed", self.timer);
            sd.daemon_reload().await.map_err(|e| self.err(e))?;
            info = self.unit(&sd).await?;
        } else if info.need_daemon_reload {
            sd.daemon_reload_for(&self.timer)
                .await
                .map_err(|e| self.err(e))?;
            info = self.unit(&sd).await?;
        }
        if info.load_state != "loaded" {
            return Err(self.err(format!(
                "systemd did not load {} ({}): {}",
                self.timer,
                info.load_state,
                if info.load_error.is_empty() {
                    format!("is {} readable by systemd?", self.path.display())
                } else {
                    info.load_error.clone()
                }
            )));
        }
        let mut out = file_out;
        if info.unit_file_state != "enabled" {
            tracing::info!(resource = %self.id, "enable {} (unit file state {:?})", self.timer, info.unit_file_state);
            sd.set_enabled(&self.timer, true)
                .await
                .map_err(|e| self.err(e))?;
            out = true;
        }
        if info.active_state != "active" {
            let service = self.unit_of(&sd, &self.service).await?;
            if service.load_state == "not-found" {
                return Err(self.err(format!(
                    "{} starts {}, which systemd does not find: write its unit first (a `file` and a `svc`), or set `unit`",
                    self.timer, self.service
                )));
            }
            tracing::info!(resource = %self.id, "start {} (it is {})", self.timer, info.state());
            self.job(&sd, "StartUnit", "starting").await?;
            out = true;
        } else if file_out {
            // A running timer keeps its old schedule until it is started again.
            tracing::info!(resource = %self.id, "restart {}: its unit file changed", self.timer);
            self.job(&sd, "RestartUnit", "restarting").await?;
        }
        let now = self.unit(&sd).await?;
        if now.active_state != "active" || now.unit_file_state != "enabled" {
            return Err(self.err(format!(
                "{} was enabled and started, but it is {}, unit file state {:?}",
                self.timer,
                now.state(),
                now.unit_file_state
            )));
        }
        Ok(out)
    }

    async fn absent(&self, apply: bool) -> Result<bool, ResError> {
        let file = self.read_file()?;
        let sd = self
            .connect(if file.is_some() {
                "is still there"
            } else {
                "is gone"
            })
            .await?;
        let info = self.unit(&sd).await?;
        let active = !matches!(info.active_state.as_str(), "inactive" | "failed");
        let enabled = matches!(info.unit_file_state.as_str(), "enabled" | "enabled-runtime");
        if !active && !enabled && file.is_none() {
            return Ok(false);
        }
        if !apply {
            tracing::info!(resource = %self.id, "would stop and disable {} (it is {}, unit file state {:?}) and remove {}", self.timer, info.state(), info.unit_file_state, self.path.display());
            return Ok(true);
        }
        if active {
            tracing::info!(resource = %self.id, "stop {} (it is {})", self.timer, info.state());
            self.job(&sd, "StopUnit", "stopping").await?;
        }
        if enabled {
            tracing::info!(resource = %self.id, "disable {}", self.timer);
            sd.set_enabled(&self.timer, false)
                .await
                .map_err(|e| self.err(e))?;
        }
        if file.is_some() {
            std::fs::remove_file(&self.path)
                .map_err(|e| self.err(ResError::io("removing", &self.path, e)))?;
            tracing::info!(resource = %self.id, "removed {}", self.path.display());
            sd.daemon_reload().await.map_err(|e| self.err(e))?;
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Resource for Cron {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_beside(&self.path);
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let path = self.path.clone();
        let w2 = w.clone();
        let mut sub = tokio::task::spawn_blocking(move || fswatch::subscribe(&path, w2))
            .await
            .map_err(|e| self.err(format!("watching: {e}")))??;
        let sd = systemd::connect(self.bus)
            .await
            .map_err(|e| self.err(format!("watching {}: {e}", self.timer)))?;
        let mut events = Box::pin(sd.watch(&self.timer).await.map_err(|e| self.err(e))?);
        w.running();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(())) => w.event(),
                    Some(Err(e)) => return Err(self.err(e)),
                    None => return Err(self.err("the watch on systemd ended")),
                },
                e = sub.failed() => return Err(self.err(e)),
            }
        }
    }

    /// Its watch holds an inotify subscription and match rules on the shared connection
    /// (in-process state); a job it started goes on in systemd.
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let out = match &self.content {
            Some(want) => self.exists(want, ctx.apply).await?,
            None => self.absent(ctx.apply).await?,
        };
        Ok(if out {
            Checked::Changed
        } else {
            Checked::InState
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_of(spec: &ResSpec) -> String {
        timer_unit(&Params::new(spec, schema()).unwrap()).unwrap()
    }

    #[test]
    fn comes_after_the_svc_of_its_unit() {
        let a = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("cron", "backup"));
        assert_eq!(
            a.requires,
            ["file:/etc/systemd/system/", "svc:backup.service"]
        );
        let spec = ResSpec::new("cron", "b")
            .param("unit", "other")
            .param("session", true);
        let a = tend_engine::AutoEdges::of(autoedges, &spec);
        assert_eq!(a.requires, ["svc:session:other.service"]);
    }

    #[test]
    fn the_timer_unit_has_the_fields_that_differ_from_the_defaults() {
        let spec = ResSpec::new("cron", "backup")
            .param("trigger", "OnCalendar")
            .param("time", "*-*-* 03:00:00");
        assert_eq!(
            unit_of(&spec),
            "[Unit]\nDescription=timer generated by tend\n\n[Timer]\nOnCalendar=*-*-* 03:00:00\n\n[Install]\nWantedBy=timers.target\n"
        );
        let spec = spec
            .param("accuracysec", "1s")
            .param("randomizeddelaysec", "5m")
            .param("unit", "other")
            .param("persistent", true)
            .param("wakesystem", true)
            .param("remainafterelapse", false);
        assert_eq!(
            unit_of(&spec),
            "[Unit]\nDescription=timer generated by tend\n\n[Timer]\nOnCalendar=*-*-* 03:00:00\n\
             AccuracySec=1s\nRandomizedDelaySec=5m\nUnit=other.service\nPersistent=true\n\
             WakeSystem=true\nRemainAfterElapse=false\n\n[Install]\nWantedBy=timers.target\n"
        );
    }
}
