//! Resource kinds against the real system: files in temporary directories, real processes.

mod account;
mod common;
mod cron;
mod exec;
mod file;
mod heal;
mod hostname;
mod line;
mod mount;
mod pkg;
mod simple;
mod svc;
mod sysctl;
