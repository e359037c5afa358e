//! Forwarding one request to one upstream endpoint over a pooled keepalive connection.
//!
//! Phases, each a small function: prepare the outgoing head and take the buffered body
//! ([`forward`]) → the upstream exchange ([`crate::upstream::Exchange`]: endpoint choice,
//! checkout, retry rule) → send head and body and read the response head ([`exchange`], 1xx
//! forwarded there) → relay head and body to the client, or tunnel after a `101`
//! ([`relay::relay_response`]) → check the connection back in.
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
//! Retries follow the exchange's rule; a request can be resent only while its whole body is in
//! hand (it was buffered, not streamed).
//!
//! What this module must never do: hand a backend connection back to its pool unless the
//! exchange completed cleanly with no byte left over, or fake the end of a response the backend
//! truncated.

use std::time::Duration;

use bytes::Bytes;

use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Kind, Side};
use crate::http::{
    self, BodyDecoder, BodyFraming, ConnAfter, ErrorKind, HttpError, Limits, RequestHead,
    ResponseHead,
};
use crate::upstream::{Attempt, Exchange, Head, UpstreamGroup};

mod relay;

#[cfg(test)]
mod tests;

/// Spare room made in the client's read buffer before each read of a streamed request body:
/// big enough that a large upload is not relayed in 4 KiB steps, small enough to bound memory.
const CLIENT_BODY_READ: usize = 32 * 1024;

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

/// The request being forwarded, and what of it has been done.
struct Outgoing {
    head: RequestHead,
    /// The rewritten head sent to the backend.
    wire_head: Bytes,
    /// The body pieces read with the head (all of the body when `body_complete`).
    body_parts: Vec<Bytes>,
    body: BodyDecoder,
    /// The whole body was buffered: the request can be resent.
    body_complete: bool,
    /// Answer `Expect: 100-continue` ourselves once a backend connection is in hand.
    answer_continue: bool,
    continue_sent: bool,
    /// The current attempt wrote the whole request head (and buffered body).
    written: bool,
    times: Deadlines,
    limits: Limits,
}

impl Outgoing {
    /// The outgoing request for `head`: the rewritten head, and the body as far as it is
    /// buffered.
    ///
    /// # Errors
    /// A body over `limits.max_body_bytes`, or a malformed one (400).
    fn prepare(
        client: &mut Client,
        config: &Config,
        group: &UpstreamGroup,
        head: RequestHead,
    ) -> Result<Self, Error> {
        let limits = &config.limits;
        let framing = head.framing();
        if let BodyFraming::ContentLength(n) = framing
            && n > limits.max_body_bytes
        {
            return Err(Error::bad_request(HttpError::client(
                ErrorKind::BodyTooLarge,
            )));
        }
        // Answer `Expect: 100-continue` ourselves once a backend connection is in hand (the Expect
        // header is then not forwarded), unless the body is already here.
        let answer_continue =
            head.expects_continue() && framing != BodyFraming::Empty && !client.has_buffered();

        // Take what of the body is already buffered; if that is all of it, the request can be resent.
        let mut body = BodyDecoder::new(framing).with_limit(limits.max_body_bytes);
        let mut body_parts: Vec<Bytes> = Vec::new();
        client
            .take_body(&mut body, Some(&mut body_parts))
            .map_err(Error::bad_request)?;
        let mut fwd = http::Forwarded::new(client.ip(), group.name.as_bytes());
        fwd.answered_continue = answer_continue;
        fwd.tunnel = head.upgrade().is_some();
        let ((), wire_head) =
            client.render(|out| http::write_forward_request_head(out, &head, &fwd));
        Ok(Outgoing {
            head,
            wire_head,
            body_parts,
            body_complete: body.is_done(),
            body,
            answer_continue,
            continue_sent: false,
            written: false,
            times: Deadlines {
                client: config.timeouts.client_idle,
                upstream: config.timeouts.upstream_response,
            },
            limits: Limits {
                max_head_bytes: limits.max_head_bytes.max(16 * 1024),
                max_headers: limits.max_headers,
            },
        })
    }

    /// Whether the request may be sent again after `e`: only while the whole request is in
    /// hand, and then if it was never written or is idempotent.
    fn resendable(&self) -> bool {
        self.body_complete && (!self.written || self.head.is_idempotent())
    }
}

