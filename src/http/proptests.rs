//! Whole-codec tests: shotgun (every split of every valid input gives the same result), property
//! round trips and a no-panic random-input test, all on the stable toolchain.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const VALID_REQUESTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\nGET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-Empty:\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: x \t y\r\n\r\n",
];

const VALID_RESPONSES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
    b"HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=3\r\n\r\n0\r\n\r\n",
];

fn parse_req(buf: &mut BytesMut, scan: &mut HeadScanner) -> Result<Status<RequestHead>, HttpError> {
    parse_request_head(buf, scan, &Limits::default())
}

fn parse_res(
    buf: &mut BytesMut,
    scan: &mut HeadScanner,
) -> Result<Status<ResponseHead>, HttpError> {
    parse_response_head(buf, scan, &Limits::default(), Method::Get)
}

/// Feeds `input` split at `at` (two reads); returns the head and what stayed in the buffer.
fn two_reads<T: std::fmt::Debug>(
    input: &[u8],
    at: usize,
    parse: impl Fn(&mut BytesMut, &mut HeadScanner) -> Result<Status<T>, HttpError>,
) -> (T, BytesMut) {
    let mut buf = BytesMut::from(&input[..at]);
    let mut scan = HeadScanner::new();
    if let Status::Complete(h) = parse(&mut buf, &mut scan).unwrap() {
        buf.extend_from_slice(&input[at..]);
        return (h, buf);
    }
    buf.extend_from_slice(&input[at..]);
    let h = parse(&mut buf, &mut scan)
        .unwrap()
        .complete()
        .expect("complete after all bytes");
    (h, buf)
}

