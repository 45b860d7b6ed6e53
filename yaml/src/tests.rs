//! The YAML front end's tests: reading graphs (against the real kinds, the engine checking
//! what was read, as `tend run` does), locating errors, and reading YAML as `serde_yaml_ng` and
//! `saphyr-parser` read it.

use std::path::Path;

use support::quick_agrees;

use crate::graph::*;
use crate::tree::*;
use crate::*;
use tend_model::ResId;

fn env(name: &str) -> Option<String> {
    match name {
        "ROOT" => Some("/tmp/r".into()),
        _ => None,
    }
}

/// Reads `src` as `g.yaml` as `tend run` does: the front end, then the engine's check
/// (of what could be read, when reading found mistakes; else of the whole graph).
fn read(src: &str) -> Result<Loaded, Vec<LoadError>> {
    let reg = tend_resources::registry();
    let loaded = parse(Path::new("g.yaml"), src.to_string(), reg.schemas(), &env)
        .finish(|g, complete| tend_engine::check_partial(&reg, g, complete))?;
    match tend_engine::check_graph(&reg, &loaded.graph) {
        Ok(()) => Ok(loaded),
        Err(errs) => Err(loaded.locate_all(&errs)),
    }
}

/// Reads `src` as `g.yaml`; renders the graph (one line per resource and edge) or the
/// errors (one per line), and compares with `expect`.
fn check(src: &str, expect: &str) {
    let got = match read(src) {
        Ok(l) => {
            let mut out = String::new();
            for r in &l.graph.resources {
                out.push_str(&format!("{}", r.id()));
                for (k, v) in &r.params {
                    out.push_str(&format!(" {k}={v}"));
                }
                if r.meta != tend_model::Meta::default() {
                    out.push_str(&format!(" retry={}", r.meta.retry));
                }
                out.push('\n');
            }
            for e in &l.graph.edges {
                out.push_str(&format!("{} -> {} notify={}\n", e.from, e.to, e.notify));
            }
            out
        }
        Err(errs) => errs.iter().map(|e| format!("{e}\n")).collect(),
    };
    assert_eq!(got.trim(), expect.trim(), "\n--- got:\n{got}");
}

#[test]
fn a_good_graph() {
    check(
        r#"
resources:
  file:
    - name: ${ROOT}/a
      content: "x"
      meta: { retry: 2 }
  test:
    - name: t
      float64: 3
      mixedstruct: { somebool: true, somestr: s, someint: 1, somefloat: 2 }
      mapintfloat: { 1: 2 }
edges:
  - { from: "file[/tmp/r/a]", to: "test[t]", notify: true }
"#,
        r#"
file[/tmp/r/a] content="x" retry=2
test[t] float64=3 mapintfloat={1: 2} mixedstruct=struct{somebool: true; somestr: "s"; someint: 1; somefloat: 2}
file[/tmp/r/a] -> test[t] notify=true
"#,
    );
}

#[test]
fn every_error_at_once() {
    check(
        r#"
top: 1
resources:
  file:
    - name: /a
      content: 5
      colour: red
    - { name: /a }
    - { content: x }
  nosuch:
    - name: x
  test:
    - { name: t, mixedstruct: { somebool: true } }
    - { name: u, int8: 300, meta: { retry: -5 } }
    - { name: v, str: ~ }
edges:
  - { from: "file[/a]", to: "test[zz]" }
  - { from: "file/a", to: "test[t]", extra: 1 }
  - { from: "file[/a]" }
"#,
        r#"
g.yaml:2: unknown top-level key `top` (expected `resources` or `edges`)
g.yaml:6: file[/a]: field `content`: expected str, got 5
g.yaml:7: file[/a]: field `colour`: kind `file` has no such field (its fields: path, state, content, source, fragments, symlink, mode, owner, group, recurse, force, purge)
g.yaml:8: file[/a]: duplicate resource (first defined on line 5)
g.yaml:9: a `file` resource has no `name`
g.yaml:10: unknown resource kind `nosuch` (known kinds: cron, exec, file, group, gzip, hostname, json:edit, kv, line, mount, noop, pkg, print, schedule, ssh:authorized_key, svc, sysctl, tar, test, timer, user, value)
g.yaml:13: test[t]: field `mixedstruct`: missing struct field `somestr`
g.yaml:14: test[u]: field `int8`: 300 is outside -128..=127
g.yaml:14: test[u]: field `meta.retry`: -5 is invalid (use -1 for forever)
g.yaml:15: test[v]: field `str`: null is not a value (leave the field out to keep its default)
g.yaml:17: test[zz]: edge file[/a] -> test[zz]: no such resource in the graph
g.yaml:18: field `from`: edge endpoint "file/a" is not `kind[name]`
g.yaml:18: field `extra`: unknown edge key (expected `from`, `to`, `notify`)
g.yaml:19: an edge needs both `from` and `to`
"#,
    );
}

