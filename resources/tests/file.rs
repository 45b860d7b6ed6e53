//! `file` against the real file system.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tend_engine::{Checked, Resource};
use tend_model::{ResSpec, Value};

use crate::common::{apply, build, dry, invalid, watch, Watching};

fn file(path: &Path) -> ResSpec {
    ResSpec::new("file", path.to_str().unwrap())
}

/// `n` files `f0`..`fN` with content `x` in `dir`, all applied, then each watched.
async fn watched_files(dir: &Path, n: usize) -> (Vec<Arc<dyn Resource>>, Vec<Watching>) {
    let rs: Vec<_> = (0..n)
        .map(|i| build(file(&dir.join(format!("f{i}"))).param("content", "x")))
        .collect();
    for r in &rs {
        apply(r).await.unwrap();
    }
    let mut ws = Vec::new();
    for r in &rs {
        ws.push(watch(r).await);
    }
    (rs, ws)
}

fn dir_spec(path: &Path) -> ResSpec {
    ResSpec::new("file", format!("{}/", path.display()))
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn creates_with_content_and_mode_then_is_in_state() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("motd");
    let r = build(file(&p).param("content", "hello\n").param("mode", "0640"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "hello\n");
    assert_eq!(mode_of(&p), 0o640);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn new_file_without_mode_is_0644_and_empty_without_content() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("empty");
    let r = build(file(&p));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read(&p).unwrap(), b"");
    assert_eq!(mode_of(&p), 0o644);
    // Content is not managed: a user's edit stays.
    fs::write(&p, "mine").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(fs::read_to_string(&p).unwrap(), "mine");
}

