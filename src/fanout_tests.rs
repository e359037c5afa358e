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
use crate::http::{HeadScanner, Status};
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
    let reqs = call_requests(&plan, &head, "192.0.2.7".parse().unwrap(), &groups);
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
    let reqs = call_requests(&plan, &plain, "127.0.0.1".parse().unwrap(), &groups);
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
    let results: Results = vec![
        Some(Finished {
            result: CallResult::Ok {
                status: 200,
                body: vec![],
                json: true,
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
                body: vec![],
                json: false,
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

// ---- the real call path, on both drivers ----

/// A keepalive backend on 127.0.0.1 answering every request with `response` (bounded: at most
/// `conns` connections, each served until the peer closes).
fn backend(response: Vec<u8>, conns: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let Ok(mut s) = s else { continue };
            let response = response.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(&response).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn content_length_response(ct: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked_response(ct: &str, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for piece in body.chunks(chunk) {
        r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        r.extend_from_slice(piece);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn runtime(driver: Driver) -> Runtime {
    Runtime::new(driver, &Default::default())
        .unwrap_or_else(|e| panic!("{driver} runtime for the fan-out unit test: {e}"))
}

fn inside(piece: &Range<usize>, reads: &[Range<usize>]) -> bool {
    reads
        .iter()
        .any(|r| r.start <= piece.start && piece.end <= r.end)
}

/// What [`run_fanout`] saw: the bytes received, the call results, the audit's read-buffer ranges
/// and the answer body's piece ranges.
type Run = (Vec<u8>, Results, Vec<Range<usize>>, Vec<Range<usize>>);

/// Runs `plan` over `groups` for `head` on a real runtime, writes the answer to one end of a
/// socketpair, and returns what the other end received plus the audit records.
fn run_fanout(
    rt: &Runtime,
    plan: &FanoutPlan,
    groups: &[UpstreamGroup],
    head: &RequestHead,
) -> Run {
    crate::audit::reset();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut theirs = theirs;
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let _ = theirs.read_to_end(&mut got);
        got
    });
    let results = rt.block_on(async {
        let mut stream = Stream::from_std_unix(ours).unwrap();
        let reqs = call_requests(plan, head, "127.0.0.1".parse().unwrap(), groups);
        let deadline = Instant::now() + plan.timeout;
        let Gathered::Done { results, .. } =
            gather(plan, groups, reqs, Limits::default(), deadline, || false).await
        else {
            panic!("the client cannot be gone here");
        };
        let (body, _) = assemble(plan, &results);
        let written_ptrs: Vec<usize> = body.iter().map(|b| b.as_ptr() as usize).collect();
        write_answer(
            &mut stream,
            Bytes::new(),
            body,
            false,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        // The write hook saw exactly the assembled pieces (empty ones are skipped on the wire).
        let seen: Vec<usize> = crate::audit::writes().iter().map(|r| r.start).collect();
        assert_eq!(seen, written_ptrs);
        results
    });
    let got = reader.join().unwrap();
    let reads = crate::audit::reads();
    let written = crate::audit::writes();
    (got, results, reads, written)
}

fn zero_copy_assembly(driver: Driver) {
    // a: 40 KB JSON with Content-Length (several reads); b: chunked JSON; c: text, escaped.
    let a_body = format!("{{\"pad\":\"{}\"}}", "x".repeat(40_000)).into_bytes();
    let b_body = br#"{"items":[1,2,3,4,5,6,7,8,9,10],"ok":true}"#.to_vec();
    let c_body = b"say \"hi\"\n".to_vec();
    let addrs = [
        backend(content_length_response("application/json", &a_body), 4),
        backend(
            chunked_response("application/json; charset=utf-8", &b_body, 9),
            4,
        ),
        backend(content_length_response("text/plain", &c_body), 4),
    ];
    let groups: Vec<UpstreamGroup> = ["a", "b", "c"]
        .iter()
        .zip(addrs)
        .map(|(n, a)| group(n, a))
        .collect();
    let plan = plan_of(&[("a", 0, true), ("b", 1, false), ("c", 2, false)], &[]);
    let head = parse_head("GET /page?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    // One runtime for both rounds, as on a shard: a pooled connection belongs to its runtime.
    let rt = runtime(driver);
    for round in 0..2 {
        let (got, results, reads, written) = run_fanout(&rt, &plan, &groups, &head);
        let doc: serde_json::Value = serde_json::from_slice(&got)
            .unwrap_or_else(|e| panic!("{driver}: answer is not JSON ({e}): {:?}", &got[..200]));
        assert_eq!(doc["a"]["pad"].as_str().map(str::len), Some(40_000));
        assert_eq!(doc["b"]["items"][9], 10);
        assert_eq!(doc["c"], "say \"hi\"\n");
        let text = String::from_utf8(got.clone()).unwrap();
        assert!(text.starts_with("{\"a\":{\"pad\"") && text.contains(",\"b\":{\"items\""));
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().is_some_and(|f| f.result.is_ok()))
        );

        // Zero copy: the answer pieces holding backend bytes lie inside the read buffers.
        let from_reads: usize = written
            .iter()
            .filter(|p| inside(p, &reads))
            .map(|p| p.len())
            .sum();
        assert_eq!(
            from_reads,
            a_body.len() + b_body.len(),
            "{driver} round {round}: every JSON body byte is written from the buffer it was read \
             into (written {written:x?}, reads {reads:x?})"
        );
        assert!(
            written.len() > 3 + 9,
            "{driver}: the 40 KB body arrived in several reads and the chunked one in several \
             chunks, each its own piece: {} pieces",
            written.len()
        );
        // The escaped text body is the one copy: it lies outside every read buffer.
        let escaped = written
            .iter()
            .filter(|p| p.len() == json_string(&[Bytes::from(c_body.clone())]).len())
            .filter(|p| !inside(p, &reads))
            .count();
        assert_eq!(
            escaped, 1,
            "{driver}: the text body was escaped into its own buffer"
        );
    }
    // Both rounds ran over the same three connections: clean calls return to their pools.
    for g in &groups {
        let pool = &g.members()[0].pool;
        assert_eq!(
            (pool.opened_total(), pool.idle_count()),
            (1, 1),
            "{driver}: {} reuses one pooled connection",
            g.name
        );
    }
}

fn many_pieces_are_written_in_batches(driver: Driver) {
    // 1,500 two-byte chunks: more pieces than one writev takes (UIO_MAXIOV 1024).
    let body = format!("\"{}\"", "ab".repeat(1_499)).into_bytes();
    let addr = backend(chunked_response("application/json", &body, 2), 2);
    let groups = vec![group("a", addr)];
    let plan = plan_of(&[("a", 0, true)], &[]);
    let head = parse_head("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    let (got, _, reads, written) = run_fanout(&runtime(driver), &plan, &groups, &head);
    let mut want = b"{\"a\":".to_vec();
    want.extend_from_slice(&body);
    want.push(b'}');
    assert_eq!(got.len(), want.len(), "{driver}: whole answer delivered");
    assert!(got == want, "{driver}: answer bytes differ");
    assert!(written.len() > MAX_IOVECS * 2, "{} pieces", written.len());
    assert!(written.iter().filter(|p| inside(p, &reads)).count() >= 1_500);
}

fn unreachable_optional_is_null_and_required_cancels(driver: Driver) {
    // Bound but never listening: connections are refused, and the port stays ours (a released
    // port could go to another test's backend meanwhile).
    let dead_socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    dead_socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let dead = dead_socket.local_addr().unwrap().as_socket().unwrap();
    let ok = backend(content_length_response("application/json", b"{}"), 2);
    let groups = vec![group("up", ok), group("down", dead)];
    let plan = plan_of(&[("up", 0, false), ("down", 1, false)], &[]);
    let head = parse_head("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    let rt = runtime(driver);
    let (got, results, _, _) = run_fanout(&rt, &plan, &groups, &head);
    assert_eq!(got, br#"{"up":{},"down":null}"#);
    assert!(matches!(
        results[1].as_ref().map(|f| &f.result),
        Some(CallResult::Error)
    ));
    // Required and down: the request fails at once, and the slow optional call is cancelled.
    let slow_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = slow_l.local_addr().unwrap();
    let groups = vec![group("slow", slow), group("down", dead)];
    let plan = plan_of(&[("slow", 0, false), ("down", 1, true)], &[]);
    let t0 = Instant::now();
    let gathered = rt.block_on(gather(
        &plan,
        &groups,
        call_requests(&plan, &head, "127.0.0.1".parse().unwrap(), &groups),
        Limits::default(),
        Instant::now() + plan.timeout,
        || false,
    ));
    let Gathered::Done {
        results,
        failed_required,
    } = gathered
    else {
        panic!("not gone")
    };
    assert_eq!(failed_required, Some(1));
    assert!(results[0].is_none(), "the slow call was cancelled");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let pool = &groups[0].members()[0].pool;
    assert_eq!(
        (pool.open_count(), pool.idle_count()),
        (0, 0),
        "{driver}: the cancelled call's connection was closed, not pooled"
    );
    drop((slow_l, dead_socket));
}

fn gone_client_cancels_every_call(driver: Driver) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let groups = vec![group("a", l.local_addr().unwrap())];
    let plan = plan_of(&[("a", 0, true)], &[]);
    let head = parse_head("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    let rt = runtime(driver);
    let t0 = Instant::now();
    let gathered = rt.block_on(async {
        gather(
            &plan,
            &groups,
            call_requests(&plan, &head, "127.0.0.1".parse().unwrap(), &groups),
            Limits::default(),
            Instant::now() + plan.timeout,
            // The client "hangs up" after 100 ms; gather must notice at its next check.
            || t0.elapsed() >= Duration::from_millis(100),
        )
        .await
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(500),
        "{driver}: noticed after {took:?}"
    );
    assert!(matches!(gathered, Gathered::ClientGone(ref r) if r[0].is_none()));
    let pool = &groups[0].members()[0].pool;
    assert_eq!((pool.open_count(), pool.idle_count()), (0, 0), "{driver}");
    drop(l);
}

macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn uring() {
                super::$name(crate::io::Driver::Uring);
            }
            #[test]
            fn epoll() {
                super::$name(crate::io::Driver::Epoll);
            }
        })*
    };
}

on_both_drivers!(
    zero_copy_assembly,
    many_pieces_are_written_in_batches,
    unreachable_optional_is_null_and_required_cancels,
    gone_client_cancels_every_call,
);

/// The escaping of the old implementation (concatenate, decode lossily, escape): the reference
/// for the piece-by-piece one.
fn json_string_concatenated(body: &[Bytes]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&body.concat()).into_owned();
    serde_json::to_vec(&text).unwrap()
}

proptest::proptest! {
    /// Any bytes cut into any pieces escape to the same JSON string as the whole body decoded
    /// at once; and the result is valid JSON.
    #[test]
    fn json_string_over_pieces_is_the_whole_decoded(
        bytes in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                proptest::prelude::Just(0xe2u8),
                proptest::prelude::Just(0x82u8),
                proptest::prelude::Just(0xacu8),
                proptest::prelude::Just(0xf0u8),
                proptest::prelude::Just(0x9fu8),
                proptest::prelude::Just(b'"'),
            ],
            0..40,
        ),
        cuts in proptest::collection::vec(0usize..41, 0..5),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(Bytes::copy_from_slice(&bytes[at..c]));
            at = c;
        }
        pieces.push(Bytes::copy_from_slice(&bytes[at..]));
        let ours = json_string(&pieces);
        let want: String = serde_json::from_slice(&json_string_concatenated(&pieces)).unwrap();
        let got: String = serde_json::from_slice(&ours)
            .unwrap_or_else(|e| panic!("not a JSON string ({e}): {:?}", String::from_utf8_lossy(&ours)));
        proptest::prop_assert_eq!(got, want);
    }
}
