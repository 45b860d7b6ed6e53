//! The core library (spec §10): every built-in function as Rust over runtime values, with its
//! signature (text with type variables, or computed per call site), a post-solve acceptance
//! check, its kind (pure, stream, impure) and which of its errors are catchable by `<|>`.
//!
//! Stream sources (`datetime.now`, `os.readfile`, `world.*`, `collect.res`) live in
//! [`stream`]; the cluster is reached through the [`world::WorldView`] trait.

pub mod deploy;
pub mod facts;
mod golang;
mod gopath;
mod gostrconv;
mod html_entities;
pub(crate) mod json;
pub mod local;
pub mod net;
pub mod secret;
pub mod sig;
pub mod stream;
pub mod template;
pub mod text;
pub mod time;
pub mod value;
pub mod world;

use std::collections::BTreeMap;
use std::fmt;

use tend_model::Value;

use crate::types::{Ty, Unifier};

/// How a function's value relates to time (spec §10 column "k").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuncKind {
    /// The value depends only on the arguments.
    Pure,
    /// Emits new values on its own (timer, file watch, cluster event).
    Stream,
    /// A snapshot of the host, taken when the call is first evaluated.
    Impure,
}

/// A runtime failure of a built-in.
#[derive(Clone, Debug, PartialEq)]
pub struct FuncError {
    /// What went wrong (lower-case phrase).
    pub msg: String,
    /// Whether `<|>` may catch it (spec §7.4).
    pub catchable: bool,
}

impl FuncError {
    /// A catchable error.
    pub fn catchable(msg: impl Into<String>) -> Self {
        FuncError {
            msg: msg.into(),
            catchable: true,
        }
    }

    /// A fatal error.
    pub fn fatal(msg: impl Into<String>) -> Self {
        FuncError {
            msg: msg.into(),
            catchable: false,
        }
    }

    /// "No value yet": a stream source that has not produced its first value (`os.system`
    /// before the command's first line). Not catchable; the driver sends no graph while the
    /// program depends on it, and evaluates again when the value comes (mgmt's functions
    /// likewise have no output until their first value).
    pub fn pending(what: impl std::fmt::Display) -> Self {
        FuncError {
            msg: format!("{PENDING}{what}: no value yet"),
            catchable: false,
        }
    }

    /// Whether this is [`FuncError::pending`].
    pub fn is_pending(&self) -> bool {
        self.msg.starts_with(PENDING)
    }
}

/// The prefix of a [`FuncError::pending`] message (a NUL: no user text holds it).
pub const PENDING: &str = "\u{0}pending:";

impl fmt::Display for FuncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Calls the function value passed as argument `arg` of a higher-order built-in.
pub trait Invoke {
    /// Calls argument `arg` (a function value) with `args`.
    fn call(&mut self, arg: usize, args: Vec<Value>) -> Result<Value, FuncError>;
}

/// A signature computed per call site from the argument count and the statically known
/// argument values (spec §5.5). Returns the function type to unify with the call.
pub type SigFn = fn(&mut Unifier, &[Option<Value>]) -> Result<Ty, String>;

/// How a built-in's signature is obtained.
#[derive(Clone, Copy)]
pub enum Sig {
    /// A fixed signature text such as `func([]?a) int`; `?x` variables are fresh per call.
    Text(&'static str),
    /// Computed per call site.
    Dyn(SigFn),
}

/// Accepts or rejects the solved function type of one call site.
pub type CheckFn = fn(&Ty) -> Result<(), String>;

/// What a built-in needs of the result type unification solves for a call of it (see
/// [`Builtin::solved_result`]).
pub struct SolvedResult {
    /// Accepts or rejects the solved result type (the message is prefixed with the name).
    pub check: CheckFn,
    /// What to do instead when one call is typed twice (in a function called at two types).
    pub two_types: &'static str,
}

/// Runs a built-in over argument values.
pub type RunFn = fn(&[Value], &mut dyn Invoke) -> Result<Value, FuncError>;

/// One built-in function.
pub struct Builtin {
    /// Module import path (`""` for top level, `"strings"`, `"world/collect"`).
    pub module: &'static str,
    /// Name inside the module.
    pub name: &'static str,
    /// Pure, stream or impure.
    pub kind: FuncKind,
    /// Signature.
    pub sig: Sig,
    /// Acceptance check of the solved function type (spec §5.2 step 4).
    pub check: Option<CheckFn>,
    /// Implementation (for streams: the snapshot used when no source is running).
    pub run: RunFn,
}

impl Builtin {
    /// Instantiates the signature for one call site with `nargs` arguments.
    pub fn signature(&self, u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
        match self.sig {
            Sig::Text(t) => Ok(sig::parse(t, u)),
            Sig::Dyn(f) => f(u, statics),
        }
    }

    /// `module.name` as written by users (`collect.res` for `world/collect`).
    pub fn display_name(&self) -> String {
        if self.module.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", default_namespace(self.module), self.name)
        }
    }

    /// What a call with `nargs` arguments needs of the result type unification solves for
    /// it, if it needs it at run time: the solved type's text is then its hidden last
    /// argument (`unify::CallTypes`). The one-argument `encoding.decode_json*` decode to it;
    /// `value.get` makes its zero value from it and checks the held value against it.
    pub fn solved_result(&self, nargs: usize) -> Option<&'static SolvedResult> {
        match (self.module, self.name, nargs) {
            ("encoding", "decode_json" | "decode_json_flexible", 1) => Some(&json::SOLVED),
            ("value", "get", 1) => Some(&value::SOLVED),
            _ => None,
        }
    }
}

