//! The golden runner (spec §12), the one runner of `tests/golden/**/*.txtar`: every case is a
//! program (`-- main.mcl --` plus further files), an optional `-- WORLD --` seed, an optional
//! `-- VALUES --` seed of this host's `value` table (a JSON object of key to value in
//! `tend_model::json`'s lossless form, as the `value` kind keeps them), and an
//! `-- OUTPUT --` section with either the sorted `Vertex:`/`Edge:` lines of the first graph or
//! `# err: <tag>: <message>: <byline>` lines (the tag and first byline must match one of them).
//!
//! A case runs as `tend check --print-graph` runs it: compiled against the kinds of the real
//! registry (`tend_resources::registry()`), its first graph checked by the engine's one check
//! of a graph (`tend_engine::check_graph`), whose errors are placed back in the program.
//!
//! `UPDATE_GOLDEN=1 cargo test -p tend-lang --test golden` rewrites the OUTPUT section of every
//! case that does not match from the actual result (review the diff afterwards).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tend_engine::Registry;
use tend_lang::diag::{SourceMap, Stage};
use tend_lang::funcs::world::MemWorld;
use tend_lang::interp::print_graph;
use tend_lang::program::{compile, Options};
use tend_lang::syntax::front;
use tend_lang::txtar::Archive;

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

/// A case's `-- VALUES --` in this host's `value` table, removed again when dropped (cases
/// run one at a time).
struct Values(Vec<String>);

impl Values {
    fn seed(text: &str) -> Result<Values, String> {
        let j: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let serde_json::Value::Object(o) = j else {
            return Err("expected an object of key to value".into());
        };
        let mut keys = Values(Vec::new());
        for (k, v) in &o {
            let v = tend_model::json::from_lossless(v).map_err(|e| format!("{k}: {e}"))?;
            tend_model::values::set(k, Some(v));
            keys.0.push(k.clone());
        }
        Ok(keys)
    }
}

impl Drop for Values {
    fn drop(&mut self) {
        for k in &self.0 {
            tend_model::values::set(k, None);
        }
    }
}

/// Runs one case; returns the actual OUTPUT text.
fn run_case(rt: &tokio::runtime::Runtime, registry: &Registry, case: &Archive) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut world_text = "{}".to_string();
    let mut values_text = None;
    for (name, body) in &case.sections {
        match name.as_str() {
            "OUTPUT" => {}
            "WORLD" => world_text = body.clone(),
            "VALUES" => values_text = Some(body.clone()),
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
    let _values = match values_text.as_deref().map(Values::seed).transpose() {
        Ok(v) => v,
        Err(e) => return format!("# bad VALUES: {e}\n"),
    };
    let opts = Options {
        hostname: tend_lang::funcs::world::WorldView::hostname(world.as_ref()),
        schemas: registry.schemas().clone(),
        world,
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
    let first_line = |e: &str| {
        let head = e.lines().next().unwrap_or_default();
        format!("# err: {}\n", head.trim_start_matches("error: "))
    };
    rt.block_on(async move {
        let mut rx = prog.run();
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Ok(g))) => match tend_engine::check_graph(registry, &g.spec) {
                Ok(()) => print_graph(&g.spec),
                Err(errs) => first_line(&g.render(&errs)),
            },
            Ok(Some(Err(e))) => first_line(&e),
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden() {
    let root = root();
    let mut all = Vec::new();
    cases(&root, &mut all);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = tend_resources::registry();
    let mut failures = Vec::new();
    for case in &all {
        let text = std::fs::read_to_string(case).expect("read case");
        let archive = Archive::parse(&text);
        let expected = archive.get("OUTPUT").unwrap_or_default().to_string();
        let actual = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(&rt, &registry, &archive)
        }))
        .unwrap_or_else(|_| "# PANIC\n".to_string());
        if matches(&expected, &actual) {
            continue;
        }
        if update {
            std::fs::write(case, archive.with("OUTPUT", &actual)).expect("rewrite case");
        } else {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                case.strip_prefix(&root).unwrap_or(case).display()
            ));
        }
    }
    assert!(!all.is_empty(), "no golden cases under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (UPDATE_GOLDEN=1 rewrites their OUTPUT):\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    eprintln!("{} golden cases passed", all.len());
}

/// The syntax cases (`tests/golden/syntax/`) through the front stages alone (lex/parse,
/// init, interpolate): a case whose OUTPUT lists `# err:` lines of a front stage must fail
/// there with the tag and first byline of one of them; any other case must pass them.
#[test]
fn syntax_cases_through_the_front_stages() {
    const FRONT: [Stage; 3] = [Stage::LexParse, Stage::Init, Stage::Interpolate];
    let mut paths = Vec::new();
    cases(&root().join("syntax"), &mut paths);
    assert!(paths.len() >= 50, "expected the syntax golden cases");
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("read case");
        let archive = Archive::parse(&text);
        let src = archive.get("main.mcl").expect("case has main.mcl");
        let output = archive.get("OUTPUT").unwrap_or_default();
        let mut map = SourceMap::new();
        let file = map.add("/main.mcl", src.to_string());
        let result = front(file, src);
        let expected: Vec<(String, String)> = output
            .lines()
            .filter(|l| l.starts_with("# err: "))
            .filter_map(tag_and_byline)
            .collect();
        let front_expected = expected
            .iter()
            .any(|(t, _)| Stage::from_tag(t).is_some_and(|s| FRONT.contains(&s)));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match (&result, front_expected) {
            (Err(errors), true) => {
                let first = &errors[0];
                let actual = (first.stage.tag().to_string(), map.byline(first.span));
                if !expected.contains(&actual) {
                    failures.push(format!(
                        "{name}: got {}\nexpected one of {expected:?}",
                        first.headline(&map)
                    ));
                }
            }
            (Err(errors), false) => failures.push(format!(
                "{name}: the front stages failed:\n{}",
                map.render_all(errors)
            )),
            (Ok(_), true) => {
                failures.push(format!("{name}: expected a front-stage error, got none"))
            }
            (Ok(_), false) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
