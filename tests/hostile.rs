//! Hostile clients (issue 7, part 1): raw bytes over real sockets through the running gateway to a
//! real backend behind a recording tap. Every smuggling and malformed-input case of the codec gets
//! the right 4xx and a closed connection, and the backend never receives the smuggled request;
//! pipelining edge cases, slowloris, slow bodies, clients that never read, and clients that reset
//! mid-request or mid-response. Every test runs on both drivers.

mod common;

use ringway::both_drivers;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, Response, preamble};
use common::tap::Tap;

/// A request the backend must never see; smuggling cases hide it in a body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// Limits for the table: small enough to hit with a few KiB.
const LIMITS: &str = "[limits]\nmax_head_bytes = 4096\nmax_headers = 20\nmax_body_bytes = 1024\n\n";

/// A gateway (1 shard) proxying everything to `backend` through a recording tap.
struct Rig {
    gw: Gateway,
    tap: Tap,
    backend: Backend,
    /// Open fds of the gateway with no client and no backend connection.
    fds_baseline: usize,
}

impl Rig {
    fn start(driver: &str, spec: BackendSpec, extra: &str) -> Rig {
        let backend = Backend::tcp(spec);
        let tap = Tap::new(backend.addr.unwrap());
        let (mut cfg, addr, admin) = preamble(driver, 1);
        cfg.push_str(extra);
        cfg.push_str(&format!(
            "[[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n",
            tap.endpoint()
        ));
        let gw = Gateway::start(&cfg, addr, admin);
        // The admin probe of wait_ready may still be closing: let fds settle first.
        std::thread::sleep(Duration::from_millis(100));
        let fds_baseline = gw.open_fds();
        Rig {
            gw,
            tap,
            backend,
            fds_baseline,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        self.gw.metric(series).unwrap_or(0.0)
    }

    fn pool_idle(&self) -> f64 {
        self.metric("ringway_upstream_pool_idle{upstream=\"b\"}")
    }

    fn pool_active(&self) -> f64 {
        self.metric("ringway_upstream_pool_active{upstream=\"b\"}")
    }

    fn clients_open(&self) -> f64 {
        self.metric("ringway_client_connections_open")
    }

    fn opened_total(&self) -> f64 {
        self.metric("ringway_upstream_connections_opened_total{upstream=\"b\"}")
    }

    /// Waits up to `limit` until no client connection is open and no backend connection is in
    /// use; returns (clients open, pool active, pool idle) as last seen.
    fn wait_quiet(&self, limit: Duration) -> (f64, f64, f64) {
        let deadline = Instant::now() + limit;
        loop {
            let seen = (self.clients_open(), self.pool_active(), self.pool_idle());
            if (seen.0 == 0.0 && seen.1 == 0.0) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the gateway's open fds return to the baseline (plus idle pooled connections)
    /// within ~2 s: fds close asynchronously.
    fn assert_fds_settle(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let idle = self.pool_idle() as usize;
            let fds = self.gw.open_fds();
            if fds <= self.fds_baseline + idle {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: gateway fds did not return to baseline: {fds} open, baseline {} + {idle} idle pooled",
                    self.fds_baseline
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts neither the tap's raw bytes nor the backend's heads contain `/smuggled`.
    fn assert_not_smuggled(&self, what: &str) {
        let raw = String::from_utf8_lossy(&self.tap.received()).to_string();
        assert!(
            !raw.contains("/smuggled"),
            "{what}: the smuggled request reached the backend; raw bytes:\n{raw}"
        );
        let heads = self.backend.heads();
        assert!(
            heads.iter().all(|h| !h.contains("/smuggled")),
            "{what}: the backend parsed a smuggled head: {heads:?}"
        );
    }
}

/// A raw client connection.
fn connect(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c
}

/// Writes `bytes`, ignoring errors (the gateway may already have answered and closed).
fn send_lossy(c: &mut Client, bytes: &[u8]) {
    let _ = c.stream().write_all(bytes);
}

/// True when the server closed the connection within `limit`: EOF, or a reset (a close with
/// unread request bytes in the gateway's receive buffer is an RST on Linux).
fn closed_within(c: &mut Client, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        c.stream()
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match c.reader.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                use std::io::ErrorKind::*;
                return matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe);
            }
        }
    }
    false
}

/// Resets the connection (SO_LINGER 0, then close): the peer sees RST, not FIN.
fn reset(c: Client) {
    let s = c.reader.into_inner();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// One table case: raw bytes written in `parts` (a short pause between parts, so later parts
/// arrive while the gateway is already streaming the body), and the status expected.
struct Case {
    name: &'static str,
    parts: Vec<Vec<u8>>,
    status: u16,
    /// The head (and first chunk) reach the backend before the error: the backend connection
    /// must then be closed, never pooled.
    mid_stream: bool,
}

fn case(name: &'static str, bytes: impl AsRef<[u8]>, status: u16) -> Case {
    Case {
        name,
        parts: vec![bytes.as_ref().to_vec()],
        status,
        mid_stream: false,
    }
}

fn split_case(name: &'static str, first: &str, second: &str, status: u16) -> Case {
    Case {
        name,
        parts: vec![first.as_bytes().to_vec(), second.as_bytes().to_vec()],
        status,
        mid_stream: true,
    }
}

/// A POST whose extra `headers` decide the framing, followed by a body that, read with the other
/// framing, is a complete request for `/smuggled`.
fn post(headers: &str) -> String {
    format!("POST /a HTTP/1.1\r\nHost: t\r\n{headers}\r\n0\r\n\r\n{SMUGGLED}")
}

/// A GET with one extra field line (raw), then the smuggled request pipelined behind it.
fn get_with(line: &[u8]) -> Vec<u8> {
    let mut v = b"GET /a HTTP/1.1\r\nHost: t\r\n".to_vec();
    v.extend_from_slice(line);
    v.extend_from_slice(b"\r\n\r\n");
    v.extend_from_slice(SMUGGLED.as_bytes());
    v
}

/// Every smuggling and malformed-input case of the codec (RFC 9112 §2-§7, RFC 9110 §5, §8.6).
fn cases() -> Vec<Case> {
    let chunked_head = "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 5000));
    long_line.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut big_head = b"GET /a HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..10 {
        big_head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(500)).as_bytes());
    }
    big_head.extend_from_slice(b"\r\n");
    let mut many = b"GET /a HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..25 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut big_cl_body = b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n".to_vec();
    big_cl_body.extend(std::iter::repeat_n(b'x', 2000));
    let big_chunk = format!("{chunked_head}800\r\n{}\r\n0\r\n\r\n", "y".repeat(0x800));

    vec![
        // RFC 9112 §6.1, §6.3: Content-Length with Transfer-Encoding.
        case(
            "cl_then_te",
            post("Content-Length: 40\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        case(
            "te_then_cl",
            post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n"),
            400,
        ),
        case(
            "cl_zero_and_te",
            post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        // RFC 9112 §6.3 item 5, RFC 9110 §8.6: differing or invalid Content-Length.
        case(
            "cl_differing",
            post("Content-Length: 5\r\nContent-Length: 40\r\n"),
            400,
        ),
        case("cl_differing_list", post("Content-Length: 5, 40\r\n"), 400),
        case("cl_empty", post("Content-Length:\r\n"), 400),
        case("cl_plus_sign", post("Content-Length: +5\r\n"), 400),
        case("cl_negative", post("Content-Length: -5\r\n"), 400),
        case("cl_hex", post("Content-Length: 0x5\r\n"), 400),
        case("cl_space_inside", post("Content-Length: 1 0\r\n"), 400),
        case(
            "cl_overflow",
            post("Content-Length: 99999999999999999999\r\n"),
            400,
        ),
        case(
            "cl_u64_max_plus_1",
            post("Content-Length: 18446744073709551616\r\n"),
            400,
        ),
        // RFC 9112 §6.1, §6.3 item 4: Transfer-Encoding whose last coding is not chunked, or
        // chunked twice; unknown codings are 501; TE on HTTP/1.0 is faulty framing.
        case(
            "te_chunked_then_gzip",
            post("Transfer-Encoding: chunked, gzip\r\n"),
            400,
        ),
        case("te_gzip_only", post("Transfer-Encoding: gzip\r\n"), 400),
        // `identity` is no longer a registered coding (RFC 9112 §7): unknown, 501.
        case("te_identity", post("Transfer-Encoding: identity\r\n"), 501),
        case(
            "te_chunked_twice_lines",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        case(
            "te_chunked_twice_list",
            post("Transfer-Encoding: chunked, chunked\r\n"),
            400,
        ),
        case("te_empty", post("Transfer-Encoding: \r\n"), 400),
        case(
            "te_with_params",
            post("Transfer-Encoding: chunked;q=1\r\n"),
            400,
        ),
        case("te_quoted", post("Transfer-Encoding: \"chunked\"\r\n"), 400),
        case(
            "te_unknown_coding",
            post("Transfer-Encoding: foo, chunked\r\n"),
            501,
        ),
        case(
            "te_on_http10",
            format!("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // RFC 9112 §5.1, §5.2: whitespace before the colon, obs-fold.
        case(
            "space_before_colon_te",
            post("Transfer-Encoding : chunked\r\n"),
            400,
        ),
        case(
            "space_before_colon_cl",
            post("Content-Length : 40\r\n"),
            400,
        ),
        case("tab_before_colon", get_with(b"Host2\t: x"), 400),
        case("obs_fold", get_with(b"X-A: a\r\n  b"), 400),
        case(
            "obs_fold_te",
            post("X-A: a\r\n Transfer-Encoding: chunked\r\n"),
            400,
        ),
        case(
            "space_before_first_field",
            format!("GET /a HTTP/1.1\r\n Host: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // RFC 9110 §5.5: NUL, bare CR, control bytes in values.
        case("nul_in_value", get_with(b"X-A: a\0b"), 400),
        case("bare_cr_in_value", get_with(b"X-A: a\rb"), 400),
        case("ctl_in_value", get_with(b"X-A: a\x01b"), 400),
        case("del_in_value", get_with(b"X-A: a\x7fb"), 400),
        case("nul_in_cl", post("Content-Length: 4\0\r\n"), 400),
        // RFC 9110 §5.1: empty or non-token names.
        case("empty_name", get_with(b": v"), 400),
        case("non_token_name", get_with(b"X(A): v"), 400),
        case("no_colon", get_with(b"XA"), 400),
        case("name_with_space", get_with(b"X A: v"), 400),
        // RFC 9112 §3.2: Host.
        case(
            "missing_host",
            format!("GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case("several_hosts", get_with(b"Host: t"), 400),
        case("several_hosts_differ", get_with(b"Host: evil"), 400),
        case(
            "invalid_host_space",
            format!("GET /a HTTP/1.1\r\nHost: a b\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "invalid_host_userinfo",
            format!("GET /a HTTP/1.1\r\nHost: u@a\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "invalid_host_list",
            format!("GET /a HTTP/1.1\r\nHost: a, b\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // RFC 9112 §2.3, RFC 9110 §15.6.6: versions.
        case(
            "http_2_0",
            format!("GET /a HTTP/2.0\r\nHost: t\r\n\r\n{SMUGGLED}"),
            505,
        ),
        case(
            "http_1_2",
            format!("GET /a HTTP/1.2\r\nHost: t\r\n\r\n{SMUGGLED}"),
            505,
        ),
        case(
            "http_0_9",
            format!("GET /a HTTP/0.9\r\nHost: t\r\n\r\n{SMUGGLED}"),
            505,
        ),
        case(
            "http_garbage_version",
            format!("GET /a HTTP/1.10\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "http_lowercase_version",
            format!("GET /a http/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // RFC 9112 §3.2.3, §3.2.4: target forms.
        case(
            "authority_form_get",
            format!("GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "asterisk_get",
            format!("GET * HTTP/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "connect_origin_form",
            format!("CONNECT /a HTTP/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "double_space_request_line",
            format!("GET  /a HTTP/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "bad_method",
            format!("G(T /a HTTP/1.1\r\nHost: t\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // RFC 9112 §2.2: bare LF.
        case(
            "bare_lf_everywhere",
            format!("GET /a HTTP/1.1\nHost: t\n\n{SMUGGLED}"),
            400,
        ),
        case(
            "bare_lf_one_field",
            format!("GET /a HTTP/1.1\r\nHost: t\nX: y\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "bare_lf_end_of_head",
            format!("GET /a HTTP/1.1\r\nHost: t\r\n\n{SMUGGLED}"),
            400,
        ),
        // RFC 9112 §3, RFC 6585 §5, RFC 9110 §15.5.14: limits.
        case("request_line_over_limit", long_line, 414),
        case("head_over_limit", big_head, 431),
        case("too_many_headers", many, 431),
        case("cl_body_over_limit", big_cl_body, 413),
        case("chunked_body_over_limit", big_chunk, 413),
        // RFC 9112 §7.1: chunk framing, all in one write (rejected before any backend exchange).
        case(
            "chunk_size_not_hex",
            format!("{chunked_head}zz\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_size_overflow",
            format!("{chunked_head}10000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_size_sign",
            format!("{chunked_head}+5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_size_empty",
            format!("{chunked_head}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_missing_crlf",
            format!("{chunked_head}5\r\nhelloXX0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_bare_lf_after_data",
            format!("{chunked_head}5\r\nhello\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        case(
            "chunk_too_long_for_size",
            format!("{chunked_head}3\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        // The same, mid-stream: the first chunk has already gone to the backend when the bad one
        // arrives; nothing after it may follow.
        split_case(
            "mid_stream_bad_chunk_size",
            &format!("{chunked_head}5\r\nhello\r\n"),
            &format!("zz\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            400,
        ),
        split_case(
            "mid_stream_chunk_overflow",
            &format!("{chunked_head}5\r\nhello\r\n"),
            &format!("fffffffffffffffff\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            400,
        ),
        split_case(
            "mid_stream_bad_chunk_crlf",
            &format!("{chunked_head}5\r\nhello\r\n3\r\nabc"),
            &format!("XX0\r\n\r\n{SMUGGLED}"),
            400,
        ),
        split_case(
            "mid_stream_chunk_then_smuggle_in_size",
            &format!("{chunked_head}5\r\nhello\r\n"),
            &format!("5 {SMUGGLED}"),
            400,
        ),
        split_case(
            "mid_stream_body_over_limit",
            &format!("{chunked_head}5\r\nhello\r\n"),
            &format!("800\r\n{}\r\n0\r\n\r\n{SMUGGLED}", "z".repeat(0x800)),
            413,
        ),
    ]
}

both_drivers!(codec_rejections_end_to_end, |driver: &str| {
    let rig = Rig::start(driver, BackendSpec::default(), LIMITS);
    let mut failures = Vec::new();
    for c in cases() {
        rig.tap.clear();
        let mut client = connect(rig.gw.addr);
        for (i, part) in c.parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(150));
            }
            send_lossy(&mut client, part);
        }
        let resp = client.read_response(false);
        let closed = closed_within(&mut client, Duration::from_secs(3));
        let problem = match &resp {
            None => Some("no response".to_string()),
            Some(r) if r.status != c.status => Some(format!(
                "expected {}, got {} {}",
                c.status,
                r.status,
                r.text()
            )),
            Some(r) if r.header("connection") != Some("close") => {
                Some(format!("no `Connection: close` on the {}", r.status))
            }
            Some(_) if !closed => Some("connection left open".to_string()),
            _ => None,
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", c.name));
        }
        rig.assert_not_smuggled(c.name);
        let raw = rig.tap.received();
        if c.mid_stream {
            if !raw.starts_with(b"POST /a HTTP/1.1\r\n") {
                failures.push(format!(
                    "{}: expected the head to reach the backend before the bad bytes, got {:?}",
                    c.name,
                    String::from_utf8_lossy(&raw)
                ));
            }
            // The half-sent backend connection is closed, not pooled.
            let deadline = Instant::now() + Duration::from_secs(2);
            while rig.tap.seen.open.load(std::sync::atomic::Ordering::SeqCst) > 0
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            if rig.tap.seen.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                failures.push(format!("{}: backend connection left open", c.name));
            }
            if rig.pool_idle() != 0.0 {
                failures.push(format!(
                    "{}: backend connection pooled after the error",
                    c.name
                ));
            }
        } else if !raw.is_empty() {
            failures.push(format!(
                "{}: rejected at the head, yet the backend got {:?}",
                c.name,
                String::from_utf8_lossy(&raw)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{driver}: {} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    // No backend request completed: every case was refused before its body ended.
    assert_eq!(
        rig.backend.requests(),
        0,
        "backend heads: {:?}",
        rig.backend.heads()
    );
    // The gateway still serves, and nothing leaked.
    let mut c = connect(rig.gw.addr);
    assert_eq!(c.get("/after").status, 200);
    drop(c);
    let (clients, active, _) = rig.wait_quiet(Duration::from_secs(2));
    assert_eq!(
        (clients, active),
        (0.0, 0.0),
        "no client or backend connection left in use"
    );
    rig.assert_fds_settle("after the table");
});

both_drivers!(equal_content_length_list_is_collapsed, |driver: &str| {
    // RFC 9112 §6.3 item 5: `5, 5` may be collapsed to 5; the backend gets one clean value.
    let rig = Rig::start(driver, BackendSpec::default(), LIMITS);
    let mut c = connect(rig.gw.addr);
    c.send(b"POST /five HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("first response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"body_len\":5"), "{}", r.text());
    let r = c.read_response(false).expect("second response");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/next"), "{}", r.text());
    let heads = rig.backend.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let cl: Vec<&str> = heads[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length"))
        .collect();
    assert_eq!(
        cl,
        ["content-length: 5"],
        "one clean Content-Length forwarded"
    );
    drop(c);
    rig.wait_quiet(Duration::from_secs(2));
    rig.assert_fds_settle("after the collapsed list");
});

both_drivers!(valid_then_invalid_in_one_pipeline, |driver: &str| {
    let rig = Rig::start(driver, BackendSpec::default(), LIMITS);
    let mut c = connect(rig.gw.addr);
    c.send(
        format!(
            "GET /first HTTP/1.1\r\nHost: t\r\n\r\nPOST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        )
        .as_bytes(),
    );
    let r = c.read_response(false).expect("first answered");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/first"), "{}", r.text());
    let r = c.read_response(false).expect("then 400");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "closed after the 400"
    );
    let heads = rig.backend.heads();
    assert_eq!(heads.len(), 1, "only /first reached the backend: {heads:?}");
    rig.assert_not_smuggled("valid then invalid");
    rig.wait_quiet(Duration::from_secs(2));
    rig.assert_fds_settle("valid then invalid");
});

both_drivers!(bytes_after_connection_close_are_ignored, |driver: &str| {
    let rig = Rig::start(driver, BackendSpec::default(), LIMITS);
    // Pipelined in the same write.
    let mut c = connect(rig.gw.addr);
    c.send(
        format!("GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n{SMUGGLED}").as_bytes(),
    );
    let r = c.read_response(false).expect("answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "closed after the close request"
    );
    // Sent after the response arrived.
    let mut c = connect(rig.gw.addr);
    c.send(b"GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).expect("answered");
    assert_eq!(r.status, 200);
    send_lossy(&mut c, SMUGGLED.as_bytes());
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "closed after the close request"
    );
    std::thread::sleep(Duration::from_millis(100));
    let heads = rig.backend.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    rig.assert_not_smuggled("after Connection: close");
    rig.wait_quiet(Duration::from_secs(2));
    rig.assert_fds_settle("after Connection: close");
});

const SHORT_TIMEOUTS: &str = "[timeouts]\nclient_header = \"1s\"\nclient_idle = \"1s\"\n\n";

both_drivers!(slowloris_head_is_cut_at_client_header, |driver: &str| {
    let rig = Rig::start(driver, BackendSpec::default(), SHORT_TIMEOUTS);
    let mut c = connect(rig.gw.addr);
    let mut writer = c.stream().try_clone().unwrap();
    let t0 = Instant::now();
    // One line per 250 ms: progress, but the head never completes within 1 s.
    let dribble = std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /slow HTTP/1.1\r\n");
        for i in 0..16 {
            std::thread::sleep(Duration::from_millis(250));
            if writer
                .write_all(format!("X-Drip-{i}: {i}\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"Host: t\r\n\r\n");
    });
    let r = c.read_response(false).expect("a 408");
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
        "cut at client_header (1 s) after the first byte, took {took:?}"
    );
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "closed after the 408"
    );
    dribble.join().unwrap();
    assert_eq!(rig.tap.connections(), 0, "nothing reached the backend");
    assert_eq!(
        rig.gw
            .metric("ringway_requests_total{route=\"\",status=\"408\"}"),
        Some(1.0),
        "the 408 is counted"
    );
    rig.wait_quiet(Duration::from_secs(2));
    rig.assert_fds_settle("slowloris");
});

both_drivers!(
    silent_connection_is_closed_at_client_header,
    |driver: &str| {
        let rig = Rig::start(driver, BackendSpec::default(), SHORT_TIMEOUTS);
        let mut c = connect(rig.gw.addr);
        let t0 = Instant::now();
        assert!(
            closed_within(&mut c, Duration::from_secs(4)),
            "a silent connection is closed"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
            "closed at client_header (1 s), took {took:?}"
        );
        rig.wait_quiet(Duration::from_secs(2));
        rig.assert_fds_settle("silent connection");
    }
);

both_drivers!(slow_body_is_cut_by_the_idle_timer, |driver: &str| {
    let rig = Rig::start(driver, BackendSpec::default(), SHORT_TIMEOUTS);
    let mut c = connect(rig.gw.addr);
    c.send(b"POST /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"0123456789");
    let t0 = Instant::now();
    // Then nothing: after client_idle (1 s) without a byte the gateway gives up with 408.
    let r = c.read_response(false).expect("a 408 for the stalled body");
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "closed after the 408"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(3000),
        "cut about client_idle (1 s) after the last byte, took {took:?}"
    );
    let (clients, active, idle) = rig.wait_quiet(Duration::from_secs(2));
    assert_eq!(
        (clients, active, idle),
        (0.0, 0.0, 0.0),
        "the half-sent backend connection is discarded, not pooled"
    );
    assert_eq!(
        rig.backend.requests(),
        0,
        "the backend never got a whole request"
    );
    assert_eq!(
        rig.gw
            .metric("ringway_requests_total{route=\"/\",status=\"408\"}"),
        Some(1.0),
        "the 408 is counted"
    );
    rig.assert_fds_settle("slow body");
});

both_drivers!(slow_but_steady_body_is_not_cut, |driver: &str| {
    // client_idle is an idle timer, not a deadline for the whole body: 6 pieces 400 ms apart
    // (2.4 s in all, more than client_idle = 1 s) get through.
    let rig = Rig::start(driver, BackendSpec::default(), SHORT_TIMEOUTS);
    let mut c = connect(rig.gw.addr);
    c.send(b"POST /steady HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n");
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        c.send(b"0123456789");
    }
    let r = c.read_response(false).expect("answered");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"body_len\":60"), "{}", r.text());
    drop(c);
    rig.wait_quiet(Duration::from_secs(2));
    rig.assert_fds_settle("steady body");
});

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

both_drivers!(
    client_that_never_reads_is_bounded_then_closed,
    |driver: &str| {
        const BODY: usize = 64 << 20;
        // A second upstream for the bystander, so its pooled connection does not blur the
        // accounting of the abandoned one.
        let bystander = Backend::tcp(BackendSpec::default());
        let extra = format!(
            "{SHORT_TIMEOUTS}[[upstream]]\nname = \"o\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"/other\"\nupstream = \"o\"\n\n",
            bystander.endpoint()
        );
        let rig = Rig::start(
            driver,
            BackendSpec {
                body: Some(vec![b'x'; BODY]),
                content_type: "application/octet-stream".into(),
                ..BackendSpec::default()
            },
            &extra,
        );
        let pid = rig.gw.child.id();
        let base = rss_kib(pid);
        let mut lazy = connect(rig.gw.addr);
        // A small receive buffer so the kernel holds little on our side.
        socket2::SockRef::from(&*lazy.stream())
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        lazy.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        let t0 = Instant::now();
        // While the gateway is stuck writing to the lazy client, another client is served.
        std::thread::sleep(Duration::from_millis(300));
        let mut other = connect(rig.gw.addr);
        let r = other.get("/other/small");
        assert_eq!(r.status, 200, "a bystander is served during the stall");
        drop(other);
        let mut peak = base;
        let mut closed_after = None;
        while t0.elapsed() < Duration::from_secs(10) {
            peak = peak.max(rss_kib(pid));
            if rig.clients_open() == 0.0 {
                closed_after = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{driver}: RSS {base} KiB -> peak {peak} KiB; closed after {closed_after:?}");
        assert!(
            peak < base + 64 * 1024,
            "gateway RSS grew from {base} KiB to {peak} KiB for one non-reading client"
        );
        let took = closed_after.unwrap_or_else(|| {
            panic!(
                "the non-reading client was never closed (client_idle = 1 s); pool active = {}",
                rig.pool_active()
            )
        });
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "closed about client_idle (1 s) after writes stopped progressing, took {took:?}"
        );
        let (clients, active, idle) = rig.wait_quiet(Duration::from_secs(2));
        assert_eq!(
            (clients, active, idle),
            (0.0, 0.0, 0.0),
            "the backend connection of the abandoned response is discarded, not pooled"
        );
        // The truncated response must not look complete: we read what arrived, then EOF/RST.
        let mut sink = Vec::new();
        let _ = lazy.reader.read_to_end(&mut sink);
        assert!(
            sink.len() < BODY,
            "the client cannot have received the whole body"
        );
        drop(lazy);
        // The bystander's idle connection to `o` is one fd above the baseline.
        let deadline = Instant::now() + Duration::from_secs(2);
        while rig.gw.open_fds() > rig.fds_baseline + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            rig.gw.open_fds() <= rig.fds_baseline + 1,
            "fds back to baseline (+1 idle bystander connection): {} vs {}",
            rig.gw.open_fds(),
            rig.fds_baseline
        );
    }
);

both_drivers!(
    slow_but_reading_client_gets_the_whole_body,
    |driver: &str| {
        // The write deadline (client_idle = 1 s) is per write, not per response: a client that keeps
        // reading, more slowly than the gateway could send, gets all 4 MiB over more than 1 s.
        const BODY: usize = 4 << 20;
        let rig = Rig::start(
            driver,
            BackendSpec {
                body: Some(vec![b's'; BODY]),
                content_type: "application/octet-stream".into(),
                ..BackendSpec::default()
            },
            SHORT_TIMEOUTS,
        );
        let mut c = connect(rig.gw.addr);
        socket2::SockRef::from(&*c.stream())
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        let t0 = Instant::now();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < BODY {
            match c.reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let took = t0.elapsed();
        assert!(
            total > BODY,
            "the whole response arrived ({total} bytes of {BODY} + head, in {took:?})"
        );
        assert!(
            took > Duration::from_secs(1),
            "slower than client_idle: {took:?}"
        );
    }
);

both_drivers!(
    client_reset_mid_request_discards_backend_connection,
    |driver: &str| {
        let rig = Rig::start(driver, BackendSpec::default(), "");
        // Warm the pool: one idle backend connection that the next request reuses.
        let mut warm = connect(rig.gw.addr);
        assert_eq!(warm.get("/warm").status, 200);
        drop(warm);
        rig.wait_quiet(Duration::from_secs(2));
        assert_eq!(
            rig.pool_idle(),
            1.0,
            "one idle pooled connection after the warm-up"
        );
        let opened = rig.opened_total();

        let mut c = connect(rig.gw.addr);
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
        c.send(&[b'u'; 1000]);
        // Let the gateway take the backend connection and start streaming the body.
        let deadline = Instant::now() + Duration::from_secs(3);
        while rig.pool_active() != 1.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            rig.pool_active(),
            1.0,
            "the body is being streamed to the backend"
        );
        reset(c);
        let (clients, active, idle) = rig.wait_quiet(Duration::from_secs(3));
        assert_eq!(
            (clients, active, idle),
            (0.0, 0.0, 0.0),
            "after the client's RST mid-request, the half-written backend connection is closed, not pooled"
        );
        assert_eq!(rig.backend.requests(), 1, "only the warm-up completed");
        rig.assert_fds_settle("RST mid-request");
        // The next request opens a fresh backend connection and works.
        let mut c = connect(rig.gw.addr);
        assert_eq!(c.get("/next").status, 200);
        assert_eq!(
            rig.opened_total(),
            opened + 1.0,
            "a fresh connection, not a stale one"
        );
    }
);

both_drivers!(
    client_reset_mid_response_discards_backend_connection,
    |driver: &str| {
        const BODY: usize = 16 << 20;
        let rig = Rig::start(
            driver,
            BackendSpec {
                body: Some(vec![b'r'; BODY]),
                content_type: "application/octet-stream".into(),
                ..BackendSpec::default()
            },
            "",
        );
        // Warm the pool (HEAD: no body).
        let mut warm = connect(rig.gw.addr);
        warm.send(b"HEAD /warm HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(warm.read_response(true).expect("warm").status, 200);
        drop(warm);
        rig.wait_quiet(Duration::from_secs(2));
        assert_eq!(
            rig.pool_idle(),
            1.0,
            "one idle pooled connection after the warm-up"
        );
        let opened = rig.opened_total();

        let mut c = connect(rig.gw.addr);
        c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        // Read the head and some of the body, then reset.
        let mut got = vec![0u8; 256 * 1024];
        let mut n = 0;
        while n < got.len() {
            match c.reader.read(&mut got[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        assert!(
            n > 1024 && got.starts_with(b"HTTP/1.1 200"),
            "the response started"
        );
        reset(c);
        let (clients, active, idle) = rig.wait_quiet(Duration::from_secs(3));
        assert_eq!(
            (clients, active, idle),
            (0.0, 0.0, 0.0),
            "after the client's RST mid-response, the backend connection (body unread) is closed, not pooled"
        );
        rig.assert_fds_settle("RST mid-response");
        let mut c = connect(rig.gw.addr);
        c.send(b"HEAD /next HTTP/1.1\r\nHost: t\r\n\r\n");
        let r: Response = c.read_response(true).expect("served after the reset");
        assert_eq!(r.status, 200);
        assert_eq!(
            rig.opened_total(),
            opened + 1.0,
            "a fresh connection, not a stale one"
        );
    }
);

both_drivers!(over_limit_upload_still_gets_its_413, |driver: &str| {
    // 413 for a declared body over the limit while the client is still uploading: the gateway
    // closes with unread bytes in its receive buffer. The client must still read the 413.
    let rig = Rig::start(driver, BackendSpec::default(), LIMITS);
    let mut failures = 0;
    for _ in 0..20 {
        let mut c = connect(rig.gw.addr);
        let mut w = c.stream().try_clone().unwrap();
        let up = std::thread::spawn(move || {
            let _ = w.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n");
            let _ = w.write_all(&vec![b'u'; 4 << 20]);
        });
        match c.read_response(false) {
            Some(r) if r.status == 413 => {}
            other => {
                failures += 1;
                eprintln!("{driver}: {other:?}");
            }
        }
        up.join().unwrap();
    }
    assert_eq!(failures, 0, "{failures}/20 uploads lost their 413");
});

both_drivers!(
    rejected_head_with_more_bytes_behind_it_ends_in_a_clean_close,
    |driver: &str| {
        // RFC 9112 §9.6: the gateway half-closes and drains what the client still sends, so the
        // client reads the 431 and then a FIN, not a reset that could have destroyed the answer.
        let rig = Rig::start(driver, BackendSpec::default(), "");
        let mut c = connect(rig.gw.addr);
        let mut req = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..400 {
            req.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "y".repeat(60)).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        // More bytes behind the head (a pipelined upload the gateway will never parse).
        req.extend(std::iter::repeat_n(b'z', 64 * 1024));
        let _ = std::io::Write::write_all(c.stream(), &req);
        let r = c.read_response(false).expect("the 431 arrives");
        assert_eq!(r.status, 431);
        let mut rest = Vec::new();
        let end = std::io::Read::read_to_end(&mut c.reader, &mut rest);
        assert!(
            end.is_ok(),
            "the connection ends with a FIN after the answer, not a reset: {end:?}"
        );
        assert_eq!(rig.backend.requests(), 0);
    }
);
