//! `ssh:authorized_key` against real files: an entry added and removed in a given file (a dry
//! run, spacing that does not matter, mode and owner kept), bad specs, and a temporary user's
//! `~/.ssh/authorized_keys` created with sshd's modes and owner and repaired by the engine when
//! it is removed behind tend's back.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec, Value};

use crate::account::{is_root, unique, Cleanup, ACCOUNTS};
use crate::common::{apply, build, dry, engine, invalid, wait_status};

/// Real keys made by `ssh-keygen -t ed25519` (their private halves thrown away).
const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBkZPsRLpuOBqOLpG1TNOEnXwzEvd9mYoh0D5sV5qbzh";
const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIKvS28Lh0ESh2eD6yae/rasYuZcD/ltPUP/ZnNShEaCM";

fn key(state: &str) -> ResSpec {
    ResSpec::new("ssh:authorized_key", "k")
        .param("state", state)
        .param("type", "ssh-ed25519")
        .param("key", K1)
        .param("comment", "alice@laptop")
}

#[tokio::test]
async fn adds_and_removes_an_entry_in_a_given_file() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("authorized_keys");
    let other = format!("ssh-ed25519 {K2} bob");
    std::fs::write(&f, &other).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1), Some(2)).unwrap();
    let at = |s: ResSpec| s.param("file", f.to_str().unwrap());

    let add = build(at(key("exists").param(
        "options",
        Value::List(vec!["no-pty".into(), "from=\"10.0.0.0/8\"".into()]),
    )));
    assert_eq!(dry(&add).await.unwrap(), Checked::Changed);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), other, "a dry run");
    assert_eq!(apply(&add).await.unwrap(), Checked::Changed);
    let line = format!("no-pty,from=\"10.0.0.0/8\" ssh-ed25519 {K1} alice@laptop");
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{other}\n{line}\n")
    );
    assert_eq!(apply(&add).await.unwrap(), Checked::InState);
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1, 2));

    // Other spacing reads as the same entry; `absent` removes every copy of it.
    std::fs::write(
        &f,
        format!("{line}\n{other}\n# note\nno-pty,from=\"10.0.0.0/8\"  ssh-ed25519\t{K1}   alice@laptop\n"),
    )
    .unwrap();
    assert_eq!(apply(&add).await.unwrap(), Checked::InState);
    let rm = build(at(ResSpec::new(
        "ssh:authorized_key",
        format!("no-pty,from=\"10.0.0.0/8\" ssh-ed25519 {K1} alice@laptop"),
    )
    .param("state", "absent")));
    assert_eq!(dry(&rm).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&rm).await.unwrap(), Checked::Changed);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{other}\n# note\n")
    );
    assert_eq!(apply(&rm).await.unwrap(), Checked::InState);

    // `content` is the whole line; a missing file (not under `.ssh`) is created 0600.
    let new = t.path().join("keys2");
    let c = build(
        ResSpec::new("ssh:authorized_key", "c")
            .param("state", "exists")
            .param("file", new.to_str().unwrap())
            .param("content", format!("ssh-ed25519 {K2} bob\n")),
    );
    assert_eq!(apply(&c).await.unwrap(), Checked::Changed);
    assert_eq!(std::fs::read_to_string(&new).unwrap(), format!("{other}\n"));
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o7777, 0o600);
}

