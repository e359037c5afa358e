//! The HTTP/1.1 codec: bytes in, structured values out. No sockets, no clocks, no body copies.
//!
//! What it owns:
//! - parsing request and response heads in place over the connection's read buffer
//!   ([`parse_request_head`], [`parse_response_head`]), strictly per RFC 9110/9112, with every
//!   ambiguous framing case rejected ([`HttpError`] carries the status to answer with);
//! - normalizing the request-target's path before anything routes on it ([`normalize_path`]);
//! - message body framing ([`BodyFraming`]) and the streaming [`BodyDecoder`] for
//!   Content-Length, chunked and read-until-close bodies, handing out zero-copy [`Bytes`] slices of
//!   the read buffer;
//! - hop-by-hop rules and forwarding headers, and serialisation of outgoing heads into a reusable
//!   buffer ([`write_forward_request_head`], [`write_forward_response_head`], [`HeadWriter`]);
//! - the chunked encoder for bodies ringway frames itself ([`ChunkedEncoder`]).
//!
//! What it must never do: I/O, reading clocks, allocating per header, or copying a body byte. A
//! head is parsed once, kept as the `Bytes` it arrived in, and its fields are ranges into it; the
//! rewritten outgoing head is the one copy the gateway makes.
//!
//! Errors are final: after any [`HttpError`] the connection the bytes came from must be closed.

mod body;
mod chunked;
mod date;
mod error;
mod framing;
mod headers;
mod hop;
mod normalize;
mod request;
mod response;
mod scan;
mod target;
mod write;

#[cfg(test)]
mod proptests;

pub use body::{BodyDecoder, ChunkedEncoder, LAST_CHUNK, encode_chunk};
pub use chunked::{ALLOWED_TRAILERS, MAX_CHUNK_EXT_BYTES, MAX_TRAILER_BYTES};
pub use date::{IMF_FIXDATE_LEN, imf_fixdate};
pub use error::{ErrorKind, HttpError, Side};
pub use framing::BodyFraming;
pub use headers::Headers;
pub use hop::{is_hop_by_hop, not_for_subrequests};
pub use normalize::{EncodedSlashes, TargetPolicy, normalize_path};
pub use request::{Method, RequestHead, TargetForm, parse_request_head, parse_request_head_with};
pub use response::{Interim, MAX_INTERIM_HEADS, ResponseHead, parse_response_head};
pub use scan::HeadScanner;

pub use write::{
    BodyMode, ConnAfter, Forwarded, HeadWriter, ResponseForward, check_codings_deliverable,
    put_u64, reason_phrase, write_forward_request_head, write_forward_response_head,
    write_subrequest_head,
};

pub use bytes::{Bytes, BytesMut};

/// Abuse limits for one head. Defaults match `[limits]` in the config: 16 KiB, 100 field lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head accepted, start line through the blank line. A request line alone longer than
    /// this is answered 414, a longer head 431.
    pub max_head_bytes: usize,
    /// Most field lines accepted in one head (431 past it). Values above
    /// [`MAX_HEADERS_CAP`] are treated as `MAX_HEADERS_CAP`.
    pub max_headers: usize,
}

/// Hard cap on field lines per head: the parser's header scratch space lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16384,
            max_headers: 100,
        }
    }
}

/// The outcome of feeding bytes to a parser: done, or more bytes needed (which is not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<T> {
    /// The value is complete.
    Complete(T),
    /// The buffer holds a valid prefix; read more and call again.
    Partial,
}

impl<T> Status<T> {
    /// `true` for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// The value if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }
}

/// The protocol version of a message. Anything but 1.0 and 1.1 is rejected (505 for clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0: no persistent connections unless asked for, no chunked.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    /// The protocol name as sent on the wire, e.g. `b"HTTP/1.1"`.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }

    fn from_minor(minor: u8) -> Self {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}
