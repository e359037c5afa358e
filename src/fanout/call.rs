//! Building and running the calls of a fan-out: every call's request head (one buffer for all),
//! endpoint choice with the proxy's retry rules, and reading one response into zero-copy body
//! pieces. Never touches the client connection.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::answer::is_json;
use super::{CALL_READ_BUF, CallResult, FanoutPlan, MAX_CALL_BODY, MAX_INTERIM_HEADS};
use crate::audit;
use crate::http::{
    self, BodyDecoder, HeadScanner, Limits, Method, RequestHead, ResponseHead, Status, Version,
};
use crate::upstream::pool::PooledConn;
use crate::upstream::{CheckoutError, UpstreamGroup};

/// Builds every call's request head into one buffer (one allocation for all of them), split into
/// one `Bytes` per call: `GET <path>[?<client query>] HTTP/1.1`, Host (the upstream's name), the
/// forwarded headers, X-Forwarded-For, X-Forwarded-Proto, Via.
///
/// Calls are always GET, also for a client's HEAD: the answer to HEAD must carry the same
/// Content-Length as the GET (RFC 9110 §9.3.2), which needs the bodies.
pub(super) fn call_requests(
    plan: &FanoutPlan,
    head: &RequestHead,
    ip: IpAddr,
    upstreams: &[UpstreamGroup],
) -> Vec<Bytes> {
    let mut out = BytesMut::with_capacity(256 * plan.calls.len());
    let mut reqs = Vec::with_capacity(plan.calls.len());
    for call in &plan.calls {
        let mut w = http::HeadWriter::new(&mut out);
        w.request_line(b"GET", call.path.as_bytes(), head.query());
        w.header(b"Host", upstreams[call.upstream].name.as_bytes());
        for (name, value) in head.headers() {
            if call
                .forward_headers
                .iter()
                .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
                && !named_in_connection(head, name)
            {
                w.header(name, value);
            }
        }
        // As the proxy does: every X-Forwarded-For / Via element the client sent, then ours.
        out.put_slice(b"X-Forwarded-For: ");
        put_list(&mut out, head, b"x-forwarded-for");
        {
            use std::fmt::Write as _;
            let _ = write!(out, "{ip}");
        }
        out.put_slice(b"\r\nX-Forwarded-Proto: http\r\nVia: ");
        put_list(&mut out, head, b"via");
        out.put_slice(match head.version() {
            Version::Http10 => b"1.0 ringway\r\n\r\n",
            Version::Http11 => b"1.1 ringway\r\n\r\n",
        });
        reqs.push(out.split().freeze());
    }
    reqs
}

/// Appends every value of the client's `name` fields, each followed by `", "`.
fn put_list(out: &mut BytesMut, head: &RequestHead, name: &[u8]) {
    for (n, v) in head.headers() {
        if n.eq_ignore_ascii_case(name) {
            let v = v.trim_ascii();
            if !v.is_empty() {
                out.put_slice(v);
                out.put_slice(b", ");
            }
        }
    }
}

/// Whether the client's Connection header names `field` (then it is hop-by-hop for this message,
/// RFC 9110 §7.6.1, and is not forwarded).
fn named_in_connection(head: &RequestHead, field: &[u8]) -> bool {
    head.headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .any(|opt| opt.trim_ascii().eq_ignore_ascii_case(field))
}

/// What went wrong in one exchange on one connection.
enum ExchangeError {
    /// The write failed or the connection closed before any response byte: a reused connection
    /// may just have been stale, so the call may be resent once on a fresh one.
    NoResponse,
    /// Reset or EOF mid-response.
    Error,
    /// Malformed response.
    BadResponse,
}

