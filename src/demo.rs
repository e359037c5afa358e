//! `ringway demo`: the zero-config first run.
//!
//! Starts three small JSON backends (ads, profile, recs) in-process on Unix sockets, then the
//! gateway on 127.0.0.1:8080 with a proxy route and a fan-out route to them, and prints curl
//! commands to try. The backends are plain blocking threads: they are demo scenery, not the
//! gateway's hot path.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::config::{
    Balance, CallConfig, Config, FanoutConfig, HealthConfig, IoChoice, PoolConfig, RouteAction,
    RouteConfig, UpstreamConfig,
};
use crate::server::{self, RunError, RunOptions};
use crate::upstream::Endpoint;

/// A demo backend: its name, its answer, and an artificial delay (to show calls overlap).
struct DemoBackend {
    name: &'static str,
    body: &'static str,
    delay: Duration,
}

const BACKENDS: [DemoBackend; 3] = [
    DemoBackend {
        name: "ads",
        body: r#"{"slots":[{"id":1,"creative":"banner-a"},{"id":2,"creative":"banner-b"}]}"#,
        delay: Duration::from_millis(30),
    },
    DemoBackend {
        name: "profile",
        body: r#"{"user":"demo","name":"Ada Lovelace","plan":"pro"}"#,
        delay: Duration::from_millis(20),
    },
    DemoBackend {
        name: "recs",
        body: r#"{"items":["io_uring","thread-per-core","keepalive"]}"#,
        delay: Duration::from_millis(40),
    },
];

/// Runs the demo until a signal stops it.
///
/// # Errors
/// The demo backends' sockets cannot be created, or the gateway cannot start (port 8080 busy:
/// pass `--listen`).
pub fn run(listen: SocketAddr, io: IoChoice) -> Result<i32, RunError> {
    let dir = std::env::temp_dir().join(format!("ringway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunError(format!("cannot create {}: {e}", dir.display())))?;
    let mut config = Config::default();
    config.server.listen = vec![listen];
    config.server.io = io;
    for b in &BACKENDS {
        let path = dir.join(format!("{}.sock", b.name));
        start_backend(&path, b.body, b.delay)?;
        config.upstreams.push(UpstreamConfig {
            name: b.name.to_string(),
            endpoints: vec![Endpoint::Unix(path)],
            balance: Balance::default(),
            pool: PoolConfig::default(),
            health: HealthConfig::default(),
        });
    }
    config.routes.push(RouteConfig {
        path_prefix: "/ads/".into(),
        action: RouteAction::Proxy {
            upstream: "ads".into(),
        },
        ..RouteConfig::default()
    });
    let fan_timeout = Duration::from_millis(500);
    config.routes.push(RouteConfig {
        path_prefix: "/page".into(),
        action: RouteAction::Fanout(FanoutConfig {
            timeout: fan_timeout,
            calls: BACKENDS
                .iter()
                .map(|b| CallConfig {
                    name: b.name.into(),
                    upstream: b.name.into(),
                    path: format!("/{}", b.name),
                    required: b.name == "profile",
                    timeout: fan_timeout,
                    ..CallConfig::default()
                })
                .collect(),
        }),
        ..RouteConfig::default()
    });
    let admin = config
        .admin
        .listen
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    println!(
        "ringway demo: three JSON backends on Unix sockets in {}",
        dir.display()
    );
    println!("  gateway  http://{listen}   admin http://{admin}");
    println!("try:");
    println!("  curl -s http://{listen}/ads/slots                # proxied to the ads backend");
    println!(
        "  curl -si http://{listen}/page?user=42            # fan-out: ads + profile + recs in one answer"
    );
    println!("  curl -s http://{admin}/metrics | grep ringway_   # Prometheus metrics");
    println!("stop with Ctrl-C");
    let code = server::run(config, RunOptions::default());
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn start_backend(path: &Path, body: &'static str, delay: Duration) -> Result<(), RunError> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| RunError(format!("demo backend at {}: {e}", path.display())))?;
    let path: PathBuf = path.to_path_buf();
    thread::Builder::new()
        .name("ringway-demo-backend".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = thread::Builder::new().spawn(move || serve_demo(conn, body, delay));
            }
            let _ = std::fs::remove_file(path);
        })
        .map_err(|e| RunError(format!("demo backend thread: {e}")))?;
    Ok(())
}

/// Answers every request on `conn` with `body` as JSON, keepalive, until the peer closes.
fn serve_demo(mut conn: UnixStream, body: &str, delay: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let (consumed, close, head_only, body_len) = match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(n)) => {
                let mut close = false;
                let mut body_len = 0usize;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                    {
                        close = true;
                    }
                    if h.name.eq_ignore_ascii_case("content-length") {
                        body_len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    }
                }
                (n, close, req.method == Some("HEAD"), body_len)
            }
            Ok(httparse::Status::Partial) if len < buf.len() => {
                match conn.read(&mut buf[len..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                continue;
            }
            _ => return,
        };
        // Skip the request body, if any (the demo backends ignore it).
        let mut to_skip = consumed + body_len;
        while to_skip > len {
            to_skip -= len;
            len = match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
        }
        buf.copy_within(to_skip..len, 0);
        len -= to_skip;
        thread::sleep(delay);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        if conn.write_all(&out).is_err() || close {
            return;
        }
    }
}