/// A user that does not exist has no entry to remove, and none can be added yet.
#[tokio::test]
async fn a_missing_user() {
    let nobody = "ttnosuchuser0";
    let absent = build(key("absent").param("user", nobody));
    assert_eq!(apply(&absent).await.unwrap(), Checked::InState);
    let e = apply(&build(key("exists").param("user", nobody)))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no user") && e.contains(nobody), "{e}");
    let e = apply(&build(
        key("exists").param("file", format!("~{nobody}/.ssh/k")),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("no user") && e.contains(nobody), "{e}");
}

#[test]
fn bad_specs_name_the_field() {
    let e = invalid(key("exists").param("content", format!("ssh-ed25519 {K1}")));
    assert!(e.contains("`options`") || e.contains("`type`"), "{e}");
    let e = invalid(
        ResSpec::new("ssh:authorized_key", "k")
            .param("state", "exists")
            .param("type", "ssh-ed25519"),
    );
    assert!(e.contains("`key`") && e.contains("required"), "{e}");
    let e = invalid(key("exists").param("type", "ssh-rsa"));
    assert!(e.contains("`type`") && e.contains("ssh-ed25519"), "{e}");
    let e = invalid(key("exists").param("key", "not base64!"));
    assert!(e.contains("`key`") && e.contains("base64"), "{e}");
    let e = invalid(key("exists").param("file", "ssh/keys"));
    assert!(e.contains("`file`") && e.contains("absolute"), "{e}");
    let e = invalid(ResSpec::new("ssh:authorized_key", "k").param("content", "x"));
    assert!(e.contains("`state`"), "{e}");
    let e = invalid(ResSpec::new("ssh:authorized_key", "hello").param("state", "exists"));
    assert!(e.contains("not an authorized_keys entry"), "{e}");
    let e = invalid(key("exists").param("options", Value::List(vec!["a b".into()])));
    assert!(e.contains("`options`"), "{e}");
    let e = invalid(key("exists").param("user", "no such user!"));
    assert!(e.contains("`user`"), "{e}");
}

/// A temporary user's file: `.ssh` made 0700 and the file 0600, both the user's; the file
/// removed behind tend's back comes back at once, and `absent` takes the entry out.
#[tokio::test]
async fn a_users_file_is_created_for_sshd_and_repaired() {
    if !is_root("a_users_file_is_created_for_sshd_and_repaired") {
        return;
    }
    let _lock = ACCOUNTS.lock().await;
    let home_root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home_root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = unique("ak");
    let home = home_root.path().join(&name);
    let _cleanup = Cleanup {
        users: vec![name.clone()],
        groups: vec![],
    };
    let out = Command::new("useradd")
        .args(["-m", "-U", "-d", home.to_str().unwrap(), &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (uid, gid) = {
        let m = std::fs::metadata(&home).unwrap();
        (m.uid(), m.gid())
    };
    let ssh = home.join(".ssh");
    let file = ssh.join("authorized_keys");
    let spec = key("exists").param("user", name.as_str());

    let r = build(spec.clone());
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!ssh.exists(), "a dry run creates nothing");

    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(spec.clone());
    e.swap(g).await.unwrap();
    let converged = |s: &tend_engine::Status| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    };
    wait_status(&e, "converged", 20, converged).await;
    let d = std::fs::metadata(&ssh).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o700, uid, gid));
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, uid, gid));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("ssh-ed25519 {K1} alice@laptop\n")
    );

    // Removed behind tend's back: the file, then the whole directory.
    for what in ["file", "dir"] {
        let gone = Instant::now();
        match what {
            "file" => std::fs::remove_file(&file).unwrap(),
            _ => std::fs::remove_dir_all(&ssh).unwrap(),
        }
        loop {
            if std::fs::read_to_string(&file).is_ok_and(|t| t.contains(K1)) {
                break;
            }
            assert!(
                gone.elapsed() < Duration::from_secs(10),
                "{what} not repaired"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eprintln!(
            "ssh:authorized_key repair: {:.1} ms after the {what} was removed",
            gone.elapsed().as_secs_f64() * 1e3
        );
        let m = std::fs::metadata(&file).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, uid, gid));
        let d = std::fs::metadata(&ssh).unwrap();
        assert_eq!((d.mode() & 0o7777, d.uid()), (0o700, uid));
    }
    // An entry edited away is put back too.
    std::fs::write(&file, format!("ssh-ed25519 {K2} bob\n")).unwrap();
    let edited = Instant::now();
    while !std::fs::read_to_string(&file).unwrap().contains(K1) {
        assert!(
            edited.elapsed() < Duration::from_secs(10),
            "entry not put back"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("ssh-ed25519 {K2} bob\nssh-ed25519 {K1} alice@laptop\n")
    );

    let mut g = GraphSpec::default();
    g.resources.push(key("absent").param("user", name.as_str()));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, converged).await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("ssh-ed25519 {K2} bob\n")
    );
    e.shutdown().await;
}
