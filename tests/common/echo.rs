//! A killable echo backend for soak tests: answers every request with its own `x-request-id`
//! (in an `X-Echo-Id` header and in the JSON body), padded to a size derived from the id, with
//! Content-Length or chunked framing, also derived from the id. [`EchoBackend::kill`] closes the
//! listener and resets every open connection, like a crash; [`EchoBackend::start_on`] the same
//! address brings it back.

#![allow(dead_code)]

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::scripted;

/// A running echo backend.
pub struct EchoBackend {
    pub addr: SocketAddr,
    /// Requests answered by this instance.
    pub served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// A clone of every accepted connection, to reset them on kill.
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl EchoBackend {
    /// Listens on `addr` (port 0: OS-chosen), retrying the bind for up to 2 s (a killed
    /// instance's port may take a moment to free).
    pub fn start_on(addr: SocketAddr) -> EchoBackend {
        let deadline = Instant::now() + Duration::from_secs(2);
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("rebind {addr}: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (served, stop, conns) = (served.clone(), stop.clone(), conns.clone());
            thread::spawn(move || {
                // Polling accept so `stop` is seen within a few ms and the port is released.
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let _ = s.set_nodelay(true);
                            if let Ok(c) = s.try_clone() {
                                conns.lock().unwrap().push(c);
                            }
                            let served = served.clone();
                            thread::spawn(move || serve(s, &served));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        EchoBackend {
            addr,
            served,
            stop,
            thread: Some(thread),
            conns,
        }
    }

    /// Crashes: stops listening and resets every connection (RST), mid-response or idle.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// FNV-1a: a stable per-id number for the response's size and framing.
pub fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn serve(mut s: TcpStream, served: &AtomicUsize) {
    let mut buf = Vec::new();
    while let Some(head) = scripted::read_head(&mut s, &mut buf) {
        let body_len = scripted::content_length(&head);
        if !scripted::read_body(&mut s, &mut buf, body_len) {
            return;
        }
        let id = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("x-request-id")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let h = id_hash(&id);
        if h.is_multiple_of(16) {
            thread::sleep(Duration::from_millis(5));
        }
        let pad = "p".repeat((h % 30_000) as usize);
        let body = format!("{{\"request_id\":\"{id}\",\"body_len\":{body_len},\"pad\":\"{pad}\"}}");
        let mut out =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo-Id: {id}\r\n")
                .into_bytes();
        if (h >> 8).is_multiple_of(2) {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body.as_bytes());
        } else {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.as_bytes().chunks(4096) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        if s.write_all(&out).is_err() {
            return;
        }
        served.fetch_add(1, Ordering::SeqCst);
    }
}
