//! `user`: a local user account, present with the given ids, groups, home and shell, or
//! absent.

use std::sync::OnceLock;

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type, Value};

use super::db::{Db, Files};
use super::{check_name, watch_files, Plan};
use crate::params::{field_err, Params};

/// The `user` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let id_range = (0, u32::MAX as i128 - 1);
        KindSchema::new("user")
            .field(
                Field::new("state", Type::Str, "\"exists\" or \"absent\"")
                    .default_value("exists")
                    .allowed(&["exists", "absent"]),
            )
            .field(
                Field::new(
                    "uid",
                    Type::Int,
                    "the user id (unset: any, chosen at creation); unique unless `allowduplicateuid`",
                )
                .range(id_range.0, id_range.1),
            )
            .field(
                Field::new("gid", Type::Int, "the primary group, by id (not with `group`)")
                    .range(id_range.0, id_range.1),
            )
            .field(Field::new(
                "group",
                Type::Str,
                "the primary group, by name (not with `gid`)",
            ))
            .field(Field::new(
                "groups",
                Type::List(Box::new(Type::Str)),
                "the supplementary groups, exactly (unset: not managed; [] = none)",
            ))
            .field(Field::new("homedir", Type::Str, "the home directory (an absolute path)"))
            .field(Field::new("shell", Type::Str, "the login shell (an absolute path)"))
            .field(
                Field::new(
                    "system",
                    Type::Bool,
                    "create it as a system account (uid from the system range, no home; creation only)",
                )
                .default_value(false),
            )
            .field(
                Field::new(
                    "allowduplicateuid",
                    Type::Bool,
                    "allow `uid` to be another user's too",
                )
                .default_value(false),
            )
    })
}

/// The primary group wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Primary {
    Gid(u32),
    Name(String),
}

struct User {
    id: String,
    name: String,
    exists: bool,
    uid: Option<u32>,
    primary: Option<Primary>,
    /// Sorted.
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: Option<String>,
    system: bool,
    duplicate_uid: bool,
    files: Files,
}

fn abs_path(p: &Params, field: &str) -> Result<Option<String>, ResError> {
    match p.opt_str(field)? {
        Some(s) if !s.starts_with('/') || s.contains(':') || s.contains('\n') => Err(field_err(
            field,
            format!("{s:?} is not an absolute path without `:`"),
        )),
        v => Ok(v),
    }
}

/// Builds a `user` (validates only).
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    build_with(spec, Files::system())
}

pub(super) fn build_with(spec: &ResSpec, files: Files) -> Result<Box<dyn Resource>, ResError> {
    Ok(Box::new(parse(spec, files)?))
}

fn parse(spec: &ResSpec, files: Files) -> Result<User, ResError> {
    let p = Params::new(spec, schema())?;
    check_name("user", None, &spec.name)?;
    let exists = p.str("state")? == "exists";
    let gid = p.opt_int("gid")?.map(|g| g as u32);
    let group = p.opt_str("group")?;
    if gid.is_some() && group.is_some() {
        return Err(field_err("group", "cannot be combined with `gid`"));
    }
    if let Some(g) = &group {
        check_name("group", Some("group"), g)?;
    }
    let groups = match p.is_set("groups") {
        true => {
            let mut v = p.strs("groups")?;
            for g in &v {
                check_name("group", Some("groups"), g)?;
            }
            v.sort();
            v.dedup();
            Some(v)
        }
        false => None,
    };
    let u = User {
        id: format!("user[{}]", spec.name),
        name: spec.name.clone(),
        exists,
        uid: p.opt_int("uid")?.map(|u| u as u32),
        primary: gid.map(Primary::Gid).or(group.map(Primary::Name)),
        groups,
        home: abs_path(&p, "homedir")?,
        shell: abs_path(&p, "shell")?,
        system: p.bool("system")?,
        duplicate_uid: p.bool("allowduplicateuid")?,
        files,
    };
    if !exists {
        let managed = [
            ("uid", u.uid.is_some()),
            ("gid", gid.is_some()),
            ("homedir", u.home.is_some()),
            ("shell", u.shell.is_some()),
            ("system", u.system),
        ];
        if let Some((f, _)) = managed.iter().find(|(_, set)| *set) {
            return Err(field_err(f, "means nothing for an absent user"));
        }
    }
    Ok(u)
}