#[test]
fn unset_variables_and_bad_yaml() {
    check(
        "resources:\n  file:\n    - name: /a\n      content: ${NOPE}\n",
        "g.yaml:4: environment variable `NOPE` is not set (used as `${NOPE}`)",
    );
    check("resources: [\n", "g.yaml:2: invalid YAML: did not find expected node content at line 2 column 1, while parsing a flow node");
    check("", "");
    check(
        "- a\n",
        "g.yaml:1: expected a mapping with `resources` and `edges`, got a list",
    );
}

#[test]
fn expands_variables() {
    assert_eq!(expand_env("${ROOT}/a", &env).unwrap(), "/tmp/r/a");
    assert_eq!(expand_env("${NOPE:-x}/a", &env).unwrap(), "x/a");
    assert_eq!(expand_env("$${ROOT} $5", &env).unwrap(), "${ROOT} $5");
    assert_eq!(expand_env("${NOPE}", &env).unwrap_err(), "NOPE");
}

#[test]
fn parses_ids() {
    assert_eq!(
        parse_res_id("file[/a[1]]").unwrap(),
        ResId::new("file", "/a[1]")
    );
    assert!(parse_res_id("file/a").is_none());
    assert!(parse_res_id("[x]").is_none());
}

/// Renders `Loaded::error` for each (resource, field) of a graph that loads.
fn located(src: &str, asks: &[(&str, Option<&str>)]) -> String {
    let l = read(src).expect("loads");
    asks.iter()
        .map(|(res, field)| {
            let e = l.error(parse_res_id(res), field.map(str::to_string), "x".into());
            format!("{e}\n")
        })
        .collect()
}

#[test]
fn locates_resources_and_fields() {
    let text = "resources:\n  file:\n    - name: /a\n      mode: \"5\"\n      meta:\n        retry: 1\n    - { name: /b, mode: \"6\" }\n    -\n      content: c\n      name: /c\nedges:\n  - {from: \"file[/a]\", to: \"file[/b]\"}\n";
    let got = located(
        text,
        &[
            ("file[/a]", Some("mode")),
            ("file[/a]", Some("Meta:retry")),
            ("file[/a]", Some("owner")),
            ("file[/a]", None),
            ("file[/b]", Some("mode")),
            ("file[/c]", Some("content")),
            ("file[/c]", None),
            ("file[/zz]", None),
        ],
    );
    let want = "g.yaml:4: file[/a]: field `mode`: x
g.yaml:5: file[/a]: field `meta.retry`: x
g.yaml:3: file[/a]: field `owner`: x
g.yaml:3: file[/a]: x
g.yaml:7: file[/b]: field `mode`: x
g.yaml:9: file[/c]: field `content`: x
g.yaml:10: file[/c]: x
g.yaml: file[/zz]: x
";
    assert_eq!(got, want);
}

#[test]
fn lines_of_fields_in_block_and_flow_style() {
    check(
        r#"
resources:
  test:
    - name: a
      int8: 300
      meta:
        retry: -5
    - { name: b,
        int8: 301,
        meta: { retry: -6 } }
    - name: "c"
      str: ${NOPE}
edges:
  - from: "test[a]"
    to: "test[zz]"
  -
    from: x
    extra: 1
"#,
        r#"
g.yaml:5: test[a]: field `int8`: 300 is outside -128..=127
g.yaml:7: test[a]: field `meta.retry`: -5 is invalid (use -1 for forever)
g.yaml:9: test[b]: field `int8`: 301 is outside -128..=127
g.yaml:10: test[b]: field `meta.retry`: -6 is invalid (use -1 for forever)
g.yaml:12: environment variable `NOPE` is not set (used as `${NOPE}`)
g.yaml:14: test[zz]: edge test[a] -> test[zz]: no such resource in the graph
g.yaml:17: field `from`: edge endpoint "x" is not `kind[name]`
g.yaml:18: field `extra`: unknown edge key (expected `from`, `to`, `notify`)
"#,
    );
}

