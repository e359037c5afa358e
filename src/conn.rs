//! The client connection loop: read a head, route it, hand it to the proxy or the fan-out, repeat.
//!
//! Keepalive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelining (requests are served one after
//! another from the same buffer, so answers go out strictly in order), the `client_header`
//! deadline for a whole head (408 + close), the `client_idle` keepalive timeout (silent close), and
//! the gateway's own error responses (DESIGN.md "Errors the gateway itself sends").
//!
//! `client_idle` also bounds every body read and response write on the connection: a client that
//! stalls mid-body (408 + close) or stops reading its response (close with RST) never holds a
//! task and a backend connection for longer than that.
//!
//! This module never copies a body: it hands the read buffer to `proxy`/`fanout`, which split
//! bodies off it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{Either, select};

use crate::access_log::Entry;
use crate::gateway::Gateway;
use crate::http::{self, HeadScanner, HttpError, Limits, RequestHead, Status};
use crate::io::{self, Stream};
use crate::router::RouteKind;
use crate::shard::Shard;
use crate::upstream::Pool;

/// Longest a lingering close keeps reading after an error answer.
pub const LINGER_TOTAL: Duration = Duration::from_secs(2);

/// A lingering close ends once the client sends nothing for this long.
pub const LINGER_IDLE: Duration = Duration::from_millis(250);

/// Most bytes a lingering close discards before it closes anyway.
pub const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Initial size of a connection's read buffer; grows only when a head or body needs more.
pub const READ_BUF_INITIAL: usize = 4096;

/// Room for the heads one request writes (forwarded request head, response head): one
/// allocation per request, taken when its bytes arrive, none held while the connection idles.
const SCRATCH_INITIAL: usize = 1024;

/// What happens to the client connection after a response (the codec's decision type).
pub use crate::http::ConnAfter;

/// One client connection: its stream, read buffer and address.
pub struct Client {
    /// The client's stream.
    pub stream: Stream,
    /// Bytes read from the client and not consumed yet (body, pipelined requests).
    pub buf: BytesMut,
    /// The client's IP (X-Forwarded-For); 0.0.0.0 if unknown.
    pub ip: IpAddr,
    /// The shard serving it.
    pub shard: Rc<Shard>,
    /// Scratch buffer for outgoing heads; reused across requests.
    pub scratch: BytesMut,
    /// What the current request did, for the access log; reset per request.
    pub notes: RequestNotes,
    /// A [`Client::read_more`] gave up after `client_idle` without a byte (a stalled body).
    pub read_timed_out: bool,
    /// The current request's HTTP version: it decides the `Connection` field of the gateway's
    /// own answers ([`ConnAfter::connection_value`]).
    pub version: http::Version,
}

/// Facts about the current request that only the proxy / fan-out know, for the access log.
#[derive(Debug, Default)]
pub struct RequestNotes {
    /// Bytes written to the client for this request (heads included).
    pub bytes_sent: u64,
    /// The pool (endpoint) the proxy used.
    pub upstream: Option<Rc<Pool>>,
    /// Fan-out outcome: `ok`, `partial:<names>` or `failed:<call>`.
    pub fanout: Option<String>,
}

