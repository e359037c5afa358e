//! Serialising outgoing heads into a reusable buffer: the rewritten head is the one copy the
//! gateway makes of a message, and it is written without `format!` or temporary strings.
//!
//! [`write_forward_request_head`] and [`write_forward_response_head`] apply the forwarding rules
//! (RFC 9110 §7.6): hop-by-hop fields and those named in Connection are dropped, framing fields
//! are re-emitted for the framing actually used, X-Forwarded-For / X-Forwarded-Proto / Via are
//! added. [`HeadWriter`] is the building block for heads ringway makes itself: the gateway's
//! errors, fan-out answers and respond routes all write their status line through
//! [`HeadWriter::status`].

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::framing::BodyFraming;
use super::headers::{HeaderRange, connection_lists, list};
use super::hop::drop_when_forwarding;
use super::request::{RequestHead, TargetForm};
use super::response::ResponseHead;
use super::{Method, Version};

/// Writes a head piece by piece into a buffer. The caller supplies valid tokens and values
/// (fields copied from a parsed head are); values must not contain CR or LF.
#[derive(Debug)]
pub struct HeadWriter<'a> {
    out: &'a mut BytesMut,
}

impl<'a> HeadWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut BytesMut) -> Self {
        Self { out }
    }

    /// `METHOD path[?query] HTTP/1.1` CRLF: ringway always speaks HTTP/1.1 to backends.
    pub fn request_line(&mut self, method: &[u8], path: &[u8], query: Option<&[u8]>) -> &mut Self {
        self.out.put_slice(method);
        self.out.put_u8(b' ');
        self.out.put_slice(path);
        if let Some(q) = query {
            self.out.put_u8(b'?');
            self.out.put_slice(q);
        }
        self.out.put_slice(b" HTTP/1.1\r\n");
        self
    }

    /// `HTTP/1.x code reason` CRLF.
    pub fn status_line(&mut self, version: Version, code: u16, reason: &[u8]) -> &mut Self {
        self.out.put_slice(version.as_bytes());
        self.out.put_u8(b' ');
        put_u64(self.out, u64::from(code));
        self.out.put_u8(b' ');
        self.out.put_slice(reason);
        self.out.put_slice(b"\r\n");
        self
    }

    /// `HTTP/1.1 code reason` CRLF, the status line of every answer the gateway makes itself,
    /// with [`reason_phrase`]'s phrase. `200 OK` is one copy of a constant line (as hyper's
    /// `role.rs` has it), the status an answer has most often.
    pub fn status(&mut self, code: u16) -> &mut Self {
        if code == 200 {
            self.out.put_slice(b"HTTP/1.1 200 OK\r\n");
            return self;
        }
        self.status_line(Version::Http11, code, reason_phrase(code).as_bytes())
    }

    /// `Connection: <value>` CRLF when an answer that ends as `after` to a `client` request
    /// needs one ([`ConnAfter::connection_value`]), nothing otherwise.
    pub fn connection(&mut self, after: ConnAfter, client: Version) -> &mut Self {
        if let Some(value) = after.connection_value(client) {
            self.header(b"Connection", value);
        }
        self
    }

    /// `name: ` — the start of a field whose value is written in pieces ([`HeadWriter::value`],
    /// [`HeadWriter::value_u64`]) and ended by [`HeadWriter::end_field`].
    pub fn start_field(&mut self, name: &[u8]) -> &mut Self {
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self
    }

    /// A piece of the value of the field begun by [`HeadWriter::start_field`] (no CR or LF).
    pub fn value(&mut self, piece: &[u8]) -> &mut Self {
        self.out.put_slice(piece);
        self
    }

    /// A number, in decimal, as a piece of a field value.
    pub fn value_u64(&mut self, n: u64) -> &mut Self {
        put_u64(self.out, n);
        self
    }

    /// The CRLF that ends a field begun by [`HeadWriter::start_field`].
    pub fn end_field(&mut self) -> &mut Self {
        self.out.put_slice(b"\r\n");
        self
    }

    /// `name: value` CRLF.
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        debug_assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n'),
            "CR/LF in a field value"
        );
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
        self
    }

    /// `name: n` CRLF, the number written in decimal without allocating.
    pub fn header_u64(&mut self, name: &[u8], n: u64) -> &mut Self {
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        put_u64(self.out, n);
        self.out.put_slice(b"\r\n");
        self
    }

    /// The empty line ending the head.
    pub fn end(&mut self) {
        self.out.put_slice(b"\r\n");
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.put_slice(bytes);
        self
    }
}

