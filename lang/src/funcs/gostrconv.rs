//! Go's `strconv`: integer and float parsing with Go's syntax and `*NumError` texts
//! (`strconv.ParseInt: parsing "x": invalid syntax`), `FormatInt`, and Go's quoting
//! (`Quote`, `QuoteToASCII`, `QuoteToGraphic`, `Unquote`, `QuotedPrefix`).

use std::sync::OnceLock;

use super::FuncError;

/// Go's `*NumError` text, as a catchable error.
pub(super) fn num_error(func: &str, num: &str, err: &str) -> FuncError {
    FuncError::catchable(format!(
        "strconv.{func}: parsing {}: {err}",
        quote(num, QuoteMode::Print)
    ))
}

/// Go's `strconv.FormatInt`; a base outside 2..=36 is Go's panic (fatal).
pub(super) fn format_int(i: i64, base: i64) -> Result<String, FuncError> {
    if !(2..=36).contains(&base) {
        return Err(FuncError::fatal(
            "strconv: illegal AppendInt/FormatInt base",
        ));
    }
    let mut u = i.unsigned_abs();
    let b = base as u64;
    let mut digits = Vec::new();
    loop {
        let d = (u % b) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        u /= b;
        if u == 0 {
            break;
        }
    }
    if i < 0 {
        digits.push(b'-');
    }
    digits.reverse();
    Ok(String::from_utf8(digits).unwrap_or_default())
}

/// Go's `underscoreOK`: `_` only between digits (or after a base prefix).
fn underscore_ok(s: &str) -> bool {
    let s = s.as_bytes();
    let s = match s.first() {
        Some(b'+' | b'-') => &s[1..],
        _ => s,
    };
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1] | 0x20 == b'x';
    }
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() || (hex && (c | 0x20).is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

enum UintErr {
    Syntax,
    Range,
    Base,
    BitSize,
}

fn parse_uint(s: &str, base: i64, bit_size: i64) -> Result<u64, UintErr> {
    if s.is_empty() {
        return Err(UintErr::Syntax);
    }
    let base0 = base == 0;
    let b = s.as_bytes();
    let (base, digits): (u64, &[u8]) = match base {
        2..=36 => (base as u64, b),
        0 => {
            if b[0] == b'0' {
                match b.get(1).map(|c| c | 0x20) {
                    Some(b'b') if b.len() >= 3 => (2, &b[2..]),
                    Some(b'o') if b.len() >= 3 => (8, &b[2..]),
                    Some(b'x') if b.len() >= 3 => (16, &b[2..]),
                    _ => (8, &b[1..]),
                }
            } else {
                (10, b)
            }
        }
        _ => return Err(UintErr::Base),
    };
    let bits = match bit_size {
        0 => 64,
        1..=64 => bit_size as u32,
        _ => return Err(UintErr::BitSize),
    };
    let max: u64 = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' if base0 => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => u64::from(c - b'0'),
            _ if (c | 0x20).is_ascii_lowercase() => u64::from((c | 0x20) - b'a' + 10),
            _ => return Err(UintErr::Syntax),
        };
        if d >= base {
            return Err(UintErr::Syntax);
        }
        n = match n.checked_mul(base).and_then(|n| n.checked_add(d)) {
            Some(v) if v <= max => v,
            _ => return Err(UintErr::Range),
        };
    }
    if underscores && !underscore_ok(s) {
        return Err(UintErr::Syntax);
    }
    Ok(n)
}