#[tokio::test]
async fn fixes_content_and_keeps_mode_and_owner() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    fs::write(&p, "old content, longer").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let r = build(file(&p).param("content", "new"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    assert_eq!(mode_of(&p), 0o600, "an unmanaged mode is kept");
    // Same length, different bytes.
    fs::write(&p, "NEW").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn fixes_mode_in_place() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    fs::write(&p, "x").unwrap();
    let ino = fs::metadata(&p).unwrap().ino();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    let r = build(file(&p).param("content", "x").param("mode", "0600"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o600);
    assert_eq!(
        fs::metadata(&p).unwrap().ino(),
        ino,
        "fixed in place, not rewritten"
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn owner_and_group_by_name_and_by_id() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: chown cannot be tested here");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let group = nix::unistd::Group::from_gid(nobody.gid).unwrap().unwrap();
    let p = t.path().join("byname");
    let r = build(
        file(&p)
            .param("content", "x")
            .param("owner", "nobody")
            .param("group", group.name.as_str()),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let m = fs::metadata(&p).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // By id, fixed in place on an existing file.
    let q = t.path().join("byid");
    fs::write(&q, "y").unwrap();
    let ino = fs::metadata(&q).unwrap().ino();
    let r = build(file(&q).param("owner", "1234").param("group", "4321"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let m = fs::metadata(&q).unwrap();
    assert_eq!((m.uid(), m.gid(), m.ino()), (1234, 4321, ino));

    // A content rewrite keeps the owner.
    let r = build(file(&q).param("content", "z"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let m = fs::metadata(&q).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321));

    // An unknown user is an error naming the field and the user.
    let r = build(file(&q).param("owner", "no-such-user-xyz"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("owner") && e.contains("no-such-user-xyz"), "{e}");
}

#[tokio::test]
async fn absent_removes_files_and_directories() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("gone");
    fs::write(&p, "x").unwrap();
    let r = build(file(&p).param("state", "absent"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(p.exists(), "a dry run changes nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(!p.exists());
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    let d = t.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("inner"), "x").unwrap();
    let r = build(dir_spec(&d).param("state", "absent"));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("recurse"), "{e}");
    let r = build(dir_spec(&d).param("state", "absent").param("recurse", true));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(!d.exists());
}

#[tokio::test]
async fn creates_directories_and_missing_parents() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("a/b/c");
    let r = build(dir_spec(&d).param("mode", "0750"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(d.is_dir());
    assert_eq!(mode_of(&d), 0o750);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // A file where a directory should be is an error, not a deletion.
    let f = t.path().join("f");
    fs::write(&f, "x").unwrap();
    let e = apply(&build(dir_spec(&f))).await.unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    assert!(f.is_file());

    // A file inside missing directories.
    let deep = t.path().join("x/y/z.txt");
    let r = build(file(&deep).param("content", "deep"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&deep).unwrap(), "deep");
}

#[tokio::test]
async fn symbolic_modes_assign_and_adjust_the_current_mode() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    // Created straight with the mode the clauses make of 0644.
    let r = build(file(&p).param("content", "x").param("mode", "u=rw,g=r,o="));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o640);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // Relative forms adjust what is there and keep the rest.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
    let x = build(file(&p).param("mode", "u+x,go-w"));
    // A dry run says so and changes nothing.
    assert_eq!(dry(&x).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o664);
    assert_eq!(apply(&x).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o744);
    assert_eq!(apply(&x).await.unwrap(), Checked::InState, "idempotent");
    // A new file under a relative mode starts from 0644; a new directory from 0755.
    let n = t.path().join("new");
    assert_eq!(
        apply(&build(file(&n).param("mode", "g+w"))).await.unwrap(),
        Checked::Changed
    );
    assert_eq!(mode_of(&n), 0o664);
    let d = t.path().join("d");
    let rd = build(dir_spec(&d).param("mode", "o-rx"));
    assert_eq!(apply(&rd).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&d), 0o750);
    assert_eq!(apply(&rd).await.unwrap(), Checked::InState);
    // Octal keeps working next to them.
    let o = build(file(&p).param("mode", "0600"));
    assert_eq!(apply(&o).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o600);
    let e = invalid(file(&p).param("mode", "u=rw,u+x"));
    assert!(e.contains("field `mode`") && e.contains("once"), "{e}");
    let e = invalid(file(&p).param("mode", "u=rwz"));
    assert!(e.contains("field `mode`") && e.contains("'z'"), "{e}");
}

#[tokio::test]
async fn copies_from_source() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::write(&src, "v1").unwrap();
    let r = build(file(&dst).param("source", src.to_str().unwrap()));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "v1");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    fs::write(&src, "v2").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "v2");
    fs::remove_file(&src).unwrap();
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("reading source") && e.contains("src"), "{e}");
}

#[tokio::test]
async fn symlinks() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("link");
    let r = build(file(&l).param("symlink", "/etc/hostname"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_link(&l).unwrap(), Path::new("/etc/hostname"));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // A regular file in its place is replaced.
    fs::remove_file(&l).unwrap();
    fs::write(&l, "x").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_link(&l).unwrap(), Path::new("/etc/hostname"));
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    let r = build(file(&p).param("content", "want").param("mode", "0600"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!p.exists());
    fs::write(&p, "have").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "have");
    assert_eq!(mode_of(&p), 0o644);
    let d = t.path().join("d");
    assert_eq!(dry(&build(dir_spec(&d))).await.unwrap(), Checked::Changed);
    assert!(!d.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_partial_content() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("atomic");
    let a = "A".repeat(256 * 1024);
    let b = "B".repeat(100 * 1024);
    let ra = build(file(&p).param("content", a.as_str()));
    let rb = build(file(&p).param("content", b.as_str()));
    apply(&ra).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let mut s = String::new();
                fs::File::open(&p).unwrap().read_to_string(&mut s).unwrap();
                let ok = (s.len() == 256 * 1024 && s.bytes().all(|c| c == b'A'))
                    || (s.len() == 100 * 1024 && s.bytes().all(|c| c == b'B'));
                assert!(ok, "partial content seen: {} bytes", s.len());
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..30 {
        assert_eq!(apply(&rb).await.unwrap(), Checked::Changed);
        assert_eq!(apply(&ra).await.unwrap(), Checked::Changed);
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader saw partial content");
    assert!(reads > 0);
}

#[tokio::test]
async fn invalid_specs_name_the_field() {
    let e = invalid(ResSpec::new("file", "/tmp/x").param("mode", "0999"));
    assert!(e.contains("field `mode`") && e.contains("\"0999\""), "{e}");
    let e = invalid(ResSpec::new("file", "relative"));
    assert!(e.contains("absolute"), "{e}");
    let e = invalid(ResSpec::new("file", "/tmp/x").param("content", 3i64));
    assert!(e.contains("field `content`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notices_edit_chmod_delete_and_recreate() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("w");
    let r = build(file(&p).param("content", "x"));
    apply(&r).await.unwrap();
    let w = watch(&r).await;
    w.clear();

    fs::write(&p, "edited").unwrap();
    w.event("edit").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    w.clear();

    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    w.event("chmod").await;
    w.clear();

    fs::remove_file(&p).unwrap();
    w.event("delete").await;
    w.clear();

    fs::write(&p, "again").unwrap();
    w.event("re-creation").await;
    w.clear();

    // Unrelated files in the same directory are not this resource's business.
    fs::write(t.path().join("other"), "x").unwrap();
    fs::write(&p, "again").unwrap();
    w.event("edit after an unrelated file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_parent_directory_being_removed_and_recreated() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("parent");
    let p = d.join("child");
    let r = build(file(&p).param("content", "x"));
    apply(&r).await.unwrap();
    let w = watch(&r).await;
    w.clear();

    fs::remove_dir_all(&d).unwrap();
    w.event("parent removed").await;
    w.clear();

    // Missing grand-parent too, then both come back.
    let deep = t.path().join("g/h/child");
    let rd = build(file(&deep).param("content", "x"));
    let wd = watch(&rd).await;
    wd.clear();

    fs::create_dir(&d).unwrap();
    w.event("parent recreated").await;
    w.clear();
    fs::write(&p, "new").unwrap();
    w.event("file written in the recreated parent").await;
    w.clear();
    fs::write(&p, "newer").unwrap();
    w.event("edit in the recreated parent").await;

    fs::create_dir_all(t.path().join("g/h")).unwrap();
    wd.event("ancestors created").await;
    wd.clear();
    fs::write(&deep, "y").unwrap();
    wd.event("file created under new ancestors").await;
    assert_eq!(apply(&rd).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&deep).unwrap(), "x");
    wd.clear();

    // The parent directory is moved away and another takes its place.
    fs::rename(t.path().join("g/h"), t.path().join("g/h.old")).unwrap();
    wd.event("parent moved away").await;
    wd.clear();
    fs::create_dir_all(t.path().join("g/h")).unwrap();
    wd.event("parent back").await;
    wd.clear();
    fs::write(&deep, "z").unwrap();
    wd.event("write under the replaced parent").await;
    wd.clear();

    // A grand-parent is moved away: the file is gone from its path.
    fs::rename(t.path().join("g"), t.path().join("g.older")).unwrap();
    wd.event("grand-parent moved away").await;
    assert_eq!(apply(&rd).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&deep).unwrap(), "x");
    wd.clear();
    // The watch now follows the new directories, not the moved ones.
    fs::write(t.path().join("g.older/h/child"), "elsewhere").unwrap();
    fs::write(&deep, "edited").unwrap();
    wd.event("edit under the new grand-parent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_a_directory_resource() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dir");
    let r = build(dir_spec(&d).param("mode", "0755"));
    apply(&r).await.unwrap();
    let w = watch(&r).await;
    w.clear();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    w.event("chmod of the directory").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&d), 0o755);
    w.clear();
    fs::remove_dir(&d).unwrap();
    w.event("directory removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_watched_files_share_inotify() {
    let t = tempfile::tempdir().unwrap();
    let n = 2000;
    // One directory with most files, plus 100 directories of 5 files.
    let mut specs: Vec<_> = (0..n - 500)
        .map(|i| file(&t.path().join(format!("f{i}"))).param("content", format!("hello {i}\n")))
        .collect();
    for d in 0..100 {
        for i in 0..5 {
            specs.push(
                file(&t.path().join(format!("d{d}/f{i}"))).param("content", format!("{d} {i}\n")),
            );
        }
    }
    let rs: Vec<_> = specs.into_iter().map(build).collect();
    // Converge them 32 at a time, as the engine would (each write is fsynced).
    let results: Vec<_> = futures::stream::iter(rs.iter().map(apply))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(results.iter().all(|r| r == &Ok(Checked::Changed)));
    let mut ws = Vec::new();
    for r in &rs {
        ws.push(watch(r).await);
    }
    for w in &ws {
        w.clear();
    }
    // This process holds one inotify instance for all of them.
    let instances = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .filter(|l| l.to_string_lossy().contains("inotify"))
        .count();
    assert!(instances <= 2, "{instances} inotify instances");

    for i in [0usize, 777, 1499] {
        fs::write(t.path().join(format!("f{i}")), "drift").unwrap();
        ws[i].event("edit among thousands").await;
        assert_eq!(apply(&rs[i]).await.unwrap(), Checked::Changed);
    }
    fs::remove_file(t.path().join("d42/f3")).unwrap();
    let k = n - 500 + 42 * 5 + 3;
    ws[k].event("delete in a subdirectory").await;
    assert_eq!(apply(&rs[k]).await.unwrap(), Checked::Changed);
    // Dropping the watches releases everything; a new watch still works.
    drop(ws);
    let w = watch(&rs[5]).await;
    w.clear();
    fs::write(t.path().join("f5"), "drift").unwrap();
    w.event("edit after many unsubscribes").await;
}

#[tokio::test]
async fn unmanaged_existence_and_an_explicit_path() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("maybe");
    let r = build(
        ResSpec::new("file", "config")
            .param("path", p.to_str().unwrap())
            .param("state", "")
            .param("content", "managed"),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert!(!p.exists(), "state \"\" does not create");
    fs::write(&p, "other").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "managed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notices_the_source_changing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src/data");
    fs::create_dir(t.path().join("src")).unwrap();
    fs::write(&src, "v1").unwrap();
    let dst = t.path().join("dst");
    let r = build(file(&dst).param("source", src.to_str().unwrap()));
    apply(&r).await.unwrap();
    let w = watch(&r).await;
    w.clear();
    fs::write(&src, "v2").unwrap();
    w.event("source edited").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&dst).unwrap(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_then_resubscribe_still_sees_drift() {
    let t = tempfile::tempdir().unwrap();
    let (rs, ws) = watched_files(t.path(), 200).await;
    // Two watches on one target both hear about it.
    let twin = watch(&rs[7]).await;
    twin.clear();
    ws[7].clear();
    fs::write(t.path().join("f7"), "drift").unwrap();
    ws[7].event("first watch of a shared target").await;
    twin.event("second watch of a shared target").await;
    drop(twin);
    apply(&rs[7]).await.unwrap();

    // Drop every watch, and watch again: the directory is re-armed from scratch.
    drop(ws);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut ws = Vec::new();
    for r in &rs[..100] {
        ws.push(watch(r).await);
    }
    for w in &ws {
        w.clear();
    }
    fs::write(t.path().join("f42"), "drift").unwrap();
    ws[42].event("drift after re-subscribing").await;
    assert_eq!(apply(&rs[42]).await.unwrap(), Checked::Changed);
    // Only the file that drifted was signalled.
    assert!(!ws[41].rx.take().dirty);
    fs::remove_file(t.path().join("f99")).unwrap();
    ws[99].event("delete after re-subscribing").await;
    // Dropping half keeps the other half working.
    let rest = ws.split_off(50);
    drop(ws);
    rest[10].clear();
    fs::write(t.path().join("f60"), "drift").unwrap();
    rest[10].event("drift after dropping other watches").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watches_follow_their_directory_being_replaced() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    let (_rs, ws) = watched_files(&d, 50).await;
    fs::rename(&d, t.path().join("d.old")).unwrap();
    for w in &ws {
        w.event("directory moved away").await;
        w.clear();
    }
    fs::create_dir(&d).unwrap();
    for w in &ws {
        w.event("directory back").await;
        w.clear();
    }
    fs::write(d.join("f3"), "new").unwrap();
    ws[3].event("write in the new directory").await;
    fs::write(t.path().join("d.old/f4"), "old").unwrap();
    fs::write(d.join("f4"), "new").unwrap();
    ws[4].event("write in the new directory, not the old").await;
}

#[tokio::test]
async fn quick_checks_report_exactly_what_the_full_check_does() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    let r = build(file(&p).param("content", "want\n").param("mode", "0600"));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(dry(&r).await.unwrap(), Checked::InState);

    // Only the mode drifted: a dry run reports it and changes nothing; the run fixes it in
    // place.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let ino = fs::metadata(&p).unwrap().ino();
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o644);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(mode_of(&p), 0o600);
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino);

    // Same length, last byte differs; longer; shorter; empty.
    for drift in ["want!", "want\n\n", "wan", ""] {
        fs::write(&p, drift).unwrap();
        assert_eq!(dry(&r).await.unwrap(), Checked::Changed, "{drift:?}");
        assert_eq!(fs::read_to_string(&p).unwrap(), drift);
        assert_eq!(apply(&r).await.unwrap(), Checked::Changed, "{drift:?}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "want\n");
        assert_eq!(apply(&r).await.unwrap(), Checked::InState, "{drift:?}");
    }

    // Something that is not a regular file is replaced without being opened.
    fs::remove_file(&p).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(&p).unwrap(), "want\n");

    // A directory in the way is an error either way.
    fs::remove_file(&p).unwrap();
    fs::create_dir(&p).unwrap();
    assert!(dry(&r).await.is_err());
    assert!(apply(&r).await.is_err());
}

