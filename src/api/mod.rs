//! The daemon's HTTP API (`tend run --listen`): health probes, `/info`, Prometheus `/metrics`,
//! and read/watch endpoints over the host's live state (`/v1/graph`, `/v1/resources`,
//! `/v1/exports`, `/v1/deploy`), with Server-Sent Events for `watch=1`.
//!
//! Everything is served from the daemon's own state (the engine's status channel, its metrics
//! snapshot and running graph, and, once a world is wired, the world's watch cache): an API
//! client never causes a new watch on the store, however many connect.

pub mod metrics;
mod params;
mod sse;
pub mod views;

pub mod auth;
pub mod tls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value as JsonValue};
use tend_engine::{Engine, Status, VertexState};
use tokio::net::TcpListener;

use metrics::WorldMetrics;
use params::{Accepts, ApiError, Format, Params};

/// The default `--listen` address. Port 9488 is unassigned by IANA and unused by the usual
/// exporters; the API listens on loopback only unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9488";

/// The port of [`DEFAULT_LISTEN`].
pub const DEFAULT_PORT: u16 = 9488;

/// `--listen`: an address, or `none` to run without the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// No HTTP server.
    None,
    /// Listen on this address (port 0 picks a free port).
    Addr(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Listen::None);
        }
        s.parse::<SocketAddr>().map(Listen::Addr).map_err(|_| {
            format!("expected host:port (an IP address and a port, e.g. {DEFAULT_LISTEN}) or `none`, got {s:?}")
        })
    }
}

/// The health of one component, as `/health` reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// Working.
    Up(JsonValue),
    /// Not working; the details say why.
    Down(JsonValue),
    /// Starting; not working yet.
    Init(JsonValue),
}

impl Health {
    fn name(&self) -> &'static str {
        match self {
            Health::Up(_) => "UP",
            Health::Down(_) => "DOWN",
            Health::Init(_) => "INIT",
        }
    }

    fn json(&self) -> JsonValue {
        let details = match self {
            Health::Up(d) | Health::Down(d) | Health::Init(d) => d.clone(),
        };
        json!({ "status": self.name(), "details": details })
    }
}

/// The World as the API sees it: which backend, where, and how it is doing.
#[derive(Clone, Debug)]
pub struct WorldInfo {
    /// `none`, `embedded` or `etcd`.
    pub backend: String,
    /// Store endpoints (etcd URLs, or the embedded store's path).
    pub endpoints: Vec<String>,
}

impl WorldInfo {
    /// The World a daemon joined.
    pub fn of(backend: &tend_world::Backend) -> Self {
        match backend {
            tend_world::Backend::Etcd(cfg) => WorldInfo {
                backend: "etcd".into(),
                endpoints: cfg.endpoints.clone(),
            },
            tend_world::Backend::Embedded { state_dir } => WorldInfo {
                backend: "embedded".into(),
                endpoints: vec![state_dir.display().to_string()],
            },
        }
    }
}

/// Static facts about the daemon, given once when the API starts.
#[derive(Clone, Debug)]
pub struct ApiInfo {
    /// This host's name in the cluster.
    pub hostname: String,
    /// The local program `tend run` was given, if any.
    pub program: Option<PathBuf>,
    /// The World.
    pub world: WorldInfo,
}

/// A deploy as `/v1/deploy` and `/info` report it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeployInfo {
    /// Deploy number.
    pub id: u64,
    /// Hash of the deploy's bundle.
    pub hash: String,
}

/// Everything a handler reads. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    info: ApiInfo,
    started: Instant,
    started_at: SystemTime,
    /// Set once the first graph has been applied (every vertex processed once).
    ready: AtomicBool,
    /// The World's health, as the daemon last reported it.
    world: Mutex<Health>,
    /// Why the newest program was rejected, if it was.
    program_error: Mutex<Option<String>>,
    /// The deploy the daemon runs (none for a local program).
    deploy: Mutex<Option<DeployInfo>>,
    /// The exports this host may collect, from the World's watch cache.
    exports: Mutex<Vec<JsonValue>>,
    /// What the world side contributes to `/metrics`.
    world_metrics: Mutex<WorldMetrics>,
    /// Bumped whenever `exports` or `deploy` change: drives their `watch=1` streams.
    world_tx: tokio::sync::watch::Sender<u64>,
}

