//! Fan-out aggregation: one client request → every call of the route at once over the shard's
//! pools → one JSON document `{"<name>": <body>, ...}` in declaration order (DESIGN.md "Fan-out
//! contract").
//!
//! Phases, each a small function: [`call_requests`] (one buffer for every call's head) →
//! [`gather`] (all calls concurrently, per-call timeouts, the route deadline, client-gone
//! detection) → [`assemble`] or [`error_body`] → [`write_head`] + [`write_answer`] (one vectored
//! write).
//!
//! The answer body is a `Vec<Bytes>`: literal pieces (`{"ads":`, `,"profile":`, `}`) interleaved
//! with the backends' body `Bytes` exactly as they were split off the read buffers. A JSON body is
//! embedded as is; only a non-JSON body is copied, because it must be escaped into a JSON string.
//! A body whose Content-Type says JSON but which is not valid JSON is a failure of its call (a
//! malformed upstream response), so the document ringway sends is always valid JSON.
//!
//! Failures: an optional call that fails or times out becomes `null` and is named in
//! `Ringway-Partial`; a required one fails the request (502, 503 when no endpoint is available,
//! 504 on timeout) and cancels the others. A client that disconnects cancels everything the same
//! way. Cancelling a call drops its `PooledConn` without `release_reusable`, so its backend
//! connection is closed, never pooled.
//!
//! This module must never copy a JSON body, hold a call past the route deadline, or write to the
//! client before every call has ended.

use std::future::Future;
use std::io::Read;
use std::net::IpAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;

use crate::config::FanoutConfig;
use crate::conn::{Client, ConnAfter, put_u64, reason_phrase};
use crate::gateway::Gateway;
use crate::http::{
    self, BodyDecoder, BodyFraming, HeadScanner, Limits, Method, RequestHead, ResponseHead, Status,
    Version,
};
use crate::io::{self, Stream};
use crate::metrics::{CallOutcome, UpstreamOutcome};
use crate::router::Route;
use crate::upstream::pool::PooledConn;
use crate::upstream::{CheckoutError, UpstreamGroup};

/// How often an in-flight fan-out checks whether its client hung up. One non-blocking
/// `recv(MSG_PEEK)` per tick: cheap, and a read would risk swallowing pipelined bytes.
const CLIENT_GONE_POLL: Duration = Duration::from_millis(50);

/// Most bytes one call's response body may have (the whole body is held until assembly).
const MAX_CALL_BODY: u64 = 8 * 1024 * 1024;

/// Initial (and refill) size of a call's read buffer.
const CALL_READ_BUF: usize = 16 * 1024;

/// Most 1xx heads accepted before a call's final response (a backend looping on 1xx is broken).
const MAX_INTERIM_HEADS: usize = 8;

/// Most buffers handed to one vectored write: the kernel refuses more than UIO_MAXIOV (1024)
/// iovecs in one `writev`/`sendmsg`, and a chunked backend body can be many small pieces.
const MAX_IOVECS: usize = 512;

/// Request fields a call never copies from the client, even when `forward_headers` lists them:
/// ringway writes Host, X-Forwarded-* and Via itself, and the others describe the client's own
/// message (a copied `Content-Length` on the bodiless call would desync the pooled backend
/// connection). Hop-by-hop fields (RFC 9110 §7.6.1) are refused too, see [`FanoutPlan::new`].
const OWN_FIELDS: [&str; 6] = [
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "via",
];

/// One call of a plan.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The key in the answer.
    pub name: String,
    /// Index of its upstream group in the gateway.
    pub upstream: usize,
    /// Path sent to the backend (the client's query string is appended).
    pub path: String,
    /// A failure of a required call fails the whole request.
    pub required: bool,
    /// This call's own timeout (never longer than the route's).
    pub timeout: Duration,
    /// Lowercase names of client request headers forwarded to the backend.
    pub forward_headers: Vec<String>,
    /// The literal that precedes this call's value: `{"name":` or `,"name":`.
    key: Bytes,
}

