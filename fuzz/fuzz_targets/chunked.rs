//! Chunked decoder in raw and data mode, input delivered in pieces (the first byte picks the
//! piece size). Raw mode hands out the input with chunk extensions dropped: what it forwards
//! decodes to a prefix of the input's data, and forwarding it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{BodyDecoder, BodyFraming, BytesMut};

/// Feeds `data` in `step`-byte pieces; returns what was handed out and whether the body ended
/// without error.
fn run(data: &[u8], step: usize, raw: bool) -> (Vec<u8>, bool) {
    let mut dec = BodyDecoder::for_response(BodyFraming::Chunked);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match if raw {
                dec.next_raw(&mut buf)
            } else {
                dec.next_data(&mut buf)
            } {
                Ok(Some(b)) => out.extend_from_slice(&b),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, dec.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let (forwarded, raw_done) = run(data, step, true);
    let (decoded, data_done) = run(data, step, false);
    // Raw mode is the stricter one (its trailer allow-list).
    assert!(
        !raw_done || data_done,
        "raw mode completed a body data mode refused"
    );
    let (again, _) = run(&forwarded, forwarded.len().max(1), true);
    assert_eq!(again, forwarded, "forwarded framing carries no extension");
    let (data_of_forwarded, _) = run(&forwarded, forwarded.len().max(1), false);
    assert!(
        decoded.starts_with(&data_of_forwarded),
        "raw forwarding changed the data"
    );
});
