//! `tend run --converged-timeout`: converge once and exit.

use crate::sandbox::{mode, read, Sandbox};

fn example() -> String {
    format!("{}/examples/hello.yaml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_converges_and_exits_zero() {
    let sb = Sandbox::new();
    let state = sb.state_dir();
    let out = sb.run_once(std::path::Path::new(&example()), &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    let motd = sb.path("hello/motd");
    assert_eq!(
        read(&motd).as_deref(),
        Some("hello from tend\n"),
        "{}",
        sb.explain("motd content", &out)
    );
    assert_eq!(mode(&motd), 0o644, "{}", sb.explain("motd mode", &out));
    assert_eq!(mode(&sb.path("hello/app.conf")), 0o640);
    assert_eq!(mode(&sb.path("hello")), 0o755);
    // The config file was created, so the notify edge made the reload command run.
    assert!(
        sb.path("hello/reloads.log").exists(),
        "{}",
        sb.explain("the refresh-only exec should have run", &out)
    );
    assert!(state.is_dir(), "the state directory is created");

    // A second run finds everything in state and changes nothing.
    let before = std::fs::metadata(&motd).unwrap().modified().unwrap();
    let reloads = read(&sb.path("hello/reloads.log")).unwrap();
    let out = sb.run_once(std::path::Path::new(&example()), &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("second run", &out));
    assert_eq!(
        std::fs::metadata(&motd).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(read(&sb.path("hello/reloads.log")).unwrap(), reloads);
}

#[test]
fn failing_resource_exits_one_and_the_rest_converges() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/ok
      content: "fine\n"
    - name: ${TEND_ROOT}/out/after-failure
      content: "never\n"
  exec:
    - name: broken
      cmd: /bin/false
edges:
  - { from: "exec[broken]", to: "file[${TEND_ROOT}/out/after-failure]" }
"#,
    );
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 1, "{}", sb.explain("expected exit 1", &out));
    assert_eq!(read(&sb.path("out/ok")).as_deref(), Some("fine\n"));
    assert!(
        !sb.path("out/after-failure").exists(),
        "blocked resource ran"
    );
    assert!(
        out.stderr.contains("exec[broken]") && out.stderr.contains("blocked"),
        "{}",
        sb.explain("the failure and the blocked resource are reported", &out)
    );
}

