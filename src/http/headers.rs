//! Field lines stored as ranges into the head, and the per-head facts the framing rules need.
//!
//! A parsed head keeps its bytes as one `Bytes`; each field line is a [`HeaderRange`] (four
//! integers) into it, so parsing allocates one `Vec` per head and nothing per field. The facts
//! (Host, Content-Length, Transfer-Encoding, Connection options, Upgrade, Expect) are gathered in
//! the same single pass over the fields, so no accessor re-scans the head.

use super::error::ErrorKind;

/// A byte range into a head's bytes. Heads are bounded by `max_head_bytes`, far below `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, which must be a subslice of `base`.
    pub fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        debug_assert!(start + part.len() <= base.len());
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub fn get(self, base: &[u8]) -> &[u8] {
        &base[self.start as usize..self.end as usize]
    }
}

/// One field line: name and value (OWS trimmed) as ranges into the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderRange {
    pub name: Span,
    pub value: Span,
}

/// A head's field ranges, in a `Vec` recycled through a per-thread free list: parsing a head
/// allocates nothing in steady state, and a head stays small (inline storage would be paid in
/// every connection task's state, idle ones included).
#[derive(Debug, Default)]
pub(crate) struct HeaderRanges(Vec<HeaderRange>);

/// Most spare range lists a thread keeps, and the largest kept (fields).
const MAX_SPARE_RANGES: usize = 256;
const MAX_KEPT_FIELDS: usize = 128;

thread_local! {
    static SPARE_RANGES: std::cell::RefCell<Vec<Vec<HeaderRange>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl HeaderRanges {
    /// An empty list, a spare one if the thread has any.
    pub(crate) fn new() -> HeaderRanges {
        let v = SPARE_RANGES
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        HeaderRanges(v)
    }

    pub(crate) fn reserve_exact(&mut self, n: usize) {
        self.0.reserve_exact(n);
    }

    pub(crate) fn push(&mut self, r: HeaderRange) {
        self.0.push(r);
    }
}

impl std::ops::Deref for HeaderRanges {
    type Target = [HeaderRange];
    fn deref(&self) -> &[HeaderRange] {
        &self.0
    }
}

impl PartialEq for HeaderRanges {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Clone for HeaderRanges {
    fn clone(&self) -> Self {
        let mut c = HeaderRanges::new();
        c.0.extend_from_slice(&self.0);
        c
    }
}

impl Drop for HeaderRanges {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        if v.capacity() == 0 || v.capacity() > MAX_KEPT_FIELDS {
            return;
        }
        v.clear();
        // At thread exit the list may be gone: the Vec is simply freed then.
        let _ = SPARE_RANGES.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_SPARE_RANGES {
                s.push(v);
            }
        });
    }
}

/// Iterator over a head's field lines as `(name, value)` byte slices, in wire order.
///
/// Names keep the case they were sent in; compare with `eq_ignore_ascii_case`.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    pub(crate) head: &'a [u8],
    pub(crate) ranges: std::slice::Iter<'a, HeaderRange>,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.ranges.next()?;
        Some((r.name.get(self.head), r.value.get(self.head)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ranges.size_hint()
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// First value of the field `name` (case-insensitive).
pub(crate) fn find<'a>(head: &'a [u8], ranges: &[HeaderRange], name: &[u8]) -> Option<&'a [u8]> {
    ranges
        .iter()
        .find(|r| r.name.get(head).eq_ignore_ascii_case(name))
        .map(|r| r.value.get(head))
}