/// `user` provides `user:<name>` and comes after the groups it names (`group:<name>`); an
/// absent user is removed before the groups it names are (`members-gone:<name>`), as mgmt
/// reverses the edge (with `state: absent`, `group` and `groups` only order the removal).
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let absent = spec.params.get("state").and_then(|v| v.as_str()) == Some("absent");
    if !absent {
        out.provides(&format!("user:{}", spec.name));
    }
    let mut named: Vec<&str> = Vec::new();
    if let Some(g) = spec.params.get("group").and_then(|v| v.as_str()) {
        named.push(g);
    }
    if let Some(Value::List(l)) = spec.params.get("groups") {
        named.extend(l.iter().filter_map(|v| v.as_str()));
    }
    for g in named {
        match absent {
            false => out.requires(&format!("group:{g}")),
            true => out.provides(&format!("members-gone:{g}")),
        }
    }
}

impl User {
    /// The gid the primary group names (`None`: the named group does not exist yet).
    fn want_gid(&self, db: &Db) -> Option<Option<u32>> {
        match &self.primary {
            None => None,
            Some(Primary::Gid(g)) => Some(Some(*g)),
            Some(Primary::Name(n)) => Some(db.group(n).map(|g| g.gid)),
        }
    }

    fn primary_arg(&self) -> Option<String> {
        match &self.primary {
            None => None,
            Some(Primary::Gid(g)) => Some(g.to_string()),
            Some(Primary::Name(n)) => Some(n.clone()),
        }
    }

    fn plan(&self) -> Result<Plan, ResError> {
        let db = self.files.read()?;
        let have = db.user(&self.name);
        if !self.exists {
            return Ok(match have {
                None => Plan::InState,
                Some(u) => Plan::Run {
                    tool: "userdel",
                    args: vec![self.name.clone()],
                    why: format!("remove it (uid {}; its home stays)", u.uid),
                },
            });
        }
        if let (Some(uid), false) = (self.uid, self.duplicate_uid) {
            if let Some(other) = db.user_by_uid(uid).filter(|u| u.name != self.name) {
                return Err(field_err(
                    "uid",
                    format!(
                        "{}: uid {uid} belongs to user {:?} already (set `allowduplicateuid` to share it)",
                        self.id, other.name
                    ),
                ));
            }
        }
        let mut args = Vec::new();
        let mut why = Vec::new();
        if self.duplicate_uid && self.uid.is_some() {
            args.push("--non-unique".to_string());
        }
        let Some(u) = have else {
            if let Some(uid) = self.uid {
                args.extend(["--uid".into(), uid.to_string()]);
            }
            match self.primary_arg() {
                Some(g) => args.extend(["--gid".into(), g]),
                // useradd makes a group of the user's name, and refuses when one exists
                // already (left by a `userdel` that raced with us, or made on purpose):
                // join it instead.
                None if db.group(&self.name).is_some() => {
                    args.extend(["--gid".into(), self.name.clone()])
                }
                None => {}
            }
            if let Some(gs) = &self.groups {
                args.extend(["--groups".into(), gs.join(",")]);
            }
            if let Some(h) = &self.home {
                args.extend(["--home-dir".into(), h.clone()]);
            }
            if let Some(s) = &self.shell {
                args.extend(["--shell".into(), s.clone()]);
            }
            if self.system {
                args.push("--system".into());
            }
            args.push(self.name.clone());
            return Ok(Plan::Run {
                tool: "useradd",
                args,
                why: "create it".into(),
            });
        };
        if let Some(want) = self.uid {
            if want != u.uid {
                args.extend(["--uid".into(), want.to_string()]);
                why.push(format!("uid {} -> {want}", u.uid));
            }
        }
        if let Some(want) = self.want_gid(&db) {
            if want != Some(u.gid) {
                let arg = self.primary_arg().unwrap_or_default();
                why.push(format!("primary group {} -> {arg}", u.gid));
                args.extend(["--gid".into(), arg]);
            }
        }
        if let Some(want) = &self.groups {
            let have = db.member_of(&self.name);
            if *want != have {
                why.push(format!(
                    "groups [{}] -> [{}]",
                    have.join(","),
                    want.join(",")
                ));
                args.extend(["--groups".into(), want.join(",")]);
            }
        }
        if let Some(want) = &self.home {
            if *want != u.home {
                why.push(format!("home {:?} -> {want:?}", u.home));
                args.extend(["--home".into(), want.clone()]);
            }
        }
        if let Some(want) = &self.shell {
            if *want != u.shell {
                why.push(format!("shell {:?} -> {want:?}", u.shell));
                args.extend(["--shell".into(), want.clone()]);
            }
        }
        if why.is_empty() {
            return Ok(Plan::InState);
        }
        args.push(self.name.clone());
        Ok(Plan::Run {
            tool: "usermod",
            args,
            why: format!("change {}", why.join(", ")),
        })
    }
}

