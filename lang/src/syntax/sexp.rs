//! A compact S-expression rendering of the AST, for tests and debugging (`tend` never shows it
//! to users). Statements print one per line; `with_spans` prefixes each with its span.

use std::fmt::Write;

use super::ast::*;

/// Renders a program, one statement per line.
pub fn program(p: &Program, with_spans: bool) -> String {
    let mut out = String::new();
    for s in &p.stmts {
        if with_spans {
            let _ = write!(out, "{} ", s.span.range_text());
        }
        out.push_str(&stmt(s));
        out.push('\n');
    }
    out
}

/// Renders one statement.
pub fn stmt(s: &Stmt) -> String {
    match &s.kind {
        StmtKind::Bind(b) => match &b.ty {
            Some(t) => format!("(bind ${} {} {})", b.name.text, ty(t), expr(&b.value)),
            None => format!("(bind ${} {})", b.name.text, expr(&b.value)),
        },
        StmtKind::Resource(r) => {
            let mut out = format!(
                "({} {} {}",
                if r.collect { "collect" } else { "res" },
                r.kind.text,
                expr(&r.name)
            );
            for e in &r.entries {
                out.push(' ');
                out.push_str(&entry(e));
            }
            out.push(')');
            out
        }
        StmtKind::Edge(e) => {
            let halves: Vec<String> = e
                .halves
                .iter()
                .map(|h| match &h.field {
                    Some(f) => format!("{}.{}", edge_ref(&h.res), f.text),
                    None => edge_ref(&h.res),
                })
                .collect();
            format!("(edge {})", halves.join(" -> "))
        }
        StmtKind::If(i) => match &i.els {
            Some(e) => format!(
                "(if {} {} else {})",
                expr(&i.cond),
                block(&i.then),
                block(e)
            ),
            None => format!("(if {} {})", expr(&i.cond), block(&i.then)),
        },
        StmtKind::For(f) | StmtKind::ForKv(f) => format!(
            "({} ${} ${} {} {})",
            if matches!(s.kind, StmtKind::For(_)) {
                "for"
            } else {
                "forkv"
            },
            f.key.text,
            f.value.text,
            expr(&f.iter),
            block(&f.body)
        ),
        StmtKind::Func(f) => format!(
            "(func {} {}{} {})",
            f.name.text,
            params(&f.params),
            f.ret
                .as_ref()
                .map(|t| format!(" {}", ty(t)))
                .unwrap_or_default(),
            expr(&f.body)
        ),
        StmtKind::Class(c) => format!(
            "(class {} {} {})",
            c.name.text,
            params(&c.params),
            block(&c.body)
        ),
        StmtKind::Include(i) => {
            let mut out = format!("(include {} ({})", i.name.text, exprs(&i.args));
            if let Some(a) = &i.alias {
                let _ = write!(out, " as {}", a.text);
            }
            out.push(')');
            out
        }
        StmtKind::Import(i) => match &i.alias {
            Some(ImportAlias::Name(n)) => format!("(import {:?} as {})", i.path, n.text),
            Some(ImportAlias::Star(_)) => format!("(import {:?} as *)", i.path),
            None => format!("(import {:?})", i.path),
        },
        StmtKind::Panic(p) => format!("(panic {})", exprs(&p.args)),
    }
}

fn block(b: &Block) -> String {
    let inner: Vec<String> = b.stmts.iter().map(stmt).collect();
    if inner.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", inner.join(" ; "))
    }
}

fn entry(e: &ResEntry) -> String {
    let cond = e
        .cond
        .as_ref()
        .map(|c| format!(" {} ?:", expr(c)))
        .unwrap_or_default();
    match &e.kind {
        EntryKind::Field { name, value } => format!("({}{} {})", name.text, cond, expr(value)),
        EntryKind::Edge { prop, target } => {
            format!("({}{} {})", prop.text, cond, edge_ref(target))
        }
        EntryKind::Meta { name, value } => format!("(Meta:{}{} {})", name.text, cond, expr(value)),
        EntryKind::MetaAll { value } => format!("(Meta{} {})", cond, expr(value)),
    }
}

