//! `Meta:reverse`: a resource that leaves the graph is undone, once, across restarts.

use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;

use crate::support::*;

fn records(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("reversals"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn reversed(name: &str) -> tend_model::ResSpec {
    let mut r = fake(name);
    r.meta.reverse = true;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_resource_is_undone_and_its_record_deleted() {
    let dir = tempfile_dir("rev-a");
    let e = engine_in(&dir);
    e.swap(graph(vec![reversed("rv-a"), fake("rv-other")], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    // Kept before it ran, for root only.
    assert_eq!(records(&dir), 1);
    let rec = std::fs::read_dir(dir.join("reversals"))
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(rec.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    let a = probe("rv-a");
    assert_eq!(a.undone.load(SeqCst), 0);

    let st = e.swap(graph(vec![fake("rv-other")], vec![])).await.unwrap();
    assert_eq!(st.removed, 1);
    wait_for("the reversal", || a.undone.load(SeqCst) == 1).await;
    let s = converged(&e).await;
    wait_for("the record deleted", || records(&dir) == 0).await;
    // The reversal is a vertex until the next swap, then goes.
    assert!(s.vertices.contains_key(&id("rv-a")));
    e.swap(graph(vec![fake("rv-other")], vec![])).await.unwrap();
    let s = converged(&e).await;
    assert!(!s.vertices.contains_key(&id("rv-a")));
    assert_eq!(a.undone.load(SeqCst), 1);
    e.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_reversal_survives_a_restart_and_runs_once() {
    let dir = tempfile_dir("rev-b");
    let e = engine_in(&dir);
    e.swap(graph(vec![reversed("rv-b")], vec![])).await.unwrap();
    converged(&e).await;
    e.shutdown().await;
    assert_eq!(records(&dir), 1, "a shutdown is no removal");

    // The next process has a graph without it: it is undone.
    let e = engine_in(&dir);
    e.swap(graph(vec![], vec![])).await.unwrap();
    let b = probe("rv-b");
    wait_for("the reversal", || b.undone.load(SeqCst) == 1).await;
    converged(&e).await;
    wait_for("the record deleted", || records(&dir) == 0).await;
    e.shutdown().await;

    // And never again.
    let e = engine_in(&dir);
    e.swap(graph(vec![], vec![])).await.unwrap();
    converged(&e).await;
    e.shutdown().await;
    assert_eq!(b.undone.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_comes_back_keeps_the_first_record() {
    let dir = tempfile_dir("rev-c");
    let e = engine_in(&dir);
    e.swap(graph(vec![reversed("rv-c").param("tag", "1")], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    let path = std::fs::read_dir(dir.join("reversals"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let first = std::fs::read(&path).unwrap();
    // Changed (a new spec, a new resource): the record of what it found first stays.
    e.swap(graph(vec![reversed("rv-c").param("tag", "2")], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    assert_eq!(std::fs::read(&path).unwrap(), first);
    // A dry run keeps no record and undoes nothing.
    e.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let e = engine_with(2, true);
    let mut n = reversed("rv-noop");
    n.meta.noop = true;
    e.swap(graph(vec![n], vec![])).await.unwrap();
    converged(&e).await;
    e.shutdown().await;
    assert_eq!(probe("rv-noop").undone.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_keeps_the_reversal_of_what_it_received() {
    let dir = tempfile_dir("rev-d");
    let e = engine_in(&dir);
    e.swap(graph(
        vec![
            fake("rv-d-a").param("send", "received"),
            reversed("rv-d-b").param("got", "own"),
        ],
        vec![send("rv-d-a", "rv-d-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    e.shutdown().await;
    let rec = std::fs::read_dir(dir.join("reversals"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let spec = tend_model::export::decode_resource(&std::fs::read(rec).unwrap()).unwrap();
    assert_eq!(spec.id(), id("rv-d-b"));
    assert_eq!(
        spec.params.get("tag"),
        Some(&tend_model::Value::from("received"))
    );
    assert!(!spec.meta.reverse);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tend-engine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
