//! Diagnostics: the one error type of the language, its stage tags, the file table and the
//! normative text rendering of spec §11.2.
//!
//! Every error carries a [`Stage`], a short lowercase message and at least one [`Span`]. It is
//! rendered against a [`SourceMap`] (which knows each file's path and text) as
//!
//! ```text
//! error: <tag>: <message>: <byline>
//!
//! <source line>
//! <carets>
//! ```
//!
//! where the byline is `/path @ L:C-L:C`, followed by `, …` for the further spans of the error and
//! `: …` for each import statement that led to the file.

use std::fmt;

use crate::syntax::span::{FileId, Pos, Span};

/// The pipeline stage an error belongs to (spec §11.1), with its golden-test tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Lexing and parsing.
    LexParse,
    /// Static init checks.
    Init,
    /// String interpolation and class-name desugaring.
    Interpolate,
    /// Imports, scopes, name resolution, recursion.
    SetScope,
    /// Type unification.
    Unify,
    /// Function-graph construction.
    Graph,
    /// Fatal runtime errors.
    Stream,
    /// Turning values into a resource graph.
    Interpret,
    /// Whole-graph checks by the engine.
    Validate,
}

impl Stage {
    /// The tag used in messages and golden files (`errLexParse`, …).
    pub fn tag(self) -> &'static str {
        match self {
            Stage::LexParse => "errLexParse",
            Stage::Init => "errInit",
            Stage::Interpolate => "errInterpolate",
            Stage::SetScope => "errSetScope",
            Stage::Unify => "errUnify",
            Stage::Graph => "errGraph",
            Stage::Stream => "errStream",
            Stage::Interpret => "errInterpret",
            Stage::Validate => "errValidate",
        }
    }

    /// Parses a tag back (`"errUnify"` → `Stage::Unify`).
    pub fn from_tag(tag: &str) -> Option<Stage> {
        Some(match tag {
            "errLexParse" => Stage::LexParse,
            "errInit" => Stage::Init,
            "errInterpolate" => Stage::Interpolate,
            "errSetScope" => Stage::SetScope,
            "errUnify" => Stage::Unify,
            "errGraph" => Stage::Graph,
            "errStream" => Stage::Stream,
            "errInterpret" => Stage::Interpret,
            "errValidate" => Stage::Validate,
            _ => return None,
        })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// A language error: stage, message and position(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The stage that found the error.
    pub stage: Stage,
    /// A short lowercase message (not normative).
    pub message: String,
    /// The primary span (carets are drawn under it).
    pub span: Span,
    /// Further spans listed in the byline after the primary one (e.g. every reference of a
    /// recursion cycle).
    pub also: Vec<Span>,
    /// Spans of the import statements that led to the file of `span`, innermost first.
    pub imported_from: Vec<Span>,
}

impl Error {
    /// A new error with one span.
    pub fn new(stage: Stage, message: impl Into<String>, span: Span) -> Error {
        Error {
            stage,
            message: message.into(),
            span,
            also: Vec::new(),
            imported_from: Vec::new(),
        }
    }

    /// Adds further spans to the byline.
    pub fn with_also(mut self, spans: impl IntoIterator<Item = Span>) -> Error {
        self.also.extend(spans);
        self
    }

    /// Records that the file of this error was imported by the statement at `span`.
    pub fn imported_at(mut self, span: Span) -> Error {
        self.imported_from.push(span);
        self
    }

    /// The byline: `/main.mcl @ 1:6-1:8[, …][: importer byline …]`.
    pub fn byline(&self, map: &SourceMap) -> String {
        let mut out = map.byline(self.span);
        for s in &self.also {
            out.push_str(", ");
            out.push_str(&map.byline(*s));
        }
        for s in &self.imported_from {
            out.push_str(": ");
            out.push_str(&map.byline(*s));
        }
        out
    }

    /// The first line of the rendering: `error: <tag>: <message>: <byline>`.
    pub fn headline(&self, map: &SourceMap) -> String {
        format!(
            "error: {}: {}: {}",
            self.stage.tag(),
            self.message,
            self.byline(map)
        )
    }