/// Forwards `head` (and its body from the client) to `group`, relays the answer. Returns the
/// status sent to the client (or counted, for a client that went away) and what happens to the
/// client connection.
///
/// After an upstream failure the gateway answers 502/503/504 and keeps the client connection when
/// the request body was read whole (like nginx); otherwise the unread body leaves closing as the
/// only safe framing.
pub async fn forward(
    client: &mut Client,
    config: &Config,
    group: &UpstreamGroup,
    head: RequestHead,
) -> (u16, ConnAfter) {
    // Built by a plain function: its locals (framing, decoder, parts) then take no room in this
    // future, whose whole size is copied into place on every request.
    let mut req = match Outgoing::prepare(client, config, group, head) {
        Ok(r) => r,
        Err(e) => return client.answer_error(&e, None, ConnAfter::Close, &[]).await,
    };

    let mut ex = Exchange::new(group);
    // Bounded: each pass returns, or uses the exchange's single stale-connection retry
    // (endpoints that fail to connect are passed over inside `checkout`).
    loop {
        let metrics = client.shard().metrics();
        let passed_over = |e: &Error| count(metrics, group, e);
        let mut attempt = match ex.checkout(passed_over).await {
            Ok(a) => a,
            Err(e) => return fail(client, group, &req, e).await,
        };
        client.note_upstream(attempt.pool());
        match exchange(client, &mut attempt, &mut req).await {
            Ok((resp, mut ubuf, sent)) => {
                if let Err(e) = http::check_codings_deliverable(&resp, req.head.version()) {
                    // Not the backend's fault (it was spoken to in HTTP/1.1): no health report.
                    return fail(client, group, &req, Error::bad_response(e)).await;
                }
                ex.succeeded(&attempt);
                let relayed = relay::relay_response(
                    client,
                    config,
                    &mut attempt,
                    &mut ubuf,
                    &req.head,
                    &resp,
                    sent,
                );
                let r = match relayed.await {
                    Ok(r) => r,
                    Err(e) => {
                        ex.failed(&attempt, &e);
                        return fail(client, group, &req, e).await;
                    }
                };
                // The head's bytes point into the buffer: dropped first, so its room can be reused.
                drop(resp);
                match r.backend {
                    relay::Backend::Reuse(keep_alive) => {
                        attempt.release_reusable(keep_alive);
                        client.shard().read_bufs().put_back(ubuf);
                    }
                    relay::Backend::Close => client.shard().read_bufs().put_back(ubuf),
                    relay::Backend::Drop => {}
                }
                client.shard().metrics().upstream(&group.name, r.outcome);
                return (r.status, r.after);
            }
            Err(e) if ex.retry(&e, &attempt, req.resendable()) => continue,
            Err(e) => {
                ex.failed(&attempt, &e);
                return fail(client, group, &req, e).await;
            }
        }
    }
}

/// One attempt: `100 Continue` to the client if it waits for one, the request head and buffered
/// body to the backend in one vectored write, the rest of the body streamed, then the response
/// head read (interim heads forwarded to the client). Returns the final head, the read buffer
/// holding it, and how much of the request the backend got.
///
/// # Errors
/// Any upstream failure, a bad or stalled request body, or the client gone.
async fn exchange(
    client: &mut Client,
    attempt: &mut Attempt,
    req: &mut Outgoing,
) -> Result<(ResponseHead, bytes::BytesMut, Sent), Error> {
    if req.answer_continue && !req.continue_sent {
        req.continue_sent = true;
        let go_on = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");
        client
            .write_all(go_on)
            .await
            .map_err(|_| Error::client_gone())?;
    }

    let mut sent = Sent::Whole;
    req.written = false;
    let mut parts = crate::io::Pieces::new();
    parts.push(req.wire_head.clone());
    parts.extend(req.body_parts.iter().cloned());
    let mut ubuf = client.shard().read_bufs().take();
    let mut deadline = crate::io::now() + req.times.upstream;
    // The whole request is in hand: write it and read the answer's first bytes as one linked
    // chain where the driver has them (one wake-up for both).
    let linked = req.body.is_done();
    let written = if linked {
        attempt
            .send_then_read(parts, &mut ubuf, Some(req.times.upstream))
            .await
    } else {
        attempt.send(parts, Some(req.times.upstream)).await
    };
    if let Err(e) = written {
        // A linked timeout may have consumed bytes of the answer with its cancelled read.
        let gone = linked && e.kind() == Kind::Timeout;
        // Never written: on a reused connection the exchange's retry rule takes it.
        if gone || (attempt.is_reused() && req.body_complete) || !answered_early(attempt, &e) {
            return Err(e);
        }
        sent = Sent::Partial;
    }
    req.written = true;
    if sent == Sent::Whole && !req.body.is_done() {
        // Stream the rest of the body; from here on the request cannot be resent.
        match stream_request_body(client, attempt, &mut req.body, req.times).await {
            Ok(()) => {}
            Err(e) if e.side() == Side::Upstream && answered_early(attempt, &e) => {
                sent = Sent::Partial;
            }
            Err(e) => return Err(e),
        }
    }

    if !linked {
        // The answer's wait starts when the request (and a streamed body) is written.
        deadline = crate::io::now() + req.times.upstream;
    }
    let (version, upgrade) = (req.head.version(), req.head.upgrade().is_some());
    let continue_sent = req.continue_sent;
    let resp = loop {
        let head = attempt
            .read_head(
                &mut ubuf,
                req.head.method(),
                &req.limits,
                Some(deadline),
                |r| r.interim(version, upgrade, continue_sent),
            )
            .await?;
        match head {
            Head::Final(r) => break r,
            Head::Interim(r) => forward_interim(client, &r, version).await?,
        }
    };
    if sent == Sent::Partial && resp.status() == 101 {
        // A tunnel cannot start in the middle of a request body.
        return Err(Error::bad_response(HttpError::upstream(
            ErrorKind::InvalidStatus,
        )));
    }
    Ok((resp, ubuf, sent))
}

