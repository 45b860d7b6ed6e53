//! mcl programs through the real binary: `tend check` (spec/mcl.md §12) and `tend run` on `.mcl`.

use std::path::Path;
use std::process::{Command, Output};

fn tend(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tend");
    eprintln!(
        "tend {args:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn prints_the_first_graph_sorted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("prog")).unwrap();
    std::fs::write(
        dir.path().join("prog/main.mcl"),
        "Test[\"conf\"] -> Test[\"${svc}\"]\n$svc = \"web\"\ntest \"${svc}\" {}\ntest \"conf\" {\n\tNotify => Test[\"reload\"],\n}\ntest \"reload\" {}\n",
    )
    .unwrap();
    let out = tend(&["check", "--print-graph", "prog"], dir.path());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Edge: test[conf] -> test[reload] # test[conf] -> test[reload]\n\
         Edge: test[conf] -> test[web] # test[conf] -> test[web]\n\
         Vertex: test[conf]\nVertex: test[reload]\nVertex: test[web]\n"
    );
    // Without --print-graph nothing is printed.
    let out = tend(&["check", "prog"], dir.path());
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn errors_go_to_stderr_with_status_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.mcl"),
        "import \"fmt\"\ntest [fmt.printf(\"%d items\", \"three\")] {}\n",
    )
    .unwrap();
    let out = tend(&["check", "--print-graph", "bad.mcl"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: errUnify: "), "{err}");
    assert!(err.contains("/bad.mcl @ 2:7-2:38"), "{err}");
    assert!(err.contains("\n      ^^^^^^^^^^"), "{err}");
}

#[test]
fn world_seed_and_hostname() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.json"),
        r#"{"hostname": "lb", "exports": [{"to": "lb", "from": "web1", "kind": "test", "name": "be-web1", "res": {"meta": {"hidden": true}}}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.mcl"),
        "collect test \"be-web1\" {\n\tMeta:hidden => false,\n}\ntest \"on-${hostname}\" {}\n",
    )
    .unwrap();
    let out = tend(
        &["check", "--print-graph", "--world", "w.json", "main.mcl"],
        dir.path(),
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Vertex: test[be-web1]\nVertex: test[on-lb]\n"
    );
    let out = tend(
        &[
            "check",
            "--print-graph",
            "--world",
            "w.json",
            "--hostname",
            "db",
            "main.mcl",
        ],
        dir.path(),
    );
    // Host `db` cannot see an export addressed to `lb`.
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Vertex: test[on-db]\n"
    );
}

