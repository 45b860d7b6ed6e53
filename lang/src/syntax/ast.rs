//! The mcl abstract syntax tree (spec §3). Every node carries a [`Span`].
//!
//! The parser produces string literals as [`ExprKind::RawStr`] (escapes undecoded); the
//! interpolate stage ([`crate::check::interpolate`]) replaces every one of them by
//! [`ExprKind::Str`] (decoded text) or [`ExprKind::Concat`] (interpolated pieces), and moves
//! `class a:b` declarations into the body of `class a`. Later stages never see `RawStr` and
//! never see a class name containing `:`.

pub use super::span::{FileId, Name, Pos, Span};

/// One parsed file: its statements in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The file this program was parsed from.
    pub file: FileId,
    /// Top-level statements.
    pub stmts: Vec<Stmt>,
    /// The whole file.
    pub span: Span,
}

/// A statement block `{ … }` of an `if`, `else`, `for`, `forkv` or `class`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// Statements in source order.
    pub stmts: Vec<Stmt>,
    /// From `{` to `}` inclusive.
    pub span: Span,
}

/// A statement with its span (first to last token).
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// What the statement is.
    pub kind: StmtKind,
    /// From the first to the last token of the statement.
    pub span: Span,
}

/// The statements of spec §3.2.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `$name [type] = expr`.
    Bind(Bind),
    /// `kind NAME { … }` or `collect kind NAME { … }`.
    Resource(Resource),
    /// `A[a] -> B[b] -> …` or `A[a].f -> B[b].g`.
    Edge(Edge),
    /// `if cond { … } [else { … }]`.
    If(IfStmt),
    /// `for $i, $v in list { … }`.
    For(ForStmt),
    /// `forkv $k, $v in map { … }`.
    ForKv(ForStmt),
    /// `func name(params) [type] { expr }`.
    Func(FuncStmt),
    /// `class name[(params)] { … }`.
    Class(ClassStmt),
    /// `include name[(args)] [as alias]`.
    Include(Include),
    /// `import "path" [as alias | as *]`.
    Import(Import),
    /// `panic(args)`.
    Panic(Panic),
}

/// `$name [type] = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    /// The bound variable (undotted, without `$`; the span covers the name only).
    pub name: Name,
    /// Optional type annotation.
    pub ty: Option<TypeExpr>,
    /// The bound expression.
    pub value: Expr,
}

/// A resource statement; `collect` is true for `collect kind NAME { … }` (spec §9).
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Whether this is a `collect` statement.
    pub collect: bool,
    /// The kind as written (`file`, `http:server`).
    pub kind: Name,
    /// The name expression (`str` or `[]str`, or collect names).
    pub name: Expr,
    /// Body entries in source order.
    pub entries: Vec<ResEntry>,
    /// From `{` to `}` of the body.
    pub body_span: Span,
}

/// One resource body entry; `cond` is the elvis condition of `cond ?: value`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResEntry {
    /// The entry proper.
    pub kind: EntryKind,
    /// The `bool` condition before `?:`, if any.
    pub cond: Option<Expr>,
    /// From the first token of the entry to its value (the trailing `,` excluded).
    pub span: Span,
}

/// The kinds of resource body entries (spec §3.3).
#[derive(Clone, Debug, PartialEq)]
pub enum EntryKind {
    /// `field => value`.
    Field {
        /// The field name.
        name: Name,
        /// The value.
        value: Expr,
    },
    /// `Prop => Kind[name]`. `prop` keeps the capitalised spelling (`Before`); any capitalised
    /// word is accepted by the parser and checked by init (see [`EdgeProp::from_name`]).
    Edge {
        /// The property as written.
        prop: Name,
        /// The target resource.
        target: EdgeRef,
    },
    /// `Meta:name => value`.
    Meta {
        /// The meta parameter name (after `Meta:`).
        name: Name,
        /// The value.
        value: Expr,
    },
    /// `Meta => value` (a struct holding every meta parameter).
    MetaAll {
        /// The struct value.
        value: Expr,
    },
}