/// The default namespace of an import path (spec §6.6): last segment, `.mcl`/`/` and an
/// `mgmt-` prefix removed, `-` replaced by `_`, lower-cased.
pub fn default_namespace(path: &str) -> String {
    let p = path.trim_end_matches('/');
    let last = p.rsplit('/').next().unwrap_or(p);
    let last = last.strip_suffix(".mcl").unwrap_or(last);
    let last = last.strip_prefix("mgmt-").unwrap_or(last);
    last.replace('-', "_").to_lowercase()
}

/// Whether `path` names a core module.
pub fn is_core_module(path: &str) -> bool {
    all().any(|b| !b.module.is_empty() && b.module == path)
        || matches!(path, "fmt" | "list" | "map")
}

/// Core modules of the reference that v1 does not provide (spec §10 "Not in v1").
pub fn is_unbuilt_module(path: &str) -> bool {
    if is_core_module(path) {
        return false;
    }
    let root = path.split('/').next().unwrap_or(path);
    matches!(root, "example" | "test")
}

/// Looks up a built-in by module path and name.
pub fn lookup(module: &str, name: &str) -> Option<&'static Builtin> {
    all().find(|b| b.module == module && b.name == name)
}

/// Every built-in.
pub fn all() -> impl Iterator<Item = &'static Builtin> {
    LIBRARY.iter().chain(golang::GOLANG)
}

/// The error of a built-in called with arguments of other types than its signature's.
pub(super) fn args_err(name: &str, want: &str, got: &[Value]) -> FuncError {
    FuncError::fatal(format!(
        "{name}: expected {want}, got ({})",
        got.iter()
            .map(|v| v.type_name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

macro_rules! s {
    ($a:expr, $i:expr, $n:expr) => {
        match $a.get($i) {
            Some(Value::Str(s)) => s.as_str(),
            _ => return Err(args_err($n, "str", $a)),
        }
    };
}
macro_rules! i {
    ($a:expr, $i:expr, $n:expr) => {
        match $a.get($i) {
            Some(Value::Int(v)) => *v,
            _ => return Err(args_err($n, "int", $a)),
        }
    };
}
macro_rules! l {
    ($a:expr, $i:expr, $n:expr) => {
        match $a.get($i) {
            Some(Value::List(v)) => v,
            _ => return Err(args_err($n, "list", $a)),
        }
    };
}
macro_rules! m {
    ($a:expr, $i:expr, $n:expr) => {
        match $a.get($i) {
            Some(Value::Map(v)) => v,
            _ => return Err(args_err($n, "map", $a)),
        }
    };
}

const fn pure(module: &'static str, name: &'static str, sig: &'static str, run: RunFn) -> Builtin {
    Builtin {
        module,
        name,
        kind: FuncKind::Pure,
        sig: Sig::Text(sig),
        check: None,
        run,
    }
}

const fn with_kind(mut b: Builtin, kind: FuncKind) -> Builtin {
    b.kind = kind;
    b
}

const fn checked(mut b: Builtin, check: CheckFn) -> Builtin {
    b.check = Some(check);
    b
}

const fn dynamic(module: &'static str, name: &'static str, sig: SigFn, run: RunFn) -> Builtin {
    Builtin {
        module,
        name,
        kind: FuncKind::Pure,
        sig: Sig::Dyn(sig),
        check: None,
        run,
    }
}

fn first_arg(t: &Ty) -> Ty {
    match t {
        Ty::Func(a, _) => a.first().cloned().unwrap_or(Ty::Variant),
        _ => Ty::Variant,
    }
}

fn check_len(t: &Ty) -> Result<(), String> {
    match first_arg(t) {
        Ty::Str | Ty::List(_) | Ty::Map(..) => Ok(()),
        o => Err(format!("len does not accept {o}")),
    }
}

fn check_num(t: &Ty) -> Result<(), String> {
    match first_arg(t) {
        Ty::Int | Ty::Float => Ok(()),
        o => Err(format!("expected int or float, got {o}")),
    }
}

fn printf_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    if statics.is_empty() {
        return Err("fmt.printf needs at least a format argument".into());
    }
    let mut args = vec![Ty::Str];
    match &statics[0] {
        Some(Value::Str(f)) => {
            let verbs: Vec<char> = text::parse_format(f)?
                .into_iter()
                .filter_map(|p| match p {
                    text::Piece::Verb(v) => Some(v),
                    text::Piece::Text(_) => None,
                })
                .collect();
            if verbs.len() != statics.len() - 1 {
                return Err(format!(
                    "printf format {} has {} verbs but {} arguments follow it",
                    text::quote(f),
                    verbs.len(),
                    statics.len() - 1
                ));
            }
            for v in verbs {
                args.push(match v {
                    's' | 'q' => Ty::Str,
                    'd' => Ty::Int,
                    'f' => Ty::Float,
                    't' => Ty::Bool,
                    _ => u.fresh(),
                });
            }
        }
        _ => {
            for _ in 1..statics.len() {
                args.push(u.fresh());
            }
        }
    }
    Ok(Ty::func(args, Ty::Str))
}

fn printf_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let f = s!(a, 0, "fmt.printf");
    text::printf(f, &a[1..])
        .map(Value::Str)
        .map_err(FuncError::fatal)
}

fn range_sig(_: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    match statics.len() {
        1..=3 => Ok(Ty::func(vec![Ty::Int; statics.len()], Ty::list(Ty::Int))),
        n => Err(format!("iter.range takes 1 to 3 arguments, got {n}")),
    }
}

fn range_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let n = "iter.range";
    let (start, stop, step) = match a.len() {
        1 => (0, i!(a, 0, n), 1),
        2 => (i!(a, 0, n), i!(a, 1, n), 1),
        _ => (i!(a, 0, n), i!(a, 1, n), i!(a, 2, n)),
    };
    if step == 0 {
        return Err(FuncError::fatal("iter.range: step must not be 0"));
    }
    let mut out = Vec::new();
    let mut x = start;
    while (step > 0 && x < stop) || (step < 0 && x > stop) {
        out.push(Value::Int(x));
        if out.len() > 10_000_000 {
            return Err(FuncError::fatal("iter.range: more than 10000000 elements"));
        }
        x = match x.checked_add(step) {
            Some(x) => x,
            None => break,
        };
    }
    Ok(Value::List(out))
}

fn reduce_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    let t = u.fresh();
    let f = Ty::func(vec![t.clone(), t.clone()], t.clone());
    match statics.len() {
        2 => Ok(Ty::func(vec![Ty::list(t.clone()), f], t)),
        3 => Ok(Ty::func(vec![t.clone(), Ty::list(t.clone()), f], t)),
        n => Err(format!("iter.reduce takes 2 or 3 arguments, got {n}")),
    }
}