#[test]
fn each_unset_variable_on_its_own_line() {
    check(
            "resources:\n  file:\n    - name: /a\n      content: ${NOPE}\n    - name: /b\n      content: |\n        x\n        ${NOPE}\n",
            "g.yaml:4: environment variable `NOPE` is not set (used as `${NOPE}`)\n\
             g.yaml:8: environment variable `NOPE` is not set (used as `${NOPE}`)",
        );
}

/// A tree as the `serde_yaml_ng::Value` it stands for.
fn to_serde(n: &Node<'_>) -> serde_yaml_ng::Value {
    use serde_yaml_ng::value::{Tag, TaggedValue};
    use serde_yaml_ng::Value as V;
    match &n.yaml {
        Yaml::Null => V::Null,
        Yaml::Bool(b) => V::Bool(*b),
        Yaml::Int(i) => V::Number((*i).into()),
        Yaml::BigInt(u) => V::Number((*u).into()),
        Yaml::Float(f) => V::Number((*f).into()),
        Yaml::Str(s) => V::String(s.to_string()),
        Yaml::Seq(items) => V::Sequence(items.iter().map(to_serde).collect()),
        Yaml::Map(m) => V::Mapping(m.iter().map(|(k, v)| (to_serde(k), to_serde(v))).collect()),
        Yaml::Tagged(tag, v) => V::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag.clone()),
            value: to_serde(v),
        })),
    }
}

/// Whether the tree of `doc` is the `Value` that `serde_yaml_ng` reads (same structure,
/// order, scalar types and tags shown alike), or both reject it. A disagreement is noted
/// in `out`.
fn same_as_serde(doc: &str, out: &mut Vec<String>) {
    let theirs = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(doc);
    match (read_tree(doc), theirs) {
        (Ok(ours), Ok(theirs)) => {
            let ours = ours.as_ref().map_or(serde_yaml_ng::Value::Null, to_serde);
            let (o, t) = (format!("{ours:?}"), format!("{theirs:?}"));
            if o != t || ours != theirs {
                out.push(format!("{doc:?}: ours {o}, serde_yaml_ng {t}"));
            }
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => out.push(format!("{doc:?}: only serde_yaml_ng rejects: {e}")),
        (Err(e), Ok(_)) => out.push(format!("{doc:?}: only we reject: {}", e.message)),
    }
}

/// Small documents with each scalar form, in each style, as key and value, tagged.
fn scalar_documents() -> Vec<String> {
    let scalars = [
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "nul",
        "true",
        "True",
        "TRUE",
        "tRue",
        "false",
        "no",
        "yes",
        "on",
        "0",
        "-0",
        "+0",
        "00",
        "0644",
        "-0644",
        "+0644",
        "644",
        "+644",
        "-644",
        "0x1F",
        "0X1F",
        "-0x1F",
        "+0x1F",
        "0x-1",
        "0o17",
        "-0o17",
        "0b101",
        "-0b101",
        "0b",
        "0x",
        "1_000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "1.5",
        "-1.5",
        "+1.5",
        ".5",
        "-.5",
        "1.",
        "1e3",
        "1E3",
        "1e+3",
        "1e-3",
        "06.5",
        "0.5",
        "00.5",
        "1.0",
        "3.0e20",
        ".inf",
        "-.inf",
        "+.inf",
        ".Inf",
        ".INF",
        ".nan",
        ".NaN",
        ".NAN",
        "-.nan",
        "inf",
        "nan",
        "infinity",
        "1e999",
        "0644.",
        "12:30",
        "1,000",
        "- a",
        "a b",
        "/tmp/x",
        "é",
        "${HOME}/x",
    ];
    let mut docs = Vec::new();
    for s in scalars {
        docs.push(format!("k: {s}\n"));
        docs.push(format!("k: [{s}]\n"));
        docs.push(format!("k: '{s}'\n"));
        docs.push(format!("k: \"{s}\"\n"));
        docs.push(format!("{s}: v\n"));
        for tag in [
            "!!str", "!!int", "!!float", "!!bool", "!!null", "!foo", "!", "!!binary",
        ] {
            docs.push(format!("k: {tag} {s}\n"));
            docs.push(format!("k: {tag} \"{s}\"\n"));
        }
    }
    docs
}

#[test]
fn scalars_resolve_as_serde_yaml_ng_resolves_them() {
    let mut out = Vec::new();
    for doc in scalar_documents() {
        same_as_serde(&doc, &mut out);
    }
    // libyaml (YAML 1.1) rejects an empty implicit key; YAML 1.2 (saphyr) reads a null key.
    assert_eq!(
            out.join("\n"),
            "\": v\\n\": only serde_yaml_ng rejects: did not find expected key, while parsing a block mapping"
        );
}

/// Documents of every shape, valid and not.
fn documents() -> Vec<String> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    vec![
            String::new(),
            include_str!("../../examples/hello.yaml").into(),
            "# only a comment\n".into(),
            "---\n".into(),
            "---\n...\n".into(),
            "a: 1\n---\nb: 2\n".into(),
            "---\n---\n".into(),
            "a: 1\na: 2\n".into(),
            "{a: 1, \"a\": 2}\n".into(),
            "{1: a, 1.0: b, '1': c}\n".into(),
            "{~: a, null: b}\n".into(),
            "{.nan: a, .NaN: b}\n".into(),
            "{[a]: 1, [a]: 2}\n".into(),
            "{{a: 1, b: 2}: x, {b: 2, a: 1}: y}\n".into(),
            (0..40).map(|i| format!("k{i}: {i}\n")).collect::<String>(),
            (0..40).map(|i| format!("k{}: {i}\n", i % 39)).collect::<String>(),
            "a: &x {b: 1, c: [1, 2]}\nd: *x\ne: *x\n".into(),
            "a: &x 5\nb: [*x, *x]\n".into(),
            "a: &x [1, *x]\n".into(),
            "a: *nope\n".into(),
            "a: &x 1\na2: &x 2\nb: *x\n".into(),
            "<<: {a: 1}\nb: 2\n".into(),
            "a: !foo {b: 1}\n".into(),
            "a: !!map {b: 1}\n".into(),
            "a: !!seq [1]\n".into(),
            "a: !!str [1]\n".into(),
            "a: !<tag:yaml.org,2002:int> 5\n".into(),
            "a: !<!bar> 5\n".into(),
            "%TAG !e! tag:example.com,2000:\n---\na: !e!foo 1\n".into(),
            "%TAG !! !x-\n---\na: !!int 1\n".into(),
            "a: |\n  line\n   more\n\nb: >\n  folded\n  text\n".into(),
            "a: \"esc \\t \\u00e9 \\n\"\nb: 'it''s'\n".into(),
            "a: plain\n  continued\n".into(),
            "- a\n- - b\n  - c\n- {d: e}\n".into(),
            "? [complex]\n: key\n".into(),
            "a: [1, 2\n".into(),
            "a: b: c\n".into(),
            "\ta: 1\n".into(),
            "a:\n\t- 1\n".into(),
            format!("a: {}\n", deep(127)),
            format!("a: {}\n", deep(128)),
            format!("{}\n", deep(128)),
            format!("{}\n", deep(129)),
            "a: &a [1,2,3,4,5,6,7,8,9]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n".into(),
        ]
}

