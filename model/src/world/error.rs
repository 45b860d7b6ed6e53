//! Error types of the Store layer and of the World.

use std::path::PathBuf;

/// An error of the Store layer (etcd or embedded). Every variant names what was involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd answered with an error (or could not be reached) for an operation on a key.
    #[error("etcd {endpoints}: {op} {key:?}: {message}")]
    Etcd {
        /// The endpoints of the cluster.
        endpoints: String,
        /// The operation (`get`, `range`, `txn`, `watch`, `lease grant`, ...).
        op: &'static str,
        /// The key (or first key) involved.
        key: String,
        /// What etcd said.
        message: String,
    },
    /// etcd refused the operation: the user's role does not allow it on that key (etcd's
    /// RBAC).
    #[error("etcd {endpoints}: {op} {key:?}: {message}")]
    PermissionDenied {
        /// The endpoints of the cluster.
        endpoints: String,
        /// The operation.
        op: &'static str,
        /// The key (or first key) involved.
        key: String,
        /// What etcd said (`etcdserver: permission denied`).
        message: String,
    },
    /// An I/O error on a file of the embedded store.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The embedded store's file is damaged.
    #[error("{path}: corrupt store at byte {offset}: {message}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The file is not an embedded store written by tend.
    #[error("{path}: not a tend embedded store (unexpected header); refusing to use it")]
    Foreign {
        /// The file involved.
        path: PathBuf,
    },
    /// Another process holds the embedded store.
    #[error("{path}: in use by another process (is a `tend run` using this state directory?)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The lease does not exist (it expired or was revoked).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(i64),
    /// The store was opened read-only and a write was attempted.
    #[error("{path}: opened read-only")]
    ReadOnly {
        /// The file involved.
        path: PathBuf,
    },
    /// The operation is not supported by this backend.
    #[error("{0}")]
    Unsupported(String),
}

/// An error of the World. Every variant names the key, host, deploy or file involved.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The Store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key does not exist (a distinct error so callers can tell it from failures).
    #[error("{key}: does not exist")]
    NotFound {
        /// The key (relative to the namespace).
        key: String,
    },
    /// A stored value could not be decoded.
    #[error("{key}: cannot decode stored value: {message}")]
    Decode {
        /// The full store key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A stored value was written by a newer (or foreign) codec.
    #[error("{key}: unknown value format version {version} (this tend reads version {expected}); upgrade tend")]
    UnknownVersion {
        /// The full store key.
        key: String,
        /// The version byte found.
        version: u8,
        /// The version this build understands.
        expected: u8,
    },
    /// `add_deploy` was refused because the caller's expected parent is not the latest deploy.
    #[error("deploy refused: expected latest deploy {}, but the latest is {} (use force to override)", show_deploy(*.expected), show_deploy(*.latest))]
    DeployConflict {
        /// The parent the caller expected.
        expected: Option<u64>,
        /// The actual latest deploy.
        latest: Option<u64>,
    },
    /// No deploy with this id.
    #[error("deploy {0} does not exist (it may have been removed by retention)")]
    DeployNotFound(u64),
    /// No file (blob) with this hash.
    #[error("file {hash} does not exist in the world")]
    FileNotFound {
        /// The content hash.
        hash: String,
    },
    /// No such path in a stored tree.
    #[error("{path}: no such file in bundle {hash}")]
    PathNotFound {
        /// The bundle hash.
        hash: String,
        /// The path inside the bundle.
        path: String,
    },
    /// A local file-system error (storing or fetching a tree).
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An argument is not acceptable (a host name, kind, key...).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of thing (`host name`, `kind`, ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The World was closed.
    #[error("world closed")]
    Closed,
}

fn show_deploy(id: Option<u64>) -> String {
    match id {
        Some(id) => format!("#{id}"),
        None => "none (no deploy yet)".to_string(),
    }
}
