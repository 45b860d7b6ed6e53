//! Black-box tests: real `tend` processes, real etcd, several hosts on loopback.
//!
//! This library is the harness the tests in `tests/` share: [`Host`] runs one `tend run`
//! daemon with its own state directory and scratch root, [`tend`] runs a one-shot command,
//! and [`wait_for`] polls a condition with a deadline (tests never sleep for a fixed time).
//! etcd itself comes from `tend_testkit` (a dev-dependency of the tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `tend` binary of this workspace (`target/<profile>/tend`, built by
/// `cargo test --workspace`).
pub fn tend_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> -> target/<profile>/tend
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join("tend");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build --bin tend`, or run the whole suite with `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Runs `tend ARGS` to completion.
pub fn tend(args: &[&str]) -> Output {
    Command::new(tend_binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running tend")
}

/// Polls `cond` every 20 ms until it holds or `within` has passed; returns whether it held.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One host: a `tend run` daemon with its own state directory and scratch root
/// (`TEND_ROOT`), killed when dropped.
pub struct Host {
    /// Host name.
    pub name: String,
    /// The host's scratch root, where its programs write.
    pub root: PathBuf,
    state: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl Host {
    /// Starts `tend run [PROGRAM] --etcd URL --hostname NAME` with a fresh state dir and root.
    pub fn start(name: &str, etcd: &str, program: Option<&Path>, extra: &[&str]) -> Host {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).expect("root dir");
        let mut h = Host {
            name: name.to_string(),
            root,
            state: tmp.path().join("state"),
            log: tmp.path().join("tend.log"),
            child: None,
            _tmp: tmp,
        };
        h.spawn(etcd, program, extra);
        h
    }

    /// (Re)starts the daemon process.
    pub fn spawn(&mut self, etcd: &str, program: Option<&Path>, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(tend_binary());
        cmd.arg("run");
        if let Some(p) = program {
            cmd.arg(p);
        }
        cmd.args(["--etcd", etcd, "--hostname", &self.name]);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "none"]);
        }
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(extra)
            .env("TEND_ROOT", &self.root)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("spawning tend run"));
    }

    /// Kills the daemon with SIGKILL (no orderly shutdown: its session must expire).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host's state directory (`--state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The file's content under this host's root, if it exists.
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}
