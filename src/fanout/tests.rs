//! Unit tests of the fan-out: the pure pieces (JSON string encoding, JSON check, call heads,
//! answer head) and, on a real runtime of each driver over real sockets, the call + assembly +
//! write path with the audit hooks proving backend JSON bodies are never copied.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::answer::{is_json, json_string};
use super::*;
use crate::config::{CallConfig, FanoutConfig, PoolConfig, UpstreamConfig};
use crate::http::{self, HeadScanner, Status};
use crate::io::Stream;
use crate::io::{Driver, Runtime};
use crate::upstream::Endpoint;
use crate::upstream::pool::Pool;

fn plan_of(calls: &[(&str, usize, bool)], extra_forward: &[&str]) -> FanoutPlan {
    let cfg = FanoutConfig {
        timeout: Duration::from_secs(2),
        calls: calls
            .iter()
            .map(|&(name, _, required)| {
                let mut c = CallConfig {
                    name: name.into(),
                    upstream: name.into(),
                    path: format!("/{name}"),
                    required,
                    ..CallConfig::default()
                };
                c.forward_headers
                    .extend(extra_forward.iter().map(|h| h.to_string()));
                c
            })
            .collect(),
    };
    let index = |n: &str| calls.iter().find(|c| c.0 == n).map(|c| c.1);
    FanoutPlan::new(&cfg, index).expect("every call names an upstream")
}

fn parse_head(raw: &str) -> RequestHead {
    let mut buf = BytesMut::from(raw.as_bytes());
    match http::parse_request_head(&mut buf, &mut HeadScanner::new(), &Limits::default()) {
        Ok(Status::Complete(h)) => h,
        other => panic!("test head did not parse: {other:?}"),
    }
}

fn group(name: &str, addr: SocketAddr) -> UpstreamGroup {
    let cfg = UpstreamConfig {
        name: name.into(),
        endpoints: vec![Endpoint::Tcp(addr)],
        balance: Default::default(),
        pool: PoolConfig::default(),
        health: Default::default(),
    };
    UpstreamGroup::new(
        &cfg,
        |_| {
            Pool::new(
                Endpoint::Tcp(addr),
                PoolConfig::default(),
                Duration::from_secs(1),
            )
        },
        7,
    )
}

fn groups_unreachable(names: &[&str]) -> Vec<UpstreamGroup> {
    // 127.0.0.1:9 (discard) is not listened on in test environments; these tests never connect.
    names
        .iter()
        .map(|n| group(n, "127.0.0.1:9".parse().unwrap()))
        .collect()
}

