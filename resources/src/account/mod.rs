//! `user` and `group`: local accounts, in `/etc/passwd`, `/etc/group` and their shadows.
//!
//! Checks parse the account files directly ([`db`]: a few kilobytes, read again at each
//! check) rather than asking NSS, because these kinds manage local accounts and the shadow
//! tools edit only the local files: an LDAP user of the same name is not a local account.
//!
//! Applies run the shadow tools (`useradd`, `usermod`, `userdel`, `groupadd`, `groupmod`,
//! `groupdel`). They take `lckpwdf(3)`'s lock and the per-file locks, write a new file and
//! rename it into place, so `/etc/passwd` is never seen half-written; one process-wide mutex
//! runs one tool at a time (two of ours would only fight for the lock), and a tool that finds
//! the lock taken by someone else is tried again for up to [`LOCK_WAIT`].
//!
//! The watch is the process-wide inotify hub ([`crate::fswatch`]) on the account files, which
//! the tools replace by rename: `usermod -s`, `userdel` or an edit by `vipw` behind tend's
//! back is checked again at once.

pub(crate) mod db;
mod group;
mod user;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, ResError, Watcher};
use tend_model::ResSpec;

use crate::fswatch;
use crate::params::field_err;
use crate::process::CmdLine;

pub(crate) use group::{
    autoedges as group_autoedges, build as build_group, schema as group_schema,
};
pub(crate) use user::{autoedges as user_autoedges, build as build_user, schema as user_schema};

/// How long a tool that finds the account files locked by another process is retried.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// A user or group as a program names it: a numeric id or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    /// Reads `s` (field `field`): all digits is an id, anything else a name.
    pub(crate) fn parse(field: &str, s: String) -> Result<Who, ResError> {
        if s.is_empty() {
            return Err(field_err(field, "is empty (leave it unset)"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Who::Id)
                .map_err(|_| field_err(field, format!("{s} is not a valid id")));
        }
        Ok(Who::Name(s))
    }

    /// The user (through NSS, as the kernel's callers see it).
    pub(crate) fn lookup_user(&self) -> Result<nix::unistd::User, String> {
        use nix::unistd::{Uid, User};
        let r = match self {
            Who::Id(id) => User::from_uid(Uid::from_raw(*id)),
            Who::Name(n) => User::from_name(n),
        };
        match r {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(format!("no such user {}", self.display())),
            Err(e) => Err(format!("looking up user {}: {e}", self.display())),
        }
    }

    /// The group's gid (a numeric id need not name a group).
    pub(crate) fn lookup_gid(&self) -> Result<u32, String> {
        match self {
            Who::Id(id) => Ok(*id),
            Who::Name(n) => match nix::unistd::Group::from_name(n) {
                Ok(Some(g)) => Ok(g.gid.as_raw()),
                Ok(None) => Err(format!("no such group {n:?}")),
                Err(e) => Err(format!("looking up group {n:?}: {e}")),
            },
        }
    }

    fn display(&self) -> String {
        match self {
            Who::Id(id) => id.to_string(),
            Who::Name(n) => format!("{n:?}"),
        }
    }
}

/// Whether `s` is an account name the shadow tools accept (Debian's default rule, without
/// the `--badname` relaxations): starts with a letter or `_`, then letters, digits, `_`, `-`,
/// `.`, at most one trailing `$`, at most 32 bytes.
pub(crate) fn is_account_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    !body.is_empty()
        && s.len() <= 32
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A name check for `field` (or the resource name when `field` is `None`).
pub(crate) fn check_name(what: &str, field: Option<&str>, s: &str) -> Result<(), ResError> {
    if is_account_name(s) {
        return Ok(());
    }
    let msg = format!(
        "{s:?} is not a valid {what} name (a letter or `_`, then letters, digits, `_`, `-`, `.`; at most 32 bytes)"
    );
    Err(match field {
        Some(f) => field_err(f, msg),
        None => ResError::new(msg),
    })
}

