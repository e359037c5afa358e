//! Fan-out aggregation: one client request → every call of the route at once over the shard's
//! pools → one JSON document `{"<name>": <body>, ...}` in declaration order.
//!
//! The answer body is a `Vec<Bytes>`: literal pieces (`{"ads":`, `,"profile":`, `}`) interleaved
//! with the backends' body `Bytes` as they were read (JSON bodies are embedded as is, without a
//! copy), written with one vectored write. Only non-JSON bodies are copied, because they must be
//! escaped into a JSON string.
//!
//! Failures: an optional call that fails or times out becomes `null` and is named in
//! `Ringway-Partial`; a required one fails the request (502/504) and cancels the others, whose
//! connections are closed (a dropped `PooledConn` is never pooled). A client that disconnects
//! cancels everything the same way.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;

use crate::config::FanoutConfig;
use crate::conn::{Client, ConnAfter, put_u64};
use crate::gateway::Gateway;
use crate::http::{
    self, BodyDecoder, BodyFraming, HeadScanner, Limits, Method, RequestHead, Status,
};
use crate::io;
use crate::metrics::CallOutcome;
use crate::router::Route;
use crate::upstream::{CheckoutError, UpstreamGroup};

/// How often an in-flight fan-out checks whether its client hung up.
const CLIENT_GONE_POLL: Duration = Duration::from_millis(50);

/// Most bytes one call's response body may have (the whole body is held until assembly).
const MAX_CALL_BODY: usize = 8 * 1024 * 1024;

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
    /// This call's own timeout.
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
    /// 2xx: the body pieces and whether the backend said it is JSON.
    Ok {
        status: u16,
        body: Vec<Bytes>,
        json: bool,
    },
    /// Connect/reset/malformed/non-2xx (status if there was one).
    Error(Option<u16>),
    /// The call's timeout or the route deadline passed.
    Timeout,
}

