//! The syntax front of mcl: spans, lexer, AST and parser (spec §2–§3), plus the [`front`]
//! entry point that also runs the init and interpolate stages.
//!
//! Parsing never fails: [`parse`] returns the tree *and* every error it found, recovering at the
//! next statement after an error. Nothing here knows about scopes, types or evaluation.

pub mod ast;
pub mod lexer;
pub mod parser;
pub mod sexp;
pub mod span;

use crate::diag::Error;
use span::FileId;

/// Lexes and parses one file. Returns the program (statements that failed to parse are left
/// out) and every lex/parse error, sorted by position.
pub fn parse(file: FileId, src: &str) -> (ast::Program, Vec<Error>) {
    let (toks, mut errors) = lexer::lex(file, src);
    let (prog, perrs) = parser::parse_tokens(file, &toks);
    errors.extend(perrs);
    errors.sort_by_key(|e| (e.span.lo, e.span.hi));
    (prog, errors)
}

/// Runs the front stages on one file: lex/parse, then init (spec §11.1), then interpolate
/// (spec §4). Each stage runs only when the previous one found no error, so the returned errors
/// all belong to the first failing stage.
pub fn front(file: FileId, src: &str) -> Result<ast::Program, Vec<Error>> {
    let (mut prog, errors) = parse(file, src);
    if !errors.is_empty() {
        return Err(errors);
    }
    let errors = crate::check::init::check(&prog);
    if !errors.is_empty() {
        return Err(errors);
    }
    let errors = crate::check::interpolate::run(&mut prog);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(prog)
}
