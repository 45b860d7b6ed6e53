//! `tend check`.

use std::process::ExitCode;

/// Arguments of `tend check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Anything; this command is not available yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Runs `tend check`.
pub fn main(_args: CheckArgs) -> ExitCode {
    eprintln!("tend check: not available in this build yet");
    ExitCode::from(2)
}