/// Serves a fan-out request. Returns the status sent and what happens to the client connection.
pub async fn serve(
    client: &mut Client,
    gw: &Gateway,
    route: &Route,
    plan: &FanoutPlan,
    head: RequestHead,
) -> (u16, ConnAfter) {
    let method = head.method();
    if !matches!(method, Method::Get | Method::Head) {
        let after = ConnAfter::Close;
        let _ = client
            .send_error(
                405,
                "method_not_allowed",
                None,
                after,
                &[("Allow", "GET, HEAD")],
            )
            .await;
        return (405, after);
    }
    let started = Instant::now();
    let deadline = started + plan.timeout;

    let mut results: Vec<Option<(CallResult, Duration)>> =
        (0..plan.calls.len()).map(|_| None).collect();
    let mut failed_required: Option<usize> = None;
    {
        let mut pending: FuturesUnordered<_> = plan
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let group = &gw.upstreams[call.upstream];
                let req = build_call_request(call, &head, client.ip, group);
                let limits = Limits {
                    max_head_bytes: gw.config.limits.max_head_bytes.max(16 * 1024),
                    max_headers: gw.config.limits.max_headers,
                };
                async move {
                    let t0 = Instant::now();
                    let call_deadline = deadline.min(t0 + call.timeout);
                    let r = match io::timeout_at(call_deadline, run_call(group, req, limits)).await
                    {
                        Ok(r) => r,
                        Err(_) => CallResult::Timeout,
                    };
                    (i, r, t0.elapsed())
                }
            })
            .collect();

        let client_gone = async {
            loop {
                io::sleep(CLIENT_GONE_POLL).await;
                if client.stream.peer_closed() {
                    return;
                }
            }
        };
        let mut client_gone = Box::pin(client_gone);
        loop {
            match select(pending.next(), client_gone.as_mut()).await {
                Either::Left((Some((i, r, took)), _)) => {
                    let failed = !matches!(r, CallResult::Ok { .. });
                    results[i] = Some((r, took));
                    if failed && plan.calls[i].required {
                        failed_required = Some(i);
                        break;
                    }
                }
                Either::Left((None, _)) => break,
                Either::Right(_) => {
                    // Client hung up: drop every call (their connections close, not pooled).
                    for (i, c) in plan.calls.iter().enumerate() {
                        if results[i].is_none() {
                            client.shard.metrics.fanout_call(
                                &route.label,
                                &c.name,
                                CallOutcome::Cancelled,
                            );
                        }
                    }
                    return (499, ConnAfter::Close);
                }
            }
        }
    }

    // Metrics and Server-Timing for every call, in declaration order.
    let mut timing = BytesMut::with_capacity(32 * plan.calls.len());
    for (i, c) in plan.calls.iter().enumerate() {
        let outcome = match &results[i] {
            Some((CallResult::Ok { .. }, _)) => CallOutcome::Ok,
            Some((CallResult::Error(_), _)) => CallOutcome::Error,
            Some((CallResult::Timeout, _)) => CallOutcome::Timeout,
            None => CallOutcome::Cancelled,
        };
        client
            .shard
            .metrics
            .fanout_call(&route.label, &c.name, outcome);
        if i > 0 {
            timing.put_slice(b", ");
        }
        timing.put_slice(c.name.as_bytes());
        timing.put_slice(b";dur=");
        let ms = results[i]
            .as_ref()
            .map_or(started.elapsed(), |(_, d)| *d)
            .as_millis() as u64;
        put_u64(&mut timing, ms);
        match &results[i] {
            Some((CallResult::Ok { status, .. }, _)) if *status != 200 => {
                timing.put_slice(b";desc=\"");
                put_u64(&mut timing, u64::from(*status));
                timing.put_slice(b"\"");
            }
            Some((CallResult::Ok { .. }, _)) => {}
            Some((CallResult::Error(Some(status)), _)) => {
                timing.put_slice(b";desc=\"");
                put_u64(&mut timing, u64::from(*status));
                timing.put_slice(b"\"");
            }
            Some((CallResult::Error(None), _)) => timing.put_slice(b";desc=\"error\""),
            Some((CallResult::Timeout, _)) => timing.put_slice(b";desc=\"timeout\""),
            None => timing.put_slice(b";desc=\"cancelled\""),
        }
    }
    let timing = String::from_utf8_lossy(&timing).into_owned();
    let keep = head.keep_alive()
        && matches!(head.framing(), BodyFraming::Empty)
        && !client.shard.is_draining();
    let after = if keep {
        ConnAfter::KeepAlive
    } else {
        ConnAfter::Close
    };

    if let Some(i) = failed_required {
        let call = &plan.calls[i];
        let (status, code) = match &results[i] {
            Some((CallResult::Timeout, _)) => (504, "upstream_timeout"),
            _ => (502, "upstream_error"),
        };
        let mut body = BytesMut::with_capacity(64);
        body.put_slice(b"{\"error\":\"");
        body.put_slice(code.as_bytes());
        body.put_slice(b"\",\"call\":\"");
        body.put_slice(call.name.as_bytes());
        body.put_slice(b"\",\"upstream\":\"");
        body.put_slice(gw.upstreams[call.upstream].name.as_bytes());
        body.put_slice(b"\"}\n");
        let r = write_answer(
            client,
            status,
            &timing,
            None,
            vec![body.freeze()],
            method == Method::Head,
            after,
        )
        .await;
        return (status, if r.is_ok() { after } else { ConnAfter::Close });
    }

    // Assemble: literal keys interleaved with the backends' bodies.
    let mut parts: Vec<Bytes> = Vec::with_capacity(plan.calls.len() * 3 + 1);
    let mut partial = String::new();
    for (i, c) in plan.calls.iter().enumerate() {
        parts.push(c.key.clone());
        match results[i].take() {
            Some((
                CallResult::Ok {
                    body, json: true, ..
                },
                _,
            )) if !body.iter().all(|b| b.is_empty()) => {
                parts.extend(body);
            }
            Some((CallResult::Ok { body, .. }, _)) => parts.push(json_string(&body)),
            _ => {
                parts.push(Bytes::from_static(b"null"));
                if !partial.is_empty() {
                    partial.push_str(", ");
                }
                partial.push_str(&c.name);
            }
        }
    }
    parts.push(Bytes::from_static(b"}"));
    let partial = (!partial.is_empty()).then_some(partial);
    let r = write_answer(
        client,
        200,
        &timing,
        partial.as_deref(),
        parts,
        method == Method::Head,
        after,
    )
    .await;
    (200, if r.is_ok() { after } else { ConnAfter::Close })
}

/// Writes the fan-out's answer: head + body pieces in one vectored write.
async fn write_answer(
    client: &mut Client,
    status: u16,
    timing: &str,
    partial: Option<&str>,
    body: Vec<Bytes>,
    head_only: bool,
    after: ConnAfter,
) -> std::io::Result<()> {
    let len: usize = body.iter().map(Bytes::len).sum();
    let out = &mut client.scratch;
    out.clear();
    out.put_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.put_u8(b' ');
    out.put_slice(crate::conn::reason_phrase(status).as_bytes());
    out.put_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    put_u64(out, len as u64);
    out.put_slice(b"\r\nServer-Timing: ");
    out.put_slice(timing.as_bytes());
    if let Some(p) = partial {
        out.put_slice(b"\r\nRingway-Partial: ");
        out.put_slice(p.as_bytes());
    }
    if after == ConnAfter::Close {
        out.put_slice(b"\r\nConnection: close");
    }
    out.put_slice(b"\r\n\r\n");
    let head = client.take_scratch();
    let mut parts = Vec::with_capacity(1 + body.len());
    parts.push(head);
    if !head_only {
        parts.extend(body);
    }
    client.write_vectored_all(parts).await
}

