//! `svc` against a real systemd, booted in a container of its own.
//!
//! The host's systemd is not PID 1, and systemd must never boot on the host's root file system
//! (its boot units would clean up the host's `/tmp`, among others), so the tests boot one with
//! `systemd-nspawn --boot` on a Debian root file system of its own: made once by `mmdebstrap`
//! under the target directory (`<target>/svc-rootfs-*`, built into a temporary directory and
//! renamed, so a killed build leaves no broken cache) and booted with `--volatile=overlay`
//! (every write goes to a tmpfs, the cache stays as built) and `--private-network`. One
//! container serves every test of this file ([`container`]); the kind reaches its system bus
//! through `/proc/<its init>/root/run/dbus/system_bus_socket`. The test units are written into
//! the container when it has booted ([`UNITS`]), each test uses units of its own, and tests
//! observe systemd with `busctl` and act behind tend's back with the container's own
//! `systemctl` (through `nsenter`), not through the code under test.
//!
//! The container is torn down when the test process exits: `atexit` stops it (SIGTERM to
//! nspawn, which powers the container off; SIGKILL to its init after 5 s), and nspawn has
//! `PR_SET_PDEATHSIG` so it goes down with a killed test process too (a `static` is never
//! dropped, so a `Drop` guard would never run).
//!
//! Without root, `systemd-nspawn`, `mmdebstrap`, `nsenter` or `busctl` the tests fail, saying
//! what to install.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tend_engine::{Checked, Engine, Event, VertexState};
use tend_model::{EdgeSpec, GraphSpec, ResId, ResSpec};

use crate::common::{apply, build, dry, eventually, invalid, refresh, wait_status, watch};

/// The cached root file system (the suffix changes when what goes into it does).
const ROOTFS: &str = "svc-rootfs-bookworm-1";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const PACKAGES: &str = "systemd,systemd-sysv,dbus";

/// Tests that make systemd reload (enable, disable, a changed unit file), count reloads, or
/// count checks (a reload wakes every `svc` watch) take turns.
pub(crate) static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A plain long-running service with an `[Install]` section.
const SLEEPER: &str = "[Unit]\nDescription=tend test\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";

