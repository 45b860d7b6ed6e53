//! The dpkg database, read straight from `/var/lib/dpkg/status` (plus the journal in
//! `/var/lib/dpkg/updates/` that a running or interrupted dpkg has not folded in yet).
//!
//! One parse serves every `pkg` resource: the parsed database is cached process-wide with
//! the identity of what was read (the status file's device, inode, size and mtime, and the
//! journal directory's mtime). dpkg replaces the status file by rename and adds or removes
//! journal entries, so a check that finds both unchanged (two `stat`s) reuses the cache; the
//! first check after a change parses again (about 1 ms for 1,000 packages) while the checks
//! running at the same time wait for that parse instead of repeating it.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tend_engine::ResError;

/// dpkg's administrative directory.
pub(crate) const ADMIN_DIR: &str = "/var/lib/dpkg";

/// What dpkg says of one package (the third word of its `Status:` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    NotInstalled,
    /// Removed, its configuration files kept.
    ConfigFiles,
    HalfInstalled,
    Unpacked,
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
}

impl Status {
    fn parse(field: &[u8]) -> Option<Status> {
        // `Status: <want> <flag> <status>`
        let word = field.rsplit(|&b| b == b' ').next()?;
        Some(match word {
            b"not-installed" => Status::NotInstalled,
            b"config-files" => Status::ConfigFiles,
            b"half-installed" => Status::HalfInstalled,
            b"unpacked" => Status::Unpacked,
            b"half-configured" => Status::HalfConfigured,
            b"triggers-awaited" => Status::TriggersAwaited,
            b"triggers-pending" => Status::TriggersPending,
            b"installed" => Status::Installed,
            _ => return None,
        })
    }

    /// Configured (a pending trigger does not make a package less installed).
    pub(crate) fn is_installed(self) -> bool {
        matches!(
            self,
            Status::Installed | Status::TriggersPending | Status::TriggersAwaited
        )
    }

    /// Nothing of it left but, perhaps, its configuration files.
    pub(crate) fn is_absent(self) -> bool {
        matches!(self, Status::NotInstalled | Status::ConfigFiles)
    }

    /// As dpkg writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::NotInstalled => "not-installed",
            Status::ConfigFiles => "config-files",
            Status::HalfInstalled => "half-installed",
            Status::Unpacked => "unpacked",
            Status::HalfConfigured => "half-configured",
            Status::TriggersAwaited => "triggers-awaited",
            Status::TriggersPending => "triggers-pending",
            Status::Installed => "installed",
        }
    }
}

/// One package instance (a name and an architecture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub arch: Box<str>,
    pub version: Box<str>,
    pub status: Status,
}

/// The parsed database: package name -> its instances (several only with multiarch).
#[derive(Debug, Default)]
pub(crate) struct Db {
    by_name: HashMap<Box<str>, Vec<Entry>>,
}

impl Db {
    /// Parses the text of a status file; stanzas without a name or a known status are skipped.
    pub(crate) fn parse(text: &[u8]) -> Db {
        let mut db = Db::default();
        db.apply(text);
        db
    }

    /// Applies the stanzas of `text` over the database (as a journal entry does): each stanza
    /// replaces the instance of the same name and architecture.
    pub(crate) fn apply(&mut self, text: &[u8]) {
        let mut cur = Stanza::default();
        for line in text.split(|&b| b == b'\n') {
            if line.is_empty() {
                cur.flush(self);
                continue;
            }
            // Continuation lines (descriptions, conffiles) start with a blank.
            let Some((&first, _)) = line.split_first() else {
                continue;
            };
            if first == b' ' || first == b'\t' {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, rest) = line.split_at(colon);
            let value = trim(&rest[1..]);
            match key {
                b"Package" => cur.name = Some(value.to_vec()),
                b"Status" => cur.status = Status::parse(value),
                b"Version" => cur.version = Some(value.to_vec()),
                b"Architecture" => cur.arch = Some(value.to_vec()),
                _ => {}
            }
        }
        cur.flush(self);
    }

    fn insert(&mut self, name: &str, e: Entry) {
        let list = self.by_name.entry(name.into()).or_default();
        match list.iter_mut().find(|x| x.arch == e.arch) {
            Some(x) => *x = e,
            None => list.push(e),
        }
    }