#[test]
fn documents_read_as_serde_yaml_ng_reads_them() {
    let docs = documents();
    let mut out = Vec::new();
    for doc in &docs {
        same_as_serde(doc, &mut out);
    }
    // A tab before the first key: libyaml rejects it, saphyr reads past it.
    assert_eq!(
            out.join("\n"),
            "\"\\ta: 1\\n\": only serde_yaml_ng rejects: found character that cannot start any token, while scanning for the next token"
        );
}

#[test]
fn a_tag_or_an_alias_in_a_graph() {
    check(
        "resources:\n  file:\n    - name: /a\n      content: !secret x\n",
        "g.yaml:4: file[/a]: field `content`: YAML tags (!secret) are not supported",
    );
    check(
            "resources:\n  file:\n    - name: &n /a\n      content: *n\n    - { name: /b, content: !!str 5 }\n",
            "file[/a] content=\"/a\"\nfile[/b] content=\"5\"",
        );
    check(
            "resources:\n  file:\n    - name: /a\n      content: x\n      content: y\n",
            "g.yaml:3: invalid YAML: resources.file[0]: duplicate entry with key \"content\" at line 3 column 7",
        );
}
/// Graph-like documents in the shapes people write: block and flow, compact and nested,
/// with comments, blank lines and odd spacing.
fn shapes() -> Vec<String> {
    let mut docs: Vec<String> = [
            "resources:\n  file:\n    - name: /a\n      content: \"x\\n\"\n      mode: \"0644\"\n      meta: { retry: 3, delay: 500 }\n  exec:\n    - name: reload\n      cmd: /bin/true\nedges:\n  - { from: \"file[/a]\", to: \"exec[reload]\", notify: true }\n",
            "resources:\n  file:\n  - name: /a\n    list:\n    - a\n    - b\n  - name: /b\n",
            "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
            "a:\n- 1\n- 2\nb:\n  - 3\n",
            "- a\n- b: 1\n  c: 2\n-\n  d: 3\n- [x, y]\n- {k: v}\n-\n- 'q'\n",
            "a:\nb: ~\nc:\n",
            "a: # comment\n  b: 1 # more\n# full line\n\n  c: 'it''s' # x\n",
            "k: v # c\nk2: \"q\" # c\nk3: [a, b] # c\nk4: {a: 1} # c\n",
            "k: a #b\nk2: a#b\nk3: 'a #b'\n",
            "k: [a, [b, [c, {d: e}]], {f: [g]}]\n",
            "k: {a: [1, 2], b: {c: d}, \"e\": 'f', 'g': \"h\"}\n",
            "k: [ a , b ]\nk2: {  a:  1 ,  b:  2  }\nk3: []\nk4: {}\n",
            "k: [a, b,]\nk2: [,]\nk3: {a: 1,}\nk4: {a}\nk5: {a: }\nk6: {\"a\":1}\n",
            "k: [a: b]\nk2: {a:b}\nk3: {a :b}\nk4: [a b, c  d]\n",
            "url: http://x.y/z?a=b#frag\nt: 12:30:00\nk: a:b\n",
            "k: a: b\n",
            "k: a:\n",
            "k: \"a\" b\n",
            "k: [a] b\n",
            "k: [a\n  , b]\n",
            "k: \"multi\n  line\"\n",
            "k: plain\n  continued\n",
            "k: 'multi\n  line'\n",
            "k: \"esc \\\\ \\\" \\/ \\n \\t \\0 \\e \\N \\_ \\L \\P \\x41 \\u00e9\"\n",
            "k: \"bad \\q\"\n",
            "k: \"trail\" \nk2: plain   \n",
            "from: file[/a]\nto: exec[b]\n",
            "- - a\n  - b\n- - c\n",
            "? a\n: b\n",
            "a: 1\n b: 2\n",
            "a: 1\n  b: 2\n",
            "  a: 1\n  b: 2\nc: 3\n",
            "a:\n    b: 1\n  c: 2\n",
            "- a\n  - b\n",
            "- a\nb: 1\n",
            "a: 1\n- b\n",
            "a: -1\nb: - 1\nc: -\nd: -x\n",
            "a: &x 1\n",
            "a: *x\n",
            "a: !t 1\n",
            "a: |\n  x\n",
            "a: >-\n  x\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n...\n",
            "a: @x\nb: `x`\nc: %x\n",
            "\"a b\": 1\n'c''d': 2\n\"e\" : 3\n\"f\":4\n",
            "a: 1\r\nb: 2\r\n",
            "\u{feff}a: 1\n",
            "a:\tb\n",
            "é: ü\nk: 日本\n",
            "a: 1",
            "a:",
            "-",
            "- ",
            "just a scalar\n",
            "[a, b]\n",
            "{a: 1}\n",
            "[a, b]: c\n",
            "- [a]: b\n",
            "a: 1 #c\n#c\n  # c\nb: 2\n",
            "k: '#x'\nk2: \"#x\"\nk3: x#\n",
            "k: - a\n",
            "- ? a\n",
            "k: {a: [1, 2, {b: c}], d: e}\n",
            "k: [\"a\", 'b', c]\n",
            "k: ['', \"\", '''']\n",
            "k: ,a\nk2: ]a\nk3: }a\n",
        ]
        .iter()
        .map(|d| d.to_string())
        .collect();
    let mut flat = String::from("resources:\n  file:\n");
    for i in 0..50 {
        flat.push_str(&format!(
            "    - {{ name: \"/tmp/d/f{i}\", content: \"hello {i}\\n\", mode: \"0644\" }}\n"
        ));
    }
    docs.push(flat);
    docs
}

