//! What a deploy holds: a program's bundle, and the check `tend deploy` and `tend run` make
//! of a program before publishing it.
//!
//! A directory program ships every regular file under it (templates, configuration files:
//! what `deploy.readfile` and `deploy.directory` read on the hosts), with its mode, except
//! names starting with `.` (`.git`, editors' files) and `target/` directories; symbolic links
//! and special files are left out with a warning. A file program ships as `main.mcl` with the
//! `.mcl` and `metadata.yaml` files beside and below it (what its imports can reach), nothing
//! else: the directory of a lone file is often not the program's own. The bundle may hold
//! 64 MiB at most.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tend_lang::funcs::world::MemWorld;
use tend_lang::program::{compile, Options};
use tend_model::KindSchema;

/// Compiles the program against the kinds' schemas (parse, scope, types), as every host will;
/// the error is the rendered diagnostics.
pub fn check_program(
    program: &Path,
    schemas: &BTreeMap<String, KindSchema>,
) -> std::result::Result<(), String> {
    let opts = Options {
        hostname: String::new(),
        schemas: schemas.clone(),
        world: MemWorld::new(""),
    };
    let entry = entry_file(program).map_err(|e| format!("error: {e:#}\n"))?;
    compile(&entry, opts).map(drop).map_err(|f| f.render())
}

/// The entry file of a program path (`main.mcl` of a directory).
pub fn entry_file(program: &Path) -> Result<PathBuf> {
    if program.is_dir() {
        let main = program.join("main.mcl");
        if !main.is_file() {
            bail!("{}: the directory holds no main.mcl", program.display());
        }
        return Ok(main);
    }
    if program.extension().and_then(|e| e.to_str()) != Some("mcl") {
        bail!(
            "{}: a deploy is an mcl program (an `.mcl` file or a directory holding main.mcl)",
            program.display()
        );
    }
    if !program.is_file() {
        bail!("{}: no such file", program.display());
    }
    Ok(program.to_path_buf())
}

/// The largest bundle `tend deploy` uploads.
const MAX_BUNDLE: u64 = 64 << 20;

/// Builds the bundle of a program in a temporary directory (see the module's documentation
/// for what goes in).
pub fn make_bundle(program: &Path) -> Result<tempfile::TempDir> {
    let entry = entry_file(program)?;
    // `main.mcl`'s parent is the empty path: the current directory.
    let root = entry
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let out = tempfile::tempdir().context("creating a temporary directory for the bundle")?;
    let mut total = 0u64;
    let every_file = program.is_dir();
    copy_sources(&root, &root, out.path(), every_file, &mut total)?;
    if entry.file_name().and_then(|n| n.to_str()) != Some("main.mcl") {
        let main = out.path().join("main.mcl");
        if root.join("main.mcl").exists() {
            bail!(
                "{}: cannot deploy it as the entry point because {} exists beside it; deploy the directory instead",
                entry.display(),
                root.join("main.mcl").display()
            );
        }
        std::fs::copy(&entry, &main)
            .with_context(|| format!("copying {} into the bundle", entry.display()))?;
    }
    Ok(out)
}

fn copy_sources(
    root: &Path,
    dir: &Path,
    out: &Path,
    every_file: bool,
    total: &mut u64,
) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading directory {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ft = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if name.starts_with('.') || (ft.is_dir() && name == "target") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let source = name.ends_with(".mcl") || name == "metadata.yaml";
        if ft.is_dir() {
            copy_sources(root, &path, out, every_file, total)?;
        } else if every_file && !ft.is_file() {
            tracing::warn!(
                path = %path.display(),
                "not shipped in the bundle: only regular files and directories are"
            );
        } else if ft.is_file() && (every_file || source) {
            *total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if *total > MAX_BUNDLE {
                bail!(
                    "{}: the program's files exceed {} MiB",
                    root.display(),
                    MAX_BUNDLE >> 20
                );
            }
            let dest = out.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(&path, &dest).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
