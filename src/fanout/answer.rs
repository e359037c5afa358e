//! The fan-out's answer: the JSON document assembled from literal pieces and the backends' body
//! `Bytes` (no copy but the escaping of non-JSON bodies), the JSON check, the head with
//! Server-Timing and Ringway-Partial, and the vectored write.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::{ANSWER_BATCH, CallResult, FanoutPlan, Results};
use crate::audit;
use crate::http::{ConnAfter, HeadWriter};
use crate::io::{self, Stream};

/// Whether `body` is one valid JSON text in valid UTF-8 (RFC 8259 §2, §8.1): see
/// [`crate::json::is_json`] (one pass over the pieces, no copy).
pub(super) fn is_json(body: &[Bytes]) -> bool {
    crate::json::is_json(body)
}

/// The 200 answer: keys interleaved with the values, and the names of the calls that failed.
///
/// A JSON body goes in as its own `Bytes` (no copy); an empty body, or one of another type, goes
/// in as a JSON string; a failed call as `null`.
pub(super) fn assemble<'p>(plan: &'p FanoutPlan, results: &Results) -> (Vec<Bytes>, Vec<&'p str>) {
    // Slot 0 is the head's, filled by `write_answer`: one Vec for the whole write.
    let mut parts = io::take_parts(plan.calls.len() * 2 + 2);
    parts.push(Bytes::new());
    let mut partial = Vec::new();
    for (c, r) in plan.calls.iter().zip(results) {
        parts.push(c.key.clone());
        match r.as_ref().map(|f| &f.result) {
            Some(CallResult::Ok {
                body, json: true, ..
            }) if !body.iter().all(Bytes::is_empty) => {
                parts.extend(body.iter().filter(|b| !b.is_empty()).cloned());
            }
            Some(CallResult::Ok { body, .. }) => parts.push(json_string(body)),
            _ => {
                parts.push(Bytes::from_static(b"null"));
                partial.push(c.name.as_str());
            }
        }
    }
    parts.push(Bytes::from_static(b"}"));
    (parts, partial)
}

/// `{"error":"<code>","call":"<name>","upstream":"<upstream>"}` (names need no escaping: config
/// validation allows only letters, digits, `_`, `-`, `.`).
pub(super) fn error_body(code: &str, call: &str, upstream: &str) -> Vec<Bytes> {
    let mut body = BytesMut::with_capacity(48 + code.len() + call.len() + upstream.len());
    body.put_slice(b"{\"error\":\"");
    body.put_slice(code.as_bytes());
    body.put_slice(b"\",\"call\":\"");
    body.put_slice(call.as_bytes());
    body.put_slice(b"\",\"upstream\":\"");
    body.put_slice(upstream.as_bytes());
    body.put_slice(b"\"}\n");
    // Slot 0 is the head's (see `assemble`).
    vec![Bytes::new(), body.freeze()]
}

/// Writes the answer's head into `out`: status line, Content-Type, Content-Length (`len`, the
/// body's length also for HEAD), Server-Timing with every call in declaration order,
/// Ringway-Partial when calls failed, Connection: close when the connection ends.
///
/// Server-Timing `desc`: absent for a 200, the status for any other answer, `"error"`,
/// `"timeout"`, or `"cancelled"` for a call stopped because another failed; a cancelled call's
/// `dur` is how long it ran.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
pub(super) fn write_head(
    out: &mut BytesMut,
    status: u16,
    len: usize,
    plan: &FanoutPlan,
    results: &Results,
    elapsed: Duration,
    partial: &[&str],
    after: ConnAfter,
    client: crate::http::Version,
) {
    let mut w = HeadWriter::new(out);
    w.status(status)
        .header(b"Content-Type", b"application/json")
        .header_u64(b"Content-Length", len as u64)
        .start_field(b"Server-Timing");
    for (i, (c, r)) in plan.calls.iter().zip(results).enumerate() {
        if i > 0 {
            w.value(b", ");
        }
        w.value(c.name.as_bytes())
            .value(b";dur=")
            .value_u64(r.as_ref().map_or(elapsed, |f| f.took).as_millis() as u64);
        match r.as_ref().map(|f| &f.result) {
            Some(CallResult::Ok { status: 200, .. }) => {}
            Some(CallResult::Ok { status, .. } | CallResult::Status(status)) => {
                w.value(b";desc=\"")
                    .value_u64(u64::from(*status))
                    .value(b"\"");
            }
            Some(CallResult::Timeout) => {
                w.value(b";desc=\"timeout\"");
            }
            Some(_) => {
                w.value(b";desc=\"error\"");
            }
            None => {
                w.value(b";desc=\"cancelled\"");
            }
        }
    }
    w.end_field();
    if !partial.is_empty() {
        w.start_field(b"Ringway-Partial");
        for (i, name) in partial.iter().enumerate() {
            if i > 0 {
                w.value(b", ");
            }
            w.value(name.as_bytes());
        }
        w.end_field();
    }
    w.connection(after, client)
        .header(b"Date", &crate::clock::http_date())
        .end();
}

