//! Benchmarks of the language (issue 4): parse + check of a generated 10,000-line program,
//! time to the first graph, and the time from one stream value changing to the new graph in a
//! program with about 10,000 function nodes; and (issue 16) `golang.template` rendering a
//! 1 MB file from a 10,000-element list, called from a program and directly.
//!
//! Run: `cargo bench -p tend-lang --bench mcl` (prints a table; a plain timing harness so it
//! finishes in seconds).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tend_lang::funcs::world::MemWorld;
use tend_lang::program::{compile, Options};
use tend_model::{Field, KindSchema, Type};

fn schemas() -> BTreeMap<String, KindSchema> {
    let t = KindSchema::new("test")
        .field(Field::new("anotherstr", Type::Str, ""))
        .field(Field::new(
            "slicestring",
            Type::List(Box::new(Type::Str)),
            "",
        ));
    [(t.kind.clone(), t)].into_iter().collect()
}

fn opts(world: Arc<MemWorld>) -> Options {
    Options {
        hostname: "h".into(),
        schemas: schemas(),
        world,
    }
}

/// About `lines` lines of classes, loops, functions and resources.
fn big_program(lines: usize) -> String {
    let mut s = String::from("import \"fmt\"\nimport \"strings\"\n");
    let mut i = 0;
    while s.lines().count() < lines {
        let _ = write!(
            s,
            "func f{i}($x) {{\n\t$x + \"-{i}\"\n}}\nclass c{i}($n) {{\n\t$v = f{i}($n)\n\ttest \"r{i}-${{v}}\" {{\n\t\tanotherstr => strings.to_upper($v),\n\t}}\n\tfor $j, $s in [\"a\", \"b\"] {{\n\t\ttest [fmt.printf(\"l{i}-%d-%s-%s\", $j, $s, $n)] {{}}\n\t}}\n}}\ninclude c{i}(\"x\")\n"
        );
        i += 1;
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // 1. Parse + check (every static stage) of a 10,000-line program.
    let src = big_program(10_000);
    let path = dir.path().join("big.mcl");
    std::fs::write(&path, &src).expect("write");
    let mut compile_times = Vec::new();
    let mut first_graph = Vec::new();
    let mut vertices = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let prog = match compile(&path, opts(MemWorld::new("h"))) {
            Ok(p) => p,
            Err(f) => panic!("{}", f.render()),
        };
        compile_times.push(t.elapsed());
        let t = Instant::now();
        let g = rt.block_on(async move {
            let mut rx = prog.run();
            rx.recv().await.expect("a graph").expect("no error")
        });
        first_graph.push(t.elapsed());
        vertices = g.spec.resources.len();
    }

    // 2. One stream value changing, ~10,000 function nodes downstream.
    let w = MemWorld::new("h");
    w.set_value("k", "v0");
    let inc = "import \"world\"\nimport \"iter\"\nimport \"fmt\"\n$v = world.getval(\"k\")->value\n$l = iter.map(iter.range(3300), func($i) { fmt.printf(\"%s-%d\", $v, $i) })\ntest \"a\" {\n\tslicestring => $l,\n}\n";
    let ipath = dir.path().join("inc.mcl");
    std::fs::write(&ipath, inc).expect("write");
    let prog = compile(&ipath, opts(w.clone())).unwrap_or_else(|f| panic!("{}", f.render()));
    let updates = rt.block_on(async move {
        let mut rx = prog.run();
        rx.recv().await.expect("first").expect("ok");
        let mut times = Vec::new();
        for n in 1..=50 {
            let t = Instant::now();
            w.set_value("k", &format!("v{n}"));
            rx.recv().await.expect("graph").expect("ok");
            times.push(t.elapsed());
        }
        times
    });

    // 3. A template rendering ~1 MB from a 10,000-element list of structs.
    let tmpl = "{{range .}}server {{.Host}}:{{.Port}} weight=1 max_fails=3 fail_timeout=30s; # pool member\n{{end}}";
    let list = tend_model::Value::List(
        (0..10_000i64)
            .map(|i| {
                tend_model::Value::Struct(vec![
                    (
                        "host".into(),
                        tend_model::Value::Str(format!("host{}.example.org", i + 10_000)),
                    ),
                    ("port".into(), tend_model::Value::Int(i)),
                ])
            })
            .collect(),
    );
    let b = tend_lang::funcs::lookup("golang", "template").expect("golang.template");
    let args = [tend_model::Value::Str(tmpl.into()), list];
    let mut render = Vec::new();
    let mut size = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let out = tend_lang::funcs::call_simple(b, &args).expect("renders");
        render.push(t.elapsed());
        if let tend_model::Value::Str(s) = out {
            size = s.len();
        }
    }
    let tprog = format!(
        "import \"golang\"\nimport \"iter\"\nimport \"fmt\"\n$l = iter.map(iter.range(10000), func($i) {{ struct{{host => fmt.printf(\"host%d.example.org\", $i + 10000), port => $i}} }})\ntest \"t\" {{\n\tanotherstr => golang.template({tmpl:?}, $l),\n}}\n"
    );
    let tpath = dir.path().join("tmpl.mcl");
    std::fs::write(&tpath, &tprog).expect("write");
    let mut whole = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let prog =
            compile(&tpath, opts(MemWorld::new("h"))).unwrap_or_else(|f| panic!("{}", f.render()));
        let g = rt.block_on(async move {
            let mut rx = prog.run();
            rx.recv().await.expect("a graph").expect("no error")
        });
        whole.push(t.elapsed());
        let v = g.spec.resources[0].params.get("anotherstr").cloned();
        assert!(matches!(v, Some(tend_model::Value::Str(ref s)) if s.len() == size));
    }

    println!("| measurement | p50 | target |");
    println!("|---|---|---|");
    println!(
        "| parse + check, {} lines ({} vertices) | {:.1} ms | < 300 ms |",
        src.lines().count(),
        vertices,
        median(compile_times).as_secs_f64() * 1e3
    );
    println!(
        "| time to first graph after compile | {:.1} ms | |",
        median(first_graph).as_secs_f64() * 1e3
    );
    println!(
        "| stream change -> new graph, 3300 callee instances (~10,000 nodes) | {:.2} ms | < 5 ms |",
        median(updates).as_secs_f64() * 1e3
    );
    println!(
        "| golang.template, 10,000-element list -> {} bytes | {:.1} ms | |",
        size,
        median(render).as_secs_f64() * 1e3
    );
    println!(
        "| the same from a program (compile + build the list + render + first graph) | {:.1} ms | |",
        median(whole).as_secs_f64() * 1e3
    );
}
