//! What hosts share, as traits: exported resources ([`ResWorld`]), global strings and per-host
//! string maps ([`StrWorld`]), content-addressed files ([`FsWorld`]), the deploy chain
//! ([`DeployWorld`]) and host membership ([`HostWorld`]), with the records they carry and
//! their errors. `tend-world` implements them over a Store (etcd or embedded); the engine,
//! the resources and the daemon use them without knowing which.
//!
//! **This module knows nothing of resources, graphs or the language**: an export is
//! `(kind, name, from_host, to_host, bytes)`.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use futures::stream::BoxStream;

mod error;

pub use error::{StoreError, WorldError};

/// A stream that yields once right away (the current state) and then once per change
/// (changes may be coalesced for a slow reader; read the state after each item).
pub type Changes = BoxStream<'static, ()>;

/// One exported record. The World knows nothing of what `data` means.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Export {
    /// Resource kind.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// The exporting host (filled in by `res_export`).
    pub from: String,
    /// The recipient host, or `*` for every host.
    pub to: String,
    /// Opaque payload.
    pub data: Vec<u8>,
}

/// Identifies one of this host's exports, for [`ResWorld::res_delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportKey {
    /// Resource kind.
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// The recipient host, or `*`.
    pub to: String,
}

/// A collect filter: an empty field matches anything; several filters are OR-ed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Kind to match, empty for any.
    pub kind: String,
    /// Name to match, empty for any.
    pub name: String,
    /// Exporting host to match, empty for any.
    pub from: String,
}

impl ExportFilter {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &Export) -> bool {
        (self.kind.is_empty() || self.kind == e.kind)
            && (self.name.is_empty() || self.name == e.name)
            && (self.from.is_empty() || self.from == e.from)
    }
}

/// One deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deploy {
    /// Sequence number (1, 2, ...).
    pub id: u64,
    /// Hash of the program bundle (a tree stored with [`FsWorld::fs_put_tree`]).
    pub bundle: String,
    /// Hash of the parent deploy, `None` for the first.
    pub parent: Option<String>,
    /// This deploy's hash (over id, bundle, parent, message, author, time).
    pub hash: String,
    /// Message.
    pub message: String,
    /// Author.
    pub author: String,
    /// Time of the deploy, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The controller's signature over the deploy's manifest, `None` for an unsigned deploy
    /// (or one written by a tend that did not sign).
    pub signature: Option<DeploySignature>,
    /// The hosts the deploy is for; `None`: every host.
    pub target: Option<DeployTarget>,
}

/// Which hosts a deploy is for: those whose name matches one of `hosts` (glob patterns with
/// `*` and `?`; empty: any name) and whose labels hold every `selector` pair. A host outside
/// the target keeps the program it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeployTarget {
    /// Host name patterns (`web*`, `db?`); empty: any host.
    pub hosts: Vec<String>,
    /// Labels a host must have (`role=web`).
    pub selector: std::collections::BTreeMap<String, String>,
}

impl DeployTarget {
    /// Whether host `name` with `labels` is targeted.
    pub fn matches(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|p| glob_match(p, name)))
            && self
                .selector
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

impl std::fmt::Display for DeployTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("hosts {}", self.hosts.join(",")));
        }
        if !self.selector.is_empty() {
            let sel: Vec<String> = self
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("selector {}", sel.join(",")));
        }
        if parts.is_empty() {
            f.write_str("every host")
        } else {
            f.write_str(&parts.join(" and "))
        }
    }
}

/// A shell-style pattern with `*` (any run of characters) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A controller's signature of a deploy. The World stores it and knows nothing of what it
/// means: `tend-front`'s `signing` builds the bytes that are signed and checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploySignature {
    /// The signer's public key (ed25519: 32 bytes).
    pub key: Vec<u8>,
    /// The signature (ed25519: 64 bytes).
    pub signature: Vec<u8>,
}

/// A deploy to append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewDeploy {
    /// Bundle hash.
    pub bundle: String,
    /// Message.
    pub message: String,
    /// Author.
    pub author: String,
    /// The deploy the caller believes is the latest (`None`: no deploy yet).
    pub parent: Option<u64>,
    /// Append even when `parent` is not the latest. A signed deploy is never forced: its
    /// signature names the id and parent it was made for, so the signer retries instead.
    pub force: bool,
    /// The signature, made for deploy `parent + 1` on top of `parent`.
    pub signature: Option<DeploySignature>,
    /// The hosts the deploy is for (`None`: every host).
    pub target: Option<DeployTarget>,
}

