//! World benchmark: `cargo run --release -p tend-world --example bench [-- --quick]`.
//!
//! Starts a real etcd on loopback (the test kit's) and measures: the raw etcd put-to-watch
//! floor; export-to-collect propagation between two hosts' Worlds (without and with etcd's
//! RBAC, `tend cluster auth`); `res_collect` over 10,000
//! exports; a 200-file bundle's upload (store + deploy) and fetch; the embedded store's write
//! and watch latency and its export-to-collect propagation. Prints a Markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tend_testkit::EtcdServer;
use tend_world::store::embedded::Embedded;
use tend_world::store::etcd::{Etcd, EtcdConfig};
use tend_world::store::{KeyRange, Op, Store, Txn, WatchMsg};
use tend_world::{
    DeployWorld, Export, ExportFilter, FsWorld, NewDeploy, ResWorld, World, WorldConfig,
};

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, samples: Vec<Duration>) {
    let n = samples.len();
    println!(
        "| {what} | {n} | {} | {} |",
        ms(pct(samples.clone(), 0.5)),
        ms(pct(samples, 0.99))
    );
}

async fn put_to_watch(store: Arc<dyn Store>, watcher: Arc<dyn Store>, n: usize) -> Vec<Duration> {
    let mut w = watcher
        .watch(KeyRange::prefix("/bench/raw/"), 0)
        .await
        .unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        store
            .txn(Txn::ops(vec![Op::put(
                format!("/bench/raw/{}", i % 16),
                i.to_le_bytes().to_vec(),
            )]))
            .await
            .unwrap();
        match w.next().await.unwrap() {
            WatchMsg::Events(_) | WatchMsg::Resync { .. } => out.push(t.elapsed()),
        }
    }
    out
}

fn exp(kind: &str, name: String, data: Vec<u8>) -> Export {
    Export {
        kind: kind.into(),
        name,
        from: String::new(),
        to: "*".into(),
        data,
    }
}

async fn propagation(h1: &World, h2: &World, n: usize) -> Vec<Duration> {
    let mut watch = h2.res_watch(Some("prop"));
    watch.next().await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("r{}", i % 32);
        let data = (i as u64).to_le_bytes().to_vec();
        let filter = [ExportFilter {
            kind: "prop".into(),
            name: name.clone(),
            from: "h1".into(),
        }];
        let t = Instant::now();
        h1.res_export(vec![exp("prop", name, data.clone())])
            .await
            .unwrap();
        loop {
            watch.next().await;
            let got = h2.res_collect(&filter).await.unwrap();
            if got.first().is_some_and(|e| e.data == data) {
                break;
            }
        }
        out.push(t.elapsed());
    }
    out
}

