//! Child processes for `exec`: each runs in its own process group, its output is logged line
//! by line with the resource's name, and the whole group is killed on timeout or when the
//! caller stops waiting (the future is dropped).

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tend_engine::ResError;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How many trailing lines of stderr an error message quotes.
pub(crate) const TAIL_LINES: usize = 10;

/// How long output is still read after a command exited.
pub(crate) const DRAIN: Duration = Duration::from_secs(2);

/// A command line and its environment.
#[derive(Clone, Debug)]
pub(crate) struct CmdLine {
    /// The program (looked up in `PATH` when it has no `/`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Variables added to the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Whom to run as (`exec`'s `user` and `group`).
    pub run_as: RunAs,
    /// Sent to the whole process group on timeout or cancellation (`exec`'s
    /// `cancel_signal`); unless it is SIGKILL, SIGKILL follows after [`GRACE`].
    pub cancel: Signal,
}

/// How long a command may take to end after its cancel signal, before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// A user and/or group to run a command as, looked up when the command starts (the account
/// may be created by a resource earlier in the graph).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunAs {
    user: Option<crate::account::Who>,
    group: Option<crate::account::Who>,
}

/// Credentials resolved for one start.
struct Creds {
    uid: Option<u32>,
    gid: u32,
    groups: Vec<nix::unistd::Gid>,
    /// `HOME`, `USER`, `LOGNAME` of the user.
    env: Vec<(&'static str, String)>,
}

impl RunAs {
    /// Validates the `user` and `group` fields (names or numeric ids).
    pub(crate) fn new(user: Option<String>, group: Option<String>) -> Result<RunAs, ResError> {
        use crate::account::Who;
        let user = user.map(|u| Who::parse("user", u)).transpose()?;
        let group = group.map(|g| Who::parse("group", g)).transpose()?;
        Ok(RunAs { user, group })
    }

    fn is_set(&self) -> bool {
        self.user.is_some() || self.group.is_some()
    }

