//! `tar`: an archive of files and directories, as mgmt's kind of that name: `path` (the
//! archive, default the resource name), `inputs` (absolute paths of files and directories, in
//! order) and `format` (`$const.res.tar.format.*`: 0 unknown, 2 ustar, 4 pax, 8 gnu).
//!
//! A file input is stored under its base name. A directory is stored recursively, in lexical
//! order, its content at the archive's root when its path ends with a slash, under its own
//! name otherwise (as rsync). Entries keep mode, owner (ids and names) and modification time
//! (whole seconds); symlinks inside a directory are stored as symlinks. The archive is a pure
//! function of the inputs, so the check builds it again and compares it, byte for byte, with
//! the file on disk, stopping at the first difference: any change of an input (content, mode,
//! owner, time, a file added or removed) or of the archive itself is a change. The archive is
//! written atomically (`file::write_atomic_with`), keeping an existing archive's mode and
//! owner (a new one is 0644). The watch follows the archive, every input, and every directory
//! under a directory input (through `fswatch::follow`, whose set is computed again after each
//! event, so a directory created inside an input is watched too).

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Constant, Field, KindSchema, ResSpec, Type, Value};

use crate::fswatch::{self, Target};
use crate::params::{field_err, Params};

/// mgmt's format numbers (Go's `archive/tar` `Format` values).
const FORMATS: [(&str, i64); 4] = [("unknown", 0), ("ustar", 2), ("pax", 4), ("gnu", 8)];

/// The `tar` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("tar")
            .field(Field::new(
                "path",
                Type::Str,
                "the archive (default: the resource name), an absolute file path",
            ))
            .field(
                Field::new(
                    "inputs",
                    Type::List(Box::new(Type::Str)),
                    "absolute paths of the files and directories to archive; a directory ending in `/` is stored without its own name",
                )
                .default_value(Value::List(Vec::new())),
            )
            .field(
                Field::new(
                    "format",
                    Type::Int,
                    "the header format: $const.res.tar.format.unknown (0), .ustar (2), .pax (4) or .gnu (8)",
                )
                .default_value(0i64),
            );
        s.constants = FORMATS
            .iter()
            .map(|(n, v)| Constant {
                param: "format".into(),
                name: (*n).into(),
                value: Value::Int(*v),
            })
            .collect();
        s
    })
}

/// The archive's path.
fn path_of(spec: &ResSpec) -> &str {
    spec.params
        .get("path")
        .and_then(|v| v.as_str())
        .unwrap_or(&spec.name)
}

/// After the `file`s that make its inputs and the directory it is in; provides its archive.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let path = path_of(spec);
    out.provides(&format!("file:{path}"));
    if let Some(dir) = Path::new(path).parent().filter(|d| *d != Path::new("/")) {
        out.requires(&format!("file:{}/", dir.display()));
    }
    if let Some(Value::List(l)) = spec.params.get("inputs") {
        for i in l.iter().filter_map(|v| v.as_str()) {
            out.requires(&format!("file:{i}"));
        }
    }
}

/// Checks an absolute file path (`what` names it in the error).
pub(crate) fn check_file_path(what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} must be absolute: {p:?}"));
    }
    if p.ends_with('/') {
        return Err(format!("{what} must not end with a slash: {p:?}"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{what} must not contain `..`: {p:?}"));
    }
    Ok(())
}

/// Builds a `tar`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let path = p.opt_str("path")?.unwrap_or_else(|| spec.name.clone());
    check_file_path("the path", &path).map_err(|e| {
        if p.is_set("path") {
            field_err("path", e)
        } else {
            ResError::new(format!("tar[{}]: the name is the path: {e}", spec.name))
        }
    })?;
    let inputs = p.strs("inputs")?;
    for (i, x) in inputs.iter().enumerate() {
        if !x.starts_with('/') || x.split('/').any(|c| c == "..") {
            return Err(field_err(
                "inputs",
                format!("input #{i} must be absolute, without `..`: {x:?}"),
            ));
        }
        let dir = x.trim_end_matches('/');
        if path == dir || Path::new(&path).starts_with(if dir.is_empty() { "/" } else { dir }) {
            return Err(field_err(
                "path",
                format!("the archive {path:?} is input #{i} {x:?} or inside it"),
            ));
        }
    }
    let format = p.opt_int("format")?.unwrap_or(0);
    if !FORMATS.iter().any(|(_, v)| *v == format) {
        return Err(field_err(
            "format",
            format!("{format} is not a format: 0 (unknown), 2 (ustar), 4 (pax) or 8 (gnu)"),
        ));
    }
    Ok(Box::new(Tar {
        id: format!("tar[{}]", spec.name),
        path: Arc::from(Path::new(&path)),
        inputs: Arc::new(inputs),
        format,
    }))
}