fn reduce_run(a: &[Value], inv: &mut dyn Invoke) -> Result<Value, FuncError> {
    let n = "iter.reduce";
    let (mut acc, list, f) = if a.len() == 3 {
        (a[0].clone(), l!(a, 1, n).as_slice(), 2)
    } else {
        let l = l!(a, 0, n);
        match l.split_first() {
            Some((h, rest)) => (h.clone(), rest, 1),
            None => {
                return Err(FuncError::fatal(
                    "iter.reduce: empty list and no initial value",
                ))
            }
        }
    };
    for e in list {
        acc = inv.call(f, vec![acc, e.clone()])?;
    }
    Ok(acc)
}

fn list_concat_sig(u: &mut Unifier, statics: &[Option<Value>]) -> Result<Ty, String> {
    if statics.is_empty() {
        return Err("list.concat needs at least one list".into());
    }
    let t = Ty::list(u.fresh());
    Ok(Ty::func(vec![t.clone(); statics.len()], t))
}

fn list_concat_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let mut out = Vec::new();
    for i in 0..a.len() {
        out.extend(l!(a, i, "list.concat").iter().cloned());
    }
    Ok(Value::List(out))
}

/// Index into a list (catchable when missing).
pub fn list_index(l: &[Value], i: i64) -> Result<Value, FuncError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| l.get(i))
        .cloned()
        .ok_or_else(|| FuncError::catchable(format!("list index {i} not present")))
}

/// Value for a map key (catchable when missing).
pub fn map_key(m: &BTreeMap<Value, Value>, k: &Value) -> Result<Value, FuncError> {
    m.get(k).cloned().ok_or_else(|| {
        FuncError::catchable(format!("map key {} not present", text::show(k, false)))
    })
}

fn pad(a: &[Value], left: bool) -> Result<Value, FuncError> {
    let n = if left {
        "strings.left_pad"
    } else {
        "strings.right_pad"
    };
    let (s, p, len) = (s!(a, 0, n), s!(a, 1, n), i!(a, 2, n));
    if p.is_empty() {
        return Ok(Value::from(s));
    }
    if len > 1 << 26 {
        return Err(FuncError::fatal(format!("{n}: length {len} is too large")));
    }
    let mut extra = String::new();
    while (s.len() + extra.len()) < usize::try_from(len).unwrap_or(0) {
        extra.push_str(p);
    }
    Ok(Value::Str(if left {
        extra + s
    } else {
        s.to_string() + &extra
    }))
}

fn mod_run(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    match (a.first(), a.get(1)) {
        (Some(Value::Int(x)), Some(Value::Int(y))) => {
            if *y == 0 {
                return Err(FuncError::catchable("math.mod: division by zero"));
            }
            Ok(Value::Int(((*x as f64) % (*y as f64)) as i64))
        }
        (Some(Value::Float(x)), Some(Value::Float(y))) => {
            let r = x % y;
            if r.is_nan() {
                return Err(FuncError::catchable("math.mod: result is not a number"));
            }
            Ok(Value::Float(r))
        }
        _ => Err(args_err("math.mod", "(int, int) or (float, float)", a)),
    }
}

fn float_result(name: &str, r: f64) -> Result<Value, FuncError> {
    if r.is_nan() || r.is_infinite() {
        Err(FuncError::catchable(format!(
            "{name}: result {} is not finite",
            text::float_text(r)
        )))
    } else {
        Ok(Value::Float(r))
    }
}

