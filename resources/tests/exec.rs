//! `exec` with real processes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use tend_engine::Checked;
use tend_model::{ResSpec, Value};

use crate::common::{apply, build, dry, eventually, invalid, refresh, watch};

fn sh(name: &str, cmd: &str) -> ResSpec {
    ResSpec::new("exec", name)
        .param("cmd", cmd)
        .param("shell", "/bin/sh")
}

fn alive(pid: i32) -> bool {
    // A zombie is as good as dead: it is only waiting to be reaped.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until the command wrote its pid (a full line) to `pidfile`, and returns it.
async fn started_pid(pidfile: &std::path::Path, what: &str) -> i32 {
    eventually(what, 10, || {
        fs::read_to_string(pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    fs::read_to_string(pidfile).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn runs_once_then_is_in_state_until_refreshed() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let r = build(sh("e", &format!("echo run >> {}", log.display())));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!log.exists(), "a dry run runs nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(fs::read_to_string(&log).unwrap(), "run\n");
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&log).unwrap(), "run\nrun\n");
}

#[tokio::test]
async fn args_without_shell_are_not_interpreted() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let r = build(
        ResSpec::new("exec", "e")
            .param("cmd", "/usr/bin/touch")
            .param("args", vec![out.to_str().unwrap().to_string() + " $HOME"]),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let want = format!("{} $HOME", out.display());
    assert!(Path::new(&want).exists(), "argument passed verbatim");
    let e = invalid(sh("e", "true").param("args", vec!["x"]));
    assert!(e.contains("field `args`"), "{e}");
}

#[tokio::test]
async fn env_and_cwd() {
    let t = tempfile::tempdir().unwrap();
    let mut env = std::collections::BTreeMap::new();
    env.insert(Value::from("GREETING"), Value::from("hello there"));
    let r = build(
        sh("e", "printf '%s' \"$GREETING\" > out; pwd > where")
            .param("cwd", t.path().to_str().unwrap())
            .param("env", Value::Map(env)),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(t.path().join("out")).unwrap(),
        "hello there"
    );
    let pwd = fs::read_to_string(t.path().join("where")).unwrap();
    assert_eq!(
        fs::canonicalize(pwd.trim()).unwrap(),
        fs::canonicalize(t.path()).unwrap()
    );
}

#[tokio::test]
async fn guards_decide_whether_it_runs() {
    let t = tempfile::tempdir().unwrap();
    let flag = t.path().join("flag");
    let log = t.path().join("log");
    let cmd = format!("echo x >> {}", log.display());
    let lines = || {
        fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };

    let ifcmd = build(sh("if", &cmd).param("ifcmd", format!("test -e {}", flag.display())));
    assert_eq!(apply(&ifcmd).await.unwrap(), Checked::InState);
    assert_eq!(lines(), 0);
    fs::write(&flag, "").unwrap();
    assert_eq!(apply(&ifcmd).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 1);

    let nifcmd = build(sh("nif", &cmd).param("nifcmd", format!("test -e {}", flag.display())));
    assert_eq!(apply(&nifcmd).await.unwrap(), Checked::InState);
    fs::remove_file(&flag).unwrap();
    assert_eq!(apply(&nifcmd).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 2);

    let creates = t.path().join("made");
    let c = build(
        sh("creates", &format!("touch {}", creates.display()))
            .param("creates", creates.to_str().unwrap()),
    );
    assert_eq!(apply(&c).await.unwrap(), Checked::Changed);
    assert!(creates.exists());
    assert_eq!(apply(&c).await.unwrap(), Checked::InState);
    assert_eq!(refresh(&c).await.unwrap(), Checked::InState, "creates wins");
}

#[tokio::test]
async fn refreshonly_runs_only_on_refresh() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let r = build(sh("e", &format!("echo x >> {}", log.display())).param("refreshonly", true));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert!(!log.exists());
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&log).unwrap(), "x\n");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn failure_names_the_command_status_and_stderr() {
    let r = build(sh("e", "echo first >&2; echo 'it broke' >&2; exit 3"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("/bin/sh -c"), "{e}");
    assert!(e.contains("exited with status 3"), "{e}");
    assert!(e.contains("it broke"), "{e}");
    // Still out of state: the next check runs it again.
    assert!(apply(&r).await.is_err());

    let r = build(ResSpec::new("exec", "e").param("cmd", "/no/such/program"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("/no/such/program"), "{e}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let r = build(
        sh(
            "e",
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
        )
        .param("timeout", 1i64),
    );
    let start = Instant::now();
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("timed out after 1s"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the background sleep is killed", 5, || !alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_kills_the_process_group() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let r = build(sh(
        "e",
        &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
    ));
    let r2 = r.clone();
    let task = tokio::spawn(async move { apply(&r2).await });
    let pid = started_pid(&pidfile, "the command started").await;
    assert!(alive(pid));
    task.abort();
    eventually("the background sleep is killed", 5, || !alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchcmd_lines_are_drift_events() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("events");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log = t.path().join("log");
    let r = build(
        sh("e", &format!("echo run >> {}", log.display()))
            .param("watchcmd", format!("cat {}", fifo.display())),
    );
    let w = watch(&r).await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    w.clear();
    let mut tx = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    use std::io::Write;
    writeln!(tx, "something changed").unwrap();
    w.event("a watchcmd line").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&log).unwrap(), "run\nrun\n");
    w.clear();
    // When the watch command ends, the watch fails with its status.
    drop(tx);
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if w.finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(res.is_ok(), "the watch did not end with its command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_watch_kills_the_watch_command() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let r = build(sh("e", "true").param(
        "watchcmd",
        format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
    ));
    let w = watch(&r).await;
    let pid = started_pid(&pidfile, "the watch command started").await;
    assert!(alive(pid));
    drop(w);
    eventually("the watch command's group is killed", 5, || !alive(pid)).await;
}

