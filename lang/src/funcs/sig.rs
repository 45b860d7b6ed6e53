//! The one reader of type text in mcl syntax: built-in signatures such as
//! `func([]?a, func(?a) ?b) []?b` (instantiated with fresh variables per call site) and the
//! static type strings programs write (`encoding.decode_json`'s type argument).

use std::collections::HashMap;

use crate::types::{Ty, Unifier};

/// Reads a built-in's signature, with `?name` type variables made fresh in `u`. Signatures are
/// the library's own text: a bad one is a bug, reported by the test that reads them all.
pub fn parse(text: &str, u: &mut Unifier) -> Ty {
    read(text, Some(u)).unwrap_or_else(|e| panic!("built-in signature `{text}`: {e}"))
}

/// Reads a type a program wrote (no type variables), or says what is wrong with it.
pub fn parse_static(text: &str) -> Result<Ty, String> {
    read(text, None)
}

fn read(text: &str, u: Option<&mut Unifier>) -> Result<Ty, String> {
    let mut p = Reader {
        s: text.as_bytes(),
        i: 0,
        vars: HashMap::new(),
        u,
    };
    let t = p.ty(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!(
            "invalid type {}: unexpected text at offset {}",
            super::text::quote(text),
            p.i
        ));
    }
    Ok(t)
}

struct Reader<'a, 'u> {
    s: &'a [u8],
    i: usize,
    vars: HashMap<String, Ty>,
    /// Where type variables come from; `None`: none are allowed.
    u: Option<&'u mut Unifier>,
}

impl Reader<'_, '_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("invalid type: expected `{t}` at offset {}", self.i))
        }
    }

    fn word(&mut self) -> String {
        self.ws();
        let st = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    fn ty(&mut self, depth: usize) -> Result<Ty, String> {
        if depth > 64 {
            return Err("invalid type: nested too deeply".into());
        }
        if self.eat("[]") {
            return Ok(Ty::list(self.ty(depth + 1)?));
        }
        if self.eat("?") {
            let n = self.word();
            let Some(u) = self.u.as_deref_mut() else {
                return Err(format!(
                    "invalid type: a type variable `?{n}` is not a type"
                ));
            };
            return Ok(self.vars.entry(n).or_insert_with(|| u.fresh()).clone());
        }
        if self.eat("map{") {
            let k = self.ty(depth + 1)?;
            if matches!(k, Ty::List(_) | Ty::Map(..)) {
                return Err(format!("invalid type: map key type {k} is not hashable"));
            }
            self.expect(":")?;
            let v = self.ty(depth + 1)?;
            self.expect("}")?;
            return Ok(Ty::map(k, v));
        }
        if self.eat("struct{") {
            let mut fs: Vec<(String, Ty)> = Vec::new();
            loop {
                if self.eat("}") {
                    return Ok(Ty::Struct(fs));
                }
                let n = self.word();
                if n.is_empty() || n.as_bytes()[0].is_ascii_digit() {
                    return Err(format!(
                        "invalid type: expected a field name at offset {}",
                        self.i
                    ));
                }
                if fs.iter().any(|(f, _)| *f == n) {
                    return Err(format!("invalid type: duplicate struct field {n}"));
                }
                let t = self.ty(depth + 1)?;
                fs.push((n, t));
                if !self.eat(";") {
                    self.expect("}")?;
                    return Ok(Ty::Struct(fs));
                }
            }
        }
        if self.eat("func(") {
            let mut args = Vec::new();
            while !self.eat(")") {
                args.push(self.ty(depth + 1)?);
                if !self.eat(",") {
                    self.expect(")")?;
                    break;
                }
            }
            let r = self.ty(depth + 1)?;
            return Ok(Ty::func(args, r));
        }
        let at = self.i;
        match self.word().as_str() {
            "bool" => Ok(Ty::Bool),
            "str" => Ok(Ty::Str),
            "int" => Ok(Ty::Int),
            "float" => Ok(Ty::Float),
            "variant" => Ok(Ty::Variant),
            "" => Err(format!("invalid type: expected a type at offset {at}")),
            w => Err(format!("invalid type: no type `{w}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_signatures() {
        let mut u = Unifier::new();
        let t = parse("func([]?a, func(?a) ?b) []?b", &mut u);
        assert_eq!(t.to_string(), "func([]?0, func(?0) ?1) []?1");
        let t = parse("func(map{?k: ?v}) struct{name str; host str}", &mut u);
        assert_eq!(
            t.to_string(),
            "func(map{?2: ?3}) struct{name str; host str}"
        );
    }

    #[test]
    fn reads_static_types_and_says_what_is_wrong() {
        for t in [
            "int",
            "[]str",
            "map{str: []float}",
            "struct{a int; b struct{}}",
        ] {
            assert_eq!(parse_static(t).unwrap().to_string(), t);
        }
        for (t, why) in [
            ("", "expected a type"),
            ("?a", "type variable"),
            ("struct{a int; a str}", "duplicate struct field a"),
            ("map{[]int: int}", "not hashable"),
            ("int int", "unexpected text"),
            ("nope", "no type `nope`"),
        ] {
            let e = parse_static(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }
}