/// Go's `strconv.ParseInt` (`func` names the Go function in the error: `ParseInt`, `Atoi`).
pub(super) fn parse_int(s: &str, base: i64, bit_size: i64, func: &str) -> Result<i64, FuncError> {
    if s.is_empty() {
        return Err(num_error(func, s, "invalid syntax"));
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let un = match parse_uint(body, base, bit_size) {
        Ok(v) => Some(v),
        Err(UintErr::Range) => None,
        Err(UintErr::Syntax) => return Err(num_error(func, s, "invalid syntax")),
        Err(UintErr::Base) => return Err(num_error(func, s, &format!("invalid base {base}"))),
        Err(UintErr::BitSize) => {
            return Err(num_error(func, s, &format!("invalid bit size {bit_size}")))
        }
    };
    let bits = if bit_size == 0 { 64 } else { bit_size as u32 };
    let cutoff: u64 = 1 << (bits - 1);
    match un {
        Some(u) if !neg && u < cutoff => Ok(u as i64),
        Some(u) if neg && u <= cutoff => Ok((u as i64).wrapping_neg()),
        _ => Err(num_error(func, s, "value out of range")),
    }
}

/// Rounds `mant * 2^exp` (with `sticky` set when nonzero bits were dropped below `mant`) to a
/// float with `prec` bits of precision and minimum normal exponent `emin`, or `None` when it
/// overflows `emax`.
fn round_binary(mant: u64, sticky: bool, exp: i64, prec: u32, emin: i64, emax: i64) -> Option<f64> {
    if mant == 0 {
        return Some(0.0);
    }
    let nbits = i64::from(64 - mant.leading_zeros());
    let top = exp + nbits - 1;
    let keep = if top >= emin {
        i64::from(prec)
    } else {
        i64::from(prec) - (emin - top)
    };
    let shift = nbits - keep;
    let (mut m, mut e) = (mant, exp);
    if shift > 0 {
        let (kept, half, rest) = if shift > 64 {
            (0, false, true)
        } else if shift == 64 {
            (0, mant >> 63 == 1, mant << 1 != 0 || sticky)
        } else {
            let dropped = mant & ((1u64 << shift) - 1);
            let half_bit = 1u64 << (shift - 1);
            (
                mant >> shift,
                dropped & half_bit != 0,
                dropped & (half_bit - 1) != 0 || sticky,
            )
        };
        m = kept;
        if half && (rest || m & 1 == 1) {
            m += 1;
        }
        e += shift;
    }
    if m == 0 {
        return Some(0.0);
    }
    let top = e + i64::from(64 - m.leading_zeros()) - 1;
    if top > emax {
        return None;
    }
    Some(libm::scalbn(m as f64, e as i32))
}

fn special_float(s: &str) -> Option<f64> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'+') => (1.0, &s[1..]),
        Some(b'-') => (-1.0, &s[1..]),
        _ => (0.0, s),
    };
    let l = body.to_ascii_lowercase();
    if l == "inf" || l == "infinity" {
        return Some(if sign < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if sign == 0.0 && l == "nan" {
        return Some(f64::NAN);
    }
    None
}

fn parse_hex_float(s: &str, f32: bool) -> Result<f64, &'static str> {
    let b = s.as_bytes();
    let (neg, b) = match b.first() {
        Some(b'+') => (false, &b[1..]),
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    let b = &b[2..];
    let (mut mant, mut sticky, mut exp, mut digits, mut dot) = (0u64, false, 0i64, 0, false);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'.' && !dot {
            dot = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            digits += 1;
            if mant >> 60 == 0 {
                mant = mant << 4 | u64::from(d);
                if dot {
                    exp -= 4;
                }
            } else {
                sticky |= d != 0;
                if !dot {
                    exp += 4;
                }
            }
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 || i >= b.len() || b[i] | 0x20 != b'p' {
        return Err("invalid syntax");
    }
    let e = &b[i + 1..];
    let (eneg, e) = match e.first() {
        Some(b'+') => (false, &e[1..]),
        Some(b'-') => (true, &e[1..]),
        _ => (false, e),
    };
    if e.is_empty() || !e.iter().all(u8::is_ascii_digit) {
        return Err("invalid syntax");
    }
    let mut x: i64 = 0;
    for c in e {
        x = (x * 10 + i64::from(c - b'0')).min(1 << 20);
    }
    exp += if eneg { -x } else { x };
    let (prec, emin, emax) = if f32 {
        (24, -126, 127)
    } else {
        (53, -1022, 1023)
    };
    let v = round_binary(mant, sticky, exp, prec, emin, emax).ok_or("value out of range")?;
    Ok(if neg { -v } else { v })
}

/// Go's `strconv.ParseFloat`: decimal and hex (`0x1p-2`) floats, `_` between digits,
/// `Inf`/`Infinity`/`NaN` in any case; `bitSize` 32 rounds to float32, anything else is 64.
pub(super) fn parse_float(s: &str, bit_size: i64) -> Result<f64, FuncError> {
    let err = |e: &str| num_error("ParseFloat", s, e);
    if let Some(v) = special_float(s) {
        return Ok(v);
    }
    let t = if s.contains('_') {
        if !underscore_ok(s) {
            return Err(err("invalid syntax"));
        }
        s.replace('_', "")
    } else {
        s.to_string()
    };
    let f32 = bit_size == 32;
    let unsigned = t.trim_start_matches(['+', '-']);
    if unsigned.len() + 1 < t.len() {
        return Err(err("invalid syntax"));
    }
    if unsigned.len() > 2 && unsigned.as_bytes()[0] == b'0' && unsigned.as_bytes()[1] | 0x20 == b'x'
    {
        return parse_hex_float(&t, f32).map_err(err);
    }
    if unsigned.is_empty()
        || !unsigned
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return Err(err("invalid syntax"));
    }
    let v = if f32 {
        t.parse::<f32>().map(f64::from)
    } else {
        t.parse::<f64>()
    }
    .map_err(|_| err("invalid syntax"))?;
    if v.is_infinite() {
        return Err(err("value out of range"));
    }
    Ok(v)
}

/// Which characters `quote` leaves as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum QuoteMode {
    /// `Quote`: printable characters (`unicode.IsPrint`).
    Print,
    /// `QuoteToASCII`: printable ASCII only.
    Ascii,
    /// `QuoteToGraphic`: graphic characters (`unicode.IsGraphic`: printable or a space).
    Graphic,
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and U+0020.
pub(super) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^[\p{L}\p{M}\p{N}\p{P}\p{S}]$").expect("a valid class")
    });
    re.is_match(c.encode_utf8(&mut [0; 4]))
}

