//! What several subcommands share: how to reach the World (flags), the async runtime, time
//! spans on the command line, where a host's name and state live, error lines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tend_world::store::etcd::{EtcdConfig, EtcdTls};
use tend_world::Backend;

/// Starts a multi-thread async runtime for `tend <cmd>` (`workers`: threads, default one per
/// CPU); when it cannot, says so and gives the exit status.
pub fn runtime(cmd: &str, workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().map_err(|e| {
        eprintln!("tend {cmd}: cannot start the async runtime: {e}");
        ExitCode::from(1)
    })
}

/// A number of seconds on the command line (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let f: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(f).map_err(|_| format!("{s:?} is not a number of seconds >= 0"))
}

/// One `error: ...` line per error, on stderr.
/// A `k=v` label (`tend run --label`, `tend deploy --selector`): the key is letters, digits,
/// `-`, `_`, `.` and `/`; the value anything but a comma.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(format!(
            "{s:?}: a label's key is letters, digits, `-`, `_`, `.` or `/`"
        ));
    }
    if v.contains(',') {
        return Err(format!("{s:?}: a label's value holds no comma"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub fn print_error_lines(errors: &[String]) {
    for e in errors {
        eprintln!("error: {}", tend_model::secrets::redact(e));
    }
}

/// The machine's hostname.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/tend");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tend");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/state/tend")
}

/// How to reach the World's store: etcd (with TLS and user/password) or the embedded store in
/// the state directory. Reusable by other subcommands (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct WorldFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// State directory holding the embedded store.
    #[arg(
        long,
        env = "TEND_STATE_DIR",
        default_value = "/var/lib/tend",
        global = true
    )]
    pub state_dir: PathBuf,
}

/// The etcd side of [`WorldFlags`] (endpoints, TLS, user/password) and the namespace, for
/// commands that have their own `--state-dir` (`tend run`).
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterFlags {
    /// etcd client URL (repeat or comma-separate); without it, the embedded store in --state-dir.
    #[arg(
        long = "etcd",
        value_name = "URL",
        value_delimiter = ',',
        global = true
    )]
    pub etcd: Vec<String>,
    /// Key namespace.
    #[arg(long, default_value = "/tend", global = true)]
    namespace: String,
    /// CA certificate (PEM) to verify etcd.
    #[arg(long, value_name = "FILE", global = true)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE", global = true)]
    etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, value_name = "FILE", global = true)]
    etcd_key: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, env = "TEND_ETCD_USER", global = true)]
    etcd_user: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "TEND_ETCD_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    etcd_password: Option<String>,
}

impl ClusterFlags {
    /// The etcd configuration, when `--etcd` was given.
    pub fn etcd_config(&self) -> Option<EtcdConfig> {
        if self.etcd.is_empty() {
            return None;
        }
        let mut cfg = EtcdConfig::new(self.etcd.clone());
        if self.etcd_ca.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some() {
            cfg.tls = Some(EtcdTls {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            });
        }
        if let Some(user) = &self.etcd_user {
            cfg.user = Some((user.clone(), self.etcd_password.clone().unwrap_or_default()));
        }
        Some(cfg)
    }

    /// The backend these flags select, with the embedded store under `state_dir`.
    pub fn backend(&self, state_dir: &std::path::Path) -> Backend {
        match self.etcd_config() {
            Some(cfg) => Backend::Etcd(cfg),
            None => Backend::Embedded {
                state_dir: state_dir.to_path_buf(),
            },
        }
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl WorldFlags {
    /// The backend these flags select.
    pub fn backend(&self) -> Backend {
        self.cluster.backend(&self.state_dir)
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        self.cluster.namespace()
    }
}
