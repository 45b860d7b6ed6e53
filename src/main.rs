//! `tend`: the command-line entry point. Parses arguments, dispatches to one module per
//! subcommand, and maps errors to exit codes. All logic lives in the library crates.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api;
mod cli;
mod client;
mod cmd;
mod logging;
mod progress;

use cmd::{check, cluster, deploy, keygen, run, world};

/// Real-time, distributed configuration management.
#[derive(Parser)]
#[command(name = "tend", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Converge this host onto a program and keep it there.
    Run(run::RunArgs),
    /// Check an mcl program and optionally print its first graph.
    Check(check::CheckArgs),
    /// Publish a program to every host (or roll back, or list the deploys).
    Deploy(deploy::DeployArgs),
    /// Write a key pair for signing deploys (FILE and FILE.pub).
    Keygen(keygen::KeygenArgs),
    /// Read the World's store directly: exports, strings, deploys, hosts.
    World(world::WorldArgs),
    /// Administer the cluster: etcd's users and roles for tend (`cluster auth`).
    Cluster(cluster::ClusterArgs),
    /// Show the daemon's state on one screen (a client of `tend run`'s HTTP API).
    Status(client::StatusArgs),
    /// Print the daemon's running graph (JSON, text, or Graphviz dot).
    Graph(client::GraphArgs),
    /// List the daemon's resources with their state, or follow changes with --watch.
    Resources(client::WatchArgs),
    /// List the exports this host may collect, or follow changes with --watch.
    Exports(client::WatchArgs),
    /// Print the version.
    Version,
}

/// Replaces Rust's default panic output (a message and, with `RUST_BACKTRACE`, a stack trace) by
/// one log line. The engine catches a resource's panic and fails only that vertex; this hook makes
/// sure the user sees one readable line for it rather than a trace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if tracing::dispatcher::has_been_set() {
            tracing::error!(error = %msg, %location, "panic (the failing task was isolated)");
        } else {
            eprintln!("tend: internal error: {msg} ({location})");
        }
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => run::main(a),
        Cmd::Check(a) => check::main(a),
        Cmd::Deploy(a) => deploy::main(a),
        Cmd::Keygen(a) => keygen::main(a),
        Cmd::World(a) => world::main(a),
        Cmd::Cluster(a) => cluster::main(a),
        Cmd::Status(a) => client::status(a),
        Cmd::Graph(a) => client::graph(a),
        Cmd::Resources(a) => client::resources(a),
        Cmd::Exports(a) => client::exports(a),
        Cmd::Version => {
            println!("tend {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
