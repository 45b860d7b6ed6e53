//! `exec`: runs a command when it is out of state.
//!
//! Out of state means: with guards (`ifcmd`, `nifcmd`, `creates`), when the guards say it
//! should run; without guards, on its first check and after each drift (a `watchcmd` line) or
//! refresh, until it has run successfully once. With `refreshonly`, only a refresh (through a
//! notify edge) makes it run, and the guards still apply. Guards run in mgmt's order (`ifcmd`,
//! whose output `ifequals` / `ifequals_stdout` may match to block the run, then `nifcmd`, then
//! `creates`), also in a dry run (as mgmt's); each runs through its own shell (`ifshell`,
//! `nifshell`; default `shell`, else `/bin/sh`) in its own directory (`ifcwd`, `nifcwd`;
//! default `cwd`) with the same `env`. Output is logged line by line; a failure names
//! the command, its exit status and the tail of its stderr. The whole process group is killed
//! on timeout or cancellation.
//!
//! Drift events: each line `watchcmd` prints (through `watchshell` in `watchcwd`), and any
//! change of a `watchfiles` path (or, for one ending in `/`, of anything below it) or of
//! `creates`, through the process's inotify hub ([`crate::fswatch`]).
//!
//! `mtimes` (mgmt's): when a listed file was modified after the last successful run ended
//! (kept as the modification time of `<state>/kinds/exec/<name, hex>/mtimes`), or it never
//! ran, the command runs regardless of the guards (which are then not run); a missing file is
//! an error. Combine with `ifcmd: "false"` to run only then.
//!
//! After each successful run, `donecmd` (through `doneshell` in `donecwd`, defaults as for
//! the guards) runs; when it fails the run has failed. A dry run runs neither.
//!
//! Send/recv (mgmt's): it sends `output` (standard output and error interleaved), `stdout` and
//! `stderr` of its last successful run, kept under `<state>/kinds/exec/` so that a later
//! process sends them too before the command runs again; a stream that wrote nothing is not
//! sent (the receiver keeps its own param), unless `send_output` / `send_stdout` /
//! `send_stderr` give a value for that case.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type, Value};

use crate::fswatch::{self, Target};
use crate::params::{field_err, Params};
use crate::process::{describe, log_lines, Captured, CmdLine, Lines, RunAs, Running, TAIL_LINES};

