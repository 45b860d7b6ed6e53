//! Runs the syntax golden cases (`tests/golden/syntax/*.txtar`, spec §12 layout) through the
//! front stages only (lex/parse, init, interpolate).
//!
//! A case whose OUTPUT lists `# err:` lines of a front stage passes when the first error has
//! the tag and first byline of one of them; any other case must pass the front stages (its
//! graph output is checked by the full golden runner). `UPDATE_GOLDEN=1` fills the OUTPUT of
//! cases whose OUTPUT is empty and that fail in a front stage.

use std::path::Path;

use tend_lang::diag::{SourceMap, Stage};
use tend_lang::syntax::front;

const FRONT: [Stage; 3] = [Stage::LexParse, Stage::Init, Stage::Interpolate];

/// Splits a txtar text into (comment, sections).
fn txtar(text: &str) -> (String, Vec<(String, String)>) {
    let mut comment = String::new();
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(name) = bare.strip_prefix("-- ").and_then(|r| r.strip_suffix(" --")) {
            sections.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
        } else {
            comment.push_str(line);
        }
    }
    (comment, sections)
}

/// `(tag, first byline)` of an `# err:` line or of a rendered headline.
fn tag_and_byline(line: &str) -> Option<(String, String)> {
    let rest = line
        .strip_prefix("# err: ")
        .or_else(|| line.strip_prefix("error: "))?;
    let (tag, rest) = rest.split_once(": ")?;
    let at = rest.find(" @ ")?;
    let path_start = rest[..at].rfind(' ').map_or(0, |i| i + 1);
    let after = &rest[at + 3..];
    let end = after
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '-'))
        .unwrap_or(after.len());
    Some((
        tag.to_string(),
        format!("{} @ {}", &rest[path_start..at], &after[..end]),
    ))
}

#[test]
fn syntax_golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/syntax");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("read golden dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txtar"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 50, "expected the syntax golden cases");
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("read case");
        let (_, sections) = txtar(&text);
        let get = |n: &str| {
            sections
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let src = get("main.mcl").expect("case has main.mcl");
        let output = get("OUTPUT").unwrap_or_default();
        let mut map = SourceMap::new();
        let file = map.add("/main.mcl", src.clone());
        let result = front(file, &src);
        let expected: Vec<(String, String)> = output.lines().filter_map(tag_and_byline).collect();
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
            (Err(errors), false) => {
                if update && output.trim().is_empty() {
                    let lines: String = errors
                        .iter()
                        .map(|e| {
                            format!(
                                "# err: {}\n",
                                e.headline(&map).trim_start_matches("error: ")
                            )
                        })
                        .collect();
                    std::fs::write(path, format!("{text}{lines}")).expect("write case");
                } else {
                    failures.push(format!(
                        "{name}: the front stages failed:\n{}",
                        map.render_all(errors)
                    ));
                }
            }
            (Ok(_), true) => {
                failures.push(format!("{name}: expected a front-stage error, got none"))
            }
            (Ok(_), false) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
