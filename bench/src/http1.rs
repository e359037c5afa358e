//! Minimal HTTP/1.1 framing shared by the backend (requests) and the load generator (responses).
//!
//! Pure: bytes in, decisions out, no sockets. The bench only needs to know where a message ends,
//! so bodies are *skipped*, never collected. Heads are parsed with `httparse`.

/// Most headers we accept in one head; a bench peer sends a handful.
pub const MAX_HEADERS: usize = 48;

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes (0 = no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without length: the body ends when the server closes (RFC 9112 §6.3 rule 8).
    UntilClose,
}

/// Framing errors: the peer sent something the bench will not guess about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Content-Length is not a decimal number, or two differ.
    BadContentLength,
    /// Chunk size line is not hex, or overflows u64.
    BadChunk,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::BadContentLength => f.write_str("bad content-length"),
            FramingError::BadChunk => f.write_str("bad chunked encoding"),
        }
    }
}

impl std::error::Error for FramingError {}

/// What a head says about the body and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// Body framing.
    pub framing: BodyFraming,
    /// `Connection: close` was present (or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Reads framing from parsed headers. `is_response` decides what "no length" means:
/// a request without length has no body (RFC 9112 §6.3 rule 6), a response reads until close.
pub fn head_info(
    headers: &[httparse::Header<'_>],
    version: u8,
    is_response: bool,
) -> Result<HeadInfo, FramingError> {
    let mut len: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(FramingError::BadContentLength)?;
            if len.is_some_and(|old| old != v) {
                return Err(FramingError::BadContentLength);
            }
            len = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the final coding (RFC 9112 §6.3 rule 4); the bench only ever sees
            // plain `chunked`, so a suffix check is enough.
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|b| *b == b',') {
                let tok = tok.trim_ascii();
                if tok.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3 rule 3).
    let framing = match (chunked, len) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(n)) => BodyFraming::Length(n),
        (false, None) if is_response => BodyFraming::UntilClose,
        (false, None) => BodyFraming::Length(0),
    };
    Ok(HeadInfo { framing, close })
}

/// True when a response to a GET with this status carries no body at all (RFC 9112 §6.3 rule 1).
pub fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Chunked-body skipper: an explicit state machine so it resumes at any byte boundary.
#[derive(Debug, Clone, Default)]
pub struct ChunkedSkipper {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of the chunk size.
    #[default]
    Size,
    /// Skipping a chunk extension up to CR.
    Ext,
    /// Expecting LF after the size line.
    SizeLf,
    /// Skipping `size` data bytes.
    Data,
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting LF ending a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

impl ChunkedSkipper {
    /// Consumes bytes of the chunked body from `buf`.
    ///
    /// Returns how many bytes belong to the body and whether the body is complete; bytes after
    /// the end are left alone (they are the next message, e.g. when pipelining).
    ///
    /// # Errors
    /// [`FramingError::BadChunk`] on a malformed size line or framing CR/LF.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), FramingError> {
        let mut i = 0;
        while i < buf.len() {
            if self.state == ChunkState::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .ok_or(FramingError::BadChunk)?;
                        ChunkState::Size
                    }
                    b';' | b' ' | b'\t' => ChunkState::Ext,
                    b'\r' => ChunkState::SizeLf,
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::Ext => match b {
                    b'\r' => ChunkState::SizeLf,
                    _ => ChunkState::Ext,
                },
                ChunkState::SizeLf => match (b, self.size) {
                    (b'\n', 0) => ChunkState::TrailerStart,
                    (b'\n', _) => ChunkState::Data,
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::DataLf => match b {
                    b'\n' => ChunkState::Size,
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::EndLf,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => match b {
                    b'\r' => ChunkState::TrailerLf,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLf => match b {
                    b'\n' => ChunkState::TrailerStart,
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::EndLf => match b {
                    b'\n' => {
                        self.state = ChunkState::Done;
                        return Ok((i, true));
                    }
                    _ => return Err(FramingError::BadChunk),
                },
                ChunkState::Data | ChunkState::Done => unreachable_state(),
            };
        }
        Ok((i, self.state == ChunkState::Done))
    }
}

/// `Data` is handled before the match and `Done` returns early; keep the match total without a panic.
fn unreachable_state() -> ChunkState {
    ChunkState::Done
}

/// Body skipping progress across reads.
#[derive(Debug, Clone)]
pub enum BodySkip {
    /// This many bytes remain.
    Length(u64),
    /// Chunked body in progress.
    Chunked(ChunkedSkipper),
    /// Everything until EOF.
    UntilClose,
}

impl BodySkip {
    /// Starts skipping a body with the given framing.
    pub fn new(f: BodyFraming) -> Self {
        match f {
            BodyFraming::Length(n) => BodySkip::Length(n),
            BodyFraming::Chunked => BodySkip::Chunked(ChunkedSkipper::default()),
            BodyFraming::UntilClose => BodySkip::UntilClose,
        }
    }

    /// Consumes body bytes from `buf`; returns (consumed, body complete).
    ///
    /// # Errors
    /// Malformed chunked framing.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), FramingError> {
        match self {
            BodySkip::Length(rem) => {
                let take = (buf.len() as u64).min(*rem);
                *rem -= take;
                Ok((take as usize, *rem == 0))
            }
            BodySkip::Chunked(c) => c.feed(buf),
            BodySkip::UntilClose => Ok((buf.len(), false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn chunked_whole_and_split_at_every_offset() {
        let body_len = CHUNKED.len() - 4;
        let mut c = ChunkedSkipper::default();
        assert_eq!(c.feed(CHUNKED), Ok((body_len, true)));
        for split in 0..body_len {
            let mut c = ChunkedSkipper::default();
            let (n1, done1) = c.feed(&CHUNKED[..split]).expect("prefix is valid");
            assert_eq!((n1, done1), (split, false), "split at {split}");
            let (n2, done2) = c.feed(&CHUNKED[split..]).expect("rest is valid");
            assert_eq!((n1 + n2, done2), (body_len, true), "split at {split}");
        }
    }

    #[test]
    fn chunked_rejects_garbage_and_overflow() {
        assert!(ChunkedSkipper::default().feed(b"zz\r\n").is_err());
        assert!(
            ChunkedSkipper::default()
                .feed(b"fffffffffffffffff\r\n")
                .is_err()
        );
    }

    #[test]
    fn framing_rules() {
        let h = |n: &'static str, v: &'static [u8]| httparse::Header { name: n, value: v };
        let cl = [h("Content-Length", b"12")];
        assert_eq!(
            head_info(&cl, 1, true).map(|i| i.framing),
            Ok(BodyFraming::Length(12))
        );
        let te = [
            h("Content-Length", b"12"),
            h("Transfer-Encoding", b"chunked"),
        ];
        assert_eq!(
            head_info(&te, 1, false).map(|i| i.framing),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            head_info(&[], 1, true).map(|i| i.framing),
            Ok(BodyFraming::UntilClose)
        );
        assert_eq!(
            head_info(&[], 1, false).map(|i| i.framing),
            Ok(BodyFraming::Length(0))
        );
        let close = [h("Connection", b"Close")];
        assert_eq!(head_info(&close, 1, false).map(|i| i.close), Ok(true));
        let bad = [h("Content-Length", b"1"), h("Content-Length", b"2")];
        assert!(head_info(&bad, 1, false).is_err());
    }
}