    /// The instance a package name stands for. `name` may carry an architecture
    /// (`libc6:i386`); without one, the instance of the native architecture (or `all`), else
    /// the only one there is. `native` is asked only when several instances exist.
    pub(crate) fn lookup(&self, name: &str, native: impl FnOnce() -> String) -> Option<&Entry> {
        let (base, arch) = match name.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (name, None),
        };
        let list = self.by_name.get(base)?;
        match arch {
            Some(a) => list
                .iter()
                .find(|e| &*e.arch == a)
                .or_else(|| list.iter().find(|e| &*e.arch == "all")),
            None if list.len() == 1 => list.first(),
            None => {
                let native = native();
                list.iter()
                    .find(|e| *e.arch == *native || &*e.arch == "all")
                    .or_else(|| list.iter().find(|e| e.status.is_installed()))
            }
        }
    }

    /// How many package instances it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[derive(Default)]
struct Stanza {
    name: Option<Vec<u8>>,
    status: Option<Status>,
    version: Option<Vec<u8>>,
    arch: Option<Vec<u8>>,
}

impl Stanza {
    fn flush(&mut self, db: &mut Db) {
        let s = std::mem::take(self);
        let (Some(name), Some(status)) = (s.name, s.status) else {
            return;
        };
        let text = |v: Option<Vec<u8>>| -> Box<str> {
            String::from_utf8_lossy(&v.unwrap_or_default())
                .into_owned()
                .into_boxed_str()
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        db.insert(
            &name,
            Entry {
                arch: text(s.arch),
                version: text(s.version),
                status,
            },
        );
    }
}

/// The identity of what a parse read: the status file's (device, inode, size, mtime) and
/// the journal directory's mtime (`None` when it is missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    status: (u64, u64, u64, i64, i64),
    updates: Option<(i64, i64)>,
}

fn status_stamp(m: &fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

fn updates_stamp(dir: &Path) -> Option<(i64, i64)> {
    fs::metadata(dir).ok().map(|m| (m.mtime(), m.mtime_nsec()))
}

/// A dpkg database on disk and its cached parse.
pub(crate) struct Source {
    status: PathBuf,
    updates: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<Db>)>>,
    /// Parses done so far (for tests and the benchmark's claim of one read).
    parses: std::sync::atomic::AtomicU64,
}

impl Source {
    /// The database under `admin` (dpkg's `--admindir`).
    pub(crate) fn new(admin: &Path) -> Source {
        Source {
            status: admin.join("status"),
            updates: admin.join("updates"),
            cache: Mutex::new(None),
            parses: Default::default(),
        }
    }

    /// The system's database.
    pub(crate) fn system() -> &'static Source {
        static S: OnceLock<Source> = OnceLock::new();
        S.get_or_init(|| Source::new(Path::new(ADMIN_DIR)))
    }

    /// The status file's path.
    pub(crate) fn status_path(&self) -> &Path {
        &self.status
    }

    /// How many times the files were parsed.
    #[cfg(test)]
    pub(crate) fn parses(&self) -> u64 {
        self.parses.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stamp_now(&self) -> Result<Stamp, ResError> {
        let m = fs::metadata(&self.status)
            .map_err(|e| ResError::io("reading the dpkg database", &self.status, e))?;
        Ok(Stamp {
            status: status_stamp(&m),
            updates: updates_stamp(&self.updates),
        })
    }

    /// The cached parse, if the files have not changed since (two `stat`s, no read).
    pub(crate) fn cached(&self) -> Result<Option<Arc<Db>>, ResError> {
        let now = self.stamp_now()?;
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache
            .as_ref()
            .filter(|(s, _)| *s == now)
            .map(|(_, db)| db.clone()))
    }

    /// The database as it is now: the cached parse when the files have not changed, else a
    /// new parse (blocking: call it off the async workers). Concurrent callers wait for one
    /// parse.
    pub(crate) fn read(&self) -> Result<Arc<Db>, ResError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.stamp_now()?;
        if let Some((s, db)) = cache.as_ref() {
            if *s == now {
                return Ok(db.clone());
            }
        }
        // The journal's stamp is taken before its entries are read: an entry added later
        // changes it, and the next check reads again.
        let updates = updates_stamp(&self.updates);
        let io = |e| ResError::io("reading the dpkg database", &self.status, e);
        let mut f = fs::File::open(&self.status).map_err(io)?;
        // The identity of the file actually read (dpkg may rename a new one in meanwhile).
        let status = status_stamp(&f.metadata().map_err(io)?);
        let mut text = Vec::with_capacity(usize::try_from(status.2).unwrap_or(0) + 1);
        f.read_to_end(&mut text).map_err(io)?;
        let mut db = Db::parse(&text);
        for entry in journal(&self.updates) {
            // An entry dpkg removed after listing it was folded into the status file.
            if let Ok(t) = fs::read(&entry) {
                db.apply(&t);
            }
        }
        let n = self
            .parses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            path = %self.status.display(),
            packages = db.by_name.len(),
            parse = n + 1,
            "read the dpkg database"
        );
        let db = Arc::new(db);
        *cache = Some((Stamp { status, updates }, db.clone()));
        Ok(db)
    }
}

