//! Differential framing (issue 16 §5) at the codec level: ringway's request codec, driven as
//! the connection loop drives it, against the strict RFC 9112 reference of the integration
//! tests (tests/common/reference.rs), judged by the same rules (tests/common/differential.rs).
//! First byte even: the rest is the stream itself; odd: the rest seeds the structured generator
//! (tests/common/framing_gen.rs), so the fuzzer explores mutations of well-formed requests too.
#![no_main]

#[path = "../../tests/common/differential.rs"]
mod differential;
#[path = "../../tests/common/framing_gen.rs"]
mod framing_gen;
#[path = "../../tests/common/reference.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let seed = rest.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        framing_gen::stream(seed)
    };
    // As the integration test does: a blank line after a stream the reference does not accept.
    let (input, want) = differential::prepare(input);
    if let Err(e) = differential::judge(&want, &differential::codec_observe(&input)) {
        panic!("{e}\ninput: {}", input.escape_ascii());
    }
});
