//! `golang.template(tmpl str[, vars ?1]) str`: Go's `text/template`, as mgmt exposes it.
//!
//! The engine is the `gotmpl` crate (a port of Go's `text/template`: actions, pipelines,
//! `range`/`if`/`with`/`define`/`block`, variables, whitespace trimming, and Go's built-in
//! functions `printf`, `index`, `len`, `eq`/`lt`/..., `and`/`or`/`not`, `slice`, `html`, `js`,
//! `urlquery`, `print`/`println`, `call`). mgmt's conventions on top:
//!
//! - `vars` becomes the template's dot: a scalar as itself, a list as a list, a map with `str`
//!   keys as a map (`.key`), a struct as a map of its **Title-cased** field names (`.Name` for
//!   a field `name`), as mgmt does so that every struct field reads the same way. A map with
//!   other keys has its keys printed as strings (Go would keep them typed).
//! - Missing keys and fields print `<no value>` (Go's default `missingkey=default` over the
//!   maps mgmt builds); `{{ option "missingkey=error" }}`-style errors are the template's.
//! - Every pure library function with a fixed, monomorphic signature is callable under its
//!   "safe name": the module path with `.` and `/` replaced by `_` (`strings_to_upper`,
//!   `datetime_format`), and a `_` in front of a top-level name (`_concat`).
//! - Errors are `template: parse error: ...` and `template: execution error: ...`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use gotmpl::Value as G;
use tend_model::Value;

use super::{all, call_simple, sig, Builtin, FuncError, FuncKind, Invoke, Sig};
use crate::types::{Ty, Unifier};

/// `golang.template`'s signature at one call site: one or two arguments.
pub(super) fn template_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    match statics.len() {
        1 => Ok(sig::parse("func(str) str", u)),
        2 => Ok(sig::parse("func(str, ?1) str", u)),
        n => Err(format!(
            "golang.template takes a template and optionally its vars, not {n} arguments"
        )),
    }
}

/// Runs `golang.template`.
pub(super) fn template_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let Some(Value::Str(text)) = a.first() else {
        return Err(FuncError::fatal(
            "golang.template: the template must be a str",
        ));
    };
    let data = a.get(1).map(to_go).unwrap_or(G::Nil);
    render(text, &data).map(Value::Str)
}

/// Parses and executes `text` with `data` as dot.
pub(crate) fn render(text: &str, data: &G) -> Result<String, FuncError> {
    let t = gotmpl::Template::new("template")
        .funcs(library_funcs().clone())
        .parse(text)
        .map_err(|e| FuncError::fatal(format!("template: parse error: {e}")))?;
    t.execute_to_string(data)
        .map_err(|e| FuncError::fatal(format!("template: execution error: {e}")))
}

/// Go's `strings.Title` of a field name: the first letter upper-cased.
fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An mcl value as template data (see the module docs).
pub(crate) fn to_go(v: &Value) -> G {
    match v {
        Value::Bool(b) => G::Bool(*b),
        Value::Int(i) => G::Int(*i),
        Value::Float(f) => G::Float(*f),
        Value::Str(s) => G::String(s.as_str().into()),
        Value::List(l) => G::List(l.iter().map(to_go).collect::<Vec<_>>().into()),
        Value::Map(m) => {
            let out: BTreeMap<Arc<str>, G> = m
                .iter()
                .map(|(k, v)| {
                    let key: Arc<str> = match k {
                        Value::Str(s) => s.as_str().into(),
                        other => other.to_string().into(),
                    };
                    (key, to_go(v))
                })
                .collect();
            G::Map(Arc::new(out))
        }
        Value::Struct(fs) => {
            let out: BTreeMap<Arc<str>, G> = fs
                .iter()
                .map(|(k, v)| (title(k).into(), to_go(v)))
                .collect();
            G::Map(Arc::new(out))
        }
    }
}

