//! The load generator: keepalive HTTP/1.1 connections driving one URL, latencies in HDR histograms.
//!
//! Two modes:
//! - **closed loop** (default): each connection sends `pipeline` requests, waits for all the
//!   responses, and repeats until the duration ends. Latency is measured from the batch's send.
//! - **open loop** (`rate`): requests are *scheduled* at a fixed total rate spread over the
//!   connections; latency is measured from the *intended* send time whenever the connection was
//!   still busy with an earlier response, which corrects for coordinated omission (a stalled
//!   server cannot hide the queue it caused). When the connection was idle and only our timer
//!   (1 ms granularity) was late, latency counts from the real send: that delay is ours, not the
//!   server's.
//!
//! Each worker thread owns a `current_thread` runtime, its connections and its own histogram, so
//! nothing is shared on the hot path; histograms are merged at the end. Every loop is bounded by
//! the run deadline plus the per-response timeout.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::http1::{self, BodySkip};

/// Read buffer per connection (also the largest response head accepted).
const READ_BUF: usize = 64 * 1024;
/// Pause before reconnecting after an error, so a dead target is not hammered in a hot loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Highest latency the histogram tracks (ns); larger values are clamped.
const HIST_MAX_NS: u64 = 120_000_000_000;

/// Where and how to send load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// TCP address to connect to (ignored when `unix` is set).
    pub host_port: String,
    /// Unix socket to connect to instead of TCP.
    pub unix: Option<PathBuf>,
    /// Request path and query, e.g. `/item`.
    pub path: String,
    /// Keepalive connections.
    pub connections: usize,
    /// Measured run length.
    pub duration: Duration,
    /// Requests written back to back per batch (closed loop only).
    pub pipeline: usize,
    /// Open loop: total requests per second over all connections.
    pub rate: Option<f64>,
    /// Worker threads.
    pub threads: usize,
    /// A response slower than this counts as a timeout error and the connection is replaced.
    pub timeout: Duration,
}

/// Parses `http://127.0.0.1:8080/path` into (host:port, path). Only plain http to an IP literal.
///
/// # Errors
/// Anything but `http://IP:PORT[/path]`.
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url:?}"))?;
    let (hp, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    hp.parse::<std::net::SocketAddr>()
        .map_err(|e| format!("URL host must be IP:PORT (no DNS), got {hp:?}: {e}"))?;
    Ok((hp.to_string(), path.to_string()))
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Responses with a status outside 2xx.
    pub non_2xx: u64,
    /// Connect failures.
    pub connect: u64,
    /// Resets, unexpected EOF, malformed responses.
    pub io: u64,
    /// Responses slower than the timeout.
    pub timeout: u64,
}

impl ErrorCounts {
    /// Sum of all kinds.
    pub fn total(&self) -> u64 {
        self.non_2xx + self.connect + self.io + self.timeout
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.non_2xx += o.non_2xx;
        self.connect += o.connect;
        self.io += o.io;
        self.timeout += o.timeout;
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Completed responses (2xx and non-2xx).
    pub requests: u64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Wall time from first send to last connection done.
    pub elapsed: Duration,
    /// Latency histogram in nanoseconds.
    pub hist: Histogram<u64>,
    /// Open loop: how late our own timer sent a request whose connection was free at its
    /// scheduled time (ns). Latency of those counts from the real send, so this is the part of
    /// the schedule the client, not the target, missed.
    pub send_lag: Histogram<u64>,
    /// CPU time (user + system) the worker threads used, from `getrusage(RUSAGE_THREAD)`.
    pub worker_cpu: Duration,
}

impl LoadReport {
    /// Completed responses per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in microseconds.
    pub fn pct_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The load generator's own CPU cost per completed request, in microseconds.
    pub fn worker_cpu_us_per_req(&self) -> f64 {
        self.worker_cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }
}

/// A connected stream, TCP or Unix.
pub enum Stream {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// Unix domain socket.
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, b),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

async fn connect(cfg: &LoadConfig) -> io::Result<Stream> {
    match &cfg.unix {
        Some(p) => Ok(Stream::Unix(tokio::net::UnixStream::connect(p).await?)),
        None => {
            let s = tokio::net::TcpStream::connect(cfg.host_port.as_str()).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
    }
}

/// The request bytes: a minimal keepalive GET.
pub fn request_bytes(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-bench\r\n\r\n").into_bytes()
}

/// Outcome of reading one response: status code and whether the server closes after it.
struct Resp {
    status: u16,
    close: bool,
}

/// Per-connection receive state: a fixed buffer and the unconsumed window in it.
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buf: vec![0u8; READ_BUF],
            start: 0,
            end: 0,
        }
    }
}