#[test]
fn noop_changes_nothing() {
    let sb = Sandbox::new();
    let existing = sb.write("out/existing", "old\n");
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/new
      content: "new\n"
    - name: ${TEND_ROOT}/out/existing
      content: "wanted\n"
  exec:
    - name: touch
      cmd: /bin/touch
      args: ["${TEND_ROOT}/out/touched"]
"#,
    );
    let out = sb.run_once(&g, &["--noop"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    assert!(
        !sb.path("out/new").exists(),
        "{}",
        sb.explain("noop created a file", &out)
    );
    assert!(
        !sb.path("out/touched").exists(),
        "{}",
        sb.explain("noop ran a command", &out)
    );
    assert_eq!(read(&existing).as_deref(), Some("old\n"));
}

#[test]
fn noop_shows_the_diff_and_counts_what_would_change() {
    let sb = Sandbox::new();
    let target = sb.write("out/app.conf", "port = 80\nhost = a\nuser = www\n");
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    sb.write("out/same", "same\n");
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/app.conf
      content: "port = 8080\nhost = a\nuser = www\n"
      mode: "0644"
    - name: ${TEND_ROOT}/out/same
      content: "same\n"
"#,
    );
    let before = std::fs::metadata(&target).unwrap().modified().unwrap();
    let out = sb.run_once(&g, &["--noop"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    for line in [
        "would change content",
        &format!("--- {}", target.display()),
        &format!("+++ {}", target.display()),
        "-port = 80\n",
        "+port = 8080\n",
        " host = a\n",
        "would change mode 0600 -> 0644",
        "tend run: converged: 2 resources, 1 in state, 1 would change (noop), 0 failed, 0 blocked",
    ] {
        assert!(
            out.stderr.contains(line),
            "{}",
            sb.explain(&format!("missing {line:?}"), &out)
        );
    }
    // Untouched.
    assert_eq!(
        read(&target).as_deref(),
        Some("port = 80\nhost = a\nuser = www\n")
    );
    assert_eq!(mode(&target), 0o600);
    assert_eq!(
        std::fs::metadata(&target).unwrap().modified().unwrap(),
        before
    );
    // A real run counts no "would change".
    let out = sb.run_once(&g, &[]);
    assert!(
        out.stderr
            .contains("tend run: converged: 2 resources, 2 in state, 0 failed, 0 blocked"),
        "{}",
        sb.explain("summary of a real run", &out)
    );
    assert_eq!(mode(&target), 0o644);
}

/// The `file` forms of issue 15 end to end: a source tree with `purge`, `fragments`, a
/// symbolic mode and mgmt's `symlink: true`, first under `--noop` (reported, nothing changed),
/// then for real, then in state.
#[test]
fn file_trees_fragments_symbolic_modes_and_mgmt_symlinks() {
    let sb = Sandbox::new();
    sb.write("src/sub/leaf", "leaf\n");
    sb.write("frag/10-a", "a\n");
    sb.write("frag/20-b", "b\n");
    sb.write("out/tree/stray", "stray\n");
    let app = sb.write("out/app", "x\n");
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/tree/
      source: ${TEND_ROOT}/src/
      recurse: true
      purge: true
    - name: ${TEND_ROOT}/out/joined
      fragments: ["${TEND_ROOT}/frag/"]
    - name: ${TEND_ROOT}/out/app
      mode: "u+x,go-w"
    - name: ${TEND_ROOT}/out/link
      symlink: true
      source: ../src
"#,
    );
    let out = sb.run_once(&g, &["--noop"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    for line in [
        "would create directory",
        "+leaf\n",
        "would remove a file (purge: not in the source)",
        "+a\n+b\n",
        "would change mode 0666 -> 0744",
        "would link: nothing -> a symlink to ../src",
        "4 would change (noop)",
    ] {
        assert!(
            out.stderr.contains(line),
            "{}",
            sb.explain(&format!("missing {line:?}"), &out)
        );
    }
    assert!(sb.path("out/tree/stray").exists());
    assert!(!sb.path("out/tree/sub").exists() && !sb.path("out/joined").exists());
    assert_eq!(mode(&app), 0o666);
    assert!(std::fs::symlink_metadata(sb.path("out/link")).is_err());

    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    assert_eq!(
        read(&sb.path("out/tree/sub/leaf")).as_deref(),
        Some("leaf\n")
    );
    assert!(!sb.path("out/tree/stray").exists());
    assert_eq!(read(&sb.path("out/joined")).as_deref(), Some("a\nb\n"));
    assert_eq!(mode(&app), 0o744);
    assert_eq!(
        std::fs::read_link(sb.path("out/link")).unwrap(),
        std::path::Path::new("../src")
    );
    let out = sb.run_once(&g, &[]);
    assert!(
        out.stderr
            .contains("tend run: converged: 4 resources, 4 in state, 0 failed, 0 blocked"),
        "{}",
        sb.explain("a second run finds everything in state", &out)
    );
}

#[test]
fn a_run_removes_the_temporary_files_a_killed_run_left() {
    let sb = Sandbox::new();
    // A process that has exited: what `kill -9` in the middle of writes leaves.
    let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let stray = [
        format!("out/.tend.{dead}-4242.Ab12Cd.tmp"),
        format!("out/.tend.{dead}-4242.link.lnk"),
    ];
    for s in &stray {
        sb.write(s, "partial");
    }
    // Lookalikes that are not tend's scheme stay.
    let kept = ["out/.tend.foo.tmp", "out/.tend.Ab12Cd.tmp"];
    for k in kept {
        sb.write(k, "mine");
    }
    let g = sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"a\\n\" }\n",
    );
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    for s in &stray {
        assert!(
            !sb.path(s).exists(),
            "{}",
            sb.explain(&format!("{s} is still there"), &out)
        );
    }
    for k in kept {
        assert_eq!(read(&sb.path(k)).as_deref(), Some("mine"), "{k}");
    }
    assert_eq!(read(&sb.path("out/a")).as_deref(), Some("a\n"));
}

#[test]
fn kill_9_during_a_first_converge_leaves_no_temporary_file_after_the_next_run() {
    use nix::sys::signal::Signal;
    let sb = Sandbox::new();
    let mut g = String::from("resources:\n  file:\n");
    for i in 0..3000 {
        g.push_str(&format!(
            "    - {{ name: \"${{TEND_ROOT}}/out/f{i}\", content: \"{}\" }}\n",
            "x".repeat(2000)
        ));
    }
    let g = sb.write("g.yaml", &g);
    let d = sb.spawn_run(&g, &[]);
    // Kill it once it has started writing.
    crate::sandbox::wait_for(
        "the first files",
        std::time::Duration::from_secs(30),
        || std::fs::read_dir(sb.path("out")).is_ok_and(|rd| rd.count() > 20),
        || sb.explain_daemon(&d),
    );
    d.signal(Signal::SIGKILL);
    d.wait_exit(std::time::Duration::from_secs(10));
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    let temps: Vec<String> = std::fs::read_dir(sb.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tend."))
        .collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");
    assert_eq!(std::fs::read_dir(sb.path("out")).unwrap().count(), 3000);
}

#[test]
fn converged_timeout_waits_for_the_given_time() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"a\\n\" }\n",
    );
    let start = std::time::Instant::now();
    let out = sb.run(&[
        "run",
        g.to_str().unwrap(),
        "--converged-timeout",
        "1",
        "--state-dir",
        sb.state_dir().to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(read(&sb.path("out/a")).as_deref(), Some("a\n"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let sb = Sandbox::new();
    let g = sb.write(
        "g.yaml",
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"a\\n\" }\n",
    );
    let out = sb.run_once(&g, &["--log-format", "json"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(
        !lines.is_empty(),
        "{}",
        sb.explain("no JSON log lines", &out)
    );
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("{e}: {l}\n{}", sb.explain("bad JSON line", &out)));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
}

#[test]
fn an_empty_graph_converges_at_once() {
    let sb = Sandbox::new();
    let g = sb.write("g.yaml", "# nothing to do\nresources: {}\n");
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
}

/// The `mtimes` stamp of the only exec with one, under the state directory.
fn mtimes_stamp(state: &std::path::Path) -> Option<std::time::SystemTime> {
    let dir = state.join("kinds").join("exec");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        std::fs::metadata(e.path().join("mtimes"))
            .and_then(|m| m.modified())
            .ok()
    })
}

#[test]
fn exec_mtimes_donecmd_and_ifequals_across_processes() {
    let sb = Sandbox::new();
    let src = sb.write("src/in.txt", "v1\n");
    sb.write("src/state", "ready\n");
    let g = sb.write(
        "g.yaml",
        r#"
resources:
  exec:
    - name: build
      shell: /bin/sh
      cmd: "cat ${TEND_ROOT}/src/in.txt >> ${TEND_ROOT}/built.log"
      ifcmd: "false"
      mtimes: ["${TEND_ROOT}/src/in.txt"]
      donecmd: "echo done >> ${TEND_ROOT}/done.log"
    - name: gated
      shell: /bin/sh
      cmd: "echo ran >> ${TEND_ROOT}/gated.log"
      ifcmd: "cat ${TEND_ROOT}/src/state"
      ifequals: "ready\n"
"#,
    );
    // A dry run runs neither cmd nor donecmd, and keeps no stamp.
    let out = sb.run_once(&g, &["--noop"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("noop", &out));
    assert!(
        !sb.path("built.log").exists(),
        "{}",
        sb.explain("noop ran cmd", &out)
    );
    assert!(
        !sb.path("done.log").exists(),
        "{}",
        sb.explain("noop ran donecmd", &out)
    );
    assert!(mtimes_stamp(&sb.state_dir()).is_none());

    // Never ran: `mtimes` forces the run past `ifcmd: false`; donecmd follows. `ifequals`
    // matches the guard's output: gated does not run.
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("first run", &out));
    assert_eq!(read(&sb.path("built.log")).as_deref(), Some("v1\n"));
    assert_eq!(read(&sb.path("done.log")).as_deref(), Some("done\n"));
    assert!(
        !sb.path("gated.log").exists(),
        "{}",
        sb.explain("ifequals", &out)
    );
    let stamp = mtimes_stamp(&sb.state_dir()).expect("a stamp after the run");

    // Another process: the stamp is kept, nothing newer, the guard blocks.
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("second run", &out));
    assert_eq!(read(&sb.path("built.log")).as_deref(), Some("v1\n"));

    // The source changes (later than the stamp): the next process rebuilds. The guard's
    // output changes too: gated runs.
    std::fs::write(&src, "v2\n").unwrap();
    assert!(std::fs::metadata(&src).unwrap().modified().unwrap() > stamp);
    sb.write("src/state", "not yet\n");
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 0, "{}", sb.explain("third run", &out));
    assert_eq!(read(&sb.path("built.log")).as_deref(), Some("v1\nv2\n"));
    assert_eq!(read(&sb.path("done.log")).as_deref(), Some("done\ndone\n"));
    assert_eq!(read(&sb.path("gated.log")).as_deref(), Some("ran\n"));
}