#[tokio::test]
async fn large_content_is_compared_in_full() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("big");
    // Larger than what is checked inline, and than one read buffer.
    let mut want = "0123456789abcdef".repeat(8 * 1024);
    want.push('\n');
    for content in [
        want.clone(),
        want[..9000].to_string(),
        want[..255].to_string(),
    ] {
        let r = build(file(&p).param("content", content.as_str()));
        apply(&r).await.unwrap();
        assert_eq!(apply(&r).await.unwrap(), Checked::InState);
        let mut bytes = content.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = b'!';
        fs::write(&p, &bytes).unwrap();
        assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
        assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
        assert_eq!(fs::read_to_string(&p).unwrap(), content);
        bytes[0] = b'!';
        bytes[last] = content.as_bytes()[last];
        fs::write(&p, &bytes).unwrap();
        assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
        assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    }
}

/// A process that has exited: its pid is free (until something reuses it).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[tokio::test]
async fn stale_temporary_files_of_gone_processes_are_removed() {
    let d = tempfile::tempdir().unwrap();
    let dead = dead_pid();
    let me = std::process::id();
    // What `kill -9` in the middle of writes leaves: content and symlink temporaries.
    let stale = [
        format!(".tend.{dead}-12345.a1B2c3.tmp"),
        format!(".tend.{dead}-12345.motd.lnk"),
        // This pid, another start time: a previous process that had the same pid.
        format!(".tend.{me}-1.zzzzzz.tmp"),
    ];
    // Not this kind's scheme, or a running owner (this very process): kept.
    let start = fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let start = start[start.rfind(')').unwrap() + 1..]
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let kept = [
        ".tend.foo.tmp".to_string(),
        ".tend.abcdef.tmp".to_string(),
        format!(".tend.{dead}-12345.a1B2c.tmp"),
        format!(".tend.{dead}.a1B2c3.tmp"),
        format!(".tend.{me}-{start}.inflgt.tmp"),
        "notes.tmp".to_string(),
    ];
    for n in stale.iter().chain(&kept) {
        fs::write(d.path().join(n), "partial").unwrap();
    }
    // A dry run removes nothing.
    let r = build(file(&d.path().join("a")).param("content", "a\n"));
    dry(&r).await.unwrap();
    assert!(d.path().join(&stale[0]).exists(), "noop removed a file");
    apply(&r).await.unwrap();
    let mut left: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want: Vec<String> = kept.iter().cloned().chain(["a".to_string()]).collect();
    want.sort();
    assert_eq!(left, want);
    // Temporaries of this process carry its tag.
    let r = build(file(&d.path().join("b")).param("content", "b\n"));
    apply(&r).await.unwrap();
    assert_eq!(fs::read_to_string(d.path().join("b")).unwrap(), "b\n");
}