struct Tar {
    id: String,
    path: Arc<Path>,
    inputs: Arc<Vec<String>>,
    format: i64,
}

/// One entry of the archive.
struct Item {
    src: PathBuf,
    name: String,
    meta: fs::Metadata,
    link: Option<PathBuf>,
}

/// Every entry, in order.
fn plan(id: &str, inputs: &[String]) -> Result<Vec<Item>, ResError> {
    let mut out = Vec::new();
    for (i, x) in inputs.iter().enumerate() {
        let meta =
            fs::metadata(x).map_err(|e| ResError::new(format!("{id}: input #{i} {x}: {e}")))?;
        if meta.is_file() {
            let name = Path::new(x)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(Item {
                src: PathBuf::from(x),
                name,
                meta,
                link: None,
            });
        } else if meta.is_dir() {
            let prefix = match x.rsplit_once('/') {
                Some((_, "")) | None => String::new(),
                Some((_, base)) => format!("{base}/"),
            };
            walk(id, Path::new(x), &prefix, &mut out)?;
        } else {
            return Err(ResError::new(format!(
                "{id}: input #{i} {x} is neither a file nor a directory"
            )));
        }
    }
    Ok(out)
}

/// The entries below `dir`, depth first in lexical order, named `prefix` + their relative path.
fn walk(id: &str, dir: &Path, prefix: &str, out: &mut Vec<Item>) -> Result<(), ResError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| ResError::io("reading the directory", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| ResError::io("reading the directory", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let meta = fs::symlink_metadata(&src).map_err(|e| ResError::io("looking at", &src, e))?;
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(Item {
                src: src.clone(),
                name: format!("{name}/"),
                meta,
                link: None,
            });
            walk(id, &src, &format!("{name}/"), out)?;
        } else if ft.is_file() {
            out.push(Item {
                src,
                name,
                meta,
                link: None,
            });
        } else if ft.is_symlink() {
            let link =
                fs::read_link(&src).map_err(|e| ResError::io("reading the link", &src, e))?;
            out.push(Item {
                src,
                name,
                meta,
                link: Some(link),
            });
        } else {
            return Err(ResError::new(format!(
                "{id}: cannot archive {}: not a file, directory or symlink",
                src.display()
            )));
        }
    }
    Ok(())
}

/// `Entries` of `dir` and of every directory below it (also for `file`'s copied trees).
pub(crate) fn dirs_below(dir: &Path, out: &mut Vec<Target>) {
    out.push(Target::Entries(Arc::from(dir)));
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            dirs_below(&e.path(), out);
        }
    }
}

/// User and group names by id, looked up once per archive.
#[derive(Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<&str> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .as_deref()
    }

    fn group(&mut self, gid: u32) -> Option<&str> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .as_deref()
    }
}

