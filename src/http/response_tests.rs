//! Response head tests, one per rule, named by RFC section.

use super::*;

fn parse_for(input: &[u8], method: Method) -> Result<ResponseHead, HttpError> {
    let mut buf = BytesMut::from(input);
    match parse_response_head(
        &mut buf,
        &mut HeadScanner::new(),
        &Limits::default(),
        method,
    )? {
        Status::Complete(h) => Ok(h),
        Status::Partial => panic!(
            "expected a complete head, got Partial for {:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// `res!(name, method, bytes, |head| asserts)` / `res!(name, method, bytes, Err(kind))` (always 502).
macro_rules! res {
    ($name:ident, $method:ident, $buf:expr, |$h:ident| $body:expr) => {
        #[test]
        fn $name() {
            let $h =
                parse_for($buf, Method::$method).unwrap_or_else(|e| panic!("expected Ok, got {e}"));
            $body
        }
    };
    ($name:ident, $method:ident, $buf:expr, Err($kind:ident)) => {
        #[test]
        fn $name() {
            match parse_for($buf, Method::$method) {
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::$kind, "reason {}", e.reason());
                    assert_eq!(e.status(), 502);
                }
                Ok(h) => panic!("expected {:?}, got Ok({h:?})", ErrorKind::$kind),
            }
        }
    };
}

res!(simple_ok_rfc9112_4, Get, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json; charset=utf-8\r\n\r\n", |h| {
    assert_eq!(h.status(), 200);
    assert_eq!(h.reason(), b"OK");
    assert_eq!(h.version(), Version::Http11);
    assert_eq!(h.framing(), BodyFraming::ContentLength(5));
    assert!(h.keep_alive());
    assert!(h.is_json());
    assert!(!h.is_informational());
    assert_eq!(h.interim(Version::Http11, false, false), Interim::Final);
});
res!(
    empty_reason_rfc9112_4,
    Get,
    b"HTTP/1.1 204 \r\n\r\n",
    |h| assert_eq!(h.reason(), b"")
);
res!(
    no_reason_rfc9112_4,
    Get,
    b"HTTP/1.1 204\r\n\r\n",
    |h| assert_eq!(h.reason(), b"")
);
res!(
    obs_text_reason_rfc9112_4,
    Get,
    b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n",
    |h| assert_eq!(h.reason(), b"\xe9t\xe9")
);
res!(
    head_response_has_no_body_rfc9112_6_3_1,
    Head,
    b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Empty);
        assert_eq!(h.content_length(), Some(500));
        assert!(h.keep_alive());
    }
);
res!(
    head_response_chunked_no_body_rfc9112_6_3_1,
    Head,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Empty);
    }
);
res!(
    continue_100_rfc9110_15_2_1,
    Post,
    b"HTTP/1.1 100 Continue\r\n\r\n",
    |h| {
        assert!(h.is_informational());
        assert_eq!(h.framing(), BodyFraming::Empty);
        assert_eq!(h.interim(Version::Http11, false, false), Interim::Forward);
        assert_eq!(h.interim(Version::Http11, false, true), Interim::Skip);
        assert_eq!(h.interim(Version::Http10, false, false), Interim::Skip);
    }
);
res!(
    early_hints_103_rfc8297,
    Get,
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
    |h| {
        assert_eq!(h.interim(Version::Http11, false, false), Interim::Forward);
    }
);
res!(
    switching_101_rfc9110_15_2_2,
    Get,
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    |h| {
        assert_eq!(
            h.interim(Version::Http11, true, false),
            Interim::SwitchProtocols
        );
        assert_eq!(
            h.interim(Version::Http11, false, false),
            Interim::Unexpected
        );
        assert!(!h.keep_alive());
    }
);
res!(
    no_content_204_rfc9112_6_3_1,
    Get,
    b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    |h| assert_eq!(h.framing(), BodyFraming::Empty)
);
res!(
    not_modified_304_rfc9112_6_3_1,
    Get,
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Empty);
        assert_eq!(h.content_length(), Some(10));
    }
);
res!(
    connect_2xx_is_tunnel_rfc9112_6_3_2,
    Connect,
    b"HTTP/1.1 200 OK\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Empty);
        assert!(!h.keep_alive());
    }
);
res!(
    chunked_rfc9112_6_3_4,
    Get,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    |h| assert_eq!(h.framing(), BodyFraming::Chunked)
);
res!(
    te_not_chunked_reads_until_close_rfc9112_6_3_4,
    Get,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::UntilClose);
        assert!(!h.keep_alive());
    }
);
res!(
    no_length_reads_until_close_rfc9112_6_3_8,
    Get,
    b"HTTP/1.1 200 OK\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::UntilClose);
        assert!(!h.keep_alive());
    }
);
res!(
    close_not_reusable_rfc9112_9_6,
    Get,
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    |h| assert!(!h.keep_alive())
);
res!(
    http10_not_reusable_rfc9112_9_3,
    Get,
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    |h| assert!(!h.keep_alive())
);
res!(http10_keep_alive_rfc9112_9_3, Get, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n", |h| {
    assert!(h.keep_alive());
    assert_eq!(h.keep_alive_timeout(), Some(5));
});
res!(
    keep_alive_timeout_absent,
    Get,
    b"HTTP/1.1 200 OK\r\nKeep-Alive: max=100\r\nContent-Length: 0\r\n\r\n",
    |h| assert_eq!(h.keep_alive_timeout(), None)
);
res!(
    json_suffix_rfc6838_4_2_8,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Type: Application/Problem+JSON\r\nContent-Length: 0\r\n\r\n",
    |h| assert!(h.is_json())
);
res!(
    not_json_rfc6838,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Type: text/json-ish\r\nContent-Length: 0\r\n\r\n",
    |h| assert!(!h.is_json())
);
res!(
    not_json_plus_only,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Type: application/+json\r\nContent-Length: 0\r\n\r\n",
    |h| assert!(!h.is_json())
);

