//! The downstream session: one client connection's stream, read buffer, head scratch buffer and
//! the notes its current request leaves for the access log, behind methods.
//!
//! Every read from and write to the client goes through here with its deadline: the whole head
//! within `client_header` ([`Client::read_head`]), each body read and each response write within
//! `client_idle`. A client that stalls mid-body (408 + close) or stops reading its response
//! (close with RST) never holds a task and a backend connection longer than that.
//!
//! Two decisions are taken here and nowhere else: whether the connection stays open after an
//! answer ([`Client::conn_after`]) and how a gateway-made error answer looks
//! ([`Client::send_error`]).
//!
//! This module never copies a body: handlers split body pieces off the read buffer
//! ([`Client::take_body`]) and hand them on as they are.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Kind};
use crate::http::{
    self, BodyDecoder, ConnAfter, HeadScanner, HeadWriter, HttpError, Limits, RequestHead, Status,
};
use crate::io::{self as rio, Stream};
use crate::local::ShardLocal;
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
pub const SCRATCH_INITIAL: usize = 1024;

/// One client connection (see the module doc).
pub struct Client {
    stream: Stream,
    /// Bytes read from the client and not consumed yet (body, pipelined requests).
    buf: BytesMut,
    /// The client's IP (X-Forwarded-For); 0.0.0.0 if unknown.
    ip: IpAddr,
    shard: Rc<ShardLocal>,
    /// Scratch buffer for outgoing heads; reused across requests.
    scratch: BytesMut,
    notes: RequestNotes,
    /// A [`Client::read_more`] gave up after `client_idle` without a byte (a stalled body).
    read_timed_out: bool,
    /// The current request's HTTP version: it decides the `Connection` field of the gateway's
    /// own answers ([`ConnAfter::connection_value`]).
    version: http::Version,
    /// `client_idle` of the config generation serving the current request (set by
    /// [`Client::read_head`]).
    idle: Duration,
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

/// How waiting for the next request head ended without a head.
#[derive(Debug)]
pub enum NoHead {
    /// Peer closed, idle timeout, or drain while idle: close silently.
    Quiet,
    /// Bytes arrived but not a whole head within `client_header`: 408.
    Timeout,
    /// The bytes are not a valid head: answer the error's status.
    Invalid(HttpError),
}

/// The limits and deadlines of reading one request head ([`Client::read_head`]).
#[derive(Debug, Clone, Copy)]
pub struct HeadWait {
    /// Size limits of the head.
    pub limits: Limits,
    /// How the request target is normalized before routing.
    pub policy: http::TargetPolicy,
    /// The whole head must arrive within this of its first byte; also the wait for the first
    /// byte on a fresh connection.
    pub client_header: Duration,
    /// The wait for the first byte of a later request on a kept-alive connection.
    pub client_idle: Duration,
    /// Whether this is the connection's first request.
    pub first: bool,
}

impl Client {
    /// A session for `stream` from `peer` on the shard whose state is `shard`.
    pub fn new(shard: Rc<ShardLocal>, stream: Stream, peer: Option<SocketAddr>) -> Client {
        Client {
            stream,
            buf: BytesMut::new(),
            ip: peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip()),
            shard,
            scratch: BytesMut::new(),
            notes: RequestNotes::default(),
            read_timed_out: false,
            version: http::Version::Http11,
            idle: Duration::from_secs(60),
        }
    }

    /// Starts a new request's bookkeeping: fresh notes and its version.
    pub fn begin_request(&mut self, version: http::Version) {
        self.notes = RequestNotes::default();
        self.version = version;
    }

    /// Forgets what the last request noted (for an answer to a head that never became one).
    pub fn reset_notes(&mut self) {
        self.notes = RequestNotes::default();
    }

    /// The client's IP; 0.0.0.0 if unknown.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The current request's HTTP version.
    pub fn version(&self) -> http::Version {
        self.version
    }

    /// The state of the shard serving this client.
    pub fn shard(&self) -> &ShardLocal {
        &self.shard
    }

    /// The shard's state, for work that holds it while using the client mutably (a fan-out's
    /// spare buffers). A reference count, no allocation.
    pub fn shard_rc(&self) -> Rc<ShardLocal> {
        self.shard.clone()
    }

    /// What the current request did, for the access log.
    pub fn notes(&self) -> &RequestNotes {
        &self.notes
    }

    /// Records the pool (endpoint) the current request was sent to.
    pub fn note_upstream(&mut self, pool: &Rc<Pool>) {
        self.notes.upstream = Some(pool.clone());
    }

    /// Records the fan-out outcome; the string is built only when the access log is on.
    pub fn note_fanout(&mut self, outcome: impl FnOnce() -> String) {
        if self.shard.access_log().is_some() {
            self.notes.fanout = Some(outcome());
        }
    }

    /// Whether a [`Client::read_more`] gave up after `client_idle` (a stalled body).
    pub fn read_timed_out(&self) -> bool {
        self.read_timed_out
    }