/// Appends `n` in decimal (no allocation).
pub fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Writes `ip` as text. IPv4, the common case, digit by digit: `write!` through `Display` cost
/// about 700 instructions per address, and every proxied request and fan-out call writes one.
pub fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            put_u64(out, a.into());
            for o in [b, c, d] {
                out.put_u8(b'.');
                put_u64(out, o.into());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// The reason phrase ringway sends for its own statuses: RFC 9110 §15's for every status it
/// defines, `Unknown` otherwise (the phrase is informational only, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What the gateway adds when forwarding a request to a backend.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address, appended to X-Forwarded-For.
    pub client_ip: IpAddr,
    /// The scheme the client used, sent as X-Forwarded-Proto (`"http"`).
    pub proto: &'static str,
    /// Host to send when the request carries none (HTTP/1.0 without Host, or an empty Host):
    /// usually the upstream's name. HTTP/1.1 requires a Host (RFC 9112 §3.2).
    pub default_host: &'a [u8],
    /// The gateway answered `100 Continue` itself, so Expect is not forwarded (RFC 9110 §10.1.1).
    pub answered_continue: bool,
    /// The client's Upgrade is being tunnelled: keep Upgrade and send `Connection: upgrade`.
    pub tunnel: bool,
}

impl<'a> Forwarded<'a> {
    /// Plain HTTP from `client_ip`, nothing answered, no tunnel.
    pub fn new(client_ip: IpAddr, default_host: &'a [u8]) -> Self {
        Self {
            client_ip,
            proto: "http",
            default_host,
            answered_continue: false,
            tunnel: false,
        }
    }
}

/// Writes the head to send to a backend for a client's request into `out`.
///
/// - Request line in origin-form with the normalized path ([`RequestHead::path`]) and the query
///   as sent (an absolute-form target is reduced to path and query; the authority becomes Host,
///   RFC 9112 §3.2.2), always `HTTP/1.1`.
/// - Host first: the request's host, else `fwd.default_host`.
/// - Dropped: hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, TE,
///   Transfer-Encoding, Upgrade unless `fwd.tunnel`), every field named in Connection, Expect
///   when `fwd.answered_continue`; the client's X-Forwarded-Proto.
/// - Re-emitted framing: `Content-Length: n` or `Transfer-Encoding: chunked` (the client's
///   codings kept when there is more than chunked); the body is forwarded as read.
/// - Added: X-Forwarded-For (client values merged, then `fwd.client_ip`), X-Forwarded-Proto,
///   Via (`1.1 ringway`, or `1.0 ringway` for an HTTP/1.0 client: RFC 9110 §7.6.3 names the
///   received protocol), appended to the client's Via.
/// - Never `Connection: close`: backend connections are pooled.
pub fn write_forward_request_head(out: &mut BytesMut, head: &RequestHead, fwd: &Forwarded<'_>) {
    let bytes = head.as_bytes();
    let ranges = head.ranges();
    let facts = &head.facts;
    let mut w = HeadWriter::new(out);
    // The normalized path: the backend sees the path the router matched (the query as sent).
    match head.target_form() {
        TargetForm::Origin | TargetForm::Absolute => {
            w.request_line(head.method_bytes(), head.path(), head.query())
        }
        TargetForm::Authority | TargetForm::Asterisk => {
            w.request_line(head.method_bytes(), head.target(), None)
        }
    };
    w.header(b"host", head.host().unwrap_or(fwd.default_host));
    let tunnel = fwd.tunnel && head.upgrade().is_some();
    for r in ranges {
        let (name, value) = (r.name.get(bytes), r.value.get(bytes));
        let ours = [
            &b"host"[..],
            b"content-length",
            b"x-forwarded-for",
            b"x-forwarded-proto",
            b"via",
        ];
        if ours.iter().any(|n| name.eq_ignore_ascii_case(n))
            || (fwd.answered_continue && name.eq_ignore_ascii_case(b"expect"))
            || drop_when_forwarding(name, bytes, ranges, facts.conn_other, tunnel)
        {
            continue;
        }
        w.header(name, value);
    }
    write_framing(
        &mut w,
        head.framing(),
        bytes,
        ranges,
        facts.transfer_encoding.is_some_and(|t| !t.only_chunked()),
    );
    forwarding_fields(&mut w, head, fwd.client_ip, fwd.proto, &LOWER_CASE);
    if tunnel {
        w.header(b"connection", b"upgrade");
    }
    w.end();
}

