//! mgmt's generated `golang/*` wrappers (mgmt's `lang/core/generated_funcs.go`): Go's
//! `strings`, `strconv`, `path`, `path/filepath`, `math`, `html`, `os` and `runtime` functions
//! under their mgmt names (`ToUpper` -> `to_upper`, `Atan2` -> `atan_2`), with Go's behaviour.
//! An error Go returns is a catchable error with Go's text; a Go panic (a bad `FormatInt`
//! base, a negative `Repeat` count) is fatal.
//!
//! Strings are valid UTF-8 here (tend's `str`), so the byte-level corners of Go's functions
//! (invalid sequences) cannot arise; offsets and lengths count bytes, as in Go.

use tend_model::Value;

use super::gopath;
use super::gostrconv;
use super::html_entities::ENTITIES;
use super::{Builtin, FuncError, FuncKind, RunFn, Sig};

use super::args_err as bad_args;

/// Argument `i` as a string.
pub(super) fn s<'a>(a: &'a [Value], i: usize, n: &str) -> Result<&'a str, FuncError> {
    match a.get(i) {
        Some(Value::Str(s)) => Ok(s),
        _ => Err(bad_args(n, "str", a)),
    }
}

/// Argument `i` as an int.
pub(super) fn int(a: &[Value], i: usize, n: &str) -> Result<i64, FuncError> {
    match a.get(i) {
        Some(Value::Int(v)) => Ok(*v),
        _ => Err(bad_args(n, "int", a)),
    }
}

/// Argument `i` as a float.
pub(super) fn fl(a: &[Value], i: usize, n: &str) -> Result<f64, FuncError> {
    match a.get(i) {
        Some(Value::Float(v)) => Ok(*v),
        _ => Err(bad_args(n, "float", a)),
    }
}

/// Argument `i` as a bool.
pub(super) fn bl(a: &[Value], i: usize, n: &str) -> Result<bool, FuncError> {
    match a.get(i) {
        Some(Value::Bool(v)) => Ok(*v),
        _ => Err(bad_args(n, "bool", a)),
    }
}

/// Argument `i` as a list of strings.
pub(super) fn strs<'a>(a: &'a [Value], i: usize, n: &str) -> Result<Vec<&'a str>, FuncError> {
    match a.get(i) {
        Some(Value::List(l)) => l
            .iter()
            .map(|v| v.as_str().ok_or_else(|| bad_args(n, "[]str", a)))
            .collect(),
        _ => Err(bad_args(n, "[]str", a)),
    }
}

const fn p(module: &'static str, name: &'static str, sig: &'static str, run: RunFn) -> Builtin {
    Builtin {
        module,
        name,
        kind: FuncKind::Pure,
        sig: Sig::Text(sig),
        check: None,
        run,
    }
}

/// Reads the host (environment, files, process ids): a snapshot taken once per run.
const fn imp(module: &'static str, name: &'static str, sig: &'static str, run: RunFn) -> Builtin {
    Builtin {
        module,
        name,
        kind: FuncKind::Impure,
        sig: Sig::Text(sig),
        check: None,
        run,
    }
}

const STRINGS: &str = "golang/strings";
const STRCONV: &str = "golang/strconv";
const PATH: &str = "golang/path";
const FILEPATH: &str = "golang/path/filepath";
const MATH: &str = "golang/math";
const HTML: &str = "golang/html";
const OS: &str = "golang/os";
const RUNTIME: &str = "golang/runtime";
const EXEC: &str = "golang/os/exec";

/// `golang/math`: one float in, one float out.
macro_rules! m1 {
    ($name:literal, $f:expr) => {
        p(MATH, $name, "func(float) float", |a, _| {
            let f: fn(f64) -> f64 = $f;
            Ok(Value::Float(f(fl(a, 0, concat!("math.", $name))?)))
        })
    };
}

/// `golang/math`: two floats in, one float out.
macro_rules! m2 {
    ($name:literal, $f:expr) => {
        p(MATH, $name, "func(float, float) float", |a, _| {
            let n = concat!("math.", $name);
            let f: fn(f64, f64) -> f64 = $f;
            Ok(Value::Float(f(fl(a, 0, n)?, fl(a, 1, n)?)))
        })
    };
}

/// `golang/strings`: two strings in.
macro_rules! s2 {
    ($name:literal, $sig:literal, $f:expr) => {
        p(STRINGS, $name, $sig, |a, _| {
            let n = concat!("strings.", $name);
            let f: fn(&str, &str) -> Value = $f;
            Ok(f(s(a, 0, n)?, s(a, 1, n)?))
        })
    };
}

/// `golang/strings`: one string in, one out.
macro_rules! s1 {
    ($module:expr, $name:literal, $f:expr) => {
        p($module, $name, "func(str) str", |a, _| {
            let f: fn(&str) -> String = $f;
            Ok(Value::Str(f(s(a, 0, $name)?)))
        })
    };
}

fn int_v(i: usize) -> Value {
    Value::Int(i as i64)
}

fn index_v(i: Option<usize>) -> Value {
    Value::Int(i.map_or(-1, |i| i as i64))
}