#[test]
fn the_fast_reader_reads_as_saphyr_does() {
    let mut docs = shapes();
    docs.extend(documents());
    docs.extend(scalar_documents());
    docs.push(include_str!("../../examples/hello.yaml").into());
    // Each document cut after each of its lines, and with each line indented one more.
    let mut variants = Vec::new();
    for d in &docs {
        let lines: Vec<&str> = d.split_inclusive('\n').collect();
        for n in 1..lines.len() {
            variants.push(lines[..n].concat());
            let mut shifted = lines.clone();
            let more = format!(" {}", lines[n]);
            shifted[n] = &more;
            variants.push(shifted.concat());
        }
    }
    docs.extend(variants);
    let mut out = Vec::new();
    let read: Vec<&String> = docs.iter().filter(|d| quick_agrees(d, &mut out)).collect();
    assert_eq!(out.join("\n"), "");
    // The common shapes (the first twelve, and the benchmark's flat graph) are in the
    // subset; a block scalar (as in examples/hello.yaml) is not.
    let shapes = shapes();
    for doc in shapes[..12].iter().chain(shapes.last()) {
        assert!(read.contains(&doc), "not read fast:\n{doc}");
    }
    assert!(!read.contains(&&include_str!("../../examples/hello.yaml").to_string()));
}