    /// `client_idle`: the bound on each body read and response write.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Whether bytes past the current head are already buffered (body, pipelined requests).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether the connection stays open after the answer to `req`: the one keep-or-close rule.
    /// It does when the client wants keep-alive, the request body was read to its end
    /// (`body_read`; an unread body leaves closing as the only safe framing) and the shard is
    /// not draining. The response's own framing may still close it
    /// ([`http::write_forward_response_head`]).
    pub fn conn_after(&self, req: &RequestHead, body_read: bool) -> ConnAfter {
        if req.keep_alive() && body_read && !self.shard.is_draining() {
            ConnAfter::KeepAlive
        } else {
            ConnAfter::Close
        }
    }

    /// Splits every complete piece of body already buffered off the read buffer (zero copy),
    /// into `parts`, or drops them when `parts` is None.
    ///
    /// # Errors
    /// The body is malformed or over its limit: answer the error's status and close.
    pub fn take_body(
        &mut self,
        body: &mut BodyDecoder,
        mut parts: Option<&mut Vec<Bytes>>,
    ) -> Result<(), HttpError> {
        // Bounded: each pass takes at least one byte off `buf` or stops.
        while !body.is_done() {
            match body.next_raw(&mut self.buf)? {
                Some(b) => {
                    if let Some(parts) = parts.as_deref_mut() {
                        parts.push(b);
                    }
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Reads more of a request body, making room for about `window` bytes first. Returns the
    /// count (0 = EOF).
    ///
    /// # Errors
    /// As [`Client::read_more`].
    pub async fn read_body(&mut self, window: usize) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < window / 2 {
            self.buf.reserve(window);
        }
        self.read_more().await
    }

    /// Everything buffered from the client and not consumed (bytes sent past a request that
    /// starts a tunnel).
    pub fn take_leftover(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Writes a head into the scratch buffer with `write` and takes it as `Bytes` (the buffer's
    /// spare capacity is kept for the next head once the written `Bytes` is dropped).
    pub fn render<R>(&mut self, write: impl FnOnce(&mut BytesMut) -> R) -> (R, Bytes) {
        self.scratch.clear();
        let r = write(&mut self.scratch);
        (r, self.scratch.split().freeze())
    }

    /// The stream and the access log's byte count, for relays that write to the client
    /// themselves (a response body streamed piece by piece, a tunnel, a fan-out answer written in
    /// batches). Each write must be counted and bounded in time by the caller.
    pub fn stream_and_count(&mut self) -> (&mut Stream, &mut u64) {
        (&mut self.stream, &mut self.notes.bytes_sent)
    }

    /// Whether the client hung up (see [`Stream::peer_closed`]): pipelined bytes waiting in the
    /// socket do not count.
    pub fn peer_closed(&self) -> bool {
        self.stream.peer_closed()
    }

    /// Closes the connection with a RST instead of a FIN, so the client cannot mistake a
    /// truncated response for a whole one.
    pub fn set_reset_on_close(&self) {
        self.stream.set_reset_on_close();
    }

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
    pub async fn read_more(&mut self) -> io::Result<usize> {
        match rio::timeout(self.idle, self.read_raw()).await {
            Ok(r) => r,
            Err(_) => {
                self.read_timed_out = true;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
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
        // A held-back answer goes before the half-close.
        let _ = rio::timeout(self.idle, self.stream.flush_deferred()).await;
        if self.stream.shutdown_write().is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TOTAL;
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            self.buf.clear();
            let until = deadline.min(Instant::now() + LINGER_IDLE);
            match rio::timeout_at(until, self.read_raw()).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }

    /// One read into `buf`, no deadline (the caller sets one).
    async fn read_raw(&mut self) -> io::Result<usize> {
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
    async fn read_idle(&mut self) -> io::Result<usize> {
        debug_assert!(self.buf.is_empty());
        // Back to the shard's spare lists (kept if nothing else still points into them), and
        // taken again only when bytes arrive: no allocation per request in steady state.
        self.shard
            .client_bufs()
            .put_back(std::mem::take(&mut self.buf));
        self.shard
            .scratch_bufs()
            .put_back(std::mem::take(&mut self.scratch));
        let bufs = self.shard.client_bufs();
        let (res, buf) = self
            .stream
            .read_idle(|| bufs.take(), READ_BUF_INITIAL)
            .await;
        self.buf = buf;
        if matches!(res, Ok(n) if n > 0) {
            // Room for the heads this request writes: grown from empty, the scratch would be
            // reallocated at every doubling while a head is written into it.
            self.scratch = self.shard.scratch_bufs().take();
        }
        res
    }

    /// Reads until one whole request head is buffered, then parses it off the buffer.
    ///
    /// Deadlines: before the first byte of a head, `client_idle` on a kept-alive connection (silent
    /// close) or `client_header` on a fresh one; once a byte arrived, the whole head must be in
    /// within `client_header` of it (else 408). While waiting for the first byte, a drain closes the
    /// connection.
    ///
    /// # Errors
    /// [`NoHead`]: why there is no head, and so what to answer.
    #[allow(clippy::manual_async_fn)] // on purpose, see the first comment
    pub fn read_head<'a>(
        &'a mut self,
        scanner: &'a mut HeadScanner,
        wait: HeadWait,
    ) -> impl Future<Output = Result<RequestHead, NoHead>> + 'a {
        // An async block, not an async fn: the arguments stay where they were captured instead
        // of being kept twice (rust-lang/rust#62958); this future is an idle connection's wait.
        async move {
            // The generation serving this head bounds this request's body reads and writes too.
            self.idle = wait.client_idle;
            let mut head_deadline: Option<Instant> = None;
            loop {
                if !self.buf.is_empty() {
                    match http::parse_request_head_with(
                        &mut self.buf,
                        scanner,
                        &wait.limits,
                        &wait.policy,
                    ) {
                        Ok(Status::Complete(h)) => return Ok(h),
                        Ok(Status::Partial) => {}
                        Err(e) => return Err(NoHead::Invalid(e)),
                    }
                    if head_deadline.is_none() {
                        head_deadline = Some(rio::now() + wait.client_header);
                    }
                }
                let read = match head_deadline {
                    // Boxed: a head split over reads is rare, and inline this read state would grow
                    // every connection's task (an idle connection's memory) by its size.
                    Some(deadline) => {
                        match rio::boxed(rio::timeout_at(deadline, self.read_raw())).await {
                            Ok(r) => r,
                            Err(_) => return Err(NoHead::Timeout),
                        }
                    }
                    None => {
                        if self.shard.is_draining() {
                            // The last answer, if held back, still goes out before the close.
                            let flush =
                                rio::timeout(wait.client_idle, self.stream.flush_deferred());
                            // Boxed: rare, and inline it would grow every idle connection.
                            let _ = rio::boxed(flush).await;
                            return Err(NoHead::Quiet);
                        }
                        let idle = if wait.first {
                            wait.client_header
                        } else {
                            wait.client_idle
                        };
                        let drain = self.shard.draining().wait();
                        // Nothing buffered (a partial head would have set the deadline): hold no buffer.
                        let read = rio::timeout(idle, self.read_idle());
                        // The read (first: bytes that arrived win), its deadline and the drain signal
                        // in one recycled slot: this is what an idle connection waits in, so it is
                        // kept off the task and in as few bytes as possible.
                        match rio::boxed(rio::until(read, drain)).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(_)) | Err(_) => return Err(NoHead::Quiet),
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
    }

    /// Writes `buf` to the client, counting it for the access log.
    ///
    /// The write must complete within `client_idle` (see [`Client::write_vectored_all`]).
    ///
    /// # Errors
    /// The write error, or [`std::io::ErrorKind::TimedOut`].
    pub async fn write_all(&mut self, buf: Bytes) -> io::Result<()> {
        self.notes.bytes_sent += buf.len() as u64;
        let res = rio::timeout(self.idle, self.stream.write_all(buf)).await;
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
    pub async fn write_vectored_all(&mut self, bufs: impl Into<rio::Pieces>) -> io::Result<()> {
        let bufs = bufs.into();
        self.notes.bytes_sent += bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        let res = rio::timeout(self.idle, self.stream.write_vectored_all(bufs)).await;
        self.write_outcome(res)
    }

    /// Maps a timed write's result; a timed-out write resets the connection on close.
    fn write_outcome(&mut self, res: Result<io::Result<()>, rio::Elapsed>) -> io::Result<()> {
        match res {
            Ok(r) => r,
            Err(_) => {
                self.stream.set_reset_on_close();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read nothing for client_idle",
                ))
            }
        }
    }

    /// Answers the client for `e` (status and code from [`crate::error::Kind`]), naming
    /// `upstream` when it is an upstream's failure, with `extra_headers`; the connection then
    /// continues as `after`. A client that is gone gets nothing. Returns the status to count
    /// and what happens to the connection (`Close` when the answer could not be written).
    pub async fn answer_error(
        &mut self,
        e: &Error,
        upstream: Option<&str>,
        after: ConnAfter,
        extra_headers: &[(&str, &str)],
    ) -> (u16, ConnAfter) {
        let kind = e.kind();
        let status = kind.client_status();
        if kind == Kind::ClientGone {
            return (status, ConnAfter::Close);
        }
        let sent = self
            .send_error(status, kind.code(), upstream, after, extra_headers)
            .await;
        (
            status,
            if sent.is_ok() {
                after
            } else {
                ConnAfter::Close
            },
        )
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
    ) -> io::Result<()> {
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
        let version = self.version;
        let ((), head) = self.render(|out| {
            let mut w = HeadWriter::new(out);
            w.status(status)
                .header(b"Content-Type", b"application/json")
                .header_u64(b"Content-Length", body.len() as u64);
            for (name, value) in extra_headers {
                w.header(name.as_bytes(), value.as_bytes());
            }
            w.connection(after, version)
                .header(b"Date", &crate::clock::http_date())
                .end();
        });
        // Boxed (a recycled slot, so no allocation): the write's ~840-byte state would otherwise
        // sit inline in this future and in every caller's, proxy::forward and conn::serve_one
        // among them, whose whole size is copied into place on every request.
        let parts: rio::Pieces = smallvec::smallvec![head, body.freeze()];
        crate::io::boxed_with(|| self.write_vectored_all(parts)).await
    }
}
