//! A micro-benchmark of the `file` kind without the engine: converge N files with P
//! concurrent checks, check them again when in state, and measure watch -> repair latency.
//!
//! `cargo run --release -p tend-resources --example file_bench -- [N] [P] [DRIFTS]`
//! (defaults: 10000 files, 16 concurrent checks, 200 drifts), in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tend_engine::{CheckCtx, Checked, Resource, Watcher};
use tend_model::ResSpec;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn converge(rs: &[Arc<dyn Resource>], par: usize) -> (Duration, usize) {
    let t = Instant::now();
    let changed = futures::stream::iter(rs.iter().map(|r| async move {
        r.check_apply(CheckCtx {
            apply: true,
            refresh: false,
        })
        .await
        .expect("check_apply")
    }))
    .buffer_unordered(par)
    .filter(|c| futures::future::ready(*c == Checked::Changed))
    .count()
    .await;
    (t.elapsed(), changed)
}

#[tokio::main]
async fn main() {
    let n = arg(1, 10_000);
    let par = arg(2, 16);
    let drifts = arg(3, 200);
    let dir = tempfile::tempdir().expect("temporary directory");
    let reg = tend_resources::registry();
    let kind = reg.get("file").expect("file kind");
    let rs: Vec<Arc<dyn Resource>> = (0..n)
        .map(|i| {
            let spec = ResSpec::new("file", dir.path().join(format!("f{i}")).to_str().unwrap())
                .param("content", format!("hello {i}\n"))
                .param("mode", "0644");
            Arc::from((kind.build)(&spec).expect("valid spec"))
        })
        .collect();
    let (t, c) = converge(&rs, par).await;
    println!("first converge: {n} files, {c} changed, {t:?} ({par} concurrent)");
    let (t, c) = converge(&rs, par).await;
    println!("in state:       {n} files, {c} changed, {t:?}");

    let mut watches = Vec::new();
    let t = Instant::now();
    let mut rxs = Vec::new();
    for r in &rs {
        let (w, rx) = Watcher::channel();
        let r2 = r.clone();
        watches.push(tokio::spawn(async move { r2.watch(w).await }));
        rxs.push(rx);
    }
    for rx in &rxs {
        while !rx.take().running {
            rx.next().await;
        }
    }
    println!("watches armed:  {:?}", t.elapsed());

    let mut lat = Vec::new();
    for k in 0..drifts {
        let i = (k * 7919) % n;
        let p = dir.path().join(format!("f{i}"));
        let _ = rxs[i].take();
        let t = Instant::now();
        if k % 2 == 0 {
            std::fs::write(&p, "drift").unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
        if !rxs[i].take().dirty {
            while !rxs[i].next().await.dirty {}
        }
        let c = rs[i]
            .check_apply(CheckCtx {
                apply: true,
                refresh: false,
            })
            .await
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(c, Checked::Changed);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("hello {i}\n"));
    }
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "drift repair:   p50 {:?} p99 {:?} over {drifts}",
        pct(0.5),
        pct(0.99)
    );
    for w in watches {
        w.abort();
    }
}
