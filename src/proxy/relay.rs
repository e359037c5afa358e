//! The proxy's second half: the response head and body relayed to the client piece by piece
//! (each piece a slice of the backend read buffer, never a copy), or a tunnel after a `101`.

use std::pin::pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, select};

use super::{Deadlines, Sent};
use crate::audit;
use crate::client::Client;
use crate::config::Config;
use crate::error::Error;
use crate::http::{self, BodyDecoder, BodyMode, ConnAfter, HttpError, RequestHead, ResponseHead};
use crate::io::{self as rio, Stream};
use crate::metrics::UpstreamOutcome;
use crate::upstream::{Attempt, read_into};

/// How a relayed response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Relayed {
    /// The status sent to the client.
    pub status: u16,
    /// What happens to the client connection.
    pub after: ConnAfter,
    /// The exchange's outcome for the upstream metrics: `Error` when the body was cut short or
    /// the tunnel failed.
    pub outcome: UpstreamOutcome,
    /// What the caller does with the backend connection and its read buffer.
    pub backend: Backend,
}

/// What becomes of the backend connection after a relayed response. The caller acts on it, so
/// this future borrows the attempt and buffer instead of holding copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    /// Back to its pool (with the backend's `Keep-Alive: timeout=`), the buffer recycled.
    Reuse(Option<Duration>),
    /// Closed; the buffer, read to a clean end, recycled.
    Close,
    /// Closed; the buffer dropped with it (a tunnel, or a body cut short).
    Drop,
}

/// Sends the response head and streams its body to the client, or tunnels after a `101`.
///
/// The backend connection may go back to its pool ([`Backend::Reuse`]) only when the body ended
/// cleanly, the backend allows reuse, no byte beyond the response was read (honouring
/// `Keep-Alive: timeout=`), and the backend got the whole request (`sent`); an early answer also
/// closes the client connection.
///
/// # Errors
/// The response body's framing was invalid before any byte was written to the client: the
/// caller answers 502 instead (and closes the backend connection).
pub(super) async fn relay_response(
    client: &mut Client,
    config: &Config,
    attempt: &mut Attempt,
    ubuf: &mut BytesMut,
    req: &RequestHead,
    resp: &ResponseHead,
    sent: Sent,
) -> Result<Relayed, Error> {
    let status = resp.status();
    let keep_client = client.conn_after(req, sent == Sent::Whole) == ConnAfter::KeepAlive;
    let date = crate::clock::http_date();
    let (plan, head_bytes) = client.render(|out| {
        http::write_forward_response_head(out, resp, req.version(), keep_client, Some(&date))
    });
    let times = Deadlines {
        client: config.timeouts.client_idle,
        upstream: config.timeouts.upstream_response,
    };

    if status == 101 {
        // The exchange only lets a 101 through when the client asked to upgrade.
        let leftover_client = client.take_leftover();
        let (stream, count) = client.stream_and_count();
        // Boxed: the tunnel's 1.6 KB state would otherwise be part of every proxied request's
        // future (and of the copy that puts it in place).
        let to_client = vec![head_bytes, ubuf.split().freeze()];
        let upstream = attempt.conn().stream();
        let ok = crate::io::boxed_with(|| {
            tunnel(
                stream,
                count,
                upstream,
                to_client,
                leftover_client,
                times.client,
                config.timeouts.tunnel_idle,
            )
        })
        .await;
        let outcome = if ok {
            UpstreamOutcome::Ok
        } else {
            UpstreamOutcome::Error
        };
        return Ok(Relayed {
            status,
            after: ConnAfter::Close,
            outcome,
            backend: Backend::Drop,
        });
    }

    let mut decoder = BodyDecoder::for_response(resp.framing());
    let (stream, count) = client.stream_and_count();
    let end = relay_body(
        stream,
        count,
        attempt.conn().stream(),
        ubuf,
        &mut decoder,
        plan.body,
        head_bytes,
        times,
        keep_client,
    )
    .await;
    match end {
        BodyEnd::Complete => {
            let reusable = sent == Sent::Whole && resp.keep_alive() && ubuf.is_empty();
            let backend = if reusable {
                Backend::Reuse(resp.keep_alive_timeout().map(Duration::from_secs))
            } else {
                Backend::Close
            };
            Ok(Relayed {
                status,
                after: plan.client_conn,
                outcome: UpstreamOutcome::Ok,
                backend,
            })
        }
        BodyEnd::Truncated => {
            // The client must not mistake what it got for the whole response: with a RST it
            // cannot, whatever the framing (a de-chunked HTTP/1.0 body would otherwise end at a
            // plain FIN that looks like a complete until-close body).
            client.set_reset_on_close();
            Ok(Relayed {
                status,
                after: ConnAfter::Close,
                outcome: UpstreamOutcome::Error,
                backend: Backend::Drop,
            })
        }
        BodyEnd::ClientGone => Ok(Relayed {
            status,
            after: ConnAfter::Close,
            outcome: UpstreamOutcome::Error,
            backend: Backend::Drop,
        }),
        BodyEnd::Rejected(e) => Err(Error::bad_response(e)),
    }
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
pub(super) enum BodyEnd {
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
/// a slice of `ubuf`, never a copy. With `defer_last` (the client connection stays open), the
/// write that completes the response is held back to go out linked with the wait for the next
/// request ([`Stream::defer_write`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_body(
    client: &mut Stream,
    sent: &mut u64,
    upstream: &mut Stream,
    ubuf: &mut BytesMut,
    decoder: &mut BodyDecoder,
    mode: BodyMode,
    first: Bytes,
    times: Deadlines,
    defer_last: bool,
) -> BodyEnd {
    // Inline for a head and a few body pieces: no allocation per response or per read.
    let mut out = crate::io::Pieces::new();
    out.push(first);
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
            let mut pieces = std::mem::take(&mut out);
            *sent += pieces.iter().map(|b| b.len() as u64).sum::<u64>();
            if done && defer_last && taken.is_ok() {
                match client.defer_write(pieces) {
                    None => return BodyEnd::Complete,
                    Some(p) => pieces = p,
                }
            }
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
        match read_into(upstream, ubuf, Some(times.upstream)).await {
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
    out: &mut crate::io::Pieces,
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
