//! Forwarding one request to one upstream endpoint over a pooled keepalive connection.
//!
//! Phases, each a small function: pick endpoint → checkout → send head and body → receive the
//! response head → relay head and body to the client → check the connection back in.
//!
//! Bodies are never copied: the `Bytes` split off one side's read buffer is the `Bytes` written to
//! the other side. The only copy is the rewritten head.
//!
//! Retry rule (DESIGN.md): a request that fails on a *reused* connection before any response byte
//! arrived is retried once on a fresh connection if it is idempotent or its body was fully
//! buffered and never streamed. A connect failure (nothing sent) moves on to the next endpoint.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::conn::{Client, ConnAfter};
use crate::gateway::Gateway;
use crate::http::{
    self, BodyDecoder, BodyFraming, HeadScanner, HttpError, Limits, RequestHead, ResponseHead,
    Status, Version,
};
use crate::io as rio;
use crate::metrics::UpstreamOutcome;
use crate::upstream::{CheckoutError, PooledConn, UpstreamGroup};

/// Size of a backend connection's read buffer.
const UPSTREAM_READ_BUF: usize = 16 * 1024;

/// Most bytes of body read ahead from either side before they are written out: bounds memory per
/// connection when one side is faster than the other.
const MAX_BUFFERED_BODY: usize = 256 * 1024;

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
    /// The client went away or sent something invalid mid-body: no answer possible or needed.
    Client(Option<HttpError>),
}

impl Failure {
    fn status_and_code(&self) -> (u16, &'static str, UpstreamOutcome) {
        match self {
            Failure::Unavailable => (503, "upstream_unavailable", UpstreamOutcome::Unavailable),
            Failure::Error(_) => (502, "upstream_error", UpstreamOutcome::Error),
            Failure::Timeout => (504, "upstream_timeout", UpstreamOutcome::Timeout),
            Failure::BadResponse(_) => (502, "upstream_bad_response", UpstreamOutcome::BadResponse),
            Failure::Client(_) => (400, "bad_request", UpstreamOutcome::Error),
        }
    }
}

