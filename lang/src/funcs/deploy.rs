//! `deploy`: the files shipped with the program (a deploy's bundle, or the program's directory
//! under `tend check` and a local `tend run`), as mgmt's `deploy` module reads them.
//!
//! Paths are mgmt's: absolute *inside the program*, `/files/motd`. `deploy.readfile`,
//! `deploy.file_exists`, `deploy.abspath` and `deploy.directory` take them relative to the
//! directory of the file that calls them (a module's directory for a module's code);
//! `deploy.readfileabs` takes them from the program's root. None may leave the program
//! (`..` above its root is refused).
//!
//! The evaluator passes two hidden arguments first ([`call_site`]): the program's root on disk
//! and the calling file's directory inside it (`/`, `/lib/`). The values are snapshots: a
//! bundle changes only with a new deploy, which compiles the program again.

use std::path::{Component, Path, PathBuf};

use tend_model::Value;

use super::{FuncError, Invoke};

/// The hidden arguments of a `deploy.*` call: the program root and the caller's directory.
pub fn call_site(root: &Path, dir: &str) -> [Value; 2] {
    [
        Value::Str(root.display().to_string()),
        Value::Str(dir.to_string()),
    ]
}

struct Site<'a> {
    root: PathBuf,
    dir: &'a str,
}

fn site<'a>(a: &'a [Value], name: &str) -> Result<(Site<'a>, &'a str), FuncError> {
    match a {
        [Value::Str(root), Value::Str(dir), Value::Str(arg), ..] => Ok((
            Site {
                root: PathBuf::from(root),
                dir,
            },
            arg,
        )),
        _ => Err(FuncError::fatal(format!("{name}: expected a str argument"))),
    }
}

/// `inner` (absolute inside the program) resolved against the root, refusing `..` above it.
fn on_disk(root: &Path, inner: &str, name: &str) -> Result<PathBuf, FuncError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(inner).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(FuncError::fatal(format!(
                        "{name}: `{inner}` leaves the program's directory"
                    )));
                }
            }
            Component::Prefix(_) => {}
        }
    }
    let mut p = root.to_path_buf();
    p.extend(parts);
    Ok(p)
}

/// The caller's directory joined with `path`, which must be absolute (mgmt: "was not
/// absolute").
fn relative_to_caller(s: &Site, path: &str, what: &str, name: &str) -> Result<String, FuncError> {
    if !path.starts_with('/') {
        return Err(FuncError::fatal(format!(
            "{name}: {what} was not absolute, got: `{path}`"
        )));
    }
    Ok(format!("{}{path}", s.dir.trim_end_matches('/')))
}

fn read(path: &Path, shown: &str, name: &str) -> Result<Value, FuncError> {
    std::fs::read(path)
        .map(|b| Value::Str(String::from_utf8_lossy(&b).into_owned()))
        .map_err(|e| FuncError::fatal(format!("{name}: can't read file `{shown}`: {e}")))
}

/// `deploy.abspath(path str) str`: the path inside the program of `path` relative to the
/// calling file's directory; `""` gives that directory.
pub(super) fn abspath(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let (s, path) = site(a, "deploy.abspath")?;
    if path.is_empty() {
        return Ok(Value::Str(s.dir.to_string()));
    }
    relative_to_caller(&s, path, "path", "deploy.abspath").map(Value::Str)
}

/// `deploy.readfile(filename str) str`: a shipped file, relative to the caller's directory.
pub(super) fn readfile(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = "deploy.readfile";
    let (s, file) = site(a, name)?;
    let inner = relative_to_caller(&s, file, "filename", name)?;
    read(&on_disk(&s.root, &inner, name)?, &inner, name)
}

/// `deploy.readfileabs(filename str) str`: a shipped file, from the program's root.
pub(super) fn readfileabs(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = "deploy.readfileabs";
    let (s, file) = site(a, name)?;
    if !file.starts_with('/') {
        return Err(FuncError::fatal(format!(
            "{name}: filename was not absolute, got: `{file}`"
        )));
    }
    read(&on_disk(&s.root, file, name)?, file, name)
}

