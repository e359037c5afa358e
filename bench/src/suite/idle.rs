//! The idle-connection opener: N keepalive connections, one request each, then held open.
//!
//! Plain blocking sockets, opened one after another: simple, and the target sees a realistic
//! trickle rather than a SYN flood that would only measure its listen backlog.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::http1;

/// Stop opening after this many consecutive failures: the target is down or out of descriptors.
const MAX_CONSECUTIVE_FAILURES: u32 = 50;

/// Connections held open, and how opening them went.
pub struct IdleSet {
    /// The open connections; dropping them closes them with RST (linger 0), no TIME_WAIT pile-up.
    pub conns: Vec<socket2::Socket>,
    /// Requests that got a 2xx response.
    pub ok: u64,
    /// Connections that failed to open or answer.
    pub errors: u64,
}

fn one(addr: &str, req: &[u8], timeout: Duration) -> Option<socket2::Socket> {
    let sa: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(req).ok()?;
    let mut buf = [0u8; 4096];
    let mut have = 0usize;
    // Bounded by the buffer size and the read timeout.
    loop {
        let n = s.read(&mut buf[have..]).ok()?;
        if n == 0 {
            return None;
        }
        have += n;
        let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf[..have]) {
            Ok(httparse::Status::Complete(h)) => {
                let code = r.code.unwrap_or(0);
                let info = http1::head_info(r.headers, r.version.unwrap_or(1), true).ok()?;
                let http1::BodyFraming::Length(len) = info.framing else {
                    return None;
                };
                // Small bodies only (the idle scenario uses 150 B): the rest must fit the buffer.
                let total = h + usize::try_from(len).ok()?;
                if total > buf.len() {
                    return None;
                }
                // Bounded: `have` grows every pass and `total` fits the buffer.
                while have < total {
                    let n = s.read(&mut buf[have..total]).ok()?;
                    if n == 0 {
                        return None;
                    }
                    have += n;
                }
                if !(200..300).contains(&code) || info.close {
                    return None;
                }
                let sock = socket2::Socket::from(s);
                sock.set_linger(Some(Duration::ZERO)).ok()?;
                return Some(sock);
            }
            Ok(httparse::Status::Partial) if have < buf.len() => {}
            _ => return None,
        }
    }
}

/// Opens `n` connections to `addr` (IP:PORT), each doing one `GET path`.
pub fn open(addr: &str, path: &str, n: usize, timeout: Duration) -> IdleSet {
    let req = crate::load::request_bytes(addr, path);
    let mut set = IdleSet {
        conns: Vec::with_capacity(n),
        ok: 0,
        errors: 0,
    };
    let mut consecutive = 0;
    for _ in 0..n {
        match one(addr, &req, timeout) {
            Some(c) => {
                set.conns.push(c);
                set.ok += 1;
                consecutive = 0;
            }
            None => {
                set.errors += 1;
                consecutive += 1;
                if consecutive >= MAX_CONSECUTIVE_FAILURES {
                    break;
                }
            }
        }
    }
    set
}