/// Every `golang/*` built-in.
pub(super) static GOLANG: &[Builtin] = &[
    // golang/html.
    s1!(HTML, "escape_string", html_escape),
    s1!(HTML, "unescape_string", html_unescape),
    // golang/math.
    m1!("abs", f64::abs),
    m1!("acos", f64::acos),
    m1!("acosh", f64::acosh),
    m1!("asin", f64::asin),
    m1!("asinh", f64::asinh),
    m1!("atan", f64::atan),
    m2!("atan_2", f64::atan2),
    m1!("atanh", f64::atanh),
    m1!("cbrt", f64::cbrt),
    m1!("ceil", f64::ceil),
    m2!("copysign", f64::copysign),
    m1!("cos", f64::cos),
    m1!("cosh", f64::cosh),
    m2!("dim", |x, y| {
        let v = x - y;
        if v <= 0.0 {
            0.0
        } else {
            v
        }
    }),
    m1!("erf", libm::erf),
    m1!("erfc", libm::erfc),
    m1!("erfcinv", |x| erfinv(1.0 - x)),
    m1!("erfinv", erfinv),
    m1!("exp", f64::exp),
    m1!("exp_2", f64::exp2),
    m1!("expm_1", f64::exp_m1),
    p(MATH, "fma", "func(float, float, float) float", |a, _| {
        let n = "math.fma";
        Ok(Value::Float(
            fl(a, 0, n)?.mul_add(fl(a, 1, n)?, fl(a, 2, n)?),
        ))
    }),
    m1!("floor", f64::floor),
    m1!("gamma", gamma),
    m2!("hypot", f64::hypot),
    p(MATH, "ilogb", "func(float) int", |a, _| {
        Ok(Value::Int(ilogb(fl(a, 0, "math.ilogb")?).into()))
    }),
    p(MATH, "inf", "func(int) float", |a, _| {
        let sign = int(a, 0, "math.inf")?;
        Ok(Value::Float(if sign >= 0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        }))
    }),
    p(MATH, "is_inf", "func(float, int) bool", |a, _| {
        let (f, sign) = (fl(a, 0, "math.is_inf")?, int(a, 1, "math.is_inf")?);
        Ok(Value::Bool(
            (sign >= 0 && f == f64::INFINITY) || (sign <= 0 && f == f64::NEG_INFINITY),
        ))
    }),
    p(MATH, "is_na_n", "func(float) bool", |a, _| {
        Ok(Value::Bool(fl(a, 0, "math.is_na_n")?.is_nan()))
    }),
    m1!("j_0", libm::j0),
    m1!("j_1", libm::j1),
    p(MATH, "jn", "func(int, float) float", |a, _| {
        let (n, x) = (int(a, 0, "math.jn")?, fl(a, 1, "math.jn")?);
        Ok(Value::Float(libm::jn(clamp_i32(n), x)))
    }),
    p(MATH, "ldexp", "func(float, int) float", |a, _| {
        let (f, e) = (fl(a, 0, "math.ldexp")?, int(a, 1, "math.ldexp")?);
        Ok(Value::Float(libm::scalbn(f, clamp_i32(e))))
    }),
    m1!("log", f64::ln),
    m1!("log_10", f64::log10),
    m1!("log_1_p", f64::ln_1p),
    m1!("log_2", f64::log2),
    m1!("logb", |x| {
        if x.is_infinite() {
            f64::INFINITY
        } else if x == 0.0 {
            f64::NEG_INFINITY
        } else if x.is_nan() {
            x
        } else {
            f64::from(ilogb(x))
        }
    }),
    m2!("max", go_max),
    m2!("min", go_min),
    m2!("mod", |x, y| x % y),
    p(MATH, "na_n", "func() float", |_, _| {
        Ok(Value::Float(f64::NAN))
    }),
    m2!("nextafter", |x, y| {
        if x.is_nan() || y.is_nan() {
            f64::NAN
        } else if x == y {
            x
        } else if x == 0.0 {
            f64::from_bits(1).copysign(y)
        } else if (y > x) == (x > 0.0) {
            f64::from_bits(x.to_bits() + 1)
        } else {
            f64::from_bits(x.to_bits() - 1)
        }
    }),
    m2!("pow", f64::powf),
    p(MATH, "pow_10", "func(int) float", |a, _| {
        Ok(Value::Float(pow10(int(a, 0, "math.pow_10")?)))
    }),
    m2!("remainder", libm::remainder),
    m1!("round", f64::round),
    m1!("round_to_even", f64::round_ties_even),
    p(MATH, "signbit", "func(float) bool", |a, _| {
        Ok(Value::Bool(fl(a, 0, "math.signbit")?.is_sign_negative()))
    }),
    m1!("sin", f64::sin),
    m1!("sinh", f64::sinh),
    m1!("sqrt", f64::sqrt),
    m1!("tan", f64::tan),
    m1!("tanh", f64::tanh),
    m1!("trunc", f64::trunc),
    m1!("y_0", libm::y0),
    m1!("y_1", libm::y1),
    p(MATH, "yn", "func(int, float) float", |a, _| {
        let (n, x) = (int(a, 0, "math.yn")?, fl(a, 1, "math.yn")?);
        Ok(Value::Float(libm::yn(clamp_i32(n), x)))
    }),
    // golang/os.
    imp(OS, "executable", "func() str", |_, _| {
        std::env::current_exe()
            .map(|p| Value::Str(p.to_string_lossy().into_owned()))
            .map_err(|e| FuncError::catchable(format!("readlink /proc/self/exe: {}", go_err(&e))))
    }),
    imp(OS, "expand_env", "func(str) str", |a, _| {
        Ok(Value::Str(expand_env(s(a, 0, "os.expand_env")?)))
    }),
    imp(OS, "getegid", "func() int", |_, _| {
        Ok(Value::Int(nix::unistd::getegid().as_raw().into()))
    }),
    imp(OS, "getenv", "func(str) str", |a, _| {
        Ok(Value::Str(getenv(s(a, 0, "os.getenv")?)))
    }),
    imp(OS, "geteuid", "func() int", |_, _| {
        Ok(Value::Int(nix::unistd::geteuid().as_raw().into()))
    }),
    imp(OS, "getgid", "func() int", |_, _| {
        Ok(Value::Int(nix::unistd::getgid().as_raw().into()))
    }),
    imp(OS, "getpagesize", "func() int", |_, _| {
        // SAFETY: sysconf has no preconditions.
        Ok(Value::Int(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }))
    }),
    imp(OS, "getpid", "func() int", |_, _| {
        Ok(Value::Int(std::process::id().into()))
    }),
    imp(OS, "getppid", "func() int", |_, _| {
        Ok(Value::Int(nix::unistd::getppid().as_raw().into()))
    }),
    imp(OS, "getuid", "func() int", |_, _| {
        Ok(Value::Int(nix::unistd::getuid().as_raw().into()))
    }),
    imp(OS, "getwd", "func() str", |_, _| getwd().map(Value::Str)),
    imp(OS, "hostname", "func() str", |_, _| {
        hostname().map(Value::Str)
    }),
    imp(OS, "read_file", "func(str) str", |a, _| {
        let name = s(a, 0, "os.read_file")?;
        let b = std::fs::read(name)
            .map_err(|e| FuncError::catchable(format!("open {name}: {}", go_err(&e))))?;
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| FuncError::catchable(format!("os.read_file: {name} is not UTF-8 text")))
    }),
    imp(OS, "readlink", "func(str) str", |a, _| {
        let name = s(a, 0, "os.readlink")?;
        std::fs::read_link(name)
            .map(|p| Value::Str(p.to_string_lossy().into_owned()))
            .map_err(|e| FuncError::catchable(format!("readlink {name}: {}", go_err(&e))))
    }),
    imp(OS, "temp_dir", "func() str", |_, _| {
        let d = getenv("TMPDIR");
        Ok(Value::Str(if d.is_empty() { "/tmp".into() } else { d }))
    }),
    imp(OS, "user_cache_dir", "func() str", |_, _| {
        xdg_dir("XDG_CACHE_HOME", "/.cache").map(Value::Str)
    }),
    imp(OS, "user_config_dir", "func() str", |_, _| {
        xdg_dir("XDG_CONFIG_HOME", "/.config").map(Value::Str)
    }),
    imp(OS, "user_home_dir", "func() str", |_, _| {
        let h = getenv("HOME");
        if h.is_empty() {
            return Err(FuncError::catchable("$HOME is not defined"));
        }
        Ok(Value::Str(h))
    }),
    // golang/os/exec.
    imp(EXEC, "look_path", "func(str) str", |a, _| {
        look_path(s(a, 0, "exec.look_path")?).map(Value::Str)
    }),
    // golang/path.
    s1!(PATH, "base", gopath::base),
    s1!(PATH, "clean", gopath::clean),
    s1!(PATH, "dir", gopath::dir),
    s1!(PATH, "ext", |p| gopath::ext(p).to_string()),
    p(PATH, "is_abs", "func(str) bool", |a, _| {
        Ok(Value::Bool(s(a, 0, "path.is_abs")?.starts_with('/')))
    }),
    p(PATH, "join", "func([]str) str", |a, _| {
        Ok(Value::Str(gopath::join(&strs(a, 0, "path.join")?)))
    }),
    p(PATH, "match", "func(str, str) bool", |a, _| {
        let n = "path.match";
        gopath::matches(s(a, 0, n)?, s(a, 1, n)?)
            .map(Value::Bool)
            .map_err(FuncError::catchable)
    }),
    // golang/path/filepath (Linux: the separator is `/`, there are no volume names).
    imp(FILEPATH, "abs", "func(str) str", |a, _| {
        let path = s(a, 0, "filepath.abs")?;
        if path.starts_with('/') {
            return Ok(Value::Str(gopath::clean(path)));
        }
        let wd = getwd()?;
        Ok(Value::Str(gopath::join(&[&wd, path])))
    }),
    s1!(FILEPATH, "base", gopath::base),
    s1!(FILEPATH, "clean", gopath::clean),
    s1!(FILEPATH, "dir", gopath::dir),
    imp(FILEPATH, "eval_symlinks", "func(str) str", |a, _| {
        gopath::eval_symlinks(s(a, 0, "filepath.eval_symlinks")?)
            .map(Value::Str)
            .map_err(FuncError::catchable)
    }),
    s1!(FILEPATH, "ext", |p| gopath::ext(p).to_string()),
    s1!(FILEPATH, "from_slash", str::to_string),
    p(FILEPATH, "has_prefix", "func(str, str) bool", |a, _| {
        let n = "filepath.has_prefix";
        Ok(Value::Bool(s(a, 0, n)?.starts_with(s(a, 1, n)?)))
    }),
    p(FILEPATH, "is_abs", "func(str) bool", |a, _| {
        Ok(Value::Bool(s(a, 0, "filepath.is_abs")?.starts_with('/')))
    }),
    p(FILEPATH, "is_local", "func(str) bool", |a, _| {
        Ok(Value::Bool(gopath::is_local(s(a, 0, "filepath.is_local")?)))
    }),
    p(FILEPATH, "join", "func([]str) str", |a, _| {
        Ok(Value::Str(gopath::join(&strs(a, 0, "filepath.join")?)))
    }),
    p(FILEPATH, "localize", "func(str) str", |a, _| {
        let path = s(a, 0, "filepath.localize")?;
        if gopath::valid_fs_path(path) && !path.contains('\0') {
            Ok(Value::from(path))
        } else {
            Err(FuncError::catchable("invalid path"))
        }
    }),
    p(FILEPATH, "match", "func(str, str) bool", |a, _| {
        let n = "filepath.match";
        gopath::matches(s(a, 0, n)?, s(a, 1, n)?)
            .map(Value::Bool)
            .map_err(FuncError::catchable)
    }),
    p(FILEPATH, "rel", "func(str, str) str", |a, _| {
        let n = "filepath.rel";
        gopath::rel(s(a, 0, n)?, s(a, 1, n)?)
            .map(Value::Str)
            .map_err(FuncError::catchable)
    }),
    s1!(FILEPATH, "to_slash", str::to_string),
    s1!(FILEPATH, "volume_name", |_| String::new()),
    // golang/runtime.
    imp(RUNTIME, "num_cpu", "func() int", |_, _| {
        Ok(Value::Int(num_cpu()))
    }),
    // golang/strconv.
    p(STRCONV, "append_bool", "func(str, bool) str", |a, _| {
        let n = "strconv.append_bool";
        Ok(Value::Str(format!("{}{}", s(a, 0, n)?, bl(a, 1, n)?)))
    }),
    p(STRCONV, "append_int", "func(str, int, int) str", |a, _| {
        let n = "strconv.append_int";
        let t = gostrconv::format_int(int(a, 1, n)?, int(a, 2, n)?)?;
        Ok(Value::Str(format!("{}{t}", s(a, 0, n)?)))
    }),
    p(STRCONV, "append_quote", "func(str, str) str", |a, _| {
        let n = "strconv.append_quote";
        let q = gostrconv::quote(s(a, 1, n)?, gostrconv::QuoteMode::Print);
        Ok(Value::Str(format!("{}{q}", s(a, 0, n)?)))
    }),
    p(
        STRCONV,
        "append_quote_to_ascii",
        "func(str, str) str",
        |a, _| {
            let n = "strconv.append_quote_to_ascii";
            let q = gostrconv::quote(s(a, 1, n)?, gostrconv::QuoteMode::Ascii);
            Ok(Value::Str(format!("{}{q}", s(a, 0, n)?)))
        },
    ),
    p(
        STRCONV,
        "append_quote_to_graphic",
        "func(str, str) str",
        |a, _| {
            let n = "strconv.append_quote_to_graphic";
            let q = gostrconv::quote(s(a, 1, n)?, gostrconv::QuoteMode::Graphic);
            Ok(Value::Str(format!("{}{q}", s(a, 0, n)?)))
        },
    ),
    p(STRCONV, "atoi", "func(str) int", |a, _| {
        gostrconv::parse_int(s(a, 0, "strconv.atoi")?, 10, 0, "Atoi").map(Value::Int)
    }),
    p(STRCONV, "can_backquote", "func(str) bool", |a, _| {
        Ok(Value::Bool(gostrconv::can_backquote(s(
            a,
            0,
            "strconv.can_backquote",
        )?)))
    }),
    p(STRCONV, "format_bool", "func(bool) str", |a, _| {
        Ok(Value::Str(bl(a, 0, "strconv.format_bool")?.to_string()))
    }),
    p(STRCONV, "format_int", "func(int, int) str", |a, _| {
        let n = "strconv.format_int";
        gostrconv::format_int(int(a, 0, n)?, int(a, 1, n)?).map(Value::Str)
    }),
    p(STRCONV, "itoa", "func(int) str", |a, _| {
        Ok(Value::Str(int(a, 0, "strconv.itoa")?.to_string()))
    }),
    p(STRCONV, "parse_bool", "func(str) bool", |a, _| {
        let v = s(a, 0, "strconv.parse_bool")?;
        match v {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(gostrconv::num_error("ParseBool", v, "invalid syntax")),
        }
    }),
    p(STRCONV, "parse_float", "func(str, int) float", |a, _| {
        let n = "strconv.parse_float";
        gostrconv::parse_float(s(a, 0, n)?, int(a, 1, n)?).map(Value::Float)
    }),
    p(STRCONV, "parse_int", "func(str, int, int) int", |a, _| {
        let n = "strconv.parse_int";
        gostrconv::parse_int(s(a, 0, n)?, int(a, 1, n)?, int(a, 2, n)?, "ParseInt").map(Value::Int)
    }),
    s1!(STRCONV, "quote", |x| gostrconv::quote(
        x,
        gostrconv::QuoteMode::Print
    )),
    s1!(STRCONV, "quote_to_ascii", |x| gostrconv::quote(
        x,
        gostrconv::QuoteMode::Ascii
    )),
    s1!(STRCONV, "quote_to_graphic", |x| gostrconv::quote(
        x,
        gostrconv::QuoteMode::Graphic
    )),
    p(STRCONV, "quoted_prefix", "func(str) str", |a, _| {
        gostrconv::unquote(s(a, 0, "strconv.quoted_prefix")?, false)
            .map(|(out, _)| Value::Str(out))
            .map_err(|()| FuncError::catchable("strconv.quoted_prefix: invalid syntax"))
    }),
    p(
        STRCONV,
        "unquote",
        "func(str) str",
        |a, _| match gostrconv::unquote(s(a, 0, "strconv.unquote")?, true) {
            Ok((out, "")) => Ok(Value::Str(out)),
            _ => Err(FuncError::catchable("strconv.unquote: invalid syntax")),
        },
    ),
    // golang/strings.
    s1!(STRINGS, "clone", str::to_string),
    s2!("compare", "func(str, str) int", |a, b| Value::Int(
        a.cmp(b) as i64
    )),
    s2!("contains", "func(str, str) bool", |a, b| Value::Bool(
        a.contains(b)
    )),
    s2!("contains_any", "func(str, str) bool", |a, b| Value::Bool(
        a.chars().any(|c| b.contains(c))
    )),
    s2!("count", "func(str, str) int", |a, b| {
        if b.is_empty() {
            int_v(a.chars().count() + 1)
        } else {
            int_v(a.matches(b).count())
        }
    }),
    s2!("equal_fold", "func(str, str) bool", |a, b| Value::Bool(
        a.chars().map(fold_char).eq(b.chars().map(fold_char))
    )),
    s2!("has_prefix", "func(str, str) bool", |a, b| Value::Bool(
        a.starts_with(b)
    )),
    s2!("has_suffix", "func(str, str) bool", |a, b| Value::Bool(
        a.ends_with(b)
    )),
    s2!("index", "func(str, str) int", |a, b| index_v(a.find(b))),
    s2!("index_any", "func(str, str) int", |a, b| index_v(
        a.char_indices()
            .find(|(_, c)| b.contains(*c))
            .map(|(i, _)| i)
    )),
    p(STRINGS, "join", "func([]str, str) str", |a, _| {
        let n = "strings.join";
        Ok(Value::Str(strs(a, 0, n)?.join(s(a, 1, n)?)))
    }),
    s2!("last_index", "func(str, str) int", |a, b| index_v(
        a.rfind(b)
    )),
    s2!("last_index_any", "func(str, str) int", |a, b| index_v(
        a.char_indices()
            .rev()
            .find(|(_, c)| b.contains(*c))
            .map(|(i, _)| i)
    )),
    p(STRINGS, "repeat", "func(str, int) str", |a, _| {
        let n = "strings.repeat";
        let (x, count) = (s(a, 0, n)?, int(a, 1, n)?);
        if count < 0 {
            return Err(FuncError::fatal("strings: negative Repeat count"));
        }
        match usize::try_from(count)
            .ok()
            .and_then(|c| x.len().checked_mul(c))
        {
            Some(len) if len <= 1 << 26 => Ok(Value::Str(x.repeat(count as usize))),
            _ => Err(FuncError::fatal(format!(
                "strings.repeat: {count} copies of {} bytes is too large",
                x.len()
            ))),
        }
    }),
    p(
        STRINGS,
        "replace",
        "func(str, str, str, int) str",
        |a, _| {
            let n = "strings.replace";
            let (x, old, new, k) = (s(a, 0, n)?, s(a, 1, n)?, s(a, 2, n)?, int(a, 3, n)?);
            Ok(Value::Str(match usize::try_from(k) {
                Ok(k) => x.replacen(old, new, k),
                Err(_) => x.replace(old, new),
            }))
        },
    ),
    p(STRINGS, "replace_all", "func(str, str, str) str", |a, _| {
        let n = "strings.replace_all";
        Ok(Value::Str(s(a, 0, n)?.replace(s(a, 1, n)?, s(a, 2, n)?)))
    }),
    s1!(STRINGS, "title", title),
    s1!(STRINGS, "to_lower", |x| x.chars().map(lower_char).collect()),
    s1!(STRINGS, "to_title", |x| x.chars().map(title_char).collect()),
    s1!(STRINGS, "to_upper", |x| x.chars().map(upper_char).collect()),
    // Every `str` is valid UTF-8, so there is nothing to replace.
    s2!("to_valid_utf_8", "func(str, str) str", |a, _| Value::from(
        a
    )),
    s2!("trim", "func(str, str) str", |a, b| Value::from(
        a.trim_matches(|c| b.contains(c))
    )),
    s2!("trim_left", "func(str, str) str", |a, b| Value::from(
        a.trim_start_matches(|c| b.contains(c))
    )),
    s2!("trim_prefix", "func(str, str) str", |a, b| Value::from(
        a.strip_prefix(b).unwrap_or(a)
    )),
    s2!("trim_right", "func(str, str) str", |a, b| Value::from(
        a.trim_end_matches(|c| b.contains(c))
    )),
    s1!(STRINGS, "trim_space", |x| x.trim().to_string()),
    s2!("trim_suffix", "func(str, str) str", |a, b| Value::from(
        a.strip_suffix(b).unwrap_or(a)
    )),
];