/// `deploy.file_exists(filename str) bool`: whether the program ships it (relative to the
/// caller's directory, as `deploy.readfile`).
pub(super) fn file_exists(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = "deploy.file_exists";
    let (s, file) = site(a, name)?;
    let inner = relative_to_caller(&s, file, "filename", name)?;
    let p = on_disk(&s.root, &inner, name)?;
    match std::fs::symlink_metadata(&p) {
        Ok(_) => Ok(Value::Bool(true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(FuncError::fatal(format!("{name}: `{inner}`: {e}"))),
    }
}

/// `deploy.directory(directory str) str`: a copy of a shipped directory on the host (under
/// `local.vardir`'s `directory/`), kept in step with the deploy (`rsync --delete` style:
/// unchanged files are not rewritten), for a `file`'s `source`. The path stays the same from
/// one deploy to the next.
pub(super) fn directory(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = "deploy.directory";
    let (s, d) = site(a, name)?;
    let inner = relative_to_caller(&s, d, "directory", name)?;
    if !inner.ends_with('/') {
        return Err(FuncError::fatal(format!(
            "{name}: directory path must be a dir (end with `/`): `{d}`"
        )));
    }
    let src = on_disk(&s.root, &inner, name)?;
    if !src.is_dir() {
        return Err(FuncError::fatal(format!(
            "{name}: `{inner}` is not a directory of the program"
        )));
    }
    let rel = inner.trim_matches('/');
    let dest = super::local::functions_dir(name)?
        .join("directory")
        .join(rel);
    std::fs::create_dir_all(&dest)
        .map_err(|e| FuncError::fatal(format!("{name}: creating {}: {e}", dest.display())))?;
    sync(&src, &dest)
        .map_err(|e| FuncError::fatal(format!("{name}: can't sync dir `{d}` ({inner}): {e}")))?;
    Ok(Value::Str(format!("{}/", dest.display())))
}

/// Makes `dst` hold what `src` holds: removes what `src` lacks, writes only what differs.
fn sync(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut keep = std::collections::HashSet::new();
    for e in std::fs::read_dir(src)? {
        let e = e?;
        keep.insert(e.file_name());
    }
    for e in std::fs::read_dir(dst)? {
        let e = e?;
        if !keep.contains(&e.file_name()) {
            let p = e.path();
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        let dmeta = std::fs::symlink_metadata(&d).ok();
        if ft.is_dir() {
            if dmeta.as_ref().is_some_and(|m| !m.is_dir()) {
                std::fs::remove_file(&d)?;
            }
            std::fs::create_dir_all(&d)?;
            sync(&s, &d)?;
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        if dmeta.as_ref().is_some_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&d)?;
        }
        let data = std::fs::read(&s)?;
        let mode = e.metadata()?.permissions().mode() & 0o7777;
        let same = std::fs::read(&d).is_ok_and(|old| old == data);
        if !same {
            // Written beside and renamed: a reader never sees half a file.
            let tmp = dst.join(format!(".{}.tend-sync", e.file_name().to_string_lossy()));
            std::fs::write(&tmp, &data)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(&tmp, &d)?;
        } else if std::fs::metadata(&d)?.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funcs::{call_simple, lookup};

    fn call(n: &str, root: &Path, dir: &str, arg: &str) -> Result<Value, FuncError> {
        let mut args = call_site(root, dir).to_vec();
        args.push(Value::from(arg));
        call_simple(lookup("deploy", n).expect("exists"), &args)
    }

    #[test]
    fn paths_are_mgmts_inside_the_program() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("lib/files")).unwrap();
        std::fs::create_dir_all(root.join("files")).unwrap();
        std::fs::write(root.join("files/motd"), "top\n").unwrap();
        std::fs::write(root.join("lib/files/motd"), "lib\n").unwrap();
        assert_eq!(
            call("readfile", root, "/", "/files/motd").unwrap(),
            Value::from("top\n")
        );
        assert_eq!(
            call("readfile", root, "/lib/", "/files/motd").unwrap(),
            Value::from("lib\n")
        );
        assert_eq!(
            call("readfileabs", root, "/lib/", "/files/motd").unwrap(),
            Value::from("top\n")
        );
        assert_eq!(
            call("abspath", root, "/lib/", "/files/x").unwrap(),
            Value::from("/lib/files/x")
        );
        assert_eq!(
            call("abspath", root, "/lib/", "").unwrap(),
            Value::from("/lib/")
        );
        assert_eq!(
            call("file_exists", root, "/", "/files/motd").unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            call("file_exists", root, "/", "/files/nope").unwrap(),
            Value::Bool(false)
        );
        let e = call("readfile", root, "/", "files/motd").unwrap_err();
        assert_eq!(
            e.msg,
            "deploy.readfile: filename was not absolute, got: `files/motd`"
        );
        let e = call("readfile", root, "/", "/../etc/passwd").unwrap_err();
        assert!(e.msg.contains("leaves the program's directory"), "{e}");
        let e = call("readfile", root, "/", "/files/nope").unwrap_err();
        assert!(
            e.msg
                .starts_with("deploy.readfile: can't read file `/files/nope`"),
            "{e}"
        );
    }
}