fn local_time(name: &str, t: i64) -> Result<time::LocalTime, FuncError> {
    time::local(t).map_err(|e| FuncError::fatal(format!("{name}: {e}")))
}

fn getenv(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let k = s!(a, 0, "sys.getenv");
    std::env::var(k)
        .map(Value::Str)
        .map_err(|_| FuncError::catchable(format!("environment variable {k} is not set")))
}

fn readfile_now(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let p = s!(a, 0, "os.readfile");
    stream::read_file(p)
}

fn no_snapshot(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Err(FuncError::fatal(
        "this stream function needs a running stream source",
    ))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The system host name.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

static LIBRARY: &[Builtin] = &[
    // Top level.
    checked(
        pure("", "len", "func(?a) int", |a, _| match a.first() {
            Some(Value::Str(s)) => Ok(Value::Int(s.len() as i64)),
            Some(Value::List(l)) => Ok(Value::Int(l.len() as i64)),
            Some(Value::Map(m)) => Ok(Value::Int(m.len() as i64)),
            _ => Err(args_err("len", "str, list or map", a)),
        }),
        check_len,
    ),
    pure("", "contains", "func(?a, []?a) bool", |a, _| {
        Ok(Value::Bool(l!(a, 1, "contains").contains(&a[0])))
    }),
    pure("", "concat", "func(str, str) str", |a, _| {
        Ok(Value::Str(format!(
            "{}{}",
            s!(a, 0, "concat"),
            s!(a, 1, "concat")
        )))
    }),
    pure("", "list_lookup", "func([]?a, int) ?a", |a, _| {
        list_index(l!(a, 0, "list_lookup"), i!(a, 1, "list_lookup"))
    }),
    pure("", "map_lookup", "func(map{?k: ?v}, ?k) ?v", |a, _| {
        map_key(m!(a, 0, "map_lookup"), &a[1])
    }),
    // fmt.
    dynamic("fmt", "printf", printf_sig, printf_run),
    // encoding.
    pure("encoding", "base64_encode", "func(str) str", |a, _| {
        use base64::Engine as _;
        Ok(Value::Str(
            base64::engine::general_purpose::STANDARD.encode(s!(a, 0, "encoding.base64_encode")),
        ))
    }),
    pure("encoding", "base64_decode", "func(str) str", |a, _| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(s!(a, 0, "encoding.base64_decode"))
            .map_err(|e| {
                FuncError::fatal(format!(
                    "encoding.base64_decode: could not decode base64: {e}"
                ))
            })?;
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| FuncError::fatal("encoding.base64_decode: the data is not UTF-8 text"))
    }),
    dynamic(
        "encoding",
        "decode_json",
        json::decode_sig,
        json::decode_run,
    ),
    dynamic(
        "encoding",
        "decode_json_flexible",
        json::decode_flexible_sig,
        json::decode_flexible_run,
    ),
    // regexp.
    pure("regexp", "match", "func(str, str) bool", |a, _| {
        let p = s!(a, 0, "regexp.match");
        let re = regex::Regex::new(p).map_err(|e| {
            let e = e.to_string();
            let e: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            FuncError::fatal(format!(
                "regexp.match: pattern did not compile: {}",
                e.join(" ")
            ))
        })?;
        Ok(Value::Bool(re.is_match(s!(a, 1, "regexp.match"))))
    }),
    // golang.
    dynamic(
        "golang",
        "template",
        template::template_sig,
        template::template_run,
    ),
    // strings.
    pure("strings", "contains", "func(str, str) bool", |a, _| {
        Ok(Value::Bool(s!(a, 0, "strings.contains").contains(s!(
            a,
            1,
            "strings.contains"
        ))))
    }),
    pure("strings", "has_prefix", "func(str, str) bool", |a, _| {
        Ok(Value::Bool(s!(a, 0, "strings.has_prefix").starts_with(s!(
            a,
            1,
            "strings.has_prefix"
        ))))
    }),
    pure("strings", "has_suffix", "func(str, str) bool", |a, _| {
        Ok(Value::Bool(s!(a, 0, "strings.has_suffix").ends_with(s!(
            a,
            1,
            "strings.has_suffix"
        ))))
    }),
    pure("strings", "split", "func(str, str) []str", |a, _| {
        let (s, sep) = (s!(a, 0, "strings.split"), s!(a, 1, "strings.split"));
        let parts: Vec<Value> = if sep.is_empty() {
            s.chars().map(|c| Value::Str(c.to_string())).collect()
        } else {
            s.split(sep).map(Value::from).collect()
        };
        Ok(Value::List(parts))
    }),
    pure(
        "strings",
        "join_nonempty",
        "func([]str, str) str",
        |a, _| {
            let l = l!(a, 0, "strings.join_nonempty");
            let sep = s!(a, 1, "strings.join_nonempty");
            let parts: Vec<&str> = l
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            Ok(Value::Str(parts.join(sep)))
        },
    ),
    pure("strings", "to_lower", "func(str) str", |a, _| {
        Ok(Value::Str(s!(a, 0, "strings.to_lower").to_lowercase()))
    }),
    pure("strings", "to_upper", "func(str) str", |a, _| {
        Ok(Value::Str(s!(a, 0, "strings.to_upper").to_uppercase()))
    }),
    pure("strings", "trim_space", "func(str) str", |a, _| {
        Ok(Value::from(s!(a, 0, "strings.trim_space").trim()))
    }),
    pure(
        "strings",
        "replace_all",
        "func(str, str, str) str",
        |a, _| {
            let n = "strings.replace_all";
            let (s, old, new) = (s!(a, 0, n), s!(a, 1, n), s!(a, 2, n));
            Ok(Value::Str(s.replace(old, new)))
        },
    ),
    pure("strings", "substr", "func(str, int, int) str", |a, _| {
        let n = "strings.substr";
        let (s, lo, hi) = (s!(a, 0, n), i!(a, 1, n), i!(a, 2, n));
        if lo < 0 || lo > hi || hi as usize > s.len() {
            return Err(FuncError::catchable(format!(
                "strings.substr: [{lo}, {hi}) is outside a string of length {}",
                s.len()
            )));
        }
        let b = &s.as_bytes()[lo as usize..hi as usize];
        Ok(Value::Str(String::from_utf8_lossy(b).into_owned()))
    }),
    pure("strings", "left_pad", "func(str, str, int) str", |a, _| {
        pad(a, true)
    }),
    pure("strings", "right_pad", "func(str, str, int) str", |a, _| {
        pad(a, false)
    }),
    // convert.
    pure("convert", "int_to_str", "func(int) str", |a, _| {
        Ok(Value::Str(i!(a, 0, "convert.int_to_str").to_string()))
    }),
    pure("convert", "str_to_int", "func(str) int", |a, _| {
        let s = s!(a, 0, "convert.str_to_int");
        s.parse::<i64>().map(Value::Int).map_err(|e| {
            FuncError::catchable(format!("convert.str_to_int: {}: {e}", text::quote(s)))
        })
    }),
    pure("convert", "str_to_float", "func(str) float", |a, _| {
        let s = s!(a, 0, "convert.str_to_float");
        s.parse::<f64>().map(Value::Float).map_err(|e| {
            FuncError::catchable(format!("convert.str_to_float: {}: {e}", text::quote(s)))
        })
    }),
    pure("convert", "to_float", "func(int) float", |a, _| {
        Ok(Value::Float(i!(a, 0, "convert.to_float") as f64))
    }),
    pure("convert", "to_int", "func(float) int", |a, _| {
        match a.first() {
            // `as` truncates toward zero, saturates, and maps NaN to 0.
            Some(Value::Float(f)) => Ok(Value::Int(*f as i64)),
            _ => Err(args_err("convert.to_int", "float", a)),
        }
    }),
    pure("convert", "parse_bool", "func(str) bool", |a, _| {
        match s!(a, 0, "convert.parse_bool") {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            o => Err(FuncError::catchable(format!(
                "convert.parse_bool: {} is not a bool",
                text::quote(o)
            ))),
        }
    }),
    pure("convert", "format_bool", "func(bool) str", |a, _| {
        match a.first() {
            Some(Value::Bool(b)) => Ok(Value::Str(b.to_string())),
            _ => Err(args_err("convert.format_bool", "bool", a)),
        }
    }),
    // list, map.
    dynamic("list", "concat", list_concat_sig, list_concat_run),
    pure("list", "lookup", "func([]?a, int) ?a", |a, _| {
        list_index(l!(a, 0, "list.lookup"), i!(a, 1, "list.lookup"))
    }),
    pure("map", "keys", "func(map{?k: ?v}) []?k", |a, _| {
        Ok(Value::List(m!(a, 0, "map.keys").keys().cloned().collect()))
    }),
    pure("map", "values", "func(map{?k: ?v}) []?v", |a, _| {
        Ok(Value::List(
            m!(a, 0, "map.values").values().cloned().collect(),
        ))
    }),
    pure("map", "lookup", "func(map{?k: ?v}, ?k) ?v", |a, _| {
        map_key(m!(a, 0, "map.lookup"), &a[1])
    }),
    // iter.
    pure("iter", "map", "func([]?a, func(?a) ?b) []?b", |a, inv| {
        let l = l!(a, 0, "iter.map");
        let out: Result<Vec<Value>, FuncError> =
            l.iter().map(|e| inv.call(1, vec![e.clone()])).collect();
        Ok(Value::List(out?))
    }),
    pure(
        "iter",
        "filter",
        "func([]?a, func(?a) bool) []?a",
        |a, inv| {
            let l = l!(a, 0, "iter.filter");
            let mut out = Vec::new();
            for e in l {
                if inv.call(1, vec![e.clone()])? == Value::Bool(true) {
                    out.push(e.clone());
                }
            }
            Ok(Value::List(out))
        },
    ),
    dynamic("iter", "reduce", reduce_sig, reduce_run),
    dynamic("iter", "range", range_sig, range_run),
    pure(
        "iter",
        "zip",
        "func([]?a, []?b, func(?a, ?b) ?c) []?c",
        |a, inv| {
            let (x, y) = (l!(a, 0, "iter.zip"), l!(a, 1, "iter.zip"));
            let out: Result<Vec<Value>, FuncError> = x
                .iter()
                .zip(y)
                .map(|(p, q)| inv.call(2, vec![p.clone(), q.clone()]))
                .collect();
            Ok(Value::List(out?))
        },
    ),
    pure("iter", "flatten", "func([][]?a) []?a", |a, _| {
        let mut out = Vec::new();
        for e in l!(a, 0, "iter.flatten") {
            out.extend(e.as_list().unwrap_or_default().iter().cloned());
        }
        Ok(Value::List(out))
    }),
    // math.
    checked(pure("math", "mod", "func(?a, ?a) ?a", mod_run), check_num),
    pure("math", "pow", "func(float, float) float", |a, _| {
        match (a.first(), a.get(1)) {
            (Some(Value::Float(x)), Some(Value::Float(y))) => float_result("math.pow", x.powf(*y)),
            _ => Err(args_err("math.pow", "(float, float)", a)),
        }
    }),
    pure("math", "sqrt", "func(float) float", |a, _| {
        match a.first() {
            Some(Value::Float(x)) => float_result("math.sqrt", x.sqrt()),
            _ => Err(args_err("math.sqrt", "float", a)),
        }
    }),
    // datetime.
    with_kind(
        pure("datetime", "now", "func() int", |_, _| {
            Ok(Value::Int(unix_now()))
        }),
        FuncKind::Stream,
    ),
    with_kind(
        pure("datetime", "str_now", "func() str", |_, _| {
            Ok(Value::Str(unix_now().to_string()))
        }),
        FuncKind::Stream,
    ),
    pure("datetime", "hour", "func(int) int", |a, _| {
        let t = local_time("datetime.hour", i!(a, 0, "datetime.hour"))?;
        Ok(Value::Int(t.hour.into()))
    }),
    pure("datetime", "weekday", "func(int) str", |a, _| {
        let t = local_time("datetime.weekday", i!(a, 0, "datetime.weekday"))?;
        Ok(Value::from(time::weekday_name(&t)))
    }),
    pure("datetime", "format", "func(int, str) str", |a, _| {
        let t = local_time("datetime.format", i!(a, 0, "datetime.format"))?;
        Ok(Value::Str(time::format(&t, s!(a, 1, "datetime.format"))))
    }),
    pure("datetime", "print", "func(int) str", |a, _| {
        let t = local_time("datetime.print", i!(a, 0, "datetime.print"))?;
        Ok(Value::Str(time::print(&t)))
    }),
    // os, sys.
    with_kind(
        pure("os", "readfile", "func(str) str", readfile_now),
        FuncKind::Stream,
    ),
    with_kind(
        pure("os", "file_exists", "func(str) bool", |a, _| {
            Ok(Value::Bool(
                std::path::Path::new(s!(a, 0, "os.file_exists")).exists(),
            ))
        }),
        FuncKind::Stream,
    ),
    with_kind(
        pure("sys", "getenv", "func(str) str", getenv),
        FuncKind::Impure,
    ),
    with_kind(
        pure("sys", "hasenv", "func(str) bool", |a, _| {
            Ok(Value::Bool(
                std::env::var_os(s!(a, 0, "sys.hasenv")).is_some(),
            ))
        }),
        FuncKind::Impure,
    ),
    with_kind(
        pure("sys", "env", "func() map{str: str}", |_, _| {
            Ok(Value::Map(
                std::env::vars()
                    .map(|(k, v)| (Value::Str(k), Value::Str(v)))
                    .collect(),
            ))
        }),
        FuncKind::Impure,
    ),
    with_kind(
        pure("sys", "hostname", "func() str", |_, _| {
            Ok(Value::Str(system_hostname()))
        }),
        FuncKind::Stream,
    ),
    // `history(value, index)`: kept per call site by the evaluator (graph::Streams::history);
    // this body is never called.
    with_kind(
        pure("", "history", "func(?a, int) ?a", |_, _| {
            Err(FuncError::fatal("history: evaluated outside a program"))
        }),
        FuncKind::Stream,
    ),
    // Host facts.
    with_kind(
        pure("os", "family", "func() str", facts::family),
        FuncKind::Impure,
    ),
    with_kind(
        pure(
            "os",
            "is_family_redhat",
            "func() bool",
            facts::is_family_redhat,
        ),
        FuncKind::Impure,
    ),
    with_kind(
        pure(
            "os",
            "is_family_debian",
            "func() bool",
            facts::is_family_debian,
        ),
        FuncKind::Impure,
    ),
    with_kind(
        pure(
            "os",
            "is_family_archlinux",
            "func() bool",
            facts::is_family_archlinux,
        ),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "release", "func() str", facts::release),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "home", "func(str) str", facts::home),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "uid", "func(str) str", facts::uid),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "expand_home", "func(str) str", facts::expand_home),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "user_exists", "func(str) bool", facts::user_exists),
        FuncKind::Stream,
    ),
    with_kind(
        pure("os", "is_virtual", "func() bool", facts::is_virtual),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "args", "func() []str", facts::args),
        FuncKind::Impure,
    ),
    with_kind(
        pure("os", "system", "func(str) str", |a, _| {
            Err(FuncError::pending(format!(
                "os.system({:?}): its first line of output",
                a.first().and_then(Value::as_str).unwrap_or_default()
            )))
        }),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "os",
            "modinfo_loaded",
            "func(str) bool",
            facts::modinfo_loaded,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure("sys", "cpu_count", "func() int", facts::cpu_count),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "sys",
            "load",
            "func() struct{x1 float; x5 float; x15 float}",
            facts::load,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure("sys", "uptime", "func() int", facts::uptime),
        FuncKind::Stream,
    ),
    // net: addresses (pure) and the host's interfaces (streams on link and address changes).
    pure("net", "cidr_to_ip", "func(str) str", net::cidr_to_ip),
    pure(
        "net",
        "cidr_to_prefix",
        "func(str) str",
        net::cidr_to_prefix,
    ),
    pure("net", "cidr_to_mask", "func(str) str", net::cidr_to_mask),
    pure(
        "net",
        "cidr_to_network",
        "func(str) str",
        net::cidr_to_network,
    ),
    pure("net", "cidr_to_first", "func(str) str", net::cidr_to_first),
    pure("net", "cidr_to_last", "func(str) str", net::cidr_to_last),
    pure("net", "ip_in_cidr", "func(str, str) bool", net::ip_in_cidr),
    pure("net", "is_mac", "func(str) bool", net::is_mac),
    pure("net", "macfmt", "func(str) str", net::macfmt),
    pure("net", "oldmacfmt", "func(str) str", net::oldmacfmt),
    pure(
        "net",
        "split_hostport",
        "func(str) struct{host str; port str}",
        net::split_hostport,
    ),
    pure(
        "net",
        "url_parser",
        "func(str) struct{scheme str; host str; path str; raw_query str}",
        net::url_parser,
    ),
    with_kind(
        pure("net", "macs", "func() []str", net::macs),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "net",
            "interface_cidr",
            "func(str) str",
            net::interface_cidr,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure("net", "wired_interface", "func() str", net::wired_interface),
        FuncKind::Stream,
    ),
    // deploy: the files shipped with the program (hidden call-site arguments first).
    with_kind(
        pure("deploy", "abspath", "func(str) str", deploy::abspath),
        FuncKind::Impure,
    ),
    with_kind(
        pure("deploy", "readfile", "func(str) str", deploy::readfile),
        FuncKind::Impure,
    ),
    with_kind(
        pure(
            "deploy",
            "readfileabs",
            "func(str) str",
            deploy::readfileabs,
        ),
        FuncKind::Impure,
    ),
    with_kind(
        pure(
            "deploy",
            "file_exists",
            "func(str) bool",
            deploy::file_exists,
        ),
        FuncKind::Impure,
    ),
    with_kind(
        pure("deploy", "directory", "func(str) str", deploy::directory),
        FuncKind::Impure,
    ),
    // value: what `value` resources hold on this host (streams).
    with_kind(
        pure(
            "value",
            "get",
            "func(str) struct{value ?a; ready bool}",
            value::get_any,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "value",
            "get_str",
            "func(str) struct{value str; ready bool}",
            value::get_str,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "value",
            "get_int",
            "func(str) struct{value int; ready bool}",
            value::get_int,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "value",
            "get_bool",
            "func(str) struct{value bool; ready bool}",
            value::get_bool,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "value",
            "get_float",
            "func(str) struct{value float; ready bool}",
            value::get_float,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "util",
            "hostname_mapper",
            "func(map{str: str}) str",
            net::hostname_mapper,
        ),
        FuncKind::Stream,
    ),
    // `random1(length int) str`: letters from the kernel's random source, drawn once.
    with_kind(
        pure("", "random1", "func(int) str", random1),
        FuncKind::Impure,
    ),
    // secret: host-local values, redacted wherever tend shows values.
    with_kind(
        pure("secret", "file", "func(str) str", secret::file),
        FuncKind::Stream,
    ),
    with_kind(
        pure("secret", "env", "func(str) str", secret::env),
        FuncKind::Impure,
    ),
    // local: the host's own state under `tend run`'s state directory.
    with_kind(
        pure("local", "vardir", "func(str) str", local::vardir),
        FuncKind::Impure,
    ),
    with_kind(
        pure("local", "pool", "func(str, str) int", local::pool),
        FuncKind::Impure,
    ),
    // world.
    with_kind(
        pure(
            "world",
            "getval",
            "func(str) struct{value str; exists bool}",
            no_snapshot,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure("world", "kvlookup", "func(str) map{str: str}", no_snapshot),
        FuncKind::Stream,
    ),
    with_kind(
        checked(
            dynamic("world", "schedule", world::schedule_sig, no_snapshot),
            world::check_schedule_opts,
        ),
        FuncKind::Stream,
    ),
    with_kind(
        pure(
            "world/collect",
            "res",
            "func(str) []struct{name str; host str}",
            no_snapshot,
        ),
        FuncKind::Stream,
    ),
];