/// The four edge properties of resource bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeProp {
    /// `self -> target`.
    Before,
    /// `target -> self`.
    Depend,
    /// `self -> target` with refresh.
    Notify,
    /// `target -> self` with refresh.
    Listen,
}

impl EdgeProp {
    /// Recognises the capitalised spelling (`"Before"` …); `None` for any other word.
    pub fn from_name(s: &str) -> Option<EdgeProp> {
        match s {
            "Before" => Some(EdgeProp::Before),
            "Depend" => Some(EdgeProp::Depend),
            "Notify" => Some(EdgeProp::Notify),
            "Listen" => Some(EdgeProp::Listen),
            _ => None,
        }
    }

    /// Whether the edge goes from the resource to the target (`Before`, `Notify`).
    pub fn outgoing(self) -> bool {
        matches!(self, EdgeProp::Before | EdgeProp::Notify)
    }

    /// Whether the edge carries a refresh notification (`Notify`, `Listen`).
    pub fn refresh(self) -> bool {
        matches!(self, EdgeProp::Notify | EdgeProp::Listen)
    }
}

/// `Kind[name]`: a reference to a resource in edges.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRef {
    /// The kind, lower-cased (`File` → `file`, `Http:Server` → `http:server`); the span covers
    /// the capitalised kind as written.
    pub kind: Name,
    /// The name expression (`str` or `[]str`).
    pub name: Expr,
    /// From the kind to `]`.
    pub span: Span,
}

/// An edge statement: a chain of at least one half (a single half is rejected by unify).
///
/// For send/recv (`A[a].out -> B[b].in`) there are exactly two halves, both with `field` set;
/// the parser guarantees that either every half has a field (and there are two) or none does.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// The chain, in order.
    pub halves: Vec<EdgeHalf>,
}

/// One element of an edge chain.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeHalf {
    /// The resource.
    pub res: EdgeRef,
    /// The send or receive field (`.out`), for send/recv edges.
    pub field: Option<Name>,
    /// From the kind to `]` or to the field.
    pub span: Span,
}

/// `if cond { … } [else { … }]`.
#[derive(Clone, Debug, PartialEq)]
pub struct IfStmt {
    /// The `bool` condition.
    pub cond: Expr,
    /// The then-branch.
    pub then: Block,
    /// The else-branch.
    pub els: Option<Block>,
}

/// `for $a, $b in expr { … }` (index, value) or `forkv $a, $b in expr { … }` (key, value).
#[derive(Clone, Debug, PartialEq)]
pub struct ForStmt {
    /// The index (for) or key (forkv) variable.
    pub key: Name,
    /// The value variable.
    pub value: Name,
    /// The list (for) or map (forkv).
    pub iter: Expr,
    /// The body.
    pub body: Block,
}

/// A function or class parameter `$name [type]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The parameter name (without `$`).
    pub name: Name,
    /// Optional type annotation.
    pub ty: Option<TypeExpr>,
    /// From `$` to the end of the type (or name).
    pub span: Span,
}

/// `func name(params) [ret] { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct FuncStmt {
    /// The function name (undotted).
    pub name: Name,
    /// The parameters.
    pub params: Vec<Param>,
    /// The declared result type.
    pub ret: Option<TypeExpr>,
    /// The body expression.
    pub body: Expr,
    /// The whole statement, from `func` to the closing `}`.
    pub span: Span,
}

/// `class name[(params)] { body }`; `name` may contain `:` until the interpolate stage.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassStmt {
    /// The class name.
    pub name: Name,
    /// The parameters (`class c` and `class c()` both give an empty list).
    pub params: Vec<Param>,
    /// The body.
    pub body: Block,
}

/// `include name[(args)] [as alias]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    /// The class name, possibly dotted (`a.probe`).
    pub name: Name,
    /// The arguments (`include c` and `include c()` both give an empty list).
    pub args: Vec<Expr>,
    /// The `as` alias.
    pub alias: Option<Name>,
}

