//! `pkg` against the real system: this host's apt and dpkg, packages downloaded from its
//! Debian mirror. Needs root and `apt-get`; without them the tests that change the host say
//! so and pass.
//!
//! Every such test holds [`APT`] (apt takes the dpkg lock anyway, and the transaction counter
//! is process-wide), uses packages of its own, small and without dependencies that are not
//! already installed, and restores their prior state when it ends, on a panic too
//! ([`Restore`]).

use std::fs;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use tend_engine::{Checked, Event, VertexState};
use tend_model::{GraphSpec, ResId, ResSpec};

use crate::common::{apply, build, dry, invalid, wait_status};

/// One test at a time touches apt.
static APT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pkg(name: &str) -> ResSpec {
    ResSpec::new("pkg", name)
}

/// Whether this process may run apt (root, Debian tools present); says why not otherwise.
fn can_run_apt(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["/usr/bin/apt-get", "/usr/bin/dpkg-query"]
        .iter()
        .all(|p| fs::metadata(p).is_ok());
    if !(root && tools) {
        eprintln!("{test}: skipped (needs root and apt-get)");
    }
    root && tools
}

/// apt's transaction log, as it is now (`/var/log/apt/history.log`; empty when missing).
fn apt_history() -> String {
    fs::read_to_string("/var/log/apt/history.log").unwrap_or_default()
}

/// Runs a command (apt's environment), panicking with its stderr when it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `apt-get update` once per test binary, if apt has no package lists yet.
fn ensure_lists() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let has_lists = fs::read_dir("/var/lib/apt/lists").is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        });
        if !has_lists {
            run(&["apt-get", "update", "-q"]);
        }
    });
}

