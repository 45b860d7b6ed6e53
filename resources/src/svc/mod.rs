//! `svc`: a systemd unit, running or stopped, enabled at boot or not, through systemd's own
//! D-Bus API ([`systemd`]; no `systemctl` output is parsed).
//!
//! The name is the unit; without a unit-type suffix (`.service`, `.socket`, `.timer`, ...)
//! `.service` is appended, as mgmt does. A check loads the unit (`LoadUnit`) and reads its
//! `LoadState`, `ActiveState`, `SubState`, `UnitFileState`, `NeedDaemonReload` and
//! `CanReload`; a unit systemd does not find fails the resource, naming it. When its unit file
//! changed on disk since systemd read it (a `file` resource earlier in the graph wrote it), one
//! `daemon-reload` comes first, shared by every `svc` resource that asks at about the same
//! time. Then, in this order: enable or disable (`EnableUnitFiles`/`DisableUnitFiles`, then a
//! `daemon-reload`), start or stop, and, for a refresh that arrived on a notify edge, what
//! `refresh_action` says (restart, reload, reload-or-restart or nothing) when the unit is
//! running and was not just started. Every job runs in mode `replace` and is waited for (its
//! `JobRemoved` signal), so a check returns when the unit really is active or inactive; a job
//! whose result is not `done` fails the resource with systemd's result.
//!
//! The watch subscribes to the unit's `PropertiesChanged` signals (on its object path, which
//! is known before the unit is loaded), and to the end
//! of every `daemon-reload` and `UnitFilesChanged` (enabling and disabling): a
//! `systemctl stop` behind tend's back is an event within milliseconds.

pub(crate) mod systemd;

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tend_engine::{AutoEdgeSink, CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::params::{field_err, Params};

pub(crate) use systemd::{reloads, set_system_address};

use systemd::{Bus, Systemd, UnitInfo};

/// The unit types systemd knows, as name suffixes.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "device",
    "slice",
    "scope",
];

/// The values of `refresh_action`: ours, then mgmt's two names for the same actions.
const REFRESH_ACTIONS: &[&str] = &[
    "restart",
    "reload",
    "reload-or-restart",
    "none",
    "try-restart",
    "reload-or-try-restart",
];

/// The `svc` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("svc")
            .field(
                Field::new(
                    "state",
                    Type::Str,
                    "\"running\", \"stopped\", or \"\" to leave it as it is",
                )
                .default_value("")
                .allowed(&["running", "stopped", ""]),
            )
            .field(
                Field::new(
                    "startup",
                    Type::Str,
                    "\"enabled\" (started at boot), \"disabled\", or \"\" to leave it as it is",
                )
                .default_value("")
                .allowed(&["enabled", "disabled", ""]),
            )
            .field(
                Field::new(
                    "session",
                    Type::Bool,
                    "a user unit of this user's session bus (systemctl --user) instead of a system unit",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "refresh_action",
                    Type::Str,
                    "what a refresh from a notify edge does to the running unit: \"restart\", \
                     \"reload\" (needs ExecReload=), \"reload-or-restart\" or \"none\" \
                     (mgmt's \"try-restart\" and \"reload-or-try-restart\" are synonyms); \
                     a stopped unit, or one just started, is left alone",
                )
                .default_value("restart")
                .allowed(REFRESH_ACTIONS),
            )
    })
}

/// The unit a resource name means: the name itself when it ends in a unit type, else the
/// name with `.service`.
pub(crate) fn unit_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the unit name is empty".into());
    }
    if name.contains('/') {
        return Err(format!(
            "{name:?} is not a unit name: name the unit (\"nginx\" or \"nginx.service\"), not its file"
        ));
    }
    let typed = name
        .rsplit_once('.')
        .is_some_and(|(stem, ty)| !stem.is_empty() && UNIT_TYPES.contains(&ty));
    let unit = if typed {
        name.to_string()
    } else {
        format!("{name}.service")
    };
    let (stem, _) = unit.rsplit_once('.').unwrap_or((&unit, ""));
    if unit.len() > 255 {
        return Err(format!("{name:?} is too long for a unit name (255 bytes)"));
    }
    if let Some(bad) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(format!(
            "{name:?} is not a unit name: {bad:?} is not allowed (letters, digits, `:-_.\\@`)"
        ));
    }
    match stem.split_once('@') {
        Some(("", _)) => Err(format!("{name:?} is not a unit name: nothing before `@`")),
        Some((prefix, "")) => Err(format!(
            "{name:?} is a template; name an instance of it (\"{prefix}@instance\")"
        )),
        Some((_, instance)) if instance.contains('@') => {
            Err(format!("{name:?} is not a unit name: more than one `@`"))
        }
        _ => Ok(unit),
    }
}