/// A compiled fan-out route.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// Overall deadline of the request.
    pub timeout: Duration,
    /// Calls in declaration order (the order of keys in the answer).
    pub calls: Vec<CallPlan>,
}

impl FanoutPlan {
    /// Compiles `cfg`; None if a call names an unknown upstream (validation prevents this).
    ///
    /// `forward_headers` entries that ringway writes itself or that are hop-by-hop are dropped
    /// here (see [`OWN_FIELDS`]), so no config can make a call carry the client's framing.
    pub fn new(cfg: &FanoutConfig, upstream_index: impl Fn(&str) -> Option<usize>) -> Option<Self> {
        let mut calls = Vec::with_capacity(cfg.calls.len());
        for (i, c) in cfg.calls.iter().enumerate() {
            // Call names are validated to need no JSON escaping.
            let key = format!("{}\"{}\":", if i == 0 { "{" } else { "," }, c.name);
            calls.push(CallPlan {
                name: c.name.clone(),
                upstream: upstream_index(&c.upstream)?,
                path: c.path.clone(),
                required: c.required,
                timeout: c.timeout.min(cfg.timeout),
                forward_headers: c
                    .forward_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .filter(|h| {
                        !OWN_FIELDS.contains(&h.as_str()) && !http::is_hop_by_hop(h.as_bytes())
                    })
                    .collect(),
                key: Bytes::from(key),
            });
        }
        Some(FanoutPlan {
            timeout: cfg.timeout,
            calls,
        })
    }
}

/// How one call ended.
#[derive(Debug)]
enum CallResult {
    /// 2xx with a body that can be embedded: the body pieces and whether it is JSON.
    Ok {
        status: u16,
        body: Vec<Bytes>,
        json: bool,
    },
    /// A complete response outside 2xx.
    Status(u16),
    /// Connect refused/reset, the connection closed early.
    Error,
    /// Malformed head or body framing, a body over [`MAX_CALL_BODY`], or a JSON-typed body that
    /// is not JSON.
    BadResponse,
    /// Every endpoint ejected, or the pool stayed exhausted for `queue_timeout`.
    Unavailable,
    /// The call's timeout or the route deadline passed (connect timeouts included).
    Timeout,
}

impl CallResult {
    fn is_ok(&self) -> bool {
        matches!(self, CallResult::Ok { .. })
    }

    fn call_outcome(&self) -> CallOutcome {
        match self {
            CallResult::Ok { .. } => CallOutcome::Ok,
            CallResult::Timeout => CallOutcome::Timeout,
            _ => CallOutcome::Error,
        }
    }

    /// For `ringway_upstream_requests_total`: a non-2xx answer is still a good exchange.
    fn upstream_outcome(&self) -> UpstreamOutcome {
        match self {
            CallResult::Ok { .. } | CallResult::Status(_) => UpstreamOutcome::Ok,
            CallResult::Error => UpstreamOutcome::Error,
            CallResult::BadResponse => UpstreamOutcome::BadResponse,
            CallResult::Unavailable => UpstreamOutcome::Unavailable,
            CallResult::Timeout => UpstreamOutcome::Timeout,
        }
    }
}

/// A call that ended, and how long it took.
#[derive(Debug)]
struct Finished {
    result: CallResult,
    took: Duration,
}

/// Results in declaration order; `None` for a call that was cancelled before it ended.
type Results = Vec<Option<Finished>>;

/// How the concurrent phase ended.
enum Gathered {
    /// Every call ended, or a required one failed (its index; the rest were cancelled).
    Done {
        results: Results,
        failed_required: Option<usize>,
    },
    /// The client hung up; every unfinished call was cancelled.
    ClientGone(Results),
}

