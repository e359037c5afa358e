//! The fan-out's JSON validator (src/json.rs) against serde_json, on any bytes cut into pieces
//! (the first byte picks the piece size): they agree, except where serde_json refuses a number
//! an f64 cannot hold (RFC 8259 §6 lets a parser limit the range; the grammar does not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::Bytes;

fuzz_target!(|data: &[u8]| {
    let Some((&step, text)) = data.split_first() else {
        return;
    };
    let pieces: Vec<Bytes> = text
        .chunks(usize::from(step).max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    let want = serde_json::from_slice::<serde_json::Value>(text);
    if want
        .as_ref()
        .is_err_and(|e| e.to_string().contains("number out of range"))
    {
        return;
    }
    assert_eq!(
        ringway::json::is_json(&pieces),
        want.is_ok(),
        "{}",
        text.escape_ascii()
    );
});
