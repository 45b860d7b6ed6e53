//! Who may use the HTTP API. Loopback is open by default; any other listen address needs a
//! bearer token (`--api-token-file`), or `tend run` refuses to start. With a token, every
//! request must carry `Authorization: Bearer <token>` (the probes `/livez`, `/readyz` and
//! their `/health/*` forms stay open with `--api-open-probes`, for kubelets); a missing or
//! wrong token is a 401 with a JSON error. Tokens are compared in constant time (their
//! BLAKE3 hashes, whose equality is constant-time).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The API's access rule.
#[derive(Clone, Debug, Default)]
pub struct ApiAuth {
    /// The token's hash, when a token is required.
    token: Option<Arc<blake3::Hash>>,
    /// The probes answer without a token.
    open_probes: bool,
}

/// The paths `--api-open-probes` leaves open.
const PROBES: [&str; 4] = ["/livez", "/readyz", "/health/liveness", "/health/readiness"];

impl ApiAuth {
    /// Reads the token file (its first line, trimmed; empty is refused) and checks that a
    /// non-loopback `listen` has one. Errors name the flag.
    pub fn configure(
        listen: Option<SocketAddr>,
        token_file: Option<&Path>,
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
            if !addr.ip().is_loopback() && token.is_none() {
                return Err(format!(
                    "--listen {addr} is not a loopback address: anyone who reaches it would read every resource's parameters; \
                     give the API a bearer token with --api-token-file FILE (or listen on 127.0.0.1)"
                ));
            }
        }
        Ok(ApiAuth { token, open_probes })
    }

    /// Whether requests need the token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request's `Authorization` header against the token.
    fn allows(&self, path: &str, authorization: Option<&str>) -> Result<(), &'static str> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        if self.open_probes && PROBES.contains(&path) {
            return Ok(());
        }
        let Some(h) = authorization else {
            return Err("this API needs a bearer token: send `Authorization: Bearer <token>` (tend's clients read TEND_TOKEN or --token-file)");
        };
        let given = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim);
        match given {
            Some(g) if blake3::hash(g.as_bytes()) == **want => Ok(()),
            Some(_) => Err("wrong bearer token"),
            None => Err("the Authorization header is not `Bearer <token>`"),
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
    match auth.allows(req.uri().path(), authz) {
        Ok(()) => next.run(req).await,
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"tend\"")],
            Json(serde_json::json!({ "error": why })),
        )
            .into_response(),
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
        let e = ApiAuth::configure(Some(any), None, false).unwrap_err();
        assert!(e.contains("--api-token-file"), "{e}");
        assert!(!ApiAuth::configure(Some(lo), None, false)
            .unwrap()
            .required());
        let f = token_file("0123456789abcdef0123\n");
        assert!(ApiAuth::configure(Some(any), Some(f.path()), false)
            .unwrap()
            .required());
        let short = token_file("abc\n");
        assert!(ApiAuth::configure(Some(any), Some(short.path()), false)
            .unwrap_err()
            .contains("at least 16"));
        let empty = token_file("\n");
        assert!(ApiAuth::configure(Some(any), Some(empty.path()), false).is_err());
    }

    #[test]
    fn tokens_and_probes() {
        let f = token_file("0123456789abcdef0123");
        let a = ApiAuth::configure(None, Some(f.path()), true).unwrap();
        assert!(a.allows("/v1/graph", None).is_err());
        assert!(a.allows("/v1/graph", Some("Bearer nope")).is_err());
        assert!(a.allows("/v1/graph", Some("Basic xyz")).is_err());
        assert!(a
            .allows("/v1/graph", Some("Bearer 0123456789abcdef0123"))
            .is_ok());
        assert!(a.allows("/livez", None).is_ok());
        let closed = ApiAuth::configure(None, Some(f.path()), false).unwrap();
        assert!(closed.allows("/livez", None).is_err());
    }
}
