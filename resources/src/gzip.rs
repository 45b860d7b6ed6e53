//! `gzip`: a gzip-compressed copy of a file or of some text, as mgmt's kind of that name:
//! `path` (the `.gz` file, default the resource name), `input` (the file to compress; unset:
//! `content` is compressed), `content`, and `level` (`$const.res.gzip.level.*`: -1 default,
//! 0 none, 1 best speed ... 9 best compression).
//!
//! Compression is deterministic (no name and no time in the header), so the check compresses
//! the input again into `tar::SameAs`, which compares with the file on disk and stops at the
//! first difference: a change of the input, of `level`, or of the file itself is a change. The
//! file is written atomically (`file::write_atomic_with`, streamed), keeping an existing
//! file's mode and owner (a new one is 0644). The watch is the shared inotify watcher on the
//! file and the input.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use flate2::write::GzEncoder;
use flate2::Compression;
use tend_engine::{AutoEdgeSink, CheckCtx, Checked, InitCtx, ResError, Resource, Watcher};
use tend_model::{Constant, Field, KindSchema, ResSpec, Type, Value};

use crate::fswatch::{self, Target};
use crate::params::{field_err, Params};
use crate::tar::{check_file_path, SameAs};

/// mgmt's level constants (Go's `compress/gzip` values).
const LEVELS: [(&str, i64); 5] = [
    ("no_compression", 0),
    ("best_speed", 1),
    ("best_compression", 9),
    ("default_compression", -1),
    ("huffman_only", -2),
];

/// The `gzip` schema.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = KindSchema::new("gzip")
            .field(Field::new(
                "path",
                Type::Str,
                "the compressed file (default: the resource name), an absolute file path",
            ))
            .field(Field::new(
                "input",
                Type::Str,
                "the file to compress (absolute); unset: `content` is compressed",
            ))
            .field(
                Field::new("content", Type::Str, "the text to compress when `input` is unset")
                    .default_value(""),
            )
            .field(
                Field::new(
                    "level",
                    Type::Int,
                    "the compression level: $const.res.gzip.level.default_compression (-1), .no_compression (0), .best_speed (1) ... .best_compression (9)",
                )
                .default_value(-1i64),
            );
        s.constants = LEVELS
            .iter()
            .map(|(n, v)| Constant {
                param: "level".into(),
                name: (*n).into(),
                value: Value::Int(*v),
            })
            .collect();
        s
    })
}

/// After the `file`s of its input and its directory; provides its file.
pub(crate) fn autoedges(spec: &ResSpec, out: &mut dyn AutoEdgeSink) {
    let path = spec
        .params
        .get("path")
        .and_then(|v| v.as_str())
        .unwrap_or(&spec.name);
    out.provides(&format!("file:{path}"));
    if let Some(dir) = Path::new(path).parent().filter(|d| *d != Path::new("/")) {
        out.requires(&format!("file:{}/", dir.display()));
    }
    if let Some(i) = spec.params.get("input").and_then(|v| v.as_str()) {
        out.requires(&format!("file:{i}"));
    }
}

/// Builds a `gzip`.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    let path = p.opt_str("path")?.unwrap_or_else(|| spec.name.clone());
    check_file_path("the path", &path).map_err(|e| {
        if p.is_set("path") {
            field_err("path", e)
        } else {
            ResError::new(format!("gzip[{}]: the name is the path: {e}", spec.name))
        }
    })?;
    let input = p.opt_str("input")?;
    if let Some(i) = &input {
        check_file_path("the input", i).map_err(|e| field_err("input", e))?;
        if *i == path {
            return Err(field_err("input", "is the compressed file itself"));
        }
        if p.is_set("content") {
            return Err(field_err("content", "cannot be used with `input`"));
        }
    }
    let level = p.opt_int("level")?.unwrap_or(-1);
    let level = match level {
        -1 => Compression::default(),
        0..=9 => Compression::new(level as u32),
        -2 => {
            return Err(field_err(
                "level",
                "huffman_only (-2) is not supported by this implementation; use 1 to 9",
            ))
        }
        l => {
            return Err(field_err(
                "level",
                format!("invalid compression level: {l} (-1 to 9)"),
            ))
        }
    };
    Ok(Box::new(Gzip {
        id: format!("gzip[{}]", spec.name),
        path: Arc::from(Path::new(&path)),
        input: input.map(|i| Arc::from(PathBuf::from(i).as_path())),
        content: Arc::from(p.str("content")?.as_str()),
        level,
    }))
}

#[derive(Clone)]
struct Gzip {
    id: String,
    path: Arc<Path>,
    input: Option<Arc<Path>>,
    content: Arc<str>,
    level: Compression,
}

impl Gzip {
    /// The data to compress.
    fn source(&self) -> Result<Box<dyn Read>, ResError> {
        match &self.input {
            Some(i) => Ok(Box::new(fs::File::open(i).map_err(|e| {
                ResError::new(format!("{}: the input {}: {e}", self.id, i.display()))
            })?)),
            None => Ok(Box::new(io::Cursor::new(self.content.as_bytes().to_vec()))),
        }
    }

    /// Compresses the input into `out`.
    fn compress<W: Write>(&self, out: W) -> io::Result<W> {
        let mut src = self.source().map_err(|e| io::Error::other(e.to_string()))?;
        let mut gz = GzEncoder::new(out, self.level);
        io::copy(&mut src, &mut gz)?;
        gz.finish()
    }

    fn check_apply_blocking(&self, apply: bool) -> Result<Checked, ResError> {
        // The input's absence is this resource's error, not a compression failure.
        drop(self.source()?);
        let err = |e: io::Error| ResError::new(format!("{}: compressing: {e}", self.id));
        if let Some(same) = SameAs::open(&self.path)? {
            match self.compress(same) {
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
            tracing::info!(resource = %self.id, "would write {}", self.path.display());
            return Ok(Checked::Changed);
        }
        let (mode, owner) = crate::file::kept_mode_owner(fs::metadata(&self.path).ok().as_ref());
        crate::file::write_atomic_with(&self.path, mode, owner, |f, _| {
            let mut w = self.compress(BufWriter::new(f)).map_err(err)?;
            w.flush().map_err(err)
        })?;
        tracing::info!(resource = %self.id, "wrote {}", self.path.display());
        Ok(Checked::Changed)
    }
}

#[async_trait::async_trait]
impl Resource for Gzip {
    async fn init(&self, _ctx: &InitCtx) -> Result<(), ResError> {
        crate::file::sweep_beside(&self.path);
        Ok(())
    }

    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        let mut t = vec![Target::Path(self.path.clone())];
        if let Some(i) = &self.input {
            t.push(Target::Path(i.clone()));
        }
        fswatch::follow(&self.id, w, move || t.clone()).await
    }

    fn stop_at_exit(&self) -> bool {
        false
    }

    async fn check_apply(&self, ctx: CheckCtx) -> Result<Checked, ResError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.check_apply_blocking(ctx.apply))
            .await
            .map_err(|e| ResError::new(format!("gzip: {e}")))?
    }
}
