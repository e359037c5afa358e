//! Differential framing test (issue 16 §5, the HTTP Garden method): structured random request
//! streams (tests/common/framing_gen.rs) go to ringway with a recording tap and backend behind it;
//! a strict RFC 9112 reference written apart from ringway's codec (tests/common/reference.rs)
//! delimits the same bytes, and tests/common/differential.rs judges: nothing forwarded that the
//! reference rejects, no other boundaries, no refusal the reference would not make beyond the
//! listed strictness exceptions. A deterministic corpus: the same seeds on every run.
//!
//! Two levels: the codec alone (many streams, fast), and the running gateway on both drivers.

mod common;

use ringway::both_drivers;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::backend::{Backend, BackendSpec};
use common::differential::{Observed, codec_observe, judge, prepare, strictness_exception};
use common::framing_gen::stream;
use common::gateway::{Client, Gateway, preamble};
use common::reference::{End, Parsed, parse_stream};
use common::tap::Tap;

/// Streams run through the codec model.
const CODEC_CASES: u64 = 20_000;

/// Streams sent to each driver's gateway.
const GATEWAY_CASES: u64 = 1000;

/// Counts what a corpus exercised, printed at the end (visible with `--nocapture`).
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, want: &Parsed) {
        let key = match &want.end {
            End::Complete => format!("accepted, {} message(s)", want.messages.len()),
            End::Incomplete => "incomplete".to_string(),
            End::Reject(why) => format!("rejected: {why}"),
        };
        *self.0.entry(key).or_default() += 1;
        for m in &want.messages {
            if let Some(e) = strictness_exception(m) {
                *self.0.entry(format!("exception: {e}")).or_default() += 1;
            }
        }
    }

    fn print(&self, what: &str) {
        println!("{what}:");
        for (k, n) in &self.0 {
            println!("  {n:6}  {k}");
        }
    }
}

fn show(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}

/// Stream `seed` as sent, and the reference's verdict on it (see [`prepare`]).
fn case(seed: u64) -> (Vec<u8>, Parsed) {
    prepare(stream(seed))
}

#[test]
fn codec_agrees_with_the_reference() {
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for seed in 0..CODEC_CASES {
        let (input, want) = case(seed);
        tally.add(&want);
        if let Err(e) = judge(&want, &codec_observe(&input)) {
            failures.push(format!("seed {seed}: {e}\n  input: {}", show(&input)));
        }
    }
    tally.print(&format!("codec: {CODEC_CASES} streams"));
    assert!(
        failures.is_empty(),
        "{} of {CODEC_CASES} streams disagree with the reference; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
}

/// The reference's verdicts cover every class the generator aims at: a generator that stopped
/// producing (say) smuggling attempts would make the corpus pass vacuously.
#[test]
fn corpus_covers_accepts_rejects_and_pipelining() {
    let mut tally = Tally::default();
    for seed in 0..CODEC_CASES {
        tally.add(&parse_stream(&stream(seed)));
    }
    let has = |prefix: &str| tally.0.keys().any(|k| k.starts_with(prefix));
    for class in [
        "accepted, 1",
        "accepted, 2",
        "incomplete",
        "rejected: bare LF",
        "rejected: bare CR",
        "rejected: obs-fold",
        "rejected: field name not a token",
        "rejected: content-length value",
        "rejected: conflicting content-length",
        "rejected: content-length and transfer-encoding",
        "rejected: chunked not final",
        "rejected: chunked twice",
        "rejected: chunk extension",
        "rejected: chunk data not followed by CRLF",
        "rejected: host count",
        "exception: unknown transfer coding",
        "exception: trailer not on the allow-list",
    ] {
        assert!(has(class), "no stream in the corpus is `{class}`");
    }
}

/// Sends `input` on a fresh connection; returns the statuses answered. Reads as many answers
/// as the reference has valid messages (one more, to see a refusal, when it does not accept
/// everything), each within a short timeout.
fn send(gw: &Gateway, input: &[u8], want: &Parsed) -> Vec<u16> {
    let mut c = Client::connect(gw.addr);
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let _ = c.stream().write_all(input);
    let expect = want.messages.len() + usize::from(matches!(want.end, End::Reject(_)));
    let mut answers = Vec::new();
    while answers.len() < expect {
        match c.read_response(false) {
            Some(r) => {
                answers.push(r.status);
                if r.status >= 400 {
                    break;
                }
            }
            None => break,
        }
    }
    answers
}

both_drivers!(gateway_agrees_with_the_reference, |driver| {
    let backend = Backend::tcp(BackendSpec::default());
    let tap = Tap::new(backend.addr.unwrap());
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(&format!(
        "[[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n",
        tap.endpoint()
    ));
    let gw = Gateway::start(&cfg, addr, admin);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for seed in 0..GATEWAY_CASES {
        let (input, want) = case(seed);
        tally.add(&want);
        tap.clear();
        let answers = send(&gw, &input, &want);
        if want.end != End::Complete {
            // A body cut short may still be on its way through the tap.
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut seen = Observed {
            answers,
            ..Observed::default()
        };
        seen.forwarded_from(&tap.received());
        if let Err(e) = judge(&want, &seen) {
            failures.push(format!("seed {seed}: {e}\n  input: {}", show(&input)));
        }
    }
    tally.print(&format!("gateway ({driver}): {GATEWAY_CASES} streams"));
    assert!(
        failures.is_empty(),
        "{driver}: {} of {GATEWAY_CASES} streams disagree with the reference; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
});
