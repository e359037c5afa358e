//! Body decoder and chunked coding tests, named by RFC section.

use super::*;
use crate::http::{MAX_CHUNK_EXT_BYTES, MAX_TRAILER_BYTES};

/// Feeds `input` in pieces of `step` bytes; returns (raw pieces joined, decoded data joined).
fn run(input: &[u8], step: usize, raw: bool) -> Result<(Vec<u8>, BytesMut), HttpError> {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let next = if raw {
                dec.next_raw(&mut buf)?
            } else {
                dec.next_data(&mut buf)?
            };
            match next {
                Some(b) => out.extend_from_slice(&b),
                None => break,
            }
        }
    }
    dec.eof()?;
    Ok((out, buf))
}

fn decode(input: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    run(input, input.len(), false)
        .map(|(d, _)| d)
        .map_err(|e| e.kind())
}

fn forward(input: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    run(input, input.len(), true)
        .map(|(d, _)| d)
        .map_err(|e| e.kind())
}

/// `chunked!(name, bytes => Ok(data))` / `chunked!(name, bytes => Err(kind))`, checked in both modes.
macro_rules! chunked {
    ($name:ident, $input:expr => Ok($data:expr)) => {
        #[test]
        fn $name() {
            assert_eq!(decode($input).as_deref(), Ok(&$data[..]), "data mode");
            assert_eq!(
                forward($input).as_deref(),
                Ok(&$input[..]),
                "raw mode forwards unchanged"
            );
        }
    };
    ($name:ident, $input:expr => Ok($data:expr), forwarded $fwd:expr) => {
        #[test]
        fn $name() {
            assert_eq!(decode($input).as_deref(), Ok(&$data[..]), "data mode");
            for step in 1..=$input.len() {
                let got = run($input, step, true)
                    .map(|(d, _)| d)
                    .map_err(|e| e.kind());
                assert_eq!(
                    got.as_deref().map(String::from_utf8_lossy),
                    Ok(String::from_utf8_lossy($fwd)),
                    "raw mode drops the extensions (step {step})"
                );
            }
        }
    };
    ($name:ident, $input:expr => Err($kind:ident)) => {
        #[test]
        fn $name() {
            assert_eq!(decode($input), Err(ErrorKind::$kind), "data mode");
            assert_eq!(forward($input), Err(ErrorKind::$kind), "raw mode");
        }
    };
}

