//! Path normalization tests: a table by RFC 3986 section, the bypasses, and property tests
//! against a literal transcription of RFC 3986 §5.2.4.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

const STRICT: TargetPolicy = TargetPolicy {
    merge_slashes: true,
    encoded_slashes: EncodedSlashes::Reject,
};
const KEEP: TargetPolicy = TargetPolicy {
    merge_slashes: true,
    encoded_slashes: EncodedSlashes::Keep,
};
const NO_MERGE: TargetPolicy = TargetPolicy {
    merge_slashes: false,
    encoded_slashes: EncodedSlashes::Reject,
};

/// `norm!(name, policy, [(input, Ok(expected) | Err(kind)), ...])`.
macro_rules! norm {
    ($name:ident, $policy:expr, [$(($input:expr, $want:expr)),* $(,)?]) => {
        #[test]
        fn $name() {
            $(
                let got = normalize_path($input, &$policy);
                let want: Result<&[u8], ErrorKind> = $want;
                assert_eq!(
                    got.as_deref().map_err(|e| *e),
                    want,
                    "normalizing {:?}: expected {:?}, got {:?}",
                    String::from_utf8_lossy($input),
                    want.map(String::from_utf8_lossy),
                    got.as_deref().map(String::from_utf8_lossy),
                );
            )*
        }
    };
}

norm!(
    already_normal_paths_are_unchanged,
    STRICT,
    [
        (b"/", Ok(b"/")),
        (b"/admin", Ok(b"/admin")),
        (b"/a/b/", Ok(b"/a/b/")),
        (b"/a%20b", Ok(b"/a%20b")),
        (b"/caf%C3%A9", Ok(b"/caf%C3%A9")),
        (b"/a.b/..c/c..", Ok(b"/a.b/..c/c..")),
        (b"/...", Ok(b"/...")),
    ]
);

norm!(
    percent_encoding_rfc3986_6_2_2_2,
    STRICT,
    [
        // Unreserved characters are decoded (ALPHA DIGIT - . _ ~, §2.3).
        (b"/%61dmin", Ok(b"/admin")),
        (b"/%41%5a%30%2D%2e%5F%7E", Ok(b"/AZ0-._~")),
        // Everything else keeps its encoding, in upper case (§2.1).
        (b"/a%2fb", Err(ErrorKind::EncodedSlash)),
        (b"/caf%c3%a9", Ok(b"/caf%C3%A9")),
        (b"/%3f%23%25", Ok(b"/%3F%23%25")),
        // A `%` must be followed by two hex digits (§2.1 pct-encoded).
        (b"/%", Err(ErrorKind::InvalidTarget)),
        (b"/%4", Err(ErrorKind::InvalidTarget)),
        (b"/%zz", Err(ErrorKind::InvalidTarget)),
        (b"/%%41", Err(ErrorKind::InvalidTarget)),
    ]
);

norm!(
    dot_segments_rfc3986_5_2_4,
    STRICT,
    [
        (b"/public/../admin", Ok(b"/admin")),
        (b"/public/%2e%2e/admin", Ok(b"/admin")),
        (b"/public/.%2E/admin", Ok(b"/admin")),
        (b"/a/./b", Ok(b"/a/b")),
        (b"/a/b/.", Ok(b"/a/b/")),
        (b"/a/b/..", Ok(b"/a/")),
        (b"/a/b/../", Ok(b"/a/")),
        (b"/.", Ok(b"/")),
        (b"/a/..", Ok(b"/")),
        (b"/a/b/c/./../../g", Ok(b"/a/g")),
        (b"/mid/content=5/../6", Ok(b"/mid/6")),
        // Climbing above the root is refused, not clamped.
        (b"/..", Err(ErrorKind::PathAboveRoot)),
        (b"/../admin", Err(ErrorKind::PathAboveRoot)),
        (b"/a/../../admin", Err(ErrorKind::PathAboveRoot)),
        (b"/%2e%2e/admin", Err(ErrorKind::PathAboveRoot)),
    ]
);