/// A pax extended header's records (`<len> <key>=<value>\n`, the length counting itself).
fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Counts what it reads, so a file that changed size while archived is noticed.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Writes the archive of `items` to `out`.
fn write_archive<W: Write>(items: &[Item], format: i64, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    let mut names = Names::default();
    for it in items {
        let mut h = if format == 8 {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        let m = &it.meta;
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid().into());
        h.set_gid(m.gid().into());
        h.set_mtime(m.mtime().max(0) as u64);
        if let Some(u) = names.user(m.uid()) {
            let _ = h.set_username(u);
        }
        if let Some(g) = names.group(m.gid()) {
            let _ = h.set_groupname(g);
        }
        let size = if it.link.is_some() || m.is_dir() {
            0
        } else {
            m.len()
        };
        h.set_entry_type(match (&it.link, m.is_dir()) {
            (Some(_), _) => tar::EntryType::Symlink,
            (None, true) => tar::EntryType::Directory,
            (None, false) => tar::EntryType::Regular,
        });
        h.set_size(size);
        let too_long = |what: &str| {
            io::Error::other(format!(
                "{}: the {what} is too long for the ustar format (use pax or gnu)",
                it.src.display()
            ))
        };
        if format == 8 {
            match &it.link {
                Some(l) => b.append_link(&mut h, &it.name, l)?,
                None if size == 0 => b.append_data(&mut h, &it.name, io::empty())?,
                None => append_file(&mut b, &mut h, it, Some(&it.name))?,
            }
            continue;
        }
        // ustar; pax records for what does not fit (format 0 and 4, as Go picks pax then).
        let mut pax: Vec<(&str, &[u8])> = Vec::new();
        if h.set_path(&it.name).is_err() {
            if format == 2 {
                return Err(too_long("path"));
            }
            pax.push(("path", it.name.as_bytes()));
            let mut cut = it.name.len().min(99);
            while !it.name.is_char_boundary(cut) {
                cut -= 1;
            }
            h.set_path(it.name[..cut].trim_start_matches('/'))?;
        }
        let link_bytes;
        if let Some(l) = &it.link {
            if h.set_link_name(l).is_err() {
                if format == 2 {
                    return Err(too_long("link target"));
                }
                link_bytes = l.to_string_lossy().into_owned();
                pax.push(("linkpath", link_bytes.as_bytes()));
            }
        }
        if !pax.is_empty() {
            let data = pax_records(&pax);
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_mode(0o644);
            x.set_size(data.len() as u64);
            let base = it
                .name
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let mut cut = base.len().min(80);
            while !base.is_char_boundary(cut) {
                cut -= 1;
            }
            x.set_path(format!("PaxHeaders/{}", &base[..cut]))?;
            x.set_cksum();
            b.append(&x, &data[..])?;
        }
        h.set_cksum();
        if size == 0 {
            b.append(&h, io::empty())?;
        } else {
            append_file(&mut b, &mut h, it, None)?;
        }
    }
    b.into_inner()
}

/// Appends a regular file's header (named `name` through the builder, else as it is) and
/// content, failing when the file's size is no longer the header's.
fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    it: &Item,
    name: Option<&str>,
) -> io::Result<()> {
    let f = fs::File::open(&it.src)?;
    let mut data = Counted {
        inner: f.take(it.meta.len()),
        n: 0,
    };
    match name {
        Some(n) => b.append_data(h, n, &mut data)?,
        None => b.append(h, &mut data)?,
    }
    if data.n != it.meta.len() {
        return Err(io::Error::other(format!(
            "{} changed while it was archived",
            it.src.display()
        )));
    }
    Ok(())
}

/// A writer that compares what is written with a file, failing with [`Differs`] at the first
/// difference.
pub(crate) struct SameAs {
    file: BufReader<fs::File>,
    buf: Vec<u8>,
}

/// What [`SameAs`] fails with.
#[derive(Debug)]
pub(crate) struct Differs;

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("differs")
    }
}

impl std::error::Error for Differs {}

