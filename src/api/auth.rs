//! Who may use the HTTP API. Loopback is open by default; any other listen address needs
//! authentication, a bearer token (`--api-token-file`) or client certificates (mTLS,
//! `--api-client-ca`, see [`crate::api::tls`]), or `tend run` refuses to start. With a token,
//! every request must carry `Authorization: Bearer <token>`; with mTLS, every request must come
//! over a connection whose client certificate verified; with both, both. The probes `/livez`,
//! `/readyz` and their `/health/*` forms stay open with `--api-open-probes`, for kubelets. A
//! refusal is a 401 with a JSON error. Tokens are compared in constant time (their BLAKE3
//! hashes, whose equality is constant-time).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::tls::Peer;

/// The API's access rule.
#[derive(Clone, Debug, Default)]
pub struct ApiAuth {
    /// The token's hash, when a token is required.
    token: Option<Arc<blake3::Hash>>,
    /// Requests must come over a connection with a verified client certificate.
    mtls: bool,
    /// The probes answer without a token or a client certificate.
    open_probes: bool,
}

/// Why a request was refused.
#[derive(Debug, PartialEq)]
struct Refusal {
    why: &'static str,
    /// The refusal is about the bearer token (the answer then says `WWW-Authenticate: Bearer`).
    bearer: bool,
}

/// The paths `--api-open-probes` leaves open.
const PROBES: [&str; 4] = ["/livez", "/readyz", "/health/liveness", "/health/readiness"];

impl ApiAuth {
    /// Reads the token file (its first line, trimmed; empty is refused) and checks that a
    /// non-loopback `listen` has a token or mTLS (`mtls`: client certificates are verified).
    /// Errors name the flag.
    pub fn configure(
        listen: Option<SocketAddr>,
        token_file: Option<&Path>,
        mtls: bool,
        open_probes: bool,
    ) -> Result<ApiAuth, String> {
        let token = match token_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("--api-token-file {}: {e}", p.display()))?;
                let t = text.lines().next().unwrap_or("").trim().to_string();
                if t.is_empty() {
                    return Err(format!(
                        "--api-token-file {}: the file holds no token (its first line is empty)",
                        p.display()
                    ));
                }
                if t.len() < 16 {
                    return Err(format!(
                        "--api-token-file {}: the token is {} characters; use at least 16 (e.g. `openssl rand -hex 32`)",
                        p.display(),
                        t.len()
                    ));
                }
                warn_if_readable(p);
                Some(Arc::new(blake3::hash(t.as_bytes())))
            }
        };
        if let Some(addr) = listen {
            if !addr.ip().is_loopback() && token.is_none() && !mtls {
                return Err(format!(
                    "--listen {addr} is not a loopback address: anyone who reaches it would read every resource's parameters; \
                     give the API a bearer token with --api-token-file FILE, or require client certificates with \
                     --api-client-ca FILE (with --api-tls-cert and --api-tls-key), or listen on 127.0.0.1"
                ));
            }
        }
        if open_probes && token.is_none() && !mtls {
            return Err("--api-open-probes needs --api-token-file or --api-client-ca: without either, every path is open already".into());
        }
        Ok(ApiAuth {
            token,
            mtls,
            open_probes,
        })
    }

    /// Whether requests need the token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request: its connection's client certificate (`client_cert`: one verified),
    /// and its `Authorization` header against the token.
    fn allows(
        &self,
        path: &str,
        authorization: Option<&str>,
        client_cert: bool,
    ) -> Result<(), Refusal> {
        if self.open_probes && PROBES.contains(&path) {
            return Ok(());
        }
        if self.mtls && !client_cert {
            return Err(Refusal {
                why: "this API needs a client certificate signed by its --api-client-ca (tend's clients send one with --cert and --key)",
                bearer: false,
            });
        }
        let Some(want) = &self.token else {
            return Ok(());
        };
        let refuse = |why| Err(Refusal { why, bearer: true });
        let Some(h) = authorization else {
            return refuse("this API needs a bearer token: send `Authorization: Bearer <token>` (tend's clients read TEND_TOKEN or --token-file)");
        };
        let given = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim);
        match given {
            Some(g) if blake3::hash(g.as_bytes()) == **want => Ok(()),
            Some(_) => refuse("wrong bearer token"),
            None => refuse("the Authorization header is not `Bearer <token>`"),
        }
    }
}

