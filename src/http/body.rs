//! Message bodies: the [`BodyDecoder`] that delimits a body in the read buffer, and the chunked
//! encoder for bodies ringway frames itself.
//!
//! Zero copy both ways: decoded pieces are `split_to` + `freeze` of the read buffer, and the
//! encoder wraps the caller's `Bytes` between a size line and a static CRLF.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::ChunkedDecoder;
use super::error::{ErrorKind, HttpError, Side};
use super::framing::BodyFraming;

#[derive(Debug, Clone)]
enum Kind {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose { closed: bool },
}

/// Delimits one message body in a connection's read buffer.
///
/// Call [`next_raw`](BodyDecoder::next_raw) (forwarding: framing kept) or
/// [`next_data`](BodyDecoder::next_data) (framing stripped) after every read until
/// [`is_done`](BodyDecoder::is_done); use one mode per body. Bytes after the body stay in the
/// buffer (the next pipelined message). Between calls, only append to the buffer.
///
/// Errors carry the [`Side`] the body came from: [`new`](BodyDecoder::new) decodes a client's
/// request body (400 / 413), [`for_response`](BodyDecoder::for_response) a backend's (502).
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
    side: Side,
    limit: u64,
    seen: u64,
}

impl BodyDecoder {
    /// A decoder for a request body with this framing. `Empty` is done at once.
    pub fn new(framing: BodyFraming) -> Self {
        Self::with_side(framing, Side::Client)
    }

    /// A decoder for a backend's response body with this framing.
    pub fn for_response(framing: BodyFraming) -> Self {
        Self::with_side(framing, Side::Upstream)
    }

    fn with_side(framing: BodyFraming, side: Side) -> Self {
        let kind = match framing {
            BodyFraming::Empty => Kind::Length { remaining: 0 },
            BodyFraming::ContentLength(n) => Kind::Length { remaining: n },
            BodyFraming::Chunked => Kind::Chunked(ChunkedDecoder::new(u64::MAX)),
            BodyFraming::UntilClose => Kind::UntilClose { closed: false },
        };
        Self {
            kind,
            side,
            limit: u64::MAX,
            seen: 0,
        }
    }

    /// Caps the body's data at `max` bytes ([`ErrorKind::BodyTooLarge`], 413 for a client). A
    /// Content-Length over the cap fails on the first call, before any byte is handed out.
    pub fn with_limit(mut self, max: u64) -> Self {
        self.limit = max;
        if let Kind::Chunked(_) = self.kind {
            self.kind = Kind::Chunked(ChunkedDecoder::new(max));
        }
        self
    }

    fn err(&self, kind: ErrorKind) -> HttpError {
        HttpError::new(kind, self.side)
    }