fn head_len(input: &[u8]) -> usize {
    input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

#[test]
fn shotgun_requests_every_split_and_byte_by_byte() {
    for input in VALID_REQUESTS {
        let (whole, rest) = two_reads(input, input.len(), parse_req);
        for at in 0..=input.len() {
            let (h, r) = two_reads(input, at, parse_req);
            assert_eq!(
                h,
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(r, rest);
        }
        // Byte by byte: Partial until the head's last byte, then the same head.
        let end = head_len(input);
        let mut buf = BytesMut::new();
        let mut scan = HeadScanner::new();
        for (i, &b) in input[..end].iter().enumerate() {
            buf.extend_from_slice(&[b]);
            match parse_req(&mut buf, &mut scan).unwrap() {
                Status::Partial => assert!(i + 1 < end, "Partial after the whole head"),
                Status::Complete(h) => {
                    assert_eq!(i + 1, end, "Complete before the head ended");
                    assert_eq!(h, whole);
                }
            }
        }
        // Every strict prefix, parsed fresh, is Partial.
        for at in 0..end {
            let mut buf = BytesMut::from(&input[..at]);
            assert_eq!(
                parse_req(&mut buf, &mut HeadScanner::new()).unwrap(),
                Status::Partial,
                "prefix {at}"
            );
        }
    }
}

#[test]
fn shotgun_responses_every_split_and_byte_by_byte() {
    for input in VALID_RESPONSES {
        let (whole, rest) = two_reads(input, input.len(), parse_res);
        for at in 0..=input.len() {
            let (h, r) = two_reads(input, at, parse_res);
            assert_eq!(h.as_bytes(), whole.as_bytes(), "split at {at}");
            assert_eq!(
                (h.status(), h.framing(), h.keep_alive()),
                (whole.status(), whole.framing(), whole.keep_alive())
            );
            assert_eq!(r, rest);
        }
        let end = head_len(input);
        let mut buf = BytesMut::new();
        let mut scan = HeadScanner::new();
        for (i, &b) in input[..end].iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let done = parse_res(&mut buf, &mut scan).unwrap().is_complete();
            assert_eq!(done, i + 1 == end, "byte {i}");
        }
        for at in 0..end {
            let mut buf = BytesMut::from(&input[..at]);
            assert!(
                !parse_res(&mut buf, &mut HeadScanner::new())
                    .unwrap()
                    .is_complete(),
                "prefix {at}"
            );
        }
    }
}

/// Re-serialises a parsed request head field by field.
fn reserialise(h: &RequestHead) -> BytesMut {
    let mut out = BytesMut::new();
    let mut w = HeadWriter::new(&mut out);
    w.request_line(h.method_bytes(), h.target(), None);
    for (name, value) in h.headers() {
        w.header(name, value);
    }
    w.end();
    if h.version() == Version::Http10 {
        let line_end = out.iter().position(|&b| b == b'\r').unwrap();
        out[line_end - 1] = b'0';
    }
    out
}

fn assert_same(a: &RequestHead, b: &RequestHead) {
    assert_eq!(a.method_bytes(), b.method_bytes());
    assert_eq!(a.target(), b.target());
    assert_eq!(
        (a.path(), a.query(), a.host()),
        (b.path(), b.query(), b.host())
    );
    assert_eq!(a.version(), b.version());
    assert_eq!(
        a.headers().collect::<Vec<_>>(),
        b.headers().collect::<Vec<_>>()
    );
    assert_eq!(
        (
            a.framing(),
            a.keep_alive(),
            a.expects_continue(),
            a.upgrade()
        ),
        (
            b.framing(),
            b.keep_alive(),
            b.expects_continue(),
            b.upgrade()
        )
    );
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("DELETE".to_string()),
        "[A-Z]{1,8}"
    ];
    // Well-formed %-encodings (none of them `%2F`/`%5C`), no segment of dots alone: every
    // generated path normalizes without error.
    let path = "(/([A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]{0,7})?(%[3467][0-9A-Fa-f])?){1,4}";
    let query = proptest::option::of("[A-Za-z0-9=&/?%-]{0,12}");
    let version = prop_oneof![Just("1.1"), Just("1.0")];
    let field = (token(), "[ -~\t]{0,16}");
    let special = prop_oneof![
        Just(String::new()),
        Just("Content-Length: 12\r\n".to_string()),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
        Just("Connection: close\r\n".to_string()),
        Just("Connection: upgrade\r\nUpgrade: h2c\r\n".to_string()),
        Just("Expect: 100-continue\r\n".to_string()),
    ];
    (
        method,
        path,
        query,
        version,
        proptest::collection::vec(field, 0..8),
        special,
    )
        .prop_map(|(m, p, q, v, fields, special)| {
            let mut s = format!("{m} {p}");
            if let Some(q) = q {
                s.push('?');
                s.push_str(&q);
            }
            s.push_str(&format!(" HTTP/{v}\r\nHost: h.example\r\n"));
            for (name, value) in fields {
                s.push_str(&format!("X-{name}: {value}\r\n"));
            }
            if v == "1.1" || !special.contains("Transfer") {
                s.push_str(&special);
            }
            s.push_str("\r\n");
            s.into_bytes()
        })
}

/// Mixes valid heads with hostile bytes: most inputs are near-valid, so deep paths get reached.
fn mutated(valid: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..valid.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4),
    )
        .prop_map(move |(i, edits)| {
            let mut v = valid[i].to_vec();
            for (at, byte, op) in edits {
                let pos = at.index(v.len() + 1);
                match op {
                    0 if pos < v.len() => v[pos] = byte,
                    1 => v.insert(pos, byte),
                    _ if pos < v.len() => {
                        v.remove(pos);
                    }
                    _ => {}
                }
            }
            v
        })
}

/// Delivers `input` in pieces sized by `cuts`, then byte-at-a-time for the rest.
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    for &c in cuts {
        let n = c.min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out.extend(rest.chunks(1));
    out
}

