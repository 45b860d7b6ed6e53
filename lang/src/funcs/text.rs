//! Text rendering shared by `fmt.printf` and interpolation: float text (§13 W19), Go-style
//! quoting (`%q`), and `%v` of every value.

use tend_model::Value;

/// The shortest decimal text that round-trips, never with an exponent (`13.0` -> `13`).
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `Display` for f64 prints the shortest round-trip digits without an exponent.
    format!("{f}")
}

/// Quotes a string the way `%q` does: Go's `strconv.Quote` ([`super::gostrconv::quote`]).
pub fn quote(s: &str) -> String {
    super::gostrconv::quote(s, super::gostrconv::QuoteMode::Print)
}

/// `%v` of a value: strings raw at the top level and quoted when nested.
pub fn show(v: &Value, top: bool) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_text(*f),
        Value::Str(s) if top => s.clone(),
        Value::Str(s) => quote(s),
        Value::List(l) => format!(
            "[{}]",
            l.iter()
                .map(|e| show(e, false))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", show(k, false), show(v, false)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Struct(fs) => format!(
            "struct{{{}}}",
            fs.iter()
                .map(|(k, v)| format!("{k}: {}", show(v, false)))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// The type of a value as `%T` prints it (an empty list or map prints `[]variant` /
/// `map{variant: variant}` since the value alone does not tell the element type).
pub fn type_of(v: &Value) -> String {
    match v {
        Value::List(l) => format!("[]{}", l.first().map(type_of).unwrap_or("variant".into())),
        Value::Map(m) => match m.iter().next() {
            Some((k, v)) => format!("map{{{}: {}}}", type_of(k), type_of(v)),
            None => "map{variant: variant}".into(),
        },
        Value::Struct(fs) => format!(
            "struct{{{}}}",
            fs.iter()
                .map(|(k, v)| format!("{k} {}", type_of(v)))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        v => v.type_name().into(),
    }
}

/// One piece of a printf format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A verb character (`s`, `q`, `d`, `f`, `t`, `v`, `T`).
    Verb(char),
}

/// Splits a printf format into pieces, or says which verb is not supported.
pub fn parse_format(f: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut it = f.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        match it.next() {
            Some('%') => text.push('%'),
            Some(v @ ('s' | 'q' | 'd' | 'f' | 't' | 'v' | 'T')) => {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Verb(v));
            }
            Some(o) => return Err(format!("printf verb %{o} is not supported")),
            None => return Err("printf format ends with a lone %".into()),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Formats `args` with `format`; a mismatch between a verb and its argument is an error.
pub fn printf(format: &str, args: &[Value]) -> Result<String, String> {
    let pieces = parse_format(format)?;
    let verbs = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Verb(_)))
        .count();
    if verbs != args.len() {
        return Err(format!(
            "printf format has {verbs} verbs but {} arguments were given",
            args.len()
        ));
    }
    let mut out = String::new();
    let mut args = args.iter();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Verb(v) => {
                let a = args.next().expect("counted above");
                let s = match (v, a) {
                    ('s', Value::Str(s)) => s.clone(),
                    ('q', Value::Str(s)) => quote(s),
                    ('d', Value::Int(i)) => i.to_string(),
                    ('f', Value::Float(f)) => float_text(*f),
                    ('t', Value::Bool(b)) => b.to_string(),
                    ('v', a) => show(a, true),
                    ('T', a) => type_of(a),
                    (v, a) => {
                        return Err(format!("printf verb %{v} got a {}", a.type_name()));
                    }
                };
                out.push_str(&s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_never_use_exponents() {
        assert_eq!(float_text(13.0), "13");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(1e21), "1000000000000000000000");
        assert_eq!(float_text(3.5), "3.5");
    }

    #[test]
    fn quoting_and_values() {
        assert_eq!(quote("a\"b\n\x01"), "\"a\\\"b\\n\\x01\"");
        let v = Value::Struct(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::from("x")),
        ]);
        assert_eq!(show(&v, true), "struct{a: 1; b: \"x\"}");
        assert_eq!(show(&Value::from(vec!["a", "b"]), true), "[\"a\", \"b\"]");
        assert_eq!(type_of(&Value::from(vec!["a"])), "[]str");
    }

    #[test]
    fn printf_formats_and_rejects() {
        let r = printf(
            "%d-%s %v%% %q %f %t",
            &[
                Value::Int(4),
                Value::from("x"),
                Value::Float(2.0),
                Value::from("y"),
                Value::Float(0.5),
                Value::Bool(true),
            ],
        );
        assert_eq!(r.unwrap(), "4-x 2% \"y\" 0.5 true");
        assert!(printf("%d", &[Value::from("x")]).is_err());
        assert!(printf("%5d", &[Value::Int(1)]).is_err());
        assert!(printf("%d %d", &[Value::Int(1)]).is_err());
    }
}