fn clamp_i32(n: i64) -> i32 {
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Go's `math.Max`: +Inf wins over NaN, then NaN, then +0 over -0.
fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins over NaN, then NaN, then -0 over +0.
fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

/// Go's `math.Ilogb`: the binary exponent; `MinInt32` for 0, `MaxInt32` for ±Inf and NaN.
fn ilogb(x: f64) -> i32 {
    if x == 0.0 {
        return i32::MIN;
    }
    if x.is_nan() || x.is_infinite() {
        return i32::MAX;
    }
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i32;
    if e == 0 {
        // Subnormal: the exponent of the highest set bit of the fraction.
        let frac = bits & ((1 << 52) - 1);
        return 63 - frac.leading_zeros() as i32 - 1074;
    }
    e - 1023
}

/// Go's `math.Gamma` special cases around musl's `tgamma`.
fn gamma(x: f64) -> f64 {
    if x == 0.0 {
        return if x.is_sign_negative() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if x == f64::NEG_INFINITY || (x < 0.0 && x == x.floor()) {
        return f64::NAN;
    }
    libm::tgamma(x)
}

/// Go's `math.Pow10`: a table of `10^0..10^31` times (or, for negative `n`, divided into) a
/// table of `10^(32k)`, the same products Go computes; 0 below 1e-323, +Inf above 1e308.
fn pow10(n: i64) -> f64 {
    const TAB: [f64; 32] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31,
    ];
    const POS32: [f64; 10] = [
        1e0, 1e32, 1e64, 1e96, 1e128, 1e160, 1e192, 1e224, 1e256, 1e288,
    ];
    const NEG32: [f64; 11] = [
        1e-0, 1e-32, 1e-64, 1e-96, 1e-128, 1e-160, 1e-192, 1e-224, 1e-256, 1e-288, 1e-320,
    ];
    if (0..=308).contains(&n) {
        POS32[n as usize / 32] * TAB[n as usize % 32]
    } else if (-323..0).contains(&n) {
        let m = n.unsigned_abs() as usize;
        NEG32[m / 32] / TAB[m % 32]
    } else if n > 0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// The inverse error function (Go's special cases); Newton steps on `erf`/`erfc` from a
/// closed-form first guess, to within a unit in the last place.
fn erfinv(y: f64) -> f64 {
    if y.is_nan() || !(-1.0..=1.0).contains(&y) {
        return f64::NAN;
    }
    if y == 1.0 {
        return f64::INFINITY;
    }
    if y == -1.0 {
        return f64::NEG_INFINITY;
    }
    if y == 0.0 {
        return y;
    }
    let (sign, t) = if y < 0.0 { (-1.0, -y) } else { (1.0, y) };
    // Winitzki's approximation (relative error below 2e-3).
    let a = 0.147;
    let l = (1.0 - t * t).ln();
    let b = 2.0 / (std::f64::consts::PI * a) + l / 2.0;
    let mut x = ((b * b - l / a).sqrt() - b).sqrt();
    let k = 2.0 / std::f64::consts::PI.sqrt();
    for _ in 0..100 {
        // In the tail erfc keeps the precision that erf(x) - t loses.
        let r = if t > 0.5 {
            (1.0 - t) - libm::erfc(x)
        } else {
            libm::erf(x) - t
        };
        let d = r / (k * (-x * x).exp());
        let nx = x - d;
        if !nx.is_finite() || nx == x {
            break;
        }
        x = nx;
        if d.abs() <= x.abs() * 1e-17 {
            break;
        }
    }
    sign * x
}

/// Go's `unicode.ToUpper`: the simple (one-to-one) mapping.
pub(super) fn upper_char(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => match c as u32 {
            // Greek with ypogegrammeni: the simple mapping is the titlecase letter.
            0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => {
                char::from_u32(c as u32 + 8).unwrap_or(c)
            }
            0x1FB3 | 0x1FC3 | 0x1FF3 => char::from_u32(c as u32 + 9).unwrap_or(c),
            _ => c,
        },
    }
}

/// Go's `unicode.ToLower`: the simple mapping (`İ` becomes `i`).
pub(super) fn lower_char(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        _ if c == '\u{130}' => 'i',
        _ => c,
    }
}