#[tokio::test]
async fn binary_and_bulky_output_does_not_block_the_command() {
    let r = build(
        sh(
            "e",
            "head -c 2000000 /dev/urandom; head -c 300000 /dev/urandom >&2; echo done >&2",
        )
        .param("timeout", 60i64),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let r = build(sh("e", "printf 'bad \\377 byte\\n' >&2; exit 1"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("bad \u{fffd} byte"), "{e}");
}

#[tokio::test]
async fn sends_what_its_last_successful_run_wrote_and_keeps_it_for_the_next_process() {
    let t = tempfile::tempdir().unwrap();
    let ctx = tend_engine::InitCtx {
        state_dir: t.path().to_path_buf(),
        ..Default::default()
    };
    let spec = sh("e-send", "echo out; echo err >&2; echo more").param("send_stderr", "none");
    let r = build(spec.clone());
    r.init(&ctx).await.unwrap();
    // Nothing ran yet: only the fallback is sent.
    assert_eq!(r.sent(), [("stderr".to_string(), Value::from("none"))]);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let sent: std::collections::BTreeMap<String, Value> = r.sent().into_iter().collect();
    assert_eq!(sent["stdout"], Value::from("out\nmore\n"));
    assert_eq!(sent["stderr"], Value::from("err\n"));
    let Value::Str(output) = &sent["output"] else {
        panic!("output is not a string")
    };
    // Interleaved line by line: both streams, every line once.
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["err", "more", "out"]);

    // Another process (a new resource, same state directory) sends the same before it runs.
    let again = build(spec);
    again.init(&ctx).await.unwrap();
    let kept: std::collections::BTreeMap<String, Value> = again.sent().into_iter().collect();
    assert_eq!(kept, sent);

    // A failed run changes nothing of it.
    let failing = build(sh("e-send-fail", "echo partial; exit 3"));
    failing.init(&ctx).await.unwrap();
    assert!(apply(&failing).await.is_err());
    assert!(failing.sent().is_empty());
}

#[tokio::test]
async fn guard_shells_cwds_and_ifequals() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let cmd = format!("echo x >> {}", log.display());
    let lines = || {
        fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let gdir = t.path().join("gdir");
    fs::create_dir(&gdir).unwrap();
    fs::write(gdir.join("marker"), "").unwrap();

    // `ifshell` runs `ifcmd` (bash's `[[`, which /bin/sh (dash) lacks); `ifcwd` is its
    // directory: the relative `marker` is found there only.
    let r = build(
        sh("if", &cmd)
            .param("ifcmd", "[[ -e marker ]]")
            .param("ifshell", "/bin/bash")
            .param("ifcwd", gdir.to_str().unwrap()),
    );
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 0, "a dry run runs the guard, not the command");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 1);
    fs::remove_file(gdir.join("marker")).unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(lines(), 1);
    // Without `ifshell` the guard goes to /bin/sh, where `[[` is no command: it fails.
    let r = build(
        sh("if-sh", &cmd)
            .param("shell", "/bin/sh")
            .param("ifcmd", "[[ 1 == 1 ]]"),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // `nifshell` / `nifcwd`: the guard succeeds (blocks) only in its own directory.
    fs::write(gdir.join("present"), "").unwrap();
    let nif = |dir: &Path| {
        build(
            sh("nif", &cmd)
                .param("nifcmd", "[[ -e present ]]")
                .param("nifshell", "/bin/bash")
                .param("nifcwd", dir.to_str().unwrap()),
        )
    };
    assert_eq!(apply(&nif(&gdir)).await.unwrap(), Checked::InState);
    assert_eq!(apply(&nif(t.path())).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 2);

    // `ifequals`: the guard's output, stdout and stderr together, trailing newline included.
    let eq = |want: &str| {
        build(
            sh("eq", &cmd)
                .param("ifcmd", "echo ready; echo warn >&2")
                .param("ifequals", want),
        )
    };
    assert_eq!(apply(&eq("ready\nwarn\n")).await.unwrap(), Checked::InState);
    assert_eq!(apply(&eq("ready\n")).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 3);
    // `ifequals_stdout` ignores stderr.
    let r = build(
        sh("eq-out", &cmd)
            .param("ifcmd", "echo ready; echo warn >&2")
            .param("ifequals_stdout", "ready\n"),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // The empty string matches a guard that printed nothing.
    let r = build(
        sh("eq-empty", &cmd)
            .param("ifcmd", "true")
            .param("ifequals", ""),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // A failing guard blocks whatever `ifequals` says.
    let r = build(
        sh("eq-fail", &cmd)
            .param("ifcmd", "false")
            .param("ifequals", "nope"),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(lines(), 3);

    // Bad input names the field; a guard that cannot start names its field.
    let e = invalid(sh("e", "true").param("ifcwd", "relative/dir"));
    assert!(e.contains("field `ifcwd`"), "{e}");
    let e = invalid(sh("e", "true").param("nifcwd", "rel"));
    assert!(e.contains("field `nifcwd`"), "{e}");
    let r = build(
        sh("e", "true")
            .param("ifcmd", "true")
            .param("ifshell", "/no/such/shell"),
    );
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("ifcmd") && e.contains("/no/such/shell"), "{e}");
}

#[tokio::test]
async fn donecmd_runs_after_a_successful_run_and_its_failure_fails_it() {
    let t = tempfile::tempdir().unwrap();
    let ddir = t.path().join("ddir");
    fs::create_dir(&ddir).unwrap();
    let log = t.path().join("log");
    let spec = sh("done", &format!("echo cmd >> {}", log.display()))
        .param(
            "donecmd",
            format!("echo done >> {}; pwd > where", log.display()),
        )
        .param("doneshell", "/bin/bash")
        .param("donecwd", ddir.to_str().unwrap());
    let r = build(spec);
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!log.exists(), "a dry run runs neither cmd nor donecmd");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "cmd\ndone\n",
        "in that order"
    );
    let pwd = fs::read_to_string(ddir.join("where")).unwrap();
    assert_eq!(
        fs::canonicalize(pwd.trim()).unwrap(),
        fs::canonicalize(&ddir).unwrap()
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // A failing cmd: donecmd does not run.
    let r =
        build(sh("done-not", "exit 1").param("donecmd", format!("echo no >> {}", log.display())));
    assert!(apply(&r).await.is_err());
    assert_eq!(fs::read_to_string(&log).unwrap(), "cmd\ndone\n");

    // A failing donecmd fails the run, names itself, and nothing from the run is sent; the
    // next check runs both again.
    let flag = t.path().join("ok");
    let r = build(
        sh(
            "done-fail",
            &format!("echo cmd >> {}; echo out", log.display()),
        )
        .param(
            "donecmd",
            format!(
                "test -e {} || {{ echo 'not yet' >&2; exit 4; }}",
                flag.display()
            ),
        ),
    );
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(
        e.contains("donecmd") && e.contains("exited with status 4"),
        "{e}"
    );
    assert!(e.contains("not yet"), "{e}");
    assert!(r.sent().is_empty(), "{:?}", r.sent());
    fs::write(&flag, "").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "cmd\ndone\ncmd\ncmd\n",
        "cmd ran again after donecmd failed"
    );
    assert_eq!(
        r.sent(),
        [
            ("output".to_string(), Value::from("out\n")),
            ("stdout".to_string(), Value::from("out\n"))
        ]
    );

    let e = invalid(sh("e", "true").param("donecwd", "rel"));
    assert!(e.contains("field `donecwd`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchfiles_changes_are_drift_events() {
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("log");
    let conf = t.path().join("app.conf");
    fs::write(&conf, "a").unwrap();
    let tree = t.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let r = build(sh("wf", &format!("echo run >> {}", log.display())).param(
        "watchfiles",
        vec![
            conf.to_str().unwrap().to_string(),
            format!("{}/", tree.display()),
        ],
    ));
    let w = watch(&r).await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // The file is replaced (one event: a write makes several, each a drift): the exec runs
    // again.
    let replace = |to: &Path| {
        let tmp = t.path().join("tmp");
        fs::write(&tmp, "b").unwrap();
        fs::rename(&tmp, to).unwrap();
    };
    w.clear();
    replace(&conf);
    w.event("a watched file was written").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // A new subdirectory of the tree, then a file inside it: both are drifts (the tree is
    // followed as it grows).
    w.clear();
    fs::create_dir(tree.join("sub")).unwrap();
    w.event("a directory appeared in the tree").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    w.clear();
    replace(&tree.join("sub").join("deep"));
    w.event("a file appeared deep in the tree").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&log).unwrap(), "run\nrun\nrun\nrun\n");

    let e = invalid(sh("e", "true").param("watchfiles", vec!["relative/file"]));
    assert!(e.contains("field `watchfiles`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchshell_and_watchcwd_run_the_watch_command() {
    let t = tempfile::tempdir().unwrap();
    let wdir = t.path().join("wdir");
    fs::create_dir(&wdir).unwrap();
    let fifo = wdir.join("events");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Bash-only syntax, and a path relative to `watchcwd`.
    let r = build(
        sh("ws", "true")
            .param("watchcmd", "[[ -p events ]] && exec cat events")
            .param("watchshell", "/bin/bash")
            .param("watchcwd", wdir.to_str().unwrap()),
    );
    let w = watch(&r).await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    w.clear();
    let mut tx = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    use std::io::Write;
    writeln!(tx, "go").unwrap();
    w.event("a line from the watch command").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let e = invalid(sh("e", "true").param("watchcwd", "rel"));
    assert!(e.contains("field `watchcwd`"), "{e}");
}

/// Sets a file's modification time to `t`.
fn set_mtime(p: &Path, t: std::time::SystemTime) {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as i64, d.subsec_micros() as i64);
    nix::sys::stat::utimes(p, &tv, &tv).unwrap();
}

/// The `mtimes` stamp an exec keeps under the state directory.
fn stamp(state: &Path) -> Option<std::time::SystemTime> {
    let dir = state.join("kinds").join("exec");
    for e in fs::read_dir(dir).ok()?.flatten() {
        if let Ok(m) = fs::metadata(e.path().join("mtimes")) {
            return Some(m.modified().unwrap());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtimes_newer_than_the_last_run_force_a_run() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let ctx = tend_engine::InitCtx {
        state_dir: state.clone(),
        ..Default::default()
    };
    let log = t.path().join("log");
    let src = t.path().join("src.c");
    fs::write(&src, "int main;").unwrap();
    set_mtime(
        &src,
        std::time::SystemTime::now() - Duration::from_secs(1000),
    );
    let lines = || {
        fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // `ifcmd: false` blocks every run that `mtimes` does not force (mgmt's advice).
    let spec = sh("mt", &format!("echo build >> {}", log.display()))
        .param("ifcmd", "false")
        .param("mtimes", vec![src.to_str().unwrap().to_string()]);
    let r = build(spec.clone());
    r.init(&ctx).await.unwrap();

    // Never ran: forced, past the guard. A dry run runs nothing and keeps no stamp.
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 0);
    assert!(stamp(&state).is_none());
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 1);
    let first = stamp(&state).expect("a stamp after the run");
    assert_eq!(
        apply(&r).await.unwrap(),
        Checked::InState,
        "older file, guard blocks"
    );

    // Modified after the run: forced again (after the clock passed the stamp, so that the
    // write's timestamp is later than the stamp's).
    let w = watch(&r).await;
    eventually("the clock passes the stamp", 5, || {
        std::time::SystemTime::now() > first + Duration::from_millis(50)
    })
    .await;
    w.clear();
    fs::write(&src, "int main() {}").unwrap();
    w.event("a file of mtimes changed").await;
    assert!(fs::metadata(&src).unwrap().modified().unwrap() > first);
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 1, "a dry run does not run it");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(lines(), 2);
    assert!(stamp(&state).unwrap() > first, "the stamp moved on");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    drop(w);

    // Another process, same state directory: the stamp is kept, nothing is newer.
    let again = build(spec.clone());
    again.init(&ctx).await.unwrap();
    assert_eq!(apply(&again).await.unwrap(), Checked::InState);
    assert_eq!(lines(), 2);

    // A missing file is an error naming the field and the path.
    fs::remove_file(&src).unwrap();
    let e = apply(&again).await.unwrap_err().to_string();
    assert!(e.contains("field `mtimes`") && e.contains("src.c"), "{e}");
    let e = invalid(sh("e", "true").param("mtimes", vec!["rel/file"]));
    assert!(e.contains("field `mtimes`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_signal_goes_to_the_group_then_sigkill() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let got = t.path().join("got");
    // The shell records SIGINT and goes on waiting; its background `sleep` ignores SIGINT
    // (as every background job of a non-interactive shell does), so only the SIGKILL after
    // the grace ends them.
    let r = build(
        sh(
            "sig",
            &format!(
                "trap 'echo INT >> {}' INT; sleep 300 & echo $! > {}; while :; do wait; done",
                got.display(),
                pidfile.display()
            ),
        )
        .param("timeout", 1i64)
        .param("cancel_signal", "SIGINT"),
    );
    let start = Instant::now();
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(
        e.contains("timed out after 1s") && e.contains("SIGINT"),
        "{e}"
    );
    assert!(e.contains("then SIGKILL"), "{e}");
    assert_eq!(
        fs::read_to_string(&got).unwrap(),
        "INT\n",
        "the shell got SIGINT"
    );
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the background sleep is killed", 5, || !alive(pid)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(15),
        "1 s timeout + 5 s grace: {took:?}"
    );
    // A command that ends on the signal (the default, SIGTERM) is not waited for further,
    // what is left of its group is killed then, and exiting 0 on it is still a failure.
    let pidfile = t.path().join("pid1");
    let r = build(
        sh(
            "sig-quick",
            &format!(
                "trap 'exit 0' TERM; sh -c 'trap \"\" TERM; exec sleep 300' & echo $! > {}; wait",
                pidfile.display()
            ),
        )
        .param("timeout", 1i64),
    );
    let start = Instant::now();
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("SIGTERM") && !e.contains("then SIGKILL"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the TERM-proof sleep is killed", 5, || !alive(pid)).await;

    // Cancelling a run (the check dropped) sends it too, then SIGKILL.
    let pidfile = t.path().join("pid2");
    let got = t.path().join("got2");
    let r = build(
        sh(
            "sig-cancel",
            &format!(
                "trap 'echo TERM > {}; exit 0' TERM; sleep 300 & echo $! > {}; wait",
                got.display(),
                pidfile.display()
            ),
        )
        .param("cancel_signal", "SIGTERM"),
    );
    let r2 = r.clone();
    let task = tokio::spawn(async move { apply(&r2).await });
    let pid = started_pid(&pidfile, "the command started").await;
    task.abort();
    eventually("the shell got SIGTERM", 5, || {
        fs::read_to_string(&got).is_ok_and(|s| s == "TERM\n")
    })
    .await;
    eventually("the background sleep is killed", 5, || !alive(pid)).await;

    // Names as mgmt's: with the prefix, in capitals; the error suggests the spelling.
    let e = invalid(sh("e", "true").param("cancel_signal", "sigint"));
    assert!(
        e.contains("field `cancel_signal`") && e.contains("\"SIGINT\""),
        "{e}"
    );
    let e = invalid(sh("e", "true").param("cancel_signal", "TERM"));
    assert!(e.contains("did you mean \"SIGTERM\""), "{e}");
    let e = invalid(sh("e", "true").param("cancel_signal", "SIGNOPE"));
    assert!(
        e.contains("field `cancel_signal`") && !e.contains("did you mean"),
        "{e}"
    );
}
