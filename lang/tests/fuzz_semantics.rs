//! Random programs through every stage (set-scope, unify, evaluation, interpretation): each
//! either yields a graph or a positioned error, never a panic. Names come from a tiny pool so
//! undefined names, recursion, shadowing and type conflicts all occur.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tend_lang::funcs::stream::StreamCtx;
use tend_lang::funcs::world::MemWorld;
use tend_lang::graph::Streams;
use tend_lang::program::{compile, Options};
use tend_model::{Field, KindSchema, Type};

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_string()),
        Just("2.5".to_string()),
        Just("\"s\"".to_string()),
        Just("\"${a}\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("$a".to_string()),
        Just("$b".to_string()),
        Just("$c".to_string()),
        Just("$hostname".to_string()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop_oneof![
                    Just("+"),
                    Just("-"),
                    Just("/"),
                    Just("=="),
                    Just("<"),
                    Just("and"),
                    Just("<|>"),
                    Just("in")
                ]
            )
                .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{{a} => {b}}}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}[{b}]")),
            inner.clone().prop_map(|a| format!("struct{{x => {a}}}")),
            inner.clone().prop_map(|a| format!("{a}->x")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}->x <|> {b}")),
            inner.clone().prop_map(|a| format!("len({a})")),
            inner.clone().prop_map(|a| format!("f({a})")),
            inner.clone().prop_map(|a| format!("$g({a})")),
            inner
                .clone()
                .prop_map(|a| format!("fmt.printf(\"%v\", {a})")),
            inner
                .clone()
                .prop_map(|a| format!("iter.map([{a}], func($e) {{ $e }})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("if {c} {{ {a} }} else {{ {b} }}")),
            inner.prop_map(|a| format!("not {a}")),
        ]
    })
}

fn stmt() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop_oneof![Just("a"), Just("b"), Just("c")], expr())
            .prop_map(|(v, e)| format!("${v} = {e}\n")),
        expr().prop_map(|e| format!("$g = func($p) {{ {e} }}\n")),
        expr().prop_map(|e| format!("func f($p) {{ {e} }}\n")),
        expr().prop_map(|e| format!("test {e} {{}}\n")),
        expr().prop_map(|e| format!("test \"t\" {{\n\tanotherstr => {e},\n}}\n")),
        expr().prop_map(|e| format!("if {e} {{\n\ttest \"i\" {{}}\n}}\n")),
        expr().prop_map(|e| format!("for $i, $a in {e} {{\n\ttest \"${{a}}\" {{}}\n}}\n")),
        expr().prop_map(|e| format!("class k($a) {{\n\ttest [{e}] {{}}\n}}\ninclude k(\"x\")\n")),
        Just("Test[\"t\"] -> Test[\"u\"]\n".to_string()),
        expr().prop_map(|e| format!("panic({e})\n")),
    ]
}

fn opts() -> Options {
    let t = KindSchema::new("test").field(Field::new("anotherstr", Type::Str, ""));
    Options {
        hostname: "h".into(),
        schemas: BTreeMap::from([("test".to_string(), t)]),
        world: MemWorld::new("h"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_programs_never_panic(stmts in proptest::collection::vec(stmt(), 1..6)) {
        // Defaults for every name, then each statement in its own block (binds shadow them).
        let body: String = stmts.iter().map(|s| format!("if true {{\n{s}}}\n")).collect();
        let src = format!(
            "import \"fmt\"\nimport \"iter\"\n$a = \"a\"\n$b = 1\n$c = [1]\nfunc f($p) {{ $p }}\n$g = func($p) {{ $p }}\n{body}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("main.mcl");
        std::fs::write(&p, &src).unwrap();
        match compile(&p, opts()) {
            Err(f) => {
                if std::env::var_os("FUZZ_STATS").is_some() {
                    eprintln!("STAGE {}", f.errors[0].stage.tag());
                }
                prop_assert!(!f.errors.is_empty() && f.render().starts_with("error: err"))
            }
            Ok(prog) => {
                let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                let ctx = StreamCtx { tx, world: MemWorld::new("h") };
                let mut streams = Streams::default();
                let r = prog.graph_once(&mut streams, &ctx);
                if std::env::var_os("FUZZ_STATS").is_some() {
                    eprintln!("STAGE {}", r.map(|_| "graph".to_string()).unwrap_or_else(|e| e.stage.tag().to_string()));
                }
            }
        }
    }
}
