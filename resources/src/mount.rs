//! `mount`: a file system mounted on the resource's name (the mount point) and its line in
//! `/etc/fstab`, as mgmt's `mount`: `state` (`exists` | `absent`), `device`, `type`,
//! `options` (`map{str: str}`, `{"defaults": ""}` by default; an empty value is a bare flag),
//! `freq` and `passno`.
//!
//! `exists`: the fstab has exactly one line for the mount point, with these fields (a line
//! that differs is replaced in place; the file's other lines, comments included, are kept),
//! and the file system is mounted there: mounted with `mount(8)` (both device and mount point
//! given, so it reads no fstab; loop devices for image files and mount helpers come with it),
//! remounted when a mount option the kernel shows differs. Something else mounted there (an
//! other device or type) is an error: tend does not unmount what it did not mount.
//! `absent`: every fstab line for the mount point is removed and whatever is mounted there
//! is unmounted (`umount2(2)`).
//!
//! mgmt mounts through systemd (a `daemon-reload` and a restart of `local-fs.target`); tend
//! mounts itself, so the kind works without systemd as PID 1.
//!
//! The watch is event-driven: `/proc/self/mountinfo` wakes `POLLPRI` pollers whenever the
//! mount table of tend's mount namespace changes, and the fstab is watched with the inotify
//! hub. An unmount behind tend's back is repaired within milliseconds.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type, Value};

use crate::fswatch;
use crate::params::{field_err, Params};
use crate::procpoll::ProcPoll;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The fstab set by [`set_fstab`], which wins over `/etc/fstab`.
static FSTAB: OnceLock<PathBuf> = OnceLock::new();

/// Makes every `mount` resource of this process manage `path` instead of `/etc/fstab` (the
/// first call wins). For tests.
pub(crate) fn set_fstab(path: PathBuf) {
    let _ = FSTAB.set(path);
}

fn fstab_path() -> &'static Path {
    FSTAB
        .get()
        .map(PathBuf::as_path)
        .unwrap_or(Path::new("/etc/fstab"))
}

/// Read-modify-write of the fstab, one resource at a time in this process.
static FSTAB_LOCK: Mutex<()> = Mutex::new(());

/// The `mount` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut defaults = BTreeMap::new();
        defaults.insert(Value::from("defaults"), Value::from(""));
        KindSchema::new("mount")
            .field(
                Field::new(
                    "state",
                    Type::Str,
                    "\"exists\" (in the fstab and mounted) or \"absent\"",
                )
                .allowed(&["exists", "absent"]),
            )
            .field(
                Field::new(
                    "device",
                    Type::Str,
                    "what to mount: a device, UUID=, LABEL=, PARTUUID=, PARTLABEL=, an image file, or a name (tmpfs)",
                )
                .default_value(""),
            )
            .field(
                Field::new("type", Type::Str, "the file system type (see /proc/filesystems)")
                    .default_value(""),
            )
            .field(
                Field::new(
                    "options",
                    Type::Map(Box::new(Type::Str), Box::new(Type::Str)),
                    "mount options: option => value (\"\" for a flag such as ro)",
                )
                .default_value(Value::Map(defaults)),
            )
            .field(
                Field::new("freq", Type::Int, "the fstab's dump frequency")
                    .default_value(0i64)
                    .range(0, i32::MAX as i128),
            )
            .field(
                Field::new("passno", Type::Int, "the fstab's fsck order (0: none)")
                    .default_value(0i64)
                    .range(0, i32::MAX as i128),
            )
    })
}

