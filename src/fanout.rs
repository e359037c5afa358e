//! Fan-out aggregation: one client request → every call of the route at once over the shard's
//! pools → one JSON document `{"<name>": <body>, ...}` in declaration order (DESIGN.md "Fan-out
//! contract").
//!
//! Phases, each a small function: `call::call_requests` (one buffer for every call's head) →
//! `gather` (all calls concurrently, per-call timeouts, the route deadline, client-gone
//! detection; each call is `call::run_call`) → `answer::assemble` or `answer::error_body` →
//! `answer::write_head` + `answer::write_answer` (one vectored write). This file holds the plan
//! and the orchestration; `call.rs` talks to backends, `answer.rs` to the client.
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
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::FanoutConfig;
use crate::conn::{Client, ConnAfter};
use crate::gateway::Gateway;
use crate::http::{self, BodyFraming, Limits, Method, RequestHead};
use crate::io;
use crate::metrics::{CallOutcome, UpstreamOutcome};
use crate::router::Route;
use crate::upstream::UpstreamGroup;

/// How often an in-flight fan-out checks whether its client hung up. One non-blocking
/// `recv(MSG_PEEK)` per tick: cheap, and a read would risk swallowing pipelined bytes.
const CLIENT_GONE_POLL: Duration = Duration::from_millis(50);

/// Most bytes one call's response body may have (the whole body is held until assembly).
const MAX_CALL_BODY: u64 = 8 * 1024 * 1024;

/// Initial (and refill) size of a call's read buffer.
const CALL_READ_BUF: usize = 16 * 1024;

/// Most buffers handed to one vectored write: the kernel refuses more than UIO_MAXIOV (1024)
/// iovecs in one `writev`/`sendmsg`, and a chunked backend body can be many small pieces.
const MAX_IOVECS: usize = 512;

mod answer;
mod call;

use answer::{assemble, error_body, write_answer, write_head};
use call::{call_requests, run_call};

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
    /// here ([`http::not_for_subrequests`]), so no config can make a call carry the client's
    /// framing.
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
                    .filter(|h| !http::not_for_subrequests(h.as_bytes()))
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
        // Pipelined requests waiting in the socket do not count as gone (`peer_closed` peeks). A
        // client that half-closes (FIN) after its request counts as gone, as in nginx: HTTP/1.1
        // gives a half-close no meaning, and clients that hang up send the same FIN.
        || client.stream.peer_closed(),
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
        client.version,
    );
    let head_bytes = client.take_scratch();
    let head_only = method == Method::Head;
    // Counted, and bounded by `client_idle`, as `Client::write_vectored_all` does; the write
    // goes through the stream so that it can be batched (see `write_answer`).
    client.notes.bytes_sent += (head_bytes.len() + if head_only { 0 } else { len }) as u64;
    let idle = gw.config.timeouts.client_idle;
    let r = write_answer(&mut client.stream, head_bytes, body, head_only, idle).await;
    (status, if r.is_ok() { after } else { ConnAfter::Close })
}

/// Records the fan-out's outcome for the access log (`ok`, `partial:<names>`, `failed:<call>`,
/// `cancelled` when the client left); the string is built only when the access log is on.
fn note_outcome(client: &mut Client, outcome: impl FnOnce() -> String) {
    if client.shard.access_log.is_some() {
        client.notes.fanout = Some(outcome());
    }
}

/// Runs every call of `plan` concurrently until all have ended, a required one failed, or the
/// client is gone. `reqs[i]` is call `i`'s request head. `client_gone` is asked every
/// [`CLIENT_GONE_POLL`] until `deadline` (then never: the calls end by the deadline anyway).
///
/// # One task, one timer
/// The calls are polled in place, all of them on every wake-up of this task, so the first poll
/// runs every call up to its first I/O (an idle pooled connection is taken synchronously, then
/// its write is queued; a new connection queues its connect) in the same loop turn. On the uring
/// driver those operations reach the kernel in one `io_uring_enter` when the task yields. Keep the
/// calls in one task: spawning them would spread the submissions over several turns.
///
/// The per-call timeouts, the route deadline and the client-gone checks share one timer, re-armed
/// for whichever comes first: a fan-out arms one timer instead of one per call plus one for the
/// client. Polling every call on each wake-up costs a few polls of pending operations, which is
/// less than a waker per call (`FuturesUnordered`) for the handful of calls a route has.
///
/// # Cancellation
/// Every unfinished call is dropped before this returns: its I/O is cancelled and its
/// `PooledConn` is closed (never pooled) because it was not released as clean.
async fn gather(
    plan: &FanoutPlan,
    upstreams: &[UpstreamGroup],
    reqs: Vec<Bytes>,
    limits: Limits,
    deadline: Instant,
    mut client_gone: impl FnMut() -> bool,
) -> Gathered {
    let started = Instant::now();
    let mut results: Results = plan.calls.iter().map(|_| None).collect();
    let call_deadline = |i: usize| deadline.min(started + plan.calls[i].timeout);
    let limits = &limits;
    let mut calls: Vec<_> = plan
        .calls
        .iter()
        .zip(reqs)
        .map(|(call, req)| Some(Box::pin(run_call(&upstreams[call.upstream], req, limits))))
        .collect();
    let mut pending = calls.len();
    let mut next_check = started + CLIENT_GONE_POLL;
    let wake_at = |calls: &[Option<_>], next_check: Instant| {
        let first_call = (0..calls.len())
            .filter(|&i| calls[i].is_some())
            .map(call_deadline)
            .min()
            .unwrap_or(deadline);
        if next_check < deadline {
            first_call.min(next_check)
        } else {
            first_call
        }
    };
    let mut timer = pin!(io::sleep_until(wake_at(&calls, next_check)));
    std::future::poll_fn(|cx| {
        // Bounded: each turn of the outer loop fires the timer, which either ends a call (at most
        // `calls.len()` times) or moves `next_check` at least CLIENT_GONE_POLL forward, which
        // stops once it passes `deadline`, and every call is ended by then.
        loop {
            for (i, slot) in calls.iter_mut().enumerate() {
                let Some(call) = slot else { continue };
                let Poll::Ready(result) = call.as_mut().poll(cx) else {
                    continue;
                };
                *slot = None;
                pending -= 1;
                let failed = !result.is_ok();
                results[i] = Some(Finished {
                    result,
                    took: started.elapsed(),
                });
                if failed && plan.calls[i].required {
                    return Poll::Ready(Gathered::Done {
                        results: std::mem::take(&mut results),
                        failed_required: Some(i),
                    });
                }
            }
            if pending == 0 {
                return Poll::Ready(Gathered::Done {
                    results: std::mem::take(&mut results),
                    failed_required: None,
                });
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            for (i, slot) in calls.iter_mut().enumerate() {
                if slot.is_none() || call_deadline(i) > now {
                    continue;
                }
                *slot = None;
                pending -= 1;
                results[i] = Some(Finished {
                    result: CallResult::Timeout,
                    took: started.elapsed(),
                });
                if plan.calls[i].required {
                    return Poll::Ready(Gathered::Done {
                        results: std::mem::take(&mut results),
                        failed_required: Some(i),
                    });
                }
            }
            if next_check <= now && next_check < deadline {
                if client_gone() {
                    return Poll::Ready(Gathered::ClientGone(std::mem::take(&mut results)));
                }
                // From now, not from the missed tick: a late wake-up costs one check, not one per
                // tick it missed.
                next_check = now + CLIENT_GONE_POLL;
            }
            timer.set(io::sleep_until(wake_at(&calls, next_check)));
        }
    })
    .await
}
#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
