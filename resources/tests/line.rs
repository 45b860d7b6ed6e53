//! `line` against real files: add, remove, a block of lines, mode and owner kept, a dry run,
//! bad specs, and a line removed behind tend's back put back by the engine at once.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec};

use crate::common::{apply, build, dry, engine, invalid, wait_status, watch};

fn line(file: &std::path::Path, state: &str, content: &str) -> ResSpec {
    ResSpec::new("line", "l")
        .param("file", file.to_str().unwrap())
        .param("state", state)
        .param("content", content)
}

#[tokio::test]
async fn adds_and_removes_lines_keeping_mode_and_owner() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("hosts");
    std::fs::write(&f, "127.0.0.1 localhost").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1), Some(2)).unwrap();

    let add = build(line(&f, "exists", "192.0.2.10 web1"));
    assert_eq!(dry(&add).await.unwrap(), Checked::Changed);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "127.0.0.1 localhost",
        "a dry run"
    );
    assert_eq!(apply(&add).await.unwrap(), Checked::Changed);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "127.0.0.1 localhost\n192.0.2.10 web1\n"
    );
    assert_eq!(apply(&add).await.unwrap(), Checked::InState);
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1, 2));

    // A block of two lines, then removal of every copy of one line.
    let block = build(line(&f, "exists", "# app\n192.0.2.11 app1"));
    assert_eq!(apply(&block).await.unwrap(), Checked::Changed);
    std::fs::write(&f, "a\n192.0.2.10 web1\nb\n192.0.2.10 web1\n").unwrap();
    let rm = build(line(&f, "absent", "192.0.2.10 web1"));
    assert_eq!(apply(&rm).await.unwrap(), Checked::Changed);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\nb\n");
    assert_eq!(apply(&rm).await.unwrap(), Checked::InState);

    // A missing file: added with 0644, nothing to remove.
    let new = t.path().join("new");
    let rm_new = build(line(&new, "absent", "x"));
    assert_eq!(apply(&rm_new).await.unwrap(), Checked::InState);
    assert!(!new.exists());
    assert_eq!(
        apply(&build(line(&new, "exists", "x"))).await.unwrap(),
        Checked::Changed
    );
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "x\n");
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o7777, 0o644);
    assert!(
        std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".tend.")),
        "no temporaries left"
    );
}

#[test]
fn bad_specs_name_the_field() {
    let rel = ResSpec::new("line", "l")
        .param("file", "etc/hosts")
        .param("state", "exists")
        .param("content", "x");
    assert!(invalid(rel).contains("must be absolute"));
    let no_state = ResSpec::new("line", "l")
        .param("file", "/etc/hosts")
        .param("content", "x");
    assert!(invalid(no_state).contains("state"));
    let bad_state = ResSpec::new("line", "l")
        .param("file", "/etc/hosts")
        .param("state", "present");
    assert!(invalid(bad_state).contains("state"));
    let dir = ResSpec::new("line", "l")
        .param("file", "/etc/")
        .param("state", "exists");
    assert!(invalid(dir).contains("must not end with a slash"));
}

/// The watch sees a line removed behind tend's back, and the engine puts it back.
#[tokio::test]
async fn a_removed_line_is_put_back_at_once() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("conf");
    std::fs::write(&f, "keep\n").unwrap();
    let r = build(line(&f, "exists", "managed=yes"));
    let w = watch(&r).await;
    std::fs::write(&f, "keep\nother\n").unwrap();
    w.event("a write behind tend's back").await;
    drop(w);

    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(line(&f, "exists", "managed=yes"));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "keep\nother\nmanaged=yes\n"
    );
    let gone = Instant::now();
    std::fs::write(&f, "keep\nother\n").unwrap();
    loop {
        if std::fs::read_to_string(&f).unwrap().contains("managed=yes") {
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(10), "not repaired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "line repair: {:.1} ms after the line was removed",
        gone.elapsed().as_secs_f64() * 1e3
    );
    e.shutdown().await;
}
