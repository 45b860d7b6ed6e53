//! The world crate's tests, one binary: the conformance suite on both backends, store-level
//! checks, etcd faults against real etcd processes, and the embedded store's crash safety.

mod conformance;
mod embedded;
mod etcd_faults;
mod store;
mod support;
