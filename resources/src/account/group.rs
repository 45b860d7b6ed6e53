//! `group`: a local group, present with a gid or absent.

use std::sync::OnceLock;

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use super::db::Files;
use super::{check_name, watch_files, Plan};
use crate::params::{field_err, Params};

/// The `group` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("group")
            .field(
                Field::new("state", Type::Str, "\"exists\" or \"absent\"")
                    .default_value("exists")
                    .allowed(&["exists", "absent"]),
            )
            .field(
                Field::new(
                    "gid",
                    Type::Int,
                    "the group id (unset: any, chosen at creation)",
                )
                .range(0, u32::MAX as i128 - 1),
            )
            .field(
                Field::new(
                    "system",
                    Type::Bool,
                    "create it as a system group (a gid from the system range; creation only)",
                )
                .default_value(false),
            )
    })
}

struct Group {
    id: String,
    name: String,
    exists: bool,
    gid: Option<u32>,
    system: bool,
    files: Files,
}

/// Builds a `group` (validates only).
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    build_with(spec, Files::system())
}

pub(super) fn build_with(spec: &ResSpec, files: Files) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    check_name("group", None, &spec.name)?;
    let exists = p.str("state")? == "exists";
    let gid = p.opt_int("gid")?.map(|g| g as u32);
    if !exists && (gid.is_some() || p.bool("system")?) {
        let f = if gid.is_some() { "gid" } else { "system" };
        return Err(field_err(f, "means nothing for an absent group"));
    }
    Ok(Box::new(Group {
        id: format!("group[{}]", spec.name),
        name: spec.name.clone(),
        exists,
        gid,
        system: p.bool("system")?,
        files,
    }))
}

/// `group` provides `group:<name>` when it should exist; when it should be absent it waits for
/// the `user`s named after it to be removed first (`members-gone:<name>`).
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn tend_engine::AutoEdgeSink) {
    let absent = spec.params.get("state").and_then(|v| v.as_str()) == Some("absent");
    if absent {
        out.requires(&format!("members-gone:{}", spec.name));
    } else {
        out.provides(&format!("group:{}", spec.name));
    }
}

impl Group {
    fn plan(&self) -> Result<Plan, ResError> {
        let db = self.files.read()?;
        let have = db.group(&self.name);
        if !self.exists {
            return Ok(match have {
                None => Plan::InState,
                Some(g) => Plan::Run {
                    tool: "groupdel",
                    args: vec![self.name.clone()],
                    why: format!("remove it (gid {})", g.gid),
                },
            });
        }
        if let Some(gid) = self.gid {
            if let Some(other) = db.group_by_gid(gid).filter(|g| g.name != self.name) {
                return Err(field_err(
                    "gid",
                    format!(
                        "{}: gid {gid} belongs to group {:?} already",
                        self.id, other.name
                    ),
                ));
            }
        }
        Ok(match have {
            None => {
                let mut args = Vec::new();
                if let Some(g) = self.gid {
                    args.extend(["--gid".to_string(), g.to_string()]);
                }
                if self.system {
                    args.push("--system".into());
                }
                args.push(self.name.clone());
                Plan::Run {
                    tool: "groupadd",
                    args,
                    why: "create it".into(),
                }
            }
            Some(g) => match self.gid {
                Some(want) if want != g.gid => Plan::Run {
                    tool: "groupmod",
                    args: vec!["--gid".into(), want.to_string(), self.name.clone()],
                    why: format!("change its gid {} -> {want}", g.gid),
                },
                _ => Plan::InState,
            },
        })
    }
}

#[async_trait::async_trait]
impl Resource for Group {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        watch_files(&self.id, &self.files, w).await
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        super::check_apply(&self.id, "group", ctx, || self.plan()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(group: &str) -> (tempfile::TempDir, Files) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("group"), group).unwrap();
        let f = Files::new(t.path());
        (t, f)
    }

    #[tokio::test]
    async fn checks_against_the_group_file() {
        let (_t, f) = files("root:x:0:\nstaff:x:50:\n");
        let dry = CheckCtx {
            apply: false,
            refresh: false,
        };
        let check = |spec: ResSpec| {
            let f = f.clone();
            async move { build_with(&spec, f).unwrap().check_apply(dry).await }
        };
        let g = |n: &str| ResSpec::new("group", n);
        assert_eq!(check(g("staff")).await.unwrap(), Checked::InState);
        assert_eq!(
            check(g("staff").param("gid", 50i64)).await.unwrap(),
            Checked::InState
        );
        assert_eq!(
            check(g("staff").param("gid", 51i64)).await.unwrap(),
            Checked::Changed
        );
        assert_eq!(check(g("new")).await.unwrap(), Checked::Changed);
        assert_eq!(
            check(g("new").param("state", "absent")).await.unwrap(),
            Checked::InState
        );
        assert_eq!(
            check(g("staff").param("state", "absent")).await.unwrap(),
            Checked::Changed
        );
        let e = check(g("new").param("gid", 0i64)).await.unwrap_err();
        assert_eq!(e.field.as_deref(), Some("gid"));
        assert!(e.message.contains("\"root\""), "{e}");
    }

    #[test]
    fn refuses_what_means_nothing() {
        let e = build(
            &ResSpec::new("group", "x")
                .param("state", "absent")
                .param("gid", 5i64),
        )
        .err()
        .unwrap();
        assert_eq!(e.field.as_deref(), Some("gid"));
        assert!(build(&ResSpec::new("group", "Bad Name")).is_err());
    }

    #[test]
    fn edges_follow_the_state() {
        let a = tend_engine::AutoEdges::of(autoedges, &ResSpec::new("group", "web"));
        assert_eq!(a.provides, ["group:web"]);
        let b = tend_engine::AutoEdges::of(
            autoedges,
            &ResSpec::new("group", "web").param("state", "absent"),
        );
        assert_eq!(b.requires, ["members-gone:web"]);
    }
}
