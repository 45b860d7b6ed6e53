//! The etcd backend (etcd v3 API through `etcd-client`). Unary calls run under a timeout and
//! are retried on transient failures (a member going away, a leader election); watches resume
//! from the last delivered revision after any disconnect and re-list the range when that
//! revision was compacted, so no update is ever missed.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, PutOptions, TlsOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    AbortOnDrop, Compare, KeyRange, KeyValue, LeaseId, Op, OpResult, Range, Store, Txn, TxnResult,
    Watch, WatchEvent, WatchMsg,
};
use tend_model::world::StoreError;

const MAX_MESSAGE: usize = 512 << 20;

/// TLS material for etcd (PEM files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate to verify the servers.
    pub ca: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client private key.
    pub key: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`, ...).
    pub endpoints: Vec<String>,
    /// TLS, when the endpoints are `https://`.
    pub tls: Option<EtcdTls>,
    /// User name and password, when etcd has authentication enabled.
    pub user: Option<(String, String)>,
    /// Time limit of one unary call attempt.
    pub request_timeout: Duration,
    /// Retries of a unary call after a transient failure.
    pub retries: u32,
}

impl EtcdConfig {
    /// A configuration with default timeouts for these endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            tls: None,
            user: None,
            request_timeout: Duration::from_secs(3),
            retries: 6,
        }
    }
}

/// The etcd store. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    cfg: EtcdConfig,
    endpoints: String,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(6)).min(1000))
}

fn retryable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        // gRPC codes that will not change on retry: invalid argument (3), not found (5),
        // permission denied (7), resource exhausted (8), failed precondition (9),
        // out of range (11), unauthenticated (16).
        E::GRpcStatus(s) => !matches!(i32::from(s.code()), 3 | 5 | 7 | 8 | 9 | 11 | 16),
        E::InvalidArgs(_) | E::InvalidUri(_) | E::Utf8Error(_) | E::EndpointsNotManaged => false,
        _ => true,
    }
}

/// A short, human message for an etcd-client error (no debug dumps of transport internals).
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut msg = s.message().to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(s);
            let mut last = None;
            while let Some(c) = cause {
                last = Some(c.to_string());
                cause = c.source();
            }
            if let Some(root) = last {
                if !msg.contains(&root) {
                    msg = format!("{msg}: {root}");
                }
            }
            if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                msg
            }
        }
        e => e.to_string(),
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn get_options(range: &KeyRange) -> Option<GetOptions> {
    range
        .end
        .as_ref()
        .map(|end| GetOptions::new().with_range(end.clone()))
}

fn convert_op(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            TxnOp::put(key.clone(), value.clone(), opts)
        }
        Op::Delete(range) => TxnOp::delete(
            range.start.clone(),
            range
                .end
                .as_ref()
                .map(|end| DeleteOptions::new().with_range(end.clone())),
        ),
        Op::Get(range) => TxnOp::get(range.start.clone(), get_options(range)),
    }
}

fn convert_compare(c: &Compare) -> EtcdCompare {
    match c {
        Compare::Value(k, v) => EtcdCompare::value(k.clone(), CompareOp::Equal, v.clone()),
        Compare::Version(k, n) => EtcdCompare::version(k.clone(), CompareOp::Equal, *n),
        Compare::ModRevision(k, r) => EtcdCompare::mod_revision(k.clone(), CompareOp::Equal, *r),
        Compare::Lease(k, l) => EtcdCompare::lease(k.clone(), CompareOp::Equal, *l),
        Compare::Exists(k) => EtcdCompare::version(k.clone(), CompareOp::Greater, 0),
        Compare::Missing(k) => EtcdCompare::version(k.clone(), CompareOp::Equal, 0),
    }
}

fn first_key(txn: &Txn) -> String {
    txn.compares
        .iter()
        .map(|c| match c {
            Compare::Value(k, _)
            | Compare::Version(k, _)
            | Compare::ModRevision(k, _)
            | Compare::Lease(k, _)
            | Compare::Exists(k)
            | Compare::Missing(k) => k.clone(),
        })
        .chain(txn.success.iter().map(|op| match op {
            Op::Put { key, .. } => key.clone(),
            Op::Delete(r) | Op::Get(r) => r.start.clone(),
        }))
        .next()
        .unwrap_or_default()
}

