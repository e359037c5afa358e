//! Request heads: parse a client's head in place, strictly (RFC 9112 §3, §5, §6), into a
//! [`RequestHead`] that owns the head bytes and indexes into them.
//!
//! Never allocates per field, never copies the head: on success the head is split off the front
//! of the read buffer (`split_to` + `freeze`) and what remains is body or the next pipelined request.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::error::{ErrorKind, HttpError};
use super::framing::{BodyFraming, request_framing};
use super::headers::{self, Facts, HeaderRange, HeaderRanges, Headers, Span};
use super::normalize::{TargetPolicy, normalize_path};
pub use super::target::TargetForm;
use super::target::{is_valid_host, parse_target};
use super::{HeadScanner, Limits, MAX_HEADERS_CAP, Status, Version};

/// A request method (RFC 9110 §9). Methods are case-sensitive: `get` is [`Method::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// CONNECT
    Connect,
    /// PATCH
    Patch,
    /// TRACE
    Trace,
    /// Any other token; the spelling is [`RequestHead::method_bytes`].
    Other,
}

impl Method {
    /// Classifies a method token.
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"CONNECT" => Method::Connect,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// The method's name, e.g. `b"GET"`. For [`Method::Other`] this is empty: use
    /// [`RequestHead::method_bytes`] for the spelling a client sent.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Method::Get => b"GET",
            Method::Head => b"HEAD",
            Method::Post => b"POST",
            Method::Put => b"PUT",
            Method::Delete => b"DELETE",
            Method::Options => b"OPTIONS",
            Method::Connect => b"CONNECT",
            Method::Patch => b"PATCH",
            Method::Trace => b"TRACE",
            Method::Other => b"",
        }
    }

    /// Idempotent per RFC 9110 §9.2.2: GET, HEAD, PUT, DELETE, OPTIONS, TRACE. Unknown methods are not.
    pub const fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// A parsed request head. Owns the head bytes; every accessor is a slice into them.
#[derive(Debug, Clone)]
pub struct RequestHead {
    bytes: Bytes,
    method: Method,
    method_span: Span,
    target: Span,
    form: TargetForm,
    path: Option<Span>,
    /// The normalized path when it differs from the one sent (rare: a path that is already
    /// normal costs no allocation).
    normalized: Option<Bytes>,
    query: Option<Span>,
    host: Option<Span>,
    version: Version,
    headers: HeaderRanges,
    pub(crate) facts: Facts,
    framing: BodyFraming,
}

impl RequestHead {
    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method as sent, e.g. `b"PROPFIND"`.
    pub fn method_bytes(&self) -> &[u8] {
        self.method_span.get(&self.bytes)
    }

    /// The request-target as sent (for logs: route on [`path`](Self::path), never on this).
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.bytes)
    }

    /// Which form the request-target has.
    pub fn target_form(&self) -> TargetForm {
        self.form
    }

    /// The normalized path without the query (RFC 3986 §6.2.2, see
    /// [`normalize_path`](super::normalize_path)): what ringway routes on and forwards. `/` for an
    /// absolute-form target with an empty path; the whole target for authority-form (CONNECT)
    /// and asterisk-form (`*`), which have no path to normalize.
    pub fn path(&self) -> &[u8] {
        if let Some(p) = &self.normalized {
            return p;
        }
        match (self.path, self.form) {
            (Some(p), _) => p.get(&self.bytes),
            (None, TargetForm::Absolute) => b"/",
            (None, _) => self.target(),
        }
    }

    /// The path as sent, before normalization (for logs).
    pub fn raw_path(&self) -> &[u8] {
        match self.path {
            Some(p) => p.get(&self.bytes),
            None => self.path(),
        }
    }

    /// The query, without the `?`; `Some(b"")` for a target ending in `?`.
    pub fn query(&self) -> Option<&[u8]> {
        self.query.map(|q| q.get(&self.bytes))
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The host the request is for: the absolute-form or authority-form authority if present
    /// (RFC 9112 §3.2.2: it replaces Host), else the Host field; `None` when there is neither or
    /// Host is empty. Includes the port if one was sent.
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|h| h.get(&self.bytes))
    }

    /// The field lines, in wire order.
    pub fn headers(&self) -> Headers<'_> {
        Headers {
            head: &self.bytes,
            ranges: self.headers.iter(),
        }
    }

    /// The first value of field `name` (case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        headers::find(&self.bytes, &self.headers, name)
    }

    /// How the body is delimited.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// The validated Content-Length, if sent (equal duplicates collapsed).
    pub fn content_length(&self) -> Option<u64> {
        self.facts.content_length
    }

    /// Whether the client wants the connection kept open after this exchange (RFC 9112 §9.3):
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.facts.conn_close,
            Version::Http10 => self.facts.conn_keep_alive && !self.facts.conn_close,
        }
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1: never 100 to HTTP/1.0).
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11 && self.facts.expect_continue
    }

    /// The Upgrade field value when the client asks to switch protocols (`Connection: upgrade`
    /// and `Upgrade: ...` on HTTP/1.1; RFC 9110 §7.8 says to ignore Upgrade on HTTP/1.0).
    pub fn upgrade(&self) -> Option<&[u8]> {
        if self.version == Version::Http11 && self.facts.conn_upgrade {
            self.facts.upgrade.map(|u| u.get(&self.bytes))
        } else {
            None
        }
    }

    /// Idempotent method (RFC 9110 §9.2.2): a failed attempt may be retried.
    pub fn is_idempotent(&self) -> bool {
        self.method.is_idempotent()
    }

    /// The head bytes, start line through the blank line, as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(crate) fn ranges(&self) -> &[HeaderRange] {
        &self.headers
    }
}

