//! The conformance suite: written once, run against both backends. It decides what "the
//! same behaviour" means for the World.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tend_world::store::{KeyRange, WatchMsg};
use tend_world::{
    DeploySignature, DeployWorld, Export, ExportFilter, ExportKey, FsWorld, HostWorld, NewDeploy,
    ResWorld, SchedOpts, SchedWorld, StrWorld, WorldError,
};

use crate::support::{eventually, next_change, Fixture, Kind};

fn export(kind: &str, name: &str, to: &str, data: &str) -> Export {
    Export {
        kind: kind.into(),
        name: name.into(),
        from: String::new(),
        to: to.into(),
        data: data.as_bytes().to_vec(),
    }
}

fn names(v: &[Export]) -> Vec<String> {
    v.iter()
        .map(|e| format!("{}:{}:{}->{}", e.kind, e.name, e.from, e.to))
        .collect()
}

on_both_backends!(
    export_is_idempotent_without_watch_event,
    collect_sees_only_exports_to_me_or_everyone,
    filters_are_ored_and_empty_matches_any,
    watch_by_kind_fires_only_for_that_kind,
    delete_reports_and_removes,
    strings_and_string_maps_never_collide,
    deploy_cas_conflict_and_force,
    retention_keeps_last_k_and_collects_files,
    files_are_chunked_and_deduplicated,
    hosts_register_and_leave,
    a_restarted_host_has_a_new_instance,
    a_registration_without_an_instance_still_lists,
    exports_expire_with_the_session,
    a_host_that_lost_its_session_re_exports,
    slow_subscribers_get_the_latest_state,
    unknown_format_version_is_a_clear_error,
    schedule_picks_max_live_members_and_replaces_a_dead_one,
    schedule_join_is_idempotent_and_withdraw_hands_over,
    a_scheduled_host_whose_lease_expired_rejoins_with_a_new_one,
    string_maps_of_the_old_layout_are_moved_and_still_read,
);

