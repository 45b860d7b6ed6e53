//! The HTTP API over TLS and mutual TLS, against a real `tend run` and the real client
//! commands: certificates made at test time by `tend_testkit::TestTls` (the `openssl`
//! command), a second CA for a client certificate the daemon must refuse, and a small rustls
//! client for what the client commands cannot ask (the probes without a client certificate).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tend_testkit::TestTls;

use crate::sandbox::{read, wait_for, Daemon, Sandbox, TEND};

const LIMIT: Duration = Duration::from_secs(20);

const GRAPH: &str = r#"
resources:
  file:
    - name: ${TEND_ROOT}/out/motd
      content: "hello\n"
"#;

/// A free loopback port (bound then released; the daemon binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A daemon serving its API over TLS; `port` is where it listens (on 127.0.0.1 or, with a
/// non-loopback `--listen`, on every address).
struct TlsApi {
    sb: Sandbox,
    d: Daemon,
    port: u16,
}

impl TlsApi {
    /// Starts `tend run` with `--listen HOST:<free port>` and `extra`, and waits until the port
    /// accepts connections.
    fn start(host: &str, extra: &[&str]) -> TlsApi {
        let sb = Sandbox::new();
        let g = sb.write("g.yaml", GRAPH);
        let port = free_port();
        let listen = format!("{host}:{port}");
        let mut args = vec!["--listen", &listen, "--hostname", "tls-test-host"];
        args.extend_from_slice(extra);
        let d = sb.spawn_run(&g, &args);
        let api = TlsApi { sb, d, port };
        wait_for(
            "the API to listen",
            LIMIT,
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || api.sb.explain_daemon(&api.d),
        );
        api
    }

