//! Helpers shared by the resource tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tend_engine::{CheckCtx, Checked, Engine, ResError, Resource, WatchReceiver, Watcher};
use tend_model::{GraphSpec, ResSpec};

/// The engine's check of a graph of one resource (schema, meta, the kind's constructor).
fn check(spec: &ResSpec) -> Result<(), String> {
    let g = GraphSpec {
        resources: vec![spec.clone()],
        edges: Vec::new(),
    };
    tend_engine::check_graph(&tend_resources::registry(), &g).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Builds a resource through the registry (the engine's check, then the kind's constructor).
pub fn build(spec: ResSpec) -> Arc<dyn Resource> {
    check(&spec).unwrap_or_else(|e| panic!("{}: {e}", spec.id()));
    let r = tend_resources::registry();
    let kind = r.get(&spec.kind).unwrap();
    Arc::from((kind.build)(&spec).unwrap())
}

/// The check's error about a spec, as a user reads it.
pub fn invalid(spec: ResSpec) -> String {
    match check(&spec) {
        Ok(()) => panic!("{} was accepted", spec.id()),
        Err(e) => e,
    }
}

/// Runs `check_apply` for real.
pub async fn apply(r: &Arc<dyn Resource>) -> Result<Checked, ResError> {
    r.check_apply(CheckCtx {
        apply: true,
        refresh: false,
    })
    .await
}

/// Runs `check_apply` as a dry run.
pub async fn dry(r: &Arc<dyn Resource>) -> Result<Checked, ResError> {
    r.check_apply(CheckCtx {
        apply: false,
        refresh: false,
    })
    .await
}

/// Runs `check_apply` with a pending refresh.
pub async fn refresh(r: &Arc<dyn Resource>) -> Result<Checked, ResError> {
    r.check_apply(CheckCtx {
        apply: true,
        refresh: true,
    })
    .await
}

/// A running watch; aborted when dropped.
pub struct Watching {
    pub rx: WatchReceiver,
    task: tokio::task::JoinHandle<Result<(), ResError>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watching {
    /// Waits for a drift event (failing the test after `secs`).
    pub async fn event(&self, what: &str) {
        self.event_within(what, 10).await
    }

    /// Waits for a drift event for at most `secs`.
    pub async fn event_within(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.rx.take().dirty {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no watch event for: {what}");
            if let Ok(sig) = tokio::time::timeout(left, self.rx.next()).await {
                if sig.dirty {
                    return;
                }
            }
            if self.task.is_finished() {
                panic!("the watch ended while waiting for: {what}");
            }
        }
    }

    /// Whether the watch has returned.
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Forgets events seen so far.
    pub fn clear(&self) {
        let _ = self.rx.take();
    }
}

/// Starts a resource's watch and waits until it reports running.
pub async fn watch(r: &Arc<dyn Resource>) -> Watching {
    let (w, rx) = Watcher::channel();
    let r2 = r.clone();
    let task = tokio::spawn(async move { r2.watch(w).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if rx.take().running {
            break;
        }
        assert!(!task.is_finished(), "the watch ended before running");
        assert!(
            Instant::now() < deadline,
            "the watch never reported running"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.next()).await;
    }
    Watching { rx, task }
}

/// Polls `cond` until it holds or `secs` pass.
pub async fn eventually(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine over the real registry, with its state under `state`, the default backoff, and
/// `noop` as given.
pub fn engine(state: &std::path::Path, noop: bool) -> Engine {
    Engine::new(
        tend_engine::EngineConfig {
            hostname: "test".into(),
            state_dir: state.to_path_buf(),
            noop,
            ..Default::default()
        },
        Arc::new(tend_resources::registry()),
    )
}

/// Waits until the engine's status satisfies `f`, for at most `secs`; returns that status.
pub async fn wait_status(
    e: &Engine,
    what: &str,
    secs: u64,
    f: impl Fn(&tend_engine::Status) -> bool,
) -> tend_engine::Status {
    let mut rx = e.status();
    let wait = async {
        loop {
            {
                let s = rx.borrow_and_update();
                if f(&s) {
                    return s.clone();
                }
            }
            rx.changed().await.expect("engine alive");
        }
    };
    match tokio::time::timeout(Duration::from_secs(secs), wait).await {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out waiting for {what}: {:?}",
            e.status().borrow().sorted()
        ),
    }
}
