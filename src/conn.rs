//! The client connection loop: read a head, route it, hand it to the proxy, the fan-out or a
//! respond route, repeat.
//!
//! Keepalive (HTTP/1.1 by default, HTTP/1.0 when asked), pipelining (requests are served one after
//! another from the same buffer, so answers go out strictly in order), the `client_header`
//! deadline for a whole head (408 + close), the `client_idle` keepalive timeout (silent close),
//! and the metrics and access-log line of every request. The session itself (reads, writes,
//! deadlines, error answers) is [`crate::client::Client`].
//!
//! This module never copies a body: it hands the read buffer to the handlers, which split bodies
//! off it.

use std::rc::Rc;
use std::time::Duration;

use crate::access_log::Entry;
use crate::client::{Client, HeadWait, NoHead};
use crate::error::CLIENT_GONE;
use crate::gateway::{Gateway, Live};
use crate::http::{self, ConnAfter, HeadScanner, Limits, RequestHead};
use crate::router::RouteKind;

/// Serves one client connection until it closes. `live` gives the gateway (routes, upstreams,
/// config) each request starts with; `open` is dropped when the connection is done (the shard's
/// count of open connections).
///
/// This frame is what an idle keepalive connection costs, so it holds only what waiting for the
/// next head needs; a request's state lives in the boxed [`serve_one`] while it runs.
pub fn serve(client: Client, live: Rc<Live>, open: impl Sized) -> impl Future<Output = ()> {
    let mut client = client;
    // An async block, not an async fn: an async fn moves its arguments into locals and keeps
    // both copies in its frame (rust-lang/rust#62958), +200 bytes per idle connection.
    async move {
        // Captured by the block, so dropped with it: when the connection ends.
        let _open = &open;
        let mut log_line: Vec<u8> = Vec::new();
        let mut scanner = HeadScanner::new();
        let mut first = true;
        loop {
            let gw = live.current();
            let t = &gw.config.timeouts;
            let wait = HeadWait {
                limits: Limits {
                    max_head_bytes: gw.config.limits.max_head_bytes,
                    max_headers: gw.config.limits.max_headers,
                },
                client_header: t.client_header,
                client_idle: t.client_idle,
                policy: gw.target_policy(),
                first,
            };
            let got = client.read_head(&mut scanner, wait).await;
            if let Err(NoHead::Quiet) = got {
                return;
            }
            first = false;
            scanner.reset();
            let again =
                crate::io::boxed_with(|| serve_one(&mut client, &gw, got, &mut log_line)).await;
            if !again {
                return;
            }
        }
    }
}

/// Answers what reading a head gave: a request (routed and run), or a head that never became one
/// (408, 4xx). Returns whether the connection stays open for the next request.
async fn serve_one(
    client: &mut Client,
    gw: &Gateway,
    got: Result<RequestHead, NoHead>,
    log_line: &mut Vec<u8>,
) -> bool {
    let head = match got {
        Ok(h) => h,
        Err(NoHead::Quiet) => return false,
        Err(NoHead::Timeout) => {
            answer_without_head(client, 408, "request_timeout").await;
            return false;
        }
        Err(NoHead::Invalid(e)) => {
            answer_without_head(client, e.status(), e.reason()).await;
            // The rest of a rejected request may still be arriving.
            client.linger_close().await;
            return false;
        }
    };
    let started = crate::io::now();
    client.begin_request(head.version());
    if client.shard().access_log().is_some() {
        // Only when logging: the head moves into the proxy, so keep method and target.
        log_line.clear();
        log_line.extend_from_slice(head.method_bytes());
        log_line.push(b' ');
        log_line.extend_from_slice(head.target());
    }
    let (label, mut status, after) = dispatch(client, gw, head).await;
    if status == CLIENT_GONE && client.read_timed_out() && client.notes().bytes_sent == 0 {
        // The body stalled past client_idle and nothing was answered yet: say so.
        let _ = client
            .send_error(408, "request_timeout", None, ConnAfter::Close, &[])
            .await;
        status = 408;
    }
    let took = crate::io::now().saturating_duration_since(started);
    client
        .shard()
        .metrics()
        .request(label.unwrap_or(""), status, took);
    if let Some(log) = client.shard().access_log() {
        let split = log_line.iter().position(|&b| b == b' ').unwrap_or(0);
        let notes = client.notes();
        let upstream = notes.upstream.as_ref().map(|p| p.endpoint().to_string());
        log.log(&Entry {
            client: client.ip(),
            method: &log_line[..split],
            target: log_line.get(split + 1..).unwrap_or(b""),
            status,
            bytes: notes.bytes_sent,
            duration: took,
            route: label,
            upstream: upstream.as_deref(),
            fanout: notes.fanout.as_deref(),
        });
    }
    if after == ConnAfter::Close {
        if status == 413 || status == 400 {
            // The client's body was refused or broken mid-stream: some of it may still be on
            // its way.
            client.linger_close().await;
        }
        return false;
    }
    true
}

