//! Forwarding one request to one upstream endpoint over a pooled keepalive connection.
//!
//! Phases, each a small function: pick endpoint → checkout → send head and body
//! ([`send_request`], [`stream_request_body`]) → receive the response head
//! ([`read_response_head`], 1xx handled there) → relay head and body to the client
//! ([`relay_body`]) or tunnel after a `101` → check the connection back in.
//!
//! Bodies are never copied: the `Bytes` split off one side's read buffer is the `Bytes` written to
//! the other side, one read's worth at a time, so memory per connection is bounded by the read
//! buffers whatever the body size. The only copy is the rewritten head. (The unit test at the end
//! proves it with pointer checks on both drivers.)
//!
//! Early responses (RFC 9112 §9.5): a backend may answer before it has read the whole request
//! body (typically a `413`) and close, or stop reading. When writing the request to the backend
//! fails or stalls and the backend has something for us to read, that answer is relayed (like
//! nginx does) instead of a 502/504; both connections are then closed, since the backend never got
//! the whole request and the client's body was not read to its end.
//!
//! Retry rule (DESIGN.md): a request that fails on a *reused* connection before any response byte
//! arrived is retried once on a fresh connection if it is idempotent, or if it was never written
//! (the write itself failed); in both cases only when the whole request is still in hand (its body
//! was buffered, not streamed). A connect failure (nothing sent) moves on to the next endpoint.
//! Nothing else is ever retried.
//!
//! What this module must never do: hand a backend connection back to its pool unless the
//! exchange completed cleanly with no byte left over, or fake the end of a response the backend
//! truncated.

use std::cell::RefCell;
use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, select};

use crate::audit;
use crate::conn::{Client, ConnAfter};
use crate::gateway::Gateway;
use crate::http::{
    self, BodyDecoder, BodyFraming, BodyMode, ErrorKind, HeadScanner, HttpError, Interim, Limits,
    RequestHead, ResponseHead, Status,
};
use crate::io::{self as rio, Stream};
use crate::metrics::UpstreamOutcome;
use crate::upstream::{CheckoutError, PooledConn, UpstreamGroup};

/// Size of a backend connection's read buffer (and the most a response body read takes at once).
const UPSTREAM_READ_BUF: usize = 16 * 1024;

/// Most spare backend read buffers a shard keeps ([`ReadBufs`]): at least 1 MiB at most.
const MAX_SPARE_READ_BUFS: usize = 64;

/// Largest spare read buffer kept: one that grew for a big head goes back to the allocator.
const MAX_SPARE_READ_BUF: usize = 4 * UPSTREAM_READ_BUF;

/// A shard's spare backend read buffers, so an exchange does not allocate one (plus the shared
/// header `bytes` adds at the first split) each time.
///
/// Zero copy is unchanged: body pieces are still split off the buffer and written as they are.
/// A buffer goes back only after the exchange, and only the room its handle owns exclusively is
/// reused (`BytesMut::try_reclaim`): it never overlaps a piece still held elsewhere (a write
/// cancelled mid-flight, the access log); if that room is too small, the buffer is dropped.
#[derive(Default)]
pub struct ReadBufs {
    spare: RefCell<Vec<BytesMut>>,
}

impl ReadBufs {
    /// An empty read buffer with room for [`UPSTREAM_READ_BUF`] bytes: a spare one if any.
    fn take(&self) -> BytesMut {
        self.spare
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(UPSTREAM_READ_BUF))
    }

    /// Keeps `buf` for a later exchange, emptied, when it can take a full read without growing.
    fn put_back(&self, mut buf: BytesMut) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() >= MAX_SPARE_READ_BUFS || buf.capacity() > MAX_SPARE_READ_BUF {
            return;
        }
        buf.clear();
        // Checked again after the reclaim: it rewinds the handle over the whole allocation, so
        // only now does `capacity` show a buffer that grew for a big head (and is not kept).
        if buf.try_reclaim(UPSTREAM_READ_BUF) && buf.capacity() <= MAX_SPARE_READ_BUF {
            spare.push(buf);
        }
    }
}

/// Spare room made in the client's read buffer before each read of a streamed request body:
/// big enough that a large upload is not relayed in 4 KiB steps, small enough to bound memory.
const CLIENT_BODY_READ: usize = 32 * 1024;

