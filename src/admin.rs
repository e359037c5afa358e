//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! It runs on its own plain thread with blocking sockets: it is off the request path, serves one
//! scrape at a time, and talks to shards only by message ([`Controller::scrape`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::shard::Controller;

/// State shared between the signal loop and the admin thread (never touched by shards).
#[derive(Debug)]
pub struct AdminState {
    /// Set when SIGTERM arrives: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Reaches the shards.
    pub controller: Controller,
}

/// Binds the admin listener and serves it on a thread named `ringway-admin`.
///
/// # Errors
/// If the address cannot be bound; the message names the address and the `[admin] listen` key.
pub fn start(addr: SocketAddr, state: Arc<AdminState>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("cannot bind the admin listener on {addr} ([admin] listen): {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = serve(s, &state) {
                            tracing::debug!("admin request failed: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("admin accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(local)
}

fn serve(mut s: TcpStream, state: &AdminState) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    let path = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => break req.path.unwrap_or("/").to_string(),
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return respond(&mut s, 400, "text/plain", "bad request\n"),
        }
    };
    let path = path.split('?').next().unwrap_or("/");
    match path {
        "/metrics" => {
            let draining = state.draining.load(Ordering::Relaxed);
            let snaps = state.controller.scrape(Duration::from_secs(2));
            let body = crate::metrics::render(&snaps, draining);
            respond(
                &mut s,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
        }
        "/healthz" => respond(&mut s, 200, "text/plain", "ok\n"),
        "/readyz" => {
            if state.draining.load(Ordering::Relaxed) {
                respond(&mut s, 503, "text/plain", "draining\n")
            } else {
                respond(&mut s, 200, "text/plain", "ready\n")
            }
        }
        _ => respond(&mut s, 404, "text/plain", "not found\n"),
    }
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}
