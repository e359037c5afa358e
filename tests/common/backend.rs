//! A real HTTP/1.1 test backend on its own threads: keepalive, counts accepted connections and
//! requests, records every request head it received, and answers with a JSON echo of the request
//! (or a scripted behaviour).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the backend answers.
#[derive(Clone, Debug)]
pub struct BackendSpec {
    /// Delay before each answer.
    pub delay: Duration,
    /// Fixed body; None = a JSON echo of the request.
    pub body: Option<Vec<u8>>,
    /// Content-Type of the answer.
    pub content_type: String,
    /// Status code.
    pub status: u16,
    /// Answer with chunked framing instead of Content-Length.
    pub chunked: bool,
    /// Name included in the echo (which backend answered).
    pub name: String,
}

impl Default for BackendSpec {
    fn default() -> Self {
        BackendSpec {
            delay: Duration::ZERO,
            body: None,
            content_type: "application/json".into(),
            status: 200,
            chunked: false,
            name: "b".into(),
        }
    }
}

/// What the backend saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub accepted: AtomicUsize,
    pub requests: AtomicUsize,
    pub heads: Mutex<Vec<String>>,
    pub body_bytes: AtomicUsize,
}

pub struct Backend {
    pub addr: Option<SocketAddr>,
    pub path: Option<PathBuf>,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// The endpoint string for ringway's config.
    pub fn endpoint(&self) -> String {
        match (&self.addr, &self.path) {
            (Some(a), _) => a.to_string(),
            (None, Some(p)) => format!("unix:{}", p.display()),
            _ => unreachable!(),
        }
    }

    pub fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().unwrap().clone()
    }

    /// Starts a TCP backend on 127.0.0.1 (OS-chosen port).
    pub fn tcp(spec: BackendSpec) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let seen = seen.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    seen.accepted.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    let spec = spec.clone();
                    thread::spawn(move || {
                        let _ = s.set_nodelay(true);
                        serve_conn(s, &spec, &seen)
                    });
                }
            });
        }
        Backend {
            addr: Some(addr),
            path: None,
            seen,
            stop,
        }
    }

    /// Starts a Unix-socket backend at a fresh temp path.
    pub fn unix(spec: BackendSpec) -> Backend {
        let dir = std::env::temp_dir().join(format!(
            "ringway-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("backend.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let seen = seen.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    seen.accepted.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    let spec = spec.clone();
                    thread::spawn(move || serve_conn(s, &spec, &seen));
                }
            });
        }
        Backend {
            addr: None,
            path: Some(path),
            seen,
            stop,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        if let Some(a) = self.addr {
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(100));
        }
        if let Some(p) = &self.path {
            let _ = UnixStream::connect(p);
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

trait Conn: Read + Write {}
impl Conn for TcpStream {}
impl Conn for UnixStream {}

fn serve_conn<S: Conn>(mut s: S, spec: &BackendSpec, seen: &Seen) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = [0u8; 65536];
    loop {
        // Read one head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let lower = head.to_ascii_lowercase();
        // Body: Content-Length or chunked (read and discard, counting bytes).
        let mut body_len = 0usize;
        if let Some(cl) = header(&lower, "content-length") {
            let mut left: usize = cl.trim().parse().unwrap_or(0);
            body_len = left;
            while left > 0 {
                if buf.is_empty() {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let take = left.min(buf.len());
                buf.drain(..take);
                left -= take;
            }
        } else if header(&lower, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            // Read until the terminating 0-size chunk and final CRLF.
            loop {
                if let Some(i) = find(&buf, b"\r\n") {
                    let size = usize::from_str_radix(
                        String::from_utf8_lossy(&buf[..i])
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim(),
                        16,
                    )
                    .unwrap_or(0);
                    if buf.len() >= i + 2 + size + 2 {
                        buf.drain(..i + 2 + size + 2);
                        body_len += size;
                        if size == 0 {
                            break;
                        }
                        continue;
                    }
                }
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        }
        seen.body_bytes.fetch_add(body_len, Ordering::SeqCst);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        seen.heads.lock().unwrap().push(head.clone());
        if !spec.delay.is_zero() {
            thread::sleep(spec.delay);
        }
        let first_line = head.lines().next().unwrap_or("").to_string();
        let body = match &spec.body {
            Some(b) => b.clone(),
            None => {
                let mut parts = first_line.split(' ');
                let method = parts.next().unwrap_or("");
                let target = parts.next().unwrap_or("");
                let xff = header(&lower, "x-forwarded-for")
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let rid = header(&lower, "x-request-id")
                    .unwrap_or("")
                    .trim()
                    .to_string();
                format!(
                    "{{\"backend\":\"{}\",\"method\":\"{}\",\"target\":\"{}\",\"body_len\":{},\"xff\":\"{}\",\"request_id\":\"{}\"}}",
                    spec.name, method, target, body_len, xff, rid
                )
                .into_bytes()
            }
        };
        let is_head = first_line.starts_with("HEAD ");
        let mut resp = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\n",
            spec.status, spec.content_type
        );
        if spec.chunked {
            resp.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut out = resp.into_bytes();
            if !is_head {
                for piece in body.chunks(7) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            if s.write_all(&out).is_err() {
                return;
            }
        } else {
            resp.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut out = resp.into_bytes();
            if !is_head {
                out.extend_from_slice(&body);
            }
            if s.write_all(&out).is_err() {
                return;
            }
        }
        if lower.contains("\r\nconnection: close") {
            return;
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The value of header `name` (lowercase) in a lowercased head.
fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n == name).then_some(v.trim())
    })
}