/// `import "path" [as alias | as *]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    /// The path with escapes decoded (never interpolated).
    pub path: String,
    /// The span of the string literal.
    pub path_span: Span,
    /// The alias, if any.
    pub alias: Option<ImportAlias>,
}

/// The `as` part of an import.
#[derive(Clone, Debug, PartialEq)]
pub enum ImportAlias {
    /// `as name`.
    Name(Name),
    /// `as *`, with the span of `*`.
    Star(Span),
}

/// `panic(args)`: one or two arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Panic {
    /// The arguments.
    pub args: Vec<Expr>,
}

/// An expression with its span (first to last token, parentheses included).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What the expression is.
    pub kind: ExprKind,
    /// From the first to the last token.
    pub span: Span,
}

/// The expressions of spec §3.4.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal as written between the quotes (escapes not decoded). Only the parser
    /// produces it; the interpolate stage replaces it by `Str` or `Concat`.
    RawStr(String),
    /// A string with escapes decoded and no interpolation.
    Str(String),
    /// An interpolated string: the concatenation of its parts, every part of type `str`
    /// (literal `Str` pieces and `Var` references), at least one part. A single part (`"${v}"`)
    /// means that variable constrained to `str`. Semantically the right-nested `concat` chain of
    /// spec §4.
    Concat(Vec<Expr>),
    /// `[a, b, …]`.
    List(Vec<Expr>),
    /// `{k => v, …}`.
    Map(Vec<MapEntry>),
    /// `struct{a => x, …}`.
    Struct(Vec<StructField>),
    /// `$name` or `$a.b.c` (text without `$`, dotted; the span includes `$`).
    Var(Name),
    /// A call of a named function, a function value or an inline lambda.
    Call {
        /// What is called.
        callee: Callee,
        /// The arguments.
        args: Vec<Expr>,
    },
    /// `func(params) [ret] { body }`.
    Lambda(Lambda),
    /// `if cond { a } else { b }`.
    If {
        /// The `bool` condition.
        cond: Box<Expr>,
        /// The then-value.
        then: Box<Expr>,
        /// The else-value.
        els: Box<Expr>,
    },
    /// A binary operator (arithmetic, comparison, `and`, `or`, `in`).
    Binary {
        /// The operator.
        op: BinOp,
        /// The operator token.
        op_span: Span,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `not e`.
    Not(Box<Expr>),
    /// `a <|> b` (runtime fallback).
    Except {
        /// The primary value.
        lhs: Box<Expr>,
        /// The fallback.
        rhs: Box<Expr>,
    },
    /// `a[k]`.
    Index {
        /// The list or map.
        base: Box<Expr>,
        /// The index or key.
        index: Box<Expr>,
    },
    /// `s->f`.
    Field {
        /// The struct.
        base: Box<Expr>,
        /// The field.
        field: Name,
    },
    /// `s->f <|> d`: static optional field lookup (spec §5.6).
    OptField {
        /// The struct.
        base: Box<Expr>,
        /// The field.
        field: Name,
        /// The default.
        default: Box<Expr>,
    },
}

/// A map literal entry `key => value`.
#[derive(Clone, Debug, PartialEq)]
pub struct MapEntry {
    /// The key.
    pub key: Expr,
    /// The value.
    pub value: Expr,
}

/// A struct literal field `name => value`.
#[derive(Clone, Debug, PartialEq)]
pub struct StructField {
    /// The field name.
    pub name: Name,
    /// The value.
    pub value: Expr,
}

/// What a call expression calls.
#[derive(Clone, Debug, PartialEq)]
pub enum Callee {
    /// A named function, possibly dotted (`len`, `fmt.printf`, `ns.f`).
    Named(Name),
    /// A function value in a variable (`$f(…)`; text without `$`, span includes it).
    Var(Name),
    /// An inline lambda called immediately.
    Lambda(Box<Lambda>),
}

