//! `json:edit` against real files (and an in-memory World for `etcd:///` stores): edits that
//! keep the rest of the document, a dry run, formatting that is no change, mode and owner
//! kept, bad specs, and edits undone or the file removed behind tend's back, redone by the
//! engine at once.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use tend_engine::{Checked, VertexState};
use tend_model::world::{Changes, StrWorld, WorldError};
use tend_model::{GraphSpec, ResSpec, Value};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

fn edit(store: &str, edits: &[&str]) -> ResSpec {
    ResSpec::new("json:edit", store).param(
        "edits",
        Value::List(edits.iter().map(|e| Value::Str(e.to_string())).collect()),
    )
}

fn read(p: &std::path::Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test]
async fn edits_a_file_keeping_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("hosts.json");
    let orig = r#"{"zeta": [1, 2.5, "x"], "server01": {"legacy": true, "port": 80}}"#;
    std::fs::write(&f, orig).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1), Some(2)).unwrap();
    let edits = [
        r#".server01.state = "ready""#,
        r#".["server-02"]["settings"] = {"enabled": true}"#,
        "del(.server01.legacy)",
    ];
    let r = build(edit(f.to_str().unwrap(), &edits));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), orig, "a dry run");
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    let want = json!({
        "zeta": [1, 2.5, "x"],
        "server01": {"port": 80, "state": "ready"},
        "server-02": {"settings": {"enabled": true}},
    });
    assert_eq!(read(&f), want);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "{\n\t\"server-02\": {\n\t\t\"settings\": {\n\t\t\t\"enabled\": true\n\t\t}\n\t},\n\t\"server01\": {\n\t\t\"port\": 80,\n\t\t\"state\": \"ready\"\n\t},\n\t\"zeta\": [\n\t\t1,\n\t\t2.5,\n\t\t\"x\"\n\t]\n}\n"
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1, 2));

    // The same document written compactly, keys in another order: no change.
    std::fs::write(&f, serde_json::to_string(&want).unwrap()).unwrap();
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // A missing file reads as `{}` and is created 0644.
    let new = t.path().join("new.json");
    let n = build(edit(&format!("file://{}", new.display()), &[".a.b = 1"]));
    let rm = build(edit(new.to_str().unwrap(), &["del(.a)"]));
    assert_eq!(apply(&rm).await.unwrap(), Checked::InState);
    assert!(!new.exists());
    assert_eq!(apply(&n).await.unwrap(), Checked::Changed);
    assert_eq!(read(&new), json!({"a": {"b": 1}}));
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o7777, 0o644);

    // A document that is not an object, or not JSON, is an error naming the file.
    std::fs::write(&new, "[1]").unwrap();
    let e = apply(&n).await.unwrap_err().to_string();
    assert!(e.contains("not a JSON object"), "{e}");
    for bad in ["{", "", "\n"] {
        std::fs::write(&new, bad).unwrap();
        let e = apply(&n).await.unwrap_err().to_string();
        assert!(e.contains("new.json") && e.contains("not JSON"), "{e}");
    }
    // An edit through a value that is not an object.
    std::fs::write(&new, r#"{"a": 3}"#).unwrap();
    let e = apply(&n).await.unwrap_err().to_string();
    assert!(
        e.contains("edit 0") && e.contains("`a` is not a JSON object"),
        "{e}"
    );
}

#[test]
fn bad_specs_name_the_field() {
    let e = invalid(ResSpec::new("json:edit", "/tmp/x.json"));
    assert!(e.contains("`edits`") && e.contains("required"), "{e}");
    let e = invalid(edit("/tmp/x.json", &[]));
    assert!(e.contains("`edits`") && e.contains("empty"), "{e}");
    let e = invalid(edit("/tmp/x.json", &[".a = 1", ".b = nope"]));
    assert!(e.contains("`edits`") && e.contains("edit 1"), "{e}");
    let e = invalid(edit("x.json", &[".a = 1"]));
    assert!(e.contains("the name is the store"), "{e}");
    let e = invalid(edit("n", &[".a = 1"]).param("store", "http://h/x"));
    assert!(e.contains("`store`"), "{e}");
    let e = invalid(edit("n", &[".a = 1"]).param("store", "etcd:///"));
    assert!(e.contains("`store`") && e.contains("key is empty"), "{e}");
}