fn reversal_of(spec: &ResSpec) -> Result<ResSpec, String> {
    let r = tend_resources::registry();
    let f = r.get("file").unwrap().reverse.expect("file reverses");
    f(spec).map_err(|e| e.to_string())
}

#[test]
fn its_reversal_puts_back_what_it_manages_as_found() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("r");
    let ps = p.to_str().unwrap();
    // Missing: removed again.
    let spec = ResSpec::new("file", ps).param("content", "new\n");
    let rev = reversal_of(&spec).unwrap();
    assert_eq!(rev.params.get("state"), Some(&Value::from("absent")));
    assert_eq!(rev.params.len(), 1);
    // Existing: the content and mode it manages, as they are; owner not managed, not kept.
    fs::write(&p, "old\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let spec = spec.param("mode", "0644");
    let rev = reversal_of(&spec).unwrap();
    assert_eq!(rev.params.get("state"), Some(&Value::from("exists")));
    assert_eq!(rev.params.get("content"), Some(&Value::from("old\n")));
    assert_eq!(rev.params.get("mode"), Some(&Value::from("0600")));
    assert_eq!(rev.params.get("owner"), None);
    // Removed by it: everything comes back.
    let rev = reversal_of(&ResSpec::new("file", ps).param("state", "absent")).unwrap();
    assert_eq!(rev.params.get("content"), Some(&Value::from("old\n")));
    let uid = fs::metadata(&p).unwrap().uid().to_string();
    assert_eq!(rev.params.get("owner"), Some(&Value::from(uid.as_str())));
    // Binary content cannot be a `str`.
    fs::write(&p, [0xff, 0xfe]).unwrap();
    let e = reversal_of(&spec).unwrap_err();
    assert!(e.contains("not UTF-8"), "{e}");
    // A directory is refused by the check, naming the meta parameter.
    let mut d = ResSpec::new("file", format!("{ps}-d/"));
    d.meta.reverse = true;
    let e = invalid(d);
    assert!(e.contains("Meta:reverse"), "{e}");
}

