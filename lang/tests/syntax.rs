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
//! The file name picks the mode (`lex`, `parse`, `spans`, `front`, `render`). Flags: `nonl`
//! strips the input's final line feed; in the input, `<CR>` stands for a carriage return and
//! `<TAB>` for a tab. Run with `TEND_BLESS=1` to rewrite the expected outputs from the actual
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
        "parse" | "parse_errors" | "spans" => {
            let (prog, errors) = parse(file, input);
            out.push_str(&sexp::program(&prog, mode == "spans"));
            for e in errors {
                let _ = writeln!(out, "{}", e.headline(&map));
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
    let bless = std::env::var_os("TEND_BLESS").is_some();
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
        "{} of {} cases failed (TEND_BLESS=1 rewrites):\n{}",
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
