//! Faults against real etcd: a restart while a watch is open, a member of a three-member
//! cluster killed, and the one-watch-per-host promise read from etcd's own metrics.

use std::sync::Arc;
use std::time::Duration;

use tend_testkit::{EtcdCluster, EtcdServer};
use tend_world::store::etcd::{Etcd, EtcdConfig};
use tend_world::store::{KeyRange, Op, Store, Txn, Watch, WatchEvent, WatchMsg};
use tend_world::{Export, ResWorld, StrWorld, World, WorldConfig};

use crate::support::{eventually, next_change};

fn put(k: String) -> Txn {
    Txn::ops(vec![Op::put(k, b"v".to_vec())])
}

/// Collects the keys of put events until `n` were seen (a resync counts its keys).
async fn collect_puts(w: &mut Watch, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {} events: {seen:?}", seen.len()))
            .expect("watch ended");
        match msg {
            WatchMsg::Events(evs) => {
                for e in evs {
                    if let WatchEvent::Put(kv) = e {
                        seen.push(kv.key);
                    }
                }
            }
            WatchMsg::Resync { kvs, .. } => {
                seen = kvs.into_iter().map(|kv| kv.key).collect();
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_etcd_restart_without_losing_updates() {
    let mut etcd = EtcdServer::start().unwrap();
    let cfg = EtcdConfig::new(vec![etcd.client_url.clone()]);
    let store = Etcd::connect(cfg.clone()).await.unwrap();
    let mut w = store.watch(KeyRange::prefix("/seq/"), 0).await.unwrap();
    let key = |i: usize| format!("/seq/{i:04}");
    for i in 0..50 {
        store.txn(put(key(i))).await.unwrap();
    }
    // Restart etcd while the watch is open; keep writing as soon as it answers again.
    etcd.restart().unwrap();
    for i in 50..100 {
        store.txn(put(key(i))).await.unwrap();
    }
    let seen = collect_puts(&mut w, 100).await;
    assert_eq!(seen, (0..100).map(key).collect::<Vec<_>>());

    // The World's cache rides the same watch: a string set after a restart arrives.
    let h1 = World::connect(WorldConfig::etcd(vec![etcd.client_url.clone()], "h1"))
        .await
        .unwrap();
    let mut sw = h1.str_watch("k");
    next_change(&mut sw, "initial").await;
    etcd.restart().unwrap();
    store.txn(put("/unrelated".into())).await.unwrap();
    let other = World::with_store(Arc::new(store.clone()), WorldConfig::etcd(vec![], "h2"))
        .await
        .unwrap();
    other.str_set("k", "after restart").await.unwrap();
    next_change(&mut sw, "string after restart").await;
    assert_eq!(h1.str_get("k").await.unwrap(), "after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resyncs_when_its_revision_was_compacted() {
    let etcd = EtcdServer::start().unwrap();
    let store = Etcd::connect(EtcdConfig::new(vec![etcd.client_url.clone()]))
        .await
        .unwrap();
    let first = store.txn(put("/c/a".into())).await.unwrap().revision;
    store.txn(put("/c/b".into())).await.unwrap();
    let last = store.txn(put("/other".into())).await.unwrap().revision;
    let mut client = etcd_client::Client::connect([etcd.client_url.clone()], None)
        .await
        .unwrap();
    client.compact(last, None).await.unwrap();
    let mut w = store.watch(KeyRange::prefix("/c/"), first).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchMsg::Resync { kvs, revision } => {
            assert!(revision >= last);
            assert_eq!(
                kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
                ["/c/a", "/c/b"]
            );
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    store.txn(put("/c/c".into())).await.unwrap();
    assert_eq!(collect_puts(&mut w, 1).await, ["/c/c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_killed() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let endpoints = cluster.endpoints();
    let h1 = World::connect(WorldConfig::etcd(endpoints.clone(), "h1"))
        .await
        .unwrap();
    let h2 = World::connect(WorldConfig::etcd(endpoints.clone(), "h2"))
        .await
        .unwrap();
    let store = Etcd::connect(EtcdConfig::new(endpoints.clone()))
        .await
        .unwrap();
    let mut w = store.watch(KeyRange::prefix("/seq/"), 0).await.unwrap();
    let key = |i: usize| format!("/seq/{i:04}");
    let exp = |name: String| Export {
        kind: "file".into(),
        name,
        from: String::new(),
        to: "*".into(),
        data: vec![],
    };
    for i in 0..30 {
        store.txn(put(key(i))).await.unwrap();
    }
    h1.res_export(vec![exp("before".into())]).await.unwrap();
    cluster.members[0].kill();
    for i in 30..60 {
        store.txn(put(key(i))).await.unwrap();
    }
    h1.res_export(vec![exp("after".into())]).await.unwrap();
    assert_eq!(
        collect_puts(&mut w, 60).await,
        (0..60).map(key).collect::<Vec<_>>()
    );
    eventually(
        Duration::from_secs(20),
        "h2 to collect both exports",
        || async { (h2.res_collect(&[]).await.ok()?.len() == 2).then_some(()) },
    )
    .await;
    // The member comes back and the cluster keeps serving.
    cluster.members[0].restart().unwrap();
    h2.str_set("x", "y").await.unwrap();
    eventually(Duration::from_secs(20), "h1 to read the string", || async {
        (h1.str_get("x").await.ok()? == "y").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_subscribers_share_one_etcd_watch() {
    let etcd = EtcdServer::start().unwrap();
    let watchers = || {
        etcd.metric("etcd_debugging_mvcc_watcher_total")
            .unwrap_or(-1.0)
    };
    let streams = || {
        etcd.metric("etcd_debugging_mvcc_watch_stream_total")
            .unwrap_or(-1.0)
    };
    assert_eq!(watchers(), 0.0);
    let h1 = World::connect(WorldConfig::etcd(vec![etcd.client_url.clone()], "h1"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the cache's watch", || async {
        (watchers() == 1.0).then_some(())
    })
    .await;
    let mut subs: Vec<_> = (0..100)
        .map(|i| match i % 4 {
            0 => h1.res_watch(None),
            1 => h1.res_watch(Some("file")),
            2 => h1.str_watch("k"),
            _ => h1.strmap_watch("m"),
        })
        .collect();
    for s in &mut subs {
        next_change(s, "initial").await;
    }
    h1.res_export(vec![Export {
        kind: "file".into(),
        name: "a".into(),
        from: String::new(),
        to: "*".into(),
        data: vec![],
    }])
    .await
    .unwrap();
    h1.str_set("k", "v").await.unwrap();
    h1.strmap_set("m", "v").await.unwrap();
    for s in &mut subs {
        next_change(s, "change").await;
    }
    assert_eq!(h1.subscribers(), 100);
    assert_eq!(watchers(), 1.0, "100 subscribers, still one etcd watch");
    assert_eq!(streams(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let tls = tend_testkit::TestTls::generate().unwrap();
    let etcd = EtcdServer::start_tls(&tls).unwrap();
    let mut cfg = EtcdConfig::new(vec![etcd.client_url.clone()]);
    cfg.retries = 1;
    cfg.request_timeout = Duration::from_secs(2);
    let err = Etcd::connect(cfg.clone())
        .await
        .err()
        .expect("no client certificate");
    assert!(err.to_string().contains(&etcd.client_url), "{err}");
    cfg.tls = Some(tend_world::EtcdTls {
        ca: Some(tls.ca.clone()),
        cert: Some(tls.client_cert.clone()),
        key: Some(tls.client_key.clone()),
    });
    let mut wc = WorldConfig::etcd(vec![], "h1");
    wc.backend = tend_world::Backend::Etcd(cfg);
    let w = World::connect(wc).await.unwrap();
    w.str_set("over", "tls").await.unwrap();
    assert_eq!(w.str_get("over").await.unwrap(), "tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let etcd = EtcdServer::start().unwrap();
    let mut admin = etcd_client::Client::connect([etcd.client_url.clone()], None)
        .await
        .unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let mut cfg = EtcdConfig::new(vec![etcd.client_url.clone()]);
    cfg.retries = 1;
    let err = Etcd::connect(cfg.clone())
        .await
        .err()
        .expect("anonymous refused");
    assert!(err.to_string().contains(&etcd.client_url), "{err}");
    cfg.user = Some(("root".into(), "wrong".into()));
    assert!(
        Etcd::connect(cfg.clone()).await.is_err(),
        "wrong password refused"
    );
    cfg.user = Some(("root".into(), "s3cret".into()));
    let mut wc = WorldConfig::etcd(vec![], "h1");
    wc.backend = tend_world::Backend::Etcd(cfg);
    let w = World::connect(wc).await.unwrap();
    w.str_set("who", "root").await.unwrap();
    assert_eq!(w.str_get("who").await.unwrap(), "root");
}
