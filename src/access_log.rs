//! The access log: one line per request, written per shard through a buffer, never on the event
//! loop's time.
//!
//! Each shard appends lines to its own in-memory buffer (no lock, no syscall per request). A full
//! buffer (or the shard's once-a-second tick) is handed whole to the `ringway-access-log` thread
//! through a channel, and that thread does the blocking `write` to the file or stdout. If the
//! writer falls far behind (a stuck disk), buffers beyond [`MAX_PENDING_BUFFERS`] are dropped and
//! counted rather than growing memory or blocking a shard.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::config::{AccessLog, LogFormat};

/// A shard flushes its buffer to the writer thread once it holds this many bytes.
const FLUSH_AT: usize = 32 * 1024;

/// Buffers queued for the writer thread beyond which new ones are dropped (a stuck disk must not
/// grow memory without bound).
pub const MAX_PENDING_BUFFERS: usize = 256;

/// The process-wide writer: a thread and the channel into it.
#[derive(Clone, Debug)]
pub struct AccessLogWriter {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    format: LogFormat,
}

impl AccessLogWriter {
    /// Opens the destination and starts the writer thread. `Off` gives None.
    ///
    /// # Errors
    /// The file cannot be opened for appending: the message names it and the `[log] access` key.
    pub fn start(dest: &AccessLog, format: LogFormat) -> Result<Option<AccessLogWriter>, String> {
        let mut out: Box<dyn std::io::Write + Send> = match dest {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "cannot open the access log {} ([log] access): {e}",
                            path.display()
                        )
                    })?,
            ),
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let pending_w = pending.clone();
        thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || {
                for buf in rx {
                    // A write error (disk full) loses this buffer; the next may succeed.
                    if out.write_all(&buf).is_ok() {
                        let _ = out.flush();
                    }
                    pending_w.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| format!("cannot start the access log thread: {e}"))?;
        Ok(Some(AccessLogWriter {
            tx,
            pending,
            dropped,
            format,
        }))
    }
}

impl AccessLogWriter {
    /// Waits (bounded by `limit`) until the writer thread has written every buffer handed to it:
    /// called at exit so the last lines are not lost.
    pub fn wait_written(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One request's fields for the access log.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Client address.
    pub client: IpAddr,
    /// Request method.
    pub method: &'a [u8],
    /// Request target (path and query) as sent.
    pub target: &'a [u8],
    /// Status sent (0 when the client left before an answer).
    pub status: u16,
    /// Response bytes sent to the client, head included.
    pub bytes: u64,
    /// Time from head to response end.
    pub duration: Duration,
    /// The route label, if one matched.
    pub route: Option<&'a str>,
    /// The upstream endpoint used (proxy) or None.
    pub upstream: Option<&'a str>,
    /// Fan-out outcome: `ok`, `partial:<names>`, or `failed:<call>`.
    pub fanout: Option<&'a str>,
}

/// A shard's access log buffer.
#[derive(Debug)]
pub struct ShardAccessLog {
    writer: AccessLogWriter,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
}

impl ShardAccessLog {
    /// A buffer feeding `writer`.
    pub fn new(writer: AccessLogWriter) -> Self {
        ShardAccessLog {
            writer,
            buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)),
            lines: Cell::new(0),
        }
    }

    /// Appends one line; flushes to the writer thread when the buffer is full.
    pub fn log(&self, e: &Entry<'_>) {
        {
            let mut buf = self.buf.borrow_mut();
            match self.writer.format {
                LogFormat::Text => write_text(&mut buf, e),
                LogFormat::Json => write_json(&mut buf, e),
            }
        }
        self.lines.set(self.lines.get() + 1);
        if self.buf.borrow().len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Hands the buffered lines to the writer thread (called when full and once a second).
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        if self.writer.pending.load(Ordering::Relaxed) >= MAX_PENDING_BUFFERS {
            self.writer.dropped.fetch_add(1, Ordering::Relaxed);
            buf.clear();
            return;
        }
        let full = std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_AT + 1024));
        self.writer.pending.fetch_add(1, Ordering::Relaxed);
        if self.writer.tx.send(full).is_err() {
            self.writer.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `time client "METHOD target" status bytes duration_ms route upstream fanout`, `-` for absent.
fn write_text(buf: &mut Vec<u8>, e: &Entry<'_>) {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "{} {} \"",
        humantime::format_rfc3339_millis(SystemTime::now()),
        e.client
    );
    buf.extend_from_slice(s.as_bytes());
    push_escaped(buf, e.method, false);
    buf.push(b' ');
    push_escaped(buf, e.target, false);
    s.clear();
    let _ = writeln!(
        s,
        "\" {} {} {:.3} {} {} {}",
        e.status,
        e.bytes,
        e.duration.as_secs_f64() * 1000.0,
        e.route.unwrap_or("-"),
        e.upstream.unwrap_or("-"),
        e.fanout.unwrap_or("-"),
    );
    buf.extend_from_slice(s.as_bytes());
}