/// Template data back as an mcl value, for a library function's argument.
fn from_go(v: &G) -> Result<Value, String> {
    Ok(match v {
        G::Bool(b) => Value::Bool(*b),
        G::Int(i) => Value::Int(*i),
        G::Uint(u) => Value::Int(i64::try_from(*u).map_err(|_| format!("{u} is out of range"))?),
        G::Float(f) => Value::Float(*f),
        G::String(s) => Value::Str(s.to_string()),
        G::List(l) => Value::List(l.iter().map(from_go).collect::<Result<_, _>>()?),
        G::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| Ok((Value::Str(k.to_string()), from_go(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("{other:?} is not an mcl value")),
    })
}

/// mgmt's `safename`: `strings.to_upper` -> `strings_to_upper`, `len` -> `_len`.
pub(crate) fn safe_name(b: &Builtin) -> String {
    if b.module.is_empty() {
        format!("_{}", b.name)
    } else {
        format!("{}_{}", b.module.replace(['/', '.'], "_"), b.name)
    }
}

/// Whether a built-in can be called from a template: pure, with a fixed signature without
/// type variables (mgmt offers its "simple", unified functions).
fn callable(b: &Builtin) -> bool {
    b.kind == FuncKind::Pure && matches!(b.sig, Sig::Text(t) if !t.contains('?'))
}

/// The library functions a template can call, built once.
fn library_funcs() -> &'static gotmpl::FuncMap {
    static F: OnceLock<gotmpl::FuncMap> = OnceLock::new();
    F.get_or_init(|| {
        let mut m = gotmpl::FuncMap::new();
        for b in all().filter(|b| callable(b)) {
            let name = safe_name(b);
            let shown = b.display_name();
            let f = move |args: &[G]| -> Result<G, gotmpl::TemplateError> {
                let vals = args
                    .iter()
                    .map(from_go)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| gotmpl::TemplateError::Exec(format!("function `{shown}`: {e}")))?;
                call_simple(b, &vals).map(|v| to_go(&v)).map_err(|e| {
                    gotmpl::TemplateError::Exec(format!("function `{shown}` errored: {e}"))
                })
            };
            m.insert(name, Arc::new(f));
        }
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str, v: Value) -> Result<String, String> {
        render(t, &to_go(&v)).map_err(|e| e.msg)
    }

    fn s(fields: &[(&str, Value)]) -> Value {
        Value::Struct(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn actions_of_each_kind() {
        let v = s(&[
            ("name", "web".into()),
            ("port", Value::Int(8080)),
            ("hosts", Value::from(vec!["a", "b", "c"])),
            ("debug", Value::Bool(false)),
        ]);
        assert_eq!(r("{{.Name}}:{{.Port}}", v.clone()).unwrap(), "web:8080");
        assert_eq!(
            r(
                "{{range $i, $h := .Hosts}}{{if $i}},{{end}}{{$h}}{{end}}",
                v.clone()
            )
            .unwrap(),
            "a,b,c"
        );
        assert_eq!(
            r("{{if .Debug}}on{{else}}off{{end}}", v.clone()).unwrap(),
            "off"
        );
        assert_eq!(
            r("{{with .Name}}<{{.}}>{{end}}", v.clone()).unwrap(),
            "<web>"
        );
        assert_eq!(
            r(
                "{{printf \"%s=%d\" .Name .Port}} {{len .Hosts}} {{index .Hosts 1}}",
                v.clone()
            )
            .unwrap(),
            "web=8080 3 b"
        );
        assert_eq!(
            r("a  {{- \" b \" -}}  c", Value::Bool(true)).unwrap(),
            "a b c"
        );
        assert_eq!(
            r(
                "{{if and (gt .Port 80) (eq .Name \"web\")}}yes{{end}}",
                v.clone()
            )
            .unwrap(),
            "yes"
        );
        assert_eq!(
            r(
                "{{define \"x\"}}[{{.}}]{{end}}{{template \"x\" .Name}}",
                v.clone()
            )
            .unwrap(),
            "[web]"
        );
        // Missing fields print Go's `<no value>`.
        assert_eq!(r("{{.Nope}}", v.clone()).unwrap(), "<no value>");
        // No vars at all.
        assert_eq!(render("plain {{\"x\"}}", &G::Nil).unwrap(), "plain x");
    }

    #[test]
    fn maps_with_str_keys_read_by_key() {
        let mut m = BTreeMap::new();
        m.insert(Value::from("b"), Value::Int(2));
        m.insert(Value::from("a"), Value::Int(1));
        assert_eq!(
            r(
                "{{.a}}{{range $k, $v := .}} {{$k}}={{$v}}{{end}}",
                Value::Map(m)
            )
            .unwrap(),
            "1 a=1 b=2"
        );
    }

    #[test]
    fn library_functions_under_their_safe_names() {
        assert_eq!(r("{{strings_to_upper .}}", "abc".into()).unwrap(), "ABC");
        assert_eq!(r("{{_concat . \"!\"}}", "hi".into()).unwrap(), "hi!");
        let e = r("{{strings_to_upper 3}}", Value::Bool(true)).unwrap_err();
        assert!(e.starts_with("template: execution error:"), "{e}");
        assert!(e.contains("strings.to_upper"), "{e}");
    }

    #[test]
    fn errors_are_staged_as_mgmt_stages_them() {
        let e = r("{{.Name", Value::Bool(true)).unwrap_err();
        assert!(e.starts_with("template: parse error:"), "{e}");
        // Go refuses an unknown function when parsing; gotmpl when executing.
        let e = r("{{nosuchfunc 1}}", Value::Bool(true)).unwrap_err();
        assert!(e.contains("nosuchfunc"), "{e}");
        let e = r("{{index . 5}}", Value::from(vec!["a"])).unwrap_err();
        assert!(e.starts_with("template: execution error:"), "{e}");
    }

    #[test]
    fn a_big_file_from_a_long_list() {
        let l: Vec<Value> = (0..10_000)
            .map(|i| {
                s(&[
                    ("host", format!("host{i:05}.example.org").into()),
                    ("port", Value::Int(i)),
                ])
            })
            .collect();
        let out = r(
            "{{range .}}server {{.Host}}:{{.Port}} weight=1 max_fails=3 fail_timeout=30s; # pool member\n{{end}}",
            Value::List(l),
        )
        .unwrap();
        assert_eq!(out.lines().count(), 10_000);
        assert!(out.len() > 800_000, "{}", out.len());
    }
}