/// Encodes `body` as a JSON string literal (the one place a body is copied: it must be escaped).
fn json_string(body: &[Bytes]) -> Bytes {
    let text: Vec<u8> = body.iter().flat_map(|b| b.iter().copied()).collect();
    let s = String::from_utf8_lossy(&text);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    Bytes::from(out)
}

/// Builds the backend request head of one call: `GET <path>[?<client query>] HTTP/1.1`, Host,
/// the forwarded headers, X-Forwarded-For and Via.
fn build_call_request(
    call: &CallPlan,
    head: &RequestHead,
    ip: std::net::IpAddr,
    group: &UpstreamGroup,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    let mut w = http::HeadWriter::new(&mut out);
    w.request_line(head.method_bytes(), call.path.as_bytes(), head.query());
    w.header(b"Host", group.name.as_bytes());
    for (name, value) in head.headers() {
        if call
            .forward_headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            w.header(name, value);
        }
    }
    let prior = head.header(b"x-forwarded-for");
    let ip = ip.to_string();
    match prior {
        Some(p) => {
            let mut v = p.to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            w.header(b"X-Forwarded-For", &v);
        }
        None => {
            w.header(b"X-Forwarded-For", ip.as_bytes());
        }
    }
    w.header(b"X-Forwarded-Proto", b"http");
    w.header(b"Via", b"1.1 ringway");
    w.end();
    out.freeze()
}

/// Runs one call to completion (the caller bounds it in time).
async fn run_call(group: &UpstreamGroup, req: Bytes, limits: Limits) -> CallResult {
    let Some((idx, inflight)) = group.pick(&[]) else {
        return CallResult::Error(None);
    };
    let pool = inflight.member().pool.clone();
    let mut attempt_fresh = false;
    loop {
        let checkout = if attempt_fresh {
            pool.checkout_fresh().await
        } else {
            pool.checkout().await
        };
        let mut conn = match checkout {
            Ok(c) => c,
            Err(CheckoutError::Exhausted) => return CallResult::Error(None),
            Err(_) => {
                group.report_failure(idx);
                return CallResult::Error(None);
            }
        };
        if conn.stream().write_all(req.clone()).await.is_err() {
            if conn.is_reused() && !attempt_fresh {
                attempt_fresh = true;
                continue;
            }
            group.report_failure(idx);
            return CallResult::Error(None);
        }
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = HeadScanner::new();
        let mut got_any = false;
        let resp = loop {
            if !buf.is_empty() {
                match http::parse_response_head(&mut buf, &mut scanner, &limits, Method::Get) {
                    Ok(Status::Complete(r)) if r.is_informational() => {
                        scanner.reset();
                        continue;
                    }
                    Ok(Status::Complete(r)) => break Some(r),
                    Ok(Status::Partial) => {}
                    Err(_) => break None,
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(16 * 1024);
            }
            let (res, b) = conn.stream().read(std::mem::take(&mut buf)).await;
            buf = b;
            match res {
                Ok(n) if n > 0 => got_any = true,
                _ => break None,
            }
        };
        let Some(resp) = resp else {
            if !got_any && conn.is_reused() && !attempt_fresh {
                attempt_fresh = true;
                continue;
            }
            group.report_failure(idx);
            return CallResult::Error(None);
        };
        group.report_success(idx);
        let status = resp.status();
        let json = resp.is_json();
        let mut decoder =
            BodyDecoder::for_response(resp.framing()).with_limit(MAX_CALL_BODY as u64);
        let mut body = Vec::new();
        let mut total = 0usize;
        loop {
            loop {
                match decoder.next_data(&mut buf) {
                    Ok(Some(b)) => {
                        total += b.len();
                        body.push(b);
                    }
                    Ok(None) => break,
                    Err(_) => return CallResult::Error(Some(status)),
                }
                if decoder.is_done() {
                    break;
                }
            }
            if decoder.is_done() || resp.framing() == BodyFraming::Empty {
                break;
            }
            if total > MAX_CALL_BODY {
                return CallResult::Error(Some(status));
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(16 * 1024);
            }
            let (res, b) = conn.stream().read(std::mem::take(&mut buf)).await;
            buf = b;
            match res {
                Ok(0) => {
                    if decoder.eof().is_ok() {
                        break;
                    }
                    return CallResult::Error(Some(status));
                }
                Err(_) => return CallResult::Error(Some(status)),
                Ok(_) => {}
            }
        }
        if resp.keep_alive() && buf.is_empty() && decoder.is_done() {
            conn.release_reusable(resp.keep_alive_timeout().map(Duration::from_secs));
        }
        drop(inflight);
        if !(200..300).contains(&status) {
            return CallResult::Error(Some(status));
        }
        return CallResult::Ok { status, body, json };
    }
}
