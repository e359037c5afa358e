//! Request head tests, one per rule, named by RFC section (httparse `req!` style).

use super::*;
use crate::http::{ErrorKind, Limits};

/// Parses a complete head; panics on Partial.
fn parse(input: &[u8]) -> Result<RequestHead, HttpError> {
    parse_with(input, &Limits::default())
}

fn parse_with(input: &[u8], limits: &Limits) -> Result<RequestHead, HttpError> {
    let mut buf = BytesMut::from(input);
    let mut scan = HeadScanner::new();
    match parse_request_head(&mut buf, &mut scan, limits)? {
        Status::Complete(h) => Ok(h),
        Status::Partial => panic!(
            "expected a complete head, got Partial for {:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

/// `req!(name, bytes, |head| asserts)` for accepted heads, `req!(name, bytes, Err(kind, status))` for rejected.
macro_rules! req {
    ($name:ident, $buf:expr, |$h:ident| $body:expr) => {
        #[test]
        fn $name() {
            let $h = parse($buf).unwrap_or_else(|e| panic!("expected Ok, got {e}"));
            $body
        }
    };
    ($name:ident, $buf:expr, Err($kind:ident, $status:expr)) => {
        #[test]
        fn $name() {
            match parse($buf) {
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::$kind, "reason {}", e.reason());
                    assert_eq!(e.status(), $status);
                }
                Ok(h) => panic!("expected {:?}, got Ok({h:?})", ErrorKind::$kind),
            }
        }
    };
}

req!(
    simple_get_rfc9112_3,
    b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    |h| {
        assert_eq!(h.method(), Method::Get);
        assert_eq!(h.method_bytes(), b"GET");
        assert_eq!(h.target(), b"/a/b?x=1&y");
        assert_eq!(h.path(), b"/a/b");
        assert_eq!(h.query(), Some(&b"x=1&y"[..]));
        assert_eq!(h.version(), Version::Http11);
        assert_eq!(h.host(), Some(&b"example.com"[..]));
        assert_eq!(h.header(b"accept"), Some(&b"*/*"[..]));
        assert_eq!(h.headers().count(), 2);
        assert_eq!(h.framing(), BodyFraming::Empty);
        assert!(h.keep_alive());
        assert!(h.is_idempotent());
        assert!(!h.expects_continue());
        assert_eq!(h.upgrade(), None);
    }
);
req!(
    header_values_trim_ows_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t a b \t\r\nX-Empty:\r\n\r\n",
    |h| {
        assert_eq!(h.header(b"x-a"), Some(&b"a b"[..]));
        assert_eq!(h.header(b"X-EMPTY"), Some(&b""[..]));
    }
);
req!(
    obs_text_allowed_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
    |h| {
        assert_eq!(h.header(b"x"), Some(&b"caf\xc3\xa9"[..]));
    }
);
req!(
    unknown_method_rfc9110_9_1,
    b"PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| {
        assert_eq!(h.method(), Method::Other);
        assert_eq!(h.method_bytes(), b"PROPFIND");
        assert!(!h.is_idempotent());
    }
);
req!(
    methods_case_sensitive_rfc9110_9_1,
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| assert_eq!(h.method(), Method::Other)
);
req!(
    leading_empty_lines_ignored_rfc9112_2_2,
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| assert_eq!(h.path(), b"/")
);
req!(
    http10_no_host_ok_rfc9112_3_2,
    b"GET / HTTP/1.0\r\n\r\n",
    |h| {
        assert_eq!(h.version(), Version::Http10);
        assert_eq!(h.host(), None);
        assert!(!h.keep_alive());
    }
);
req!(
    http10_keep_alive_rfc9112_9_3,
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    |h| assert!(h.keep_alive())
);
req!(
    http11_close_rfc9112_9_6,
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n",
    |h| assert!(!h.keep_alive())
);
req!(
    empty_host_allowed_rfc9112_3_2,
    b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    |h| assert_eq!(h.host(), None)
);
req!(
    host_with_port_rfc9110_7_2,
    b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    |h| assert_eq!(h.host(), Some(&b"[::1]:8080"[..]))
);
req!(
    absolute_form_replaces_host_rfc9112_3_2_2,
    b"GET http://a.example:81/p?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
    |h| {
        assert_eq!(h.target_form(), TargetForm::Absolute);
        assert_eq!(h.host(), Some(&b"a.example:81"[..]));
        assert_eq!(h.path(), b"/p");
        assert_eq!(h.query(), Some(&b"q=1"[..]));
    }
);
req!(
    absolute_form_empty_path_rfc9112_3_2_2,
    b"GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
    |h| {
        assert_eq!(h.path(), b"/");
        assert_eq!(h.query(), None);
    }
);
req!(
    connect_authority_form_rfc9112_3_2_3,
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    |h| {
        assert_eq!(h.target_form(), TargetForm::Authority);
        assert_eq!(h.host(), Some(&b"a.example:443"[..]));
    }
);
req!(
    options_asterisk_rfc9112_3_2_4,
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| assert_eq!(h.path(), b"*")
);
req!(
    content_length_rfc9112_6_3_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::ContentLength(42));
    }
);
req!(
    content_length_zero_rfc9112_6_3_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::ContentLength(0));
    }
);
req!(
    content_length_equal_list_collapsed_rfc9112_6_3_5,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::ContentLength(5));
    }
);
req!(
    chunked_rfc9112_6_3_4,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Chunked);
    }
);
req!(
    gzip_then_chunked_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    |h| {
        assert_eq!(h.framing(), BodyFraming::Chunked);
    }
);
req!(
    expect_continue_rfc9110_10_1_1,
    b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
    |h| {
        assert!(h.expects_continue());
    }
);
req!(
    expect_continue_ignored_http10_rfc9110_10_1_1,
    b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    |h| {
        assert!(!h.expects_continue());
    }
);
req!(
    upgrade_rfc9110_7_8,
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    |h| {
        assert_eq!(h.upgrade(), Some(&b"websocket"[..]));
    }
);
req!(
    upgrade_without_connection_ignored_rfc9110_7_8,
    b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
    |h| {
        assert_eq!(h.upgrade(), None);
    }
);