/// The test units, written into the container once it has booted: (name, content).
const UNITS: &[(&str, &str)] = &[
    ("tend-test-start.service", SLEEPER),
    ("tend-test-stop.service", SLEEPER),
    ("tend-test-enable.service", SLEEPER),
    ("tend-test-noop.service", SLEEPER),
    ("tend-test-repair.service", SLEEPER),
    ("tend-test-refresh.service", SLEEPER),
    ("tend-test-notify.service", SLEEPER),
    ("tend-test-dr-1.service", SLEEPER),
    ("tend-test-dr-2.service", SLEEPER),
    ("tend-test-dr-3.service", SLEEPER),
    ("tend-test-bench.service", SLEEPER),
    ("tend-test-plain.service", SLEEPER),
    ("tend-test-rules.service", SLEEPER),
    (
        "tend-test-reload.service",
        "[Unit]\nDescription=tend test: reloadable\n\n[Service]\nExecStart=/bin/sleep infinity\n\
         ExecReload=/bin/sh -c 'echo reloaded >> /run/tend-test-reload.log'\n",
    ),
    // The service of the `cron` tests' timers (resources/tests/cron.rs).
    (
        "tend-cron-test.service",
        "[Unit]\nDescription=tend test: started by a cron timer\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
    ),
    (
        "tend-test-static.service",
        "[Unit]\nDescription=tend test: no [Install]\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    ),
];

/// The booted container.
pub(crate) struct Container {
    /// The container's init (systemd), as the host sees it.
    init: i32,
    /// Its system bus, for the kind, `busctl` and the benchmark.
    address: String,
}

static CONTAINER: OnceLock<Result<Container, String>> = OnceLock::new();

/// nspawn and the container's init, for the `atexit` teardown.
static NSPAWN_PID: AtomicI32 = AtomicI32::new(0);
static INIT_PID: AtomicI32 = AtomicI32::new(0);

/// The container, booted on first use; every later test panics with the same message when
/// booting failed.
pub(crate) fn container() -> &'static Container {
    match CONTAINER.get_or_init(|| {
        let t = Instant::now();
        let c = boot();
        if c.is_ok() {
            eprintln!(
                "svc: systemd container ready in {:.2} s",
                t.elapsed().as_secs_f64()
            );
        }
        c
    }) {
        Ok(c) => c,
        Err(e) => panic!("svc tests: {e}"),
    }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `<target>`, from this test binary's path (`<target>/debug/deps/resources-*`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary is under <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the root file system unless it is cached; held under a lock file so that two test
/// processes do not build it at once.
fn rootfs() -> Result<PathBuf, String> {
    let target = target_dir();
    let dir = target.join(ROOTFS);
    if dir.join("usr/lib/systemd/systemd").exists() {
        return Ok(dir);
    }
    fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(format!("{ROOTFS}.lock"));
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor open for the whole call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("locking {}", lock_path.display()));
    }
    if dir.join("usr/lib/systemd/systemd").exists() {
        return Ok(dir);
    }
    let tmp = target.join(format!("{ROOTFS}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| format!("removing {}: {e}", tmp.display()))?;
    }
    eprintln!(
        "svc: building the container's root file system in {} (mmdebstrap)",
        tmp.display()
    );
    let t = Instant::now();
    let out = Command::new("mmdebstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&tmp)
        .arg(MIRROR)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running mmdebstrap: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mmdebstrap {SUITE} failed ({}); it needs the Debian mirror {MIRROR}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::rename(&tmp, &dir).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    eprintln!(
        "svc: root file system built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

extern "C" fn teardown() {
    let nspawn = NSPAWN_PID.load(Ordering::SeqCst);
    let init = INIT_PID.load(Ordering::SeqCst);
    if nspawn <= 0 {
        return;
    }
    // SAFETY: signals to processes this test started.
    unsafe { libc::kill(nspawn, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{init}/root/usr")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if init > 0 && Path::new(&format!("/proc/{init}")).exists() {
        // Killing a PID namespace's init kills every process in it.
        // SAFETY: as above.
        unsafe { libc::kill(init, libc::SIGKILL) };
    }
}

fn boot() -> Result<Container, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("booting systemd in a container needs root".into());
    }
    let missing: Vec<&str> = ["systemd-nspawn", "mmdebstrap", "nsenter", "busctl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {}: install them with `apt-get install mmdebstrap systemd-container systemd util-linux` (or `make deps`)",
            missing.join(", ")
        ));
    }
    let root = rootfs()?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let machine = format!("tend-test-{}-{stamp:x}", std::process::id());
    // The last boot's console, for when it fails.
    let log_path = target_dir().join("svc-container.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new("systemd-nspawn");
    cmd.arg("--boot")
        .arg("-D")
        .arg(&root)
        .arg(format!("--machine={machine}"))
        // No machined or host systemd to register with or to make a scope unit.
        .args(["--register=no", "--keep-unit"])
        .args([
            "--volatile=overlay",
            "--private-network",
            "--console=passive",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nspawn powers the container off on SIGTERM.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The parent-death signal goes with the thread that forks: spawn from a thread that lives
    // as long as the container (it waits for nspawn).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("svc-container".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id() as i32));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("starting systemd-nspawn: {e}")));
            }
        })
        .map_err(|e| e.to_string())?;
    let nspawn = rx.recv().map_err(|e| e.to_string())??;
    NSPAWN_PID.store(nspawn, Ordering::SeqCst);
    // SAFETY: registers a plain function.
    unsafe { libc::atexit(teardown) };

    let log_tail = || {
        let s = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let init = loop {
        // nspawn's children before the container's init (its "outer child", which sets up
        // the mounts and exits) are nspawn too: wait for the one that is systemd.
        if let Some(p) = children(nspawn).into_iter().find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == "systemd")
        }) {
            break p;
        }
        if !Path::new(&format!("/proc/{nspawn}")).exists() || Instant::now() > deadline {
            return Err(format!(
                "systemd-nspawn did not start the container:\n{}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    INIT_PID.store(init, Ordering::SeqCst);
    let address = format!("unix:path=/proc/{init}/root/run/dbus/system_bus_socket");
    loop {
        let state = busctl_at(
            &address,
            &["get-property", DEST, ROOT, MANAGER, "SystemState"],
        );
        match state.as_deref() {
            Ok("s \"running\"") | Ok("s \"degraded\"") => break,
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "systemd in the container did not finish booting within 60 s ({state:?}):\n{}",
                    log_tail()
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let units = PathBuf::from(format!("/proc/{init}/root/etc/systemd/system"));
    for (name, content) in UNITS {
        fs::write(units.join(name), content).map_err(|e| format!("writing {name}: {e}"))?;
    }
    busctl_at(&address, &["call", DEST, ROOT, MANAGER, "Reload"])?;
    tend_resources::svc_use_system_bus(&address);
    Ok(Container { init, address })
}

const DEST: &str = "org.freedesktop.systemd1";
const ROOT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";

/// `busctl` at a bus address; its output, trimmed.
fn busctl_at(address: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(args)
        .output()
        .map_err(|e| format!("busctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "busctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn busctl(args: &[&str]) -> String {
    busctl_at(&container().address, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A unit's property, without its type (`active`, `1234`, `true`).
pub(crate) fn prop(unit: &str, iface: &str, name: &str) -> String {
    let path = busctl(&["call", DEST, ROOT, MANAGER, "LoadUnit", "s", unit]);
    let path = path.trim_start_matches("o ").trim_matches('"').to_string();
    let v = busctl(&["get-property", DEST, &path, iface, name]);
    let v = v.split_once(' ').map(|(_, v)| v).unwrap_or(&v);
    v.trim_matches('"').to_string()
}

pub(crate) fn active(unit: &str) -> String {
    prop(unit, UNIT, "ActiveState")
}

pub(crate) fn unit_file_state(unit: &str) -> String {
    prop(unit, UNIT, "UnitFileState")
}

fn main_pid(unit: &str) -> String {
    prop(unit, SERVICE, "MainPID")
}

/// The container's own `systemctl`, run inside it (behind tend's back).
pub(crate) fn systemctl(args: &[&str]) {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(container().init.to_string())
        .args(["-m", "-p", "-u", "-i", "-n", "systemctl"])
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A path inside the container, as the host sees it.
pub(crate) fn inside(path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{path}", container().init))
}

fn svc(name: &str) -> ResSpec {
    ResSpec::new("svc", name)
}

fn engine() -> (Engine, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let e = crate::common::engine(state.path(), false);
    (e, state)
}

fn converged(n: usize) -> impl Fn(&tend_engine::Status) -> bool {
    move |s| s.converged && s.count(VertexState::Converged) == n
}

/// A stopped unit with `state: running`: a dry run reports it and changes nothing; an apply
/// returns once it is active; the next check finds it in state.
#[tokio::test]
async fn starts_a_stopped_unit() {
    let unit = "tend-test-start.service";
    container();
    systemctl(&["stop", unit]);
    let r = build(svc("tend-test-start").param("state", "running"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(active(unit), "inactive", "a dry run started it");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    // No waiting: the job was done when check_apply returned.
    assert_eq!(active(unit), "active");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

/// A running unit with `state: stopped` is stopped.
#[tokio::test]
async fn stops_a_running_unit() {
    let unit = "tend-test-stop.service";
    container();
    systemctl(&["start", unit]);
    let r = build(svc("tend-test-stop.service").param("state", "stopped"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(active(unit), "active", "a dry run stopped it");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(active(unit), "inactive");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

/// `startup` enables and disables (UnitFileState and the symlink), after a dry run that does
/// not; a unit without an `[Install]` section cannot be enabled, and says so.
#[tokio::test]
async fn enables_and_disables() {
    let _turn = RELOADING.lock().await;
    let unit = "tend-test-enable.service";
    let link = inside("/etc/systemd/system/multi-user.target.wants/tend-test-enable.service");
    container();
    assert_eq!(unit_file_state(unit), "disabled");
    let on = build(svc("tend-test-enable").param("startup", "enabled"));
    assert_eq!(dry(&on).await.unwrap(), Checked::Changed);
    assert_eq!(unit_file_state(unit), "disabled", "a dry run enabled it");
    assert_eq!(apply(&on).await.unwrap(), Checked::Changed);
    assert_eq!(unit_file_state(unit), "enabled");
    assert!(fs::symlink_metadata(&link).is_ok(), "no {}", link.display());
    assert_eq!(apply(&on).await.unwrap(), Checked::InState);
    assert_eq!(active(unit), "inactive", "enabling is not starting");

    let off = build(svc("tend-test-enable").param("startup", "disabled"));
    assert_eq!(apply(&off).await.unwrap(), Checked::Changed);
    assert_eq!(unit_file_state(unit), "disabled");
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "{} is left",
        link.display()
    );
    assert_eq!(apply(&off).await.unwrap(), Checked::InState);

    let e = apply(&build(svc("tend-test-static").param("startup", "enabled")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("svc[tend-test-static]: tend-test-static.service cannot be enabled"),
        "{e}"
    );
    assert!(e.contains("no [Install] section"), "{e}");
}

/// `--noop` (the engine's noop mode): the resource is reported as one that would change, and
/// the unit is left stopped and disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_changes_nothing_and_reports() {
    // No daemon-reload by another test while it counts checks (each one wakes every watch).
    let _turn = RELOADING.lock().await;
    let unit = "tend-test-noop.service";
    container();
    let state = tempfile::tempdir().unwrap();
    let engine = crate::common::engine(state.path(), true);
    let mut events = engine.events();
    let g = GraphSpec {
        resources: vec![svc("tend-test-noop")
            .param("state", "running")
            .param("startup", "enabled")],
        edges: Vec::new(),
    };
    engine.swap(g).await.unwrap();
    wait_status(&engine, "the noop run", 30, converged(1)).await;
    let mut noop = false;
    while let Ok(ev) = events.try_recv() {
        if let Event::CheckApplied { result, .. } = ev {
            noop |= result == tend_engine::CheckResult::Noop;
        }
    }
    assert!(noop, "the check was not reported as noop");
    assert_eq!(active(unit), "inactive");
    assert_eq!(unit_file_state(unit), "disabled");
    // A check of an inactive unit makes systemd load it again (and collect it right after):
    // that must not wake the watch, or the resource would check itself in a loop.
    let checks = || engine.status().borrow().sorted()[0].1.checks;
    let before = checks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        checks(),
        before,
        "checks kept running with nothing changing"
    );
    engine.shutdown().await;
}

/// A unit systemd does not know fails the resource, naming it; so does a `refresh_action:
/// reload` of a unit that cannot reload.
#[tokio::test]
async fn a_missing_unit_fails_naming_it() {
    container();
    let r = build(svc("tend-test-no-such-unit").param("state", "running"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "svc[tend-test-no-such-unit]: unit tend-test-no-such-unit.service not found (no unit file systemd knows of)"
    );
    assert!(dry(&r).await.is_err(), "a dry run says so too");
}

/// Run by the engine, a missing unit fails its vertex and stays failed: systemd loading the
/// missing unit for each check (a `UnitNew` each time) does not wake the watch into a loop of
/// checks (with the default backoff a drift event would retry at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_unit_is_not_checked_in_a_loop() {
    let _turn = RELOADING.lock().await;
    container();
    let (engine, _state) = engine();
    let g = GraphSpec {
        resources: vec![svc("tend-test-no-such-unit-2").param("state", "running")],
        edges: Vec::new(),
    };
    engine.swap(g).await.unwrap();
    wait_status(&engine, "the failure", 30, |s| {
        s.converged && s.count(VertexState::Failed) == 1
    })
    .await;
    let checks = || engine.status().borrow().sorted()[0].1.checks;
    let before = checks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(checks() <= before + 1, "{} checks after {before}", checks());
    let e = engine.status().borrow().sorted()[0].1.last_error.clone();
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("tend-test-no-such-unit-2.service not found")),
        "{e:?}"
    );
    engine.shutdown().await;
}

/// Without a session bus (none in this test process), a user unit fails with a message that
/// names the bus and its address.
#[tokio::test]
async fn an_unreachable_bus_is_named() {
    let r = build(svc("tend-test-user").param("session", true));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "svc[tend-test-user]: cannot reach systemd's D-Bus session bus at unix:path="
        ),
        "{e}"
    );
}

/// Bad specs are refused by the check, naming the resource and the field.
#[test]
fn bad_specs_name_the_resource_and_the_field() {
    let e = invalid(svc("nginx").param("state", "started"));
    assert!(e.contains("svc[nginx]") && e.contains("state"), "{e}");
    let e = invalid(svc("nginx").param("startup", "yes"));
    assert!(e.contains("startup"), "{e}");
    let e = invalid(svc("nginx").param("refresh_action", "bounce"));
    assert!(e.contains("refresh_action"), "{e}");
    let e = invalid(svc("/etc/systemd/system/nginx.service"));
    assert!(
        e.starts_with("svc[/etc/systemd/system/nginx.service]: "),
        "{e}"
    );
    assert!(e.contains("not its file"), "{e}");
    let e = invalid(svc("getty@"));
    assert!(e.contains("template"), "{e}");
}

/// A `file` that writes a unit file is a dependency of the `svc` of that unit (automatic
/// edge: what the `file` provides, the `svc` requires), whichever of systemd's directories it
/// is in.
#[test]
fn a_unit_file_is_an_automatic_dependency() {
    let r = tend_resources::registry();
    let keys = |spec: &ResSpec| {
        let f = r.get(&spec.kind).unwrap().autoedges.unwrap();
        tend_engine::AutoEdges::of(f, spec)
    };
    let needs = keys(&svc("app").param("state", "running")).requires;
    for path in [
        "/etc/systemd/system/app.service",
        "/lib/systemd/system/app.service",
        "/usr/lib/systemd/system/app.service",
        "/etc/systemd/system/app.service.d/",
    ] {
        let provides = keys(&ResSpec::new("file", path)).provides;
        assert!(
            provides.iter().any(|k| needs.contains(k)),
            "{path}: {provides:?} / {needs:?}"
        );
    }
}

/// Run by the engine, a unit stopped with `systemctl stop` behind tend's back is started
/// again, woken by the watch (no `Meta:poll`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_behind_tends_back_is_repaired() {
    let unit = "tend-test-repair.service";
    container();
    systemctl(&["stop", unit]);
    let (engine, _state) = engine();
    let mut events = engine.events();
    let g = GraphSpec {
        resources: vec![svc("tend-test-repair").param("state", "running")],
        edges: Vec::new(),
    };
    engine.swap(g).await.unwrap();
    wait_status(&engine, "the first start", 30, converged(1)).await;
    assert_eq!(active(unit), "active");
    while events.try_recv().is_ok() {}

    systemctl(&["stop", unit]);
    let stopped = Instant::now();
    eventually("the unit to be started again", 10, || {
        active(unit) == "active"
    })
    .await;
    eprintln!(
        "svc repair: active again {:.0} ms after systemctl stop returned (busctl polling included)",
        stopped.elapsed().as_secs_f64() * 1e3
    );
    let me = ResId::new("svc", "tend-test-repair");
    let mut drift = false;
    while let Ok(ev) = events.try_recv() {
        if let Event::Drift { id } = ev {
            drift |= *id == me;
        }
    }
    assert!(drift, "no drift event from the watch");
    wait_status(&engine, "converged again", 30, converged(1)).await;
    engine.shutdown().await;
}

/// The watch sees a unit stopped, started and enabled behind tend's back, each an event.
#[tokio::test]
async fn the_watch_sees_changes_made_behind_tends_back() {
    let _turn = RELOADING.lock().await;
    let unit = "tend-test-plain.service";
    container();
    let r = build(svc("tend-test-plain"));
    let w = watch(&r).await;
    systemctl(&["start", unit]);
    w.event("systemctl start").await;
    w.clear();
    systemctl(&["stop", unit]);
    w.event("systemctl stop").await;
    w.clear();
    systemctl(&["enable", unit]);
    w.event("systemctl enable").await;
    systemctl(&["disable", unit]);
    assert!(!w.finished());
}

/// A watch dropped on a runtime that then ends (each `#[tokio::test]` has its own, and a
/// program may run short-lived ones) leaves the next watch its signals: zbus shares match
/// rules between streams and deregisters a dropped one from a task on the dropping runtime,
/// which used to die half-way and leave the bus without the rule (the CI run of 2026-12-07
/// lost `systemctl enable` that way). A race: without the fix this failed about one run in
/// ten here, in the first round.
#[tokio::test]
async fn a_watch_dropped_on_an_ended_runtime_leaves_the_next_its_signals() {
    let _turn = RELOADING.lock().await;
    container();
    let r = build(svc("tend-test-rules"));
    for round in 0..5 {
        let r2 = r.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let w = watch(&r2).await;
                drop(w);
                // Let the aborted watch go and the deregistration start, then end the runtime.
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
            });
        })
        .join()
        .unwrap();
        let w = watch(&r).await;
        systemctl(&["daemon-reload"]);
        w.event(&format!("daemon-reload, round {round}")).await;
    }
}

/// A refresh restarts a running unit (a new main process and activation time), and nothing
/// else does.
#[tokio::test]
async fn a_refresh_restarts() {
    let unit = "tend-test-refresh.service";
    container();
    systemctl(&["start", unit]);
    let r = build(svc("tend-test-refresh").param("state", "running"));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let (pid, since) = (main_pid(unit), prop(unit, UNIT, "ActiveEnterTimestamp"));
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(active(unit), "active");
    assert_ne!(main_pid(unit), pid, "not restarted");
    assert_ne!(prop(unit, UNIT, "ActiveEnterTimestamp"), since);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // A stopped unit is not started by a refresh, and `none` does nothing.
    systemctl(&["stop", unit]);
    let idle = build(svc("tend-test-refresh"));
    assert_eq!(refresh(&idle).await.unwrap(), Checked::InState);
    assert_eq!(active(unit), "inactive");
    systemctl(&["start", unit]);
    let pid = main_pid(unit);
    let none = build(svc("tend-test-refresh").param("refresh_action", "none"));
    assert_eq!(refresh(&none).await.unwrap(), Checked::InState);
    assert_eq!(main_pid(unit), pid);
}

/// `refresh_action: reload` reloads (ExecReload runs, the main process stays); on a unit
/// without ExecReload it fails, naming the field.
#[tokio::test]
async fn refresh_action_reload_reloads() {
    let unit = "tend-test-reload.service";
    let log = inside("/run/tend-test-reload.log");
    container();
    systemctl(&["start", unit]);
    let reloads = || {
        fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let before = reloads();
    let pid = main_pid(unit);
    let r = build(
        svc("tend-test-reload")
            .param("state", "running")
            .param("refresh_action", "reload"),
    );
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(reloads(), before + 1, "ExecReload did not run");
    assert_eq!(main_pid(unit), pid, "reloading restarted it");

    let r = build(svc("tend-test-reload").param("refresh_action", "reload-or-restart"));
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(reloads(), before + 2);
    assert_eq!(main_pid(unit), pid);

    systemctl(&["start", "tend-test-refresh.service"]);
    let r = build(svc("tend-test-refresh").param("refresh_action", "reload"));
    let e = refresh(&r).await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("refresh_action"));
    assert!(e.message.contains("svc[tend-test-refresh]"), "{e}");
    assert!(e.message.contains("no ExecReload="), "{e}");
}

/// Rewrites a unit file inside the container (as a `file` resource would).
fn rewrite_unit(unit: &str, env: &str) {
    let content = SLEEPER.replace(
        "[Service]\n",
        &format!("[Service]\nEnvironment=TEND_TEST={env}\n"),
    );
    let path = inside(&format!("/etc/systemd/system/{unit}"));
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
}

/// Three units whose files changed on disk, refreshed at the same time: one daemon-reload for
/// all three, then each restarts with its new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_unit_files_share_one_daemon_reload() {
    let _turn = RELOADING.lock().await;
    container();
    let units = ["tend-test-dr-1", "tend-test-dr-2", "tend-test-dr-3"];
    let generation = format!(
        "{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    for u in units {
        systemctl(&["start", &format!("{u}.service")]);
        rewrite_unit(&format!("{u}.service"), &generation);
        assert_eq!(
            prop(&format!("{u}.service"), UNIT, "NeedDaemonReload"),
            "true"
        );
    }
    let rs: Vec<_> = units
        .iter()
        .map(|u| build(svc(u).param("state", "running")))
        .collect();
    let before = tend_resources::svc_daemon_reloads();
    let results = futures::future::join_all(rs.iter().map(refresh)).await;
    for (u, res) in units.iter().zip(results) {
        assert_eq!(res.unwrap(), Checked::Changed, "{u}");
        let unit = format!("{u}.service");
        assert_eq!(prop(&unit, UNIT, "NeedDaemonReload"), "false", "{u}");
        let env = prop(&unit, SERVICE, "Environment");
        assert!(
            env.contains(&format!("TEND_TEST={generation}")),
            "{u}: {env}"
        );
    }
    assert_eq!(tend_resources::svc_daemon_reloads() - before, 1);
}

/// Through the engine: a `file` that rewrites a unit file notifies the `svc`, which reloads
/// systemd and restarts the unit with the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_edge_from_the_unit_file_restarts_the_unit() {
    let _turn = RELOADING.lock().await;
    let unit = "tend-test-notify.service";
    container();
    systemctl(&["start", unit]);
    let pid = main_pid(unit);
    let path = inside(&format!("/etc/systemd/system/{unit}"));
    let path = path.to_str().unwrap();
    let content = SLEEPER.replace("[Service]\n", "[Service]\nEnvironment=TEND_TEST=notified\n");
    let (engine, _state) = engine();
    let file = ResSpec::new("file", path).param("content", content.as_str());
    let s = svc("tend-test-notify").param("state", "running");
    let g = GraphSpec {
        edges: vec![EdgeSpec::new(file.id(), s.id(), true)],
        resources: vec![file, s],
    };
    engine.swap(g).await.unwrap();
    wait_status(&engine, "the graph", 30, converged(2)).await;
    assert_ne!(main_pid(unit), pid, "not restarted");
    assert!(prop(unit, SERVICE, "Environment").contains("TEND_TEST=notified"));
    assert_eq!(prop(unit, UNIT, "NeedDaemonReload"), "false");
    engine.shutdown().await;
}

/// Percentile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A benchmark as much as a test: how long after a unit went inactive behind tend's back it
/// is active again, over `SVC_BENCH_TRIES` tries (default 5), against systemd's own start time
/// of the same unit (`StartUnit` to active). Timed from `PropertiesChanged` signals on a
/// connection of the test's own. `bench/svc.sh` runs it with more tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_latency() {
    let tries: usize = std::env::var("SVC_BENCH_TRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let unit = "tend-test-bench.service";
    let c = container();
    systemctl(&["stop", unit]);
    let conn = zbus::connection::Builder::address(c.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    conn.call_method(Some(DEST), ROOT, Some(MANAGER), "Subscribe", &())
        .await
        .unwrap();
    let path: zbus::zvariant::OwnedObjectPath = conn
        .call_method(Some(DEST), ROOT, Some(MANAGER), "LoadUnit", &(unit,))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .path(path.as_str())
        .unwrap()
        .interface("org.freedesktop.DBus.Properties")
        .unwrap()
        .member("PropertiesChanged")
        .unwrap()
        .arg(0, UNIT)
        .unwrap()
        .build();
    let mut changes = zbus::MessageStream::for_match_rule(rule, &conn, Some(1024))
        .await
        .unwrap();
    // Waits for ActiveState to become `want`; returns when the signal arrived.
    let mut until = async |want: &str| -> Instant {
        let wait = async {
            while let Some(m) = changes.next().await {
                let m = m.unwrap();
                let (_, changed, _): (
                    String,
                    std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
                    Vec<String>,
                ) = m.body().deserialize().unwrap();
                let state = changed
                    .get("ActiveState")
                    .and_then(|v| <&str>::try_from(v).ok().map(str::to_string));
                if state.as_deref() == Some(want) {
                    return Instant::now();
                }
            }
            panic!("the signal stream ended");
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("{unit} did not become {want} within 10 s"))
    };
    let call = |method: &'static str| {
        let conn = conn.clone();
        async move {
            conn.call_method(Some(DEST), ROOT, Some(MANAGER), method, &(unit, "replace"))
                .await
                .unwrap();
        }
    };

    // systemd's own start time, the unit unmanaged.
    let mut own = Vec::new();
    for _ in 0..tries {
        let t = Instant::now();
        call("StartUnit").await;
        own.push(until("active").await.duration_since(t).as_secs_f64() * 1e3);
        call("StopUnit").await;
        until("inactive").await;
    }

    let (engine, _state) = engine();
    let g = GraphSpec {
        resources: vec![svc("tend-test-bench").param("state", "running")],
        edges: Vec::new(),
    };
    engine.swap(g).await.unwrap();
    until("active").await;
    wait_status(&engine, "the first start", 30, converged(1)).await;
    let mut repair = Vec::new();
    for _ in 0..tries {
        call("StopUnit").await;
        let down = until("inactive").await;
        let up = until("active").await;
        repair.push(up.duration_since(down).as_secs_f64() * 1e3);
        wait_status(&engine, "converged again", 30, converged(1)).await;
    }
    engine.shutdown().await;
    own.sort_by(f64::total_cmp);
    repair.sort_by(f64::total_cmp);
    let (o50, o99) = (percentile(&own, 50.0), percentile(&own, 99.0));
    let (r50, r99) = (percentile(&repair, 50.0), percentile(&repair, 99.0));
    eprintln!(
        "svc bench ({tries} tries): repair after a stop behind tend's back: p50 {r50:.1} ms, \
         p99 {r99:.1} ms; systemd's own start (StartUnit to active): p50 {o50:.1} ms, \
         p99 {o99:.1} ms; beyond systemd's start: p50 {:.1} ms",
        r50 - o50
    );
    assert_eq!(repair.len(), tries);
}
