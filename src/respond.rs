//! Routes the gateway answers itself (`respond = { status, body, content_type }`): what nginx
//! calls `return 200 "..."`, Envoy `direct_response` and HAProxy `http-request return`.
//!
//! The whole response (head and body) is rendered once per config generation, when the shard
//! builds its [`Gateway`]: one [`CannedResponse`] per route, holding one `Bytes` for each way the
//! connection can continue. Serving a request is then one `write_all` of a `Bytes` clone (a
//! reference count, no allocation, no formatting); a HEAD sends a slice of the same bytes. The
//! `Date` field is rewritten in place once per second (a new `Bytes` then, shared until the next
//! second).
//!
//! A request body is read and discarded (bounded by `limits.max_body_bytes` and `client_idle`,
//! like nginx's `ngx_http_discard_request_body`), so the connection stays usable. This module
//! never touches an upstream.
//!
//! Like every answer the gateway makes, it carries a `Date` (RFC 9110 §6.6.1: an origin server
//! with a clock must send one) and no `Server` field.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::config::RespondConfig;
use crate::conn::{Client, ConnAfter};
use crate::gateway::Gateway;
use crate::http::{BodyDecoder, BodyFraming, HeadWriter, HttpError, Method, RequestHead, Version};

/// How much room a body read gets at least (the same window the proxy streams bodies with).
const DISCARD_READ: usize = 32 * 1024;

/// One pre-rendered response: head + body, and where the head ends (what a HEAD gets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rendered {
    /// The bytes, stamped with the `Date` of unix second `.0`.
    bytes: RefCell<(u64, Bytes)>,
    head_len: usize,
    /// Where the `Date` value starts in `bytes`.
    date_at: usize,
}

impl Rendered {
    fn new(cfg: &RespondConfig, connection: Option<&[u8]>) -> Rendered {
        // RFC 9110 §8.6 / §15.3.5 / §15.4.5: a 204 never carries Content-Length, and neither a
        // 204 nor a 304 has content to describe, so both go without the content fields.
        let has_content = !matches!(cfg.status, 204 | 304);
        let mut out = BytesMut::with_capacity(128 + cfg.content_type.len() + cfg.body.len());
        let mut w = HeadWriter::new(&mut out);
        w.status(cfg.status);
        if has_content {
            w.header(b"Content-Type", cfg.content_type.as_bytes());
            w.header_u64(b"Content-Length", cfg.body.len() as u64);
        }
        if let Some(value) = connection {
            w.header(b"Connection", value);
        }
        let (secs, date) = crate::clock::now();
        w.header(b"Date", &date);
        w.end();
        let head_len = out.len();
        let date_at = head_len - 2 - 2 - date.len();
        if has_content {
            out.extend_from_slice(cfg.body.as_bytes());
        }
        Rendered {
            bytes: RefCell::new((secs, out.freeze())),
            head_len,
            date_at,
        }
    }

    /// The bytes to send: all of them, or the head alone for a HEAD request; re-stamped with
    /// the current `Date` when the second has changed since the last stamp.
    fn for_method(&self, method: Method) -> Bytes {
        let (secs, date) = crate::clock::now();
        let mut cached = self.bytes.borrow_mut();
        if cached.0 != secs {
            let mut fresh = BytesMut::from(&cached.1[..]);
            fresh[self.date_at..self.date_at + date.len()].copy_from_slice(&date);
            *cached = (secs, fresh.freeze());
        }
        if method == Method::Head {
            cached.1.slice(..self.head_len)
        } else {
            cached.1.clone()
        }
    }
}

/// A route's fixed response, rendered for the three ways a connection continues after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedResponse {
    /// The status, for metrics and the access log.
    pub status: u16,
    /// HTTP/1.1 client, connection kept: no Connection field (persistence is the default).
    keep_alive: Rendered,
    /// HTTP/1.0 client, connection kept: `Connection: keep-alive` (RFC 9112 §9.3, 1.0 clients
    /// assume a close otherwise).
    keep_alive_10: Rendered,
    /// The connection closes after this response: `Connection: close`.
    close: Rendered,
}

impl CannedResponse {
    /// Renders `cfg` (already validated: final status, no body on 204/304, a plain field value).
    pub fn new(cfg: &RespondConfig) -> CannedResponse {
        CannedResponse {
            status: cfg.status,
            keep_alive: Rendered::new(cfg, ConnAfter::KeepAlive.connection_value(Version::Http11)),
            keep_alive_10: Rendered::new(
                cfg,
                ConnAfter::KeepAlive.connection_value(Version::Http10),
            ),
            close: Rendered::new(cfg, ConnAfter::Close.connection_value(Version::Http11)),
        }
    }