impl Client {
    /// Reads more bytes from the client into `buf` (a request body). Returns the count (0 = EOF).
    ///
    /// A client that sends nothing for `client_idle` is given up on: a stalled body must not
    /// hold a backend connection forever (slow-body attacks).
    ///
    /// # Errors
    /// The I/O error, or [`std::io::ErrorKind::TimedOut`] after `client_idle` without a byte
    /// (then [`Client::read_timed_out`] is set).
    ///
    /// # Cancellation
    /// On timeout the read is cancelled and bytes it may have taken are lost: the caller must
    /// close the connection (it does: every error here ends the exchange with `Close`).
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        let idle = self.shard.gateway().config.timeouts.client_idle;
        match io::timeout(idle, self.read_raw()).await {
            Ok(r) => r,
            Err(_) => {
                self.read_timed_out = true;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client sent nothing for client_idle",
                ))
            }
        }
    }

    /// Lingering close (RFC 9112 §9.6): after an error answer sent while the client may still be
    /// sending (a rejected head, an over-limit body), half-close our side and read and discard
    /// what the client still sends, bounded by [`LINGER_TOTAL`], [`LINGER_IDLE`] and
    /// [`LINGER_MAX_BYTES`]. Closing with unread bytes would make the kernel answer them with a
    /// RST, which can destroy the error response still in flight on a real network.
    pub async fn linger_close(&mut self) {
        if self.stream.shutdown_write().is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TOTAL;
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            self.buf.clear();
            let until = deadline.min(Instant::now() + LINGER_IDLE);
            match io::timeout_at(until, self.read_raw()).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }

    /// One read into `buf`, no deadline (the caller sets one).
    async fn read_raw(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_BUF_INITIAL.max(self.buf.len()));
        }
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = self.stream.read(buf).await;
        self.buf = buf;
        res
    }

    /// Waits for the next request's first bytes holding no buffer (see [`Stream::read_idle`]):
    /// the read buffer and the scratch buffer are given up first, so an idle keepalive
    /// connection costs its task and little else.
    async fn read_idle(&mut self) -> std::io::Result<usize> {
        debug_assert!(self.buf.is_empty());
        self.buf = BytesMut::new();
        self.scratch = BytesMut::new();
        let (res, buf) = self
            .stream
            .read_idle(BytesMut::new(), READ_BUF_INITIAL)
            .await;
        self.buf = buf;
        if matches!(res, Ok(n) if n > 0) {
            // One allocation for the heads this request writes: grown from empty, the scratch
            // would be reallocated at every doubling while a head is written into it.
            self.scratch = BytesMut::with_capacity(SCRATCH_INITIAL);
        }
        res
    }

    /// Writes `buf` to the client, counting it for the access log.
    ///
    /// The write must complete within `client_idle` (see [`Client::write_vectored_all`]).
    ///
    /// # Errors
    /// The write error, or [`std::io::ErrorKind::TimedOut`].
    pub async fn write_all(&mut self, buf: Bytes) -> std::io::Result<()> {
        self.notes.bytes_sent += buf.len() as u64;
        let idle = self.shard.gateway().config.timeouts.client_idle;
        let res = io::timeout(idle, self.stream.write_all(buf)).await;
        self.write_outcome(res)
    }

    /// Writes `bufs` to the client with one vectored write, counting them for the access log.
    ///
    /// The whole write must complete within `client_idle`: a client that stops reading would
    /// otherwise park this task (and the backend connection it holds) forever once the socket
    /// buffers are full. Memory is bounded by the callers (at most one read-ahead window per
    /// write), time by this deadline; a client reading less than one window per `client_idle`
    /// is cut.
    ///
    /// # Errors
    /// The write error, or [`std::io::ErrorKind::TimedOut`]; after a timeout the connection is
    /// closed with a RST so the client cannot mistake the truncation for a complete response.
    pub async fn write_vectored_all(&mut self, bufs: Vec<Bytes>) -> std::io::Result<()> {
        self.notes.bytes_sent += bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        let idle = self.shard.gateway().config.timeouts.client_idle;
        let res = io::timeout(idle, self.stream.write_vectored_all(bufs)).await;
        self.write_outcome(res)
    }

    /// Maps a timed write's result; a timed-out write resets the connection on close.
    fn write_outcome(
        &mut self,
        res: Result<std::io::Result<()>, io::Elapsed>,
    ) -> std::io::Result<()> {
        match res {
            Ok(r) => r,
            Err(_) => {
                self.stream.set_reset_on_close();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client read nothing for client_idle",
                ))
            }
        }
    }

    /// Takes the scratch buffer's contents as `Bytes` (the buffer's spare capacity is kept for
    /// the next head once the written `Bytes` is dropped).
    pub fn take_scratch(&mut self) -> Bytes {
        self.scratch.split().freeze()
    }

    /// Sends a gateway-made error response: a small JSON body `{"error":"<code>"[,"upstream":"<name>"]}`.
    ///
    /// # Errors
    /// The write error (the connection is then closed by the caller anyway).
    pub async fn send_error(
        &mut self,
        status: u16,
        code: &str,
        upstream: Option<&str>,
        after: ConnAfter,
        extra_headers: &[(&str, &str)],
    ) -> std::io::Result<()> {
        let mut body = BytesMut::with_capacity(64);
        body.put_slice(b"{\"error\":\"");
        body.put_slice(code.as_bytes());
        body.put_slice(b"\"");
        if let Some(u) = upstream {
            body.put_slice(b",\"upstream\":\"");
            body.put_slice(u.as_bytes());
            body.put_slice(b"\"");
        }
        body.put_slice(b"}\n");
        let out = &mut self.scratch;
        out.clear();
        out.put_slice(b"HTTP/1.1 ");
        put_u64(out, u64::from(status));
        out.put_u8(b' ');
        out.put_slice(reason_phrase(status).as_bytes());
        out.put_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        put_u64(out, body.len() as u64);
        for (name, value) in extra_headers {
            out.put_slice(b"\r\n");
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
        }
        put_connection(out, after, self.version);
        put_date(out);
        out.put_slice(b"\r\n\r\n");
        let head = self.take_scratch();
        self.notes.bytes_sent += (head.len() + body.len()) as u64;
        let idle = self.shard.gateway().config.timeouts.client_idle;
        let res = io::timeout(
            idle,
            self.stream.write_vectored_all(vec![head, body.freeze()]),
        )
        .await;
        self.write_outcome(res)
    }
}

