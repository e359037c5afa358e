//! The request path's one error type, in the style of Pingora's `pingora-error`: what went wrong
//! ([`Kind`]), which side caused it ([`Side`]), whether the request may be sent again
//! ([`Error::retry_if_reused`]), and the status the client gets ([`Kind::client_status`], the one
//! function that maps an error to a status).
//!
//! A client that went away is [`Kind::ClientGone`]: nothing is sent to it, and metrics and the
//! access log count it as [`CLIENT_GONE`] (nginx's 499, "client closed request").
//!
//! This module never builds a string: errors are values, their `Display` formats on demand.

use std::fmt;
use std::io;

use crate::http::HttpError;
use crate::metrics::UpstreamOutcome;

/// The status counted (never sent) for a request whose client went away before its answer.
pub const CLIENT_GONE: u16 = 499;

/// Which side caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream client (a bad or stalled request, a hang-up).
    Client,
    /// A backend, or no backend being available.
    Upstream,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No endpoint could be used (every one ejected or tried, the pool exhausted): 503.
    Unavailable,
    /// Connecting failed (refused, unreachable, reset): 502.
    Connect,
    /// Connecting took longer than `upstream_connect`: 504.
    ConnectTimeout,
    /// Writing to the backend failed, or it closed or reset the connection before the response
    /// ended: 502.
    Io,
    /// The backend did not answer (or take the request) within `upstream_response`: 504.
    Timeout,
    /// The backend's bytes were not a valid response, or not one the request allows: 502.
    BadResponse,
    /// The client's request body was malformed or over its limit: the codec's status
    /// (400/413/501).
    BadRequest(HttpError),
    /// The client went away or stalled: nothing to answer ([`CLIENT_GONE`] is counted).
    ClientGone,
}

impl Kind {
    /// The status the client gets for this error: the one mapping (upstream → 502/503/504,
    /// client → the codec's 4xx/5xx, gone → [`CLIENT_GONE`], which is counted, never sent).
    pub fn client_status(self) -> u16 {
        match self {
            Kind::Unavailable => 503,
            Kind::Connect | Kind::Io | Kind::BadResponse => 502,
            Kind::ConnectTimeout | Kind::Timeout => 504,
            Kind::BadRequest(e) => e.status(),
            Kind::ClientGone => CLIENT_GONE,
        }
    }

    /// The `error` value of the JSON body the client gets.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Unavailable => "upstream_unavailable",
            Kind::Connect | Kind::Io => "upstream_error",
            Kind::ConnectTimeout | Kind::Timeout => "upstream_timeout",
            Kind::BadResponse => "upstream_bad_response",
            Kind::BadRequest(e) => e.reason(),
            Kind::ClientGone => "client_gone",
        }
    }

    /// Which side caused it.
    pub fn side(self) -> Side {
        match self {
            Kind::BadRequest(_) | Kind::ClientGone => Side::Client,
            _ => Side::Upstream,
        }
    }

    /// The `outcome` label of `ringway_upstream_requests_total` for an upstream error; None for
    /// the client's errors, which are no upstream exchange's outcome.
    pub fn upstream_outcome(self) -> Option<UpstreamOutcome> {
        Some(match self {
            Kind::Unavailable => UpstreamOutcome::Unavailable,
            Kind::Connect | Kind::Io => UpstreamOutcome::Error,
            Kind::ConnectTimeout | Kind::Timeout => UpstreamOutcome::Timeout,
            Kind::BadResponse => UpstreamOutcome::BadResponse,
            Kind::BadRequest(_) | Kind::ClientGone => return None,
        })
    }
}

/// One failure on the request path (see the module doc).
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    /// Nothing of the response arrived: on a reused pooled connection this is what a connection
    /// the backend had already closed looks like, so the request may be sent once more on a
    /// fresh one (Pingora's `RetryType::ReusedOnly`).
    stale: bool,
    /// What the operating system said, for the debug log.
    cause: Option<io::Error>,
    /// The codec's verdict on a bad response, for the debug log.
    http: Option<HttpError>,
}

impl Error {
    /// An error of `kind`, not retried.
    pub fn new(kind: Kind) -> Error {
        Error {
            kind,
            stale: false,
            cause: None,
            http: None,
        }
    }

    /// An I/O failure of `kind` caused by `cause`.
    pub fn io(kind: Kind, cause: io::Error) -> Error {
        Error {
            cause: Some(cause),
            ..Error::new(kind)
        }
    }

    /// The backend's bytes failed to parse (502).
    pub fn bad_response(e: HttpError) -> Error {
        Error {
            http: Some(e),
            ..Error::new(Kind::BadResponse)
        }
    }

    /// The client's request body failed to parse or was over its limit.
    pub fn bad_request(e: HttpError) -> Error {
        Error::new(Kind::BadRequest(e))
    }

    /// The client went away (or stalled) mid-request.
    pub fn client_gone() -> Error {
        Error::new(Kind::ClientGone)
    }

    /// Marks a failure that happened before any byte of the response arrived (see
    /// [`Error::retry_if_reused`]).
    pub fn before_response(mut self) -> Error {
        self.stale = true;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Which side caused it.
    pub fn side(&self) -> Side {
        self.kind.side()
    }

    /// The status the client gets ([`Kind::client_status`]).
    pub fn client_status(&self) -> u16 {
        self.kind.client_status()
    }

    /// Whether the request may be sent again on a fresh connection if this one was reused from
    /// the pool: nothing of the response arrived, so the pooled connection was probably stale.
    /// The caller still checks that the request can be resent (see `upstream::exchange`).
    pub fn retry_if_reused(&self) -> bool {
        self.stale
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.code())?;
        if let Some(e) = &self.cause {
            write!(f, ": {e}")?;
        }
        if let Some(e) = &self.http {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