#[test]
fn run_converges_an_mcl_program() {
    let sb = crate::sandbox::Sandbox::new();
    let target = sb.path("out/motd");
    let prog = sb.write(
        "prog/main.mcl",
        &format!(
            "import \"strings\"\n$who = \"world\"\nfile \"{}\" {{\n\tcontent => strings.to_upper(\"hello ${{who}}\\n\"),\n\tstate => $const.res.file.state.exists,\n}}\n",
            target.display()
        ),
    );
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let out = sb.run_once(prog.parent().unwrap(), &["--listen", "none"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "HELLO WORLD\n");
}

/// `local.vardir` and `local.pool` under `tend run`: a directory in the state dir, and
/// numbers that stay the same across runs.
#[test]
fn run_gives_local_state_under_the_state_dir() {
    let sb = crate::sandbox::Sandbox::new();
    let prog = sb.write(
        "prog/main.mcl",
        "import \"fmt\"\nimport \"local\"\n$d = local.vardir(\"app/\")\n\
         file \"${d}ids\" {\n\tcontent => fmt.printf(\"web=%d db=%d\\n\", local.pool(\"ids\", \"web\"), local.pool(\"ids\", \"db\")),\n\tstate => \"exists\",\n}\n",
    );
    for _ in 0..2 {
        let out = sb.run_once(prog.parent().unwrap(), &["--listen", "none"]);
        assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
        let ids = sb.state_dir().join("local/functions/app/ids");
        assert_eq!(std::fs::read_to_string(&ids).unwrap(), "web=1 db=2\n");
    }
}

/// A `value` resource's value reaches `value.get_int` (a new graph once the resource has
/// applied), and is kept in the state dir: the next run starts with it ready.
#[test]
fn values_flow_from_value_resources_to_value_get() {
    use crate::sandbox::{read, wait_for};
    use std::time::Duration;

    let sb = crate::sandbox::Sandbox::new();
    let prog = sb.write(
        "main.mcl",
        "import \"fmt\"\nimport \"sys\"\nimport \"value\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         value \"port\" {\n\tany => 8080,\n}\n\
         $v = value.get_int(\"port\")\n\
         file \"${root}/out/port\" {\n\tcontent => fmt.printf(\"%d %t\\n\", $v->value, $v->ready),\n}\n",
    );
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let port = sb.path("out/port");
    let limit = Duration::from_secs(20);
    {
        let d = sb.spawn_run(&prog, &["--listen", "none"]);
        let ctx = || sb.explain_daemon(&d);
        wait_for(
            "the value once the resource applied",
            limit,
            || read(&port).as_deref() == Some("8080 true\n"),
            ctx,
        );
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
    }
    // Kept: a second run's first graph already has it (the program refuses to start without).
    let text = std::fs::read_to_string(&prog).unwrap();
    let prog2 = sb.write(
        "second/main.mcl",
        &format!("{text}panic(not $v->ready, \"value.get_int was not ready at start\")\n"),
    );
    let out = sb.run_once(&prog2, &["--listen", "none"]);
    assert_eq!(out.code(), 0, "{}", sb.explain("expected exit 0", &out));
    assert_eq!(read(&port).as_deref(), Some("8080 true\n"));
}

/// `value.get` reads a `value` resource's struct at the type unification solved for the call:
/// the zero struct, not ready, then the held struct once the resource has applied.
#[test]
fn values_flow_from_value_resources_to_polymorphic_value_get() {
    use crate::sandbox::{read, wait_for};
    use std::time::Duration;

    let sb = crate::sandbox::Sandbox::new();
    let prog = sb.write(
        "main.mcl",
        "import \"fmt\"\nimport \"sys\"\nimport \"value\"\n$root = sys.getenv(\"TEND_ROOT\")\n\
         value \"svc\" {\n\tany => struct{name => \"web\", ports => [80, 443]},\n}\n\
         $v = value.get(\"svc\")\n\
         $s struct{name str; ports []int} = $v->value\n\
         file \"${root}/out/svc\" {\n\tcontent => fmt.printf(\"%s %v %t\\n\", $s->name, $s->ports, $v->ready),\n}\n",
    );
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let out = sb.path("out/svc");
    let d = sb.spawn_run(&prog, &["--listen", "none"]);
    let ctx = || sb.explain_daemon(&d);
    wait_for(
        "the held struct once the resource applied",
        Duration::from_secs(20),
        || read(&out).as_deref() == Some("web [80, 443] true\n"),
        ctx,
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
}

#[test]
fn run_swaps_in_each_new_mcl_graph() {
    use crate::sandbox::{read, wait_for};
    use std::time::Duration;

    let sb = crate::sandbox::Sandbox::new();
    let prog = sb.write(
        "main.mcl",
        "import \"os\"\nimport \"sys\"\n$root = sys.getenv(\"TEND_ROOT\")\n$g = os.readfile(\"${root}/greeting\") <|> \"default\\n\"\nfile \"${root}/out/motd\" {\n\tcontent => $g,\n}\n",
    );
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let d = sb.spawn_run(&prog, &["--listen", "none"]);
    let motd = sb.path("out/motd");
    let ctx = || sb.explain_daemon(&d);
    let limit = Duration::from_secs(20);
    wait_for(
        "the first graph",
        limit,
        || read(&motd).as_deref() == Some("default\n"),
        ctx,
    );
    // A new value of the watched file is a new graph, swapped in without a restart.
    let tmp = sb.path("greeting.tmp");
    std::fs::write(&tmp, "custom\n").unwrap();
    std::fs::rename(&tmp, sb.path("greeting")).unwrap();
    wait_for(
        "the new graph",
        limit,
        || read(&motd).as_deref() == Some("custom\n"),
        ctx,
    );
    // Deleted: the fallback of `<|>`.
    std::fs::remove_file(sb.path("greeting")).unwrap();
    wait_for(
        "the fallback graph",
        limit,
        || read(&motd).as_deref() == Some("default\n"),
        ctx,
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some(), "{}", ctx());
}

#[test]
fn check_takes_a_yaml_graph_too_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::write(
        dir.path().join("g.yaml"),
        format!(
            "resources:\n  file:\n    - name: {0}/a\n      content: \"x\"\n    - name: {0}/b\n\
             edges:\n  - from: file[{0}/a]\n    to: file[{0}/b]\n",
            out_dir.display()
        ),
    )
    .unwrap();
    let out = tend(&["check", "--print-graph", "g.yaml"], dir.path());
    assert!(out.status.success());
    let d = out_dir.display();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "Edge: file[{d}/a] -> file[{d}/b] # file[{d}/a] -> file[{d}/b]\n\
             Vertex: file[{d}/a]\nVertex: file[{d}/b]\n"
        )
    );
    assert!(!out_dir.exists(), "check created files");

    // The engine's own checks too (a cycle), located in the file; status 1, as for mcl.
    std::fs::write(
        dir.path().join("cycle.yml"),
        "resources:\n  noop:\n    - name: a\n    - name: b\n\
         edges:\n  - from: noop[a]\n    to: noop[b]\n  - from: noop[b]\n    to: noop[a]\n",
    )
    .unwrap();
    let out = tend(&["check", "cycle.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cycle.yml:") && err.contains("dependency cycle"),
        "{err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "one error, not a parse of YAML as mcl: {err}"
    );

    // mcl-only flags are refused with a clear message.
    let out = tend(&["check", "--world", "w.json", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("is a YAML graph"));
}

