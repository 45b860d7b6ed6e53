//! Signed deploys from the command line: `tend keygen` writes a key pair with the right
//! modes, `tend deploy --key` refuses a key others may read, `tend run --trust` refuses keys
//! it cannot use, and on the embedded store a host with trusted keys (in `<state-dir>/trust`)
//! runs a signed deploy and rejects an unsigned one.

use std::time::Duration;

use crate::sandbox::{mode, read, wait_for, Sandbox};

const PROGRAM: &str = "import \"sys\"\n\
    $root = sys.getenv(\"TEND_ROOT\")\n\
    file \"${root}/hello\" {\n\tcontent => \"VERSION\\n\",\n}\n";

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key_line() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "keygen",
        "--comment",
        "ci@controller",
        sb.path("deploy.key").to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 0, "{}", sb.explain("keygen", &out));
    assert_eq!(mode(&sb.path("deploy.key")), 0o600);
    assert_eq!(mode(&sb.path("deploy.key.pub")), 0o644);
    let private = read(&sb.path("deploy.key")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----\n")
            && private.ends_with("-----END PRIVATE KEY-----\n"),
        "{private}"
    );
    let public = read(&sb.path("deploy.key.pub")).unwrap();
    let words: Vec<&str> = public.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{public}");
    assert_eq!((words[0], words[2]), ("ed25519", "ci@controller"));
    assert_eq!(words[1].len(), 44, "base64 of 32 bytes: {public}");
    let fp = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{}", sb.explain("keygen", &out)));
    assert!(fp.starts_with("ed25519:") && fp.len() == 24, "{fp}");

    // Never over an existing key: exit 2, nothing changed.
    let again = sb.run(&["keygen", sb.path("deploy.key").to_str().unwrap()]);
    assert_eq!(again.code(), 2, "{}", sb.explain("keygen", &again));
    assert!(
        again.stderr.contains("deploy.key: already exists"),
        "{}",
        again.stderr
    );
    assert_eq!(read(&sb.path("deploy.key")).unwrap(), private);
    assert_eq!(read(&sb.path("deploy.key.pub")).unwrap(), public);
    // Nor when only the public half exists.
    std::fs::write(sb.path("lone.pub"), "x").unwrap();
    let lone = sb.run(&["keygen", sb.path("lone").to_str().unwrap()]);
    assert_eq!(lone.code(), 2, "{}", sb.explain("keygen", &lone));
    assert!(
        lone.stderr.contains("lone.pub: already exists"),
        "{}",
        lone.stderr
    );
    assert!(!sb.path("lone").exists());
}

