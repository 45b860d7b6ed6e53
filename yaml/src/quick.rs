//! A fast reader for the plain subset of YAML that graph files are written in: block mappings
//! and sequences indented with spaces, flow collections and quoted scalars on one line, one-line
//! plain scalars, comments. It gives the events (and lines) that `saphyr-parser` gives for the
//! same text, at several times its speed, and gives up at the first thing outside that subset
//! (anchors, tags, block scalars, multi-line scalars or flow collections, tabs, document
//! markers, escapes other than the simple ones, ...): the caller then reads the text again with
//! `saphyr-parser`. Giving up is always allowed, so this reader stays strict: whatever it is
//! unsure of, it leaves to the full parser.

use std::borrow::Cow;
use std::collections::VecDeque;

use saphyr_parser::{Event, ScalarStyle};

/// Flow collections may nest this deep on one line before the reader gives up.
const MAX_FLOW_DEPTH: usize = 32;

/// An open block collection.
#[derive(Clone, Copy)]
struct Block {
    seq: bool,
    indent: usize,
}

/// The fast reader; `next` yields events and their 1-based lines, `None` when it gives up.
pub(crate) struct Quick<'a> {
    text: &'a str,
    /// Byte offset of the next line to read.
    pos: usize,
    /// Line number of the next line to read.
    line: usize,
    queue: VecDeque<(Event<'a>, usize)>,
    blocks: Vec<Block>,
    /// A key or a `-` waits for its value, which may start on a later line (the line of the key
    /// or `-`: an empty value is there).
    pending: Option<usize>,
    /// The document has started (its root collection is open or was).
    started: bool,
    done: bool,
}