/// dpkg's status of a package (`install ok installed`), empty when dpkg does not know it.
fn status(name: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn installed(name: &str) -> bool {
    status(name).ends_with(" installed")
}

/// Puts packages back as they were when it was made: installed, or purged. Its creation
/// makes them absent, so each test starts from the same state.
struct Restore {
    before: Vec<(&'static str, bool)>,
}

impl Restore {
    fn absent(names: &[&'static str]) -> Restore {
        let before: Vec<_> = names.iter().map(|n| (*n, installed(n))).collect();
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !status(n).is_empty())
            .collect();
        if !present.is_empty() {
            let mut cmd = vec!["apt-get", "purge", "-y", "-q"];
            cmd.extend(&present);
            run(&cmd);
        }
        Restore { before }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (name, was) in &self.before {
            // Best effort (a panic here would abort a test already failing).
            let action = match (*was, installed(name)) {
                (true, false) => "install",
                (false, _) if !status(name).is_empty() => "purge",
                _ => continue,
            };
            let out = Command::new("apt-get")
                .args([action, "-y", "-q", name])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                other => eprintln!("restoring {name} ({action}) failed: {other:?}"),
            }
        }
    }
}

/// (a) An absent package with `state: installed`: a dry run reports it and changes nothing,
/// an apply installs it, and the next check finds it in state.
#[tokio::test]
async fn installs_an_absent_package() {
    if !can_run_apt("installs_an_absent_package") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let _restore = Restore::absent(&["sl"]);
    let r = build(pkg("sl").param("state", "installed"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!installed("sl"), "a dry run installed it");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(status("sl"), "install ok installed");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(dry(&r).await.unwrap(), Checked::InState);
}

/// (b) `state: uninstalled` removes an installed package (after a dry run that does not).
#[tokio::test]
async fn uninstalled_removes_it() {
    if !can_run_apt("uninstalled_removes_it") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let _restore = Restore::absent(&["hello"]);
    run(&["apt-get", "install", "-y", "-q", "hello"]);
    let r = build(pkg("hello").param("state", "uninstalled"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(installed("hello"), "a dry run removed it");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(!installed("hello"), "{}", status("hello"));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

/// (c) Run by the engine, a package removed behind tend's back is installed again, woken by
/// the watch on dpkg's status file (the resource has no `Meta:poll`: nothing else would
/// check it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_package_is_reinstalled_by_the_running_engine() {
    if !can_run_apt("a_removed_package_is_reinstalled_by_the_running_engine") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let _restore = Restore::absent(&["tree"]);
    let state = tempfile::tempdir().unwrap();
    let engine = crate::common::engine(state.path(), false);
    let mut events = engine.events();
    let g = GraphSpec {
        resources: vec![pkg("tree")],
        edges: Vec::new(),
    };
    engine.swap(g).await.unwrap();
    let converged = |s: &tend_engine::Status| s.converged && s.count(VertexState::Converged) == 1;
    wait_status(&engine, "the first install", 120, converged).await;
    assert!(installed("tree"));
    // Forget what the install itself set off.
    while events.try_recv().is_ok() {}

    run(&["apt-get", "remove", "-y", "-q", "tree"]);
    let removed = Instant::now();
    let deadline = removed + Duration::from_secs(60);
    while !installed("tree") {
        assert!(
            Instant::now() < deadline,
            "tree was not reinstalled within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "drift repair: reinstalled {:.2} s after apt-get remove returned",
        removed.elapsed().as_secs_f64()
    );
    let me = ResId::new("pkg", "tree");
    let mut drift = false;
    while let Ok(ev) = events.try_recv() {
        if let Event::Drift { id } = ev {
            drift |= *id == me;
        }
    }
    assert!(drift, "no drift event from the watch");
    wait_status(&engine, "converged again", 60, converged).await;
    engine.shutdown().await;
}

/// (d) Five resources applied at the same time make one apt-get transaction (seen in apt's
/// own history log); with `Meta:autogroup: false`, five.
#[tokio::test]
async fn concurrent_applies_share_one_transaction_unless_autogroup_is_off() {
    if !can_run_apt("concurrent_applies_share_one_transaction_unless_autogroup_is_off") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let names = ["figlet", "pv", "sysvbanner", "ninvaders", "nudoku"];
    let _restore = Restore::absent(&names);

    let rs: Vec<_> = names.iter().map(|n| build(pkg(n))).collect();
    let before = tend_resources::pkg_transactions_started();
    let history = apt_history();
    let results = futures::future::join_all(rs.iter().map(apply)).await;
    for (n, res) in names.iter().zip(results) {
        assert_eq!(res.unwrap(), Checked::Changed, "{n}");
        assert!(installed(n), "{n}: {}", status(n));
    }
    assert_eq!(tend_resources::pkg_transactions_started() - before, 1);
    // apt's own log agrees: one new transaction, whose command line names all five.
    let new = &apt_history()[history.len()..];
    let starts: Vec<&str> = new
        .lines()
        .filter(|l| l.starts_with("Start-Date"))
        .collect();
    assert_eq!(starts.len(), 1, "apt transactions in history.log:\n{new}");
    let cmdline = new
        .lines()
        .find(|l| l.starts_with("Commandline:"))
        .unwrap_or_default();
    for n in names {
        assert!(cmdline.contains(n), "{n} not in {cmdline:?}");
    }

    let rs: Vec<_> = names
        .iter()
        .map(|n| {
            let mut s = pkg(n).param("state", "uninstalled");
            s.meta.autogroup = false;
            build(s)
        })
        .collect();
    let before = tend_resources::pkg_transactions_started();
    let results = futures::future::join_all(rs.iter().map(apply)).await;
    for (n, res) in names.iter().zip(results) {
        assert_eq!(res.unwrap(), Checked::Changed, "{n}");
        assert!(!installed(n), "{n}: {}", status(n));
    }
    assert_eq!(
        tend_resources::pkg_transactions_started() - before,
        names.len() as u64
    );
}

/// (e) A package apt does not know, batched with a good one: it fails with apt's words naming
/// it, and the good one is installed all the same.
#[tokio::test]
async fn a_bad_package_in_a_batch_fails_alone() {
    if !can_run_apt("a_bad_package_in_a_batch_fails_alone") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let _restore = Restore::absent(&["jdupes"]);
    let bad = build(pkg("tend-no-such-package"));
    let good = build(pkg("jdupes"));
    let before = tend_resources::pkg_transactions_started();
    let (b, g) = futures::join!(apply(&bad), apply(&good));
    let e = b.unwrap_err().to_string();
    assert!(e.contains("pkg[tend-no-such-package]"), "{e}");
    assert!(
        e.contains("Unable to locate package tend-no-such-package"),
        "{e}"
    );
    assert_eq!(g.unwrap(), Checked::Changed);
    assert!(installed("jdupes"), "{}", status("jdupes"));
    // The batch, then the good package again on its own.
    assert_eq!(tend_resources::pkg_transactions_started() - before, 2);
}

/// Holds dpkg's front-end lock (as a running apt does) from another thread for `hold`.
fn hold_dpkg_lock(hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open("/var/lib/dpkg/lock-frontend")
            .unwrap();
        // SAFETY: a zeroed `flock` is valid; the fields set make it a whole-file write lock.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SAFETY: `f` is open for the whole call and `fl` is a valid `flock`.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLKW, &fl) };
        assert_eq!(rc, 0, "locking: {}", std::io::Error::last_os_error());
        tx.send(()).unwrap();
        std::thread::sleep(hold);
        // Closing the file releases the lock.
        drop(f);
    });
    rx.recv().expect("the lock thread started");
    t
}

/// A transaction started while another program holds the dpkg lock waits for it, instead of
/// failing.
#[tokio::test]
async fn a_transaction_waits_for_the_dpkg_lock() {
    if !can_run_apt("a_transaction_waits_for_the_dpkg_lock") {
        return;
    }
    let _apt = APT.lock().await;
    ensure_lists();
    let _restore = Restore::absent(&["datamash"]);
    let r = build(pkg("datamash"));
    let hold = Duration::from_secs(3);
    let started = Instant::now();
    let locker = hold_dpkg_lock(hold);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(
        started.elapsed() >= hold,
        "apt-get did not wait for the lock"
    );
    assert!(installed("datamash"));
    locker.join().unwrap();
}

/// (f) Bad specs are refused by the check, naming the resource and the field.
#[test]
fn bad_specs_name_the_resource_and_the_field() {
    let e = invalid(pkg("sl").param("state", "latest"));
    assert!(e.contains("pkg[sl]") && e.contains("state"), "{e}");
    assert!(e.contains("did you mean \"newest\""), "{e}");
    let e = invalid(pkg("sl").param("state", "sometimes"));
    assert!(e.contains("pkg[sl]") && e.contains("state"), "{e}");
    assert!(e.contains("\"sometimes\""), "{e}");
    let e = invalid(pkg("sl").param("allowdowngrade", true));
    assert!(e.contains("allowdowngrade"), "{e}");
    let e = invalid(pkg("Bad_Name"));
    assert!(
        e.starts_with("pkg[Bad_Name]: \"Bad_Name\" is not a Debian package name"),
        "{e}"
    );
    let e = invalid(pkg("/tmp/x.deb"));
    assert!(e.contains("by path is not supported"), "{e}");
    let e = invalid(pkg("sl").param("allownonfree", "yes"));
    assert!(e.contains("allownonfree"), "{e}");
}