/// Builds a `mount`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let dir = spec.name.as_str();
    // The graph check puts the resource (`mount[...]`) in front of a constructor's error.
    let bad = |why: &str| ResError::new(format!("the mount point {why}"));
    if !dir.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    if dir == "/" {
        return Err(bad("is /: tend does not manage the root file system"));
    }
    if dir.contains("//") {
        return Err(bad("has a double slash"));
    }
    if dir.ends_with('/') {
        return Err(bad("must not end with a slash"));
    }
    if dir.split('/').any(|c| c == "." || c == "..") {
        return Err(bad("has a `.` or `..` component"));
    }
    if dir.contains('\0') {
        return Err(bad("has a NUL byte"));
    }
    let present = match p.opt_str("state")?.as_deref() {
        Some("exists") => true,
        Some("absent") => false,
        _ => return Err(field_err("state", "is required: \"exists\" or \"absent\"")),
    };
    let device = p.str("device")?;
    let fstype = p.str("type")?;
    let options = p.str_map("options")?;
    if present {
        if device.is_empty() {
            return Err(field_err("device", "is required when state is \"exists\""));
        }
        if fstype.is_empty() {
            return Err(field_err("type", "is required when state is \"exists\""));
        }
    }
    for (field, v) in [("device", &device), ("type", &fstype)] {
        if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(field_err(
                field,
                format!("{v:?} has whitespace or a control character"),
            ));
        }
    }
    for (k, v) in &options {
        if k.is_empty() {
            return Err(field_err("options", "has an empty option name"));
        }
        if k.contains([',', '=']) || v.contains(',') {
            return Err(field_err(
                "options",
                format!("{k:?} => {v:?}: names and values cannot hold `,` (names not `=` either)"),
            ));
        }
        if k.chars()
            .chain(v.chars())
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(field_err(
                "options",
                format!("{k:?} => {v:?} has whitespace or a control character"),
            ));
        }
    }
    if present && options.is_empty() {
        return Err(field_err(
            "options",
            "is empty: give at least {\"defaults\" => \"\"}",
        ));
    }
    let freq = p.opt_int("freq")?.unwrap_or(0);
    let passno = p.opt_int("passno")?.unwrap_or(0);
    Ok(Box::new(Mount {
        id: format!("mount[{dir}]"),
        dir: dir.to_string(),
        present,
        entry: Entry {
            device,
            dir: dir.to_string(),
            fstype,
            options,
            freq,
            passno,
        },
    }))
}

/// After the `file` of the mount point (a directory) and of an image file used as device,
/// and after the `mount` of the file system the mount point is on.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let dir = spec.name.as_str();
    out.requires(&format!("file:{dir}/"));
    if let Some(dev) = spec.params.get("device").and_then(|v| v.as_str()) {
        if dev.starts_with('/') {
            out.requires(&format!("file:{dev}"));
        }
    }
    let mut p = Path::new(dir);
    while let Some(parent) = p.parent() {
        if parent != Path::new("/") {
            out.requires(&format!("mount:{}", parent.display()));
        }
        p = parent;
    }
    out.provides(&format!("mount:{dir}"));
}

/// An fstab line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    device: String,
    dir: String,
    fstype: String,
    options: BTreeMap<String, String>,
    freq: i64,
    passno: i64,
}

/// `a,b=c` as a map (an option without `=` has the value "").
fn parse_options(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (o.to_string(), String::new()),
        })
        .collect()
}

fn options_string(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// fstab's and mountinfo's escapes: `\040` for a space and so on (three octal digits).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl Entry {
    /// The fields of an fstab line, `None` for a comment, a blank or a line with fewer than
    /// four fields.
    fn parse(line: &str) -> Option<Entry> {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 {
            return None;
        }
        Some(Entry {
            device: unescape(f[0]),
            dir: unescape(f[1]),
            fstype: f[2].to_string(),
            options: parse_options(f[3]),
            freq: f.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
            passno: f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            escape(&self.device),
            escape(&self.dir),
            self.fstype,
            options_string(&self.options),
            self.freq,
            self.passno
        )
    }
}

/// What is mounted at a mount point (the topmost mount), from `/proc/self/mountinfo`.
#[derive(Clone, Debug)]
struct Live {
    source: String,
    fstype: String,
    /// The per-mount options (`rw,nosuid,relatime`).
    mount_opts: BTreeMap<String, String>,
    /// The file system's own options (`rw,size=1024k,mode=755`).
    super_opts: BTreeMap<String, String>,
}

/// The topmost mount at `dir` in a mountinfo text.
fn live_at(mountinfo: &str, dir: &str) -> Option<Live> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 6 || post.len() < 3 || unescape(pre[4]) != dir {
                return None;
            }
            Some(Live {
                source: unescape(post[1]),
                fstype: post[0].to_string(),
                mount_opts: parse_options(pre[5]),
                super_opts: parse_options(post[2]),
            })
        })
        .next_back()
}

