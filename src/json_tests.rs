//! JSON validator tests: RFC 8259 cases, every split of a text into two pieces, and a property
//! test against serde_json (which builds the value, so it checks UTF-8 in strings too).

use proptest::prelude::*;

use super::*;

fn pieces(text: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c.clamp(at, text.len());
        out.push(Bytes::copy_from_slice(&text[at..c]));
        at = c;
    }
    out.push(Bytes::copy_from_slice(&text[at..]));
    out
}

fn check(text: &[u8]) -> bool {
    let whole = is_json(&[Bytes::copy_from_slice(text)]);
    for at in 0..=text.len() {
        assert_eq!(
            is_json(&pieces(text, &[at])),
            whole,
            "split at {at} of {:?}",
            String::from_utf8_lossy(text)
        );
    }
    whole
}

#[test]
fn valid_texts_rfc8259() {
    for t in [
        &b"{}"[..],
        b"[]",
        b" \t\r\n{\"a\" : [1, -0.5e+3, 0, 10E2, true, false, null, \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"]} \n",
        b"\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
        b"0",
        b"-12.75",
        b"null",
        b"[[[[]]],{}]",
        b"{\"a\":{\"b\":{}}}",
    ] {
        assert!(check(t), "{:?} is valid JSON", String::from_utf8_lossy(t));
    }
}

#[test]
fn invalid_texts_rfc8259() {
    for t in [
        &b""[..],
        b" ",
        b"{",
        b"{\"a\"}",
        b"{\"a\":}",
        b"{\"a\":1,}",
        b"[1,]",
        b"[1 2]",
        b"{1:2}",
        b"01",
        b"1.",
        b"-",
        b"1e",
        b".5",
        b"+1",
        b"tru",
        b"nul",
        b"True",
        b"\"a",
        b"\"\\x\"",
        b"\"\\u12g4\"",
        b"\"tab\there\"",
        b"{} {}",
        b"[1]]",
        b"]",
        b"{\"s\":\"\xff\"}",
        b"\"\xc3\"",
        b"\"\xed\xa0\x80\"",
        b"'a'",
    ] {
        assert!(
            !check(t),
            "{:?} is not valid JSON",
            String::from_utf8_lossy(t)
        );
    }
}

#[test]
fn depth_is_bounded() {
    let ok = [b"[".repeat(MAX_DEPTH), b"]".repeat(MAX_DEPTH)].concat();
    assert!(is_json(&[Bytes::from(ok)]));
    let deep = [b"[".repeat(MAX_DEPTH + 1), b"]".repeat(MAX_DEPTH + 1)].concat();
    assert!(!is_json(&[Bytes::from(deep)]));
}

/// JSON-ish texts: mostly valid values, with bytes that matter sprinkled in.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        any::<i32>().prop_map(|n| n.to_string().into_bytes()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}").into_bytes()),
        "[a-z \\\\\"\u{e9}\u{1f600}]{0,6}".prop_map(|s| serde_json::to_vec(&s).unwrap()),
        // Long enough for the eight-byte string scan, with rare bytes that stop it.
        "[a-z\u{e9}\u{800}\u{1f600}\\\\\"\t]{8,40}".prop_map(|s| serde_json::to_vec(&s).unwrap()),
    ];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                let mut out = b"[".to_vec();
                out.extend(items.join(&b","[..]));
                out.push(b']');
                out
            }),
            proptest::collection::vec(("[a-z]{0,3}", inner), 0..4).prop_map(|items| {
                let parts: Vec<Vec<u8>> = items
                    .into_iter()
                    .map(|(k, v)| [serde_json::to_vec(&k).unwrap(), b":".to_vec(), v].concat())
                    .collect();
                [b"{".to_vec(), parts.join(&b","[..]), b"}".to_vec()].concat()
            }),
        ]
    });
    let mutation = prop_oneof![
        Just(None),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                Just(b','),
                Just(b'"'),
                Just(b'\\'),
                Just(b'}'),
                Just(b']'),
                Just(b'0'),
                Just(b'.'),
                Just(b' '),
                Just(0xff),
                Just(0xc3),
                Just(0x01),
                Just(b'e'),
                Just(b'-'),
            ]
        )
            .prop_map(Some),
    ];
    (value, mutation, any::<bool>()).prop_map(|(mut v, m, delete)| {
        if let Some((at, b)) = m
            && !v.is_empty()
        {
            let i = at.index(v.len());
            if delete {
                v.remove(i);
            } else {
                v.insert(i, b);
            }
        }
        v
    })
}

proptest! {
    #[test]
    fn agrees_with_serde_json(t in text(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let want = serde_json::from_slice::<serde_json::Value>(&t);
        // RFC 8259 §6 lets a parser limit the range of numbers; serde_json refuses what an f64
        // cannot hold, the grammar (and so this validator) does not.
        prop_assume!(!want.as_ref().is_err_and(|e| e.to_string().contains("number out of range")));
        let want = want.is_ok();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (t.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(is_json(&pieces(&t, &cuts)), want, "{:?}", String::from_utf8_lossy(&t));
    }
}

proptest! {
    #[test]
    fn string_run_finds_the_first_stop_byte(
        s in proptest::collection::vec(prop_oneof![
            4 => 0x20u8..0x7f,
            1 => Just(b'"'),
            1 => Just(b'\\'),
            1 => 0u8..0x20,
            1 => 0x80u8..=0xff,
        ], 0..40),
        non_ascii: bool,
    ) {
        let want = s
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20 || (non_ascii && b >= 0x80))
            .unwrap_or(s.len());
        prop_assert_eq!(string_run(&s, non_ascii), want);
    }
}
