//! The embedded store: every acknowledged write survives `kill -9`; damaged or foreign files
//! give a clear error naming the file.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use tend_world::store::embedded::{Embedded, LOG_FILE};
use tend_world::store::{Op, Store, Txn};
use tend_world::StoreError;

const CHILD_ENV: &str = "TEND_WORLD_CRASH_CHILD_DIR";

/// In the child: write keys forever, printing each acknowledged one.
fn child_writer(dir: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Embedded::open(std::path::Path::new(dir)).unwrap();
        let mut out = std::io::stdout();
        for i in 0u64.. {
            s.txn(Txn::ops(vec![Op::put(
                format!("/k/{i:08}"),
                vec![b'x'; 200],
            )]))
            .await
            .unwrap();
            writeln!(out, "ack {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn kill_9_keeps_every_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_writer(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded::kill_9_keeps_every_acknowledged_write",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<u64> = Vec::new();
    // Let it write a while, then kill -9 in the middle of writes.
    while acked.len() < 300 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse().unwrap());
        }
    }
    nix_kill(child.id());
    let _ = child.wait();
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse().unwrap());
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).expect("reopen after kill -9");
        for i in &acked {
            assert!(
                s.get(&format!("/k/{i:08}")).await.unwrap().is_some(),
                "acknowledged write {i} lost ({} acks)",
                acked.len()
            );
        }
        // The store keeps working after recovery.
        s.txn(Txn::ops(vec![Op::put("/after", vec![1])]))
            .await
            .unwrap();
    });
}

fn nix_kill(pid: u32) {
    // SAFETY: sending SIGKILL to our own child process.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[test]
fn foreign_and_corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_FILE), "this is not a store at all").unwrap();
    let err = Embedded::open(dir.path())
        .err()
        .expect("foreign file refused");
    assert!(matches!(err, StoreError::Foreign { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().join(LOG_FILE).display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("not a tend embedded store"), "{msg}");

    // A damaged record in the middle (not a torn tail) is corruption.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        for i in 0..3 {
            s.txn(Txn::ops(vec![Op::put(format!("/k/{i}"), vec![b'v'; 32])]))
                .await
                .unwrap();
        }
    });
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = Embedded::open(dir.path())
        .err()
        .expect("corruption detected");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("corrupt"),
        "{msg}"
    );

    // A torn last record (an unacknowledged write) is dropped, the rest kept.
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        for i in 0..2 {
            s.txn(Txn::ops(vec![Op::put(format!("/k/{i}"), vec![b'v'; 32])]))
                .await
                .unwrap();
        }
    });
    let path = dir.path().join(LOG_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        assert!(s.get("/k/0").await.unwrap().is_some());
        assert!(s.get("/k/1").await.unwrap().is_none());
    });
}

#[test]
fn one_owner_at_a_time_and_read_only_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        s.txn(Txn::ops(vec![Op::put("/a", b"1".to_vec())]))
            .await
            .unwrap();
        let err = Embedded::open(dir.path())
            .err()
            .expect("second owner refused");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        let ro = Embedded::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.get("/a").await.unwrap().unwrap().value, b"1");
        let err = ro
            .txn(Txn::ops(vec![Op::put("/b", vec![])]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    });
}

#[test]
fn a_mostly_dead_log_is_compacted_when_the_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = dir.path().join(LOG_FILE);
    // Well below the running threshold (64 MiB), well above the one at open (256 KiB).
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        for i in 0..1000u32 {
            s.txn(Txn::ops(vec![Op::put("/k", i.to_le_bytes().repeat(256))]))
                .await
                .unwrap();
        }
    });
    let before = std::fs::metadata(&path).unwrap().len();
    assert!(before > 300 * 1024, "{before}");
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len < 16 * 1024,
            "one live key of 1 KiB: the log is {len} bytes"
        );
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!(kv.value, 999u32.to_le_bytes().repeat(256));
        assert_eq!(kv.version, 1000);
    });
}

#[test]
fn a_compaction_that_fails_at_open_leaves_the_store_working() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = dir.path().join(LOG_FILE);
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        for i in 0..1000u32 {
            s.txn(Txn::ops(vec![Op::put("/k", i.to_le_bytes().repeat(256))]))
                .await
                .unwrap();
        }
    });
    let before = std::fs::metadata(&path).unwrap().len();
    // The snapshot's temporary file cannot be created: a directory is in its way.
    std::fs::create_dir(dir.path().join("world.log.compact")).unwrap();
    rt.block_on(async {
        let s = Embedded::open(dir.path()).expect("opens without compacting");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        s.txn(Txn::ops(vec![Op::put("/after", vec![1])]))
            .await
            .unwrap();
    });
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        assert!(s.get("/after").await.unwrap().is_some());
        let kv = s.get("/k").await.unwrap().unwrap();
        assert_eq!(kv.value, 999u32.to_le_bytes().repeat(256));
    });
}

#[test]
fn the_log_is_compacted_and_reopens_with_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = dir.path().join(LOG_FILE);
    let last = rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        s.set_compaction_threshold(64 * 1024);
        let mut last = 0;
        for i in 0..1000u32 {
            let r = s
                .txn(Txn::ops(vec![
                    Op::put(format!("/k/{}", i % 4), i.to_le_bytes().repeat(256)),
                    Op::put("/stable", b"s".to_vec()),
                ]))
                .await
                .unwrap();
            last = r.revision;
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(
            len < 200 * 1024,
            "1000 writes of 1 KiB, 4 live keys: log is {len} bytes"
        );
        last
    });
    rt.block_on(async {
        let s = Embedded::open(dir.path()).unwrap();
        let kv = s.get("/k/3").await.unwrap().unwrap();
        assert_eq!(kv.value, 999u32.to_le_bytes().repeat(256));
        assert_eq!(kv.mod_revision, last);
        assert_eq!(kv.version, 250);
        let stable = s.get("/stable").await.unwrap().unwrap();
        assert_eq!(stable.version, 1000);
        let r = s
            .txn(Txn::ops(vec![Op::put("/after", vec![])]))
            .await
            .unwrap();
        assert_eq!(r.revision, last + 1, "revisions continue after a snapshot");
    });
}