async fn export_is_idempotent_without_watch_event(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let store = fx.store().await;
    assert!(h1
        .res_export(vec![export("file", "/etc/a", "*", "v1")])
        .await
        .unwrap());
    let key = h1.keys().export("*", "file", "h1", "/etc/a");
    let before = store.get(&key).await.unwrap().unwrap();
    let mut raw = store
        .watch(
            KeyRange::prefix(h1.keys().exports_area()),
            before.mod_revision + 1,
        )
        .await
        .unwrap();
    // Same record again: unchanged, no new revision, no event.
    assert!(!h1
        .res_export(vec![export("file", "/etc/a", "*", "v1")])
        .await
        .unwrap());
    let after = store.get(&key).await.unwrap().unwrap();
    assert_eq!(before, after);
    // The first event the watch sees is the next real change, not the idempotent write.
    assert!(h1
        .res_export(vec![export("file", "/etc/b", "*", "x")])
        .await
        .unwrap());
    let msg = tokio::time::timeout(Duration::from_secs(10), raw.next())
        .await
        .unwrap()
        .unwrap();
    match msg {
        WatchMsg::Events(evs) => {
            assert_eq!(evs.len(), 1, "{evs:?}");
            assert_eq!(evs[0].key(), h1.keys().export("*", "file", "h1", "/etc/b"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // A changed payload is a change.
    assert!(h1
        .res_export(vec![export("file", "/etc/a", "*", "v2")])
        .await
        .unwrap());
}

async fn collect_sees_only_exports_to_me_or_everyone(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    h1.res_export(vec![
        export("file", "to-h2", "h2", "a"),
        export("file", "to-all", "*", "b"),
        export("file", "to-h3", "h3", "c"),
    ])
    .await
    .unwrap();
    let got = eventually(Duration::from_secs(10), "h2 to see 2 exports", || async {
        let v = h2.res_collect(&[]).await.unwrap();
        (v.len() >= 2).then_some(v)
    })
    .await;
    assert_eq!(
        names(&got),
        vec!["file:to-all:h1->*", "file:to-h2:h1->h2"],
        "h2 sees what is addressed to it or to *"
    );
    assert_eq!(got[1].data, b"a");
    // h1 collects its own `*` export (read-your-writes) but not those addressed to others.
    assert_eq!(
        names(&h1.res_collect(&[]).await.unwrap()),
        vec!["file:to-all:h1->*"]
    );
}

async fn filters_are_ored_and_empty_matches_any(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h3 = fx.world("h3").await;
    let h2 = fx.world("h2").await;
    h1.res_export(vec![
        export("file", "a", "*", ""),
        export("pkg", "nginx", "*", ""),
    ])
    .await
    .unwrap();
    h3.res_export(vec![
        export("file", "b", "h2", ""),
        export("svc", "a", "*", ""),
    ])
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "4 exports at h2", || async {
        (h2.res_collect(&[]).await.unwrap().len() == 4).then_some(())
    })
    .await;
    let f = |kind: &str, name: &str, from: &str| ExportFilter {
        kind: kind.into(),
        name: name.into(),
        from: from.into(),
    };
    let c = |filters: Vec<ExportFilter>| {
        let h2 = h2.clone();
        async move { names(&h2.res_collect(&filters).await.unwrap()) }
    };
    assert_eq!(
        c(vec![f("file", "", "")]).await,
        vec!["file:a:h1->*", "file:b:h3->h2"]
    );
    assert_eq!(
        c(vec![f("", "a", "")]).await,
        vec!["file:a:h1->*", "svc:a:h3->*"]
    );
    assert_eq!(
        c(vec![f("", "", "h3")]).await,
        vec!["file:b:h3->h2", "svc:a:h3->*"]
    );
    assert_eq!(c(vec![f("file", "", "h3")]).await, vec!["file:b:h3->h2"]);
    assert_eq!(
        c(vec![f("pkg", "", ""), f("", "", "h3")]).await,
        vec!["file:b:h3->h2", "pkg:nginx:h1->*", "svc:a:h3->*"]
    );
    assert_eq!(
        c(vec![f("", "", "")]).await.len(),
        4,
        "an empty filter matches anything"
    );
    assert!(c(vec![f("exec", "", "")]).await.is_empty());
}

async fn watch_by_kind_fires_only_for_that_kind(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    let mut files = h2.res_watch(Some("file"));
    let mut pkgs = h2.res_watch(Some("pkg"));
    let mut any = h2.res_watch(None);
    next_change(&mut files, "initial file").await;
    next_change(&mut pkgs, "initial pkg").await;
    next_change(&mut any, "initial any").await;
    h1.res_export(vec![export("file", "a", "*", "1")])
        .await
        .unwrap();
    next_change(&mut files, "file export").await;
    next_change(&mut any, "file export (any)").await;
    h1.res_export(vec![export("pkg", "a", "h2", "1")])
        .await
        .unwrap();
    next_change(&mut pkgs, "pkg export").await;
    next_change(&mut any, "pkg export (any)").await;
    // The pkg change was fanned out after the file one: the file watch has nothing pending.
    assert!(
        files.next().now_or_never().is_none(),
        "file watch fired for a pkg export"
    );
    // Exports to another host do not concern h2.
    h1.res_export(vec![export("file", "b", "h9", "1")])
        .await
        .unwrap();
    h1.res_export(vec![export("pkg", "b", "*", "1")])
        .await
        .unwrap();
    next_change(&mut pkgs, "second pkg export").await;
    assert!(
        files.next().now_or_never().is_none(),
        "file watch fired for an export to h9"
    );
}

async fn delete_reports_and_removes(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    h1.res_export(vec![export("file", "a", "*", "1")])
        .await
        .unwrap();
    let key = ExportKey {
        kind: "file".into(),
        name: "a".into(),
        to: "*".into(),
    };
    assert!(h1.res_delete(vec![key.clone()]).await.unwrap());
    assert!(
        !h1.res_delete(vec![key]).await.unwrap(),
        "nothing left to delete"
    );
    assert!(h1.res_collect(&[]).await.unwrap().is_empty());
    eventually(
        Duration::from_secs(10),
        "h2 to see the deletion",
        || async { h2.res_collect(&[]).await.unwrap().is_empty().then_some(()) },
    )
    .await;
}

async fn strings_and_string_maps_never_collide(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    match h1.str_get("k").await {
        Err(WorldError::NotFound { key }) => assert_eq!(key, "strings/k"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let mut w = h2.str_watch("k");
    next_change(&mut w, "initial").await;
    h1.str_set("k", "global").await.unwrap();
    h1.strmap_set("k", "one").await.unwrap();
    h2.strmap_set("k", "two").await.unwrap();
    next_change(&mut w, "str set").await;
    assert_eq!(h2.str_get("k").await.unwrap(), "global");
    let want: BTreeMap<String, String> = [
        ("h1".to_string(), "one".to_string()),
        ("h2".to_string(), "two".to_string()),
    ]
    .into();
    eventually(Duration::from_secs(10), "both map entries", || async {
        (h1.strmap_get("k").await.unwrap() == want).then_some(())
    })
    .await;
    h1.str_del("k").await.unwrap();
    assert!(matches!(
        h1.str_get("k").await,
        Err(WorldError::NotFound { .. })
    ));
    assert!(matches!(
        h1.str_del("k").await,
        Err(WorldError::NotFound { .. })
    ));
    assert_eq!(
        h1.strmap_get("k").await.unwrap(),
        want,
        "the map is untouched"
    );
    h2.strmap_del("k").await.unwrap();
    eventually(Duration::from_secs(10), "h2's entry gone", || async {
        (h1.strmap_get("k").await.unwrap().len() == 1).then_some(())
    })
    .await;
    // Keys with slashes stay separate keys.
    h1.str_set("a/b", "x").await.unwrap();
    assert!(matches!(
        h1.str_get("a").await,
        Err(WorldError::NotFound { .. })
    ));
    assert_eq!(h1.str_get("a/b").await.unwrap(), "x");
}

async fn bundle(fx: &Fixture, w: &tend_world::World, content: &str) -> String {
    let dir = fx
        .dir
        .path()
        .join(format!("bundle-{}", blake3::hash(content.as_bytes())));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.mcl"), content).unwrap();
    w.fs_put_tree(&dir).await.unwrap()
}

async fn deploy_cas_conflict_and_force(fx: Fixture) {
    let ctl = fx.world("controller").await;
    let host = fx.world("h1").await;
    let mut deploys = host.watch_deploys();
    let b1 = bundle(&fx, &ctl, "one").await;
    let b2 = bundle(&fx, &ctl, "two").await;
    let nd = |bundle: &str, parent: Option<u64>, force: bool| NewDeploy {
        bundle: bundle.into(),
        message: "msg".into(),
        author: "ci".into(),
        parent,
        force,
        signature: None,
        target: None,
    };
    let d1 = ctl.add_deploy(nd(&b1, None, false)).await.unwrap();
    assert_eq!((d1.id, d1.parent.clone()), (1, None));
    let seen = tokio::time::timeout(Duration::from_secs(10), deploys.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, d1);
    // A second controller that believes there is no deploy yet is refused, and told why.
    let err = ctl.add_deploy(nd(&b2, None, false)).await.unwrap_err();
    assert!(
        matches!(
            err,
            WorldError::DeployConflict {
                expected: None,
                latest: Some(1)
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("latest is #1"), "{err}");
    let d2 = ctl.add_deploy(nd(&b2, None, true)).await.unwrap();
    assert_eq!(d2.id, 2);
    assert_eq!(d2.parent.as_deref(), Some(d1.hash.as_str()));
    let d3 = ctl.add_deploy(nd(&b1, Some(2), false)).await.unwrap();
    assert_eq!(d3.id, 3);
    let last = loop {
        let d = tokio::time::timeout(Duration::from_secs(10), deploys.next())
            .await
            .expect("the watch to reach deploy 3")
            .unwrap();
        if d.id == 3 {
            break d;
        }
    };
    assert_eq!(last, d3);
    assert_eq!(host.latest_deploy().await.unwrap(), Some(d3.clone()));
    assert_eq!(host.get_deploy(2).await.unwrap(), d2);
    assert_eq!(
        host.list_deploys()
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // A bundle that was never uploaded is refused.
    let missing = "0".repeat(64);
    assert!(matches!(
        ctl.add_deploy(nd(&missing, Some(3), false)).await,
        Err(WorldError::FileNotFound { .. })
    ));
    // A signature is stored as given; a signed deploy is never forced past another one (its
    // signature names the id it was made for).
    let sig = DeploySignature {
        key: vec![7; 32],
        signature: vec![9; 64],
    };
    let signed = |parent, force| NewDeploy {
        signature: Some(sig.clone()),
        target: None,
        ..nd(&b2, parent, force)
    };
    let err = ctl.add_deploy(signed(Some(2), true)).await.unwrap_err();
    assert!(
        matches!(
            err,
            WorldError::DeployConflict {
                latest: Some(3),
                ..
            }
        ),
        "{err:?}"
    );
    let d4 = ctl.add_deploy(signed(Some(3), false)).await.unwrap();
    assert_eq!((d4.id, d4.signature.as_ref()), (4, Some(&sig)));
    let seen = loop {
        let d = tokio::time::timeout(Duration::from_secs(10), deploys.next())
            .await
            .expect("the watch to reach deploy 4")
            .unwrap();
        if d.id == 4 {
            break d;
        }
    };
    assert_eq!(seen, d4);
    assert_eq!(host.get_deploy(4).await.unwrap().signature, Some(sig));
    assert_eq!(host.get_deploy(3).await.unwrap().signature, None);
}

async fn retention_keeps_last_k_and_collects_files(fx: Fixture) {
    let mut cfg = fx.config("controller");
    cfg.deploy_retention = 3;
    cfg.file_gc_grace = Duration::ZERO;
    let ctl = fx.world_with(cfg).await;
    let mut bundles = Vec::new();
    for i in 1..=5u64 {
        let b = bundle(&fx, &ctl, &format!("program {i}")).await;
        bundles.push(b.clone());
        ctl.add_deploy(NewDeploy {
            bundle: b,
            parent: (i > 1).then_some(i - 1),
            ..NewDeploy::default()
        })
        .await
        .unwrap();
    }
    let t = Instant::now();
    let ids: Vec<u64> = ctl
        .list_deploys()
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a read waited for a revision the watch cache never sees"
    );
    assert_eq!(ids, vec![3, 4, 5]);
    assert!(matches!(
        ctl.get_deploy(1).await,
        Err(WorldError::DeployNotFound(1))
    ));
    assert!(matches!(
        ctl.fs_tree(&bundles[0]).await,
        Err(WorldError::FileNotFound { .. })
    ));
    assert!(matches!(
        ctl.fs_read(&bundles[1], "main.mcl").await,
        Err(WorldError::FileNotFound { .. })
    ));
    assert_eq!(
        ctl.fs_read(&bundles[4], "main.mcl").await.unwrap(),
        b"program 5"
    );
    assert_eq!(
        ctl.fs_read(&bundles[2], "main.mcl").await.unwrap(),
        b"program 3"
    );
}

async fn files_are_chunked_and_deduplicated(fx: Fixture) {
    let w = fx.world("h1").await;
    let src = fx.dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub/empty")).unwrap();
    // 3 MiB of non-repeating bytes.
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while big.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/copy.bin"), &big).unwrap();
    std::fs::write(src.join("sub/small.txt"), "hello").unwrap();
    let hash = w.fs_put_tree(&src).await.unwrap();
    let store = fx.store().await;
    let big_hash = blake3::hash(&big).to_hex().to_string();
    let chunks = store
        .range(KeyRange::prefix(w.keys().blob_data(&big_hash)))
        .await
        .unwrap();
    assert_eq!(chunks.kvs.len(), 6, "3 MiB in 512 KiB chunks");
    assert!(chunks.kvs.iter().all(|kv| kv.value.len() < 1024 * 1024));
    let metas = store
        .range(KeyRange::prefix(w.keys().area("blobs") + "meta/"))
        .await
        .unwrap();
    assert_eq!(metas.kvs.len(), 3, "big (once), small, and the manifest");
    // Storing the same tree again stores nothing new.
    let rev = store.range(KeyRange::prefix("/x")).await.unwrap().revision;
    assert_eq!(w.fs_put_tree(&src).await.unwrap(), hash);
    assert_eq!(
        store.range(KeyRange::prefix("/x")).await.unwrap().revision,
        rev
    );
    let dest = fx.dir.path().join("out");
    w.fs_get_tree(&hash, &dest).await.unwrap();
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(dest.join("sub/copy.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/small.txt")).unwrap(),
        "hello"
    );
    assert!(dest.join("sub/empty").is_dir());
    assert_eq!(w.fs_read(&hash, "sub/small.txt").await.unwrap(), b"hello");
    assert!(matches!(
        w.fs_read(&hash, "nope").await,
        Err(WorldError::PathNotFound { .. })
    ));
}

async fn hosts_register_and_leave(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    let status = h1.status();
    assert!(status.session_ok, "{status:?}");
    assert_eq!(status.hostname, "h1");
    let backend = if fx.kind == Kind::Etcd {
        "etcd "
    } else {
        "embedded "
    };
    assert!(status.backend.starts_with(backend), "{status:?}");
    let mut watch = h1.hosts_watch();
    next_change(&mut watch, "initial").await;
    // h2 registered itself; h1's cache learns it through its watch.
    let hosts = eventually(Duration::from_secs(10), "both hosts", || async {
        let hosts = h1.hosts().await.unwrap();
        (hosts.len() == 2).then_some(hosts)
    })
    .await;
    assert_eq!(
        hosts
            .iter()
            .map(|h| h.hostname.as_str())
            .collect::<Vec<_>>(),
        vec!["h1", "h2"]
    );
    assert!(hosts.iter().all(|h| !h.converged && h.deploy.is_none()));
    h2.host_update(&tend_world::HostStatus {
        deploy: Some(7),
        converged: true,
        ..Default::default()
    })
    .await
    .unwrap();
    next_change(&mut watch, "h2 converged").await;
    let h2info = eventually(Duration::from_secs(10), "h2 converged", || async {
        h1.hosts()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.hostname == "h2" && h.converged)
    })
    .await;
    assert_eq!(h2info.deploy, Some(7));
    h2.close().await.unwrap();
    eventually(Duration::from_secs(10), "h2 to leave", || async {
        (h1.hosts().await.unwrap().len() == 1).then_some(())
    })
    .await;
}

/// Whether `s` looks like a hyphenated UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn a_restarted_host_has_a_new_instance(fx: Fixture) {
    let h2 = fx.world("h2").await;
    let first = fx.world("h1").await;
    let instance_of = |hosts: Vec<tend_world::HostInfo>| {
        hosts
            .into_iter()
            .find(|h| h.hostname == "h1")
            .map(|h| h.instance)
    };
    let before = instance_of(first.hosts().await.unwrap()).expect("h1 registered");
    assert!(is_uuid(&before), "{before:?}");
    let store = fx.store().await;
    let first_lease = store
        .get(&first.keys().host("h1"))
        .await
        .unwrap()
        .unwrap()
        .lease;
    // The process dies without leaving (its session outlives it for the TTL), and the host
    // comes back: the new life's registration replaces the old one at once.
    drop(first);
    let second = fx.world("h1").await;
    let after = instance_of(second.hosts().await.unwrap()).expect("h1 registered");
    assert!(is_uuid(&after), "{after:?}");
    assert_ne!(before, after, "a restarted host gets a new instance");
    let listed: Vec<_> = second
        .hosts()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.hostname == "h1")
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Other hosts see the current life too.
    eventually(
        Duration::from_secs(10),
        "h2 to see h1's new life",
        || async {
            (instance_of(h2.hosts().await.unwrap()).as_deref() == Some(after.as_str()))
                .then_some(())
        },
    )
    .await;
    // The instance is the World's, not the session's: a re-registration keeps it.
    second
        .host_update(&tend_world::HostStatus {
            deploy: Some(1),
            converged: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        instance_of(second.hosts().await.unwrap()).as_deref(),
        Some(after.as_str())
    );
    // When the first life's session ends, the current registration stays.
    store.lease_revoke(first_lease).await.unwrap();
    second.str_set("sync", "1").await.unwrap(); // the cache has seen the revocation's effects
    assert_eq!(
        instance_of(second.hosts().await.unwrap()).as_deref(),
        Some(after.as_str())
    );
}

async fn a_registration_without_an_instance_still_lists(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let store = fx.store().await;
    // A registration as a tend from before the instance id wrote it: format version 1, then
    // postcard of (version "0.1.0", started_ms 1000, deploy Some(3), converged true,
    // error None, updated_ms 2000).
    let mut old = vec![1, 5];
    old.extend(b"0.1.0");
    old.extend([0xe8, 0x07, 1, 3, 1, 0, 0xd0, 0x0f]);
    store
        .txn(tend_world::store::Txn::ops(vec![
            tend_world::store::Op::put(h1.keys().host("old"), old),
        ]))
        .await
        .unwrap();
    let host = eventually(Duration::from_secs(10), "the old registration", || async {
        h1.hosts()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.hostname == "old")
    })
    .await;
    assert_eq!(
        host,
        tend_world::HostInfo {
            hostname: "old".into(),
            version: "0.1.0".into(),
            started_ms: 1000,
            deploy: Some(3),
            converged: true,
            error: None,
            updated_ms: 2000,
            instance: String::new(),
            failed: 0,
            blocked: 0,
            first_failure: None,
            converged_ms: 0,
            labels: Default::default(),
        }
    );
}

async fn exports_expire_with_the_session(fx: Fixture) {
    let h1 = fx.world("h1").await; // session TTL 2 s
    let h2 = fx.world("h2").await;
    h1.res_export(vec![export("file", "a", "*", "1")])
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "h2 to see the export", || async {
        (h2.res_collect(&[]).await.unwrap().len() == 1).then_some(())
    })
    .await;
    // h1 disappears without saying goodbye (its keepalive stops with it).
    drop(h1);
    let gone_at = Instant::now();
    eventually(Duration::from_secs(10), "the export to expire", || async {
        h2.res_collect(&[]).await.unwrap().is_empty().then_some(())
    })
    .await;
    let took = gone_at.elapsed();
    assert!(
        took <= Duration::from_secs(3),
        "{:?}: export outlived TTL + 1 s: {took:?}",
        fx.kind
    );
    assert!(h2.hosts().await.unwrap().iter().all(|h| h.hostname != "h1"));
}

async fn a_host_that_lost_its_session_re_exports(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    h1.res_export(vec![export("file", "a", "*", "1")])
        .await
        .unwrap();
    let store = fx.store().await;
    let host_key = h1.keys().host("h1");
    let lease = store.get(&host_key).await.unwrap().unwrap().lease;
    assert_ne!(lease, 0, "the registration is bound to the session");
    // The session is lost (as after a partition longer than the TTL): everything goes...
    store.lease_revoke(lease).await.unwrap();
    eventually(Duration::from_secs(10), "the export to go", || async {
        h2.res_collect(&[]).await.unwrap().is_empty().then_some(())
    })
    .await;
    // ...and comes back under a new session as soon as the host notices.
    let back = eventually(
        Duration::from_secs(10),
        "the export to come back",
        || async {
            let v = h2.res_collect(&[]).await.unwrap();
            (v.len() == 1).then_some(v)
        },
    )
    .await;
    assert_eq!(back[0].data, b"1");
    let kv = store.get(&host_key).await.unwrap().expect("re-registered");
    assert_ne!(kv.lease, lease);
    assert_ne!(kv.lease, 0);
}

async fn slow_subscribers_get_the_latest_state(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    let mut slow = h2.str_watch("counter");
    let mut fast = h2.str_watch("counter");
    next_change(&mut slow, "initial").await;
    next_change(&mut fast, "initial").await;
    for i in 0..200 {
        h1.str_set("counter", &i.to_string()).await.unwrap();
    }
    // The fast one keeps up (the store watch was never blocked by the slow one)...
    loop {
        next_change(&mut fast, "counter").await;
        if h2.str_get("counter").await.unwrap() == "199" {
            break;
        }
    }
    // ...and the slow one gets one coalesced change, then reads the latest value.
    next_change(&mut slow, "coalesced").await;
    assert!(
        slow.next().now_or_never().is_none(),
        "changes were coalesced"
    );
    assert_eq!(h2.str_get("counter").await.unwrap(), "199");
}

async fn unknown_format_version_is_a_clear_error(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let store = fx.store().await;
    let key = h1.keys().string("future");
    store
        .txn(tend_world::store::Txn::ops(vec![
            tend_world::store::Op::put(key.clone(), vec![42, 1, 2, 3]),
        ]))
        .await
        .unwrap();
    let err = eventually(
        Duration::from_secs(10),
        "the value in the cache",
        || async {
            match h1.str_get("future").await {
                Err(WorldError::NotFound { .. }) => None,
                other => Some(other),
            }
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, WorldError::UnknownVersion { version: 42, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{key}: unknown value format version 42")),
        "{err}"
    );
    // A bad host name is refused with the name in the message.
    let mut cfg = fx.config("a/b");
    cfg.hostname = "a/b".into();
    let err = tend_world::World::with_store(store, cfg)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("\"a/b\""), "{err}");
}

fn sched_opts(max: u32, ttl: u32) -> SchedOpts {
    SchedOpts {
        max,
        ttl,
        ..Default::default()
    }
}

/// Waits until every world answers the same choice of `n` hosts, and returns it.
async fn agreed_choice(worlds: &[&tend_world::World], ns: &str, n: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(15),
        "the hosts to agree on a choice",
        || async {
            let first = worlds[0].scheduled(ns).await.unwrap();
            if first.len() != n {
                return None;
            }
            for w in &worlds[1..] {
                if w.scheduled(ns).await.unwrap() != first {
                    return None;
                }
            }
            Some(first)
        },
    )
    .await
}

async fn schedule_picks_max_live_members_and_replaces_a_dead_one(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    let h3 = fx.world("h3").await;
    // A host that only reads the choice (never joins) sees it too.
    let reader = fx.world("reader").await;
    for w in [&h1, &h2, &h3] {
        assert!(w
            .sched_join("web", &sched_opts(2, 2), "t", true)
            .await
            .unwrap());
    }
    let chosen = agreed_choice(&[&h1, &h2, &h3, &reader], "web", 2).await;
    assert!(chosen
        .iter()
        .all(|h| ["h1", "h2", "h3"].contains(&h.as_str())));
    // A chosen host dies without a word (no withdraw, no revoke): it is replaced within
    // the pool's TTL (2 s) plus the time to notice.
    let (victim, others): (Vec<_>, Vec<_>) = [h1, h2, h3]
        .into_iter()
        .partition(|w| w.hostname() == chosen[0]);
    drop(victim);
    let died = Instant::now();
    let survivors: Vec<String> = others.iter().map(|w| w.hostname().to_string()).collect();
    let refs: Vec<&tend_world::World> = others.iter().chain([&reader]).collect();
    let after = eventually(Duration::from_secs(15), "a replacement", || async {
        let mut all = Vec::new();
        for w in &refs {
            all.push(w.scheduled("web").await.unwrap());
        }
        (all.iter().all(|c| *c == survivors)).then_some(all[0].clone())
    })
    .await;
    let took = died.elapsed();
    eprintln!("{:?}: a dead scheduled host replaced in {took:?}", fx.kind);
    assert_eq!(after, survivors, "{:?}", fx.kind);
    assert!(
        took <= Duration::from_secs(5),
        "{:?}: the dead host was replaced after {took:?} (TTL 2 s)",
        fx.kind
    );
}

async fn schedule_join_is_idempotent_and_withdraw_hands_over(fx: Fixture) {
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    // A dry run says it would join, and changes nothing.
    assert!(h1
        .sched_join("db", &sched_opts(1, 0), "t", false)
        .await
        .unwrap());
    assert!(h2.scheduled("db").await.unwrap().is_empty());
    assert!(h1
        .sched_join("db", &sched_opts(1, 0), "t", true)
        .await
        .unwrap());
    assert!(!h1
        .sched_join("db", &sched_opts(1, 0), "t", true)
        .await
        .unwrap());
    assert_eq!(agreed_choice(&[&h1, &h2], "db", 1).await, vec!["h1"]);
    h2.sched_join("db", &sched_opts(1, 0), "t", true)
        .await
        .unwrap();
    // Round robin: the first member keeps its place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agreed_choice(&[&h1, &h2], "db", 1).await, vec!["h1"]);
    // h1 withdraws: h2 takes over at once (no TTL to wait for).
    assert!(!h2.sched_withdraw("nowhere", false).await.unwrap());
    assert!(h1.sched_withdraw("db", false).await.unwrap());
    assert!(h1.sched_withdraw("db", true).await.unwrap());
    let gone = Instant::now();
    assert_eq!(agreed_choice(&[&h1, &h2], "db", 1).await, vec!["h2"]);
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "{:?}",
        gone.elapsed()
    );
    assert!(!h1.sched_withdraw("db", true).await.unwrap());
    // Leaving (the resource left the graph) without a TTL or persist withdraws too.
    // Two holders: the membership stays until the last lets go.
    h2.sched_join("db", &sched_opts(1, 0), "u", true)
        .await
        .unwrap();
    h2.sched_leave("db", "t").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h1.scheduled("db").await.unwrap(), vec!["h2"]);
    h2.sched_leave("db", "u").await.unwrap();
    eventually(Duration::from_secs(5), "the pool to empty", || async {
        h1.scheduled("db").await.unwrap().is_empty().then_some(())
    })
    .await;
    // Bad options are refused with the value.
    let e = h1
        .sched_join(
            "db",
            &SchedOpts {
                strategy: "fifo".into(),
                ..Default::default()
            },
            "t",
            true,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("fifo"), "{e}");
}