/// The names of the three fields [`forwarding_fields`] writes, as they go on the wire.
struct ForwardingNames {
    xff: &'static [u8],
    proto: &'static [u8],
    via: &'static [u8],
}

/// The proxy's spelling (the rest of a forwarded head is lower-case too).
const LOWER_CASE: ForwardingNames = ForwardingNames {
    xff: b"x-forwarded-for",
    proto: b"x-forwarded-proto",
    via: b"via",
};

/// The spelling of the heads ringway makes itself (fan-out calls).
const TITLE_CASE: ForwardingNames = ForwardingNames {
    xff: b"X-Forwarded-For",
    proto: b"X-Forwarded-Proto",
    via: b"Via",
};

/// X-Forwarded-For (every element the client sent, then `client_ip`), X-Forwarded-Proto and
/// Via (the client's elements, then `1.x ringway` for the version received, RFC 9110 §7.6.3):
/// what the gateway adds to every request it sends on a client's behalf.
fn forwarding_fields(
    w: &mut HeadWriter<'_>,
    head: &RequestHead,
    client_ip: IpAddr,
    proto: &str,
    names: &ForwardingNames,
) {
    let (bytes, ranges) = (head.as_bytes(), head.ranges());
    w.start_field(names.xff);
    join_values(w, bytes, ranges, b"x-forwarded-for");
    put_ip(w.out, client_ip);
    w.end_field().header(names.proto, proto.as_bytes());
    write_via(w, names.via, bytes, ranges, head.version());
}

/// Writes the head of a request ringway makes on behalf of a client's `head` (a fan-out call):
/// `GET path[?query] HTTP/1.1`, `Host: host`, each of the client's fields whose lower-case name
/// `forward` accepts unless the client's Connection names it (then it is hop-by-hop for this
/// message, RFC 9110 §7.6.1), then the forwarding fields as for a proxied request.
///
/// Always GET, also for a client's HEAD: the answer to HEAD must carry the same Content-Length
/// as the GET (RFC 9110 §9.3.2), which needs the bodies.
pub fn write_subrequest_head(
    out: &mut BytesMut,
    head: &RequestHead,
    path: &[u8],
    host: &[u8],
    client_ip: IpAddr,
    forward: impl Fn(&[u8]) -> bool,
) {
    let (bytes, ranges) = (head.as_bytes(), head.ranges());
    let f = &head.facts;
    // Without a Connection field nothing is named in one: skip the rescan of every field.
    let has_connection = f.conn_close || f.conn_keep_alive || f.conn_upgrade || f.conn_other;
    let mut w = HeadWriter::new(out);
    w.request_line(b"GET", path, head.query());
    w.header(b"Host", host);
    for r in ranges {
        let (name, value) = (r.name.get(bytes), r.value.get(bytes));
        if forward(name) && !(has_connection && connection_lists(bytes, ranges, name)) {
            w.header(name, value);
        }
    }
    forwarding_fields(&mut w, head, client_ip, "http", &TITLE_CASE);
    w.end();
}

/// Content-Length or Transfer-Encoding for a body forwarded as read.
fn write_framing(
    w: &mut HeadWriter<'_>,
    framing: BodyFraming,
    bytes: &[u8],
    ranges: &[HeaderRange],
    keep_codings: bool,
) {
    match framing {
        BodyFraming::ContentLength(n) => {
            w.header_u64(b"content-length", n);
        }
        BodyFraming::Chunked if keep_codings => write_codings(w, bytes, ranges),
        BodyFraming::Chunked => {
            w.header(b"transfer-encoding", b"chunked");
        }
        BodyFraming::Empty | BodyFraming::UntilClose => {}
    }
}

