//! The verdict of a differential framing run: what ringway did with a stream (the messages it
//! forwarded, the statuses it answered) against what the RFC 9112 reference derives from the
//! same bytes. The rules, and the only strictness ringway may show beyond the reference:
//!
//! - ringway never forwards a message the reference does not delimit as valid, and every
//!   message it forwards has the reference's method, target and body (its boundaries);
//! - ringway rejects (4xx/5xx) exactly where the reference does, or earlier only at a message
//!   that hits one of [`strictness_exception`]'s cases or a configured limit (413, 414, 431);
//! - when the reference accepts everything, ringway answers every message.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use ringway::http::{
    BodyDecoder, BytesMut, Forwarded, HeadScanner, Limits, Status, parse_request_head,
    write_forward_request_head,
};

use super::reference::{End, Message, Parsed, parse_stream};

/// What ringway did with one stream.
#[derive(Debug, Default)]
pub struct Observed {
    /// The messages ringway forwarded, as the reference delimits the forwarded bytes (complete
    /// ones only: a body cut short by a rejection mid-stream is not a message).
    pub forwarded: Vec<Message>,
    /// How the reference ends the forwarded bytes: never [`End::Reject`] (ringway writing what
    /// the reference refuses), [`End::Incomplete`] for a body cut short.
    pub forwarded_end: Option<End>,
    /// The statuses ringway answered, in order.
    pub answers: Vec<u16>,
}

impl Observed {
    /// What ringway forwarded, delimited by the reference.
    pub fn forwarded_from(&mut self, bytes: &[u8]) {
        let p = parse_stream(bytes);
        self.forwarded = p.messages;
        self.forwarded_end = Some(p.end);
    }
}

/// Refusals for a configured limit (`[limits]`): a body over `max_body_bytes` (413, refused as
/// soon as a chunk size or Content-Length announces it), a request line or head over
/// `max_head_bytes` (414, 431). Allowed wherever they come.
const LIMIT_STATUSES: &[u16] = &[413, 414, 431];

/// Transfer codings ringway knows (it answers 501 to others, RFC 9112 §6.1: "A server that
/// receives a request message with a transfer coding it does not understand SHOULD respond with
/// 501").
const KNOWN_CODINGS: &[&[u8]] = &[
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"chunked",
];

/// Why ringway may refuse a message the reference accepts, or `None`. Each is a documented
/// strictness of ringway (README "Fuzzing" lists them):
/// - a transfer coding it does not know: 501 (RFC 9112 §6.1 SHOULD);
/// - a trailer not on `ALLOWED_TRAILERS` when forwarding raw (README "Reverse proxy": trailers
///   are forwarded only from an allow-list, so a framing or routing field cannot arrive late);
/// - a path that climbs above the root, or has an encoded slash or a malformed `%`: 400 (README
///   "Request target normalization"; forwarded targets are compared after normalization);
/// - a Host with a port and no name, or a port above 65535: 400.
pub fn strictness_exception(m: &Message) -> Option<&'static str> {
    if normalized_target(&m.target).is_none() {
        return Some("path refused by normalization (400)");
    }
    // RFC 9110 §7.2 allows `Host: :80` (empty reg-name) and any number of port digits; ringway
    // wants a host name with a port, and a port that is one (at most 65535).
    let (name, port) = match m.host.iter().rposition(|&b| b == b':') {
        Some(c) if !m.host[c..].contains(&b']') => (&m.host[..c], Some(&m.host[c + 1..])),
        _ => (&m.host[..], None),
    };
    if port.is_some() && name.is_empty() {
        return Some("Host with a port and no host name (400)");
    }
    if port.is_some_and(|p| {
        p.len() > 5
            || std::str::from_utf8(p).is_ok_and(|p| p.parse::<u32>().is_ok_and(|n| n > 65535))
    }) {
        return Some("Host port above 65535 (400)");
    }
    if m.codings.iter().any(|c| !KNOWN_CODINGS.contains(&&c[..])) {
        return Some("unknown transfer coding (501)");
    }
    if m.trailers
        .iter()
        .any(|t| !ringway::http::ALLOWED_TRAILERS.contains(&std::str::from_utf8(t).unwrap_or("")))
    {
        return Some("trailer not on the allow-list");
    }
    None
}

/// `input` as the harness sends it, and the reference's verdict on that. A stream the
/// reference does not accept whole gets a blank line appended: ringway rejects a bad byte as
/// soon as it sees it, or looks for the end of a head before parsing it, while the reference
/// judges whole lines; with the blank line both have everything they need to decide. A stream
/// the reference rejects keeps its verdict (the reason comes before the appended bytes).
pub fn prepare(mut input: Vec<u8>) -> (Vec<u8>, Parsed) {
    let want = parse_stream(&input);
    if want.end == End::Complete {
        return (input, want);
    }
    input.extend_from_slice(b"\r\n\r\n");
    let padded = parse_stream(&input);
    if let End::Reject(_) = want.end {
        assert_eq!(padded, want, "padding changed the verdict");
    }
    (input, padded)
}

/// The target ringway forwards for `target` (README "Request target normalization": the path
/// normalized, the query as sent), or `None` when normalization refuses the path.
fn normalized_target(target: &[u8]) -> Option<Vec<u8>> {
    let q = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let path = ringway::http::normalize_path(&target[..q], &ringway::http::TargetPolicy::default())
        .ok()?;
    Some([&path[..], &target[q..]].concat())
}

