//! Resource kinds against the real system: files in temporary directories, real processes.

mod common;
mod exec;
mod file;
mod pkg;
mod simple;
mod svc;
