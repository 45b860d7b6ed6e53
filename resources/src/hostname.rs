//! `hostname`: this host's names, as mgmt's `hostname`: `transient_hostname` (the kernel's,
//! `sethostname(2)`), `static_hostname` (`/etc/hostname`), `pretty_hostname`
//! (`PRETTY_HOSTNAME` in `/etc/machine-info`); `hostname` is the fallback for each of the three
//! left empty. An empty name (after the fallback) is left as it is.
//!
//! mgmt asks systemd-hostnamed over D-Bus; tend does what hostnamed would do itself, so the
//! kind works without systemd as PID 1 (containers, minimal hosts): the transient name is the
//! kernel's (of tend's UTS namespace), the static and pretty names are the files hostnamed
//! reads and writes. Both files are rewritten atomically (the `file` kind's write), keeping
//! their mode; the other lines of `/etc/machine-info` are kept.
//!
//! The watch is event-driven: `/proc/sys/kernel/hostname` is pollable (the kernel wakes
//! `POLLPRI` pollers whenever a host name is set, in any UTS namespace), and both files are
//! watched with the inotify hub, so a change behind tend's back is repaired at once.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};
use crate::procpoll::ProcPoll;

/// The static host name's file.
const STATIC_FILE: &str = "/etc/hostname";
/// The file of the pretty host name (`PRETTY_HOSTNAME=`), among other machine facts.
const MACHINE_INFO: &str = "/etc/machine-info";
/// The kernel's host name, pollable for changes.
const PROC_HOSTNAME: &str = "/proc/sys/kernel/hostname";
/// The longest host name the kernel takes (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// The `hostname` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("hostname")
            .field(
                Field::new(
                    "hostname",
                    Type::Str,
                    "the name for each of the three others left empty",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "pretty_hostname",
                    Type::Str,
                    "a free-form name for people (PRETTY_HOSTNAME in /etc/machine-info)",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "static_hostname",
                    Type::Str,
                    "the name kept for the next boot (/etc/hostname)",
                )
                .default_value(""),
            )
            .field(
                Field::new(
                    "transient_hostname",
                    Type::Str,
                    "the kernel's name now (sethostname)",
                )
                .default_value(""),
            )
    })
}