    /// Forwarding mode: validates and takes the next piece of raw body bytes (chunked framing
    /// included, unchanged except that chunk extensions are dropped) off the front of `buf`,
    /// without copying.
    ///
    /// Returns `Ok(None)` when `buf` holds nothing that can be handed out yet, or the body is done.
    /// A chunked trailer section is held back until it is complete and checked.
    ///
    /// # Errors
    ///
    /// Bad chunk framing, a refused trailer, or a body over the limit. Close the connection.
    pub fn next_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        let Kind::Chunked(c) = &mut self.kind else {
            let n = self.plain(buf.len())?;
            return Ok((n > 0).then(|| buf.split_to(n).freeze()));
        };
        // Bounded: a pass that hands nothing out either drops at least one byte or ends.
        loop {
            let step = c.raw(buf).map_err(|k| HttpError::new(k, self.side))?;
            let piece = (step.emit > 0).then(|| buf.split_to(step.emit).freeze());
            buf.advance(step.discard);
            if piece.is_some() || step.discard == 0 {
                return Ok(piece);
            }
        }
    }

    /// Data mode: the next slice of decoded body data (framing stripped), split off `buf` without
    /// copying. Framing bytes are discarded from `buf` as they are validated; trailers are
    /// validated and dropped.
    ///
    /// Returns `Ok(None)` when no data is available yet, or the body is done.
    ///
    /// # Errors
    ///
    /// As [`next_raw`](BodyDecoder::next_raw), except that trailers off the allow-list are dropped
    /// rather than refused.
    pub fn next_data(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        match &mut self.kind {
            Kind::Chunked(c) => {
                let (discard, n) = c.data(buf).map_err(|k| HttpError::new(k, self.side))?;
                buf.advance(discard);
                Ok((n > 0).then(|| buf.split_to(n).freeze()))
            }
            _ => {
                let n = self.plain(buf.len())?;
                Ok((n > 0).then(|| buf.split_to(n).freeze()))
            }
        }
    }

    /// Content-Length and until-close bodies: how many of `available` bytes belong to the body.
    fn plain(&mut self, available: usize) -> Result<usize, HttpError> {
        let n = match &mut self.kind {
            Kind::Length { remaining } => {
                if *remaining > self.limit {
                    return Err(self.err(ErrorKind::BodyTooLarge));
                }
                let n = (*remaining).min(available as u64);
                *remaining -= n;
                n
            }
            Kind::UntilClose { .. } => available as u64,
            Kind::Chunked(_) => 0,
        };
        self.seen += n;
        if self.seen > self.limit {
            return Err(self.err(ErrorKind::BodyTooLarge));
        }
        Ok(n as usize)
    }

    /// Whether the whole body has been handed out (for until-close: after [`eof`](BodyDecoder::eof)).
    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Length { remaining } => *remaining == 0,
            Kind::Chunked(c) => c.is_done(),
            Kind::UntilClose { closed } => *closed,
        }
    }

    /// Bytes of a Content-Length body still to come; `None` for other framings.
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// The peer closed its side. Ends an until-close body.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TruncatedBody`] if the body was not complete (RFC 9112 §8: an incomplete
    /// message must not be treated as complete).
    pub fn eof(&mut self) -> Result<(), HttpError> {
        if let Kind::UntilClose { closed } = &mut self.kind {
            *closed = true;
        }
        if self.is_done() {
            Ok(())
        } else {
            Err(self.err(ErrorKind::TruncatedBody))
        }
    }
}

/// The last-chunk and the empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

const CRLF: &[u8] = b"\r\n";

/// Writes `n` in hex followed by CRLF into `line`, returning the length used.
fn size_line(n: u64, line: &mut [u8; 18]) -> usize {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in line[..digits].iter_mut().enumerate() {
        let nibble = (n >> (4 * (digits - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    digits + 2
}

/// Appends `data` as one chunk to `out`: size line, the data `Bytes` itself (not copied), CRLF.
///
/// Empty data is skipped: an empty chunk would end the body. The size line is a small fresh
/// allocation; [`ChunkedEncoder`] avoids even that.
pub fn encode_chunk(data: &Bytes, out: &mut Vec<Bytes>) {
    if data.is_empty() {
        return;
    }
    let mut line = [0u8; 18];
    let len = size_line(data.len() as u64, &mut line);
    out.extend([
        Bytes::copy_from_slice(&line[..len]),
        data.clone(),
        Bytes::from_static(CRLF),
    ]);
}

/// A chunked encoder that writes size lines into one reusable scratch buffer, so a chunk costs
/// no allocation beyond occasional scratch refills.
#[derive(Debug, Default)]
pub struct ChunkedEncoder {
    scratch: BytesMut,
}

impl ChunkedEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data` as one chunk to `out` (skipped if empty, see [`encode_chunk`]).
    pub fn chunk(&mut self, data: &Bytes, out: &mut Vec<Bytes>) {
        if data.is_empty() {
            return;
        }
        if self.scratch.capacity() - self.scratch.len() < 18 {
            self.scratch.reserve(4096);
        }
        let mut line = [0u8; 18];
        let len = size_line(data.len() as u64, &mut line);
        self.scratch.extend_from_slice(&line[..len]);
        out.extend([
            self.scratch.split().freeze(),
            data.clone(),
            Bytes::from_static(CRLF),
        ]);
    }

    /// Appends the last-chunk (no trailers), ending the body.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        out.push(Bytes::from_static(LAST_CHUNK));
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
