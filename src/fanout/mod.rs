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
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Kind};
use crate::http::{BodyFraming, ConnAfter, Limits, Method, RequestHead};
use crate::io;
use crate::metrics::{CallOutcome, UpstreamOutcome};
use crate::upstream::{ReadBufs, UpstreamGroup};

/// How often an in-flight fan-out checks whether its client hung up. One non-blocking
/// `recv(MSG_PEEK)` per tick: cheap, and a read would risk swallowing pipelined bytes.
const CLIENT_GONE_POLL: Duration = Duration::from_millis(50);

/// Most bytes one call's response body may have (the whole body is held until assembly).
const MAX_CALL_BODY: u64 = 8 * 1024 * 1024;

/// Most buffers handed to one vectored write of an answer: half the kernel's UIO_MAXIOV
/// ([`crate::io::MAX_IOVECS`]), since a chunked backend body can be many small pieces.
const ANSWER_BATCH: usize = crate::io::MAX_IOVECS / 2;

mod answer;
mod call;
pub mod plan;

pub use plan::{CallPlan, FanoutPlan};

use answer::{assemble, error_body, write_answer, write_head};
use call::{Requests, call_requests, run_call};

/// How one call ended.
#[derive(Debug)]
enum CallResult {
    /// 2xx with a body that can be embedded: the body pieces and whether it is JSON.
    Ok {
        status: u16,
        body: crate::io::Pieces,
        json: bool,
        /// The read buffer the body pieces were split from, back to the shard's spare list once
        /// the answer is written (see [`recycle`]).
        buf: bytes::BytesMut,
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
    /// The result of a call whose exchange failed with `e`.
    fn failed(e: &Error) -> CallResult {
        match e.kind() {
            Kind::Unavailable => CallResult::Unavailable,
            Kind::ConnectTimeout | Kind::Timeout => CallResult::Timeout,
            Kind::BadResponse => CallResult::BadResponse,
            _ => CallResult::Error,
        }
    }

    /// What went wrong, for a call that failed (a status outside 2xx is an upstream error).
    fn error_kind(&self) -> Option<Kind> {
        match self {
            CallResult::Ok { .. } => None,
            CallResult::Status(_) | CallResult::Error => Some(Kind::Io),
            CallResult::BadResponse => Some(Kind::BadResponse),
            CallResult::Unavailable => Some(Kind::Unavailable),
            CallResult::Timeout => Some(Kind::Timeout),
        }
    }

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
            failed => failed
                .error_kind()
                .and_then(Kind::upstream_outcome)
                .unwrap_or(UpstreamOutcome::Error),
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
type Results = smallvec::SmallVec<[Option<Finished>; 8]>;

/// How the concurrent phase ended (the results are in the caller's [`Results`]: filled in
/// place, not returned, so their 1.5 KB are not copied out of the gathering future and again
/// out of this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gathered {
    /// Every call ended, or a required one failed (its index; the rest were cancelled).
    Done { failed_required: Option<usize> },
    /// The client hung up; every unfinished call was cancelled.
    ClientGone,
}

/// Room for every call's result, each `None` until the call ends.
fn empty_results(plan: &FanoutPlan) -> Results {
    plan.calls.iter().map(|_| None).collect()
}

/// Serves a fan-out request over `upstreams` (the gateway's groups, which the plan's calls
/// index). Returns the status sent and what happens to the client connection.
///
/// The status is [`crate::error::CLIENT_GONE`] (nginx's 499, "client closed request") when the client hung up
/// mid-fan-out: nothing is sent then, the number is only counted in metrics.
pub async fn serve(
    client: &mut Client,
    config: &Config,
    upstreams: &[UpstreamGroup],
    route_label: &str,
    plan: &FanoutPlan,
    head: RequestHead,
) -> (u16, ConnAfter) {
    // A request body is never read here: keep the connection only when there is none.
    let body_read = matches!(head.framing(), BodyFraming::Empty);
    let method = head.method();
    if !matches!(method, Method::Get | Method::Head) {
        let after = client.conn_after(&head, body_read);
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
    let started = crate::io::now();
    let deadline = started + plan.timeout;
    let limits = Limits {
        max_head_bytes: config.limits.max_head_bytes.max(16 * 1024),
        max_headers: config.limits.max_headers,
    };
    let shard = client.shard_rc();
    let (reqs, heads_buf) = call_requests(
        plan,
        &head,
        client.ip(),
        upstreams,
        shard.scratch_bufs().take(),
    );
    let mut results = empty_results(plan);
    let gathered = gather(
        plan,
        upstreams,
        shard.read_bufs(),
        &mut results,
        reqs,
        limits,
        deadline,
        // Pipelined requests waiting in the socket do not count as gone (`peer_closed` peeks). A
        // client that half-closes (FIN) after its request counts as gone, as in nginx: HTTP/1.1
        // gives a half-close no meaning, and clients that hang up send the same FIN.
        || client.peer_closed(),
    )
    .await;
    // Every call ended or was dropped, and with it its copy of its request head.
    shard.scratch_bufs().put_back(heads_buf);
    let (failed_required, gone) = match gathered {
        Gathered::Done { failed_required } => (failed_required, false),
        Gathered::ClientGone => (None, true),
    };
    let metrics = client.shard().metrics();
    for (c, r) in plan.calls.iter().zip(&results) {
        let outcome = r.as_ref().map_or(CallOutcome::Cancelled, |f| {
            metrics.upstream(&upstreams[c.upstream].name, f.result.upstream_outcome());
            f.result.call_outcome()
        });
        metrics.fanout_call(route_label, &c.name, outcome);
    }
    if gone {
        client.note_fanout(|| "cancelled".into());
        return client
            .answer_error(&Error::client_gone(), None, ConnAfter::Close, &[])
            .await;
    }
    // Decided after the calls: a drain that began meanwhile closes the connection.
    let after = client.conn_after(&head, body_read);

    let (status, body, partial) = match failed_required {
        Some(i) => {
            let call = &plan.calls[i];
            let kind = results[i]
                .as_ref()
                .and_then(|f| f.result.error_kind())
                .unwrap_or(Kind::Io);
            let upstream = &upstreams[call.upstream].name;
            client.note_fanout(|| format!("failed:{}", call.name));
            let body = error_body(kind.code(), &call.name, upstream);
            (kind.client_status(), body, Vec::new())
        }
        None => {
            let (body, partial) = assemble(plan, &results);
            client.note_fanout(|| {
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
    let version = client.version();
    let ((), head_bytes) = client.render(|out| {
        write_head(
            out,
            status,
            len,
            plan,
            &results,
            crate::io::now().saturating_duration_since(started),
            &partial,
            after,
            version,
        )
    });
    let head_only = method == Method::Head;
    // Counted, and bounded by `client_idle`, as `Client::write_vectored_all` does; the write
    // goes through the stream so that it can be batched (see `write_answer`).
    let idle = client.idle_timeout();
    let (stream, count) = client.stream_and_count();
    *count += (head_bytes.len() + if head_only { 0 } else { len }) as u64;
    // A kept-alive connection's answer may wait to go out with the next request's read.
    let defer = after == ConnAfter::KeepAlive;
    let r = write_answer(stream, head_bytes, body, head_only, idle, defer).await;
    recycle(&mut results, shard.read_bufs());
    (status, if r.is_ok() { after } else { ConnAfter::Close })
}

/// Gives the calls' read buffers back to the shard once the answer holding their pieces was
/// written: each call's pieces are dropped first, so the buffer is only kept when nothing points
/// into it any more (`ReadBufs::put_back` checks).
fn recycle(results: &mut Results, bufs: &ReadBufs) {
    for r in results.iter_mut().flatten() {
        if let CallResult::Ok { body, buf, .. } = &mut r.result {
            body.clear();
            bufs.put_back(std::mem::take(buf));
        }
    }
}

/// Runs every call of `plan` concurrently until all have ended, a required one failed, or the
/// client is gone; call `i`'s result goes to `results[i]` (from [`empty_results`]) when it ends.
/// `reqs[i]` is call `i`'s request head. `client_gone` is asked every
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
#[allow(clippy::too_many_arguments)] // each is one of the fan-out's inputs; a struct would only rename them
async fn gather(
    plan: &FanoutPlan,
    upstreams: &[UpstreamGroup],
    bufs: &ReadBufs,
    results: &mut Results,
    reqs: Requests,
    limits: Limits,
    deadline: Instant,
    mut client_gone: impl FnMut() -> bool,
) -> Gathered {
    let started = crate::io::now();
    let call_deadline = |i: usize| deadline.min(started + plan.calls[i].timeout);
    let limits = &limits;
    let mut calls: smallvec::SmallVec<[_; 8]> = plan
        .calls
        .iter()
        .zip(reqs)
        .map(|(call, req)| {
            Some(crate::io::boxed_with(|| {
                run_call(&upstreams[call.upstream], req, limits, bufs)
            }))
        })
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
                let Poll::Ready(result) = Pin::new(call).poll(cx) else {
                    continue;
                };
                *slot = None;
                pending -= 1;
                let failed = !result.is_ok();
                results[i] = Some(Finished {
                    result,
                    took: crate::io::now().saturating_duration_since(started),
                });
                if failed && plan.calls[i].required {
                    return Poll::Ready(Gathered::Done {
                        failed_required: Some(i),
                    });
                }
            }
            if pending == 0 {
                return Poll::Ready(Gathered::Done {
                    failed_required: None,
                });
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = crate::io::now();
            for (i, slot) in calls.iter_mut().enumerate() {
                if slot.is_none() || call_deadline(i) > now {
                    continue;
                }
                *slot = None;
                pending -= 1;
                results[i] = Some(Finished {
                    result: CallResult::Timeout,
                    took: crate::io::now().saturating_duration_since(started),
                });
                if plan.calls[i].required {
                    return Poll::Ready(Gathered::Done {
                        failed_required: Some(i),
                    });
                }
            }
            if next_check <= now && next_check < deadline {
                if client_gone() {
                    return Poll::Ready(Gathered::ClientGone);
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
mod tests;