/// Most 1xx heads accepted before the final response: a backend sending endless interim responses
/// is broken (502), not something to relay forever.
const MAX_INTERIM_HEADS: usize = 16;

/// How one upstream attempt failed.
#[derive(Debug)]
enum Failure {
    /// No endpoint could be used (all ejected, pool exhausted): 503.
    Unavailable,
    /// Connect refused/failed or reset/closed before a response: 502.
    Error(io::Error),
    /// Connect or response timeout: 504.
    Timeout,
    /// The backend's bytes were not valid HTTP: 502.
    BadResponse(HttpError),
}

impl Failure {
    fn status_and_code(&self) -> (u16, &'static str, UpstreamOutcome) {
        match self {
            Failure::Unavailable => (503, "upstream_unavailable", UpstreamOutcome::Unavailable),
            Failure::Error(_) => (502, "upstream_error", UpstreamOutcome::Error),
            Failure::Timeout => (504, "upstream_timeout", UpstreamOutcome::Timeout),
            Failure::BadResponse(_) => (502, "upstream_bad_response", UpstreamOutcome::BadResponse),
        }
    }
}

/// Why streaming the request body stopped early.
enum BodyFailure {
    /// The backend side failed (write error or timeout): answer like any upstream failure.
    Upstream(Failure),
    /// The client sent an invalid or oversized body: answer its status and close.
    ClientInvalid(HttpError),
    /// The client went away or stalled: nobody to answer.
    ClientGone,
}

/// How much of the request reached the backend before its response head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// All of it: the exchange can end with both connections kept alive.
    Whole,
    /// Writing failed or stalled part-way and the backend answered early: neither connection
    /// can be reused (the backend still expects body bytes, the client still sends them).
    Partial,
}

/// The per-operation time limits of one exchange.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    /// Each read from / write to the client (`client_idle`).
    client: Duration,
    /// The response head after the request was sent, each body read, each backend write
    /// (`upstream_response`).
    upstream: Duration,
}

