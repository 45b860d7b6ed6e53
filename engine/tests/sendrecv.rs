//! Send/recv: values carried by edges, from a sender's check to its receivers' params.

use std::sync::atomic::Ordering::SeqCst;

use tend_engine::VertexState;

use crate::support::*;

fn got(name: &str) -> Vec<String> {
    probe(name).got_log.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_value_replaces_the_param_before_the_receiver_runs() {
    let e = engine(4);
    e.swap(graph(
        vec![
            fake("sr-a").param("send", "hello"),
            fake("sr-b").param("got", "body"),
        ],
        vec![send("sr-a", "sr-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    // Its only check saw the received value, not the program's.
    assert_eq!(got("sr-b"), ["hello"]);
    // Started once its sender ran, built with the value: initialised and watched once.
    let b = probe("sr-b");
    assert_eq!(b.inits.load(SeqCst), 1);
    assert_eq!(b.watch_starts.load(SeqCst), 1);
    assert_eq!(b.cleanups.load(SeqCst), 0);

    // The same graph again: the received value is part of the vertex's state.
    e.swap(graph(
        vec![
            fake("sr-a").param("send", "hello"),
            fake("sr-b").param("got", "body"),
        ],
        vec![send("sr-a", "sr-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    assert_eq!(got("sr-b"), ["hello"]);
    assert_eq!(b.inits.load(SeqCst), 1);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sent_value_re_checks_the_receiver_and_an_unchanged_one_does_not() {
    let e = engine(4);
    e.swap(graph(
        vec![fake("src-a").param("send", "v1"), fake("src-b")],
        vec![send("src-a", "src-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    assert_eq!(got("src-b"), ["v1"]);
    let a = probe("src-a");

    // The sender runs again (in state) and sends the same: the receiver is left alone.
    a.event();
    wait_for("the sender's second check", || a.checks() == 2).await;
    converged(&e).await;
    assert_eq!(got("src-b"), ["v1"]);

    // It sends something else while in state: the receiver is checked with it.
    *a.send_value.lock().unwrap() = Some("v2".into());
    a.event();
    wait_for("the receiver's second check", || got("src-b").len() == 2).await;
    converged(&e).await;
    assert_eq!(got("src-b"), ["v1", "v2"]);
    assert_eq!(a.checks(), 3);
    // A new value: built again, the old resource stopped and cleaned up.
    let b = probe("src-b");
    assert_eq!(b.inits.load(SeqCst), 2);
    wait_for("the old resource's cleanup", || {
        b.cleanups.load(SeqCst) == 1
    })
    .await;
    assert_eq!(b.watches_active.load(SeqCst), 1);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sender_blocks_its_receiver() {
    let e = engine(4);
    e.swap(graph(
        vec![
            fake("srf-a").param("send", "x").param("fail", -1i64),
            fake("srf-b"),
        ],
        vec![send("srf-a", "srf-b", "got")],
    ))
    .await
    .unwrap();
    let s = wait_status(&e, "the sender failed", |s| {
        s.vertices
            .get(&id("srf-a"))
            .is_some_and(|v| v.state == VertexState::Failed)
    })
    .await;
    assert_eq!(state(&s, "srf-b"), VertexState::Blocked);
    assert_eq!(probe("srf-b").checks(), 0);
    // Healed, it sends, and the receiver runs with the value.
    probe("srf-a").heal.store(true, SeqCst);
    probe("srf-a").event();
    wait_for("the receiver's check", || got("srf-b") == ["x"]).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_in_a_dry_run() {
    let e = engine_with(4, true);
    e.swap(graph(
        vec![fake("srn-a").param("send", "dry"), fake("srn-b")],
        vec![send("srn-a", "srn-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    assert_eq!(got("srn-b"), ["dry"]);
    assert_eq!(probe("srn-b").applies.load(SeqCst), 0);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_fit_the_field_fails_the_receiver_naming_it() {
    let e = engine(4);
    let mut b = fake("srt-b");
    b.meta.retry = 0;
    e.swap(graph(
        vec![fake("srt-a").param("send", "slow"), b],
        vec![send("srt-a", "srt-b", "sleep_ms")],
    ))
    .await
    .unwrap();
    let s = wait_status(&e, "the receiver failed", |s| {
        s.vertices
            .get(&id("srt-b"))
            .is_some_and(|v| v.state == VertexState::Failed)
    })
    .await;
    let err = s.vertices[&id("srt-b")].last_error.clone().unwrap();
    assert!(
        err.contains("sleep_ms") && err.contains("fake[srt-a]"),
        "{err}"
    );
    assert_eq!(probe("srt-b").checks(), 0);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_sender_left_gets_its_own_param_back() {
    let e = engine(4);
    e.swap(graph(
        vec![
            fake("srl-a").param("send", "sent"),
            fake("srl-b").param("got", "own"),
        ],
        vec![send("srl-a", "srl-b", "got")],
    ))
    .await
    .unwrap();
    converged(&e).await;
    assert_eq!(got("srl-b"), ["sent"]);
    // The edge goes (the receiver's spec is the same): it runs again, built with its own
    // param.
    e.swap(graph(
        vec![
            fake("srl-a").param("send", "sent"),
            fake("srl-b").param("got", "own"),
        ],
        vec![],
    ))
    .await
    .unwrap();
    wait_for("the receiver's second check", || got("srl-b").len() == 2).await;
    assert_eq!(got("srl-b"), ["sent", "own"]);
    e.shutdown().await;
}
