//! `file`: a regular file, a directory (path ending in `/`) or a symlink, with its content,
//! mode and ownership.
//!
//! Writes are atomic: the new content goes to a temporary file in the same directory, which is
//! written, given its owner and mode, fsynced and renamed over the target, then the directory
//! is fsynced; a reader (or a crash) never sees a half-written file. Content is rewritten only
//! when it differs; mode and owner are fixed in place. Missing parent directories are created
//! (mode 0755). The watch uses the process-wide inotify hub ([`crate::fswatch`]). Temporary
//! files are named after their process, and the first check of a directory removes those of
//! processes that are gone (killed mid-write), see [`temps`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};

/// The `file` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("file")
            .field(
                Field::new(
                    "path",
                    Type::Str,
                    "absolute path (default: the resource name); a trailing `/` makes it a directory",
                )
                .optional(),
            )
            .field(
                Field::new(
                    "state",
                    Type::Str,
                    "\"exists\", \"absent\", or \"\" to leave existence unmanaged",
                )
                .default_value("exists")
                .allowed(&["exists", "absent", ""]),
            )
            .field(
                Field::new("content", Type::Str, "the file's content (unset: not managed)")
                    .optional(),
            )
            .field(
                Field::new(
                    "source",
                    Type::Str,
                    "copy the content from this local file; a directory (trailing `/`, with `recurse`) is copied as a tree onto a directory path",
                )
                .optional(),
            )
            .field(
                Field::new(
                    "fragments",
                    Type::List(Box::new(Type::Str)),
                    "files whose contents, joined in order, are the content; a directory (trailing `/`) gives its files by name",
                )
                .default_value(tend_model::Value::List(Vec::new())),
            )
            .field(
                Field::new(
                    "symlink",
                    Type::Any,
                    "true (mgmt's form): make the path a symbolic link to `source`, which may be relative; or the link's target itself (a string)",
                )
                .optional(),
            )
            .field(
                Field::new(
                    "mode",
                    Type::Str,
                    "octal (\"0644\") or symbolic (\"u=rw,go=r\", \"u+x\", \"go-w\", applied to the current mode) permissions (unset: 0644 for new files, else kept)",
                )
                .optional(),
            )
            .field(Field::new("owner", Type::Str, "owner, a user name or a numeric uid").optional())
            .field(Field::new("group", Type::Str, "group, a group name or a numeric gid").optional())
            .field(
                Field::new(
                    "recurse",
                    Type::Bool,
                    "with state \"absent\", also remove a non-empty directory; copy a `source` directory's whole tree",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "force",
                    Type::Bool,
                    "replace a directory with a file or a file with a directory (also inside a copied tree)",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "purge",
                    Type::Bool,
                    "with a `source` directory, remove what the destination tree holds and the source does not",
                )
                .default_value(false),
            )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Exists,
    Absent,
    Unmanaged,
}

/// An owner or group: a numeric id, or a name looked up at each check.
#[derive(Debug)]
enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    fn parse(s: String) -> Who {
        match s.parse::<u32>() {
            Ok(id) => Who::Id(id),
            Err(_) => Who::Name(s),
        }
    }

    /// The id; a name is looked up with `lookup` (errors name `field` and the `what`).
    fn resolve(
        &self,
        field: &str,
        what: &str,
        lookup: impl FnOnce(&str) -> nix::Result<Option<u32>>,
    ) -> Result<u32, ResError> {
        let name = match self {
            Who::Id(id) => return Ok(*id),
            Who::Name(n) => n,
        };
        match lookup(name) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(field_err(field, format!("no such {what} {name:?}"))),
            Err(e) => Err(field_err(field, format!("looking up {what} {name:?}: {e}"))),
        }
    }
}

#[derive(Debug)]
struct Cfg {
    /// The resource name, unless it is the path (with the trailing `/` of a directory).
    name: Option<Box<str>>,
    /// Without trailing slash.
    path: Arc<Path>,
    is_dir: bool,
    state: State,
    content: Option<Vec<u8>>,
    source: Option<Arc<Path>>,
    /// `source` is a directory whose tree is copied onto the directory `path`.
    source_dir: bool,
    /// mgmt's `symlink: true`: with state `absent`, a path that is not a symlink is removed
    /// only with `force`.
    link_only: bool,
    /// The files (or, `true`, directories of files) whose content joined is the content.
    fragments: Vec<(Arc<Path>, bool)>,
    symlink: Option<PathBuf>,
    mode: Option<ModeSpec>,
    owner: Option<Who>,
    group: Option<Who>,
    recurse: bool,
    force: bool,
    purge: bool,
    /// Checking is cheap enough to run on the async worker: no source to read, small
    /// content, no user or group name to look up.
    inline_check: bool,
}

impl Cfg {
    /// `file[name]`, for logs.
    fn id(&self) -> impl std::fmt::Display + '_ {
        struct Id<'a>(&'a Cfg);
        impl std::fmt::Display for Id<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match &self.0.name {
                    Some(n) => write!(f, "file[{n}]"),
                    None if self.0.is_dir => write!(f, "file[{}/]", self.0.path.display()),
                    None => write!(f, "file[{}]", self.0.path.display()),
                }
            }
        }
        Id(self)
    }
}

/// Whether `name` reads exactly as `path` (plus `/` for a directory), so need not be kept.
fn is_path_name(name: &str, path: &Path, is_dir: bool) -> bool {
    let p = path.as_os_str().as_encoded_bytes();
    let n = name.as_bytes();
    match n.strip_suffix(b"/") {
        Some(head) if is_dir => head == p,
        _ => !is_dir && n == p,
    }
}

/// The largest `content` checked inline (larger ones are compared on a blocking thread).
const INLINE_CONTENT_MAX: usize = 64 * 1024;

/// Parses an octal mode such as `"0644"` or `"755"`.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

/// A `mode`: octal, or symbolic clauses (`u=rw,go=r`, `u+x`, `go-w`) applied to the mode the
/// path has (or would be created with).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One symbolic clause: the permission bits it touches (`who`'s rwx, set-id and sticky
/// bits), how, and the bits it sets or clears.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    op: u8,
    /// The bits `=` clears first: rwx of each subject, set-uid with `u`, set-gid with `g`.
    clear: u32,
    /// The bits named by `what` for the subjects.
    bits: u32,
}

