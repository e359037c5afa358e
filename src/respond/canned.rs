//! The pre-rendered answer of a respond route: head and body rendered once per config generation
//! for each way the connection can continue, and re-stamped with the current `Date` once a
//! second. A leaf the gateway may import.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::config::RespondConfig;
use crate::http::{ConnAfter, HeadWriter, Method, Version};

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