    /// Looks the user and group up; errors name the field.
    fn resolve(&self) -> Result<Option<Creds>, String> {
        use nix::unistd::{getgrouplist, Gid, Uid, User};
        if !self.is_set() {
            return Ok(None);
        }
        if !Uid::effective().is_root() {
            return Err("running a command as another user or group needs root".into());
        }
        let user = match &self.user {
            None => None,
            Some(w) => Some(w.lookup_user().map_err(|e| format!("field `user`: {e}"))?),
        };
        // Without `group`, the user's primary group (one of the two is set).
        let gid = match (&self.group, &user) {
            (Some(g), _) => g.lookup_gid().map_err(|e| format!("field `group`: {e}"))?,
            (None, Some(u)) => u.gid.as_raw(),
            (None, None) => return Ok(None),
        };
        let (uid, groups, env) = match user {
            Some(User { name, uid, dir, .. }) => {
                let groups = match std::ffi::CString::new(name.clone()) {
                    Ok(c) => getgrouplist(&c, Gid::from_raw(gid))
                        .map_err(|e| format!("field `user`: the groups of {name:?}: {e}"))?,
                    Err(_) => vec![Gid::from_raw(gid)],
                };
                let env = vec![
                    ("HOME", dir.to_string_lossy().into_owned()),
                    ("USER", name.clone()),
                    ("LOGNAME", name),
                ];
                (Some(uid.as_raw()), groups, env)
            }
            None => (None, vec![Gid::from_raw(gid)], Vec::new()),
        };
        Ok(Some(Creds {
            uid,
            gid,
            groups,
            env,
        }))
    }
}

impl CmdLine {
    /// How the command reads in messages: `/bin/sh -c "exit 3"`.
    pub(crate) fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(a);
            }
        }
        s
    }

    fn command(&self) -> Result<Command, ResError> {
        let mut c = Command::new(&self.program);
        let creds = self
            .run_as
            .resolve()
            .map_err(|e| ResError::new(format!("starting `{}`: {e}", self.display())))?;
        if let Some(cr) = &creds {
            // The user's own variables, unless `env` sets them.
            for (k, v) in &cr.env {
                c.env(k, v);
            }
        }
        c.args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        if let Some(Creds {
            uid, gid, groups, ..
        }) = creds
        {
            // Not `Command::uid`/`gid`: std drops the supplementary groups with them, and
            // runs `pre_exec` after them (too late to set groups). The three calls below are
            // plain system calls, safe between fork and exec.
            // SAFETY: the closure only makes async-signal-safe system calls and allocates
            // nothing (the group list was built before the fork).
            unsafe {
                c.pre_exec(move || {
                    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
                    setgroups(&groups)?;
                    setgid(Gid::from_raw(gid))?;
                    if let Some(u) = uid {
                        setuid(Uid::from_raw(u))?;
                    }
                    Ok(())
                });
            }
        }
        Ok(c)
    }

    /// Starts the command in a new process group.
    pub(crate) fn spawn(&self) -> Result<Running, ResError> {
        let child = self
            .command()?
            .spawn()
            .map_err(|e| ResError::new(format!("starting `{}`: {e}", self.display())))?;
        let pgid = child.id().map(|p| p as i32);
        Ok(Running {
            child,
            group: GroupKill(pgid, self.cancel),
        })
    }

    /// Runs the command to completion (or until `timeout`), logging its output under `label`.
    /// Once the command has exited, output still held open by processes it left in the
    /// background is read for at most [`DRAIN`].
    pub(crate) async fn run(
        &self,
        label: &str,
        timeout: Option<Duration>,
    ) -> Result<Finished, ResError> {
        self.run_inner(label, timeout, None).await
    }

    /// [`CmdLine::run`], keeping what the command wrote (`exec`'s sent values).
    pub(crate) async fn run_captured(
        &self,
        label: &str,
        timeout: Option<Duration>,
    ) -> Result<(Finished, Captured), ResError> {
        let cap = Arc::new(Mutex::new(Captured::default()));
        let f = self.run_inner(label, timeout, Some(cap.clone())).await?;
        let c = std::mem::take(&mut *cap.lock().unwrap_or_else(|e| e.into_inner()));
        Ok((f, c))
    }

    async fn run_inner(
        &self,
        label: &str,
        timeout: Option<Duration>,
        cap: Option<Arc<Mutex<Captured>>>,
    ) -> Result<Finished, ResError> {
        let mut r = self.spawn()?;
        let tap = |stream| cap.clone().map(|c| (c, stream));
        let out = r.child.stdout.take().map(|o| {
            tokio::spawn(log_lines_into(
                o,
                label.to_string(),
                "stdout",
                0,
                tap(Stream::Stdout),
            ))
        });
        let err = r.child.stderr.take().map(|e| {
            tokio::spawn(log_lines_into(
                e,
                label.to_string(),
                "stderr",
                TAIL_LINES,
                tap(Stream::Stderr),
            ))
        });
        let status = match timeout {
            Some(t) => match tokio::time::timeout(t, r.child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    // The cancel signal, up to GRACE to end, then SIGKILL for what is left
                    // of the group (the group outlives its reaped leader while a member
                    // lives, so its id cannot have been reused).
                    let sig = r.group.1;
                    let pgid = r.group.0.take();
                    if let Some(g) = pgid {
                        signal_group(g, sig);
                    }
                    let ended = sig != Signal::SIGKILL
                        && tokio::time::timeout(GRACE, r.child.wait()).await.is_ok();
                    if let Some(g) = pgid {
                        signal_group(g, Signal::SIGKILL);
                    }
                    let _ = r.child.wait().await;
                    return Err(ResError::new(format!(
                        "`{}` timed out after {}s; its process group was sent {}{}",
                        self.display(),
                        t.as_secs_f64(),
                        sig.as_str(),
                        if sig == Signal::SIGKILL || ended {
                            String::new()
                        } else {
                            format!(", then SIGKILL after {}s", GRACE.as_secs())
                        }
                    )));
                }
            },
            None => r.child.wait().await,
        };
        let status =
            status.map_err(|e| ResError::new(format!("waiting for `{}`: {e}", self.display())))?;
        r.group.disarm();
        if let Some(o) = out {
            let _ = tokio::time::timeout(DRAIN, o).await;
        }
        let tail = match err {
            Some(e) => match tokio::time::timeout(DRAIN, e).await {
                Ok(Ok(t)) => t,
                _ => VecDeque::new(),
            },
            None => VecDeque::new(),
        };
        Ok(Finished {
            status,
            stderr_tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// A finished command.
pub(crate) struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// The last lines it wrote to stderr.
    pub stderr_tail: String,
}

/// Describes an exit status: `exited with status 3`, `was killed by signal 9`.
pub(crate) fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}

