//! `pkg`: a Debian package, installed (in any, the newest, or one exact version) or not,
//! through apt.
//!
//! Checks read the dpkg database directly ([`dpkg`]: one parse of `/var/lib/dpkg/status`
//! shared by every `pkg` resource until the file changes); `state: newest` also needs apt's
//! candidate version, which comes from one `apt-cache policy` call for all the resources
//! checked at about the same time ([`apt::lookup`]). `apt-cache` rather than a parse of
//! `/var/lib/apt/lists`: the candidate depends on pin priorities and version ordering that only
//! apt knows, and the lists may be compressed.
//!
//! Applies go through one process-wide batcher ([`apt::TRANSACTIONS`]): every `pkg` resource
//! that applies within the batching window (until no new request for 30 ms, at most 500 ms
//! after the first) joins one `apt-get install a b c- d=1.2` transaction; `Meta:autogroup:
//! false` makes a transaction of its own. When a transaction fails, the packages apt's errors
//! name fail with apt's message and the others are tried again together; when apt names none,
//! each package is tried on its own. After apt-get, the dpkg database is read again to confirm
//! the package is in state.
//!
//! The watch is the process-wide inotify hub ([`crate::fswatch`]) on `/var/lib/dpkg/status`,
//! which dpkg replaces by rename after each change, so a package removed or changed behind
//! tend's back is checked again at once; `state: newest` also watches apt's `Release` files
//! in `/var/lib/apt/lists`, which `apt-get update` replaces when a new version is published.
//!
//! A caller that stops waiting (`Meta:timeout`, a graph swap) does not stop a transaction
//! already started: killing apt-get halfway would leave dpkg's database to be repaired.

mod apt;
mod dpkg;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Constant, Field, KindSchema, ResSpec, Type, Value};

use crate::fswatch;
use crate::params::{field_err, Params};

use dpkg::Source;

pub(crate) use apt::transactions_started;

/// apt's package lists (watched for `state: newest`).
const LISTS_DIR: &str = "/var/lib/apt/lists";

/// The `pkg` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("pkg")
            .field(
                Field::new(
                    "state",
                    Type::Str,
                    "\"installed\", \"uninstalled\", \"newest\", or a version to hold it at (\"2.10-3\")",
                )
                .default_value("installed"),
            )
            .field(
                Field::new(
                    "allowdowngrade",
                    Type::Bool,
                    "with a version as state, allow installing a lower version than the installed one",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "allowuntrusted",
                    Type::Bool,
                    "allow packages apt cannot authenticate (apt-get --allow-unauthenticated)",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "allownonfree",
                    Type::Bool,
                    "allow a version found only in a non-free archive component",
                )
                .default_value(false),
            );
        s.constants = ["installed", "uninstalled", "newest"]
            .iter()
            .map(|c| Constant {
                param: "state".into(),
                name: (*c).into(),
                value: Value::Str((*c).into()),
            })
            .collect();
        // Concurrent applies share one apt transaction unless `Meta:autogroup` is false.
        s.groups = true;
        s
    })
}

/// What the package should be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    Installed,
    Uninstalled,
    Newest,
    Version(String),
}

struct Pkg {
    /// `pkg[name]`, for messages.
    id: String,
    /// The package, maybe with `:arch`.
    name: String,
    want: Want,
    flags: apt::Flags,
    allow_non_free: bool,
    /// `Meta:autogroup`.
    autogroup: bool,
    db: &'static Source,
}

/// Whether `s` is a Debian package name (policy 5.6.1: lowercase letters, digits, `+`, `-`,
/// `.`, at least two characters, starting with a letter or digit), maybe with `:arch`.
fn is_package_name(s: &str) -> bool {
    let (name, arch) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    let ok_name = name.len() >= 2
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let ok_arch = arch.is_none_or(|a| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    ok_name && ok_arch
}

/// Whether `s` can be a Debian version (`[epoch:]upstream[-revision]`, upstream starting
/// with a digit).
fn is_version(s: &str) -> bool {
    let rest = match s.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        Some(_) => return false,
        None => s,
    };
    rest.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
}

