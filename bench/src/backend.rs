//! The bench backend: a fast HTTP/1.1 keepalive server answering one fixed response.
//!
//! It must never be the bottleneck of a measurement, so it does the least a correct server can:
//! one `current_thread` tokio runtime per thread, its own `SO_REUSEPORT` TCP listener per thread
//! (the kernel spreads connections; no shared accept queue), a prebuilt response (head + body)
//! written without formatting, pipelined requests answered with one write, request bodies skipped
//! by Content-Length or chunked framing. `GET /__stats` answers `{"accepted":N,"requests":M}`.
//!
//! It never parses more than the head and never allocates per request except when pipelining
//! several responses into one write.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::addr::Addr;
use crate::http1::{self, BodySkip};

/// Read buffer per connection; also the largest request head accepted.
const READ_BUF: usize = 16 * 1024;
/// Listen backlog: the idle-10k scenario opens thousands of connections in bursts.
const BACKLOG: i32 = 4096;

/// What the backend serves and where.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Addresses to listen on; TCP port 0 picks a free port (see [`BackendHandle::addrs`]).
    pub listen: Vec<Addr>,
    /// Response body size in bytes.
    pub body_size: usize,
    /// Delay before each response.
    pub delay: Duration,
    /// Answer a JSON body (`application/json`) instead of `text/plain`.
    pub json: bool,
    /// Answer exactly this `text/plain` body instead (`body_size` and `json` are then unused):
    /// the `hello` scenario's body, byte for byte what the other targets send.
    pub text: Option<String>,
    /// Worker threads (each with its own runtime and listeners).
    pub threads: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            listen: vec![Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))],
            body_size: 150,
            delay: Duration::ZERO,
            json: true,
            text: None,
            threads: 1,
        }
    }
}

/// Counters of one worker thread, padded so threads never share a cache line.
#[derive(Default)]
#[repr(align(64))]
struct ThreadCounters {
    accepted: AtomicU64,
    requests: AtomicU64,
}

/// Counters summed over all threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests answered (including `/__stats`).
    pub requests: u64,
}

struct Shared {
    counters: Vec<ThreadCounters>,
}

impl Shared {
    fn stats(&self) -> BackendStats {
        let mut s = BackendStats::default();
        for c in &self.counters {
            s.accepted += c.accepted.load(Ordering::Relaxed);
            s.requests += c.requests.load(Ordering::Relaxed);
        }
        s
    }
}

/// A running backend; [`BackendHandle::stop`] (or drop) stops its threads.
pub struct BackendHandle {
    addrs: Vec<Addr>,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    unix_paths: Vec<PathBuf>,
}

impl BackendHandle {
    /// The first listen address, with the real port when 0 was asked.
    pub fn addr(&self) -> &Addr {
        // `spawn` refuses an empty listen list, so index 0 exists.
        &self.addrs[0]
    }

    /// All listen addresses, in configuration order.
    pub fn addrs(&self) -> &[Addr] {
        &self.addrs
    }

    /// Accepted connections and answered requests so far.
    pub fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// Stops accepting, closes every connection, joins the threads and returns the final counts.
    pub fn stop(mut self) -> BackendStats {
        self.shutdown();
        self.shared.stats()
    }