#[test]
fn a_key_file_that_cannot_be_used_is_named_and_nothing_is_published() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let key = sb.path("k");
    assert_eq!(sb.run(&["keygen", key.to_str().unwrap()]).code(), 0);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let prog = sb.write("p/main.mcl", &PROGRAM.replace("VERSION", "one"));
    let state = sb.state_dir();
    let out = sb.run(&[
        "deploy",
        prog.parent().unwrap().to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 2, "{}", sb.explain("deploy", &out));
    assert!(
        out.stderr.contains(&format!(
            "--key {}: the private key is readable by group or others (mode 0644); `chmod 600 {}`",
            key.display(),
            key.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!state.exists(), "{}", sb.listing());

    // `tend run --trust`: a missing directory, an empty one, a bad key file, and a program
    // given beside trusted keys are each refused at start (exit 2), naming the path.
    let pub_key = sb.path("k.pub");
    let empty = sb.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad = sb.path("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("x.pub"), "ssh-ed25519 AAAA\n").unwrap();
    let good = sb.path("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::copy(&pub_key, good.join("k.pub")).unwrap();
    for (dir, program, want) in [
        (
            sb.path("missing"),
            None,
            "missing: cannot read the trusted keys".to_string(),
        ),
        (
            empty.clone(),
            None,
            "empty: holds no `*.pub` public key".into(),
        ),
        (bad.clone(), None, "x.pub: not a tend public key".into()),
        (
            good.clone(),
            Some(prog.clone()),
            "is not a signed deploy; publish it with `tend deploy --key`".into(),
        ),
    ] {
        let mut args = vec![
            "run".to_string(),
            "--trust".into(),
            dir.to_str().unwrap().into(),
            "--state-dir".into(),
            state.to_str().unwrap().into(),
            "--listen".into(),
            "none".into(),
        ];
        args.extend(program.map(|p| p.to_str().unwrap().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sb.run(&args);
        assert_eq!(out.code(), 2, "{}", sb.explain("run --trust", &out));
        assert!(out.stderr.contains(&want), "want {want:?}:\n{}", out.stderr);
        assert!(!state.exists(), "{}", sb.listing());
    }
}

#[test]
fn a_host_with_trusted_keys_runs_signed_deploys_and_rejects_unsigned_ones() {
    let sb = Sandbox::new();
    let key = sb.path("ctl.key");
    assert_eq!(sb.run(&["keygen", key.to_str().unwrap()]).code(), 0);
    let state = sb.state_dir();
    let trust = state.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(sb.path("ctl.key.pub"), trust.join("ctl.pub")).unwrap();
    let s = state.to_str().unwrap();
    let deploy = |version: &str, signed: bool| {
        let prog = sb.write(
            &format!("{version}/main.mcl"),
            &PROGRAM.replace("VERSION", version),
        );
        let mut args = vec![
            "deploy",
            prog.parent().unwrap().to_str().unwrap(),
            "--state-dir",
            s,
        ];
        if signed {
            args.extend(["--key", key.to_str().unwrap()]);
        }
        let out = sb.run(&args);
        assert_eq!(out.code(), 0, "{}", sb.explain("deploy", &out));
        out
    };
    let out = deploy("one", true);
    assert!(out.stdout.contains("signed by ed25519:"), "{}", out.stdout);
    // The default trust directory holds the key: the signed deploy runs, and runs again
    // after a restart (the replay guard lets the deploy it verified through).
    for _ in 0..2 {
        let run = sb.run(&[
            "run",
            "--state-dir",
            s,
            "--listen",
            "none",
            "--converged-timeout",
            "0",
        ]);
        assert_eq!(run.code(), 0, "{}", sb.explain("run", &run));
        assert!(
            run.stderr.contains("deploys are verified"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("deploy signature verified"),
            "{}",
            run.stderr
        );
        assert_eq!(read(&sb.path("hello")).as_deref(), Some("one\n"));
        std::fs::remove_file(sb.path("hello")).unwrap();
    }
    assert!(read(&state.join("deploys/verified")).is_some_and(|v| v.starts_with("1 ")));
    std::fs::write(sb.path("hello"), "one\n").unwrap();

    // An unsigned deploy is rejected, and the host waits for one it can run.
    deploy("two", false);
    let d = sb.spawn(&["run", "--state-dir", s, "--listen", "none"]);
    wait_for(
        "the unsigned deploy to be rejected",
        Duration::from_secs(20),
        || {
            d.stderr()
                .contains("unsigned; this host runs only deploys signed by a key it trusts")
        },
        || sb.explain_daemon(&d),
    );
    assert_eq!(read(&sb.path("hello")).as_deref(), Some("one\n"));
    drop(d);
    let list = sb.run(&["deploy", "--list", "--state-dir", s]);
    assert!(list.stdout.contains("SIGNED BY"), "{}", list.stdout);
    assert_eq!(
        list.stdout.matches("ed25519:").count(),
        1,
        "{}",
        list.stdout
    );
    let world = sb.run(&["world", "deploys", "--json", "--state-dir", s]);
    assert_eq!(world.code(), 0, "{}", sb.explain("world deploys", &world));
    let doc: serde_json::Value = serde_json::from_str(&world.stdout).unwrap();
    let signed: Vec<bool> = doc["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["signed_by"]
                .as_str()
                .is_some_and(|f| f.starts_with("ed25519:"))
        })
        .collect();
    assert_eq!(signed, [true, false], "{doc}");
}