/// Serves a fan-out request. Returns the status sent and what happens to the client connection.
///
/// The status is 499 (nginx's "client closed request") when the client hung up mid-fan-out:
/// nothing is sent then, the number is only counted in metrics.
pub async fn serve(
    client: &mut Client,
    gw: &Gateway,
    route: &Route,
    plan: &FanoutPlan,
    head: RequestHead,
) -> (u16, ConnAfter) {
    // A request body is never read here: keep the connection only when there is none.
    let after = |client: &Client| {
        if head.keep_alive()
            && matches!(head.framing(), BodyFraming::Empty)
            && !client.shard.is_draining()
        {
            ConnAfter::KeepAlive
        } else {
            ConnAfter::Close
        }
    };
    let method = head.method();
    if !matches!(method, Method::Get | Method::Head) {
        let after = after(client);
        let r = client
            .send_error(
                405,
                "method_not_allowed",
                None,
                after,
                &[("Allow", "GET, HEAD")],
            )
            .await;
        return (405, if r.is_ok() { after } else { ConnAfter::Close });
    }
    let started = Instant::now();
    let deadline = started + plan.timeout;
    let limits = Limits {
        max_head_bytes: gw.config.limits.max_head_bytes.max(16 * 1024),
        max_headers: gw.config.limits.max_headers,
    };
    let reqs = call_requests(plan, &head, client.ip, &gw.upstreams);
    let gathered = gather(
        plan,
        &gw.upstreams,
        reqs,
        limits,
        deadline,
        client_gone(&client.stream, deadline),
    )
    .await;
    let (results, failed_required, gone) = match gathered {
        Gathered::Done {
            results,
            failed_required,
        } => (results, failed_required, false),
        Gathered::ClientGone(results) => (results, None, true),
    };
    let metrics = &client.shard.metrics;
    for (c, r) in plan.calls.iter().zip(&results) {
        let outcome = r.as_ref().map_or(CallOutcome::Cancelled, |f| {
            metrics.upstream(&gw.upstreams[c.upstream].name, f.result.upstream_outcome());
            f.result.call_outcome()
        });
        metrics.fanout_call(&route.label, &c.name, outcome);
    }
    if gone {
        note_outcome(client, || "cancelled".into());
        return (499, ConnAfter::Close);
    }
    // Decided after the calls: a drain that began meanwhile closes the connection.
    let after = after(client);

    let (status, body, partial) = match failed_required {
        Some(i) => {
            let call = &plan.calls[i];
            let (status, code) = match results[i].as_ref().map(|f| &f.result) {
                Some(CallResult::Timeout) => (504, "upstream_timeout"),
                Some(CallResult::Unavailable) => (503, "upstream_unavailable"),
                Some(CallResult::BadResponse) => (502, "upstream_bad_response"),
                _ => (502, "upstream_error"),
            };
            let upstream = &gw.upstreams[call.upstream].name;
            note_outcome(client, || format!("failed:{}", call.name));
            (status, error_body(code, &call.name, upstream), Vec::new())
        }
        None => {
            let (body, partial) = assemble(plan, &results);
            note_outcome(client, || {
                if partial.is_empty() {
                    "ok".into()
                } else {
                    format!("partial:{}", partial.join(","))
                }
            });
            (200, body, partial)
        }
    };
    let len: usize = body.iter().map(Bytes::len).sum();
    client.scratch.clear();
    write_head(
        &mut client.scratch,
        status,
        len,
        plan,
        &results,
        started.elapsed(),
        &partial,
        after,
    );
    let head_bytes = client.take_scratch();
    let head_only = method == Method::Head;
    // Counted as `Client::write_vectored_all` does; the write itself goes through the stream so
    // that it can be batched (see `write_answer`).
    client.notes.bytes_sent += (head_bytes.len() + if head_only { 0 } else { len }) as u64;
    let r = write_answer(&mut client.stream, head_bytes, body, head_only).await;
    (status, if r.is_ok() { after } else { ConnAfter::Close })
}

/// Records the fan-out's outcome for the access log (`ok`, `partial:<names>`, `failed:<call>`,
/// `cancelled` when the client left); the string is built only when the access log is on.
fn note_outcome(client: &mut Client, outcome: impl FnOnce() -> String) {
    if client.shard.access_log.is_some() {
        client.notes.fanout = Some(outcome());
    }
}