/// Go's `unicode.ToTitle`: the upper case except for the digraphs, Georgian and the Greek
/// letters with ypogegrammeni, which have titlecase forms of their own.
fn title_char(c: char) -> char {
    let t = match c as u32 {
        0x1C4..=0x1C6 => 0x1C5,
        0x1C7..=0x1C9 => 0x1C8,
        0x1CA..=0x1CC => 0x1CB,
        0x1F1..=0x1F3 => 0x1F2,
        0x10D0..=0x10FA | 0x10FD..=0x10FF => c as u32,
        0x1F88..=0x1F8F | 0x1F98..=0x1F9F | 0x1FA8..=0x1FAF | 0x1FBC | 0x1FCC | 0x1FFC => c as u32,
        _ => upper_char(c) as u32,
    };
    char::from_u32(t).unwrap_or(c)
}

/// The representative of `c`'s simple case-folding orbit, for `strings.EqualFold`.
fn fold_char(c: char) -> char {
    lower_char(upper_char(c))
}

/// Go's `strings.Title`: the first letter of each word to title case.
fn title(s: &str) -> String {
    fn is_sep(c: char) -> bool {
        if c.is_ascii() {
            return !(c.is_ascii_alphanumeric() || c == '_');
        }
        if c.is_alphabetic() || c.is_numeric() {
            return false;
        }
        c.is_whitespace()
    }
    let mut prev = ' ';
    s.chars()
        .map(|c| {
            let out = if is_sep(prev) { title_char(c) } else { c };
            prev = c;
            out
        })
        .collect()
}

