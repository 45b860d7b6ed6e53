//! Self-healing against the real file system: a `file` that fails is repaired by the running
//! engine, with its default meta parameters (retry forever, 1 s doubling to 5 min), once the
//! cause is gone: no restart, no new graph.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tend_engine::{Status, VertexState};
use tend_model::{GraphSpec, ResId, ResSpec};

fn state_of(s: &Status, id: &ResId) -> Option<VertexState> {
    s.vertices.get(id).map(|v| v.state)
}

/// A small tmpfs mounted on a directory of its own; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (the test is skipped, saying why) without root or `mount`.
    fn mount(at: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let ok = nix::unistd::Uid::effective().is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("{test}: skipped (needs root and mount -t tmpfs)");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // What a partial write left in the page cache is on the filesystem too.
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_on_a_full_filesystem_is_written_once_space_is_freed() {
    let top = tempfile::tempdir().unwrap();
    let mnt = top.path().join("full");
    let Some(_fs) = Tmpfs::mount(&mnt, "64k", "a_file_on_a_full_filesystem") else {
        return;
    };
    let filler = mnt.join("filler");
    fill(&filler);
    let target = mnt.join("motd");
    let spec = ResSpec::new("file", target.to_str().unwrap()).param("content", "hello\n");
    let id = spec.id();
    let state = tempfile::tempdir().unwrap();
    let e = crate::common::engine(state.path(), false);
    e.swap(GraphSpec {
        resources: vec![spec],
        edges: Vec::new(),
    })
    .await
    .unwrap();
    let s = crate::common::wait_status(&e, "the write to fail", 10, |s| {
        state_of(s, &id) == Some(VertexState::Failed)
    })
    .await;
    let err = s.vertices[&id].last_error.clone().unwrap_or_default();
    assert!(err.contains("No space left"), "{err}");
    assert!(!target.exists());

    fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    crate::common::wait_status(&e, "the file to be repaired", 15, |s| {
        state_of(s, &id) == Some(VertexState::Converged)
    })
    .await;
    let took = freed.elapsed();
    eprintln!(
        "self-healing: {} written {:.2} s after space was freed",
        target.display(),
        took.as_secs_f64()
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "hello\n");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // No temporary file was left behind by the failed attempts.
    let names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["motd"]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_parent_is_a_regular_file_is_written_once_that_is_removed() {
    let top = tempfile::tempdir().unwrap();
    let blocker = top.path().join("conf.d");
    fs::write(&blocker, "not a directory").unwrap();
    let target = blocker.join("app.conf");
    let spec = ResSpec::new("file", target.to_str().unwrap()).param("content", "x = 1\n");
    let id = spec.id();
    let state = tempfile::tempdir().unwrap();
    let e = crate::common::engine(state.path(), false);
    e.swap(GraphSpec {
        resources: vec![spec],
        edges: Vec::new(),
    })
    .await
    .unwrap();
    crate::common::wait_status(&e, "the write to fail", 10, |s| {
        state_of(s, &id) == Some(VertexState::Failed)
    })
    .await;
    fs::remove_file(&blocker).unwrap();
    let fixed = Instant::now();
    crate::common::wait_status(&e, "the file to be repaired", 15, |s| {
        state_of(s, &id) == Some(VertexState::Converged)
    })
    .await;
    let took = fixed.elapsed();
    eprintln!(
        "self-healing: {} written {:.2} s after its parent was fixed",
        target.display(),
        took.as_secs_f64()
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "x = 1\n");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    e.shutdown().await;
}
