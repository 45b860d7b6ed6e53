//! Resource kinds against the real system: files in temporary directories, real processes.

mod account;
mod authorized_key;
mod common;
mod exec;
mod file;
mod gzip;
mod heal;
mod json_edit;
mod line;
mod pkg;
mod simple;
mod svc;
mod sysctl;
mod tar;