/// The `exec` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let strs = Type::List(Box::new(Type::Str));
        let mut s = KindSchema::new("exec")
            .field(Field::new(
                "cmd",
                Type::Str,
                "the command (default: the resource name); without `shell` and `args`, split on whitespace into program and arguments",
            ))
            .field(
                Field::new("args", strs, "arguments of `cmd` (without `shell`)")
                    .default_value(Value::List(Vec::new())),
            )
            .field(
                Field::new(
                    "shell",
                    Type::Str,
                    "run `cmd` as `<shell> -c <cmd>`, e.g. \"/bin/sh\"",
                )
                .default_value(""),
            )
            .field(Field::new("cwd", Type::Str, "working directory").default_value(""))
            .field(
                Field::new(
                    "env",
                    Type::Map(Box::new(Type::Str), Box::new(Type::Str)),
                    "variables added to the environment",
                )
                .default_value(Value::Map(Default::default())),
            )
            .field(
                Field::new(
                    "timeout",
                    Type::Int,
                    "seconds allowed per run; 0 = no limit",
                )
                .default_value(0i64)
                .range(0, u32::MAX as i128),
            )
            .field(
                Field::new(
                    "ifcmd",
                    Type::Str,
                    "run only if this shell command succeeds",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "ifshell",
                    Type::Str,
                    "the shell of `ifcmd` (default: `shell`, else /bin/sh)",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "ifcwd",
                    Type::Str,
                    "the working directory of `ifcmd` (default: `cwd`)",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "ifequals",
                    Type::Str,
                    "do not run when `ifcmd` succeeds and its output (stdout and stderr interleaved) is exactly this, trailing newline included",
                )
                .optional(),
            )
            .field(
                Field::new(
                    "ifequals_stdout",
                    Type::Str,
                    "the same, compared with the standard output of `ifcmd` alone",
                )
                .optional(),
            )
            .field(
                Field::new("nifcmd", Type::Str, "run only if this shell command fails")
                    .default_value(""),
            )
            .field(
                Field::new("nifshell", Type::Str, "the shell of `nifcmd`").default_value(""),
            )
            .field(
                Field::new("nifcwd", Type::Str, "the working directory of `nifcmd`")
                    .default_value(""),
            )
            .field(Field::new("creates", Type::Str, "skip when this path exists").default_value(""))
            .field(
                Field::new(
                    "mtimes",
                    Type::List(Box::new(Type::Str)),
                    "absolute paths of files, each of which must exist: when one was modified after the last successful run (or it never ran), run regardless of the guards; each is watched",
                )
                .default_value(Value::List(Vec::new())),
            )
            .field(
                Field::new(
                    "donecmd",
                    Type::Str,
                    "run after each successful run of `cmd`; its failure fails the run",
                )
                .default_value(""),
            )
            .field(
                Field::new("doneshell", Type::Str, "the shell of `donecmd`").default_value(""),
            )
            .field(
                Field::new("donecwd", Type::Str, "the working directory of `donecmd`")
                    .default_value(""),
            )
            .field(
                Field::new(
                    "refreshonly",
                    Type::Bool,
                    "run only when refreshed through a notify edge",
                )
                .default_value(false),
            )
            .field(Field::new(
                "user",
                Type::Str,
                "run every command (and guard) as this user, a name or a numeric uid, with its groups (needs root)",
            ))
            .field(Field::new(
                "group",
                Type::Str,
                "run as this group, a name or a numeric gid (default: the user's primary group)",
            ))
            .field(
                Field::new(
                    "cancel_signal",
                    Type::Str,
                    "the signal sent to a command's process group on timeout or cancellation, e.g. \"SIGINT\" (default SIGTERM); SIGKILL follows after 5 s",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "watchcmd",
                    Type::Str,
                    "a long-running shell command; each line it prints is a drift event",
                )
                .default_value(""),
            )
            .field(
                Field::new("watchshell", Type::Str, "the shell of `watchcmd`").default_value(""),
            )
            .field(
                Field::new("watchcwd", Type::Str, "the working directory of `watchcmd`")
                    .default_value(""),
            )
            .field(
                Field::new(
                    "watchfiles",
                    Type::List(Box::new(Type::Str)),
                    "absolute paths whose changes are drift events; one ending in `/` is a directory watched with everything below it",
                )
                .default_value(Value::List(Vec::new())),
            )
            .field(
                Field::new(
                    "send_output",
                    Type::Str,
                    "sent as `output` while the command has not run (nothing kept from a run)",
                )
                .optional(),
            )
            .field(
                Field::new("send_stdout", Type::Str, "the same for `stdout`").optional(),
            )
            .field(
                Field::new("send_stderr", Type::Str, "the same for `stderr`").optional(),
            )
            .sends(
                "output",
                Type::Str,
                "what the command's last successful run wrote, standard output and error interleaved",
            )
            .sends("stdout", Type::Str, "its standard output")
            .sends("stderr", Type::Str, "its standard error");
        s.refreshable = true;
        s
    })
}

struct Exec {
    id: String,
    cmd: CmdLine,
    ifcmd: Option<Side>,
    /// `ifequals`, `ifequals_stdout`.
    ifequals: Option<String>,
    ifequals_stdout: Option<String>,
    nifcmd: Option<Side>,
    donecmd: Option<Side>,
    creates: Option<PathBuf>,
    refreshonly: bool,
    watchcmd: Option<Side>,
    /// What the watch follows (`watchfiles`, `creates`): a path, and whether everything
    /// below it too.
    watched: Vec<(Arc<Path>, bool)>,
    /// `mtimes`.
    mtimes: Vec<PathBuf>,
    /// When the last successful run ended, without a state directory (with one: the
    /// modification time of `<cache>/mtimes`).
    last_run: Mutex<Option<SystemTime>>,
    timeout: Option<Duration>,
    /// Without guards: not run successfully since the last drift.
    needs_run: AtomicBool,
    /// What the last successful run wrote (send/recv), kept under the state directory.
    sent: Mutex<Sent>,
    /// `send_output`, `send_stdout`, `send_stderr`: sent while nothing was kept.
    fallback: Sent,
    /// `<state>/kinds/exec/<name, hex>/`, from `init`.
    cache: Mutex<Option<PathBuf>>,
}