impl ModeSpec {
    /// Parses `mode` as mgmt does: octal first, else comma-separated symbolic clauses, each
    /// `who` (`u`, `g`, `o`, `a`; empty = `a`) then one operator (`=`, `+`, `-`) then `what`
    /// (`r`, `w`, `x`, `s`, `t`). A subject may appear in one clause only, and `a` (or an
    /// empty `who`) only in a clause of its own.
    fn parse(s: &str) -> Result<ModeSpec, String> {
        if let Some(m) = parse_mode(s) {
            return Ok(ModeSpec::Octal(m));
        }
        let bad = |why: String| Err(format!("{s:?} is not an octal or symbolic mode: {why}"));
        if s.is_empty() {
            return bad("it is empty".into());
        }
        let parts: Vec<&str> = s.split(',').collect();
        let mut seen = 0u8;
        let mut clauses = Vec::with_capacity(parts.len());
        for part in &parts {
            let ops: Vec<(usize, u8)> = part
                .bytes()
                .enumerate()
                .filter(|(_, b)| matches!(b, b'=' | b'+' | b'-'))
                .collect();
            let (at, op) = match ops.as_slice() {
                [one] => *one,
                [] if parts.len() == 1 => return bad("no `=`, `+` or `-`".into()),
                [] => return bad(format!("{part:?} has no `=`, `+` or `-`")),
                _ => return bad(format!("{part:?} has more than one operator")),
            };
            let (who, what) = (&part[..at], &part[at + 1..]);
            let mut subjects = 0u8; // u = 4, g = 2, o = 1
            for c in who.bytes() {
                subjects |= match c {
                    b'u' => 4,
                    b'g' => 2,
                    b'o' => 1,
                    b'a' => 7,
                    _ => return bad(format!("{:?} is not a subject (u, g, o, a)", c as char)),
                };
            }
            if who.is_empty() || who.contains('a') {
                if parts.len() > 1 {
                    return bad("`a` (or no subject) must be the only clause".into());
                }
                subjects = 7;
            }
            if seen & subjects != 0 {
                return bad("each subject (u, g, o) may be given once".into());
            }
            seen |= subjects;
            let mut clear = 0u32;
            let mut bits = 0u32;
            for (flag, shift, setid) in [(4u8, 6u32, 0o4000u32), (2, 3, 0o2000), (1, 0, 0)] {
                if subjects & flag == 0 {
                    continue;
                }
                clear |= (0o7 << shift) | setid;
                for c in what.bytes() {
                    bits |= match c {
                        b'r' => 0o4 << shift,
                        b'w' => 0o2 << shift,
                        b'x' => 0o1 << shift,
                        b's' => setid,
                        b't' => 0o1000,
                        _ => {
                            return bad(format!(
                                "{:?} is not a permission (r, w, x, s, t)",
                                c as char
                            ))
                        }
                    };
                }
            }
            clauses.push(Clause { op, clear, bits });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The mode wanted for a path whose permission bits are `from` now (for a path yet to be
    /// made: those it would be made with).
    fn apply(&self, from: u32) -> u32 {
        match self {
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(clauses) => clauses.iter().fold(from & 0o7777, |m, c| match c.op {
                b'=' => (m & !c.clear) | c.bits,
                b'+' => m | c.bits,
                _ => m & !c.bits,
            }),
        }
    }
}

/// Checks a path is absolute and normalized; returns it without a trailing slash, and
/// whether it had one.
fn clean_path(field: &str, s: &str) -> Result<(Arc<Path>, bool), ResError> {
    if !s.starts_with('/') {
        return Err(field_err(field, format!("{s:?} is not an absolute path")));
    }
    if s.contains('\0') {
        return Err(field_err(field, format!("{s:?} contains a NUL byte")));
    }
    // (Of an absolute path, `Path::components` yields no `.`: a `..` segment is what is left.)
    if s.split('/').any(|seg| seg == "..") {
        return Err(field_err(
            field,
            format!("{s:?} is not normalized (`.` or `..`)"),
        ));
    }
    let trimmed = s.trim_end_matches('/');
    let is_dir = s.ends_with('/');
    let path: Arc<Path> = if trimmed.is_empty() {
        Arc::from(Path::new("/"))
    } else {
        Arc::from(Path::new(trimmed))
    };
    Ok((path, is_dir))
}

fn cfg(spec: &ResSpec) -> Result<Cfg, ResError> {
    let p = Params::new(spec, schema())?;
    let raw = p.opt_str_ref("path")?.unwrap_or(&spec.name);
    let field = if p.is_set("path") { "path" } else { "name" };
    let (path, is_dir) = clean_path(field, raw)?;
    let state = match p.opt_str_ref("state")?.unwrap_or("") {
        "exists" => State::Exists,
        "absent" => State::Absent,
        _ => State::Unmanaged,
    };
    let content = p.opt_str("content")?.map(String::into_bytes);
    // mgmt's `symlink: true` takes its target from `source` (absolute or not).
    let link_bool = match p.get("symlink") {
        Some(tend_model::Value::Bool(b)) => Some(*b),
        _ => None,
    };
    let (source, source_dir) = match p.opt_str("source")? {
        Some(_) if link_bool == Some(true) => (None, false),
        Some(s) => {
            let (src, d) = clean_path("source", &s)?;
            (Some(src), d)
        }
        None => (None, false),
    };
    let mut fragments = Vec::new();
    for f in p.strs("fragments")? {
        let (fp, d) = clean_path("fragments", &f)?;
        if path.starts_with(&fp) {
            return Err(field_err(
                "fragments",
                format!("{f:?} holds the path itself"),
            ));
        }
        fragments.push((fp, d));
    }
    if !fragments.is_empty() {
        let clash = if content.is_some() {
            Some("`content`")
        } else if source.is_some() {
            Some("`source`")
        } else if is_dir {
            Some("a directory path")
        } else if state == State::Absent {
            Some("state \"absent\"")
        } else {
            None
        };
        if let Some(c) = clash {
            return Err(field_err(
                "fragments",
                format!("cannot be combined with {c}"),
            ));
        }
    }
    let recurse = p.bool("recurse")?;
    let force = p.bool("force")?;
    let purge = p.bool("purge")?;
    let symlink = match p.get("symlink") {
        None | Some(tend_model::Value::Bool(false)) => None,
        Some(tend_model::Value::Bool(true)) => match p.opt_str("source")? {
            Some(_) if state == State::Absent => {
                return Err(field_err(
                    "source",
                    "cannot be combined with state \"absent\"",
                ))
            }
            Some(t) if t.is_empty() => return Err(field_err("source", "is empty")),
            Some(t) => Some(PathBuf::from(t)),
            None if state == State::Absent => None,
            None => {
                return Err(field_err(
                    "source",
                    "is needed with `symlink: true`: it is the link's target",
                ))
            }
        },
        Some(tend_model::Value::Str(t)) if t.is_empty() => {
            return Err(field_err("symlink", "is empty"))
        }
        Some(tend_model::Value::Str(_)) if p.is_set("source") => {
            return Err(field_err(
                "symlink",
                "a target given here cannot be combined with `source` (mgmt's form: `symlink: true` and the target in `source`)",
            ))
        }
        Some(tend_model::Value::Str(t)) => Some(PathBuf::from(t)),
        Some(v) => {
            return Err(field_err(
                "symlink",
                format!(
                    "expected a bool (the target in `source`) or the target path, got {}",
                    v.type_name()
                ),
            ))
        }
    };
    let link_only = link_bool == Some(true);
    let mode = match p.opt_str_ref("mode")? {
        Some(m) => Some(ModeSpec::parse(m).map_err(|e| field_err("mode", e))?),
        None => None,
    };
    let owner = p.opt_str("owner")?;
    let group = p.opt_str("group")?;
    for (f, v) in [("owner", &owner), ("group", &group)] {
        if v.as_deref() == Some("") {
            return Err(field_err(f, "is empty (leave it unset to not manage it)"));
        }
    }
    if content.is_some() && source.is_some() {
        return Err(field_err("source", "cannot be combined with `content`"));
    }
    if is_dir && content.is_some() {
        return Err(field_err(
            "content",
            format!("{} is a directory (trailing `/`) and has no content", raw),
        ));
    }
    if source.is_some() && is_dir != source_dir {
        return Err(field_err(
            "source",
            if is_dir {
                format!("{raw} is a directory (trailing `/`): its source must be one too")
            } else {
                format!("is a directory (trailing `/`) but {raw} is not")
            },
        ));
    }
    if let (Some(src), true) = (&source, source_dir) {
        if path.starts_with(src) || src.starts_with(&path) {
            return Err(field_err(
                "source",
                "a directory copied onto itself, inside itself or around itself never ends",
            ));
        }
    }
    if source_dir && !recurse {
        return Err(field_err(
            "recurse",
            "must be true to copy a `source` directory",
        ));
    }
    if source_dir && state == State::Absent {
        return Err(field_err(
            "source",
            "cannot be combined with state \"absent\"",
        ));
    }
    if purge && !source_dir {
        return Err(field_err(
            "purge",
            "needs a `source` directory (trailing `/`) to compare the destination with",
        ));
    }
    if symlink.is_some()
        && (content.is_some() || source.is_some() || is_dir || !fragments.is_empty())
    {
        return Err(field_err(
            "symlink",
            "cannot be combined with `content`, `source`, `fragments` or a directory path",
        ));
    }
    if symlink.is_some() && mode.is_some() {
        return Err(field_err("mode", "a symlink has no mode of its own"));
    }
    if state == State::Absent && *path == *Path::new("/") {
        return Err(field_err(field, "refusing to remove `/`"));
    }
    let owner = owner.map(Who::parse);
    let group = group.map(Who::parse);
    let inline_check = source.is_none()
        && fragments.is_empty()
        && content
            .as_ref()
            .is_none_or(|c| c.len() <= INLINE_CONTENT_MAX)
        && !matches!(owner, Some(Who::Name(_)))
        && !matches!(group, Some(Who::Name(_)));
    Ok(Cfg {
        name: (p.is_set("path") || !is_path_name(&spec.name, &path, is_dir))
            .then(|| spec.name.as_str().into()),
        path,
        is_dir,
        state,
        content,
        source,
        symlink,
        mode,
        owner,
        group,
        source_dir,
        link_only,
        fragments,
        recurse,
        force,
        purge,
        inline_check,
    })
}

/// Builds a `file`: validates paths, mode and combinations; touches nothing.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let cfg = cfg(spec)?;
    if spec.meta.reverse && (cfg.is_dir || cfg.symlink.is_some()) {
        return Err(field_err(
            "Meta:reverse",
            "a directory or a symlink cannot be reversed (only a regular file can)",
        ));
    }
    Ok(Box::new(File {
        cfg: Arc::new(cfg),
        swept: Default::default(),
    }))
}

/// `Meta:reverse` (mgmt's `Reversed`): what puts the path back as it is now, before the
/// resource first runs. A path that does not exist is removed again (state `absent`; with
/// state `""` nothing is undone). An existing regular file gets back what the resource
/// manages of it, as found: its content (with `content` or `source`), its mode (with `mode`),
/// its owner and group, numerically (with `owner`, `group`); a file the resource removes
/// (`absent`) gets all of them back. Content that is not UTF-8 cannot be kept (a `str`).
pub(crate) fn reverse(spec: &ResSpec) -> Result<ResSpec, ResError> {
    let c = cfg(spec)?;
    let mut rev = ResSpec::new("file", spec.name.clone());
    if let Some(p) = spec.params.get("path") {
        rev.params.insert("path".into(), p.clone());
    }
    let m = match fs::symlink_metadata(&c.path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let state = if c.state == State::Unmanaged {
                ""
            } else {
                "absent"
            };
            return Ok(rev.param("state", state));
        }
        Err(e) => return Err(ResError::io("looking at", &c.path, e)),
    };
    if !m.file_type().is_file() {
        return Err(ResError::new(format!(
            "{} is a {}, not a regular file: its reversal is not implemented",
            c.path.display(),
            kind_of(&m)
        )));
    }
    let all = c.state == State::Absent;
    rev = rev.param(
        "state",
        if c.state == State::Unmanaged {
            ""
        } else {
            "exists"
        },
    );
    if all || c.content.is_some() || c.source.is_some() || !c.fragments.is_empty() {
        let bytes = fs::read(&c.path).map_err(|e| ResError::io("reading", &c.path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ResError::new(format!(
                "{}: its content is not UTF-8, so it cannot be kept for its reversal",
                c.path.display()
            ))
        })?;
        rev = rev.param("content", text);
    }
    if all || c.mode.is_some() {
        rev = rev.param("mode", format!("{:04o}", m.mode() & 0o7777));
    }
    if all || c.owner.is_some() {
        rev = rev.param("owner", m.uid().to_string());
    }
    if all || c.group.is_some() {
        rev = rev.param("group", m.gid().to_string());
    }
    Ok(rev)
}

/// `file` provides `file:<path>` (with the trailing `/` of a directory) and requires
/// `file:<dir>/` for each ancestor directory, `file:<source>` for its source, `file:<f>` for
/// each of its fragments, and the `user`
/// and `group` its `owner` and `group` name (`user:<name>`, `group:<name>`).
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    crate::account::require_owner(spec, "owner", "group", out);
    let raw = spec
        .params
        .get("path")
        .and_then(|v| v.as_str())
        .unwrap_or(&spec.name);
    // One buffer for every key.
    let mut key = String::with_capacity(raw.len() + 6);
    key.push_str("file:");
    key.push_str(raw);
    out.provides(&key);
    let trimmed = raw.trim_end_matches('/');
    let plain = trimmed.starts_with('/')
        && !trimmed.contains("//")
        && !trimmed.contains("/./")
        && !trimmed.ends_with("/.");
    if plain {
        // The parents of a plain absolute path end where its slashes are: no need for
        // `Path::ancestors`, which parses the components again for each (a tenth of the
        // graph check with 10,000 files).
        let mut rest = trimmed;
        while let Some(slash) = rest.rfind('/') {
            rest = &rest[..slash];
            key.truncate(5);
            key.push_str(rest);
            key.push('/');
            out.requires(&key);
        }
    } else {
        for a in Path::new(trimmed).ancestors().skip(1) {
            let s = a.to_string_lossy();
            if s.is_empty() {
                continue;
            }
            key.truncate(5);
            key.push_str(&s);
            if !s.ends_with('/') {
                key.push('/');
            }
            out.requires(&key);
        }
    }
    if let Some(src) = spec.params.get("source").and_then(|v| v.as_str()) {
        key.truncate(5);
        key.push_str(src);
        out.requires(&key);
    }
    if let Some(tend_model::Value::List(frags)) = spec.params.get("fragments") {
        for f in frags.iter().filter_map(|v| v.as_str()) {
            key.truncate(5);
            key.push_str(f);
            out.requires(&key);
        }
    }
}

