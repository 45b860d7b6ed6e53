//! A fake resource kind whose behaviour is set by its params and observed through a global
//! [`Probe`] per resource name. Names must be unique across tests (tests run in parallel).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tend_engine::{
    AutoEdgeSink, CheckCtx, Checked, Engine, EngineConfig, InitCtx, Kind, Registry, ResError,
    Resource, Status, VertexState, Watcher,
};
use tend_model::{EdgeSpec, Field, GraphSpec, KindSchema, ResId, ResSpec, Type, Value};

/// What the tests observe of one fake resource (shared by every instance with that name).
#[derive(Default)]
pub struct Probe {
    /// Simulated state: `true` = in state.
    pub in_state: AtomicBool,
    pub checks: AtomicU64,
    pub applies: AtomicU64,
    pub refreshes: AtomicU64,
    pub inits: AtomicU64,
    pub watch_starts: AtomicU64,
    pub watches_active: AtomicI64,
    pub cleanups: AtomicU64,
    /// Stop failing (for `fail: -1`).
    pub heal: AtomicBool,
    /// Let a gated watch report `running`.
    pub open_gate: AtomicBool,
    /// The current watch's handle, to inject drift.
    pub watcher: Mutex<Option<Watcher>>,
    /// When the watch reported running.
    pub watch_running_at: Mutex<Option<Instant>>,
    /// Start and end of every check_apply.
    pub runs: Mutex<Vec<(Instant, Instant)>>,
    /// The `refresh` flag of every check_apply, in order.
    pub refresh_log: Mutex<Vec<bool>>,
    /// What it sends as `out` (send/recv) instead of its `send` param, when set.
    pub send_value: Mutex<Option<String>>,
    /// The `got` param of every check_apply, in order (`-` when unset).
    pub got_log: Mutex<Vec<String>>,
    /// Applies of its reversal (`undo`).
    pub undone: AtomicU64,
}

impl Probe {
    pub fn checks(&self) -> u64 {
        self.checks.load(SeqCst)
    }

    /// Simulates drift: the resource leaves its state and the watch says so.
    pub fn drift(&self) {
        self.in_state.store(false, SeqCst);
        self.event();
    }

    /// Sends a watch event without changing the state.
    pub fn event(&self) {
        if let Some(w) = self.watcher.lock().unwrap().as_ref() {
            w.event();
        }
    }

    pub fn first_start(&self) -> Instant {
        self.runs.lock().unwrap()[0].0
    }

    pub fn first_end(&self) -> Instant {
        self.runs.lock().unwrap()[0].1
    }
}

fn probes() -> &'static Mutex<HashMap<String, Arc<Probe>>> {
    static P: OnceLock<Mutex<HashMap<String, Arc<Probe>>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

/// The probe of the resource named `name`.
pub fn probe(name: &str) -> Arc<Probe> {
    probes()
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone()
}

#[derive(Default)]
struct Group {
    current: AtomicUsize,
    max: AtomicUsize,
}

fn groups() -> &'static Mutex<HashMap<String, Arc<Group>>> {
    static G: OnceLock<Mutex<HashMap<String, Arc<Group>>>> = OnceLock::new();
    G.get_or_init(Default::default)
}

fn group(name: &str) -> Arc<Group> {
    groups()
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// The highest number of check_apply runs of `group` seen at the same time.
pub fn max_concurrent(name: &str) -> usize {
    group(name).max.load(SeqCst)
}

struct Fake {
    probe: Arc<Probe>,
    sleep: Duration,
    fail: i64,
    fail_at: Vec<i64>,
    panic: bool,
    hang: bool,
    init_fail: bool,
    watch_fail: bool,
    watch_panic: bool,
    watch_gate: bool,
    in_process: bool,
    group: Option<Arc<Group>>,
    send: Option<String>,
    got: Option<String>,
    undo: bool,
}

fn int(spec: &ResSpec, k: &str) -> i64 {
    spec.params.get(k).and_then(Value::as_int).unwrap_or(0)
}

fn flag(spec: &ResSpec, k: &str) -> bool {
    spec.params.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    if flag(spec, "refuse") {
        return Err(ResError::new("refused by the constructor"));
    }
    Ok(Box::new(Fake {
        probe: probe(&spec.name),
        sleep: Duration::from_millis(int(spec, "sleep_ms") as u64),
        fail: int(spec, "fail"),
        fail_at: spec
            .params
            .get("fail_at")
            .and_then(Value::as_list)
            .unwrap_or(&[])
            .iter()
            .filter_map(Value::as_int)
            .collect(),
        panic: flag(spec, "panic"),
        hang: flag(spec, "hang"),
        init_fail: flag(spec, "init_fail"),
        watch_fail: flag(spec, "watch_fail"),
        watch_panic: flag(spec, "watch_panic"),
        watch_gate: flag(spec, "watch_gate"),
        in_process: flag(spec, "in_process"),
        group: spec.params.get("group").and_then(Value::as_str).map(group),
        send: spec
            .params
            .get("send")
            .and_then(Value::as_str)
            .map(str::to_string),
        got: spec
            .params
            .get("got")
            .and_then(Value::as_str)
            .map(str::to_string),
        undo: flag(spec, "undo"),
    }))
}

/// The fake kind's reversal: a `fake` of the same name with `undo` set (and its `got` as
/// `tag`, to show which params it was asked with).
fn reverse(spec: &ResSpec) -> Result<ResSpec, ResError> {
    let mut r = ResSpec::new("fake", spec.name.clone()).param("undo", true);
    if let Some(g) = spec.params.get("got") {
        r.params.insert("tag".into(), g.clone());
    }
    Ok(r)
}

fn strs(spec: &ResSpec, k: &str) -> Vec<String> {
    spec.params
        .get(k)
        .and_then(Value::as_list)
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    for k in strs(spec, "provides") {
        out.provides(&k);
    }
    for k in strs(spec, "requires") {
        out.requires(&k);
    }
}

struct ActiveGuard(Arc<Probe>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.watches_active.fetch_sub(1, SeqCst);
    }
}

