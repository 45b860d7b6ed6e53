//! `mount` against the real kernel: tmpfs file systems on unique temporary directories, and
//! an fstab of this process's own (`tend_resources::mount_use_fstab`, a temporary file,
//! removed at exit), never `/etc/fstab`. Each test unmounts what it mounted, also when it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec, Value};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

/// The fstab every `mount` of this test process manages.
fn fstab() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tend-mount-test.")
            .tempdir()
            .unwrap()
            .keep();
        let path = dir.join("fstab");
        std::fs::write(&path, "# the tests' fstab\nUUID=0000 / ext4 defaults 0 1\n").unwrap();
        tend_resources::mount_use_fstab(&path);
        FSTAB_DIR.set(dir).unwrap();
        // SAFETY: registers a plain function.
        unsafe { libc::atexit(remove_fstab) };
        path
    })
}

static FSTAB_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_fstab() {
    if let Some(d) = FSTAB_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A unique mount point; whatever is mounted on it is unmounted (lazily) when dropped.
struct MountPoint {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl MountPoint {
    fn new() -> MountPoint {
        let tmp = tempfile::Builder::new()
            .prefix("tend-mount-test.")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        MountPoint { dir, _tmp: tmp }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        while live(self.path()).is_some() {
            if umount(self.path(), libc::MNT_DETACH) != 0 {
                break;
            }
        }
    }
}

fn umount(dir: &str, flags: i32) -> i32 {
    let c = std::ffi::CString::new(dir).unwrap();
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), flags) }
}

/// The topmost mount on `dir`: (source, type, mount options, super options).
fn live(dir: &str) -> Option<(String, String, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            (pre[4] == dir).then(|| {
                (
                    post[1].to_string(),
                    post[0].to_string(),
                    pre[5].to_string(),
                    post[2].to_string(),
                )
            })
        })
        .next_back()
}

fn fstab_lines_for(dir: &str) -> Vec<String> {
    std::fs::read_to_string(fstab())
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(dir))
        .map(str::to_string)
        .collect()
}

fn options(opts: &[(&str, &str)]) -> Value {
    Value::Map(
        opts.iter()
            .map(|(k, v)| (Value::from(*k), Value::from(*v)))
            .collect(),
    )
}