fn parse_state(s: &str) -> Result<Want, ResError> {
    Ok(match s {
        "installed" => Want::Installed,
        "uninstalled" => Want::Uninstalled,
        "newest" => Want::Newest,
        "" => return Err(field_err("state", "must not be empty")),
        "latest" => {
            return Err(field_err(
                "state",
                "\"latest\" is not a state; did you mean \"newest\"?",
            ))
        }
        "absent" | "removed" | "purged" => {
            return Err(field_err(
                "state",
                format!("{s:?} is not a state; did you mean \"uninstalled\"?"),
            ))
        }
        "present" | "exists" => {
            return Err(field_err(
                "state",
                format!("{s:?} is not a state; did you mean \"installed\"?"),
            ))
        }
        v if is_version(v) => Want::Version(v.to_string()),
        v => {
            return Err(field_err(
                "state",
                format!(
                "{v:?} is neither \"installed\", \"uninstalled\", \"newest\" nor a Debian version"
            ),
            ))
        }
    })
}

/// Builds a `pkg` (validates only; the host is not looked at).
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    build_with(spec, Source::system())
}

fn build_with(spec: &ResSpec, db: &'static Source) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    if !is_package_name(&spec.name) {
        let hint = if spec.name.starts_with('/') {
            " (installing a .deb file by path is not supported)"
        } else {
            ""
        };
        // The graph check puts the resource (`pkg[...]`) in front of a constructor's error.
        return Err(ResError::new(format!(
            "{:?} is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`, optionally `:arch`){hint}",
            spec.name
        )));
    }
    let want = parse_state(&p.str("state")?)?;
    let downgrade = p.bool("allowdowngrade")?;
    if downgrade && !matches!(want, Want::Version(_)) {
        return Err(field_err(
            "allowdowngrade",
            "only means something with a version as state",
        ));
    }
    Ok(Box::new(Pkg {
        id: format!("pkg[{}]", spec.name),
        name: spec.name.clone(),
        want,
        flags: apt::Flags {
            untrusted: p.bool("allowuntrusted")?,
            downgrade,
        },
        allow_non_free: p.bool("allownonfree")?,
        autogroup: spec.meta.autogroup,
        db,
    }))
}

/// What a check found: in state, or the transaction that would fix it and why.
enum Verdict {
    InState,
    Fix { op: apt::Op, why: String },
}

impl Pkg {
    fn err(&self, msg: impl std::fmt::Display) -> ResError {
        ResError::new(format!("{}: {msg}", self.id))
    }

    /// The dpkg database: the cached parse when the files are unchanged (inline: two
    /// `stat`s), else a new parse on a blocking thread.
    async fn read_db(&self) -> Result<Arc<dpkg::Db>, ResError> {
        if let Some(db) = self.db.cached().map_err(|e| self.err(e))? {
            return Ok(db);
        }
        let src = self.db;
        tokio::task::spawn_blocking(move || src.read())
            .await
            .map_err(|e| self.err(format!("reading the dpkg database: {e}")))?
            .map_err(|e| self.err(e))
    }

    async fn verdict(&self) -> Result<Verdict, ResError> {
        let db = self.read_db().await?;
        let entry = db.lookup(&self.name, dpkg::native_arch).cloned();
        let installed = entry
            .as_ref()
            .filter(|e| e.status.is_installed())
            .map(|e| e.version.to_string());
        let seen = match &entry {
            None => "not installed".to_string(),
            Some(e) if e.status.is_installed() => format!("{} is installed", e.version),
            Some(e) => format!("dpkg status {} ({})", e.status.as_str(), e.version),
        };
        let fix = |op: apt::Op, why: String| Ok(Verdict::Fix { op, why });
        match &self.want {
            Want::Installed => match installed {
                Some(_) => Ok(Verdict::InState),
                None => fix(apt::Op::Install, format!("install it ({seen})")),
            },
            Want::Uninstalled => match &entry {
                None => Ok(Verdict::InState),
                Some(e) if e.status.is_absent() => Ok(Verdict::InState),
                Some(_) => fix(apt::Op::Remove, format!("remove it ({seen})")),
            },
            Want::Version(v) => match installed {
                Some(i) if i == *v => Ok(Verdict::InState),
                _ => fix(apt::Op::Version(v.clone()), format!("install {v} ({seen})")),
            },
            Want::Newest => {
                let Some(i) = installed else {
                    return fix(apt::Op::Install, format!("install it ({seen})"));
                };
                let policy = apt::lookup(self.name.clone())
                    .await
                    .map_err(|e| self.err(format!("finding the candidate version: {e}")))?;
                match policy.and_then(|p| p.candidate) {
                    Some(c) if c != i => {
                        fix(apt::Op::Install, format!("upgrade it to {c} ({seen})"))
                    }
                    // No candidate: what is installed is all there is.
                    _ => Ok(Verdict::InState),
                }
            }
        }
    }
}