/// `tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// `token = 1*tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A byte allowed in a field value: VCHAR, obs-text, SP, HTAB (RFC 9110 §5.5).
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Strips optional whitespace (SP / HTAB) from both ends (RFC 9110 §5.6.3).
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The non-empty elements of a comma-separated list, trimmed (RFC 9110 §5.6.1: empty elements
/// are ignored by recipients).
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// What the Transfer-Encoding field lines say, across all lines in order (RFC 9112 §6.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TransferCodings {
    /// How many codings were listed.
    pub count: u32,
    /// How many of them were `chunked`.
    pub chunked: u32,
    /// Whether the last one is `chunked`.
    pub chunked_last: bool,
    /// A listed coding ringway does not know.
    pub unknown: bool,
    /// An element that is not a bare token (parameters, quotes, spaces).
    pub malformed: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        for coding in list(value) {
            self.count += 1;
            if !is_token(coding) {
                self.malformed = true;
                self.chunked_last = false;
                continue;
            }
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked += u32::from(chunked);
            self.chunked_last = chunked;
            // RFC 9112 §7 and the IANA registry: the codings a transfer may carry.
            const KNOWN: [&[u8]; 6] = [
                b"gzip",
                b"x-gzip",
                b"deflate",
                b"compress",
                b"x-compress",
                b"chunked",
            ];
            if !KNOWN.iter().any(|k| coding.eq_ignore_ascii_case(k)) {
                self.unknown = true;
            }
        }
    }

    /// `true` when the codings are exactly `chunked` (nothing to preserve when re-framing).
    pub fn only_chunked(&self) -> bool {
        self.count == 1 && self.chunked == 1
    }
}

/// Facts about a head gathered in the one pass that records its field ranges.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Facts {
    pub host: Option<Span>,
    pub host_count: u32,
    /// Validated Content-Length (equal values collapsed), if any line was present.
    pub content_length: Option<u64>,
    pub transfer_encoding: Option<TransferCodings>,
    pub conn_close: bool,
    pub conn_keep_alive: bool,
    pub conn_upgrade: bool,
    /// Connection names a field other than close / keep-alive / upgrade.
    pub conn_other: bool,
    pub upgrade: Option<Span>,
    pub expect_continue: bool,
    pub content_type: Option<Span>,
    pub keep_alive_param: Option<Span>,
}

/// Parses one Content-Length field value and merges it into `acc` (RFC 9110 §8.6, RFC 9112 §6.3
/// item 5): each list element must be 1*DIGIT without sign or inner space and fit u64; all values
/// across all lines must be equal.
fn merge_content_length(acc: &mut Option<u64>, value: &[u8]) -> Result<(), ErrorKind> {
    let mut any = false;
    for element in value.split(|&b| b == b',') {
        let digits = trim_ows(element);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ErrorKind::InvalidContentLength);
        }
        let mut n: u64 = 0;
        for &d in digits {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(ErrorKind::InvalidContentLength)?;
        }
        match *acc {
            Some(prev) if prev != n => return Err(ErrorKind::ConflictingContentLength),
            _ => *acc = Some(n),
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(ErrorKind::InvalidContentLength)
    }
}