/// Whether `name` is a host name the kernel and hostnamed take: at most 64 bytes of ASCII
/// letters, digits and `-`, in dot-separated labels, none empty.
fn check_hostname(field: &str, name: &str) -> Result<(), ResError> {
    if name.len() > HOST_NAME_MAX {
        return Err(field_err(
            field,
            format!("{name:?} is longer than {HOST_NAME_MAX} bytes, the most a host name may have"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(field_err(
            field,
            format!(
                "{name:?} is not a host name: {c:?} is not allowed (letters, digits, `-`, `.`)"
            ),
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(field_err(
            field,
            format!("{name:?} is not a host name: it has an empty label (a leading, trailing or double `.`)"),
        ));
    }
    Ok(())
}

/// Builds a `hostname`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let fallback = p.str("hostname")?;
    let pick = |field: &str| -> Result<Option<String>, ResError> {
        let v = p.str(field)?;
        let v = if v.is_empty() { fallback.clone() } else { v };
        Ok(Some(v).filter(|v| !v.is_empty()))
    };
    let pretty = pick("pretty_hostname")?;
    let static_name = pick("static_hostname")?;
    let transient = pick("transient_hostname")?;
    if pretty.is_none() && static_name.is_none() && transient.is_none() {
        return Err(field_err(
            "hostname",
            "is empty, and so are pretty_hostname, static_hostname and transient_hostname: there is nothing to do",
        ));
    }
    // Which field a bad name came from, for the message.
    let origin = |field: &'static str| if p.is_set(field) { field } else { "hostname" };
    if let Some(n) = &static_name {
        check_hostname(origin("static_hostname"), n)?;
    }
    if let Some(n) = &transient {
        check_hostname(origin("transient_hostname"), n)?;
    }
    if let Some(n) = &pretty {
        if n.chars().any(char::is_control) {
            return Err(field_err(
                origin("pretty_hostname"),
                format!("{n:?} has a control character (a newline, a tab, ...)"),
            ));
        }
    }
    Ok(Box::new(Hostname {
        id: format!("hostname[{}]", spec.name),
        pretty,
        static_name,
        transient,
    }))
}

/// After the `file`s of `/etc/hostname` and `/etc/machine-info`, when the graph has them.
pub(crate) fn autoedges(_spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    out.requires(&format!("file:{STATIC_FILE}"));
    out.requires(&format!("file:{MACHINE_INFO}"));
}

struct Hostname {
    id: String,
    pretty: Option<String>,
    static_name: Option<String>,
    transient: Option<String>,
}

/// The kernel's host name (of this UTS namespace).
fn kernel_hostname() -> Result<String, ResError> {
    let mut buf = [0u8; HOST_NAME_MAX + 1];
    // SAFETY: the buffer is valid for its length; the kernel NUL-terminates within it.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(ResError::new(format!(
            "reading the host name: {}",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn set_kernel_hostname(name: &str) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A file's text and mode, `None` when it does not exist.
fn read(path: &Path) -> Result<Option<(String, u32)>, ResError> {
    match std::fs::read(path) {
        Ok(b) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o644);
            Ok(Some((String::from_utf8_lossy(&b).into_owned(), mode)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResError::io("reading", path, e)),
    }
}

/// The static host name in `/etc/hostname`'s text: its first line that is not blank or a
/// comment, trimmed (as hostnamed reads it).
fn static_of(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("")
}

/// `PRETTY_HOSTNAME`'s value in an env-style file (`KEY=value`, the value maybe quoted).
fn pretty_of(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("PRETTY_HOSTNAME="))
        .next_back()
        .map(unquote)
}

/// A shell-style value: `"..."` (with `\` escapes), `'...'`, or bare.
fn unquote(v: &str) -> String {
    let v = v.trim_end();
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_string();
    }
    v.to_string()
}

/// `value` written as hostnamed writes it: bare when it is plain, else double-quoted with
/// `"`, `\`, `$` and `` ` `` escaped.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@+".contains(c))
    {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `/etc/machine-info`'s new text with `PRETTY_HOSTNAME` set to `value`: the other lines
/// kept, the first such line replaced (others dropped), or the line appended.
fn with_pretty(text: &str, value: &str) -> String {
    let line = format!("PRETTY_HOSTNAME={}", quote(value));
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut done = false;
    for l in text.lines() {
        if l.trim_start().starts_with("PRETTY_HOSTNAME=") {
            if !done {
                out.push_str(&line);
                out.push('\n');
                done = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

impl Hostname {
    fn err(&self, msg: impl std::fmt::Display) -> ResError {
        ResError::new(format!("{}: {msg}", self.id))
    }
}

#[async_trait::async_trait]
impl Resource for Hostname {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_temps(Path::new("/etc"));
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let proc = match &self.transient {
            Some(_) => Some(
                ProcPoll::open(PROC_HOSTNAME)
                    .map_err(|e| self.err(format!("watching {PROC_HOSTNAME}: {e}")))?,
            ),
            None => None,
        };
        let mut subs = Vec::new();
        for (want, path) in [
            (self.static_name.is_some(), STATIC_FILE),
            (self.pretty.is_some(), MACHINE_INFO),
        ] {
            if !want {
                continue;
            }
            let path: Arc<Path> = Arc::from(Path::new(path));
            let w2 = w.clone();
            subs.push(
                tokio::task::spawn_blocking(move || fswatch::subscribe(&path, w2))
                    .await
                    .map_err(|e| self.err(format!("watching: {e}")))??,
            );
        }
        w.running();
        let files = async {
            match subs.as_mut_slice() {
                [] => std::future::pending().await,
                [a] => a.failed().await,
                [a, b] => tokio::select! {
                    e = a.failed() => e,
                    e = b.failed() => e,
                },
                _ => unreachable!("at most two files"),
            }
        };
        tokio::pin!(files);
        loop {
            tokio::select! {
                r = async { proc.as_ref().expect("transient").changed().await }, if proc.is_some() => {
                    r.map_err(|e| self.err(format!("watching {PROC_HOSTNAME}: {e}")))?;
                    w.event();
                }
                e = &mut files => return Err(self.err(e)),
            }
        }
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let mut changed = false;
        let verb = if ctx.apply { "set" } else { "would set" };
        if let Some(want) = &self.transient {
            let now = kernel_hostname().map_err(|e| self.err(e))?;
            if &now != want {
                changed = true;
                if ctx.apply {
                    set_kernel_hostname(want)
                        .map_err(|e| self.err(format!("setting the host name to {want:?}: {e}")))?;
                }
                tracing::info!(resource = %self.id, "{verb} the transient host name to {want} (was {now})");
            }
        }
        if let Some(want) = &self.static_name {
            let path = Path::new(STATIC_FILE);
            let old = read(path).map_err(|e| self.err(e))?;
            let now = old.as_ref().map(|(t, _)| static_of(t)).unwrap_or("");
            if now != want {
                changed = true;
                if ctx.apply {
                    let mode = old.as_ref().map(|(_, m)| *m).unwrap_or(0o644);
                    crate::file::write_atomic(
                        path,
                        format!("{want}\n").as_bytes(),
                        mode,
                        (None, None),
                    )
                    .map_err(|e| self.err(e))?;
                }
                tracing::info!(resource = %self.id, "{verb} the static host name to {want} in {STATIC_FILE} (was {now:?})");
            }
        }
        if let Some(want) = &self.pretty {
            let path = Path::new(MACHINE_INFO);
            let old = read(path).map_err(|e| self.err(e))?;
            let text = old.as_ref().map(|(t, _)| t.as_str()).unwrap_or("");
            let now = pretty_of(text);
            if now.as_deref() != Some(want.as_str()) {
                changed = true;
                if ctx.apply {
                    let mode = old.as_ref().map(|(_, m)| *m).unwrap_or(0o644);
                    crate::file::write_atomic(
                        path,
                        with_pretty(text, want).as_bytes(),
                        mode,
                        (None, None),
                    )
                    .map_err(|e| self.err(e))?;
                }
                tracing::info!(resource = %self.id, "{verb} the pretty host name to {want:?} in {MACHINE_INFO} (was {now:?})");
            }
        }
        Ok(if changed {
            Checked::Changed
        } else {
            Checked::InState
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_files_as_hostnamed() {
        assert_eq!(static_of("# comment\n\n  web1 \nother\n"), "web1");
        assert_eq!(static_of(""), "");
        assert_eq!(
            pretty_of("A=1\nPRETTY_HOSTNAME=\"Web \\\"one\\\"\"\n"),
            Some("Web \"one\"".into())
        );
        assert_eq!(pretty_of("PRETTY_HOSTNAME='x y'\n"), Some("x y".into()));
        assert_eq!(pretty_of("PRETTY_HOSTNAME=plain\n"), Some("plain".into()));
        assert_eq!(pretty_of("CHASSIS=vm\n"), None);
        assert_eq!(quote("plain-1.x"), "plain-1.x");
        assert_eq!(quote("Bob's $box"), "\"Bob's \\$box\"");
        for v in ["Web \"one\"", "a\\b", "$HOME `x`", "", "ünïcode"] {
            assert_eq!(pretty_of(&with_pretty("", v)).as_deref(), Some(v), "{v}");
        }
        assert_eq!(
            with_pretty(
                "CHASSIS=vm\nPRETTY_HOSTNAME=old\nPRETTY_HOSTNAME=older\nDEPLOYMENT=x\n",
                "new"
            ),
            "CHASSIS=vm\nPRETTY_HOSTNAME=new\nDEPLOYMENT=x\n"
        );
        assert_eq!(
            with_pretty("CHASSIS=vm", "n"),
            "CHASSIS=vm\nPRETTY_HOSTNAME=n\n"
        );
    }

    #[test]
    fn host_names_are_checked() {
        for ok in ["a", "web-1", "web1.example.com", &"x".repeat(64)] {
            check_hostname("hostname", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("a b", "' ' is not allowed"),
            ("a_b", "'_' is not allowed"),
            (".a", "empty label"),
            ("a..b", "empty label"),
            ("a.", "empty label"),
            (&"x".repeat(65), "longer than 64"),
        ] {
            let e = check_hostname("hostname", bad).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {e}");
        }
    }
}
