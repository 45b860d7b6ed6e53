//! Fixtures: a backend (a real etcd, or an embedded store in a temporary directory) and
//! Worlds for several hosts on it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tend_testkit::EtcdServer;
use tend_world::store::embedded::Embedded;
use tend_world::store::etcd::{Etcd, EtcdConfig};
use tend_world::{Backend, Changes, Store, World, WorldConfig};

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Etcd,
}

pub struct Fixture {
    pub kind: Kind,
    pub etcd: Option<EtcdServer>,
    pub dir: tempfile::TempDir,
    embedded: Option<Arc<Embedded>>,
}

impl Fixture {
    pub fn new(kind: Kind) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Etcd => Fixture {
                kind,
                etcd: Some(EtcdServer::start().expect("start etcd")),
                dir,
                embedded: None,
            },
            Kind::Embedded => Fixture {
                kind,
                etcd: None,
                embedded: Some(Arc::new(Embedded::open(dir.path()).unwrap())),
                dir,
            },
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.etcd.as_ref().unwrap().client_url.clone()]
    }

    /// A store handle: the shared embedded store, or a new etcd connection.
    pub async fn store(&self) -> Arc<dyn Store> {
        match self.kind {
            Kind::Embedded => self.embedded.clone().unwrap(),
            Kind::Etcd => Arc::new(
                Etcd::connect(EtcdConfig::new(self.endpoints()))
                    .await
                    .unwrap(),
            ),
        }
    }

    pub fn config(&self, host: &str) -> WorldConfig {
        let backend = match self.kind {
            Kind::Embedded => Backend::Embedded {
                state_dir: self.dir.path().to_path_buf(),
            },
            Kind::Etcd => Backend::Etcd(EtcdConfig::new(self.endpoints())),
        };
        let mut cfg = WorldConfig::with_backend(backend, host);
        cfg.session_ttl = Duration::from_secs(2);
        cfg
    }

    pub async fn world(&self, host: &str) -> World {
        self.world_with(self.config(host)).await
    }

    pub async fn world_with(&self, cfg: WorldConfig) -> World {
        World::with_store(self.store().await, cfg).await.unwrap()
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next change of a subscription, within 10 s.
pub async fn next_change(c: &mut Changes, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .unwrap_or_else(|_| panic!("no change for {what} within 10 s"))
        .expect("subscription ended");
}
