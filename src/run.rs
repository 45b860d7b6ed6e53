//! `tend run`.

use std::process::ExitCode;

/// Arguments of `tend run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Anything; this command is not available yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Runs `tend run`.
pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("tend run: not available in this build yet");
    ExitCode::from(2)
}
