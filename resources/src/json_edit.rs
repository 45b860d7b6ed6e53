//! `json:edit`: declarative edits of a JSON document, as mgmt's kind of that name. The store
//! is the resource name unless `store` is set: an absolute path or a `file:///` URI (a local
//! file), or an `etcd:///<key>` URI (a global string of the World, the one `kv` with
//! `mapped: false` writes). `edits` are jq-like assignments and deletions, applied in order
//! to the document and written at once:
//!
//! ```text
//! .server01.state = "ready"
//! .["server-01"]["state"] = {"enabled": true}
//! del(.server01.legacy)
//! ```
//!
//! A dot key is `[A-Za-z_][A-Za-z0-9_]*`, a bracket key any non-empty JSON string; the value
//! is one JSON value. Assignments create missing objects on the way; deleting what is not
//! there is in state. The check applies the edits to the document read and compares values,
//! so formatting and key order alone are no change; a change rewrites the whole document
//! (keys sorted, tab-indented, a final newline). A file is rewritten atomically with its mode
//! and owner kept; a missing file reads as `{}` (a new file is 0644), an empty one is not JSON. Edits of one
//! store are serialised in this process. The watch is the shared inotify watcher on the file
//! (or the World's watch of the key), so an edit undone behind tend's back is redone at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use serde_json::{Map, Value as Json};
use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::world::{ResourceWorld, WorldError};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};

/// The kind's name, as mgmt registers it.
pub(crate) const KIND: &str = "json:edit";

/// The `json:edit` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new(KIND)
            .field(
                Field::new(
                    "store",
                    Type::Str,
                    "where the document is (default: the resource name): an absolute path, file:///path or etcd:///key",
                )
                .default_value(""),
            )
            .field(Field::new(
                "edits",
                Type::List(Box::new(Type::Str)),
                "the edits, in order: `.a.b = <json>`, `.[\"k\"] = <json>`, `del(.a.b)`",
            ))
    })
}

/// After the `file` that manages the same file, and the directory it is in.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let store = spec
        .params
        .get("store")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(&spec.name);
    if let Ok(Store::File(f)) = parse_store(store) {
        out.requires(&format!("file:{}", f.display()));
        if let Some(dir) = f.parent().filter(|d| *d != Path::new("/")) {
            out.requires(&format!("file:{}/", dir.display()));
        }
    }
}

/// Where the document is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Store {
    File(PathBuf),
    Etcd(String),
}

impl Store {
    fn lock_key(&self) -> String {
        match self {
            Store::File(p) => format!("file://{}", p.display()),
            Store::Etcd(k) => format!("etcd:///{k}"),
        }
    }
}

/// Parses a store handle (mgmt's rules: no host, query or fragment).
fn parse_store(h: &str) -> Result<Store, String> {
    if h.is_empty() {
        return Err("the store is empty".into());
    }
    if h.starts_with('/') {
        return file_path(h);
    }
    let (scheme, rest) = h
        .split_once("://")
        .ok_or_else(|| format!("{h:?} is neither an absolute path nor a file:// or etcd:// URI"))?;
    if rest.contains(['?', '#']) {
        return Err(format!("{h:?}: a query or fragment is not supported"));
    }
    let path = match rest.find('/') {
        Some(0) => rest,
        Some(_) | None => {
            return Err(format!(
                "{h:?}: a host is not supported (use {scheme}:///...)"
            ))
        }
    };
    match scheme {
        "file" => file_path(path),
        "etcd" => {
            let key = path.trim_start_matches('/');
            if key.is_empty() {
                return Err(format!("{h:?}: the key is empty"));
            }
            Ok(Store::Etcd(key.to_string()))
        }
        s => Err(format!("{h:?}: unknown store scheme {s:?} (file or etcd)")),
    }
}

