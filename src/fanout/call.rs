//! Building and running the calls of a fan-out: every call's request head (one buffer for all),
//! endpoint choice with the proxy's retry rules, and reading one response into zero-copy body
//! pieces. Never touches the client connection.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::answer::is_json;
use super::{CallResult, FanoutPlan, MAX_CALL_BODY};
use crate::error::{Error, Kind};
use crate::http::{self, BodyDecoder, Interim, Limits, Method, RequestHead, ResponseHead};
use crate::io::Pieces;
use crate::upstream::{Attempt, Exchange, Head, ReadBufs, UpstreamGroup};

/// Builds every call's request head into `out` (a shard's spare buffer: one for all of them,
/// returned with the heads so it can go back once the calls ended), split into one `Bytes` per
/// call ([`http::write_subrequest_head`]: GET, Host the upstream's name, the
/// forwarded headers, X-Forwarded-For, X-Forwarded-Proto, Via).
pub(super) fn call_requests(
    plan: &FanoutPlan,
    head: &RequestHead,
    ip: IpAddr,
    upstreams: &[UpstreamGroup],
    mut out: BytesMut,
) -> (Requests, BytesMut) {
    out.reserve(256 * plan.calls.len());
    let mut reqs = Requests::new();
    for call in &plan.calls {
        let forward = |name: &[u8]| {
            call.forward_headers
                .iter()
                .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
        };
        let host = upstreams[call.upstream].name.as_bytes();
        http::write_subrequest_head(&mut out, head, call.path.as_bytes(), host, ip, forward);
        reqs.push(out.split().freeze());
    }
    (reqs, out)
}

/// Every call's request head, in call order (inline for up to eight calls).
pub(super) type Requests = smallvec::SmallVec<[Bytes; 8]>;

/// Runs one call to completion (the caller bounds it in time), over the upstream exchange: its
/// endpoint choice, and its retry rule (a call is a GET, always resendable).
pub(super) async fn run_call(
    group: &UpstreamGroup,
    req: Bytes,
    limits: &Limits,
    bufs: &ReadBufs,
) -> CallResult {
    let mut ex = Exchange::new(group);
    // Bounded: each pass returns or uses the exchange's single stale-connection retry.
    loop {
        let mut attempt = match ex.checkout(|_| {}).await {
            Ok(a) => a,
            Err(e) => return CallResult::failed(&e),
        };
        let (resp, body, buf, reusable) =
            match exchange(&mut attempt, req.clone(), limits, bufs).await {
                Ok(r) => r,
                Err(e) if ex.retry(&e, &attempt, true) => continue,
                Err(e) => {
                    ex.failed(&attempt, &e);
                    return CallResult::failed(&e);
                }
            };
        ex.succeeded(&attempt);
        let status = resp.status();
        if reusable {
            attempt.release_reusable(resp.keep_alive_timeout().map(Duration::from_secs));
        }
        if !(200..300).contains(&status) {
            return CallResult::Status(status);
        }
        let json = resp.is_json();
        let empty = body.iter().all(Bytes::is_empty);
        if json && !empty && !is_json(&body) {
            tracing::debug!(upstream = %group.name, "fan-out call: JSON-typed body is not JSON");
            return CallResult::BadResponse;
        }
        return CallResult::Ok {
            status,
            body,
            json,
            buf,
        };
    }
}

/// What a call does with each interim head: a call never asks to upgrade (RFC 9110 §15.2.2), so
/// a `101` is a bad response; any other 1xx is dropped.
fn call_interim(resp: &ResponseHead) -> Interim {
    match resp.status() {
        101 => Interim::Unexpected,
        100..=199 => Interim::Skip,
        _ => Interim::Final,
    }
}

/// Sends `req` on `attempt` and reads the whole response: head, body pieces, and whether the
/// connection is clean for reuse. It is not released here, so on any error it is dropped and
/// closed.
async fn exchange(
    attempt: &mut Attempt,
    req: Bytes,
    limits: &Limits,
    bufs: &ReadBufs,
) -> Result<(ResponseHead, Pieces, BytesMut, bool), Error> {
    let mut buf = bufs.take();
    // The request and the first read of its answer as one chain where the driver links them.
    attempt
        .send_then_read(smallvec::smallvec![req], &mut buf, None)
        .await?;
    let head = attempt
        .read_head(&mut buf, Method::Get, limits, None, call_interim)
        .await?;
    let (Head::Final(resp) | Head::Interim(resp)) = head;
    if resp.has_transfer_coding() {
        // A body in a coding ringway does not decode (gzip, …) cannot be embedded.
        return Err(Error::bad_response(http::HttpError::upstream(
            http::ErrorKind::CodingNotDeliverable,
        )));
    }
    let mut decoder = BodyDecoder::for_response(resp.framing()).with_limit(MAX_CALL_BODY);
    let mut body = Pieces::new();
    // Bounded: each turn reads at least one byte, and the decoder refuses more than
    // MAX_CALL_BODY bytes of data.
    loop {
        // Zero copy: every piece is split off the read buffer and frozen.
        while let Some(piece) = decoder.next_data(&mut buf).map_err(Error::bad_response)? {
            body.push(piece);
        }
        if decoder.is_done() {
            break;
        }
        match attempt.read_more(&mut buf, None).await {
            Ok(Ok(0)) => {
                decoder.eof().map_err(|_| Error::new(Kind::Io))?;
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::io(Kind::Io, e)),
            Err(_) => return Err(Error::new(Kind::Timeout)),
        }
    }
    // Bytes after the response (unsolicited, or a broken backend) make the connection unusable,
    // though this response is complete.
    let reusable = buf.is_empty() && resp.keep_alive();
    Ok((resp, body, buf, reusable))
}
