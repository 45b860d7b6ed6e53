//! The document as a small tree of [`Node`]s, each with the line it starts on, read from
//! `saphyr-parser`'s events (or the fast reader's, `quick.rs`), with `serde_yaml_ng`'s limits
//! (nesting depth, alias expansions, duplicate keys, one document).

use std::borrow::Cow;
use std::collections::HashSet;

use saphyr_parser::{Event, ScanError, StrInput, Tag};

use crate::quick;
use crate::scalar::scalar;

pub(crate) fn yaml_kind(v: &Yaml<'_>) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a bool",
        Yaml::Float(_) => "a float",
        Yaml::Int(_) | Yaml::BigInt(_) => "an int",
        Yaml::Str(_) => "a string",
        Yaml::Seq(_) => "a list",
        Yaml::Map(_) => "a mapping",
        Yaml::Tagged(..) => "a tagged value",
    }
}

/// A key as text, borrowed when it is a string.
pub(crate) fn key_str<'k>(k: &'k Yaml<'_>) -> Cow<'k, str> {
    match k {
        Yaml::Str(s) => Cow::Borrowed(s),
        other => Cow::Owned(key_text(other)),
    }
}

/// A key (or a number used as a name) as text, numbers written as `serde_yaml_ng` writes them.
pub(crate) fn key_text(k: &Yaml<'_>) -> String {
    match k {
        Yaml::Str(s) => s.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(i) => i.to_string(),
        Yaml::BigInt(n) => n.to_string(),
        Yaml::Float(f) => serde_yaml_ng::Number::from(*f).to_string(),
        Yaml::Null => "null".into(),
        other => yaml_kind(other).into(),
    }
}

/// A YAML node and the 1-based line it starts on.
#[derive(Clone, Debug)]
pub(crate) struct Node<'a> {
    pub(crate) line: usize,
    pub(crate) yaml: Yaml<'a>,
}

impl Node<'_> {
    /// Whether this is the string `s`.
    pub(crate) fn is_str(&self, s: &str) -> bool {
        matches!(&self.yaml, Yaml::Str(v) if v == s)
    }
}

/// A YAML value as `serde_yaml_ng::Value` holds it (strings borrowed from the text when they
/// can be).
#[derive(Clone, Debug)]
pub(crate) enum Yaml<'a> {
    Null,
    Bool(bool),
    /// An integer that fits an `i64`.
    Int(i64),
    /// A positive integer above `i64::MAX`.
    BigInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Seq(Vec<Node<'a>>),
    /// Entries in document order (keys are unique).
    Map(Vec<(Node<'a>, Node<'a>)>),
    /// A value under a `!tag` (shown as `serde_yaml_ng` shows it).
    Tagged(String, Box<Node<'a>>),
}

impl PartialEq for Yaml<'_> {
    /// Equality of keys as `serde_yaml_ng` sees it (maps compare without order; all NaNs are
    /// one value).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            (Yaml::BigInt(a), Yaml::BigInt(b)) => a == b,
            (Yaml::Float(a), Yaml::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            (Yaml::Seq(a), Yaml::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.yaml == y.yaml)
            }
            (Yaml::Map(a), Yaml::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(ka, va)| {
                        b.iter()
                            .any(|(kb, vb)| ka.yaml == kb.yaml && va.yaml == vb.yaml)
                    })
            }
            (Yaml::Tagged(ta, a), Yaml::Tagged(tb, b)) => ta == tb && a.yaml == b.yaml,
            _ => false,
        }
    }
}

/// Why the text is not valid YAML (or not what `serde_yaml_ng` accepts), in our words.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl Invalid {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Invalid {
            line: Some(line),
            message: format!("{} at line {line}", message.into()),
        }
    }
}

impl From<ScanError> for Invalid {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        Invalid {
            line: Some(m.line()),
            message: format!("{} at line {} column {}", e.info(), m.line(), m.col() + 1),
        }
    }
}

/// How deep collections may nest, and how many times (per event of the document) aliases
/// may be expanded: `serde_yaml_ng`'s limits.
pub(crate) const MAX_DEPTH: usize = 128;
pub(crate) const JUMPS_PER_EVENT: usize = 100;

/// Reads the text into the tree of its only document (`None` for a stream with no document):
/// with the fast reader for the common subset of YAML, else with `saphyr-parser`.
pub(crate) fn read_tree(text: &str) -> Result<Option<Node<'_>>, Invalid> {
    let mut quick = Reader::new(text, Source::Quick(quick::Quick::new(text)));
    match quick.document() {
        Err(_) if quick.gave_up => read_tree_full(text),
        read => read,
    }
}

