//! HTTPS and mutual TLS for the HTTP API (`--api-tls-cert`, `--api-tls-key`,
//! `--api-client-ca`), with rustls on the `ring` provider (the one etcd-client's TLS already
//! compiles). The certificates are read once at start: no hot reload.
//!
//! With `--api-client-ca` the handshake verifies a client certificate against that CA. Without
//! `--api-open-probes` a client must present one to connect at all; with it, the handshake lets
//! a client without a certificate through (a certificate that does not verify is still refused)
//! and [`crate::api::auth`] serves such a connection the probes only. Each connection's
//! [`Peer`] (did it present a verified certificate?) reaches the middleware as axum
//! `ConnectInfo`.
//!
//! This module knows nothing of tokens or routes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's TLS set-up, built from the files at start.
pub struct ApiTls {
    config: Arc<rustls::ServerConfig>,
    /// Client certificates are verified against `--api-client-ca`.
    pub mtls: bool,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls").field("mtls", &self.mtls).finish()
    }
}

/// The crypto provider of every TLS connection tend makes or accepts.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ApiTls {
    /// Reads the flags' files. `None` when no TLS flag is given; an error (naming the flag, the
    /// file and what is wrong) when a flag misses its partner or a file is unusable.
    /// `open_probes`: let clients without a certificate through the handshake (for the probes).
    pub fn configure(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
        open_probes: bool,
    ) -> Result<Option<ApiTls>, String> {
        let (cert, key) = match (cert, key, client_ca) {
            (None, None, None) => return Ok(None),
            (Some(c), Some(k), _) => (c, k),
            (None, None, Some(_)) => {
                return Err("--api-client-ca needs --api-tls-cert FILE and --api-tls-key FILE: client certificates are checked in the TLS handshake, so the API must serve HTTPS".into())
            }
            (Some(_), None, _) => {
                return Err("--api-tls-cert needs --api-tls-key FILE (the certificate's private key)".into())
            }
            (None, Some(_), _) => {
                return Err("--api-tls-key needs --api-tls-cert FILE (the certificate of that key)".into())
            }
        };
        let chain = load_certs("--api-tls-cert", cert)?;
        check_validity("--api-tls-cert", cert, &chain[0])?;
        let private = load_key("--api-tls-key", key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = load_roots("--api-client-ca", ca)?;
                let mut v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                if open_probes {
                    v = v.allow_unauthenticated();
                }
                let v = v
                    .build()
                    .map_err(|e| format!("--api-client-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut config = builder
            .with_single_cert(chain, private)
            .map_err(|e| key_error(cert, key, e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(ApiTls {
            config: Arc::new(config),
            mtls: client_ca.is_some(),
        }))
    }
}

/// Says what is wrong with a certificate and key pair rustls refused.
fn key_error(cert: &Path, key: &Path, e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "--api-tls-key {}: this key does not match the certificate in {} (--api-tls-cert)",
            key.display(),
            cert.display()
        ),
        e => format!(
            "--api-tls-key {} (with --api-tls-cert {}): {e}",
            key.display(),
            cert.display()
        ),
    }
}

/// Reads a file for a flag; the error names both.
fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The PEM certificates of a file (at least one).
pub fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The PEM private key of a file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{flag} {}: no PEM private key in the file (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC one)",
            path.display()
        ),
        e => format!("{flag} {}: not a PEM private key file: {e}", path.display()),
    })
}

/// The CA certificates of a PEM file, as a root store.
pub fn load_roots(flag: &str, path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(flag, path)? {
        check_validity(flag, path, &c)?;
        roots.add(c).map_err(|e| {
            format!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// Refuses a certificate whose validity period has ended (a certificate whose dates cannot be
/// read is left to the handshake to judge).
fn check_validity(flag: &str, path: &Path, cert: &CertificateDer<'_>) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match not_after(cert) {
        Some((t, shown)) if t < now => Err(format!(
            "{flag} {}: the certificate expired on {shown}",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// One DER item: (tag, content, the bytes after it).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The end of an X.509 certificate's validity period: seconds since the epoch, and as text.
fn not_after(cert: &[u8]) -> Option<(i64, String)> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2; // version
    }
    for _ in 0..3 {
        rest = der(rest)?.2; // serial number, signature algorithm, issuer
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?; // notBefore
    let (tag, time, _) = der(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        0x17 if text.len() >= 2 => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{text}", if yy < 50 { "20" } else { "19" })
        }
        0x18 => text.to_string(),
        _ => return None,
    };
    asn1_time(&full)
}

/// `YYYYMMDDHHMMSSZ` as seconds since the epoch, and as `YYYY-MM-DD HH:MM:SS UTC`.
fn asn1_time(t: &str) -> Option<(i64, String)> {
    if t.len() != 15 || !t.ends_with('Z') || !t[..14].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    // Days from 1970-01-01 to y-mo-d (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        days * 86_400 + h * 3600 + mi * 60 + s,
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC"),
    ))
}

/// A connection's peer, as the API's middleware sees it (axum `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// It presented a client certificate that verified against `--api-client-ca`.
    pub client_cert: bool,
}

/// An axum listener handing out TLS connections whose handshake is done. Handshakes run in
/// their own tasks, so a slow client does not hold up the others.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    /// Accepts TCP connections on `tcp` and shakes hands with each in the background.
    pub fn new(tcp: TcpListener, tls: ApiTls) -> TlsListener {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(%error, "http api: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let client_cert = tls.get_ref().1.peer_certificates().is_some();
                            let _ = tx.send((tls, Peer { client_cert })).await;
                        }
                        Ok(Err(error)) => {
                            tracing::info!(peer = %addr, %error, "http api: tls handshake refused");
                        }
                        Err(_) => {
                            tracing::info!(peer = %addr, "http api: tls handshake timed out");
                        }
                    }
                });
            }
        });
        TlsListener { rx }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task is gone; nothing will come.
            None => std::future::pending().await,
        }
    }

    /// The listener's own end (axum asks for it only for its own logging): no certificate.
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { client_cert: false })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times() {
        assert_eq!(
            asn1_time("19700101000000Z").unwrap(),
            (0, "1970-01-01 00:00:00 UTC".into())
        );
        assert_eq!(asn1_time("20240229123456Z").unwrap().0, 1_709_210_096);
        assert!(asn1_time("2024022912345Z").is_none());
        assert!(asn1_time("20240229123456+0100").is_none());
    }

    #[test]
    fn reads_a_certificates_end_date() {
        let tls = tend_testkit::TestTls::generate().unwrap();
        let chain = load_certs("--api-tls-cert", &tls.server_cert).unwrap();
        let (t, shown) = not_after(&chain[0]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // The test certificates are valid for one day from now.
        assert!((t - now - 86_400).abs() < 600, "{shown}");
        assert!(check_validity("--x", &tls.server_cert, &chain[0]).is_ok());
    }

    #[test]
    fn flags_need_their_partners() {
        let p = Path::new("/nonexistent");
        let e = ApiTls::configure(None, None, Some(p), false).unwrap_err();
        assert!(
            e.contains("--api-tls-cert") && e.contains("--api-tls-key"),
            "{e}"
        );
        let e = ApiTls::configure(Some(p), None, None, false).unwrap_err();
        assert!(e.contains("needs --api-tls-key"), "{e}");
        let e = ApiTls::configure(None, Some(p), None, false).unwrap_err();
        assert!(e.contains("needs --api-tls-cert"), "{e}");
        assert!(ApiTls::configure(None, None, None, false)
            .unwrap()
            .is_none());
    }
}