/// A source tree: `top` (0600), `sub/` (0700) with `sub/deep/leaf`.
fn source_tree(src: &Path) {
    fs::create_dir_all(src.join("sub/deep")).unwrap();
    fs::write(src.join("top"), "top\n").unwrap();
    fs::set_permissions(src.join("top"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("sub/deep/leaf"), "leaf v1\n").unwrap();
}

fn tree_spec(dst: &Path, src: &Path) -> ResSpec {
    dir_spec(dst)
        .param("source", format!("{}/", src.display()))
        .param("recurse", true)
}

#[tokio::test]
async fn copies_a_source_directory_tree_and_purges_only_when_told() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    source_tree(&src);
    let r = build(tree_spec(&dst, &src));
    // A dry run makes nothing.
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!dst.exists());
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(dst.join("top")).unwrap(), "top\n");
    assert_eq!(
        fs::read_to_string(dst.join("sub/deep/leaf")).unwrap(),
        "leaf v1\n"
    );
    assert_eq!(mode_of(&dst.join("top")), 0o600, "the source's mode");
    assert_eq!(mode_of(&dst.join("sub")), 0o700, "the source's mode");
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // A changed source file deep down is copied again; an edit in the copy is undone.
    fs::write(src.join("sub/deep/leaf"), "leaf v2\n").unwrap();
    fs::write(dst.join("top"), "edited\n").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(dst.join("sub/deep/leaf")).unwrap(),
        "leaf v2\n"
    );
    assert_eq!(fs::read_to_string(dst.join("top")).unwrap(), "top\n");
    // Without `purge`, what the destination holds besides the source stays.
    fs::write(dst.join("sub/extra"), "mine").unwrap();
    fs::create_dir(dst.join("olddir")).unwrap();
    fs::write(dst.join("olddir/f"), "x").unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert!(dst.join("sub/extra").exists());
    // With it, a dry run says so and removes nothing; then they go.
    let p = build(tree_spec(&dst, &src).param("purge", true));
    assert_eq!(dry(&p).await.unwrap(), Checked::Changed);
    assert!(dst.join("sub/extra").exists() && dst.join("olddir/f").exists());
    assert_eq!(apply(&p).await.unwrap(), Checked::Changed);
    assert!(!dst.join("sub/extra").exists());
    assert!(!dst.join("olddir").exists());
    assert!(dst.join("sub/deep/leaf").exists());
    assert_eq!(apply(&p).await.unwrap(), Checked::InState);
    // A symlink to a file is copied as the file; one to a directory is refused.
    std::os::unix::fs::symlink(src.join("top"), src.join("via-link")).unwrap();
    assert_eq!(apply(&p).await.unwrap(), Checked::Changed);
    assert!(fs::symlink_metadata(dst.join("via-link"))
        .unwrap()
        .is_file());
    assert_eq!(fs::read_to_string(dst.join("via-link")).unwrap(), "top\n");
    std::os::unix::fs::symlink("..", src.join("sub/up")).unwrap();
    let e = apply(&p).await.unwrap_err().to_string();
    assert!(e.contains("symlink to a directory"), "{e}");
    fs::remove_file(src.join("sub/up")).unwrap();
    // A missing source is an error naming it, and nothing is removed.
    fs::remove_dir_all(&src).unwrap();
    let e = apply(&p).await.unwrap_err().to_string();
    assert!(e.contains("reading source") && e.contains("src"), "{e}");
    assert!(dst.join("sub/deep/leaf").exists());
}