/// Reads the text into a tree with `saphyr-parser` alone.
pub(crate) fn read_tree_full(text: &str) -> Result<Option<Node<'_>>, Invalid> {
    Reader::new(
        text,
        Source::Full(Box::new(saphyr_parser::Parser::new_from_str(text))),
    )
    .document()
}

/// Where events come from.
pub(crate) enum Source<'a> {
    Quick(quick::Quick<'a>),
    Full(Box<saphyr_parser::Parser<'a, StrInput<'a>>>),
}

/// An anchored node, with the alias expansions it took and how deep its collections nest.
pub(crate) struct Anchored<'a> {
    node: Node<'a>,
    jumps: usize,
    height: usize,
}

pub(crate) struct Reader<'a> {
    events: Source<'a>,
    /// The fast reader met something outside its subset.
    pub(crate) gave_up: bool,
    /// By anchor id (`None` while the anchored node is being read).
    anchors: Vec<Option<Anchored<'a>>>,
    /// Alias expansions so far, counted as `serde_yaml_ng` counts them (an alias whose node
    /// holds aliases replays those too).
    jumps: usize,
    max_jumps: usize,
    /// Node events so far (the measure of `serde_yaml_ng`'s repetition limit).
    count: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &str, events: Source<'a>) -> Self {
        Reader {
            events,
            gave_up: false,
            anchors: Vec::new(),
            jumps: 0,
            // The document has at most this many events (each takes at least half a
            // character, an empty scalar aside), which bounds the work aliases may cause
            // before the end.
            max_jumps: JUMPS_PER_EVENT * (2 * text.len() + 8),
            count: 0,
        }
    }

    /// Reads the only document.
    pub(crate) fn document(&mut self) -> Result<Option<Node<'a>>, Invalid> {
        let mut doc = None;
        loop {
            let (event, line) = self.next()?;
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart(_) if doc.is_none() => {
                    doc = match self.node(0)? {
                        Some((node, _)) => Some(node),
                        None => return Err(Invalid::at(line, "empty document")),
                    };
                }
                Event::DocumentStart(_) => return Err(Invalid::at(
                    line,
                    "deserializing from YAML containing more than one document is not supported",
                )),
                _ => {}
            }
        }
        if self.jumps > JUMPS_PER_EVENT * self.count {
            return Err(Invalid::at(1, "repetition limit exceeded"));
        }
        Ok(doc)
    }

    /// The next event and the line it starts on.
    fn next(&mut self) -> Result<(Event<'a>, usize), Invalid> {
        match &mut self.events {
            Source::Quick(q) => q.next().ok_or_else(|| {
                self.gave_up = true;
                Invalid::at(1, "outside the fast reader's subset")
            }),
            Source::Full(p) => match p.next_event() {
                Some(Ok((event, span))) => Ok((event, span.start.line())),
                Some(Err(e)) => Err(e.into()),
                None => Err(Invalid::at(1, "unexpected end of the event stream")),
            },
        }
    }

    /// Reads the next node at `depth` collections deep, with the depth of its own nesting;
    /// `None` at the end of the enclosing collection.
    fn node(&mut self, depth: usize) -> Result<Option<(Node<'a>, usize)>, Invalid> {
        let (event, line) = self.next()?;
        let jumps = self.jumps;
        let (yaml, height, anchor, tag) = match event {
            Event::SequenceEnd | Event::MappingEnd => return Ok(None),
            Event::Alias(id) => {
                self.count += 1;
                let Some(Some(a)) = self.anchors.get(id) else {
                    return Err(Invalid::at(line, "alias to an unknown or enclosing anchor"));
                };
                self.jumps += 1 + a.jumps;
                if depth + a.height > MAX_DEPTH {
                    return Err(Invalid::at(line, "recursion limit exceeded"));
                }
                if self.jumps > self.max_jumps {
                    return Err(Invalid::at(line, "repetition limit exceeded"));
                }
                return Ok(Some((a.node.clone(), a.height)));
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.count += 1;
                let yaml =
                    scalar(value, style, tag.as_deref()).map_err(|m| Invalid::at(line, m))?;
                (yaml, 0, anchor, tag)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count += 1;
                self.nest(depth, line)?;
                let mut items = Vec::new();
                let mut height = 0;
                while let Some((item, h)) = self.node(depth + 1)? {
                    height = height.max(h);
                    items.push(item);
                }
                self.count += 1;
                (Yaml::Seq(items), height + 1, anchor, tag)
            }
            Event::MappingStart(anchor, tag) => {
                self.count += 1;
                self.nest(depth, line)?;
                let mut entries: Vec<(Node<'a>, Node<'a>)> = Vec::new();
                let mut height = 0;
                while let Some((key, hk)) = self.node(depth + 1)? {
                    let Some((value, hv)) = self.node(depth + 1)? else {
                        return Err(Invalid::at(line, "mapping key without a value"));
                    };
                    height = height.max(hk).max(hv);
                    entries.push((key, value));
                }
                self.count += 1;
                if let Some(dup) = duplicate_key(&entries) {
                    return Err(Invalid::at(dup, "duplicate entry in YAML map"));
                }
                (Yaml::Map(entries), height + 1, anchor, tag)
            }
            _ => return Err(Invalid::at(line, "unexpected YAML event")),
        };
        let yaml = match tag.as_deref().map(full_tag) {
            Some(t) if t.starts_with('!') => {
                Yaml::Tagged(show_tag(&t), Box::new(Node { line, yaml }))
            }
            _ => yaml,
        };
        Ok(Some(self.anchor(
            anchor,
            Node { line, yaml },
            height,
            jumps,
        )))
    }

    /// Checks that a collection may start `depth` collections deep.
    fn nest(&self, depth: usize, line: usize) -> Result<(), Invalid> {
        if depth >= MAX_DEPTH {
            return Err(Invalid::at(line, "recursion limit exceeded"));
        }
        Ok(())
    }

    /// Records `node` under its anchor id (0: none); `jumps` is the expansion count before it.
    fn anchor(
        &mut self,
        anchor: usize,
        node: Node<'a>,
        height: usize,
        jumps: usize,
    ) -> (Node<'a>, usize) {
        if anchor > 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize_with(anchor + 1, || None);
            }
            self.anchors[anchor] = Some(Anchored {
                node: node.clone(),
                jumps: self.jumps - jumps,
                height,
            });
        }
        (node, height)
    }
}

