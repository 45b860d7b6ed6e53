//! Engine tests, one binary: executor semantics, graph swaps and graph checks, all against the
//! fake kind of `support`.

mod checks;
mod executor;
mod reverse;
mod sendrecv;
mod support;
mod swap;
