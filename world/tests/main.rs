//! The world crate's tests, one binary: the conformance suite on both backends, store-level
//! checks, etcd faults against real etcd processes, and the embedded store's crash safety.

/// Runs each named `async fn(Fixture)` as two tests: on the embedded store and on etcd.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::new(super::Kind::Embedded)).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::new(super::Kind::Etcd)).await
                }
            )*
        }
    };
}

mod conformance;
mod embedded;
mod etcd_faults;
mod store;
mod support;