/// Writes head + body with vectored writes: one write for up to [`ANSWER_BATCH`] pieces, which is
/// every answer but those with a backend body in hundreds of chunks. For HEAD only the head goes.
///
/// Each write must complete within `idle` (`client_idle`), as every client write does (see
/// `Client::write_vectored_all`): a client that stops reading must not park this task, and the
/// backend bodies it holds, forever.
///
/// With `defer` (the connection stays open), an answer of one batch is held back to go out
/// linked with the wait for the next request ([`Stream::defer_write`]).
///
/// # Errors
/// The write error, or `TimedOut` after `idle`; then the connection is set to close with a RST so
/// the client cannot mistake the truncation for a complete answer. Either way the caller closes.
pub(super) async fn write_answer(
    stream: &mut Stream,
    head: Bytes,
    mut body: Vec<Bytes>,
    head_only: bool,
    idle: Duration,
    defer: bool,
) -> std::io::Result<()> {
    // `body[0]` is the slot `assemble` and `error_body` keep for the head.
    body[0] = head;
    if head_only {
        body.truncate(1);
        return write_within(stream, body, idle).await;
    }
    audit::written(&body[1..]);
    if body.len() <= ANSWER_BATCH {
        if defer {
            match stream.defer_write(body.into()) {
                None => return Ok(()),
                Some(parts) => return write_within(stream, parts, idle).await,
            }
        }
        return write_within(stream, body, idle).await;
    }
    let mut rest = body.into_iter().filter(|b| !b.is_empty()).peekable();
    // Bounded: each turn writes up to ANSWER_BATCH pieces and the body has finitely many.
    loop {
        let parts: Vec<Bytes> = rest.by_ref().take(ANSWER_BATCH).collect();
        write_within(stream, parts, idle).await?;
        if rest.peek().is_none() {
            return Ok(());
        }
    }
}

/// One vectored write bounded by `idle`; a timed-out write resets the connection on close.
async fn write_within(
    stream: &mut Stream,
    parts: impl Into<io::Pieces>,
    idle: Duration,
) -> std::io::Result<()> {
    match io::timeout(idle, stream.write_vectored_all(parts)).await {
        Ok(r) => r,
        Err(_) => {
            stream.set_reset_on_close();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client read nothing for client_idle",
            ))
        }
    }
}

/// Encodes `body` as a JSON string literal: the one place a body is copied, because it must be
/// escaped. Invalid UTF-8 becomes U+FFFD (JSON text is UTF-8, RFC 8259 §8.1).
pub(super) fn json_string(body: &[Bytes]) -> Bytes {
    let len: usize = body.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(len + len / 8 + 2);
    out.put_u8(b'"');
    // Piece by piece, no concatenated copy: a UTF-8 sequence cut by a piece boundary is carried
    // over (at most 4 bytes), taking only continuation bytes from the next piece, so the result
    // is the lossy decoding of the whole body.
    let mut carry = [0u8; 4];
    let mut held = 0;
    for piece in body {
        let mut p = &piece[..];
        if held > 0 {
            let need = match carry[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            while held < need && p.first().is_some_and(|&b| (0x80..0xc0).contains(&b)) {
                carry[held] = p[0];
                held += 1;
                p = &p[1..];
            }
            if held < need && p.is_empty() {
                continue;
            }
            escape_into(&mut out, &String::from_utf8_lossy(&carry[..held]));
            held = 0;
        }
        loop {
            match std::str::from_utf8(p) {
                Ok(text) => {
                    escape_into(&mut out, text);
                    break;
                }
                Err(e) => {
                    let (valid, rest) = p.split_at(e.valid_up_to());
                    // `valid` was checked by from_utf8 just above.
                    escape_into(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            escape_into(&mut out, "\u{fffd}");
                            p = &rest[n..];
                        }
                        None => {
                            carry[..rest.len()].copy_from_slice(rest);
                            held = rest.len();
                            break;
                        }
                    }
                }
            }
        }
    }
    if held > 0 {
        escape_into(&mut out, &String::from_utf8_lossy(&carry[..held]));
    }
    out.put_u8(b'"');
    out.freeze()
}

/// Appends `text` JSON-escaped (RFC 8259 §7): runs of plain bytes are found eight at a time
/// ([`crate::json::string_run`]) and copied at once; only `"`, `\` and control characters are
/// escaped.
fn escape_into(out: &mut BytesMut, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = text.as_bytes();
    // Bounded: each turn consumes the run and the byte after it.
    loop {
        let run = crate::json::string_run(t, false);
        out.put_slice(&t[..run]);
        let Some(&b) = t.get(run) else { return };
        match b {
            b'"' => out.put_slice(b"\\\""),
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            _ => {
                out.put_slice(b"\\u00");
                out.put_u8(HEX[usize::from(b >> 4)]);
                out.put_u8(HEX[usize::from(b & 0xf)]);
            }
        }
        t = &t[run + 1..];
    }
}