    /// The bytes to write for a request with this method and version, given what happens to the
    /// connection afterwards. No allocation: a clone or slice of a pre-rendered `Bytes`.
    pub fn bytes(&self, method: Method, version: Version, after: ConnAfter) -> Bytes {
        let rendered = match (after, version) {
            (ConnAfter::Close, _) => &self.close,
            (ConnAfter::KeepAlive, Version::Http10) => &self.keep_alive_10,
            (ConnAfter::KeepAlive, Version::Http11) => &self.keep_alive,
        };
        rendered.for_method(method)
    }
}

/// Answers `head` with `canned`. Returns the status sent (0 when the client vanished or stalled
/// while sending its body: the connection loop then answers 408 or just closes) and what happens
/// to the client connection.
///
/// The request body, if any, is read and discarded first: a Content-Length over
/// `max_body_bytes` is refused with 413 before a byte of it is read, a chunked body over it when
/// it gets there, and malformed chunking is a 400; each closes the connection, as in the proxy.
/// `Expect: 100-continue` is answered with `100 Continue` (the body is wanted, if only to be
/// dropped). The connection then stays open exactly when the proxy would keep it: the client
/// wants keep-alive and the shard is not draining.
pub async fn serve(
    client: &mut Client,
    gw: &Gateway,
    canned: &CannedResponse,
    head: RequestHead,
) -> (u16, ConnAfter) {
    let framing = head.framing();
    if framing != BodyFraming::Empty
        // Boxed: the discard loop's state would otherwise size every respond exchange.
        && let Err(outcome) = Box::pin(discard_body(client, gw, &head, framing)).await
    {
        return outcome;
    }
    let after = if head.keep_alive() && !client.shard.is_draining() {
        ConnAfter::KeepAlive
    } else {
        ConnAfter::Close
    };
    let bytes = canned.bytes(head.method(), head.version(), after);
    match client.write_all(bytes).await {
        Ok(()) => (canned.status, after),
        Err(_) => (canned.status, ConnAfter::Close),
    }
}

/// Reads the request body off the connection and drops it, so the next request's head is the
/// next thing in the buffer. `Err` carries the answer already given (or 0) and `Close`.
async fn discard_body(
    client: &mut Client,
    gw: &Gateway,
    head: &RequestHead,
    framing: BodyFraming,
) -> Result<(), (u16, ConnAfter)> {
    let max = gw.config.limits.max_body_bytes;
    if let BodyFraming::ContentLength(n) = framing
        && n > max
    {
        let _ = client
            .send_error(413, "body_too_large", None, ConnAfter::Close, &[])
            .await;
        return Err((413, ConnAfter::Close));
    }
    let mut body = BodyDecoder::new(framing).with_limit(max);
    drop_buffered(&mut body, client).await?;
    if !body.is_done() && head.expects_continue() && client.buf.is_empty() {
        let go_on = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");
        if client.write_all(go_on).await.is_err() {
            return Err((0, ConnAfter::Close));
        }
    }
    // Bounded: every pass reads at least one byte within `client_idle` (`read_more` gives up
    // after that and marks the timeout, so the connection loop answers 408), and the decoder's
    // limit caps the total.
    while !body.is_done() {
        if client.buf.capacity() - client.buf.len() < DISCARD_READ / 2 {
            client.buf.reserve(DISCARD_READ);
        }
        match client.read_more().await {
            Ok(n) if n > 0 => {}
            _ => return Err((0, ConnAfter::Close)),
        }
        drop_buffered(&mut body, client).await?;
    }
    Ok(())
}

/// Validates and drops every piece of body in the client's buffer; answers a bad body.
async fn drop_buffered(
    body: &mut BodyDecoder,
    client: &mut Client,
) -> Result<(), (u16, ConnAfter)> {
    // Bounded: each pass takes at least one byte off the buffer or stops.
    while !body.is_done() {
        match body.next_raw(&mut client.buf) {
            Ok(Some(_dropped)) => {}
            Ok(None) => break,
            Err(e) => return Err(refuse(client, e).await),
        }
    }
    Ok(())
}