// Request framing, RFC 9112 §6: every ambiguous case is a 400 (or 501 for unknown codings).
req!(
    cl_and_te_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    Err(ContentLengthAndTransferEncoding, 400)
);
req!(
    te_and_cl_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    Err(ContentLengthAndTransferEncoding, 400)
);
req!(
    cl_differing_rfc9112_6_3_5,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    Err(ConflictingContentLength, 400)
);
req!(
    cl_differing_list_rfc9112_6_3_5,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
    Err(ConflictingContentLength, 400)
);
req!(
    cl_empty_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    cl_sign_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    cl_negative_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    cl_hex_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    cl_inner_space_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    cl_overflow_rfc9110_8_6,
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
    Err(InvalidContentLength, 400)
);
req!(
    te_not_chunked_last_rfc9112_6_3_4,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    Err(TransferEncodingNotChunked, 400)
);
req!(
    te_gzip_only_rfc9112_6_3_4,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    Err(TransferEncodingNotChunked, 400)
);
req!(te_chunked_twice_rfc9112_6_1, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(ChunkedRepeated, 400));
req!(
    te_unknown_coding_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: foo, chunked\r\n\r\n",
    Err(UnknownTransferCoding, 501)
);
req!(
    te_empty_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
    Err(InvalidTransferEncoding, 400)
);
req!(
    te_params_rfc9112_6_1,
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
    Err(InvalidTransferEncoding, 400)
);
req!(
    te_on_http10_rfc9112_6_1,
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    Err(TransferEncodingOnHttp10, 400)
);