#[tokio::test]
async fn a_copied_tree_replaces_entries_of_the_other_type_only_with_force() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    source_tree(&src);
    fs::create_dir_all(dst.join("top")).unwrap(); // a directory where a file goes
    fs::write(dst.join("top/x"), "x").unwrap();
    fs::write(dst.join("sub"), "a file where a directory goes").unwrap();
    let r = build(tree_spec(&dst, &src));
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("`force`"), "{e}");
    let f = build(tree_spec(&dst, &src).param("force", true));
    assert_eq!(dry(&f).await.unwrap(), Checked::Changed);
    assert!(dst.join("top/x").exists(), "a dry run changes nothing");
    assert_eq!(apply(&f).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(dst.join("top")).unwrap(), "top\n");
    assert_eq!(
        fs::read_to_string(dst.join("sub/deep/leaf")).unwrap(),
        "leaf v1\n"
    );
    assert_eq!(apply(&f).await.unwrap(), Checked::InState);
    // The destination itself: a file where the directory goes.
    let d2 = t.path().join("d2");
    fs::write(&d2, "file").unwrap();
    let e = apply(&build(tree_spec(&d2, &src)))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`force`"), "{e}");
    let f2 = build(tree_spec(&d2, &src).param("force", true));
    assert_eq!(apply(&f2).await.unwrap(), Checked::Changed);
    assert!(d2.join("sub/deep/leaf").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_both_trees() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    source_tree(&src);
    let r = build(tree_spec(&dst, &src).param("purge", true));
    apply(&r).await.unwrap();
    let w = watch(&r).await;
    w.clear();
    fs::write(src.join("sub/deep/leaf"), "v2").unwrap();
    w.event("a source file deep down edited").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    w.clear();
    // A directory made in the source after the watch started is followed too.
    fs::create_dir(src.join("new")).unwrap();
    w.event("a source directory made").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    w.clear();
    fs::write(src.join("new/f"), "n").unwrap();
    w.event("a file in the new source directory").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_to_string(dst.join("new/f")).unwrap(), "n");
    w.clear();
    // Drift in the destination, deep down and in a directory the copy made.
    fs::remove_file(dst.join("sub/deep/leaf")).unwrap();
    w.event("a copied file removed").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    w.clear();
    fs::write(dst.join("new/stray"), "s").unwrap();
    w.event("a stray file in a copied directory").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(!dst.join("new/stray").exists());
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn a_source_tree_needs_matching_paths_and_recurse() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    let e = invalid(dir_spec(&d).param("source", "/etc/hostname"));
    assert!(e.contains("field `source`"), "{e}");
    let e = invalid(file(&d).param("source", "/etc/"));
    assert!(e.contains("field `source`"), "{e}");
    let e = invalid(dir_spec(&d).param("source", "/etc/"));
    assert!(e.contains("field `recurse`"), "{e}");
    let e = invalid(dir_spec(&d).param("purge", true).param("recurse", true));
    assert!(e.contains("field `purge`"), "{e}");
    let e = invalid(tree_spec(&d, Path::new("/etc")).param("state", "absent"));
    assert!(e.contains("field `source`"), "{e}");
    let e = invalid(tree_spec(&d.join("inner"), &d));
    assert!(e.contains("field `source`") && e.contains("inside"), "{e}");
    let e = invalid(tree_spec(&d, &d));
    assert!(e.contains("field `source`"), "{e}");
}