/// The engine redoes an edit undone behind its back, and recreates a removed file.
#[tokio::test]
async fn an_undone_edit_is_redone_at_once() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("conf.json");
    std::fs::write(&f, r#"{"keep": "me"}"#).unwrap();
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(edit(
        f.to_str().unwrap(),
        &[".managed.on = true", "del(.bad)"],
    ));
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    assert_eq!(read(&f), json!({"keep": "me", "managed": {"on": true}}));
    for (what, drift) in [
        (
            "edited",
            Some(r#"{"keep": "me", "managed": {"on": false}, "bad": 1}"#),
        ),
        ("removed", None),
    ] {
        let at = Instant::now();
        match drift {
            // Renamed into place, as editors do: a truncated file is an error, not `{}`.
            Some(d) => {
                let tmp = t.path().join("conf.json.new");
                std::fs::write(&tmp, d).unwrap();
                std::fs::rename(&tmp, &f).unwrap();
            }
            None => std::fs::remove_file(&f).unwrap(),
        }
        let want = match drift {
            Some(_) => json!({"keep": "me", "managed": {"on": true}}),
            None => json!({"managed": {"on": true}}),
        };
        loop {
            let now = std::fs::read_to_string(&f)
                .ok()
                .and_then(|t| serde_json::from_str::<Json>(&t).ok());
            if now.as_ref() == Some(&want) {
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "{what}: not repaired"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        eprintln!(
            "json:edit repair: {:.1} ms after the file was {what}",
            at.elapsed().as_secs_f64() * 1e3
        );
    }
    e.shutdown().await;
}

/// The World's global strings, in memory.
#[derive(Default)]
struct MemWorld {
    strings: Mutex<BTreeMap<String, String>>,
    changed: Mutex<Vec<futures::channel::mpsc::UnboundedSender<()>>>,
}

impl MemWorld {
    fn get(&self, k: &str) -> Option<String> {
        self.strings.lock().unwrap().get(k).cloned()
    }

    fn set(&self, k: &str, v: &str) {
        self.strings.lock().unwrap().insert(k.into(), v.into());
        self.changed
            .lock()
            .unwrap()
            .retain(|tx| tx.unbounded_send(()).is_ok());
    }
}

#[async_trait::async_trait]
impl StrWorld for MemWorld {
    async fn str_get(&self, key: &str) -> Result<String, WorldError> {
        self.get(key)
            .ok_or(WorldError::NotFound { key: key.into() })
    }
    async fn str_set(&self, key: &str, value: &str) -> Result<(), WorldError> {
        self.set(key, value);
        Ok(())
    }
    async fn str_del(&self, key: &str) -> Result<(), WorldError> {
        self.strings.lock().unwrap().remove(key);
        Ok(())
    }
    fn str_watch(&self, _key: &str) -> Changes {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let _ = tx.unbounded_send(());
        self.changed.lock().unwrap().push(tx);
        Box::pin(rx)
    }
    async fn strmap_get(&self, _key: &str) -> Result<BTreeMap<String, String>, WorldError> {
        Ok(BTreeMap::new())
    }
    async fn strmap_set(&self, _key: &str, _value: &str) -> Result<(), WorldError> {
        Ok(())
    }
    async fn strmap_del(&self, _key: &str) -> Result<(), WorldError> {
        Ok(())
    }
    fn strmap_watch(&self, _key: &str) -> Changes {
        Box::pin(futures::stream::pending())
    }
}

/// The scheduler is not this test's: every call says so.
#[async_trait::async_trait]
impl tend_model::world::SchedWorld for MemWorld {
    async fn sched_join(
        &self,
        _: &str,
        _: &tend_model::world::SchedOpts,
        _: &str,
        _: bool,
    ) -> Result<bool, WorldError> {
        Err(WorldError::Store(
            tend_model::world::StoreError::Unsupported("no scheduler in this test".into()),
        ))
    }
    async fn sched_withdraw(&self, _: &str, _: bool) -> Result<bool, WorldError> {
        Ok(false)
    }
    async fn sched_leave(&self, _: &str, _: &str) -> Result<(), WorldError> {
        Ok(())
    }
    async fn scheduled(&self, _: &str) -> Result<Vec<String>, WorldError> {
        Ok(Vec::new())
    }
    fn scheduled_watch(&self, _: &str) -> Changes {
        Box::pin(futures::stream::pending())
    }
}

/// An `etcd:///` store is a global string of the World; a change of it is redone.
#[tokio::test]
async fn an_etcd_store_is_a_world_string() {
    let world = Arc::new(MemWorld::default());
    world.set("magic/hosts", r#"{"h1": {"state": "old"}, "other": 1}"#);
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    e.set_world(world.clone());
    let mut g = GraphSpec::default();
    g.resources
        .push(edit("hosts", &[r#".h1.state = "ready""#]).param("store", "etcd:///magic/hosts"));
    e.swap(g).await.unwrap();
    let converged = |s: &tend_engine::Status| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    };
    wait_status(&e, "converged", 20, converged).await;
    let doc = || serde_json::from_str::<Json>(&world.get("magic/hosts").unwrap()).unwrap();
    assert_eq!(doc(), json!({"h1": {"state": "ready"}, "other": 1}));
    world.set("magic/hosts", r#"{"h1": {"state": "broken"}}"#);
    let at = Instant::now();
    while doc() != json!({"h1": {"state": "ready"}}) {
        assert!(at.elapsed() < Duration::from_secs(10), "not repaired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    e.shutdown().await;
}