/// Forwards `head` (and its body from `client.buf` / the client stream) to `group`, relays the
/// answer. Returns the status sent to the client and what happens to the client connection.
pub async fn forward(
    client: &mut Client,
    gw: &Gateway,
    group: &UpstreamGroup,
    head: RequestHead,
) -> (u16, ConnAfter) {
    let limits = &gw.config.limits;
    let framing = head.framing();
    if let BodyFraming::ContentLength(n) = framing
        && n > limits.max_body_bytes
    {
        let _ = client
            .send_error(413, "body_too_large", None, ConnAfter::Close, &[])
            .await;
        return (413, ConnAfter::Close);
    }
    // Answer `Expect: 100-continue` ourselves (the Expect header is then not forwarded), unless
    // the body is already here.
    let answer_continue =
        head.expects_continue() && framing != BodyFraming::Empty && client.buf.is_empty();
    if answer_continue
        && client
            .stream
            .write_all(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"))
            .await
            .is_err()
    {
        return (0, ConnAfter::Close);
    }

    // Take what of the body is already buffered; if that is all of it, the request can be resent.
    let mut body = BodyDecoder::new(framing).with_limit(limits.max_body_bytes);
    let mut body_parts: Vec<Bytes> = Vec::new();
    let mut body_seen: u64 = 0;
    if let Err(e) = take_buffered_body(&mut body, &mut client.buf, &mut body_parts, &mut body_seen)
    {
        return client_error(client, e).await;
    }
    if body_seen > limits.max_body_bytes {
        let _ = client
            .send_error(413, "body_too_large", None, ConnAfter::Close, &[])
            .await;
        return (413, ConnAfter::Close);
    }
    let body_complete = body.is_done() || framing == BodyFraming::Empty;
    let retryable = head.is_idempotent() || body_complete;

    let mut fwd = http::Forwarded::new(client.ip, group.name.as_bytes());
    fwd.answered_continue = answer_continue;
    client.scratch.clear();
    http::write_forward_request_head(&mut client.scratch, &head, &fwd);
    let req_head = client.take_scratch();

    let mut tried: Vec<usize> = Vec::new();
    let mut stale_retry_used = false;
    let mut fresh_only = false;
    loop {
        let Some((idx, inflight)) = group.pick(&tried) else {
            let f = Failure::Unavailable;
            return fail(client, gw, group, f).await;
        };
        let pool = inflight.member().pool.clone();
        client.notes.upstream = Some(pool.clone());
        let checkout = if fresh_only {
            pool.checkout_fresh().await
        } else {
            pool.checkout().await
        };
        let mut conn = match checkout {
            Ok(c) => c,
            Err(CheckoutError::Exhausted) => {
                return fail(client, gw, group, Failure::Unavailable).await;
            }
            Err(e) => {
                group.report_failure(idx);
                let f = match e {
                    CheckoutError::ConnectTimeout => Failure::Timeout,
                    CheckoutError::Connect(e) => Failure::Error(e),
                    CheckoutError::Exhausted => Failure::Unavailable,
                };
                tracing::debug!(upstream = %group.name, endpoint = %pool.endpoint(), "connect failed: {f:?}");
                gw_metrics(client, group, &f);
                tried.push(idx);
                // Nothing was sent: another endpoint may take it.
                if tried.len() < group.members().len() {
                    continue;
                }
                return fail(client, gw, group, f).await;
            }
        };

        // Send head + buffered body in one vectored write.
        let mut out = Vec::with_capacity(1 + body_parts.len());
        out.push(req_head.clone());
        out.extend(body_parts.iter().cloned());
        let sent = conn.stream().write_vectored_all(out).await;
        if let Err(e) = sent {
            if conn.is_reused() && !stale_retry_used && retryable {
                stale_retry_used = true;
                fresh_only = true;
                continue;
            }
            group.report_failure(idx);
            return fail(client, gw, group, Failure::Error(e)).await;
        }
        if !body_complete {
            // Stream the rest of the body; from here on the request cannot be resent.
            if let Err(f) = stream_request_body(
                client,
                &mut conn,
                &mut body,
                limits.max_body_bytes,
                body_seen,
            )
            .await
            {
                if let Failure::Client(Some(e)) = &f {
                    return client_error(client, *e).await;
                }
                if matches!(f, Failure::Client(None)) {
                    return (0, ConnAfter::Close);
                }
                if let Failure::Client(_) = f {
                    return (0, ConnAfter::Close);
                }
                group.report_failure(idx);
                return fail(client, gw, group, f).await;
            }
        }

        let timeouts = &gw.config.timeouts;
        let resp_limits = Limits {
            max_head_bytes: limits.max_head_bytes.max(16 * 1024),
            max_headers: limits.max_headers,
        };
        let mut ubuf = BytesMut::with_capacity(UPSTREAM_READ_BUF);
        let resp = match read_response_head(
            client,
            &mut conn,
            &mut ubuf,
            &head,
            &resp_limits,
            timeouts.upstream_response,
        )
        .await
        {
            Ok(r) => r,
            Err(ReadHeadError::Stale(e)) => {
                if conn.is_reused() && !stale_retry_used && retryable {
                    stale_retry_used = true;
                    fresh_only = true;
                    continue;
                }
                group.report_failure(idx);
                return fail(client, gw, group, Failure::Error(e)).await;
            }
            Err(ReadHeadError::Fail(f)) => {
                if !matches!(f, Failure::Client(_)) {
                    group.report_failure(idx);
                }
                if let Failure::Client(_) = f {
                    return (0, ConnAfter::Close);
                }
                return fail(client, gw, group, f).await;
            }
        };
        group.report_success(idx);
        let status = resp.status();
        let result = relay_response(client, gw, conn, ubuf, &head, resp).await;
        drop(inflight);
        client.shard.metrics.upstream(
            &group.name,
            if result.1 {
                UpstreamOutcome::Ok
            } else {
                UpstreamOutcome::Error
            },
        );
        return (status, result.0);
    }
}

/// Splits every complete piece of body already in `buf` off it (zero copy).
fn take_buffered_body(
    body: &mut BodyDecoder,
    buf: &mut BytesMut,
    parts: &mut Vec<Bytes>,
    seen: &mut u64,
) -> Result<(), HttpError> {
    while !body.is_done() {
        match body.next_raw(buf)? {
            Some(b) => {
                *seen += b.len() as u64;
                parts.push(b);
            }
            None => break,
        }
    }
    Ok(())
}

/// Reads the rest of the request body from the client and writes it to the backend, piece by
/// piece, never holding more than one read's worth.
async fn stream_request_body(
    client: &mut Client,
    conn: &mut PooledConn,
    body: &mut BodyDecoder,
    max_body: u64,
    mut seen: u64,
) -> Result<(), Failure> {
    while !body.is_done() {
        match client.read_more().await {
            Ok(0) | Err(_) => return Err(Failure::Client(None)),
            Ok(_) => {}
        }
        let mut parts = Vec::new();
        take_buffered_body(body, &mut client.buf, &mut parts, &mut seen)
            .map_err(|e| Failure::Client(Some(e)))?;
        if seen > max_body {
            return Err(Failure::Client(Some(HttpError::client(
                http::ErrorKind::BodyTooLarge,
            ))));
        }
        if !parts.is_empty() {
            conn.stream()
                .write_vectored_all(parts)
                .await
                .map_err(Failure::Error)?;
        }
    }
    Ok(())
}

enum ReadHeadError {
    /// The connection closed or reset before any response byte: maybe a stale pooled connection.
    Stale(io::Error),
    Fail(Failure),
}

/// Reads the final response head; forwards 103 Early Hints and skips 100 Continue on the way.
async fn read_response_head(
    client: &mut Client,
    conn: &mut PooledConn,
    ubuf: &mut BytesMut,
    req: &RequestHead,
    limits: &Limits,
    limit: Duration,
) -> Result<ResponseHead, ReadHeadError> {
    let mut scanner = HeadScanner::new();
    let mut got_any = false;
    let deadline = Instant::now() + limit;
    loop {
        if !ubuf.is_empty() {
            match http::parse_response_head(ubuf, &mut scanner, limits, req.method()) {
                Ok(Status::Complete(resp)) => {
                    if resp.is_informational() && resp.status() != 101 {
                        scanner.reset();
                        if resp.status() == 103 && req.version() == Version::Http11 {
                            let _ = client.write_all(resp.as_bytes().clone()).await;
                        }
                        continue;
                    }
                    return Ok(resp);
                }
                Ok(Status::Partial) => {}
                Err(e) => return Err(ReadHeadError::Fail(Failure::BadResponse(e))),
            }
        }
        if ubuf.capacity() - ubuf.len() < 1024 {
            ubuf.reserve(UPSTREAM_READ_BUF);
        }
        let buf = std::mem::take(ubuf);
        let read = rio::timeout_at(deadline, conn.stream().read(buf)).await;
        let (res, buf) = match read {
            Ok(r) => r,
            Err(_) => return Err(ReadHeadError::Fail(Failure::Timeout)),
        };
        *ubuf = buf;
        match res {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed before responding",
                );
                return Err(if got_any {
                    ReadHeadError::Fail(Failure::Error(e))
                } else {
                    ReadHeadError::Stale(e)
                });
            }
            Err(e) => {
                return Err(if got_any {
                    ReadHeadError::Fail(Failure::Error(e))
                } else {
                    ReadHeadError::Stale(e)
                });
            }
            Ok(_) => got_any = true,
        }
    }
}

