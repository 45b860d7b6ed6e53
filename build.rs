//! Records the git commit the binary is built from as `TEND_GIT_COMMIT` (shown by `/info` and
//! `tend_build_info`). A packager without git sets `TEND_GIT_COMMIT` in the environment.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Asks cargo to rerun this script when `path` changes (only if it exists: a missing path would
/// rerun it on every build).
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=TEND_GIT_COMMIT");
    let commit = std::env::var("TEND_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TEND_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs.
    watch(git(&["rev-parse", "--git-path", "HEAD"]));
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &r]));
    }
    watch(git(&["rev-parse", "--git-path", "packed-refs"]));
}