#[test]
fn json_string_escapes_and_repairs_utf8() {
    let s = |pieces: &[&[u8]]| {
        let body: Vec<Bytes> = pieces.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        String::from_utf8(json_string(&body).to_vec()).unwrap()
    };
    assert_eq!(s(&[]), r#""""#);
    assert_eq!(s(&[b""]), r#""""#);
    assert_eq!(s(&[b"plain"]), r#""plain""#);
    assert_eq!(s(&[b"a\"b\\c"]), r#""a\"b\\c""#);
    assert_eq!(s(&[b"l1\nl2\r\tx"]), r#""l1\nl2\r\tx""#);
    assert_eq!(s(&[b"\x00\x1f\x7f"]), "\"\\u0000\\u001f\x7f\"");
    assert_eq!(
        s(&[b"caf", b"\xc3", b"\xa9"]),
        "\"caf\u{e9}\"",
        "UTF-8 split over pieces"
    );
    assert_eq!(s(&[b"bad\xff"]), "\"bad\u{fffd}\"");
    // Every output is a JSON string that decodes back to the (repaired) text.
    let back: String = serde_json::from_str(&s(&[b"q\"\\\n\x01\xe2\x82\xac"])).unwrap();
    assert_eq!(back, "q\"\\\n\x01\u{20ac}");
}

#[test]
fn is_json_checks_whole_documents_over_pieces() {
    let p = |pieces: &[&str]| -> Vec<Bytes> {
        pieces
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    };
    assert!(is_json(&p(&[r#"{"a":[1,2,{"b":null}]}"#])));
    assert!(is_json(&p(&[r#"{"a":"#, r#"[1,2"#, "", r#",3]}"#])));
    assert!(is_json(&p(&["  \"s\" \n"])));
    assert!(is_json(&p(&["42"])));
    assert!(!is_json(&p(&["not json"])));
    assert!(!is_json(&p(&[r#"{"a":1}"#, "x"])), "trailing garbage");
    assert!(!is_json(&p(&[r#"{"a":"#])), "truncated");
    assert!(!is_json(&p(&[])), "empty is not a JSON text");
}

#[test]
fn plan_never_forwards_framing_or_its_own_fields() {
    let plan = plan_of(
        &[("a", 0, false)],
        &[
            "Content-Length",
            "transfer-encoding",
            "Host",
            "via",
            "connection",
            "X-Custom",
        ],
    );
    let fwd = &plan.calls[0].forward_headers;
    assert!(fwd.contains(&"x-custom".to_string()), "{fwd:?}");
    assert!(
        fwd.contains(&"accept".to_string()),
        "defaults kept: {fwd:?}"
    );
    for bad in [
        "content-length",
        "transfer-encoding",
        "host",
        "via",
        "connection",
    ] {
        assert!(
            !fwd.contains(&bad.to_string()),
            "{bad} must be dropped: {fwd:?}"
        );
    }
}

#[test]
fn call_heads_carry_query_forwarded_headers_and_proxy_fields() {
    let plan = plan_of(&[("a", 0, false), ("b", 1, false)], &["x-custom"]);
    let groups = groups_unreachable(&["a", "b"]);
    let head = parse_head(concat!(
        "HEAD /page?user=42&x=%20 HTTP/1.1\r\nHost: front\r\nX-Request-Id: r1\r\n",
        "Cookie: c=1\r\nX-Other: no\r\nX-Custom: yes\r\nConnection: x-custom\r\n",
        "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nVia: 1.0 edge\r\n",
        "Content-Length: 0\r\n\r\n",
    ));
    let (reqs, _) = call_requests(
        &plan,
        &head,
        "192.0.2.7".parse().unwrap(),
        &groups,
        BytesMut::new(),
    );
    assert_eq!(reqs.len(), 2);
    let a = std::str::from_utf8(&reqs[0]).unwrap();
    assert_eq!(
        a,
        concat!(
            "GET /a?user=42&x=%20 HTTP/1.1\r\nHost: a\r\nX-Request-Id: r1\r\nCookie: c=1\r\n",
            "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n",
            "Via: 1.0 edge, 1.1 ringway\r\n\r\n"
        ),
        "HEAD becomes GET; X-Custom is named in Connection so it is hop-by-hop"
    );
    let b = std::str::from_utf8(&reqs[1]).unwrap();
    assert!(
        b.starts_with("GET /b?user=42&x=%20 HTTP/1.1\r\nHost: b\r\n"),
        "{b}"
    );
    let plain = parse_head("GET /page HTTP/1.0\r\n\r\n");
    let (reqs, _) = call_requests(
        &plan,
        &plain,
        "127.0.0.1".parse().unwrap(),
        &groups,
        BytesMut::new(),
    );
    let a = std::str::from_utf8(&reqs[0]).unwrap();
    assert_eq!(
        a,
        concat!(
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\n",
            "X-Forwarded-Proto: http\r\nVia: 1.0 ringway\r\n\r\n"
        )
    );
}

#[test]
fn answer_head_lists_every_call_in_order() {
    let plan = plan_of(
        &[
            ("a", 0, false),
            ("b", 0, false),
            ("c", 0, false),
            ("d", 0, true),
            ("e", 0, false),
        ],
        &[],
    );
    let ms = Duration::from_millis;
    let results: Results = smallvec::smallvec![
        Some(Finished {
            result: CallResult::Ok {
                status: 200,
                body: Default::default(),
                json: true,
                buf: BytesMut::new(),
            },
            took: ms(12),
        }),
        Some(Finished {
            result: CallResult::Status(503),
            took: ms(3),
        }),
        Some(Finished {
            result: CallResult::Timeout,
            took: ms(100),
        }),
        Some(Finished {
            result: CallResult::Ok {
                status: 203,
                body: Default::default(),
                json: false,
                buf: BytesMut::new(),
            },
            took: ms(0),
        }),
        None,
    ];
    let mut out = BytesMut::new();
    write_head(
        &mut out,
        200,
        77,
        &plan,
        &results,
        ms(150),
        &["b", "c"],
        ConnAfter::Close,
        crate::http::Version::Http11,
    );
    // The Date field (the current time) comes last; checked for its shape, then compared
    // without it.
    let text = std::str::from_utf8(&out).unwrap();
    let (fields, date) = text.rsplit_once("\r\nDate: ").expect("a Date field");
    assert!(
        date.ends_with(" GMT\r\n\r\n") && date.len() == 29 + 4,
        "{date:?}"
    );
    assert_eq!(
        fields,
        concat!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 77\r\n",
            "Server-Timing: a;dur=12, b;dur=3;desc=\"503\", c;dur=100;desc=\"timeout\", ",
            "d;dur=0;desc=\"203\", e;dur=150;desc=\"cancelled\"\r\n",
            "Ringway-Partial: b, c\r\nConnection: close"
        )
    );
    let (body, partial) = assemble(&plan, &results);
    assert_eq!(partial, ["b", "c", "e"]);
    assert_eq!(
        body.concat(),
        br#"{"a":"","b":null,"c":null,"d":"","e":null}"#
    );
}

/// The real call path, on both drivers.
mod real;
