//! The lexer (spec §2): turns source text into [`Token`]s, reporting lex errors as it goes.
//!
//! A character that cannot start a token becomes one [`Tok::Error`] token (and an error), so the
//! parser can skip the statement without reporting a second error for the same place.

use std::fmt;

use super::span::{FileId, Pos, Span};
use crate::diag::{Error, Stage};

/// Token kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A line feed.
    Nl,
    /// A lower-case identifier (`[a-z]([a-z0-9_]*[a-z0-9])?`), not a keyword.
    Ident(String),
    /// A capitalised identifier (`File`, `Meta`, `Before`), as written.
    CapIdent(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal: the raw text between the quotes (escapes undecoded).
    Str(String),
    /// A reserved word.
    Kw(Kw),
    /// Punctuation or an operator.
    Op(Op),
    /// A character sequence that could not be lexed (already reported).
    Error,
    /// End of input.
    Eof,
}

/// Reserved words (spec §2). `map` and `collect` are soft: also accepted as names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kw {
    /// `if`
    If,
    /// `else`
    Else,
    /// `for`
    For,
    /// `forkv`
    ForKv,
    /// `in`
    In,
    /// `and`
    And,
    /// `or`
    Or,
    /// `not`
    Not,
    /// `func`
    Func,
    /// `class`
    Class,
    /// `include`
    Include,
    /// `import`
    Import,
    /// `as`
    As,
    /// `collect`
    Collect,
    /// `panic`
    Panic,
    /// `true`
    True,
    /// `false`
    False,
    /// `bool`
    Bool,
    /// `str`
    Str,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `map`
    Map,
    /// `struct`
    Struct,
    /// `variant`
    Variant,
}

impl Kw {
    /// Recognises a keyword.
    pub fn from_word(s: &str) -> Option<Kw> {
        Some(match s {
            "if" => Kw::If,
            "else" => Kw::Else,
            "for" => Kw::For,
            "forkv" => Kw::ForKv,
            "in" => Kw::In,
            "and" => Kw::And,
            "or" => Kw::Or,
            "not" => Kw::Not,
            "func" => Kw::Func,
            "class" => Kw::Class,
            "include" => Kw::Include,
            "import" => Kw::Import,
            "as" => Kw::As,
            "collect" => Kw::Collect,
            "panic" => Kw::Panic,
            "true" => Kw::True,
            "false" => Kw::False,
            "bool" => Kw::Bool,
            "str" => Kw::Str,
            "int" => Kw::Int,
            "float" => Kw::Float,
            "map" => Kw::Map,
            "struct" => Kw::Struct,
            "variant" => Kw::Variant,
            _ => return None,
        })
    }

    /// The keyword's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kw::If => "if",
            Kw::Else => "else",
            Kw::For => "for",
            Kw::ForKv => "forkv",
            Kw::In => "in",
            Kw::And => "and",
            Kw::Or => "or",
            Kw::Not => "not",
            Kw::Func => "func",
            Kw::Class => "class",
            Kw::Include => "include",
            Kw::Import => "import",
            Kw::As => "as",
            Kw::Collect => "collect",
            Kw::Panic => "panic",
            Kw::True => "true",
            Kw::False => "false",
            Kw::Bool => "bool",
            Kw::Str => "str",
            Kw::Int => "int",
            Kw::Float => "float",
            Kw::Map => "map",
            Kw::Struct => "struct",
            Kw::Variant => "variant",
        }
    }
}

/// Punctuation and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `:`
    Colon,
    /// `;`
    Semi,
    /// `=`
    Assign,
    /// `=>`
    FatArrow,
    /// `->`
    Arrow,
    /// `.`
    Dot,
    /// `$`
    Dollar,
    /// `?:`
    Elvis,
    /// `<|>`
    Except,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Star,
    /// `/`
    Slash,
    /// `==`
    EqEq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
}

