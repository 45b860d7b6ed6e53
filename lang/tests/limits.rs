//! Programs that nest very deeply are refused with an error, never a stack overflow.

use std::collections::BTreeMap;
use std::time::Duration;

use tend_lang::funcs::world::MemWorld;
use tend_lang::program::{compile, Options};

fn opts() -> Options {
    let t = tend_model::KindSchema::new("test");
    Options {
        hostname: String::new(),
        schemas: BTreeMap::from([("test".to_string(), t)]),
        world: MemWorld::new(""),
    }
}

fn chain(kind: &str, n: usize) -> String {
    let mut s = String::new();
    match kind {
        "func" => {
            for i in 0..n {
                s += &format!("func f{i}($x) {{ f{}($x) }}\n", i + 1);
            }
            s += &format!("func f{n}($x) {{ $x }}\ntest [f0(\"deep\")] {{}}\n");
        }
        _ => {
            for i in 0..n {
                s += &format!("$v{i} = $v{}\n", i + 1);
            }
            s += &format!("$v{n} = \"deep\"\ntest [$v0] {{}}\n");
        }
    }
    s
}

#[test]
fn deep_chains_compile_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for kind in ["func", "bind"] {
        // Below the limit: a graph.
        let p = dir.path().join(format!("{kind}-ok.mcl"));
        std::fs::write(&p, chain(kind, 900)).unwrap();
        let prog = compile(&p, opts()).unwrap_or_else(|f| panic!("{}", f.render()));
        let g = rt.block_on(async move {
            let mut rx = prog.run();
            tokio::time::timeout(Duration::from_secs(20), rx.recv()).await
        });
        let g = g.unwrap().unwrap().unwrap();
        assert_eq!(g.spec.resources[0].name, "deep");
        // Above it: a set-scope error naming the position.
        let p = dir.path().join(format!("{kind}-deep.mcl"));
        std::fs::write(&p, chain(kind, 3000)).unwrap();
        let Err(f) = compile(&p, opts()) else {
            panic!("a 3000-deep chain compiled")
        };
        let text = f.render();
        assert!(
            text.starts_with("error: errSetScope: definitions nest"),
            "{text}"
        );
    }
}
