//! The fan-out's call + assembly + write path on a real runtime of each driver, over real
//! sockets, with the audit hooks proving backend JSON bodies are never copied.

use super::*;

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
        let (reqs, _) = call_requests(
            plan,
            head,
            "127.0.0.1".parse().unwrap(),
            groups,
            BytesMut::new(),
        );
        let deadline = Instant::now() + plan.timeout;
        let bufs = crate::upstream::ReadBufs::default();
        let mut results = empty_results(plan);
        let Gathered::Done { .. } = gather(
            plan,
            groups,
            &bufs,
            &mut results,
            reqs,
            Limits::default(),
            deadline,
            || false,
        )
        .await
        else {
            panic!("the client cannot be gone here");
        };
        let (body, _) = assemble(plan, &results);
        // Slot 0 is the head's (empty here): the audit sees the body pieces after it.
        let written_ptrs: Vec<usize> = body[1..].iter().map(|b| b.as_ptr() as usize).collect();
        write_answer(
            &mut stream,
            Bytes::new(),
            body,
            false,
            Duration::from_secs(10),
            false,
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
    assert!(written.len() > ANSWER_BATCH * 2, "{} pieces", written.len());
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
    let mut results = empty_results(&plan);
    let gathered = rt.block_on(gather(
        &plan,
        &groups,
        &crate::upstream::ReadBufs::default(),
        &mut results,
        call_requests(
            &plan,
            &head,
            "127.0.0.1".parse().unwrap(),
            &groups,
            BytesMut::new(),
        )
        .0,
        Limits::default(),
        Instant::now() + plan.timeout,
        || false,
    ));
    let Gathered::Done { failed_required } = gathered else {
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
    let mut results = empty_results(&plan);
    let gathered = rt.block_on(async {
        gather(
            &plan,
            &groups,
            &crate::upstream::ReadBufs::default(),
            &mut results,
            call_requests(
                &plan,
                &head,
                "127.0.0.1".parse().unwrap(),
                &groups,
                BytesMut::new(),
            )
            .0,
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
    assert_eq!(gathered, Gathered::ClientGone);
    assert!(results[0].is_none());
    let pool = &groups[0].members()[0].pool;
    assert_eq!((pool.open_count(), pool.idle_count()), (0, 0), "{driver}");
    drop(l);
}

/// `n` interim heads (`103 Early Hints`) and then `last`.
fn after_interim(n: usize, last: Vec<u8>) -> Vec<u8> {
    let mut r = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n".repeat(n);
    r.extend_from_slice(&last);
    r
}

/// The limit on interim heads before a call's final response is the proxy's (16): a call with
/// 12 of them is answered; one with 17 is a bad response.
fn interim_heads_are_limited_like_the_proxy(driver: Driver) {
    let rt = runtime(driver);
    let ok = content_length_response("application/json", b"{\"n\":1}");
    let groups = vec![
        group("a", backend(after_interim(12, ok.clone()), 1)),
        group("b", backend(after_interim(17, ok), 1)),
    ];
    let plan = plan_of(&[("a", 0, false), ("b", 1, false)], &[]);
    let head = parse_head("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    let (got, results, _, _) = run_fanout(&rt, &plan, &groups, &head);
    assert_eq!(got, br#"{"a":{"n":1},"b":null}"#, "{driver}");
    assert!(
        matches!(
            results[1].as_ref().map(|f| &f.result),
            Some(CallResult::BadResponse)
        ),
        "{driver}: 17 interim heads are a bad response: {:?}",
        results[1]
    );
}

/// A `101 Switching Protocols` answers no fan-out call (calls never ask to upgrade, RFC 9110
/// §15.2.2): the call fails, it is not skipped as an interim response.
fn switching_protocols_fails_the_call(driver: Driver) {
    let rt = runtime(driver);
    let ok = content_length_response("application/json", b"{}");
    let mut switch =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            .to_vec();
    switch.extend_from_slice(&ok);
    let groups = vec![group("a", backend(switch, 1)), group("b", backend(ok, 1))];
    let plan = plan_of(&[("a", 0, false), ("b", 1, false)], &[]);
    let head = parse_head("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    let (got, results, _, _) = run_fanout(&rt, &plan, &groups, &head);
    assert_eq!(got, br#"{"a":null,"b":{}}"#, "{driver}");
    assert!(
        matches!(
            results[0].as_ref().map(|f| &f.result),
            Some(CallResult::BadResponse)
        ),
        "{driver}: a 101 is a bad response: {:?}",
        results[0]
    );
    let pool = &groups[0].members()[0].pool;
    assert_eq!(pool.idle_count(), 0, "{driver}: not pooled after a 101");
}

crate::both_drivers!(zero_copy_assembly, zero_copy_assembly);
crate::both_drivers!(
    many_pieces_are_written_in_batches,
    many_pieces_are_written_in_batches
);
crate::both_drivers!(
    unreachable_optional_is_null_and_required_cancels,
    unreachable_optional_is_null_and_required_cancels
);
crate::both_drivers!(
    gone_client_cancels_every_call,
    gone_client_cancels_every_call
);
crate::both_drivers!(
    interim_heads_are_limited_like_the_proxy,
    interim_heads_are_limited_like_the_proxy
);
crate::both_drivers!(
    switching_protocols_fails_the_call,
    switching_protocols_fails_the_call
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
