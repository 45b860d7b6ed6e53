//! Stage interpolate (spec §4): decodes string literals, splits `${name}` pieces into
//! [`ExprKind::Concat`] and desugars `class a:b` names; also rejects two classes of one name in
//! one block.
//!
//! After this stage the program holds no [`ExprKind::RawStr`] and no class name containing `:`.
//! A literal without `${…}` becomes [`ExprKind::Str`]; one with pieces becomes a `Concat` of
//! `Str` and `Var` parts (adjacent text merged, empty text dropped). Errors about a literal are
//! positioned at the whole literal; each `Var` part spans its `${name}` text.

use std::collections::HashMap;

use crate::diag::{Error, Stage};
use crate::syntax::ast::*;
use crate::syntax::parser::decode_escape;

/// Rewrites every string literal of the program, desugars class names, and returns the errors
/// found.
pub fn run(prog: &mut Program) -> Vec<Error> {
    let mut errors = Vec::new();
    stmts(&mut prog.stmts, &mut errors);
    duplicates(&prog.stmts, &mut errors);
    errors
}

fn stmts(list: &mut Vec<Stmt>, errors: &mut Vec<Error>) {
    for s in list.iter_mut() {
        for e in s.exprs_mut() {
            expr(e, errors);
        }
        for b in s.blocks_mut() {
            stmts(&mut b.stmts, errors);
        }
    }
    classes(list, errors);
}

fn expr(e: &mut Expr, errors: &mut Vec<Error>) {
    if let ExprKind::RawStr(raw) = &e.kind {
        match interpolate(raw, e.span) {
            Ok(kind) => e.kind = kind,
            Err(err) => {
                errors.push(err);
                e.kind = ExprKind::Str(String::new());
            }
        }
        return;
    }
    for c in e.children_mut() {
        expr(c, errors);
    }
}

/// A cursor over the raw text of a literal that tracks source positions.
struct Cursor {
    chars: Vec<char>,
    i: usize,
    base: Span,
    off: u32,
    pos: Pos,
}

impl Cursor {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        self.off += c.len_utf8() as u32;
        if c == '\n' {
            self.pos = Pos::new(self.pos.line + 1, 1);
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    fn here(&self) -> (u32, Pos) {
        (self.off, self.pos)
    }

    fn span_from(&self, start: (u32, Pos)) -> Span {
        Span {
            file: self.base.file,
            lo: start.0,
            hi: self.off,
            start: start.1,
            end: self.pos,
        }
    }
}

/// Interpolates the raw text of a literal written at `span` (quotes included).
fn interpolate(raw: &str, span: Span) -> Result<ExprKind, Error> {
    let mut cur = Cursor {
        chars: raw.chars().collect(),
        i: 0,
        base: span,
        off: span.lo + 1,
        pos: Pos::new(span.start.line, span.start.col + 1),
    };
    let mut parts: Vec<Expr> = Vec::new();
    let mut text = String::new();
    let mut text_start = cur.here();
    let mut any_var = false;
    while let Some(c) = cur.peek(0) {
        match c {
            '\\' => {
                cur.bump();
                match cur.bump() {
                    Some(e) => match decode_escape(e) {
                        Some(d) => text.push(d),
                        None => {
                            return Err(Error::new(
                                Stage::Interpolate,
                                format!("unknown escape `\\{e}` in string"),
                                span,
                            ))
                        }
                    },
                    None => {
                        return Err(Error::new(
                            Stage::Interpolate,
                            "a string cannot end with a lone `\\`",
                            span,
                        ))
                    }
                }
            }
            '$' if cur.peek(1) == Some('{') => {
                let var_start = cur.here();
                cur.bump();
                cur.bump();
                let mut name = String::new();
                loop {
                    match cur.bump() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(Error::new(
                                Stage::Interpolate,
                                format!("cannot parse string: `${{{name}` is not closed"),
                                span,
                            ))
                        }
                    }
                }
                if !valid_var(&name) {
                    return Err(Error::new(
                        Stage::Interpolate,
                        format!("cannot parse string: `${{{name}}}` is not a variable reference"),
                        span,
                    ));
                }
                let var_span = cur.span_from(var_start);
                if !text.is_empty() {
                    let tspan = cur.span_from(text_start);
                    parts.push(Expr {
                        kind: ExprKind::Str(std::mem::take(&mut text)),
                        span: Span {
                            hi: var_span.lo,
                            end: var_span.start,
                            ..tspan
                        },
                    });
                }
                parts.push(Expr {
                    kind: ExprKind::Var(Name::new(name, var_span)),
                    span: var_span,
                });
                any_var = true;
                text_start = cur.here();
            }
            _ => {
                text.push(c);
                cur.bump();
            }
        }
    }
    if !any_var {
        return Ok(ExprKind::Str(text));
    }
    if !text.is_empty() {
        parts.push(Expr {
            kind: ExprKind::Str(text),
            span: cur.span_from(text_start),
        });
    }
    Ok(ExprKind::Concat(parts))
}

/// `name` or `a.b.c`, each segment `[a-z][a-z0-9_]*`.
fn valid_var(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|seg| {
            let mut cs = seg.chars();
            cs.next().is_some_and(|c| c.is_ascii_lowercase())
                && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Moves `class a:b` into the body of `class a` of the same block (`a:b:c` goes into the
/// body of `b` inside `a`).
fn classes(list: &mut Vec<Stmt>, errors: &mut Vec<Error>) {
    let mut sugared: Vec<Stmt> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        if matches!(&list[i].kind, StmtKind::Class(c) if c.name.text.contains(':')) {
            sugared.push(list.remove(i));
        } else {
            i += 1;
        }
    }
    sugared.sort_by_key(|s| match &s.kind {
        StmtKind::Class(c) => c.name.text.matches(':').count(),
        _ => 0,
    });
    for mut s in sugared {
        let StmtKind::Class(c) = &mut s.kind else {
            continue;
        };
        let full = c.name.text.clone();
        let segs: Vec<&str> = full.split(':').collect();
        let (last, path) = segs.split_last().expect("split yields one segment");
        match find_class(list, path) {
            Some(target) => {
                // The name keeps the span of the whole `a:b` text.
                c.name.text = last.to_string();
                target.push(s);
            }
            None => errors.push(Error::new(
                Stage::Interpolate,
                format!(
                    "malformed class name `{full}`: there is no class `{}` in this block to nest it in",
                    path.join(":")
                ),
                c.name.span,
            )),
        }
    }
}

/// The body of the class reached by following `path` from `list`.
fn find_class<'a>(list: &'a mut [Stmt], path: &[&str]) -> Option<&'a mut Vec<Stmt>> {
    let (first, rest) = path.split_first()?;
    let body = list.iter_mut().find_map(|s| match &mut s.kind {
        StmtKind::Class(c) if c.name.text == *first => Some(&mut c.body.stmts),
        _ => None,
    })?;
    if rest.is_empty() {
        Some(body)
    } else {
        find_class(body, rest)
    }
}

/// Two classes of one name in one block, in every block of the program.
fn duplicates(list: &[Stmt], errors: &mut Vec<Error>) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for s in list {
        if let StmtKind::Class(c) = &s.kind {
            if seen.insert(c.name.text.as_str(), c.name.span).is_some() {
                errors.push(Error::new(
                    Stage::Interpolate,
                    format!("class `{}` is declared twice in one block", c.name.text),
                    // At the whole second class statement, as mgmt.
                    s.span,
                ));
            }
        }
        for b in s.blocks() {
            duplicates(&b.stmts, errors);
        }
    }
}
