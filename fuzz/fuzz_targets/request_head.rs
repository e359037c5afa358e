//! Request head parser, fed in two reads (the first byte picks the split), then the body decoder
//! and the forwarding writer on anything accepted. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{
    BodyDecoder, BytesMut, Forwarded, HeadScanner, Limits, Status, parse_request_head,
    write_forward_request_head,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(data.len());
    let limits = Limits {
        max_head_bytes: 4096,
        max_headers: 32,
    };
    let mut scan = HeadScanner::new();
    let mut buf = BytesMut::from(&data[..at]);
    let mut result = parse_request_head(&mut buf, &mut scan, &limits);
    if matches!(result, Ok(Status::Partial)) {
        buf.extend_from_slice(&data[at..]);
        result = parse_request_head(&mut buf, &mut scan, &limits);
    }
    if let Ok(Status::Complete(head)) = result {
        let mut out = BytesMut::new();
        write_forward_request_head(
            &mut out,
            &head,
            &Forwarded::new([127, 0, 0, 1].into(), b"up"),
        );
        let mut dec = BodyDecoder::new(head.framing());
        while let Ok(Some(_)) = dec.next_raw(&mut buf) {}
    }
});
