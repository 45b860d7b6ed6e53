//! Property/fuzz test of the syntax front: the lexer, parser, init and interpolate stages and
//! the error renderer never panic, whatever the input, and every span they report lies inside
//! the file.
//!
//! Four generators: deep nesting and long chains, token soup (random sequences of mcl tokens
//! and near-tokens), arbitrary text, and near-valid programs (the valid and invalid inputs of
//! the syntax test data and golden cases, mutated by deleting, inserting, replacing and duplicating pieces).
//!
//! The default run is short. `TEND_FUZZ_SECS=600 cargo test -p tend-lang --test
//! fuzz_parser -- --nocapture` runs the generators round-robin for that many seconds and
//! prints the number of executions; a panic prints the input that caused it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use tend_lang::diag::{Error, SourceMap};
use tend_lang::syntax::ast::{Expr, Span, Stmt};
use tend_lang::syntax::{front, lexer, parse, sexp};

/// Tokens (and near-tokens) the soup is made of.
const VOCAB: &[&str] = &[
    "\n",
    "\n",
    "\n",
    " ",
    "\t",
    "$",
    "$x",
    "$map",
    "$a.b",
    "x",
    "fmt",
    ".",
    "printf",
    "test",
    "file",
    "http",
    ":",
    "Test",
    "File",
    "Meta",
    "Before",
    "Notify",
    "Depend",
    "Listen",
    "Frob",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "=",
    "==",
    "=>",
    "->",
    "?:",
    "<|>",
    "+",
    "-",
    "*",
    "/",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "and",
    "or",
    "not",
    "in",
    "if",
    "else",
    "for",
    "forkv",
    "func",
    "class",
    "include",
    "import",
    "as",
    "collect",
    "panic",
    "true",
    "false",
    "bool",
    "str",
    "int",
    "float",
    "map",
    "struct",
    "variant",
    "0",
    "-1",
    "42",
    "9223372036854775808",
    "1.5",
    "-0.0",
    "\"a\"",
    "\"${x}\"",
    "\"${\"",
    "\"\\q\"",
    "\"a\\\"",
    "\"$$${y}z\"",
    "\"",
    "#c",
    "\r",
    "!",
    "_",
    "a_",
    "é",
    "\u{0}",
    "fooBar",
    "*",
    "\"\n\"",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 0..80).prop_map(|toks| {
        let mut s = String::new();
        for (i, t) in toks.iter().enumerate() {
            if i % 3 == 0 {
                s.push(' ');
            }
            s.push_str(t);
        }
        s
    })
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        "[ -~\n\t]{0,300}",
        prop::collection::vec(any::<char>(), 0..100).prop_map(|v| v.into_iter().collect()),
    ]
}

/// Deep nesting and long chains (brackets, operators, postfix lookups, blocks).
fn deep() -> impl Strategy<Value = String> {
    let patterns: &[(&str, &str, &str)] = &[
        ("$x = ", "[", "]"),
        ("$x = ", "(", ")"),
        ("$x = ", "{1 => ", "}"),
        ("$x = ", "not ", ""),
        ("$x = 1", " + 1", ""),
        ("$x = $a", "[0]", ""),
        ("$x = $a", "->b", ""),
        ("$x = $a", " <|> $b", ""),
        ("", "if true {\n", "}\n"),
        ("$x = ", "func() { ", " }"),
        ("$x = ", "if true { 1 } else { ", " }"),
        ("$t ", "[]", "int = 1"),
        ("$t ", "map{str: ", "}"),
        ("$x = ", "\"${", "}\""),
    ];
    (prop::sample::select(patterns), 0usize..3000, any::<bool>()).prop_map(
        |((head, open, close), n, closed)| {
            let mut s = String::from(head);
            s.push_str(&open.repeat(n));
            if closed {
                s.push_str(&close.repeat(n));
            }
            s.push('\n');
            s
        },
    )
}

/// One edit of a near-valid program: (kind, position, length, vocabulary index).
type Edit = (u8, usize, usize, usize);

