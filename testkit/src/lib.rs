//! Test support (a dev-dependency only: the World's tests and benchmarks, the binary's CLI
//! tests, the integration crate): a real etcd process on random loopback ports with a
//! temporary data directory, and a three-member cluster. Processes are killed when the value
//! is dropped.
//!
//! Not for production use: etcd runs with `--unsafe-no-fsync` and tiny election timeouts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary used by tests (`TEND_TEST_ETCD` overrides).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("TEND_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Sends `GET path` over plain HTTP/1.0 and returns (status, body).
pub fn http_get(url: &str, path: &str) -> std::io::Result<(u16, String)> {
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One etcd member.
pub struct EtcdServer {
    /// Member name.
    pub name: String,
    /// Client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    /// Peer URL.
    pub peer_url: String,
    /// Plain-HTTP URL serving `/health` and `/metrics` (the client URL unless TLS is on).
    pub metrics_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    initial_cluster: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it is healthy.
    pub fn start() -> std::io::Result<EtcdServer> {
        let tmp = tempfile::tempdir()?;
        let name = "m0".to_string();
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let initial_cluster = format!("{name}={peer_url}");
        let mut s = EtcdServer::new(name, peer_url, initial_cluster, tmp.path());
        s._tmp = Some(tmp);
        s.spawn()?;
        s.wait_healthy(Duration::from_secs(20))?;
        Ok(s)
    }

    /// Starts a single-member etcd serving clients over TLS with client certificates
    /// (`--client-cert-auth`), and waits until it is healthy.
    pub fn start_tls(tls: &TestTls) -> std::io::Result<EtcdServer> {
        let tmp = tempfile::tempdir()?;
        let name = "m0".to_string();
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let initial_cluster = format!("{name}={peer_url}");
        let mut s = EtcdServer::new(name, peer_url, initial_cluster, tmp.path());
        s._tmp = Some(tmp);
        s.client_url = s.client_url.replace("http://", "https://");
        s.metrics_url = format!("http://127.0.0.1:{}", free_port());
        let path = |p: &Path| p.display().to_string();
        s.extra_args = vec![
            "--listen-metrics-urls".into(),
            s.metrics_url.clone(),
            "--cert-file".into(),
            path(&tls.server_cert),
            "--key-file".into(),
            path(&tls.server_key),
            "--trusted-ca-file".into(),
            path(&tls.ca),
            "--client-cert-auth".into(),
        ];
        s.spawn()?;
        s.wait_healthy(Duration::from_secs(20))?;
        Ok(s)
    }

    fn new(name: String, peer_url: String, initial_cluster: String, dir: &Path) -> EtcdServer {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        EtcdServer {
            data_dir: dir.join(format!("{name}.etcd")),
            log: dir.join(format!("{name}.log")),
            metrics_url: client_url.clone(),
            extra_args: Vec::new(),
            client_url,
            name,
            peer_url,
            initial_cluster,
            child: None,
            _tmp: None,
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(etcd_binary());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("tend-test")
            .args(["--unsafe-no-fsync", "--heartbeat-interval", "10"])
            .args([
                "--election-timeout",
                "100",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ])
            .args(["--log-level", "warn"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", etcd_binary().display()))
        })?);
        Ok(())
    }

    /// Polls `GET /health` until etcd reports healthy.
    pub fn wait_healthy(&mut self, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, body)) = http_get(&self.metrics_url, "/health") {
                if body.contains("true") {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(std::io::Error::other(format!(
                        "etcd {} exited ({status}); log:\n{}",
                        self.name,
                        self.log_tail()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd {} not healthy within {within:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the member's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the member (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again with the same data directory and ports, without waiting.
    pub fn restart_no_wait(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Starts the member again with the same data directory and ports, and waits until healthy.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.restart_no_wait()?;
        self.wait_healthy(Duration::from_secs(20))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// etcd's own Prometheus metrics text.
    pub fn metrics(&self) -> std::io::Result<String> {
        http_get(&self.metrics_url, "/metrics").map(|(_, body)| body)
    }

    /// The value of one metric (the first sample with that exact name, labels ignored).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            let n = n.split('{').next()?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of etcd members on loopback.
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<EtcdServer>,
    _tmp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one is healthy.
    pub fn start(n: usize) -> std::io::Result<EtcdCluster> {
        let tmp = tempfile::tempdir()?;
        let peers: Vec<(String, String)> = (0..n)
            .map(|i| (format!("m{i}"), format!("http://127.0.0.1:{}", free_port())))
            .collect();
        let initial = peers
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (name, peer) in peers {
            let mut m = EtcdServer::new(name, peer, initial.clone(), tmp.path());
            m.spawn()?;
            members.push(m);
        }
        for m in &mut members {
            m.wait_healthy(Duration::from_secs(30))?;
        }
        Ok(EtcdCluster { members, _tmp: tmp })
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

/// A throw-away certificate authority with a server certificate for 127.0.0.1 and a client
/// certificate, made with the `openssl` command (PEM files in a temporary directory).
pub struct TestTls {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate (SAN IP 127.0.0.1 and DNS localhost).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestTls {
    /// Generates the CA and certificates (EC P-256, valid one day).
    pub fn generate() -> std::io::Result<TestTls> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let run = |args: &[&str]| -> std::io::Result<()> {
            let out = Command::new("openssl").args(args).current_dir(d).output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt"],
            &["-days", "1", "-subj", "/CN=tend-test-ca"],
        ]
        .concat())?;
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
            ),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let extfile = format!("{name}.ext");
            std::fs::write(d.join(&extfile), ext)?;
            run(&[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr],
                &["-subj", &format!("/CN={name}")],
            ]
            .concat())?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ])?;
        }
        Ok(TestTls {
            ca: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            _dir: dir,
        })
    }
}