    fn shutdown(&mut self) {
        let _ = self.stop_tx.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for p in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds the fixed response: head and body in one buffer so a single response is one write.
fn build_response(cfg: &BackendConfig) -> Vec<u8> {
    let body: Vec<u8> = if let Some(text) = &cfg.text {
        text.as_bytes().to_vec()
    } else if cfg.json {
        // `{"data":"xxx"}` is 11 bytes of framing; below that, pad `{}` with JSON whitespace.
        if cfg.body_size >= 11 {
            let mut b = Vec::with_capacity(cfg.body_size);
            b.extend_from_slice(b"{\"data\":\"");
            b.resize(cfg.body_size - 2, b'x');
            b.extend_from_slice(b"\"}");
            b
        } else {
            let mut b = b"{}".to_vec();
            b.resize(cfg.body_size.max(2), b' ');
            b
        }
    } else {
        vec![b'x'; cfg.body_size]
    };
    let ctype = if cfg.json && cfg.text.is_none() {
        "application/json"
    } else {
        "text/plain"
    };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: ringway-bench\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    r
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    // One listener per thread on the same port: the kernel balances new connections.
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Starts the backend on its own threads.
///
/// # Errors
/// Empty listen list, bind failure (address in use, bad path), thread spawn failure.
pub fn spawn(cfg: BackendConfig) -> io::Result<BackendHandle> {
    if cfg.listen.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "backend needs at least one listen address",
        ));
    }
    let threads = cfg.threads.max(1);
    // Bind everything up front so errors surface here and port 0 resolves once for all threads.
    let mut per_thread: Vec<Vec<StdListener>> = (0..threads).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    let mut unix_paths = Vec::new();
    for a in &cfg.listen {
        match a {
            Addr::Tcp(sa) => {
                let first = bind_tcp(*sa)?;
                let real = first.local_addr()?;
                addrs.push(Addr::Tcp(real));
                per_thread[0].push(StdListener::Tcp(first));
                for lst in per_thread.iter_mut().skip(1) {
                    lst.push(StdListener::Tcp(bind_tcp(real)?));
                }
            }
            Addr::Unix(path) => {
                // A stale socket file from a killed run would make bind fail with EADDRINUSE.
                let _ = std::fs::remove_file(path);
                let l = std::os::unix::net::UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                // Unix sockets have no SO_REUSEPORT balancing: every thread accepts on a dup of
                // the same socket; a wake-up that loses the race just sees EAGAIN.
                for lst in per_thread.iter_mut().skip(1) {
                    lst.push(StdListener::Unix(l.try_clone()?));
                }
                per_thread[0].push(StdListener::Unix(l));
                addrs.push(a.clone());
                unix_paths.push(path.clone());
            }
        }
    }
    let shared = Arc::new(Shared {
        counters: (0..threads).map(|_| ThreadCounters::default()).collect(),
    });
    let response: Arc<[u8]> = build_response(&cfg).into();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    for (i, listeners) in per_thread.into_iter().enumerate() {
        let shared = shared.clone();
        let response = response.clone();
        let stop_rx = stop_rx.clone();
        let delay = cfg.delay;
        let h = std::thread::Builder::new()
            .name(format!("bench-backend-{i}"))
            .spawn(move || run_thread(i, listeners, shared, response, delay, stop_rx))?;
        handles.push(h);
    }
    Ok(BackendHandle {
        addrs,
        shared,
        stop_tx,
        threads: handles,
        unix_paths,
    })
}

fn run_thread(
    idx: usize,
    listeners: Vec<StdListener>,
    shared: Arc<Shared>,
    response: Arc<[u8]>,
    delay: Duration,
    mut stop_rx: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringway-bench backend: thread {idx}: runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                for l in listeners {
                    let shared = shared.clone();
                    let response = response.clone();
                    match l {
                        StdListener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::task::spawn_local(accept_tcp(
                                    l, idx, shared, response, delay,
                                ));
                            }
                            Err(e) => eprintln!("ringway-bench backend: register listener: {e}"),
                        },
                        StdListener::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                            Ok(l) => {
                                tokio::task::spawn_local(accept_unix(
                                    l, idx, shared, response, delay,
                                ));
                            }
                            Err(e) => eprintln!("ringway-bench backend: register listener: {e}"),
                        },
                    }
                }
                // Runs until stop() is called or the handle is dropped (sender gone).
                while !*stop_rx.borrow() {
                    if stop_rx.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
    });
    // Dropping the runtime here drops every connection task: sockets close.
}

/// Sleeps briefly after accept errors such as EMFILE so the loop never spins hot.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

async fn accept_tcp(
    l: tokio::net::TcpListener,
    idx: usize,
    shared: Arc<Shared>,
    response: Arc<[u8]>,
    delay: Duration,
) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                shared.counters[idx]
                    .accepted
                    .fetch_add(1, Ordering::Relaxed);
                // Small responses must leave at once, not wait for Nagle.
                let _ = s.set_nodelay(true);
                tokio::task::spawn_local(serve(s, idx, shared.clone(), response.clone(), delay));
            }
            Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
        }
    }
}

async fn accept_unix(
    l: tokio::net::UnixListener,
    idx: usize,
    shared: Arc<Shared>,
    response: Arc<[u8]>,
    delay: Duration,
) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                shared.counters[idx]
                    .accepted
                    .fetch_add(1, Ordering::Relaxed);
                tokio::task::spawn_local(serve(s, idx, shared.clone(), response.clone(), delay));
            }
            Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
        }
    }
}

