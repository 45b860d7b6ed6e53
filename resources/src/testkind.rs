//! `test`: the side-effect-free kind of the golden tests, with the schema of spec/mcl.md §8.2.

use std::sync::OnceLock;

use tend_engine::{CheckCtx, Checked, ResError, Resource, Watcher};
use tend_model::{Field, KindSchema, ResSpec, Type, Value};

use crate::params::{field_err, Params};

fn int_field(name: &str, lo: i128, hi: i128) -> Field {
    Field::new(name, Type::Int, "an int with the native range of its name")
        .default_value(0i64)
        .range(lo, hi)
}

/// The `test` schema: field names, types and native ranges exactly as spec/mcl.md §8.2.
pub(crate) fn schema() -> &'static KindSchema {
    static S: OnceLock<KindSchema> = OnceLock::new();
    S.get_or_init(|| {
        let i8r = (i8::MIN as i128, i8::MAX as i128);
        let i16r = (i16::MIN as i128, i16::MAX as i128);
        let i32r = (i32::MIN as i128, i32::MAX as i128);
        let i64r = (i64::MIN as i128, i64::MAX as i128);
        let u8r = (0, u8::MAX as i128);
        let u16r = (0, u16::MAX as i128);
        let u32r = (0, u32::MAX as i128);
        let u64r = (0, u64::MAX as i128);
        let mut s = KindSchema::new("test");
        s = s.field(Field::new("bool", Type::Bool, "a bool").default_value(false));
        for name in ["str", "anotherstr", "comment", "sendvalue"] {
            s = s.field(Field::new(name, Type::Str, "a string").default_value(""));
        }
        s = s.field(
            Field::new(
                "validateerror",
                Type::Str,
                "when non-empty, validation fails with this message",
            )
            .default_value(""),
        );
        for (name, (lo, hi)) in [
            ("int", i64r),
            ("int8", i8r),
            ("int16", i16r),
            ("int32", i32r),
            ("int64", i64r),
            ("uint", u64r),
            ("uint8", u8r),
            ("uint16", u16r),
            ("uint32", u32r),
            ("uint64", u64r),
            ("byte", u8r),
            ("rune", i32r),
            ("waitforerror", i64r),
        ] {
            s = s.field(int_field(name, lo, hi));
        }
        s = s
            .field(Field::new("float32", Type::Float, "a float").default_value(0.0))
            .field(Field::new("float64", Type::Float, "a float").default_value(0.0))
            .field(Field::new("boolptr", Type::Bool, "an optional bool").optional())
            .field(Field::new("stringptr", Type::Str, "an optional string").optional());
        for (name, (lo, hi)) in [
            ("int64ptr", i64r),
            ("int8ptr", i8r),
            ("uint8ptr", u8r),
            ("int8ptrptrptr", i8r),
        ] {
            s = s.field(
                Field::new(name, Type::Int, "an optional int")
                    .range(lo, hi)
                    .optional(),
            );
        }
        let strs = Type::List(Box::new(Type::Str));
        for name in ["slicestring", "onlyshow", "expectrecv"] {
            s = s.field(
                Field::new(name, strs.clone(), "a list of strings")
                    .default_value(Value::List(Vec::new())),
            );
        }
        s = s.field(
            Field::new(
                "mapintfloat",
                Type::Map(Box::new(Type::Int), Box::new(Type::Float)),
                "a map of ints to floats",
            )
            .default_value(Value::Map(Default::default())),
        );
        s = s.field(
            Field::new(
                "mixedstruct",
                Type::Struct(vec![
                    ("somebool".into(), Type::Bool),
                    ("somestr".into(), Type::Str),
                    ("someint".into(), Type::Int),
                    ("somefloat".into(), Type::Float),
                ]),
                "a struct",
            )
            .default_value(Value::Struct(vec![
                ("somebool".into(), Value::Bool(false)),
                ("somestr".into(), Value::from("")),
                ("someint".into(), Value::Int(0)),
                ("somefloat".into(), Value::Float(0.0)),
            ])),
        );
        s = s.field(Field::new("interface", Type::Any, "a value of any type").optional());
        s = s
            .field(
                Field::new("validatebool", Type::Bool, "when true, validation fails")
                    .default_value(false),
            )
            .field(Field::new("alwaysgroup", Type::Bool, "a bool").default_value(false))
            .field(Field::new("comparefail", Type::Bool, "a bool").default_value(false));
        s.sends("hello", Type::Str, "the value of `sendvalue`")
            .sends("answer", Type::Int, "42")
    })
}

/// Builds a `test`: validation fails when `validatebool` is true or `validateerror` is set.
pub(crate) fn build(spec: &ResSpec) -> Result<Box<dyn Resource>, ResError> {
    let p = Params::new(spec, schema())?;
    if p.bool("validatebool")? {
        return Err(field_err("validatebool", "is true, so validation fails"));
    }
    let e = p.str("validateerror")?;
    if !e.is_empty() {
        return Err(field_err("validateerror", e));
    }
    Ok(Box::new(TestRes {
        hello: p.str("sendvalue")?,
    }))
}

/// It sends `hello` (its `sendvalue`) and `answer` (42), as mgmt's.
struct TestRes {
    hello: String,
}

#[async_trait::async_trait]
impl Resource for TestRes {
    async fn watch(&self, w: Watcher) -> Result<(), ResError> {
        w.running();
        std::future::pending::<()>().await;
        Ok(())
    }

    async fn check_apply(&self, _ctx: CheckCtx) -> Result<Checked, ResError> {
        Ok(Checked::InState)
    }

    fn sent(&self) -> Vec<(String, Value)> {
        vec![
            ("answer".into(), Value::Int(42)),
            ("hello".into(), Value::from(self.hello.as_str())),
        ]
    }
}