/// Options that only `mount(8)` or the fstab's readers see, never the kernel's table.
fn userspace_only(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "nofail"
            | "_netdev"
            | "loop"
            | "async"
            | "remount"
            | "bind"
            | "rbind"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

/// The flags the kernel shows, each with the flag it shows when it is off (`None`: shown by
/// its absence) and whether it is a superblock option (`sync`) rather than a per-mount one
/// (`nosuid`; `ro`/`rw` are per-mount too: the superblock's own `rw` says nothing of a
/// read-only bind of it).
const FLAGS: &[(&str, Option<&str>, bool)] = &[
    ("ro", Some("rw"), false),
    ("rw", Some("ro"), false),
    ("nosuid", None, false),
    ("nodev", None, false),
    ("noexec", None, false),
    ("noatime", None, false),
    ("nodiratime", None, false),
    ("relatime", None, false),
    ("nosymfollow", None, false),
    ("sync", None, true),
    ("dirsync", None, true),
    ("lazytime", None, true),
    ("mand", None, true),
];

/// The flags whose opposite is shown by the kernel as a flag (`suid` is no `nosuid`).
fn negation(opt: &str) -> Option<&'static str> {
    Some(match opt {
        "suid" => "nosuid",
        "dev" => "nodev",
        "exec" => "noexec",
        "atime" => "noatime",
        "diratime" => "nodiratime",
        "norelatime" => "relatime",
        "nostrictatime" => "strictatime",
        "nolazytime" => "lazytime",
        _ => return None,
    })
}

/// A size as bytes (`16m`, `16384k`, `1G`, `4096`), for comparing what was asked with what
/// the kernel shows.
fn bytes(v: &str) -> Option<u128> {
    let (num, mult) = match v.char_indices().last()? {
        (i, 'k' | 'K') => (&v[..i], 1u128 << 10),
        (i, 'm' | 'M') => (&v[..i], 1 << 20),
        (i, 'g' | 'G') => (&v[..i], 1 << 30),
        (i, 't' | 'T') => (&v[..i], 1 << 40),
        _ => (v, 1),
    };
    num.parse::<u128>().ok().map(|n| n * mult)
}

/// The wanted options that the live mount shows otherwise, as `want (is ...)` phrases. An
/// option the kernel does not show at all (most file-system options of most file systems
/// appear only when they differ from the default) is not compared.
fn option_drift(want: &BTreeMap<String, String>, live: &Live) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in want {
        if userspace_only(k) {
            continue;
        }
        if k == "strictatime" {
            // Shown by the absence of both the others.
            for other in ["relatime", "noatime"] {
                if live.mount_opts.contains_key(other) {
                    out.push(format!("strictatime (is {other})"));
                }
            }
            continue;
        }
        if let Some(&(_, off, sb)) = FLAGS.iter().find(|(f, _, _)| f == k) {
            let shown = if sb {
                &live.super_opts
            } else {
                &live.mount_opts
            };
            if !shown.contains_key(k) {
                out.push(match off {
                    Some(o) => format!("{k} (is {o})"),
                    None => format!("{k} (is not set)"),
                });
            }
            continue;
        }
        if let Some(neg) = negation(k) {
            if live.mount_opts.contains_key(neg) {
                out.push(format!("{k} (is {neg})"));
            }
            continue;
        }
        let Some(have) = live.super_opts.get(k) else {
            continue;
        };
        let same = have == v || matches!((bytes(have), bytes(v)), (Some(a), Some(b)) if a == b);
        if !same {
            out.push(if v.is_empty() {
                format!("{k} (is {k}={have})")
            } else {
                format!(
                    "{k}={v} (is {})",
                    if have.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={have}")
                    }
                )
            });
        }
    }
    out
}