norm!(
    merged_slashes,
    STRICT,
    [
        (b"//admin", Ok(b"/admin")),
        (b"/a//b///c", Ok(b"/a/b/c")),
        (b"//", Ok(b"/")),
        (b"/a//", Ok(b"/a/")),
        (b"//..//admin", Err(ErrorKind::PathAboveRoot)),
        (b"/a//..//b", Ok(b"/b")),
    ]
);

norm!(
    unmerged_slashes_follow_rfc3986,
    NO_MERGE,
    [
        (b"//admin", Ok(b"//admin")),
        (b"/a//b", Ok(b"/a//b")),
        (b"/a//..", Ok(b"/a/")),
        (b"//..", Ok(b"/")),
        (b"/a/b/../../..", Err(ErrorKind::PathAboveRoot)),
    ]
);

norm!(
    encoded_slashes_rejected_by_default,
    STRICT,
    [
        (b"/a%2Fb", Err(ErrorKind::EncodedSlash)),
        (b"/a%5cb", Err(ErrorKind::EncodedSlash)),
        (b"/a\\b", Err(ErrorKind::EncodedSlash)),
        (b"/..\\admin", Err(ErrorKind::EncodedSlash)),
    ]
);

norm!(
    encoded_slashes_kept_when_asked,
    KEEP,
    [
        (b"/a%2Fb", Ok(b"/a%2Fb")),
        (b"/a%2fb", Ok(b"/a%2Fb")),
        (b"/a%5Cb", Ok(b"/a%5Cb")),
        (b"/a\\b", Ok(b"/a\\b")),
        // A kept `%2F` is data: it never splits a segment, so `..%2F` is not a dot-segment.
        (b"/x/..%2Fadmin", Ok(b"/x/..%2Fadmin")),
        (b"/x/%2e%2e%2f", Ok(b"/x/..%2F")),
    ]
);

norm!(
    not_a_path,
    STRICT,
    [
        (b"", Err(ErrorKind::InvalidTarget)),
        (b"admin", Err(ErrorKind::InvalidTarget)),
    ]
);

#[test]
fn unchanged_paths_are_borrowed() {
    for p in [&b"/"[..], b"/admin", b"/a/b/", b"/caf%C3%A9"] {
        assert!(
            matches!(normalize_path(p, &STRICT), Ok(Cow::Borrowed(_))),
            "{p:?} should be borrowed"
        );
    }
    for p in [&b"/a%2Fb"[..], b"/a\\b"] {
        assert!(matches!(normalize_path(p, &KEEP), Ok(Cow::Borrowed(_))));
    }
    assert!(matches!(
        normalize_path(b"//a", &NO_MERGE),
        Ok(Cow::Borrowed(_))
    ));
    assert!(matches!(normalize_path(b"//a", &STRICT), Ok(Cow::Owned(_))));
}

