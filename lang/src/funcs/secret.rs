//! `secret`: values a program uses without holding them: read on the host where it runs,
//! never written in the program or the World, redacted wherever tend shows a value
//! ([`tend_model::secrets`]). tend's own module (mgmt has none).
//!
//! - `secret.file(path str) str`: a host-local file's content, without one trailing newline
//!   (`echo pw > file` writes one); a stream: a rotated file is read again.
//! - `secret.env(name str) str`: an environment variable of `tend run`, read once.
//!
//! A missing file or variable is a catchable error (a `<|>` fallback works); no error text
//! ever shows the value.

use tend_model::Value;

use super::golang::s;
use super::{FuncError, Invoke};

fn keep(v: String, name: &str, what: &str) -> Result<Value, FuncError> {
    tend_model::secrets::register(&v)
        .map_err(|e| FuncError::fatal(format!("{name}: {what}: {e}")))?;
    Ok(Value::Str(v))
}

/// `secret.file(path) str`.
pub(crate) fn file(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let path = s(a, 0, "secret.file")?;
    if !path.starts_with('/') {
        return Err(FuncError::fatal(format!(
            "secret.file: the path must be absolute: {path:?}"
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| FuncError::catchable(format!("secret.file: {path}: {e}")))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| FuncError::fatal(format!("secret.file: {path}: the content is not UTF-8")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    keep(text, "secret.file", path)
}

/// `secret.env(name) str`.
pub(crate) fn env(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = s(a, 0, "secret.env")?;
    match std::env::var(name) {
        Ok(v) => keep(v, "secret.env", name),
        Err(std::env::VarError::NotPresent) => Err(FuncError::catchable(format!(
            "secret.env: the variable {name} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(FuncError::fatal(format!(
            "secret.env: the variable {name} is not UTF-8"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funcs::{call_simple, lookup};

    #[test]
    fn secrets_are_read_registered_and_never_shown_in_errors() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("pw");
        std::fs::write(&f, "hunter2-lang-test\n").unwrap();
        let b = lookup("secret", "file").unwrap();
        let v = call_simple(b, &[Value::from(f.to_str().unwrap())]).unwrap();
        assert_eq!(v, Value::from("hunter2-lang-test"));
        assert_eq!(
            tend_model::secrets::redact("x hunter2-lang-test y"),
            "x <redacted> y"
        );
        std::fs::write(&f, "abc").unwrap();
        let e = call_simple(b, &[Value::from(f.to_str().unwrap())]).unwrap_err();
        assert!(
            e.msg.contains("at least 4 bytes") && !e.msg.contains("abc\""),
            "{e}"
        );
        let e = call_simple(b, &[Value::from("/nonexistent/tend-pw")]).unwrap_err();
        assert!(e.catchable);
        assert!(call_simple(b, &[Value::from("relative")]).is_err());
        let e = call_simple(
            lookup("secret", "env").unwrap(),
            &[Value::from("TEND_NO_SUCH_SECRET_VAR")],
        )
        .unwrap_err();
        assert!(e.catchable && e.msg.contains("is not set"), "{e}");
    }
}
