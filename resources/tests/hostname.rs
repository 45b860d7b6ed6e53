//! `hostname` against the real kernel and files, never the host's own: each test that changes
//! a name runs again as a child of this test binary under `unshare --uts --mount` (a UTS and
//! a mount namespace of its own), checks that it really is in namespaces other than PID 1's,
//! mounts a tmpfs over `/etc` there, and only then lets the kind set the names. The host's
//! name and `/etc` are never touched.

use std::process::Command;
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

/// Set in the child that runs a test's body inside the namespaces: the parent's namespaces.
const INNER: &str = "TEND_TEST_HOSTNAME_INNER";

/// This process's UTS and mount namespaces (`uts:[4026531838] mnt:[4026531841]`).
fn namespaces() -> String {
    ["uts", "mnt"]
        .map(|ns| {
            std::fs::read_link(format!("/proc/self/ns/{ns}"))
                .unwrap()
                .display()
                .to_string()
        })
        .join(" ")
}

/// Runs `body` in a UTS and mount namespace of its own with a tmpfs on `/etc`: in the child
/// started for `test` (its path in this binary), or, in the parent, starts that child and
/// fails when it fails.
fn in_namespaces(test: &str, body: impl std::future::Future<Output = ()>) {
    if std::env::var_os(INNER).is_none() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("unshare")
            .args(["--uts", "--mount", "--propagation", "private"])
            .arg(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(INNER, namespaces())
            .output()
            .expect("running unshare (util-linux)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{stderr}");
        assert!(
            out.status.success(),
            "{test} in its namespaces failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains("1 passed"),
            "{test} did not run in the child:\n{stdout}"
        );
        return;
    }
    let parent = std::env::var(INNER).unwrap();
    for (mine, theirs) in namespaces().split(' ').zip(parent.split(' ')) {
        assert_ne!(mine, theirs, "not in a namespace of its own: refusing");
    }
    // SAFETY: mounts a tmpfs over /etc in this process's private mount namespace.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/etc".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "tmpfs on /etc: {}", std::io::Error::last_os_error());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

fn kernel_name() -> String {
    let mut buf = [0u8; 65];
    // SAFETY: a buffer valid for its length.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let end = buf.iter().position(|b| *b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

/// Sets the kernel's name behind tend's back.
fn set_kernel_name(name: &str) {
    // SAFETY: pointer and length of `name`.
    assert_eq!(
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) },
        0,
        "sethostname: {}",
        std::io::Error::last_os_error()
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The three names set from their fields; a dry run changes nothing; `hostname` alone is the
/// fallback of all three; the other lines of `/etc/machine-info` are kept.
#[test]
fn sets_the_three_names() {
    in_namespaces("hostname::sets_the_three_names", async {
        set_kernel_name("tend-before");
        std::fs::write("/etc/hostname", "# the static name\nold-static\n").unwrap();
        std::fs::write("/etc/machine-info", "CHASSIS=vm\nPRETTY_HOSTNAME=old\n").unwrap();
        let r = build(
            ResSpec::new("hostname", "names")
                .param("transient_hostname", "tend-t1")
                .param("static_hostname", "tend-s1")
                .param("pretty_hostname", "Tend's \"box\""),
        );
        assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
        assert_eq!(kernel_name(), "tend-before", "a dry run set the name");
        assert_eq!(read("/etc/hostname"), "# the static name\nold-static\n");
        assert_eq!(
            read("/etc/machine-info"),
            "CHASSIS=vm\nPRETTY_HOSTNAME=old\n"
        );

        assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
        assert_eq!(kernel_name(), "tend-t1");
        assert_eq!(read("/etc/hostname"), "tend-s1\n");
        assert_eq!(
            read("/etc/machine-info"),
            "CHASSIS=vm\nPRETTY_HOSTNAME=\"Tend's \\\"box\\\"\"\n"
        );
        assert_eq!(apply(&r).await.unwrap(), Checked::InState);

        // `hostname` is the fallback of each field left empty.
        let all = build(
            ResSpec::new("hostname", "all")
                .param("hostname", "tend-all")
                .param("pretty_hostname", "Pretty"),
        );
        assert_eq!(apply(&all).await.unwrap(), Checked::Changed);
        assert_eq!(kernel_name(), "tend-all");
        assert_eq!(read("/etc/hostname"), "tend-all\n");
        assert_eq!(
            read("/etc/machine-info"),
            "CHASSIS=vm\nPRETTY_HOSTNAME=Pretty\n"
        );
        assert_eq!(apply(&all).await.unwrap(), Checked::InState);

        // Only the fields given are managed: a transient name alone leaves the files.
        std::fs::remove_file("/etc/hostname").unwrap();
        let only = build(ResSpec::new("hostname", "t").param("transient_hostname", "tend-t2"));
        assert_eq!(apply(&only).await.unwrap(), Checked::Changed);
        assert_eq!(kernel_name(), "tend-t2");
        assert!(!std::path::Path::new("/etc/hostname").exists());
    });
}

/// In the engine, a name changed behind tend's back is put back: the kernel's (the watch polls
/// `/proc/sys/kernel/hostname` for `POLLPRI`, no timer) 20 times, reporting the median repair
/// latency, and `/etc/hostname` (the inotify hub).
#[test]
fn repairs_a_name_changed_behind_its_back() {
    in_namespaces("hostname::repairs_a_name_changed_behind_its_back", async {
        set_kernel_name("tend-before");
        let state = tempfile::tempdir_in("/tmp").unwrap();
        let e = engine(state.path(), false);
        let mut g = GraphSpec::default();
        g.resources.push(
            ResSpec::new("hostname", "h")
                .param("transient_hostname", "tend-want")
                .param("static_hostname", "tend-static"),
        );
        e.swap(g).await.unwrap();
        wait_status(&e, "converged", 20, |s| {
            s.converged
                && s.vertices
                    .values()
                    .all(|v| v.state == VertexState::Converged)
        })
        .await;
        assert_eq!(kernel_name(), "tend-want");
        assert_eq!(read("/etc/hostname"), "tend-static\n");

        let mut took = Vec::new();
        for i in 0..20 {
            set_kernel_name(&format!("drift-{i}"));
            let t = Instant::now();
            while kernel_name() != "tend-want" {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "drift {i} not repaired"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            took.push(t.elapsed());
            // Let the repair's own event settle before the next drift.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let max = *took.iter().max().unwrap();
        eprintln!(
            "hostname repair (transient, 20 drifts): p50 {:.2} ms, max {:.2} ms",
            p50(took).as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        assert!(
            max < Duration::from_secs(1),
            "a repair took {max:?}: is it polling?"
        );

        std::fs::write("/etc/hostname", "intruder\n").unwrap();
        let t = Instant::now();
        while read("/etc/hostname") != "tend-static\n" {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "/etc/hostname not repaired"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        eprintln!(
            "hostname repair (/etc/hostname): {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        e.shutdown().await;
    });
}

#[test]
fn bad_names_are_refused() {
    let h = |field: &str, v: &str| ResSpec::new("hostname", "h").param(field, v);
    let e = invalid(ResSpec::new("hostname", "h"));
    assert!(e.contains("nothing to do"), "{e}");
    let e = invalid(h("transient_hostname", "a b"));
    assert!(
        e.contains("transient_hostname") && e.contains("not allowed"),
        "{e}"
    );
    let e = invalid(h("hostname", "web..x"));
    assert!(e.contains("`hostname`") && e.contains("empty label"), "{e}");
    let e = invalid(h("static_hostname", &"x".repeat(65)));
    assert!(
        e.contains("static_hostname") && e.contains("64 bytes"),
        "{e}"
    );
    let e = invalid(h("pretty_hostname", "two\nlines"));
    assert!(
        e.contains("pretty_hostname") && e.contains("control"),
        "{e}"
    );
    // A pretty name is free-form: spaces and quotes are fine.
    build(h("pretty_hostname", "Bob's \"web\" box"));
}
