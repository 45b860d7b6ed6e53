//! A minimal HTTP/1.1 client for the daemon's API: one GET per connection, and a reader of
//! Server-Sent Events for `watch=1`.

use std::ops::ControlFlow;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// One Server-Sent Event as received.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    /// The `id:` field (empty when absent).
    pub id: String,
    /// The `event:` field (`message` when absent, as the SSE standard says).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Where the daemon's API is: `host:port` over plain HTTP or, for an `https://` address, over
/// TLS with the client's trust roots and client certificate.
pub struct Endpoint {
    /// `host:port`.
    authority: String,
    /// The TLS set-up for an `https://` address.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// A client certificate is configured (`--cert`).
    client_cert: bool,
}

/// The client's TLS files (`--ca`, `--cert`, `--key`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsFiles<'a> {
    /// CA certificates to trust instead of the system's.
    pub ca: Option<&'a Path>,
    /// Client certificate (chain), for mTLS.
    pub cert: Option<&'a Path>,
    /// The client certificate's key.
    pub key: Option<&'a Path>,
}

impl Endpoint {
    /// Reads `--addr` (`host:port`, `http://host:port[/]` or `https://host:port[/]`) and, for
    /// https, the TLS files. Errors name the address or the file.
    pub fn new(addr: &str, files: TlsFiles<'_>) -> anyhow::Result<Endpoint> {
        let a = addr.trim();
        let (https, a) = match a.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, a.strip_prefix("http://").unwrap_or(a)),
        };
        let a = a.trim_end_matches('/');
        if a.is_empty() || a.contains('/') || !a.contains(':') {
            bail!("--addr {addr:?}: expected host:port, http://host:port or https://host:port, for example 127.0.0.1:9488");
        }
        if !https {
            if files.ca.is_some() || files.cert.is_some() {
                bail!("--addr {addr:?} is plain HTTP; --ca, --cert and --key (TEND_CA, TEND_CERT, TEND_KEY) are for an https:// address");
            }
            return Ok(Endpoint {
                authority: a.to_string(),
                tls: None,
                client_cert: false,
            });
        }
        let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            anyhow::anyhow!("--addr {addr:?}: {host:?} is not a host name or an IP address: {e}")
        })?;
        Ok(Endpoint {
            authority: a.to_string(),
            tls: Some((Arc::new(client_config(files)?), name)),
            client_cert: files.cert.is_some(),
        })
    }

    /// The URL of `path` at this endpoint, for messages.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority)
    }
}

/// The client side of TLS: the roots (`--ca`, else the system's bundle) and the client
/// certificate, if any.
fn client_config(files: TlsFiles<'_>) -> anyhow::Result<rustls::ClientConfig> {
    let roots = match files.ca {
        Some(ca) => crate::api::tls::load_roots("--ca", ca).map_err(anyhow::Error::msg)?,
        None => system_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(crate::api::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_root_certificates(roots);
    let mut config = match (files.cert, files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(c), Some(k)) => {
            let chain = crate::api::tls::load_certs("--cert", c).map_err(anyhow::Error::msg)?;
            let key = crate::api::tls::load_key("--key", k).map_err(anyhow::Error::msg)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        anyhow::anyhow!(
                            "--key {}: this key does not match the certificate in {} (--cert)",
                            k.display(),
                            c.display()
                        )
                    }
                    e => {
                        anyhow::anyhow!("--key {} (with --cert {}): {e}", k.display(), c.display())
                    }
                })?
        }
        (Some(_), None) => bail!("--cert needs --key FILE (or TEND_KEY)"),
        (None, Some(_)) => bail!("--key needs --cert FILE (or TEND_CERT)"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The system's CA bundle (`SSL_CERT_FILE`, else the usual Linux paths); certificates that do
/// not parse are skipped, and no bundle at all leaves the store empty (then only `--ca` helps).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(std::path::PathBuf::from),
        );
    for p in candidates {
        if let Ok(pem) = std::fs::read(&p) {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            roots.add_parsable_certificates(certs);
            break;
        }
    }
    roots
}

/// The bearer token every request sends (set once from the client's options).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every request send `Authorization: Bearer <token>`.
pub fn set_token(token: String) {
    let _ = TOKEN.set(token);
}

/// Sends `GET path` to the daemon at `ep` and returns the response head and body.
async fn send(ep: &Endpoint, path: &str) -> anyhow::Result<Response<Incoming>> {
    let addr = &ep.authority;
    let stream = TcpStream::connect(addr).await.with_context(|| {
        format!("cannot reach the tend daemon at {addr} (is `tend run` running there? choose another with --addr)")
    })?;
    match &ep.tls {
        None => send_on(ep, stream, path).await,
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .with_context(|| {
                    format!(
                        "{}: TLS handshake failed (trust the daemon's CA with --ca FILE or TEND_CA; \
                         an API that requires client certificates also needs --cert and --key)",
                        ep.url("")
                    )
                })?;
            send_on(ep, tls, path).await
        }
    }
}