chunked!(single_chunk_rfc9112_7_1, b"5\r\nhello\r\n0\r\n\r\n" => Ok(b"hello"));
chunked!(several_chunks_rfc9112_7_1, b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n" => Ok(b"hello 0123456789"));
chunked!(uppercase_hex_rfc9112_7_1, b"B\r\nhello world\r\n0\r\n\r\n" => Ok(b"hello world"));
chunked!(leading_zeros_rfc9112_7_1, b"0005\r\nhello\r\n000\r\n\r\n" => Ok(b"hello"));
chunked!(empty_body_rfc9112_7_1, b"0\r\n\r\n" => Ok(b""));
chunked!(extensions_rfc9112_7_1_1, b"5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n" => Ok(b"hello"),
    forwarded b"5\r\nhello\r\n0\r\n\r\n");
chunked!(bws_before_extension_rfc9112_7_1_1, b"5 \t;a\r\nhello\r\n0\r\n\r\n" => Ok(b"hello"),
    forwarded b"5\r\nhello\r\n0\r\n\r\n");
chunked!(bws_around_semicolon_and_equals_rfc9112_7_1_1,
    b"5 ; a = b ;c= \"q\\\"\\\\\" ; d\r\nhello\r\n000 ;z=\"\"\r\nEtag: no\r\n\r\n" => Ok(b"hello"),
    forwarded b"5\r\nhello\r\n000\r\nEtag: no\r\n\r\n");
chunked!(token_and_quoted_values_rfc9112_7_1_1,
    b"1;!#$%&'*+-.^_`|~=v\r\nx\r\n1;a=\"\t\x80 \\\x80\"\r\ny\r\n0\r\n\r\n" => Ok(b"xy"),
    forwarded b"1\r\nx\r\n1\r\ny\r\n0\r\n\r\n");
chunked!(empty_extension_name_rfc9112_7_1_1, b"2;\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_name_not_a_token_rfc9112_7_1_1, b"2;a@b\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_empty_value_rfc9112_7_1_1, b"2;a=\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_value_not_a_token_rfc9112_7_1_1, b"2;a=b=c\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_unterminated_quote_rfc9112_7_1_1, b"2;a=\"b\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_bytes_after_quote_rfc9112_7_1_1, b"2;a=\"b\"c\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_trailing_bws_rfc9112_7_1_1, b"2;a \r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_double_semicolon_rfc9112_7_1_1, b"2;;a\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_ctl_in_quotes_rfc9112_7_1_1, b"2;a=\"\x01\"\r\nhi\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(extension_on_last_chunk_checked_rfc9112_7_1_1, b"2\r\nhi\r\n0;\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(allowed_trailer_rfc9112_7_1_2, b"5\r\nhello\r\n0\r\nServer-Timing: db;dur=5\r\nGrpc-Status: 0\r\n\r\n" => Ok(b"hello"));
chunked!(sixteen_hex_digits_rfc9112_7_1, b"0000000000000001\r\nx\r\n0\r\n\r\n" => Ok(b"x"));

chunked!(empty_size_line_rfc9112_7_1, b"\r\nhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(non_hex_size_rfc9112_7_1, b"g\r\n" => Err(InvalidChunkSize));
chunked!(hex_prefix_size_rfc9112_7_1, b"0x5\r\nhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(signed_size_rfc9112_7_1, b"+5\r\nhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(seventeen_digits_rfc9112_7_1, b"00000000000000001\r\nx\r\n0\r\n\r\n" => Err(ChunkSizeOverflow));
chunked!(overflow_size_rfc9112_7_1, b"fffffffffffffffff\r\n" => Err(ChunkSizeOverflow));
chunked!(space_inside_size_rfc9112_7_1, b"1 2\r\n" => Err(InvalidChunkSize));
chunked!(trailing_space_without_ext_rfc9112_7_1_1, b"5 \r\nhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(bare_lf_after_size_rfc9112_7_1, b"5\nhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(bare_cr_after_size_rfc9112_7_1, b"5\rhello\r\n0\r\n\r\n" => Err(InvalidChunkSize));
chunked!(bare_lf_in_extension_rfc9112_7_1_1, b"5;a\nhello\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(ctl_in_extension_rfc9112_7_1_1, b"5;a\x00b\r\nhello\r\n0\r\n\r\n" => Err(InvalidChunkExtension));
chunked!(data_without_crlf_rfc9112_7_1, b"5\r\nhelloX\r\n0\r\n\r\n" => Err(InvalidChunkTerminator));
chunked!(bare_lf_after_data_rfc9112_7_1, b"5\r\nhello\n0\r\n\r\n" => Err(InvalidChunkTerminator));
chunked!(bare_lf_end_rfc9112_7_1, b"5\r\nhello\r\n0\r\n\n" => Err(InvalidTrailer));
chunked!(bare_cr_end_rfc9112_7_1, b"5\r\nhello\r\n0\r\n\rX" => Err(InvalidChunkTerminator));
chunked!(trailer_content_length_rfc9110_6_5_1, b"0\r\nContent-Length: 5\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_transfer_encoding_rfc9110_6_5_1, b"0\r\nTransfer-Encoding: chunked\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_host_rfc9110_6_5_1, b"0\r\nhost: evil\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_without_colon_rfc9112_7_1_2, b"0\r\nServer-Timing\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_space_before_colon_rfc9112_5_1, b"0\r\nServer-Timing : x\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_obs_fold_rfc9112_5_2, b"0\r\nServer-Timing: x\r\n y\r\n\r\n" => Err(InvalidTrailer));
chunked!(trailer_ctl_rfc9110_5_5, b"0\r\nServer-Timing: a\x01\r\n\r\n" => Err(InvalidTrailer));
chunked!(truncated_in_data_rfc9112_8, b"5\r\nhel" => Err(TruncatedBody));
chunked!(truncated_before_last_chunk_rfc9112_8, b"5\r\nhello\r\n" => Err(TruncatedBody));
chunked!(truncated_in_trailers_rfc9112_8, b"5\r\nhello\r\n0\r\nEtag: x\r\n" => Err(TruncatedBody));

#[test]
fn trailer_off_allow_list_refused_raw_dropped_data_rfc9110_6_5() {
    let input = b"5\r\nhello\r\n0\r\nX-Secret: 1\r\n\r\n";
    assert_eq!(forward(input), Err(ErrorKind::TrailerNotAllowed));
    assert_eq!(decode(input).as_deref(), Ok(&b"hello"[..]));
}

#[test]
fn raw_mode_holds_trailers_until_checked() {
    let mut dec = BodyDecoder::for_response(BodyFraming::Chunked);
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\nEtag: x\r\n"[..]);
    assert_eq!(
        dec.next_raw(&mut buf).unwrap().as_deref(),
        Some(&b"5\r\nhello\r\n0\r\n"[..])
    );
    assert_eq!(dec.next_raw(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"Etag: x\r\n");
    buf.extend_from_slice(b"X-Bad: y\r\n\r\n");
    let err = dec.next_raw(&mut buf).unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::TrailerNotAllowed, 502)
    );
}

#[test]
fn extension_length_bounded() {
    let mut input = b"1;".to_vec();
    input.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXT_BYTES));
    input.extend(b"\r\nx\r\n0\r\n\r\n");
    assert_eq!(decode(&input), Err(ErrorKind::ChunkExtensionTooLong));
}

#[test]
fn trailers_bounded() {
    let mut input = b"0\r\n".to_vec();
    for _ in 0..MAX_TRAILER_BYTES / 10 {
        input.extend(b"Etag: 12\r\n");
    }
    input.extend(b"Etag: 12\r\n\r\n");
    assert_eq!(decode(&input), Err(ErrorKind::TrailersTooLarge));
}

#[test]
fn next_message_stays_in_buffer_rfc9112_9_3_2() {
    let input = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    for raw in [true, false] {
        for step in 1..input.len() {
            let (_, rest) = run(input, step, raw).unwrap();
            assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n", "raw={raw} step={step}");
        }
    }
}

#[test]
fn shotgun_every_split_gives_the_same_result() {
    let input =
        b"5;x=y\r\nhello\r\n1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nServer-Timing: a\r\n\r\n";
    for step in 1..=input.len() {
        assert_eq!(
            run(input, step, true).unwrap().0,
            b"5\r\nhello\r\n1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nServer-Timing: a\r\n\r\n"
                .to_vec(),
            "raw step {step}: the same bytes, the extension dropped"
        );
        assert_eq!(
            run(input, step, false).unwrap().0,
            b"hello 0123456789abcdef".to_vec(),
            "data step {step}"
        );
    }
}

#[test]
fn zero_copy_chunked_pieces_point_into_the_read_buffer() {
    let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for raw in [true, false] {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(input);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
        let mut dec = BodyDecoder::new(BodyFraming::Chunked);
        let mut n = 0;
        while let Some(piece) = if raw {
            dec.next_raw(&mut buf).unwrap()
        } else {
            dec.next_data(&mut buf).unwrap()
        } {
            let p = piece.as_ptr() as usize;
            assert!(
                range.contains(&p) && p + piece.len() <= range.end,
                "piece outside the read buffer"
            );
            n += piece.len();
        }
        assert!(dec.is_done());
        assert_eq!(n, if raw { input.len() } else { 11 });
    }
}

#[test]
fn zero_copy_content_length_and_until_close() {
    for framing in [BodyFraming::ContentLength(5), BodyFraming::UntilClose] {
        let mut buf = BytesMut::from(&b"hello"[..]);
        let start = buf.as_ptr() as usize;
        let mut dec = BodyDecoder::for_response(framing);
        let piece = dec.next_raw(&mut buf).unwrap().unwrap();
        assert_eq!(piece.as_ptr() as usize, start);
        assert_eq!(&piece[..], b"hello");
    }
}

#[test]
fn content_length_body_rfc9112_6_3_6() {
    let mut dec = BodyDecoder::new(BodyFraming::ContentLength(5));
    let mut buf = BytesMut::from(&b"hel"[..]);
    assert_eq!(
        dec.next_data(&mut buf).unwrap().as_deref(),
        Some(&b"hel"[..])
    );
    assert_eq!(dec.remaining(), Some(2));
    assert_eq!(dec.next_data(&mut buf).unwrap(), None);
    assert!(!dec.is_done());
    buf.extend_from_slice(b"loGET");
    assert_eq!(dec.next_raw(&mut buf).unwrap().as_deref(), Some(&b"lo"[..]));
    assert!(dec.is_done());
    assert_eq!(&buf[..], b"GET");
    assert_eq!(dec.next_raw(&mut buf).unwrap(), None);
    assert!(dec.eof().is_ok());
}

#[test]
fn truncated_content_length_rfc9112_8() {
    let mut dec = BodyDecoder::for_response(BodyFraming::ContentLength(5));
    let mut buf = BytesMut::from(&b"hel"[..]);
    dec.next_raw(&mut buf).unwrap();
    let err = dec.eof().unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::TruncatedBody, 502));
}

#[test]
fn until_close_ends_at_eof_rfc9112_6_3_8() {
    let mut dec = BodyDecoder::for_response(BodyFraming::UntilClose);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        dec.next_raw(&mut buf).unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert!(!dec.is_done());
    assert!(dec.eof().is_ok());
    assert!(dec.is_done());
}

#[test]
fn empty_is_done_at_once() {
    let mut dec = BodyDecoder::new(BodyFraming::Empty);
    assert!(dec.is_done());
    let mut buf = BytesMut::from(&b"GET"[..]);
    assert_eq!(dec.next_raw(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"GET");
}

#[test]
fn body_limit_is_413_rfc9110_15_5_14() {
    let mut buf = BytesMut::from(&b"hello"[..]);
    let err = BodyDecoder::new(BodyFraming::ContentLength(5))
        .with_limit(4)
        .next_raw(&mut buf)
        .unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::BodyTooLarge, 413));
    assert_eq!(buf.len(), 5, "nothing handed out");
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"[..]);
    let mut dec = BodyDecoder::new(BodyFraming::Chunked).with_limit(5);
    assert!(dec.next_data(&mut buf).unwrap().is_some());
    assert_eq!(
        dec.next_data(&mut buf).unwrap_err().kind(),
        ErrorKind::BodyTooLarge
    );
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    let err = BodyDecoder::for_response(BodyFraming::UntilClose)
        .with_limit(5)
        .next_raw(&mut buf)
        .unwrap_err();
    assert_eq!((err.kind(), err.status()), (ErrorKind::BodyTooLarge, 502));
}

#[test]
fn encoder_frames_without_copying_rfc9112_7_1() {
    let data = Bytes::from_static(b"hello world, this is 26 by");
    for encode in [0, 1] {
        let mut out = Vec::new();
        let mut enc = ChunkedEncoder::new();
        if encode == 0 {
            encode_chunk(&data, &mut out);
            encode_chunk(&Bytes::new(), &mut out);
        } else {
            enc.chunk(&data, &mut out);
            enc.chunk(&Bytes::new(), &mut out);
        }
        enc.finish(&mut out);
        assert_eq!(out[1].as_ptr(), data.as_ptr(), "data is the caller's Bytes");
        let wire: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(wire, b"1a\r\nhello world, this is 26 by\r\n0\r\n\r\n");
        assert_eq!(decode(&wire).unwrap(), &data[..]);
    }
}

#[test]
fn size_line_hex() {
    let mut line = [0u8; 18];
    for (n, s) in [
        (1u64, &b"1\r\n"[..]),
        (15, b"f\r\n"),
        (16, b"10\r\n"),
        (4096, b"1000\r\n"),
        (u64::MAX, b"ffffffffffffffff\r\n"),
    ] {
        let len = size_line(n, &mut line);
        assert_eq!(&line[..len], s);
    }
}