/// One JSON object per line.
fn write_json(buf: &mut Vec<u8>, e: &Entry<'_>) {
    let mut s = String::with_capacity(200);
    let _ = write!(
        s,
        "{{\"time\":\"{}\",\"client\":\"{}\",\"method\":\"",
        humantime::format_rfc3339_millis(SystemTime::now()),
        e.client
    );
    buf.extend_from_slice(s.as_bytes());
    push_escaped(buf, e.method, true);
    buf.extend_from_slice(b"\",\"path\":\"");
    push_escaped(buf, e.target, true);
    s.clear();
    let _ = write!(
        s,
        "\",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3}",
        e.status,
        e.bytes,
        e.duration.as_secs_f64() * 1000.0
    );
    buf.extend_from_slice(s.as_bytes());
    for (k, v) in [
        ("route", e.route),
        ("upstream", e.upstream),
        ("fanout", e.fanout),
    ] {
        match v {
            Some(v) => {
                buf.extend_from_slice(b",\"");
                buf.extend_from_slice(k.as_bytes());
                buf.extend_from_slice(b"\":\"");
                push_escaped(buf, v.as_bytes(), true);
                buf.push(b'"');
            }
            None => {
                buf.extend_from_slice(b",\"");
                buf.extend_from_slice(k.as_bytes());
                buf.extend_from_slice(b"\":null");
            }
        }
    }
    buf.extend_from_slice(b"}\n");
}

/// Copies `v`, escaping what would break the line: quotes, backslashes and control bytes (a
/// request target is client-controlled; it must not forge log lines).
fn push_escaped(buf: &mut Vec<u8>, v: &[u8], json: bool) {
    for &b in v {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                let hex = b"0123456789abcdef";
                if json {
                    buf.extend_from_slice(b"\\u00");
                } else {
                    buf.extend_from_slice(b"\\x");
                }
                buf.push(hex[(b >> 4) as usize]);
                buf.push(hex[(b & 0xf) as usize]);
            }
            0x80..=0xff if json => {
                // Keep JSON valid UTF-8 whatever the client sent.
                buf.extend_from_slice(b"\\u00");
                let hex = b"0123456789abcdef";
                buf.push(hex[(b >> 4) as usize]);
                buf.push(hex[(b & 0xf) as usize]);
            }
            _ => buf.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: "10.0.0.1".parse().unwrap(),
            method: b"GET",
            target: b"/a?\"x\"\n",
            status: 200,
            bytes: 123,
            duration: Duration::from_micros(1500),
            route: Some("/a"),
            upstream: Some("127.0.0.1:9001"),
            fanout: None,
        }
    }

    #[test]
    fn text_line_escapes_client_bytes() {
        let mut buf = Vec::new();
        write_text(&mut buf, &entry());
        let line = String::from_utf8(buf).unwrap();
        assert!(
            line.ends_with("\" 200 123 1.500 /a 127.0.0.1:9001 -\n"),
            "{line}"
        );
        assert!(
            line.contains("10.0.0.1 \"GET /a?\\\"x\\\"\\x0a\""),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_line_is_json() {
        let mut buf = Vec::new();
        write_json(&mut buf, &entry());
        let line = String::from_utf8(buf).unwrap();
        assert!(line.contains("\"path\":\"/a?\\\"x\\\"\\u000a\""), "{line}");
        assert!(
            line.contains("\"status\":200,\"bytes\":123,\"duration_ms\":1.500"),
            "{line}"
        );
        assert!(line.contains("\"fanout\":null}"), "{line}");
    }
}
