//! End-to-end tests of the `tend` binary: each test runs the real built binary in a fresh
//! temporary directory and prints the command, its output and the directory listing when it
//! fails.

mod api;
mod bad_input;
mod daemon;
mod host_kinds;
mod keys;
mod mcl;
mod one_shot;
mod sandbox;
mod sendrecv;
mod tls;
mod world_cmd;
