//! Data-driven tests of the syntax front (lexer, parser, init, interpolate, rendering).
//!
//! Each file in `tests/syntax_data/` holds cases:
//!
//! ```text
//! ### case name [flags]
//! input lines
//! ---
//! expected output lines
//! ```
//!
//! The file name picks the mode (`lex`, `parse`, `parse_errors`, `spans`, `front`, `render`,
//! `pretty`). Flags: `nonl`
//! strips the input's final line feed; in the input, `<CR>` stands for a carriage return and
//! `<TAB>` for a tab. Run with `UPDATE_GOLDEN=1` to rewrite the expected outputs from the actual
//! ones (then review the diff).

use std::fmt::Write;
use std::path::Path;

use tend_lang::diag::SourceMap;
use tend_lang::syntax::{front, lexer, parse, sexp};

/// Runs one case in one mode and returns the output text.
fn run(mode: &str, input: &str) -> String {
    let mut map = SourceMap::new();
    let file = map.add("/main.mcl", input);
    let mut out = String::new();
    match mode {
        "lex" => {
            let (toks, errors) = lexer::lex(file, input);
            for t in toks {
                let _ = writeln!(out, "{} {:?}", t.span.range_text(), t.tok);
            }
            for e in errors {
                let _ = writeln!(out, "{}", e.headline(&map));
            }
        }
        "parse" | "parse_errors" => {
            let (prog, errors) = parse(file, input);
            out.push_str(&sexp::program(&prog, false));
            for e in errors {
                let _ = writeln!(out, "{}", e.headline(&map));
            }
        }
        "spans" => {
            // Statements with their spans, each followed by its expressions (pre-order).
            let result = front(file, input);
            let prog = match &result {
                Ok(p) => p.clone(),
                Err(_) => parse(file, input).0,
            };
            fn expr_lines(e: &tend_lang::syntax::ast::Expr, depth: usize, out: &mut String) {
                let _ = writeln!(
                    out,
                    "{}{} {}",
                    "  ".repeat(depth),
                    e.span.range_text(),
                    sexp::expr(e)
                );
                for c in e.children() {
                    expr_lines(c, depth + 1, out);
                }
            }
            fn stmt_lines(stmts: &[tend_lang::syntax::ast::Stmt], out: &mut String) {
                for s in stmts {
                    let _ = writeln!(out, "{} {}", s.span.range_text(), sexp::stmt(s));
                    for e in s.exprs() {
                        expr_lines(e, 1, out);
                    }
                    for b in s.blocks() {
                        stmt_lines(&b.stmts, out);
                    }
                }
            }
            stmt_lines(&prog.stmts, &mut out);
            if let Err(errors) = result {
                for e in errors {
                    let _ = writeln!(out, "{}", e.headline(&map));
                }
            }
        }
        "front" => match front(file, input) {
            Ok(prog) => out.push_str(&sexp::program(&prog, false)),
            Err(errors) => {
                for e in errors {
                    let _ = writeln!(out, "{}", e.headline(&map));
                }
            }
        },
        "render" => match front(file, input) {
            Ok(_) => out.push_str("ok\n"),
            Err(errors) => out.push_str(&map.render_all(&errors)),
        },
        "pretty" => match front(file, input) {
            Ok(_) => out.push_str("ok\n"),
            Err(errors) => {
                for e in errors {
                    out.push_str(&e.render_pretty(&map));
                }
            }
        },
        _ => panic!("unknown mode {mode}"),
    }
    out
}

struct Case {
    name: String,
    flags: String,
    input: String,
    expect: String,
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for chunk in text.split("\n### ").map(|c| c.trim_start_matches("### ")) {
        if chunk.trim().is_empty() {
            continue;
        }
        let (head, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let (name, flags) = match head.split_once(" [") {
            Some((n, f)) => (n.to_string(), f.trim_end_matches(']').to_string()),
            None => (head.to_string(), String::new()),
        };
        let (input, expect) = match rest.split_once("---\n") {
            Some((i, e)) => (i.to_string(), e.to_string()),
            None => (rest.trim_end_matches("---").to_string(), String::new()),
        };
        cases.push(Case {
            name,
            flags,
            input,
            expect,
        });
    }
    cases
}

fn check_file(mode: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/syntax_data")
        .join(format!("{mode}.txt"));
    let text = std::fs::read_to_string(&path).expect("read test data");
    let cases = parse_cases(&text);
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    let bless = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut rewritten = String::new();
    for case in &cases {
        let mut input = case.input.replace("<CR>", "\r").replace("<TAB>", "\t");
        if case.flags.contains("nonl") && input.ends_with('\n') {
            input.pop();
        }
        let actual = run(mode, &input);
        if actual.trim_end() != case.expect.trim_end() {
            failures.push(format!(
                "--- case `{}` in {}\n--- input:\n{}--- expected:\n{}\n--- actual:\n{}",
                case.name,
                path.display(),
                input,
                case.expect.trim_end(),
                actual.trim_end()
            ));
        }
        let head = if case.flags.is_empty() {
            case.name.clone()
        } else {
            format!("{} [{}]", case.name, case.flags)
        };
        let _ = write!(rewritten, "### {head}\n{}---\n{}", case.input, actual);
        if !actual.ends_with('\n') {
            rewritten.push('\n');
        }
        rewritten.push('\n');
    }
    if bless {
        std::fs::write(&path, rewritten.trim_end().to_string() + "\n").expect("write test data");
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (UPDATE_GOLDEN=1 rewrites):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn lex() {
    check_file("lex");
}

#[test]
fn parse_statements_and_expressions() {
    check_file("parse");
}

#[test]
fn parse_errors_and_recovery() {
    check_file("parse_errors");
}

#[test]
fn spans() {
    check_file("spans");
}

#[test]
fn front_stages() {
    check_file("front");
}

#[test]
fn render() {
    check_file("render");
}

#[test]
fn render_pretty() {
    check_file("pretty");
}

/// Bylines list further spans after `, ` and the importing statements after `: ` (spec §11.2);
/// the source line shown is the one of the primary span, in its own file.
#[test]
fn render_import_chain_and_cycles() {
    use tend_lang::diag::{Error, Stage};
    let mut map = SourceMap::new();
    let main_src = "import \"lib/util.mcl\"\n";
    let lib_src = "$a = $b + \"!\"\n$b = $a + \"?\"\n";
    let main = map.add("/main.mcl", main_src);
    let lib = map.add("/lib/util.mcl", lib_src);
    let (main_prog, _) = parse(main, main_src);
    let (lib_prog, _) = parse(lib, lib_src);
    let refs: Vec<_> = lib_prog
        .stmts
        .iter()
        .flat_map(|s| s.exprs())
        .flat_map(|e| e.children())
        .filter(|e| matches!(e.kind, tend_lang::syntax::ast::ExprKind::Var(_)))
        .map(|e| e.span)
        .collect();
    assert_eq!(refs.len(), 2);
    let err = Error::new(Stage::SetScope, "recursive reference", refs[0])
        .with_also([refs[1]])
        .imported_at(main_prog.stmts[0].span);
    assert_eq!(
        err.render(&map),
        "error: errSetScope: recursive reference: /lib/util.mcl @ 1:6-1:8, \
         /lib/util.mcl @ 2:6-2:8: /main.mcl @ 1:1-1:22\n\n$a = $b + \"!\"\n     ^^\n"
    );
    let pretty = err.render_pretty(&map);
    assert!(
        pretty.contains("imported at /main.mcl @ 1:1-1:22"),
        "{pretty}"
    );
    assert!(pretty.contains("/lib/util.mcl:1:6"), "{pretty}");
}