struct File {
    cfg: Arc<Cfg>,
    /// Its directory was swept of stale temporary files (by this resource or another).
    swept: std::sync::atomic::AtomicBool,
}

/// Which directories are on a local filesystem, where a check may run (and a watch be armed)
/// inline on an async worker. A stalled network filesystem (an NFS server gone away) must
/// stall a blocking thread, where `Meta:timeout` still fires and the daemon stays responsive,
/// never a worker. The first caller for a directory asks `statfs` on a blocking thread and the
/// others wait for its answer; an answer holds for [`local_fs::TTL`], so a filesystem mounted
/// over a directory later is noticed.
mod local_fs {
    use std::path::{Path, PathBuf};

    use foldhash::HashMap;
    use std::sync::{Arc, OnceLock, RwLock};
    use std::time::{Duration, Instant};

    use tokio::sync::OnceCell;

    /// How long an answer holds.
    pub(super) const TTL: Duration = Duration::from_secs(10);

    type Answer = Arc<OnceCell<(bool, Instant)>>;

    fn answers() -> &'static RwLock<HashMap<PathBuf, Answer>> {
        static ANSWERS: OnceLock<RwLock<HashMap<PathBuf, Answer>>> = OnceLock::new();
        ANSWERS.get_or_init(Default::default)
    }

    /// Whether `dir` (or, while it is missing, its nearest existing ancestor) is on a local
    /// filesystem; `false` when it cannot be told. Never blocks the calling thread on the
    /// filesystem.
    pub(super) async fn dir_is_local(dir: &Path) -> bool {
        let fresh = |x: &Answer| x.get().is_none_or(|(_, at)| at.elapsed() < TTL);
        let known = {
            let a = answers().read().unwrap_or_else(|e| e.into_inner());
            a.get(dir).filter(|x| fresh(x)).cloned()
        };
        let answer = match known {
            Some(x) => x,
            None => {
                let mut a = answers().write().unwrap_or_else(|e| e.into_inner());
                match a.get(dir) {
                    Some(x) if fresh(x) => x.clone(),
                    _ => {
                        let x = Answer::default();
                        a.insert(dir.to_path_buf(), x.clone());
                        x
                    }
                }
            }
        };
        answer
            .get_or_init(|| async {
                let d = dir.to_path_buf();
                let local = tokio::task::spawn_blocking(move || {
                    // A missing directory will be created on its nearest existing ancestor's
                    // filesystem.
                    let mut at: &Path = &d;
                    loop {
                        match nix::sys::statfs::statfs(at) {
                            Ok(st) => {
                                #[allow(clippy::useless_conversion)] // an i32 on some targets
                                return is_local(i64::from(st.filesystem_type().0));
                            }
                            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => {
                                match at.parent() {
                                    Some(p) => at = p,
                                    None => return false,
                                }
                            }
                            Err(_) => return false,
                        }
                    }
                })
                .await
                .unwrap_or(false);
                (local, Instant::now())
            })
            .await
            .0
    }

    /// Filesystems whose operations never wait on the network (`statfs(2)` magic numbers);
    /// anything else (NFS, CIFS, FUSE, Ceph, 9p, ...) is checked on a blocking thread.
    pub(super) fn is_local(magic: i64) -> bool {
        const LOCAL: &[i64] = &[
            0xEF53,      // ext2/3/4
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0x0102_1994, // tmpfs
            0x794C_7630, // overlayfs
            0x2FC1_2FC1, // zfs
            0xF2F5_2010, // f2fs
            0x8584_58F6, // ramfs
            0x7371_7368, // squashfs
            0x4D44,      // vfat/msdos
            0x2011_BAB0, // exfat
            0x5265_4973, // reiserfs
            0x3153_464A, // jfs
            0xCA45_1A4E, // bcachefs
            0x3434,      // nilfs
            0x9FA0,      // proc
            0x6265_6572, // sysfs
        ];
        LOCAL.contains(&magic)
    }
}

