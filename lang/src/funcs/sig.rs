//! A tiny reader for signature strings such as `func([]?a, func(?a) ?b) []?b`, so built-in
//! signatures are written as text and instantiated with fresh variables per call site.

use std::collections::HashMap;

use crate::types::{Ty, Unifier};

/// Reads a type written in mcl syntax, with `?name` type variables made fresh in `u`.
pub fn parse(text: &str, u: &mut Unifier) -> Ty {
    let mut p = Reader {
        s: text.as_bytes(),
        i: 0,
        vars: HashMap::new(),
    };
    let t = p.ty(u);
    debug_assert_eq!(p.i, p.s.len(), "trailing text in signature {text}");
    t
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    vars: HashMap<String, Ty>,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i] == b' ' {
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

    fn ty(&mut self, u: &mut Unifier) -> Ty {
        if self.eat("[]") {
            return Ty::list(self.ty(u));
        }
        if self.eat("?") {
            let n = self.word();
            return self.vars.entry(n).or_insert_with(|| u.fresh()).clone();
        }
        if self.eat("map{") {
            let k = self.ty(u);
            self.eat(":");
            let v = self.ty(u);
            self.eat("}");
            return Ty::map(k, v);
        }
        if self.eat("struct{") {
            let mut fs = Vec::new();
            while !self.eat("}") {
                let n = self.word();
                let t = self.ty(u);
                fs.push((n, t));
                self.eat(";");
            }
            return Ty::Struct(fs);
        }
        if self.eat("func(") {
            let mut args = Vec::new();
            while !self.eat(")") {
                args.push(self.ty(u));
                self.eat(",");
            }
            let r = self.ty(u);
            return Ty::func(args, r);
        }
        match self.word().as_str() {
            "bool" => Ty::Bool,
            "str" => Ty::Str,
            "int" => Ty::Int,
            "float" => Ty::Float,
            "variant" => Ty::Variant,
            w => panic!("bad type word `{w}` in a built-in signature"),
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
}