fn tmpfs(dir: &str) -> ResSpec {
    ResSpec::new("mount", dir)
        .param("state", "exists")
        .param("device", "tend-test")
        .param("type", "tmpfs")
        .param(
            "options",
            options(&[("size", "4m"), ("mode", "700"), ("nosuid", "")]),
        )
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Mounted with the options asked for and written to the fstab; a dry run changes nothing;
/// an option changed behind tend's back is remounted; `absent` unmounts and removes the line.
#[tokio::test]
async fn mounts_remounts_and_unmounts_a_tmpfs() {
    fstab();
    let mp = MountPoint::new();
    let dir = mp.path();
    let r = build(tmpfs(dir));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(live(dir).is_none(), "a dry run mounted it");
    assert!(fstab_lines_for(dir).is_empty(), "a dry run wrote the fstab");

    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let (source, ty, mopts, sopts) = live(dir).expect("mounted");
    assert_eq!((source.as_str(), ty.as_str()), ("tend-test", "tmpfs"));
    assert!(mopts.split(',').any(|o| o == "nosuid"), "{mopts}");
    assert!(sopts.split(',').any(|o| o == "size=4096k"), "{sopts}");
    assert!(sopts.split(',').any(|o| o == "mode=700"), "{sopts}");
    assert_eq!(
        fstab_lines_for(dir),
        [format!("tend-test {dir} tmpfs mode=700,nosuid,size=4m 0 0")]
    );
    assert!(
        std::fs::read_to_string(fstab())
            .unwrap()
            .starts_with("# the tests' fstab\nUUID=0000 / ext4 defaults 0 1\n"),
        "the other lines are kept"
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // An option changed behind tend's back: remounted.
    let out = Command::new("mount")
        .args(["-o", "remount,size=8m", "-t", "tmpfs", "tend-test", dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(live(dir).unwrap().3.contains("size=8192k"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(live(dir).unwrap().3.contains("size=4096k"));

    // Another file system on the mount point is not ours to unmount.
    let other = build(
        ResSpec::new("mount", dir)
            .param("state", "exists")
            .param("device", "tend-test")
            .param("type", "ramfs"),
    );
    let e = apply(&other).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("mount[{dir}]")) && e.contains("tend-test (tmpfs)"),
        "{e}"
    );
    assert!(e.contains("does not unmount"), "{e}");

    // Absent: unmounted, and the line goes.
    let gone = build(ResSpec::new("mount", dir).param("state", "absent"));
    assert_eq!(dry(&gone).await.unwrap(), Checked::Changed);
    assert!(live(dir).is_some(), "a dry run unmounted it");
    assert_eq!(apply(&gone).await.unwrap(), Checked::Changed);
    assert!(live(dir).is_none());
    assert!(fstab_lines_for(dir).is_empty());
    assert_eq!(apply(&gone).await.unwrap(), Checked::InState);
}

/// `ro` is the mount's own flag: remounted read-write behind tend's back, a check makes it
/// read-only again.
#[tokio::test]
async fn a_read_only_mount_stays_read_only() {
    fstab();
    let mp = MountPoint::new();
    let dir = mp.path();
    let spec = tmpfs(dir).param("options", options(&[("ro", ""), ("size", "1m")]));
    let r = build(spec);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let flags = |d: &str| live(d).unwrap().2;
    assert!(flags(dir).split(',').any(|o| o == "ro"), "{}", flags(dir));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let out = Command::new("mount")
        .args(["-o", "remount,rw", "-t", "tmpfs", "tend-test", dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(flags(dir).split(',').any(|o| o == "rw"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(flags(dir).split(',').any(|o| o == "ro"), "{}", flags(dir));
    let gone = build(ResSpec::new("mount", dir).param("state", "absent"));
    assert_eq!(apply(&gone).await.unwrap(), Checked::Changed);
    assert!(fstab_lines_for(dir).is_empty());
}

/// In the engine, an unmount behind tend's back is repaired at once (the watch polls
/// `/proc/self/mountinfo` for `POLLPRI`, no timer): 20 times, with the median latency
/// reported; and a removed fstab line is written again (the inotify hub).
#[tokio::test]
async fn repairs_an_unmount_behind_its_back() {
    fstab();
    let mp = MountPoint::new();
    let dir = mp.path().to_string();
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(tmpfs(&dir));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    assert!(live(&dir).is_some());

    let mut took = Vec::new();
    for i in 0..20 {
        assert_eq!(
            umount(&dir, 0),
            0,
            "umount: {}",
            std::io::Error::last_os_error()
        );
        let t = Instant::now();
        while live(&dir).is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "unmount {i} not repaired"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        took.push(t.elapsed());
        // Let the repair's own events settle before the next unmount.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let max = *took.iter().max().unwrap();
    eprintln!(
        "mount repair (umount behind tend's back, 20 repairs): p50 {:.2} ms, max {:.2} ms",
        p50(took).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(max < Duration::from_secs(2), "a repair took {max:?}");

    // The fstab line removed behind tend's back is written again.
    let text = std::fs::read_to_string(fstab()).unwrap();
    let without: String = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1) != Some(dir.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(fstab(), without).unwrap();
    let t = Instant::now();
    while fstab_lines_for(&dir).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the fstab line was not written again"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "mount repair (fstab line): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    e.shutdown().await;
    let gone = build(ResSpec::new("mount", dir.as_str()).param("state", "absent"));
    apply(&gone).await.unwrap();
    assert!(live(&dir).is_none());
    assert!(fstab_lines_for(&dir).is_empty());
}

/// A mount point that does not exist fails the check, naming it and what would make it.
#[tokio::test]
async fn a_missing_mount_point_is_an_error() {
    fstab();
    let mp = MountPoint::new();
    let dir = format!("{}/missing", mp.path());
    let r = build(tmpfs(&dir));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains(&dir), "{e}");
    let gone = build(ResSpec::new("mount", dir.as_str()).param("state", "absent"));
    apply(&gone).await.unwrap();
    assert!(fstab_lines_for(&dir).is_empty());
}

#[test]
fn bad_specs_are_refused() {
    let ok = tmpfs("/mnt/x");
    build(ok.clone());
    assert!(invalid(tmpfs("mnt/x")).contains("absolute"));
    assert!(invalid(tmpfs("/")).contains("root file system"));
    assert!(invalid(tmpfs("/mnt//x")).contains("double slash"));
    assert!(invalid(tmpfs("/mnt/x/")).contains("slash"));
    assert!(invalid(tmpfs("/mnt/../x")).contains("`..`"));
    let e = invalid(ResSpec::new("mount", "/mnt/x").param("device", "d"));
    assert!(e.contains("state"), "{e}");
    let e = invalid(
        ResSpec::new("mount", "/mnt/x")
            .param("state", "exists")
            .param("type", "tmpfs"),
    );
    assert!(e.contains("device") && e.contains("required"), "{e}");
    let e = invalid(ok.clone().param("type", ""));
    assert!(e.contains("`type`"), "{e}");
    let e = invalid(ok.clone().param("options", options(&[("a,b", "")])));
    assert!(e.contains("`options`") && e.contains("`,`"), "{e}");
    let e = invalid(ok.clone().param("options", options(&[])));
    assert!(e.contains("`options`") && e.contains("defaults"), "{e}");
    let e = invalid(ok.param("device", "two words"));
    assert!(e.contains("`device`") && e.contains("whitespace"), "{e}");
    // Absent needs nothing else.
    build(ResSpec::new("mount", "/mnt/x").param("state", "absent"));
}