/// Every example program passes `tend check` (the kinds' own validation included), changing
/// nothing on the host.
#[test]
fn the_examples_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&examples).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "mcl" || x == "yaml") {
            let out = tend(&["check", p.to_str().unwrap()], &examples);
            assert!(out.status.success(), "{}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} examples");
}

/// mgmt's `ssh:authorized_key`, `json:edit`, `tar` and `gzip` from an mcl program (colon
/// kinds, int constants, an edge between two of them) through the real daemon, each repaired
/// after a change behind its back.
#[test]
fn mgmts_file_kinds_run_from_mcl_and_heal() {
    use crate::sandbox::{read, wait_for, Sandbox};
    use std::time::Duration;

    let sb = Sandbox::new();
    let root = sb.root().to_str().unwrap().to_string();
    std::fs::create_dir_all(sb.path("in/sub")).unwrap();
    std::fs::create_dir_all(sb.path("home")).unwrap();
    std::fs::write(sb.path("in/sub/a.txt"), "alpha\n").unwrap();
    std::fs::write(sb.path("conf.json"), r#"{"keep": 1, "old": true}"#).unwrap();
    let key = "AAAAC3NzaC1lZDI1NTE5AAAAIBkZPsRLpuOBqOLpG1TNOEnXwzEvd9mYoh0D5sV5qbzh";
    let program = format!(
        r#"$d = "{root}"
ssh:authorized_key "k" {{
	state => "exists",
	file => "${{d}}/home/.ssh/authorized_keys",
	type => "ssh-ed25519",
	key => "{key}",
	comment => "ci",
}}
json:edit "${{d}}/conf.json" {{
	edits => [".server.state = \"ready\"", "del(.old)"],
}}
tar "${{d}}/out.tar" {{
	inputs => ["${{d}}/in/"],
	format => $const.res.tar.format.gnu,
}}
gzip "${{d}}/out.tar.gz" {{
	input => "${{d}}/out.tar",
	level => $const.res.gzip.level.best_compression,
}}
Tar["${{d}}/out.tar"] -> Gzip["${{d}}/out.tar.gz"]
"#
    );
    let prog = sb.write("main.mcl", &program);
    let d = sb.spawn_run(&prog, &[]);
    let ctx = || sb.explain_daemon(&d);
    let limit = Duration::from_secs(30);
    let ak = sb.path("home/.ssh/authorized_keys");
    let line = format!("ssh-ed25519 {key} ci\n");
    let conf_ok = || {
        read(&sb.path("conf.json")).and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            == Some(serde_json::json!({"keep": 1, "server": {"state": "ready"}}))
    };
    let gz_holds = |name: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {root}/out.tar.gz | tar -tf -"))
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(name))
    };
    wait_for(
        "the first converge",
        limit,
        || read(&ak).as_deref() == Some(line.as_str()) && conf_ok() && gz_holds("sub/a.txt"),
        ctx,
    );
    assert_eq!(crate::sandbox::mode(&ak), 0o600);
    assert_eq!(crate::sandbox::mode(&sb.path("home/.ssh")), 0o700);

    std::fs::remove_file(&ak).unwrap();
    wait_for(
        "the authorized_keys file to come back",
        limit,
        || read(&ak).as_deref() == Some(line.as_str()),
        ctx,
    );
    let tmp = sb.path("conf.json.new");
    std::fs::write(&tmp, r#"{"keep": 1, "server": {"state": "down"}}"#).unwrap();
    std::fs::rename(&tmp, sb.path("conf.json")).unwrap();
    wait_for("the JSON edit to be redone", limit, conf_ok, ctx);
    // A new input file reaches the archive, and through the edge, its gzip.
    std::fs::write(sb.path("in/sub/b.txt"), "beta\n").unwrap();
    wait_for(
        "the new file in the compressed archive",
        limit,
        || gz_holds("sub/b.txt"),
        ctx,
    );
    std::fs::remove_file(sb.path("out.tar.gz")).unwrap();
    wait_for(
        "the compressed archive to come back",
        limit,
        || gz_holds("sub/b.txt"),
        ctx,
    );
}

/// `tend run main.mcl` from the program's own directory (a relative path with no directory
/// part) runs it, as `tend run ./main.mcl` does.
#[test]
fn a_program_named_without_its_directory_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out");
    std::fs::write(
        dir.path().join("main.mcl"),
        format!(
            "file \"{}\" {{\n\tcontent => \"x\\n\",\n}}\n",
            out_file.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = tend(
        &[
            "run",
            "main.mcl",
            "--converged-timeout",
            "1",
            "--listen",
            "none",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "x\n");
}