    /// The full normative rendering of spec §11.2 (headline, blank line, source and carets),
    /// ending with a newline.
    pub fn render(&self, map: &SourceMap) -> String {
        let mut out = self.headline(map);
        out.push('\n');
        let Some(file) = map.get(self.span.file) else {
            return out;
        };
        out.push('\n');
        let (s, e) = (self.span.start, self.span.end);
        if s.line == e.line || (e.line == s.line + 1 && e.col == 1) {
            // One line (a span ending right after a line feed counts as one line).
            let line = file.line_text(s.line);
            out.push_str(line);
            out.push('\n');
            out.push_str(&caret_pad(line, s.col));
            let width = if e.line == s.line {
                e.col.saturating_sub(s.col).max(1)
            } else {
                1
            };
            out.push_str(&"^".repeat(width as usize));
            out.push('\n');
        } else {
            let line = file.line_text(s.line);
            out.push_str(line);
            out.push('\n');
            out.push_str(&caret_pad(line, s.col));
            out.push_str("^ (starts here)\n");
            let line = file.line_text(e.line);
            out.push_str(line);
            out.push('\n');
            out.push_str(&caret_pad(line, e.col.saturating_sub(1).max(1)));
            out.push_str("^ (ends here)\n");
        }
        out
    }
}

impl Error {
    /// A pretty terminal rendering (codespan-reporting, no colours): the tag as error code,
    /// the message, the source with the span underlined, further spans as secondary labels and
    /// the import chain as notes. The normative text form is [`Error::render`].
    pub fn render_pretty(&self, map: &SourceMap) -> String {
        use codespan_reporting::diagnostic::{Diagnostic, Label};
        use codespan_reporting::files::SimpleFiles;
        use codespan_reporting::term;

        let mut files = SimpleFiles::new();
        for f in &map.files {
            files.add(f.path.as_str(), f.text.as_str());
        }
        let range = |s: Span| {
            let text = map.get(s.file).map_or("", |f| f.text.as_str());
            let mut lo = (s.lo as usize).min(text.len());
            while !text.is_char_boundary(lo) {
                lo -= 1;
            }
            let mut hi = (s.hi as usize).clamp(lo, text.len());
            while !text.is_char_boundary(hi) {
                hi += 1;
            }
            // A span on a line feed is drawn at the end of its line.
            if text.get(lo..hi) == Some("\n") {
                lo..lo
            } else {
                lo..hi
            }
        };
        let mut labels = Vec::new();
        if map.get(self.span.file).is_some() {
            labels.push(Label::primary(self.span.file.0 as usize, range(self.span)));
        }
        for s in &self.also {
            if map.get(s.file).is_some() {
                labels.push(Label::secondary(s.file.0 as usize, range(*s)));
            }
        }
        let notes = self
            .imported_from
            .iter()
            .map(|s| format!("imported at {}", map.byline(*s)))
            .collect();
        let diag = Diagnostic::error()
            .with_code(self.stage.tag())
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(notes);
        term::emit_into_string(&term::Config::default(), &files, &diag)
            .unwrap_or_else(|_| self.render(map))
    }
}

impl fmt::Display for Error {
    /// Without a source map: `<tag>: <message> @ L:C-L:C`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} @ {}",
            self.stage.tag(),
            self.message,
            self.span.range_text()
        )
    }
}

impl std::error::Error for Error {}

/// Spaces (tabs kept, so the carets line up in a terminal) up to column `col` of `line`.
fn caret_pad(line: &str, col: u32) -> String {
    let mut pad = String::new();
    for (i, c) in line.chars().enumerate() {
        if i + 1 >= col as usize {
            break;
        }
        pad.push(if c == '\t' { '\t' } else { ' ' });
    }
    let have = pad.chars().count();
    for _ in have + 1..col as usize {
        pad.push(' ');
    }
    pad
}

/// One source file: its display path (`/main.mcl`) and text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path relative to the program root with a leading `/`.
    pub path: String,
    /// The file's text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// The text of line `line` (1-based) without its line feed; empty past the end.
    pub fn line_text(&self, line: u32) -> &str {
        let i = line.saturating_sub(1) as usize;
        let Some(&start) = self.line_starts.get(i) else {
            return "";
        };
        let end = self
            .line_starts
            .get(i + 1)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or("")
    }

    /// The position of byte offset `off` (clamped to the text).
    pub fn pos(&self, off: usize) -> Pos {
        let off = off.min(self.text.len());
        let line = match self.line_starts.binary_search(&off) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text.get(start..off).map_or(0, |s| s.chars().count());
        Pos::new(line as u32 + 1, col as u32 + 1)
    }
}

/// The table of source files of one program; [`FileId`]s index into it.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds a file (`path` like `/main.mcl`) and returns its id.
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(SourceFile {
            path: path.into(),
            text,
            line_starts,
        });
        FileId(self.files.len() as u32 - 1)
    }

    /// The file with this id.
    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    /// `/path @ L:C-L:C` for a span.
    pub fn byline(&self, span: Span) -> String {
        let path = self.get(span.file).map_or("<unknown>", |f| f.path.as_str());
        format!("{path} @ {}", span.range_text())
    }

    /// Renders several errors, one after the other, separated by blank lines.
    pub fn render_all(&self, errors: &[Error]) -> String {
        errors
            .iter()
            .map(|e| e.render(self))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
