//! Serialisation and forwarding-rule tests, named by RFC section.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::http::{
    ErrorKind, HeadScanner, Limits, Status, parse_request_head, parse_response_head,
};

fn request(input: &[u8]) -> RequestHead {
    let mut buf = BytesMut::from(input);
    parse_request_head(&mut buf, &mut HeadScanner::new(), &Limits::default())
        .unwrap()
        .complete()
        .unwrap()
}

fn response(input: &[u8], method: Method) -> ResponseHead {
    let mut buf = BytesMut::from(input);
    parse_response_head(
        &mut buf,
        &mut HeadScanner::new(),
        &Limits::default(),
        method,
    )
    .unwrap()
    .complete()
    .unwrap()
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn forward(input: &[u8], fwd: &Forwarded<'_>) -> String {
    let mut out = BytesMut::new();
    write_forward_request_head(&mut out, &request(input), fwd);
    // Whatever we write must parse again.
    let mut again = out.clone();
    assert!(matches!(
        parse_request_head(&mut again, &mut HeadScanner::new(), &Limits::default()),
        Ok(Status::Complete(_))
    ));
    String::from_utf8(out.to_vec()).unwrap()
}

fn forward_response(
    input: &[u8],
    method: Method,
    client: Version,
    keep_alive: bool,
) -> (String, ResponseForward) {
    let mut out = BytesMut::new();
    let decision =
        write_forward_response_head(&mut out, &response(input, method), client, keep_alive, None);
    let mut again = out.clone();
    assert!(matches!(
        parse_response_head(
            &mut again,
            &mut HeadScanner::new(),
            &Limits::default(),
            method
        ),
        Ok(Status::Complete(_))
    ));
    (String::from_utf8(out.to_vec()).unwrap(), decision)
}

#[test]
fn forward_request_adds_forwarding_fields_rfc9110_7_6() {
    let out = forward(
        b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nvia: 1.1 ringway\r\n\r\n"
    );
}

#[test]
fn forward_request_drops_hop_by_hop_rfc9110_7_6_1() {
    let out = forward(
        b"POST /u HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Secret: 1\r\nTransfer-Encoding: chunked\r\nX-Keep: 2\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    let lower = out.to_ascii_lowercase();
    for gone in [
        "connection:",
        "keep-alive:",
        "proxy-connection:",
        "\nte:",
        "upgrade:",
        "x-secret:",
    ] {
        assert!(!lower.contains(gone), "{gone} should be dropped: {out}");
    }
    assert!(out.contains("X-Keep: 2\r\n"));
    assert!(
        out.contains("transfer-encoding: chunked\r\n"),
        "chunked re-emitted: {out}"
    );
}

#[test]
fn forward_request_absolute_form_to_origin_form_rfc9112_3_2_2() {
    let out = forward(
        b"GET http://a.example:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    assert!(
        out.starts_with("GET /p?q HTTP/1.1\r\nhost: a.example:81\r\n"),
        "{out}"
    );
    assert!(!out.contains("other"));
    let out = forward(
        b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
}

#[test]
fn forward_request_merges_xff_and_via_rfc9110_7_6_3() {
    let ip6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let out = forward(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nVia: 1.1 edge\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\nX-Forwarded-Proto: https\r\n\r\n",
        &Forwarded { proto: "http", ..Forwarded::new(ip6, b"up") },
    );
    assert!(
        out.contains("x-forwarded-for: 1.2.3.4, 5.6.7.8, 9.9.9.9, ::1\r\n"),
        "{out}"
    );
    assert!(
        out.contains("x-forwarded-proto: http\r\n") && !out.contains("https"),
        "{out}"
    );
    assert!(out.contains("via: 1.1 edge, 1.1 ringway\r\n"), "{out}");
}

#[test]
fn forward_request_http10_gets_default_host_and_via_1_0_rfc9110_7_6_3() {
    let out = forward(
        b"GET / HTTP/1.0\r\n\r\n",
        &Forwarded::new(CLIENT, b"ads.internal"),
    );
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nhost: ads.internal\r\n"),
        "{out}"
    );
    assert!(out.contains("via: 1.0 ringway\r\n"));
    assert!(
        !out.to_ascii_lowercase().contains("connection"),
        "never Connection: close toward the pool: {out}"
    );
}

#[test]
fn forward_request_content_length_normalised_rfc9112_6_3_5() {
    let out = forward(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    assert!(
        out.contains("content-length: 5\r\n") && !out.contains("5, 5"),
        "{out}"
    );
    let out = forward(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        &Forwarded::new(CLIENT, b"up"),
    );
    assert!(out.contains("content-length: 0\r\n"), "{out}");
}

#[test]
fn forward_request_keeps_codings_rfc9112_6_1() {
    let out = forward(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", &Forwarded::new(CLIENT, b"up"));
    assert!(
        out.contains("transfer-encoding: gzip, chunked\r\n"),
        "{out}"
    );
}

#[test]
fn forward_request_expect_rfc9110_10_1_1() {
    let input = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    assert!(forward(input, &Forwarded::new(CLIENT, b"up")).contains("Expect: 100-continue\r\n"));
    let answered = Forwarded {
        answered_continue: true,
        ..Forwarded::new(CLIENT, b"up")
    };
    assert!(!forward(input, &answered).contains("Expect"));
}

#[test]
fn forward_request_tunnel_keeps_upgrade_rfc9110_7_8() {
    let input = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let out = forward(
        input,
        &Forwarded {
            tunnel: true,
            ..Forwarded::new(CLIENT, b"up")
        },
    );
    assert!(
        out.contains("Upgrade: websocket\r\n") && out.contains("connection: upgrade\r\n"),
        "{out}"
    );
    let out = forward(input, &Forwarded::new(CLIENT, b"up"));
    assert!(!out.contains("websocket"), "{out}");
}

#[test]
fn forward_response_content_length_keep_alive_rfc9112_9_3() {
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-A: b\r\ncontent-length: 2\r\nvia: 1.1 ringway\r\n\r\n"
    );
    assert_eq!(
        d,
        ResponseForward {
            body: BodyMode::Raw,
            client_conn: ConnAfter::KeepAlive
        }
    );
}

#[test]
fn forward_response_close_when_not_keeping_rfc9112_9_6() {
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        Method::Get,
        Version::Http11,
        false,
    );
    assert!(out.contains("connection: close\r\n"));
    assert_eq!(d.client_conn, ConnAfter::Close);
}

#[test]
fn forward_response_http10_keep_alive_rfc9112_9_3() {
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        Method::Get,
        Version::Http10,
        true,
    );
    assert!(out.contains("connection: keep-alive\r\n"));
    assert_eq!(d.client_conn, ConnAfter::KeepAlive);
}

#[test]
fn forward_response_never_chunked_to_http10_rfc9112_7_1() {
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::Get,
        Version::Http10,
        true,
    );
    assert!(
        !out.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(out.contains("connection: close\r\n"));
    assert_eq!(
        d,
        ResponseForward {
            body: BodyMode::Decoded,
            client_conn: ConnAfter::Close
        }
    );
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(out.contains("transfer-encoding: chunked\r\n"));
    assert_eq!(
        d,
        ResponseForward {
            body: BodyMode::Raw,
            client_conn: ConnAfter::KeepAlive
        }
    );
}

#[test]
fn forward_response_until_close_rfc9112_6_3_8() {
    let (out, d) = forward_response(
        b"HTTP/1.0 200 OK\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(
        out.contains("connection: close\r\n") && out.contains("via: 1.0 ringway\r\n"),
        "{out}"
    );
    assert_eq!(
        d,
        ResponseForward {
            body: BodyMode::Raw,
            client_conn: ConnAfter::Close
        }
    );
}

#[test]
fn forward_response_head_and_304_keep_length_rfc9110_8_6() {
    let (out, d) = forward_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        Method::Head,
        Version::Http11,
        true,
    );
    assert!(out.contains("content-length: 99\r\n"));
    assert_eq!(d.body, BodyMode::None);
    let (out, _) = forward_response(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(out.contains("content-length: 99\r\n"));
    let (out, _) = forward_response(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(!out.contains("content-length"), "{out}");
}

#[test]
fn forward_response_drops_connection_named_rfc9110_7_6_1() {
    let (out, _) = forward_response(
        b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nContent-Length: 0\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(
        !out.contains("X-Internal") && !out.contains("Connection"),
        "{out}"
    );
}

#[test]
fn forward_response_101_and_100_rfc9110_15_2() {
    let (out, d) = forward_response(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        Method::Get,
        Version::Http11,
        true,
    );
    assert!(
        out.contains("Upgrade: websocket\r\n") && out.contains("connection: upgrade\r\n"),
        "{out}"
    );
    assert_eq!(d.client_conn, ConnAfter::Close);
    let (out, _) = forward_response(
        b"HTTP/1.1 100 Continue\r\n\r\n",
        Method::Post,
        Version::Http11,
        false,
    );
    assert_eq!(out, "HTTP/1.1 100 Continue\r\nvia: 1.1 ringway\r\n\r\n");
}

#[test]
fn head_writer_builds_heads() {
    let mut out = BytesMut::new();
    HeadWriter::new(&mut out)
        .request_line(b"GET", b"/ads/slots", Some(b"u=1"))
        .header(b"host", b"ads")
        .header_u64(b"content-length", 0)
        .header_u64(b"x-max", u64::MAX)
        .end();
    assert_eq!(&out[..], b"GET /ads/slots?u=1 HTTP/1.1\r\nhost: ads\r\ncontent-length: 0\r\nx-max: 18446744073709551615\r\n\r\n");
    out.clear();
    HeadWriter::new(&mut out)
        .status_line(Version::Http11, 502, b"Bad Gateway")
        .header_u64(b"content-length", 1234)
        .end();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 1234\r\n\r\n"
    );
}

#[test]
fn forward_request_sends_the_normalized_path_rfc3986_6_2_2() {
    for target in [
        &b"/public/../admin?x=%2e%2E"[..],
        b"/public/%2e%2e/admin?x=%2e%2E",
        b"/%61dmin?x=%2e%2E",
        b"//admin?x=%2e%2E",
        b"http://h//public/./../%61dmin?x=%2e%2E",
    ] {
        let mut input = b"GET ".to_vec();
        input.extend_from_slice(target);
        input.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
        let out = forward(&input, &Forwarded::new(CLIENT, b"up"));
        // The query is left as sent.
        assert!(
            out.starts_with("GET /admin?x=%2e%2E HTTP/1.1\r\n"),
            "{:?} forwarded as {out}",
            String::from_utf8_lossy(target)
        );
    }
}

#[test]
fn coded_body_not_deliverable_to_http10_rfc9112_6_1() {
    let cases: [(&[u8], Version, bool); 7] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Version::Http10,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            Version::Http10,
            false,
        ),
        // Until close, coded.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Version::Http10,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Version::Http11,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Version::Http10,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            Version::Http10,
            true,
        ),
        // No body: nothing coded reaches the client.
        (
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Version::Http10,
            true,
        ),
    ];
    for (input, client, ok) in cases {
        let got = check_codings_deliverable(&response(input, Method::Get), client);
        assert_eq!(
            got.is_ok(),
            ok,
            "{:?} to {client:?}: {got:?}",
            String::from_utf8_lossy(input)
        );
        if let Err(e) = got {
            assert_eq!(
                (e.kind(), e.status()),
                (ErrorKind::CodingNotDeliverable, 502)
            );
        }
    }
}

#[test]
fn put_ip_writes_what_display_writes() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "192.168.0.9",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.0.0.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut out = BytesMut::new();
        put_ip(&mut out, ip);
        assert_eq!(&out[..], ip.to_string().as_bytes());
    }
}
