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

use bytes::Bytes;

use crate::client::Client;
use crate::config::Config;
use crate::error::Error;
use crate::http::{BodyDecoder, BodyFraming, ConnAfter, ErrorKind, HttpError, RequestHead};

pub mod canned;

pub use canned::CannedResponse;

/// How much room a body read gets at least (the same window the proxy streams bodies with).
const DISCARD_READ: usize = 32 * 1024;

/// Answers `head` with `canned`. Returns the status sent ([`crate::error::CLIENT_GONE`] when the
/// client vanished or stalled while sending its body: the connection loop then answers 408 or just
/// closes) and what happens
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
    config: &Config,
    canned: &CannedResponse,
    head: RequestHead,
) -> (u16, ConnAfter) {
    let framing = head.framing();
    if framing != BodyFraming::Empty
        // Boxed: the discard loop's state would otherwise size every respond exchange.
        && let Err(outcome) = crate::io::boxed(discard_body(client, config, &head, framing)).await
    {
        return outcome;
    }
    let after = client.conn_after(&head, true);
    let bytes = canned.bytes(head.method(), head.version(), after);
    match client.write_all(bytes).await {
        Ok(()) => (canned.status, after),
        Err(_) => (canned.status, ConnAfter::Close),
    }
}

/// Reads the request body off the connection and drops it, so the next request's head is the
/// next thing in the buffer. `Err` carries the answer already given (or the client gone) and
/// `Close`.
async fn discard_body(
    client: &mut Client,
    config: &Config,
    head: &RequestHead,
    framing: BodyFraming,
) -> Result<(), (u16, ConnAfter)> {
    let max = config.limits.max_body_bytes;
    if let BodyFraming::ContentLength(n) = framing
        && n > max
    {
        let e = Error::bad_request(HttpError::client(ErrorKind::BodyTooLarge));
        return Err(client.answer_error(&e, None, ConnAfter::Close, &[]).await);
    }
    let mut body = BodyDecoder::new(framing).with_limit(max);
    drop_buffered(&mut body, client).await?;
    if !body.is_done() && head.expects_continue() && !client.has_buffered() {
        let go_on = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");
        if client.write_all(go_on).await.is_err() {
            return Err(gone(client).await);
        }
    }
    // Bounded: every pass reads at least one byte within `client_idle` (`read_body` gives up
    // after that and marks the timeout, so the connection loop answers 408), and the decoder's
    // limit caps the total.
    while !body.is_done() {
        match client.read_body(DISCARD_READ).await {
            Ok(n) if n > 0 => {}
            _ => return Err(gone(client).await),
        }
        drop_buffered(&mut body, client).await?;
    }
    Ok(())
}

/// Validates and drops every piece of body in the client's buffer; answers a bad body
/// (400/413/501), after which the connection closes.
async fn drop_buffered(
    body: &mut BodyDecoder,
    client: &mut Client,
) -> Result<(), (u16, ConnAfter)> {
    match client.take_body(body, None) {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = Error::bad_request(e);
            Err(client.answer_error(&e, None, ConnAfter::Close, &[]).await)
        }
    }
}

/// The outcome of a client that vanished or stalled mid-body.
async fn gone(client: &mut Client) -> (u16, ConnAfter) {
    client
        .answer_error(&Error::client_gone(), None, ConnAfter::Close, &[])
        .await
}