fn read_pem(path: &PathBuf, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source: std::io::Error::new(source.kind(), format!("reading etcd {what}: {source}")),
    })
}

impl Etcd {
    /// Connects to etcd and checks that it answers (a real read, retried within the
    /// configured timeouts).
    pub async fn connect(cfg: EtcdConfig) -> Result<Etcd, StoreError> {
        let endpoints = cfg.endpoints.join(",");
        let fail = |op: &'static str, message: String| StoreError::Etcd {
            endpoints: endpoints.clone(),
            op,
            key: String::new(),
            message,
        };
        if cfg.endpoints.is_empty() {
            return Err(fail("connect", "no endpoint given".into()));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &cfg.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &cfg.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read_pem(ca, "CA certificate")?));
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    t = t.identity(Identity::from_pem(
                        read_pem(cert, "client certificate")?,
                        read_pem(key, "client key")?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(fail(
                        "connect",
                        "a client certificate needs both --etcd-cert and --etcd-key".into(),
                    ))
                }
            }
            opts = opts.with_tls(t);
        }
        let mut attempt = 0;
        let client = loop {
            let r = tokio::time::timeout(
                cfg.request_timeout,
                Client::connect(cfg.endpoints.clone(), Some(opts.clone())),
            )
            .await;
            match r {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) if !retryable(&e) || attempt >= cfg.retries => {
                    return Err(fail("connect", describe(&e)))
                }
                Err(_) if attempt >= cfg.retries => {
                    return Err(fail("connect", "timed out".into()))
                }
                _ => {}
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        };
        let etcd = Etcd {
            client,
            cfg,
            endpoints,
        };
        // `Client::connect` succeeds with nothing listening: prove etcd answers (a refusal
        // of a user whose role may not read `/` is an answer too).
        match etcd.get("/").await {
            Ok(_) | Err(StoreError::PermissionDenied { .. }) => Ok(etcd),
            Err(e) => Err(e),
        }
    }

    /// The endpoints, comma-separated (for messages).
    pub fn describe_endpoints(&self) -> String {
        self.endpoints.clone()
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.cfg.endpoints
    }

    fn error(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            op,
            key: key.to_string(),
            message,
        }
    }

    /// Runs one etcd call under the request timeout, retried on transient errors; etcd's
    /// refusals become [`StoreError::PermissionDenied`]. Also for the RBAC administration
    /// (`crate::auth`).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            let r = tokio::time::timeout(self.cfg.request_timeout, f(self.client.clone())).await;
            let message = match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    if e.to_string().contains("lease not found") {
                        return Err(StoreError::LeaseNotFound(0));
                    }
                    if let etcd_client::Error::GRpcStatus(st) = &e {
                        if i32::from(st.code()) == 7 {
                            return Err(StoreError::PermissionDenied {
                                endpoints: self.endpoints.clone(),
                                op,
                                key: key.to_string(),
                                message: describe(&e),
                            });
                        }
                    }
                    if !retryable(&e) {
                        return Err(self.error(op, key, describe(&e)));
                    }
                    describe(&e)
                }
                Err(_) => format!("timed out after {:?}", self.cfg.request_timeout),
            };
            if attempt >= self.cfg.retries {
                return Err(self.error(
                    op,
                    key,
                    format!("{message} (gave up after {} attempts)", attempt + 1),
                ));
            }
            attempt += 1;
            tracing::debug!(op, key, error = %message, attempt, "etcd call failed; retrying");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn watch_loop(self, range: KeyRange, mut next: i64, tx: mpsc::UnboundedSender<WatchMsg>) {
        let mut failures: u32 = 0;
        loop {
            if tx.is_closed() {
                return;
            }
            let mut opts = WatchOptions::new()
                .with_start_revision(next)
                .with_progress_notify();
            if let Some(end) = &range.end {
                opts = opts.with_range(end.clone());
            }
            let mut wc = self
                .client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE);
            let started = tokio::time::timeout(
                self.cfg.request_timeout,
                wc.watch(range.start.clone(), Some(opts)),
            )
            .await;
            let mut stream = match started {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failures += 1;
                    if failures >= 5 {
                        tracing::warn!(error = %describe(&e), key = %range.start, "cannot re-open the etcd watch; retrying");
                    } else {
                        tracing::debug!(error = %describe(&e), key = %range.start, "etcd watch failed; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => break,
                    Err(e) => {
                        if failures >= 5 {
                            tracing::warn!(error = %describe(&e), key = %range.start, "etcd watch keeps breaking; resuming");
                        } else {
                            tracing::debug!(error = %describe(&e), key = %range.start, "etcd watch broke; resuming");
                        }
                        break;
                    }
                };
                if resp.compact_revision() > 0 {
                    // The history we need is gone: re-list, then watch from the snapshot.
                    match self.range(range.clone()).await {
                        Ok(snapshot) => {
                            next = snapshot.revision + 1;
                            let msg = WatchMsg::Resync {
                                revision: snapshot.revision,
                                kvs: snapshot.kvs,
                            };
                            if tx.send(msg).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-list after compaction; retrying")
                        }
                    }
                    break;
                }
                if resp.canceled() {
                    break;
                }
                failures = 0;
                let events: Vec<WatchEvent> = resp
                    .events()
                    .iter()
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        Some(match ev.event_type() {
                            EventType::Put => WatchEvent::Put(convert_kv(kv)),
                            EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                revision: kv.mod_revision(),
                            },
                        })
                    })
                    .collect();
                if let Some(last) = events.last() {
                    next = last.revision() + 1;
                    if tx.send(WatchMsg::Events(events)).is_err() {
                        return;
                    }
                }
            }
            failures += 1;
            tokio::time::sleep(backoff(failures.min(3))).await;
        }
    }
}