/// `random1(length)`: `length` letters (`a-zA-Z`) from `/dev/urandom`, without modulo bias.
fn random1(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let n = match a.first() {
        Some(Value::Int(n)) => *n,
        _ => return Err(FuncError::fatal("random1: expected an int argument")),
    };
    if n < 0 {
        return Err(FuncError::fatal(
            "random1: can't generate a negative length",
        ));
    }
    if n > i64::from(u16::MAX) {
        return Err(FuncError::fatal(format!(
            "random1: a length of at most {} (got {n})",
            u16::MAX
        )));
    }
    let mut f = std::fs::File::open("/dev/urandom")
        .map_err(|e| FuncError::fatal(format!("random1: opening /dev/urandom: {e}")))?;
    let want = usize::try_from(n).unwrap_or(0);
    let mut out = String::with_capacity(want);
    let mut buf = [0u8; 64];
    // Bytes below 208 (4 x 52) map evenly onto the alphabet; the rest are drawn again.
    while out.len() < want {
        f.read_exact(&mut buf)
            .map_err(|e| FuncError::fatal(format!("random1: reading /dev/urandom: {e}")))?;
        for b in buf {
            if b < 208 && out.len() < want {
                out.push(char::from(ALPHABET[usize::from(b % 52)]));
            }
        }
    }
    Ok(Value::Str(out))
}