/// The line of a key that repeats an earlier key of the same mapping, if any.
pub(crate) fn duplicate_key(entries: &[(Node<'_>, Node<'_>)]) -> Option<usize> {
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate().skip(1) {
            if entries[..i].iter().any(|(e, _)| e.yaml == k.yaml) {
                return Some(k.line);
            }
        }
        return None;
    }
    /// A hashable stand-in for a scalar key (floats by value, all NaNs and both zeros alike).
    #[derive(PartialEq, Eq, Hash)]
    enum Scalar<'k> {
        Null,
        Bool(bool),
        Int(i64),
        BigInt(u64),
        Float(u64),
        Str(&'k str),
    }
    let mut seen = HashSet::with_capacity(entries.len());
    let mut complex: Vec<&Node<'_>> = Vec::new();
    for (k, _) in entries {
        let s = match &k.yaml {
            Yaml::Null => Scalar::Null,
            Yaml::Bool(b) => Scalar::Bool(*b),
            Yaml::Int(i) => Scalar::Int(*i),
            Yaml::BigInt(n) => Scalar::BigInt(*n),
            Yaml::Float(f) if f.is_nan() => Scalar::Float(f64::NAN.to_bits()),
            Yaml::Float(f) if *f == 0.0 => Scalar::Float(0),
            Yaml::Float(f) => Scalar::Float(f.to_bits()),
            Yaml::Str(s) => Scalar::Str(s),
            _ => {
                if complex.iter().any(|c| c.yaml == k.yaml) {
                    return Some(k.line);
                }
                complex.push(k);
                continue;
            }
        };
        if !seen.insert(s) {
            return Some(k.line);
        }
    }
    None
}

/// A tag written out in full, as libyaml resolves it (`!!int` is `tag:yaml.org,2002:int`).
pub(crate) fn full_tag(t: &Tag) -> String {
    format!("{}{}", t.handle, t.suffix)
}

/// How `serde_yaml_ng` shows a local tag `!…`.
pub(crate) fn show_tag(full: &str) -> String {
    let unbang = |s: &'_ str| -> String {
        match s.strip_prefix('!') {
            Some("") | None => s.to_string(),
            Some(rest) => rest.to_string(),
        }
    };
    format!("!{}", unbang(&unbang(full)))
}
