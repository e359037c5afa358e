//! Between the three ways of naming a place in a config file: a dotted key path
//! (`route[1].fanout.call[0].timeout`), a byte span in the text, and a 1-based line and column.
//!
//! Serde errors come with a span and need a key; validation errors come with a key and need a
//! span. Both go through the document as toml parsed it ([`DeTable`]), whose keys and values keep
//! their spans. (A `[table]` header's span covers the header only, not the keys below it.)

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted key path as users read it: `upstream[0].endpoints[1]` (TOML key names, 0-based indices).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The document root (an empty path).
    pub(super) fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path followed by table key `key`.
    pub(super) fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    /// This path followed by array index `i`.
    pub(super) fn index(&self, i: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        KeyPath(segs)
    }

    pub(super) fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The span of the value at `path` (for a `[table]`, its header). If the path runs past what the
/// file spells out (a default was used), the span of the deepest part that is written; `None` only
/// when not even the first key is in the file.
pub(super) fn span_of(doc: &DeTable<'_>, path: &KeyPath) -> Option<Range<usize>> {
    let mut found: Option<Range<usize>> = None;
    let mut here: Option<&DeValue<'_>> = None;
    for seg in &path.0 {
        let next: Option<&Spanned<DeValue<'_>>> = match (seg, here) {
            (Seg::Key(k), None) => lookup(doc, k),
            (Seg::Key(k), Some(DeValue::Table(t))) => lookup(t, k),
            (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        found = Some(next.span());
        here = Some(next.get_ref());
    }
    found
}

fn lookup<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// The key path of the most specific key or value whose span contains `offset` (an error toml
/// reported there). `None` when no key or value does (e.g. an error about the whole document).
pub(super) fn path_at(doc: &DeTable<'_>, offset: usize) -> Option<KeyPath> {
    let mut best: Option<(usize, KeyPath)> = None;
    search_table(doc, offset, &KeyPath::root(), &mut best);
    best.map(|(_, path)| path)
}

/// Depth-first over every key and value (tables' spans do not cover their contents, so every
/// branch is searched); keeps the narrowest span containing `offset`, the deeper one on a tie.
fn search_table(
    table: &DeTable<'_>,
    offset: usize,
    at: &KeyPath,
    best: &mut Option<(usize, KeyPath)>,
) {
    for (k, v) in table.iter() {
        let path = at.key(k.get_ref());
        consider(k.span(), offset, &path, best);
        search_value(v, offset, &path, best);
    }
}

fn search_value(
    v: &Spanned<DeValue<'_>>,
    offset: usize,
    path: &KeyPath,
    best: &mut Option<(usize, KeyPath)>,
) {
    consider(v.span(), offset, path, best);
    match v.get_ref() {
        DeValue::Table(t) => search_table(t, offset, path, best),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                search_value(e, offset, &path.index(i), best);
            }
        }
        _ => {}
    }
}

fn consider(
    span: Range<usize>,
    offset: usize,
    path: &KeyPath,
    best: &mut Option<(usize, KeyPath)>,
) {
    if !(span.start <= offset && offset < span.end.max(span.start + 1)) {
        return;
    }
    let width = span.len();
    match best {
        Some((w, _)) if *w < width => {}
        _ => *best = Some((width, path.clone())),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_displays_like_users_write_it() {
        let p = KeyPath::root()
            .key("route")
            .index(1)
            .key("fanout")
            .key("call")
            .index(0)
            .key("timeout");
        assert_eq!(p.to_string(), "route[1].fanout.call[0].timeout");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // `=` after the two-byte `é`: byte 10, column 4.
        assert_eq!(line_col(text, 10), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn span_and_path_agree() {
        let text = "[[u]]\nname = \"a\"\ne = [\"x\", \"y\"]\npool = { max = 1 }\n";
        let doc = DeTable::parse(text).unwrap();
        let doc = doc.get_ref();
        let p = KeyPath::root().key("u").index(0).key("e").index(1);
        let span = span_of(doc, &p).unwrap();
        assert_eq!(&text[span.clone()], "\"y\"");
        assert_eq!(path_at(doc, span.start), Some(p));
        let inner = KeyPath::root().key("u").index(0).key("pool").key("max");
        let span = span_of(doc, &inner).unwrap();
        assert_eq!(&text[span.clone()], "1");
        assert_eq!(path_at(doc, span.start), Some(inner));
        // A key the file does not spell out falls back to its deepest written ancestor.
        let missing = KeyPath::root().key("u").index(0).key("health").key("x");
        assert_eq!(&text[span_of(doc, &missing).unwrap()], "[[u]]");
    }
}
