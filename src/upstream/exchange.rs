//! One exchange with an upstream group, shared by the proxy and fan-out calls:
//! endpoint choice → checkout → send the request → read the response head (interim heads handled
//! here) → the retry rule. What follows the head (relaying or collecting the body, checking the
//! connection back in) is the caller's.
//!
//! Retry rule (DESIGN.md): a connect failure (nothing sent) moves on to the next endpoint. A
//! request that fails on a *reused* connection before any response byte arrived is sent once
//! more, on a fresh connection, if the caller can resend it ([`Exchange::retry`]: it still holds
//! the whole request, and the request is idempotent or was never written). Nothing else is ever
//! retried.
//!
//! What this module must never do: write to the client, or hand a connection back to its pool
//! (only [`PooledConn::release_reusable`] does, called by whoever read the response to its end).

use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::audit;
use crate::error::{Error, Kind, Side};
use crate::http::{self, HeadScanner, Interim, Limits, Method, ResponseHead, Status};
use crate::io::{self as rio, Stream};
use crate::upstream::read_bufs::UPSTREAM_READ_BUF;
use crate::upstream::{CheckoutError, InFlight, Pool, PooledConn, UpstreamGroup};

/// The endpoint choices and the retry budget of one request to one upstream group.
pub struct Exchange<'g> {
    group: &'g UpstreamGroup,
    /// Members a connect failed on: not picked again for this request.
    tried: Vec<usize>,
    /// The one stale-connection retry was used: check out fresh connections only.
    retried: bool,
}

/// One connection of an exchange, to one endpoint, and the state of reading its response head.
pub struct Attempt {
    idx: usize,
    /// Counts the request as outstanding on its endpoint (least-outstanding balancing) until
    /// the attempt is dropped.
    inflight: InFlight,
    conn: PooledConn,
    scanner: HeadScanner,
    /// A byte of the response arrived: a failure now is not a stale connection.
    got_any: bool,
    /// Interim heads read so far (at most [`http::MAX_INTERIM_HEADS`]).
    interim: usize,
    /// The result of a read made linked behind the request's write
    /// ([`Attempt::send_then_read`]), not yet seen by [`Attempt::read_more`].
    pending: Option<io::Result<usize>>,
}

/// A response head read by [`Attempt::read_head`].
#[derive(Debug)]
pub enum Head {
    /// The final response (or the `101` that starts a tunnel the client asked for).
    Final(ResponseHead),
    /// An interim response to forward to the client; then read the next head.
    Interim(ResponseHead),
}

impl<'g> Exchange<'g> {
    /// A new exchange with `group`: no endpoint tried, the retry unused.
    pub fn new(group: &'g UpstreamGroup) -> Self {
        Exchange {
            group,
            tried: Vec::new(),
            retried: false,
        }
    }

    /// The group this exchange talks to.
    pub fn group(&self) -> &'g UpstreamGroup {
        self.group
    }

    /// Picks an endpoint and checks out a connection to it: an idle pooled one first (none after
    /// the stale-connection retry), else a new one.
    ///
    /// A connect failure counts against the endpoint's health and moves on to another endpoint
    /// (nothing was sent); `passed_over` is told of each failure that is not the last.
    ///
    /// # Errors
    /// [`Kind::Unavailable`] when no endpoint is left to try (all ejected or tried, or the pool
    /// stayed exhausted); the last endpoint's [`Kind::Connect`] / [`Kind::ConnectTimeout`].
    pub async fn checkout(
        &mut self,
        mut passed_over: impl FnMut(&Error),
    ) -> Result<Attempt, Error> {
        let group = self.group;
        // Bounded: each pass returns or adds an endpoint to `tried` (at most one per member).
        loop {
            let Some((idx, inflight)) = group.pick(&self.tried) else {
                return Err(Error::new(Kind::Unavailable));
            };
            let pool = inflight.member().pool.clone();
            let checkout = if self.retried {
                pool.checkout_fresh().await
            } else {
                pool.checkout().await
            };
            let e = match checkout {
                Ok(conn) => {
                    return Ok(Attempt {
                        idx,
                        inflight,
                        conn,
                        scanner: HeadScanner::new(),
                        got_any: false,
                        interim: 0,
                        pending: None,
                    });
                }
                Err(CheckoutError::Exhausted) => return Err(Error::new(Kind::Unavailable)),
                Err(CheckoutError::ConnectTimeout) => Error::new(Kind::ConnectTimeout),
                Err(CheckoutError::Connect(e)) => Error::io(Kind::Connect, e),
            };
            group.report_failure(idx);
            tracing::debug!(upstream = %group.name, endpoint = %pool.endpoint(), "connect failed: {e}");
            self.tried.push(idx);
            if self.tried.len() >= group.members().len() {
                return Err(e);
            }
            passed_over(&e);
        }
    }

    /// The retry rule: whether to send the request again after `e` on `attempt`. Yes once per
    /// exchange, when nothing of the response arrived on a connection reused from the pool, and
    /// the caller can resend the request (`resendable`: it holds all of it, and it is idempotent
    /// or was never written). The next [`Exchange::checkout`] then connects afresh.
    pub fn retry(&mut self, e: &Error, attempt: &Attempt, resendable: bool) -> bool {
        if self.retried || !resendable || !e.retry_if_reused() || !attempt.conn.is_reused() {
            return false;
        }
        tracing::debug!(upstream = %self.group.name, "stale pooled connection: {e}; retrying on a fresh one");
        self.retried = true;
        true
    }

    /// Records that `attempt` got a good response head (passive health).
    pub fn succeeded(&self, attempt: &Attempt) {
        self.group.report_success(attempt.idx);
    }

    /// Records that `attempt` ended with `e`: an upstream error counts against the endpoint's
    /// health; the client's errors do not.
    pub fn failed(&self, attempt: &Attempt, e: &Error) {
        if e.side() == Side::Upstream {
            self.group.report_failure(attempt.idx);
        }
    }
}