/// Runs a pure built-in that takes no function arguments (tests, constant folding).
pub fn call_simple(b: &Builtin, args: &[Value]) -> Result<Value, FuncError> {
    struct NoFuncs;
    impl Invoke for NoFuncs {
        fn call(&mut self, _: usize, _: Vec<Value>) -> Result<Value, FuncError> {
            Err(FuncError::fatal("no function value was passed"))
        }
    }
    (b.run)(args, &mut NoFuncs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(m: &str, n: &str, args: Vec<Value>) -> Result<Value, FuncError> {
        call_simple(lookup(m, n).expect("builtin exists"), &args)
    }

    #[test]
    fn every_text_signature_reads_as_a_function_type() {
        let mut u = Unifier::new();
        for b in all() {
            if let Sig::Text(_) = b.sig {
                let t = b.signature(&mut u, &[]).unwrap();
                assert!(matches!(t, Ty::Func(..)), "{}: {t}", b.display_name());
            }
        }
    }

    #[test]
    fn every_required_function_exists() {
        for (m, n) in [
            ("", "len"),
            ("", "contains"),
            ("", "concat"),
            ("fmt", "printf"),
            ("strings", "split"),
            ("strings", "substr"),
            ("convert", "parse_bool"),
            ("list", "concat"),
            ("map", "keys"),
            ("iter", "reduce"),
            ("math", "mod"),
            ("datetime", "now"),
            ("os", "readfile"),
            ("sys", "getenv"),
            ("world", "getval"),
            ("world/collect", "res"),
        ] {
            assert!(lookup(m, n).is_some(), "{m}.{n}");
        }
        assert_eq!(
            lookup("world/collect", "res").unwrap().display_name(),
            "collect.res"
        );
    }

    #[test]
    fn strings_and_conversions() {
        assert_eq!(
            call("strings", "split", vec!["".into(), ",".into()]).unwrap(),
            Value::from(vec![""])
        );
        assert_eq!(
            call("strings", "split", vec!["ab".into(), "".into()]).unwrap(),
            Value::from(vec!["a", "b"])
        );
        assert_eq!(
            call(
                "strings",
                "left_pad",
                vec!["7".into(), "ab".into(), Value::Int(4)]
            )
            .unwrap(),
            Value::from("abab7")
        );
        assert_eq!(
            call(
                "strings",
                "right_pad",
                vec!["7".into(), "".into(), Value::Int(4)]
            )
            .unwrap(),
            Value::from("7")
        );
        let e = call(
            "strings",
            "substr",
            vec!["abc".into(), Value::Int(2), Value::Int(5)],
        );
        assert!(e.unwrap_err().catchable);
        assert_eq!(
            call("convert", "to_int", vec![Value::Float(-2.7)]).unwrap(),
            Value::Int(-2)
        );
        assert_eq!(
            call("convert", "to_int", vec![Value::Float(f64::NAN)]).unwrap(),
            Value::Int(0)
        );
        assert!(
            call("convert", "parse_bool", vec!["yes".into()])
                .unwrap_err()
                .catchable
        );
        assert_eq!(
            call("math", "mod", vec![Value::Int(-7), Value::Int(3)]).unwrap(),
            Value::Int(-1)
        );
        assert!(
            call("math", "mod", vec![Value::Int(1), Value::Int(0)])
                .unwrap_err()
                .catchable
        );
    }

    #[test]
    fn printf_signature_follows_the_static_format() {
        let b = lookup("fmt", "printf").unwrap();
        let mut u = Unifier::new();
        let t = b
            .signature(&mut u, &[Some("%d-%s".into()), None, None])
            .unwrap();
        assert_eq!(t.to_string(), "func(str, int, str) str");
        assert!(b.signature(&mut u, &[Some("%d".into())]).is_err());
        assert!(b.signature(&mut u, &[Some("%5d".into()), None]).is_err());
        let t = b.signature(&mut u, &[None, None]).unwrap();
        assert!(!t.is_ground());
    }

    #[test]
    fn range_and_namespaces() {
        assert_eq!(
            call(
                "iter",
                "range",
                vec![Value::Int(5), Value::Int(0), Value::Int(-2)]
            )
            .unwrap(),
            Value::from(vec![5i64, 3, 1])
        );
        assert!(call(
            "iter",
            "range",
            vec![Value::Int(0), Value::Int(1), Value::Int(0)]
        )
        .is_err());
        assert_eq!(default_namespace("world/collect"), "collect");
        assert_eq!(default_namespace("lib/util.mcl"), "util");
        assert_eq!(default_namespace("mgmt-web-x/"), "web_x");
        assert!(is_core_module("strings"));
        assert!(!is_core_module("lib/"));
    }
}