/// A command other than `cmd` (`ifcmd`, `nifcmd`, ...): always run through a shell.
struct Side {
    /// The field that set it, for messages: `ifcmd`.
    field: &'static str,
    cmd: CmdLine,
}

/// The values an `exec` sends (mgmt's `output`, `stdout`, `stderr`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sent {
    output: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

impl Sent {
    const NAMES: [&'static str; 3] = ["output", "stdout", "stderr"];

    fn get(&self, name: &str) -> &Option<String> {
        match name {
            "output" => &self.output,
            "stdout" => &self.stdout,
            _ => &self.stderr,
        }
    }

    fn get_mut(&mut self, name: &str) -> &mut Option<String> {
        match name {
            "output" => &mut self.output,
            "stdout" => &mut self.stdout,
            _ => &mut self.stderr,
        }
    }

    /// Reads what a run kept (a missing file: that stream wrote nothing).
    fn load(dir: &Path) -> Sent {
        let mut s = Sent::default();
        for n in Self::NAMES {
            *s.get_mut(n) = std::fs::read(dir.join(n))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
        }
        s
    }

    /// Keeps it (each file written to a temporary file and renamed).
    fn store(&self, dir: &Path) -> Result<(), ResError> {
        std::fs::create_dir_all(dir).map_err(|e| ResError::io("creating", dir, e))?;
        for n in Self::NAMES {
            let path = dir.join(n);
            match self.get(n) {
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(ResError::io("removing", &path, e))
                    }
                    _ => {}
                },
                Some(v) => {
                    let tmp = dir.join(format!(".{n}.tmp"));
                    // Only root reads it: a command's output may be private.
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .and_then(|mut f| f.write_all(v.as_bytes()))
                        .map_err(|e| ResError::io("writing", &tmp, e))?;
                    std::fs::rename(&tmp, &path)
                        .map_err(|e| ResError::io("renaming to", &path, e))?;
                }
            }
        }
        Ok(())
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn abs(field: &str, s: &str) -> Result<PathBuf, ResError> {
    if !s.starts_with('/') {
        return Err(field_err(field, format!("{s:?} is not an absolute path")));
    }
    Ok(PathBuf::from(s))
}

/// Builds an `exec`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    // mgmt: without `cmd`, the name is the command.
    let cmd = p.opt_str("cmd")?.unwrap_or_else(|| spec.name.clone());
    if cmd.trim().is_empty() {
        return Err(field_err("cmd", "must not be empty"));
    }
    let args = p.strs("args")?;
    let shell = p.str("shell")?;
    if !shell.is_empty() && !args.is_empty() {
        return Err(field_err(
            "args",
            "cannot be combined with `shell` (put everything in `cmd`)",
        ));
    }
    let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    if shell.is_empty() && !args.is_empty() && words.len() > 1 {
        return Err(field_err(
            "args",
            format!("cannot be combined with a `cmd` that has arguments ({cmd:?})"),
        ));
    }
    let run_as = RunAs::new(p.opt_str("user")?, p.opt_str("group")?)?;
    let cancel = cancel_signal(&p.str("cancel_signal")?)?;
    let cwd = match opt(p.str("cwd")?) {
        Some(c) => Some(abs("cwd", &c)?),
        None => None,
    };
    let env = p.str_map("env")?;
    let (program, args) = if shell.is_empty() && args.is_empty() {
        // mgmt splits a command without shell on whitespace (Go's `strings.Fields`).
        let mut w = words.into_iter();
        (w.next().unwrap_or_default(), w.collect())
    } else if shell.is_empty() {
        (cmd.trim().to_string(), args)
    } else {
        (shell.clone(), vec!["-c".to_string(), cmd])
    };
    let timeout = p.opt_int("timeout")?.unwrap_or(0);
    if timeout < 0 {
        return Err(field_err("timeout", format!("{timeout} is negative")));
    }
    let creates = match opt(p.str("creates")?) {
        Some(c) => Some(abs("creates", &c)?),
        None => None,
    };
    let guard_shell = if shell.is_empty() {
        "/bin/sh".to_string()
    } else {
        shell
    };
    // `<field>` run through `<prefix>shell` (default: `shell`, else /bin/sh) in `<prefix>cwd`
    // (default: `cwd`). The shell and cwd fields are checked even when the command is unset.
    let side = |field: &'static str, prefix: &str| -> Result<Option<Side>, ResError> {
        let sh_field = format!("{prefix}shell");
        let cwd_field = format!("{prefix}cwd");
        let sh = opt(p.str(&sh_field)?).unwrap_or_else(|| guard_shell.clone());
        let dir = match opt(p.str(&cwd_field)?) {
            Some(c) => Some(abs(&cwd_field, &c)?),
            None => cwd.clone(),
        };
        Ok(opt(p.str(field)?).map(|line| Side {
            field,
            cmd: CmdLine {
                program: sh,
                args: vec!["-c".into(), line],
                cwd: dir,
                env: env.clone(),
                run_as: run_as.clone(),
                cancel,
            },
        }))
    };
    let ifcmd = side("ifcmd", "if")?;
    let nifcmd = side("nifcmd", "nif")?;
    let donecmd = side("donecmd", "done")?;
    let watchcmd = side("watchcmd", "watch")?;
    let mut watched = Vec::new();
    for f in p.strs("watchfiles")? {
        abs("watchfiles", &f)?;
        watched.push(watch_path(&f));
    }
    if let Some(c) = &creates {
        watched.push((Arc::from(c.as_path()), false));
    }
    let mut mtimes = Vec::new();
    for f in p.strs("mtimes")? {
        abs("mtimes", &f)?;
        watched.push(watch_path(&f));
        mtimes.push(PathBuf::from(f));
    }
    Ok(Box::new(Exec {
        id: format!("exec[{}]", spec.name),
        cmd: CmdLine {
            program,
            args,
            cwd,
            env,
            run_as,
            cancel,
        },
        ifcmd,
        ifequals: p.opt_str("ifequals")?,
        ifequals_stdout: p.opt_str("ifequals_stdout")?,
        nifcmd,
        donecmd,
        creates,
        refreshonly: p.bool("refreshonly")?,
        watchcmd,
        watched,
        mtimes,
        last_run: Mutex::new(None),
        timeout: (timeout > 0).then(|| Duration::from_secs(timeout as u64)),
        needs_run: AtomicBool::new(true),
        sent: Mutex::new(Sent::default()),
        fallback: Sent {
            output: p.opt_str("send_output")?,
            stdout: p.opt_str("send_stdout")?,
            stderr: p.opt_str("send_stderr")?,
        },
        cache: Mutex::new(None),
    }))
}

