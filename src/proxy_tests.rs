//! Zero-copy proof for the response relay, on both drivers, over real sockets.
//!
//! A backend thread writes a response into one end of a socketpair in small pieces (so the relay
//! needs many reads); the real `read_response_head` + `relay_body` path runs on a real runtime of
//! each driver and writes to another socketpair whose far end a client thread reads. The audit
//! hook records every buffer a backend read landed in and every body piece written to the client:
//! each piece must lie inside one of those buffers (pointer ranges), i.e. it was never copied.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use bytes::BytesMut;

use super::{BodyEnd, Deadlines, UPSTREAM_READ_BUF, read_response_head, relay_body};
use crate::http::{self, BodyDecoder, HeadScanner, Limits, RequestHead, Status};
use crate::io::{Driver, Runtime, Stream, UringOptions};

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
        let Ok(resp) = read_response_head(
            &mut client,
            &mut sent,
            &mut scratch,
            &mut upstream,
            &mut ubuf,
            &req,
            false,
            &Limits::default(),
            times,
        )
        .await
        else {
            panic!("no response head");
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

#[test]
fn zero_copy_content_length_uring() {
    content_length(Driver::Uring);
}

#[test]
fn zero_copy_content_length_epoll() {
    content_length(Driver::Epoll);
}

#[test]
fn zero_copy_chunked_uring() {
    chunked(Driver::Uring);
}

#[test]
fn zero_copy_chunked_epoll() {
    chunked(Driver::Epoll);
}

#[test]
fn truncation_is_reported_uring() {
    truncated(Driver::Uring);
}

#[test]
fn truncation_is_reported_epoll() {
    truncated(Driver::Epoll);
}

/// A head and a body split off a read buffer, as an exchange does.
fn exchange(buf: &mut BytesMut) -> (bytes::Bytes, bytes::Bytes) {
    buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let head = buf.split_to(buf.len() - 5).freeze();
    let body = buf.split_to(5).freeze();
    (head, body)
}

#[test]
fn spare_read_buffer_is_reused_whole() {
    let bufs = super::ReadBufs::default();
    let mut buf = bufs.take();
    let start = buf.as_ptr();
    let (head, body) = exchange(&mut buf);
    // Written and dropped: nothing points into the buffer any more.
    drop((head, body));
    bufs.put_back(buf);
    let again = bufs.take();
    assert_eq!(again.as_ptr(), start, "the same allocation, from its start");
    assert!(again.is_empty() && again.capacity() >= UPSTREAM_READ_BUF);
}

#[test]
fn spare_read_buffer_with_a_piece_still_held_is_not_kept() {
    let bufs = super::ReadBufs::default();
    let mut buf = bufs.take();
    let first = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
    // A piece still held elsewhere (e.g. by a write cancelled mid-flight): the allocation is
    // shared, so it must not go back on the list (its room could not be reclaimed anyway).
    let (_head, body) = exchange(&mut buf);
    bufs.put_back(buf);
    let again = bufs.take();
    let at = again.as_ptr() as usize;
    assert!(
        !first.contains(&at),
        "a buffer whose allocation is still shared came back from the spare list"
    );
    assert_eq!(&body[..], b"hello");
}

#[test]
fn spare_read_buffer_that_grew_is_not_kept() {
    let bufs = super::ReadBufs::default();
    let mut buf = bufs.take();
    // A big response head made it grow past what a spare buffer may hold.
    buf.extend_from_slice(&vec![b'h'; super::MAX_SPARE_READ_BUF + 1]);
    let grown = buf.as_ptr();
    let head = buf.split().freeze();
    drop(head);
    bufs.put_back(buf);
    assert_ne!(bufs.take().as_ptr(), grown, "a grown buffer was kept");
}