impl<'a> Quick<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut queue = VecDeque::with_capacity(16);
        queue.push_back((Event::StreamStart, 1));
        Quick {
            text,
            pos: 0,
            line: 1,
            queue,
            blocks: Vec::new(),
            pending: None,
            started: false,
            done: text.starts_with('\u{feff}'),
        }
    }

    /// The next event and its line; `None` when the reader gives up (or after the stream).
    pub(crate) fn next(&mut self) -> Option<(Event<'a>, usize)> {
        while self.queue.is_empty() {
            if self.done {
                return None;
            }
            if self.pos >= self.text.len() {
                self.finish();
                continue;
            }
            let rest = &self.text[self.pos..];
            let len = rest.find('\n').unwrap_or(rest.len());
            let raw = &rest[..len];
            self.pos += len + 1;
            let line = self.line;
            self.line += 1;
            if self.read_line(raw, line).is_none() {
                self.done = true;
                return None;
            }
        }
        self.queue.pop_front()
    }

    fn push(&mut self, event: Event<'a>, line: usize) {
        self.queue.push_back((event, line));
    }

    fn scalar(&mut self, s: Cow<'a, str>, style: ScalarStyle, line: usize) {
        self.push(Event::Scalar(s, style, 0, None), line);
    }

    /// Ends the stream: the value a key or `-` still waits for is empty.
    fn finish(&mut self) {
        let line = self.line;
        if let Some(at) = self.pending.take() {
            self.scalar(Cow::Borrowed(""), ScalarStyle::Plain, at);
        }
        while let Some(b) = self.blocks.pop() {
            self.push(end(b), line);
        }
        if self.started {
            self.push(Event::DocumentEnd, line);
        }
        self.push(Event::StreamEnd, line);
        self.done = true;
    }

    fn read_line(&mut self, raw: &'a str, line: usize) -> Option<()> {
        if raw.bytes().any(|b| b == b'\t' || b == b'\r') {
            return None;
        }
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            return Some(());
        }
        if indent == 0 && (body.starts_with("---") || body.starts_with("...")) {
            return None;
        }
        let item = is_item(body);
        if let Some(at) = self.pending.take() {
            let top = *self.blocks.last()?;
            if indent > top.indent || (!top.seq && indent == top.indent && item) {
                self.open(item, indent, line);
                return self.entry(body, indent, line);
            }
            self.scalar(Cow::Borrowed(""), ScalarStyle::Plain, at);
        }
        while let Some(&top) = self.blocks.last() {
            if top.indent > indent || (top.seq && top.indent == indent && !item) {
                self.blocks.pop();
                self.push(end(top), line);
            } else {
                break;
            }
        }
        match self.blocks.last() {
            None if !self.started => {
                self.started = true;
                self.push(Event::DocumentStart(false), line);
                self.open(item, indent, line);
            }
            Some(top) if top.indent == indent && top.seq == item => {}
            _ => return None,
        }
        self.entry(body, indent, line)
    }

    fn open(&mut self, seq: bool, indent: usize, line: usize) {
        self.blocks.push(Block { seq, indent });
        let event = if seq {
            Event::SequenceStart(0, None)
        } else {
            Event::MappingStart(0, None)
        };
        self.push(event, line);
    }

    /// Reads an entry of the innermost block (a `- item` or a `key: value`) at column `col`.
    fn entry(&mut self, body: &'a str, col: usize, line: usize) -> Option<()> {
        if !self.blocks.last()?.seq {
            return self.map_entry(body, line);
        }
        let rest = &body[1..];
        let item = rest.trim_start_matches(' ');
        if item.is_empty() || item.starts_with('#') {
            self.pending = Some(line);
            return Some(());
        }
        if is_item(item) {
            return None;
        }
        let col = col + 1 + (rest.len() - item.len());
        if split_key(item)?.is_some() {
            self.open(false, col, line);
            return self.map_entry(item, line);
        }
        self.block_value(item, line)
    }

    fn map_entry(&mut self, body: &'a str, line: usize) -> Option<()> {
        let (key, style, after) = split_key(body)?.filter(|(k, _, _)| !k.is_empty())?;
        self.scalar(key, style, line);
        let value = after.trim_start_matches(' ');
        if value.is_empty() || value.starts_with('#') {
            self.pending = Some(line);
            return Some(());
        }
        self.block_value(value, line)
    }

    /// The indentation of the next line with content (not blank, not a comment).
    fn next_indent(&self) -> Option<usize> {
        self.text[self.pos.min(self.text.len())..]
            .split('\n')
            .map(|l| {
                (
                    l.len() - l.trim_start_matches(' ').len(),
                    l.trim_start_matches(' '),
                )
            })
            .find(|(_, body)| !body.is_empty() && !body.starts_with('#'))
            .map(|(indent, _)| indent)
    }

    /// Reads a value that starts in block context and must end on this line.
    fn block_value(&mut self, s: &'a str, line: usize) -> Option<()> {
        // A more indented line next would continue the value (or be an error): left to saphyr.
        let top = self.blocks.last()?.indent;
        if self.next_indent().is_some_and(|n| n > top) {
            return None;
        }
        let mut i = 0;
        match s.as_bytes()[0] {
            // A collection or a quoted scalar reads as in flow context.
            b'[' | b'{' | b'"' | b'\'' => self.flow(s, &mut i, line, 0)?,
            _ => {
                let v = plain_block(s)?;
                if v.contains(": ") || v.ends_with(':') {
                    return None;
                }
                self.scalar(Cow::Borrowed(v), ScalarStyle::Plain, line);
                return Some(());
            }
        }
        rest_is_blank(&s[i..]).then_some(())
    }

    /// Reads the comma-separated entries of the flow collection whose opening bracket is at
    /// `s[*i]`, up to its `close` bracket, each with `entry`; moves `i` past the collection.
    fn flow_entries(
        &mut self,
        s: &'a str,
        i: &mut usize,
        close: u8,
        mut entry: impl FnMut(&mut Self, &mut usize) -> Option<()>,
    ) -> Option<()> {
        let b = s.as_bytes();
        *i += 1;
        skip_spaces(s, i);
        if b.get(*i) != Some(&close) {
            loop {
                entry(self, i)?;
                skip_spaces(s, i);
                match *b.get(*i)? {
                    b',' => {
                        *i += 1;
                        skip_spaces(s, i);
                    }
                    c if c == close => break,
                    _ => return None,
                }
            }
        }
        *i += 1;
        Some(())
    }

    /// Reads a flow node at `s[*i..]`, all on this line.
    fn flow(&mut self, s: &'a str, i: &mut usize, line: usize, depth: usize) -> Option<()> {
        let b = s.as_bytes();
        match b.get(*i)? {
            b'[' | b'{' if depth >= MAX_FLOW_DEPTH => None,
            b'[' => {
                self.push(Event::SequenceStart(0, None), line);
                self.flow_entries(s, i, b']', |me, i| me.flow(s, i, line, depth + 1))?;
                self.push(Event::SequenceEnd, line);
                Some(())
            }
            b'{' => {
                self.push(Event::MappingStart(0, None), line);
                self.flow_entries(s, i, b'}', |me, i| {
                    // (A collection as a key is left to saphyr.)
                    if matches!(b.get(*i)?, b'[' | b'{') {
                        return None;
                    }
                    me.flow(s, i, line, depth + 1)?;
                    if b.get(*i) != Some(&b':') || b.get(*i + 1) != Some(&b' ') {
                        return None;
                    }
                    *i += 2;
                    skip_spaces(s, i);
                    me.flow(s, i, line, depth + 1)
                })?;
                self.push(Event::MappingEnd, line);
                Some(())
            }
            b'"' => {
                let v = double_quoted(s, i)?;
                self.scalar(v, ScalarStyle::DoubleQuoted, line);
                Some(())
            }
            b'\'' => {
                let v = single_quoted(s, i)?;
                self.scalar(v, ScalarStyle::SingleQuoted, line);
                Some(())
            }
            _ => {
                let start = *i;
                if !plain_start(&s[start..]) {
                    return None;
                }
                let len = s[start..]
                    .find([',', '[', ']', '{', '}', ':', '#'])
                    .unwrap_or(s.len() - start);
                let v = s[start..start + len].trim_end_matches(' ');
                if v.is_empty() || matches!(b.get(start + len), None | Some(b'#' | b'[' | b'{')) {
                    return None;
                }
                // A `:` ends the scalar only as `: ` (a key); anything else is left to saphyr.
                if b[start + len] == b':' && b.get(start + len + 1) != Some(&b' ') {
                    return None;
                }
                *i = start + v.len();
                self.scalar(Cow::Borrowed(v), ScalarStyle::Plain, line);
                Some(())
            }
        }
    }
}