/// Appends `CRLF Connection: <value>` when a gateway-made answer needs one
/// ([`ConnAfter::connection_value`]).
pub fn put_connection(out: &mut BytesMut, after: ConnAfter, client: http::Version) {
    if let Some(value) = after.connection_value(client) {
        out.put_slice(b"\r\nConnection: ");
        out.put_slice(value);
    }
}

/// Appends `CRLF Date: <now>`: every final response the gateway sends carries one (RFC 9110
/// §6.6.1; the value is formatted once a second, see [`crate::clock`]).
pub fn put_date(out: &mut BytesMut) {
    out.put_slice(b"\r\nDate: ");
    out.put_slice(&crate::clock::http_date());
}

/// Appends the decimal form of `n` (no allocation).
pub fn put_u64(out: &mut BytesMut, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
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

/// How reading the next head ended without a head.
enum NoHead {
    /// Peer closed, idle timeout, or drain while idle: close silently.
    Quiet,
    /// Bytes arrived but not a whole head within `client_header`: 408.
    Timeout,
    /// The bytes are not a valid head: answer the error's status.
    Invalid(HttpError),
}

/// Serves one client connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: Stream, peer: Option<SocketAddr>) {
    let mut client = Client {
        stream,
        buf: BytesMut::new(),
        ip: peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip()),
        shard,
        scratch: BytesMut::new(),
        notes: RequestNotes::default(),
        read_timed_out: false,
        version: http::Version::Http11,
    };
    let mut log_line: Vec<u8> = Vec::new();
    let mut scanner = HeadScanner::new();
    let mut first = true;
    loop {
        let gw = client.shard.gateway();
        let head = match read_head(&mut client, &gw, &mut scanner, first).await {
            Ok(h) => h,
            Err(NoHead::Quiet) => return,
            Err(NoHead::Timeout) => {
                Box::pin(answer_without_head(&mut client, 408, "request_timeout")).await;
                return;
            }
            Err(NoHead::Invalid(e)) => {
                Box::pin(answer_without_head(&mut client, e.status(), e.reason())).await;
                // The rest of a rejected request may still be arriving.
                Box::pin(client.linger_close()).await;
                return;
            }
        };
        first = false;
        scanner.reset();
        let started = Instant::now();
        client.notes = RequestNotes::default();
        client.version = head.version();
        if client.shard.access_log.is_some() {
            // Only when logging: the head moves into the proxy, so keep method and target.
            log_line.clear();
            log_line.extend_from_slice(head.method_bytes());
            log_line.push(b' ');
            log_line.extend_from_slice(head.target());
        }
        // Boxed (~0.5 KB, the head and the route): an idle keepalive connection's task must not
        // carry a request's state; that is its memory cost.
        let (label, mut status, after) = Box::pin(dispatch(&mut client, &gw, head)).await;
        if status == 0 && client.read_timed_out && client.notes.bytes_sent == 0 {
            // The body stalled past client_idle and nothing was answered yet: say so.
            let _ =
                Box::pin(client.send_error(408, "request_timeout", None, ConnAfter::Close, &[]))
                    .await;
            status = 408;
        }
        let took = started.elapsed();
        client
            .shard
            .metrics
            .request(label.unwrap_or(""), status, took);
        if let Some(log) = &client.shard.access_log {
            let split = log_line.iter().position(|&b| b == b' ').unwrap_or(0);
            let upstream = client
                .notes
                .upstream
                .as_ref()
                .map(|p| p.endpoint().to_string());
            log.log(&Entry {
                client: client.ip,
                method: &log_line[..split],
                target: log_line.get(split + 1..).unwrap_or(b""),
                status,
                bytes: client.notes.bytes_sent,
                duration: took,
                route: label,
                upstream: upstream.as_deref(),
                fanout: client.notes.fanout.as_deref(),
            });
        }
        if after == ConnAfter::Close {
            if status == 413 || status == 400 {
                // The client's body was refused or broken mid-stream: some of it may still be
                // on its way.
                Box::pin(client.linger_close()).await;
            }
            return;
        }
    }
}

/// Answers a head that never became a request (malformed: 4xx/5xx; too slow: 408) and counts it
/// in the metrics and the access log like any other response. The caller then closes.
async fn answer_without_head(client: &mut Client, status: u16, code: &str) {
    client.notes = RequestNotes::default();
    let _ = client
        .send_error(status, code, None, ConnAfter::Close, &[])
        .await;
    client.shard.metrics.request("", status, Duration::ZERO);
    if let Some(log) = &client.shard.access_log {
        log.log(&Entry {
            client: client.ip,
            method: b"-",
            target: b"-",
            status,
            bytes: client.notes.bytes_sent,
            duration: Duration::ZERO,
            route: None,
            upstream: None,
            fanout: None,
        });
    }
}

