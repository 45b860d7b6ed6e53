//! `local`: what a program keeps on the host it runs on, under `tend run`'s state directory
//! (`<state>/local/`): `local.vardir` (a directory of the program's own) and `local.pool`
//! (small integers handed out per name and kept across restarts), as mgmt's.
//!
//! The directory is set by `tend run` ([`set_dir`]); without one (`tend check`, tests of the
//! language) these functions fail with a message saying so.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tend_model::Value;

use super::golang::s;
use super::{FuncError, Invoke};

static DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the directory `local.*` works in (`<state>/local`); `None` unsets it.
pub fn set_dir(dir: Option<PathBuf>) {
    *DIR.write().unwrap_or_else(|e| e.into_inner()) = dir;
}

fn dir(func: &str) -> Result<PathBuf, FuncError> {
    DIR.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| {
            FuncError::fatal(format!(
                "{func}: there is no local state directory here (only `tend run` has one)"
            ))
        })
}

/// `<state>/local/functions`, where `local.vardir` and `deploy.directory` put what they make.
pub(super) fn functions_dir(func: &str) -> Result<PathBuf, FuncError> {
    Ok(dir(func)?.join("functions"))
}

/// A relative path without `.`/`..` components or empty segments.
fn clean_relative(p: &str) -> bool {
    !p.starts_with('/')
        && p.trim_end_matches('/')
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// `local.vardir(path str) str`: `<state>/local/functions/<path>`, created if missing. The
/// path must be relative and name a directory (end with `/`), as mgmt requires.
pub(super) fn vardir(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let rel = s(a, 0, "local.vardir")?;
    if rel.starts_with('/') {
        return Err(FuncError::fatal(format!(
            "local.vardir: path must be relative: {rel:?}"
        )));
    }
    if !rel.ends_with('/') {
        return Err(FuncError::fatal(format!(
            "local.vardir: path must be a dir (end with `/`): {rel:?}"
        )));
    }
    if !clean_relative(rel) {
        return Err(FuncError::fatal(format!(
            "local.vardir: path must be clean (no `.`, `..` or `//`): {rel:?}"
        )));
    }
    let p = functions_dir("local.vardir")?.join(rel.trim_end_matches('/'));
    std::fs::create_dir_all(&p)
        .map_err(|e| FuncError::fatal(format!("local.vardir: creating {}: {e}", p.display())))?;
    Ok(Value::Str(format!("{}/", p.display())))
}

/// `local.pool(namespace str, uid str) int`: the same integer (from 1) for the same `uid`
/// within a `namespace`, the smallest one not yet taken for a new `uid`; kept in
/// `<state>/local/pool/<namespace>.json`, under an exclusive lock, written atomically.
pub(super) fn pool(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let ns = s(a, 0, "local.pool")?;
    let uid = s(a, 1, "local.pool")?;
    if ns.is_empty()
        || !ns
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return Err(FuncError::fatal(format!(
            "local.pool: the namespace must be letters, digits, `-`, `_` or `.`: {ns:?}"
        )));
    }
    if ns.starts_with('.') {
        return Err(FuncError::fatal(format!(
            "local.pool: the namespace must not start with `.`: {ns:?}"
        )));
    }
    if uid.is_empty() {
        return Err(FuncError::fatal("local.pool: the uid is empty"));
    }
    let d = dir("local.pool")?.join("pool");
    pool_take(&d, ns, uid)
        .map(Value::Int)
        .map_err(|e| FuncError::fatal(format!("local.pool: namespace {ns:?}: {e}")))
}