/// Sends the response head and streams its body to the client. Returns what happens to the client
/// connection and whether the exchange completed cleanly (for metrics).
async fn relay_response(
    client: &mut Client,
    gw: &Gateway,
    mut conn: PooledConn,
    mut ubuf: BytesMut,
    req: &RequestHead,
    resp: ResponseHead,
) -> (ConnAfter, bool) {
    let framing = resp.framing();
    let keep_client = req.keep_alive() && !client.shard.is_draining();
    client.scratch.clear();
    let plan =
        http::write_forward_response_head(&mut client.scratch, &resp, req.version(), keep_client);
    let head_bytes = client.take_scratch();
    let dechunk = plan.body == http::BodyMode::Decoded;
    let after = plan.client_conn;

    let mut decoder = BodyDecoder::for_response(framing);
    let mut parts = vec![head_bytes];
    let idle = gw.config.timeouts.upstream_response;
    loop {
        let mut buffered = 0usize;
        let take = if dechunk {
            pull_data(&mut decoder, &mut ubuf, &mut parts, &mut buffered)
        } else {
            pull_raw(&mut decoder, &mut ubuf, &mut parts, &mut buffered)
        };
        if let Err(e) = take {
            tracing::debug!("bad response body from upstream: {e}");
            let _ = client.write_vectored_all(parts).await;
            client.stream.set_reset_on_close();
            return (ConnAfter::Close, false);
        }
        if decoder.is_done() || plan.body == http::BodyMode::None {
            if client.write_vectored_all(parts).await.is_err() {
                return (ConnAfter::Close, false);
            }
            // Clean end: the backend connection may go back to the pool if nothing extra arrived.
            if resp.keep_alive() && ubuf.is_empty() {
                conn.release_reusable(resp.keep_alive_timeout().map(Duration::from_secs));
            }
            return (after, true);
        }
        if !parts.is_empty() && (buffered >= MAX_BUFFERED_BODY || ubuf.is_empty()) {
            let out = std::mem::take(&mut parts);
            if client.write_vectored_all(out).await.is_err() {
                return (ConnAfter::Close, false);
            }
        }
        if ubuf.capacity() - ubuf.len() < 1024 {
            ubuf.reserve(UPSTREAM_READ_BUF);
        }
        let buf = std::mem::take(&mut ubuf);
        let (res, buf) = match rio::timeout(idle, conn.stream().read(buf)).await {
            Ok(r) => r,
            Err(_) => {
                // Backend stalled mid-body: the client sees a truncation, never a fake end.
                client.stream.set_reset_on_close();
                return (ConnAfter::Close, false);
            }
        };
        ubuf = buf;
        match res {
            Ok(0) => {
                if decoder.eof().is_ok() {
                    // Read-until-close body complete.
                    let _ = client.write_vectored_all(std::mem::take(&mut parts)).await;
                    return (ConnAfter::Close, true);
                }
                let _ = client.write_vectored_all(std::mem::take(&mut parts)).await;
                client.stream.set_reset_on_close();
                return (ConnAfter::Close, false);
            }
            Err(_) => {
                let _ = client.write_vectored_all(std::mem::take(&mut parts)).await;
                client.stream.set_reset_on_close();
                return (ConnAfter::Close, false);
            }
            Ok(_) => {}
        }
    }
}