/// Go's `html.EscapeString`: `<`, `>`, `&`, `'` and `"` only.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// The named references HTML accepts without a `;` (the HTML 4 Latin-1 set).
const LEGACY_ENTITIES: &[&str] = &[
    "AElig", "AMP", "Aacute", "Acirc", "Agrave", "Aring", "Atilde", "Auml", "COPY", "Ccedil",
    "ETH", "Eacute", "Ecirc", "Egrave", "Euml", "GT", "Iacute", "Icirc", "Igrave", "Iuml", "LT",
    "Ntilde", "Oacute", "Ocirc", "Ograve", "Oslash", "Otilde", "Ouml", "QUOT", "REG", "THORN",
    "Uacute", "Ucirc", "Ugrave", "Uuml", "Yacute", "aacute", "acirc", "acute", "aelig", "agrave",
    "amp", "aring", "atilde", "auml", "brvbar", "ccedil", "cedil", "cent", "copy", "curren", "deg",
    "divide", "eacute", "ecirc", "egrave", "eth", "euml", "frac12", "frac14", "frac34", "gt",
    "iacute", "icirc", "iexcl", "igrave", "iquest", "iuml", "laquo", "lt", "macr", "micro",
    "middot", "nbsp", "not", "ntilde", "oacute", "ocirc", "ograve", "ordf", "ordm", "oslash",
    "otilde", "ouml", "para", "plusmn", "pound", "quot", "raquo", "reg", "sect", "shy", "sup1",
    "sup2", "sup3", "szlig", "thorn", "times", "uacute", "ucirc", "ugrave", "uml", "uuml",
    "yacute", "yen", "yuml",
];

