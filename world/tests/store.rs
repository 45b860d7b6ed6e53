//! Store-level conformance: compares, transactions, watches from a revision and leases behave
//! the same on etcd and on the embedded store.

use std::time::Duration;

use tend_world::store::{Compare, KeyRange, Op, OpResult, Txn, WatchEvent, WatchMsg};
use tend_world::StoreError;

use crate::support::{eventually, Fixture, Kind};

on_both_backends!(
    compares_and_transactions,
    watch_from_a_revision_replays_history,
    leases
);

fn put(k: &str, v: &str) -> Txn {
    Txn::ops(vec![Op::put(k, v.as_bytes().to_vec())])
}

async fn compares_and_transactions(fx: Fixture) {
    let s = fx.store().await;
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    let r1 = s.txn(put("/t/a", "1")).await.unwrap();
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.version, kv.mod_revision, kv.create_revision),
        (1, r1.revision, r1.revision)
    );
    let r2 = s.txn(put("/t/a", "2")).await.unwrap();
    assert_eq!(r2.revision, r1.revision + 1);
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((kv.version, kv.create_revision), (2, r1.revision));
    let cas = |c: Compare| Txn {
        compares: vec![c],
        success: vec![Op::put("/t/ok", b"y".to_vec())],
        failure: vec![Op::Get(KeyRange::key("/t/a"))],
    };
    let check = |c: Compare, want: bool| {
        let s = s.clone();
        let t = cas(c.clone());
        async move {
            let r = s.txn(t).await.unwrap();
            assert_eq!(r.succeeded, want, "{c:?}");
            r
        }
    };
    check(Compare::Value("/t/a".into(), b"2".to_vec()), true).await;
    let r = check(Compare::Value("/t/a".into(), b"1".to_vec()), false).await;
    assert!(matches!(&r.results[0], OpResult::Range(kvs) if kvs[0].value == b"2"));
    check(Compare::Value("/t/missing".into(), vec![]), false).await;
    check(Compare::Version("/t/a".into(), 2), true).await;
    check(Compare::Version("/t/missing".into(), 0), true).await;
    check(Compare::ModRevision("/t/a".into(), r2.revision), true).await;
    check(Compare::ModRevision("/t/a".into(), r1.revision), false).await;
    check(Compare::ModRevision("/t/missing".into(), 0), true).await;
    check(Compare::Lease("/t/a".into(), 0), true).await;
    check(Compare::Exists("/t/a".into()), true).await;
    check(Compare::Exists("/t/missing".into()), false).await;
    check(Compare::Missing("/t/missing".into()), true).await;
    check(Compare::Missing("/t/a".into()), false).await;
    // Range and delete by prefix.
    s.txn(put("/t/p/1", "a")).await.unwrap();
    s.txn(put("/t/p/2", "b")).await.unwrap();
    s.txn(put("/t/q", "c")).await.unwrap();
    let r = s.range(KeyRange::prefix("/t/p/")).await.unwrap();
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/t/p/1", "/t/p/2"]
    );
    let d = s
        .txn(Txn::ops(vec![Op::Delete(KeyRange::prefix("/t/p/"))]))
        .await
        .unwrap();
    assert_eq!(d.results, vec![OpResult::Deleted(2)]);
    assert!(s.get("/t/q").await.unwrap().is_some());
    // A transaction that writes nothing does not bump the revision.
    let before = s.range(KeyRange::key("/t/q")).await.unwrap().revision;
    let r = s
        .txn(Txn::ops(vec![Op::Delete(KeyRange::key("/t/none"))]))
        .await
        .unwrap();
    assert_eq!(r.results, vec![OpResult::Deleted(0)]);
    assert_eq!(
        s.range(KeyRange::key("/t/q")).await.unwrap().revision,
        before
    );
}

async fn watch_from_a_revision_replays_history(fx: Fixture) {
    let s = fx.store().await;
    let first = s.txn(put("/w/a", "1")).await.unwrap().revision;
    s.txn(put("/w/b", "2")).await.unwrap();
    s.txn(put("/other", "x")).await.unwrap();
    s.txn(Txn::ops(vec![Op::Delete(KeyRange::key("/w/a"))]))
        .await
        .unwrap();
    let mut w = s.watch(KeyRange::prefix("/w/"), first).await.unwrap();
    s.txn(put("/w/c", "3")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchMsg::Events(evs) => seen.extend(evs.into_iter().map(|e| match e {
                WatchEvent::Put(kv) => format!("put {}", kv.key),
                WatchEvent::Delete { key, .. } => format!("del {key}"),
            })),
            other => panic!("{:?}: unexpected {other:?}", fx.kind),
        }
    }
    assert_eq!(seen, ["put /w/a", "put /w/b", "del /w/a", "put /w/c"]);
}

async fn leases(fx: Fixture) {
    let s = fx.store().await;
    let lease = s.lease_grant(Duration::from_secs(2)).await.unwrap();
    s.txn(Txn::ops(vec![Op::Put {
        key: "/l/a".into(),
        value: b"1".to_vec(),
        lease,
    }]))
    .await
    .unwrap();
    assert_eq!(s.get("/l/a").await.unwrap().unwrap().lease, lease);
    assert!(s.lease_keepalive(lease).await.unwrap() >= Duration::from_secs(1));
    s.lease_revoke(lease).await.unwrap();
    assert_eq!(
        s.get("/l/a").await.unwrap(),
        None,
        "revoking deletes the keys"
    );
    let ka = s.lease_keepalive(lease).await;
    assert!(
        matches!(ka, Err(StoreError::LeaseNotFound(l)) if l == lease),
        "{ka:?}"
    );
    let err = s
        .txn(Txn::ops(vec![Op::Put {
            key: "/l/b".into(),
            value: vec![],
            lease,
        }]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound(l) if l == lease),
        "{err}"
    );
    // Expiry.
    let short = s.lease_grant(Duration::from_secs(1)).await.unwrap();
    s.txn(Txn::ops(vec![Op::Put {
        key: "/l/c".into(),
        value: vec![],
        lease: short,
    }]))
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "the lease to expire", || async {
        s.get("/l/c").await.unwrap().is_none().then_some(())
    })
    .await;
}