/// A host's registration (session-bound: it disappears when the host is gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// tend version.
    pub version: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// The deploy the host runs.
    pub deploy: Option<u64>,
    /// Whether the host is converged.
    pub converged: bool,
    /// Why the newest deploy was rejected on this host, if it was.
    pub error: Option<String>,
    /// When the host last updated its registration, milliseconds since the Unix epoch (a
    /// listed host is alive: its session holds; it disappears after the session TTL).
    pub updated_ms: u64,
    /// A random v4 UUID made when this host's `World` joined; a restarted host gets a new
    /// one, so a host record with another instance is an earlier life of the host. Empty for
    /// a registration written by a tend that did not record it.
    pub instance: String,
    /// Resources whose last check failed (0 in a registration written by an older tend).
    pub failed: u32,
    /// Resources blocked by a failed dependency.
    pub blocked: u32,
    /// The first failed resource and its error (`file[/x]: ...`), when one failed.
    pub first_failure: Option<String>,
    /// When the host last became converged on its deploy, milliseconds since the Unix epoch
    /// (0: not converged, or an older tend's registration).
    pub converged_ms: u64,
    /// The host's labels (`tend run --label k=v`, and `os` for its OS family), which deploy
    /// selectors match.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a host reports of itself in its registration ([`HostWorld::host_update`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// The deploy the host runs.
    pub deploy: Option<u64>,
    /// Whether every resource is settled (converged, failed or blocked).
    pub converged: bool,
    /// Resources whose last check failed.
    pub failed: u32,
    /// Resources blocked by a failed dependency.
    pub blocked: u32,
    /// The first failed resource and its error.
    pub first_failure: Option<String>,
}

/// One entry of a stored tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory.
    Dir {
        /// Relative path, `/`-separated.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Relative path, `/`-separated.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// Content hash.
        blob: String,
    },
}

/// Exported resources.
#[async_trait]
pub trait ResWorld: Send + Sync {
    /// Stores records from this host. Writing a record identical to the stored one changes
    /// nothing (no watch event). Returns whether anything changed.
    async fn res_export(&self, exports: Vec<Export>) -> Result<bool, WorldError>;
    /// Deletes records of this host. Returns whether anything was deleted.
    async fn res_delete(&self, keys: Vec<ExportKey>) -> Result<bool, WorldError>;
    /// Records addressed to this host or to `*` matching any filter (all when `filters` is empty).
    async fn res_collect(&self, filters: &[ExportFilter]) -> Result<Vec<Export>, WorldError>;
    /// Fires when a record this host may collect changes, of `kind` (or of any kind).
    fn res_watch(&self, kind: Option<&str>) -> Changes;
}

/// Global strings and per-host string maps (two separate areas: they never collide).
#[async_trait]
pub trait StrWorld: Send + Sync {
    /// A global string; [`WorldError::NotFound`] when unset.
    async fn str_get(&self, key: &str) -> Result<String, WorldError>;
    /// Sets a global string.
    async fn str_set(&self, key: &str, value: &str) -> Result<(), WorldError>;
    /// Deletes a global string; [`WorldError::NotFound`] when unset.
    async fn str_del(&self, key: &str) -> Result<(), WorldError>;
    /// Fires when the global string changes.
    fn str_watch(&self, key: &str) -> Changes;
    /// Every host's entry of a string map: host -> value.
    async fn strmap_get(&self, key: &str) -> Result<BTreeMap<String, String>, WorldError>;
    /// Sets this host's entry.
    async fn strmap_set(&self, key: &str, value: &str) -> Result<(), WorldError>;
    /// Deletes this host's entry.
    async fn strmap_del(&self, key: &str) -> Result<(), WorldError>;
    /// Fires when any host's entry changes.
    fn strmap_watch(&self, key: &str) -> Changes;
}

/// Content-addressed files.
#[async_trait]
pub trait FsWorld: Send + Sync {
    /// Stores bytes, returns their hash (identical content is stored once).
    async fn fs_put_blob(&self, bytes: &[u8]) -> Result<String, WorldError>;
    /// Reads bytes by hash.
    async fn fs_get_blob(&self, hash: &str) -> Result<Vec<u8>, WorldError>;
    /// Stores a directory tree (files and directories; symlinks are refused), returns its hash.
    async fn fs_put_tree(&self, root: &Path) -> Result<String, WorldError>;
    /// The entries of a stored tree.
    async fn fs_tree(&self, hash: &str) -> Result<Vec<TreeEntry>, WorldError>;
    /// Writes a stored tree under `dest` (created if needed).
    async fn fs_get_tree(&self, hash: &str, dest: &Path) -> Result<(), WorldError>;
    /// Reads one file of a stored tree.
    async fn fs_read(&self, hash: &str, path: &str) -> Result<Vec<u8>, WorldError>;
}