/// Same boundaries: method, (normalized) target and body.
fn same(forwarded: &Message, reference: &Message) -> bool {
    (&forwarded.method, &forwarded.body) == (&reference.method, &reference.body)
        && normalized_target(&reference.target).as_deref() == Some(&forwarded.target[..])
}

/// Checks `seen` against the reference's `want`. `Err` says what went wrong.
pub fn judge(want: &Parsed, seen: &Observed) -> Result<(), String> {
    let valid = &want.messages;
    if let Some(End::Reject(why)) = &seen.forwarded_end {
        return Err(format!(
            "ringway forwarded bytes the reference rejects ({why}) after {} messages",
            seen.forwarded.len()
        ));
    }
    let successes = seen.answers.iter().take_while(|&&s| s < 400).count();
    if successes > valid.len() {
        return Err(format!(
            "answered {successes} messages, the reference delimits {} valid ones (end: {:?})",
            valid.len(),
            want.end
        ));
    }
    if seen.forwarded.len() > valid.len() {
        return Err(format!(
            "forwarded {} messages, the reference delimits {} valid ones (end: {:?})",
            seen.forwarded.len(),
            valid.len(),
            want.end
        ));
    }
    for (i, (f, v)) in seen.forwarded.iter().zip(valid).enumerate() {
        if !same(f, v) {
            return Err(format!(
                "message {i} forwarded with other boundaries: forwarded {f:?}, reference {v:?}"
            ));
        }
    }
    let rejected_at = seen.answers.iter().position(|&s| s >= 400);
    if let Some(k) = rejected_at
        && LIMIT_STATUSES.contains(&seen.answers[k])
    {
        // A configured limit, not a framing verdict: fine anywhere, as long as nothing from
        // that message on was forwarded.
        return if seen.forwarded.len() <= k {
            Ok(())
        } else {
            Err(format!(
                "message {k} was refused ({}) and forwarded",
                seen.answers[k]
            ))
        };
    }
    if let Some(k) = rejected_at {
        if k < valid.len() {
            // Stricter than the reference: allowed only for a listed exception.
            if strictness_exception(&valid[k]).is_none() {
                return Err(format!(
                    "message {k} answered {} but the reference accepts it: {:?}",
                    seen.answers[k], valid[k]
                ));
            }
            if seen.forwarded.len() > k {
                return Err(format!("message {k} was refused and forwarded"));
            }
            return Ok(());
        }
        if want.end != End::Complete && k == valid.len() {
            if let End::Reject(_) = want.end {
                return ok_forwarded(seen, valid.len());
            }
            // The reference waits for more bytes; ringway refused early: allowed only for a
            // listed exception the message has already hit.
            if want
                .partial
                .as_ref()
                .is_some_and(|m| strictness_exception(m).is_some())
            {
                return ok_forwarded(seen, valid.len());
            }
            return Err(format!(
                "message {k} answered {} but the reference needs more bytes to judge it",
                seen.answers[k]
            ));
        }
        return Err(format!(
            "status {} at {k}, after every valid message",
            seen.answers[k]
        ));
    }
    match &want.end {
        End::Complete | End::Incomplete => {
            if seen.answers.len() != valid.len() {
                return Err(format!(
                    "answered {} of the {} messages the reference accepts (end: {:?})",
                    seen.answers.len(),
                    valid.len(),
                    want.end
                ));
            }
            ok_forwarded(seen, valid.len())
        }
        End::Reject(why) => Err(format!(
            "the reference rejects message {} ({why}), ringway answered {:?} and did not refuse it",
            valid.len(),
            seen.answers
        )),
    }
}

fn ok_forwarded(seen: &Observed, n: usize) -> Result<(), String> {
    if seen.forwarded.len() == n {
        Ok(())
    } else {
        Err(format!(
            "forwarded {} of the {n} valid messages",
            seen.forwarded.len()
        ))
    }
}

/// What ringway's codec does with `input`, driven as the connection loop drives it: parse a
/// head, delimit its body in forwarding mode, write the forwarded head, next.
pub fn codec_observe(input: &[u8]) -> Observed {
    let mut buf = BytesMut::from(input);
    let mut obs = Observed::default();
    let mut forwarded = Vec::new();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    while !buf.is_empty() {
        let head = match parse_request_head(&mut buf, &mut HeadScanner::new(), &Limits::default()) {
            Ok(Status::Complete(h)) => h,
            Ok(Status::Partial) => break,
            Err(e) => {
                obs.answers.push(e.status());
                break;
            }
        };
        let mut body = BodyDecoder::new(head.framing()).with_limit(10 << 20);
        let mut raw = Vec::new();
        loop {
            match body.next_raw(&mut buf) {
                Ok(Some(piece)) => raw.extend_from_slice(&piece),
                Ok(None) => break,
                Err(e) => {
                    obs.answers.push(e.status());
                    obs.forwarded_from(&forwarded);
                    return obs;
                }
            }
        }
        if !body.is_done() {
            break;
        }
        let mut out = BytesMut::new();
        write_forward_request_head(&mut out, &head, &Forwarded::new(ip, b"up"));
        forwarded.extend_from_slice(&out);
        forwarded.extend_from_slice(&raw);
        obs.answers.push(200);
        if !head.keep_alive() {
            // The connection loop closes after answering.
            break;
        }
    }
    obs.forwarded_from(&forwarded);
    obs
}
