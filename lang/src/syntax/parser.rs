//! The recursive-descent parser (spec §3) with statement-level error recovery.
//!
//! Each statement is parsed on its own; the first error inside it is recorded and the parser
//! skips to the end of the statement (the next line feed outside brackets, or the `}` closing
//! the enclosing block), then goes on. Statements that failed are left out of the tree.
//! Expressions use precedence climbing (spec §3.5). Nesting is bounded so hostile input cannot
//! overflow the stack.

use super::ast::*;
use super::lexer::{Kw, Op, Tok, Token};
use crate::diag::{Error, Stage};

/// Deepest nesting of expressions, types and blocks accepted.
const MAX_DEPTH: u32 = 64;

/// Deepest expression tree accepted (chains such as `a + b + c` or `$l[0][0]` nest without
/// recursion in the parser, but every later pass walks the tree recursively).
const MAX_TREE_DEPTH: usize = 256;

/// Most stack the parser may use (bytes) before it refuses to nest further; keeps unoptimised
/// builds on small thread stacks safe whatever the input.
const STACK_BUDGET: usize = 1024 * 1024;

/// An address on the current stack, to measure how much stack the parser uses.
fn stack_addr() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Parses a token stream (ending with `Eof`) into a program plus every error found.
pub fn parse_tokens(file: FileId, toks: &[Token]) -> (Program, Vec<Error>) {
    let mut p = Parser {
        toks,
        pos: 0,
        errors: Vec::new(),
        depth: 0,
        stack_base: stack_addr(),
        eof: toks.last().map(|t| t.span).unwrap_or_default(),
    };
    let stmts = p.stmt_list(true);
    let span = match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => a.span.to(b.span),
        _ => Span::default(),
    };
    let prog = Program {
        file,
        stmts,
        span: Span { file, ..span },
    };
    (prog, p.errors)
}

/// Failure marker: the error has been recorded already.
#[derive(Debug)]
struct Fail;

type P<T> = Result<T, Fail>;

struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
    errors: Vec<Error>,
    depth: u32,
    stack_base: usize,
    eof: Span,
}

/// Binding power of binary operators (spec §3.5).
fn binop(tok: &Tok) -> Option<(BinOp, u8)> {
    Some(match tok {
        Tok::Kw(Kw::Or) => (BinOp::Or, 2),
        Tok::Kw(Kw::And) => (BinOp::And, 3),
        Tok::Op(Op::EqEq) => (BinOp::Eq, 4),
        Tok::Op(Op::Ne) => (BinOp::Ne, 4),
        Tok::Op(Op::Lt) => (BinOp::Lt, 4),
        Tok::Op(Op::Gt) => (BinOp::Gt, 4),
        Tok::Op(Op::Le) => (BinOp::Le, 4),
        Tok::Op(Op::Ge) => (BinOp::Ge, 4),
        Tok::Kw(Kw::In) => (BinOp::In, 4),
        Tok::Op(Op::Plus) => (BinOp::Add, 5),
        Tok::Op(Op::Minus) => (BinOp::Sub, 5),
        Tok::Op(Op::Star) => (BinOp::Mul, 6),
        Tok::Op(Op::Slash) => (BinOp::Div, 6),
        _ => return None,
    })
}

/// Precedence of `<|>`.
const EXCEPT_PREC: u8 = 1;
/// Precedence of comparisons (non-associative).
const CMP_PREC: u8 = 4;

impl<'t> Parser<'t> {
    // ----- token access -----