// Field syntax, RFC 9112 §5 / RFC 9110 §5.
req!(
    whitespace_before_colon_rfc9112_5_1,
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n",
    Err(WhitespaceBeforeColon, 400)
);
req!(
    tab_before_colon_rfc9112_5_1,
    b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n",
    Err(WhitespaceBeforeColon, 400)
);
req!(
    obs_fold_rfc9112_5_2,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  b\r\n\r\n",
    Err(ObsoleteLineFolding, 400)
);
req!(
    space_before_first_field_rfc9112_2_2,
    b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
    Err(ObsoleteLineFolding, 400)
);
req!(
    nul_in_value_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n",
    Err(InvalidHeaderValue, 400)
);
req!(
    bare_cr_in_value_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    Err(InvalidHeaderValue, 400)
);
req!(
    ctl_in_value_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n",
    Err(InvalidHeaderValue, 400)
);
req!(
    del_in_value_rfc9110_5_5,
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n",
    Err(InvalidHeaderValue, 400)
);
req!(
    bare_lf_in_head_rfc9112_2_2,
    b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
    Err(BareLf, 400)
);
req!(
    bare_lf_request_line_rfc9112_2_2,
    b"GET / HTTP/1.1\n\n",
    Err(BareLf, 400)
);
req!(
    empty_name_rfc9110_5_1,
    b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
    Err(InvalidHeaderName, 400)
);
req!(
    non_token_name_rfc9110_5_1,
    b"GET / HTTP/1.1\r\nHost: h\r\nX(A): v\r\n\r\n",
    Err(InvalidHeaderName, 400)
);
req!(
    no_colon_rfc9110_5_1,
    b"GET / HTTP/1.1\r\nHost: h\r\nXA\r\n\r\n",
    Err(InvalidHeaderName, 400)
);

// Host, RFC 9112 §3.2.
req!(
    missing_host_rfc9112_3_2,
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    Err(MissingHost, 400)
);
req!(
    missing_host_absolute_form_rfc9112_3_2,
    b"GET http://a/ HTTP/1.1\r\n\r\n",
    Err(MissingHost, 400)
);
req!(
    several_hosts_rfc9112_3_2,
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    Err(MultipleHost, 400)
);
req!(
    invalid_host_rfc9112_3_2,
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    Err(InvalidHost, 400)
);
req!(
    host_userinfo_rfc9110_4_2_4,
    b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    Err(InvalidHost, 400)
);
req!(
    host_list_rfc9112_3_2,
    b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n",
    Err(InvalidHost, 400)
);

// Versions, RFC 9112 §2.3 / RFC 9110 §15.6.6.
req!(
    http2_version_rfc9110_15_6_6,
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    Err(VersionNotSupported, 505)
);
req!(
    http12_version_rfc9110_15_6_6,
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    Err(VersionNotSupported, 505)
);
req!(
    http09_version_rfc9110_15_6_6,
    b"GET / HTTP/0.9\r\nHost: h\r\n\r\n",
    Err(VersionNotSupported, 505)
);
req!(
    garbage_version_rfc9112_2_3,
    b"GET / HTTP/1.10\r\nHost: h\r\n\r\n",
    Err(InvalidVersion, 400)
);
req!(
    lowercase_version_rfc9112_2_3,
    b"GET / http/1.1\r\nHost: h\r\n\r\n",
    Err(InvalidVersion, 400)
);

// Request line and target forms, RFC 9112 §3.
req!(
    authority_form_without_connect_rfc9112_3_2_3,
    b"GET a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n",
    Err(TargetFormNotAllowed, 400)
);
req!(
    connect_origin_form_rfc9112_3_2_3,
    b"CONNECT / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    Err(TargetFormNotAllowed, 400)
);
req!(
    asterisk_without_options_rfc9112_3_2_4,
    b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(TargetFormNotAllowed, 400)
);
req!(
    double_space_request_line_rfc9112_3,
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(InvalidTarget, 400)
);
req!(
    bad_method_rfc9110_9_1,
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(InvalidMethod, 400)
);
req!(
    fragment_in_target_rfc9112_3_2,
    b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(InvalidTarget, 400)
);
req!(
    non_http_scheme_rfc9112_3_2_2,
    b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    Err(InvalidTarget, 400)
);

#[test]
fn request_line_over_limit_is_414_rfc9112_3() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 100,
    };
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 100));
    let mut buf = BytesMut::from(&long[..]);
    let err = parse_request_head(&mut buf, &mut HeadScanner::new(), &limits).unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::RequestLineTooLong, 414)
    );
}