/// Warns when the token file can be read by others than its owner.
fn warn_if_readable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(p) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %p.display(), mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the API token file can be read by other users; chmod 600 it");
        }
    }
}

/// The middleware that enforces [`ApiAuth`].
pub async fn require(
    axum::extract::State(auth): axum::extract::State<ApiAuth>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authz = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Set by the TLS listener for each connection; absent on plain HTTP.
    let client_cert = req
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .is_some_and(|c| c.0.client_cert);
    match auth.allows(req.uri().path(), authz, client_cert) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            let body = Json(serde_json::json!({ "error": r.why }));
            if r.bearer {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"tend\"")],
                    body,
                )
                    .into_response()
            } else {
                (StatusCode::UNAUTHORIZED, body).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(t: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), t).unwrap();
        f
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:9488".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9488".parse().unwrap();
        let e = ApiAuth::configure(Some(any), None, false, false).unwrap_err();
        assert!(e.contains("--api-token-file"), "{e}");
        assert!(!ApiAuth::configure(Some(lo), None, false, false)
            .unwrap()
            .required());
        let f = token_file("0123456789abcdef0123\n");
        assert!(ApiAuth::configure(Some(any), Some(f.path()), false, false)
            .unwrap()
            .required());
        let short = token_file("abc\n");
        assert!(
            ApiAuth::configure(Some(any), Some(short.path()), false, false)
                .unwrap_err()
                .contains("at least 16")
        );
        let empty = token_file("\n");
        assert!(ApiAuth::configure(Some(any), Some(empty.path()), false, false).is_err());
    }

    #[test]
    fn tokens_and_probes() {
        let f = token_file("0123456789abcdef0123");
        let a = ApiAuth::configure(None, Some(f.path()), false, true).unwrap();
        assert!(a.allows("/v1/graph", None, false).is_err());
        assert!(a.allows("/v1/graph", Some("Bearer nope"), false).is_err());
        assert!(a.allows("/v1/graph", Some("Basic xyz"), false).is_err());
        assert!(a
            .allows("/v1/graph", Some("Bearer 0123456789abcdef0123"), false)
            .is_ok());
        assert!(a.allows("/livez", None, false).is_ok());
        let closed = ApiAuth::configure(None, Some(f.path()), false, false).unwrap();
        assert!(closed.allows("/livez", None, false).is_err());
    }

    #[test]
    fn client_certificates() {
        let any: SocketAddr = "0.0.0.0:9488".parse().unwrap();
        // mTLS alone is authentication enough for a non-loopback address.
        let m = ApiAuth::configure(Some(any), None, true, true).unwrap();
        assert!(m.allows("/v1/graph", None, true).is_ok());
        let r = m.allows("/v1/graph", None, false).unwrap_err();
        assert!(r.why.contains("client certificate") && !r.bearer, "{r:?}");
        assert!(m.allows("/readyz", None, false).is_ok());
        // With a token as well, both are needed.
        let f = token_file("0123456789abcdef0123");
        let both = ApiAuth::configure(Some(any), Some(f.path()), true, false).unwrap();
        assert!(both.allows("/v1/graph", None, true).unwrap_err().bearer);
        assert!(both
            .allows("/v1/graph", Some("Bearer 0123456789abcdef0123"), false)
            .is_err());
        assert!(both
            .allows("/v1/graph", Some("Bearer 0123456789abcdef0123"), true)
            .is_ok());
        let e = ApiAuth::configure(None, None, false, true).unwrap_err();
        assert!(e.contains("--api-open-probes"), "{e}");
    }
}