struct GroupGuard(Option<Arc<Group>>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.current.fetch_sub(1, SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl Resource for Fake {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        self.probe.inits.fetch_add(1, SeqCst);
        if self.init_fail {
            return Err(ResError::new("init refused"));
        }
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        self.probe.watch_starts.fetch_add(1, SeqCst);
        self.probe.watches_active.fetch_add(1, SeqCst);
        let _g = ActiveGuard(self.probe.clone());
        if self.watch_panic {
            panic!("watch exploded");
        }
        if self.watch_fail {
            return Err(ResError::new("watch refused"));
        }
        while self.watch_gate && !self.probe.open_gate.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        *self.probe.watcher.lock().unwrap() = Some(w.clone());
        *self.probe.watch_running_at.lock().unwrap() = Some(Instant::now());
        w.running();
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let start = Instant::now();
        if self.undo {
            // A reversal: applied once, then in state.
            if self.probe.undone.load(SeqCst) > 0 {
                return Ok(Checked::InState);
            }
            if ctx.apply {
                self.probe.undone.fetch_add(1, SeqCst);
            }
            return Ok(Checked::Changed);
        }
        self.probe
            .got_log
            .lock()
            .unwrap()
            .push(self.got.clone().unwrap_or_else(|| "-".into()));
        let n = self.probe.checks.fetch_add(1, SeqCst);
        self.probe.refresh_log.lock().unwrap().push(ctx.refresh);
        if ctx.refresh {
            self.probe.refreshes.fetch_add(1, SeqCst);
        }
        let _gg = GroupGuard(self.group.clone());
        if let Some(g) = &self.group {
            let c = g.current.fetch_add(1, SeqCst) + 1;
            g.max.fetch_max(c, SeqCst);
        }
        if self.panic {
            panic!("check_apply exploded");
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        let failing = if self.fail_at.contains(&(n as i64)) {
            true
        } else if self.fail < 0 {
            !self.probe.heal.load(SeqCst)
        } else {
            (n as i64) < self.fail
        };
        let out = if failing {
            Err(ResError::new(format!("planned failure {}", n + 1)))
        } else if self.probe.in_state.load(SeqCst) {
            Ok(Checked::InState)
        } else {
            if ctx.apply {
                self.probe.in_state.store(true, SeqCst);
                self.probe.applies.fetch_add(1, SeqCst);
            }
            Ok(Checked::Changed)
        };
        self.probe
            .runs
            .lock()
            .unwrap()
            .push((start, Instant::now()));
        out
    }

    async fn cleanup(&self) -> Result<(), ResError> {
        self.probe.cleanups.fetch_add(1, SeqCst);
        Ok(())
    }

    fn stop_at_exit(&self) -> bool {
        !self.in_process
    }

    fn sent(&self) -> Vec<(String, Value)> {
        let v = self.probe.send_value.lock().unwrap().clone();
        match v.or_else(|| self.send.clone()) {
            Some(s) => vec![("out".to_string(), Value::from(s))],
            None => Vec::new(),
        }
    }
}

/// A registry with the `fake` kind.
pub fn registry() -> Arc<Registry> {
    let schema = KindSchema::new("fake")
        .field(Field::new(
            "sleep_ms",
            Type::Int,
            "check_apply takes this long",
        ))
        .field(Field::new(
            "fail",
            Type::Int,
            "fail the first N checks; -1 until healed",
        ))
        .field(Field::new(
            "fail_at",
            Type::List(Box::new(Type::Int)),
            "fail these checks (0-based)",
        ))
        .field(Field::new("panic", Type::Bool, "check_apply panics"))
        .field(Field::new("hang", Type::Bool, "check_apply never returns"))
        .field(Field::new("init_fail", Type::Bool, "init fails"))
        .field(Field::new("watch_fail", Type::Bool, "watch fails"))
        .field(Field::new("watch_panic", Type::Bool, "watch panics"))
        .field(Field::new(
            "watch_gate",
            Type::Bool,
            "watch waits for the probe's gate",
        ))
        .field(Field::new("refuse", Type::Bool, "the constructor refuses"))
        .field(Field::new(
            "in_process",
            Type::Bool,
            "nothing to stop at process exit",
        ))
        .field(Field::new("group", Type::Str, "concurrency group"))
        .field(Field::new(
            "provides",
            Type::List(Box::new(Type::Str)),
            "autoedge keys",
        ))
        .field(Field::new(
            "requires",
            Type::List(Box::new(Type::Str)),
            "autoedge keys",
        ))
        .field(Field::new(
            "tag",
            Type::Str,
            "changes the spec, nothing else",
        ))
        .field(Field::new("send", Type::Str, "what it sends as `out`"))
        .field(Field::new("got", Type::Str, "a param to receive into"))
        .field(Field::new("undo", Type::Bool, "it is a reversal"))
        .sends("out", Type::Str, "its `send` param");
    let mut plain = schema.clone();
    plain.kind = "plain".into();
    let mut r = Registry::new();
    r.register(Kind {
        schema,
        build,
        autoedges: Some(autoedges),
        at_exit: Some(count_exit),
        reverse: Some(reverse),
    });
    // The fake kind without a reversal.
    r.register(Kind {
        schema: plain,
        build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    Arc::new(r)
}

/// How many times the `fake` kind's `at_exit` ran (any engine of this test binary).
pub static EXITS: AtomicU64 = AtomicU64::new(0);

fn count_exit() {
    EXITS.fetch_add(1, SeqCst);
}

pub fn engine(parallel: usize) -> Engine {
    engine_with(parallel, false)
}

pub fn engine_with(parallel: usize, noop: bool) -> Engine {
    Engine::new(
        EngineConfig {
            hostname: "test".into(),
            state_dir: std::env::temp_dir(),
            parallel,
            noop,
            ..EngineConfig::default()
        },
        registry(),
    )
}

/// An engine keeping its state (pending reversals) in `dir`.
pub fn engine_in(dir: &std::path::Path) -> Engine {
    Engine::new(
        EngineConfig {
            hostname: "test".into(),
            state_dir: dir.to_path_buf(),
            parallel: 4,
            ..EngineConfig::default()
        },
        registry(),
    )
}

/// An edge `from.out -> to.<recv>` (send/recv).
pub fn send(from: &str, to: &str, recv: &str) -> EdgeSpec {
    edge(from, to).sending("out", recv)
}

/// An engine whose default retries back off from `first` to `max` (instead of 1 s to 5 min).
pub fn engine_backoff(first: Duration, max: Duration) -> Engine {
    Engine::new(
        EngineConfig {
            hostname: "test".into(),
            state_dir: std::env::temp_dir(),
            parallel: 2,
            backoff: tend_model::Backoff { first, max },
            ..EngineConfig::default()
        },
        registry(),
    )
}

pub fn fake(name: &str) -> ResSpec {
    ResSpec::new("fake", name)
}

pub fn id(name: &str) -> ResId {
    ResId::new("fake", name)
}

pub fn edge(from: &str, to: &str) -> EdgeSpec {
    EdgeSpec::new(id(from), id(to), false)
}

pub fn notify(from: &str, to: &str) -> EdgeSpec {
    EdgeSpec {
        notify: true,
        ..edge(from, to)
    }
}

pub fn graph(resources: Vec<ResSpec>, edges: Vec<EdgeSpec>) -> GraphSpec {
    GraphSpec { resources, edges }
}

pub fn strs_value(l: &[&str]) -> Value {
    Value::List(l.iter().map(|s| Value::from(*s)).collect())
}

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Waits (up to [`DEADLINE`]) until `f` holds, polling every 2 ms.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until the engine's status satisfies `f`; returns that status.
pub async fn wait_status(e: &Engine, what: &str, f: impl Fn(&Status) -> bool) -> Status {
    let mut rx = e.status();
    let fut = async {
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
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out waiting for {what}; status: {:#?}",
            e.status().borrow().clone()
        ),
    }
}

/// Waits until the graph is converged.
pub async fn converged(e: &Engine) -> Status {
    wait_status(e, "convergence", |s| s.converged).await
}

/// The state of the fake resource `name`.
pub fn state(s: &Status, name: &str) -> VertexState {
    s.vertices[&id(name)].state
}

/// Runs `f` with a deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
