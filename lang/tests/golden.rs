//! The golden runner (spec §12): every `tests/golden/**/*.txtar` case is a program (`-- main.mcl
//! --` plus further files), an optional `-- WORLD --` seed, and an `-- OUTPUT --` section with
//! either the sorted `Vertex:`/`Edge:` lines of the first graph or `# err: <tag>: <message>:
//! <byline>` lines (the tag and first byline must match one of them).
//!
//! `UPDATE_GOLDEN=1 cargo test -p tend-lang --test golden` rewrites every OUTPUT section from
//! the actual results (review the diff afterwards).
//!
//! The `test` and `print` kinds are described here from spec §8.2 (the language itself knows
//! no kind).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tend_engine::{Field, KindSchema, ResSpec, Type, Value};
use tend_lang::funcs::world::MemWorld;
use tend_lang::interp::print_graph;
use tend_lang::program::{compile, Options};

fn test_schemas() -> BTreeMap<String, KindSchema> {
    let mut t = KindSchema::new("test");
    for f in [
        "bool",
        "str",
        "anotherstr",
        "comment",
        "sendvalue",
        "validateerror",
    ] {
        t = t.field(Field::new(f, Type::Str, ""));
    }
    let ranges: [(&str, i128, i128); 13] = [
        ("int", i64::MIN as i128, i64::MAX as i128),
        ("int8", -128, 127),
        ("int16", -32768, 32767),
        ("int32", i32::MIN as i128, i32::MAX as i128),
        ("int64", i64::MIN as i128, i64::MAX as i128),
        ("uint", 0, u64::MAX as i128),
        ("uint8", 0, 255),
        ("uint16", 0, 65535),
        ("uint32", 0, u32::MAX as i128),
        ("uint64", 0, u64::MAX as i128),
        ("byte", 0, 255),
        ("rune", i32::MIN as i128, i32::MAX as i128),
        ("waitforerror", i64::MIN as i128, i64::MAX as i128),
    ];
    for (n, lo, hi) in ranges {
        t = t.field(Field::new(n, Type::Int, "").range(lo, hi));
    }
    t = t
        .field(Field::new("float32", Type::Float, ""))
        .field(Field::new("float64", Type::Float, ""))
        .field(Field::new("boolptr", Type::Bool, "").optional())
        .field(Field::new("stringptr", Type::Str, "").optional())
        .field(Field::new("int64ptr", Type::Int, "").optional())
        .field(
            Field::new("int8ptr", Type::Int, "")
                .range(-128, 127)
                .optional(),
        )
        .field(
            Field::new("uint8ptr", Type::Int, "")
                .range(0, 255)
                .optional(),
        )
        .field(
            Field::new("int8ptrptrptr", Type::Int, "")
                .range(-128, 127)
                .optional(),
        )
        .field(Field::new(
            "slicestring",
            Type::List(Box::new(Type::Str)),
            "",
        ))
        .field(Field::new("onlyshow", Type::List(Box::new(Type::Str)), ""))
        .field(Field::new(
            "expectrecv",
            Type::List(Box::new(Type::Str)),
            "",
        ))
        .field(Field::new(
            "mapintfloat",
            Type::Map(Box::new(Type::Int), Box::new(Type::Float)),
            "",
        ))
        .field(Field::new(
            "mixedstruct",
            Type::Struct(vec![
                ("somebool".into(), Type::Bool),
                ("somestr".into(), Type::Str),
                ("someint".into(), Type::Int),
                ("somefloat".into(), Type::Float),
            ]),
            "",
        ))
        .field(Field::new("interface", Type::Any, ""))
        .field(Field::new("validatebool", Type::Bool, ""))
        .field(Field::new("alwaysgroup", Type::Bool, ""))
        .field(Field::new("comparefail", Type::Bool, ""));
    t.sends = vec![("hello".into(), Type::Str), ("answer".into(), Type::Int)];
    t.can_recv = true;
    let p = KindSchema::new("print")
        .field(Field::new("msg", Type::Str, ""))
        .field(Field::new("refresh_only", Type::Bool, ""));
    let mut f = KindSchema::new("file")
        .field(Field::new("path", Type::Str, ""))
        .field(Field::new("content", Type::Str, "").optional())
        .field(Field::new("state", Type::Str, "").allowed(&["exists", "absent", ""]));
    f.refreshable = true;
    [t, p, f].into_iter().map(|s| (s.kind.clone(), s)).collect()
}