/// What a refresh does to a running unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    Restart,
    Reload,
    ReloadOrRestart,
    Nothing,
}

fn parse_refresh(s: &str) -> Result<Refresh, ResError> {
    Ok(match s {
        "restart" | "try-restart" => Refresh::Restart,
        "reload" => Refresh::Reload,
        "reload-or-restart" | "reload-or-try-restart" => Refresh::ReloadOrRestart,
        "none" => Refresh::Nothing,
        other => {
            return Err(field_err(
                "refresh_action",
                format!("{other:?} is not one of {REFRESH_ACTIONS:?}"),
            ))
        }
    })
}

struct Svc {
    /// `svc[name]`, for messages.
    id: String,
    /// The unit (`nginx.service`).
    unit: String,
    bus: Bus,
    /// `Some(true)`: running; `Some(false)`: stopped; `None`: unmanaged.
    running: Option<bool>,
    /// `Some(true)`: enabled; `Some(false)`: disabled; `None`: unmanaged.
    enabled: Option<bool>,
    refresh: Refresh,
}

/// Builds a `svc` (validates only; systemd is not asked).
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    // The graph check puts the resource (`svc[...]`) in front of a constructor's error.
    let unit = unit_name(&spec.name).map_err(ResError::new)?;
    let running = match p.str("state")?.as_str() {
        "running" => Some(true),
        "stopped" => Some(false),
        _ => None,
    };
    let enabled = match p.str("startup")?.as_str() {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    };
    Ok(Box::new(Svc {
        id: format!("svc[{}]", spec.name),
        unit,
        bus: if p.bool("session")? {
            Bus::Session
        } else {
            Bus::System
        },
        running,
        enabled,
        refresh: parse_refresh(&p.str("refresh_action")?)?,
    }))
}

/// `svc` provides `svc:<unit>` (`svc:session:<unit>` for a user unit), which a `cron` whose
/// timer starts the unit requires, and requires the unit's file wherever systemd looks for it (`file:/etc/systemd/system/
/// <unit>`, the same under `/run`, `/lib` and `/usr/lib`; for a user unit
/// `/etc/systemd/user`, `/usr/lib/systemd/user` and `~/.config/systemd/user`), and the
/// drop-in directory `/etc/systemd/{system,user}/<unit>.d/`.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let Ok(unit) = unit_name(&spec.name) else {
        return;
    };
    let session = spec
        .params
        .get("session")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    // The `cron` whose timer starts this unit comes after it (as mgmt's svc -> cron edge).
    if session {
        out.provides(&format!("svc:session:{unit}"));
    } else {
        out.provides(&format!("svc:{unit}"));
    }
    let mut key = String::with_capacity(64);
    let mut require = |dir: &str, suffix: &str| {
        key.clear();
        key.push_str("file:");
        key.push_str(dir);
        key.push('/');
        key.push_str(&unit);
        key.push_str(suffix);
        out.requires(&key);
    };
    if session {
        require("/etc/systemd/user", "");
        require("/etc/systemd/user", ".d/");
        require("/usr/lib/systemd/user", "");
        if let Some(home) = std::env::var_os("HOME") {
            let dir = format!("{}/.config/systemd/user", home.to_string_lossy());
            require(dir.trim_start_matches("//"), "");
        }
    } else {
        require("/etc/systemd/system", "");
        require("/etc/systemd/system", ".d/");
        require("/run/systemd/system", "");
        require("/lib/systemd/system", "");
        require("/usr/lib/systemd/system", "");
    }
}

/// One thing a check found to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Enable,
    Disable,
    Start,
    Stop,
    /// A refresh: the job's method and the verb for messages.
    Refresh(&'static str, &'static str),
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Refresh(_, verb) => verb,
        }
    }
}

