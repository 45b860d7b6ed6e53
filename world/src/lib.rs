//! The World: how hosts share state. World traits (`ResWorld`, `StrWorld`, `FsWorld`,
//! `DeployWorld`, hosts), the Store layer under them, the etcd and embedded backends, the codec,
//! the key schema and the watch cache.
//!
//! **`world` knows nothing of resources, graphs or the language**: an export is
//! `(kind, name, from_host, to_host, bytes)`. **Only `world` depends on etcd-client.**