fn entity(name: &str) -> Option<&'static str> {
    ENTITIES
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| ENTITIES[i].1)
}

/// Windows-1252 for the numeric references `&#128;` to `&#159;`, as HTML5 decodes them.
const WIN1252: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x192, 0x201E, 0x2026, 0x2020, 0x2021, 0x2C6, 0x2030, 0x160, 0x2039,
    0x152, 0x8D, 0x17D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x2DC,
    0x2122, 0x161, 0x203A, 0x153, 0x9D, 0x17E, 0x178,
];

/// Go's `html.UnescapeString`: named references (the longest legacy prefix when there is no
/// `;`), decimal and hex references (Windows-1252 for 128-159, U+FFFD for invalid ones).
fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let used = unescape_one(rest, &mut out);
        rest = &rest[used..];
    }
    out.push_str(rest);
    out
}

/// Decodes the reference at the start of `s` (which starts with `&`) into `out`; returns
/// the number of bytes consumed.
fn unescape_one(s: &str, out: &mut String) -> usize {
    let b = s.as_bytes();
    if b.len() <= 1 {
        out.push('&');
        return 1;
    }
    let mut i = 1;
    if b[i] == b'#' {
        if b.len() <= 3 {
            out.push('&');
            return 1;
        }
        i += 1;
        let hex = matches!(b[i], b'x' | b'X');
        if hex {
            i += 1;
        }
        let mut x: i32 = 0;
        while i < b.len() {
            let c = b[i];
            i += 1;
            let d = match c {
                b'0'..=b'9' => Some(i32::from(c - b'0')),
                b'a'..=b'f' if hex => Some(i32::from(c - b'a' + 10)),
                b'A'..=b'F' if hex => Some(i32::from(c - b'A' + 10)),
                _ => None,
            };
            match d {
                Some(d) => {
                    x = x.wrapping_mul(if hex { 16 } else { 10 }).wrapping_add(d);
                }
                None => {
                    if c != b';' {
                        i -= 1;
                    }
                    break;
                }
            }
        }
        if i <= 3 {
            out.push('&');
            return 1;
        }
        let x = if (0x80..=0x9F).contains(&x) {
            WIN1252[(x - 0x80) as usize]
        } else {
            x as u32
        };
        out.push(char::from_u32(x).filter(|_| x != 0).unwrap_or('\u{FFFD}'));
        return i;
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_alphanumeric() {
            continue;
        }
        if c != b';' {
            i -= 1;
        }
        break;
    }
    let name = &s[1..i];
    if let Some(v) = name.strip_suffix(';').and_then(entity) {
        out.push_str(v);
        return i;
    }
    if LEGACY_ENTITIES.contains(&name) {
        out.push_str(entity(name).unwrap_or(""));
        return i;
    }
    let max = name.len().saturating_sub(1).min(6);
    for j in (2..=max).rev() {
        if LEGACY_ENTITIES.contains(&&name[..j]) {
            out.push_str(entity(&name[..j]).unwrap_or(""));
            return j + 1;
        }
    }
    out.push_str(&s[..i]);
    i
}