/// Routes one request and runs it. Returns the route label, the status sent, and what next.
async fn dispatch<'g>(
    client: &mut Client,
    gw: &'g Gateway,
    head: RequestHead,
) -> (Option<&'g str>, u16, ConnAfter) {
    if head.method() == http::Method::Connect {
        // ringway is a gateway, not a forward proxy: no CONNECT tunnels (README "CONNECT").
        return refuse(client, &head, 501, "connect_not_supported").await;
    }
    let Some(route) = gw
        .router
        .route(head.host(), head.path(), head.method_bytes())
    else {
        return refuse(client, &head, 404, "no_route").await;
    };
    let label = Some(route.label.as_str());
    // Each exchange is boxed on its own, sized to its route kind: a respond route does not pay
    // for allocating and moving the proxy's ~4.5 KB state.
    let (status, after) = match route.kind {
        RouteKind::Proxy { upstream } => {
            Box::pin(crate::proxy::forward(
                client,
                gw,
                &gw.upstreams[upstream],
                head,
            ))
            .await
        }
        RouteKind::Fanout { plan } => {
            Box::pin(crate::fanout::serve(
                client,
                gw,
                route,
                &gw.fanouts[plan],
                head,
            ))
            .await
        }
        RouteKind::Respond { answer } => {
            Box::pin(crate::respond::serve(client, gw, &gw.answers[answer], head)).await
        }
    };
    (label, status, after)
}

/// Answers a request that is not served (no route, CONNECT) with a JSON error. The request body
/// (if any) is not read: the connection is closed unless there is none.
async fn refuse<'g>(
    client: &mut Client,
    head: &RequestHead,
    status: u16,
    code: &str,
) -> (Option<&'g str>, u16, ConnAfter) {
    let after = if head.keep_alive()
        && matches!(head.framing(), http::BodyFraming::Empty)
        && !client.shard.is_draining()
    {
        ConnAfter::KeepAlive
    } else {
        ConnAfter::Close
    };
    let after = match Box::pin(client.send_error(status, code, None, after, &[])).await {
        Ok(()) => after,
        Err(_) => ConnAfter::Close,
    };
    (None, status, after)
}

/// Reads until one whole request head is buffered, then parses it off the buffer.
///
/// Deadlines: before the first byte of a head, `client_idle` on a kept-alive connection (silent
/// close) or `client_header` on a fresh one; once a byte arrived, the whole head must be in
/// within `client_header` of it (else 408). While waiting for the first byte, a drain closes the
/// connection.
async fn read_head(
    client: &mut Client,
    gw: &Gateway,
    scanner: &mut HeadScanner,
    first: bool,
) -> Result<RequestHead, NoHead> {
    let limits = Limits {
        max_head_bytes: gw.config.limits.max_head_bytes,
        max_headers: gw.config.limits.max_headers,
    };
    let policy = gw.target_policy();
    let t = &gw.config.timeouts;
    let mut head_deadline: Option<Instant> = None;
    loop {
        if !client.buf.is_empty() {
            match http::parse_request_head_with(&mut client.buf, scanner, &limits, &policy) {
                Ok(Status::Complete(h)) => return Ok(h),
                Ok(Status::Partial) => {}
                Err(e) => return Err(NoHead::Invalid(e)),
            }
            if head_deadline.is_none() {
                head_deadline = Some(Instant::now() + t.client_header);
            }
        }
        let read = match head_deadline {
            // Boxed: a head split over reads is rare, and inline this read state would grow
            // every connection's task (an idle connection's memory) by its size.
            Some(deadline) => match Box::pin(io::timeout_at(deadline, client.read_raw())).await {
                Ok(r) => r,
                Err(_) => return Err(NoHead::Timeout),
            },
            None => {
                if client.shard.is_draining() {
                    return Err(NoHead::Quiet);
                }
                let idle = if first {
                    t.client_header
                } else {
                    t.client_idle
                };
                let drain = client.shard.draining.wait();
                // Nothing buffered (a partial head would have set the deadline): hold no buffer.
                let wait = io::timeout(idle, client.read_idle());
                match select(Box::pin(wait), Box::pin(drain)).await {
                    Either::Left((Ok(r), _)) => r,
                    Either::Left((Err(_), _)) | Either::Right(_) => return Err(NoHead::Quiet),
                }
            }
        };
        match read {
            Ok(0) | Err(_) => {
                // EOF or reset: a partial head is abandoned silently (nobody to answer).
                return Err(NoHead::Quiet);
            }
            Ok(_) => {}
        }
    }
}