impl Op {
    /// The operator's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::LBrace => "{",
            Op::RBrace => "}",
            Op::LParen => "(",
            Op::RParen => ")",
            Op::LBracket => "[",
            Op::RBracket => "]",
            Op::Comma => ",",
            Op::Colon => ":",
            Op::Semi => ";",
            Op::Assign => "=",
            Op::FatArrow => "=>",
            Op::Arrow => "->",
            Op::Dot => ".",
            Op::Dollar => "$",
            Op::Elvis => "?:",
            Op::Except => "<|>",
            Op::Plus => "+",
            Op::Minus => "-",
            Op::Star => "*",
            Op::Slash => "/",
            Op::EqEq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
        }
    }
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Nl => f.write_str("newline"),
            Tok::Ident(s) | Tok::CapIdent(s) => write!(f, "`{s}`"),
            Tok::Int(i) => write!(f, "integer {i}"),
            Tok::Float(x) => write!(f, "float {x}"),
            Tok::Str(_) => f.write_str("string"),
            Tok::Kw(k) => write!(f, "`{}`", k.as_str()),
            Tok::Op(o) => write!(f, "`{}`", o.as_str()),
            Tok::Error => f.write_str("invalid token"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

/// A token with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The kind.
    pub tok: Tok,
    /// Where it was written.
    pub span: Span,
}

/// Lexes a whole file. The result always ends with one [`Tok::Eof`] token.
pub fn lex(file: FileId, src: &str) -> (Vec<Token>, Vec<Error>) {
    let mut lx = Lexer {
        file,
        src,
        chars: src.char_indices().collect(),
        i: 0,
        line: 1,
        col: 1,
        toks: Vec::new(),
        errors: Vec::new(),
    };
    lx.run();
    (lx.toks, lx.errors)
}

struct Lexer<'a> {
    file: FileId,
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    line: u32,
    col: u32,
    toks: Vec<Token>,
    errors: Vec<Error>,
}

#[derive(Clone, Copy)]
struct Mark {
    off: usize,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    fn off(&self) -> usize {
        self.chars.get(self.i).map_or(self.src.len(), |&(o, _)| o)
    }

    fn mark(&self) -> Mark {
        Mark {
            off: self.off(),
            pos: Pos::new(self.line, self.col),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn span_from(&self, m: Mark) -> Span {
        Span {
            file: self.file,
            lo: m.off as u32,
            hi: self.off() as u32,
            start: m.pos,
            end: Pos::new(self.line, self.col),
        }
    }

    fn push(&mut self, tok: Tok, m: Mark) {
        let span = self.span_from(m);
        self.toks.push(Token { tok, span });
    }

    fn error(&mut self, msg: impl Into<String>, span: Span) {
        self.errors
            .push(Error::new(Stage::LexParse, msg, span.first_char()));
        self.toks.push(Token {
            tok: Tok::Error,
            span,
        });
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            let m = self.mark();
            match c {
                ' ' | '\t' => {
                    self.bump();
                }
                '\n' => {
                    self.bump();
                    // The span of a line feed stays on its own line (`2:19-2:20`).
                    let span = Span {
                        file: self.file,
                        lo: m.off as u32,
                        hi: m.off as u32 + 1,
                        start: m.pos,
                        end: Pos::new(m.pos.line, m.pos.col + 1),
                    };
                    self.toks.push(Token { tok: Tok::Nl, span });
                }
                '\r' => {
                    self.bump();
                    let span = self.span_from(m);
                    self.error(
                        "carriage return outside a string (CRLF line endings are not allowed)",
                        span,
                    );
                }
                '#' => {
                    while let Some(c) = self.peek(0) {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                'a'..='z' => self.word(m, false),
                'A'..='Z' => self.word(m, true),
                '0'..='9' => self.number(m),
                '-' if self.peek(1).is_some_and(|c| c.is_ascii_digit()) => self.number(m),
                '"' => self.string(m),
                _ => self.op(m, c),
            }
        }
        let m = self.mark();
        let span = Span {
            file: self.file,
            lo: m.off as u32,
            hi: m.off as u32,
            start: m.pos,
            end: Pos::new(m.pos.line, m.pos.col + 1),
        };
        self.toks.push(Token {
            tok: Tok::Eof,
            span,
        });
    }

    fn word(&mut self, m: Mark, cap: bool) {
        self.bump();
        while let Some(c) = self.peek(0) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                self.bump();
            } else {
                break;
            }
        }
        let text = &self.src[m.off..self.off()];
        if text.ends_with('_') {
            let span = self.span_from(m);
            self.error(format!("identifier `{text}` ends with `_`"), span);
            return;
        }
        let tok = if cap {
            Tok::CapIdent(text.to_string())
        } else if let Some(k) = Kw::from_word(text) {
            Tok::Kw(k)
        } else {
            Tok::Ident(text.to_string())
        };
        self.push(tok, m);
    }

    fn number(&mut self, m: Mark) {
        if self.peek(0) == Some('-') {
            self.bump();
        }
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let float = self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit());
        if float {
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        let text = &self.src[m.off..self.off()];
        let span = self.span_from(m);
        if float {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => self.push(Tok::Float(x), m),
                _ => self.error(format!("float: `{text}` is out of range"), span),
            }
        } else {
            match text.parse::<i64>() {
                Ok(n) => self.push(Tok::Int(n), m),
                Err(_) => self.error(format!("integer: overflow: `{text}`"), span),
            }
        }
    }