/// Forwards an interim response to the client, rewritten like any head (RFC 9110 §15.2: only to
/// an HTTP/1.1 client, which [`ResponseHead::interim`] has checked).
async fn forward_interim(
    client: &mut Client,
    resp: &ResponseHead,
    version: http::Version,
) -> Result<(), Error> {
    let date = crate::clock::http_date();
    let ((), out) = client.render(|out| {
        http::write_forward_response_head(out, resp, version, true, Some(&date));
    });
    client
        .write_all(out)
        .await
        .map_err(|_| Error::client_gone())
}

/// Whether the backend left something to read after writing the request to it failed (`e`):
/// bytes (an early response, see the module doc) or a FIN/RST that reading will report.
///
/// Reading then either finds a response head, relayed to the client, or fails like the write
/// did (502); a write that timed out on a backend with nothing to say stays a 504 without
/// another wait.
fn answered_early(attempt: &Attempt, e: &Error) -> bool {
    let early = !attempt.is_quiet();
    if early {
        tracing::debug!("writing the request failed ({e}); reading the backend's early answer");
    }
    early
}

/// Reads the rest of the request body from the client and writes it to the backend, piece by
/// piece, never holding more than one read's worth.
///
/// # Errors
/// The client's body is bad ([`Kind::BadRequest`]) or the client went away or stalled
/// ([`Kind::ClientGone`]; a stall past `client_idle` is marked on the client, which answers 408);
/// writing to the backend failed ([`Kind::Io`]) or stalled ([`Kind::Timeout`]).
async fn stream_request_body(
    client: &mut Client,
    attempt: &mut Attempt,
    body: &mut BodyDecoder,
    times: Deadlines,
) -> Result<(), Error> {
    // Bounded: every pass reads at least one byte within `client_idle`, and the decoder's limit
    // (`max_body_bytes`) caps the total.
    while !body.is_done() {
        // `read_body` is bounded by `client_idle` itself and marks the timeout, so the
        // connection loop answers 408; a second, equal timer here would race it.
        match client.read_body(CLIENT_BODY_READ).await {
            Ok(n) if n > 0 => {}
            _ => return Err(Error::client_gone()),
        }
        let mut parts = Vec::new();
        client
            .take_body(body, Some(&mut parts))
            .map_err(Error::bad_request)?;
        if !parts.is_empty() {
            let write = attempt.conn().stream().write_vectored_all(parts);
            match crate::io::timeout(times.upstream, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::io(Kind::Io, e)),
                Err(_) => return Err(Error::new(Kind::Timeout)),
            }
        }
    }
    Ok(())
}

/// Counts one failed upstream attempt in the upstream metrics.
fn count(metrics: &crate::metrics::ShardMetrics, group: &UpstreamGroup, e: &Error) {
    if let Some(outcome) = e.kind().upstream_outcome() {
        metrics.upstream(&group.name, outcome);
    }
}

/// Answers the client for a failed exchange. After an upstream failure the client connection
/// stays open when the request was read whole and the client wants keepalive; an unread body, or
/// an error of the client's own, closes it.
async fn fail(
    client: &mut Client,
    group: &UpstreamGroup,
    req: &Outgoing,
    e: Error,
) -> (u16, ConnAfter) {
    if e.side() == Side::Client {
        return client.answer_error(&e, None, ConnAfter::Close, &[]).await;
    }
    tracing::debug!(upstream = %group.name, "upstream failure: {e}");
    count(client.shard().metrics(), group, &e);
    let after = client.conn_after(&req.head, req.body.is_done());
    // All endpoints ejected: tell the client when the first one comes back (RFC 9110 §10.2.3).
    let retry_after = match e.kind() {
        Kind::Unavailable => group
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
    client
        .answer_error(&e, Some(&group.name), after, &extra)
        .await
}
