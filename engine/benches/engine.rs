//! Engine overhead, without any real I/O: an in-memory kind whose check_apply flips a flag.
//! Measures first converge of N flat vertices, the same when already in state, drift repair
//! latency (p50/p99 over 200 drifts), and 100 chains of 10. Run:
//! `cargo bench -p tend-engine --bench engine` (prints a table; `N=...` overrides the sizes).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tend_engine::{
    CheckCtx, Checked, Engine, EngineConfig, Kind, Registry, ResError, Resource, Watcher,
};
use tend_model::{EdgeSpec, GraphSpec, KindSchema, ResSpec};
use tokio::sync::Notify;

struct Slot {
    in_state: AtomicBool,
    watcher: Mutex<Option<Watcher>>,
    repaired: Notify,
}

fn slots() -> &'static Mutex<Vec<Arc<Slot>>> {
    static S: OnceLock<Mutex<Vec<Arc<Slot>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn slot(i: usize) -> Arc<Slot> {
    let mut s = slots().lock().unwrap();
    while s.len() <= i {
        s.push(Arc::new(Slot {
            in_state: AtomicBool::new(false),
            watcher: Mutex::new(None),
            repaired: Notify::new(),
        }));
    }
    s[i].clone()
}

struct Mem(Arc<Slot>);

#[async_trait::async_trait]
impl Resource for Mem {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        *self.0.watcher.lock().unwrap() = Some(w.clone());
        w.running();
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        if self.0.in_state.load(SeqCst) {
            return Ok(Checked::InState);
        }
        if ctx.apply {
            self.0.in_state.store(true, SeqCst);
            self.0.repaired.notify_waiters();
        }
        Ok(Checked::Changed)
    }
}

fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let i: usize = spec.name.parse().map_err(|_| ResError::new("bad name"))?;
    Ok(Box::new(Mem(slot(i))))
}

fn engine() -> Engine {
    let mut r = Registry::new();
    r.register(Kind {
        schema: KindSchema::new("mem"),
        build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    Engine::new(
        EngineConfig {
            hostname: "bench".into(),
            state_dir: std::env::temp_dir(),
            parallel: 0,
            noop: false,
            ..EngineConfig::default()
        },
        Arc::new(r),
    )
}

fn flat(n: usize) -> GraphSpec {
    GraphSpec {
        resources: (0..n).map(|i| ResSpec::new("mem", i.to_string())).collect(),
        edges: Vec::new(),
    }
}

fn chains(chains: usize, len: usize) -> GraphSpec {
    let mut g = flat(chains * len);
    for c in 0..chains {
        for k in 1..len {
            let (a, b) = (c * len + k - 1, c * len + k);
            g.edges.push(EdgeSpec::new(
                tend_model::ResId::new("mem", a.to_string()),
                tend_model::ResId::new("mem", b.to_string()),
                false,
            ));
        }
    }
    g
}

async fn converge(e: &Engine, g: GraphSpec) -> Duration {
    if std::env::var_os("VERBOSE").is_some() {
        let t = Instant::now();
        e.check_graph(&g).expect("valid graph");
        eprintln!("check_graph took {:.1?}", t.elapsed());
    }
    let t = Instant::now();
    let st = e.swap(g).await.expect("valid graph");
    if std::env::var_os("VERBOSE").is_some() {
        eprintln!("swap returned after {:.1?} ({st:?})", t.elapsed());
    }
    let mut rx = e.status();
    while !rx.borrow_and_update().converged {
        rx.changed().await.unwrap();
    }
    t.elapsed()
}

fn reset(n: usize, v: bool) {
    for i in 0..n {
        slot(i).in_state.store(v, SeqCst);
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    println!("| case | N | time |");
    println!("|---|---|---|");
    for &n in &sizes {
        reset(n, false);
        let e = engine();
        let first = converge(&e, flat(n)).await;
        println!("| first converge (flat) | {n} | {first:.1?} |");
        let mut lat = Vec::new();
        for k in 0..200 {
            let s = slot((k * 7919) % n);
            let repaired = s.repaired.notified();
            tokio::pin!(repaired);
            repaired.as_mut().enable();
            let t = Instant::now();
            s.in_state.store(false, SeqCst);
            if let Some(w) = s.watcher.lock().unwrap().as_ref() {
                w.event();
            }
            repaired.await;
            lat.push(t.elapsed());
        }
        println!("| drift repair p50 | {n} | {:.1?} |", pct(&mut lat, 0.5));
        println!("| drift repair p99 | {n} | {:.1?} |", pct(&mut lat, 0.99));
        e.shutdown().await;
        let e = engine();
        let again = converge(&e, flat(n)).await;
        println!("| first converge, already in state | {n} | {again:.1?} |");
        e.shutdown().await;
    }
    reset(1000, false);
    let e = engine();
    let t = converge(&e, chains(100, 10)).await;
    println!("| 100 chains of 10, first converge | 1000 | {t:.1?} |");
    e.shutdown().await;
}