    fn https(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Runs `tend graph --addr ADDR ARGS` with `env`, and no TEND_* variable of the caller's.
    fn client(&self, addr: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut c = Command::new(TEND);
        c.args(["graph", "--addr", addr]).args(args);
        for v in [
            "TEND_ADDR",
            "TEND_TOKEN",
            "TEND_TOKEN_FILE",
            "TEND_CA",
            "TEND_CERT",
            "TEND_KEY",
        ] {
            c.env_remove(v);
        }
        c.envs(env.iter().copied()).stdin(Stdio::null());
        let o = c.output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// One HTTP/1.0 GET over TLS with rustls, trusting `ca` and presenting `client` (cert,
    /// key): the raw answer, or the TLS or I/O error.
    fn raw_get(
        &self,
        ca: &Path,
        client: Option<(&Path, &Path)>,
        path: &str,
    ) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => b.with_no_client_auth(),
            Some((cert, key)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut raw = String::new();
        match s.read_to_string(&mut raw) {
            Ok(_) => Ok(raw),
            // The daemon closes without a TLS close_notify; what came before is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[test]
fn https_with_a_token() {
    let tls = TestTls::generate().unwrap();
    let sb = Sandbox::new();
    let token = "s3cret-token-0123456789";
    let tf = sb.write("token", &format!("{token}\n"));
    let api = TlsApi::start(
        "127.0.0.1",
        &[
            "--api-tls-cert",
            p(&tls.server_cert),
            "--api-tls-key",
            p(&tls.server_key),
            "--api-token-file",
            p(&tf),
        ],
    );
    let url = api.https();
    let ctx = || api.sb.explain_daemon(&api.d);

    let (code, out, err) = api.client(&url, &["--ca", p(&tls.ca), "--token-file", p(&tf)], &[]);
    assert_eq!(code, 0, "{err}\n{}", ctx());
    assert!(out.contains("file["), "{out}");
    // The same from the environment, by host name.
    let (code, out, err) = api.client(
        &format!("https://localhost:{}/", api.port),
        &[],
        &[("TEND_CA", p(&tls.ca)), ("TEND_TOKEN", token)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("file["), "{out}");
    // Over TLS, the token is still needed.
    let (code, _, err) = api.client(&url, &["--ca", p(&tls.ca)], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bearer token"), "{err}");

    // Without --ca the daemon's certificate is not trusted.
    let (code, _, err) = api.client(&url, &["--token-file", p(&tf)], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&url) && err.contains("certificate"), "{err}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("127.0.0.1:{}", api.port);
    let (code, out, err) = api.client(&plain, &["--token-file", p(&tf)], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("http://{plain}")), "{err}");
    assert!(api.d.try_wait().is_none(), "{}", ctx());
}

#[test]
fn mutual_tls_guards_the_api() {
    let tls = TestTls::generate().unwrap();
    let other = TestTls::generate().unwrap();
    // A non-loopback address with client certificates and no token: mTLS is authentication.
    let api = TlsApi::start(
        "0.0.0.0",
        &[
            "--api-tls-cert",
            p(&tls.server_cert),
            "--api-tls-key",
            p(&tls.server_key),
            "--api-client-ca",
            p(&tls.ca),
        ],
    );
    let url = api.https();
    let ctx = || api.sb.explain_daemon(&api.d);
    let mine = [
        "--ca",
        p(&tls.ca),
        "--cert",
        p(&tls.client_cert),
        "--key",
        p(&tls.client_key),
    ];

    let (code, out, err) = api.client(&url, &mine, &[]);
    assert_eq!(code, 0, "{err}\n{}", ctx());
    assert!(out.contains("file["), "{out}");
    let (code, _, err) = api.client(
        &url,
        &[],
        &[
            ("TEND_CA", p(&tls.ca)),
            ("TEND_CERT", p(&tls.client_cert)),
            ("TEND_KEY", p(&tls.client_key)),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ok = api
        .raw_get(
            &tls.ca,
            Some((&tls.client_cert, &tls.client_key)),
            "/v1/graph",
        )
        .unwrap();
    assert!(
        ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"),
        "{ok}"
    );

    // Without a client certificate: refused in the handshake, probes included.
    let (code, _, err) = api.client(&url, &["--ca", p(&tls.ca)], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&url) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // In TLS 1.3 the client may write its request before the server's alert arrives, and
    // then sees the connection closed (a broken pipe or a reset) rather than the alert.
    let none = api.raw_get(&tls.ca, None, "/livez");
    assert!(
        none.as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")
                || e.contains("Broken pipe")
                || e.contains("Connection reset")),
        "{none:?}"
    );

    // With a certificate from another CA: refused.
    let (code, _, err) = api.client(
        &url,
        &[
            "--ca",
            p(&tls.ca),
            "--cert",
            p(&other.client_cert),
            "--key",
            p(&other.client_key),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&url), "{err}");
    let foreign = api.raw_get(
        &tls.ca,
        Some((&other.client_cert, &other.client_key)),
        "/livez",
    );
    assert!(foreign.is_err(), "{foreign:?}");
    assert!(api.d.try_wait().is_none(), "{}", ctx());
}

#[test]
fn open_probes_need_no_client_certificate() {
    let tls = TestTls::generate().unwrap();
    let other = TestTls::generate().unwrap();
    let api = TlsApi::start(
        "127.0.0.1",
        &[
            "--api-tls-cert",
            p(&tls.server_cert),
            "--api-tls-key",
            p(&tls.server_key),
            "--api-client-ca",
            p(&tls.ca),
            "--api-open-probes",
        ],
    );
    let ctx = || api.sb.explain_daemon(&api.d);
    let live = api.raw_get(&tls.ca, None, "/livez").unwrap();
    assert!(
        live.contains(" 200 ") && live.contains("UP"),
        "{live}\n{}",
        ctx()
    );
    let graph = api.raw_get(&tls.ca, None, "/v1/graph").unwrap();
    assert!(
        graph.contains(" 401 ") && graph.contains("client certificate"),
        "{graph}"
    );
    let mine = api
        .raw_get(
            &tls.ca,
            Some((&tls.client_cert, &tls.client_key)),
            "/v1/graph",
        )
        .unwrap();
    assert!(
        mine.contains(" 200 ") && mine.contains("\"resources\""),
        "{mine}"
    );
    // A certificate that does not verify is still refused, even for the probes.
    let foreign = api.raw_get(
        &tls.ca,
        Some((&other.client_cert, &other.client_key)),
        "/livez",
    );
    assert!(foreign.is_err(), "{foreign:?}");
}

/// A self-signed certificate and its key, valid for one day in 2020, made in `dir` with
/// `openssl ca` (`openssl x509` of OpenSSL 3.0 cannot back-date).
fn expired_cert(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "old.key",
        "-out",
        "old.csr",
        "-subj",
        "/CN=old",
    ]);
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-selfsign",
        "-keyfile",
        "old.key",
        "-in",
        "old.csr",
        "-out",
        "old.crt",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-notext",
    ]);
    (dir.join("old.crt"), dir.join("old.key"))
}

#[test]
fn bad_tls_flags_stop_tend_run() {
    let tls = TestTls::generate().unwrap();
    let sb = Sandbox::new();
    let g = sb.write("g.yaml", GRAPH);
    let garbage = sb.write("garbage.pem", "not a certificate\n");
    let missing = sb.path("missing.key");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            p(&g),
            "--listen",
            "127.0.0.1:0",
            "--converged-timeout",
            "0",
        ];
        args.extend_from_slice(extra);
        let out = sb.run(&args);
        assert_eq!(out.code(), 2, "{}", sb.explain("a bad TLS set-up", &out));
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        out.stderr
    };
    let (cert, key) = (p(&tls.server_cert), p(&tls.server_key));

    let e = run(&["--api-tls-cert", cert, "--api-tls-key", p(&missing)]);
    assert!(
        e.contains("--api-tls-key") && e.contains(p(&missing)),
        "{e}"
    );
    let e = run(&["--api-tls-cert", cert, "--api-tls-key", p(&tls.client_key)]);
    assert!(
        e.contains(p(&tls.client_key)) && e.contains("does not match") && e.contains(cert),
        "{e}"
    );
    let e = run(&["--api-tls-cert", p(&garbage), "--api-tls-key", key]);
    assert!(
        e.contains("--api-tls-cert") && e.contains(p(&garbage)) && e.contains("PEM"),
        "{e}"
    );
    let e = run(&["--api-tls-cert", cert, "--api-tls-key", p(&garbage)]);
    assert!(
        e.contains("--api-tls-key") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = run(&["--api-client-ca", p(&tls.ca)]);
    assert!(e.contains("--api-client-ca needs --api-tls-cert"), "{e}");
    let e = run(&["--api-tls-cert", cert]);
    assert!(e.contains("needs --api-tls-key"), "{e}");
    let e = run(&[
        "--api-tls-cert",
        cert,
        "--api-tls-key",
        key,
        "--api-client-ca",
        p(&garbage),
    ]);
    assert!(
        e.contains("--api-client-ca") && e.contains(p(&garbage)),
        "{e}"
    );
    std::fs::create_dir_all(sb.path("old")).unwrap();
    let (old, old_key) = expired_cert(&sb.path("old"));
    let e = run(&["--api-tls-cert", p(&old), "--api-tls-key", p(&old_key)]);
    assert!(
        e.contains(p(&old)) && e.contains("expired on 2020-01-02 00:00:00 UTC"),
        "{e}"
    );

    // TLS alone is not authentication: a non-loopback address still needs a token or mTLS.
    let out = sb.run(&[
        "run",
        p(&g),
        "--listen",
        "0.0.0.0:0",
        "--api-tls-cert",
        cert,
        "--api-tls-key",
        key,
    ]);
    assert_eq!(out.code(), 2, "{}", sb.explain("TLS without auth", &out));
    assert!(
        out.stderr.contains("--api-token-file") && out.stderr.contains("--api-client-ca"),
        "{}",
        out.stderr
    );
    assert!(read(&sb.path("out/motd")).is_none(), "nothing was applied");
}