fn validate_test(spec: &ResSpec) -> Result<(), String> {
    if spec.kind != "test" {
        return Ok(());
    }
    if spec.params.get("validatebool") == Some(&Value::Bool(true)) {
        return Err("validatebool is true".into());
    }
    match spec.params.get("validateerror") {
        Some(Value::Str(s)) if !s.is_empty() => Err(format!("validateerror: {s}")),
        _ => Ok(()),
    }
}

/// Splits a txtar text into (comment, sections).
fn parse_txtar(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches('\n');
        if let Some(name) = l.strip_prefix("-- ").and_then(|r| r.strip_suffix(" --")) {
            out.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
        }
    }
    out
}

/// `(tag, first byline)` of an error line `[error: |# err: ]<tag>: <msg>: <file> @ <range>…`.
fn tag_and_byline(line: &str) -> Option<(String, String)> {
    let l = line
        .trim()
        .trim_start_matches("# err: ")
        .trim_start_matches("error: ");
    let tag = l.split(':').next()?.to_string();
    let at = l.find(" @ ")?;
    let path = l[..at].rsplit(": ").next()?.to_string();
    let range: String = l[at + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':' || *c == '-')
        .collect();
    Some((tag, format!("{path} @ {range}")))
}

/// Runs one case; returns the actual OUTPUT text.
fn run_case(rt: &tokio::runtime::Runtime, sections: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut world_text = "{}".to_string();
    for (name, body) in sections {
        match name.as_str() {
            "OUTPUT" => {}
            "WORLD" => world_text = body.clone(),
            f => {
                let p = dir.path().join(f);
                std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
                std::fs::write(p, body).expect("write case file");
            }
        }
    }
    let world = match MemWorld::from_json(&world_text, None) {
        Ok(w) => w,
        Err(e) => return format!("# bad WORLD: {e}\n"),
    };
    let opts = Options {
        hostname: tend_lang::funcs::world::WorldView::hostname(world.as_ref()),
        schemas: test_schemas(),
        world,
        validate: Some(Arc::new(validate_test)),
    };
    let prog = match compile(&dir.path().join("main.mcl"), opts) {
        Ok(p) => p,
        Err(f) => {
            return format!(
                "# err: {}\n",
                f.errors[0].headline(&f.map).trim_start_matches("error: ")
            )
        }
    };
    let map = prog.sources().clone();
    let _ = map;
    rt.block_on(async move {
        let mut rx = prog.run();
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Ok(g))) => print_graph(&g),
            Ok(Some(Err(e))) => {
                let head = e.lines().next().unwrap_or_default();
                format!("# err: {}\n", head.trim_start_matches("error: "))
            }
            Ok(None) => "# err: errStream: the program ended without a graph\n".into(),
            Err(_) => "# err: errStream: no first graph within 10 s\n".into(),
        }
    })
}

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            cases(&p, out);
        } else if p.extension().is_some_and(|e| e == "txtar") {
            out.push(p);
        }
    }
}

fn matches(expected: &str, actual: &str) -> bool {
    let errs: Vec<&str> = expected
        .lines()
        .filter(|l| l.starts_with("# err:"))
        .collect();
    if !errs.is_empty() {
        let Some(a) = tag_and_byline(actual.lines().next().unwrap_or_default()) else {
            return false;
        };
        return errs.iter().any(|e| tag_and_byline(e).as_ref() == Some(&a));
    }
    let sorted = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    sorted(expected) == sorted(actual)
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut all = Vec::new();
    cases(&root, &mut all);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut failures = Vec::new();
    for case in &all {
        let text = std::fs::read_to_string(case).expect("read case");
        let sections = parse_txtar(&text);
        let expected = sections
            .iter()
            .find(|(n, _)| n == "OUTPUT")
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let actual =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&rt, &sections)))
                .unwrap_or_else(|_| "# PANIC\n".to_string());
        if update {
            if !matches(&expected, &actual) {
                let at = text
                    .find("-- OUTPUT --\n")
                    .map(|i| i + "-- OUTPUT --\n".len());
                let new = match at {
                    Some(i) => format!("{}{actual}", &text[..i]),
                    None => format!("{text}-- OUTPUT --\n{actual}"),
                };
                std::fs::write(case, new).expect("rewrite case");
            }
        } else if !matches(&expected, &actual) {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                case.strip_prefix(&root).unwrap_or(case).display()
            ));
        }
    }
    assert!(!all.is_empty(), "no golden cases under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    eprintln!("{} golden cases passed", all.len());
}