/// Running, as far as `state: running` goes.
fn is_running(active_state: &str) -> bool {
    matches!(active_state, "active" | "reloading")
}

/// Stopped, as far as `state: stopped` goes.
fn is_stopped(active_state: &str) -> bool {
    matches!(active_state, "inactive" | "failed")
}

/// Enabled at boot, as far as `startup` goes (`disabled` is anything else: `disabled`,
/// `static`, `indirect`, `masked`, ...).
fn is_enabled(unit_file_state: &str) -> bool {
    matches!(unit_file_state, "enabled" | "enabled-runtime")
}

impl Svc {
    fn err(&self, msg: impl std::fmt::Display) -> ResError {
        ResError::new(format!("{}: {msg}", self.id))
    }

    async fn connect(&self) -> Result<Arc<Systemd>, ResError> {
        systemd::connect(self.bus).await.map_err(|e| self.err(e))
    }

    async fn read(&self, sd: &Systemd) -> Result<UnitInfo, ResError> {
        let info = sd.unit(&self.unit).await.map_err(|e| self.err(e))?;
        match info.load_state.as_str() {
            "not-found" => Err(self.err(format!(
                "unit {} not found (no unit file systemd knows of)",
                self.unit
            ))),
            "error" | "bad-setting" => Err(self.err(format!(
                "unit {} failed to load ({}): {}",
                self.unit, info.load_state, info.load_error
            ))),
            _ => Ok(info),
        }
    }

    /// What to do, and why, given what systemd says.
    fn plan(&self, info: &UnitInfo, refresh: bool) -> Result<Vec<(Action, String)>, ResError> {
        let masked = info.load_state == "masked" || info.unit_file_state.starts_with("masked");
        let ufs = &info.unit_file_state;
        let mut plan = Vec::new();
        match self.enabled {
            Some(true) if ufs != "enabled" => {
                if masked {
                    return Err(self.err(format!("{} is masked; cannot enable it", self.unit)));
                }
                if matches!(ufs.as_str(), "static" | "generated" | "transient" | "") {
                    let why = match ufs.as_str() {
                        "static" => "it has no [Install] section",
                        "generated" => "a generator made it",
                        "transient" => "it is transient",
                        _ => "it has no unit file",
                    };
                    return Err(self.err(format!(
                        "{} cannot be enabled: its unit file state is {:?} ({why})",
                        self.unit,
                        ufs.as_str()
                    )));
                }
                plan.push((Action::Enable, format!("unit file state {ufs}")));
            }
            Some(false) if is_enabled(ufs) => {
                plan.push((Action::Disable, format!("unit file state {ufs}")));
            }
            _ => {}
        }
        let active = info.active_state.as_str();
        match self.running {
            Some(true) if !is_running(active) => {
                if masked {
                    return Err(self.err(format!("{} is masked; cannot start it", self.unit)));
                }
                plan.push((Action::Start, info.state()));
            }
            Some(false) if !is_stopped(active) => plan.push((Action::Stop, info.state())),
            _ => {}
        }
        let started_or_stopped = plan
            .iter()
            .any(|(a, _)| matches!(a, Action::Start | Action::Stop));
        if refresh && !started_or_stopped && is_running(active) {
            let action = match self.refresh {
                Refresh::Nothing => None,
                Refresh::Restart => Some(Action::Refresh("TryRestartUnit", "restart")),
                Refresh::ReloadOrRestart => Some(if info.can_reload {
                    Action::Refresh("ReloadOrTryRestartUnit", "reload")
                } else {
                    Action::Refresh("ReloadOrTryRestartUnit", "restart")
                }),
                Refresh::Reload if info.can_reload => Some(Action::Refresh("ReloadUnit", "reload")),
                Refresh::Reload => {
                    return Err(ResError::field(
                        "refresh_action",
                        format!(
                            "{}: refresh_action is \"reload\", but {} cannot reload (it has no ExecReload=)",
                            self.id, self.unit
                        ),
                    ))
                }
            };
            if let Some(a) = action {
                plan.push((a, "a refresh from a notify edge".into()));
            }
        }
        Ok(plan)
    }

