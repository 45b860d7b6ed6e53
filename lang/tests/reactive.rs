//! Reactive behaviour of running programs (spec §7): new graphs when a stream changes, the
//! `<|>` fallback while a file is missing and recovery when it returns, a clock-driven `if`,
//! no new graph for a repeated value, and glitch freedom.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tend_lang::funcs::world::MemWorld;
use tend_lang::program::{compile, Graph, Options};
use tend_model::{EdgeSpec, Field, GraphSpec, KindSchema, ResId, Type};
use tokio::sync::mpsc::Receiver;

fn schemas() -> BTreeMap<String, KindSchema> {
    let t = KindSchema::new("test")
        .field(Field::new("anotherstr", Type::Str, ""))
        .field(Field::new("comment", Type::Str, ""))
        .sends("hello", Type::Str, "");
    [(t.kind.clone(), t)].into_iter().collect()
}

fn start(dir: &Path, src: &str, world: Arc<MemWorld>) -> Receiver<Result<Graph, String>> {
    let main = dir.join("main.mcl");
    std::fs::write(&main, src).unwrap();
    let opts = Options {
        hostname: "h".into(),
        schemas: schemas(),
        world,
    };
    match compile(&main, opts) {
        Ok(p) => p.run(),
        Err(f) => panic!("program does not compile:\n{}", f.render()),
    }
}

/// Replaces a file atomically, so a watcher never reads it half-written.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn names(g: &GraphSpec) -> Vec<String> {
    let mut v: Vec<String> = g.resources.iter().map(|r| r.name.clone()).collect();
    v.sort();
    v
}

