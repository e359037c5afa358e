//! Finding the end of a head incrementally, so a head that trickles in is not re-scanned from byte 0.
//!
//! The scanner walks line ends (LF, found with `memchr`) once over the bytes that arrive, and checks
//! the line-level rules on the way: CRLF only (RFC 9112 §2.2 lets a recipient accept bare LF; ringway
//! does not, to leave no room for a parser disagreement downstream), no obs-fold or whitespace
//! before the first field line (RFC 9112 §5.2, §2.2), the line count and the head size. Only when
//! the blank line is found does httparse run, once, over the complete head.

use bytes::{Buf, BytesMut};

use super::error::ErrorKind;
use super::{Limits, MAX_HEADERS_CAP};

/// Per-connection state of the search for the end of the next head.
///
/// Keep one per connection (and one per backend connection) and pass it to every
/// [`parse_request_head`](super::parse_request_head) / [`parse_response_head`](super::parse_response_head)
/// call for the same head: it remembers how far it has scanned. The parse functions reset it when
/// they return a complete head; call [`reset`](HeadScanner::reset) yourself only if you discard a
/// partial head.
///
/// The caller must only append to the buffer between calls, never remove from its front.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Bytes of the buffer already searched for LF.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Whether the start line has ended.
    start_line_done: bool,
    /// Field lines seen so far.
    lines: usize,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the progress: the next call starts a new head at the front of the buffer.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Searches `buf` for the end of the head, resuming where the last call stopped.
    ///
    /// Empty lines (CRLF) before the start line are dropped from `buf` (RFC 9112 §2.2).
    /// Returns the head length (through the blank line's LF) once it is there.
    pub(crate) fn find_end(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<usize>, ErrorKind> {
        if self.scanned == 0 {
            // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
            while buf.starts_with(b"\r\n") {
                buf.advance(2);
            }
            match buf.first() {
                Some(b'\n') => return Err(ErrorKind::BareLf),
                Some(b'\r') if buf.len() == 1 => return Ok(None),
                _ => {}
            }
        }
        let max_lines = limits.max_headers.min(MAX_HEADERS_CAP);
        let window = buf.len().min(limits.max_head_bytes);
        while self.scanned < window {
            let Some(i) = memchr::memchr(b'\n', &buf[self.scanned..window]) else {
                self.scanned = window;
                break;
            };
            let lf = self.scanned + i;
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(ErrorKind::BareLf);
            }
            let line = &buf[self.line_start..lf - 1];
            if !self.start_line_done {
                self.start_line_done = true;
            } else if line.is_empty() {
                return Ok(Some(lf + 1));
            } else {
                if matches!(line[0], b' ' | b'\t') {
                    return Err(ErrorKind::ObsoleteLineFolding);
                }
                self.lines += 1;
                if self.lines > max_lines {
                    return Err(ErrorKind::TooManyHeaders);
                }
            }
            self.line_start = lf + 1;
            self.scanned = lf + 1;
        }
        if buf.len() >= limits.max_head_bytes {
            return Err(if self.start_line_done {
                ErrorKind::HeadTooLarge
            } else {
                ErrorKind::RequestLineTooLong
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_where_it_stopped_instead_of_rescanning() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaaaaaa\r\n\r\n";
        let mut scan = HeadScanner::new();
        let mut buf = BytesMut::new();
        let limits = Limits::default();
        for (i, &b) in head.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let before = scan.scanned;
            let found = scan.find_end(&mut buf, &limits).unwrap();
            if i + 1 < head.len() {
                assert_eq!(found, None);
                // Only the new byte was looked at.
                assert_eq!(scan.scanned, buf.len());
                assert!(before == 0 || before + 1 == scan.scanned);
            } else {
                assert_eq!(found, Some(head.len()));
            }
        }
    }

    #[test]
    fn leading_crlf_dropped_bare_lf_refused_rfc9112_2_2() {
        let mut scan = HeadScanner::new();
        let mut buf = BytesMut::from(&b"\r\n\r\nG"[..]);
        assert_eq!(scan.find_end(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(&buf[..], b"G");
        let mut buf = BytesMut::from(&b"\nGET"[..]);
        assert_eq!(
            HeadScanner::new().find_end(&mut buf, &Limits::default()),
            Err(ErrorKind::BareLf)
        );
    }
}