/// A device as the kernel names it: a tag (`UUID=`, ...) through `/dev/disk/by-*`, a path
/// with its symlinks resolved.
fn resolve_device(dev: &str) -> Option<PathBuf> {
    let by = |dir: &str, v: &str| PathBuf::from(format!("/dev/disk/{dir}/{v}"));
    let path = if let Some(v) = dev.strip_prefix("UUID=") {
        by("by-uuid", v)
    } else if let Some(v) = dev.strip_prefix("LABEL=") {
        by("by-label", v)
    } else if let Some(v) = dev.strip_prefix("PARTUUID=") {
        by("by-partuuid", v)
    } else if let Some(v) = dev.strip_prefix("PARTLABEL=") {
        by("by-partlabel", v)
    } else if dev.starts_with('/') {
        PathBuf::from(dev)
    } else {
        return None;
    };
    std::fs::canonicalize(&path).ok().or(Some(path))
}

/// The file behind a loop device (`/dev/loop3` -> its backing file), else the source.
fn backing_file(source: &str) -> PathBuf {
    if let Some(n) = source.strip_prefix("/dev/loop") {
        if let Ok(f) = std::fs::read_to_string(format!("/sys/block/loop{n}/loop/backing_file")) {
            return PathBuf::from(f.trim_end());
        }
    }
    std::fs::canonicalize(source).unwrap_or_else(|_| PathBuf::from(source))
}

struct Mount {
    id: String,
    dir: String,
    present: bool,
    entry: Entry,
}

impl Mount {
    fn err(&self, msg: impl std::fmt::Display) -> ResError {
        ResError::new(format!("{}: {msg}", self.id))
    }

