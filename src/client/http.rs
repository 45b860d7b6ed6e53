//! A minimal HTTP/1.1 client for the daemon's API: one GET per connection, and a reader of
//! Server-Sent Events for `watch=1`.

use std::ops::ControlFlow;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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

/// Normalises `--addr`: `host:port`, or `http://host:port[/]`.
pub fn authority(addr: &str) -> anyhow::Result<String> {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a);
    let a = a.trim_end_matches('/');
    if a.starts_with("https://") {
        bail!("--addr {addr:?}: the daemon's API speaks plain HTTP on loopback; use http:// or host:port");
    }
    if a.is_empty() || a.contains('/') || !a.contains(':') {
        bail!("--addr {addr:?}: expected host:port, for example 127.0.0.1:9488");
    }
    Ok(a.to_string())
}

/// The bearer token every request sends (set once from the client's options).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every request send `Authorization: Bearer <token>`.
pub fn set_token(token: String) {
    let _ = TOKEN.set(token);
}

/// Sends `GET path` to the daemon at `addr` (host:port) and returns the response head and body.
async fn send(addr: &str, path: &str) -> anyhow::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.with_context(|| {
        format!("cannot reach the tend daemon at {addr} (is `tend run` running there? choose another with --addr)")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
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
    sender
        .send_request(req)
        .await
        .with_context(|| format!("GET http://{addr}{path}"))
}

/// Turns a non-2xx answer into an error carrying the API's `{"error": ...}` message.
fn api_error(addr: &str, path: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    anyhow::anyhow!("GET http://{addr}{path}: {status}: {msg}")
}

/// GETs `path` and returns the status and body; `ok` lists the non-2xx statuses that are
/// answers rather than errors (e.g. 503 from `/health`).
pub async fn get(addr: &str, path: &str, ok: &[u16]) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = send(addr, path).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer of http://{addr}{path}"))?
        .to_bytes();
    if !status.is_success() && !ok.contains(&status.as_u16()) {
        return Err(api_error(addr, path, status, &body));
    }
    Ok((status, body))
}

/// GETs `path` and parses the body as JSON.
pub async fn get_json(addr: &str, path: &str, ok: &[u16]) -> anyhow::Result<serde_json::Value> {
    let (_, body) = get(addr, path, ok).await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("http://{addr}{path}: the answer is not JSON"))
}

/// GETs `path` (which asks for `watch=1`) and calls `on_event` for each event until it returns
/// `Break` or the daemon closes the stream (an error: a watch is not expected to end).
pub async fn watch(
    addr: &str,
    path: &str,
    mut on_event: impl FnMut(SseEvent) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<()> {
    let resp = send(addr, path).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(api_error(addr, path, status, &bytes));
    }
    let mut parser = SseParser::default();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.with_context(|| format!("reading the event stream of http://{addr}{path}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for ev in parser.push(&data) {
            if on_event(ev)?.is_break() {
                return Ok(());
            }
        }
    }
    bail!("http://{addr}{path}: the daemon closed the event stream")
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
        assert_eq!(authority("127.0.0.1:9488").unwrap(), "127.0.0.1:9488");
        assert_eq!(authority("http://localhost:80/").unwrap(), "localhost:80");
        assert!(authority("localhost").is_err());
        assert!(authority("https://x:1").is_err());
    }
}
