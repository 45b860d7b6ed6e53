//! The World: how hosts share state. The implementation of the World traits (declared in
//! `tend_model::world`: `ResWorld`, `StrWorld`, `FsWorld`, `DeployWorld`, `HostWorld`), the
//! Store layer under them, the etcd and embedded backends, the codec,
//! the key schema and the watch cache.
//!
//! **`world` knows nothing of resources, graphs or the language**: an export is
//! `(kind, name, from_host, to_host, bytes)`. **Only `world` depends on etcd-client.**
//!
//! A daemon joins the World once and uses the traits; every read and subscription is served
//! by the World's watch cache (one store watch per host):
//!
//! ```no_run
//! # async fn demo() -> Result<(), tend_world::WorldError> {
//! use futures::StreamExt;
//! use tend_world::{Export, ExportFilter, ResWorld, World, WorldConfig};
//!
//! let world = World::connect(WorldConfig::embedded("/var/lib/tend", "web1")).await?;
//! // or: WorldConfig::etcd(vec!["http://10.0.0.1:2379".into()], "web1")
//! world
//!     .res_export(vec![Export {
//!         kind: "file".into(),
//!         name: "/etc/motd".into(),
//!         from: String::new(), // filled in: this host
//!         to: "*".into(),
//!         data: b"opaque".to_vec(),
//!     }])
//!     .await?;
//! let mut changes = world.res_watch(Some("file"));
//! while changes.next().await.is_some() {
//!     let filter = ExportFilter { kind: "file".into(), ..Default::default() };
//!     let _visible = world.res_collect(&[filter]).await?;
//! }
//! world.close().await // revokes the session: this host's exports disappear at once
//! # }
//! ```

pub mod auth;
mod cache;
pub mod codec;
pub mod inspect;
pub mod keys;
pub mod store;
mod world;

pub use store::etcd::{EtcdConfig, EtcdTls};
pub use store::{KeyRange, KeyValue, Store};
// The traits and records are the model's; they are re-exported here beside their
// implementation, for callers that hold a concrete `World`.
pub use tend_model::world::{
    Changes, Deploy, DeploySignature, DeployTarget, DeployWorld, Export, ExportFilter, ExportKey,
    FsWorld, HostInfo, HostStatus, HostWorld, NewDeploy, ResWorld, SchedOpts, SchedWorld,
    StoreError, StrWorld, TreeEntry, WorldError,
};
pub use world::{open_store, Backend, World, WorldConfig, WorldStatus, CHUNK_SIZE};
