//! Path normalization: no panic; an accepted path's normal form is a fixed point (normalizing it
//! again borrows it), and the result is borrowed exactly when it equals the input. The first byte
//! picks the policy (bit 0: don't merge slashes, bit 1: keep encoded slashes).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use ringway::http::{EncodedSlashes, TargetPolicy, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, path)) = data.split_first() else {
        return;
    };
    let policy = TargetPolicy {
        merge_slashes: flags & 1 == 0,
        encoded_slashes: if flags & 2 == 0 {
            EncodedSlashes::Reject
        } else {
            EncodedSlashes::Keep
        },
    };
    if let Ok(out) = normalize_path(path, &policy) {
        assert_eq!(matches!(out, Cow::Borrowed(_)), out[..] == path[..]);
        let again = normalize_path(&out, &policy).expect("a normal path is accepted");
        assert!(
            matches!(again, Cow::Borrowed(_)),
            "not idempotent: {out:?} -> {again:?}"
        );
    }
});