/// Go's `os.Getenv`: empty when unset.
fn getenv(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

/// Go's `os.ExpandEnv`: `$var` and `${var}` (and the shell's one-character specials) from
/// the environment; unset variables are empty, a bad `${` is dropped.
pub(super) fn expand_env(s: &str) -> String {
    fn special(c: u8) -> bool {
        matches!(
            c,
            b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
        )
    }
    fn name(s: &[u8]) -> (&[u8], usize) {
        if s[0] == b'{' {
            if s.len() > 2 && special(s[1]) && s[2] == b'}' {
                return (&s[1..2], 3);
            }
            for i in 1..s.len() {
                if s[i] == b'}' {
                    if i == 1 {
                        return (&[], 2);
                    }
                    return (&s[1..i], i + 1);
                }
            }
            return (&[], 1);
        }
        if special(s[0]) {
            return (&s[0..1], 1);
        }
        let n = s
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        (&s[..n], n)
    }
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let (mut i, mut j) = (0, 0);
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.extend_from_slice(&b[i..j]);
            let (n, w) = name(&b[j + 1..]);
            if n.is_empty() && w == 0 {
                out.push(b'$');
            } else if !n.is_empty() {
                out.extend_from_slice(getenv(&String::from_utf8_lossy(n)).as_bytes());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&b[i.min(b.len())..]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's wording of an OS error: the lower-case system message without Rust's `(os error N)`.
pub(super) fn go_err(e: &std::io::Error) -> String {
    let t = e.to_string();
    let t = match t.find(" (os error") {
        Some(i) => &t[..i],
        None => &t,
    };
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Go's `os.Getwd`: `$PWD` when it names the current directory, else the kernel's answer.
fn getwd() -> Result<String, FuncError> {
    use std::os::unix::fs::MetadataExt;
    let pwd = getenv("PWD");
    if pwd.starts_with('/') {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(".")) {
            if a.dev() == b.dev() && a.ino() == b.ino() {
                return Ok(pwd);
            }
        }
    }
    std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| FuncError::catchable(format!("getwd: {}", go_err(&e))))
}

/// Go's `os.Hostname` on Linux: `/proc/sys/kernel/hostname`, else `uname`.
fn hostname() -> Result<String, FuncError> {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.strip_suffix('\n').unwrap_or(&h);
        if !h.is_empty() {
            return Ok(h.to_string());
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(FuncError::catchable(format!("hostname: {}", go_err(&e))));
    }
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `os.UserCacheDir` / `os.UserConfigDir`: `$XDG_…` when set (absolute), else `$HOME/…`.
fn xdg_dir(var: &str, under_home: &str) -> Result<String, FuncError> {
    let d = getenv(var);
    if d.is_empty() {
        let h = getenv("HOME");
        if h.is_empty() {
            return Err(FuncError::catchable(format!(
                "neither ${var} nor $HOME are defined"
            )));
        }
        return Ok(h + under_home);
    }
    if !d.starts_with('/') {
        return Err(FuncError::catchable(format!("path in ${var} is relative")));
    }
    Ok(d)
}

/// Go's `exec.LookPath` on Unix: a name with a `/` is tried as it is, else each `$PATH`
/// directory (empty meaning `.`); a match found relative to `.` is Go's `ErrDot` error.
fn look_path(file: &str) -> Result<String, FuncError> {
    let err = |e: &str| {
        FuncError::catchable(format!(
            "exec: {}: {e}",
            gostrconv::quote(file, gostrconv::QuoteMode::Print)
        ))
    };
    if file.contains('/') {
        return find_executable(file)
            .map(|()| file.to_string())
            .map_err(|e| err(&e));
    }
    for dir in getenv("PATH").split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let path = gopath::join(&[dir, file]);
        if find_executable(&path).is_ok() {
            if !path.starts_with('/') {
                return Err(err(
                    "cannot run executable found relative to current directory",
                ));
            }
            return Ok(path);
        }
    }
    Err(err("executable file not found in $PATH"))
}

/// Go's `findExecutable`: an existing non-directory that this process may execute.
fn find_executable(file: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(file).map_err(|e| format!("stat {file}: {}", go_err(&e)))?;
    if md.is_dir() {
        return Err("is a directory".into());
    }
    let c = std::ffi::CString::new(file).map_err(|_| "invalid argument".to_string())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) if md.permissions().mode() & 0o111 != 0 => Ok(()),
        Some(libc::ENOSYS) | Some(libc::EPERM) => Err("permission denied".into()),
        _ => Err(go_err(&e)),
    }
}