/// Sends `GET path` over a connected stream.
async fn send_on<S>(ep: &Endpoint, stream: S, path: &str) -> anyhow::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = &ep.authority;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {}", ep.url("")))?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "http connection closed");
        }
    });
    let mut req = Request::get(path).header(hyper::header::HOST, addr);
    if let Some(t) = TOKEN.get() {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .header(
            hyper::header::USER_AGENT,
            concat!("tend/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("building the request for {path}"))?;
    let hint = match (&ep.tls, ep.client_cert) {
        (None, _) => " (if the daemon serves HTTPS, use --addr https://HOST:PORT)",
        (Some(_), false) => " (if the API requires client certificates, give --cert and --key)",
        (Some(_), true) => "",
    };
    sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {}{hint}", ep.url(path)))
}

/// Turns a non-2xx answer into an error carrying the API's `{"error": ...}` message.
fn api_error(ep: &Endpoint, path: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    anyhow::anyhow!("GET {}: {status}: {msg}", ep.url(path))
}

/// GETs `path` and returns the status and body; `ok` lists the non-2xx statuses that are
/// answers rather than errors (e.g. 503 from `/health`).
pub async fn get(ep: &Endpoint, path: &str, ok: &[u16]) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = send(ep, path).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer of {}", ep.url(path)))?
        .to_bytes();
    if !status.is_success() && !ok.contains(&status.as_u16()) {
        return Err(api_error(ep, path, status, &body));
    }
    Ok((status, body))
}

/// GETs `path` and parses the body as JSON.
pub async fn get_json(ep: &Endpoint, path: &str, ok: &[u16]) -> anyhow::Result<serde_json::Value> {
    let (_, body) = get(ep, path, ok).await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("{}: the answer is not JSON", ep.url(path)))
}

/// GETs `path` (which asks for `watch=1`) and calls `on_event` for each event until it returns
/// `Break` or the daemon closes the stream (an error: a watch is not expected to end).
pub async fn watch(
    ep: &Endpoint,
    path: &str,
    mut on_event: impl FnMut(SseEvent) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<()> {
    let resp = send(ep, path).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(api_error(ep, path, status, &bytes));
    }
    let mut parser = SseParser::default();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.with_context(|| format!("reading the event stream of {}", ep.url(path)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for ev in parser.push(&data) {
            if on_event(ev)?.is_break() {
                return Ok(());
            }
        }
    }
    bail!("{}: the daemon closed the event stream", ep.url(path))
}

/// An incremental parser of the `text/event-stream` format.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                if self.has_data || !self.cur.event.is_empty() {
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    out.push(ev);
                }
                self.cur = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => self.cur.id = value.to_string(),
                "event" => self.cur.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let text = "id: 1\nevent: init\ndata: {\"a\":1}\n\n: comment\nid:0\r\nevent: heartbeat\r\ndata: {}\r\n\r\nid: 2\nevent: update\ndata: x\ndata: y\n\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut evs = p.push(&text.as_bytes()[..split]);
            evs.extend(p.push(&text.as_bytes()[split..]));
            let got: Vec<String> = evs
                .iter()
                .map(|e| format!("{}|{}|{}", e.id, e.event, e.data))
                .collect();
            assert_eq!(
                got,
                ["1|init|{\"a\":1}", "0|heartbeat|{}", "2|update|x\ny"],
                "split at {split}"
            );
        }
    }

    #[test]
    fn addr_forms() {
        let plain = |a: &str| Endpoint::new(a, TlsFiles::default()).map(|e| e.url("/x"));
        assert_eq!(plain("127.0.0.1:9488").unwrap(), "http://127.0.0.1:9488/x");
        assert_eq!(
            plain("http://localhost:80/").unwrap(),
            "http://localhost:80/x"
        );
        assert_eq!(plain("https://x:1").unwrap(), "https://x:1/x");
        assert_eq!(plain("https://[::1]:1").unwrap(), "https://[::1]:1/x");
        assert!(plain("localhost").is_err());
        let ca = TlsFiles {
            ca: Some(Path::new("/nonexistent/ca.pem")),
            ..TlsFiles::default()
        };
        let e = Endpoint::new("127.0.0.1:1", ca).err().unwrap().to_string();
        assert!(e.contains("plain HTTP"), "{e}");
        let e = Endpoint::new("https://127.0.0.1:1", ca)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--ca /nonexistent/ca.pem"), "{e}");
    }
}