fn frags(spec: ResSpec, list: &[String]) -> ResSpec {
    spec.param(
        "fragments",
        Value::List(list.iter().map(|s| Value::Str(s.clone())).collect()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_join_files_and_directories_in_order_and_are_watched() {
    let t = tempfile::tempdir().unwrap();
    let (head, d, tail) = (
        t.path().join("head"),
        t.path().join("d"),
        t.path().join("tail"),
    );
    fs::write(&head, "# head\n").unwrap();
    fs::create_dir_all(d.join("skipped-subdir")).unwrap();
    fs::write(d.join("skipped-subdir/x"), "never\n").unwrap();
    fs::write(d.join("20-b"), "b\n").unwrap();
    fs::write(d.join("10-a"), "a\n").unwrap();
    fs::write(&tail, "# tail\n").unwrap();
    let p = t.path().join("out");
    let list = [
        head.display().to_string(),
        format!("{}/", d.display()),
        tail.display().to_string(),
    ];
    let r = build(frags(file(&p), &list));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(!p.exists(), "a dry run makes nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "# head\na\nb\n# tail\n",
        "files in the order given, a directory's by name, its subdirectories skipped"
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let w = watch(&r).await;
    w.clear();
    fs::write(d.join("15-new"), "new\n").unwrap();
    w.event("a file added to a fragment directory").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "# head\na\nnew\nb\n# tail\n"
    );
    w.clear();
    fs::write(&tail, "# end\n").unwrap();
    w.event("a fragment file edited").await;
    w.clear();
    fs::write(&p, "drift").unwrap();
    w.event("the file itself edited").await;
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "# head\na\nnew\nb\n# end\n"
    );
    // A missing fragment is an error naming it.
    fs::remove_file(&head).unwrap();
    let e = apply(&r).await.unwrap_err().to_string();
    assert!(e.contains("reading fragment") && e.contains("head"), "{e}");
}

#[test]
fn fragments_errors_name_the_field_and_reverse_to_content() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("f");
    let one = [t.path().join("a").display().to_string()];
    let e = invalid(frags(file(&p).param("content", "x"), &one));
    assert!(
        e.contains("field `fragments`") && e.contains("`content`"),
        "{e}"
    );
    let e = invalid(frags(file(&p), &["rel".into()]));
    assert!(
        e.contains("field `fragments`") && e.contains("absolute"),
        "{e}"
    );
    let e = invalid(frags(file(&p), &[format!("{}/", t.path().display())]));
    assert!(
        e.contains("field `fragments`") && e.contains("path itself"),
        "{e}"
    );
    let e = invalid(frags(dir_spec(&p), &one));
    assert!(e.contains("field `fragments`"), "{e}");
    // Reversed, the file gets back its content as found.
    fs::write(&p, "before\n").unwrap();
    let rev = reversal_of(&frags(file(&p), &one)).unwrap();
    assert_eq!(
        rev.params.get("content"),
        Some(&Value::Str("before\n".into()))
    );
    assert!(rev.params.get("fragments").is_none());
}

#[tokio::test]
async fn mgmts_symlink_bool_takes_its_target_from_source() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("link");
    // mgmt's form: `symlink: true`, the target (relative here) in `source`.
    let r = build(
        file(&l)
            .param("symlink", true)
            .param("source", "../x/target"),
    );
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert!(fs::symlink_metadata(&l).is_err(), "a dry run makes nothing");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_link(&l).unwrap(), Path::new("../x/target"));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    // tend's form still works and is the same link.
    let s = build(file(&l).param("symlink", "../x/target"));
    assert_eq!(apply(&s).await.unwrap(), Checked::InState);
    // A directory in its place goes only with `force`.
    let d = t.path().join("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f"), "x").unwrap();
    let e = apply(&build(
        file(&d).param("symlink", true).param("source", "/etc"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("`force`"), "{e}");
    let f = build(
        file(&d)
            .param("symlink", true)
            .param("source", "/etc")
            .param("force", true),
    );
    assert_eq!(apply(&f).await.unwrap(), Checked::Changed);
    assert_eq!(fs::read_link(&d).unwrap(), Path::new("/etc"));
    // `state: absent` removes a symlink, and anything else only with `force`.
    let gone = build(file(&l).param("symlink", true).param("state", "absent"));
    assert_eq!(apply(&gone).await.unwrap(), Checked::Changed);
    assert!(fs::symlink_metadata(&l).is_err());
    fs::write(&l, "a real file").unwrap();
    let e = apply(&gone).await.unwrap_err().to_string();
    assert!(e.contains("not a symlink") && e.contains("`force`"), "{e}");
    assert!(l.exists());
    // `symlink: false` is a plain file.
    let plain = build(
        file(&l)
            .param("symlink", false)
            .param("content", "a real file"),
    );
    assert_eq!(apply(&plain).await.unwrap(), Checked::InState);
}

#[test]
fn symlink_errors_name_the_field() {
    let e = invalid(file(Path::new("/tmp/l")).param("symlink", true));
    assert!(e.contains("field `source`") && e.contains("target"), "{e}");
    let e = invalid(
        file(Path::new("/tmp/l"))
            .param("symlink", "/a")
            .param("source", "/b"),
    );
    assert!(e.contains("field `symlink`"), "{e}");
    let e = invalid(file(Path::new("/tmp/l")).param("symlink", 3i64));
    assert!(e.contains("field `symlink`") && e.contains("bool"), "{e}");
    let e = invalid(
        file(Path::new("/tmp/l"))
            .param("symlink", true)
            .param("source", "/b")
            .param("state", "absent"),
    );
    assert!(e.contains("field `source`"), "{e}");
}

#[tokio::test]
async fn a_copied_tree_is_swept_of_what_a_killed_copy_left() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    source_tree(&src);
    fs::create_dir_all(dst.join("sub/deep")).unwrap();
    // What `kill -9` in the middle of a copy leaves deep in the tree.
    let stale = dst.join(format!("sub/deep/.tend.{}-12345.a1B2c3.tmp", dead_pid()));
    fs::write(&stale, "half").unwrap();
    let r = build(tree_spec(&dst, &src).param("purge", true));
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert!(
        !stale.exists(),
        "a stale temporary in the copied tree is removed"
    );
    assert_eq!(
        fs::read_to_string(dst.join("sub/deep/leaf")).unwrap(),
        "leaf v1\n"
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
}