/// The temporary files this kind makes next to the files it writes, and the removal of those
/// a process left behind (killed in the middle of a write). Names identify their process:
/// `.tend.<pid>-<start>.<random>.tmp` (content being written; `<random>` is six letters or
/// digits) and `.tend.<pid>-<start>.<name>.lnk` (a symlink about to be renamed over `<name>`),
/// where `<start>` is the process's start time (`/proc/<pid>/stat`, clock ticks since boot),
/// so a pid used again by another process does not pass for the owner. A file is removed only
/// when it reads exactly so and its owner is gone: never one of a write still running, in
/// this process or another.
/// Removes the temporaries a killed tend left in `dir` (this naming scheme's only).
pub(crate) fn sweep_temps(dir: &Path) -> usize {
    temps::sweep(dir)
}

/// Removes the temporaries a killed tend left beside `path` (in its directory): what a kind
/// that rewrites one file with [`write_atomic`] does in `init`.
pub(crate) fn sweep_beside(path: &Path) {
    if let Some(dir) = path.parent() {
        temps::sweep(dir);
    }
}

/// The mode and owner a rewrite gives a file: those it has (`meta`), or 0644 and the
/// writer's for a new one.
pub(crate) fn kept_mode_owner(meta: Option<&fs::Metadata>) -> (u32, (Option<u32>, Option<u32>)) {
    match meta {
        Some(m) => (m.mode() & 0o7777, (Some(m.uid()), Some(m.gid()))),
        None => (0o644, (None, None)),
    }
}

mod temps {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use foldhash::HashSet;

    /// A process's start time, in clock ticks since boot (`None` without `/proc`).
    fn start_time(pid: u32) -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        // The 22nd field, counting `state` as the 3rd.
        rest.split_ascii_whitespace().nth(19)?.parse().ok()
    }

    /// `<pid>-<start>` of this process.
    pub(super) fn tag() -> &'static str {
        static TAG: OnceLock<String> = OnceLock::new();
        TAG.get_or_init(|| {
            let pid = std::process::id();
            format!("{pid}-{}", start_time(pid).unwrap_or(0))
        })
    }

    /// The owner `(pid, start)` of a file named by this kind's scheme, else `None`.
    pub(super) fn owner(name: &[u8]) -> Option<(u32, u64)> {
        let rest = name.strip_prefix(b".tend.")?;
        let (middle, ext) = rest.split_at(rest.len().checked_sub(4)?);
        let dot = middle.iter().position(|b| *b == b'.')?;
        let (tag, what) = (&middle[..dot], &middle[dot + 1..]);
        let ok = match ext {
            b".tmp" => what.len() == 6 && what.iter().all(u8::is_ascii_alphanumeric),
            b".lnk" => !what.is_empty(),
            _ => false,
        };
        let dash = tag.iter().position(|b| *b == b'-')?;
        let digits = |d: &[u8]| !d.is_empty() && d.len() <= 20 && d.iter().all(u8::is_ascii_digit);
        let (pid, start) = (&tag[..dash], &tag[dash + 1..]);
        if !ok || !digits(pid) || !digits(start) {
            return None;
        }
        let text = |d| std::str::from_utf8(d).ok();
        Some((text(pid)?.parse().ok()?, text(start)?.parse().ok()?))
    }

    /// Whether the process that made a file is still running (`true` when that cannot be
    /// told: nothing is removed then).
    fn alive(pid: u32, start: u64) -> bool {
        if tag() == format!("{pid}-{start}") {
            return true;
        }
        match start_time(pid) {
            Some(now) => start == 0 || now == start,
            None => fs::metadata("/proc/self/stat").is_err(),
        }
    }

    /// Whether `dir` is yet to be swept by this process (true once per directory).
    pub(super) fn claim(dir: &Path) -> bool {
        static SWEPT: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
        let mut swept = SWEPT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if swept.contains(dir) {
            return false;
        }
        swept.insert(dir.to_path_buf())
    }

    /// Removes the temporary files of processes that are gone from `dir`; returns how many.
    /// A directory that cannot be read is left alone (the check says what is wrong with it).
    pub(super) fn sweep(dir: &Path) -> usize {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((pid, start)) = owner(name.as_encoded_bytes()) else {
                continue;
            };
            if alive(pid, start) {
                continue;
            }
            let path = e.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %path.display(), "removed a temporary file left by a process that is gone");
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove a stale temporary file")
                }
            }
        }
        removed
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_the_exact_scheme_names_an_owner() {
            assert_eq!(owner(b".tend.12-345.a1B2c3.tmp"), Some((12, 345)));
            assert_eq!(owner(b".tend.12-345.motd.lnk"), Some((12, 345)));
            assert_eq!(owner(b".tend.12-345.a.b.lnk"), Some((12, 345)));
            for n in [
                &b".tend.foo.tmp"[..],
                b".tend.abcdef.tmp",
                b".tend.12.a1B2c3.tmp",
                b".tend.12-.a1B2c3.tmp",
                b".tend.-3.a1B2c3.tmp",
                b".tend.12-345.a1B2c.tmp",
                b".tend.12-345.a1B2c3d.tmp",
                b".tend.12-345.a1B2c3.tmpx",
                b".tend.12-345..lnk",
                b".tend.12-345.tmp",
                b"tend.12-345.a1B2c3.tmp",
                b".tend.1x-345.a1B2c3.tmp",
            ] {
                assert_eq!(owner(n), None, "{}", String::from_utf8_lossy(n));
            }
        }

        #[test]
        fn this_process_is_alive_and_its_tag_parses() {
            let name = format!(".tend.{}.abcdef.tmp", tag());
            let (pid, start) = owner(name.as_bytes()).unwrap();
            assert_eq!(pid, std::process::id());
            assert!(alive(pid, start));
            // The same pid with another start time is another, gone, process.
            assert!(!alive(pid, start + 1));
        }
    }
}

#[async_trait::async_trait]
impl Resource for File {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        if let (Some(src), true) = (&self.cfg.source, self.cfg.source_dir) {
            // Both trees, each directory's entries: the set follows directories made or gone.
            let (src, dst) = (src.clone(), self.cfg.path.clone());
            return fswatch::follow(&self.cfg.id().to_string(), w, move || {
                let mut t = Vec::new();
                crate::tar::dirs_below(&dst, &mut t);
                crate::tar::dirs_below(&src, &mut t);
                t
            })
            .await;
        }
        if !self.cfg.fragments.is_empty() {
            let (path, frags) = (self.cfg.path.clone(), self.cfg.fragments.clone());
            return fswatch::follow(&self.cfg.id().to_string(), w, move || {
                let mut t = vec![fswatch::Target::Path(path.clone())];
                for (f, dir) in &frags {
                    t.push(match dir {
                        true => fswatch::Target::Entries(f.clone()),
                        false => fswatch::Target::Path(f.clone()),
                    });
                }
                t
            })
            .await;
        }
        let subscribe = |path: Arc<Path>, source: Option<Arc<Path>>, w: Watcher| {
            let sub = fswatch::subscribe(&path, w.clone())?;
            let src = match source {
                Some(s) => Some(fswatch::subscribe(&s, w)?),
                None => None,
            };
            Ok::<_, ResError>((sub, src))
        };
        let (path, source) = (self.cfg.path.clone(), self.cfg.source.clone());
        let dir = path.parent().unwrap_or(Path::new("/"));
        // Arming a watch looks the path up: inline only where that cannot hang.
        let (mut sub, mut src) = if source.is_none() && local_fs::dir_is_local(dir).await {
            subscribe(path, source, w.clone())?
        } else {
            let w = w.clone();
            tokio::task::spawn_blocking(move || subscribe(path, source, w))
                .await
                .map_err(|e| {
                    ResError::new(format!("watching {}: {e}", self.cfg.path.display()))
                })??
        };
        w.running();
        match &mut src {
            Some(src) => {
                tokio::select! {
                    e = sub.failed() => Err(e),
                    e = src.failed() => Err(e),
                }
            }
            None => Err(sub.failed().await),
        }
    }

    /// Its watch holds only in-process state (an inotify subscription, memory).
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        // Most checks find the file in state after an lstat and a small read: do that here
        // rather than pay for a hop to a blocking thread. What was seen is handed on.
        let mut seen = Seen::default();
        let dir = self.cfg.path.parent().unwrap_or(Path::new("/"));
        // The first check that may change anything sweeps the directory of what a killed
        // process left (once per directory and process).
        if ctx.apply
            && !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed)
            && temps::claim(dir)
        {
            if local_fs::dir_is_local(dir).await {
                temps::sweep(dir);
            } else {
                let d = dir.to_path_buf();
                let _ = tokio::task::spawn_blocking(move || temps::sweep(&d)).await;
            }
        }
        if self.cfg.inline_check && local_fs::dir_is_local(dir).await {
            // A dry run ends here and says what would change; a look before applying is quiet.
            match check(&self.cfg, false, !ctx.apply, &mut seen)? {
                Checked::Changed if ctx.apply => {}
                done => return Ok(done),
            }
        }
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || check(&cfg, ctx.apply, !ctx.apply, &mut seen))
            .await
            .map_err(|e| ResError::new(format!("checking {}: {e}", self.cfg.path.display())))?
    }
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>, ResError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResError::io("reading", path, e)),
    }
}

