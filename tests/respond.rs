//! Routes the gateway answers itself (`respond = { ... }`), end to end on both drivers: exact
//! bytes, HEAD, keep-alive, pipelining, request bodies read and dropped, HTTP/1.0, metrics.
//! No backend exists in these configs: every answer comes from the gateway.

mod common;

use ringway::both_drivers;

use std::io::Read;
use std::time::Duration;

use common::gateway::{Client, Gateway, preamble};

const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
const HELLO_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n";
const HELLO_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";

/// One shard, `max_body_bytes = 1024`, three respond routes and no upstream at all.
fn start(driver: &str) -> Gateway {
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(concat!(
        "[limits]\nmax_body_bytes = 1024\n\n",
        "[[route]]\npath_prefix = \"/hello\"\n",
        "respond = { status = 200, body = \"hello\\n\", content_type = \"text/plain\" }\n\n",
        "[[route]]\npath_prefix = \"/empty\"\n[route.respond]\nstatus = 204\n\n",
        "[[route]]\npath_prefix = \"/teapot\"\nmethods = [\"GET\"]\n",
        "respond = { status = 418, body = \"{\\\"short\\\":true}\", content_type = \"application/json\" }\n",
    ));
    Gateway::start(&cfg, addr, admin)
}

/// `Date: Sun, 06 Nov 1994 08:49:37 GMT` CRLF: what every final response carries as its last
/// field (RFC 9110 §6.6.1), so the bytes `want` lists without it arrive with it.
const DATE_LINE_LEN: usize = 6 + 29 + 2;

/// Reads exactly `want.len()` bytes, plus the `Date` field of a final response (checked, then
/// taken out), and compares them with `want`.
fn expect_bytes(c: &mut Client, want: &[u8], what: &str) {
    let interim = want.starts_with(b"HTTP/1.1 1");
    let dated = if interim { 0 } else { DATE_LINE_LEN };
    let mut got = vec![0u8; want.len() + dated];
    c.reader
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{what}: expected {} bytes, read failed: {e}", want.len()));
    if !interim {
        // The Date field is the last one: just before the blank line ending the head.
        let end = want
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 2;
        let line = &got[end..end + DATE_LINE_LEN];
        assert!(
            line.starts_with(b"Date: ") && line.ends_with(b" GMT\r\n"),
            "{what}: no Date field where expected: {}",
            String::from_utf8_lossy(&got)
        );
        got.drain(end..end + DATE_LINE_LEN);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "{what}"
    );
}

