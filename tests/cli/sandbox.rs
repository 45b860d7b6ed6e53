//! A fresh temporary directory per test, and ways to run the real `tend` binary in it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `tend` binary under test.
pub const TEND: &str = env!("CARGO_BIN_EXE_tend");

/// How long a one-shot run may take before the test gives up.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A temporary directory where a test writes its graph and where tend writes its files.
/// `TEND_ROOT` points at [`Sandbox::root`], so graphs can say `${TEND_ROOT}/...`.
pub struct Sandbox {
    dir: tempfile::TempDir,
    logs: tempfile::TempDir,
}

/// The outcome of a finished `tend` run.
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// The command line, for failure messages.
    pub cmdline: String,
}

impl Output {
    /// The exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

impl Sandbox {
    /// A new empty sandbox.
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("tend-cli.")
                .tempdir()
                .unwrap(),
            logs: tempfile::Builder::new()
                .prefix("tend-cli-logs.")
                .tempdir()
                .unwrap(),
        }
    }

    /// The sandbox directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file inside the sandbox (creating parent directories) and returns its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// The state directory tests pass with `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut c = Command::new(TEND);
        c.args(args)
            .current_dir(self.root())
            .env("TEND_ROOT", self.root())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        let cmdline = format!(
            "TEND_ROOT={} {TEND} {}",
            self.root().display(),
            args.join(" ")
        );
        (c, cmdline)
    }

    /// Runs `tend ARGS` to completion (at most a minute).
    pub fn run(&self, args: &[&str]) -> Output {
        let (mut c, cmdline) = self.command(args);
        let out = self.logs.path().join("out");
        let err = self.logs.path().join("err");
        c.stdout(std::fs::File::create(&out).unwrap());
        c.stderr(std::fs::File::create(&err).unwrap());
        let mut child = c.spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{cmdline}` did not finish within {RUN_LIMIT:?}\nstderr:\n{}\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default(),
                    self.listing()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
            cmdline,
        }
    }

    /// Runs `tend run GRAPH --converged-timeout 0 --state-dir <sandbox state> EXTRA...` to
    /// completion.
    pub fn run_once(&self, graph: &Path, extra: &[&str]) -> Output {
        let (g, state) = (graph.to_str().unwrap(), self.state_dir());
        let mut args = vec![
            "run",
            g,
            "--converged-timeout",
            "0",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Starts `tend run PROGRAM --state-dir <sandbox state> EXTRA...` in the background.
    pub fn spawn_run(&self, program: &Path, extra: &[&str]) -> Daemon {
        let state = self.state_dir();
        let mut args = vec![
            "run",
            program.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    /// Starts `tend ARGS` in the background; it is killed when the [`Daemon`] is dropped.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        let (mut c, cmdline) = self.command(args);
        let err = self.logs.path().join("daemon.err");
        let out = self.logs.path().join("daemon.out");
        c.stdout(std::fs::File::create(&out).unwrap());
        c.stderr(std::fs::File::create(&err).unwrap());
        Daemon {
            child: std::cell::RefCell::new(Some(c.spawn().unwrap())),
            cmdline,
            stderr: err,
            stdout: out,
        }
    }

    /// A recursive listing of the sandbox, for failure messages.
    pub fn listing(&self) -> String {
        fn walk(dir: &Path, base: &Path, out: &mut String) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap_or(&p);
                let meta = std::fs::symlink_metadata(&p);
                let mode = meta
                    .as_ref()
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                    .unwrap_or(0);
                let _ = writeln!(out, "  {:o} {}", mode, rel.display());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut s = format!("listing of {}:\n", self.root().display());
        walk(self.root(), self.root(), &mut s);
        s
    }

    /// A failure message with the command, its output and the directory listing.
    pub fn explain(&self, what: &str, out: &Output) -> String {
        format!(
            "{what}\ncommand: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}\n{}",
            out.cmdline,
            out.status,
            out.stdout,
            out.stderr,
            self.listing()
        )
    }

    /// A failure context for a background `tend`: its command, stderr so far and the listing.
    pub fn explain_daemon(&self, d: &Daemon) -> String {
        format!(
            "command: {}\nstderr:\n{}\n{}",
            d.cmdline,
            d.stderr(),
            self.listing()
        )
    }
}

/// A `tend` process running in the background.
pub struct Daemon {
    child: std::cell::RefCell<Option<Child>>,
    /// The command line.
    pub cmdline: String,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.borrow().as_ref().unwrap().id() as i32
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Whether it exited, and how.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child
            .borrow_mut()
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}) failed: {e}", self.pid()));
    }

    /// Waits for it to exit, at most `limit`.
    pub fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.get_mut().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds, or panics after `limit` with `what`
/// and `context()` (command, output, listing).
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The file's content, or `None` if it cannot be read.
pub fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The file's permission bits.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}