fn resolve_owner(who: &Who) -> Result<u32, ResError> {
    who.resolve("owner", "user", |n| {
        nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()))
    })
}

fn resolve_group(who: &Who) -> Result<u32, ResError> {
    who.resolve("group", "group", |n| {
        nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()))
    })
}

/// Creates the missing ancestors of `path` (mode 0755).
fn make_parents(path: &Path) -> Result<(), ResError> {
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| ResError::io("creating directory", dir, e))?;
        }
    }
    Ok(())
}

fn fsync_dir_now(dir: &Path) -> Result<(), ResError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ResError::io("syncing directory", dir, e))
}

/// Group commit of directory fsyncs: per directory, how many syncs were asked for, how many
/// are covered by a completed fsync, and whether one is running.
#[derive(Default)]
struct DirSync {
    state: Mutex<(u64, u64, bool)>,
    done: Condvar,
}

/// Makes the entries of `dir` durable. Callers that arrive while a sync is running wait for
/// the next one, which covers all of them: 10,000 files written concurrently into one
/// directory cost a handful of directory fsyncs, not 10,000.
fn fsync_dir(dir: &Path) -> Result<(), ResError> {
    static DIRS: OnceLock<Mutex<HashMap<PathBuf, Arc<DirSync>>>> = OnceLock::new();
    let ds = DIRS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(dir.to_path_buf())
        .or_default()
        .clone();
    let mut g = ds.state.lock().unwrap_or_else(|e| e.into_inner());
    g.0 += 1;
    let mine = g.0;
    loop {
        if g.1 >= mine {
            return Ok(());
        }
        if !g.2 {
            // A sync that starts now covers every request made so far.
            g.2 = true;
            let covers = g.0;
            drop(g);
            let res = fsync_dir_now(dir);
            let mut g = ds.state.lock().unwrap_or_else(|e| e.into_inner());
            g.2 = false;
            if res.is_ok() {
                g.1 = g.1.max(covers);
            }
            ds.done.notify_all();
            return res;
        }
        g = ds.done.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}

/// Writes `data` to `path` atomically, with the given mode and owner (also for `line`).
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (Option<u32>, Option<u32>),
) -> Result<(), ResError> {
    write_atomic_with(path, mode, owner, |f, tmp_path| {
        f.write_all(data)
            .map_err(|e| ResError::io("writing", tmp_path, e))
    })
}