    /// The fstab's new text, or `None` when it is in state.
    fn fstab_wanted(&self, text: &str) -> Option<String> {
        let mine: Vec<(usize, Entry)> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| Entry::parse(l).map(|e| (i, e)))
            .filter(|(_, e)| e.dir == self.dir)
            .collect();
        let in_state = if self.present {
            mine.len() == 1 && mine[0].1 == self.entry
        } else {
            mine.is_empty()
        };
        if in_state {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 80);
        let mut placed = false;
        for (i, l) in text.lines().enumerate() {
            if mine.iter().any(|(j, _)| *j == i) {
                if self.present && !placed {
                    out.push_str(&self.entry.line());
                    out.push('\n');
                    placed = true;
                }
                continue;
            }
            out.push_str(l);
            out.push('\n');
        }
        if self.present && !placed {
            out.push_str(&self.entry.line());
            out.push('\n');
        }
        Some(out)
    }

    /// Checks (and applies) the fstab line; whether it was out of state.
    fn fstab_check_apply(&self, apply: bool) -> Result<bool, ResError> {
        let path = fstab_path();
        let _turn = FSTAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (text, mode, owner) = match std::fs::read(path) {
            Ok(b) => {
                let m = std::fs::metadata(path)
                    .map_err(|e| self.err(ResError::io("reading", path, e)))?;
                (
                    String::from_utf8(b)
                        .map_err(|_| self.err(format!("{} is not text (UTF-8)", path.display())))?,
                    m.mode() & 0o7777,
                    (Some(m.uid()), Some(m.gid())),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (String::new(), 0o644, (None, None))
            }
            Err(e) => return Err(self.err(ResError::io("reading", path, e))),
        };
        let Some(new) = self.fstab_wanted(&text) else {
            return Ok(false);
        };
        let what = if self.present { "write" } else { "remove" };
        if apply {
            crate::file::write_atomic(path, new.as_bytes(), mode, owner)
                .map_err(|e| self.err(e))?;
            tracing::info!(resource = %self.id, "{what} the line for {} in {}", self.dir, path.display());
        } else {
            tracing::info!(resource = %self.id, "would {what} the line for {} in {}", self.dir, path.display());
        }
        Ok(true)
    }

    fn live(&self) -> Result<Option<Live>, ResError> {
        let text = std::fs::read_to_string(MOUNTINFO)
            .map_err(|e| self.err(ResError::io("reading", Path::new(MOUNTINFO), e)))?;
        Ok(live_at(&text, &self.dir))
    }

    /// Whether the live mount is of our device and type; an error when it is another one.
    fn is_ours(&self, live: &Live) -> Result<(), ResError> {
        let e = &self.entry;
        // A bind mount shows the source and type of the file system it comes from.
        if e.options.contains_key("bind") || e.options.contains_key("rbind") {
            return Ok(());
        }
        let device_ok = match resolve_device(&e.device) {
            // A name (tmpfs, proc, a network share): the kernel may show any source.
            None => true,
            Some(want) => {
                let have = backing_file(&live.source);
                have == want || live.source == e.device
            }
        };
        // A network share's source is shown as given (`server:/export`).
        let device_ok = device_ok || live.source == e.device;
        // `mount -t nfs` may mount NFS version 4, which the kernel shows as `nfs4`.
        let type_ok = live.fstype == e.fstype || (e.fstype == "nfs" && live.fstype == "nfs4");
        if device_ok && type_ok {
            return Ok(());
        }
        Err(self.err(format!(
            "{} has {} ({}) mounted on it, not {} ({}): unmount it first, tend does not unmount what it did not mount",
            self.dir, live.source, live.fstype, e.device, e.fstype
        )))
    }

    /// Runs `mount(8)` with device and mount point (so it reads no fstab).
    async fn run_mount(&self, remount: bool) -> Result<(), ResError> {
        let e = &self.entry;
        let mut opts = options_string(&e.options);
        if remount {
            opts = if opts.is_empty() {
                "remount".into()
            } else {
                format!("remount,{opts}")
            };
        }
        let mut cmd = tokio::process::Command::new("mount");
        cmd.arg("-t").arg(&e.fstype);
        if !opts.is_empty() {
            cmd.arg("-o").arg(&opts);
        }
        cmd.arg(&e.device).arg(&self.dir);
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|err| self.err(format!("running mount(8): {err}")))?;
        if !out.status.success() {
            return Err(self.err(format!(
                "mount -t {} -o {opts} {} {} failed ({}): {}",
                e.fstype,
                e.device,
                self.dir,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn umount(&self) -> Result<(), ResError> {
        let c = std::ffi::CString::new(self.dir.as_str()).map_err(|e| self.err(e))?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(self.err(format!(
                "unmounting {}: {}",
                self.dir,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Checks (and applies) the live mount; whether it was out of state.
    async fn mount_check_apply(&self, apply: bool) -> Result<bool, ResError> {
        let live = self.live()?;
        if !self.present {
            let Some(live) = live else {
                return Ok(false);
            };
            if !apply {
                tracing::info!(resource = %self.id, "would unmount {} ({})", self.dir, live.source);
                return Ok(true);
            }
            // Mounts stacked on the mount point go one by one.
            for _ in 0..16 {
                self.umount()?;
                tracing::info!(resource = %self.id, "unmounted {} ({})", self.dir, live.source);
                if self.live()?.is_none() {
                    return Ok(true);
                }
            }
            return Err(self.err(format!("{} is still mounted after 16 unmounts", self.dir)));
        }
        match live {
            None => {
                match std::fs::metadata(&self.dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(self.err(format!("the mount point {} is not a directory", self.dir))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(self.err(format!(
                            "the mount point {} does not exist (a `file` resource \"{}/\" can make it)",
                            self.dir, self.dir
                        )))
                    }
                    Err(e) => return Err(self.err(ResError::io("reading", Path::new(&self.dir), e))),
                }
                if !apply {
                    tracing::info!(resource = %self.id, "would mount {} on {}", self.entry.device, self.dir);
                    return Ok(true);
                }
                self.run_mount(false).await?;
                tracing::info!(resource = %self.id, "mounted {} on {}", self.entry.device, self.dir);
            }
            Some(live) => {
                self.is_ours(&live)?;
                let drift = option_drift(&self.entry.options, &live);
                if drift.is_empty() {
                    return Ok(false);
                }
                let drift = drift.join(", ");
                if !apply {
                    tracing::info!(resource = %self.id, "would remount {}: {drift}", self.dir);
                    return Ok(true);
                }
                self.run_mount(true).await?;
                tracing::info!(resource = %self.id, "remounted {}: {drift}", self.dir);
            }
        }
        // The kernel shows what it made of the options; one that did not take would make
        // every check remount.
        let Some(now) = self.live()? else {
            return Err(self.err(format!(
                "mount(8) succeeded, but nothing is mounted on {}",
                self.dir
            )));
        };
        let left = option_drift(&self.entry.options, &now);
        if !left.is_empty() {
            return Err(self.err(format!(
                "mounted, but the kernel shows other options: {} (write them as the kernel shows them)",
                left.join(", ")
            )));
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Resource for Mount {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_beside(fstab_path());
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let table = ProcPoll::open(MOUNTINFO)
            .map_err(|e| self.err(format!("watching {MOUNTINFO}: {e}")))?;
        let path: Arc<Path> = Arc::from(fstab_path());
        let w2 = w.clone();
        let mut sub = tokio::task::spawn_blocking(move || fswatch::subscribe(&path, w2))
            .await
            .map_err(|e| self.err(format!("watching: {e}")))??;
        w.running();
        loop {
            tokio::select! {
                r = table.changed() => {
                    r.map_err(|e| self.err(format!("watching {MOUNTINFO}: {e}")))?;
                    w.event();
                }
                e = sub.failed() => return Err(self.err(e)),
            }
        }
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        // Unmount before the line goes, mount after it is written (as `mount -a` would).
        let (a, b) = if self.present {
            let a = self.fstab_check_apply(ctx.apply)?;
            (a, self.mount_check_apply(ctx.apply).await?)
        } else {
            let b = self.mount_check_apply(ctx.apply).await?;
            (self.fstab_check_apply(ctx.apply)?, b)
        };
        Ok(if a || b {
            Checked::Changed
        } else {
            Checked::InState
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(present: bool) -> Mount {
        let mut options = BTreeMap::new();
        options.insert("defaults".to_string(), String::new());
        options.insert("size".to_string(), "16m".to_string());
        Mount {
            id: "mount[/mnt/a b]".into(),
            dir: "/mnt/a b".into(),
            present,
            entry: Entry {
                device: "tmpfs".into(),
                dir: "/mnt/a b".into(),
                fstype: "tmpfs".into(),
                options,
                freq: 0,
                passno: 0,
            },
        }
    }

    #[test]
    fn fstab_lines_are_added_replaced_and_removed() {
        let m = mount(true);
        let line = "tmpfs /mnt/a\\040b tmpfs defaults,size=16m 0 0";
        assert_eq!(m.entry.line(), line);
        assert_eq!(Entry::parse(line), Some(m.entry.clone()));
        let base = "# comment\nUUID=1 / ext4 errors=remount-ro 0 1\n";
        assert_eq!(m.fstab_wanted(base), Some(format!("{base}{line}\n")));
        assert_eq!(m.fstab_wanted(&format!("{base}{line}\n")), None);
        // Options are a map: their order does not matter.
        assert_eq!(
            m.fstab_wanted("tmpfs /mnt/a\\040b tmpfs size=16m,defaults\n"),
            None
        );
        // Another line for the mount point is replaced in place; a second one goes.
        assert_eq!(
            m.fstab_wanted(
                "a\ntmpfs /mnt/a\\040b tmpfs ro 0 0\nb\ntmpfs /mnt/a\\040b tmpfs defaults 0 0\n"
            ),
            Some(format!("a\n{line}\nb\n"))
        );
        let rm = mount(false);
        assert_eq!(rm.fstab_wanted(base), None);
        assert_eq!(
            rm.fstab_wanted(&format!("{base}{line}\n")).as_deref(),
            Some(base)
        );
    }

    #[test]
    fn live_mounts_and_their_options() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    90 27 0:50 / /mnt/a\\040b rw,relatime shared:5 - tmpfs tmpfs rw,size=8192k\n\
                    91 90 0:51 / /mnt/a\\040b rw,nosuid,noexec,relatime - tmpfs t2 rw,size=16384k,mode=700\n";
        let l = live_at(info, "/mnt/a b").unwrap();
        assert_eq!(l.source, "t2", "the topmost mount");
        assert!(live_at(info, "/mnt/a").is_none());
        let want = |opts: &[(&str, &str)]| -> BTreeMap<String, String> {
            opts.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(option_drift(
            &want(&[
                ("defaults", ""),
                ("size", "16m"),
                ("noexec", ""),
                ("mode", "700")
            ]),
            &l
        )
        .is_empty());
        assert_eq!(
            option_drift(&want(&[("size", "8m")]), &l),
            ["size=8m (is size=16384k)"]
        );
        assert_eq!(option_drift(&want(&[("ro", "")]), &l), ["ro (is rw)"]);
        assert_eq!(
            option_drift(&want(&[("exec", "")]), &l),
            ["exec (is noexec)"]
        );
        assert_eq!(
            option_drift(&want(&[("nodev", "")]), &l),
            ["nodev (is not set)"]
        );
        assert_eq!(
            option_drift(&want(&[("strictatime", "")]), &l),
            ["strictatime (is relatime)"]
        );
        // A read-only mount of a read-write superblock is read-only.
        let ro = Live {
            mount_opts: parse_options("ro,relatime"),
            ..l.clone()
        };
        assert!(option_drift(&want(&[("ro", "")]), &ro).is_empty());
        assert_eq!(option_drift(&want(&[("rw", "")]), &ro), ["rw (is ro)"]);
        // Not shown by the kernel: not compared.
        assert!(option_drift(
            &want(&[
                ("nr_inodes", "100"),
                ("x-systemd.automount", ""),
                ("nofail", "")
            ]),
            &l
        )
        .is_empty());
        assert_eq!(bytes("16m"), bytes("16384k"));

        // Ours, or something else on the mount point.
        let m = mount(true);
        assert!(
            m.is_ours(&l).is_ok(),
            "a device that is a name (tmpfs) is not compared with the source"
        );
        let mut bind = mount(true);
        bind.entry.options.insert("bind".into(), String::new());
        bind.entry.fstype = "none".into();
        bind.entry.device = "/srv/data".into();
        let ext4 = Live {
            source: "/dev/vda1".into(),
            fstype: "ext4".into(),
            mount_opts: BTreeMap::new(),
            super_opts: BTreeMap::new(),
        };
        assert!(
            bind.is_ours(&ext4).is_ok(),
            "a bind mount shows its file system"
        );
        let e = m.is_ours(&ext4).unwrap_err();
        assert!(e.message.contains("/dev/vda1 (ext4) mounted on it"), "{e}");
        assert_eq!(unescape("a\\040b\\134"), "a b\\");
        assert_eq!(escape("a b\\"), "a\\040b\\134");
    }
}
