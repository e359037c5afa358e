//! The chunked transfer coding decoder (RFC 9112 §7.1): an explicit state machine that resumes at
//! any byte, validates every byte of framing once, and hands out the body as zero-copy `Bytes`.
//!
//! Two modes share the machine:
//! - **raw** (forwarding): validated framing and data are handed out as they were read, so a
//!   proxied chunked body is never re-framed, with one exception: chunk extensions are dropped
//!   (the size line goes out as the size alone, as a gateway that re-chunks would send it), so a
//!   backend never parses an extension ringway did not (a known smuggling path). The trailer
//!   section is held back until it is complete and every trailer has been checked, so a rejected
//!   trailer is never half-forwarded.
//!
//! Chunk extensions are parsed strictly as RFC 9112 §7.1.1 gives them:
//! `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`; anything else is
//! [`ErrorKind::InvalidChunkExtension`].
//! - **data**: framing is dropped and only chunk data is handed out.
//!
//! Trailers (RFC 9110 §6.5): Content-Length, Transfer-Encoding, Host and the hop-by-hop fields
//! are forbidden in both modes (error). In raw mode a trailer not on [`ALLOWED_TRAILERS`] is an
//! error ([`ErrorKind::TrailerNotAllowed`]): the whole section is forwarded only if every trailer
//! is allow-listed. In data mode trailers are validated and dropped.

use super::error::ErrorKind;
use super::headers::{is_field_value_byte, is_tchar, is_token, trim_ows};

/// Cumulative bytes of chunk extensions accepted in one body (they are validated and dropped,
/// never forwarded, so anything more is abuse; hyper uses the same bound).
pub const MAX_CHUNK_EXT_BYTES: usize = 16 * 1024;

/// Bytes of trailer section (field lines) accepted in one body.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Trailers forwarded in raw mode (lowercase). Everything here is metadata that is safe to
/// receive after the content (RFC 9110 §6.5.1).
pub const ALLOWED_TRAILERS: &[&str] = &[
    "server-timing",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "content-digest",
    "repr-digest",
    "digest",
    "etag",
];

/// Never accepted as trailers: framing, routing and hop-by-hop fields (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Hex digits of the chunk size.
    Size,
    /// Whitespace after the size, before `;` (BWS, RFC 9112 §7.1.1).
    SizeLws,
    /// After `;`: BWS, then the first byte of an extension name.
    ExtNameStart,
    /// An extension name (a token).
    ExtName,
    /// BWS after an extension name: `=`, `;` or more whitespace.
    ExtNameLws,
    /// After `=`: BWS, then a token or a quoted-string.
    ExtValueStart,
    /// A token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted-string (quoted-pair).
    ExtQuotedPair,
    /// After the closing quote of a value.
    ExtQuoteEnd,
    /// BWS after a value, before the next `;`.
    ExtLws,
    /// LF ending the size line.
    SizeLf,
    /// Chunk data.
    Body,
    /// CR after chunk data.
    BodyCr,
    /// LF after chunk data.
    BodyLf,
    /// Start of a trailer line, or the CR of the final empty line.
    TrailerStart,
    /// A trailer field line, up to CR.
    Trailer,
    /// LF ending a trailer line.
    TrailerLf,
    /// LF of the final empty line.
    EndLf,
    /// The message is complete.
    End,
}

/// Streaming chunked decoder. All progress lives in the struct, so decoding resumes at any byte.
///
/// The buffer passed in must only grow at the back between calls; the decoder removes from the
/// front what it has handed out or discarded.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: ChunkedState,
    /// In `Size`: the size so far; in `Body`: data bytes left in this chunk.
    size: u64,
    digits: u8,
    ext_bytes: usize,
    trailer_bytes: usize,
    /// Bytes at the front of the buffer already validated but not yet handed out or discarded.
    pos: usize,
    /// Offset of the current trailer line in the buffer.
    line_start: usize,
    /// Raw mode: offset where the held-back trailer section starts.
    hold_from: Option<usize>,
    /// Raw mode: offset where the current size line's extensions start (held back, then dropped).
    ext_from: Option<usize>,
    /// Data bytes announced so far, and the most allowed.
    total: u64,
    limit: u64,
}

