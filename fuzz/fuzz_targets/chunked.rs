//! Chunked decoder in raw and data mode, input delivered in pieces (the first byte picks the
//! piece size). Raw mode must hand out a prefix of the input unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{BodyDecoder, BodyFraming, BytesMut};

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    for raw in [true, false] {
        let mut dec = BodyDecoder::for_response(BodyFraming::Chunked);
        let mut buf = BytesMut::new();
        let mut forwarded = Vec::new();
        'feed: for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match if raw {
                    dec.next_raw(&mut buf)
                } else {
                    dec.next_data(&mut buf)
                } {
                    Ok(Some(b)) => forwarded.extend_from_slice(&b),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        if raw {
            assert!(
                data.starts_with(&forwarded),
                "raw mode must forward the input unchanged"
            );
        }
    }
});
