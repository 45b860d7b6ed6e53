//! `line`: a line (or a block of consecutive lines) present in or absent from a file, as
//! mgmt's `line`: `file` (absolute), `state` (`exists` | `absent`), `content` (the lines; empty:
//! nothing to do).
//!
//! The check looks for `content`'s lines as consecutive lines of the file. Adding appends them
//! (after a newline when the file does not end with one: mgmt would glue them to the last
//! line); removing takes out every occurrence. Either way the file is rewritten atomically
//! with its mode and owner kept (a new file gets 0644). The watch is the shared inotify
//! watcher, so a line removed behind tend's back is put back at once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type};

use crate::fswatch;
use crate::params::{field_err, Params};

/// The `line` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        KindSchema::new("line")
            .field(Field::new(
                "file",
                Type::Str,
                "the absolute path of the file",
            ))
            .field(
                Field::new("state", Type::Str, "\"exists\" or \"absent\"")
                    .allowed(&["exists", "absent"]),
            )
            .field(
                Field::new(
                    "content",
                    Type::Str,
                    "the line, or lines, to have in the file or not (empty: nothing to do)",
                )
                .default_value(""),
            )
    })
}

/// After the `file` that manages the same file, and the directory it is in.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let Some(f) = spec.params.get("file").and_then(|v| v.as_str()) else {
        return;
    };
    out.requires(&format!("file:{f}"));
    if let Some(dir) = Path::new(f).parent().filter(|d| *d != Path::new("/")) {
        out.requires(&format!("file:{}/", dir.display()));
    }
}

/// Builds a `line`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let file = p
        .opt_str("file")?
        .ok_or_else(|| field_err("file", "is required (the absolute path of the file)"))?;
    if !file.starts_with('/') {
        return Err(field_err("file", format!("must be absolute: {file:?}")));
    }
    if file.ends_with('/') {
        return Err(field_err(
            "file",
            format!("must not end with a slash: {file:?}"),
        ));
    }
    let state = p
        .opt_str("state")?
        .ok_or_else(|| field_err("state", "is required: \"exists\" or \"absent\""))?;
    let content = p.str("content")?;
    Ok(Box::new(Line {
        id: format!("line[{}]", spec.name),
        file: Arc::from(PathBuf::from(file).as_path()),
        present: state == "exists",
        lines: if content.is_empty() {
            Vec::new()
        } else {
            content
                .strip_suffix('\n')
                .unwrap_or(&content)
                .split('\n')
                .map(str::to_string)
                .collect()
        },
    }))
}

struct Line {
    id: String,
    file: Arc<Path>,
    /// `state => "exists"`.
    present: bool,
    /// `content`'s lines (empty: nothing to do).
    lines: Vec<String>,
}

/// Where `block` starts as consecutive lines of `lines`, every occurrence.
fn occurrences(lines: &[&str], block: &[String]) -> Vec<usize> {
    if block.is_empty() || block.len() > lines.len() {
        return Vec::new();
    }
    (0..=lines.len() - block.len())
        .filter(|&i| {
            lines[i..i + block.len()]
                .iter()
                .zip(block)
                .all(|(a, b)| a == b)
        })
        .collect()
}

impl Line {
    fn read(&self) -> Result<Option<(String, std::fs::Metadata)>, ResError> {
        match std::fs::read(&self.file) {
            Ok(b) => {
                let meta = std::fs::metadata(&self.file)
                    .map_err(|e| ResError::io("reading", &self.file, e))?;
                let text = String::from_utf8(b).map_err(|_| {
                    ResError::new(format!(
                        "{}: {} is not text (UTF-8)",
                        self.id,
                        self.file.display()
                    ))
                })?;
                Ok(Some((text, meta)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ResError::io("reading", &self.file, e)),
        }
    }

    /// The file's new content, or `None` when it is in state.
    fn wanted(&self, old: Option<&str>) -> Option<String> {
        let text = old.unwrap_or("");
        let lines: Vec<&str> = text.lines().collect();
        let found = occurrences(&lines, &self.lines);
        match (self.present, found.is_empty()) {
            (true, false) | (false, true) => None,
            (true, true) => {
                let mut out = text.to_string();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                for l in &self.lines {
                    out.push_str(l);
                    out.push('\n');
                }
                Some(out)
            }
            (false, false) => {
                let mut keep = Vec::with_capacity(lines.len());
                let mut i = 0;
                while i < lines.len() {
                    if found.contains(&i) {
                        i += self.lines.len();
                    } else {
                        keep.push(lines[i]);
                        i += 1;
                    }
                }
                let mut out = keep.join("\n");
                if !keep.is_empty() && text.ends_with('\n') {
                    out.push('\n');
                }
                Some(out)
            }
        }
    }
}

#[async_trait::async_trait]
impl Resource for Line {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_beside(&self.file);
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let path = self.file.clone();
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

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        if self.lines.is_empty() {
            return Ok(Checked::InState);
        }
        let old = self.read()?;
        let Some(new) = self.wanted(old.as_ref().map(|(t, _)| t.as_str())) else {
            return Ok(Checked::InState);
        };
        let verb = if self.present { "add" } else { "remove" };
        if !ctx.apply {
            tracing::info!(resource = %self.id, "would {verb} {} line(s) in {}", self.lines.len(), self.file.display());
            return Ok(Checked::Changed);
        }
        let (mode, owner) = match &old {
            Some((_, m)) => (m.mode() & 0o7777, (Some(m.uid()), Some(m.gid()))),
            None => (0o644, (None, None)),
        };
        crate::file::write_atomic(&self.file, new.as_bytes(), mode, owner)?;
        tracing::info!(resource = %self.id, "{verb}ed {} line(s) in {}", self.lines.len(), self.file.display());
        Ok(Checked::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(present: bool, content: &str) -> Line {
        Line {
            id: "line[t]".into(),
            file: Arc::from(Path::new("/nonexistent")),
            present,
            lines: content.split('\n').map(str::to_string).collect(),
        }
    }

    #[test]
    fn adds_and_removes_blocks() {
        let add = line(true, "b");
        assert_eq!(add.wanted(Some("a\nb\nc\n")), None);
        assert_eq!(add.wanted(Some("a\n")).as_deref(), Some("a\nb\n"));
        assert_eq!(
            add.wanted(Some("a")).as_deref(),
            Some("a\nb\n"),
            "glued lines are not made"
        );
        assert_eq!(add.wanted(None).as_deref(), Some("b\n"));
        assert_eq!(
            add.wanted(Some("ab\n")).as_deref(),
            Some("ab\nb\n"),
            "whole lines only"
        );

        let rm = line(false, "b");
        assert_eq!(rm.wanted(Some("a\nc\n")), None);
        assert_eq!(rm.wanted(Some("a\nb\nc\nb\n")).as_deref(), Some("a\nc\n"));
        assert_eq!(rm.wanted(Some("b\n")).as_deref(), Some(""));
        assert_eq!(rm.wanted(Some("a\nb")).as_deref(), Some("a"));

        let block = line(true, "x\ny");
        assert_eq!(
            block.wanted(Some("x\nz\ny\n")).as_deref(),
            Some("x\nz\ny\nx\ny\n")
        );
        assert_eq!(block.wanted(Some("w\nx\ny\n")), None);
        let rmb = line(false, "x\ny");
        assert_eq!(rmb.wanted(Some("x\ny\nx\nz\n")).as_deref(), Some("x\nz\n"));
    }
}
