//! Graph swaps by diff: kept vertices keep running, removals are cleaned up, additions start.

use std::sync::atomic::Ordering::SeqCst;

use tend_engine::{SwapStats, VertexState};

use crate::support::*;

fn counts(s: &SwapStats) -> (usize, usize, usize, usize) {
    (s.added, s.removed, s.changed, s.kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_vertices_keep_running() {
    let e = engine(4);
    let st = e
        .swap(graph(
            vec![
                fake("sw-keep"),
                fake("sw-gone"),
                fake("sw-chg").param("tag", "1"),
            ],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(counts(&st), (3, 0, 0, 0));
    converged(&e).await;
    let (keep, gone, chg) = (probe("sw-keep"), probe("sw-gone"), probe("sw-chg"));

    let st = e
        .swap(graph(
            vec![
                fake("sw-keep"),
                fake("sw-chg").param("tag", "2"),
                fake("sw-new"),
            ],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(counts(&st), (1, 1, 1, 1));
    let s = converged(&e).await;
    assert_eq!(s.generation, 2);
    assert_eq!(s.total, 3);
    assert!(!s.vertices.contains_key(&id("sw-gone")));

    // Kept: the same watch, no new check, no cleanup.
    assert_eq!(keep.watch_starts.load(SeqCst), 1);
    assert_eq!(keep.watches_active.load(SeqCst), 1);
    assert_eq!(keep.checks(), 1);
    assert_eq!(keep.cleanups.load(SeqCst), 0);
    assert_eq!(s.vertices[&id("sw-keep")].checks, 1, "kept state was reset");
    // Removed: watch cancelled, cleanup called.
    assert_eq!(gone.cleanups.load(SeqCst), 1);
    assert_eq!(gone.watches_active.load(SeqCst), 0);
    // Changed: replaced (old cleaned up, new watch, checked again).
    assert_eq!(chg.cleanups.load(SeqCst), 1);
    assert_eq!(chg.watch_starts.load(SeqCst), 2);
    assert_eq!(chg.watches_active.load(SeqCst), 1);
    assert_eq!(chg.checks(), 2);
    // Added.
    assert_eq!(probe("sw-new").checks(), 1);
    assert_eq!(state(&s, "sw-new"), VertexState::Converged);

    // Drift still works on the kept vertex after the swap.
    keep.drift();
    wait_for("kept vertex repaired", || keep.checks() == 2).await;
    assert_eq!(e.metrics().graph_swaps_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_graph_changes_nothing() {
    let e = engine(2);
    e.swap(graph(vec![fake("inv-a")], vec![])).await.unwrap();
    converged(&e).await;
    let errs = e
        .swap(graph(vec![fake("inv-b").param("bogus", 1i64)], vec![]))
        .await
        .unwrap_err();
    assert_eq!(errs.len(), 1);
    let p = probe("inv-a");
    assert_eq!(p.cleanups.load(SeqCst), 0);
    assert_eq!(probe("inv-b").inits.load(SeqCst), 0);
    let s = e.status().borrow().clone();
    assert_eq!((s.generation, s.total), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_flag_survives_a_swap() {
    let e = engine(4);
    let g = |extra: bool| {
        let mut r = vec![fake("rfs-a"), fake("rfs-b").param("watch_gate", true)];
        if extra {
            r.push(fake("rfs-x"));
        }
        graph(r, vec![notify("rfs-a", "rfs-b")])
    };
    e.swap(g(false)).await.unwrap();
    let a = probe("rfs-a");
    let b = probe("rfs-b");
    wait_for("a applied", || a.checks() == 1).await;
    wait_status(&e, "a converged", |s| {
        state(s, "rfs-a") == VertexState::Converged
    })
    .await;
    assert_eq!(b.checks(), 0);
    let st = e.swap(g(true)).await.unwrap();
    assert_eq!((st.kept, st.added), (2, 1));
    b.open_gate.store(true, SeqCst);
    converged(&e).await;
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![true]);
    assert_eq!(b.watch_starts.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_flag_dropped_with_its_edge() {
    let e = engine(4);
    let r = || vec![fake("rfd-a"), fake("rfd-b").param("watch_gate", true)];
    e.swap(graph(r(), vec![notify("rfd-a", "rfd-b")]))
        .await
        .unwrap();
    let a = probe("rfd-a");
    wait_status(&e, "a converged", |s| {
        state(s, "rfd-a") == VertexState::Converged
    })
    .await;
    assert_eq!(a.checks(), 1);
    e.swap(graph(r(), vec![edge("rfd-a", "rfd-b")]))
        .await
        .unwrap();
    let b = probe("rfd-b");
    b.open_gate.store(true, SeqCst);
    converged(&e).await;
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewatch_restarts_a_failed_watch_on_swap() {
    let e = engine(2);
    let mut r = fake("rew-a").param("watch_fail", true);
    r.meta.rewatch = true;
    let g = graph(vec![r], vec![]);
    e.swap(g.clone()).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(state(&s, "rew-a"), VertexState::Failed);
    e.swap(g).await.unwrap();
    let p = probe("rew-a");
    wait_for("watch restarted", || p.watch_starts.load(SeqCst) == 2).await;
    assert_eq!(p.inits.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_to_empty_removes_everything() {
    let e = engine(2);
    e.swap(graph(
        vec![fake("empty-a"), fake("empty-b")],
        vec![edge("empty-a", "empty-b")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    let st = e.swap(graph(vec![], vec![])).await.unwrap();
    assert_eq!(st.removed, 2);
    let s = converged(&e).await;
    assert_eq!(s.total, 0);
    assert!(s.vertices.is_empty());
    assert_eq!(probe("empty-b").cleanups.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_state_survives_a_param_change_unless_reset() {
    for reset in [false, true] {
        let e = engine(2);
        let name = format!("reset-{reset}");
        let spec = |tag: &str| {
            let mut r = fake(&name).param("fail", -1i64).param("tag", tag);
            r.meta.retry = 1;
            r.meta.reset = reset;
            r
        };
        e.swap(graph(vec![spec("1")], vec![])).await.unwrap();
        let s = converged(&e).await;
        assert_eq!(state(&s, &name), VertexState::Failed);
        let p = probe(&name);
        assert_eq!(p.checks(), 2);
        let st = e.swap(graph(vec![spec("2")], vec![])).await.unwrap();
        assert_eq!(st.changed, 1);
        let s = wait_status(&e, "failed again", |s| {
            s.converged && s.vertices[&id(&name)].checks > 0
        })
        .await;
        assert_eq!(state(&s, &name), VertexState::Failed);
        // Without reset the retry budget is spent already; with reset it starts over.
        assert_eq!(p.checks(), if reset { 4 } else { 3 }, "reset={reset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_vertex_never_starts_its_queued_check() {
    let e = engine(1);
    let slow = || fake("queued-slow").param("sleep_ms", 300i64);
    e.swap(graph(
        vec![slow(), fake("queued-b").param("watch_gate", true)],
        vec![],
    ))
    .await
    .unwrap();
    let (s, b) = (probe("queued-slow"), probe("queued-b"));
    // The slow one holds the only parallel slot; b's check queues behind it.
    wait_for("slow running", || s.checks() == 1).await;
    b.open_gate.store(true, SeqCst);
    wait_for("b watching", || {
        b.watch_running_at.lock().unwrap().is_some()
    })
    .await;
    e.swap(graph(vec![slow()], vec![])).await.unwrap();
    converged(&e).await;
    assert_eq!(b.checks(), 0);
    assert_eq!(b.cleanups.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_known_once_everything_is_cleaned_up() {
    let e = engine(2);
    e.swap(graph(vec![fake("down-a")], vec![])).await.unwrap();
    converged(&e).await;
    // An empty graph is not a shutdown.
    e.swap(graph(vec![], vec![])).await.unwrap();
    assert!(!e.is_shut_down());
    e.swap(graph(vec![fake("down-a")], vec![])).await.unwrap();
    converged(&e).await; // initialised, so its cleanup is due
    e.shutdown().await;
    assert!(e.is_shut_down());
    assert_eq!(probe("down-a").cleanups.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vertex_removed_before_its_watch_is_up_is_cleaned_up_once_inited() {
    let e = engine(2);
    e.swap(graph(
        vec![fake("gated-init").param("watch_gate", true)],
        vec![],
    ))
    .await
    .unwrap();
    let p = probe("gated-init");
    wait_for("init done", || p.inits.load(SeqCst) == 1).await;
    // Its watch never comes up; the swap returns once removals are cleaned up.
    e.swap(graph(vec![], vec![])).await.unwrap();
    assert_eq!(p.cleanups.load(SeqCst), 1);
    assert_eq!(p.checks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_for_exit_leaves_in_process_watches_to_die_with_the_process() {
    let e = engine(4);
    e.swap(graph(
        vec![
            fake("exit-quiet").param("in_process", true),
            fake("exit-stop"),
            fake("exit-busy")
                .param("in_process", true)
                .param("sleep_ms", 300i64),
        ],
        vec![],
    ))
    .await
    .unwrap();
    let (quiet, stop, busy) = (probe("exit-quiet"), probe("exit-stop"), probe("exit-busy"));
    wait_for("quiet and stop converged", || {
        quiet.checks() == 1 && stop.checks() == 1 && busy.checks() == 1
    })
    .await;
    // exit-busy is in the middle of its check: it is waited for and torn down as usual.
    let exits = EXITS.load(SeqCst);
    e.shutdown_for_exit().await;
    assert!(EXITS.load(SeqCst) > exits, "the kind's at_exit did not run");
    assert!(e.is_shut_down());
    assert_eq!(stop.cleanups.load(SeqCst), 1);
    assert_eq!(stop.watches_active.load(SeqCst), 0, "its watch was stopped");
    assert_eq!(
        busy.runs.lock().unwrap().len(),
        1,
        "the running check finished"
    );
    assert_eq!(busy.cleanups.load(SeqCst), 1);
    assert_eq!(busy.watches_active.load(SeqCst), 0);
    assert_eq!(quiet.cleanups.load(SeqCst), 0);
    assert_eq!(quiet.watches_active.load(SeqCst), 1, "left running");
    assert_eq!(e.status().borrow().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realize_holds_a_swap_until_the_resource_converged_once() {
    let e = engine(4);
    let mut a = fake("rz-a").param("watch_gate", true);
    a.meta.realize = true;
    e.swap(graph(
        vec![a, fake("rz-b").param("watch_gate", true)],
        vec![],
    ))
    .await
    .unwrap();
    let (pa, pb) = (probe("rz-a"), probe("rz-b"));
    // Neither has run (their watches are not up); the swap that removes them waits for a.
    let e2 = e.clone();
    let swap = tokio::spawn(async move { e2.swap(graph(vec![], vec![])).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!swap.is_finished(), "the swap did not wait");
    pa.open_gate.store(true, SeqCst);
    let st = within("the held swap", swap).await.unwrap().unwrap();
    assert_eq!(st.removed, 2);
    assert_eq!(pa.checks(), 1, "it converged once before it went");
    // Without `realize`, b went without ever running.
    assert_eq!(pb.checks(), 0);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realize_does_not_wait_for_a_failed_resource() {
    let e = engine(4);
    let mut a = fake("rzf-a").param("fail", 1i64);
    a.meta.realize = true;
    a.meta.retry = 0;
    e.swap(graph(vec![a], vec![])).await.unwrap();
    wait_status(&e, "the failure", |s| {
        s.vertices
            .get(&id("rzf-a"))
            .is_some_and(|v| v.state == VertexState::Failed)
    })
    .await;
    within("the swap", e.swap(graph(vec![], vec![])))
        .await
        .unwrap();
    e.shutdown().await;
}
