//! `tend keygen FILE [--comment C]`: writes a controller's deploy signing key pair, `FILE`
//! (the private key, PKCS#8 PEM, mode 0600) and `FILE.pub` (the public key line hosts trust).
//!
//! Exit status: 0 when both files were written; 2 when one exists already (nothing written);
//! 1 when writing failed.

use std::path::PathBuf;
use std::process::ExitCode;

use tend_front::signing;

/// Arguments of `tend keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The private key file to write; the public key goes to the same name plus `.pub`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The comment after the public key (default: `$USER@hostname`).
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

/// Runs `tend keygen`.
pub fn main(args: KeygenArgs) -> ExitCode {
    let comment = args.comment.unwrap_or_else(default_comment);
    if comment.contains(['\n', '\r']) {
        eprintln!("tend keygen: --comment must be one line");
        return ExitCode::from(2);
    }
    match signing::keygen(&args.file, &comment) {
        Ok(pair) => {
            println!(
                "private key: {} (mode 0600; keep it secret: whoever holds it can deploy)",
                pair.private.display()
            );
            println!(
                "public key:  {} (copy it into each host's trust directory)",
                pair.public.display()
            );
            println!("fingerprint: {}", pair.fingerprint);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tend keygen: {e}");
            if e.exists {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `$USER@hostname`.
fn default_comment() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::cli::machine_hostname())
}
