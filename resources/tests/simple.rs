//! `noop`, `print`, `timer` and `test`.

use tend_engine::Checked;
use tend_model::ResSpec;

use crate::common::{apply, build, dry, invalid, refresh, watch};

#[tokio::test]
async fn noop_is_always_in_state() {
    let r = build(ResSpec::new("noop", "n").param("comment", "hi"));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(refresh(&r).await.unwrap(), Checked::InState);
    let _w = watch(&r).await;
}

#[tokio::test]
async fn print_prints_once_per_message_and_on_refresh() {
    let r = build(ResSpec::new("print", "p").param("msg", "hello"));
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    let r = build(
        ResSpec::new("print", "q")
            .param("msg", "only on refresh")
            .param("refresh_only", true),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_fires_every_interval() {
    let r = build(ResSpec::new("timer", "t").param("interval", 1i64));
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let w = watch(&r).await;
    w.clear();
    w.event_within("first tick", 5).await;
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    w.event_within("second tick", 5).await;
    // A refresh restarts the count without failing anything.
    assert_eq!(refresh(&r).await.unwrap(), Checked::Changed);
    let e = invalid(ResSpec::new("timer", "t").param("interval", 0i64));
    assert!(e.contains("field `interval`"), "{e}");
}

#[tokio::test]
async fn test_kind_validates_and_has_no_side_effects() {
    let r = build(
        ResSpec::new("test", "t")
            .param("int8", 127i64)
            .param("uint8", 255i64)
            .param("slicestring", vec!["a", "b"])
            .param("interface", 3.5),
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);
    let e = invalid(ResSpec::new("test", "t").param("validatebool", true));
    assert!(e.contains("field `validatebool`"), "{e}");
    let e = invalid(ResSpec::new("test", "t").param("validateerror", "boom"));
    assert!(
        e.contains("field `validateerror`") && e.contains("boom"),
        "{e}"
    );
    let e = invalid(ResSpec::new("test", "t").param("int8", 300i64));
    assert!(e.contains("field `int8`"), "{e}");
    let e = invalid(ResSpec::new("test", "t").param("uint8ptr", -1i64));
    assert!(e.contains("field `uint8ptr`"), "{e}");
    let s = tend_resources::registry()
        .get("test")
        .unwrap()
        .schema
        .clone();
    let sends: Vec<&str> = s.sends.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(sends, ["hello", "answer"]);
    // It sends them (mgmt's: `hello` is its `sendvalue`).
    let t = build(ResSpec::new("test", "t").param("sendvalue", "hi"));
    assert_eq!(
        t.sent(),
        [
            ("answer".to_string(), tend_model::Value::Int(42)),
            ("hello".to_string(), tend_model::Value::from("hi"))
        ]
    );
    for f in [
        "bool",
        "str",
        "anotherstr",
        "comment",
        "sendvalue",
        "validateerror",
        "int",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "byte",
        "rune",
        "waitforerror",
        "float32",
        "float64",
        "boolptr",
        "stringptr",
        "int64ptr",
        "int8ptr",
        "uint8ptr",
        "int8ptrptrptr",
        "slicestring",
        "onlyshow",
        "expectrecv",
        "mapintfloat",
        "mixedstruct",
        "interface",
        "validatebool",
        "alwaysgroup",
        "comparefail",
    ] {
        assert!(s.get(f).is_some(), "test has no field {f}");
    }
    assert_eq!(s.fields.len(), 36);
}

#[test]
fn only_pkg_groups_and_only_file_reverses() {
    let r = tend_resources::registry();
    let groups: Vec<&str> = r
        .kinds()
        .filter(|k| k.schema.groups)
        .map(|k| k.schema.kind.as_str())
        .collect();
    assert_eq!(groups, ["pkg"]);
    let reversible: Vec<&str> = r
        .kinds()
        .filter(|k| k.schema.reversible && k.reverse.is_some())
        .map(|k| k.schema.kind.as_str())
        .collect();
    assert_eq!(reversible, ["file"]);
}

/// The engine with the real kinds: `test` sends `hello` (its `sendvalue`) and `answer` (42)
/// into `value`s, which put them in the host's table; the program's own `any` never lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_kind_sends_into_values_through_the_engine() {
    use tend_model::{EdgeSpec, GraphSpec, ResId, Value};
    let t = tempfile::tempdir().unwrap();
    let e = crate::common::engine(t.path(), false);
    let (hello, answer) = ("tend-test-sr-hello", "tend-test-sr-answer");
    let g = GraphSpec {
        resources: vec![
            ResSpec::new("test", "sender").param("sendvalue", "hi"),
            ResSpec::new("value", hello).param("any", "the program's"),
            ResSpec::new("value", answer),
        ],
        edges: vec![
            EdgeSpec::new(
                ResId::new("test", "sender"),
                ResId::new("value", hello),
                false,
            )
            .sending("hello", "any"),
            EdgeSpec::new(
                ResId::new("test", "sender"),
                ResId::new("value", answer),
                false,
            )
            .sending("answer", "any"),
        ],
    };
    e.swap(g).await.unwrap();
    crate::common::wait_status(&e, "convergence", 10, |s| s.converged).await;
    assert_eq!(tend_model::values::get(hello), Some(Value::from("hi")));
    assert_eq!(tend_model::values::get(answer), Some(Value::Int(42)));
    e.shutdown().await;
}