/// Nothing more than what was expected arrives (the connection is open and quiet).
fn expect_quiet(c: &mut Client, what: &str) {
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    match c.reader.read(&mut b) {
        Ok(0) => panic!("{what}: the gateway closed the connection"),
        Ok(_) => panic!(
            "{what}: unexpected byte {:?} after the response",
            b[0] as char
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{what}: {e}"
        ),
    }
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
const HEAD: &[u8] = b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n";

both_drivers!(get_and_head_are_exact_bytes, |driver: &str| {
    let gw = start(driver);
    let mut c = Client::connect(gw.addr);
    c.send(GET);
    expect_bytes(&mut c, HELLO, "GET");
    // HEAD: the GET's head, same Content-Length, no body: the next response starts right after.
    c.send(HEAD);
    expect_bytes(&mut c, HELLO_HEAD, "HEAD");
    expect_quiet(&mut c, "after HEAD");
    c.send(GET);
    expect_bytes(&mut c, HELLO, "GET after HEAD");

    // Any path under the prefix, a query string, another status and content type.
    c.send(b"GET /teapot/x?y=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_bytes(
        &mut c,
        b"HTTP/1.1 418 Unknown\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"short\":true}",
        "418",
    );
    // 204: no content fields at all (RFC 9110 §8.6), and nothing after the head.
    c.send(b"GET /empty HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_bytes(&mut c, b"HTTP/1.1 204 No Content\r\n\r\n", "204");
    expect_quiet(&mut c, "after 204");
    // The method filter still applies: a POST to /teapot matches nothing.
    let r = {
        c.send(b"POST /teapot HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        c.read_response(false).unwrap()
    };
    assert_eq!(r.status, 404, "{r:?}");
});

both_drivers!(keepalive_and_pipelining, |driver: &str| {
    let gw = start(driver);
    let mut c = Client::connect(gw.addr);
    for i in 0..50 {
        c.send(GET);
        expect_bytes(&mut c, HELLO, &format!("request {i} on one connection"));
    }
    // Twenty requests in one write, GET and HEAD mixed: answered in order, byte for byte.
    let mut batch = Vec::new();
    let mut want: Vec<&[u8]> = Vec::new();
    for i in 0..20 {
        let (req, resp) = if i % 3 == 1 {
            (HEAD, HELLO_HEAD)
        } else {
            (GET, HELLO)
        };
        batch.extend_from_slice(req);
        want.push(resp);
    }
    c.send(&batch);
    for (i, w) in want.iter().enumerate() {
        expect_bytes(&mut c, w, &format!("pipelined request {i} of 20"));
    }
    expect_quiet(&mut c, "after the pipelined batch");
    // The last request of a pipeline asks to close: its answer says so and the connection ends.
    let mut last = batch.clone();
    last.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    want.push(HELLO_CLOSE);
    c.send(&last);
    for (i, w) in want.iter().enumerate() {
        expect_bytes(
            &mut c,
            w,
            &format!("request {i} of a batch ending in Connection: close"),
        );
    }
    assert!(
        c.is_closed(Duration::from_secs(2)),
        "closed after Connection: close"
    );
});

both_drivers!(request_bodies_are_read_and_dropped, |driver: &str| {
    let gw = start(driver);
    let mut c = Client::connect(gw.addr);
    // Content-Length body, in the same write as the head: dropped, the connection stays usable.
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    expect_bytes(&mut c, HELLO, "POST with a body");
    c.send(GET);
    expect_bytes(&mut c, HELLO, "GET after the POST");
    // A body arriving in pieces after the head, then a pipelined GET behind it.
    c.send(b"PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 600\r\n\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(&[b'x'; 300]);
    std::thread::sleep(Duration::from_millis(50));
    let mut rest = vec![b'y'; 300];
    rest.extend_from_slice(GET);
    c.send(&rest);
    expect_bytes(&mut c, HELLO, "PUT with a slow body");
    expect_bytes(&mut c, HELLO, "GET pipelined behind the body");
    // Chunked body, trailer section included.
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    expect_bytes(&mut c, HELLO, "chunked POST");
    // Expect: 100-continue: the gateway asks for the body, then answers.
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    expect_bytes(&mut c, b"HTTP/1.1 100 Continue\r\n\r\n", "100 Continue");
    c.send(b"data");
    expect_bytes(&mut c, HELLO, "after 100 Continue");
    // HEAD with a body: the body is dropped too, and HEAD still gets no body.
    c.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    expect_bytes(&mut c, HELLO_HEAD, "HEAD with a body");
    c.send(GET);
    expect_bytes(&mut c, HELLO, "GET after HEAD with a body");
    expect_quiet(&mut c, "after the bodies");

    // Over max_body_bytes (1024): 413 before any of it is read, then close.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    let r = c.read_response(false).expect("413");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    // Chunked over the limit: found while reading, also 413 and close.
    let mut c = Client::connect(gw.addr);
    let mut big = b"POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        big.extend_from_slice(b"200\r\n");
        big.extend_from_slice(&[b'z'; 0x200]);
        big.extend_from_slice(b"\r\n");
    }
    c.send(&big);
    let r = c.read_response(false).expect("413 for chunked");
    assert_eq!(r.status, 413, "{r:?}");
    assert!(c.is_closed(Duration::from_secs(4)), "closed after 413");
    // Broken chunked framing: 400, then close.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let r = c.read_response(false).expect("400");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
});

both_drivers!(http10_clients, |driver: &str| {
    let gw = start(driver);
    // HTTP/1.0 without keep-alive: Connection: close, then the gateway closes.
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /hello HTTP/1.0\r\n\r\n");
    expect_bytes(&mut c, HELLO_CLOSE, "HTTP/1.0");
    assert!(c.is_closed(Duration::from_secs(2)), "1.0 closes");
    // HTTP/1.0 asking for keep-alive gets it, said explicitly (1.0 assumes close otherwise).
    let mut c = Client::connect(gw.addr);
    for i in 0..3 {
        c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        expect_bytes(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n",
            &format!("HTTP/1.0 keep-alive request {i}"),
        );
    }
    expect_quiet(&mut c, "1.0 keep-alive stays open");
});

both_drivers!(counted_in_requests_total, |driver: &str| {
    let gw = start(driver);
    let mut c = Client::connect(gw.addr);
    for _ in 0..7 {
        c.send(GET);
        expect_bytes(&mut c, HELLO, "GET");
    }
    c.send(HEAD);
    expect_bytes(&mut c, HELLO_HEAD, "HEAD");
    for _ in 0..2 {
        c.send(b"GET /empty/a HTTP/1.1\r\nHost: t\r\n\r\n");
        expect_bytes(&mut c, b"HTTP/1.1 204 No Content\r\n\r\n", "204");
    }
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 413);
    // Counted after the response is written: wait for the scrape to catch up (bounded).
    let series = [
        (
            "ringway_requests_total{route=\"/hello\",status=\"200\"}",
            8.0,
        ),
        (
            "ringway_requests_total{route=\"/empty\",status=\"204\"}",
            2.0,
        ),
        (
            "ringway_requests_total{route=\"/hello\",status=\"413\"}",
            1.0,
        ),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for (name, want) in series {
        loop {
            let got = gw.metric(name);
            if got == Some(want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: expected {want}, got {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // No backend was involved: not a single upstream series exists.
    let (_, metrics) = gw.admin_get("/metrics");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("ringway_upstream_requests_total{")),
        "no upstream traffic expected:\n{metrics}"
    );
});
