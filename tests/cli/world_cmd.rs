//! `tend world` against a real embedded store and a real etcd: the built binary prints the
//! decoded records as a table or JSON, and says clearly when there is no store.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tend_testkit::EtcdServer;
use tend_world::{Export, HostWorld, ResWorld, StrWorld, World, WorldConfig};

fn tend(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tend"))
        .arg("world")
        .args(args)
        .env_remove("TEND_STATE_DIR")
        .output()
        .expect("run tend");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn populate(cfg: WorldConfig) -> World {
    let w = World::connect(cfg).await.unwrap();
    w.res_export(vec![Export {
        kind: "file".into(),
        name: "/etc/motd".into(),
        from: String::new(),
        to: "*".into(),
        data: b"hello".to_vec(),
    }])
    .await
    .unwrap();
    w.str_set("greeting", "hi").await.unwrap();
    w.strmap_set("role", "web").await.unwrap();
    w.host_update(&tend_world::HostStatus {
        deploy: Some(3),
        converged: true,
        ..Default::default()
    })
    .await
    .unwrap();
    w
}

fn check(args: &[&str]) {
    let (ok, out, err) = tend(&[args, &["exports", "--json"]].concat());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "/etc/motd");
    assert_eq!(v[0]["from"], "h1");
    assert_eq!(v[0]["to"], "*");
    assert_eq!(v[0]["data"], "hello");
    let (ok, out, err) = tend(&[args, &["strings"]].concat());
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["greeting", "hi"])),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["role", "h1", "web"])),
        "{out}"
    );
    let (ok, out, err) = tend(&[args, &["hosts", "--json"]].concat());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["hostname"], "h1");
    assert_eq!(v[0]["deploy"], 3);
    assert_eq!(v[0]["converged"], true);
    let instance = v[0]["instance"].as_str().expect("an instance id");
    assert_eq!(instance.len(), 36, "a UUID: {instance}");
    let (ok, out, err) = tend(&[args, &["hosts"]].concat());
    assert!(ok, "{err}");
    assert!(out.starts_with("HOST"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["h1", &instance[..8]])),
        "{out}"
    );
    let (ok, out, err) = tend(&[args, &["deploys"]].concat());
    assert!(ok, "{err}");
    assert!(out.starts_with("ID"), "{out}");
}

#[test]
fn reads_the_embedded_store_while_its_owner_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(populate(WorldConfig::embedded(dir.path(), "h1")));
    let d = dir.path().display().to_string();
    check(&["--state-dir", &d]);
    drop(w);
}

#[test]
fn reads_etcd() {
    let etcd = EtcdServer::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = WorldConfig::etcd(vec![etcd.client_url.clone()], "h1");
    cfg.session_ttl = Duration::from_secs(30);
    let _w = rt.block_on(populate(cfg));
    check(&["--etcd", &etcd.client_url]);
}

#[test]
fn missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = tend(&["--state-dir", &dir.path().display().to_string(), "hosts"]);
    assert!(!ok);
    let log = Path::new(&dir.path()).join("world.log");
    assert!(
        err.contains(&format!("no embedded store at {}", log.display())),
        "{err}"
    );
}

#[test]
fn watch_prints_again_after_a_change() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let etcd = EtcdServer::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt
        .block_on(World::connect(WorldConfig::etcd(
            vec![etcd.client_url.clone()],
            "h1",
        )))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tend"))
        .args([
            "world",
            "--etcd",
            &etcd.client_url,
            "strings",
            "--watch",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // A watchdog ends the child if a listing never comes, so the test cannot hang.
    let (done, cancelled) = std::sync::mpsc::channel::<()>();
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        if cancelled.recv_timeout(Duration::from_secs(20)).is_err() {
            // SAFETY: signalling the child this test started and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("an initial listing").unwrap();
    assert_eq!(first, r#"{"maps":{},"strings":{}}"#);
    rt.block_on(w.str_set("greeting", "hi")).unwrap();
    let second = lines.next().expect("a listing after the change").unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(second, r#"{"maps":{},"strings":{"greeting":"hi"}}"#);
}