/// Writes every element of every `name` field, each followed by `", "`.
fn join_values(w: &mut HeadWriter<'_>, bytes: &[u8], ranges: &[HeaderRange], name: &[u8]) {
    for r in ranges
        .iter()
        .filter(|r| r.name.get(bytes).eq_ignore_ascii_case(name))
    {
        for element in list(r.value.get(bytes)) {
            w.raw(element).raw(b", ");
        }
    }
}

/// `transfer-encoding: <every coding the message listed>` CRLF.
fn write_codings(w: &mut HeadWriter<'_>, bytes: &[u8], ranges: &[HeaderRange]) {
    w.raw(b"transfer-encoding: ");
    join_values(w, bytes, ranges, b"transfer-encoding");
    if w.out.ends_with(b", ") {
        w.out.truncate(w.out.len() - 2);
    }
    w.raw(b"\r\n");
}

/// `via: <received Via elements>, 1.x ringway` (RFC 9110 §7.6.3).
fn write_via(
    w: &mut HeadWriter<'_>,
    name: &[u8],
    bytes: &[u8],
    ranges: &[HeaderRange],
    received: Version,
) {
    w.start_field(name);
    join_values(w, bytes, ranges, b"via");
    w.raw(match received {
        Version::Http10 => b"1.0 ringway\r\n",
        Version::Http11 => b"1.1 ringway\r\n",
    });
}

/// What the client side of the gateway does after a head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAfter {
    /// The connection stays open for the next request.
    KeepAlive,
    /// Close the connection once the response is sent (its end may be marked by the close).
    Close,
}

impl ConnAfter {
    /// The `Connection` value a final response to a `client` request needs: `close` when the
    /// connection ends, `keep-alive` when an HTTP/1.0 client's connection stays open (RFC 9112
    /// §9.3: it assumes a close otherwise), none for a kept HTTP/1.1 connection. The one rule for
    /// every answer: proxied, fan-out, respond routes and the gateway's errors.
    pub fn connection_value(self, client: Version) -> Option<&'static [u8]> {
        match (self, client) {
            (ConnAfter::Close, _) => Some(b"close"),
            (ConnAfter::KeepAlive, Version::Http10) => Some(b"keep-alive"),
            (ConnAfter::KeepAlive, Version::Http11) => None,
        }
    }
}

/// How the response body goes to the client after [`write_forward_response_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// No body follows the head.
    None,
    /// Forward [`BodyDecoder::next_raw`](super::BodyDecoder::next_raw) pieces unchanged.
    Raw,
    /// Forward [`BodyDecoder::next_data`](super::BodyDecoder::next_data) pieces: a chunked body
    /// to an HTTP/1.0 client, which never gets chunked; the close marks the end.
    Decoded,
}

/// The decisions [`write_forward_response_head`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseForward {
    /// How to send the body.
    pub body: BodyMode,
    /// Whether the client connection stays open afterwards.
    pub client_conn: ConnAfter,
}

/// Checks that a backend's response body can reach a `client_version` client with its
/// transfer codings named. Call it before [`write_forward_response_head`].
///
/// RFC 9112 §6.1: "A server MUST NOT send a response containing Transfer-Encoding unless the
/// corresponding request indicates HTTP/1.1 (or later minor revisions)." ringway removes chunked
/// for an HTTP/1.0 client itself, but it does not decode other codings (`gzip, chunked`, or an
/// until-close `gzip`): forwarded, those bytes would arrive with no field saying they are coded.
///
/// # Errors
///
/// [`ErrorKind::CodingNotDeliverable`] on the upstream side (502) for an HTTP/1.0 client and a
/// response with a body and any coding but chunked.
pub fn check_codings_deliverable(
    head: &ResponseHead,
    client_version: Version,
) -> Result<(), super::HttpError> {
    if client_version == Version::Http10 && head.has_transfer_coding() {
        return Err(super::HttpError::upstream(
            super::ErrorKind::CodingNotDeliverable,
        ));
    }
    Ok(())
}