async fn string_maps_of_the_old_layout_are_moved_and_still_read(fx: Fixture) {
    // Entries as an older tend wrote them (`strmap/<key>/<host>`), before any World joins.
    let store = fx.store().await;
    let keys = tend_world::keys::Keys::new("/tend");
    let legacy = |key: &str, host: &str| format!("{}{host}", keys.legacy_strmap(key));
    let v = |s: &str| tend_world::codec::encode(&s.to_string());
    store
        .txn(tend_world::store::Txn::ops(vec![
            tend_world::store::Op::put(legacy("web", "h1"), v("old-h1")),
            tend_world::store::Op::put(legacy("web", "h9"), v("old-h9")),
        ]))
        .await
        .unwrap();
    // h1 (a new tend) moves its own entry when it joins; h9's, whose host has not been
    // upgraded, stays where it is and is still read.
    let h1 = fx.world("h1").await;
    let h2 = fx.world("h2").await;
    let want: BTreeMap<String, String> = [("h1", "old-h1"), ("h9", "old-h9")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(h2.strmap_get("web").await.unwrap(), want);
    assert!(store.get(&legacy("web", "h1")).await.unwrap().is_none());
    assert!(store
        .get(&keys.strmap_entry("web", "h1"))
        .await
        .unwrap()
        .is_some());
    assert!(store.get(&legacy("web", "h9")).await.unwrap().is_some());
    // A write of the new layout wins over the old entry.
    h1.strmap_set("web", "new-h1").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "h2 to see the new value",
        || async {
            (h2.strmap_get("web")
                .await
                .unwrap()
                .get("h1")
                .map(String::as_str)
                == Some("new-h1"))
            .then_some(())
        },
    )
    .await;
}

async fn a_scheduled_host_whose_lease_expired_rejoins_with_a_new_one(fx: Fixture) {
    let h1 = fx.world("h1").await;
    h1.sched_join("pool", &sched_opts(1, 2), "t", true)
        .await
        .unwrap();
    let store = fx.store().await;
    let key = h1.keys().sched_member("pool", "h1");
    let first = eventually(Duration::from_secs(5), "the member key", || async {
        store.get(&key).await.unwrap()
    })
    .await;
    assert_ne!(first.lease, 0);
    // The lease is lost (as after a partition longer than the TTL): the member comes back,
    // bound to a new lease, so it still expires if its host dies.
    store.lease_revoke(first.lease).await.unwrap();
    let again = eventually(Duration::from_secs(10), "the member back", || async {
        store
            .get(&key)
            .await
            .unwrap()
            .filter(|kv| kv.lease != first.lease)
    })
    .await;
    assert_ne!(again.lease, 0, "{:?}: rejoined without a lease", fx.kind);
    drop(h1);
    eventually(Duration::from_secs(10), "the member to expire", || async {
        store.get(&key).await.unwrap().is_none().then_some(())
    })
    .await;
}