/// What to answer to one parsed request.
enum Answer {
    Fixed,
    Stats,
    BadRequest,
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// One connection: parse every complete request in the buffer, answer them with one write.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    idx: usize,
    shared: Arc<Shared>,
    response: Arc<[u8]>,
    delay: Duration,
) {
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut skip: Option<BodySkip> = None;
    let mut out: Vec<u8> = Vec::new();
    loop {
        let mut answers: u32 = 0;
        let mut single: Option<Answer> = None;
        let mut close = false;
        out.clear();
        // Parse loop: bounded by the bytes in the buffer; each iteration consumes ≥ 1 byte or breaks.
        loop {
            if let Some(sk) = skip.as_mut() {
                match sk.feed(&buf[start..end]) {
                    Ok((n, done)) => {
                        start += n;
                        if done {
                            skip = None;
                        } else {
                            break;
                        }
                    }
                    Err(_) => {
                        close = true;
                        push_answer(
                            &mut out,
                            &mut single,
                            &mut answers,
                            Answer::BadRequest,
                            &response,
                            &shared,
                        );
                        break;
                    }
                }
            }
            if start == end {
                break;
            }
            let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[start..end]) {
                Ok(httparse::Status::Partial) => break,
                Ok(httparse::Status::Complete(n)) => {
                    let info = match http1::head_info(req.headers, req.version.unwrap_or(1), false)
                    {
                        Ok(i) => i,
                        Err(_) => {
                            close = true;
                            push_answer(
                                &mut out,
                                &mut single,
                                &mut answers,
                                Answer::BadRequest,
                                &response,
                                &shared,
                            );
                            break;
                        }
                    };
                    let ans = if req.path.is_some_and(|p| p.starts_with("/__stats")) {
                        Answer::Stats
                    } else {
                        Answer::Fixed
                    };
                    shared.counters[idx]
                        .requests
                        .fetch_add(1, Ordering::Relaxed);
                    start += n;
                    if info.framing != http1::BodyFraming::Length(0) {
                        skip = Some(BodySkip::new(info.framing));
                    }
                    if delay > Duration::ZERO {
                        tokio::time::sleep(delay).await;
                    }
                    push_answer(&mut out, &mut single, &mut answers, ans, &response, &shared);
                    if info.close {
                        close = true;
                        break;
                    }
                }
                Err(_) => {
                    close = true;
                    push_answer(
                        &mut out,
                        &mut single,
                        &mut answers,
                        Answer::BadRequest,
                        &response,
                        &shared,
                    );
                    break;
                }
            }
        }
        // The common case (one plain request) writes the shared prebuilt response: no copy.
        let res = match (answers, &single) {
            (0, _) => Ok(()),
            (1, Some(Answer::Fixed)) => s.write_all(&response).await,
            _ => s.write_all(&out).await,
        };
        if res.is_err() || close {
            let _ = s.shutdown().await;
            return;
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            if start == 0 {
                // A head larger than the whole buffer: refuse rather than grow without bound.
                let _ = s.write_all(BAD_REQUEST).await;
                return;
            }
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        match s.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}

/// Records one answer; the first one is kept aside so a lone plain response needs no copy.
fn push_answer(
    out: &mut Vec<u8>,
    single: &mut Option<Answer>,
    answers: &mut u32,
    ans: Answer,
    response: &[u8],
    shared: &Shared,
) {
    match &ans {
        Answer::Fixed => out.extend_from_slice(response),
        Answer::Stats => {
            let st = shared.stats();
            let body = format!(
                "{{\"accepted\":{},\"requests\":{}}}",
                st.accepted, st.requests
            );
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        Answer::BadRequest => out.extend_from_slice(BAD_REQUEST),
    }
    if *answers == 0 {
        *single = Some(ans);
    }
    *answers += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn fetch(addr: &Addr, req: &[u8], want_responses: usize) -> String {
        let Addr::Tcp(sa) = addr else {
            panic!("expected tcp address, got {addr}")
        };
        let mut c = std::net::TcpStream::connect(sa).expect("connect to backend");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        c.write_all(req).expect("write request");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        // Bounded: stops at the wanted count or a 5 s timeout.
        while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() < want_responses {
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn answers_pipelined_requests_with_bodies_and_counts() {
        let h = spawn(BackendConfig {
            threads: 2,
            body_size: 20,
            ..BackendConfig::default()
        })
        .expect("spawn backend");
        let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        let got = fetch(h.addr(), req, 4);
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 4, "got: {got}");
        assert!(got.contains("{\"data\":\"xxxxxxxxx\"}"), "got: {got}");
        let stats = fetch(h.addr(), b"GET /__stats HTTP/1.1\r\n\r\n", 1);
        assert!(stats.contains("\"requests\":5"), "got: {stats}");
        let st = h.stop();
        assert_eq!(
            st,
            BackendStats {
                accepted: 2,
                requests: 5
            }
        );
    }

    #[test]
    fn text_body_is_sent_as_given() {
        let cfg = BackendConfig {
            text: Some("Hello, World!".into()),
            ..BackendConfig::default()
        };
        let r = String::from_utf8(build_response(&cfg)).expect("ascii");
        assert!(
            r.ends_with("Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"),
            "got: {r}"
        );
    }

    #[test]
    fn json_body_has_exact_size() {
        for size in [0, 2, 10, 11, 150, 65536] {
            let cfg = BackendConfig {
                body_size: size,
                ..BackendConfig::default()
            };
            let r = build_response(&cfg);
            let text = String::from_utf8(r).expect("ascii");
            let (_, body) = text.split_once("\r\n\r\n").expect("head end");
            assert_eq!(body.len(), size.max(2), "size {size}");
            assert!(
                serde_json::from_str::<serde_json::Value>(body).is_ok(),
                "size {size}"
            );
        }
    }
}
