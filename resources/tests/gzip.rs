//! `gzip` against real files, read back with the system's `gzip -dc`: an input file and
//! `content`, a dry run, levels, mode kept, bad specs, and the engine rewriting the file when
//! it is removed or damaged or when the input changes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

/// What `gzip -dc` reads out of `p`.
fn gunzip(p: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(p).output().unwrap();
    assert!(
        out.status.success(),
        "gzip -dc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gz(path: &Path, input: &Path) -> ResSpec {
    ResSpec::new("gzip", path.to_str().unwrap()).param("input", input.to_str().unwrap())
}

#[tokio::test]
async fn compresses_an_input_file_or_content() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("log.txt");
    let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, &text).unwrap();
    let out = t.path().join("log.txt.gz");

    let r = build(gz(&out, &input));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!out.exists(), "a dry run writes nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(gunzip(&out), text.as_bytes());
    assert!(std::fs::metadata(&out).unwrap().len() < text.len() as u64 / 3);
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // The input changes; the level changes; the file's mode is kept.
    std::fs::write(&input, "short\n").unwrap();
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(gunzip(&out), b"short\n");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&input, &text).unwrap();
    let l0 = build(gz(&out, &input).param("level", 0i64));
    assert_eq!(apply(&l0).await.unwrap(), Checked::Changed);
    let stored = std::fs::metadata(&out).unwrap().len();
    assert!(stored > text.len() as u64, "level 0 stores");
    assert_eq!(gunzip(&out), text.as_bytes());
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(apply(&l0).await.unwrap(), Checked::InState);
    let l9 = build(gz(&out, &input).param("level", 9i64));
    assert_eq!(apply(&l9).await.unwrap(), Checked::Changed);
    assert!(std::fs::metadata(&out).unwrap().len() < stored / 3);

    // `content` without `input`.
    let c = t.path().join("c.gz");
    let rc = build(
        ResSpec::new("gzip", "c")
            .param("path", c.to_str().unwrap())
            .param("content", "hello\n"),
    );
    assert_eq!(apply(&rc).await.unwrap(), Checked::Changed);
    assert_eq!(gunzip(&c), b"hello\n");
    assert_eq!(apply(&rc).await.unwrap(), Checked::InState);

    // A missing input is an error naming it; nothing is written.
    let gone = t.path().join("gone");
    let e = apply(&build(gz(&t.path().join("g.gz"), &gone)))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("input") && e.contains("gone"), "{e}");
    assert!(!t.path().join("g.gz").exists());
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
    let e = invalid(ResSpec::new("gzip", "out.gz"));
    assert!(e.contains("must be absolute"), "{e}");
    let e = invalid(ResSpec::new("gzip", "/tmp/o.gz").param("input", "in.txt"));
    assert!(e.contains("`input`") && e.contains("absolute"), "{e}");
    let e = invalid(ResSpec::new("gzip", "/tmp/o.gz").param("level", 10i64));
    assert!(e.contains("`level`") && e.contains("10"), "{e}");
    let e = invalid(ResSpec::new("gzip", "/tmp/o.gz").param("level", -2i64));
    assert!(e.contains("`level`") && e.contains("huffman_only"), "{e}");
    let e = invalid(
        ResSpec::new("gzip", "/tmp/o.gz")
            .param("input", "/tmp/i")
            .param("content", "x"),
    );
    assert!(e.contains("`content`"), "{e}");
    let e = invalid(ResSpec::new("gzip", "/tmp/o.gz").param("input", "/tmp/o.gz"));
    assert!(e.contains("`input`"), "{e}");
}

/// The engine rewrites the file when it is removed or damaged, and when the input changes.
#[tokio::test]
async fn the_file_follows_its_input() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("in.txt");
    std::fs::write(&input, "first\n").unwrap();
    let out = t.path().join("in.txt.gz");
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(gz(&out, &input));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    assert_eq!(gunzip(&out), b"first\n");
    let reads = |want: &'static [u8]| {
        let out = out.clone();
        move || {
            Command::new("gzip")
                .arg("-dc")
                .arg(&out)
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == want)
        }
    };
    std::fs::remove_file(&out).unwrap();
    until("the file was removed", reads(b"first\n")).await;
    std::fs::write(&out, "not gzip").unwrap();
    until("the file was damaged", reads(b"first\n")).await;
    std::fs::write(&input, "second\n").unwrap();
    until("the input changed", reads(b"second\n")).await;
    e.shutdown().await;
}

/// Waits (at most 10 s) until `cond` holds, and says how long it took.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let at = Instant::now();
    while !cond() {
        assert!(
            at.elapsed() < Duration::from_secs(10),
            "{what}: not repaired"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "gzip repair: {:.1} ms after {what}",
        at.elapsed().as_secs_f64() * 1e3
    );
}