async fn next(rx: &mut Receiver<Result<Graph, String>>) -> GraphSpec {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Ok(g))) => g.spec,
        Ok(Some(Err(e))) => panic!("program failed: {e}"),
        Ok(None) => panic!("program stopped"),
        Err(_) => panic!("no new graph within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readfile_change_and_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "one").unwrap();
    let src = format!(
        "import \"os\"\n$c = os.readfile(\"{}\") <|> \"missing\"\ntest \"${{c}}\" {{}}\n",
        data.display()
    );
    let mut rx = start(dir.path(), &src, MemWorld::new("h"));
    assert_eq!(names(&next(&mut rx).await), ["one"]);
    put(&data, "two");
    assert_eq!(names(&next(&mut rx).await), ["two"]);
    std::fs::remove_file(&data).unwrap();
    assert_eq!(names(&next(&mut rx).await), ["missing"]);
    put(&data, "three");
    assert_eq!(names(&next(&mut rx).await), ["three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_driven_if_flips() {
    let dir = tempfile::tempdir().unwrap();
    let src = "import \"datetime\"\nimport \"math\"\n$even = math.mod(datetime.now(), 2) == 0\nif $even {\n\ttest \"tick\" {}\n} else {\n\ttest \"tock\" {}\n}\n";
    let mut rx = start(dir.path(), src, MemWorld::new("h"));
    let a = names(&next(&mut rx).await);
    let b = names(&next(&mut rx).await);
    let c = names(&next(&mut rx).await);
    assert_ne!(a, b);
    assert_eq!(a, c);
    assert!(a == ["tick"] || a == ["tock"], "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_value_yields_no_new_graph() {
    let dir = tempfile::tempdir().unwrap();
    let w = MemWorld::new("h");
    w.set_value("k", "a");
    let src = "import \"world\"\n$v = world.getval(\"k\")->value\ntest \"${v}\" {}\n";
    let mut rx = start(dir.path(), src, w.clone());
    assert_eq!(names(&next(&mut rx).await), ["a"]);
    // The same value again (the world signals a change), then another key, then a new value:
    // the next graph must be the new value's, with no repeat of the old graph before it.
    w.set_value("k", "a");
    w.set_value("other", "x");
    w.set_value("k", "b");
    assert_eq!(names(&next(&mut rx).await), ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_values_are_never_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let w = MemWorld::new("h");
    w.set_value("k", "0");
    let src = "import \"world\"\n$v = world.getval(\"k\")->value\n$a = \"a-${v}\"\n$b = \"b-${v}\"\ntest [$a, $b] {\n\tcomment => $a + $b,\n}\n";
    let mut rx = start(dir.path(), src, w.clone());
    let mut last = String::new();
    let g = next(&mut rx).await;
    assert_eq!(names(&g), ["a-0", "b-0"]);
    for i in 1..=20 {
        w.set_value("k", &i.to_string());
    }
    while last != "20" {
        let g = next(&mut rx).await;
        let n = names(&g);
        let va = n[0].strip_prefix("a-").unwrap().to_string();
        let vb = n[1].strip_prefix("b-").unwrap().to_string();
        assert_eq!(va, vb, "glitch: {n:?}");
        for r in &g.resources {
            assert_eq!(
                r.params.get("comment").and_then(|c| c.as_str()),
                Some(format!("a-{va}b-{va}").as_str())
            );
        }
        last = va;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_of_a_dead_branch_are_stopped() {
    use tend_lang::funcs::stream::StreamCtx;
    use tend_lang::graph::Streams;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "one").unwrap();
    let w = MemWorld::new("h");
    w.set_value("on", "yes");
    let src = format!(
        "import \"os\"\nimport \"world\"\nif world.getval(\"on\")->value == \"yes\" {{\n\t$c = os.readfile(\"{}\") <|> \"x\"\n\ttest \"${{c}}\" {{}}\n}}\ntest \"base\" {{}}\n",
        data.display()
    );
    let main = dir.path().join("main.mcl");
    std::fs::write(&main, src).unwrap();
    let opts = Options {
        hostname: "h".into(),
        schemas: schemas(),
        world: w.clone(),
    };
    let prog = compile(&main, opts).unwrap_or_else(|f| panic!("{}", f.render()));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let ctx = StreamCtx {
        tx,
        world: w.clone(),
    };
    let mut streams = Streams::default();
    let g = prog.graph_once(&mut streams, &ctx).unwrap();
    assert_eq!(names(&g.spec), ["base", "one"]);
    let live = |s: &Streams| {
        let mut k: Vec<String> = s.sources.keys().map(|(n, _)| n.clone()).collect();
        k.sort();
        k
    };
    assert_eq!(live(&streams), ["os.readfile", "world.getval"]);
    // Turn the branch off: the file's source must be stopped.
    w.set_value("on", "no");
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(streams.update(&ev.key, ev.value));
    let g = prog.graph_once(&mut streams, &ctx).unwrap();
    assert_eq!(names(&g.spec), ["base"]);
    assert_eq!(live(&streams), ["world.getval"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_arguments_must_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let w = MemWorld::new("h");
    w.set_value("which", "a");
    w.set_value("a", "va");
    let src = "import \"world\"\n$k = world.getval(\"which\")->value\n$v = world.getval($k)->value\ntest \"${v}\" {}\n";
    let mut rx = start(dir.path(), src, w.clone());
    assert_eq!(names(&next(&mut rx).await), ["va"]);
    w.set_value("which", "b");
    let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let err = r.unwrap_err();
    assert!(
        err.starts_with("error: errStream: the arguments of world.getval changed"),
        "{err}"
    );
    assert!(err.contains("/main.mcl @ 3:6-3:22"), "{err}");
}

/// `history($v, 1)`: no graph until the value has changed once, then the value before the
/// current one (mgmt's history); a repeated value is not a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_gives_the_previous_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "one").unwrap();
    let src = format!(
        "import \"os\"\n$c = os.readfile(\"{}\")\n$p = history($c, 1)\ntest \"now ${{c}} before ${{p}}\" {{}}\n",
        data.display()
    );
    let mut rx = start(dir.path(), &src, MemWorld::new("h"));
    // Nothing yet: one value seen, none before it.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "a graph before there was a previous value"
    );
    put(&data, "two");
    assert_eq!(names(&next(&mut rx).await), ["now two before one"]);
    put(&data, "three");
    assert_eq!(names(&next(&mut rx).await), ["now three before two"]);
}

/// A send/recv edge reaches the graph with its fields; parallel edges between one pair merge
/// their values and their refresh flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_recv_fields_reach_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let src = "test \"a\" { Notify => Test[\"b\"], }\ntest \"b\" {}\n\
        Test[\"a\"].hello -> Test[\"b\"].comment\n\
        Test[\"a\"].hello -> Test[\"b\"].anotherstr\n";
    let mut rx = start(dir.path(), src, MemWorld::new("h"));
    let g = next(&mut rx).await;
    let want = EdgeSpec::new(ResId::new("test", "a"), ResId::new("test", "b"), true)
        .sending("hello", "comment")
        .sending("hello", "anotherstr");
    assert_eq!(g.edges, [want]);
    assert_eq!(g.edges[0].send[0].recv, "anotherstr", "sorted");
}