/// Parses a request head from the front of `buf`.
///
/// Returns [`Status::Partial`] until the blank line ending the head has arrived; the `scan` state
/// makes each call look only at the new bytes for the end of the head. On
/// [`Status::Complete`], the head (through the blank line) has been split off the front of
/// `buf` without copying, and `buf` holds what follows: body bytes or the next pipelined request.
/// Empty lines before the request line are dropped (RFC 9112 §2.2). The path is normalized with
/// the default [`TargetPolicy`] (see [`parse_request_head_with`]).
///
/// # Errors
///
/// Any violation of RFC 9112's request grammar or framing rules, with the status to answer in
/// [`HttpError::status`] (400, 414, 431, 501, 505). The connection must then be closed.
pub fn parse_request_head(
    buf: &mut BytesMut,
    scan: &mut HeadScanner,
    limits: &Limits,
) -> Result<Status<RequestHead>, HttpError> {
    parse_request_head_with(buf, scan, limits, &TargetPolicy::default())
}

/// As [`parse_request_head`], normalizing the path (origin and absolute form) under `policy`:
/// [`RequestHead::path`] is then the normalized path, the one to route on and forward.
///
/// # Errors
///
/// As [`parse_request_head`], plus the normalization errors of
/// [`normalize_path`](super::normalize_path) (400).
pub fn parse_request_head_with(
    buf: &mut BytesMut,
    scan: &mut HeadScanner,
    limits: &Limits,
    policy: &TargetPolicy,
) -> Result<Status<RequestHead>, HttpError> {
    let Some(end) = scan.find_end(buf, limits).map_err(HttpError::client)? else {
        return Ok(Status::Partial);
    };
    scan.reset();
    let mut head = parse_in_place(&buf[..end], limits, policy).map_err(HttpError::client)?;
    head.bytes = buf.split_to(end).freeze();
    Ok(Status::Complete(head))
}

fn parse_in_place(
    head: &[u8],
    limits: &Limits,
    policy: &TargetPolicy,
) -> Result<RequestHead, ErrorKind> {
    let mut scratch = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let max = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut scratch[..max]) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(ErrorKind::InvalidNewline),
        Err(e) => return Err(diagnose(head, e)),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(ErrorKind::InvalidNewline);
    };
    let version = Version::from_minor(minor);
    let method_span = Span::of(head, method.as_bytes());
    let method = Method::from_bytes(method.as_bytes());
    let target_span = Span::of(head, target.as_bytes());
    let parts = parse_target(target.as_bytes())?;
    // RFC 9112 §3.2.3, §3.2.4, RFC 9110 §9.3.6: CONNECT takes authority-form and only it; `*` is
    // for server-wide OPTIONS only.
    let form_ok = match parts.form {
        TargetForm::Authority => method == Method::Connect,
        TargetForm::Asterisk => method == Method::Options,
        TargetForm::Origin | TargetForm::Absolute => method != Method::Connect,
    };
    if !form_ok {
        return Err(ErrorKind::TargetFormNotAllowed);
    }
    let at = |(s, e): (usize, usize)| Span {
        start: target_span.start + s as u32,
        end: target_span.start + e as u32,
    };
    let normalized = match parts.path.map(at) {
        Some(p) => match normalize_path(p.get(head), policy)? {
            Cow::Borrowed(_) => None,
            Cow::Owned(n) => Some(Bytes::from(n)),
        },
        None => None,
    };

    let mut ranges = HeaderRanges::new();
    let facts = headers::collect(head, req.headers, &mut ranges)?;
    // RFC 9112 §3.2: 400 for a missing Host on HTTP/1.1, several Host lines, or an invalid one.
    if facts.host_count > 1 {
        return Err(ErrorKind::MultipleHost);
    }
    if facts.host_count == 0 && version == Version::Http11 {
        return Err(ErrorKind::MissingHost);
    }
    let host_field = facts.host.filter(|h| h.start != h.end);
    if let Some(h) = host_field
        && !is_valid_host(h.get(head))
    {
        return Err(ErrorKind::InvalidHost);
    }
    let host = parts.authority.map(at).or(host_field);
    let framing = request_framing(version, &facts)?;

    Ok(RequestHead {
        bytes: Bytes::new(),
        method,
        method_span,
        target: target_span,
        form: parts.form,
        path: parts.path.map(at),
        normalized,
        query: parts.query.map(at),
        host,
        version,
        headers: ranges,
        facts,
        framing,
    })
}

/// Refines an httparse error by looking at the bytes (error path only).
fn diagnose(head: &[u8], e: httparse::Error) -> ErrorKind {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    // RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT; well-formed but other than 1.0/1.1 → 505.
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match e {
        httparse::Error::Version | httparse::Error::NewLine
            if version != b"HTTP/1.0" && version != b"HTTP/1.1" =>
        {
            match version {
                [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                    if major.is_ascii_digit() && minor.is_ascii_digit() =>
                {
                    ErrorKind::VersionNotSupported
                }
                _ => ErrorKind::InvalidVersion,
            }
        }
        httparse::Error::Token => {
            let method = line.split(|&b| b == b' ').next().unwrap_or_default();
            if headers::is_token(method) {
                ErrorKind::InvalidTarget
            } else {
                ErrorKind::InvalidMethod
            }
        }
        httparse::Error::HeaderName if headers::has_whitespace_before_colon(head) => {
            ErrorKind::WhitespaceBeforeColon
        }
        e => headers::from_httparse(e),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