    /// Runs one job and checks its result.
    async fn job(&self, sd: &Systemd, method: &str, verb: &str) -> Result<(), ResError> {
        let result = sd.job(method, &self.unit).await.map_err(|e| self.err(e))?;
        if result == "done" {
            return Ok(());
        }
        let now = sd
            .unit(&self.unit)
            .await
            .map(|i| format!("; it is {}", i.state()))
            .unwrap_or_default();
        Err(self.err(format!(
            "{verb} {} failed: systemd's job result is {result:?}{now} (see `journalctl -u {}`)",
            self.unit, self.unit
        )))
    }

    async fn apply(&self, sd: &Systemd, action: Action) -> Result<(), ResError> {
        match action {
            Action::Enable | Action::Disable => sd
                .set_enabled(&self.unit, action == Action::Enable)
                .await
                .map_err(|e| self.err(e)),
            Action::Start => self.job(sd, "StartUnit", "starting").await,
            Action::Stop => self.job(sd, "StopUnit", "stopping").await,
            Action::Refresh(method, verb) => {
                let verbing = if verb == "reload" {
                    "reloading"
                } else {
                    "restarting"
                };
                self.job(sd, method, verbing).await
            }
        }
    }

    /// After applying: the unit is in the state asked for, or an error says what it is in.
    fn confirm(&self, info: &UnitInfo) -> Result<(), ResError> {
        let active = info.active_state.as_str();
        match self.running {
            Some(true) if !is_running(active) => {
                return Err(self.err(format!(
                    "{} was started, but it is {} now",
                    self.unit,
                    info.state()
                )))
            }
            Some(false) if !is_stopped(active) => {
                return Err(self.err(format!(
                    "{} was stopped, but it is {} now",
                    self.unit,
                    info.state()
                )))
            }
            _ => {}
        }
        match self.enabled {
            Some(true) if info.unit_file_state != "enabled" => Err(self.err(format!(
                "{} was enabled, but its unit file state is {:?}",
                self.unit, info.unit_file_state
            ))),
            Some(false) if is_enabled(&info.unit_file_state) => Err(self.err(format!(
                "{} was disabled, but its unit file state is {:?}",
                self.unit, info.unit_file_state
            ))),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Resource for Svc {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let sd = self.connect().await?;
        let mut events = Box::pin(sd.watch(&self.unit).await.map_err(|e| self.err(e))?);
        w.running();
        while let Some(ev) = events.next().await {
            ev.map_err(|e| self.err(e))?;
            w.event();
        }
        Err(self.err("the watch on systemd ended"))
    }

    /// Its watch holds only match rules on the shared connection (in-process state); a job
    /// it started goes on in systemd.
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let sd = self.connect().await?;
        let mut info = self.read(&sd).await?;
        let mut reloaded = false;
        if info.need_daemon_reload {
            if ctx.apply {
                tracing::info!(
                    resource = %self.id,
                    "reload systemd (daemon-reload): {} changed on disk",
                    self.unit
                );
                sd.daemon_reload_for(&self.unit)
                    .await
                    .map_err(|e| self.err(e))?;
                info = self.read(&sd).await?;
                reloaded = true;
            } else {
                tracing::info!(
                    resource = %self.id,
                    "would reload systemd (daemon-reload): {} changed on disk",
                    self.unit
                );
            }
        }
        let plan = self.plan(&info, ctx.refresh)?;
        if plan.is_empty() {
            return Ok(if reloaded || info.need_daemon_reload {
                Checked::Changed
            } else {
                Checked::InState
            });
        }
        if !ctx.apply {
            for (action, why) in &plan {
                tracing::info!(resource = %self.id, "would {} {} ({why})", action.verb(), self.unit);
            }
            return Ok(Checked::Changed);
        }
        for (action, why) in &plan {
            tracing::info!(resource = %self.id, "{} {} ({why})", action.verb(), self.unit);
            self.apply(&sd, *action).await?;
        }
        self.confirm(&self.read(&sd).await?)?;
        Ok(Checked::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_a_service_suffix_unless_they_have_a_type() {
        for (name, unit) in [
            ("nginx", "nginx.service"),
            ("nginx.service", "nginx.service"),
            ("dbus.socket", "dbus.socket"),
            ("apt-daily.timer", "apt-daily.timer"),
            ("getty@tty1", "getty@tty1.service"),
            (
                "systemd-fsck@dev-disk-by\\x2duuid-1.service",
                "systemd-fsck@dev-disk-by\\x2duuid-1.service",
            ),
            ("php8.2-fpm", "php8.2-fpm.service"),
            ("a.b", "a.b.service"),
        ] {
            assert_eq!(unit_name(name).as_deref(), Ok(unit), "{name}");
        }
        for (name, says) in [
            ("", "empty"),
            ("/etc/systemd/system/x.service", "not its file"),
            ("a b", "' ' is not allowed"),
            ("getty@", "template"),
            ("getty@.service", "template"),
            ("@x", "nothing before"),
            ("a@b@c", "more than one"),
        ] {
            let e = unit_name(name).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
        }
    }

    #[test]
    fn autoedges_require_the_unit_files() {
        let a = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("svc", "nginx"));
        assert_eq!(a.provides, ["svc:nginx.service"]);
        assert_eq!(
            a.requires,
            [
                "file:/etc/systemd/system/nginx.service",
                "file:/etc/systemd/system/nginx.service.d/",
                "file:/run/systemd/system/nginx.service",
                "file:/lib/systemd/system/nginx.service",
                "file:/usr/lib/systemd/system/nginx.service",
            ]
        );
        let bad = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("svc", "a/b"));
        assert!(bad.requires.is_empty());
    }

    fn info(active: &str, ufs: &str, can_reload: bool) -> UnitInfo {
        UnitInfo {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "x".into(),
            unit_file_state: ufs.into(),
            need_daemon_reload: false,
            can_reload,
            load_error: String::new(),
        }
    }

    fn svc(state: &str, startup: &str, refresh: &str) -> Svc {
        let spec = ResSpec::new("svc", "app")
            .param("state", state)
            .param("startup", startup)
            .param("refresh_action", refresh);
        let p = Params::new(&spec, schema()).unwrap();
        Svc {
            id: "svc[app]".into(),
            unit: "app.service".into(),
            bus: Bus::System,
            running: match state {
                "running" => Some(true),
                "stopped" => Some(false),
                _ => None,
            },
            enabled: match startup {
                "enabled" => Some(true),
                "disabled" => Some(false),
                _ => None,
            },
            refresh: parse_refresh(&p.str("refresh_action").unwrap()).unwrap(),
        }
    }

    fn verbs(plan: Result<Vec<(Action, String)>, ResError>) -> Vec<&'static str> {
        plan.unwrap()
            .into_iter()
            .map(|(a, _)| a.verb())
            .collect::<Vec<_>>()
    }

