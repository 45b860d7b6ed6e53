//! Executor semantics on one graph: ordering, parallelism, refresh, errors, metaparams.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use tend_engine::{CheckResult, Event, VertexState};
use tend_model::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_run_in_order() {
    let e = engine(4);
    let g = graph(
        vec![
            fake("ord-c"),
            fake("ord-b").param("sleep_ms", 20i64),
            fake("ord-a").param("sleep_ms", 20i64),
        ],
        vec![edge("ord-a", "ord-b"), edge("ord-b", "ord-c")],
    );
    e.swap(g).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(s.count(VertexState::Converged), 3);
    let (a, b, c) = (probe("ord-a"), probe("ord-b"), probe("ord-c"));
    assert!(a.first_end() <= b.first_start(), "b ran before a finished");
    assert!(b.first_end() <= c.first_start(), "c ran before b finished");
    assert_eq!((a.checks(), b.checks(), c.checks()), (1, 1, 1));
    assert!(a.in_state.load(SeqCst) && c.in_state.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_check_waits_for_the_watch() {
    let e = engine(2);
    let p = probe("gate-a");
    e.swap(graph(
        vec![fake("gate-a").param("watch_gate", true)],
        vec![],
    ))
    .await
    .unwrap();
    wait_for("watch start", || p.watch_starts.load(SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await; // give a wrong engine the chance to run
    assert_eq!(
        p.checks(),
        0,
        "check_apply ran before the watch was running"
    );
    assert!(!e.status().borrow().converged);
    p.open_gate.store(true, SeqCst);
    converged(&e).await;
    let running_at = p.watch_running_at.lock().unwrap().unwrap();
    assert!(p.first_start() >= running_at);
}

async fn overlap(prefix: &str, parallel: usize) -> usize {
    let e = engine(parallel);
    let grp = format!("{prefix}-group");
    let res = (0..3)
        .map(|i| {
            fake(&format!("{prefix}-{i}"))
                .param("sleep_ms", 150i64)
                .param("group", grp.as_str())
        })
        .collect();
    e.swap(graph(res, vec![])).await.unwrap();
    converged(&e).await;
    max_concurrent(&grp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_resources_run_concurrently() {
    // All three were inside check_apply at the same moment.
    assert_eq!(overlap("par", 4).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_bounds_concurrent_checks_and_queued_ones_all_run() {
    // Three ready at once, two slots: two run together, the third waits its turn.
    assert_eq!(overlap("par2", 2).await, 2);
    assert_eq!(
        probe("par2-0").checks() + probe("par2-1").checks() + probe("par2-2").checks(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_one_serialises() {
    let t = Instant::now();
    assert_eq!(overlap("ser", 1).await, 1);
    assert!(t.elapsed() >= Duration::from_millis(450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sema_limits_concurrency() {
    let e = engine(8);
    let mut res: Vec<_> = (0..4)
        .map(|i| {
            fake(&format!("sema2-{i}"))
                .param("sleep_ms", 60i64)
                .param("group", "sema2")
        })
        .collect();
    for r in &mut res {
        r.meta.sema = vec!["pool:2".into()];
    }
    let mut one: Vec<_> = (0..3)
        .map(|i| {
            fake(&format!("sema1-{i}"))
                .param("sleep_ms", 40i64)
                .param("group", "sema1")
        })
        .collect();
    for r in &mut one {
        // Several semaphores, listed in different orders: acquired sorted, no deadlock.
        r.meta.sema = vec!["zz".into(), "lock".into()];
    }
    one[1].meta.sema.reverse();
    res.extend(one);
    e.swap(graph(res, vec![])).await.unwrap();
    converged(&e).await;
    assert_eq!(max_concurrent("sema2"), 2);
    assert_eq!(max_concurrent("sema1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_edges_carry_refreshes() {
    let e = engine(4);
    let g = graph(
        vec![fake("ntf-a"), fake("ntf-b"), fake("ntf-c")],
        vec![notify("ntf-a", "ntf-b"), edge("ntf-a", "ntf-c")],
    );
    e.swap(g).await.unwrap();
    converged(&e).await;
    let (a, b, c) = (probe("ntf-a"), probe("ntf-b"), probe("ntf-c"));
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![true]);
    assert_eq!(*c.refresh_log.lock().unwrap(), vec![false]);

    // Drift of b alone: no refresh.
    b.drift();
    wait_for("b re-checked", || b.checks() == 2).await;
    converged(&e).await;
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![true, false]);

    // An event on a that changes nothing: no refresh, b and c untouched.
    a.event();
    wait_for("a re-checked", || a.checks() == 2).await;
    converged(&e).await;
    assert_eq!(b.checks(), 2);

    // a changes again: b refreshed once more.
    a.drift();
    wait_for("b refreshed", || b.checks() == 3).await;
    converged(&e).await;
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![true, false, true]);
    assert_eq!(*c.refresh_log.lock().unwrap(), vec![false, false]);
    assert_eq!(e.metrics().refreshes_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_delay_then_success() {
    let e = engine(2);
    let mut r = fake("retry-ok").param("fail", 2i64);
    r.meta.retry = 3;
    r.meta.delay = 40;
    e.swap(graph(vec![r], vec![])).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(state(&s, "retry-ok"), VertexState::Converged);
    let p = probe("retry-ok");
    assert_eq!(p.checks(), 3);
    let runs = p.runs.lock().unwrap().clone();
    for w in runs.windows(2) {
        assert!(
            w[1].0 - w[0].1 >= Duration::from_millis(40),
            "retry came too early"
        );
    }
    assert_eq!(s.vertices[&id("retry-ok")].last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_fail_the_vertex() {
    let e = engine(2);
    let mut r = fake("retry-ko").param("fail", 10i64);
    r.meta.retry = 2;
    e.swap(graph(vec![r], vec![])).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(state(&s, "retry-ko"), VertexState::Failed);
    assert_eq!(probe("retry-ko").checks(), 3);
    let v = &s.vertices[&id("retry-ko")];
    assert_eq!(v.last_error.as_deref(), Some("planned failure 3"));
    assert!(s.any_failed());
    let m = e.metrics();
    assert_eq!(
        m.check_apply_total[&("fake".into(), CheckResult::Failed)],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_a_hanging_check() {
    let e = engine(2);
    let mut r = fake("timeout-a").param("hang", true);
    r.meta.timeout = 50;
    let t = Instant::now();
    e.swap(graph(vec![r, fake("timeout-b")], vec![]))
        .await
        .unwrap();
    let s = converged(&e).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(state(&s, "timeout-a"), VertexState::Failed);
    assert_eq!(state(&s, "timeout-b"), VertexState::Converged);
    let err = s.vertices[&id("timeout-a")].last_error.clone().unwrap();
    assert!(err.contains("timed out after 50 ms"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_blocks_descendants_only() {
    let e = engine(4);
    let g = graph(
        vec![
            fake("iso-a").param("fail", -1i64),
            fake("iso-b"),
            fake("iso-c"),
            fake("iso-d"),
            fake("iso-e"),
        ],
        vec![
            edge("iso-a", "iso-b"),
            edge("iso-b", "iso-c"),
            edge("iso-d", "iso-e"),
        ],
    );
    e.swap(g).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(state(&s, "iso-a"), VertexState::Failed);
    assert_eq!(state(&s, "iso-b"), VertexState::Blocked);
    assert_eq!(state(&s, "iso-c"), VertexState::Blocked);
    assert_eq!(state(&s, "iso-d"), VertexState::Converged);
    assert_eq!(state(&s, "iso-e"), VertexState::Converged);
    assert_eq!(s.count(VertexState::Blocked), 2);
    assert_eq!(probe("iso-b").checks(), 0);

    // Failed stays failed until a drift event; then the blocked ones run.
    let a = probe("iso-a");
    a.heal.store(true, SeqCst);
    a.event();
    let s = wait_status(&e, "recovery", |s| {
        s.converged && s.count(VertexState::Converged) == 5
    })
    .await;
    assert!(!s.any_failed());
    assert_eq!(probe("iso-c").checks(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_fail_only_their_vertex() {
    let e = engine(4);
    let g = graph(
        vec![
            fake("pan-check").param("panic", true),
            fake("pan-watch").param("watch_panic", true),
            fake("pan-init").param("init_fail", true),
            fake("pan-wfail").param("watch_fail", true),
            fake("pan-after"),
            fake("pan-ok"),
        ],
        vec![edge("pan-check", "pan-after")],
    );
    e.swap(g).await.unwrap();
    let s = converged(&e).await;
    let err = |n: &str| s.vertices[&id(n)].last_error.clone().unwrap_or_default();
    assert_eq!(state(&s, "pan-check"), VertexState::Failed);
    assert!(err("pan-check").contains("panicked: check_apply exploded"));
    assert_eq!(state(&s, "pan-watch"), VertexState::Failed);
    assert!(
        err("pan-watch").starts_with("watch: panicked"),
        "{}",
        err("pan-watch")
    );
    assert_eq!(state(&s, "pan-init"), VertexState::Failed);
    assert_eq!(err("pan-init"), "init: init refused");
    assert_eq!(state(&s, "pan-wfail"), VertexState::Failed);
    assert_eq!(state(&s, "pan-after"), VertexState::Blocked);
    assert_eq!(state(&s, "pan-ok"), VertexState::Converged);
    assert_eq!(probe("pan-watch").checks(), 0);
    // The engine is still alive and swapping.
    e.swap(graph(vec![fake("pan-ok")], vec![])).await.unwrap();
    converged(&e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_noop_changes_nothing() {
    let e = engine_with(2, true);
    e.swap(graph(
        vec![fake("noop-a"), fake("noop-b")],
        vec![notify("noop-a", "noop-b")],
    ))
    .await
    .unwrap();
    let s = converged(&e).await;
    let (a, b) = (probe("noop-a"), probe("noop-b"));
    assert_eq!((a.checks(), b.checks()), (1, 1));
    assert_eq!(a.applies.load(SeqCst) + b.applies.load(SeqCst), 0);
    assert!(!a.in_state.load(SeqCst));
    assert_eq!(*b.refresh_log.lock().unwrap(), vec![false]);
    assert_eq!(s.vertices[&id("noop-a")].changes, 1);
    assert_eq!(
        e.metrics().check_apply_total[&("fake".into(), CheckResult::Noop)],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_noop_is_per_resource() {
    let e = engine(2);
    let mut a = fake("mnoop-a");
    a.meta.noop = true;
    e.swap(graph(vec![a, fake("mnoop-b")], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    assert!(!probe("mnoop-a").in_state.load(SeqCst));
    assert!(probe("mnoop-b").in_state.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_checks_without_a_watch() {
    let e = engine(2);
    let mut r = fake("poll-a");
    r.meta.poll = 1;
    let mut once = fake("poll-once");
    once.meta.poll = -1;
    e.swap(graph(vec![r, once], vec![])).await.unwrap();
    converged(&e).await;
    let (p, o) = (probe("poll-a"), probe("poll-once"));
    assert_eq!(p.watch_starts.load(SeqCst) + o.watch_starts.load(SeqCst), 0);
    p.in_state.store(false, SeqCst);
    wait_for("poll repairs", || p.in_state.load(SeqCst)).await;
    assert!(p.checks() >= 2);
    assert_eq!(o.checks(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_burst_rate_limit_checks() {
    let e = engine(2);
    let mut r = fake("limit-a");
    r.meta.limit = 10.0;
    r.meta.burst = 2;
    e.swap(graph(vec![r, fake("limit-free")], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    let (p, free) = (probe("limit-a"), probe("limit-free"));
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        p.event();
        free.event();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    converged(&e).await;
    let limited = p.checks();
    // 2 burst tokens spent by now or at the start, then 10/s for 0.5 s: at most ~8 runs.
    assert!(limited <= 9, "limited resource ran {limited} times");
    assert!(limited >= 4, "limited resource ran only {limited} times");
    assert!(free.checks() > 2 * limited, "unlimited: {}", free.checks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_rechecks_only_the_drifted_and_descendants() {
    let e = engine(4);
    let g = graph(
        vec![
            fake("dr-root"),
            fake("dr-a"),
            fake("dr-b"),
            fake("dr-c"),
            fake("dr-x"),
        ],
        vec![
            edge("dr-root", "dr-a"),
            edge("dr-a", "dr-b"),
            edge("dr-b", "dr-c"),
        ],
    );
    e.swap(g).await.unwrap();
    converged(&e).await;
    let n = |x: &str| probe(x).checks();
    probe("dr-a").drift();
    wait_for("c re-checked", || n("dr-c") == 2).await;
    converged(&e).await;
    assert_eq!(
        [n("dr-root"), n("dr-a"), n("dr-b"), n("dr-c"), n("dr-x")],
        [1, 2, 2, 2, 1]
    );
    probe("dr-c").drift();
    wait_for("c re-checked", || n("dr-c") == 3).await;
    converged(&e).await;
    assert_eq!(
        [n("dr-root"), n("dr-a"), n("dr-b"), n("dr-c"), n("dr-x")],
        [1, 2, 2, 3, 1]
    );
    assert_eq!(e.metrics().drift_events_total["fake"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_flips_on_drift_and_back() {
    let e = engine(2);
    let mut events = e.events();
    e.swap(graph(vec![fake("flip-a").param("sleep_ms", 50i64)], vec![]))
        .await
        .unwrap();
    converged(&e).await;
    assert!(e.metrics().converged);
    probe("flip-a").drift();
    wait_status(&e, "unconverged", |s| !s.converged).await;
    let s = converged(&e).await;
    assert_eq!(s.vertices[&id("flip-a")].checks, 2);
    assert!(probe("flip-a").in_state.load(SeqCst));
    let mut flips = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let Event::Converged { converged, .. } = ev {
            flips.push(converged);
        }
    }
    assert_eq!(flips, vec![true, false, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_vertices_never_run() {
    let e = engine(2);
    let mut h = fake("hid-a");
    h.meta.hidden = true;
    e.swap(graph(vec![h, fake("hid-b")], vec![edge("hid-a", "hid-b")]))
        .await
        .unwrap();
    let s = converged(&e).await;
    let p = probe("hid-a");
    assert_eq!(
        p.inits.load(SeqCst) + p.watch_starts.load(SeqCst) + p.checks(),
        0
    );
    assert_eq!(state(&s, "hid-a"), VertexState::Converged);
    assert_eq!(probe("hid-b").checks(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_twins_share_the_identity_of_a_visible_resource() {
    // spec/mcl.md §8.6: hidden copies may share kind and name with a visible resource (or with
    // each other); one vertex runs, and every copy stays in the graph for the exporter.
    let e = engine(2);
    let mut h1 = fake("twin-a").param("tag", "hidden-1");
    h1.meta.hidden = true;
    let mut h2 = fake("twin-a").param("tag", "hidden-2");
    h2.meta.hidden = true;
    let mut only_hidden = fake("twin-b");
    only_hidden.meta.hidden = true;
    let g = graph(
        vec![h1, fake("twin-a"), h2, only_hidden.clone(), only_hidden],
        vec![edge("twin-a", "twin-b")],
    );
    e.check_graph(&g).unwrap();
    e.swap(g).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(s.total, 2);
    assert_eq!(probe("twin-a").checks(), 1, "the visible copy runs");
    assert_eq!(e.graph().resources().count(), 5);
    // Two visible copies are still a duplicate.
    let dup = graph(vec![fake("twin-c"), fake("twin-c")], vec![]);
    assert!(e.check_graph(&dup).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_aborts_checks() {
    let e = engine(2);
    e.swap(graph(vec![fake("cancel-a").param("hang", true)], vec![]))
        .await
        .unwrap();
    wait_for("check started", || probe("cancel-a").checks() == 1).await;
    e.cancel_running();
    let s = converged(&e).await;
    assert_eq!(state(&s, "cancel-a"), VertexState::Failed);
    assert_eq!(
        s.vertices[&id("cancel-a")].last_error.as_deref(),
        Some("cancelled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_quick_and_cleans_up() {
    let e = engine(2);
    let res = (0..50).map(|i| fake(&format!("shut-{i}"))).collect();
    e.swap(graph(res, vec![])).await.unwrap();
    converged(&e).await;
    let t = Instant::now();
    within("shutdown", e.shutdown()).await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    for i in 0..50 {
        let p = probe(&format!("shut-{i}"));
        assert_eq!(p.cleanups.load(SeqCst), 1);
        assert_eq!(p.watches_active.load(SeqCst), 0);
    }
    assert!(e.swap(graph(vec![], vec![])).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoedges_order_providers_first() {
    let e = engine(4);
    let prov = fake("auto-dir")
        .param("provides", strs_value(&["path:/d/"]))
        .param("sleep_ms", 30i64);
    let req = fake("auto-file").param("requires", strs_value(&["path:/d/"]));
    let mut free = fake("auto-free").param("requires", strs_value(&["path:/d/"]));
    free.meta.autoedge = false;
    e.swap(graph(vec![req, free, prov], vec![])).await.unwrap();
    converged(&e).await;
    let (d, f, x) = (probe("auto-dir"), probe("auto-file"), probe("auto-free"));
    assert!(d.first_end() <= f.first_start());
    assert!(
        x.first_start() < d.first_end(),
        "autoedge=false still waited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_forever_with_a_delay() {
    let e = engine(2);
    let mut r = fake("forever").param("fail", 6i64);
    r.meta.retry = -1;
    r.meta.delay = 5;
    e.swap(graph(vec![r], vec![])).await.unwrap();
    let s = wait_status(&e, "healed", |s| {
        s.converged && state(s, "forever") == VertexState::Converged
    })
    .await;
    assert_eq!(state(&s, "forever"), VertexState::Converged);
    let p = probe("forever");
    assert_eq!(p.checks(), 7);
    let runs = p.runs.lock().unwrap().clone();
    for w in runs.windows(2) {
        assert!(w[1].0 - w[0].1 >= Duration::from_millis(5), "no delay");
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resource_heals_with_capped_exponential_backoff_by_default() {
    let e = engine_backoff(20 * MS, 80 * MS);
    // Default meta parameters: retry forever, backing off.
    let g = graph(
        vec![fake("heal").param("fail", 5i64), fake("heal-after")],
        vec![edge("heal", "heal-after")],
    );
    e.swap(g).await.unwrap();
    // After the first failure the resource is failed and its dependent blocked, and the graph
    // counts as converged (a one-shot run ends there and reports it).
    let s = wait_status(&e, "the first failure", |s| {
        s.converged && s.vertices[&id("heal")].checks >= 1
    })
    .await;
    assert_eq!(state(&s, "heal"), VertexState::Failed);
    assert_eq!(state(&s, "heal-after"), VertexState::Blocked);
    // It is retried until it succeeds, without a new graph or an event.
    let s = wait_status(&e, "healed", |s| {
        s.converged && state(s, "heal-after") == VertexState::Converged
    })
    .await;
    assert_eq!(state(&s, "heal"), VertexState::Converged);
    assert_eq!(s.vertices[&id("heal")].last_error, None);
    let p = probe("heal");
    assert_eq!(p.checks(), 6);
    let runs = p.runs.lock().unwrap().clone();
    let waits: Vec<Duration> = runs.windows(2).map(|w| w[1].0 - w[0].1).collect();
    for (w, want) in waits.iter().zip([20, 40, 80, 80, 80]) {
        assert!(
            *w >= want * MS,
            "waited {w:?}, expected at least {want} ms: {waits:?}"
        );
    }
    assert!(waits[4] < 1000 * MS, "the wait is capped: {waits:?}");
    assert_eq!(e.metrics().failures_total["fake"], 1, "one failure streak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backoff_starts_over_after_a_success() {
    let e = engine_backoff(30 * MS, 10_000 * MS);
    // Checks 0, 1 fail, 2 succeeds; after a drift, 3 fails and 4 succeeds.
    let r = fake("heal-reset").param("fail_at", Value::List(vec![0.into(), 1.into(), 3.into()]));
    e.swap(graph(vec![r], vec![])).await.unwrap();
    wait_status(&e, "healed", |s| {
        state(s, "heal-reset") == VertexState::Converged
    })
    .await;
    let p = probe("heal-reset");
    p.drift();
    wait_for("the drift's check and its retry", || p.checks() == 5).await;
    let runs = p.runs.lock().unwrap().clone();
    // Without the reset the last wait would be 120 ms.
    let last = runs[4].0 - runs[3].1;
    assert!(last >= 30 * MS && last < 110 * MS, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_event_retries_a_failed_resource_at_once() {
    // A backoff far longer than the test: only the event can make it run again.
    let e = engine_backoff(60_000 * MS, 60_000 * MS);
    e.swap(graph(vec![fake("heal-drift").param("fail", 1i64)], vec![]))
        .await
        .unwrap();
    wait_status(&e, "the failure", |s| {
        state(s, "heal-drift") == VertexState::Failed
    })
    .await;
    let p = probe("heal-drift");
    let t = Instant::now();
    p.event();
    wait_status(&e, "repaired after the event", |s| {
        state(s, "heal-drift") == VertexState::Converged
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(p.checks(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inits_and_watches_are_retried_with_backoff() {
    let e = engine_backoff(10 * MS, 20 * MS);
    e.swap(graph(
        vec![
            fake("heal-init").param("init_fail", true),
            fake("heal-watch").param("watch_fail", true),
        ],
        vec![],
    ))
    .await
    .unwrap();
    let (i, w) = (probe("heal-init"), probe("heal-watch"));
    wait_for("inits retried", || i.inits.load(SeqCst) >= 3).await;
    wait_for("watches restarted", || w.watch_starts.load(SeqCst) >= 3).await;
    // A watch is restarted without running init again.
    assert_eq!(w.inits.load(SeqCst), 1);
    // Between attempts both show as failed (during an attempt an init shows as pending).
    wait_status(&e, "both failed between attempts", |s| {
        state(s, "heal-init") == VertexState::Failed
            && state(s, "heal-watch") == VertexState::Failed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_retry_count_keeps_its_meaning() {
    let e = engine_backoff(5 * MS, 5 * MS);
    let mut r = fake("heal-none").param("fail", 10i64);
    r.meta.retry = 0;
    e.swap(graph(vec![r], vec![])).await.unwrap();
    let s = converged(&e).await;
    assert_eq!(state(&s, "heal-none"), VertexState::Failed);
    tokio::time::sleep(100 * MS).await;
    assert_eq!(probe("heal-none").checks(), 1, "retry 0 never retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryreset_restores_the_budget_after_success() {
    for reset in [false, true] {
        let e = engine(2);
        let name = format!("rreset-{reset}");
        // Checks 0 and 2 fail: the first drift needs the retry budget again.
        let mut r = fake(&name).param("fail_at", Value::List(vec![0.into(), 2.into()]));
        r.meta.retry = 1;
        r.meta.retryreset = reset;
        e.swap(graph(vec![r], vec![])).await.unwrap();
        let s = converged(&e).await;
        assert_eq!(state(&s, &name), VertexState::Converged);
        let p = probe(&name);
        p.drift();
        wait_for("drift handled", || p.checks() >= 3).await;
        let s = converged(&e).await;
        let want = if reset {
            VertexState::Converged
        } else {
            VertexState::Failed
        };
        assert_eq!(state(&s, &name), want, "retryreset={reset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_count_everything() {
    let e = engine(2);
    assert_eq!(e.status().borrow().counts.len(), 5);
    assert!(!e.status().borrow().converged);
    e.swap(graph(
        vec![
            fake("cnt-a"),
            fake("cnt-b").param("fail", -1i64),
            fake("cnt-c"),
        ],
        vec![edge("cnt-b", "cnt-c")],
    ))
    .await
    .unwrap();
    let s = converged(&e).await;
    assert_eq!(s.total, 3);
    assert_eq!(
        VertexState::ALL.map(|st| s.count(st)),
        [0, 1, 0, 1, 1],
        "{:?}",
        s.counts
    );
    assert_eq!(VertexState::Blocked.to_string(), "blocked");
    let m = e.metrics();
    assert_eq!(
        m.check_apply_total[&("fake".into(), CheckResult::Changed)],
        1
    );
    assert_eq!(
        m.check_apply_total[&("fake".into(), CheckResult::Failed)],
        1
    );
    assert_eq!(m.check_apply_duration_seconds["fake"].count, 2);
    assert_eq!(m.failures_total["fake"], 1);
    assert_eq!(m.graph_swaps_total, 1);
    assert_eq!(m.graph_swap_duration_seconds.count, 1);
    let h = &m.check_apply_duration_seconds["fake"];
    assert!(
        h.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "not cumulative"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_graph_swaps_without_a_second_check() {
    let e = engine(2);
    // A bad graph is refused by prepare, with the same errors as check_graph.
    let bad = graph(vec![fake("prep-a")], vec![edge("prep-a", "prep-missing")]);
    let want = e.check_graph(&bad).unwrap_err();
    let Err(got) = e.prepare(bad) else {
        panic!("prepare accepted an edge to a missing vertex");
    };
    assert_eq!(got, want);
    assert_eq!(e.graph().resources().count(), 0, "nothing was swapped in");
    // A good one runs; the published graph is the one given, with its automatic edges.
    let good = std::sync::Arc::new(graph(
        vec![fake("prep-a"), fake("prep-b")],
        vec![edge("prep-a", "prep-b")],
    ));
    let p = e.prepare(good.clone()).unwrap();
    let stats = e.swap_prepared(p).await.unwrap();
    assert_eq!(stats.added, 2);
    let s = converged(&e).await;
    assert_eq!(s.count(VertexState::Converged), 2);
    assert!(
        std::sync::Arc::ptr_eq(&e.graph().graph, &good),
        "the graph is shared, not copied"
    );
    assert_eq!(e.graph().edges.len(), 1);
    assert!(probe("prep-a").first_end() <= probe("prep-b").first_start());
}
