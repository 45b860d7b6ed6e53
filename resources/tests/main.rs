//! Resource kinds against the real system: files in temporary directories, real processes.

mod account;
mod authorized_key;
mod common;
mod cron;
mod exec;
mod file;
mod gzip;
mod heal;
mod hostname;
mod json_edit;
mod line;
mod mount;
mod pkg;
mod simple;
mod svc;
mod sysctl;
mod tar;