fn mutate(src: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for &(kind, pos, len, tok) in edits {
        let n = chars.len();
        let at = if n == 0 { 0 } else { pos % (n + 1) };
        let len = len % 8;
        let token: Vec<char> = VOCAB[tok % VOCAB.len()].chars().collect();
        match kind % 5 {
            0 => {
                let end = (at + len).min(n);
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, token);
            }
            2 => {
                let end = (at + len).min(n);
                chars.splice(at..end, token);
            }
            3 => {
                // Duplicate the line around `at`.
                let start = chars[..at]
                    .iter()
                    .rposition(|&c| c == '\n')
                    .map_or(0, |i| i + 1);
                let end = chars[at..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(n, |i| at + i + 1);
                let line: Vec<char> = chars[start..end].to_vec();
                chars.splice(start..start, line);
            }
            _ => {
                // Swap two characters.
                if n > 1 {
                    let other = (at + len + 1) % n;
                    chars.swap(at.min(n - 1), other);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Valid and invalid programs from the test data, the seeds of the mutations.
fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("syntax_data")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for case in text.split("\n### ") {
                if let Some((_, rest)) = case.split_once('\n') {
                    if let Some((input, _)) = rest.split_once("---\n") {
                        out.push(input.to_string());
                    }
                }
            }
        }
    }
    for dir in ["golden/syntax", "golden/examples"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Some(main) = tend_lang::txtar::Archive::parse(&text).get("main.mcl") {
                    out.push(main.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    assert!(out.len() > 50, "fuzz corpus too small: {}", out.len());
    out
}

fn near_valid(corpus: Vec<String>) -> impl Strategy<Value = String> {
    let n = corpus.len();
    (
        0..n,
        prop::collection::vec(
            (any::<u8>(), any::<usize>(), any::<usize>(), any::<usize>()),
            0..6,
        ),
    )
        .prop_map(move |(i, edits)| mutate(&corpus[i], &edits))
}

fn check_span(span: Span, len: usize, what: &str) -> Result<(), String> {
    let ok = span.lo <= span.hi
        && span.hi as usize <= len + 1
        && span.start.line >= 1
        && span.start.col >= 1
        && span.start <= span.end;
    if ok {
        Ok(())
    } else {
        Err(format!("bad span {span:?} for {what}"))
    }
}

fn check_errors(map: &SourceMap, errors: &[Error], len: usize) -> Result<(), String> {
    for e in errors {
        check_span(e.span, len, &e.message)?;
    }
    // Rendering is checked on the first errors only (hostile inputs yield thousands).
    for e in errors.iter().take(8) {
        let text = e.render(map);
        if !text.starts_with("error: ") {
            return Err(format!("bad rendering {text:?}"));
        }
        let pretty = e.render_pretty(map);
        if !pretty.starts_with("error[") {
            return Err(format!("bad pretty rendering {pretty:?}"));
        }
    }
    Ok(())
}

/// Every expression lies inside its parent (statement or expression).
fn check_nesting(stmts: &[Stmt], len: usize) -> Result<(), String> {
    fn expr(e: &Expr, parent: Span, len: usize) -> Result<(), String> {
        check_span(e.span, len, "expression")?;
        if e.span.lo < parent.lo || e.span.hi > parent.hi {
            return Err(format!(
                "expression {} at {:?} outside its parent {:?}",
                sexp::expr(e),
                e.span,
                parent
            ));
        }
        for c in e.children() {
            expr(c, e.span, len)?;
        }
        Ok(())
    }
    for s in stmts {
        check_span(s.span, len, "statement")?;
        for e in s.exprs() {
            expr(e, s.span, len)?;
        }
        for b in s.blocks() {
            if b.span.lo < s.span.lo || b.span.hi > s.span.hi {
                return Err(format!(
                    "block {:?} outside its statement {:?}",
                    b.span, s.span
                ));
            }
            check_nesting(&b.stmts, len)?;
        }
    }
    Ok(())
}

/// The property: nothing panics, every span is inside the file, failed fronts report errors.
fn property(src: &str) -> Result<(), String> {
    let mut map = SourceMap::new();
    let file = map.add("/main.mcl", src);
    let (toks, lex_errors) = lexer::lex(file, src);
    for t in &toks {
        check_span(t.span, src.len(), "token")?;
    }
    check_errors(&map, &lex_errors, src.len())?;
    let (prog, errors) = parse(file, src);
    check_errors(&map, &errors, src.len())?;
    check_nesting(&prog.stmts, src.len())?;
    let _ = sexp::program(&prog, true);
    match front(file, src) {
        Ok(prog) => {
            if !errors.is_empty() {
                return Err("front succeeded although parse reported errors".into());
            }
            check_nesting(&prog.stmts, src.len())?;
            let _ = sexp::program(&prog, true);
        }
        Err(errors) => {
            if errors.is_empty() {
                return Err("front failed without errors".into());
            }
            check_errors(&map, &errors, src.len())?;
        }
    }
    Ok(())
}

fn run_one(src: &str) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| property(src))) {
        Ok(r) => r,
        Err(_) => Err("panicked".into()),
    }
}

#[test]
fn parser_never_panics() {
    let corpus = corpus();
    let secs: u64 = std::env::var("TEND_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if secs == 0 {
        let cfg = Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        };
        for strategy in [
            deep().boxed(),
            soup().boxed(),
            arbitrary_text().boxed(),
            near_valid(corpus.clone()).boxed(),
        ] {
            let mut runner = TestRunner::new(cfg.clone());
            let result = runner.run(&strategy, |src| {
                property(&src).map_err(|e| TestCaseError::fail(format!("{e}: {src:?}")))
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        }
        return;
    }
    // Long mode: round-robin over the generators until the time is up.
    let strategies = [
        deep().boxed(),
        soup().boxed(),
        arbitrary_text().boxed(),
        near_valid(corpus).boxed(),
    ];
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut execs: u64 = 0;
    let mut failures = Vec::new();
    while Instant::now() < deadline {
        for s in &strategies {
            let src = s.new_tree(&mut runner).expect("generate").current();
            execs += 1;
            if let Err(e) = run_one(&src) {
                eprintln!("FAILURE: {e}: {src:?}");
                failures.push((e, src));
            }
        }
        if execs % 100_000 < 3 {
            eprintln!("fuzz_parser: {execs} executions");
        }
    }
    println!(
        "fuzz_parser: {execs} executions in {secs} s, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "failures: {failures:?}");
}
