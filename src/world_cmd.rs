//! `tend world`.

use std::process::ExitCode;

/// Arguments of `tend world`.
#[derive(clap::Args)]
pub struct WorldArgs {
    /// Anything; this command is not available yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Runs `tend world`.
pub fn main(_args: WorldArgs) -> ExitCode {
    eprintln!("tend world: not available in this build yet");
    ExitCode::from(2)
}
