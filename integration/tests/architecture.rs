//! The invariants of ARCHITECTURE.md ("Invariants" and "Dependencies"), checked against Cargo's
//! own view of the workspace (`cargo metadata`) and against the sources, so that breaking one
//! fails `make test` instead of silently making the text false.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace as `cargo metadata` resolves it (normal, dev and build edges, this platform).
struct Workspace {
    root: PathBuf,
    /// Package id → name, for every package in the lock file.
    names: BTreeMap<String, String>,
    /// Workspace member name → its manifest directory.
    members: BTreeMap<String, PathBuf>,
    /// Package name → (dependency name, dependency kinds) from the resolve graph.
    deps: BTreeMap<String, Vec<(String, BTreeSet<String>)>>,
    /// Member name → declared dependencies (name as written in the code, kind, rename).
    declared: BTreeMap<String, Vec<Declared>>,
    /// Member name → `[package.metadata.cargo-machete] ignored`.
    ignored: BTreeMap<String, BTreeSet<String>>,
}

struct Declared {
    /// The crate name as code names it (`-` → `_`, or the rename).
    ident: String,
    /// `normal`, `dev` or `build`.
    kind: String,
}

fn workspace() -> Workspace {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ lives in the workspace root")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This platform only: the other platforms' crates are not downloaded, and `--offline`
    // would refuse to resolve them.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let vv = String::from_utf8_lossy(&vv.stdout).to_string();
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host triple")
        .to_string();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let member_ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut names = BTreeMap::new();
    let mut members = BTreeMap::new();
    let mut declared = BTreeMap::new();
    let mut ignored = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap().to_string();
        let name = p["name"].as_str().unwrap().to_string();
        if member_ids.contains(id.as_str()) {
            let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
            members.insert(name.clone(), manifest.parent().unwrap().to_path_buf());
            let mut list = Vec::new();
            for d in p["dependencies"].as_array().unwrap() {
                let ident = d["rename"]
                    .as_str()
                    .unwrap_or_else(|| d["name"].as_str().unwrap())
                    .replace('-', "_");
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                list.push(Declared { ident, kind });
            }
            declared.insert(name.clone(), list);
            let ign: BTreeSet<String> = p["metadata"]["cargo-machete"]["ignored"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap().replace('-', "_"))
                        .collect()
                })
                .unwrap_or_default();
            ignored.insert(name.clone(), ign);
        }
        names.insert(id, name);
    }
    let mut deps = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].clone();
        let mut list = Vec::new();
        for d in node["deps"].as_array().unwrap() {
            let dep = names[d["pkg"].as_str().unwrap()].clone();
            let kinds = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kind"].as_str().unwrap_or("normal").to_string())
                .collect();
            list.push((dep, kinds));
        }
        deps.entry(name).or_insert_with(Vec::new).extend(list);
    }
    Workspace {
        root,
        names,
        members,
        deps,
        declared,
        ignored,
    }
}

impl Workspace {
    /// Every package `name` links into its library or binary: normal and build edges,
    /// transitively (dev-dependencies of `name` itself are not followed).
    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            for (dep, kinds) in self.deps.get(&n).into_iter().flatten() {
                if kinds.iter().any(|k| k != "dev") && seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }

    /// The direct normal dependencies of a member that are workspace crates.
    fn direct_tend(&self, name: &str) -> BTreeSet<String> {
        self.deps
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(d, kinds)| self.members.contains_key(d) && kinds.iter().any(|k| k != "dev"))
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[test]
fn the_dependency_lines_of_architecture_md_hold() {
    let ws = workspace();
    assert!(ws.names.len() > 50, "cargo metadata saw the lock file");
    let mut broken = Vec::new();

    // tend-model is the bottom of the workspace: it depends on no tend crate.
    let model = ws.direct_tend("tend-model");
    if !model.is_empty() {
        broken.push(format!(
            "tend-model depends on {model:?}; it must depend on no tend crate"
        ));
    }

    // Only world (and what ships or tests it whole: the binary, the front ends that open a
    // World, the integration harness) compiles etcd-client and its gRPC stack.
    for krate in [
        "tend-model",
        "tend-engine",
        "tend-resources",
        "tend-lang",
        "tend-yaml",
    ] {
        let closure = ws.closure(krate);
        for forbidden in ["tend-world", "etcd-client", "tonic", "prost"] {
            if closure.contains(forbidden) {
                broken.push(format!("{krate} links {forbidden}; only tend-world may"));
            }
        }
    }
    for (member, list) in &ws.declared {
        if member != "tend-world"
            && list
                .iter()
                .any(|d| d.ident == "etcd_client" && d.kind == "normal")
        {
            broken.push(format!(
                "{member} depends on etcd-client directly; only tend-world may"
            ));
        }
    }

    // The language knows schemas, not the engine that checks them.
    for (krate, forbidden) in [
        ("tend-lang", "tend-engine"),
        ("tend-lang", "tend-resources"),
        ("tend-yaml", "tend-engine"),
        ("tend-yaml", "tend-lang"),
        ("tend-engine", "tend-resources"),
        ("tend-engine", "tend-lang"),
        ("tend-resources", "tend-lang"),
    ] {
        if ws.closure(krate).contains(forbidden) {
            broken.push(format!("{krate} links {forbidden}"));
        }
    }

    // Test support (starts etcd, makes certificates) never ships.
    for shipped in [
        "tend",
        "tend-front",
        "tend-world",
        "tend-engine",
        "tend-resources",
    ] {
        if ws.closure(shipped).contains("tend-testkit") {
            broken.push(format!("{shipped} links tend-testkit; it is dev-only"));
        }
    }

    assert!(
        broken.is_empty(),
        "ARCHITECTURE.md invariants broken:\n  {}",
        broken.join("\n  ")
    );
}

/// The Rust sources of a member: src/, tests/, benches/, examples/, build.rs.
fn sources(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for sub in ["src", "tests", "benches", "examples"] {
        walk(&dir.join(sub), &mut out);
    }
    let build = dir.join("build.rs");
    if build.is_file() {
        out.push(build);
    }
    out
}

/// Whether `text` names the crate `ident` as code does: `ident::`, `use ident`,
/// `extern crate ident`, at a word boundary.
fn names_crate(text: &str, ident: &str) -> bool {
    let bytes = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut from = 0;
    while let Some(at) = text[from..].find(ident) {
        let start = from + at;
        let end = start + ident.len();
        from = end;
        if start > 0 && (word(bytes[start - 1]) || bytes[start - 1] == b':') {
            continue;
        }
        if end < bytes.len() && word(bytes[end]) {
            continue;
        }
        let after = &text[end..];
        let before = text[..start].trim_end();
        if after.starts_with("::") || before.ends_with("use") || before.ends_with("extern crate") {
            return true;
        }
    }
    false
}

#[test]
fn every_declared_dependency_is_used() {
    let ws = workspace();
    let mut unused = Vec::new();
    for (member, dir) in &ws.members {
        let texts: Vec<String> = sources(dir)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let ignored = &ws.ignored[member];
        for dep in &ws.declared[member] {
            if ignored.contains(&dep.ident) {
                continue;
            }
            if !texts.iter().any(|t| names_crate(t, &dep.ident)) {
                unused.push(format!("{member}: {} ({})", dep.ident, dep.kind));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies declared but never named in the code (drop them, or list them under \
         [package.metadata.cargo-machete] ignored with a comment saying why):\n  {}",
        unused.join("\n  ")
    );
}

#[test]
fn no_subcommand_imports_another() {
    let ws = workspace();
    let cmd = ws.root.join("src/cmd");
    let mut subcommands = BTreeSet::new();
    for e in std::fs::read_dir(&cmd).unwrap().flatten() {
        let p = e.path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if stem != "mod" {
            subcommands.insert(stem);
        }
    }
    assert!(subcommands.contains("run"), "src/cmd has the subcommands");
    let mut broken = Vec::new();
    for sub in &subcommands {
        let dir = cmd.join(sub);
        let files = if dir.is_dir() {
            sources_in(&dir)
        } else {
            vec![cmd.join(format!("{sub}.rs"))]
        };
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for other in subcommands.iter().filter(|o| *o != sub) {
                for pat in [
                    format!("crate::cmd::{other}"),
                    format!("super::{other}::"),
                    format!("super::{other}}}"),
                    format!("super::{other};"),
                ] {
                    if text.contains(&pat) {
                        broken.push(format!("{} imports `{pat}`", f.display()));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "subcommands share code through a library crate or src/cli.rs, never each other:\n  {}",
        broken.join("\n  ")
    );
}

fn sources_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources_in(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn names_crate_sees_only_code_references() {
    assert!(names_crate("use serde::Deserialize;", "serde"));
    assert!(names_crate("let x = tokio::spawn(f);", "tokio"));
    assert!(names_crate("use tempfile;", "tempfile"));
    assert!(names_crate("#[async_trait::async_trait]", "async_trait"));
    assert!(!names_crate("use serde_json::Value;", "serde"));
    assert!(!names_crate("// serde is nice", "serde"));
    assert!(!names_crate("my_tokio::spawn()", "tokio"));
    assert!(!names_crate("crate::libc::x", "libc"));
}