async fn bundle_bench(ctl: &World, host: &World, dir: &std::path::Path, reps: usize) {
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut parent = None;
    for rep in 0..reps {
        let src = dir.join(format!("bundle-{rep}"));
        for f in 0..200 {
            let p = src.join(format!("d{}/f{f}.mcl", f % 10));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let body: String = (0..100)
                .map(|l| format!("# rep {rep} file {f} line {l} ........\n"))
                .collect();
            std::fs::write(p, body).unwrap();
        }
        let t = Instant::now();
        let hash = ctl.fs_put_tree(&src).await.unwrap();
        let d = ctl
            .add_deploy(NewDeploy {
                bundle: hash.clone(),
                message: format!("rep {rep}"),
                author: "bench".into(),
                parent,
                force: false,
                signature: None,
                target: None,
            })
            .await
            .unwrap();
        up.push(t.elapsed());
        parent = Some(d.id);
        let t = Instant::now();
        host.fs_get_tree(&hash, &dir.join(format!("out-{rep}")))
            .await
            .unwrap();
        down.push(t.elapsed());
    }
    row("deploy 200-file bundle (~800 KiB): upload + add_deploy", up);
    row("deploy 200-file bundle: fetch to a directory", down);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100 } else { 1000 };
    let etcd = EtcdServer::start().expect("start etcd");
    let cfg = EtcdConfig::new(vec![etcd.client_url.clone()]);
    let s1: Arc<dyn Store> = Arc::new(Etcd::connect(cfg.clone()).await.unwrap());
    let s2: Arc<dyn Store> = Arc::new(Etcd::connect(cfg.clone()).await.unwrap());
    println!("| measurement | samples | p50 | p99 |");
    println!("|---|---|---|---|");
    row(
        "etcd: raw put-to-watch floor (two clients)",
        put_to_watch(s1.clone(), s2.clone(), n).await,
    );
    let wc = |h: &str| WorldConfig::etcd(vec![etcd.client_url.clone()], h);
    let h1 = World::with_store(s1.clone(), wc("h1")).await.unwrap();
    let h2 = World::with_store(s2.clone(), wc("h2")).await.unwrap();
    row(
        "etcd: export-to-collect, h1 -> h2",
        propagation(&h1, &h2, n).await,
    );
    {
        // The same between hosts isolated by etcd's RBAC (`tend cluster auth`): every
        // request is authenticated and checked against the host's role, and each host's
        // cache watches the three ranges its role may read.
        let secured = EtcdServer::start().expect("start etcd");
        let admin = Etcd::connect(EtcdConfig::new(vec![secured.client_url.clone()]))
            .await
            .unwrap();
        let made = tend_world::auth::init(&admin, "/tend").await.unwrap();
        let mut root = EtcdConfig::new(vec![secured.client_url.clone()]);
        root.user = Some((made.root.user.clone(), made.root.password.clone()));
        let root = Etcd::connect(root).await.unwrap();
        let mut worlds = Vec::new();
        for h in ["h1", "h2"] {
            let c = tend_world::auth::add_host(&root, "/tend", h).await.unwrap();
            let mut cfg = EtcdConfig::new(vec![secured.client_url.clone()]);
            cfg.user = Some((c.user, c.password));
            let store: Arc<dyn Store> = Arc::new(Etcd::connect(cfg).await.unwrap());
            let wc = WorldConfig::etcd(vec![secured.client_url.clone()], h);
            worlds.push(World::with_store(store, wc).await.unwrap());
        }
        row(
            "etcd with RBAC (a user per host): export-to-collect, h1 -> h2",
            propagation(&worlds[0], &worlds[1], n).await,
        );
    }

    // res_collect over 10,000 exports.
    let many: Vec<Export> = (0..10_000)
        .map(|i| exp("many", format!("/etc/file-{i:05}"), vec![b'x'; 64]))
        .collect();
    let t = Instant::now();
    h1.res_export(many).await.unwrap();
    let export_all = t.elapsed();
    loop {
        if h2
            .res_collect(&[ExportFilter {
                kind: "many".into(),
                ..Default::default()
            }])
            .await
            .unwrap()
            .len()
            == 10_000
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::new();
    let mut one = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let v = h2.res_collect(&[]).await.unwrap();
        all.push(t.elapsed());
        assert!(v.len() >= 10_000);
        let t = Instant::now();
        let v = h2
            .res_collect(&[ExportFilter {
                kind: "many".into(),
                name: format!("/etc/file-{i:05}"),
                from: String::new(),
            }])
            .await
            .unwrap();
        one.push(t.elapsed());
        assert_eq!(v.len(), 1);
    }
    row("etcd: res_collect, 10,000 exports, no filter", all);
    row("etcd: res_collect, 10,000 exports, kind+name filter", one);
    row(
        "etcd: res_export of 10,000 records (one call)",
        vec![export_all],
    );

    let dir = tempfile::tempdir().unwrap();
    let ctl = World::with_store(s1.clone(), wc("controller"))
        .await
        .unwrap();
    bundle_bench(&ctl, &h2, dir.path(), if quick { 2 } else { 5 }).await;

    // Embedded store.
    let edir = tempfile::tempdir().unwrap();
    let emb: Arc<dyn Store> = Arc::new(Embedded::open(edir.path()).unwrap());
    let mut writes = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        emb.txn(Txn::ops(vec![Op::put(
            format!("/bench/w/{}", i % 16),
            vec![0; 64],
        )]))
        .await
        .unwrap();
        writes.push(t.elapsed());
    }
    row("embedded: write (fdatasync'ed, acknowledged)", writes);
    row(
        "embedded: put-to-watch",
        put_to_watch(emb.clone(), emb.clone(), n).await,
    );
    let ec = |h: &str| WorldConfig::embedded(edir.path(), h);
    let e1 = World::with_store(emb.clone(), ec("h1")).await.unwrap();
    let e2 = World::with_store(emb.clone(), ec("h2")).await.unwrap();
    row(
        "embedded: export-to-collect, h1 -> h2 (one process)",
        propagation(&e1, &e2, n).await,
    );
    let ectl = World::with_store(emb.clone(), ec("controller"))
        .await
        .unwrap();
    bundle_bench(
        &ectl,
        &e2,
        dir.path().join("emb").as_path(),
        if quick { 2 } else { 5 },
    )
    .await;
}