/// The deploy chain.
#[async_trait]
pub trait DeployWorld: Send + Sync {
    /// Appends deploy N+1 (compare-and-swap on `latest`); refuses with
    /// [`WorldError::DeployConflict`] when `parent` is not the latest, unless forced.
    async fn add_deploy(&self, deploy: NewDeploy) -> Result<Deploy, WorldError>;
    /// The latest deploy.
    async fn latest_deploy(&self) -> Result<Option<Deploy>, WorldError>;
    /// One deploy.
    async fn get_deploy(&self, id: u64) -> Result<Deploy, WorldError>;
    /// Every retained deploy, oldest first.
    async fn list_deploys(&self) -> Result<Vec<Deploy>, WorldError>;
    /// Yields the latest deploy now (if any) and each new latest deploy (coalesced for a
    /// slow reader: it always gets the newest).
    fn watch_deploys(&self) -> BoxStream<'static, Deploy>;
}

/// Host membership and the cluster-wide converged view.
#[async_trait]
pub trait HostWorld: Send + Sync {
    /// Updates this host's registration.
    async fn host_update(&self, status: &HostStatus) -> Result<(), WorldError>;
    /// Records (or, with `None`, clears) why the newest deploy was rejected on this host.
    async fn host_set_error(&self, error: Option<String>) -> Result<(), WorldError>;
    /// Every registered host, sorted by name.
    async fn hosts(&self) -> Result<Vec<HostInfo>, WorldError>;
    /// Fires when a host joins, leaves or changes.
    fn hosts_watch(&self) -> Changes;
}

/// How a scheduling namespace chooses its hosts (mgmt's `schedule` resource fields and
/// `world.schedule` options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedOpts {
    /// `rr` (round robin: the earliest members first, a member keeps its place while it
    /// lives) or `alpha` (the alphabetically first members).
    pub strategy: String,
    /// How many hosts to choose (at least 1).
    pub max: u32,
    /// Seconds a member stays in the pool after its host stops renewing it (a host that
    /// dies is replaced within this time). 0 = the default (10 s).
    pub ttl: u32,
    /// Stay in the pool when the resource leaves the graph or the host shuts down cleanly:
    /// the entry then expires after `ttl` (set), or stays until withdrawn (`ttl` 0).
    pub persist: bool,
}

impl Default for SchedOpts {
    fn default() -> Self {
        SchedOpts {
            strategy: SCHED_STRATEGIES[0].to_string(),
            max: 1,
            ttl: 0,
            persist: false,
        }
    }
}

/// The scheduling strategies, the default first.
pub const SCHED_STRATEGIES: &[&str] = &["rr", "alpha"];

/// The session TTL of a scheduling pool member when none is given (mgmt's default).
pub const SCHED_DEFAULT_TTL: u32 = 10;

/// mgmt's distributed scheduler: hosts join a namespace's pool; one of them, elected, picks
/// up to `max` of the live members; every host reads the choice.
#[async_trait]
pub trait SchedWorld: Send + Sync {
    /// Joins (or, when the options changed, updates this host's entry in) the pool of
    /// `namespace` on behalf of `holder` (a `schedule` resource, a program calling
    /// `world.schedule(ns, opts)`); with `apply` false only says whether it would change
    /// anything. Returns whether anything changed (or would).
    async fn sched_join(
        &self,
        namespace: &str,
        opts: &SchedOpts,
        holder: &str,
        apply: bool,
    ) -> Result<bool, WorldError>;
    /// Leaves the pool (at once); with `apply` false only says whether this host is in it.
    async fn sched_withdraw(&self, namespace: &str, apply: bool) -> Result<bool, WorldError>;
    /// `holder` no longer needs the membership (the resource left the graph, the program was
    /// replaced). Once no holder is left, the entry is withdrawn now, unless it persists or
    /// has a TTL of its own, in which case it runs down.
    async fn sched_leave(&self, namespace: &str, holder: &str) -> Result<(), WorldError>;
    /// The hosts chosen in `namespace`, sorted (empty before the first choice).
    async fn scheduled(&self, namespace: &str) -> Result<Vec<String>, WorldError>;
    /// Fires when the choice of `namespace` changes.
    fn scheduled_watch(&self, namespace: &str) -> Changes;
}

/// What a resource may reach of the World: shared strings (the `kv` kind) and the scheduler
/// (the `schedule` kind). Implemented by anything that implements both.
pub trait ResourceWorld: StrWorld + SchedWorld {}

impl<T: StrWorld + SchedWorld> ResourceWorld for T {}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn globs_and_selectors() {
        for (p, t, m) in [
            ("web*", "web1", true),
            ("web*", "db1", false),
            ("*", "", true),
            ("db?", "db1", true),
            ("db?", "db10", false),
            ("*1", "web1", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} {t}");
        }
        let t = DeployTarget {
            hosts: vec!["web*".into()],
            selector: [("role".to_string(), "web".to_string())].into(),
        };
        let labels = |r: &str| [("role".to_string(), r.to_string())].into();
        assert!(t.matches("web1", &labels("web")));
        assert!(!t.matches("web1", &labels("db")));
        assert!(!t.matches("db1", &labels("web")));
        assert_eq!(t.to_string(), "hosts web* and selector role=web");
    }
}