/// A function literal.
#[derive(Clone, Debug, PartialEq)]
pub struct Lambda {
    /// The parameters.
    pub params: Vec<Param>,
    /// The declared result type.
    pub ret: Option<TypeExpr>,
    /// The body expression.
    pub body: Box<Expr>,
}

/// Binary operators (desugared to operator function calls, spec §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `and`
    And,
    /// `or`
    Or,
    /// `in` (list membership, `contains`).
    In,
}

impl BinOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::In => "in",
        }
    }
}

/// A type annotation with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    /// The type.
    pub kind: TypeKind,
    /// From the first to the last token of the type.
    pub span: Span,
}

/// Type syntax (spec §5.1).
#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// `bool`
    Bool,
    /// `str`
    Str,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `[]T`
    List(Box<TypeExpr>),
    /// `map{K: V}`
    Map(Box<TypeExpr>, Box<TypeExpr>),
    /// `struct{a T; b U}` (field names unique, checked by the parser).
    Struct(Vec<(Name, TypeExpr)>),
    /// `func(T, U) R` or `func($a T) R` (argument names cosmetic, unique when given).
    Func {
        /// The arguments with their optional names.
        params: Vec<(Option<Name>, TypeExpr)>,
        /// The result type.
        ret: Box<TypeExpr>,
    },
    /// `variant`
    Variant,
}

impl Expr {
    /// The direct sub-expressions, in source order (a called lambda's body included).
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::RawStr(_)
            | ExprKind::Str(_)
            | ExprKind::Var(_) => Vec::new(),
            ExprKind::Concat(items) | ExprKind::List(items) => items.iter().collect(),
            ExprKind::Map(entries) => entries.iter().flat_map(|e| [&e.key, &e.value]).collect(),
            ExprKind::Struct(fields) => fields.iter().map(|f| &f.value).collect(),
            ExprKind::Call { callee, args } => {
                let mut out = Vec::with_capacity(args.len() + 1);
                if let Callee::Lambda(l) = callee {
                    out.push(&*l.body);
                }
                out.extend(args.iter());
                out
            }
            ExprKind::Lambda(l) => vec![&*l.body],
            ExprKind::If { cond, then, els } => vec![&**cond, &**then, &**els],
            ExprKind::Binary { lhs, rhs, .. } | ExprKind::Except { lhs, rhs } => {
                vec![&**lhs, &**rhs]
            }
            ExprKind::Not(x) => vec![&**x],
            ExprKind::Index { base, index } => vec![&**base, &**index],
            ExprKind::Field { base, .. } => vec![&**base],
            ExprKind::OptField { base, default, .. } => vec![&**base, &**default],
        }
    }

    /// The direct sub-expressions, mutably, in source order.
    pub fn children_mut(&mut self) -> Vec<&mut Expr> {
        match &mut self.kind {
            ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::RawStr(_)
            | ExprKind::Str(_)
            | ExprKind::Var(_) => Vec::new(),
            ExprKind::Concat(items) | ExprKind::List(items) => items.iter_mut().collect(),
            ExprKind::Map(entries) => entries
                .iter_mut()
                .flat_map(|e| [&mut e.key, &mut e.value])
                .collect(),
            ExprKind::Struct(fields) => fields.iter_mut().map(|f| &mut f.value).collect(),
            ExprKind::Call { callee, args } => {
                let mut out = Vec::with_capacity(args.len() + 1);
                if let Callee::Lambda(l) = callee {
                    out.push(&mut *l.body);
                }
                out.extend(args.iter_mut());
                out
            }
            ExprKind::Lambda(l) => vec![&mut *l.body],
            ExprKind::If { cond, then, els } => vec![&mut **cond, &mut **then, &mut **els],
            ExprKind::Binary { lhs, rhs, .. } | ExprKind::Except { lhs, rhs } => {
                vec![&mut **lhs, &mut **rhs]
            }
            ExprKind::Not(x) => vec![&mut **x],
            ExprKind::Index { base, index } => vec![&mut **base, &mut **index],
            ExprKind::Field { base, .. } => vec![&mut **base],
            ExprKind::OptField { base, default, .. } => vec![&mut **base, &mut **default],
        }
    }
}