/// RFC 3986 §5.2.4 transcribed step by step over an input buffer and an output buffer, `None`
/// when a `..` would remove past the root (where the RFC silently stops).
fn rfc_remove_dot_segments(input: &[u8]) -> Option<Vec<u8>> {
    let mut input = input.to_vec();
    let mut output: Vec<u8> = Vec::new();
    while !input.is_empty() {
        if input.starts_with(b"../") {
            // A: remove the prefix.
            input.drain(..3);
        } else if input.starts_with(b"./") || input.starts_with(b"/./") {
            // A: remove `./`; B: `/./` becomes `/`.
            input.drain(..2);
        } else if input == b"/." {
            input = b"/".to_vec();
        } else if input.starts_with(b"/../") || input == b"/.." {
            if input == b"/.." {
                input = b"/".to_vec();
            } else {
                input.drain(..3);
            }
            let cut = output.iter().rposition(|&b| b == b'/')?;
            output.truncate(cut);
        } else if input == b"." || input == b".." {
            input.clear();
        } else {
            let start = usize::from(input[0] == b'/');
            let end = input[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(input.len(), |p| p + start);
            output.extend(input.drain(..end));
        }
    }
    Some(output)
}

/// Paths from a small alphabet rich in the characters that matter.
fn path() -> impl Strategy<Value = Vec<u8>> {
    let atom = prop_oneof![
        Just(&b"/"[..]),
        Just(&b"."[..]),
        Just(&b".."[..]),
        Just(&b"a"[..]),
        Just(&b"%2e"[..]),
        Just(&b"%2E"[..]),
        Just(&b"%2f"[..]),
        Just(&b"%5C"[..]),
        Just(&b"%41"[..]),
        Just(&b"%c3"[..]),
        Just(&b"%"[..]),
        Just(&b"\\"[..]),
        Just(&b"~"[..]),
        Just(&b"F"[..]),
    ];
    proptest::collection::vec(atom, 0..12).prop_map(|atoms| {
        let mut p = b"/".to_vec();
        for a in atoms {
            p.extend_from_slice(a);
        }
        p
    })
}

fn policy() -> impl Strategy<Value = TargetPolicy> {
    (any::<bool>(), any::<bool>()).prop_map(|(merge_slashes, keep)| TargetPolicy {
        merge_slashes,
        encoded_slashes: if keep {
            EncodedSlashes::Keep
        } else {
            EncodedSlashes::Reject
        },
    })
}

proptest! {
    /// The output is normal: normalizing it again borrows it; and a borrowed result is the input.
    #[test]
    fn normalization_is_idempotent(p in path(), policy in policy()) {
        if let Ok(out) = normalize_path(&p, &policy) {
            if let Cow::Borrowed(b) = &out {
                prop_assert_eq!(*b, &p[..]);
            } else {
                prop_assert_ne!(&out[..], &p[..], "an unchanged path must be borrowed");
            }
            let again = normalize_path(&out, &policy);
            prop_assert!(matches!(again, Ok(Cow::Borrowed(_))), "{:?} -> {:?}", out, again);
            prop_assert!(out.starts_with(b"/"));
            if policy.merge_slashes {
                prop_assert!(!out.windows(2).any(|w| w == b"//"));
            }
        }
    }

    /// Without slash merging the result is RFC 3986 §5.2.4's, and "above the root" is exactly
    /// where the RFC's algorithm runs out of output to remove.
    #[test]
    fn dot_segments_match_rfc3986_5_2_4(p in path()) {
        let decoded = normalize_percent(&p, &KEEP);
        let ours = normalize_path(&p, &TargetPolicy { merge_slashes: false, ..KEEP });
        match decoded {
            Err(e) => prop_assert_eq!(ours, Err(e)),
            Ok(d) => match rfc_remove_dot_segments(&d) {
                None => prop_assert_eq!(ours, Err(ErrorKind::PathAboveRoot)),
                Some(want) => prop_assert_eq!(ours.as_deref().ok(), Some(&want[..])),
            },
        }
    }

    /// Merging slashes first and then removing dot-segments gives the same path.
    #[test]
    fn merging_is_dot_removal_after_collapsing(p in path()) {
        let mut collapsed = Vec::new();
        for &b in &p {
            if !(b == b'/' && collapsed.last() == Some(&b'/')) {
                collapsed.push(b);
            }
        }
        let merged = normalize_path(&p, &KEEP);
        let plain = normalize_path(&collapsed, &TargetPolicy { merge_slashes: false, ..KEEP });
        prop_assert_eq!(merged, plain);
    }

    /// No panic, and every accepted output is free of what the policy refuses.
    #[test]
    fn arbitrary_bytes(p in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(out) = normalize_path(&p, &STRICT) {
            prop_assert!(!out.contains(&b'\\'));
            let upper = out.to_ascii_uppercase();
            prop_assert!(!upper.windows(3).any(|w| w == b"%2F" || w == b"%5C"));
        }
    }
}