impl SameAs {
    /// Compares with `path`; `None` when it does not exist.
    pub(crate) fn open(path: &Path) -> Result<Option<SameAs>, ResError> {
        match fs::File::open(path) {
            Ok(f) => Ok(Some(SameAs {
                file: BufReader::with_capacity(64 * 1024, f),
                buf: Vec::new(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ResError::io("reading", path, e)),
        }
    }

    /// Whether the file ends where the writing did.
    pub(crate) fn at_end(mut self) -> io::Result<bool> {
        Ok(self.file.read(&mut [0u8; 1])? == 0)
    }

    /// Whether `e` is the difference this writer stops at.
    pub(crate) fn is_difference(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|e| e.is::<Differs>())
    }
}

impl Write for SameAs {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.resize(data.len(), 0);
        let mut off = 0;
        while off < data.len() {
            let n = self.file.read(&mut self.buf[off..])?;
            if n == 0 || self.buf[off..off + n] != data[off..off + n] {
                return Err(io::Error::other(Differs));
            }
            off += n;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Tar {
    /// Checks and applies, on a blocking thread.
    fn check_apply_blocking(&self, apply: bool) -> Result<Checked, ResError> {
        let items = plan(&self.id, &self.inputs)?;
        let err = |e: io::Error| ResError::new(format!("{}: archiving: {e}", self.id));
        if let Some(same) = SameAs::open(&self.path)? {
            match write_archive(&items, self.format, same) {
                Ok(same) => {
                    if same
                        .at_end()
                        .map_err(|e| ResError::io("reading", &self.path, e))?
                    {
                        return Ok(Checked::InState);
                    }
                }
                Err(e) if SameAs::is_difference(&e) => {}
                Err(e) => return Err(err(e)),
            }
        }
        if !apply {
            tracing::info!(resource = %self.id, "would write the archive {} ({} entries)", self.path.display(), items.len());
            return Ok(Checked::Changed);
        }
        let (mode, owner) = crate::file::kept_mode_owner(fs::metadata(&self.path).ok().as_ref());
        crate::file::write_atomic_with(&self.path, mode, owner, |f, _| {
            let mut w = write_archive(&items, self.format, BufWriter::new(f)).map_err(err)?;
            w.flush().map_err(err)
        })?;
        tracing::info!(resource = %self.id, "wrote the archive {} ({} entries)", self.path.display(), items.len());
        Ok(Checked::Changed)
    }
}

#[async_trait::async_trait]
impl Resource for Tar {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_beside(&self.path);
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let (path, inputs) = (self.path.clone(), self.inputs.clone());
        fswatch::follow(&self.id, w, move || {
            let mut t = vec![Target::Path(path.clone())];
            for x in inputs.iter() {
                let p = Path::new(x.trim_end_matches('/'));
                let p = if p.as_os_str().is_empty() {
                    Path::new("/")
                } else {
                    p
                };
                t.push(Target::Path(Arc::from(p)));
                if p.is_dir() {
                    dirs_below(p, &mut t);
                }
            }
            t
        })
        .await
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let me = Tar {
            id: self.id.clone(),
            path: self.path.clone(),
            inputs: self.inputs.clone(),
            format: self.format,
        };
        tokio::task::spawn_blocking(move || me.check_apply_blocking(ctx.apply))
            .await
            .map_err(|e| ResError::new(format!("tar: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        // `9 path=a\n` is nine bytes, its length included.
        let r = pax_records(&[("path", b"a")]);
        assert_eq!(r, b"9 path=a\n");
        // 102 bytes besides the length, whose three digits make 105.
        let long = "x".repeat(95);
        let r = pax_records(&[("path", long.as_bytes())]);
        assert_eq!(r.len(), 105);
        assert!(r.starts_with(b"105 path=xx"));
        // Where the length's digits add a digit: 97 + 2 = 99, but 98 + 2 = 100 needs three
        // digits, so 101.
        let r = pax_records(&[("path", "y".repeat(90).as_bytes())]);
        assert!(r.len() == 99 && r.starts_with(b"99 "));
        let r = pax_records(&[("path", "y".repeat(91).as_bytes())]);
        assert!(r.len() == 101 && r.starts_with(b"101 "));
    }
}