res!(
    cl_and_te_rfc9112_6_1,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    Err(ContentLengthAndTransferEncoding)
);
res!(
    duplicate_differing_cl_rfc9112_6_3_5,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    Err(ConflictingContentLength)
);
res!(
    bad_cl_rfc9110_8_6,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n",
    Err(InvalidContentLength)
);
res!(
    bad_cl_on_304_rfc9110_8_6,
    Get,
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: -1\r\n\r\n",
    Err(InvalidContentLength)
);
res!(
    chunked_not_last_rfc9112_6_1,
    Get,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    Err(ChunkedRepeated)
);
res!(
    chunked_twice_rfc9112_6_1,
    Get,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    Err(ChunkedRepeated)
);
res!(
    te_on_http10_rfc9112_6_1,
    Get,
    b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    Err(TransferEncodingOnHttp10)
);
res!(
    status_out_of_range_rfc9110_15,
    Get,
    b"HTTP/1.1 600 Odd\r\n\r\n",
    Err(InvalidStatus)
);
res!(
    status_two_digits_rfc9112_4,
    Get,
    b"HTTP/1.1 20 OK\r\n\r\n",
    Err(InvalidStatus)
);
res!(
    http2_status_line_rfc9112_2_3,
    Get,
    b"HTTP/2.0 200 OK\r\n\r\n",
    Err(InvalidVersion)
);
res!(
    whitespace_before_colon_rfc9112_5_1,
    Get,
    b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
    Err(WhitespaceBeforeColon)
);
res!(
    obs_fold_rfc9112_5_2,
    Get,
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    Err(ObsoleteLineFolding)
);
res!(
    bare_lf_rfc9112_2_2,
    Get,
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    Err(BareLf)
);
res!(
    nul_in_value_rfc9110_5_5,
    Get,
    b"HTTP/1.1 200 OK\r\nX: \0\r\nContent-Length: 0\r\n\r\n",
    Err(InvalidHeaderValue)
);

#[test]
fn over_limit_head_is_502() {
    let limits = Limits {
        max_head_bytes: 32,
        max_headers: 100,
    };
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"[..]);
    let err =
        parse_response_head(&mut buf, &mut HeadScanner::new(), &limits, Method::Get).unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::HeadTooLarge, 502));
}

#[test]
fn interim_then_final_in_one_buffer_rfc9110_15_2() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..],
    );
    let mut scan = HeadScanner::new();
    let first = parse_response_head(&mut buf, &mut scan, &Limits::default(), Method::Post)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(first.status(), 100);
    let second = parse_response_head(&mut buf, &mut scan, &Limits::default(), Method::Post)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(&buf[..], b"hi");
}