/// Resolves when the client has closed or reset its connection; checked every
/// [`CLIENT_GONE_POLL`] until `deadline`, then never (the calls end by the deadline anyway).
///
/// Pipelined requests waiting in the socket do not count as gone ([`Stream::peer_closed`] peeks).
/// A client that half-closes (FIN) after its request counts as gone, as in nginx: HTTP/1.1 gives a
/// half-close no meaning, and clients that hang up send the same FIN.
async fn client_gone(stream: &Stream, deadline: Instant) {
    let ticks = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        / CLIENT_GONE_POLL.as_millis()
        + 1;
    for _ in 0..ticks {
        io::sleep(CLIENT_GONE_POLL).await;
        if stream.peer_closed() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Runs every call of `plan` concurrently until all have ended, a required one failed, or `gone`
/// resolved. `reqs[i]` is call `i`'s request head.
///
/// # Batching
/// The calls are polled in one `FuturesUnordered` inside this one task, so the first poll runs
/// every call up to its first I/O (an idle pooled connection is taken synchronously, then its
/// write is queued; a new connection queues its connect) in the same loop turn. On the uring
/// driver those operations reach the kernel in one `io_uring_enter` when the task yields. Keep the
/// calls in one task: spawning them would spread the submissions over several turns.
///
/// # Cancellation
/// Every unfinished call is dropped before this returns: its timer and I/O are cancelled, and its
/// `PooledConn` is closed (never pooled) because it was not released as clean.
async fn gather(
    plan: &FanoutPlan,
    upstreams: &[UpstreamGroup],
    reqs: Vec<Bytes>,
    limits: Limits,
    deadline: Instant,
    gone: impl Future<Output = ()>,
) -> Gathered {
    let mut results: Results = plan.calls.iter().map(|_| None).collect();
    let mut pending: FuturesUnordered<_> = plan
        .calls
        .iter()
        .zip(reqs)
        .enumerate()
        .map(|(i, (call, req))| {
            let group = &upstreams[call.upstream];
            async move {
                let t0 = Instant::now();
                let call_deadline = deadline.min(t0 + call.timeout);
                let result = io::timeout_at(call_deadline, run_call(group, req, &limits))
                    .await
                    .unwrap_or(CallResult::Timeout);
                (
                    i,
                    Finished {
                        result,
                        took: t0.elapsed(),
                    },
                )
            }
        })
        .collect();
    let mut gone = pin!(gone);
    // Bounded: each turn records one finished call (at most `calls.len()` turns) or returns.
    loop {
        match select(pending.next(), gone.as_mut()).await {
            Either::Left((Some((i, done)), _)) => {
                let failed = !done.result.is_ok();
                results[i] = Some(done);
                if failed && plan.calls[i].required {
                    return Gathered::Done {
                        results,
                        failed_required: Some(i),
                    };
                }
            }
            Either::Left((None, _)) => {
                return Gathered::Done {
                    results,
                    failed_required: None,
                };
            }
            Either::Right(((), _)) => return Gathered::ClientGone(results),
        }
    }
}

/// Builds every call's request head into one buffer (one allocation for all of them), split into
/// one `Bytes` per call: `GET <path>[?<client query>] HTTP/1.1`, Host (the upstream's name), the
/// forwarded headers, X-Forwarded-For, X-Forwarded-Proto, Via.
///
/// Calls are always GET, also for a client's HEAD: the answer to HEAD must carry the same
/// Content-Length as the GET (RFC 9110 §9.3.2), which needs the bodies.
fn call_requests(
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
async fn run_call(group: &UpstreamGroup, req: Bytes, limits: &Limits) -> CallResult {
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

/// Whether `body` is one valid JSON text (RFC 8259), checked without copying or building it.
fn is_json(body: &[Bytes]) -> bool {
    use serde::de::IgnoredAny;
    match body {
        [one] => serde_json::from_slice::<IgnoredAny>(one).is_ok(),
        _ => serde_json::from_reader::<_, IgnoredAny>(Pieces { body, at: 0 }).is_ok(),
    }
}

/// `io::Read` over body pieces, for validating a body that arrived in several pieces.
struct Pieces<'a> {
    body: &'a [Bytes],
    at: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        // Bounded by the number of pieces: empty ones are skipped.
        while let Some((first, rest)) = self.body.split_first() {
            let left = &first[self.at..];
            if left.is_empty() {
                self.body = rest;
                self.at = 0;
                continue;
            }
            let n = left.len().min(out.len());
            out[..n].copy_from_slice(&left[..n]);
            self.at += n;
            return Ok(n);
        }
        Ok(0)
    }
}

/// The 200 answer: keys interleaved with the values, and the names of the calls that failed.
///
/// A JSON body goes in as its own `Bytes` (no copy); an empty body, or one of another type, goes
/// in as a JSON string; a failed call as `null`.
fn assemble<'p>(plan: &'p FanoutPlan, results: &Results) -> (Vec<Bytes>, Vec<&'p str>) {
    let mut parts: Vec<Bytes> = Vec::with_capacity(plan.calls.len() * 2 + 1);
    let mut partial = Vec::new();
    for (c, r) in plan.calls.iter().zip(results) {
        parts.push(c.key.clone());
        match r.as_ref().map(|f| &f.result) {
            Some(CallResult::Ok {
                body, json: true, ..
            }) if !body.iter().all(Bytes::is_empty) => {
                parts.extend(body.iter().filter(|b| !b.is_empty()).cloned());
            }
            Some(CallResult::Ok { body, .. }) => parts.push(json_string(body)),
            _ => {
                parts.push(Bytes::from_static(b"null"));
                partial.push(c.name.as_str());
            }
        }
    }
    parts.push(Bytes::from_static(b"}"));
    (parts, partial)
}

/// `{"error":"<code>","call":"<name>","upstream":"<upstream>"}` (names need no escaping: config
/// validation allows only letters, digits, `_`, `-`, `.`).
fn error_body(code: &str, call: &str, upstream: &str) -> Vec<Bytes> {
    let mut body = BytesMut::with_capacity(48 + code.len() + call.len() + upstream.len());
    body.put_slice(b"{\"error\":\"");
    body.put_slice(code.as_bytes());
    body.put_slice(b"\",\"call\":\"");
    body.put_slice(call.as_bytes());
    body.put_slice(b"\",\"upstream\":\"");
    body.put_slice(upstream.as_bytes());
    body.put_slice(b"\"}\n");
    vec![body.freeze()]
}

/// Writes the answer's head into `out`: status line, Content-Type, Content-Length (`len`, the
/// body's length also for HEAD), Server-Timing with every call in declaration order,
/// Ringway-Partial when calls failed, Connection: close when the connection ends.
///
/// Server-Timing `desc`: absent for a 200, the status for any other answer, `"error"`,
/// `"timeout"`, or `"cancelled"` for a call stopped because another failed; a cancelled call's
/// `dur` is how long it ran.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
fn write_head(
    out: &mut BytesMut,
    status: u16,
    len: usize,
    plan: &FanoutPlan,
    results: &Results,
    elapsed: Duration,
    partial: &[&str],
    after: ConnAfter,
) {
    out.put_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(reason_phrase(status).as_bytes());
    out.put_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    put_u64(out, len as u64);
    out.put_slice(b"\r\nServer-Timing: ");
    for (i, (c, r)) in plan.calls.iter().zip(results).enumerate() {
        if i > 0 {
            out.put_slice(b", ");
        }
        out.put_slice(c.name.as_bytes());
        out.put_slice(b";dur=");
        put_u64(
            out,
            r.as_ref().map_or(elapsed, |f| f.took).as_millis() as u64,
        );
        let desc: Option<&[u8]> = match r.as_ref().map(|f| &f.result) {
            Some(CallResult::Ok { status: 200, .. }) => None,
            Some(CallResult::Ok { status, .. } | CallResult::Status(status)) => {
                out.put_slice(b";desc=\"");
                put_u64(out, u64::from(*status));
                Some(b"\"")
            }
            Some(CallResult::Timeout) => Some(b";desc=\"timeout\""),
            Some(_) => Some(b";desc=\"error\""),
            None => Some(b";desc=\"cancelled\""),
        };
        if let Some(d) = desc {
            out.put_slice(d);
        }
    }
    if !partial.is_empty() {
        out.put_slice(b"\r\nRingway-Partial: ");
        for (i, name) in partial.iter().enumerate() {
            if i > 0 {
                out.put_slice(b", ");
            }
            out.put_slice(name.as_bytes());
        }
    }
    if after == ConnAfter::Close {
        out.put_slice(b"\r\nConnection: close");
    }
    out.put_slice(b"\r\n\r\n");
}

/// Writes head + body with vectored writes: one write for up to [`MAX_IOVECS`] pieces, which is
/// every answer but those with a backend body in hundreds of chunks. For HEAD only the head goes.
///
/// # Errors
/// The write error; the client connection is then closed.
async fn write_answer(
    stream: &mut Stream,
    head: Bytes,
    body: Vec<Bytes>,
    head_only: bool,
) -> std::io::Result<()> {
    let mut parts = Vec::with_capacity(1 + body.len().min(MAX_IOVECS));
    parts.push(head);
    if head_only {
        return stream.write_vectored_all(parts).await;
    }
    audit::written(&body);
    let mut rest = body.into_iter().filter(|b| !b.is_empty()).peekable();
    // Bounded: each turn writes up to MAX_IOVECS pieces and the body has finitely many.
    loop {
        let room = MAX_IOVECS - parts.len();
        parts.extend(rest.by_ref().take(room));
        stream
            .write_vectored_all(std::mem::take(&mut parts))
            .await?;
        if rest.peek().is_none() {
            return Ok(());
        }
    }
}

/// Encodes `body` as a JSON string literal: the one place a body is copied, because it must be
/// escaped. Invalid UTF-8 becomes U+FFFD (JSON text is UTF-8, RFC 8259 §8.1).
fn json_string(body: &[Bytes]) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let joined;
    let bytes: &[u8] = match body {
        [] => &[],
        [one] => one,
        _ => {
            joined = body.concat();
            &joined
        }
    };
    let text = String::from_utf8_lossy(bytes);
    let mut out = BytesMut::with_capacity(text.len() + text.len() / 8 + 2);
    out.put_u8(b'"');
    let mut run = 0;
    let t = text.as_bytes();
    // Copies runs of plain bytes at once; only `"`, `\` and control characters are escaped
    // (RFC 8259 §7). Bytes >= 0x80 are UTF-8 sequences, valid after the lossy decode.
    for (i, &b) in t.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..0x20 => Some(b""),
            _ => None,
        };
        if let Some(esc) = esc {
            out.put_slice(&t[run..i]);
            run = i + 1;
            if esc.is_empty() {
                out.put_slice(b"\\u00");
                out.put_u8(HEX[usize::from(b >> 4)]);
                out.put_u8(HEX[usize::from(b & 0xf)]);
            } else {
                out.put_slice(esc);
            }
        }
    }
    out.put_slice(&t[run..]);
    out.put_u8(b'"');
    out.freeze()
}

/// Test-only record of where call bodies were read and what the answer body was made of, for the
/// zero-copy test; outside `cfg(test)` every hook is an empty inline function.
#[cfg(test)]
mod audit {
    use std::cell::RefCell;
    use std::ops::Range;

    use bytes::{Bytes, BytesMut};

    thread_local! {
        /// Address ranges of the unconsumed bytes of a call's read buffer after each read.
        pub static READS: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) };
        /// Address ranges of the answer body's pieces, as handed to the vectored write.
        pub static WRITTEN: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) };
    }

    fn range(p: &[u8]) -> Range<usize> {
        let start = p.as_ptr() as usize;
        start..start + p.len()
    }

    pub fn read(buf: &BytesMut) {
        READS.with(|r| r.borrow_mut().push(range(buf)));
    }

    pub fn written(parts: &[Bytes]) {
        WRITTEN.with(|w| w.borrow_mut().extend(parts.iter().map(|p| range(p))));
    }
}

#[cfg(not(test))]
mod audit {
    use bytes::{Bytes, BytesMut};

    #[inline(always)]
    pub fn read(_: &BytesMut) {}

    #[inline(always)]
    pub fn written(_: &[Bytes]) {}
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