#[async_trait]
impl Store for Etcd {
    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .call("get", key, |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    async fn range(&self, range: KeyRange) -> Result<Range, StoreError> {
        let resp = self
            .call("range", &range.start, |c| {
                let range = range.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_MESSAGE)
                        .get(range.start.clone(), get_options(&range))
                        .await
                }
            })
            .await?;
        Ok(Range {
            revision: resp.header().map_or(0, |h| h.revision()),
            kvs: resp.kvs().iter().map(convert_kv).collect(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let key = first_key(&txn);
        let etxn = etcd_client::Txn::new()
            .when(txn.compares.iter().map(convert_compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(convert_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(convert_op).collect::<Vec<_>>());
        let resp = self
            .call("txn", &key, |c| {
                let etxn = etxn.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(MAX_MESSAGE)
                        .txn(etxn)
                        .await
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::LeaseNotFound(_) => {
                    let lease = txn
                        .success
                        .iter()
                        .chain(&txn.failure)
                        .find_map(|op| match op {
                            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                            _ => None,
                        })
                        .unwrap_or(0);
                    StoreError::LeaseNotFound(lease)
                }
                e => e,
            })?;
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Put(_) => OpResult::Put,
                TxnOpResponse::Delete(d) => OpResult::Deleted(d.deleted()),
                TxnOpResponse::Get(g) => OpResult::Range(g.kvs().iter().map(convert_kv).collect()),
                TxnOpResponse::Txn(_) => OpResult::Put,
            })
            .collect();
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            results,
        })
    }

    async fn watch(&self, range: KeyRange, from_revision: i64) -> Result<Watch, StoreError> {
        let next = if from_revision > 0 {
            from_revision
        } else {
            let resp = self
                .call("watch", &range.start, |mut c| {
                    let key = range.start.clone();
                    async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
                })
                .await?;
            resp.header().map_or(0, |h| h.revision()) + 1
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(self.clone().watch_loop(range, next, tx));
        Ok(Watch::new(rx, Some(AbortOnDrop(handle))))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = self
            .call("lease grant", "", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    async fn lease_keepalive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let ttl = self
            .call("lease keepalive", "", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) => Ok(resp.ttl()),
                    None => Ok(0),
                }
            })
            .await
            .map_err(|e| match e {
                StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
                e => e,
            })?;
        if ttl <= 0 {
            return Err(StoreError::LeaseNotFound(lease));
        }
        Ok(Duration::from_secs(ttl as u64))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call("lease revoke", "", |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await
        .map_err(|e| match e {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
            e => e,
        })?;
        Ok(())
    }
}