/// Forwards `head` (and its body from `client.buf` / the client stream) to `group`, relays the
/// answer. Returns the status sent to the client and what happens to the client connection.
///
/// After an upstream failure the gateway answers 502/503/504 and keeps the client connection when
/// the request body was read whole (like nginx); otherwise the unread body leaves closing as the
/// only safe framing.
pub async fn forward(
    client: &mut Client,
    gw: &Gateway,
    group: &UpstreamGroup,
    head: RequestHead,
) -> (u16, ConnAfter) {
    let limits = &gw.config.limits;
    let times = Deadlines {
        client: gw.config.timeouts.client_idle,
        upstream: gw.config.timeouts.upstream_response,
    };
    let framing = head.framing();
    if let BodyFraming::ContentLength(n) = framing
        && n > limits.max_body_bytes
    {
        let _ = client
            .send_error(413, "body_too_large", None, ConnAfter::Close, &[])
            .await;
        return (413, ConnAfter::Close);
    }
    // Answer `Expect: 100-continue` ourselves once a backend connection is in hand (the Expect
    // header is then not forwarded), unless the body is already here.
    let answer_continue =
        head.expects_continue() && framing != BodyFraming::Empty && client.buf.is_empty();

    // Take what of the body is already buffered; if that is all of it, the request can be resent.
    let mut body = BodyDecoder::new(framing).with_limit(limits.max_body_bytes);
    let mut body_parts: Vec<Bytes> = Vec::new();
    if let Err(e) = take_buffered_body(&mut body, &mut client.buf, &mut body_parts) {
        return client_error(client, e).await;
    }
    let body_complete = body.is_done();

    let mut fwd = http::Forwarded::new(client.ip, group.name.as_bytes());
    fwd.answered_continue = answer_continue;
    fwd.tunnel = head.upgrade().is_some();
    client.scratch.clear();
    http::write_forward_request_head(&mut client.scratch, &head, &fwd);
    let req_head = client.take_scratch();

    let mut tried: Vec<usize> = Vec::new();
    let mut stale_retry_used = false;
    let mut continue_sent = false;
    // Bounded: each pass either returns or adds to `tried` (at most one pass per endpoint) or
    // uses the single stale-connection retry.
    loop {
        let Some((idx, inflight)) = group.pick(&tried) else {
            return fail(client, group, &head, &body, Failure::Unavailable).await;
        };
        let pool = inflight.member().pool.clone();
        client.notes.upstream = Some(pool.clone());
        let checkout = if stale_retry_used {
            pool.checkout_fresh().await
        } else {
            pool.checkout().await
        };
        let mut conn = match checkout {
            Ok(c) => c,
            Err(CheckoutError::Exhausted) => {
                return fail(client, group, &head, &body, Failure::Unavailable).await;
            }
            Err(e) => {
                group.report_failure(idx);
                let f = match e {
                    CheckoutError::ConnectTimeout => Failure::Timeout,
                    CheckoutError::Connect(e) => Failure::Error(e),
                    CheckoutError::Exhausted => Failure::Unavailable,
                };
                tracing::debug!(upstream = %group.name, endpoint = %pool.endpoint(), "connect failed: {f:?}");
                tried.push(idx);
                // Nothing was sent: another endpoint may take it.
                if tried.len() < group.members().len() {
                    count(client, group, &f);
                    continue;
                }
                return fail(client, group, &head, &body, f).await;
            }
        };

        if answer_continue && !continue_sent {
            continue_sent = true;
            let sent = rio::timeout(
                times.client,
                client.write_all(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n")),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return (0, ConnAfter::Close);
            }
        }

        // Send head + buffered body in one vectored write.
        let mut sent = Sent::Whole;
        if let Err(f) = send_request(&mut conn, &req_head, &body_parts, times.upstream).await {
            // Never written (the write failed): safe to resend if we still hold all of it.
            if conn.is_reused() && !stale_retry_used && body_complete {
                tracing::debug!(upstream = %group.name, "stale pooled connection on write; retrying on a fresh one");
                stale_retry_used = true;
                continue;
            }
            if !answered_early(&conn, &f) {
                group.report_failure(idx);
                return fail(client, group, &head, &body, f).await;
            }
            sent = Sent::Partial;
        }
        if sent == Sent::Whole && !body.is_done() {
            // Stream the rest of the body; from here on the request cannot be resent.
            match stream_request_body(client, &mut conn, &mut body, times).await {
                Ok(()) => {}
                Err(BodyFailure::ClientInvalid(e)) => return client_error(client, e).await,
                Err(BodyFailure::ClientGone) => return (0, ConnAfter::Close),
                Err(BodyFailure::Upstream(f)) if answered_early(&conn, &f) => {
                    sent = Sent::Partial;
                }
                Err(BodyFailure::Upstream(f)) => {
                    group.report_failure(idx);
                    return fail(client, group, &head, &body, f).await;
                }
            }
        }

        let resp_limits = Limits {
            max_head_bytes: limits.max_head_bytes.max(16 * 1024),
            max_headers: limits.max_headers,
        };
        let mut ubuf = client.shard.read_bufs.take();
        let resp = match read_response_head(
            &mut client.stream,
            &mut client.notes.bytes_sent,
            &mut client.scratch,
            conn.stream(),
            &mut ubuf,
            &head,
            continue_sent,
            &resp_limits,
            times,
        )
        .await
        {
            Ok(r) => r,
            Err(ReadHeadError::Stale(e)) => {
                if conn.is_reused() && !stale_retry_used && body_complete && head.is_idempotent() {
                    tracing::debug!(upstream = %group.name, "stale pooled connection: {e}; retrying on a fresh one");
                    stale_retry_used = true;
                    continue;
                }
                group.report_failure(idx);
                return fail(client, group, &head, &body, Failure::Error(e)).await;
            }
            Err(ReadHeadError::Fail(f)) => {
                group.report_failure(idx);
                return fail(client, group, &head, &body, f).await;
            }
            Err(ReadHeadError::ClientGone) => return (0, ConnAfter::Close),
        };
        if sent == Sent::Partial && resp.status() == 101 {
            // A tunnel cannot start in the middle of a request body.
            group.report_failure(idx);
            let e = HttpError::upstream(ErrorKind::InvalidStatus);
            return fail(client, group, &head, &body, Failure::BadResponse(e)).await;
        }
        if let Err(e) = http::check_codings_deliverable(&resp, head.version()) {
            // Not the backend's fault (it was spoken to in HTTP/1.1): no health report.
            return fail(client, group, &head, &body, Failure::BadResponse(e)).await;
        }
        group.report_success(idx);
        let status = resp.status();
        let relayed = relay_response(client, gw, conn, ubuf, &head, resp, times, sent).await;
        let (after, clean) = match relayed {
            Ok(r) => r,
            Err(f) => {
                group.report_failure(idx);
                return fail(client, group, &head, &body, f).await;
            }
        };
        drop(inflight);
        let outcome = if clean {
            UpstreamOutcome::Ok
        } else {
            UpstreamOutcome::Error
        };
        client.shard.metrics.upstream(&group.name, outcome);
        return (status, after);
    }
}

/// Whether the backend left something to read after writing the request to it failed (`f`):
/// bytes (an early response, see the module doc) or a FIN/RST that reading will report.
///
/// Reading then either finds a response head, relayed to the client, or fails like the write
/// did (502); a write that timed out on a backend with nothing to say stays a 504 without
/// another wait.
fn answered_early(conn: &PooledConn, f: &Failure) -> bool {
    let early = !conn.stream_ref().is_quiet();
    if early {
        tracing::debug!("writing the request failed ({f:?}); reading the backend's early answer");
    }
    early
}

/// Splits every complete piece of body already in `buf` off it (zero copy).
fn take_buffered_body(
    body: &mut BodyDecoder,
    buf: &mut BytesMut,
    parts: &mut Vec<Bytes>,
) -> Result<(), HttpError> {
    // Bounded: each pass takes at least one byte off `buf` or stops.
    while !body.is_done() {
        match body.next_raw(buf)? {
            Some(b) => parts.push(b),
            None => break,
        }
    }
    Ok(())
}

/// Writes the request head and the buffered body to the backend in one vectored write.
async fn send_request(
    conn: &mut PooledConn,
    req_head: &Bytes,
    body_parts: &[Bytes],
    limit: Duration,
) -> Result<(), Failure> {
    let mut out = Vec::with_capacity(1 + body_parts.len());
    out.push(req_head.clone());
    out.extend(body_parts.iter().cloned());
    match rio::timeout(limit, conn.stream().write_vectored_all(out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Reads the rest of the request body from the client and writes it to the backend, piece by
/// piece, never holding more than one read's worth.
async fn stream_request_body(
    client: &mut Client,
    conn: &mut PooledConn,
    body: &mut BodyDecoder,
    times: Deadlines,
) -> Result<(), BodyFailure> {
    // Bounded: every pass reads at least one byte within `client_idle`, and the decoder's limit
    // (`max_body_bytes`) caps the total.
    while !body.is_done() {
        if client.buf.capacity() - client.buf.len() < CLIENT_BODY_READ / 2 {
            client.buf.reserve(CLIENT_BODY_READ);
        }
        // `read_more` is bounded by `client_idle` itself and marks the timeout, so the
        // connection loop answers 408; a second, equal timer here would race it.
        match client.read_more().await {
            Ok(n) if n > 0 => {}
            _ => return Err(BodyFailure::ClientGone),
        }
        let mut parts = Vec::new();
        take_buffered_body(body, &mut client.buf, &mut parts)
            .map_err(BodyFailure::ClientInvalid)?;
        if !parts.is_empty() {
            match rio::timeout(times.upstream, conn.stream().write_vectored_all(parts)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BodyFailure::Upstream(Failure::Error(e))),
                Err(_) => return Err(BodyFailure::Upstream(Failure::Timeout)),
            }
        }
    }
    Ok(())
}

/// How reading the response head failed.
enum ReadHeadError {
    /// The connection closed or reset before any response byte: maybe a stale pooled connection.
    Stale(io::Error),
    /// Any other upstream failure (after some bytes, timeout, malformed head).
    Fail(Failure),
    /// Forwarding a 1xx to the client failed: the client is gone.
    ClientGone,
}

/// Reads the backend's final response head (or the `101` that starts a tunnel) into `ubuf`.
///
/// Interim responses follow RFC 9110 §15.2 ([`ResponseHead::interim`]): forwarded to an
/// HTTP/1.1 client (rewritten like any head), dropped for an HTTP/1.0 client and for a `100` the
/// gateway already sent itself; a `101` the client did not ask for is a bad response. The whole
/// head must arrive within `upstream_response`.
#[allow(clippy::too_many_arguments)]
async fn read_response_head(
    client: &mut Stream,
    sent: &mut u64,
    scratch: &mut BytesMut,
    upstream: &mut Stream,
    ubuf: &mut BytesMut,
    req: &RequestHead,
    sent_continue: bool,
    limits: &Limits,
    times: Deadlines,
) -> Result<ResponseHead, ReadHeadError> {
    let mut scanner = HeadScanner::new();
    let mut got_any = false;
    let mut interim = 0usize;
    let deadline = Instant::now() + times.upstream;
    // Bounded: every pass parses a head, or reads at least one byte before `deadline`.
    loop {
        if !ubuf.is_empty() {
            match http::parse_response_head(ubuf, &mut scanner, limits, req.method()) {
                Ok(Status::Complete(resp)) => {
                    match resp.interim(req.version(), req.upgrade().is_some(), sent_continue) {
                        Interim::Final | Interim::SwitchProtocols => return Ok(resp),
                        Interim::Unexpected => {
                            return Err(ReadHeadError::Fail(Failure::BadResponse(
                                HttpError::upstream(ErrorKind::InvalidStatus),
                            )));
                        }
                        Interim::Skip => {}
                        Interim::Forward => {
                            scratch.clear();
                            http::write_forward_response_head(
                                scratch,
                                &resp,
                                req.version(),
                                true,
                                Some(&crate::clock::http_date()),
                            );
                            let out = scratch.split().freeze();
                            *sent += out.len() as u64;
                            match rio::timeout(times.client, client.write_all(out)).await {
                                Ok(Ok(())) => {}
                                _ => return Err(ReadHeadError::ClientGone),
                            }
                        }
                    }
                    interim += 1;
                    if interim > MAX_INTERIM_HEADS {
                        return Err(ReadHeadError::Fail(Failure::BadResponse(
                            HttpError::upstream(ErrorKind::InvalidStatus),
                        )));
                    }
                    scanner.reset();
                    continue;
                }
                Ok(Status::Partial) => {}
                Err(e) => return Err(ReadHeadError::Fail(Failure::BadResponse(e))),
            }
        }
        let limit = deadline.saturating_duration_since(Instant::now());
        let res = match read_upstream(upstream, ubuf, limit).await {
            Ok(r) => r,
            Err(_) => return Err(ReadHeadError::Fail(Failure::Timeout)),
        };
        let e = match res {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed before responding",
            ),
            Ok(_) => {
                got_any = true;
                continue;
            }
            Err(e) => e,
        };
        return Err(if got_any {
            ReadHeadError::Fail(Failure::Error(e))
        } else {
            ReadHeadError::Stale(e)
        });
    }
}

/// One read from the backend into the spare capacity of `ubuf`, within `limit`.
async fn read_upstream(
    upstream: &mut Stream,
    ubuf: &mut BytesMut,
    limit: Duration,
) -> Result<io::Result<usize>, rio::Elapsed> {
    if ubuf.capacity() - ubuf.len() < 1024 {
        // Reclaims the front of the allocation once the pieces written earlier are dropped.
        ubuf.reserve(UPSTREAM_READ_BUF);
    }
    let buf = std::mem::take(ubuf);
    // On timeout the buffer goes with the cancelled read and `ubuf` stays empty: the connection
    // is closed after any timeout anyway (a cancelled read may have consumed bytes).
    let (res, buf) = rio::timeout(limit, upstream.read(buf)).await?;
    audit::read(&buf);
    *ubuf = buf;
    Ok(res)
}

/// Sends the response head and streams its body to the client, or tunnels after a `101`.
/// Returns what happens to the client connection and whether the exchange completed cleanly.
///
/// # Errors
/// The response body's framing was invalid before any byte was written to the client: the
/// caller answers 502 instead (the backend connection is already closed).
/// The backend connection goes back to its pool only when the body ended cleanly, the backend
/// allows reuse, no byte beyond the response was read (honouring `Keep-Alive: timeout=`), and the
/// backend got the whole request (`sent`); an early answer also closes the client connection.
#[allow(clippy::too_many_arguments)]
async fn relay_response(
    client: &mut Client,
    gw: &Gateway,
    mut conn: PooledConn,
    mut ubuf: BytesMut,
    req: &RequestHead,
    resp: ResponseHead,
    times: Deadlines,
    sent: Sent,
) -> Result<(ConnAfter, bool), Failure> {
    let keep_client = sent == Sent::Whole && req.keep_alive() && !client.shard.is_draining();
    client.scratch.clear();
    let plan = http::write_forward_response_head(
        &mut client.scratch,
        &resp,
        req.version(),
        keep_client,
        Some(&crate::clock::http_date()),
    );
    let head_bytes = client.take_scratch();

    if resp.status() == 101 {
        // `read_response_head` only lets a 101 through when the client asked to upgrade.
        let linger = gw.config.timeouts.client_idle;
        let leftover_client = client.buf.split().freeze();
        let ok = tunnel(
            &mut client.stream,
            &mut client.notes.bytes_sent,
            conn.stream(),
            vec![head_bytes, ubuf.split().freeze()],
            leftover_client,
            linger,
            gw.config.timeouts.tunnel_idle,
        )
        .await;
        return Ok((ConnAfter::Close, ok));
    }

    let mut decoder = BodyDecoder::for_response(resp.framing());
    let end = relay_body(
        &mut client.stream,
        &mut client.notes.bytes_sent,
        conn.stream(),
        &mut ubuf,
        &mut decoder,
        plan.body,
        head_bytes,
        times,
    )
    .await;
    Ok(match end {
        BodyEnd::Complete => {
            if sent == Sent::Whole && resp.keep_alive() && ubuf.is_empty() {
                conn.release_reusable(resp.keep_alive_timeout().map(Duration::from_secs));
            }
            // The head's bytes point into the buffer: dropped first, so its room can be reused.
            drop(resp);
            client.shard.read_bufs.put_back(ubuf);
            (plan.client_conn, true)
        }
        BodyEnd::Truncated => {
            // The client must not mistake what it got for the whole response: with a RST it
            // cannot, whatever the framing (a de-chunked HTTP/1.0 body would otherwise end at a
            // plain FIN that looks like a complete until-close body).
            client.stream.set_reset_on_close();
            (ConnAfter::Close, false)
        }
        BodyEnd::ClientGone => (ConnAfter::Close, false),
        BodyEnd::Rejected(e) => return Err(Failure::BadResponse(e)),
    })
}

/// Writes the 101 head (and any bytes read past it) to the client, any bytes the client sent past
/// its request to the backend, then relays both ways until both sides are done.
async fn tunnel(
    client: &mut Stream,
    sent: &mut u64,
    upstream: &mut Stream,
    to_client: Vec<Bytes>,
    to_upstream: Bytes,
    linger: Duration,
    idle: Duration,
) -> bool {
    *sent += to_client.iter().map(|b| b.len() as u64).sum::<u64>();
    if client.write_vectored_all(to_client).await.is_err() {
        return false;
    }
    if !to_upstream.is_empty() && upstream.write_all(to_upstream).await.is_err() {
        return false;
    }
    let moved = rio::TunnelBytes::default();
    let relay = client.tunnel(upstream, linger, &moved);
    // Idle watchdog: a tunnel that moved no byte either way for a whole `idle` period ends (so
    // within 1-2 × `idle` of its last byte); a busy one costs one timer per period.
    let watchdog = async {
        let mut seen = moved.total();
        loop {
            rio::sleep(idle).await;
            let now = moved.total();
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    let outcome = match select(pin!(relay), pin!(watchdog)).await {
        Either::Left((res, _)) => res,
        Either::Right(((), _)) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no byte either way for timeouts.tunnel_idle",
        )),
    };
    *sent += moved.back.get();
    match outcome {
        Ok(()) => {
            tracing::debug!(
                client_to_upstream = moved.there.get(),
                upstream_to_client = moved.back.get(),
                "tunnel closed"
            );
            true
        }
        Err(e) => {
            tracing::debug!("tunnel ended: {e}");
            false
        }
    }
}

/// How a relayed response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// The whole body reached the client.
    Complete,
    /// The backend failed mid-body (closed, reset, stalled, bad framing): the client got a
    /// prefix and must see a truncation.
    Truncated,
    /// Writing to the client failed or stalled.
    ClientGone,
    /// The body's framing was invalid before anything was written to the client: answer 502.
    Rejected(HttpError),
}

/// Streams one response body from `upstream` to `client`: `first` (the head) goes out with the
/// first body bytes in one vectored write, then one write per backend read. Each piece written is
/// a slice of `ubuf`, never a copy.
#[allow(clippy::too_many_arguments)]
async fn relay_body(
    client: &mut Stream,
    sent: &mut u64,
    upstream: &mut Stream,
    ubuf: &mut BytesMut,
    decoder: &mut BodyDecoder,
    mode: BodyMode,
    first: Bytes,
    times: Deadlines,
) -> BodyEnd {
    let mut out = vec![first];
    let mut head_pending = 1usize;
    // Bounded: every pass reads at least one byte from the backend within `upstream_response`,
    // or ends.
    loop {
        let taken = match mode {
            BodyMode::None => Ok(()),
            BodyMode::Raw => pull(decoder, ubuf, &mut out, BodyDecoder::next_raw),
            BodyMode::Decoded => pull(decoder, ubuf, &mut out, BodyDecoder::next_data),
        };
        let done = mode == BodyMode::None || decoder.is_done();
        if let Err(e) = taken
            && head_pending == 1
        {
            // Nothing reached the client yet (the head goes out with the first body bytes):
            // the backend's response is simply bad, and the client can get a clean 502.
            return BodyEnd::Rejected(e);
        }
        if !out.is_empty() {
            audit::written(&out[head_pending..]);
            head_pending = 0;
            let pieces = std::mem::take(&mut out);
            *sent += pieces.iter().map(|b| b.len() as u64).sum::<u64>();
            if !matches!(
                rio::timeout(times.client, client.write_vectored_all(pieces)).await,
                Ok(Ok(()))
            ) {
                return BodyEnd::ClientGone;
            }
        }
        if let Err(e) = taken {
            tracing::debug!("bad response body from upstream: {e}");
            return BodyEnd::Truncated;
        }
        if done {
            return BodyEnd::Complete;
        }
        match read_upstream(upstream, ubuf, times.upstream).await {
            Ok(Ok(0)) => {
                // EOF: the end of an until-close body, a truncation for any other.
                return if decoder.eof().is_ok() {
                    BodyEnd::Complete
                } else {
                    BodyEnd::Truncated
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return BodyEnd::Truncated,
        }
    }
}

/// Takes every body piece `ubuf` holds, in one mode (`next_raw` or `next_data`).
fn pull(
    d: &mut BodyDecoder,
    buf: &mut BytesMut,
    out: &mut Vec<Bytes>,
    next: fn(&mut BodyDecoder, &mut BytesMut) -> Result<Option<Bytes>, HttpError>,
) -> Result<(), HttpError> {
    // Bounded: each pass takes at least one byte off `buf` or stops.
    while !d.is_done() {
        match next(d, buf)? {
            Some(b) => out.push(b),
            None => break,
        }
    }
    Ok(())
}

/// Counts one failed attempt in the upstream metrics.
fn count(client: &Client, group: &UpstreamGroup, f: &Failure) {
    let (_, _, outcome) = f.status_and_code();
    client.shard.metrics.upstream(&group.name, outcome);
}

/// Answers the client for a failed upstream exchange. The client connection stays open when the
/// request was read whole and the client wants keepalive; an unread body forces a close.
async fn fail(
    client: &mut Client,
    group: &UpstreamGroup,
    req: &RequestHead,
    body: &BodyDecoder,
    f: Failure,
) -> (u16, ConnAfter) {
    let (status, code, _) = f.status_and_code();
    match &f {
        Failure::Error(e) => tracing::debug!(upstream = %group.name, "upstream error: {e}"),
        Failure::BadResponse(e) => {
            tracing::debug!(upstream = %group.name, "bad upstream response: {e}")
        }
        _ => {}
    }
    count(client, group, &f);
    let after = if req.keep_alive() && body.is_done() && !client.shard.is_draining() {
        ConnAfter::KeepAlive
    } else {
        ConnAfter::Close
    };
    // All endpoints ejected: tell the client when the first one comes back (RFC 9110 §10.2.3).
    let retry_after = match f {
        Failure::Unavailable => group
            .retry_after()
            .filter(|d| !d.is_zero())
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        _ => None,
    };
    let retry_text = retry_after.map(|s| s.to_string());
    let extra: Vec<(&str, &str)> = retry_text
        .as_deref()
        .map(|s| vec![("Retry-After", s)])
        .unwrap_or_default();
    match client
        .send_error(status, code, Some(&group.name), after, &extra)
        .await
    {
        Ok(()) => (status, after),
        Err(_) => (status, ConnAfter::Close),
    }
}

/// Answers a client whose request body was invalid (400/413/501), then closes.
async fn client_error(client: &mut Client, e: HttpError) -> (u16, ConnAfter) {
    let status = e.status();
    let _ = client
        .send_error(status, e.reason(), None, ConnAfter::Close, &[])
        .await;
    (status, ConnAfter::Close)
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