fn end(b: Block) -> Event<'static> {
    if b.seq {
        Event::SequenceEnd
    } else {
        Event::MappingEnd
    }
}

/// Whether a line's content is a block sequence entry.
fn is_item(body: &str) -> bool {
    body == "-" || body.starts_with("- ")
}

fn skip_spaces(s: &str, i: &mut usize) {
    while s.as_bytes().get(*i) == Some(&b' ') {
        *i += 1;
    }
}

/// Whether what follows a value on its line is nothing but spaces and a comment.
fn rest_is_blank(rest: &str) -> bool {
    let t = rest.trim_start_matches(' ');
    t.is_empty() || (t.len() < rest.len() && t.starts_with('#'))
}

/// Whether a plain scalar may start with the text `s` (in this reader's subset).
fn plain_start(s: &str) -> bool {
    match s.as_bytes().first() {
        None => false,
        // (`-` before a flow indicator is refused in flow context: left to saphyr anywhere.)
        Some(b'-') => !matches!(
            s.as_bytes().get(1),
            None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')
        ),
        Some(c) => !b"?:,[]{}#&*!|>'\"%@`".contains(c),
    }
}

/// A plain scalar in block context running to the end of the line (or to a comment), trailing
/// spaces off.
fn plain_block(s: &str) -> Option<&str> {
    if !plain_start(s) {
        return None;
    }
    let end = s.find(" #").unwrap_or(s.len());
    Some(s[..end].trim_end_matches(' '))
}

/// Splits a block mapping entry `key: rest` (or `key:` ending the line). `Some(None)`: the text
/// is no entry (a plain value); `None`: the reader gives up.
#[allow(clippy::type_complexity)]
fn split_key(s: &str) -> Option<Option<(Cow<'_, str>, ScalarStyle, &str)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let (key, style) = match b[0] {
        b'"' => (double_quoted(s, &mut i)?, ScalarStyle::DoubleQuoted),
        b'\'' => (single_quoted(s, &mut i)?, ScalarStyle::SingleQuoted),
        // A flow collection as a key (`[a]: b`) is left to `block_value`, which gives up on
        // anything after the collection.
        b'[' | b'{' => return Some(None),
        _ => {
            if !plain_start(s) {
                return None;
            }
            let comment = s.find(" #").unwrap_or(s.len());
            let colon = s[..comment]
                .match_indices(':')
                .map(|(at, _)| at)
                .find(|&at| matches!(b.get(at + 1), None | Some(b' ')));
            return Some(colon.map(|at| {
                let key = s[..at].trim_end_matches(' ');
                (Cow::Borrowed(key), ScalarStyle::Plain, &s[at + 1..])
            }));
        }
    };
    skip_spaces(s, &mut i);
    match b.get(i) {
        Some(b':') if matches!(b.get(i + 1), None | Some(b' ')) => {
            Some(Some((key, style, &s[i + 1..])))
        }
        _ => Some(None),
    }
}

/// A one-line double-quoted scalar starting at `s[*i]` (the quote); moves `i` past it.
fn double_quoted<'a>(s: &'a str, i: &mut usize) -> Option<Cow<'a, str>> {
    let start = *i + 1;
    let body = &s[start..];
    let stop = body.find(['"', '\\'])?;
    if body.as_bytes()[stop] == b'"' {
        *i = start + stop + 1;
        return Some(Cow::Borrowed(&body[..stop]));
    }
    let mut out = String::with_capacity(body.len());
    out.push_str(&body[..stop]);
    let mut chars = body[stop..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                *i = start + stop + at + 1;
                return Some(Cow::Owned(out));
            }
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    '0' => '\0',
                    'a' => '\x07',
                    'b' => '\x08',
                    't' => '\t',
                    'n' => '\n',
                    'v' => '\x0b',
                    'f' => '\x0c',
                    'r' => '\r',
                    'e' => '\x1b',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    _ => return None,
                });
            }
            c => out.push(c),
        }
    }
    None
}

/// A one-line single-quoted scalar starting at `s[*i]` (the quote); moves `i` past it.
fn single_quoted<'a>(s: &'a str, i: &mut usize) -> Option<Cow<'a, str>> {
    let start = *i + 1;
    let body = &s[start..];
    let mut out: Option<String> = None;
    let mut from = 0;
    loop {
        let q = from + body[from..].find('\'')?;
        if body.as_bytes().get(q + 1) == Some(&b'\'') {
            out.get_or_insert_with(String::new)
                .push_str(&body[from..=q]);
            from = q + 2;
            continue;
        }
        *i = start + q + 1;
        return Some(match out {
            None => Cow::Borrowed(&body[..q]),
            Some(mut o) => {
                o.push_str(&body[from..q]);
                Cow::Owned(o)
            }
        });
    }
}