impl Attempt {
    /// The pool of the endpoint this attempt is connected to.
    pub fn pool(&self) -> &std::rc::Rc<Pool> {
        &self.inflight.member().pool
    }

    /// The checked-out connection.
    pub fn conn(&mut self) -> &mut PooledConn {
        &mut self.conn
    }

    /// Whether the connection came from the pool (see [`Exchange::retry`]).
    pub fn is_reused(&self) -> bool {
        self.conn.is_reused()
    }

    /// Whether the backend has nothing for us to read (no bytes, no FIN): see
    /// [`crate::io::Stream::is_quiet`].
    pub fn is_quiet(&self) -> bool {
        self.conn.stream_ref().is_quiet()
    }

    /// Writes the request (`parts`: head, then any body pieces) with one vectored write, within
    /// `limit` if one is given (a fan-out call is bounded by its caller instead).
    ///
    /// # Errors
    /// [`Kind::Io`] or [`Kind::Timeout`], marked as before any response byte: the request was not
    /// (wholly) written, so resending it cannot duplicate it.
    pub async fn send(&mut self, parts: rio::Pieces, limit: Option<Duration>) -> Result<(), Error> {
        let write = self.conn.stream().write_vectored_all(parts);
        let res = match limit {
            Some(limit) => match rio::timeout(limit, write).await {
                Ok(r) => r,
                Err(_) => return Err(Error::new(Kind::Timeout).before_response()),
            },
            None => write.await,
        };
        res.map_err(|e| Error::io(Kind::Io, e).before_response())
    }

    /// Like [`Attempt::send`] and then the first read of the response into `buf`, as one linked
    /// chain where the driver has them ([`Stream::write_vectored_then_read`]): one wake-up for
    /// both. The read's result waits for the next [`Attempt::read_more`] (so for
    /// [`Attempt::read_head`], which parses what it brought). `limit` bounds the write and that
    /// read together.
    ///
    /// # Errors
    /// As [`Attempt::send`], except for a timeout: the request may then have been written, so
    /// [`Kind::Timeout`] is not marked as before the response (never resent). The buffer then
    /// went with the cancelled read and `buf` is left empty, as in [`Attempt::read_more`].
    #[allow(clippy::manual_async_fn)] // on purpose: see the first comment
    pub fn send_then_read<'a>(
        &'a mut self,
        parts: rio::Pieces,
        buf: &'a mut BytesMut,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<(), Error>> + 'a {
        // The driver's future is built now, not inside an async fn: the pieces go straight into
        // its iovec box, instead of being held (twice, rust#62958) and moved by this future on
        // every backend request.
        make_room(buf);
        let pending = &mut self.pending;
        let go = self
            .conn
            .stream()
            .write_vectored_then_read(parts, std::mem::take(buf));
        async move {
            let (written, read, b) = match limit {
                Some(limit) => match rio::timeout(limit, go).await {
                    Ok(r) => r,
                    Err(_) => return Err(Error::new(Kind::Timeout)),
                },
                None => go.await,
            };
            audit::read(&b);
            *buf = b;
            *pending = read;
            written.map_err(|e| Error::io(Kind::Io, e).before_response())
        }
    }