fn edge_ref(r: &EdgeRef) -> String {
    format!("{}[{}]", r.kind.text, expr(&r.name))
}

fn params(ps: &[Param]) -> String {
    let items: Vec<String> = ps
        .iter()
        .map(|p| match &p.ty {
            Some(t) => format!("${} {}", p.name.text, ty(t)),
            None => format!("${}", p.name.text),
        })
        .collect();
    format!("({})", items.join(", "))
}

fn exprs(es: &[Expr]) -> String {
    es.iter().map(expr).collect::<Vec<_>>().join(" ")
}

/// Renders one expression.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Int(i) => i.to_string(),
        ExprKind::Float(x) => format!("{x:?}"),
        ExprKind::RawStr(s) => format!("\"{s}\""),
        ExprKind::Str(s) => format!("s{s:?}"),
        ExprKind::Concat(parts) => format!("(concat {})", exprs(parts)),
        ExprKind::List(items) => format!("[{}]", exprs(items)),
        ExprKind::Map(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|m| format!("{} => {}", expr(&m.key), expr(&m.value)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        ExprKind::Struct(fields) => {
            let items: Vec<String> = fields
                .iter()
                .map(|f| format!("{} => {}", f.name.text, expr(&f.value)))
                .collect();
            format!("struct{{{}}}", items.join(", "))
        }
        ExprKind::Var(n) => format!("${}", n.text),
        ExprKind::Call { callee, args } => {
            let c = match callee {
                Callee::Named(n) => n.text.clone(),
                Callee::Var(n) => format!("${}", n.text),
                Callee::Lambda(l) => lambda(l),
            };
            if args.is_empty() {
                format!("({c})")
            } else {
                format!("({c} {})", exprs(args))
            }
        }
        ExprKind::Lambda(l) => lambda(l),
        ExprKind::If { cond, then, els } => {
            format!("(if {} {} {})", expr(cond), expr(then), expr(els))
        }
        ExprKind::Binary { op, lhs, rhs, .. } => {
            format!("({} {} {})", op.as_str(), expr(lhs), expr(rhs))
        }
        ExprKind::Not(x) => format!("(not {})", expr(x)),
        ExprKind::Except { lhs, rhs } => format!("(<|> {} {})", expr(lhs), expr(rhs)),
        ExprKind::Index { base, index } => format!("(index {} {})", expr(base), expr(index)),
        ExprKind::Field { base, field } => format!("(-> {} {})", expr(base), field.text),
        ExprKind::OptField {
            base,
            field,
            default,
        } => format!("(->? {} {} {})", expr(base), field.text, expr(default)),
    }
}

fn lambda(l: &Lambda) -> String {
    format!(
        "(lambda {}{} {})",
        params(&l.params),
        l.ret
            .as_ref()
            .map(|t| format!(" {}", ty(t)))
            .unwrap_or_default(),
        expr(&l.body)
    )
}

/// Renders a type in mcl syntax.
pub fn ty(t: &TypeExpr) -> String {
    match &t.kind {
        TypeKind::Bool => "bool".into(),
        TypeKind::Str => "str".into(),
        TypeKind::Int => "int".into(),
        TypeKind::Float => "float".into(),
        TypeKind::Variant => "variant".into(),
        TypeKind::List(e) => format!("[]{}", ty(e)),
        TypeKind::Map(k, v) => format!("map{{{}: {}}}", ty(k), ty(v)),
        TypeKind::Struct(fields) => {
            let items: Vec<String> = fields
                .iter()
                .map(|(n, t)| format!("{} {}", n.text, ty(t)))
                .collect();
            format!("struct{{{}}}", items.join("; "))
        }
        TypeKind::Func { params, ret } => {
            let items: Vec<String> = params
                .iter()
                .map(|(n, t)| match n {
                    Some(n) => format!("${} {}", n.text, ty(t)),
                    None => ty(t),
                })
                .collect();
            format!("func({}) {}", items.join(", "), ty(ret))
        }
    }
}
