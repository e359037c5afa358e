//! Response heads: parse a backend's head in place (RFC 9112 §4, §6.3) into a [`ResponseHead`].
//!
//! Everything wrong in a backend's bytes is an [`HttpError`] on the upstream side (502 for the
//! client); the backend connection must then be closed, never pooled. Same zero-copy rules as
//! requests: the head is split off the read buffer, fields are ranges into it.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::error::{ErrorKind, HttpError};
use super::framing::{BodyFraming, response_framing};
use super::headers::{self, Facts, HeaderRange, HeaderRanges, Headers, Span, list, trim_ows};
use super::{HeadScanner, Limits, MAX_HEADERS_CAP, Method, Status, Version};

/// Most interim (1xx) heads accepted before a final response, for proxied requests and fan-out
/// calls alike: a backend sending endless interim responses is broken (502), not something to
/// wait on or relay forever.
pub const MAX_INTERIM_HEADS: usize = 16;

/// What the gateway does with a response head before the final one (RFC 9110 §15.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interim {
    /// Not 1xx: the final response.
    Final,
    /// Forward this 1xx (e.g. 100, 103) to the client, then read the next head.
    Forward,
    /// Drop this 1xx and read the next head: the client is HTTP/1.0 (RFC 9110 §15.2: never send
    /// it 1xx), or it is a 100 the gateway already sent itself.
    Skip,
    /// 101 after the client asked to upgrade: forward it, then tunnel bytes both ways.
    SwitchProtocols,
    /// 101 the client did not ask for: a broken backend (answer 502).
    Unexpected,
}

/// A parsed response head. Owns the head bytes; every accessor is a slice into them.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    bytes: Bytes,
    version: Version,
    status: u16,
    reason: Span,
    headers: HeaderRanges,
    pub(crate) facts: Facts,
    framing: BodyFraming,
    request_method: Method,
}

impl ResponseHead {
    /// The status code, 100..=599.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent (may be empty).
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.bytes)
    }

    /// The backend's protocol version.
    pub fn version(&self) -> Version {
        self.version
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

    /// How the body is delimited (RFC 9112 §6.3): `Empty` for a HEAD request, 1xx, 204, 304 and
    /// a 2xx to CONNECT; then chunked, Content-Length, or until close.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// The validated Content-Length, if sent (also for HEAD and 304 responses, where it describes
    /// the representation rather than this message).
    pub fn content_length(&self) -> Option<u64> {
        self.facts.content_length
    }

    /// Whether the backend connection can be reused after this response: not with
    /// `Connection: close`, not HTTP/1.0 without `Connection: keep-alive`, not for an until-close
    /// body, not after 101 or a 2xx to CONNECT (the connection became a tunnel).
    pub fn keep_alive(&self) -> bool {
        let asked = match self.version {
            Version::Http11 => !self.facts.conn_close,
            Version::Http10 => self.facts.conn_keep_alive && !self.facts.conn_close,
        };
        let tunnel = self.status == 101
            || (self.request_method == Method::Connect && (200..300).contains(&self.status));
        asked && !tunnel && self.framing != BodyFraming::UntilClose
    }

    /// `Keep-Alive: timeout=N` in seconds, the backend's idle timeout hint (RFC 2068 §19.7.1.1).
    pub fn keep_alive_timeout(&self) -> Option<u64> {
        let value = self.facts.keep_alive_param?.get(&self.bytes);
        list(value).find_map(|param| {
            let eq = memchr::memchr(b'=', param)?;
            if !trim_ows(&param[..eq]).eq_ignore_ascii_case(b"timeout") {
                return None;
            }
            let n = trim_ows(&param[eq + 1..]);
            let n = n
                .strip_prefix(b"\"")
                .and_then(|n| n.strip_suffix(b"\""))
                .unwrap_or(n);
            if n.is_empty() || n.len() > 19 || !n.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(
                n.iter()
                    .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
            )
        })
    }

    /// Content-Type is `application/json` or `application/<x>+json` (RFC 6838 §4.2.8),
    /// case-insensitive, parameters ignored.
    pub fn is_json(&self) -> bool {
        let Some(ct) = self.facts.content_type else {
            return false;
        };
        let ct = ct.get(&self.bytes);
        let media = trim_ows(ct.split(|&b| b == b';').next().unwrap_or_default());
        let Some(sub) = media
            .get(12..)
            .filter(|_| media[..12].eq_ignore_ascii_case(b"application/"))
        else {
            return false;
        };
        sub.eq_ignore_ascii_case(b"json")
            || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
    }

    /// A 1xx response: more heads follow (see [`interim`](ResponseHead::interim)).
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// Whether the body carries a transfer coding other than chunked (`gzip, chunked`, an
    /// until-close `gzip`): ringway does not decode those, so the bytes may only go where a
    /// Transfer-Encoding field still names them (see
    /// [`check_codings_deliverable`](super::check_codings_deliverable)).
    pub fn has_transfer_coding(&self) -> bool {
        self.framing != BodyFraming::Empty
            && self
                .facts
                .transfer_encoding
                .is_some_and(|t| !t.only_chunked())
    }

    /// What to do with this head if it is a 1xx (RFC 9110 §15.2): a proxy forwards 1xx
    /// responses, except to HTTP/1.0 clients and except those it asked for itself; 101 is valid
    /// only after an Upgrade the client asked for (RFC 9110 §15.2.2).
    pub fn interim(
        &self,
        client_version: Version,
        client_asked_upgrade: bool,
        gateway_sent_continue: bool,
    ) -> Interim {
        match self.status {
            101 if client_asked_upgrade && client_version == Version::Http11 => {
                Interim::SwitchProtocols
            }
            101 => Interim::Unexpected,
            100 if gateway_sent_continue => Interim::Skip,
            100..=199 if client_version == Version::Http10 => Interim::Skip,
            100..=199 => Interim::Forward,
            _ => Interim::Final,
        }
    }

    /// The method of the request this responds to (it decides the framing of HEAD / CONNECT).
    pub fn request_method(&self) -> Method {
        self.request_method
    }

    /// The head bytes, status line through the blank line, as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(crate) fn ranges(&self) -> &[HeaderRange] {
        &self.headers
    }
}