/// Go's `runtime.NumCPU`: the CPUs in this process's affinity mask.
fn num_cpu() -> i64 {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let n = libc::CPU_COUNT(&set);
            if n > 0 {
                return i64::from(n);
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &str, n: &str, args: Vec<Value>) -> Result<Value, FuncError> {
        let b = GOLANG
            .iter()
            .find(|b| b.module == m && b.name == n)
            .expect("builtin exists");
        super::super::call_simple(b, &args)
    }

    fn f(m: &str, n: &str, args: Vec<Value>) -> f64 {
        call(m, n, args).unwrap().as_float().unwrap()
    }

    #[test]
    fn math_special_cases_follow_go() {
        let x = |v: f64| vec![Value::Float(v)];
        assert_eq!(f(MATH, "gamma", x(5.0)), 24.0);
        assert!(f(MATH, "gamma", x(-2.0)).is_nan());
        assert_eq!(f(MATH, "gamma", x(-0.0)), f64::NEG_INFINITY);
        assert_eq!(f(MATH, "erfinv", x(1.0)), f64::INFINITY);
        assert!(f(MATH, "erfinv", x(1.5)).is_nan());
        for y in [0.1, 0.5, 0.9, -0.99, 0.999999, 1e-10] {
            let v = f(MATH, "erfinv", x(y));
            assert!(
                (libm::erf(v) - y).abs() <= 4.0 * f64::EPSILON * y.abs(),
                "{y}"
            );
        }
        assert!(f(
            MATH,
            "max",
            vec![Value::Float(f64::NAN), Value::Float(f64::INFINITY)]
        )
        .is_infinite());
        assert!(f(MATH, "max", vec![Value::Float(f64::NAN), Value::Float(1.0)]).is_nan());
        assert!(f(MATH, "min", vec![Value::Float(0.0), Value::Float(-0.0)]).is_sign_negative());
        assert_eq!(ilogb(8.0), 3);
        assert_eq!(ilogb(f64::from_bits(1)), -1074);
        assert_eq!(ilogb(0.0), i32::MIN);
        assert_eq!(pow10(-324), 0.0);
        assert_eq!(pow10(309), f64::INFINITY);
        assert_eq!(pow10(22), 1e22);
        assert_eq!(
            f(
                MATH,
                "nextafter",
                vec![Value::Float(1.0), Value::Float(2.0)]
            ),
            1.0000000000000002
        );
    }

    #[test]
    fn strings_follow_go() {
        assert_eq!(title("hello wor-ld ß_x"), "Hello Wor-Ld ß_x");
        assert_eq!(
            "ǆemal ǉ ß ᾳ".chars().map(title_char).collect::<String>(),
            "ǅEMAL ǈ ß ᾼ"
        );
        assert_eq!("ßİ".chars().map(upper_char).collect::<String>(), "ßİ");
        assert_eq!("İΣ".chars().map(lower_char).collect::<String>(), "iσ");
        assert_eq!(
            call(
                STRINGS,
                "equal_fold",
                vec!["Straße K".into(), "STRAẞE \u{212A}".into()]
            )
            .unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            call(STRINGS, "count", vec!["five".into(), "".into()]).unwrap(),
            Value::Int(5)
        );
        assert_eq!(
            call(
                STRINGS,
                "replace",
                vec!["aaaa".into(), "a".into(), "b".into(), Value::Int(2)]
            )
            .unwrap(),
            Value::from("bbaa")
        );
        assert!(
            !call(STRINGS, "repeat", vec!["a".into(), Value::Int(-1)])
                .unwrap_err()
                .catchable
        );
    }

    #[test]
    fn html_follows_go() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&#34;x&#34;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        for (i, o) in [
            ("&lt;b&gt; &amp;amp; &aacute;", "<b> &amp; á"),
            ("&notit; &notin; &amp", "¬it; ∉ &"),
            (
                "&#225;&#xE1;&#x;&#;&#128;&#0;&#xD800;",
                "áá\u{FFFD}&#;€\u{FFFD}\u{FFFD}",
            ),
            ("&nosuch; & &", "&nosuch; & &"),
            ("&NotNestedGreaterGreater;", "\u{2AA2}\u{338}"),
        ] {
            assert_eq!(html_unescape(i), o, "{i}");
        }
    }

    #[test]
    fn expand_env_follows_go() {
        let path = getenv("PATH");
        assert_eq!(expand_env("a$PATH-${PATH}b"), format!("a{path}-{path}b"));
        assert_eq!(expand_env("${} ${x $"), " x $");
        assert_eq!(expand_env("$ $"), "$ $");
    }
}