mod support {
    use crate::quick;
    use saphyr_parser::Event;

    /// Whether the fast reader gives `saphyr-parser`'s events and lines for `doc`, up to where
    /// it gives up; a disagreement is noted in `out`. True if it read the whole document.
    pub(crate) fn quick_agrees(doc: &str, out: &mut Vec<String>) -> bool {
        let mut full = saphyr_parser::Parser::new_from_str(doc);
        let mut q = quick::Quick::new(doc);
        loop {
            let Some((event, line)) = q.next() else {
                return false;
            };
            let theirs = match full.next_event() {
                Some(Ok((e, span))) => (e, span.start.line()),
                Some(Err(e)) => {
                    // saphyr may see an error further on before it gives this event; that only
                    // matters if the fast reader would read the whole document.
                    while let Some((event, _)) = q.next() {
                        if event == Event::StreamEnd {
                            out.push(format!("{doc:?}: only saphyr rejects: {e}"));
                            break;
                        }
                    }
                    return false;
                }
                None => {
                    out.push(format!("{doc:?}: saphyr ended first"));
                    return false;
                }
            };
            // Only where nodes start matters (ends are not located).
            let starts = matches!(
                event,
                Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
            );
            if event != theirs.0 || (starts && line != theirs.1) {
                out.push(format!(
                    "{doc:?}: ours {event:?}@{line}, saphyr {:?}@{}",
                    theirs.0, theirs.1
                ));
                return false;
            }
            if event == Event::StreamEnd {
                return true;
            }
        }
    }
}

mod fuzz {
    use super::support::quick_agrees;

    /// Random lines built from the pieces graph files are made of (and a few that are not):
    /// wherever the fast reader does not give up, it must give `saphyr-parser`'s events.
    #[test]
    fn the_fast_reader_agrees_with_saphyr_on_random_documents() {
        const PIECES: &[&str] = &[
            "a", "b", "k", "- ", "-", ": ", ":", "[", "]", "{", "}", ", ", ",", "'x'", "\"y\"",
            "\"e\\n\"", "'i''s'", " #c", "#", " ", "  ", "1", "-1", "0644", "~", "true", "?", "&a",
            "*a", "!t", "|", ">", "a b", "x:y", "\"\"", "''",
        ];
        // xorshift64*: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let mut out = Vec::new();
        let mut read_whole = 0;
        for _ in 0..200_000 {
            let mut doc = String::new();
            for _ in 0..1 + rnd(6) {
                doc.push_str(&" ".repeat(2 * rnd(4)));
                if rnd(2) == 0 {
                    // Shaped like a graph line: an item and/or a key, then a value.
                    doc.push_str(["", "- ", "- - "][rnd(3)]);
                    doc.push_str(["", "k: ", "'q k': ", "\"d\": ", "k:"][rnd(5)]);
                    let value = match rnd(5) {
                        0 => PIECES[rnd(PIECES.len())].to_string(),
                        1 => format!("[{}, {}]", PIECES[rnd(8)], PIECES[rnd(PIECES.len())]),
                        2 => format!("{{ a: {}, b: {} }}", PIECES[rnd(16)], PIECES[rnd(16)]),
                        3 => format!("\"{}\"", PIECES[rnd(PIECES.len())]),
                        _ => String::new(),
                    };
                    doc.push_str(&value);
                } else {
                    for _ in 0..1 + rnd(5) {
                        doc.push_str(PIECES[rnd(PIECES.len())]);
                    }
                }
                doc.push('\n');
            }
            if quick_agrees(&doc, &mut out) {
                read_whole += 1;
            }
            assert!(out.is_empty(), "{}", out.join("\n"));
        }
        // The generator must reach the fast path often enough to test it.
        assert!(read_whole > 5_000, "only {read_whole} documents read fast");
    }
}