/// A started command; dropping it kills its process group.
pub(crate) struct Running {
    /// The child process.
    pub child: Child,
    /// Kills the group on drop.
    pub group: GroupKill,
}

/// Signals a process group when dropped, unless disarmed: its cancel signal, then SIGKILL
/// after [`GRACE`] (or when the runtime shuts down first).
pub(crate) struct GroupKill(Option<i32>, Signal);

fn signal_group(pgid: i32, sig: Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
}

/// SIGKILLs a process group when dropped: at the end of the grace, or when the task holding
/// it is dropped (the runtime shutting down as the process exits).
struct Escalate(i32);

impl Drop for Escalate {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

impl GroupKill {
    /// Sends the cancel signal to the group now, and SIGKILL after the grace.
    pub(crate) fn kill(&mut self) {
        let Some(pgid) = self.0.take() else {
            return;
        };
        signal_group(pgid, self.1);
        if self.1 == Signal::SIGKILL {
            return;
        }
        let esc = Escalate(pgid);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    tokio::time::sleep(GRACE).await;
                    drop(esc);
                });
            }
            Err(_) => drop(esc),
        }
    }

    /// The leader has been waited for: never signal that id again.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a command wrote, as `exec` sends it (mgmt's `output`, `stdout`, `stderr`): each
/// stream, and both interleaved line by line. A stream that wrote nothing is `None`. Each is
/// kept up to [`MAX_CAPTURE`] bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    pub stdout: Option<Vec<u8>>,
    pub stderr: Option<Vec<u8>>,
    pub output: Option<Vec<u8>>,
}

/// The most a captured stream keeps.
pub(crate) const MAX_CAPTURE: usize = 16 << 20;

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn append(to: &mut Option<Vec<u8>>, bytes: &[u8]) {
    let v = to.get_or_insert_with(Vec::new);
    let room = MAX_CAPTURE.saturating_sub(v.len());
    v.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Logs each line of `r`; returns the last `keep` lines.
pub(crate) async fn log_lines(
    r: impl AsyncRead + Unpin,
    label: String,
    stream: &'static str,
    keep: usize,
) -> VecDeque<String> {
    log_lines_into(r, label, stream, keep, None).await
}

async fn log_lines_into(
    r: impl AsyncRead + Unpin,
    label: String,
    stream: &'static str,
    keep: usize,
    tap: Option<(Arc<Mutex<Captured>>, Stream)>,
) -> VecDeque<String> {
    let mut lines = Lines::new(r);
    let mut tail = VecDeque::new();
    while let Some(line) = lines.next().await {
        if let Some((cap, which)) = &tap {
            let mut c = cap.lock().unwrap_or_else(|e| e.into_inner());
            let raw = lines.raw();
            match which {
                Stream::Stdout => append(&mut c.stdout, raw),
                Stream::Stderr => append(&mut c.stderr, raw),
            }
            append(&mut c.output, raw);
        }
        tracing::info!(resource = %label, stream, "{line}");
        if keep > 0 {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    tail
}

/// Lines of a child's output. Invalid UTF-8 is replaced rather than ending the read (a
/// reader that stops would leave the child blocked on a full pipe), and very long lines are
/// cut at [`MAX_LINE`] bytes.
pub(crate) struct Lines<R> {
    r: BufReader<R>,
    buf: Vec<u8>,
}

/// The longest line kept (the rest of the line is dropped).
pub(crate) const MAX_LINE: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> Lines<R> {
    /// Reads lines from `r`.
    pub(crate) fn new(r: R) -> Self {
        Lines {
            r: BufReader::new(r),
            buf: Vec::new(),
        }
    }

    /// The next line without its newline; `None` at the end (or on a read error).
    pub(crate) async fn next(&mut self) -> Option<String> {
        self.buf.clear();
        match self.r.read_until(b'\n', &mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let mut end = self.buf.len();
                if self.buf.last() == Some(&b'\n') {
                    end -= 1;
                }
                Some(String::from_utf8_lossy(&self.buf[..end.min(MAX_LINE)]).into_owned())
            }
        }
    }

    /// The last line as read, its newline included, not cut.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.buf
    }
}