/// Answers a head that never became a request (malformed: 4xx/5xx; too slow: 408) and counts it
/// in the metrics and the access log like any other response. The caller then closes.
async fn answer_without_head(client: &mut Client, status: u16, code: &str) {
    client.reset_notes();
    let _ = client
        .send_error(status, code, None, ConnAfter::Close, &[])
        .await;
    client.shard().metrics().request("", status, Duration::ZERO);
    if let Some(log) = client.shard().access_log() {
        log.log(&Entry {
            client: client.ip(),
            method: b"-",
            target: b"-",
            status,
            bytes: client.notes().bytes_sent,
            duration: Duration::ZERO,
            route: None,
            upstream: None,
            fanout: None,
        });
    }
}

/// Routes one request and runs it. Returns the route label, the status sent, and what next.
async fn dispatch<'g>(
    client: &mut Client,
    gw: &'g Gateway,
    head: RequestHead,
) -> (Option<&'g str>, u16, ConnAfter) {
    if head.method() == http::Method::Connect {
        // ringway is a gateway, not a forward proxy: no CONNECT tunnels (README "CONNECT").
        return refuse(client, &head, 501, "connect_not_supported").await;
    }
    let Some(route) = gw
        .router
        .route(head.host(), head.path(), head.method_bytes())
    else {
        return refuse(client, &head, 404, "no_route").await;
    };
    let label = Some(route.label.as_str());
    let config = &gw.config;
    // Each exchange is boxed on its own, sized to its route kind: a respond route does not pay
    // for allocating and moving the proxy's ~4.5 KB state.
    let (status, after) = match route.kind {
        RouteKind::Proxy { upstream } => {
            let group = &gw.upstreams[upstream];
            crate::io::boxed_with(|| crate::proxy::forward(client, config, group, head)).await
        }
        RouteKind::Fanout { plan } => {
            let plan = &gw.fanouts[plan];
            crate::io::boxed_with(|| {
                crate::fanout::serve(client, config, &gw.upstreams, &route.label, plan, head)
            })
            .await
        }
        RouteKind::Respond { answer } => {
            crate::io::boxed(crate::respond::serve(
                client,
                config,
                &gw.answers[answer],
                head,
            ))
            .await
        }
    };
    (label, status, after)
}

/// Answers a request that is not served (no route, CONNECT) with a JSON error. The request body
/// (if any) is not read: the connection is closed unless there is none.
async fn refuse<'g>(
    client: &mut Client,
    head: &RequestHead,
    status: u16,
    code: &str,
) -> (Option<&'g str>, u16, ConnAfter) {
    let body_read = matches!(head.framing(), http::BodyFraming::Empty);
    let after = client.conn_after(head, body_read);
    let after = match client.send_error(status, code, None, after, &[]).await {
        Ok(()) => after,
        Err(_) => ConnAfter::Close,
    };
    (None, status, after)
}