/// Writes the head to send to the client for a backend's response into `out`.
///
/// `client_version` is the client's request version, `keep_alive` whether the gateway wants to
/// keep the client connection (the request's [`keep_alive`](RequestHead::keep_alive) and no reason
/// to close). The status line is `HTTP/1.1` (RFC 9110 §2.5: a server sends its own version).
///
/// - Dropped: hop-by-hop fields (Upgrade kept for a 101), fields named in Connection,
///   Content-Length and Transfer-Encoding (re-emitted below).
/// - Framing: `Content-Length: n`; chunked stays chunked for HTTP/1.1 clients; an HTTP/1.0 client
///   never gets chunked: the body is de-chunked ([`BodyMode::Decoded`]) and ends at close; an
///   until-close body ends at close too. HEAD and 304 responses keep their Content-Length. A body
///   with other codings cannot go to an HTTP/1.0 client: [`check_codings_deliverable`] first.
/// - Connection: `close` when the client connection will close, `keep-alive` for an HTTP/1.0
///   client that keeps it, `upgrade` for a 101. No Connection field on other 1xx.
/// - Date: `date` added to a final response that has none (the caller passes the current time;
///   `None` adds nothing).
/// - Via: `1.x ringway` (the backend's version) appended.
pub fn write_forward_response_head(
    out: &mut BytesMut,
    head: &ResponseHead,
    client_version: Version,
    keep_alive: bool,
    date: Option<&[u8]>,
) -> ResponseForward {
    let bytes = head.as_bytes();
    let ranges = head.ranges();
    let facts = &head.facts;
    let status = head.status();
    let switching = status == 101;
    let chunked_ok = client_version == Version::Http11;
    let (body, length_known) = match head.framing() {
        BodyFraming::Empty => (BodyMode::None, true),
        BodyFraming::ContentLength(_) => (BodyMode::Raw, true),
        BodyFraming::Chunked if chunked_ok => (BodyMode::Raw, true),
        BodyFraming::Chunked => (BodyMode::Decoded, false),
        BodyFraming::UntilClose => (BodyMode::Raw, false),
    };
    let tunnel =
        switching || (head.request_method() == Method::Connect && (200..300).contains(&status));
    let client_conn = if keep_alive && length_known && !tunnel {
        ConnAfter::KeepAlive
    } else {
        ConnAfter::Close
    };

    let mut w = HeadWriter::new(out);
    w.status_line(Version::Http11, status, head.reason());
    let mut has_date = false;
    for r in ranges {
        let (name, value) = (r.name.get(bytes), r.value.get(bytes));
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"via")
            || drop_when_forwarding(name, bytes, ranges, facts.conn_other, switching)
        {
            continue;
        }
        // Only a Date that is written counts (one named in Connection is dropped above).
        has_date |= name.eq_ignore_ascii_case(b"date");
        w.header(name, value);
    }
    let te = facts.transfer_encoding;
    match head.framing() {
        BodyFraming::Empty => {
            // RFC 9110 §8.6: a HEAD or 304 response may carry the representation's length.
            if (status == 304 || head.request_method() == Method::Head)
                && let Some(n) = facts.content_length
            {
                w.header_u64(b"content-length", n);
            }
        }
        BodyFraming::Chunked if !chunked_ok => {}
        framing => {
            // An until-close body with codings other than chunked is forwarded coded as it is;
            // a 1.1 client needs the codings to read it.
            let keep = te.is_some_and(|t| !t.only_chunked()) && chunked_ok;
            if framing == BodyFraming::UntilClose && keep {
                write_codings(&mut w, bytes, ranges);
            } else {
                write_framing(&mut w, framing, bytes, ranges, keep);
            }
        }
    }
    if switching {
        w.header(b"connection", b"upgrade");
    } else if !head.is_informational()
        && let Some(value) = client_conn.connection_value(client_version)
    {
        w.header(b"connection", value);
    }
    // RFC 9110 §6.6.1: a proxy forwarding a final response without a Date adds one.
    if let Some(d) = date
        && !has_date
        && !head.is_informational()
    {
        w.header(b"date", d);
    }
    write_via(&mut w, b"via", bytes, ranges, head.version());
    w.end();
    ResponseForward { body, client_conn }
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
