//! mcl, the configuration language (spec/mcl.md): syntax (lexer, parser, AST, spans), checks,
//! types (unification), the reactive function graph, the core library, and the interpreter that
//! turns each value set into a `tend_model::GraphSpec`.
//!
//! **`lang` knows no concrete resource kind**: it type-checks resource fields against the
//! schemas handed to it.

pub mod check;
pub mod diag;
pub mod syntax;

pub mod funcs;
pub mod graph;
pub mod interp;
pub mod program;
pub mod scope;
pub mod txtar;
pub mod types;
pub mod unify;