fn pull_raw(
    d: &mut BodyDecoder,
    buf: &mut BytesMut,
    parts: &mut Vec<Bytes>,
    total: &mut usize,
) -> Result<(), HttpError> {
    while !d.is_done() {
        match d.next_raw(buf)? {
            Some(b) => {
                *total += b.len();
                parts.push(b);
            }
            None => break,
        }
    }
    Ok(())
}

fn pull_data(
    d: &mut BodyDecoder,
    buf: &mut BytesMut,
    parts: &mut Vec<Bytes>,
    total: &mut usize,
) -> Result<(), HttpError> {
    while !d.is_done() {
        match d.next_data(buf)? {
            Some(b) => {
                *total += b.len();
                parts.push(b);
            }
            None => break,
        }
    }
    Ok(())
}

fn gw_metrics(client: &Client, group: &UpstreamGroup, f: &Failure) {
    let (_, _, outcome) = f.status_and_code();
    client.shard.metrics.upstream(&group.name, outcome);
}

/// Answers the client for a failed upstream exchange and closes the client connection if the
/// request body may be left unread.
async fn fail(
    client: &mut Client,
    gw: &Gateway,
    group: &UpstreamGroup,
    f: Failure,
) -> (u16, ConnAfter) {
    let _ = gw;
    let (status, code, outcome) = f.status_and_code();
    match &f {
        Failure::Error(e) => tracing::debug!(upstream = %group.name, "upstream error: {e}"),
        Failure::BadResponse(e) => {
            tracing::debug!(upstream = %group.name, "bad upstream response: {e}")
        }
        _ => {}
    }
    client.shard.metrics.upstream(&group.name, outcome);
    // The request body may be partly unread: closing is the only safe framing.
    let after = ConnAfter::Close;
    let _ = client
        .send_error(status, code, Some(&group.name), after, &[])
        .await;
    (status, after)
}

async fn client_error(client: &mut Client, e: HttpError) -> (u16, ConnAfter) {
    let status = e.status();
    let _ = client
        .send_error(status, e.reason(), None, ConnAfter::Close, &[])
        .await;
    (status, ConnAfter::Close)
}