impl Reader {
    async fn fill<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = s.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.end += n;
        Ok(n)
    }

    /// Reads one complete response (head and body, body discarded).
    async fn response<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> io::Result<Resp> {
        // Head: bounded by the buffer size (fill errors when full).
        let (status, info) = loop {
            let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let info = http1::head_info(r.headers, r.version.unwrap_or(1), true)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    self.start += n;
                    break (status, info);
                }
                Ok(httparse::Status::Partial) => {
                    self.fill(s).await?;
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        };
        if http1::status_has_no_body(status) {
            return Ok(Resp {
                status,
                close: info.close,
            });
        }
        let mut skip = BodySkip::new(info.framing);
        // Body: each iteration consumes buffered bytes or reads more; EOF ends it.
        loop {
            let (n, done) = skip
                .feed(&self.buf[self.start..self.end])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.start += n;
            if done {
                return Ok(Resp {
                    status,
                    close: info.close,
                });
            }
            match self.fill(s).await {
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        && matches!(skip, BodySkip::UntilClose) =>
                {
                    return Ok(Resp {
                        status,
                        close: true,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct ThreadResult {
    requests: u64,
    errors: ErrorCounts,
    hist: Histogram<u64>,
    send_lag: Histogram<u64>,
    cpu: Duration,
}

fn new_hist() -> Histogram<u64> {
    // 3 significant digits from 1 ns to 120 s: ~0.1 % error on every recorded latency.
    // The bounds are constants that satisfy low >= 1, high >= 2 * low, sigfig <= 5: cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// CPU time of the calling thread (user + system).
pub fn thread_cpu() -> Duration {
    crate::procfs::rusage(libc::RUSAGE_THREAD)
}

/// Runs the load and returns the merged report.
///
/// # Errors
/// Bad configuration or a thread/runtime that cannot start. Network errors are counted, not returned.
pub fn run(cfg: &LoadConfig) -> io::Result<LoadReport> {
    if cfg.connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "need at least one connection",
        ));
    }
    let threads = cfg.threads.clamp(1, cfg.connections);
    let start = Instant::now() + Duration::from_millis(5);
    let deadline = start + cfg.duration;
    let mut handles = Vec::new();
    for t in 0..threads {
        // Connections are dealt round-robin so threads differ by at most one.
        let conn_ids: Vec<usize> = (t..cfg.connections).step_by(threads).collect();
        let cfg = cfg.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-load-{t}"))
            .spawn(move || run_thread(&cfg, conn_ids, start, deadline))?;
        handles.push(h);
    }
    let mut report = LoadReport {
        requests: 0,
        errors: ErrorCounts::default(),
        elapsed: Duration::ZERO,
        hist: new_hist(),
        send_lag: new_hist(),
        worker_cpu: Duration::ZERO,
    };
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io::Error::other("load thread panicked"))??;
        report.requests += r.requests;
        report.errors.add(&r.errors);
        let _ = report.hist.add(&r.hist);
        let _ = report.send_lag.add(&r.send_lag);
        report.worker_cpu += r.cpu;
    }
    report.elapsed = Instant::now().saturating_duration_since(start);
    Ok(report)
}

fn run_thread(
    cfg: &LoadConfig,
    conn_ids: Vec<usize>,
    start: Instant,
    deadline: Instant,
) -> io::Result<ThreadResult> {
    let cpu0 = thread_cpu();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let mut res = local.block_on(&rt, async {
        let mut set = tokio::task::JoinSet::new();
        for id in conn_ids {
            let cfg = cfg.clone();
            set.spawn_local(async move { conn_loop(&cfg, id, start, deadline).await });
        }
        let mut total = ThreadResult {
            requests: 0,
            errors: ErrorCounts::default(),
            hist: new_hist(),
            send_lag: new_hist(),
            cpu: Duration::ZERO,
        };
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                total.requests += r.requests;
                total.errors.add(&r.errors);
                let _ = total.hist.add(&r.hist);
                let _ = total.send_lag.add(&r.send_lag);
            }
        }
        total
    });
    drop(rt);
    res.cpu = thread_cpu().saturating_sub(cpu0);
    Ok(res)
}