/// The `Release` files of apt's lists (`apt-get update` renames a new one into place when
/// its archive changed).
fn release_files() -> Vec<Arc<Path>> {
    let Ok(rd) = std::fs::read_dir(LISTS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<Arc<Path>> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with("_InRelease") || n.ends_with("_Release")
        })
        .map(|e| Arc::from(e.path()))
        .collect();
    v.sort();
    v
}

#[async_trait::async_trait]
impl Resource for Pkg {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let status: Arc<Path> = Arc::from(self.db.status_path());
        let newest = self.want == Want::Newest;
        let w2 = w.clone();
        let mut subs = tokio::task::spawn_blocking(move || {
            let mut subs = vec![fswatch::subscribe(&status, w2.clone())?];
            if newest {
                for f in release_files() {
                    subs.push(fswatch::subscribe(&f, w2.clone())?);
                }
            }
            Ok::<_, ResError>(subs)
        })
        .await
        .map_err(|e| self.err(format!("watching the dpkg database: {e}")))??;
        w.running();
        let e = {
            let failed = subs.iter_mut().map(|s| Box::pin(s.failed()));
            futures::future::select_all(failed).await.0
        };
        Err(self.err(e))
    }

    /// Its watch holds only in-process state (inotify subscriptions); an apt-get it started
    /// finishes on its own.
    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let (op, why) = match self.verdict().await? {
            Verdict::InState => return Ok(Checked::InState),
            Verdict::Fix { op, why } => (op, why),
        };
        if !ctx.apply {
            tracing::info!(resource = %self.id, "would {why}");
            return Ok(Checked::Changed);
        }
        tracing::info!(resource = %self.id, "{why}");
        apt::transaction(
            self.name.clone(),
            op,
            self.flags,
            !self.allow_non_free,
            !self.autogroup,
        )
        .await
        .map_err(|f| match f.field {
            Some(field) => ResError::field(field, format!("{}: {}", self.id, f.message)),
            None => self.err(f.message),
        })?;
        match self.verdict().await? {
            Verdict::InState => Ok(Checked::Changed),
            Verdict::Fix { why, .. } => Err(self.err(format!(
                "apt-get succeeded, but the package is still not in state: would {why}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in [
            "hello",
            "libstdc++6",
            "python3.11",
            "g++",
            "libc6:i386",
            "0ad",
        ] {
            assert!(is_package_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Hello",
            "-x",
            "/tmp/x.deb",
            "a b",
            "x:",
            "x:I386",
            "a_b",
        ] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn states_and_versions() {
        assert_eq!(parse_state("newest").unwrap(), Want::Newest);
        assert_eq!(
            parse_state("1:2.10-3~bpo12+1").unwrap(),
            Want::Version("1:2.10-3~bpo12+1".into())
        );
        let e = parse_state("latest").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("state"));
        assert!(e.message.contains("newest"), "{e}");
        assert!(parse_state("absent")
            .unwrap_err()
            .message
            .contains("uninstalled"));
        assert!(parse_state("x1").is_err());
        assert!(parse_state("a:1").is_err());
    }

    #[tokio::test]
    async fn checks_read_the_database_once_until_it_changes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("status"),
            "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n\
             Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n",
        )
        .unwrap();
        let src: &'static Source = Box::leak(Box::new(Source::new(t.path())));
        let mk = |name: &str, state: &str| {
            build_with(&ResSpec::new("pkg", name).param("state", state), src).unwrap()
        };
        let dry = CheckCtx {
            apply: false,
            refresh: false,
        };
        let cases = [
            ("hello", "installed", Checked::InState),
            ("hello", "2.10-3", Checked::InState),
            ("hello", "2.10-4", Checked::Changed),
            ("hello", "uninstalled", Checked::Changed),
            ("gone", "uninstalled", Checked::InState),
            ("gone", "installed", Checked::Changed),
            ("never", "uninstalled", Checked::InState),
            ("never", "newest", Checked::Changed),
        ];
        for (name, state, want) in cases {
            let r = mk(name, state);
            assert_eq!(r.check_apply(dry).await.unwrap(), want, "{name} {state}");
        }
        assert_eq!(src.parses(), 1, "one parse for every check");
    }
}
