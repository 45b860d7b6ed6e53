//! Send/recv and `Meta:reverse` end to end: `tend run` on mcl programs, real files, real
//! commands, `kill -9`.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sandbox::{mode, read, wait_for, Sandbox};

const LIMIT: Duration = Duration::from_secs(30);

/// An exec's output becomes a file's content, and follows what the command prints.
#[test]
fn an_exec_output_lands_in_a_file_and_follows_it() {
    let sb = Sandbox::new();
    sb.write("input", "first\n");
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let prog = sb.write(
        "main.mcl",
        "import \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         exec \"reader\" {\n\tcmd => \"cat ${root}/input\",\n\tshell => \"/bin/sh\",\n\
         \twatchcmd => \"while sleep 0.2; do echo tick; done\",\n}\n\
         file \"${root}/out/copy\" {\n\tcontent => \"the program's own\\n\",\n}\n\
         Exec[\"reader\"].output -> File[\"${root}/out/copy\"].content\n",
    );
    let copy = sb.path("out/copy");
    let d = sb.spawn_run(&prog, &["--listen", "none"]);
    let ctx = || sb.explain_daemon(&d);
    wait_for(
        "the exec's output in the file",
        LIMIT,
        || read(&copy).as_deref() == Some("first\n"),
        ctx,
    );
    // The command prints something else at its next run: the file follows.
    let tmp = sb.path("input.tmp");
    std::fs::write(&tmp, "second\n").unwrap();
    std::fs::rename(&tmp, sb.path("input")).unwrap();
    wait_for(
        "the new output in the file",
        LIMIT,
        || read(&copy).as_deref() == Some("second\n"),
        ctx,
    );
    // Drift of the receiver is repaired to the received value, not the program's.
    std::fs::write(&copy, "drifted\n").unwrap();
    wait_for(
        "the repair",
        LIMIT,
        || read(&copy).as_deref() == Some("second\n"),
        ctx,
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
}

/// The program of the reversal tests: two reversible files while `switch` says `on`, and a
/// marker that shows which graph runs.
fn reversible_program(sb: &Sandbox) -> std::path::PathBuf {
    sb.write(
        "main.mcl",
        "import \"os\"\nimport \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         $sw = os.readfile(\"${root}/switch\") <|> \"on\\n\"\n\
         if $sw == \"on\\n\" {\n\
         \tfile \"${root}/out/existing\" {\n\t\tcontent => \"managed\\n\",\n\t\tmode => \"0644\",\n\t\tMeta:reverse => true,\n\t}\n\
         \tfile \"${root}/out/created\" {\n\t\tcontent => \"new\\n\",\n\t\tMeta:reverse => true,\n\t}\n\
         }\n\
         file \"${root}/out/marker\" {\n\tcontent => $sw,\n}\n",
    )
}

fn records(sb: &Sandbox) -> usize {
    std::fs::read_dir(sb.state_dir().join("reversals"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn switch(sb: &Sandbox, to: &str) {
    let tmp = sb.path("switch.tmp");
    std::fs::write(&tmp, to).unwrap();
    std::fs::rename(&tmp, sb.path("switch")).unwrap();
}

/// The host as the tests leave it before `tend run`: one file that exists (0600), none where
/// the other will be created.
fn prepare(sb: &Sandbox) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let existing = sb.write("out/existing", "orig\n");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn is_applied(sb: &Sandbox) -> bool {
    read(&sb.path("out/existing")).as_deref() == Some("managed\n")
        && read(&sb.path("out/created")).as_deref() == Some("new\n")
        && read(&sb.path("out/marker")).as_deref() == Some("on\n")
}

fn is_reversed(sb: &Sandbox) -> bool {
    let existing = sb.path("out/existing");
    read(&existing).as_deref() == Some("orig\n")
        && mode(&existing) == 0o600
        && !sb.path("out/created").exists()
}

fn once(sb: &Sandbox, prog: &Path) {
    let out = sb.run_once(prog, &["--listen", "none"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
}

#[test]
fn a_reversible_file_that_leaves_the_graph_is_put_back_once() {
    let sb = Sandbox::new();
    prepare(&sb);
    let prog = reversible_program(&sb);
    let d = sb.spawn_run(&prog, &["--listen", "none"]);
    let ctx = || sb.explain_daemon(&d);
    wait_for("the first graph", LIMIT, || is_applied(&sb), ctx);
    assert_eq!(records(&sb), 2, "{}", ctx());
    switch(&sb, "off\n");
    wait_for(
        "the files put back",
        LIMIT,
        || read(&sb.path("out/marker")).as_deref() == Some("off\n") && is_reversed(&sb),
        ctx,
    );
    wait_for("the records deleted", LIMIT, || records(&sb) == 0, ctx);
    // Reversed once: a later change of the file and another graph leave it alone.
    std::fs::write(sb.path("out/existing"), "the user's\n").unwrap();
    switch(&sb, "off again\n");
    wait_for(
        "the next graph",
        LIMIT,
        || read(&sb.path("out/marker")).as_deref() == Some("off again\n"),
        ctx,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read(&sb.path("out/existing")).as_deref(),
        Some("the user's\n"),
        "{}",
        ctx()
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
}

#[test]
fn a_reversal_pending_at_a_kill_runs_once_after_the_restart() {
    let sb = Sandbox::new();
    prepare(&sb);
    let prog = reversible_program(&sb);
    {
        let d = sb.spawn_run(&prog, &["--listen", "none"]);
        let ctx = || sb.explain_daemon(&d);
        wait_for("the first graph", LIMIT, || is_applied(&sb), ctx);
        // Killed while it runs the files; the program then drops them.
        d.signal(Signal::SIGKILL);
        assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
    }
    assert_eq!(records(&sb), 2);
    switch(&sb, "off\n");
    once(&sb, &prog);
    assert!(is_reversed(&sb), "{}", sb.listing());
    assert_eq!(records(&sb), 0);
    // Never twice.
    std::fs::write(sb.path("out/existing"), "the user's\n").unwrap();
    once(&sb, &prog);
    assert_eq!(
        read(&sb.path("out/existing")).as_deref(),
        Some("the user's\n")
    );
}

#[test]
fn a_kill_while_reversing_still_reverses_once() {
    let sb = Sandbox::new();
    prepare(&sb);
    let prog = reversible_program(&sb);
    {
        let d = sb.spawn_run(&prog, &["--listen", "none"]);
        let ctx = || sb.explain_daemon(&d);
        wait_for("the first graph", LIMIT, || is_applied(&sb), ctx);
        switch(&sb, "off\n");
        // Killed as soon as the removal is decided (the reversals may or may not have run).
        wait_for(
            "the reversal to start",
            LIMIT,
            || d.stderr().contains("undoing it"),
            ctx,
        );
        d.signal(Signal::SIGKILL);
        assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
    }
    once(&sb, &prog);
    assert!(is_reversed(&sb), "{}", sb.listing());
    assert_eq!(records(&sb), 0);
    std::fs::write(sb.path("out/existing"), "the user's\n").unwrap();
    once(&sb, &prog);
    assert_eq!(
        read(&sb.path("out/existing")).as_deref(),
        Some("the user's\n")
    );
}