fn is_graphic(c: char) -> bool {
    is_print(c)
        || matches!(
            c as u32,
            0xA0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000
        )
}

/// Go's `strconv.Quote` family.
pub(super) fn quote(s: &str, mode: QuoteMode) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
            out.push(c);
            continue;
        }
        let keep = match mode {
            QuoteMode::Ascii => c.is_ascii() && is_print(c),
            QuoteMode::Print => is_print(c),
            QuoteMode::Graphic => is_graphic(c),
        };
        if keep {
            out.push(c);
            continue;
        }
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.CanBackquote`.
pub(super) fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| !(c == '\u{FEFF}' || (c < ' ' && c != '\t') || c == '`' || c == '\x7f'))
}

/// One character of a quoted literal (Go's `UnquoteChar`): its bytes and the rest.
fn unquote_char(s: &[u8], q: u8) -> Result<(Vec<u8>, &[u8]), ()> {
    let c = *s.first().ok_or(())?;
    if c == q && (q == b'\'' || q == b'"') {
        return Err(());
    }
    if c >= 0x80 {
        let n = match c {
            0xF0.. => 4,
            0xE0.. => 3,
            _ => 2,
        };
        let n = n.min(s.len());
        return Ok((s[..n].to_vec(), &s[n..]));
    }
    if c != b'\\' {
        return Ok((vec![c], &s[1..]));
    }
    let e = *s.get(1).ok_or(())?;
    let s = &s[2..];
    let simple = |b: u8| Ok((vec![b], s));
    match e {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b'x' | b'u' | b'U' => {
            let n = match e {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let digits = s.get(..n).ok_or(())?;
            let mut v: u32 = 0;
            for d in digits {
                v = v << 4 | (*d as char).to_digit(16).ok_or(())?;
            }
            if e == b'x' {
                return Ok((vec![v as u8], &s[n..]));
            }
            let ch = char::from_u32(v).ok_or(())?;
            Ok((ch.to_string().into_bytes(), &s[n..]))
        }
        b'0'..=b'7' => {
            let digits = s.get(..2).ok_or(())?;
            let mut v = u32::from(e - b'0');
            for d in digits {
                if !(b'0'..=b'7').contains(d) {
                    return Err(());
                }
                v = v << 3 | u32::from(d - b'0');
            }
            if v > 255 {
                return Err(());
            }
            Ok((vec![v as u8], &s[2..]))
        }
        b'\\' => simple(b'\\'),
        b'\'' | b'"' if e == q => simple(e),
        _ => Err(()),
    }
}

/// Go's `unquote`: the literal at the start of `s`, unescaped (or as written when
/// `unescape` is false, for `QuotedPrefix`), and the rest of `s`.
pub(super) fn unquote(s: &str, unescape: bool) -> Result<(String, &str), ()> {
    let b = s.as_bytes();
    if b.len() < 2 {
        return Err(());
    }
    let q = b[0];
    let end = b[1..].iter().position(|c| *c == q).ok_or(())? + 2;
    match q {
        b'`' => {
            let out = if !unescape {
                s[..end].to_string()
            } else {
                s[1..end - 1].replace('\r', "")
            };
            Ok((out, &s[end..]))
        }
        b'"' | b'\'' => {
            let inner = &s[1..end - 1];
            if !inner.contains('\\') && !inner.contains('\n') {
                let valid = q == b'"' || inner.chars().count() == 1;
                if valid {
                    let out = if unescape { inner } else { &s[..end] };
                    return Ok((out.to_string(), &s[end..]));
                }
            }
            let mut rest = &b[1..];
            let mut buf = Vec::new();
            while !rest.is_empty() && rest[0] != q {
                if rest[0] == b'\n' {
                    return Err(());
                }
                let (c, r) = unquote_char(rest, q)?;
                buf.extend_from_slice(&c);
                rest = r;
                if q == b'\'' {
                    break;
                }
            }
            if rest.first() != Some(&q) {
                return Err(());
            }
            let used = b.len() - rest.len() + 1;
            let out = if unescape {
                String::from_utf8(buf).map_err(|_| ())?
            } else {
                s[..used].to_string()
            };
            Ok((out, &s[used..]))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_follows_go() {
        assert_eq!(parse_int("-0x_1F", 0, 64, "ParseInt").unwrap(), -31);
        assert_eq!(parse_int("0b101", 0, 0, "ParseInt").unwrap(), 5);
        assert_eq!(parse_int("017", 0, 0, "ParseInt").unwrap(), 15);
        assert_eq!(parse_int("zz", 36, 0, "ParseInt").unwrap(), 1295);
        assert_eq!(parse_int("-128", 10, 8, "ParseInt").unwrap(), -128);
        assert_eq!(
            parse_int("-9223372036854775808", 10, 64, "ParseInt").unwrap(),
            i64::MIN
        );
        for (s, b, bits, msg) in [
            (
                "128",
                10,
                8,
                r#"strconv.ParseInt: parsing "128": value out of range"#,
            ),
            (
                "1_0",
                10,
                0,
                r#"strconv.ParseInt: parsing "1_0": invalid syntax"#,
            ),
            (
                "0x",
                0,
                0,
                r#"strconv.ParseInt: parsing "0x": invalid syntax"#,
            ),
            ("", 10, 0, r#"strconv.ParseInt: parsing "": invalid syntax"#),
            (
                "1",
                1,
                0,
                r#"strconv.ParseInt: parsing "1": invalid base 1"#,
            ),
            (
                "1",
                10,
                65,
                r#"strconv.ParseInt: parsing "1": invalid bit size 65"#,
            ),
            (
                "99999999999999999999x",
                10,
                0,
                r#"strconv.ParseInt: parsing "99999999999999999999x": value out of range"#,
            ),
        ] {
            let e = parse_int(s, b, bits, "ParseInt").unwrap_err();
            assert_eq!(e.msg, msg);
            assert!(e.catchable);
        }
        assert_eq!(format_int(-255, 16).unwrap(), "-ff");
        assert_eq!(format_int(i64::MIN, 2).unwrap().len(), 65);
        assert!(!format_int(1, 37).unwrap_err().catchable);
    }

    #[test]
    fn parse_float_follows_go() {
        for (s, v) in [
            ("1.5", 1.5),
            ("-.5e1", -5.0),
            ("1_000.5", 1000.5),
            ("0x1.8p1", 3.0),
            ("0x1p-1074", f64::from_bits(1)),
            ("+Inf", f64::INFINITY),
            ("-infinity", f64::NEG_INFINITY),
            ("1e-400", 0.0),
        ] {
            assert_eq!(parse_float(s, 64).unwrap(), v, "{s}");
        }
        assert!(parse_float("nan", 64).unwrap().is_nan());
        assert_eq!(parse_float("0.1", 32).unwrap(), f64::from(0.1f32));
        assert_eq!(
            parse_float("1e400", 64).unwrap_err().msg,
            r#"strconv.ParseFloat: parsing "1e400": value out of range"#
        );
        assert!(parse_float("1e39", 32)
            .unwrap_err()
            .msg
            .ends_with("out of range"));
        for s in ["+nan", "1_", "0x1.8", "1e", "abc", "", "--1", "1.5x"] {
            assert!(
                parse_float(s, 64)
                    .unwrap_err()
                    .msg
                    .ends_with("invalid syntax"),
                "{s}"
            );
        }
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(
            quote("a\"b\\\n\u{7f}é☺\u{a0}\u{feff}𝄞", QuoteMode::Print),
            "\"a\\\"b\\\\\\n\\x7fé☺\\u00a0\\ufeff𝄞\""
        );
        assert_eq!(
            quote("é\u{1F600}", QuoteMode::Ascii),
            "\"\\u00e9\\U0001f600\""
        );
        assert_eq!(quote("\u{a0}", QuoteMode::Graphic), "\"\u{a0}\"");
        assert!(can_backquote("a\tb"));
        assert!(!can_backquote("a`b"));
        assert_eq!(
            unquote(r#""a\tb\u00e9\x41\101""#, true),
            Ok(("a\tbéAA".into(), ""))
        );
        assert_eq!(unquote("'☺'", true), Ok(("☺".into(), "")));
        assert_eq!(unquote("`a\\n`", true), Ok(("a\\n".into(), "")));
        assert_eq!(
            unquote(r#""ab" rest"#, false),
            Ok((r#""ab""#.into(), " rest"))
        );
        for s in [
            r#""a"#,
            "'ab'",
            r#""\'""#,
            r#""\400""#,
            r#""\xff""#,
            "x",
            "\"a\nb\"",
        ] {
            assert!(
                unquote(s, true).map_or(true, |(_, rest)| !rest.is_empty()),
                "{s}"
            );
        }
    }
}