impl Stmt {
    /// The expressions written directly in this statement (not inside nested blocks), in
    /// source order: bind values, resource names and entry conditions/values/targets, edge
    /// names, conditions, loop sources, function bodies, include and panic arguments.
    pub fn exprs(&self) -> Vec<&Expr> {
        match &self.kind {
            StmtKind::Bind(b) => vec![&b.value],
            StmtKind::Resource(r) => {
                let mut out = vec![&r.name];
                for e in &r.entries {
                    out.extend(e.cond.iter());
                    match &e.kind {
                        EntryKind::Field { value, .. }
                        | EntryKind::Meta { value, .. }
                        | EntryKind::MetaAll { value } => out.push(value),
                        EntryKind::Edge { target, .. } => out.push(&target.name),
                    }
                }
                out
            }
            StmtKind::Edge(e) => e.halves.iter().map(|h| &h.res.name).collect(),
            StmtKind::If(i) => vec![&i.cond],
            StmtKind::For(f) | StmtKind::ForKv(f) => vec![&f.iter],
            StmtKind::Func(f) => vec![&f.body],
            StmtKind::Class(_) | StmtKind::Import(_) => Vec::new(),
            StmtKind::Include(i) => i.args.iter().collect(),
            StmtKind::Panic(p) => p.args.iter().collect(),
        }
    }

    /// The expressions written directly in this statement, mutably (same order as
    /// [`Stmt::exprs`]).
    pub fn exprs_mut(&mut self) -> Vec<&mut Expr> {
        match &mut self.kind {
            StmtKind::Bind(b) => vec![&mut b.value],
            StmtKind::Resource(r) => {
                let mut out = vec![&mut r.name];
                for e in &mut r.entries {
                    out.extend(e.cond.iter_mut());
                    match &mut e.kind {
                        EntryKind::Field { value, .. }
                        | EntryKind::Meta { value, .. }
                        | EntryKind::MetaAll { value } => out.push(value),
                        EntryKind::Edge { target, .. } => out.push(&mut target.name),
                    }
                }
                out
            }
            StmtKind::Edge(e) => e.halves.iter_mut().map(|h| &mut h.res.name).collect(),
            StmtKind::If(i) => vec![&mut i.cond],
            StmtKind::For(f) | StmtKind::ForKv(f) => vec![&mut f.iter],
            StmtKind::Func(f) => vec![&mut f.body],
            StmtKind::Class(_) | StmtKind::Import(_) => Vec::new(),
            StmtKind::Include(i) => i.args.iter_mut().collect(),
            StmtKind::Panic(p) => p.args.iter_mut().collect(),
        }
    }

    /// The statement blocks nested directly in this statement (`if`/`else` branches, loop and
    /// class bodies).
    pub fn blocks(&self) -> Vec<&Block> {
        match &self.kind {
            StmtKind::If(i) => {
                let mut out = vec![&i.then];
                out.extend(i.els.iter());
                out
            }
            StmtKind::For(f) | StmtKind::ForKv(f) => vec![&f.body],
            StmtKind::Class(c) => vec![&c.body],
            _ => Vec::new(),
        }
    }

    /// The statement blocks nested directly in this statement, mutably.
    pub fn blocks_mut(&mut self) -> Vec<&mut Block> {
        match &mut self.kind {
            StmtKind::If(i) => {
                let mut out = vec![&mut i.then];
                out.extend(i.els.iter_mut());
                out
            }
            StmtKind::For(f) | StmtKind::ForKv(f) => vec![&mut f.body],
            StmtKind::Class(c) => vec![&mut c.body],
            _ => Vec::new(),
        }
    }
}