/// Records the field ranges of a parsed head into `out` and gathers its [`Facts`].
///
/// `base` is the head, `fields` httparse's view of it.
pub(crate) fn collect(
    base: &[u8],
    fields: &[httparse::Header<'_>],
    out: &mut HeaderRanges,
) -> Result<Facts, ErrorKind> {
    let mut facts = Facts::default();
    out.reserve_exact(fields.len());
    for f in fields {
        let name = f.name.as_bytes();
        let value = f.value;
        // httparse allows obs-text and HTAB; it already rejected NUL, CR, LF and other CTLs.
        // Leading OWS is trimmed by httparse, trailing OWS too.
        let range = HeaderRange {
            name: Span::of(base, name),
            value: Span::of(base, value),
        };
        out.push(range);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                facts.host_count += 1;
                facts.host = Some(range.value);
            }
            6 if name.eq_ignore_ascii_case(b"expect")
                && value.eq_ignore_ascii_case(b"100-continue") =>
            {
                facts.expect_continue = true;
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => facts.upgrade = Some(range.value),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for option in list(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        facts.conn_close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        facts.conn_keep_alive = true;
                    } else if option.eq_ignore_ascii_case(b"upgrade") {
                        facts.conn_upgrade = true;
                    } else {
                        facts.conn_other = true;
                    }
                }
            }
            10 if name.eq_ignore_ascii_case(b"keep-alive") => {
                facts.keep_alive_param = Some(range.value)
            }
            12 if facts.content_type.is_none() && name.eq_ignore_ascii_case(b"content-type") => {
                facts.content_type = Some(range.value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                merge_content_length(&mut facts.content_length, value)?;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                facts
                    .transfer_encoding
                    .get_or_insert_with(TransferCodings::default)
                    .add(value);
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Whether some Connection field of the head lists `name` as a connection option (RFC 9110 §7.6.1).
pub(crate) fn connection_lists(head: &[u8], ranges: &[HeaderRange], name: &[u8]) -> bool {
    ranges
        .iter()
        .filter(|r| r.name.get(head).eq_ignore_ascii_case(b"connection"))
        .any(|r| list(r.value.get(head)).any(|o| o.eq_ignore_ascii_case(name)))
}

/// Maps an httparse error to ours. Distinctions httparse does not make (whitespace before the
/// colon, 505 versions) are made by the caller, which can look at the bytes.
pub(crate) fn from_httparse(e: httparse::Error) -> ErrorKind {
    match e {
        httparse::Error::HeaderName => ErrorKind::InvalidHeaderName,
        httparse::Error::HeaderValue => ErrorKind::InvalidHeaderValue,
        httparse::Error::NewLine => ErrorKind::InvalidNewline,
        httparse::Error::Status => ErrorKind::InvalidStatus,
        httparse::Error::Token => ErrorKind::InvalidTarget,
        httparse::Error::TooManyHeaders => ErrorKind::TooManyHeaders,
        httparse::Error::Version => ErrorKind::InvalidVersion,
    }
}

/// On an httparse header-name error, tells whether the cause is whitespace before a colon
/// (RFC 9112 §5.1), for a precise reason. Error path only.
pub(crate) fn has_whitespace_before_colon(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        let name = match memchr::memchr(b':', line) {
            Some(c) => &line[..c],
            None => return false,
        };
        matches!(name.last(), Some(b' ' | b'\t')) && is_token(trim_ows(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_rules_rfc9110_8_6() {
        let cl = |v: &[u8]| {
            let mut acc = None;
            merge_content_length(&mut acc, v).map(|()| acc.unwrap())
        };
        assert_eq!(cl(b"0"), Ok(0));
        assert_eq!(cl(b"007"), Ok(7));
        assert_eq!(cl(b"5, 5"), Ok(5));
        assert_eq!(cl(b"5,5 ,5"), Ok(5));
        assert_eq!(cl(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            cl(b"18446744073709551616"),
            Err(ErrorKind::InvalidContentLength)
        );
        assert_eq!(cl(b"5, 6"), Err(ErrorKind::ConflictingContentLength));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"0x5",
            b"5 5",
            b"5,",
            b",5",
            b"5,,5",
            b" ",
            b"1e3",
            b"a",
        ] {
            assert_eq!(
                cl(bad),
                Err(ErrorKind::InvalidContentLength),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transfer_codings_rfc9112_6_1() {
        let te = |v: &[u8]| {
            let mut t = TransferCodings::default();
            t.add(v);
            t
        };
        assert!(te(b"chunked").only_chunked());
        assert!(te(b"CHUNKED").chunked_last);
        assert!(te(b"gzip, chunked").chunked_last);
        assert!(!te(b"chunked, gzip").chunked_last);
        assert_eq!(te(b"chunked, chunked").chunked, 2);
        assert!(te(b"foo, chunked").unknown);
        assert!(te(b"chunked;x=1").malformed);
        assert_eq!(te(b" , ").count, 0);
    }

    #[test]
    fn ows_and_lists() {
        assert_eq!(trim_ows(b" \ta b\t "), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(
            list(b"a, ,b ,c").collect::<Vec<_>>(),
            vec![&b"a"[..], b"b", b"c"]
        );
    }
}