/// Answers an invalid or over-limit body (400/413/501), then the connection closes.
async fn refuse(client: &mut Client, e: HttpError) -> (u16, ConnAfter) {
    let status = e.status();
    let _ = client
        .send_error(status, e.reason(), None, ConnAfter::Close, &[])
        .await;
    (status, ConnAfter::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canned(status: u16, body: &str) -> CannedResponse {
        CannedResponse::new(&RespondConfig {
            status,
            body: body.into(),
            content_type: "text/plain".into(),
        })
    }

    /// The bytes with their `Date` field taken out, after checking it is the current time.
    fn undated(b: &[u8]) -> Vec<u8> {
        let at = b
            .windows(8)
            .position(|w| w == b"\r\nDate: ")
            .expect("a Date field")
            + 2;
        let end = at + 6 + crate::http::IMF_FIXDATE_LEN + 2;
        let value = &b[at + 6..end - 2];
        let now = crate::clock::http_date();
        // Within the same second, or the one before (the second may turn between the two reads).
        let (secs, _) = crate::clock::now();
        assert!(
            value == now || value == crate::http::imf_fixdate(secs - 1),
            "stale Date: {}",
            String::from_utf8_lossy(value)
        );
        [&b[..at], &b[end..]].concat()
    }

    #[test]
    fn renders_every_variant() {
        let c = canned(200, "hello\n");
        let get = undated(&c.bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive));
        assert_eq!(
            &get[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
        );
        let close = undated(&c.bytes(Method::Get, Version::Http11, ConnAfter::Close));
        assert!(close.ends_with(b"Content-Length: 6\r\nConnection: close\r\n\r\nhello\n"));
        let ten = undated(&c.bytes(Method::Post, Version::Http10, ConnAfter::KeepAlive));
        assert!(ten.ends_with(b"Connection: keep-alive\r\n\r\nhello\n"));
        let ten_close = undated(&c.bytes(Method::Get, Version::Http10, ConnAfter::Close));
        assert_eq!(ten_close, close);
    }

    #[test]
    fn head_is_the_get_head_without_body() {
        let c = canned(404, "gone");
        for after in [ConnAfter::KeepAlive, ConnAfter::Close] {
            let get = undated(&c.bytes(Method::Get, Version::Http11, after));
            let head = undated(&c.bytes(Method::Head, Version::Http11, after));
            assert_eq!(&get[..head.len()], &head[..]);
            assert_eq!(&get[head.len()..], b"gone");
            assert!(head.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
            assert!(
                head.ends_with(b"Content-Length: 4\r\n\r\n") || head.ends_with(b"close\r\n\r\n")
            );
        }
    }

    #[test]
    fn no_content_fields_on_204_and_304() {
        for (status, line) in [(204, "204 No Content"), (304, "304 Not Modified")] {
            let got = canned(status, "").bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive);
            assert_eq!(undated(&got), format!("HTTP/1.1 {line}\r\n\r\n").as_bytes());
        }
    }

    #[test]
    fn date_is_restamped_when_the_second_changes() {
        let c = canned(200, "hello\n");
        let before = c.bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive);
        // Pretend the stamp is from 1970: the next request re-stamps only the date bytes.
        let r = &c.keep_alive;
        let stale = {
            let mut b = r.bytes.borrow_mut();
            let mut old = BytesMut::from(&b.1[..]);
            old[r.date_at..r.date_at + 29].copy_from_slice(&crate::http::imf_fixdate(0));
            *b = (0, old.freeze());
            b.1.clone()
        };
        let after = c.bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive);
        assert_ne!(
            after.as_ptr(),
            stale.as_ptr(),
            "a new buffer, not the one in flight"
        );
        assert_eq!(
            &stale[r.date_at..r.date_at + 29],
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(after.len(), before.len());
        assert_eq!(&after[..r.date_at], &before[..r.date_at]);
        assert_eq!(&after[r.date_at + 29..], &before[r.date_at + 29..]);
        assert_eq!(undated(&after), undated(&before));
    }

    #[test]
    fn serving_clones_share_the_rendered_buffer() {
        let c = canned(200, "x");
        // Bounded retry: the Date is re-stamped when the second turns, which may happen between
        // two calls; within one second every call shares the same memory.
        for _ in 0..3 {
            let before = crate::clock::now().0;
            let a = c.bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive);
            let b = c.bytes(Method::Get, Version::Http11, ConnAfter::KeepAlive);
            let h = c.bytes(Method::Head, Version::Http11, ConnAfter::KeepAlive);
            if crate::clock::now().0 != before {
                continue;
            }
            // The same memory every time: nothing is rendered or copied per request.
            assert_eq!(a.as_ptr(), b.as_ptr());
            assert_eq!(a.as_ptr(), h.as_ptr());
            return;
        }
        panic!("the clock turned a second during each of three tries");
    }
}