/// Writes `path` atomically as [`write_atomic`], its content written by `fill` into the
/// temporary file (named by its second argument), for content made as it is written (`tar`,
/// `gzip`). The temporary file is removed when `fill` fails.
pub(crate) fn write_atomic_with(
    path: &Path,
    mode: u32,
    owner: (Option<u32>, Option<u32>),
    fill: impl FnOnce(&mut fs::File, &Path) -> Result<(), ResError>,
) -> Result<(), ResError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".tend.{}.", temps::tag()))
        .suffix(".tmp")
        .rand_bytes(6)
        .tempfile_in(dir)
        .map_err(|e| ResError::io("creating a temporary file in", dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let f = tmp.as_file_mut();
    fill(f, &tmp_path)?;
    if owner.0.is_some() || owner.1.is_some() {
        std::os::unix::fs::fchown(&*f, owner.0, owner.1)
            .map_err(|e| ResError::io("changing the owner of", path, e))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| ResError::io("changing the mode of", path, e))?;
    f.sync_all()
        .map_err(|e| ResError::io("syncing", &tmp_path, e))?;
    tmp.persist(path)
        .map_err(|e| ResError::io("renaming into place", path, e.error))?;
    fsync_dir(dir)
}

/// Whether the file at `path` (of size `len`, as just seen by lstat) holds exactly `want`.
/// Compares as it reads, without holding the file in memory.
fn same_content(path: &Path, len: u64, want: &[u8]) -> Result<bool, ResError> {
    if len != want.len() as u64 {
        return Ok(false);
    }
    let f = fs::File::open(path).map_err(|e| ResError::io("reading", path, e))?;
    let same = if want.len() < 256 {
        reads_as(f, want, &mut [0u8; 256])
    } else {
        reads_as(f, want, &mut [0u8; 8192])
    };
    same.map_err(|e| ResError::io("reading", path, e))
}

/// Whether `f` reads as exactly `want`, through `buf`.
fn reads_as(mut f: fs::File, want: &[u8], buf: &mut [u8]) -> std::io::Result<bool> {
    let mut off = 0;
    loop {
        // Ask for one byte more than is left to see the end in the same read: a regular
        // file reads short only at its end.
        let ask = (want.len() - off + 1).min(buf.len());
        let n = match f.read(&mut buf[..ask]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(off == want.len());
        }
        if want.get(off..off + n) != Some(&buf[..n]) {
            return Ok(false);
        }
        off += n;
        if off == want.len() && n < ask {
            return Ok(true);
        }
    }
}

/// What a check saw of the file before changing anything, so that a check that follows
/// (the inline dry look, then the real run on a blocking thread) need not look again.
#[derive(Default)]
struct Seen {
    meta: Option<Option<fs::Metadata>>,
    same: Option<bool>,
}

impl Seen {
    fn lstat(&mut self, path: &Path) -> Result<Option<fs::Metadata>, ResError> {
        match self.meta.take() {
            Some(m) => Ok(m),
            None => {
                let m = lstat(path)?;
                self.meta = Some(m.clone());
                Ok(m)
            }
        }
    }

    fn same_content(&mut self, path: &Path, len: u64, want: &[u8]) -> Result<bool, ResError> {
        match self.same {
            Some(s) => Ok(s),
            None => {
                let s = same_content(path, len, want)?;
                self.same = Some(s);
                Ok(s)
            }
        }
    }
}

fn remove(cfg: &Cfg, m: &fs::Metadata) -> Result<(), ResError> {
    let p = &cfg.path;
    if m.is_dir() {
        if cfg.recurse {
            fs::remove_dir_all(p).map_err(|e| ResError::io("removing directory", p, e))?;
        } else {
            fs::remove_dir(p).map_err(|e| {
                if e.kind() == ErrorKind::DirectoryNotEmpty {
                    ResError::new(format!(
                        "removing directory {}: not empty (set `recurse` to remove its content)",
                        p.display()
                    ))
                } else {
                    ResError::io("removing directory", p, e)
                }
            })?;
        }
    } else {
        fs::remove_file(p).map_err(|e| ResError::io("removing", p, e))?;
    }
    if let Some(dir) = p.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// The largest content a dry run shows a diff of (larger: only the sizes).
const DIFF_MAX: u64 = 1 << 20;

/// What a dry run says of content that would be rewritten: a unified diff of text, else the
/// sizes. `old` is `None` for a file that does not exist.
fn content_diff(path: &Path, old: Option<&[u8]>, new: &[u8]) -> String {
    let before = old.unwrap_or_default();
    match (std::str::from_utf8(before), std::str::from_utf8(new)) {
        (Ok(a), Ok(b)) => {
            let name = path.display().to_string();
            let from = if old.is_some() { &name } else { "/dev/null" };
            let diff = similar::TextDiff::from_lines(a, b);
            // Ends in a newline: the log line's fields then start a line of their own.
            diff.unified_diff()
                .context_radius(3)
                .header(from, &name)
                .to_string()
        }
        _ => format!(
            "binary content: {} bytes -> {} bytes",
            before.len(),
            new.len()
        ),
    }
}

/// A file's kind, for what a dry run says.
fn kind_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// `uid:gid` before and after a change of ownership (unchanged parts as they are).
fn owners(m: &fs::Metadata, uid: Option<u32>, gid: Option<u32>) -> String {
    format!(
        "{}:{} -> {}:{}",
        m.uid(),
        m.gid(),
        uid.unwrap_or(m.uid()),
        gid.unwrap_or(m.gid())
    )
}

/// The content `fragments` make, as mgmt's: each file's content in the order given; a
/// directory gives its entries' by name (one level: its subdirectories are skipped, symlinks
/// followed).
fn fragments(frags: &[(Arc<Path>, bool)]) -> Result<Vec<u8>, ResError> {
    let mut out = Vec::new();
    let mut add = |p: &Path| -> Result<(), ResError> {
        let mut f = fs::File::open(p).map_err(|e| ResError::io("reading fragment", p, e))?;
        f.read_to_end(&mut out)
            .map_err(|e| ResError::io("reading fragment", p, e))?;
        Ok(())
    };
    for (f, dir) in frags {
        if !dir {
            add(f)?;
            continue;
        }
        for (name, m) in entries(f).and_then(|e| match fs::metadata(f) {
            Ok(_) => Ok(e),
            Err(err) => Err(ResError::io("reading fragment directory", f, err)),
        })? {
            if !m.is_dir() {
                add(&f.join(name))?;
            }
        }
    }
    Ok(out)
}

/// The entries of the directory `dir` by name, sorted, as `lstat` sees them; a missing directory (or, in a dry run, a file where a directory will be) has
/// none. This kind's temporary files are left out.
fn entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, fs::Metadata)>, ResError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(ResError::io("reading directory", dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| ResError::io("reading directory", dir, e))?;
        let name = e.file_name();
        if temps::owner(name.as_encoded_bytes()).is_some() {
            continue;
        }
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(m) => out.push((name, m)),
            Err(e) if e.kind() == ErrorKind::NotFound => {} // gone meanwhile
            Err(e) => return Err(ResError::io("reading", &path, e)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Copies the tree of the directory `src` onto the directory `dst` (mgmt's recursive
/// `source`): subdirectories are made with their source's mode, files written (atomically,
/// with their source's mode) where missing or of other content; a symlink in the source to a
/// file is followed, one to a directory refused. An entry of the other type (a file where the source has a directory, or the
/// reverse) is replaced only with `force`; with `purge`, what `dst` holds and `src` does not
/// is removed. A dry run (`!apply`) says, with `report`, what would change, with a diff of
/// each file. Returns whether anything differed.
fn sync_tree(
    cfg: &Cfg,
    src: &Path,
    dst: &Path,
    apply: bool,
    report: bool,
) -> Result<bool, ResError> {
    let id = cfg.id();
    let from = match fs::metadata(src) {
        Ok(m) if m.is_dir() => entries(src)?,
        Ok(m) => {
            return Err(field_err(
                "source",
                format!("{} is {}, not a directory", src.display(), kind_of(&m)),
            ))
        }
        Err(e) => return Err(ResError::io("reading source", src, e)),
    };
    // What a killed copy left in this directory of the tree goes first (once per directory
    // and process; the path's own directory is swept by `check_apply`).
    if apply && temps::claim(dst) {
        temps::sweep(dst);
    }
    let mut have: HashMap<std::ffi::OsString, fs::Metadata> = entries(dst)?.into_iter().collect();
    let mut changed = false;
    let mut dirty = false;
    let force_err = |d: &Path, m: &fs::Metadata, want: &str| {
        ResError::new(format!(
            "{} is {}, the source has {want} there (set `force` to replace it)",
            d.display(),
            kind_of(m)
        ))
    };
    for (name, sm) in from {
        let (s, d) = (src.join(&name), dst.join(&name));
        // A symlink to a file is copied as that file; one to a directory is refused (a link
        // back up the tree would never end).
        let sm = if sm.file_type().is_symlink() {
            match fs::metadata(&s) {
                Ok(m) if m.is_dir() => {
                    return Err(ResError::new(format!(
                        "{}: the source holds a symlink to a directory, which is not copied",
                        s.display()
                    )))
                }
                Ok(m) => m,
                Err(e) => return Err(ResError::io("reading source", &s, e)),
            }
        } else {
            sm
        };
        let dm = have.remove(&name);
        if sm.is_dir() {
            if !dm.as_ref().is_some_and(|m| m.is_dir()) {
                changed = true;
                if let Some(m) = &dm {
                    if !cfg.force {
                        return Err(force_err(&d, m, "a directory"));
                    }
                }
                if report {
                    let what = match &dm {
                        Some(m) => format!("would replace {} with a directory", kind_of(m)),
                        None => "would create directory".into(),
                    };
                    tracing::info!(resource = %id, path = %d.display(), "{what}");
                }
                if apply {
                    if dm.is_some() {
                        fs::remove_file(&d).map_err(|e| ResError::io("removing", &d, e))?;
                    }
                    fs::create_dir(&d).map_err(|e| ResError::io("creating directory", &d, e))?;
                    fs::set_permissions(&d, fs::Permissions::from_mode(sm.mode() & 0o7777))
                        .map_err(|e| ResError::io("changing the mode of", &d, e))?;
                    dirty = true;
                    tracing::info!(resource = %id, path = %d.display(), "created directory");
                }
            }
            changed |= sync_tree(cfg, &s, &d, apply, report)?;
        } else if sm.is_file() {
            let data = fs::read(&s).map_err(|e| ResError::io("reading source", &s, e))?;
            let write = match &dm {
                Some(m) if m.is_dir() && !cfg.force => return Err(force_err(&d, m, "a file")),
                Some(m) if m.is_file() => !same_content(&d, m.len(), &data)?,
                _ => true,
            };
            if !write {
                continue;
            }
            changed = true;
            if report {
                let (what, old) = match &dm {
                    None => (
                        format!("would create it (mode {:04o})", sm.mode() & 0o7777),
                        None,
                    ),
                    Some(m) if m.is_file() && m.len() <= DIFF_MAX => {
                        ("would change content".into(), fs::read(&d).ok())
                    }
                    Some(m) if m.is_file() => ("would change content".into(), None),
                    Some(m) => (format!("would replace {} with a file", kind_of(m)), None),
                };
                let diff = match (&dm, old) {
                    (None, _) => content_diff(&d, None, &data),
                    (Some(_), Some(old)) => content_diff(&d, Some(&old), &data),
                    (Some(m), None) => {
                        format!("{} bytes -> {} bytes", m.len(), data.len())
                    }
                };
                tracing::info!(resource = %id, path = %d.display(), "{what}\n{diff}");
            }
            if apply {
                if dm.as_ref().is_some_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&d)
                        .map_err(|e| ResError::io("removing directory", &d, e))?;
                }
                write_atomic(&d, &data, sm.mode() & 0o7777, (None, None))?;
                tracing::info!(resource = %id, path = %d.display(), "wrote content");
            }
        } else {
            return Err(ResError::new(format!(
                "{}: the source holds {}, which cannot be copied (only files and directories)",
                s.display(),
                kind_of(&sm)
            )));
        }
    }
    if cfg.purge {
        let mut extra: Vec<_> = have.into_iter().collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, m) in extra {
            let d = dst.join(&name);
            changed = true;
            if report {
                tracing::info!(resource = %id, path = %d.display(), "would remove {} (purge: not in the source)", kind_of(&m));
            }
            if apply {
                if m.is_dir() {
                    fs::remove_dir_all(&d)
                        .map_err(|e| ResError::io("removing directory", &d, e))?;
                } else {
                    fs::remove_file(&d).map_err(|e| ResError::io("removing", &d, e))?;
                }
                dirty = true;
                tracing::info!(resource = %id, path = %d.display(), "removed (purge)");
            }
        }
    }
    if dirty {
        fsync_dir(dst)?;
    }
    Ok(changed)
}

/// Checks the file and, when `apply`, puts it in state. A dry run with `report` logs what
/// would change (`--noop`): a diff of the content, the mode and ownership before and after.
fn check(cfg: &Cfg, apply: bool, report: bool, seen: &mut Seen) -> Result<Checked, ResError> {
    let report = report && !apply;
    let p: &Path = &cfg.path;
    let meta = seen.lstat(p)?;
    match (cfg.state, &meta) {
        (State::Absent, None) => return Ok(Checked::InState),
        (State::Absent, Some(m)) => {
            if cfg.link_only && !m.file_type().is_symlink() && !cfg.force {
                return Err(ResError::new(format!(
                    "{} is {}, not a symlink (set `force` to remove it)",
                    p.display(),
                    kind_of(m)
                )));
            }
            if apply {
                remove(cfg, m)?;
                tracing::info!(resource = %cfg.id(), path = %p.display(), "removed");
            } else if report {
                tracing::info!(resource = %cfg.id(), path = %p.display(), "would remove {}", kind_of(m));
            }
            return Ok(Checked::Changed);
        }
        (State::Unmanaged, None) => return Ok(Checked::InState),
        _ => {}
    }
    let uid = cfg.owner.as_ref().map(resolve_owner).transpose()?;
    let gid = cfg.group.as_ref().map(resolve_group).transpose()?;
    let mut changed = false;

    if let Some(target) = &cfg.symlink {
        let ok = match &meta {
            Some(m) if m.file_type().is_symlink() => {
                fs::read_link(p).map_err(|e| ResError::io("reading link", p, e))? == *target
            }
            Some(m) if m.is_dir() && !cfg.force => {
                return Err(ResError::new(format!(
                    "{} is a directory; refusing to replace it with a symlink (set `force` to)",
                    p.display()
                )))
            }
            _ => false,
        };
        if !ok {
            changed = true;
            if report {
                let before = match &meta {
                    Some(m) if m.file_type().is_symlink() => fs::read_link(p)
                        .map(|t| format!("a symlink to {}", t.display()))
                        .unwrap_or_else(|_| "a symlink".into()),
                    Some(m) => kind_of(m).to_string(),
                    None => "nothing".into(),
                };
                tracing::info!(resource = %cfg.id(), path = %p.display(), "would link: {before} -> a symlink to {}", target.display());
            }
            if apply {
                make_parents(p)?;
                let dir = p.parent().unwrap_or(Path::new("/"));
                let tmp = dir.join(format!(
                    ".tend.{}.{}.lnk",
                    temps::tag(),
                    p.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp)
                    .map_err(|e| ResError::io("creating symlink", &tmp, e))?;
                if meta.as_ref().is_some_and(|m| m.is_dir()) {
                    fs::remove_dir_all(p).map_err(|e| ResError::io("removing directory", p, e))?;
                    tracing::info!(resource = %cfg.id(), path = %p.display(), "removed a directory (force)");
                }
                fs::rename(&tmp, p).map_err(|e| ResError::io("renaming into place", p, e))?;
                fsync_dir(dir)?;
                tracing::info!(resource = %cfg.id(), path = %p.display(), target = %target.display(), "linked");
            }
        }
        let m = if apply { lstat(p)? } else { meta };
        if let Some(m) = m.filter(|m| m.file_type().is_symlink()) {
            if uid.is_some_and(|u| u != m.uid()) || gid.is_some_and(|g| g != m.gid()) {
                changed = true;
                if report {
                    tracing::info!(resource = %cfg.id(), path = %p.display(), "would change owner {}", owners(&m, uid, gid));
                }
                if apply {
                    std::os::unix::fs::lchown(p, uid, gid)
                        .map_err(|e| ResError::io("changing the owner of", p, e))?;
                }
            }
        }
        return Ok(if changed {
            Checked::Changed
        } else {
            Checked::InState
        });
    }

    if cfg.is_dir {
        match &meta {
            Some(m) if m.is_dir() => {}
            Some(m) if !cfg.force => {
                return Err(ResError::new(format!(
                    "{} exists and is {}, not a directory (set `force` to replace it)",
                    p.display(),
                    kind_of(m)
                )))
            }
            _ => {
                changed = true;
                if !apply {
                    if report {
                        let what = match &meta {
                            Some(m) => format!("would replace {} with a directory", kind_of(m)),
                            None => "would create directory".into(),
                        };
                        tracing::info!(resource = %cfg.id(), path = %p.display(), "{what}");
                        if let (Some(src), true) = (&cfg.source, cfg.source_dir) {
                            sync_tree(cfg, src, p, false, true)?;
                        }
                    }
                    return Ok(Checked::Changed);
                }
                if let Some(m) = &meta {
                    fs::remove_file(p).map_err(|e| ResError::io("removing", p, e))?;
                    tracing::info!(resource = %cfg.id(), path = %p.display(), "removed {} (force)", kind_of(m));
                }
                make_parents(p)?;
                fs::create_dir(p).map_err(|e| ResError::io("creating directory", p, e))?;
                // A symbolic mode is applied to 0755, whatever the umask.
                if !matches!(cfg.mode, Some(ModeSpec::Octal(_))) {
                    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
                        .map_err(|e| ResError::io("changing the mode of", p, e))?;
                }
                tracing::info!(resource = %cfg.id(), path = %p.display(), "created directory");
            }
        }
        if let (Some(src), true) = (&cfg.source, cfg.source_dir) {
            changed |= sync_tree(cfg, src, p, apply, report)?;
        }
    } else {
        let want: Option<Cow<[u8]>> = match (&cfg.content, &cfg.source) {
            _ if !cfg.fragments.is_empty() => Some(Cow::Owned(fragments(&cfg.fragments)?)),
            (Some(c), _) => Some(Cow::Borrowed(c)),
            (None, Some(src)) => Some(Cow::Owned(
                fs::read(src).map_err(|e| ResError::io("reading source", src, e))?,
            )),
            (None, None) => None,
        };
        let rewrite = match &meta {
            Some(m) if m.is_dir() && !cfg.force => {
                return Err(ResError::new(format!(
                    "{} is a directory, expected a file (a directory path ends in `/`; set `force` to replace it)",
                    p.display()
                )))
            }
            Some(m) if !m.is_file() => true,
            Some(m) => match &want {
                Some(w) => !seen.same_content(p, m.len(), w)?,
                None => false,
            },
            None => true,
        };
        if rewrite && report {
            let want = want.as_deref().unwrap_or_default();
            let what = match &meta {
                None => {
                    let mode = cfg.mode.as_ref().map_or(0o644, |m| m.apply(0o644));
                    format!("would create it (mode {mode:04o})")
                }
                Some(m) if !m.is_file() => format!("would replace {} with a file", kind_of(m)),
                Some(_) => "would change content".to_string(),
            };
            let old = match &meta {
                Some(m) if m.is_file() && m.len() <= DIFF_MAX => fs::read(p).ok(),
                Some(m) if m.is_file() => None,
                _ => Some(Vec::new()),
            };
            let diff = match (&meta, old) {
                (Some(m), None) => {
                    format!("large content: {} bytes -> {} bytes", m.len(), want.len())
                }
                (None, _) => content_diff(p, None, want),
                (Some(_), Some(old)) => content_diff(p, Some(&old), want),
            };
            tracing::info!(resource = %cfg.id(), path = %p.display(), "{what}\n{diff}");
            if meta.as_ref().is_none_or(|m| !m.is_file()) {
                return Ok(Checked::Changed);
            }
            // An existing file keeps its owner and mode unless told: say what changes there.
            changed = true;
        } else if rewrite {
            if !apply {
                return Ok(Checked::Changed);
            }
            make_parents(p)?;
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                fs::remove_dir_all(p).map_err(|e| ResError::io("removing directory", p, e))?;
                tracing::info!(resource = %cfg.id(), path = %p.display(), "removed a directory (force)");
            }
            let kept = meta.as_ref().filter(|m| m.is_file());
            let from = kept.map_or(0o644, |m| m.mode() & 0o7777);
            let mode = cfg.mode.as_ref().map_or(from, |m| m.apply(from));
            let owner = (uid.or(kept.map(|m| m.uid())), gid.or(kept.map(|m| m.gid())));
            write_atomic(p, want.as_deref().unwrap_or_default(), mode, owner)?;
            tracing::info!(resource = %cfg.id(), path = %p.display(), "wrote content");
            return Ok(Checked::Changed);
        }
    }

    // Ownership, then mode (chown may clear set-id bits).
    let current = match (changed, meta) {
        (false, Some(m)) => Some(m),
        _ => lstat(p)?,
    };
    let m = match current {
        Some(m) => m,
        None if !apply => return Ok(Checked::Changed),
        None => {
            return Err(ResError::new(format!(
                "{} vanished while checking",
                p.display()
            )))
        }
    };
    if uid.is_some_and(|u| u != m.uid()) || gid.is_some_and(|g| g != m.gid()) {
        changed = true;
        if apply {
            std::os::unix::fs::lchown(p, uid, gid)
                .map_err(|e| ResError::io("changing the owner of", p, e))?;
            tracing::info!(resource = %cfg.id(), path = %p.display(), "changed owner");
        } else if report {
            tracing::info!(resource = %cfg.id(), path = %p.display(), "would change owner {}", owners(&m, uid, gid));
        }
    }
    if let Some(spec) = &cfg.mode {
        let have = if apply && changed {
            lstat(p)?.map(|m| m.mode() & 0o7777)
        } else {
            Some(m.mode() & 0o7777)
        };
        let mode = spec.apply(have.unwrap_or(0o644));
        if have != Some(mode) {
            changed = true;
            if report {
                let before = have.map_or("none".to_string(), |h| format!("{h:04o}"));
                tracing::info!(resource = %cfg.id(), path = %p.display(), "would change mode {before} -> {mode:04o}");
            }
            if apply {
                fs::set_permissions(p, fs::Permissions::from_mode(mode))
                    .map_err(|e| ResError::io("changing the mode of", p, e))?;
                tracing::info!(resource = %cfg.id(), path = %p.display(), mode = %format!("{mode:04o}"), "changed mode");
            }
        }
    }
    Ok(if changed {
        Checked::Changed
    } else {
        Checked::InState
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("07777"), None);
        assert_eq!(parse_mode(""), None);
    }

    #[test]
    fn symbolic_modes_apply_to_the_current_mode() {
        let m = |s: &str, from: u32| ModeSpec::parse(s).unwrap().apply(from);
        assert_eq!(m("0640", 0o777), 0o640);
        assert_eq!(m("u=rw,go=r", 0o777), 0o644);
        assert_eq!(m("u=rwx,g=rx,o=", 0o4777), 0o750, "`u=` clears set-uid");
        assert_eq!(m("a=r", 0o777), 0o444);
        assert_eq!(m("=rw", 0o100), 0o666);
        assert_eq!(m("u+x", 0o644), 0o744);
        assert_eq!(m("go-w", 0o666), 0o644);
        assert_eq!(m("u+s,g+s", 0o755), 0o6755);
        assert_eq!(m("+t", 0o755), 0o1755);
        assert_eq!(m("o-t", 0o1777), 0o777, "`-t` clears the sticky bit");
        // Idempotent: applying again changes nothing.
        for s in ["u+x", "go-w", "u=rw,go=r", "a+rwx"] {
            let once = m(s, 0o640);
            assert_eq!(m(s, once), once, "{s}");
        }
        for bad in [
            "", "u", "u=rw,u=r", "a=r,u=w", "=r,u=w", "u=r=w", "u+r-w", "z=r", "u=q", "u=rw,", "08",
        ] {
            assert!(ModeSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = |spec: ResSpec| build(&spec).err().unwrap().to_string();
        assert_eq!(
            e(ResSpec::new("file", "/tmp/a").param("mode", "0999")),
            "field `mode`: \"0999\" is not an octal or symbolic mode: no `=`, `+` or `-`"
        );
        assert!(e(ResSpec::new("file", "rel/a")).starts_with("field `name`:"));
        assert!(e(ResSpec::new("file", "x").param("path", "/a/../b")).starts_with("field `path`:"));
        assert!(
            e(ResSpec::new("file", "/d/").param("content", "x")).starts_with("field `content`:")
        );
        assert!(e(ResSpec::new("file", "/a")
            .param("content", "x")
            .param("source", "/b"))
        .starts_with("field `source`:"));
        assert!(e(ResSpec::new("file", "/a").param("state", "gone")).starts_with("field `state`:"));
        assert!(e(ResSpec::new("file", "/a").param("bogus", 1i64)).starts_with("field `bogus`:"));
        // The field is carried, not only written in the message.
        let field = |spec: ResSpec| build(&spec).err().unwrap().field;
        assert_eq!(
            field(ResSpec::new("file", "/a").param("bogus", 1i64)).as_deref(),
            Some("bogus")
        );
        assert_eq!(
            field(ResSpec::new("file", "/a").param("mode", "0999")).as_deref(),
            Some("mode")
        );
    }

    #[test]
    fn autoedges_need_every_ancestor_directory() {
        let a = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("file", "/a/b/c"));
        assert_eq!(a.provides, ["file:/a/b/c"]);
        assert_eq!(a.requires, ["file:/a/b/", "file:/a/", "file:/"]);
        let d = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("file", "x").param("path", "/a/b/"),
        );
        assert_eq!(d.provides, ["file:/a/b/"]);
        assert_eq!(d.requires, ["file:/a/", "file:/"]);
        // Every path, plain or odd, needs what `Path::ancestors` says it needs.
        for p in ["/a/b/c/d", "/x", "/a//b/c", "/a/./b/c", "/a/b/.", "/a/b//"] {
            let got = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("file", p));
            let want: Vec<String> = Path::new(p.trim_end_matches('/'))
                .ancestors()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .filter(|a| !a.is_empty())
                .map(|a| match a.ends_with('/') {
                    true => format!("file:{a}"),
                    false => format!("file:{a}/"),
                })
                .collect();
            assert_eq!(got.requires, want, "{p}");
        }
        let r = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("file", "/"));
        assert_eq!(r.provides, ["file:/"]);
        assert!(r.requires.is_empty());
        let s = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("file", "/a").param("source", "/s/x"),
        );
        assert_eq!(s.requires, ["file:/", "file:/s/x"]);
        let f = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("file", "/a").param(
                "fragments",
                tend_model::Value::List(vec!["/f/x".into(), "/g/".into()]),
            ),
        );
        assert_eq!(f.requires, ["file:/", "file:/f/x", "file:/g/"]);
    }

    #[test]
    fn ids_name_the_resource() {
        let id = |spec: ResSpec| cfg(&spec).unwrap().id().to_string();
        assert_eq!(id(ResSpec::new("file", "/a/b")), "file[/a/b]");
        assert_eq!(id(ResSpec::new("file", "/a/b/")), "file[/a/b/]");
        assert_eq!(id(ResSpec::new("file", "/a/b//")), "file[/a/b//]");
        assert_eq!(id(ResSpec::new("file", "/")), "file[/]");
        assert_eq!(
            id(ResSpec::new("file", "motd").param("path", "/etc/motd")),
            "file[motd]"
        );
        assert!(cfg(&ResSpec::new("file", "/a/b")).unwrap().name.is_none());
    }

    #[test]
    fn only_local_filesystems_are_checked_inline() {
        assert!(local_fs::is_local(0xEF53), "ext4");
        assert!(local_fs::is_local(0x0102_1994), "tmpfs");
        assert!(!local_fs::is_local(0x6969), "nfs");
        assert!(!local_fs::is_local(0x6573_5546), "fuse");
        assert!(!local_fs::is_local(0xFF53_4D42), "cifs");
    }

    #[tokio::test]
    async fn a_temporary_directory_is_local_and_so_is_one_to_be_created_there() {
        let d = tempfile::tempdir().unwrap();
        assert!(local_fs::dir_is_local(d.path()).await);
        // A missing directory is on its nearest existing ancestor's filesystem.
        assert!(local_fs::dir_is_local(&d.path().join("missing/deeper")).await);
    }
}