impl ChunkedDecoder {
    pub fn new(limit: u64) -> Self {
        Self {
            state: ChunkedState::Size,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            pos: 0,
            line_start: 0,
            hold_from: None,
            ext_from: None,
            total: 0,
            limit,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkedState::End
    }

    /// Raw mode: validates what `buf` holds and says what to do with its front: hand out
    /// `emit` bytes unchanged, then drop `discard` bytes (a validated chunk extension).
    pub fn raw(&mut self, buf: &[u8]) -> Result<RawStep, ErrorKind> {
        let mut pos = self.pos;
        while pos < buf.len() && self.state != ChunkedState::End {
            if self.state == ChunkedState::Body {
                let n = self.size.min((buf.len() - pos) as u64);
                pos += n as usize;
                self.take_body(n);
            } else {
                self.step(buf, pos, true)?;
                pos += 1;
                if self.state == ChunkedState::SizeLf
                    && let Some(from) = self.ext_from.take()
                {
                    // The extensions end at the CR just consumed: hand out the size, drop them;
                    // the CR stays, already validated.
                    self.pos = 1;
                    return Ok(RawStep {
                        emit: from,
                        discard: pos - 1 - from,
                    });
                }
            }
        }
        let emit = match (self.ext_from, self.hold_from) {
            (Some(e), _) => e,
            (None, Some(h)) if self.state != ChunkedState::End => h,
            _ => pos,
        };
        self.ext_from = self.ext_from.map(|e| e - emit);
        self.hold_from = match self.state {
            ChunkedState::End => None,
            _ => self.hold_from.map(|h| h - emit),
        };
        self.line_start = self.line_start.saturating_sub(emit);
        self.pos = pos - emit;
        Ok(RawStep { emit, discard: 0 })
    }

    /// Data mode: validates framing in `buf` and returns `(discard, data)`: drop `discard` framing
    /// bytes from the front, then the next `data` bytes are chunk data (possibly 0).
    pub fn data(&mut self, buf: &[u8]) -> Result<(usize, usize), ErrorKind> {
        let mut pos = self.pos;
        while pos < buf.len() && self.state != ChunkedState::End {
            if self.state == ChunkedState::Body {
                let n = self.size.min((buf.len() - pos) as u64);
                self.take_body(n);
                self.pos = 0;
                return Ok((pos, n as usize));
            }
            self.step(buf, pos, false)?;
            pos += 1;
        }
        // Keep the current trailer line: it is checked as a whole when its LF arrives.
        let discard = match self.state {
            ChunkedState::Trailer | ChunkedState::TrailerLf => self.line_start,
            _ => pos,
        };
        self.line_start -= discard.min(self.line_start);
        self.pos = pos - discard;
        Ok((discard, 0))
    }

    fn take_body(&mut self, n: u64) {
        self.size -= n;
        if self.size == 0 {
            self.state = ChunkedState::BodyCr;
        }
    }

    /// Consumes the framing byte `buf[at]`.
    fn step(&mut self, buf: &[u8], at: usize, raw: bool) -> Result<(), ErrorKind> {
        use ChunkedState::*;
        let b = buf[at];
        self.state = match self.state {
            Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    // 16 hex digits fill a u64; a 17th would overflow.
                    self.digits += 1;
                    if self.digits > 16 {
                        return Err(ErrorKind::ChunkSizeOverflow);
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(v)))
                        .ok_or(ErrorKind::ChunkSizeOverflow)?;
                    Size
                }
                _ if self.digits == 0 => return Err(ErrorKind::InvalidChunkSize),
                b'\r' => SizeLf,
                b' ' | b'\t' | b';' => {
                    if raw {
                        self.ext_from = Some(at);
                    }
                    self.count_ext()?;
                    if b == b';' { ExtNameStart } else { SizeLws }
                }
                _ => return Err(ErrorKind::InvalidChunkSize),
            },
            // chunk-ext = *( BWS ";" BWS ext-name ... ): whitespace only before a `;`.
            SizeLws => {
                self.count_ext()?;
                match b {
                    b' ' | b'\t' => SizeLws,
                    b';' => ExtNameStart,
                    _ => return Err(ErrorKind::InvalidChunkSize),
                }
            }
            ExtNameStart | ExtName | ExtNameLws | ExtValueStart | ExtToken | ExtQuoted
            | ExtQuotedPair | ExtQuoteEnd | ExtLws => {
                self.count_ext()?;
                extension_step(self.state, b)?
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(ErrorKind::InvalidChunkSize);
                }
                let size = std::mem::take(&mut self.size);
                self.digits = 0;
                if size == 0 {
                    if raw {
                        self.hold_from = Some(at + 1);
                    }
                    TrailerStart
                } else {
                    self.total = self
                        .total
                        .checked_add(size)
                        .ok_or(ErrorKind::ChunkSizeOverflow)?;
                    if self.total > self.limit {
                        return Err(ErrorKind::BodyTooLarge);
                    }
                    self.size = size;
                    Body
                }
            }
            Body => unreachable_body(),
            BodyCr if b == b'\r' => BodyLf,
            BodyLf if b == b'\n' => Size,
            BodyCr | BodyLf => return Err(ErrorKind::InvalidChunkTerminator),
            TrailerStart => match b {
                b'\r' => EndLf,
                _ if is_tchar(b) => {
                    self.line_start = at;
                    self.count_trailer()?;
                    Trailer
                }
                _ => return Err(ErrorKind::InvalidTrailer),
            },
            Trailer => {
                self.count_trailer()?;
                match b {
                    b'\r' => TrailerLf,
                    _ if is_field_value_byte(b) => Trailer,
                    _ => return Err(ErrorKind::InvalidTrailer),
                }
            }
            TrailerLf => {
                self.count_trailer()?;
                if b != b'\n' {
                    return Err(ErrorKind::InvalidTrailer);
                }
                check_trailer(&buf[self.line_start..at - 1], raw)?;
                TrailerStart
            }
            EndLf if b == b'\n' => End,
            EndLf => return Err(ErrorKind::InvalidChunkTerminator),
            End => End,
        };
        Ok(())
    }

    fn count_ext(&mut self) -> Result<(), ErrorKind> {
        self.ext_bytes += 1;
        if self.ext_bytes > MAX_CHUNK_EXT_BYTES {
            return Err(ErrorKind::ChunkExtensionTooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ErrorKind> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ErrorKind::TrailersTooLarge);
        }
        Ok(())
    }
}