fn file_path(p: &str) -> Result<Store, String> {
    if p.ends_with('/') {
        return Err(format!("{p:?} is a directory (ends with a slash)"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain `..`"));
    }
    Ok(Store::File(PathBuf::from(p)))
}

/// One parsed edit.
#[derive(Clone, Debug, PartialEq)]
enum Edit {
    Set(Vec<String>, Json),
    Del(Vec<String>),
}

/// A cursor over an edit's text.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn take(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// `.key` / `.["key"]`, then more `.key` or `["key"]`.
    fn path(&mut self) -> Result<Vec<String>, String> {
        if !self.take(b'.') {
            return Err("an edit starts with `.`".into());
        }
        let mut keys = Vec::new();
        loop {
            self.space();
            let key = if self.peek() == Some(b'[') {
                self.bracket()?
            } else {
                self.ident()?
            };
            keys.push(key);
            self.space();
            match self.peek() {
                Some(b'.') => self.pos += 1,
                Some(b'[') => {}
                _ => return Ok(keys),
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        let start = self.pos;
        let b = self.s.as_bytes();
        if !b
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            return Err(format!(
                "expected a key (letters, digits, `_`) or `[\"...\"]` at column {}",
                self.pos + 1
            ));
        }
        while b
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.pos += 1;
        }
        Ok(self.s[start..self.pos].to_string())
    }

    fn bracket(&mut self) -> Result<String, String> {
        self.take(b'[');
        self.space();
        if self.peek() != Some(b'"') {
            return Err("a bracket key is a JSON string".into());
        }
        let mut de = serde_json::Deserializer::from_str(&self.s[self.pos..]).into_iter::<String>();
        let key = match de.next() {
            Some(Ok(k)) => k,
            Some(Err(e)) => return Err(format!("a bracket key is a JSON string: {e}")),
            None => return Err("an unterminated bracket key".into()),
        };
        self.pos += de.byte_offset();
        if key.is_empty() {
            return Err("a key is empty".into());
        }
        self.space();
        if !self.take(b']') {
            return Err("expected `]` after a bracket key".into());
        }
        Ok(key)
    }
}

/// Parses one edit.
fn parse_edit(text: &str) -> Result<Edit, String> {
    let mut p = Parser {
        s: text.trim(),
        pos: 0,
    };
    if p.s.starts_with("del") {
        p.pos = 3;
        p.space();
        if !p.take(b'(') {
            return Err("expected `(` after `del`".into());
        }
        p.space();
        let keys = p.path()?;
        p.space();
        if !p.take(b')') {
            return Err("expected `)` after the path".into());
        }
        p.space();
        if !p.done() {
            return Err("text after `del(...)`".into());
        }
        return Ok(Edit::Del(keys));
    }
    let keys = p.path()?;
    p.space();
    if !p.take(b'=') {
        return Err("expected `=` after the path".into());
    }
    p.space();
    if p.done() {
        return Err("no JSON value after `=`".into());
    }
    let value: Json = serde_json::from_str(&p.s[p.pos..])
        .map_err(|e| format!("the value is not one JSON value: {e}"))?;
    Ok(Edit::Set(keys, value))
}

/// Applies one edit to the document.
fn apply_edit(root: &mut Map<String, Json>, edit: &Edit) -> Result<(), String> {
    let (keys, del) = match edit {
        Edit::Set(k, _) => (k, false),
        Edit::Del(k) => (k, true),
    };
    let (leaf, path) = keys.split_last().expect("a path has a key");
    let mut obj = root;
    for k in path {
        if del && !obj.contains_key(k) {
            return Ok(());
        }
        obj = match obj
            .entry(k.clone())
            .or_insert_with(|| Json::Object(Map::new()))
        {
            Json::Object(m) => m,
            _ => return Err(format!("`{k}` is not a JSON object")),
        };
    }
    match edit {
        Edit::Set(_, v) => {
            obj.insert(leaf.clone(), v.clone());
        }
        Edit::Del(_) => {
            obj.remove(leaf);
        }
    }
    Ok(())
}

/// Builds a `json:edit`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let handle = match p.str("store")? {
        s if s.is_empty() => spec.name.clone(),
        s => s,
    };
    let store = parse_store(&handle).map_err(|e| {
        if p.is_set("store") {
            field_err("store", e)
        } else {
            ResError::new(format!("{KIND}[{}]: the name is the store: {e}", spec.name))
        }
    })?;
    if !p.is_set("edits") {
        return Err(field_err("edits", "is required (at least one edit)"));
    }
    let texts = p.strs("edits")?;
    if texts.is_empty() {
        return Err(field_err("edits", "is empty (at least one edit)"));
    }
    let edits = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            parse_edit(t).map_err(|e| field_err("edits", format!("edit {i} ({t:?}): {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Store::Etcd(_) = &store {
        if p.get("edits")
            .is_some_and(tend_model::secrets::holds_secret)
        {
            return Err(field_err(
                "edits",
                "holds a secret (from `secret.*`), and secrets never go to the World",
            ));
        }
    }
    Ok(Box::new(JsonEdit {
        id: format!("{KIND}[{}]", spec.name),
        store,
        texts,
        edits,
        world: Default::default(),
    }))
}

struct JsonEdit {
    id: String,
    store: Store,
    texts: Vec<String>,
    edits: Vec<Edit>,
    world: crate::worldcell::WorldCell,
}

/// One lock per store in this process.
fn store_lock(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut m = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    m.entry(key.to_string()).or_default().clone()
}

/// The document as tend writes it: keys sorted, one tab per level, a final newline.
fn render(doc: &Map<String, Json>) -> Vec<u8> {
    let pretty = serde_json::to_string_pretty(doc).expect("a JSON value serialises");
    // serde_json indents with two spaces per level; a JSON string never spans lines, so the
    // leading spaces of a line are all indentation.
    let mut out = String::with_capacity(pretty.len() + 1);
    for line in pretty.lines() {
        let body = line.trim_start_matches(' ');
        let levels = (line.len() - body.len()) / 2;
        out.extend(std::iter::repeat_n('\t', levels));
        out.push_str(body);
        out.push('\n');
    }
    out.into_bytes()
}

impl JsonEdit {
    fn world(&self) -> Result<Arc<dyn ResourceWorld>, ResError> {
        self.world.get(&self.id)
    }

    /// Parses a stored document. An empty one is an error, as any text that is not JSON: a
    /// file caught between another writer's truncation and its write must not be taken for
    /// `{}` and overwritten (that writer's next event has it checked again).
    fn parse(&self, text: &str, what: &str) -> Result<Map<String, Json>, ResError> {
        match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(m)) => Ok(m),
            Ok(_) => Err(ResError::new(format!(
                "{}: the document in {what} is not a JSON object",
                self.id
            ))),
            Err(e) => Err(ResError::new(format!(
                "{}: {what} is not JSON: {e}",
                self.id
            ))),
        }
    }

    /// The document, and the file's mode and owner when it is a file that exists.
    async fn read(&self) -> Result<(Map<String, Json>, Option<std::fs::Metadata>), ResError> {
        match &self.store {
            Store::File(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(b) => {
                        let m = std::fs::metadata(&path)
                            .map_err(|e| ResError::io("reading", &path, e))?;
                        Ok(Some((b, m)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ResError::io("reading", &path, e)),
                })
                .await
                .map_err(|e| ResError::new(format!("{}: reading: {e}", self.id)))??;
                let Some((bytes, meta)) = read else {
                    return Ok((Map::new(), None));
                };
                let Store::File(path) = &self.store else {
                    unreachable!()
                };
                let text = String::from_utf8(bytes).map_err(|_| {
                    ResError::new(format!(
                        "{}: {} is not text (UTF-8)",
                        self.id,
                        path.display()
                    ))
                })?;
                Ok((self.parse(&text, &path.display().to_string())?, Some(meta)))
            }
            Store::Etcd(key) => {
                let w = self.world()?;
                match w.str_get(key).await {
                    Ok(v) => Ok((self.parse(&v, &format!("key {key:?}"))?, None)),
                    Err(WorldError::NotFound { .. }) => Ok((Map::new(), None)),
                    Err(e) => Err(ResError::new(format!(
                        "{}: reading key {key:?}: {e}",
                        self.id
                    ))),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Resource for JsonEdit {
    async fn init(&self, ctx: &InitCtx) -> Result<(), ResError> {
        match &self.store {
            Store::File(p) => crate::file::sweep_beside(p),
            Store::Etcd(_) => {
                self.world.init(ctx, &self.id, "to keep the document in")?;
            }
        }
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        match &self.store {
            Store::File(p) => {
                let path: Arc<Path> = Arc::from(p.as_path());
                let w2 = w.clone();
                let mut sub = tokio::task::spawn_blocking(move || fswatch::subscribe(&path, w2))
                    .await
                    .map_err(|e| ResError::new(format!("{}: watching: {e}", self.id)))??;
                w.running();
                Err(ResError::new(format!(
                    "{}: {}",
                    self.id,
                    sub.failed().await
                )))
            }
            Store::Etcd(key) => {
                let mut changes = self.world()?.str_watch(key);
                let _ = changes.next().await;
                w.running();
                while changes.next().await.is_some() {
                    w.event();
                }
                Err(ResError::new(format!(
                    "{}: the World's watch of key {key:?} ended",
                    self.id
                )))
            }
        }
    }

    fn stop_at_exit(&self) -> bool {
        matches!(self.store, Store::Etcd(_))
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let lock = store_lock(&self.store.lock_key());
        let _held = lock.lock().await;
        let (before, meta) = self.read().await?;
        let mut doc = before.clone();
        for (i, e) in self.edits.iter().enumerate() {
            apply_edit(&mut doc, e).map_err(|why| {
                ResError::new(format!(
                    "{}: edit {i} ({:?}): {why}",
                    self.id, self.texts[i]
                ))
            })?;
        }
        if doc == before {
            return Ok(Checked::InState);
        }
        let where_ = match &self.store {
            Store::File(p) => p.display().to_string(),
            Store::Etcd(k) => format!("key {k:?}"),
        };
        if !ctx.apply {
            tracing::info!(resource = %self.id, "would apply {} edit(s) to {where_}", self.edits.len());
            return Ok(Checked::Changed);
        }
        let out = render(&doc);
        match &self.store {
            Store::File(path) => {
                let (mode, owner) = crate::file::kept_mode_owner(meta.as_ref());
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    crate::file::write_atomic(&path, &out, mode, owner)
                })
                .await
                .map_err(|e| ResError::new(format!("{}: writing: {e}", self.id)))??;
            }
            Store::Etcd(key) => {
                let text = String::from_utf8(out).expect("serde_json writes UTF-8");
                self.world()?
                    .str_set(key, &text)
                    .await
                    .map_err(|e| ResError::new(format!("{}: writing key {key:?}: {e}", self.id)))?;
            }
        }
        for t in &self.texts {
            tracing::info!(resource = %self.id, "applied edit: {t}");
        }
        Ok(Checked::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(doc: &str, edits: &[&str]) -> Result<Json, String> {
        let mut m = match serde_json::from_str(doc).unwrap() {
            Json::Object(m) => m,
            _ => panic!(),
        };
        for e in edits {
            apply_edit(&mut m, &parse_edit(e)?)?;
        }
        Ok(Json::Object(m))
    }

    #[test]
    fn parses_and_applies_edits() {
        let j = |s: &str| serde_json::from_str::<Json>(s).unwrap();
        assert_eq!(
            run(r#"{"a":1}"#, &[r#".s01.state = "ready""#]).unwrap(),
            j(r#"{"a":1,"s01":{"state":"ready"}}"#)
        );
        assert_eq!(
            run(
                r#"{"server-01":{"x":1}}"#,
                &[
                    r#".["server-01"]["state"] = {"on": true}"#,
                    "del(.[\"server-01\"].x)"
                ]
            )
            .unwrap(),
            j(r#"{"server-01":{"state":{"on":true}}}"#)
        );
        assert_eq!(
            run(r#"{"a":1}"#, &["del(.b.c)", " del( .a ) "]).unwrap(),
            j("{}")
        );
        assert_eq!(
            parse_edit(r#"del(.services["api.example.com"].labels.legacy)"#).unwrap(),
            Edit::Del(vec![
                "services".into(),
                "api.example.com".into(),
                "labels".into(),
                "legacy".into()
            ])
        );
        // A batch that comes back to where it started is no change.
        assert_eq!(
            run(
                r#"{"s":{"state":"ready"}}"#,
                &[".s.temporary = true", "del(.s.temporary)"]
            )
            .unwrap(),
            j(r#"{"s":{"state":"ready"}}"#)
        );
        assert!(run(r#"{"a":1}"#, &[".a.b = 2"])
            .unwrap_err()
            .contains("`a` is not a JSON object"));
        for bad in [
            "a = 1",
            ".a",
            ".a = ",
            ".a = 1 2",
            ".1a = 1",
            ".[\"\"] = 1",
            ".[a] = 1",
            "del(.a",
            "del(.a) x",
            ".[\"a\" = 1",
            "del()",
            "del(.server) = null",
            "del(.servers[0])",
        ] {
            assert!(parse_edit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_with_tabs_and_sorted_keys() {
        let Json::Object(m) =
            serde_json::from_str(r#"{"b":{"y":[1,"  x"],"x":{}},"a":"c"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(render(&m)).unwrap(),
            "{\n\t\"a\": \"c\",\n\t\"b\": {\n\t\t\"x\": {},\n\t\t\"y\": [\n\t\t\t1,\n\t\t\t\"  x\"\n\t\t]\n\t}\n}\n"
        );
    }

    #[test]
    fn parses_stores() {
        assert_eq!(
            parse_store("/a/b.json"),
            Ok(Store::File("/a/b.json".into()))
        );
        assert_eq!(
            parse_store("file:///a/b.json"),
            Ok(Store::File("/a/b.json".into()))
        );
        assert_eq!(
            parse_store("etcd:///magic/hosts"),
            Ok(Store::Etcd("magic/hosts".into()))
        );
        for bad in [
            "",
            "a.json",
            "file://host/a",
            "etcd:///",
            "http:///x",
            "file:///a?x",
            "etcd://",
            "etcd://?key=foo%2Fhosts",
            "/a/",
        ] {
            assert!(parse_store(bad).is_err(), "{bad}");
        }
    }
}