    #[test]
    fn plans() {
        let s = svc("running", "enabled", "restart");
        assert_eq!(
            verbs(s.plan(&info("active", "enabled", false), false)),
            Vec::<&str>::new()
        );
        assert_eq!(
            verbs(s.plan(&info("inactive", "disabled", false), true)),
            ["enable", "start"],
            "a start makes the refresh moot"
        );
        assert_eq!(
            verbs(s.plan(&info("active", "enabled", false), true)),
            ["restart"]
        );
        assert_eq!(
            verbs(s.plan(&info("activating", "enabled", false), false)),
            ["start"]
        );
        let e = s
            .plan(&info("inactive", "static", false), false)
            .unwrap_err();
        assert!(e.message.contains("no [Install] section"), "{e}");

        let s = svc("stopped", "disabled", "restart");
        assert_eq!(
            verbs(s.plan(&info("failed", "static", false), true)),
            Vec::<&str>::new()
        );
        assert_eq!(
            verbs(s.plan(&info("active", "enabled", false), true)),
            ["disable", "stop"]
        );

        let s = svc("", "", "reload");
        assert_eq!(
            verbs(s.plan(&info("inactive", "", true), true)),
            Vec::<&str>::new()
        );
        assert_eq!(verbs(s.plan(&info("active", "", true), true)), ["reload"]);
        let e = s.plan(&info("active", "", false), true).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("refresh_action"));
        assert!(e.message.contains("no ExecReload="), "{e}");

        let s = svc("", "", "reload-or-restart");
        assert_eq!(verbs(s.plan(&info("active", "", false), true)), ["restart"]);
        assert_eq!(verbs(s.plan(&info("active", "", true), true)), ["reload"]);
        let s = svc("", "", "none");
        assert_eq!(
            verbs(s.plan(&info("active", "", true), true)),
            Vec::<&str>::new()
        );
    }
}