/// One connection's whole run: connect, send, receive, reconnect on error, until the deadline.
async fn conn_loop(cfg: &LoadConfig, id: usize, start: Instant, deadline: Instant) -> ThreadResult {
    let mut r = ThreadResult {
        requests: 0,
        errors: ErrorCounts::default(),
        hist: new_hist(),
        send_lag: new_hist(),
        cpu: Duration::ZERO,
    };
    let host = cfg
        .unix
        .as_ref()
        .map_or(cfg.host_port.as_str(), |_| "localhost");
    let one = request_bytes(host, &cfg.path);
    let depth = if cfg.rate.is_some() {
        1
    } else {
        cfg.pipeline.max(1)
    };
    let batch: Vec<u8> = one.repeat(depth);
    // Open loop: this connection's share of the schedule, offset so connections interleave.
    let interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(cfg.connections as f64 / rate));
    let mut next_intended =
        interval.map(|iv| start + iv.mul_f64(id as f64 / cfg.connections as f64));
    tokio::time::sleep_until(start.into()).await;
    let mut conn: Option<(Stream, Reader)> = None;
    // Bounded by the deadline: every iteration either sends a batch, sleeps, or fails and pauses.
    // The first iteration runs even past the deadline: on a starved machine a thread can start
    // after a short window closed, and a window with no request at all measures nothing.
    let mut first = true;
    while std::mem::take(&mut first) || Instant::now() < deadline {
        let (s, rd) = match conn.as_mut() {
            Some(c) => c,
            None => match connect(cfg).await {
                Ok(s) => conn.insert((s, Reader::default())),
                Err(_) => {
                    r.errors.connect += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        // `from` is the instant latency is measured from (see the module doc for open loop).
        let from = match next_intended.as_mut() {
            Some(intended) => {
                let now = Instant::now();
                let from = if *intended > now {
                    if *intended >= deadline {
                        break;
                    }
                    tokio::time::sleep_until((*intended).into()).await;
                    let sent = Instant::now();
                    let lag = sent.saturating_duration_since(*intended);
                    r.send_lag
                        .saturating_record((lag.as_nanos() as u64).clamp(1, HIST_MAX_NS));
                    sent
                } else {
                    *intended
                };
                if let Some(iv) = interval {
                    *intended += iv;
                }
                from
            }
            None => Instant::now(),
        };
        if s.write_all(&batch).await.is_err() {
            r.errors.io += 1;
            conn = None;
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        let got = tokio::time::timeout(cfg.timeout, async {
            let mut close = false;
            for _ in 0..depth {
                let Resp { status, close: c } = rd.response(s).await?;
                let lat = Instant::now().saturating_duration_since(from);
                r.hist
                    .saturating_record((lat.as_nanos() as u64).clamp(1, HIST_MAX_NS));
                r.requests += 1;
                if !(200..300).contains(&status) {
                    r.errors.non_2xx += 1;
                }
                if c {
                    close = true;
                    break;
                }
            }
            Ok::<bool, io::Error>(close)
        })
        .await;
        match got {
            Ok(Ok(false)) => {}
            // The server closed after a response: reconnect without counting an error.
            Ok(Ok(true)) => conn = None,
            Ok(Err(_)) => {
                r.errors.io += 1;
                conn = None;
            }
            Err(_) => {
                r.errors.timeout += 1;
                conn = None;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::backend::{self, BackendConfig};

    #[test]
    fn url_parsing() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/a?b=1"),
            Ok(("127.0.0.1:8080".into(), "/a?b=1".into()))
        );
        assert_eq!(
            parse_url("http://127.0.0.1:80"),
            Ok(("127.0.0.1:80".into(), "/".into()))
        );
        assert!(parse_url("https://127.0.0.1:80/").is_err());
        assert!(parse_url("http://localhost:80/").is_err());
    }

    fn cfg_for(addr: &Addr) -> LoadConfig {
        let (host_port, unix) = match addr {
            Addr::Tcp(a) => (a.to_string(), None),
            Addr::Unix(p) => ("127.0.0.1:1".to_string(), Some(p.clone())),
        };
        LoadConfig {
            host_port,
            unix,
            path: "/x".into(),
            connections: 4,
            duration: Duration::from_millis(300),
            pipeline: 1,
            rate: None,
            threads: 2,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn closed_loop_pipelined_and_unix_and_open_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("b.sock");
        let h = backend::spawn(BackendConfig {
            listen: vec!["127.0.0.1:0".parse().expect("addr"), Addr::Unix(sock)],
            body_size: 70_000,
            ..BackendConfig::default()
        })
        .expect("backend");
        let mut c = cfg_for(&h.addrs()[0]);
        c.pipeline = 4;
        let r = run(&c).expect("load run");
        assert!(
            r.requests > 0 && r.errors.total() == 0,
            "tcp pipelined: {r:?}"
        );
        let u = run(&cfg_for(&h.addrs()[1])).expect("load run");
        assert!(u.requests > 0 && u.errors.total() == 0, "unix: {u:?}");
        let mut o = cfg_for(&h.addrs()[0]);
        o.rate = Some(200.0);
        let o = run(&o).expect("open loop run");
        assert!(o.requests > 0 && o.errors.total() == 0, "open loop: {o:?}");
        // At 200 req/s over 4 connections every connection is free at its scheduled time, so
        // the timer sends them all and its lag is recorded; the closed loop records none.
        assert!(!o.send_lag.is_empty(), "open loop lag: {o:?}");
        assert!(r.send_lag.is_empty());
        let st = h.stop();
        assert_eq!(st.requests, r.requests + u.requests + o.requests);
    }
}