#[test]
fn head_over_limit_is_431_rfc6585_5() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 100,
    };
    let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40));
    head.extend(b"\r\n\r\n");
    let err = parse_with(&head, &limits).unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::HeadTooLarge, 431));
    // Exactly at the limit is fine.
    let exact = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let limits = Limits {
        max_head_bytes: exact.len(),
        max_headers: 100,
    };
    assert!(parse_with(exact, &limits).is_ok());
}

#[test]
fn too_many_headers_is_431_rfc6585_5() {
    let limits = Limits {
        max_head_bytes: 16384,
        max_headers: 3,
    };
    let ok = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(parse_with(ok, &limits).is_ok());
    let err = parse_with(
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        &limits,
    )
    .unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::TooManyHeaders, 431));
}

#[test]
fn pipelined_requests_parse_one_after_another_rfc9112_9_3_2() {
    let mut buf = BytesMut::from(
        &b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHo"[..],
    );
    let mut scan = HeadScanner::new();
    let limits = Limits::default();
    let a = parse_request_head(&mut buf, &mut scan, &limits)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(a.path(), b"/a");
    assert_eq!(&buf[..3], b"abc");
    let _ = buf.split_to(3);
    let b = parse_request_head(&mut buf, &mut scan, &limits)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(b.path(), b"/b");
    assert_eq!(
        parse_request_head(&mut buf, &mut scan, &limits).unwrap(),
        Status::Partial
    );
    buf.extend_from_slice(b"st: h\r\n\r\n");
    let c = parse_request_head(&mut buf, &mut scan, &limits)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(c.path(), b"/c");
    assert!(buf.is_empty());
}

#[test]
fn head_is_split_off_without_copy() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody"[..]);
    let base = buf.as_ptr() as usize;
    let head = parse_request_head(&mut buf, &mut HeadScanner::new(), &Limits::default())
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(head.as_bytes().as_ptr() as usize, base);
    assert_eq!(head.header(b"host").unwrap().as_ptr() as usize, base + 22);
    assert_eq!(&buf[..], b"body");
}

impl PartialEq for RequestHead {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
            && self.method == other.method
            && self.method_span == other.method_span
            && self.target == other.target
            && self.form == other.form
            && self.path == other.path
            && self.query == other.query
            && self.host == other.host
            && self.version == other.version
            && self.headers == other.headers
            && self.framing == other.framing
    }
}

req!(
    path_is_normalized_rfc3986_6_2_2,
    b"GET /a/./b/../%63//d?q=/../ HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| {
        assert_eq!(h.path(), b"/a/c/d");
        assert_eq!(h.raw_path(), b"/a/./b/../%63//d");
        assert_eq!(h.target(), b"/a/./b/../%63//d?q=/../");
        assert_eq!(h.query(), Some(&b"q=/../"[..]));
    }
);

req!(
    path_above_root_rfc3986_5_2_4,
    b"GET /a/../../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(PathAboveRoot, 400)
);

req!(
    encoded_slash_refused_by_default,
    b"GET /a%2fb HTTP/1.1\r\nHost: h\r\n\r\n",
    Err(EncodedSlash, 400)
);

req!(
    absolute_form_path_is_normalized,
    b"GET http://h/x/%2E%2E/y HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| assert_eq!(h.path(), b"/y")
);

req!(
    asterisk_and_authority_form_are_not_paths,
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    |h| assert_eq!(h.path(), b"*")
);

#[test]
fn encoded_slash_kept_under_keep_policy() {
    let mut buf = BytesMut::from(&b"GET /a%2fb/../c HTTP/1.1\r\nHost: h\r\n\r\n"[..]);
    let policy = crate::http::TargetPolicy {
        merge_slashes: false,
        encoded_slashes: crate::http::EncodedSlashes::Keep,
    };
    let h = parse_request_head_with(
        &mut buf,
        &mut HeadScanner::new(),
        &Limits::default(),
        &policy,
    )
    .unwrap()
    .complete()
    .unwrap();
    assert_eq!(h.path(), b"/c");
}
