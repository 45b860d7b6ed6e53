//! The subcommands that are not clients of the daemon's API, one module each. A subcommand
//! imports no other: what they share is in `crate::cli` and the library crates.

pub mod check;
pub mod cluster;
pub mod deploy;
pub mod keygen;
pub mod run;
pub mod world;