#[async_trait::async_trait]
impl Resource for User {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        watch_files(&self.id, &self.files, w).await
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        super::check_apply(&self.id, "user", ctx, || self.plan()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, Files) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("group"),
            "root:x:0:\nalice:x:1000:\nsudo:x:27:alice\nweb:x:33:\n",
        )
        .unwrap();
        let f = Files::new(t.path());
        (t, f)
    }

    fn run_of(f: &Files, spec: ResSpec) -> Option<(String, Vec<String>)> {
        match parse(&spec, f.clone()).unwrap().plan().unwrap() {
            Plan::InState => None,
            Plan::Run { tool, args, .. } => Some((tool.to_string(), args)),
        }
    }

    #[test]
    fn plans_the_smallest_change() {
        let (_t, f) = files();
        let u = |n: &str| ResSpec::new("user", n);
        assert_eq!(run_of(&f, u("alice")), None);
        assert_eq!(
            run_of(&f, u("alice").param("uid", 1000i64).param("group", "alice")),
            None
        );
        assert_eq!(run_of(&f, u("alice").param("groups", vec!["sudo"])), None);
        assert_eq!(
            run_of(
                &f,
                u("alice")
                    .param("shell", "/bin/zsh")
                    .param("groups", vec!["web", "sudo"])
            ),
            Some((
                "usermod".into(),
                vec!["--groups", "sudo,web", "--shell", "/bin/zsh", "alice"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            ))
        );
        assert_eq!(
            run_of(&f, u("bob").param("uid", 1001i64).param("system", true)),
            Some((
                "useradd".into(),
                vec!["--uid", "1001", "--system", "bob"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            ))
        );
        assert_eq!(
            run_of(&f, u("alice").param("state", "absent")),
            Some(("userdel".into(), vec!["alice".to_string()]))
        );
        assert_eq!(run_of(&f, u("bob").param("state", "absent")), None);
        // A group of the user's name exists: the new user joins it.
        assert_eq!(run_of(&f, u("web")).unwrap().1, ["--gid", "web", "web"]);
        let e = parse(&u("bob").param("uid", 1000i64), f.clone())
            .unwrap()
            .plan()
            .err()
            .unwrap();
        assert!(e.message.contains("\"alice\""), "{e}");
        assert_eq!(
            run_of(
                &f,
                u("bob")
                    .param("uid", 1000i64)
                    .param("allowduplicateuid", true)
            )
            .unwrap()
            .1[0],
            "--non-unique"
        );
    }

    #[test]
    fn refuses_contradictions() {
        let b = |s: ResSpec| build(&s).err().map(|e| e.field.unwrap_or_default());
        let u = || ResSpec::new("user", "carol");
        assert_eq!(
            b(u().param("gid", 5i64).param("group", "x")).as_deref(),
            Some("group")
        );
        assert_eq!(b(u().param("shell", "bash")).as_deref(), Some("shell"));
        assert_eq!(
            b(u().param("state", "absent").param("uid", 5i64)).as_deref(),
            Some("uid")
        );
        assert_eq!(
            b(u().param("groups", vec!["Bad Group"])).as_deref(),
            Some("groups")
        );
        assert!(build(&ResSpec::new("user", "9lives")).is_err());
    }

    #[test]
    fn edges_follow_the_state() {
        let a = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("user", "alice")
                .param("group", "staff")
                .param("groups", vec!["sudo"]),
        );
        assert_eq!(a.provides, ["user:alice"]);
        assert_eq!(a.requires, ["group:staff", "group:sudo"]);
        let b = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("user", "alice")
                .param("state", "absent")
                .param("groups", vec!["sudo"]),
        );
        assert_eq!(b.provides, ["members-gone:sudo"]);
        assert!(b.requires.is_empty());
    }
}