impl ApiState {
    /// State for the API of a daemon running `engine`. Must be called inside a tokio runtime.
    pub fn new(engine: Engine, info: ApiInfo) -> Self {
        let world = if info.world.backend == "none" {
            Health::Up(json!({
                "backend": "none",
                "detail": "no world configured: this daemon runs a local program on this host only",
            }))
        } else {
            Health::Init(json!({ "backend": info.world.backend, "detail": "connecting" }))
        };
        let state = ApiState {
            inner: Arc::new(Inner {
                engine,
                info,
                started: Instant::now(),
                started_at: SystemTime::now(),
                ready: AtomicBool::new(false),
                world: Mutex::new(world),
                program_error: Mutex::new(None),
                deploy: Mutex::new(None),
                exports: Mutex::new(Vec::new()),
                world_metrics: Mutex::new(WorldMetrics::default()),
                world_tx: tokio::sync::watch::channel(0).0,
            }),
        };
        let watcher = state.clone();
        tokio::spawn(async move { watcher.track_readiness().await });
        state
    }

    /// Latches readiness once the first graph has been applied: swapped in, and every vertex
    /// processed at least once (converged, failed or blocked).
    async fn track_readiness(&self) {
        let mut rx = self.inner.engine.status();
        loop {
            let done = {
                let s = rx.borrow_and_update();
                s.generation >= 1 && (s.converged || s.count(VertexState::Pending) == 0)
            };
            if done {
                self.inner.ready.store(true, Ordering::SeqCst);
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Reports that the newest program (or deploy) was rejected, or, with `None`, that the
    /// newest one was accepted. The previous graph keeps running either way.
    pub fn set_program_error(&self, error: Option<String>) {
        *lock(&self.inner.program_error) = error;
    }

    /// Reports the World's health (connected, session lost, ...).
    pub fn set_world_health(&self, health: Health) {
        *lock(&self.inner.world) = health;
    }

    /// Reports the deploy the daemon now runs.
    pub fn set_deploy(&self, deploy: Option<DeployInfo>) {
        let mut d = lock(&self.inner.deploy);
        if *d != deploy {
            *d = deploy;
            drop(d);
            self.inner.world_tx.send_modify(|n| *n += 1);
        }
    }

    /// Reports the exports this host may collect (one JSON object each) and the world's
    /// counters.
    pub fn set_exports(&self, exports: Vec<JsonValue>, metrics: WorldMetrics) {
        *lock(&self.inner.world_metrics) = metrics;
        let mut e = lock(&self.inner.exports);
        if *e != exports {
            *e = exports;
            drop(e);
            self.inner.world_tx.send_modify(|n| *n += 1);
        }
    }

    fn status(&self) -> Status {
        self.inner.engine.status().borrow().clone()
    }

    fn engine_health(&self, s: &Status) -> Health {
        if s.generation == 0 {
            return Health::Init(json!({ "detail": "no graph applied yet" }));
        }
        let failed: Vec<JsonValue> = s
            .sorted_in(&[VertexState::Failed])
            .into_iter()
            .map(|(id, v)| json!({ "resource": id.to_string(), "error": v.last_error }))
            .collect();
        let blocked: Vec<String> = s
            .sorted_in(&[VertexState::Blocked])
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        let details = json!({
            "generation": s.generation,
            "converged": s.converged,
            "resources": s.total,
            "counts": views::counts_json(s),
            "failed": failed,
            "blocked": blocked,
        });
        if !failed.is_empty() {
            Health::Down(details)
        } else if !self.inner.ready.load(Ordering::SeqCst) {
            Health::Init(details)
        } else {
            Health::Up(details)
        }
    }

    fn program_health(&self, s: &Status) -> Health {
        let program = self
            .inner
            .info
            .program
            .as_ref()
            .map(|p| p.display().to_string());
        if let Some(e) = lock(&self.inner.program_error).clone() {
            return Health::Down(json!({
                "program": program,
                "error": e,
                "detail": "the newest program was rejected; the previous graph keeps running",
            }));
        }
        if s.generation == 0 {
            Health::Init(json!({ "program": program, "detail": "no graph produced yet" }))
        } else {
            Health::Up(json!({ "program": program, "generation": s.generation }))
        }
    }

    fn components(&self) -> Vec<(&'static str, Health)> {
        let s = self.status();
        vec![
            ("engine", self.engine_health(&s)),
            ("program", self.program_health(&s)),
            ("world", lock(&self.inner.world).clone()),
        ]
    }

    fn exports_json(&self) -> JsonValue {
        json!({
            "host": self.inner.info.hostname,
            "world": self.inner.info.world.backend,
            "exports": lock(&self.inner.exports).clone(),
        })
    }

    fn deploy_json(&self) -> JsonValue {
        match lock(&self.inner.deploy).clone() {
            Some(d) => json!({ "deploy": { "id": d.id, "hash": d.hash } }),
            None => json!({
                "deploy": null,
                "program": self.inner.info.program.as_ref().map(|p| p.display().to_string()),
                "detail": "no deploy: this daemon runs a local program",
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The git commit this binary was built from (`build.rs`), or `unknown`.
pub const BUILD_COMMIT: &str = env!("TEND_GIT_COMMIT");

/// Binds `listen` (`None`: [`DEFAULT_LISTEN`]) and serves the API on it in a background
/// task, over HTTPS when `tls` is given; returns the bound address.
///
/// When the default address cannot be bound (another daemon has it), the daemon logs a warning
/// and runs without the API; when an address given with `--listen` cannot, that is an error
/// naming the address.
pub async fn start(
    listen: Option<Listen>,
    state: ApiState,
    auth: auth::ApiAuth,
    tls: Option<tls::ApiTls>,
) -> anyhow::Result<Option<SocketAddr>> {
    let explicit = listen.is_some();
    let addr = match listen {
        Some(Listen::None) => return Ok(None),
        Some(Listen::Addr(a)) => a,
        None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(error) if !explicit => {
            tracing::warn!(%addr, %error, "cannot listen on the default API address; running without the HTTP API (choose one with --listen)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("--listen {addr}: cannot listen")),
    };
    let bound = listener
        .local_addr()
        .with_context(|| format!("--listen {addr}: reading the bound address"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, scheme, "http api listening");
    if auth.required() {
        tracing::info!(addr = %bound, "the http api requires a bearer token");
    }
    let router = router_with(state, auth);
    match tls {
        None => {
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "http api stopped");
                }
            });
        }
        Some(tls) => {
            if tls.mtls {
                tracing::info!(addr = %bound, "the http api requires client certificates");
            }
            let listener = tls::TlsListener::new(listener, tls);
            let service = router.into_make_service_with_connect_info::<tls::Peer>();
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, service).await {
                    tracing::error!(%error, "http api stopped");
                }
            });
        }
    }
    Ok(Some(bound))
}

/// The routes behind `auth`.
pub fn router_with(state: ApiState, auth: auth::ApiAuth) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/liveness", get(liveness))
        .route("/livez", get(liveness))
        .route("/health/readiness", get(readiness))
        .route("/readyz", get(readiness))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/v1/graph", get(graph))
        .route("/v1/resources", get(resources))
        .route("/v1/exports", get(exports))
        .route("/v1/deploy", get(deploy))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// The response header carrying a request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// Gives every request an id (a random UUID, or the client's own `x-request-id` when it sent
/// a printable one of at most 128 bytes), logs the request with it (server errors at warn, refusals at
/// info, the rest at debug) and returns it in the `x-request-id` header, so a client's report and the daemon's
/// log can be matched.
async fn request_id(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if resp.status().is_server_error() {
        tracing::warn!(request_id = %id, %method, %path, status, ms, "http request failed");
    } else if resp.status().is_client_error() {
        tracing::info!(request_id = %id, %method, %path, status, ms, "http request refused");
    } else {
        tracing::debug!(request_id = %id, %method, %path, status, ms, "http request");
    }
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

const PATHS: &str = "/health, /health/liveness, /health/readiness, /livez, /readyz, /info, /metrics, /v1/graph, /v1/resources, /v1/exports, /v1/deploy";

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such path: {}; known paths: {PATHS}",
        uri.path()
    ))
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{}: only GET is allowed", uri.path()),
    }
}

const NONE: Accepts = Accepts {
    watch: false,
    format: false,
};
const WATCH: Accepts = Accepts {
    watch: true,
    format: false,
};

fn parse(uri: &Uri, q: &Option<String>, accepts: Accepts) -> Result<Params, ApiError> {
    params::parse(uri.path(), q.as_deref(), accepts)
}

fn probe(up: bool, body: JsonValue) -> Response {
    let code = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn liveness(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    parse(&uri, &q, NONE)?;
    // Answering at all proves the event loop runs; the engine must still be there.
    let engine_alive = st.inner.engine.status().has_changed().is_ok();
    Ok(if engine_alive {
        probe(true, json!({ "status": "UP" }))
    } else {
        probe(
            false,
            json!({ "status": "DOWN", "detail": "the engine has stopped" }),
        )
    })
}

async fn readiness(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    parse(&uri, &q, NONE)?;
    let world = lock(&st.inner.world).clone();
    let graph_applied = st.inner.ready.load(Ordering::SeqCst);
    let body = match (&world, graph_applied) {
        (Health::Up(_), true) => json!({ "status": "UP" }),
        (Health::Down(d), _) => {
            json!({ "status": "DOWN", "detail": "the world is down", "world": d })
        }
        (Health::Init(d), _) => {
            json!({ "status": "INIT", "detail": "the world is not connected yet", "world": d })
        }
        (Health::Up(_), false) => {
            json!({ "status": "INIT", "detail": "the first graph has not been applied yet" })
        }
    };
    Ok(probe(body["status"] == "UP", body))
}

async fn health(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    parse(&uri, &q, NONE)?;
    let comps = st.components();
    let overall = if comps.iter().any(|(_, h)| matches!(h, Health::Down(_))) {
        "DOWN"
    } else if comps.iter().any(|(_, h)| matches!(h, Health::Init(_))) {
        "INIT"
    } else {
        "UP"
    };
    let components: serde_json::Map<String, JsonValue> = comps
        .iter()
        .map(|(n, h)| (n.to_string(), h.json()))
        .collect();
    Ok(probe(
        overall == "UP",
        json!({ "status": overall, "components": components }),
    ))
}

fn info_json(st: &ApiState) -> JsonValue {
    let s = st.status();
    let i = &st.inner.info;
    let graph = st.inner.engine.graph();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build": BUILD_COMMIT,
        "hostname": i.hostname,
        "world": { "backend": i.world.backend, "endpoints": i.world.endpoints },
        "program": i.program.as_ref().map(|p| p.display().to_string()),
        "deploy": lock(&st.inner.deploy).clone().map(|d| json!({ "id": d.id, "hash": d.hash })),
        "graph": { "generation": s.generation, "resources": graph.resources().count(), "edges": graph.edges.len() },
        "started_at": views::rfc3339(st.inner.started_at),
        "uptime_seconds": st.inner.started.elapsed().as_secs_f64(),
    })
}