    fn string(&mut self, m: Mark) {
        self.bump();
        let start = self.off();
        loop {
            match self.peek(0) {
                None => {
                    let span = Span {
                        file: self.file,
                        lo: m.off as u32,
                        hi: m.off as u32 + 1,
                        start: m.pos,
                        end: Pos::new(m.pos.line, m.pos.col + 1),
                    };
                    self.error("unterminated string literal", span);
                    return;
                }
                Some('"') => break,
                Some('\\') => {
                    self.bump();
                    self.bump();
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
        let raw = self.src[start..self.off()].to_string();
        self.bump();
        self.push(Tok::Str(raw), m);
    }

    fn op(&mut self, m: Mark, c: char) {
        let next = self.peek(1);
        let next2 = self.peek(2);
        let (op, len) = match (c, next, next2) {
            ('<', Some('|'), Some('>')) => (Some(Op::Except), 3),
            ('<', Some('='), _) => (Some(Op::Le), 2),
            ('>', Some('='), _) => (Some(Op::Ge), 2),
            ('=', Some('='), _) => (Some(Op::EqEq), 2),
            ('=', Some('>'), _) => (Some(Op::FatArrow), 2),
            ('!', Some('='), _) => (Some(Op::Ne), 2),
            ('-', Some('>'), _) => (Some(Op::Arrow), 2),
            ('?', Some(':'), _) => (Some(Op::Elvis), 2),
            ('{', ..) => (Some(Op::LBrace), 1),
            ('}', ..) => (Some(Op::RBrace), 1),
            ('(', ..) => (Some(Op::LParen), 1),
            (')', ..) => (Some(Op::RParen), 1),
            ('[', ..) => (Some(Op::LBracket), 1),
            (']', ..) => (Some(Op::RBracket), 1),
            (',', ..) => (Some(Op::Comma), 1),
            (':', ..) => (Some(Op::Colon), 1),
            (';', ..) => (Some(Op::Semi), 1),
            ('=', ..) => (Some(Op::Assign), 1),
            ('.', ..) => (Some(Op::Dot), 1),
            ('$', ..) => (Some(Op::Dollar), 1),
            ('+', ..) => (Some(Op::Plus), 1),
            ('-', ..) => (Some(Op::Minus), 1),
            ('*', ..) => (Some(Op::Star), 1),
            ('/', ..) => (Some(Op::Slash), 1),
            ('<', ..) => (Some(Op::Lt), 1),
            ('>', ..) => (Some(Op::Gt), 1),
            _ => (None, 1),
        };
        for _ in 0..len {
            self.bump();
        }
        match op {
            Some(op) => self.push(Tok::Op(op), m),
            None => {
                let span = self.span_from(m);
                let shown = if c.is_control() {
                    format!("{:?}", c)
                } else {
                    format!("`{c}`")
                };
                self.error(format!("invalid character {shown}"), span);
            }
        }
    }
}
