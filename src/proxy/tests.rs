//! Zero-copy proof for the response relay, on both drivers, over real sockets.
//!
//! A backend thread writes a response into one end of a socketpair in small pieces (so the relay
//! needs many reads); the response head is read as the exchange reads it (`read_into`), then the
//! real `relay_body` path runs on a real runtime of
//! each driver and writes to another socketpair whose far end a client thread reads. The audit
//! hook records every buffer a backend read landed in and every body piece written to the client:
//! each piece must lie inside one of those buffers (pointer ranges), i.e. it was never copied.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use bytes::BytesMut;

use super::Deadlines;
use super::relay::{BodyEnd, relay_body};
use crate::http::{self, BodyDecoder, HeadScanner, Limits, RequestHead, Status};
use crate::io::{Driver, Runtime, Stream, UringOptions};
use crate::upstream::{UPSTREAM_READ_BUF, read_into};

fn request(bytes: &[u8]) -> RequestHead {
    let mut buf = BytesMut::from(bytes);
    match http::parse_request_head(&mut buf, &mut HeadScanner::new(), &Limits::default()) {
        Ok(Status::Complete(h)) => h,
        other => panic!("test request did not parse: {other:?}"),
    }
}

/// What one relay run produced.
struct Run {
    end: BodyEnd,
    /// Everything the client received (head + body).
    received: Vec<u8>,
    reads: Vec<std::ops::Range<usize>>,
    written: Vec<std::ops::Range<usize>>,
}

fn relay(driver: Driver, response: Vec<u8>) -> Run {
    let rt = Runtime::new(driver, &UringOptions::default()).expect("runtime");
    let (gw_client, mut test_client) = StdUnixStream::pair().expect("socketpair");
    let (gw_upstream, mut test_backend) = StdUnixStream::pair().expect("socketpair");
    let backend = std::thread::spawn(move || {
        // Small pieces with pauses: the relay sees many reads, some splitting chunk framing.
        for piece in response.chunks(3001) {
            if test_backend.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let client = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = test_client.read_to_end(&mut got);
        got
    });
    crate::audit::reset();
    let end = rt.block_on(async move {
        let mut client = Stream::from_std_unix(gw_client).expect("client stream");
        let mut upstream = Stream::from_std_unix(gw_upstream).expect("upstream stream");
        let req = request(b"GET /z HTTP/1.1\r\nHost: t\r\n\r\n");
        let times = Deadlines {
            client: Duration::from_secs(5),
            upstream: Duration::from_secs(5),
        };
        let mut ubuf = BytesMut::with_capacity(UPSTREAM_READ_BUF);
        let mut scratch = BytesMut::new();
        let mut sent = 0u64;
        let mut scanner = HeadScanner::new();
        let resp = loop {
            if let Ok(Status::Complete(r)) =
                http::parse_response_head(&mut ubuf, &mut scanner, &Limits::default(), req.method())
            {
                break r;
            }
            match read_into(&mut upstream, &mut ubuf, Some(times.upstream)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => panic!("no response head"),
            }
        };
        scratch.clear();
        let plan =
            http::write_forward_response_head(&mut scratch, &resp, req.version(), true, None);
        let head = scratch.split().freeze();
        let mut decoder = BodyDecoder::for_response(resp.framing());
        relay_body(
            &mut client,
            &mut sent,
            &mut upstream,
            &mut ubuf,
            &mut decoder,
            plan.body,
            head,
            times,
            false,
        )
        .await
        // Both streams drop here: the client thread sees EOF.
    });
    backend.join().expect("backend thread");
    let received = client.join().expect("client thread");
    Run {
        end,
        received,
        reads: crate::audit::reads(),
        written: crate::audit::writes(),
    }
}

/// Every written body piece lies inside one buffer a backend read landed in.
fn assert_zero_copy(run: &Run, body_len: usize) {
    assert!(
        run.reads.len() > 2,
        "expected many backend reads, got {}",
        run.reads.len()
    );
    assert!(!run.written.is_empty(), "no body piece was written");
    let mut total = 0;
    for w in run.written.iter().filter(|w| !w.is_empty()) {
        let (start, end) = (w.start, w.end);
        total += end - start;
        assert!(
            run.reads.iter().any(|r| r.start <= start && end <= r.end),
            "body piece {start:#x}..{end:#x} lies in no read buffer: it was copied (read buffers: {:x?})",
            run.reads
        );
    }
    assert_eq!(
        total, body_len,
        "the written pieces add up to the body forwarded"
    );
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

fn content_length(driver: Driver) {
    let data = body(200_000);
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    resp.extend_from_slice(&data);
    let run = relay(driver, resp);
    assert_eq!(run.end, BodyEnd::Complete);
    assert_zero_copy(&run, data.len());
    assert!(
        run.received.ends_with(&data),
        "the client got the body unchanged"
    );
}

fn chunked(driver: Driver) {
    let data = body(150_000);
    let mut framed = Vec::new();
    // Uneven chunk sizes so chunk boundaries fall anywhere in the reads.
    let mut rest = &data[..];
    let mut size = 1;
    while !rest.is_empty() {
        let n = size.min(rest.len());
        framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        framed.extend_from_slice(&rest[..n]);
        framed.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        size = size * 3 + 7;
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    let mut resp =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    resp.extend_from_slice(&framed);
    let run = relay(driver, resp);
    assert_eq!(run.end, BodyEnd::Complete);
    // Chunked bodies are forwarded as read, framing included.
    assert_zero_copy(&run, framed.len());
    assert!(
        run.received.ends_with(&framed),
        "the client got the chunked body unchanged"
    );
}

fn truncated(driver: Driver) {
    let data = body(50_000);
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    resp.extend_from_slice(&data);
    let run = relay(driver, resp);
    assert_eq!(
        run.end,
        BodyEnd::Truncated,
        "a backend closing mid-body is a truncation"
    );
    assert!(run.received.ends_with(&data));
}

crate::both_drivers!(zero_copy_content_length, content_length);

crate::both_drivers!(zero_copy_chunked, chunked);

crate::both_drivers!(truncation_is_reported, truncated);