proptest! {
    #[test]
    fn generated_requests_parse_and_round_trip(input in request_strategy()) {
        let mut buf = BytesMut::from(&input[..]);
        let h = parse_req(&mut buf, &mut HeadScanner::new()).unwrap().complete().unwrap();
        let mut again = reserialise(&h);
        let h2 = parse_req(&mut again, &mut HeadScanner::new()).unwrap().complete().unwrap();
        assert_same(&h, &h2);
    }

    #[test]
    fn anything_accepted_round_trips(input in prop_oneof![mutated(VALID_REQUESTS), request_strategy()]) {
        let mut buf = BytesMut::from(&input[..]);
        if let Ok(Status::Complete(h)) = parse_req(&mut buf, &mut HeadScanner::new()) {
            let mut again = reserialise(&h);
            let h2 = parse_req(&mut again, &mut HeadScanner::new()).unwrap().complete().unwrap();
            assert_same(&h, &h2);
            // The forwarded head parses too.
            let mut out = BytesMut::new();
            write_forward_request_head(&mut out, &h, &Forwarded::new(std::net::Ipv4Addr::LOCALHOST.into(), b"up"));
            prop_assert!(parse_req(&mut out, &mut HeadScanner::new()).unwrap().is_complete());
        }
    }

    #[test]
    fn chunked_encode_decode_identity(
        data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        cuts in proptest::collection::vec(0usize..40, 0..12),
    ) {
        let mut wire = Vec::new();
        let mut enc = ChunkedEncoder::new();
        for d in &data {
            enc.chunk(&Bytes::copy_from_slice(d), &mut wire);
        }
        enc.finish(&mut wire);
        let wire: Vec<u8> = wire.iter().flat_map(|b| b.iter().copied()).collect();
        let expected: Vec<u8> = data.concat();
        for raw in [false, true] {
            let mut dec = BodyDecoder::new(BodyFraming::Chunked);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in pieces(&wire, &cuts) {
                buf.extend_from_slice(piece);
                while let Some(b) = if raw { dec.next_raw(&mut buf).unwrap() } else { dec.next_data(&mut buf).unwrap() } {
                    got.extend_from_slice(&b);
                }
            }
            prop_assert!(dec.is_done());
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, if raw { &wire } else { &expected });
        }
    }

    #[test]
    fn random_bytes_never_panic(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            mutated(VALID_REQUESTS),
            mutated(VALID_RESPONSES),
        ],
        cuts in proptest::collection::vec(0usize..64, 0..6),
    ) {
        let limits = Limits { max_head_bytes: 200, max_headers: 8 };
        let mut buf = BytesMut::new();
        let mut scan = HeadScanner::new();
        let mut rbuf = BytesMut::new();
        let mut rscan = HeadScanner::new();
        for piece in pieces(&input, &cuts) {
            buf.extend_from_slice(piece);
            rbuf.extend_from_slice(piece);
            if let Ok(Status::Complete(h)) = parse_request_head(&mut buf, &mut scan, &limits) {
                let mut dec = BodyDecoder::new(h.framing());
                let _ = dec.next_raw(&mut buf);
                let mut out = BytesMut::new();
                write_forward_request_head(&mut out, &h, &Forwarded::new(std::net::Ipv4Addr::LOCALHOST.into(), b"up"));
            }
            if let Ok(Status::Complete(h)) = parse_response_head(&mut rbuf, &mut rscan, &limits, Method::Get) {
                let _ = (h.keep_alive_timeout(), h.is_json(), h.interim(Version::Http11, true, false));
                let mut out = BytesMut::new();
                let _ = write_forward_response_head(&mut out, &h, Version::Http10, true, None);
            }
        }
        for raw in [false, true] {
            let mut dec = BodyDecoder::for_response(BodyFraming::Chunked);
            let mut buf = BytesMut::new();
            'feed: for piece in pieces(&input, &cuts) {
                buf.extend_from_slice(piece);
                loop {
                    match if raw { dec.next_raw(&mut buf) } else { dec.next_data(&mut buf) } {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }
    }
}

/// Replays the checked-in fuzz seeds (`fuzz/seeds/<target>/`) through every entry point on
/// stable, so the hostile corpus is exercised by `cargo test` too.
#[test]
fn fuzz_seeds_replay_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut n = 0;
    for target in ["request_head", "response_head", "chunked"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in dir.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            n += 1;
            let limits = Limits::default();
            let mut buf = BytesMut::from(&data[..]);
            let _ = parse_request_head(&mut buf, &mut HeadScanner::new(), &limits);
            let mut buf = BytesMut::from(&data[..]);
            let _ = parse_response_head(&mut buf, &mut HeadScanner::new(), &limits, Method::Get);
            let mut dec = BodyDecoder::new(BodyFraming::Chunked);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = dec.next_data(&mut buf) {}
        }
    }
    assert!(n >= 30, "expected the fuzz seeds to be present, found {n}");
}