/// Parses a backend's response head from the front of `buf`.
///
/// `request_method` is the method of the request this answers (a HEAD response has no body).
/// Same buffer contract as [`parse_request_head`](super::parse_request_head): on
/// [`Status::Complete`] the head is split off the front of `buf` without copying.
///
/// # Errors
///
/// Malformed status line or fields, CL with TE, duplicate or bad Content-Length, bad
/// Transfer-Encoding, a head over the limits: an [`HttpError`] on the upstream side (502).
pub fn parse_response_head(
    buf: &mut BytesMut,
    scan: &mut HeadScanner,
    limits: &Limits,
    request_method: Method,
) -> Result<Status<ResponseHead>, HttpError> {
    let Some(end) = scan.find_end(buf, limits).map_err(HttpError::upstream)? else {
        return Ok(Status::Partial);
    };
    scan.reset();
    let mut head =
        parse_in_place(&buf[..end], limits, request_method).map_err(HttpError::upstream)?;
    head.bytes = buf.split_to(end).freeze();
    Ok(Status::Complete(head))
}

fn parse_in_place(
    head: &[u8],
    limits: &Limits,
    request_method: Method,
) -> Result<ResponseHead, ErrorKind> {
    let mut scratch = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let max = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        head,
        &mut scratch[..max],
    ) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Ok(_) => return Err(ErrorKind::InvalidNewline),
        Err(httparse::Error::HeaderName) if headers::has_whitespace_before_colon(head) => {
            return Err(ErrorKind::WhitespaceBeforeColon);
        }
        Err(e) => return Err(headers::from_httparse(e)),
    }
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(ErrorKind::InvalidStatus);
    };
    if !(100..=599).contains(&status) {
        return Err(ErrorKind::InvalidStatus);
    }
    let version = Version::from_minor(minor);
    // httparse returns a static "" for reasons with obs-text, so take the span from the bytes:
    // the status line is exactly "HTTP/1.x NNN[ reason]" (single spaces, httparse's default).
    let line_end = memchr::memchr(b'\r', head).unwrap_or(12);
    let reason = if line_end > 13 {
        Span {
            start: 13,
            end: line_end as u32,
        }
    } else {
        Span {
            start: line_end as u32,
            end: line_end as u32,
        }
    };
    let mut ranges = HeaderRanges::new();
    let facts = headers::collect(head, res.headers, &mut ranges)?;
    let framing = response_framing(
        version,
        status,
        request_method == Method::Head,
        request_method == Method::Connect,
        &facts,
    )?;
    Ok(ResponseHead {
        bytes: Bytes::new(),
        version,
        status,
        reason,
        headers: ranges,
        facts,
        framing,
        request_method,
    })
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