/// Runs one call to completion (the caller bounds it in time).
///
/// Endpoint choice as in the proxy: a connect failure (nothing sent) moves on to another
/// endpoint; a reused connection that fails before any response byte is retried once on a fresh
/// connection (a GET is idempotent).
pub(super) async fn run_call(group: &UpstreamGroup, req: Bytes, limits: &Limits) -> CallResult {
    let mut tried: Vec<usize> = Vec::new();
    let mut fresh = false;
    let mut last_failure = CallResult::Unavailable;
    // Bounded: each turn returns, adds an endpoint to `tried` (at most `members().len()`), or
    // uses the single stale-connection retry.
    loop {
        let Some((idx, inflight)) = group.pick(&tried) else {
            return last_failure;
        };
        let pool = inflight.member().pool.clone();
        let checkout = if fresh {
            pool.checkout_fresh().await
        } else {
            pool.checkout().await
        };
        let mut conn = match checkout {
            Ok(c) => c,
            Err(CheckoutError::Exhausted) => return CallResult::Unavailable,
            Err(e) => {
                group.report_failure(idx);
                tracing::debug!(upstream = %group.name, endpoint = %pool.endpoint(), "fan-out call: {e}");
                last_failure = match e {
                    CheckoutError::ConnectTimeout => CallResult::Timeout,
                    _ => CallResult::Error,
                };
                tried.push(idx);
                continue;
            }
        };
        let (resp, body, reusable) = match exchange(&mut conn, req.clone(), limits).await {
            Ok(r) => r,
            Err(ExchangeError::NoResponse) if conn.is_reused() && !fresh => {
                fresh = true;
                continue;
            }
            Err(e) => {
                group.report_failure(idx);
                return match e {
                    ExchangeError::BadResponse => CallResult::BadResponse,
                    _ => CallResult::Error,
                };
            }
        };
        group.report_success(idx);
        if reusable {
            conn.release_reusable(resp.keep_alive_timeout().map(Duration::from_secs));
        }
        let status = resp.status();
        if !(200..300).contains(&status) {
            return CallResult::Status(status);
        }
        let json = resp.is_json();
        let empty = body.iter().all(Bytes::is_empty);
        if json && !empty && !is_json(&body) {
            tracing::debug!(upstream = %group.name, "fan-out call: JSON-typed body is not JSON");
            return CallResult::BadResponse;
        }
        return CallResult::Ok { status, body, json };
    }
}

/// Sends `req` on `conn` and reads the whole response: head, body pieces, and whether the
/// connection is clean for reuse. It is not released here, so on any error it is dropped and
/// closed.
async fn exchange(
    conn: &mut PooledConn,
    req: Bytes,
    limits: &Limits,
) -> Result<(ResponseHead, Vec<Bytes>, bool), ExchangeError> {
    if conn.stream().write_all(req).await.is_err() {
        return Err(ExchangeError::NoResponse);
    }
    let mut buf = BytesMut::with_capacity(CALL_READ_BUF);
    let mut scanner = HeadScanner::new();
    let mut got_any = false;
    let mut interim = 0;
    // Bounded: each turn parses a head or reads at least one byte, and the scanner refuses a head
    // over `limits.max_head_bytes`; the caller's timeout bounds the time.
    let resp = loop {
        if !buf.is_empty() {
            match http::parse_response_head(&mut buf, &mut scanner, limits, Method::Get) {
                // RFC 9110 §15.2.2: a 101 switches the connection to another protocol; a call
                // never asks for one, so it fails the call (never skipped as an interim head).
                // A body in a coding ringway does not decode cannot be embedded either.
                Ok(Status::Complete(r)) if r.status() == 101 || r.has_transfer_coding() => {
                    return Err(ExchangeError::BadResponse);
                }
                Ok(Status::Complete(r)) if r.is_informational() => {
                    interim += 1;
                    if interim > MAX_INTERIM_HEADS {
                        return Err(ExchangeError::BadResponse);
                    }
                    scanner.reset();
                    continue;
                }
                Ok(Status::Complete(r)) => break r,
                Ok(Status::Partial) => {}
                Err(_) => return Err(ExchangeError::BadResponse),
            }
        }
        match read_more(conn, &mut buf).await {
            Ok(0) | Err(_) if !got_any => return Err(ExchangeError::NoResponse),
            Ok(0) | Err(_) => return Err(ExchangeError::Error),
            Ok(_) => got_any = true,
        }
    };
    let mut decoder = BodyDecoder::for_response(resp.framing()).with_limit(MAX_CALL_BODY);
    let mut body = Vec::new();
    // Bounded: each turn reads at least one byte, and the decoder refuses more than
    // MAX_CALL_BODY bytes of data.
    loop {
        // Zero copy: every piece is split off the read buffer and frozen.
        while let Some(piece) = decoder
            .next_data(&mut buf)
            .map_err(|_| ExchangeError::BadResponse)?
        {
            body.push(piece);
        }
        if decoder.is_done() {
            break;
        }
        match read_more(conn, &mut buf).await {
            Ok(0) => {
                decoder.eof().map_err(|_| ExchangeError::Error)?;
                break;
            }
            Err(_) => return Err(ExchangeError::Error),
            Ok(_) => {}
        }
    }
    // Bytes after the response (unsolicited, or a broken backend) make the connection unusable,
    // though this response is complete.
    let reusable = buf.is_empty() && resp.keep_alive();
    Ok((resp, body, reusable))
}

/// Reads more bytes from the call's connection into `buf` (which keeps spare room, so a read
/// never spins on a full buffer).
async fn read_more(conn: &mut PooledConn, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        // Pieces already split off keep the old allocation alive; only unconsumed bytes (a partial
        // head or chunk-size line, never body data) move to the new one.
        buf.reserve(CALL_READ_BUF);
    }
    let (res, b) = conn.stream().read(std::mem::take(buf)).await;
    *buf = b;
    audit::read(buf);
    res
}