/// `exec` requires the directory it runs in (`file:<cwd>/`) and the user and group it runs
/// as (`user:<name>`, `group:<name>`).
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    crate::account::require_owner(spec, "user", "group", out);
    let mut seen = Vec::new();
    for f in CWD_FIELDS {
        if let Some(cwd) = spec.params.get(f).and_then(|v| v.as_str()) {
            if cwd.starts_with('/') {
                let t = cwd.trim_end_matches('/');
                if !seen.contains(&t) {
                    seen.push(t);
                    out.requires(&format!("file:{t}/"));
                }
            }
        }
    }
}

/// The working directory fields, each required (autoedge) as a directory.
const CWD_FIELDS: [&str; 5] = ["cwd", "ifcwd", "nifcwd", "donecwd", "watchcwd"];

impl Exec {
    /// Follows a started `watchcmd`: each line it prints is a drift event. Returns (an error
    /// with its status and stderr tail) when it ends.
    async fn watchcmd_lines(
        &self,
        c: &CmdLine,
        mut r: Running,
        w: &Watcher,
    ) -> Result<(), ResError> {
        let stderr = r.child.stderr.take();
        let err_log = async {
            match stderr {
                Some(e) => log_lines(e, self.id.clone(), "watchcmd stderr", TAIL_LINES).await,
                None => Default::default(),
            }
        };
        let stdout = r
            .child
            .stdout
            .take()
            .ok_or_else(|| ResError::new("watchcmd: no stdout"))?;
        let events = async {
            let mut lines = Lines::new(stdout);
            while let Some(l) = lines.next().await {
                tracing::debug!(resource = %self.id, line = %l, "watchcmd event");
                self.needs_run.store(true, Ordering::SeqCst);
                w.event();
            }
        };
        let (_, tail) = tokio::join!(events, err_log);
        let status =
            r.child.wait().await.map_err(|e| {
                ResError::new(format!("watchcmd: waiting for `{}`: {e}", c.display()))
            })?;
        r.group.disarm();
        let tail: Vec<String> = tail.into_iter().collect();
        Err(ResError::new(format!(
            "watchcmd `{}` {}{}",
            c.display(),
            describe(&status),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join("\n"))
            }
        )))
    }

    /// Runs a guard; returns whether it succeeded, and what it wrote.
    async fn guard(&self, g: &Side) -> Result<(bool, Captured), ResError> {
        let (f, out) = g
            .cmd
            .run_captured(&self.id, self.timeout)
            .await
            .map_err(|e| ResError::new(format!("{}: {}: {e}", self.id, g.field)))?;
        tracing::debug!(resource = %self.id, guard = g.field, status = %describe(&f.status), "guard ran");
        Ok((f.status.success(), out))
    }

    /// mgmt's order: `ifcmd` (with `ifequals`), `nifcmd`, `creates`; whether one of them
    /// says not to run.
    async fn guarded(&self) -> Result<bool, ResError> {
        if let Some(g) = &self.ifcmd {
            let (ok, out) = self.guard(g).await?;
            if !ok {
                return Ok(true);
            }
            let text = |b: &Option<Vec<u8>>| b.as_deref().unwrap_or_default().to_vec();
            if self
                .ifequals
                .as_ref()
                .is_some_and(|w| w.as_bytes() == text(&out.output))
            {
                tracing::info!(resource = %self.id, "ifequals matched, not running");
                return Ok(true);
            }
            if self
                .ifequals_stdout
                .as_ref()
                .is_some_and(|w| w.as_bytes() == text(&out.stdout))
            {
                tracing::info!(resource = %self.id, "ifequals_stdout matched, not running");
                return Ok(true);
            }
        }
        if let Some(g) = &self.nifcmd {
            if self.guard(g).await?.0 {
                return Ok(true);
            }
        }
        if let Some(c) = &self.creates {
            if Path::new(c).symlink_metadata().is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `<cache>/mtimes`: its modification time is when the last successful run ended.
    fn stamp_path(&self) -> Option<PathBuf> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|d| d.join("mtimes"))
    }

    /// Whether a file of `mtimes` was modified after the last successful run (every one is
    /// when it never ran). A missing file is an error, as in mgmt.
    fn mtimes_newer(&self) -> Result<bool, ResError> {
        if self.mtimes.is_empty() {
            return Ok(false);
        }
        let last = match self.stamp_path() {
            Some(p) => match std::fs::metadata(&p) {
                Ok(m) => Some(m.modified().map_err(|e| ResError::io("reading", &p, e))?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(ResError::io("reading", &p, e)),
            },
            None => *self.last_run.lock().unwrap_or_else(|e| e.into_inner()),
        };
        // In order, stopping at the first newer one (as mgmt: a missing file after it is
        // not noticed then).
        for f in &self.mtimes {
            let m = std::fs::metadata(f)
                .and_then(|m| m.modified())
                .map_err(|e| ResError::field("mtimes", format!("{}: {e}", f.display())))?;
            // Strictly after, as mgmt: the stamp is written after the run, so what the
            // command itself modified is not newer.
            if last.is_none_or(|l| m > l) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records that a run just ended successfully (with `mtimes`).
    fn stamp_run(&self) -> Result<(), ResError> {
        let Some(p) = self.stamp_path() else {
            *self.last_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
            return Ok(());
        };
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| ResError::io("creating", d, e))?;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        // Written (not only touched): writing sets the modification time.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| writeln!(f, "{}.{:09}", now.as_secs(), now.subsec_nanos()))
            .map_err(|e| ResError::io("writing", &p, e))
    }

    fn has_guards(&self) -> bool {
        self.ifcmd.is_some() || self.nifcmd.is_some() || self.creates.is_some()
    }
}

#[async_trait::async_trait]
impl Resource for Exec {
    async fn init(&self, ctx: &InitCtx) -> Result<(), ResError> {
        if ctx.state_dir.as_os_str().is_empty() {
            return Ok(());
        }
        let hex: String = self.id.bytes().map(|b| format!("{b:02x}")).collect();
        let dir = ctx.state_dir.join("kinds").join("exec").join(hex);
        // What the last run of an earlier process wrote is sent until it runs again.
        let kept = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || Sent::load(&dir)
        })
        .await
        .unwrap_or_default();
        *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = kept;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        Ok(())
    }

    fn sent(&self) -> Vec<(String, Value)> {
        let s = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        Sent::NAMES
            .iter()
            .filter_map(|n| {
                let v = s.get(n).as_ref().or(self.fallback.get(n).as_ref())?;
                Some((n.to_string(), Value::from(v.as_str())))
            })
            .collect()
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        // Files first (`watchfiles`, `creates`): armed before the watch reports running.
        let targets = self.watched.clone();
        let files = !targets.is_empty();
        let (fw, frx) = Watcher::channel();
        let follow = async {
            if !files {
                return std::future::pending().await;
            }
            fswatch::follow(&self.id, fw, move || file_targets(&targets)).await
        };
        tokio::pin!(follow);
        let ended = |r: Result<(), ResError>| {
            r.and_then(|()| Err(ResError::new(format!("{}: the file watch ended", self.id))))
        };
        if files {
            let armed = async {
                while !frx.take().running {
                    frx.next().await;
                }
            };
            tokio::select! {
                r = &mut follow => return ended(r),
                _ = armed => {}
            }
        }
        let running = match &self.watchcmd {
            Some(c) => Some(
                c.cmd
                    .spawn()
                    .map_err(|e| ResError::new(format!("watchcmd: {e}")))?,
            ),
            None => None,
        };
        w.running();
        let file_events = async {
            loop {
                if frx.next().await.dirty {
                    tracing::debug!(resource = %self.id, "watched file changed");
                    self.needs_run.store(true, Ordering::SeqCst);
                    w.event();
                }
            }
        };
        let lines = async {
            match (running, &self.watchcmd) {
                (Some(r), Some(c)) => self.watchcmd_lines(&c.cmd, r, &w).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut follow => ended(r),
            r = lines => r,
            () = file_events => Ok(()),
        }
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        if self.refreshonly && !ctx.refresh {
            return Ok(Checked::InState);
        }
        // mgmt: a file of `mtimes` newer than the last run forces a run, skipping the guards.
        let forced = self.mtimes_newer()?;
        if !forced {
            if !self.refreshonly
                && !self.has_guards()
                && !ctx.refresh
                && !self.needs_run.load(Ordering::SeqCst)
            {
                return Ok(Checked::InState);
            }
            if self.guarded().await? {
                return Ok(Checked::InState);
            }
        } else {
            tracing::info!(resource = %self.id, "a file of `mtimes` is newer than the last run");
        }
        if !ctx.apply {
            match &self.donecmd {
                Some(d) => tracing::info!(resource = %self.id, cmd = %self.cmd.display(),
                    donecmd = %d.cmd.display(), "would run"),
                None => tracing::info!(resource = %self.id, cmd = %self.cmd.display(), "would run"),
            }
            return Ok(Checked::Changed);
        }
        // Clear first: a drift during the run must make it run again.
        self.needs_run.store(false, Ordering::SeqCst);
        tracing::info!(resource = %self.id, cmd = %self.cmd.display(), "running");
        let (f, out) = match self.cmd.run_captured(&self.id, self.timeout).await {
            Ok(f) => f,
            Err(e) => {
                self.needs_run.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        if !f.status.success() {
            self.needs_run.store(true, Ordering::SeqCst);
            return Err(failed("", &self.cmd, &f));
        }
        // mgmt: a failing `donecmd` fails the run (nothing is kept or sent from it).
        if let Some(d) = &self.donecmd {
            tracing::info!(resource = %self.id, cmd = %d.cmd.display(), "running donecmd");
            let f = match d.cmd.run(&self.id, self.timeout).await {
                Ok(f) => f,
                Err(e) => {
                    self.needs_run.store(true, Ordering::SeqCst);
                    return Err(ResError::new(format!("donecmd: {e}")));
                }
            };
            if !f.status.success() {
                self.needs_run.store(true, Ordering::SeqCst);
                return Err(failed("donecmd ", &d.cmd, &f));
            }
        }
        if !self.mtimes.is_empty() {
            if let Err(e) = self.stamp_run() {
                self.needs_run.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let sent = Sent {
            output: text(out.output),
            stdout: text(out.stdout),
            stderr: text(out.stderr),
        };
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(dir) = cache {
            let s = sent.clone();
            let kept = tokio::task::spawn_blocking(move || s.store(&dir)).await;
            if let Ok(Err(e)) = kept {
                tracing::warn!(resource = %self.id, error = %e, "could not keep what the command wrote");
            }
        }
        *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = sent;
        Ok(Checked::Changed)
    }
}

/// A command's failure: `` `<cmd>` exited with status 3; stderr: ...``, after `what`.
fn failed(what: &str, cmd: &CmdLine, f: &crate::process::Finished) -> ResError {
    ResError::new(format!(
        "{what}`{}` {}{}",
        cmd.display(),
        describe(&f.status),
        if f.stderr_tail.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", f.stderr_tail)
        }
    ))
}

/// A watched path without its trailing slashes, and whether it had one (watch the tree).
fn watch_path(p: &str) -> (Arc<Path>, bool) {
    let t = p.trim_end_matches('/');
    let t = if t.is_empty() { "/" } else { t };
    (Arc::from(Path::new(t)), p.len() > 1 && p.ends_with('/'))
}

/// The inotify hub's targets for the watched paths: a tree is each of its directories'
/// entries, computed again after every event (a new subdirectory is followed too).
fn file_targets(watched: &[(Arc<Path>, bool)]) -> Vec<Target> {
    let mut out = Vec::new();
    for (p, tree) in watched {
        out.push(Target::Path(p.clone()));
        if *tree && p.is_dir() {
            crate::tar::dirs_below(p, &mut out);
        }
    }
    out
}

/// `cancel_signal`: a signal's name as mgmt takes it (`SIGINT`); empty is SIGTERM.
fn cancel_signal(s: &str) -> Result<Signal, ResError> {
    if s.is_empty() {
        return Ok(Signal::SIGTERM);
    }
    if let Ok(sig) = s.parse::<Signal>() {
        return Ok(sig);
    }
    let up = s.to_uppercase();
    for cand in [up.clone(), format!("SIG{up}")] {
        if cand.parse::<Signal>().is_ok() {
            return Err(field_err(
                "cancel_signal",
                format!("{s:?} is not a signal; did you mean {cand:?}?"),
            ));
        }
    }
    Err(field_err("cancel_signal", format!("{s:?} is not a signal")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_working_directory_is_required_once() {
        let spec = ResSpec::new("exec", "e")
            .param("cwd", "/srv/app/")
            .param("ifcwd", "/srv/app")
            .param("donecwd", "/var/lib/x")
            .param("watchcwd", "relative");
        let a = tend_engine::AutoEdges::of(autoedges, &spec);
        assert_eq!(a.requires, ["file:/srv/app/", "file:/var/lib/x/"]);
    }
}
