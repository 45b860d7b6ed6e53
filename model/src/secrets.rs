//! Secrets this process has read (mcl's `secret.file` and `secret.env`), and their
//! redaction: every place tend shows a value to someone — the log, `/v1/graph`, `tend check
//! --print-graph`, `print`, a dry run's diff — passes it through [`redact`], which replaces
//! each registered secret with `<redacted>`, also inside a longer string (a config file's
//! content that embeds a password). A resource that holds a secret is never exported
//! ([`holds_secret`]), so a secret never reaches the World.
//!
//! Matching is by value, as CI systems mask their secrets: a secret of fewer than
//! [`MIN_LEN`] bytes is refused when it is read, since masking it would mangle unrelated
//! text (and it would hardly be secret).

use std::borrow::Cow;
use std::sync::RwLock;

use crate::value::Value;

/// The replacement text.
pub const REDACTED: &str = "<redacted>";

/// The shortest secret tend accepts.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `s` as a secret (from now on redacted everywhere). Refuses a secret shorter than
/// [`MIN_LEN`] bytes (the error does not show it).
pub fn register(s: &str) -> Result<(), String> {
    if s.len() < MIN_LEN {
        return Err(format!(
            "a secret must be at least {MIN_LEN} bytes long to be redacted safely (this one is {})",
            s.len()
        ));
    }
    let mut g = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !g.iter().any(|x| x == s) {
        g.push(s.to_string());
        // Longest first: a secret that contains another is replaced whole.
        g.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
    Ok(())
}

/// Whether any secret was registered (the fast path of every redaction).
pub fn any() -> bool {
    !SECRETS.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let g = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if g.is_empty() || !g.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in g.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

/// Whether `v` holds a registered secret anywhere (in a string, a key, a field).
pub fn holds_secret(v: &Value) -> bool {
    if !any() {
        return false;
    }
    match v {
        Value::Str(s) => matches!(redact(s), Cow::Owned(_)),
        Value::List(l) => l.iter().any(holds_secret),
        Value::Map(m) => m.iter().any(|(k, v)| holds_secret(k) || holds_secret(v)),
        Value::Struct(f) => f.iter().any(|(_, v)| holds_secret(v)),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) => false,
    }
}

/// `v` with every registered secret redacted in its strings.
pub fn redact_value(v: &Value) -> Value {
    if !any() {
        return v.clone();
    }
    match v {
        Value::Str(s) => Value::Str(redact(s).into_owned()),
        Value::List(l) => Value::List(l.iter().map(redact_value).collect()),
        Value::Map(m) => Value::Map(
            m.iter()
                .map(|(k, v)| (redact_value(k), redact_value(v)))
                .collect(),
        ),
        Value::Struct(f) => Value::Struct(
            f.iter()
                .map(|(k, v)| (k.clone(), redact_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_and_refuses_short_secrets() {
        assert!(register("abc").is_err());
        register("s3cr3t-model-test").unwrap();
        register("s3cr3t-model-test-longer").unwrap();
        assert_eq!(
            redact("user=x password=s3cr3t-model-test; again s3cr3t-model-test-longer"),
            "user=x password=<redacted>; again <redacted>"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        let v = Value::Struct(vec![(
            "content".into(),
            Value::List(vec![Value::from("a"), Value::from("pw=s3cr3t-model-test")]),
        )]);
        assert!(holds_secret(&v));
        assert!(!holds_secret(&Value::from("plain")));
        assert_eq!(
            redact_value(&v),
            Value::Struct(vec![(
                "content".into(),
                Value::List(vec![Value::from("a"), Value::from("pw=<redacted>")]),
            )])
        );
    }
}
