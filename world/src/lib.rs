//! The World: how hosts share state. World traits (`ResWorld`, `StrWorld`, `FsWorld`,
//! `DeployWorld`, hosts), the Store layer under them, the etcd and embedded backends, the codec,
//! the key schema and the watch cache.
//!
//! **`world` knows nothing of resources, graphs or the language**: an export is
//! `(kind, name, from_host, to_host, bytes)`. **Only `world` depends on etcd-client.**

mod cache;
pub mod codec;
pub mod error;
pub mod keys;
pub mod store;
pub mod testkit;
mod world;

pub use error::{StoreError, WorldError};
pub use store::etcd::{EtcdConfig, EtcdTls};
pub use store::{KeyRange, KeyValue, Store};
pub use world::{
    open_store, Backend, Changes, Deploy, DeployWorld, Export, ExportFilter, ExportKey, FsWorld,
    HostInfo, HostWorld, NewDeploy, ResWorld, StrWorld, TreeEntry, World, WorldConfig, CHUNK_SIZE,
};
