//! Runs the real `ringway` binary for integration tests, and a small raw HTTP/1.1 client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Both drivers: every integration test body runs once per entry.
pub const DRIVERS: [&str; 2] = ["uring", "epoll"];

/// A port nobody listens on right now (bind :0, read it, release it).
///
/// Ports come from 20000..32000, below the kernel's ephemeral range (32768+), so a port handed out
/// here is never the one the OS gives a backend bound to :0 or an outgoing connection meanwhile;
/// a per-process counter keeps this process's tests apart, a pid-based start keeps concurrent test
/// processes apart.
pub fn free_port() -> u16 {
    static NEXT_PORT: std::sync::OnceLock<std::sync::atomic::AtomicU32> =
        std::sync::OnceLock::new();
    let next = NEXT_PORT
        .get_or_init(|| std::sync::atomic::AtomicU32::new((std::process::id() % 100) * 120));
    for _ in 0..12_000 {
        let port = 20_000 + (next.fetch_add(1, Ordering::SeqCst) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// `[[route.fanout.call]]` tables: one call per name, to `upstream`, on path `/<name>`.
pub fn fanout_calls(upstream: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!("[[route.fanout.call]]\nname = \"{n}\"\nupstream = \"{upstream}\"\npath = \"/{n}\"\n")
        })
        .collect()
}

/// The `[server]` + `[admin]` preamble for a test config on fresh ports; append upstreams/routes.
pub fn preamble(driver: &str, shards: usize) -> (String, SocketAddr, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut text = format!(
        "[server]\nlisten = [\"{addr}\"]\nshards = {shards}\nio = \"{driver}\"\npin_cpus = false\n\n[admin]\nlisten = \"{admin}\"\n\n"
    );
    // RINGWAY_TEST_URING_FEATURES=off runs every test with the 5.10-era io_uring feature set:
    // no multishot accept, no ring setup flags (CI runs the integration suites both ways).
    if std::env::var("RINGWAY_TEST_URING_FEATURES").as_deref() == Ok("off") {
        text.push_str(
            "[io_uring]\nmultishot_accept = false\nbuffer_ring = false\npool_peek = false\nlinked_ops = false\nregistered_files = false\ncoop_taskrun = false\nsingle_issuer = false\ndefer_taskrun = false\n\n",
        );
    }
    (text, addr, admin)
}

impl Gateway {
    /// Writes `config` to a temp file and starts `ringway run` on it; waits until it accepts.
    pub fn start(config: &str, addr: SocketAddr, admin: SocketAddr) -> Gateway {
        Self::start_with(config, addr, admin, |_| {})
    }

    /// Like [`Gateway::start`], letting the caller adjust the command (env, seccomp, args).
    pub fn start_with(
        config: &str,
        addr: SocketAddr,
        admin: SocketAddr,
        adjust: impl FnOnce(&mut Command),
    ) -> Gateway {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ringway-gw-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("ringway.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr);
        adjust(&mut cmd);
        let child = cmd.spawn().expect("spawn ringway");
        let mut gw = Gateway {
            child,
            addr,
            admin,
            config_path,
            stderr_path,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ringway exited during start-up with {status}; stderr:\n{}",
                    self.stderr()
                );
            }
            // Poll the admin listener, not the gateway's: it starts after every shard listens,
            // and probing it leaves no stray connection in the shards' accept counts.
            if TcpStream::connect_timeout(&self.admin, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "ringway did not listen on {} within 10s; stderr:\n{}",
            self.addr,
            self.stderr()
        );
    }

    /// Everything the gateway logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal to the gateway.
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: plain kill(2) on our own child.
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GETs an admin path; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of a metric line `name{labels}` (exact prefix match up to the value).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Open file descriptors of the gateway process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The config and log live in a per-gateway temp dir; a failing test printed what it
        // needed already. RINGWAY_TEST_KEEP=1 keeps them for a post-mortem.
        if std::env::var_os("RINGWAY_TEST_KEEP").is_none()
            && let Some(dir) = self.config_path.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A keepalive client connection speaking raw HTTP/1.1.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream().write_all(bytes).unwrap();
    }

    /// GET `path` with Host: test.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false).expect("response")
    }

    /// Reads one response (`head_request`: no body expected). None on EOF before a status line.
    pub fn read_response(&mut self, head_request: bool) -> Option<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split(' ').nth(1)?.trim().parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l).ok()? == 0 {
                return None;
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(resp);
        }
        if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().ok()?;
            let mut body = vec![0; n];
            self.reader.read_exact(&mut body).ok()?;
            resp.body = body;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
                if n == 0 {
                    let mut end = String::new();
                    self.reader.read_line(&mut end).ok()?;
                    break;
                }
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).ok()?;
                resp.body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.reader.read_to_end(&mut resp.body).ok()?;
        }
        Some(resp)
    }

    /// True when the server closed the connection (EOF within `limit`).
    pub fn is_closed(&mut self, limit: Duration) -> bool {
        self.stream().set_read_timeout(Some(limit)).unwrap();
        // One read: EOF or a reset means closed; data or a timeout means open.
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

/// Open fds of process `pid` that are TCP connections to 127.0.0.1:`port` (any state but
/// LISTEN), matched through the socket inodes in /proc/net/tcp.
pub fn tcp_fds_to(pid: u32, port: u16) -> usize {
    let suffix = format!(">{port} ");
    describe_fds(pid)
        .iter()
        .filter(|d| d.contains(&suffix) && !d.ends_with("st0A"))
        .count()
}

/// A 127.0.0.1 port that refuses connections for as long as this lives: the socket is bound but
/// never listens, so the kernel cannot hand the port to another test's `bind(:0)` meanwhile (a
/// port merely released could become a concurrent test's backend).
pub struct DeadPort {
    _socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        DeadPort { _socket: s, addr }
    }
}

/// What each open fd of process `pid` is: `fd -> target`, with TCP sockets resolved to
/// `tcp local_port->remote_port state` from /proc/net/tcp (for failure messages).
pub fn describe_fds(pid: u32) -> Vec<String> {
    let mut inodes = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    .unwrap_or(0)
            };
            inodes.insert(
                f[9].to_string(),
                format!("tcp {}->{} st{}", port(f[1]), port(f[2]), f[3]),
            );
        }
    }
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let target = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or("");
        let what = inodes.get(inode).cloned().unwrap_or(target);
        out.push(format!("{}={what}", e.file_name().to_string_lossy()));
    }
    out.sort();
    out
}
