//! A scripted TCP backend for failure tests: every accepted connection runs a handler closure on
//! its own thread, so a test can answer, stall, truncate or close exactly when it wants. The
//! listener can be stopped (its port freed) and a new one started on the same port, for
//! ejection/recovery tests. Also a few raw HTTP helpers for handlers.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Handler for one accepted connection: the stream and its 0-based accept index.
pub type Handler = Arc<dyn Fn(TcpStream, usize) + Send + Sync + 'static>;

/// A running scripted backend.
pub struct Scripted {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    /// Listens on 127.0.0.1 (OS-chosen port).
    pub fn start(handler: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> Scripted {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(handler))
    }

    /// Listens on `addr` (e.g. the port of a stopped instance).
    pub fn start_on(addr: SocketAddr, handler: Handler) -> Scripted {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::spawn(move || {
                // Polling accept: `stop` is seen within a few ms, and the listener (and its port)
                // is released when this thread ends.
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let _ = s.set_nodelay(true);
                            let n = accepted.fetch_add(1, Ordering::SeqCst);
                            let h = handler.clone();
                            thread::spawn(move || h(s, n));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Scripted {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the listener (connections already handed to handlers go on).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request head (through the blank line) from `s`, keeping extra bytes in `buf`.
/// None on EOF or error first.
pub fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<String> {
    let mut tmp = [0u8; 16384];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_string();
            buf.drain(..i + 4);
            return Some(head);
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Reads `n` body bytes (some may already be in `buf`). False on EOF first.
pub fn read_body(s: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut tmp = [0u8; 16384];
    while buf.len() < n {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
        }
    }
    buf.drain(..n);
    true
}

/// The Content-Length of a head (0 if none).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Writes a 200 with `body` and the extra header lines (each ending in CRLF).
pub fn respond(s: &mut impl Write, body: &[u8], extra: &str) -> bool {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out).is_ok()
}

/// Serves requests on one connection: reads each head and its Content-Length body, answers 200
/// with `body(index)`, until EOF.
pub fn serve_ok(mut s: TcpStream, body: impl Fn(usize) -> Vec<u8>) {
    let mut buf = Vec::new();
    let mut i = 0;
    while let Some(head) = read_head(&mut s, &mut buf) {
        if !read_body(&mut s, &mut buf, content_length(&head)) {
            return;
        }
        if !respond(&mut s, &body(i), "") {
            return;
        }
        i += 1;
    }
}

/// One WebSocket frame (RFC 6455 §5.2): FIN + opcode 1 (text), masked with `mask` if given.
pub fn ws_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x81u8];
    let m = if mask.is_some() { 0x80u8 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads one WebSocket frame and returns its (unmasked) payload. None on EOF.
pub fn ws_read(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut key = [0u8; 4];
    if masked {
        s.read_exact(&mut key).ok()?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some(payload)
}

/// Waits until a handler has counted `want` misdeeds in `done` (bytes written or a close, done
/// while the gateway holds the connection idle), at most 5 s, then a little more for the
/// gateway's socket to hold them. Tests wait on the event instead of guessing with sleeps.
pub fn wait_for_misdeeds(done: &AtomicUsize, want: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    // Bounded by `until`.
    while done.load(Ordering::SeqCst) < want && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        done.load(Ordering::SeqCst) >= want,
        "backend misdeed {want}"
    );
    thread::sleep(Duration::from_millis(50));
}