/// Automatic edges of a resource that runs as or owns with names in `user_field` and
/// `group_field` (`file`'s `owner`/`group`, `exec`'s `user`/`group`): it comes after the
/// `user` and `group` resources of those names.
pub(crate) fn require_owner(
    spec: &ResSpec,
    user_field: &str,
    group_field: &str,
    out: &mut dyn AutoEdgeSink,
) {
    let name = |f: &str| {
        spec.params
            .get(f)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(u) = name(user_field) {
        out.requires(&format!("user:{u}"));
    }
    if let Some(g) = name(group_field) {
        out.requires(&format!("group:{g}"));
    }
}

/// What would put an account in state: nothing, or one shadow tool run.
pub(crate) enum Plan {
    InState,
    Run {
        tool: &'static str,
        args: Vec<String>,
        why: String,
    },
}

/// `check_apply` of `user` and `group` (`what` names the kind in messages): plans; in a dry
/// run reports the plan; else runs the tool and plans again to confirm.
pub(crate) async fn check_apply(
    id: &str,
    what: &str,
    ctx: CheckCtx,
    plan: impl Fn() -> Result<Plan, ResError>,
) -> Result<Checked, ResError> {
    let (tool, args, why) = match plan()? {
        Plan::InState => return Ok(Checked::InState),
        Plan::Run { tool, args, why } => (tool, args, why),
    };
    if !ctx.apply {
        tracing::info!(resource = %id, "would {why}");
        return Ok(Checked::Changed);
    }
    tracing::info!(resource = %id, "{why}");
    run_tool(id, tool, args).await?;
    match plan()? {
        Plan::InState => Ok(Checked::Changed),
        Plan::Run { why, .. } => Err(ResError::new(format!(
            "{id}: {tool} succeeded, but the {what} is still not in state: would {why}"
        ))),
    }
}

/// Watches the account files (passwd, group and their shadows) for resource `id`.
pub(crate) async fn watch_files(id: &str, files: &db::Files, w: Watcher) -> Result<(), ResError> {
    let paths: Vec<Arc<Path>> = files
        .watched()
        .into_iter()
        .map(|f| Arc::from(Path::new(&f)))
        .collect();
    let w2 = w.clone();
    let mut subs = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|p| fswatch::subscribe(p, w2.clone()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ResError::new(format!("{id}: watching the account files: {e}")))??;
    w.running();
    let e = {
        let failed = subs.iter_mut().map(|s| Box::pin(s.failed()));
        futures::future::select_all(failed).await.0
    };
    Err(ResError::new(format!("{id}: {e}")))
}

/// One shadow tool at a time in this process.
static TOOLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a shadow tool (`useradd ...`) for resource `id`; its stderr is the error. A tool
/// that reports the files locked by another process is run again, for up to [`LOCK_WAIT`].
pub(crate) async fn run_tool(id: &str, program: &str, args: Vec<String>) -> Result<(), ResError> {
    let cmd = CmdLine {
        program: program.to_string(),
        args,
        cwd: None,
        env: Default::default(),
        run_as: Default::default(),
        cancel: nix::sys::signal::Signal::SIGKILL,
    };
    let _one = TOOLS.lock().await;
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let f = cmd.run(id, None).await.map_err(|e| {
            ResError::new(format!(
                "{id}: {e} (the shadow tools come with Debian's `passwd` package)"
            ))
        })?;
        if f.status.success() {
            return Ok(());
        }
        let locked =
            f.stderr_tail.contains("cannot lock") || f.stderr_tail.contains("try again later");
        if locked && start.elapsed() < LOCK_WAIT {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        }
        return Err(ResError::new(format!(
            "{id}: `{}` {}{}",
            cmd.display(),
            crate::process::describe(&f.status),
            if f.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(": {}", f.stderr_tail)
            }
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["alice", "_apt", "www-data", "a.b", "machine$", "x1"] {
            assert!(is_account_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "-x", "a b", "a:b", "$", "a$b", &"x".repeat(33)] {
            assert!(!is_account_name(bad), "{bad}");
        }
    }

    #[test]
    fn who_parses_ids_and_names() {
        assert_eq!(Who::parse("user", "0".into()).unwrap(), Who::Id(0));
        assert_eq!(
            Who::parse("user", "root".into()).unwrap(),
            Who::Name("root".into())
        );
        assert!(Who::parse("user", "".into()).is_err());
        assert!(Who::parse("user", "99999999999".into()).is_err());
        assert_eq!(
            Who::Name("root".into()).lookup_user().unwrap().uid.as_raw(),
            0
        );
        assert!(Who::Name("no-such-user-here".into())
            .lookup_user()
            .unwrap_err()
            .contains("no such user"));
    }

    #[test]
    fn owners_become_requirements() {
        let spec = ResSpec::new("file", "/x")
            .param("owner", "alice")
            .param("group", "0");
        let a = tend_engine::AutoEdges::of(|s, o| require_owner(s, "owner", "group", o), &spec);
        assert_eq!(a.requires, ["user:alice"]);
    }
}