    fn tok(&self) -> &'t Token {
        let i = self.pos.min(self.toks.len().saturating_sub(1));
        &self.toks[i]
    }

    fn peek(&self) -> &'t Tok {
        if self.toks.is_empty() {
            return &Tok::Eof;
        }
        &self.tok().tok
    }

    fn peek_at(&self, k: usize) -> &'t Tok {
        match self.toks.get(self.pos + k) {
            Some(t) => &t.tok,
            None => &Tok::Eof,
        }
    }

    fn span(&self) -> Span {
        if self.toks.is_empty() {
            return self.eof;
        }
        self.tok().span
    }

    /// The span of the previous token (the last one consumed).
    fn prev_span(&self) -> Span {
        if self.pos == 0 || self.toks.is_empty() {
            return self.span();
        }
        self.toks[(self.pos - 1).min(self.toks.len() - 1)].span
    }

    fn bump(&mut self) -> &'t Token {
        let t = self.tok();
        if self.pos < self.toks.len() && !matches!(t.tok, Tok::Eof) {
            self.pos += 1;
        }
        t
    }

    fn at_op(&self, op: Op) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn at_kw(&self, kw: Kw) -> bool {
        matches!(self.peek(), Tok::Kw(k) if *k == kw)
    }

    fn eat_op(&mut self, op: Op) -> Option<Span> {
        if self.at_op(op) {
            Some(self.bump().span)
        } else {
            None
        }
    }

    fn eat_kw(&mut self, kw: Kw) -> Option<Span> {
        if self.at_kw(kw) {
            Some(self.bump().span)
        } else {
            None
        }
    }

    fn skip_nls(&mut self) {
        while matches!(self.peek(), Tok::Nl) {
            self.bump();
        }
    }

    // ----- errors -----

    /// Records an error at the current token (a one-character span) and fails. Nothing is
    /// recorded when the current token is a lex error (already reported).
    fn fail<T>(&mut self, msg: impl Into<String>) -> P<T> {
        let span = self.span().first_char();
        let dup = self.errors.last().is_some_and(|e| e.span == span);
        if !matches!(self.peek(), Tok::Error) && !dup {
            self.errors.push(Error::new(Stage::LexParse, msg, span));
        }
        Err(Fail)
    }

    /// Fails with "unexpected X, expected WHAT".
    fn expected<T>(&mut self, what: &str) -> P<T> {
        let found = self.peek().to_string();
        self.fail(format!("unexpected {found}, expected {what}"))
    }

    fn fail_at<T>(&mut self, span: Span, msg: impl Into<String>) -> P<T> {
        self.errors
            .push(Error::new(Stage::LexParse, msg, span.first_char()));
        Err(Fail)
    }

    fn expect_op(&mut self, op: Op) -> P<Span> {
        match self.eat_op(op) {
            Some(s) => Ok(s),
            None => self.expected(&format!("`{}`", op.as_str())),
        }
    }

    /// Skips the rest of a failed statement that started at token `start`: up to the next line
    /// feed outside brackets opened by the statement, or up to an unmatched `}` (left in place
    /// for the enclosing block). Always makes progress.
    fn recover(&mut self, start: usize) {
        self.skip_rest(start, false);
        if self.pos <= start && !matches!(self.peek(), Tok::Eof) {
            self.bump();
        }
    }

    /// Skips the rest of a construct that started at token `start`, tracking the brackets it
    /// opened. A bracket not directly followed by a line feed is a one-line form, so a line feed
    /// closes it; a line feed with no multi-line bracket open ends the skip, and so does a `}`
    /// that no open `{` matches (left in place) and, with `at_comma`, a `,` outside brackets
    /// (consumed).
    fn skip_rest(&mut self, start: usize, at_comma: bool) {
        // (the opening token, whether a line feed directly follows it)
        let mut open: Vec<(Op, bool)> = Vec::new();
        let end = self.pos.min(self.toks.len());
        let start = start.min(end);
        for i in start..end {
            let multi = matches!(self.toks.get(i + 1).map(|t| &t.tok), Some(Tok::Nl));
            match self.toks[i].tok {
                Tok::Op(o @ (Op::LBrace | Op::LParen | Op::LBracket)) => open.push((o, multi)),
                Tok::Op(o @ (Op::RBrace | Op::RParen | Op::RBracket)) => close(&mut open, o),
                Tok::Nl => drop_one_line(&mut open),
                _ => {}
            }
        }
        loop {
            let multi = matches!(self.peek_at(1), Tok::Nl);
            match self.peek() {
                Tok::Eof => return,
                Tok::Nl => {
                    drop_one_line(&mut open);
                    if open.is_empty() {
                        return;
                    }
                }
                Tok::Op(Op::Comma) if at_comma && open.is_empty() => {
                    self.bump();
                    return;
                }
                Tok::Op(o @ (Op::LBrace | Op::LParen | Op::LBracket)) => open.push((*o, multi)),
                Tok::Op(Op::RBrace) if !open.iter().any(|&(o, _)| o == Op::LBrace) => return,
                Tok::Op(o @ (Op::RBrace | Op::RParen | Op::RBracket)) => close(&mut open, *o),
                _ => {}
            }
            self.bump();
        }
    }

    fn enter(&mut self) -> P<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH || stack_addr().abs_diff(self.stack_base) > STACK_BUDGET {
            self.depth -= 1;
            return self.fail(format!(
                "expression or block nested too deeply (at most {MAX_DEPTH} levels)"
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ----- statements -----

    /// Parses statements up to `}` (left in place) or, at top level, up to the end of input.
    fn stmt_list(&mut self, top: bool) -> Vec<Stmt> {
        let mut stmts = Vec::new();
        loop {
            self.skip_nls();
            match self.peek() {
                Tok::Eof => break,
                Tok::Op(Op::RBrace) if !top => break,
                Tok::Op(Op::RBrace) => {
                    let _ = self.fail::<()>("unexpected `}` with no block to close");
                    self.bump();
                    continue;
                }
                _ => {}
            }
            let start = self.pos;
            match self.stmt() {
                Ok(s) => {
                    // A statement ends with a line feed (or the end of the file at top level).
                    match self.peek() {
                        Tok::Nl => {
                            stmts.push(s);
                        }
                        Tok::Eof if top => {
                            stmts.push(s);
                        }
                        _ => {
                            let msg = if matches!(self.peek(), Tok::Op(Op::LParen)) {
                                "expected a newline after the statement (only names, `$variables` and lambdas can be called; bind the result first)"
                            } else if top {
                                "expected a newline after the statement"
                            } else {
                                "expected a newline after the statement (a non-empty block spans several lines)"
                            };
                            let found = self.peek().to_string();
                            let _ = self.fail::<()>(format!("unexpected {found}, {msg}"));
                            self.recover(start);
                        }
                    }
                }
                Err(Fail) => self.recover(start),
            }
        }
        stmts
    }

    fn block(&mut self) -> P<Block> {
        self.enter()?;
        let r = self.block_inner();
        self.leave();
        r
    }

    fn block_inner(&mut self) -> P<Block> {
        let open = match self.eat_op(Op::LBrace) {
            Some(s) => s,
            None => return self.expected("`{`"),
        };
        let stmts = self.stmt_list(false);
        let close = self.expect_op(Op::RBrace)?;
        Ok(Block {
            stmts,
            span: open.to(close),
        })
    }

    fn stmt(&mut self) -> P<Stmt> {
        let start = self.span();
        let kind = match self.peek() {
            Tok::Op(Op::Dollar) => StmtKind::Bind(self.bind()?),
            Tok::Ident(_) => StmtKind::Resource(self.resource(false)?),
            Tok::Kw(Kw::Collect) => {
                self.bump();
                StmtKind::Resource(self.resource(true)?)
            }
            Tok::CapIdent(_) => StmtKind::Edge(self.edge()?),
            Tok::Kw(Kw::If) => StmtKind::If(self.if_stmt()?),
            Tok::Kw(Kw::For) => {
                self.bump();
                StmtKind::For(self.for_stmt()?)
            }
            Tok::Kw(Kw::ForKv) => {
                self.bump();
                StmtKind::ForKv(self.for_stmt()?)
            }
            Tok::Kw(Kw::Func) => StmtKind::Func(self.func_stmt()?),
            Tok::Kw(Kw::Class) => StmtKind::Class(self.class_stmt()?),
            Tok::Kw(Kw::Include) => StmtKind::Include(self.include()?),
            Tok::Kw(Kw::Import) => StmtKind::Import(self.import()?),
            Tok::Kw(Kw::Panic) => StmtKind::Panic(self.panic_stmt()?),
            Tok::Kw(Kw::Else) => {
                return self.fail("`else` must follow the `}` of the if block on the same line")
            }
            _ => return self.expected("a statement"),
        };
        let stmt = Stmt {
            kind,
            span: start.to(self.prev_span()),
        };
        for e in stmt.exprs() {
            if tree_depth(e) > MAX_TREE_DEPTH {
                return self.fail_at(
                    e.span,
                    format!("expression nested too deeply (at most {MAX_TREE_DEPTH} levels)"),
                );
            }
        }
        Ok(stmt)
    }

    /// An undotted name: an identifier or a soft keyword (`map`, `collect`).
    fn uname(&mut self, what: &str) -> P<Name> {
        let t = self.tok();
        let text = match &t.tok {
            Tok::Ident(s) => s.clone(),
            Tok::Kw(Kw::Map) => "map".to_string(),
            Tok::Kw(Kw::Collect) => "collect".to_string(),
            Tok::Kw(k) => {
                return self.fail(format!(
                    "`{}` is a reserved word and cannot be used as {what}",
                    k.as_str()
                ))
            }
            _ => return self.expected(what),
        };
        self.bump();
        Ok(Name::new(text, t.span))
    }

    /// A plain identifier (no keyword at all).
    fn ident(&mut self, what: &str) -> P<Name> {
        let t = self.tok();
        match &t.tok {
            Tok::Ident(s) => {
                self.bump();
                Ok(Name::new(s.clone(), t.span))
            }
            Tok::Kw(k) => self.fail(format!(
                "`{}` is a reserved word and cannot be used as {what}",
                k.as_str()
            )),
            _ => self.expected(what),
        }
    }

    /// `a.b.c` (segments are undotted names).
    fn dotted(&mut self, what: &str) -> P<Name> {
        let first = self.uname(what)?;
        let mut text = first.text;
        let mut span = first.span;
        while self.at_op(Op::Dot) {
            self.bump();
            let seg = self.uname(what)?;
            text.push('.');
            text.push_str(&seg.text);
            span = span.to(seg.span);
        }
        Ok(Name::new(text, span))
    }

    /// `$name` at a binding site (undotted); the returned span covers the name only.
    fn var_def(&mut self) -> P<Name> {
        self.expect_op(Op::Dollar)?;
        self.uname("a variable name")
    }

    fn bind(&mut self) -> P<Bind> {
        let name = self.var_def()?;
        if self.at_op(Op::Dot) {
            return self.fail("a bind defines an undotted variable name");
        }
        let ty = if self.at_op(Op::Assign) || self.at_op(Op::EqEq) {
            None
        } else {
            Some(self.ty()?)
        };
        if self.at_op(Op::EqEq) {
            return self.fail("`==` compares values; use `=` to bind a variable");
        }
        if !self.at_op(Op::Assign) {
            return self.expected("`=`");
        }
        self.bump();
        let value = self.expr()?;
        if let Some(ty) = &ty {
            if let Some(lit) = literal_type(&value.kind) {
                if !matches!(ty.kind, TypeKind::Variant) && ty.kind != lit {
                    return self.fail_at(
                        value.span,
                        format!(
                            "{} literal cannot be bound to `${}` declared as {}",
                            match lit {
                                TypeKind::Int => "an int",
                                TypeKind::Bool => "a bool",
                                TypeKind::Float => "a float",
                                _ => "a str",
                            },
                            name.text,
                            type_text(&ty.kind)
                        ),
                    );
                }
            }
        }
        Ok(Bind { name, ty, value })
    }

    /// `ident {":" ident}` as one name with `:` kept.
    fn kind_name(&mut self) -> P<Name> {
        let first = self.ident("a resource kind")?;
        let mut text = first.text;
        let mut span = first.span;
        while self.at_op(Op::Colon) {
            self.bump();
            let seg = self.ident("a resource kind")?;
            text.push(':');
            text.push_str(&seg.text);
            span = span.to(seg.span);
        }
        Ok(Name::new(text, span))
    }

    fn resource(&mut self, collect: bool) -> P<Resource> {
        let kind = self.kind_name()?;
        let name = self.expr()?;
        let open = match self.eat_op(Op::LBrace) {
            Some(s) => s,
            None => return self.expected("`{` starting the resource body"),
        };
        let mut entries = Vec::new();
        let mut failed = false;
        loop {
            self.skip_nls();
            if self.at_op(Op::RBrace) || matches!(self.peek(), Tok::Eof) {
                break;
            }
            // A bad entry is reported and skipped; the other entries are still checked.
            let start = self.pos;
            match self.entry_with_comma() {
                Ok(e) => entries.push(e),
                Err(Fail) => {
                    failed = true;
                    self.recover_entry(start);
                }
            }
        }
        let close = self.expect_op(Op::RBrace)?;
        if failed {
            return Err(Fail);
        }
        Ok(Resource {
            collect,
            kind,
            name,
            entries,
            body_span: open.to(close),
        })
    }

    fn entry_with_comma(&mut self) -> P<ResEntry> {
        let e = self.entry()?;
        if self.eat_op(Op::Comma).is_none() {
            let found = self.peek().to_string();
            return self.fail(format!(
                "unexpected {found}, expecting trailing comma after a resource entry"
            ));
        }
        Ok(e)
    }

    /// Skips the rest of a failed resource entry that started at token `start`: past the next
    /// `,` or up to the next line feed outside brackets, or up to the `}` closing the body.
    fn recover_entry(&mut self, start: usize) {
        self.skip_rest(start, true);
        if self.pos <= start && !matches!(self.peek(), Tok::Eof | Tok::Op(Op::RBrace)) {
            self.bump();
        }
    }

    fn entry(&mut self) -> P<ResEntry> {
        let start = self.span();
        match self.peek().clone() {
            Tok::Ident(_) => {
                let name = self.ident("a field name")?;
                self.expect_op(Op::FatArrow)?;
                let (cond, value) = self.elvis_value()?;
                Ok(ResEntry {
                    kind: EntryKind::Field { name, value },
                    cond,
                    span: start.to(self.prev_span()),
                })
            }
            Tok::CapIdent(word) => {
                let word_span = self.bump().span;
                if word == "Meta" {
                    if self.eat_op(Op::Colon).is_some() {
                        let name = self.ident("a meta parameter name")?;
                        self.expect_op(Op::FatArrow)?;
                        let (cond, value) = self.elvis_value()?;
                        return Ok(ResEntry {
                            kind: EntryKind::Meta { name, value },
                            cond,
                            span: start.to(self.prev_span()),
                        });
                    }
                    self.expect_op(Op::FatArrow)?;
                    let (cond, value) = self.elvis_value()?;
                    return Ok(ResEntry {
                        kind: EntryKind::MetaAll { value },
                        cond,
                        span: start.to(self.prev_span()),
                    });
                }
                if self.at_op(Op::Colon) {
                    return self.fail(format!(
                        "only `Meta` takes `:name`; `{word}` is not a meta property"
                    ));
                }
                self.expect_op(Op::FatArrow)?;
                let cond = if matches!(self.peek(), Tok::CapIdent(_)) {
                    None
                } else {
                    let c = self.expr()?;
                    if self.eat_op(Op::Elvis).is_none() {
                        return self.fail(format!(
                            "`{word} =>` takes a resource reference like `Kind[\"name\"]`"
                        ));
                    }
                    Some(c)
                };
                if !matches!(self.peek(), Tok::CapIdent(_)) {
                    return self.fail(format!(
                        "`{word} =>` takes a resource reference like `Kind[\"name\"]`"
                    ));
                }
                let target = self.edge_ref()?;
                Ok(ResEntry {
                    kind: EntryKind::Edge {
                        prop: Name::new(word, word_span),
                        target,
                    },
                    cond,
                    span: start.to(self.prev_span()),
                })
            }
            Tok::Kw(k) => self.fail(format!(
                "`{}` is a reserved word and cannot be written as a field name",
                k.as_str()
            )),
            _ => self.expected("a resource entry (`field => value,`) or `}`"),
        }
    }

    /// `[cond ?:] value`.
    fn elvis_value(&mut self) -> P<(Option<Expr>, Expr)> {
        let first = self.expr()?;
        if self.eat_op(Op::Elvis).is_some() {
            let value = self.expr()?;
            Ok((Some(first), value))
        } else {
            Ok((None, first))
        }
    }

    /// `Kind[name]`.
    fn edge_ref(&mut self) -> P<EdgeRef> {
        let start = self.span();
        let mut text = String::new();
        let mut kspan = start;
        loop {
            let t = self.tok();
            match &t.tok {
                Tok::CapIdent(s) => {
                    self.bump();
                    text.push_str(&s.to_lowercase());
                    kspan = kspan.to(t.span);
                }
                _ => return self.expected("a capitalised resource kind"),
            }
            if self.at_op(Op::Colon) && matches!(self.peek_at(1), Tok::CapIdent(_)) {
                self.bump();
                text.push(':');
            } else {
                break;
            }
        }
        self.expect_op(Op::LBracket)?;
        let name = self.expr()?;
        let close = self.expect_op(Op::RBracket)?;
        Ok(EdgeRef {
            kind: Name::new(text, kspan),
            name,
            span: start.to(close),
        })
    }

    fn edge(&mut self) -> P<Edge> {
        let mut halves = Vec::new();
        loop {
            let res = self.edge_ref()?;
            let mut span = res.span;
            let field = if self.eat_op(Op::Dot).is_some() {
                let f = self.ident("a send/recv field name")?;
                span = span.to(f.span);
                Some(f)
            } else {
                None
            };
            halves.push(EdgeHalf { res, field, span });
            if self.eat_op(Op::Arrow).is_none() {
                break;
            }
        }
        let with_field = halves.iter().filter(|h| h.field.is_some()).count();
        if with_field > 0 && (with_field != halves.len() || halves.len() != 2) {
            let bad = halves
                .iter()
                .find(|h| h.field.is_none())
                .or(halves.get(2))
                .map_or(halves[0].span, |h| h.span);
            return self.fail_at(
                bad,
                "a send/recv edge has exactly two halves, each with a field (`A[a].out -> B[b].in`)",
            );
        }
        Ok(Edge { halves })
    }

    fn if_stmt(&mut self) -> P<IfStmt> {
        self.bump();
        let cond = self.expr()?;
        let then = self.block()?;
        let els = if self.eat_kw(Kw::Else).is_some() {
            Some(self.block()?)
        } else {
            None
        };
        Ok(IfStmt { cond, then, els })
    }

    fn for_stmt(&mut self) -> P<ForStmt> {
        // The loop variables' spans cover their `$` (errors point at them, as mgmt's).
        let at = self.tok().span;
        let mut key = self.var_def()?;
        key.span = at.to(key.span);
        self.expect_op(Op::Comma)?;
        let at = self.tok().span;
        let mut value = self.var_def()?;
        value.span = at.to(value.span);
        if self.eat_kw(Kw::In).is_none() {
            return self.expected("`in`");
        }
        let iter = self.expr()?;
        let body = self.block()?;
        Ok(ForStmt {
            key,
            value,
            iter,
            body,
        })
    }

    fn func_stmt(&mut self) -> P<FuncStmt> {
        let start = self.tok().span;
        self.bump();
        if self.at_op(Op::LParen) {
            return self.fail("a lambda is an expression, not a statement; bind it to a variable");
        }
        let name = self.uname("a function name")?;
        self.expect_op(Op::LParen)?;
        let params = self.params()?;
        let ret = if self.at_op(Op::LBrace) {
            None
        } else {
            Some(self.ty()?)
        };
        let body = self.expr_block()?;
        Ok(FuncStmt {
            name,
            params,
            ret,
            body,
            span: start.to(self.prev_span()),
        })
    }

    fn class_stmt(&mut self) -> P<ClassStmt> {
        self.bump();
        let first = self.uname("a class name")?;
        let mut text = first.text;
        let mut span = first.span;
        while self.at_op(Op::Colon) {
            self.bump();
            let seg = self.uname("a class name")?;
            text.push(':');
            text.push_str(&seg.text);
            span = span.to(seg.span);
        }
        let params = if self.eat_op(Op::LParen).is_some() {
            self.params()?
        } else {
            Vec::new()
        };
        let body = self.block()?;
        Ok(ClassStmt {
            name: Name::new(text, span),
            params,
            body,
        })
    }

    fn include(&mut self) -> P<Include> {
        self.bump();
        let name = self.dotted("a class name")?;
        let args = if self.eat_op(Op::LParen).is_some() {
            self.args()?
        } else {
            Vec::new()
        };
        let alias = if self.eat_kw(Kw::As).is_some() {
            Some(self.uname("an include alias")?)
        } else {
            None
        };
        Ok(Include { name, args, alias })
    }

    fn import(&mut self) -> P<Import> {
        self.bump();
        let t = self.tok();
        let Tok::Str(raw) = &t.tok else {
            return self.expected("an import path string");
        };
        self.bump();
        let path = match decode_escapes(raw) {
            Ok(p) => p,
            Err(msg) => return self.fail_at(t.span, msg),
        };
        let alias = if self.eat_kw(Kw::As).is_some() {
            if let Some(s) = self.eat_op(Op::Star) {
                Some(ImportAlias::Star(s))
            } else {
                Some(ImportAlias::Name(self.uname("an import alias or `*`")?))
            }
        } else {
            None
        };
        Ok(Import {
            path,
            path_span: t.span,
            alias,
        })
    }

    fn panic_stmt(&mut self) -> P<Panic> {
        self.bump();
        let open = self.expect_op(Op::LParen)?;
        let args = self.args()?;
        if args.is_empty() || args.len() > 2 {
            return self.fail_at(open, "panic takes one or two arguments");
        }
        Ok(Panic { args })
    }

    // ----- comma-separated sequences -----

    /// Items up to `close` (the opener is consumed already): either the single-line form
    /// `a, b` (no trailing comma) or the multi-line form (opener, newline, then `item,` lines).
    fn seq<T>(&mut self, close: Op, mut item: impl FnMut(&mut Self) -> P<T>) -> P<(Vec<T>, Span)> {
        let mut items = Vec::new();
        if let Some(s) = self.eat_op(close) {
            return Ok((items, s));
        }
        if matches!(self.peek(), Tok::Nl) {
            loop {
                self.skip_nls();
                if let Some(s) = self.eat_op(close) {
                    return Ok((items, s));
                }
                items.push(item(self)?);
                if self.eat_op(Op::Comma).is_none() {
                    let found = self.peek().to_string();
                    return self.fail(format!(
                        "unexpected {found}, expecting trailing comma (a multi-line list needs `,` after every item)"
                    ));
                }
                if !matches!(self.peek(), Tok::Nl) {
                    let found = self.peek().to_string();
                    return self.fail(format!(
                        "unexpected {found}, expected a newline after `,` in a multi-line list"
                    ));
                }
            }
        }
        loop {
            items.push(item(self)?);
            if let Some(s) = self.eat_op(close) {
                return Ok((items, s));
            }
            if self.eat_op(Op::Comma).is_none() {
                return self.expected(&format!("`,` or `{}`", close.as_str()));
            }
            if self.at_op(close) {
                return self.fail(format!(
                    "trailing comma before `{}` in a single-line list",
                    close.as_str()
                ));
            }
        }
    }

    fn params(&mut self) -> P<Vec<Param>> {
        Ok(self.seq(Op::RParen, |p| p.param())?.0)
    }

    fn param(&mut self) -> P<Param> {
        let start = self.span();
        let name = self.var_def()?;
        let ty = if self.at_op(Op::Comma) || self.at_op(Op::RParen) {
            None
        } else {
            Some(self.ty()?)
        };
        Ok(Param {
            name,
            ty,
            span: start.to(self.prev_span()),
        })
    }

    fn args(&mut self) -> P<Vec<Expr>> {
        Ok(self.seq(Op::RParen, |p| p.expr())?.0)
    }

    // ----- types -----

    fn ty(&mut self) -> P<TypeExpr> {
        self.enter()?;
        let r = self.ty_inner();
        self.leave();
        r
    }

    fn ty_inner(&mut self) -> P<TypeExpr> {
        let start = self.span();
        let kind = match self.peek() {
            Tok::Kw(Kw::Bool) => {
                self.bump();
                TypeKind::Bool
            }
            Tok::Kw(Kw::Str) => {
                self.bump();
                TypeKind::Str
            }
            Tok::Kw(Kw::Int) => {
                self.bump();
                TypeKind::Int
            }
            Tok::Kw(Kw::Float) => {
                self.bump();
                TypeKind::Float
            }
            Tok::Kw(Kw::Variant) => {
                self.bump();
                TypeKind::Variant
            }
            Tok::Op(Op::LBracket) => {
                self.bump();
                self.expect_op(Op::RBracket)?;
                TypeKind::List(Box::new(self.ty()?))
            }
            Tok::Kw(Kw::Map) => {
                self.bump();
                self.expect_op(Op::LBrace)?;
                let k = self.ty()?;
                self.expect_op(Op::Colon)?;
                let v = self.ty()?;
                self.expect_op(Op::RBrace)?;
                TypeKind::Map(Box::new(k), Box::new(v))
            }
            Tok::Kw(Kw::Struct) => {
                self.bump();
                self.expect_op(Op::LBrace)?;
                let mut fields: Vec<(Name, TypeExpr)> = Vec::new();
                if self.eat_op(Op::RBrace).is_none() {
                    loop {
                        let name = self.ident("a struct field name")?;
                        if fields.iter().any(|(n, _)| n.text == name.text) {
                            return self.fail_at(
                                name.span,
                                format!("duplicate field `{}` in struct type", name.text),
                            );
                        }
                        let t = self.ty()?;
                        fields.push((name, t));
                        if self.eat_op(Op::RBrace).is_some() {
                            break;
                        }
                        if self.eat_op(Op::Semi).is_none() {
                            return self.expected("`;` or `}` in a struct type");
                        }
                    }
                }
                TypeKind::Struct(fields)
            }
            Tok::Kw(Kw::Func) => {
                self.bump();
                self.expect_op(Op::LParen)?;
                let mut params: Vec<(Option<Name>, TypeExpr)> = Vec::new();
                if self.eat_op(Op::RParen).is_none() {
                    loop {
                        let name = if self.at_op(Op::Dollar) {
                            let n = self.var_def()?;
                            if params
                                .iter()
                                .any(|(o, _)| o.as_ref().is_some_and(|o| o.text == n.text))
                            {
                                return self.fail_at(
                                    n.span,
                                    format!("duplicate argument `${}` in func type", n.text),
                                );
                            }
                            Some(n)
                        } else {
                            None
                        };
                        let t = self.ty()?;
                        params.push((name, t));
                        if self.eat_op(Op::RParen).is_some() {
                            break;
                        }
                        if self.eat_op(Op::Comma).is_none() {
                            return self.expected("`,` or `)` in a func type");
                        }
                    }
                }
                let ret = self.ty()?;
                TypeKind::Func {
                    params,
                    ret: Box::new(ret),
                }
            }
            _ => return self.expected("a type"),
        };
        Ok(TypeExpr {
            kind,
            span: start.to(self.prev_span()),
        })
    }

    // ----- expressions -----

    fn expr(&mut self) -> P<Expr> {
        self.binary(EXCEPT_PREC)
    }

    /// Precedence climbing over the binary operators with binding power `>= min`.
    fn binary(&mut self, min: u8) -> P<Expr> {
        self.enter()?;
        let r = self.binary_inner(min);
        self.leave();
        r
    }

    fn binary_inner(&mut self, min: u8) -> P<Expr> {
        let mut lhs = self.unary()?;
        let mut compared = false;
        loop {
            if self.at_op(Op::Except) {
                if EXCEPT_PREC < min {
                    break;
                }
                self.bump();
                let rhs = self.binary(EXCEPT_PREC + 1)?;
                let span = lhs.span.to(rhs.span);
                lhs = Expr {
                    kind: ExprKind::Except {
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                    span,
                };
                compared = false;
                continue;
            }
            let Some((op, prec)) = binop(self.peek()) else {
                break;
            };
            if prec < min {
                break;
            }
            if prec == CMP_PREC && compared {
                return self.fail(format!(
                    "comparison operators do not chain: parenthesise before `{}`",
                    op.as_str()
                ));
            }
            let op_span = self.bump().span;
            let rhs = self.binary(prec + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    op_span,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            };
            compared = prec == CMP_PREC;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> P<Expr> {
        if let Some(s) = self.eat_kw(Kw::Not) {
            self.enter()?;
            let inner = self.unary();
            self.leave();
            let inner = inner?;
            let span = s.to(inner.span);
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                span,
            });
        }
        let mut e = self.primary()?;
        loop {
            if self.at_op(Op::Arrow) {
                self.bump();
                let field = self.ident("a struct field name after `->`")?;
                if self.at_op(Op::Except) {
                    self.bump();
                    let default = self.binary(EXCEPT_PREC + 1)?;
                    let span = e.span.to(default.span);
                    return Ok(Expr {
                        kind: ExprKind::OptField {
                            base: Box::new(e),
                            field,
                            default: Box::new(default),
                        },
                        span,
                    });
                }
                let span = e.span.to(field.span);
                e = Expr {
                    kind: ExprKind::Field {
                        base: Box::new(e),
                        field,
                    },
                    span,
                };
            } else if self.at_op(Op::LBracket) {
                self.bump();
                let index = self.expr()?;
                let close = self.expect_op(Op::RBracket)?;
                let span = e.span.to(close);
                e = Expr {
                    kind: ExprKind::Index {
                        base: Box::new(e),
                        index: Box::new(index),
                    },
                    span,
                };
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn primary(&mut self) -> P<Expr> {
        let t = self.tok();
        let kind = match &t.tok {
            Tok::Int(n) => ExprKind::Int(*n),
            Tok::Float(x) => ExprKind::Float(*x),
            Tok::Str(s) => ExprKind::RawStr(s.clone()),
            Tok::Kw(Kw::True) => ExprKind::Bool(true),
            Tok::Kw(Kw::False) => ExprKind::Bool(false),
            Tok::Op(Op::LBracket) => return self.list_lit(t.span),
            Tok::Op(Op::LBrace) => return self.map_lit(t.span),
            Tok::Kw(Kw::Struct) => return self.struct_lit(t.span),
            Tok::Op(Op::Dollar) => return self.var_expr(t.span),
            Tok::Ident(_) | Tok::Kw(Kw::Map) | Tok::Kw(Kw::Collect) => return self.named_call(),
            Tok::Kw(Kw::Func) => return self.lambda_expr(t.span),
            Tok::Kw(Kw::If) => return self.if_expr(t.span),
            Tok::Op(Op::LParen) => return self.paren_expr(t.span),
            Tok::Op(Op::Minus) => {
                return self.fail(
                    "there is no unary minus (a `-` followed by a digit is a negative literal; write `0 - $x`)",
                )
            }
            _ => return self.expected("an expression"),
        };
        self.bump();
        Ok(Expr { kind, span: t.span })
    }

    #[inline(never)]
    fn list_lit(&mut self, open: Span) -> P<Expr> {
        self.bump();
        let (items, close) = self.seq(Op::RBracket, |p| p.expr())?;
        Ok(Expr {
            kind: ExprKind::List(items),
            span: open.to(close),
        })
    }

    #[inline(never)]
    fn map_lit(&mut self, open: Span) -> P<Expr> {
        self.bump();
        let (items, close) = self.seq(Op::RBrace, |p| {
            let key = p.expr()?;
            p.expect_op(Op::FatArrow)?;
            let value = p.expr()?;
            Ok(MapEntry { key, value })
        })?;
        Ok(Expr {
            kind: ExprKind::Map(items),
            span: open.to(close),
        })
    }

    #[inline(never)]
    fn struct_lit(&mut self, open: Span) -> P<Expr> {
        self.bump();
        self.expect_op(Op::LBrace)?;
        let (fields, close) = self.seq(Op::RBrace, |p| {
            let name = p.ident("a struct field name")?;
            p.expect_op(Op::FatArrow)?;
            let value = p.expr()?;
            Ok(StructField { name, value })
        })?;
        Ok(Expr {
            kind: ExprKind::Struct(fields),
            span: open.to(close),
        })
    }

    #[inline(never)]
    fn var_expr(&mut self, dollar: Span) -> P<Expr> {
        self.bump();
        let name = self.dotted("a variable name")?;
        let span = dollar.to(name.span);
        if self.eat_op(Op::LParen).is_some() {
            let args = self.args()?;
            return Ok(Expr {
                kind: ExprKind::Call {
                    callee: Callee::Var(Name::new(name.text, span)),
                    args,
                },
                span: span.to(self.prev_span()),
            });
        }
        Ok(Expr {
            kind: ExprKind::Var(Name::new(name.text, span)),
            span,
        })
    }

    #[inline(never)]
    fn named_call(&mut self) -> P<Expr> {
        let name = self.dotted("a function name")?;
        if self.eat_op(Op::LParen).is_none() {
            return self.fail(format!(
                "unexpected {}, expected `(` to call `{}` (variables are written `${}`)",
                self.peek(),
                name.text,
                name.text
            ));
        }
        let args = self.args()?;
        let span = name.span.to(self.prev_span());
        Ok(Expr {
            kind: ExprKind::Call {
                callee: Callee::Named(name),
                args,
            },
            span,
        })
    }

    #[inline(never)]
    fn lambda_expr(&mut self, start: Span) -> P<Expr> {
        self.bump();
        self.expect_op(Op::LParen)?;
        let params = self.params()?;
        let ret = if self.at_op(Op::LBrace) {
            None
        } else {
            Some(self.ty()?)
        };
        let body = self.expr_block()?;
        let lambda = Lambda {
            params,
            ret,
            body: Box::new(body),
        };
        let span = start.to(self.prev_span());
        if self.eat_op(Op::LParen).is_some() {
            let args = self.args()?;
            return Ok(Expr {
                kind: ExprKind::Call {
                    callee: Callee::Lambda(Box::new(lambda)),
                    args,
                },
                span: span.to(self.prev_span()),
            });
        }
        Ok(Expr {
            kind: ExprKind::Lambda(lambda),
            span,
        })
    }

    #[inline(never)]
    fn if_expr(&mut self, start: Span) -> P<Expr> {
        self.bump();
        let cond = self.expr()?;
        let then = self.expr_block()?;
        if self.eat_kw(Kw::Else).is_none() {
            return self.expected("`else` (an if-expression needs both branches)");
        }
        let els = self.expr_block()?;
        Ok(Expr {
            kind: ExprKind::If {
                cond: Box::new(cond),
                then: Box::new(then),
                els: Box::new(els),
            },
            span: start.to(self.prev_span()),
        })
    }

    #[inline(never)]
    fn paren_expr(&mut self, open: Span) -> P<Expr> {
        self.bump();
        let mut inner = self.expr()?;
        let close = self.expect_op(Op::RParen)?;
        inner.span = open.to(close);
        Ok(inner)
    }

    /// `{ [NL] expr [NL] }`.
    fn expr_block(&mut self) -> P<Expr> {
        if self.eat_op(Op::LBrace).is_none() {
            return self.expected("`{`");
        }
        self.skip_nls();
        let e = self.expr()?;
        self.skip_nls();
        self.expect_op(Op::RBrace)?;
        Ok(e)
    }
}

/// The depth of an expression tree, computed without recursion.
fn tree_depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        stack.extend(e.children().into_iter().map(|c| (c, d + 1)));
    }
    max
}

/// At a line feed, forgets the one-line brackets opened last (they cannot continue on the
/// next line).
fn drop_one_line(open: &mut Vec<(Op, bool)>) {
    while matches!(open.last(), Some(&(_, false))) {
        open.pop();
    }
}

/// Pops the brackets closed by `close` (up to its matching opener; nothing if none matches).
fn close(open: &mut Vec<(Op, bool)>, close: Op) {
    let opener = match close {
        Op::RBrace => Op::LBrace,
        Op::RParen => Op::LParen,
        _ => Op::LBracket,
    };
    if let Some(i) = open.iter().rposition(|&(o, _)| o == opener) {
        open.truncate(i);
    }
}

/// The type of a scalar literal, for the bind annotation check (spec §13 W15).
fn literal_type(e: &ExprKind) -> Option<TypeKind> {
    match e {
        ExprKind::Bool(_) => Some(TypeKind::Bool),
        ExprKind::Int(_) => Some(TypeKind::Int),
        ExprKind::Float(_) => Some(TypeKind::Float),
        ExprKind::RawStr(_) | ExprKind::Str(_) => Some(TypeKind::Str),
        _ => None,
    }
}

fn type_text(t: &TypeKind) -> &'static str {
    match t {
        TypeKind::Bool => "bool",
        TypeKind::Str => "str",
        TypeKind::Int => "int",
        TypeKind::Float => "float",
        TypeKind::List(_) => "list",
        TypeKind::Map(..) => "map",
        TypeKind::Struct(_) => "struct",
        TypeKind::Func { .. } => "func",
        TypeKind::Variant => "variant",
    }
}

/// Decodes the escapes of spec §2 (`\a \b \f \n \r \t \v \\ \" \$`) in a raw literal.
pub fn decode_escapes(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some(e) => match decode_escape(e) {
                Some(d) => out.push(d),
                None => return Err(format!("unknown escape `\\{e}`")),
            },
            None => return Err("a string cannot end with a lone `\\`".to_string()),
        }
    }
    Ok(out)
}

/// The character an escape `\c` stands for, if `c` is a valid escape letter.
pub fn decode_escape(c: char) -> Option<char> {
    Some(match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        '\\' => '\\',
        '"' => '"',
        '$' => '$',
        _ => return None,
    })
}