/// The journal's entries in the order dpkg applies them (their names are zero-padded
/// sequence numbers).
fn journal(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = rd
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let b = n.as_encoded_bytes();
            !b.is_empty() && b.iter().all(u8::is_ascii_digit)
        })
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// dpkg's native architecture (`dpkg --print-architecture`), asked once.
pub(crate) fn native_arch() -> String {
    static A: OnceLock<String> = OnceLock::new();
    A.get_or_init(|| {
        std::process::Command::new("dpkg")
            .arg("--print-architecture")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: hello
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.10-3
Description: example package
 with a continuation line: Package: fake
Conffiles:
 /etc/x 0123

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libfoo
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1.1

Package: libfoo
Status: install ok unpacked
Architecture: i386
Multi-Arch: same
Version: 1.2

Package: data
Status: install ok triggers-pending
Architecture: all
Version: 3
";

    #[test]
    fn parses_status_and_skips_continuation_lines() {
        let db = Db::parse(STATUS.as_bytes());
        assert_eq!(db.len(), 5);
        let e = db.lookup("hello", || unreachable!()).unwrap();
        assert_eq!((&*e.version, e.status), ("2.10-3", Status::Installed));
        assert!(db.lookup("fake", String::new).is_none());
        let g = db.lookup("gone", String::new).unwrap();
        assert!(g.status.is_absent() && !g.status.is_installed());
        assert!(db
            .lookup("data", String::new)
            .unwrap()
            .status
            .is_installed());
    }

    #[test]
    fn multiarch_instances_are_told_apart() {
        let db = Db::parse(STATUS.as_bytes());
        let native = db.lookup("libfoo", || "amd64".into()).unwrap();
        assert_eq!(&*native.version, "1.1");
        let foreign = db.lookup("libfoo:i386", || unreachable!()).unwrap();
        assert_eq!(foreign.status, Status::Unpacked);
        assert!(db.lookup("libfoo:arm64", String::new).is_none());
        assert!(db.lookup("data:amd64", String::new).is_some(), "arch all");
    }

    #[test]
    fn a_journal_entry_replaces_its_instance() {
        let mut db = Db::parse(STATUS.as_bytes());
        db.apply(b"Package: hello\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 2.10-3\n");
        assert_eq!(
            db.lookup("hello", String::new).unwrap().status,
            Status::ConfigFiles
        );
        assert_eq!(db.len(), 5);
    }

    #[test]
    fn the_cache_is_reused_until_the_file_changes() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("status"), STATUS).unwrap();
        let src = Source::new(t.path());
        assert!(src.cached().unwrap().is_none());
        let a = src.read().unwrap();
        let b = src.read().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(src.parses(), 1);
        // dpkg's way: a new file renamed over the old one.
        let new = t.path().join("status-new");
        fs::write(&new, STATUS.replace("2.10-3", "2.10-4")).unwrap();
        fs::rename(&new, t.path().join("status")).unwrap();
        assert!(src.cached().unwrap().is_none());
        let c = src.read().unwrap();
        assert_eq!(&*c.lookup("hello", String::new).unwrap().version, "2.10-4");
        // A journal entry on top.
        fs::create_dir(t.path().join("updates")).unwrap();
        fs::write(
            t.path().join("updates/0000000001"),
            "Package: hello\nStatus: install ok half-configured\nArchitecture: amd64\nVersion: 2.10-5\n",
        )
        .unwrap();
        fs::write(t.path().join("updates/tmp.i"), "Package: junk\n").unwrap();
        let d = src.read().unwrap();
        assert_eq!(
            d.lookup("hello", String::new).unwrap().status,
            Status::HalfConfigured
        );
        assert_eq!(src.parses(), 3);
    }

    #[test]
    fn a_missing_database_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let e = Source::new(t.path()).read().unwrap_err().to_string();
        assert!(e.contains("dpkg database") && e.contains("status"), "{e}");
    }
}