async fn info(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    parse(&uri, &q, NONE)?;
    Ok(Json(info_json(&st)).into_response())
}

async fn metrics(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    parse(&uri, &q, NONE)?;
    let status = st.status();
    let engine = st.inner.engine.metrics();
    let world = lock(&st.inner.world_metrics).clone();
    let start_time = st
        .inner
        .started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let text = metrics::render(&metrics::Scrape {
        version: env!("CARGO_PKG_VERSION"),
        commit: BUILD_COMMIT,
        start_time,
        engine: &engine,
        status: &status,
        world: &world,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Answers a JSON document, or streams it with `watch=1`, re-rendered on each engine change.
///
/// `changed` tells whether a new status may change the document (e.g. the graph changes only
/// with the generation), so that a watch does not re-render it on every resource check.
fn doc_or_watch(
    st: &ApiState,
    p: &Params,
    changed: fn(&Status, &Status) -> bool,
    render: impl Fn(&ApiState, &Status) -> JsonValue + Send + 'static,
) -> Response {
    if p.watch {
        let st2 = st.clone();
        let mut prev: Option<Status> = None;
        sse::stream(
            st.inner.engine.status(),
            move |s: &Status| {
                if prev.as_ref().is_some_and(|p| !changed(p, s)) {
                    return None;
                }
                prev = Some(s.clone());
                Some(render(&st2, s))
            },
            p.heartbeat,
        )
        .into_response()
    } else {
        Json(render(st, &st.status())).into_response()
    }
}

/// For documents that change with every status change.
fn any_change(_: &Status, _: &Status) -> bool {
    true
}

/// For documents that change only with a new graph.
fn new_generation(a: &Status, b: &Status) -> bool {
    a.generation != b.generation
}

async fn graph(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = parse(
        &uri,
        &q,
        Accepts {
            watch: true,
            format: true,
        },
    )?;
    if p.format == Format::Dot {
        let text = views::graph_dot(&st.inner.engine.graph(), &st.status());
        return Ok((
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            text,
        )
            .into_response());
    }
    Ok(doc_or_watch(&st, &p, new_generation, |st, s| {
        views::graph_json(s.generation, &st.inner.engine.graph())
    }))
}

async fn resources(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = parse(&uri, &q, WATCH)?;
    Ok(doc_or_watch(&st, &p, any_change, |st, s| {
        views::resources_json(&st.inner.info.hostname, s)
    }))
}

async fn exports(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = parse(&uri, &q, WATCH)?;
    Ok(world_doc(&st, &p, ApiState::exports_json))
}

async fn deploy(
    State(st): State<ApiState>,
    uri: Uri,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = parse(&uri, &q, WATCH)?;
    Ok(world_doc(&st, &p, ApiState::deploy_json))
}

/// A document about the World (exports, deploy): a plain GET, or with `watch=1` an event
/// stream that updates whenever the daemon's World side reports a change (served from the
/// watch cache: a client never opens a store watch).
fn world_doc(st: &ApiState, p: &Params, render: fn(&ApiState) -> JsonValue) -> Response {
    if p.watch {
        let st2 = st.clone();
        sse::stream(
            st.inner.world_tx.subscribe(),
            move |_| Some(render(&st2)),
            p.heartbeat,
        )
        .into_response()
    } else {
        Json(render(st)).into_response()
    }
}