/// What the front of the buffer holds after a raw-mode pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawStep {
    /// Bytes to hand out unchanged.
    pub emit: usize,
    /// Bytes to drop after them: a validated chunk extension.
    pub discard: usize,
}

/// One byte of a chunk extension (RFC 9112 §7.1.1), from one of the `Ext*` states:
///
/// ```text
/// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-name = token
/// chunk-ext-val  = token / quoted-string
/// ```
///
/// A CR after a name or a value ends the size line; BWS before CR is not in the grammar.
fn extension_step(state: ChunkedState, b: u8) -> Result<ChunkedState, ErrorKind> {
    use ChunkedState::*;
    let ws = b == b' ' || b == b'\t';
    Ok(match (state, b) {
        (ExtNameStart, _) if ws => ExtNameStart,
        (ExtNameStart, _) if is_tchar(b) => ExtName,
        (ExtName, _) if is_tchar(b) => ExtName,
        (ExtName | ExtNameLws, _) if ws => ExtNameLws,
        (ExtName | ExtNameLws, b'=') => ExtValueStart,
        (ExtValueStart, _) if ws => ExtValueStart,
        (ExtValueStart, b'"') => ExtQuoted,
        (ExtValueStart | ExtToken, _) if is_tchar(b) => ExtToken,
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
        (ExtQuoted, b'"') => ExtQuoteEnd,
        (ExtQuoted, b'\\') => ExtQuotedPair,
        (ExtQuoted, _) if ws || b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80 => ExtQuoted,
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        (ExtQuotedPair, _) if ws || (0x21..=0x7e).contains(&b) || b >= 0x80 => ExtQuoted,
        (ExtToken | ExtQuoteEnd | ExtLws, _) if ws => ExtLws,
        (ExtName | ExtNameLws | ExtToken | ExtQuoteEnd | ExtLws, b';') => ExtNameStart,
        (ExtName | ExtToken | ExtQuoteEnd, b'\r') => SizeLf,
        _ => return Err(ErrorKind::InvalidChunkExtension),
    })
}

/// `Body` is consumed in bulk by the callers, never byte by byte.
fn unreachable_body() -> ChunkedState {
    debug_assert!(false, "Body bytes are taken in bulk");
    ChunkedState::Body
}

/// Checks one trailer field line (without CRLF): `token ":" OWS value OWS`, not forbidden, and
/// in raw mode allow-listed.
fn check_trailer(line: &[u8], raw: bool) -> Result<(), ErrorKind> {
    let colon = memchr::memchr(b':', line).ok_or(ErrorKind::InvalidTrailer)?;
    let name = &line[..colon];
    if !is_token(name) {
        return Err(ErrorKind::InvalidTrailer);
    }
    let _value = trim_ows(&line[colon + 1..]);
    let is = |list: &[&str]| list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()));
    if is(FORBIDDEN_TRAILERS) {
        return Err(ErrorKind::InvalidTrailer);
    }
    if raw && !is(ALLOWED_TRAILERS) {
        return Err(ErrorKind::TrailerNotAllowed);
    }
    Ok(())
}
