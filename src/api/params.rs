//! Query parameters of the API and the JSON error responses for bad requests.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to the client as `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status: 400, 404, 405 or 500.
    pub status: StatusCode,
    /// What was wrong, naming the path or parameter.
    pub message: String,
}

impl ApiError {
    /// A 400: a bad parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404: an unknown path.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Output format of `/v1/graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// Graphviz `dot` text.
    Dot,
}

/// The parsed query string of a request.
#[derive(Debug, PartialEq)]
pub struct Params {
    /// `watch=1`: stream Server-Sent Events instead of answering once.
    pub watch: bool,
    /// `heartbeat=N`: with `watch=1`, a `heartbeat` event every N seconds.
    pub heartbeat: Option<Duration>,
    /// `format=json|dot` (only where `allowed` lists `format`).
    pub format: Format,
}

/// Which parameters an endpoint accepts.
#[derive(Clone, Copy)]
pub struct Accepts {
    /// `watch` and `heartbeat`.
    pub watch: bool,
    /// `format`.
    pub format: bool,
}

/// Largest accepted `heartbeat`, in seconds (one day).
const MAX_HEARTBEAT: u64 = 86_400;

/// Parses a raw query string against what the endpoint at `path` accepts.
///
/// Unknown parameters, repeated parameters and bad values are errors that name the parameter,
/// the value, and what would be accepted.
pub fn parse(path: &str, raw: Option<&str>, accepts: Accepts) -> Result<Params, ApiError> {
    let mut params = Params {
        watch: false,
        heartbeat: None,
        format: Format::Json,
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        };
        if seen.contains(&key) {
            return Err(ApiError::bad_request(format!(
                "{path}: parameter `{key}` is given more than once"
            )));
        }
        seen.push(key.clone());
        match key.as_str() {
            "watch" if accepts.watch => {
                params.watch = match value.as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{path}: parameter `watch`: expected 1, true, 0 or false, got {value:?}"
                        )))
                    }
                }
            }
            "heartbeat" if accepts.watch => {
                let secs: u64 = value.parse().ok().filter(|s| (1..=MAX_HEARTBEAT).contains(s)).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{path}: parameter `heartbeat`: expected a whole number of seconds from 1 to {MAX_HEARTBEAT}, got {value:?}"
                    ))
                })?;
                params.heartbeat = Some(Duration::from_secs(secs));
            }
            "format" if accepts.format => {
                params.format = match value.as_str() {
                    "json" => Format::Json,
                    "dot" => Format::Dot,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{path}: parameter `format`: expected json or dot, got {value:?}"
                        )))
                    }
                }
            }
            _ => {
                let mut known = Vec::new();
                if accepts.watch {
                    known.extend(["watch", "heartbeat"]);
                }
                if accepts.format {
                    known.push("format");
                }
                let hint = if known.is_empty() {
                    "it takes no parameters".to_string()
                } else {
                    format!("known parameters: {}", known.join(", "))
                };
                return Err(ApiError::bad_request(format!(
                    "{path}: unknown parameter `{key}`; {hint}"
                )));
            }
        }
    }
    if params.heartbeat.is_some() && !params.watch {
        return Err(ApiError::bad_request(format!(
            "{path}: parameter `heartbeat` needs watch=1"
        )));
    }
    if params.watch && params.format == Format::Dot {
        return Err(ApiError::bad_request(format!(
            "{path}: format=dot cannot be watched; use format=json with watch=1"
        )));
    }
    Ok(params)
}

/// Decodes `%XX` escapes and `+` (as a space) of one query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hexadecimal digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Accepts = Accepts {
        watch: true,
        format: true,
    };

    fn check(raw: &str, accepts: Accepts, expect: &str) {
        let got = match parse("/v1/x", Some(raw), accepts) {
            Ok(p) => format!(
                "watch={} heartbeat={:?} format={:?}",
                p.watch,
                p.heartbeat.map(|d| d.as_secs()),
                p.format
            ),
            Err(e) => format!("{} {}", e.status.as_u16(), e.message),
        };
        assert_eq!(got, expect, "query {raw:?}");
    }

    #[test]
    fn queries() {
        check("", ALL, "watch=false heartbeat=None format=Json");
        check("watch=1", ALL, "watch=true heartbeat=None format=Json");
        check(
            "watch=true&heartbeat=2",
            ALL,
            "watch=true heartbeat=Some(2) format=Json",
        );
        check("watch=0", ALL, "watch=false heartbeat=None format=Json");
        check(
            "watch=false&format=dot",
            ALL,
            "watch=false heartbeat=None format=Dot",
        );
        check("format=%64ot", ALL, "watch=false heartbeat=None format=Dot");
        check(
            "watch=yes",
            ALL,
            "400 /v1/x: parameter `watch`: expected 1, true, 0 or false, got \"yes\"",
        );
        check(
            "watch=1&heartbeat=0",
            ALL,
            "400 /v1/x: parameter `heartbeat`: expected a whole number of seconds from 1 to 86400, got \"0\"",
        );
        check(
            "heartbeat=3",
            ALL,
            "400 /v1/x: parameter `heartbeat` needs watch=1",
        );
        check(
            "bogus=1",
            ALL,
            "400 /v1/x: unknown parameter `bogus`; known parameters: watch, heartbeat, format",
        );
        check(
            "format=dot",
            Accepts {
                watch: true,
                format: false,
            },
            "400 /v1/x: unknown parameter `format`; known parameters: watch, heartbeat",
        );
        check(
            "watch=1",
            Accepts {
                watch: false,
                format: false,
            },
            "400 /v1/x: unknown parameter `watch`; it takes no parameters",
        );
        check(
            "watch=1&watch=0",
            ALL,
            "400 /v1/x: parameter `watch` is given more than once",
        );
        check(
            "watch=1&format=dot",
            ALL,
            "400 /v1/x: format=dot cannot be watched; use format=json with watch=1",
        );
    }
}
