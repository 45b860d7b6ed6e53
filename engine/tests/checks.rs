//! `check_graph`: every error, each naming the resource and field.

use tend_model::{GraphSpec, ResSpec, Value};

use crate::support::*;

/// The graph's errors, displayed, one per line.
fn check(g: GraphSpec) -> String {
    let e = engine(1);
    match e.check_graph(&g) {
        Ok(()) => "ok".to_string(),
        Err(errs) => errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[tokio::test]
async fn every_error_is_reported() {
    let mut bad_meta = fake("m");
    bad_meta.meta.sema = vec!["3".into()];
    let g = graph(
        vec![
            fake("a").param("sleep_ms", "slow"),
            fake("a"),
            tend_model::ResSpec::new("nosuch", "x"),
            fake("b").param("bogus", 1i64).param("panic", Value::Int(3)),
            fake("r").param("refuse", true),
            bad_meta,
        ],
        vec![edge("a", "ghost")],
    );
    let got = check(g);
    let want = "\
fake[a]: field `sleep_ms`: expected int, got \"slow\"
fake[a]: duplicate resource (kind and name must be unique)
nosuch[x]: unknown resource kind `nosuch`
fake[b]: field `bogus`: kind `fake` has no such field
fake[b]: field `panic`: expected bool, got 3
fake[r]: refused by the constructor
fake[m]: field `Meta:sema`: `3` is not `id` or `id:N` (N >= 1)
fake[ghost]: edge fake[a] -> fake[ghost] refers to a resource that is not in the graph";
    assert_eq!(got, want);
}

#[tokio::test]
async fn cycles_are_reported_once_each() {
    let g = graph(
        vec![
            fake("c1"),
            fake("c2"),
            fake("c3"),
            fake("d1"),
            fake("d2"),
            fake("tail"),
        ],
        vec![
            edge("c1", "c2"),
            edge("c2", "c3"),
            edge("c3", "c1"),
            edge("c3", "tail"),
            edge("d1", "d2"),
            edge("d2", "d1"),
        ],
    );
    let got = check(g);
    assert_eq!(
        got,
        "fake[c1]: dependency cycle: fake[c1] -> fake[c2] -> fake[c3] -> fake[c1]\n\
         fake[d1]: dependency cycle: fake[d1] -> fake[d2] -> fake[d1]"
    );
}

/// A cycle upstream of another, where the walk from the first one's vertices leaves it along
/// the edge listed first: both are reported (before petgraph's Tarjan, only the downstream one
/// was).
#[tokio::test]
async fn a_cycle_upstream_of_another_is_reported_too() {
    let g = graph(
        vec![fake("a"), fake("b"), fake("c"), fake("d")],
        vec![
            edge("a", "b"),
            edge("b", "c"),
            edge("b", "a"),
            edge("c", "d"),
            edge("d", "c"),
        ],
    );
    assert_eq!(
        check(g),
        "fake[a]: dependency cycle: fake[a] -> fake[b] -> fake[a]\n\
         fake[c]: dependency cycle: fake[c] -> fake[d] -> fake[c]"
    );
}

#[tokio::test]
async fn autoedge_cycles_are_found_unless_disabled() {
    let a = || {
        fake("ae-a")
            .param("provides", strs_value(&["k1"]))
            .param("requires", strs_value(&["k2"]))
    };
    let b = fake("ae-b")
        .param("provides", strs_value(&["k2"]))
        .param("requires", strs_value(&["k1"]));
    let got = check(graph(vec![a(), b.clone()], vec![]));
    assert_eq!(
        got,
        "fake[ae-a]: dependency cycle: fake[ae-a] -> fake[ae-b] -> fake[ae-a]"
    );
    let mut a2 = a();
    a2.meta.autoedge = false;
    assert_eq!(check(graph(vec![a2, b], vec![])), "ok");
}

#[tokio::test]
async fn a_valid_graph_passes() {
    let g = graph(
        vec![fake("ok-a"), fake("ok-b").param("sleep_ms", 1i64)],
        vec![notify("ok-a", "ok-b")],
    );
    assert_eq!(check(g), "ok");
}

#[tokio::test]
async fn a_self_loop_is_a_cycle() {
    let g = graph(vec![fake("self")], vec![edge("self", "self")]);
    assert_eq!(
        check(g),
        "fake[self]: dependency cycle: fake[self] -> fake[self]"
    );
}

#[tokio::test]
async fn a_large_graph_split_over_the_cores_is_checked_as_one() {
    // More resources than one core checks alone: the graph is checked in parts, one per core.
    // Errors come in the graph's order, and duplicates and automatic edges cross the parts.
    let n = 5000;
    let mut res: Vec<_> = (0..n).map(|i| fake(&format!("big-{i}"))).collect();
    res[0] = fake("big-0")
        .param("provides", strs_value(&["k-first"]))
        .param("requires", strs_value(&["k-last"]));
    res[1] = fake("big-1").param("sleep_ms", "slow");
    res[n - 3] = fake("big-2").param("bogus", 1i64);
    res[n - 2] = fake("big-0");
    res[n - 1] = fake("big-last")
        .param("provides", strs_value(&["k-last"]))
        .param("requires", strs_value(&["k-first"]));
    let want = "\
fake[big-1]: field `sleep_ms`: expected int, got \"slow\"
fake[big-2]: duplicate resource (kind and name must be unique)
fake[big-0]: duplicate resource (kind and name must be unique)
fake[big-0]: dependency cycle: fake[big-0] -> fake[big-last] -> fake[big-0]";
    assert_eq!(check(graph(res.clone(), vec![])), want);
    // Without the cross-part edge, the rest of the graph is fine.
    res[n - 1].meta.autoedge = false;
    res[0].meta.autoedge = false;
    assert_eq!(
        check(graph(res, vec![])).lines().count(),
        3,
        "the cycle was not the automatic edges'"
    );
}

#[tokio::test]
async fn meta_parameters_without_effect_are_refused_not_ignored() {
    // `plain` is the fake kind without a reversal.
    let mut rev = ResSpec::new("plain", "rev");
    rev.meta.reverse = true;
    // `realize` is honoured (see `swap.rs`).
    let mut real = fake("real");
    real.meta.realize = true;
    // Hidden resources are refused too: whoever collects one would apply it.
    let mut hidden = ResSpec::new("plain", "hidden-rev");
    hidden.meta.reverse = true;
    hidden.meta.hidden = true;
    // `autogroup` is a hint: a kind that does not group has nothing to group.
    let mut grouped = fake("grouped");
    grouped.meta.autogroup = false;
    let got = check(graph(vec![rev, real, hidden, grouped], vec![]));
    let want = "\
plain[rev]: field `Meta:reverse`: kind `plain` cannot be reversed (set `reverse` to false)
plain[hidden-rev]: field `Meta:reverse`: kind `plain` cannot be reversed (set `reverse` to false)";
    assert_eq!(got, want);
    // The engine refuses them before anything runs.
    let mut rev = ResSpec::new("plain", "rev-swap");
    rev.meta.reverse = true;
    let e = engine(1);
    assert!(e.swap(graph(vec![rev], vec![])).await.is_err());
    assert_eq!(
        probe("rev-swap")
            .inits
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
