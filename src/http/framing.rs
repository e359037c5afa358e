//! Message body length (RFC 9112 §6.3): which framing a head announces, with every ambiguous
//! case an error. Requests and responses differ; both are decided here, in one place, because
//! disagreeing with a peer about where a body ends is how request smuggling starts.

use super::Version;
use super::error::ErrorKind;
use super::headers::Facts;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyFraming {
    /// No body: a request with neither Content-Length nor Transfer-Encoding, or a response to
    /// HEAD, 1xx, 204 or 304 (whatever its fields say).
    Empty,
    /// Exactly this many bytes (a request with `Content-Length: 0` gets `ContentLength(0)`).
    ContentLength(u64),
    /// Chunked transfer coding (RFC 9112 §7.1).
    Chunked,
    /// Responses only: the body runs until the backend closes; the connection is not reusable.
    UntilClose,
}

/// RFC 9112 §6.3 for requests; items 3-6 apply (a request never reads until close).
pub(crate) fn request_framing(version: Version, facts: &Facts) -> Result<BodyFraming, ErrorKind> {
    if let Some(te) = facts.transfer_encoding {
        // §6.1: "A server or client that receives an HTTP/1.0 message containing a
        // Transfer-Encoding header field MUST treat the message as if the framing is faulty".
        if version == Version::Http10 {
            return Err(ErrorKind::TransferEncodingOnHttp10);
        }
        // §6.1 / §6.3 item 3: both present is a smuggling vector; the server MAY reject: we do.
        if facts.content_length.is_some() {
            return Err(ErrorKind::ContentLengthAndTransferEncoding);
        }
        if te.count == 0 || te.malformed {
            return Err(ErrorKind::InvalidTransferEncoding);
        }
        // §6.1: "A sender MUST NOT apply the chunked transfer coding more than once".
        if te.chunked > 1 {
            return Err(ErrorKind::ChunkedRepeated);
        }
        // §6.1: unknown coding → 501.
        if te.unknown {
            return Err(ErrorKind::UnknownTransferCoding);
        }
        // §6.3 item 4: chunked not final in a request → 400 and close.
        if !te.chunked_last {
            return Err(ErrorKind::TransferEncodingNotChunked);
        }
        return Ok(BodyFraming::Chunked);
    }
    Ok(match facts.content_length {
        Some(n) => BodyFraming::ContentLength(n),
        None => BodyFraming::Empty,
    })
}

/// RFC 9112 §6.3 for responses, items 1-7.
///
/// Content-Length and Transfer-Encoding are validated even when the status decides the framing,
/// since they are forwarded (304 and HEAD responses keep their Content-Length).
pub(crate) fn response_framing(
    version: Version,
    status: u16,
    head_request: bool,
    connect_request: bool,
    facts: &Facts,
) -> Result<BodyFraming, ErrorKind> {
    if let Some(te) = facts.transfer_encoding {
        if version == Version::Http10 {
            return Err(ErrorKind::TransferEncodingOnHttp10);
        }
        if facts.content_length.is_some() {
            return Err(ErrorKind::ContentLengthAndTransferEncoding);
        }
        if te.count == 0 || te.malformed {
            return Err(ErrorKind::InvalidTransferEncoding);
        }
        // §6.1: chunked at most once, and if present it must be final (otherwise the sender
        // MUST close, which is ambiguous enough that we refuse it).
        if te.chunked > 1 || (te.chunked == 1 && !te.chunked_last) {
            return Err(ErrorKind::ChunkedRepeated);
        }
    }
    // §6.3 item 1: HEAD, 1xx, 204, 304 end at the head, whatever the fields say.
    // Item 2: a 2xx to CONNECT switches to a tunnel; the head ends the message.
    if head_request
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (connect_request && (200..300).contains(&status))
    {
        return Ok(BodyFraming::Empty);
    }
    if let Some(te) = facts.transfer_encoding {
        // §6.3 item 4: chunked final → chunked; otherwise read until close. Unknown codings are
        // passed through: the gateway forwards bytes, it does not decode them.
        return Ok(if te.chunked_last {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        });
    }
    Ok(match facts.content_length {
        Some(n) => BodyFraming::ContentLength(n),
        None => BodyFraming::UntilClose,
    })
}
