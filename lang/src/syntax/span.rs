//! Source positions: files, 1-based line/column positions and spans (spec §11.2).

/// Identifies one source file inside a [`crate::diag::SourceMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A position: 1-based line and 1-based column counted in characters (a tab is one column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column in characters, starting at 1.
    pub col: u32,
}

impl Pos {
    /// Builds a position.
    pub fn new(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }
}

/// A region of one source file, from its first character to one past its last character.
///
/// `lo`/`hi` are byte offsets into the file text (end exclusive); `start`/`end` are the same
/// bounds as line/column positions (`end` is one past the last character, on the last line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file the span belongs to.
    pub file: FileId,
    /// Byte offset of the first character.
    pub lo: u32,
    /// Byte offset one past the last character.
    pub hi: u32,
    /// Position of the first character.
    pub start: Pos,
    /// Position one past the last character.
    pub end: Pos,
}

impl Span {
    /// The smallest span covering `self` and `other` (both in the same file).
    pub fn to(self, other: Span) -> Span {
        let (lo, start) = if other.lo < self.lo {
            (other.lo, other.start)
        } else {
            (self.lo, self.start)
        };
        let (hi, end) = if other.hi > self.hi {
            (other.hi, other.end)
        } else {
            (self.hi, self.end)
        };
        Span {
            file: self.file,
            lo,
            hi,
            start,
            end,
        }
    }

    /// The one-character span at the start of `self` (lex/parse errors point at one
    /// character, spec §11.2).
    pub fn first_char(self) -> Span {
        Span {
            hi: self.lo + 1,
            end: Pos::new(self.start.line, self.start.col + 1),
            ..self
        }
    }

    /// `L:C-L:C`, the position part of a byline.
    pub fn range_text(&self) -> String {
        format!(
            "{}:{}-{}:{}",
            self.start.line, self.start.col, self.end.line, self.end.col
        )
    }
}

/// A name (identifier, dotted name, kind) as written, with its span.
///
/// Dotted names (`a.b.c`) and kinds (`http:server`) keep their separators in `text`; capitalised
/// kinds in edge references (`File`, `Aws:Ec2`) are stored lower-cased (`file`, `aws:ec2`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    /// The name's text.
    pub text: String,
    /// Where the name was written.
    pub span: Span,
}

impl Name {
    /// Builds a name.
    pub fn new(text: impl Into<String>, span: Span) -> Name {
        Name {
            text: text.into(),
            span,
        }
    }
}
