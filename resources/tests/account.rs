//! `user` and `group` against the real system: this host's `/etc/passwd` and `/etc/group`,
//! changed by the shadow tools. Needs root; without it the tests say so and pass.
//!
//! Every test uses account names of its own (`tt<pid><n>`), holds [`ACCOUNTS`] (the tools
//! lock the files; one test at a time keeps failures readable), and removes what it created
//! when it ends, on a panic too ([`Cleanup`]).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec, Value};

use crate::common::{apply, build, dry, invalid, watch};

pub(crate) static ACCOUNTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn is_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("{test}: skipped (needs root)");
    }
    root
}

/// A new account name, unique to this process.
pub(crate) fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tt{what}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Removes the users and groups when dropped.
pub(crate) struct Cleanup {
    pub(crate) users: Vec<String>,
    pub(crate) groups: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

/// The `/etc/passwd` line of `name`, split.
fn passwd(name: &str) -> Option<Vec<String>> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

/// The `/etc/group` line of `name`, split.
fn group_line(name: &str) -> Option<Vec<String>> {
    std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free id above the ones in use (for uids and gids alike).
fn free_id() -> u32 {
    let mut max = 20000;
    for f in ["/etc/passwd", "/etc/group"] {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            if let Some(id) = l.split(':').nth(2).and_then(|s| s.parse::<u32>().ok()) {
                if id < 60000 {
                    max = max.max(id);
                }
            }
        }
    }
    max + 1 + std::process::id() % 50
}

#[tokio::test]
async fn groups_are_created_changed_and_removed() {
    if !is_root("groups_are_created_changed_and_removed") {
        return;
    }
    let _one = ACCOUNTS.lock().await;
    let g = unique("g");
    let _c = Cleanup {
        users: vec![],
        groups: vec![g.clone()],
    };
    let gid = free_id();
    let r = build(ResSpec::new("group", &g).param("gid", gid as i64));
    // A dry run changes nothing.
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(group_line(&g).is_none());
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(group_line(&g).unwrap()[2], gid.to_string());
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // Another gid: groupmod.
    let r2 = build(ResSpec::new("group", &g).param("gid", gid as i64 + 100));
    assert_eq!(apply(&r2).await.unwrap(), Checked::Changed);
    assert_eq!(group_line(&g).unwrap()[2], (gid + 100).to_string());
    // A gid taken by another group fails, naming it.
    let e = apply(&build(ResSpec::new("group", &g).param("gid", 0i64)))
        .await
        .unwrap_err();
    assert!(e.message.contains("\"root\""), "{e}");
    let gone = build(ResSpec::new("group", &g).param("state", "absent"));
    assert_eq!(dry(&gone).await.unwrap(), Checked::Changed);
    assert!(group_line(&g).is_some());
    assert_eq!(apply(&gone).await.unwrap(), Checked::Changed);
    assert!(group_line(&g).is_none());
    assert_eq!(apply(&gone).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn users_are_created_changed_and_removed() {
    if !is_root("users_are_created_changed_and_removed") {
        return;
    }
    let _one = ACCOUNTS.lock().await;
    let (u, g1, g2) = (unique("u"), unique("g"), unique("g"));
    let _c = Cleanup {
        users: vec![u.clone()],
        groups: vec![u.clone(), g1.clone(), g2.clone()],
    };
    for g in [&g1, &g2] {
        run(&["groupadd", g]);
    }
    let uid = free_id();
    let spec = ResSpec::new("user", &u)
        .param("uid", uid as i64)
        .param("groups", vec![g1.clone()])
        .param("homedir", format!("/home/{u}"))
        .param("shell", "/bin/sh");
    let r = build(spec.clone());
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(passwd(&u).is_none(), "a dry run created the user");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let p = passwd(&u).unwrap();
    assert_eq!(
        (p[2].as_str(), p[5].as_str(), p[6].as_str()),
        (
            uid.to_string().as_str(),
            format!("/home/{u}").as_str(),
            "/bin/sh"
        )
    );
    assert_eq!(group_line(&g1).unwrap()[3], u);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // Another shell and groups: usermod; a dry run first changes nothing.
    let r2 = build(
        spec.clone()
            .param("shell", "/bin/bash")
            .param("groups", vec![g2.clone()]),
    );
    assert_eq!(dry(&r2).await.unwrap(), Checked::Changed);
    assert_eq!(passwd(&u).unwrap()[6], "/bin/sh");
    assert_eq!(apply(&r2).await.unwrap(), Checked::Changed);
    assert_eq!(passwd(&u).unwrap()[6], "/bin/bash");
    assert_eq!(group_line(&g1).unwrap()[3], "");
    assert_eq!(group_line(&g2).unwrap()[3], u);

    // Someone else's uid fails, naming the owner.
    let e = apply(&build(ResSpec::new("user", &u).param("uid", 0i64)))
        .await
        .unwrap_err();
    assert!(e.message.contains("\"root\""), "{e}");
    // A group that does not exist: usermod's own message.
    let e = apply(&build(
        ResSpec::new("user", &u).param("groups", vec!["ttnosuchgroupx"]),
    ))
    .await
    .unwrap_err();
    assert!(e.message.contains("ttnosuchgroupx"), "{e}");

    let gone = build(ResSpec::new("user", &u).param("state", "absent"));
    assert_eq!(dry(&gone).await.unwrap(), Checked::Changed);
    assert!(passwd(&u).is_some());
    assert_eq!(apply(&gone).await.unwrap(), Checked::Changed);
    assert!(passwd(&u).is_none());
    assert_eq!(apply(&gone).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn the_watch_sees_usermod_and_userdel() {
    if !is_root("the_watch_sees_usermod_and_userdel") {
        return;
    }
    let _one = ACCOUNTS.lock().await;
    let u = unique("w");
    let _c = Cleanup {
        users: vec![u.clone()],
        groups: vec![u.clone()],
    };
    let r = build(ResSpec::new("user", &u).param("shell", "/bin/sh"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let w = watch(&r).await;
    w.clear();
    run(&["usermod", "-s", "/bin/bash", &u]);
    w.event("usermod -s").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(passwd(&u).unwrap()[6], "/bin/sh");
    w.clear();
    run(&["userdel", &u]);
    w.event("userdel").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(passwd(&u).is_some());
}

/// Run by the engine: a group, a user in it and a file they own converge in one pass
/// (the automatic edges order them), and drift behind tend's back (`usermod -s`, `userdel`)
/// is repaired by the watch alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_orders_accounts_and_repairs_drift() {
    if !is_root("the_engine_orders_accounts_and_repairs_drift") {
        return;
    }
    let _one = ACCOUNTS.lock().await;
    let (u, g) = (unique("e"), unique("g"));
    let _c = Cleanup {
        users: vec![u.clone()],
        groups: vec![u.clone(), g.clone()],
    };
    let t = tempfile::tempdir().unwrap();
    let owned = t.path().join("owned");
    let state = tempfile::tempdir().unwrap();
    let e = crate::common::engine(state.path(), false);
    // Listed in the worst order: the file first, the group last.
    let graph = GraphSpec {
        resources: vec![
            ResSpec::new("file", owned.to_str().unwrap())
                .param("content", "x\n")
                .param("owner", u.as_str())
                .param("group", g.as_str()),
            ResSpec::new("user", &u)
                .param("groups", vec![g.clone()])
                .param("shell", "/bin/sh"),
            ResSpec::new("group", &g),
        ],
        edges: Vec::new(),
    };
    e.swap(graph).await.unwrap();
    crate::common::wait_status(&e, "the first pass", 30, |s| {
        s.converged && s.count(VertexState::Converged) == 3
    })
    .await;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&owned).unwrap();
    let p = passwd(&u).unwrap();
    assert_eq!(m.uid().to_string(), p[2]);
    assert_eq!(m.gid().to_string(), group_line(&g).unwrap()[2]);

    let mut repairs = Vec::new();
    for (what, args) in [
        ("usermod -s", vec!["usermod", "-s", "/bin/bash", u.as_str()]),
        ("userdel", vec!["userdel", u.as_str()]),
    ] {
        run(&args);
        let t0 = Instant::now();
        loop {
            if passwd(&u).is_some_and(|p| p[6] == "/bin/sh") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{what} not repaired"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        repairs.push((what, t0.elapsed()));
    }
    eprintln!("drift repair: {repairs:?}");
    e.shutdown().await;
}

/// `exec` runs as `user` (with the user's groups, `HOME`, `USER`) and `group`.
#[tokio::test]
async fn exec_runs_as_the_user_and_group() {
    if !is_root("exec_runs_as_the_user_and_group") {
        return;
    }
    let _one = ACCOUNTS.lock().await;
    let (u, g) = (unique("x"), unique("g"));
    let _c = Cleanup {
        users: vec![u.clone()],
        groups: vec![u.clone(), g.clone()],
    };
    run(&["groupadd", &g]);
    run(&["useradd", "-G", &g, "-d", "/nonexistent-home", &u]);
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = t.path().join("id");
    let ids = |spec: ResSpec| {
        let out = out.clone();
        async move {
            let _ = std::fs::remove_file(&out);
            let r = build(spec);
            assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
            std::fs::read_to_string(&out).unwrap()
        }
    };
    let sh = |line: String| {
        ResSpec::new("exec", "e")
            .param("shell", "/bin/sh")
            .param("cmd", line)
    };
    let line = format!(
        "echo $(id -un) $(id -gn) $(id -Gn) $HOME $USER > {}",
        out.display()
    );
    let got = ids(sh(line.clone()).param("user", u.as_str())).await;
    let w: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(w[0], u, "{got}");
    assert_eq!(w[1], u, "primary group: {got}");
    assert!(w.contains(&g.as_str()), "supplementary group: {got}");
    assert!(got.contains(&format!("/nonexistent-home {u}")), "{got}");
    let got = ids(sh(line)
        .param("user", u.as_str())
        .param("group", g.as_str()))
    .await;
    assert_eq!(got.split_whitespace().nth(1), Some(g.as_str()), "{got}");
    // A user that does not exist fails the run, naming the field.
    let r = build(sh("true".into()).param("user", "ttnosuchuserx"));
    let e = apply(&r).await.unwrap_err();
    assert!(e.message.contains("field `user`"), "{e}");
}

/// mgmt's `exec` forms: no `cmd` (the name is the command), and a `cmd` with spaces and no
/// shell (split on whitespace).
#[tokio::test]
async fn exec_takes_the_name_and_splits_the_command() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let r = build(ResSpec::new(
        "exec",
        format!("/usr/bin/touch {}", a.display()),
    ));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(a.exists(), "the name ran as the command");
    let b = t.path().join("b");
    let c = t.path().join("c");
    let r = build(ResSpec::new("exec", "two").param(
        "cmd",
        format!("  /usr/bin/touch   {}\t{} ", b.display(), c.display()),
    ));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(b.exists() && c.exists(), "split on whitespace");
    let e = invalid(
        ResSpec::new("exec", "e")
            .param("cmd", "/bin/echo hi")
            .param("args", Value::List(vec![Value::from("x")])),
    );
    assert!(e.contains("field `args`"), "{e}");
}
