//! Invalid programs: exit status 2, a message naming the file, line, resource and field, and
//! nothing changed on the host.

use crate::sandbox::Sandbox;

/// Runs `tend run` on `graph` (written as `g.yaml`, or `name` if given) and checks that it
/// exits 2, that stderr contains every `expect` string, and that nothing was created.
fn check(graph: &str, expect: &[&str]) {
    check_named("g.yaml", graph, expect)
}

fn check_named(name: &str, graph: &str, expect: &[&str]) {
    let sb = Sandbox::new();
    let g = sb.write(name, graph);
    let out = sb.run_once(&g, &[]);
    assert_eq!(out.code(), 2, "{}", sb.explain("expected exit 2", &out));
    for e in expect {
        assert!(
            out.stderr.contains(e),
            "{}",
            sb.explain(&format!("stderr should contain {e:?}"), &out)
        );
    }
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!out.stderr.contains(bad), "{}", sb.explain("a panic", &out));
    }
    assert!(
        !sb.path("out").exists(),
        "{}",
        sb.explain("created files", &out)
    );
    assert!(
        !sb.state_dir().exists(),
        "{}",
        sb.explain("created the state dir", &out)
    );
}

const GOOD: &str = "    - name: ${TEND_ROOT}/out/good\n      content: \"x\\n\"\n";

#[test]
fn invalid_yaml() {
    check(
        "resources:\n  file:\n    - name: [unclosed\n",
        &["g.yaml:", "invalid YAML"],
    );
}

#[test]
fn unknown_kind() {
    check(
        &format!("resources:\n  file:\n{GOOD}  nosuchkind:\n    - name: x\n"),
        &["g.yaml:5", "unknown resource kind `nosuchkind`"],
    );
}

#[test]
fn unknown_field() {
    check(
        &format!(
            "resources:\n  file:\n{GOOD}    - name: ${{TEND_ROOT}}/out/b\n      colour: red\n"
        ),
        &["g.yaml:6", "/out/b]", "field `colour`", "no such field"],
    );
}

#[test]
fn wrong_type() {
    check(
        &format!("resources:\n  file:\n{GOOD}    - name: ${{TEND_ROOT}}/out/b\n      mode: 644\n"),
        &["g.yaml:6", "/out/b]", "field `mode`", "expected str"],
    );
}

#[test]
fn bad_meta() {
    check(
        &format!("resources:\n  file:\n{GOOD}    - name: ${{TEND_ROOT}}/out/b\n      meta: {{ retry: many }}\n"),
        &["g.yaml:6", "field `meta.retry`"],
    );
}

#[test]
fn meta_reverse_on_a_kind_that_cannot_be_reversed() {
    check(
        &format!(
            "resources:\n  file:\n{GOOD}  exec:\n    - name: /bin/true\n      meta: {{ reverse: true }}\n"
        ),
        &[
            "g.yaml:7",
            "field `meta.reverse`",
            "kind `exec` cannot be reversed",
        ],
    );
}

#[test]
fn duplicate_resource() {
    check(
        &format!("resources:\n  file:\n{GOOD}{GOOD}"),
        &["g.yaml:5", "/out/good]", "duplicate resource"],
    );
}

#[test]
fn edge_to_a_missing_resource() {
    check(
        &format!("resources:\n  file:\n{GOOD}edges:\n  - {{ from: \"file[${{TEND_ROOT}}/out/good]\", to: \"exec[nope]\" }}\n"),
        &["g.yaml:6", "exec[nope]", "no such resource"],
    );
}

#[test]
fn cycle() {
    check(
        "resources:\n  file:\n    - { name: \"${TEND_ROOT}/out/a\", content: \"a\" }\n    - { name: \"${TEND_ROOT}/out/b\", content: \"b\" }\nedges:\n  - { from: \"file[${TEND_ROOT}/out/a]\", to: \"file[${TEND_ROOT}/out/b]\" }\n  - { from: \"file[${TEND_ROOT}/out/b]\", to: \"file[${TEND_ROOT}/out/a]\" }\n",
        &["g.yaml", "cycle", "/out/a]"],
    );
}

#[test]
fn unset_environment_variable() {
    check(
        &format!("resources:\n  file:\n{GOOD}    - name: ${{TEND_NO_SUCH_VAR}}/x\n"),
        &["g.yaml:5", "TEND_NO_SUCH_VAR", "not set"],
    );
}

#[test]
fn resource_refused_by_its_kind() {
    check(
        &format!(
            "resources:\n  file:\n{GOOD}    - name: ${{TEND_ROOT}}/out/b\n      mode: \"0999\"\n"
        ),
        &["g.yaml:6", "/out/b]", "field `mode`", "0999"],
    );
}

#[test]
fn unreadable_file() {
    let sb = Sandbox::new();
    let out = sb.run(&["run", "missing.yaml", "--converged-timeout", "0"]);
    assert_eq!(out.code(), 2, "{}", sb.explain("expected exit 2", &out));
    assert!(out.stderr.contains("missing.yaml") && out.stderr.contains("cannot read"));
}

#[test]
fn invalid_mcl_program() {
    check_named(
        "main.mcl",
        "test \"x\" {\n\tnofield => 1,\n}\n",
        &["errUnify", "/main.mcl @ 2:2-2:9"],
    );
}
