//! `tar` against real files, read back with the system's `tar`: file and directory inputs
//! (with and without their name), a dry run, formats and long names, bad specs, and the
//! engine rewriting the archive when it is removed or when an input changes, down to a file
//! in a directory created inside an input after the start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec, Value};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

fn tar(path: &Path, inputs: &[String]) -> ResSpec {
    ResSpec::new("tar", path.to_str().unwrap()).param(
        "inputs",
        Value::List(inputs.iter().map(|i| Value::Str(i.clone())).collect()),
    )
}

/// What the system's `tar` lists (names, sorted) and whether it read the archive cleanly.
fn listing(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -tf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

/// A tree: `src/a.txt`, `src/sub/b.txt`, `src/sub/link -> b.txt`, and `one.txt`.
fn tree(t: &Path) -> (String, String) {
    let src = t.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/b.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("b.txt", src.join("sub/link")).unwrap();
    std::fs::write(t.join("one.txt"), "one\n").unwrap();
    (
        src.to_str().unwrap().to_string(),
        t.join("one.txt").to_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn archives_files_and_directories() {
    let t = tempfile::tempdir().unwrap();
    let (src, one) = tree(t.path());
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let a = out.join("a.tar");

    // Without the trailing slash the directory's name is kept.
    let r = build(tar(&a, &[src.clone(), one.clone()]));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!a.exists(), "a dry run writes nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        listing(&a),
        [
            "one.txt",
            "src/a.txt",
            "src/sub",
            "src/sub/b.txt",
            "src/sub/link"
        ]
    );
    assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(dry(&r).await.unwrap(), Checked::InState);

    // What it holds, extracted by the system's tar: content, mode, symlink.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(&a)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(x.join("src/sub/b.txt")).unwrap(),
        "beta\n"
    );
    assert_eq!(
        std::fs::metadata(x.join("src/sub/b.txt")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(x.join("src/sub/link")).unwrap(),
        Path::new("b.txt")
    );
    assert_eq!(std::fs::read_to_string(x.join("one.txt")).unwrap(), "one\n");

    // Any change of an input is a change: content, mode, a new file.
    std::fs::write(Path::new(&src).join("a.txt"), "ALPHA\n").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    std::fs::set_permissions(&one, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    std::fs::write(Path::new(&src).join("sub/c.txt"), "gamma\n").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(listing(&a).contains(&"src/sub/c.txt".to_string()));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // With the trailing slash the content is at the root; the archive's mode is kept.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r2 = build(tar(&a, &[format!("{src}/")]));
    assert_eq!(apply(&r2).await.unwrap(), Checked::Changed);
    assert_eq!(
        listing(&a),
        ["a.txt", "sub", "sub/b.txt", "sub/c.txt", "sub/link"]
    );
    assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o7777, 0o600);

    // A missing input is an error naming it.
    let gone = format!("{}/nope", t.path().display());
    let e = apply(&build(tar(&a, std::slice::from_ref(&gone))))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("input #0") && e.contains(&gone), "{e}");
    assert!(
        std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".tend.")),
        "no temporaries left"
    );
}

#[tokio::test]
async fn formats_and_long_names() {
    let t = tempfile::tempdir().unwrap();
    let deep = t
        .path()
        .join("in")
        .join("d".repeat(90))
        .join("e".repeat(90));
    std::fs::create_dir_all(&deep).unwrap();
    let long = deep.join(format!("{}.txt", "f".repeat(120)));
    std::fs::write(&long, "long\n").unwrap();
    let input = t.path().join("in").to_str().unwrap().to_string() + "/";
    let want = format!(
        "{}/{}/{}.txt",
        "d".repeat(90),
        "e".repeat(90),
        "f".repeat(120)
    );
    for (format, ok) in [(0i64, true), (2, false), (4, true), (8, true)] {
        let a = t.path().join(format!("f{format}.tar"));
        let r = build(tar(&a, std::slice::from_ref(&input)).param("format", format));
        match apply(&r).await {
            Ok(c) => {
                assert!(ok, "format {format} took a {}-byte name", want.len());
                assert_eq!(c, Checked::Changed);
                assert!(listing(&a).contains(&want), "format {format}");
                assert_eq!(apply(&r).await.unwrap(), Checked::InState);
            }
            Err(e) => {
                assert!(!ok, "format {format}: {e}");
                assert!(
                    e.to_string().contains("too long for the ustar format"),
                    "{e}"
                );
                assert!(!a.exists());
            }
        }
    }
    // The formats differ in their headers: gnu's magic is `ustar  `, the others' `ustar\0`.
    let head = |f: i64| std::fs::read(t.path().join(format!("f{f}.tar"))).unwrap();
    assert!(head(8).windows(8).any(|w| w == b"ustar  \0"));
    assert!(head(4).windows(6).any(|w| w == b"ustar\0"));
}

#[test]
fn bad_specs_name_the_field() {
    let e = invalid(ResSpec::new("tar", "out.tar"));
    assert!(e.contains("must be absolute"), "{e}");
    let e = invalid(tar(Path::new("/tmp/a.tar"), &["rel".into()]));
    assert!(e.contains("`inputs`") && e.contains("input #0"), "{e}");
    let e = invalid(tar(Path::new("/tmp/a.tar"), &[]).param("format", 3i64));
    assert!(e.contains("`format`"), "{e}");
    let e = invalid(tar(Path::new("/tmp/in/a.tar"), &["/tmp/in/".into()]));
    assert!(e.contains("`path`") && e.contains("inside"), "{e}");
    let e = invalid(ResSpec::new("tar", "t").param("path", "/tmp/a/"));
    assert!(e.contains("`path`") && e.contains("slash"), "{e}");
}

/// The engine rewrites the archive when it is removed, or when a file appears in a directory
/// created inside an input after the watch started.
#[tokio::test]
async fn the_archive_follows_its_inputs() {
    let t = tempfile::tempdir().unwrap();
    let (src, _) = tree(t.path());
    let a = t.path().join("a.tar");
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(tar(&a, std::slice::from_ref(&src)));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    assert!(listing(&a).contains(&"src/sub/b.txt".to_string()));

    std::fs::remove_file(&a).unwrap();
    until("the archive was removed", &|| a.exists()).await;
    std::fs::create_dir(Path::new(&src).join("sub/new")).unwrap();
    std::fs::write(Path::new(&src).join("sub/new/late.txt"), "late\n").unwrap();
    until("a file appeared in a new directory", &|| {
        a.exists()
            && Command::new("tar")
                .arg("-tf")
                .arg(&a)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("src/sub/new/late.txt"))
    })
    .await;
    e.shutdown().await;
}

/// Waits (at most 10 s) until `cond` holds, and says how long it took.
async fn until(what: &str, cond: &dyn Fn() -> bool) {
    let at = Instant::now();
    while !cond() {
        assert!(
            at.elapsed() < Duration::from_secs(10),
            "{what}: not repaired"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "tar repair: {:.1} ms after {what}",
        at.elapsed().as_secs_f64() * 1e3
    );
}