    /// Reads the next response head into `buf`: the final one, or an interim one the caller
    /// forwards before calling again. `interim` says what each head is ([`ResponseHead::interim`]
    /// for a proxied request); a skipped one is not returned, an unexpected one (a `101` nobody
    /// asked for) is a bad response, and more than [`http::MAX_INTERIM_HEADS`] of them is too.
    /// The whole head must arrive by `deadline` when one is given.
    ///
    /// # Errors
    /// [`Kind::Timeout`]; [`Kind::BadResponse`]; [`Kind::Io`] when the connection closed or
    /// failed, marked as before the response when no byte of it had arrived (a stale pooled
    /// connection, see [`Exchange::retry`]).
    pub async fn read_head(
        &mut self,
        buf: &mut BytesMut,
        method: Method,
        limits: &Limits,
        deadline: Option<Instant>,
        interim: impl Fn(&ResponseHead) -> Interim,
    ) -> Result<Head, Error> {
        // Bounded: every pass parses a head, or reads at least one byte (before `deadline`), and
        // the scanner refuses a head over `limits.max_head_bytes`.
        loop {
            if !buf.is_empty() {
                match http::parse_response_head(buf, &mut self.scanner, limits, method) {
                    Ok(Status::Complete(resp)) => {
                        let what = interim(&resp);
                        if let Interim::Final | Interim::SwitchProtocols = what {
                            return Ok(Head::Final(resp));
                        }
                        if what == Interim::Unexpected || self.interim == http::MAX_INTERIM_HEADS {
                            let e = http::HttpError::upstream(http::ErrorKind::InvalidStatus);
                            return Err(Error::bad_response(e));
                        }
                        self.interim += 1;
                        self.scanner.reset();
                        if what == Interim::Forward {
                            return Ok(Head::Interim(resp));
                        }
                        continue;
                    }
                    Ok(Status::Partial) => {}
                    Err(e) => return Err(Error::bad_response(e)),
                }
            }
            let limit = deadline.map(|d| d.saturating_duration_since(crate::io::now()));
            let e = match self.read_more(buf, limit).await {
                Ok(Ok(0)) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed before responding",
                ),
                Ok(Ok(_)) => {
                    self.got_any = true;
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => return Err(Error::new(Kind::Timeout)),
            };
            let e = Error::io(Kind::Io, e);
            return Err(if self.got_any { e } else { e.before_response() });
        }
    }

    /// One read from the backend into the spare capacity of `buf` (room is made first, so a read
    /// never spins on a full buffer), within `limit` if one is given.
    ///
    /// # Errors
    /// `Err(Elapsed)` when `limit` passed. The buffer then went with the cancelled read and `buf`
    /// is left empty: the connection must be closed (it is after any timeout: a cancelled read
    /// may have consumed bytes).
    pub async fn read_more(
        &mut self,
        buf: &mut BytesMut,
        limit: Option<Duration>,
    ) -> Result<io::Result<usize>, rio::Elapsed> {
        if let Some(read) = self.pending.take() {
            return Ok(read);
        }
        read_into(self.conn.stream(), buf, limit).await
    }

    /// Marks the exchange complete and the connection clean: it returns to its pool (see
    /// [`PooledConn::release_reusable`]). Dropping the attempt without this closes it.
    pub fn release_reusable(self, keep_alive_for: Option<Duration>) {
        self.conn.release_reusable(keep_alive_for);
    }
}

/// Makes room in `buf` for a read from a backend.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        // Reclaims the front of the allocation once the pieces written earlier are dropped;
        // pieces still held keep the old allocation alive, and only unconsumed bytes (a partial
        // head or chunk-size line, never body data) move to the new one.
        buf.reserve(UPSTREAM_READ_BUF);
    }
}

/// One read from a backend's `stream` into the spare capacity of `buf` (room is made first, so a
/// read never spins on a full buffer), within `limit` if one is given. Every read of a response
/// (head or body) goes through here, so the audit sees every buffer a backend's bytes landed in.
///
/// # Errors
/// `Err(Elapsed)` when `limit` passed. The buffer then went with the cancelled read and `buf` is
/// left empty: the connection must be closed (it is after any timeout: a cancelled read may have
/// consumed bytes).
pub async fn read_into(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limit: Option<Duration>,
) -> Result<io::Result<usize>, rio::Elapsed> {
    make_room(buf);
    let read = stream.read(std::mem::take(buf));
    let (res, b) = match limit {
        Some(limit) => rio::timeout(limit, read).await?,
        None => read.await,
    };
    audit::read(&b);
    *buf = b;
    Ok(res)
}
