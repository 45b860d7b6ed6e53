//! `tend run` as a daemon: drift is repaired at once; signals stop it quickly.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::sandbox::{read, wait_for, Sandbox};

const GRAPH: &str = r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/
    - name: ${TEND_ROOT}/out/motd
      content: "hello\n"
      mode: "0644"
    - name: ${TEND_ROOT}/out/other
      content: "other\n"
"#;

#[test]
fn drift_is_repaired() {
    let sb = Sandbox::new();
    let g = sb.write("g.yaml", GRAPH);
    let d = sb.spawn_run(&g, &[]);
    let motd = sb.path("out/motd");
    let ctx = || sb.explain_daemon(&d);
    let limit = Duration::from_secs(20);
    wait_for(
        "the first converge",
        limit,
        || read(&motd).as_deref() == Some("hello\n"),
        ctx,
    );
    wait_for(
        "the converged log line",
        limit,
        || d.stderr().contains("converged"),
        ctx,
    );

    // Edit: put back.
    std::fs::write(&motd, "tampered\n").unwrap();
    wait_for(
        "the edit to be repaired",
        limit,
        || read(&motd).as_deref() == Some("hello\n"),
        ctx,
    );

    // Delete: re-created.
    std::fs::remove_file(&motd).unwrap();
    wait_for(
        "the deleted file to come back",
        limit,
        || read(&motd).as_deref() == Some("hello\n"),
        ctx,
    );

    // Chmod: fixed.
    std::fs::set_permissions(&motd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    wait_for(
        "the mode to be repaired",
        limit,
        || crate::sandbox::mode(&motd) == 0o644,
        ctx,
    );

    // The whole directory: re-created with its files.
    // (Moved away in one step: tend re-creates files while a recursive delete runs.)
    std::fs::rename(sb.path("out"), sb.path("gone")).unwrap();
    wait_for(
        "the directory and its files to come back",
        limit,
        || {
            read(&motd).as_deref() == Some("hello\n")
                && read(&sb.path("out/other")).as_deref() == Some("other\n")
        },
        ctx,
    );
}

#[test]
fn sigterm_stops_an_idle_daemon_quickly() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let sb = Sandbox::new();
        let g = sb.write("g.yaml", GRAPH);
        let d = sb.spawn_run(&g, &[]);
        let ctx = || sb.explain_daemon(&d);
        wait_for(
            "the first converge",
            Duration::from_secs(20),
            || d.stderr().contains("converged"),
            ctx,
        );
        let start = Instant::now();
        d.signal(sig);
        let status = d.wait_exit(Duration::from_secs(5));
        let took = start.elapsed();
        let status = status.unwrap_or_else(|| panic!("{sig} did not stop tend\n{}", ctx()));
        assert!(
            took < Duration::from_secs(1),
            "{sig} took {took:?}\n{}",
            ctx()
        );
        assert_eq!(status.code(), Some(0), "{sig}: {status:?}\n{}", ctx());
    }
}

#[test]
fn a_changed_graph_file_is_swapped_in() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"one\\n\" }\n",
    );
    let d = sb.spawn_run(&g, &[]);
    let ctx = || sb.explain_daemon(&d);
    let a = sb.path("out/a");
    let limit = Duration::from_secs(20);
    wait_for(
        "the first graph",
        limit,
        || read(&a).as_deref() == Some("one\n"),
        ctx,
    );
    // A broken edit is rejected and the running graph stays.
    sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: x, colour: red }\n",
    );
    wait_for(
        "the rejection to be logged",
        limit,
        || d.stderr().contains("colour"),
        ctx,
    );
    sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"two\\n\" }\n    - { name: \"${TEND_ROOT}/out/b\", content: \"b\\n\" }\n",
    );
    wait_for(
        "the new graph",
        limit,
        || {
            read(&a).as_deref() == Some("two\n")
                && read(&sb.path("out/b")).as_deref() == Some("b\n")
        },
        ctx,
    );
}

#[test]
fn a_second_signal_cancels_running_checks() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  exec:
    - name: slow
      cmd: "echo $$ > ${TEND_ROOT}/pid; touch ${TEND_ROOT}/started; exec sleep 30"
      shell: /bin/sh
"#,
    );
    let d = sb.spawn_run(&g, &[]);
    let ctx = || sb.explain_daemon(&d);
    let limit = Duration::from_secs(20);
    wait_for(
        "the command to start",
        limit,
        || sb.path("started").exists(),
        ctx,
    );
    d.signal(Signal::SIGTERM);
    wait_for(
        "the shutdown to start",
        limit,
        || d.stderr().contains("shutting down"),
        ctx,
    );
    assert!(
        d.try_wait().is_none(),
        "tend did not wait for the running check\n{}",
        ctx()
    );
    let start = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the second signal did not stop tend\n{}", ctx()));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}\n{}",
        start.elapsed(),
        ctx()
    );
    assert_eq!(status.code(), Some(1), "{}", ctx());
    // The cancelled command did not outlive tend.
    let pid = std::fs::read_to_string(sb.path("pid")).unwrap();
    wait_gone("the cancelled command", &pid, ctx);
}

/// Waits until the process whose pid `pid` holds is gone (see [`process_gone`]).
fn wait_gone(what: &str, pid: &str, ctx: impl Fn() -> String) {
    wait_for(
        &format!("{what} to be killed"),
        Duration::from_secs(20),
        || process_gone(pid),
        ctx,
    );
}

/// Whether the process whose pid `pid` holds (text) is gone or a zombie.
fn process_gone(pid: &str) -> bool {
    let pid: u32 = pid
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {pid:?}"));
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn a_signal_stops_watch_commands_and_leaves_file_watches_to_the_exit() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  exec:
    - name: watched
      cmd: /bin/true
      watchcmd: "echo $$ > ${TEND_ROOT}/wpid; exec sleep 30"
  file:
    - { name: "${TEND_ROOT}/out/a", content: "a\n" }
"#,
    );
    let d = sb.spawn_run(&g, &[]);
    let ctx = || sb.explain_daemon(&d);
    let limit = Duration::from_secs(20);
    wait_for(
        "the watch command and the file",
        limit,
        || {
            // (Written by the shell: wait for the whole line.)
            read(&sb.path("wpid")).is_some_and(|p| p.ends_with('\n'))
                && read(&sb.path("out/a")).as_deref() == Some("a\n")
        },
        ctx,
    );
    let pid = std::fs::read_to_string(sb.path("wpid")).unwrap();
    assert!(!process_gone(&pid), "{}", ctx());
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("one signal did not stop tend\n{}", ctx()));
    assert_eq!(status.code(), Some(0), "{}", ctx());
    // The exec's watch was stopped: its command did not outlive tend.
    wait_gone("the watch command", &pid, ctx);
}