fn pool_take(d: &Path, ns: &str, uid: &str) -> Result<i64, String> {
    std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    let lock_path = d.join(format!(".{ns}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor open for the whole function.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let path = d.join(format!("{ns}.json"));
    let mut taken: BTreeMap<String, i64> = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("{} is not a pool file: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if let Some(n) = taken.get(uid) {
        return Ok(*n);
    }
    let used: std::collections::BTreeSet<i64> = taken.values().copied().collect();
    let n = (1..).find(|n| !used.contains(n)).unwrap_or(1);
    taken.insert(uid.to_string(), n);
    let tmp = d.join(format!(".{ns}.json.tmp"));
    let text = serde_json::to_vec_pretty(&taken).map_err(|e| e.to_string())?;
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funcs::{call_simple, lookup};

    fn call(n: &str, a: &[&str]) -> Result<Value, FuncError> {
        let args: Vec<Value> = a.iter().map(|s| Value::from(*s)).collect();
        call_simple(lookup("local", n).expect("exists"), &args)
    }

    /// One test sets the process-wide directory (tests run in parallel), and checks the
    /// unset case first.
    #[test]
    fn vardir_and_pool_under_the_state_dir() {
        set_dir(None);
        let e = call("vardir", &["app/"]).unwrap_err();
        assert!(e.msg.contains("only `tend run` has one"), "{e}");

        let t = tempfile::tempdir().unwrap();
        set_dir(Some(t.path().join("local")));
        let v = call("vardir", &["app/cache/"]).unwrap();
        let want = format!("{}/local/functions/app/cache/", t.path().display());
        assert_eq!(v, Value::from(want.as_str()));
        assert!(Path::new(&want).is_dir());
        for (bad, why) in [
            ("/abs/", "must be relative"),
            ("app", "must be a dir"),
            ("a/../b/", "must be clean"),
            ("a//b/", "must be clean"),
        ] {
            let e = call("vardir", &[bad]).unwrap_err();
            assert!(e.msg.contains(why), "{bad}: {e}");
        }

        let take = |ns: &str, uid: &str| match call("pool", &[ns, uid]).unwrap() {
            Value::Int(n) => n,
            v => panic!("{v:?}"),
        };
        assert_eq!(take("vms", "web"), 1);
        assert_eq!(take("vms", "db"), 2);
        assert_eq!(take("vms", "web"), 1);
        assert_eq!(take("ports", "web"), 1);
        // Kept on disk: a hand-edited file with a gap gets it filled first.
        let f = t.path().join("local/pool/vms.json");
        std::fs::write(&f, r#"{"web": 1, "db": 3}"#).unwrap();
        assert_eq!(take("vms", "cache"), 2);
        assert_eq!(take("vms", "db"), 3);
        std::fs::write(&f, "garbage").unwrap();
        let e = call("pool", &["vms", "x"]).unwrap_err();
        assert!(e.msg.contains("is not a pool file"), "{e}");
        assert!(call("pool", &["../x", "y"]).is_err());
        assert!(call("pool", &["ok", ""]).is_err());

        // deploy.directory copies a shipped directory here and keeps it in step.
        let prog = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(prog.path().join("files/sub")).unwrap();
        std::fs::write(prog.path().join("files/a"), "one").unwrap();
        std::fs::write(prog.path().join("files/sub/b"), "two").unwrap();
        let dir = |d: &str| {
            let mut args = crate::funcs::deploy::call_site(prog.path(), "/").to_vec();
            args.push(Value::from(d));
            call_simple(lookup("deploy", "directory").unwrap(), &args)
        };
        let Value::Str(out) = dir("/files/").unwrap() else {
            panic!("a str");
        };
        assert_eq!(
            out,
            format!("{}/local/functions/directory/files/", t.path().display())
        );
        assert_eq!(std::fs::read_to_string(format!("{out}a")).unwrap(), "one");
        assert_eq!(
            std::fs::read_to_string(format!("{out}sub/b")).unwrap(),
            "two"
        );
        std::fs::remove_file(prog.path().join("files/a")).unwrap();
        std::fs::write(prog.path().join("files/sub/b"), "three").unwrap();
        assert_eq!(dir("/files/").unwrap(), Value::from(out.as_str()));
        assert!(!Path::new(&format!("{out}a")).exists());
        assert_eq!(
            std::fs::read_to_string(format!("{out}sub/b")).unwrap(),
            "three"
        );
        assert!(dir("/files").unwrap_err().msg.contains("must be a dir"));
        assert!(dir("/nope/")
            .unwrap_err()
            .msg
            .contains("is not a directory"));
        set_dir(None);
    }
}
