//! Fan-out (issue 5, DESIGN.md "Fan-out contract") through the real `ringway` binary, against
//! real backends that sleep. Every test runs on both drivers. Timings are asserted loosely: they
//! check behaviour (calls overlap, deadlines cut), not speed.

mod common;

use ringway::both_drivers;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, DeadPort, Gateway, Response, describe_fds, preamble, tcp_fds_to};

/// A backend answering `body` as `content_type` after `delay_ms`.
fn backend(name: &str, delay_ms: u64, body: Option<&str>, content_type: &str) -> Backend {
    Backend::tcp(BackendSpec {
        delay: Duration::from_millis(delay_ms),
        body: body.map(|b| b.as_bytes().to_vec()),
        content_type: content_type.into(),
        name: name.into(),
        ..BackendSpec::default()
    })
}

/// An echo backend (its JSON answer names it and echoes the request line, XFF, X-Request-Id).
fn echo(name: &str, delay_ms: u64) -> Backend {
    backend(name, delay_ms, None, "application/json")
}

/// An echo backend on a Unix socket: no TCP port, so no other process on this machine can
/// connect to it by accident (their released "free" ports can be our backends' ports), and exact
/// accept counts hold. Also covers fan-out calls over Unix endpoints.
fn echo_unix(name: &str, delay_ms: u64) -> Backend {
    Backend::unix(BackendSpec {
        delay: Duration::from_millis(delay_ms),
        name: name.into(),
        ..BackendSpec::default()
    })
}

/// `ringway_upstream_connections_opened_total` for `upstream`: connections the gateway opened.
fn opened(gw: &Gateway, upstream: &str) -> f64 {
    gw.metric(&format!(
        "ringway_upstream_connections_opened_total{{upstream=\"{upstream}\"}}"
    ))
    .unwrap_or(-1.0)
}

/// `[[route.fanout.call]]` named `name` on upstream `name`, path `/<name>`, plus `extra` keys.
fn call(name: &str, extra: &str) -> String {
    format!(
        "[[route.fanout.call]]\nname = \"{name}\"\nupstream = \"{name}\"\npath = \"/{name}\"\n{extra}\n"
    )
}

/// Config text: one upstream per `(name, endpoint)`, a fan-out route on `/page` with `fanout`
/// (the `[route.fanout]` table and its calls), and a proxy route on `/` to the first upstream.
fn config(
    driver: &str,
    upstreams: &[(&str, String)],
    fanout: &str,
) -> (String, SocketAddr, SocketAddr) {
    let (mut cfg, addr, admin) = preamble(driver, 1);
    for (name, ep) in upstreams {
        cfg.push_str(&format!(
            "[[upstream]]\nname = \"{name}\"\nendpoints = [\"{ep}\"]\n\n"
        ));
    }
    cfg.push_str("[[route]]\npath_prefix = \"/page\"\n");
    cfg.push_str(fanout);
    cfg.push_str(&format!(
        "\n[[route]]\npath_prefix = \"/\"\nupstream = \"{}\"\n",
        upstreams[0].0
    ));
    (cfg, addr, admin)
}

fn start(driver: &str, upstreams: &[(&str, String)], fanout: &str) -> Gateway {
    let (cfg, addr, admin) = config(driver, upstreams, fanout);
    Gateway::start(&cfg, addr, admin)
}

/// Parses an answer body as JSON, failing with the text.
fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", r.text()))
}

/// Positions of `"<key>":` in the body text, to check key order (serde_json sorts maps).
fn key_positions(r: &Response, keys: &[&str]) -> Vec<usize> {
    let text = r.text();
    keys.iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("key {k} missing in {text}"))
        })
        .collect()
}

/// The whole milliseconds of call `name` in the answer's `Server-Timing` header.
fn timing_ms(r: &Response, name: &str) -> u64 {
    let timing = r.header("server-timing").unwrap_or_default();
    timing
        .split(", ")
        .find_map(|e| e.strip_prefix(&format!("{name};dur=")))
        .and_then(|rest| rest.split(';').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no {name} entry in {timing}"))
}

fn fanout_metric(gw: &Gateway, call: &str, outcome: &str) -> f64 {
    gw.metric(&format!(
        "ringway_fanout_calls_total{{route=\"/page\",call=\"{call}\",outcome=\"{outcome}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Polls `check` every 20 ms for up to `limit`; true once it holds.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

both_drivers!(three_slow_calls_run_concurrently, |driver: &str| {
    let (a, b, c) = (echo("a", 200), echo("b", 200), echo("c", 200));
    let gw = start(
        driver,
        &[
            ("a", a.endpoint()),
            ("b", b.endpoint()),
            ("c", c.endpoint()),
        ],
        &format!(
            "[route.fanout]\ntimeout = \"5s\"\n{}{}{}",
            call("a", ""),
            call("b", ""),
            call("c", "")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let mut fastest = Duration::MAX;
    let mut seen = Vec::new();
    // Several rounds: the first opens connections, later ones reuse them; a loaded test machine
    // may stall any one round, so the wall-clock bound applies to the fastest.
    for round in 0..5 {
        let t0 = Instant::now();
        let r = client.get("/page");
        let took = t0.elapsed();
        assert_eq!(r.status, 200, "{r:?}");
        let timing = r.header("server-timing").unwrap_or_default().to_string();
        let sum_ms: u64 = timing
            .split(", ")
            .filter_map(|e| e.split(";dur=").nth(1))
            .filter_map(|d| d.split(';').next()?.parse::<u64>().ok())
            .sum();
        // Scheduler-proof overlap check: run one after another, the calls could not end sooner
        // than the sum of their own durations.
        assert!(
            took < Duration::from_millis(sum_ms),
            "round {round}: took {took:?}, calls' own durations sum to {sum_ms} ms ({timing}): \
             they ran one after another"
        );
        fastest = fastest.min(took);
        seen.push((took, timing));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("content-length").map(str::to_string),
            Some(r.body.len().to_string())
        );
        assert_eq!(r.header("ringway-partial"), None);
        let doc = json(&r);
        for k in ["a", "b", "c"] {
            assert_eq!(doc[k]["backend"], k, "{doc}");
        }
        let timing = &seen[round].1;
        let names: Vec<&str> = timing
            .split(", ")
            .map(|e| e.split(';').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["a", "b", "c"], "Server-Timing: {timing}");
        assert!(
            timing
                .split(", ")
                .all(|e| e.contains(";dur=") && !e.contains("desc")),
            "{timing}"
        );
    }
    assert!(
        fastest < Duration::from_millis(400),
        "three 200 ms calls must finish well under 400 ms (serially: 600 ms); rounds: {seen:?}"
    );
});

both_drivers!(keys_follow_declaration_order, |driver: &str| {
    // The first declared call answers last, the last declared first.
    let (slow, fast, mid) = (echo("slow", 150), echo("fast", 0), echo("mid", 60));
    let gw = start(
        driver,
        &[
            ("slow", slow.endpoint()),
            ("fast", fast.endpoint()),
            ("mid", mid.endpoint()),
        ],
        &format!(
            "[route.fanout]\n{}{}{}",
            call("slow", ""),
            call("fast", ""),
            call("mid", "")
        ),
    );
    let mut client = Client::connect(gw.addr);
    for _ in 0..3 {
        let r = client.get("/page");
        assert_eq!(r.status, 200);
        let pos = key_positions(&r, &["slow", "fast", "mid"]);
        assert!(
            pos[0] < pos[1] && pos[1] < pos[2],
            "declaration order: {}",
            r.text()
        );
        assert!(r.text().starts_with("{\"slow\":{"), "{}", r.text());
    }
});

both_drivers!(
    failed_optional_calls_are_null_and_partial,
    |driver: &str| {
        let ok = echo("ok", 0);
        let err = Backend::tcp(BackendSpec {
            status: 500,
            body: Some(b"{\"oops\":1}".to_vec()),
            ..BackendSpec::default()
        });
        let dead = DeadPort::new();
        let gw = start(
            driver,
            &[
                ("ok", ok.endpoint()),
                ("err", err.endpoint()),
                ("dead", dead.addr.to_string()),
            ],
            &format!(
                "[route.fanout]\n{}{}{}",
                call("ok", ""),
                call("err", ""),
                call("dead", "")
            ),
        );
        let mut client = Client::connect(gw.addr);
        let r = client.get("/page");
        assert_eq!(r.status, 200, "{r:?}");
        let doc = json(&r);
        assert_eq!(doc["ok"]["backend"], "ok");
        assert!(doc["err"].is_null() && doc["dead"].is_null(), "{doc}");
        assert_eq!(r.header("ringway-partial"), Some("err, dead"));
        let timing = r.header("server-timing").unwrap_or_default();
        assert!(
            timing.contains("err;dur=") && timing.contains("desc=\"500\""),
            "{timing}"
        );
        assert!(
            timing.contains("dead;dur=") && timing.contains("desc=\"error\""),
            "{timing}"
        );
        assert_eq!(fanout_metric(&gw, "ok", "ok"), 1.0);
        assert_eq!(fanout_metric(&gw, "err", "error"), 1.0);
        assert_eq!(fanout_metric(&gw, "dead", "error"), 1.0);
        // The connection stays usable after a partial answer.
        assert_eq!(client.get("/page").status, 200);
    }
);

both_drivers!(
    failed_required_call_is_502_and_cancels_the_rest,
    |driver: &str| {
        let slow = echo("slow", 1500);
        let req = Backend::tcp(BackendSpec {
            status: 503,
            ..BackendSpec::default()
        });
        let gw = start(
            driver,
            &[("slow", slow.endpoint()), ("req", req.endpoint())],
            &format!(
                "[route.fanout]\ntimeout = \"3s\"\n{}{}",
                call("slow", ""),
                call("req", "required = true")
            ),
        );
        let mut client = Client::connect(gw.addr);
        let t0 = Instant::now();
        let r = client.get("/page");
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "the failure answers at once: {:?}",
            t0.elapsed()
        );
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc = json(&r);
        assert_eq!(doc["error"], "upstream_error");
        assert_eq!(doc["call"], "req");
        assert_eq!(doc["upstream"], "req");
        let timing = r.header("server-timing").unwrap_or_default();
        assert!(
            timing.contains("slow;dur=") && timing.contains("desc=\"cancelled\""),
            "{timing}"
        );
        assert!(
            timing.contains("req;dur=") && timing.contains("desc=\"503\""),
            "{timing}"
        );
        // The cancelled call's connection is closed, not pooled.
        assert!(
            eventually(Duration::from_secs(2), || {
                gw.metric("ringway_upstream_pool_active{upstream=\"slow\"}") == Some(0.0)
                    && gw.metric("ringway_upstream_pool_idle{upstream=\"slow\"}") == Some(0.0)
            }),
            "slow's pool is empty after the cancel:\n{}",
            gw.admin_get("/metrics").1
        );
        assert_eq!(fanout_metric(&gw, "slow", "cancelled"), 1.0);
        assert_eq!(fanout_metric(&gw, "req", "error"), 1.0);
        // The client connection is kept: the answer was complete.
        assert_eq!(client.get("/").status, 200);
    }
);

both_drivers!(timeouts_per_call_required_and_route, |driver: &str| {
    let fast = echo("fast", 0);
    let slow = echo("slow", 600);
    let slow_req = echo("slowreq", 600);
    // An optional call past its own timeout: null, partial, desc="timeout".
    let gw = start(
        driver,
        &[
            ("fast", fast.endpoint()),
            ("slow", slow.endpoint()),
            ("slowreq", slow_req.endpoint()),
        ],
        &format!(
            "[route.fanout]\ntimeout = \"2s\"\n{}{}",
            call("fast", ""),
            call("slow", "timeout = \"100ms\"")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let t0 = Instant::now();
    let r = client.get("/page");
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_millis(450),
        "{took:?}"
    );
    assert!(json(&r)["slow"].is_null());
    assert_eq!(r.header("ringway-partial"), Some("slow"));
    let timing = r.header("server-timing").unwrap_or_default();
    let slow_ms = timing_ms(&r, "slow");
    assert!(
        (90..450).contains(&slow_ms),
        "slow ran about its 100 ms timeout: {timing}"
    );
    assert!(
        timing.contains("slow;dur") && timing.ends_with(";desc=\"timeout\""),
        "{timing}"
    );
    assert_eq!(fanout_metric(&gw, "slow", "timeout"), 1.0);
    drop(gw);

    // A required call past its timeout: 504 naming it.
    let gw = start(
        driver,
        &[("fast", fast.endpoint()), ("slowreq", slow_req.endpoint())],
        &format!(
            "[route.fanout]\ntimeout = \"2s\"\n{}{}",
            call("fast", ""),
            call("slowreq", "required = true\ntimeout = \"150ms\"")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let t0 = Instant::now();
    let r = client.get("/page");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.status, 504, "{r:?}");
    let doc = json(&r);
    assert_eq!(
        (doc["error"].as_str(), doc["call"].as_str()),
        (Some("upstream_timeout"), Some("slowreq"))
    );
    drop(gw);

    // The route deadline cuts every call (their own timeouts default to the route's).
    let gw = start(
        driver,
        &[("slow", slow.endpoint()), ("slowreq", slow_req.endpoint())],
        &format!(
            "[route.fanout]\ntimeout = \"200ms\"\n{}{}",
            call("slow", ""),
            call("slowreq", "")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let t0 = Instant::now();
    let r = client.get("/page");
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(550),
        "{took:?}"
    );
    assert_eq!(r.text(), r#"{"slow":null,"slowreq":null}"#);
    assert_eq!(r.header("ringway-partial"), Some("slow, slowreq"));
    drop(gw);

    // Two calls with different timeouts each end at their own: the fan-out's one timer is
    // re-armed for the later call after the earlier one times out.
    let gw = start(
        driver,
        &[("slow", slow.endpoint()), ("slowreq", slow_req.endpoint())],
        &format!(
            "[route.fanout]\ntimeout = \"2s\"\n{}{}",
            call("slow", "timeout = \"100ms\""),
            call("slowreq", "timeout = \"300ms\"")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let t0 = Instant::now();
    let r = client.get("/page");
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(550),
        "{took:?}"
    );
    let timing = r.header("server-timing").unwrap_or_default();
    assert!((90..250).contains(&timing_ms(&r, "slow")), "{timing}");
    assert!((290..550).contains(&timing_ms(&r, "slowreq")), "{timing}");
});

both_drivers!(bodies_by_content_type, |driver: &str| {
    let text = backend("text", 0, Some("say \"hi\"\nbye\\"), "text/plain");
    let chunked = Backend::tcp(BackendSpec {
        chunked: true,
        body: Some(br#"{"list":[1,2,3],"nested":{"k":"v"}}"#.to_vec()),
        content_type: "application/problem+json; charset=utf-8".into(),
        ..BackendSpec::default()
    });
    let liar = backend("liar", 0, Some("this is not json"), "application/json");
    let empty = backend("empty", 0, Some(""), "application/json");
    let gw = start(
        driver,
        &[
            ("text", text.endpoint()),
            ("chunked", chunked.endpoint()),
            ("liar", liar.endpoint()),
            ("empty", empty.endpoint()),
        ],
        &format!(
            "[route.fanout]\n{}{}{}{}",
            call("text", ""),
            call("chunked", ""),
            call("liar", ""),
            call("empty", "")
        ),
    );
    let mut client = Client::connect(gw.addr);
    let r = client.get("/page");
    assert_eq!(r.status, 200);
    let doc = json(&r);
    assert_eq!(
        doc["text"], "say \"hi\"\nbye\\",
        "non-JSON body embedded as a string"
    );
    assert_eq!(
        doc["chunked"]["nested"]["k"], "v",
        "+json chunked body embedded as is"
    );
    assert!(
        r.text()
            .contains(r#""chunked":{"list":[1,2,3],"nested":{"k":"v"}}"#),
        "{}",
        r.text()
    );
    assert!(
        doc["liar"].is_null(),
        "JSON-typed non-JSON body is a failed call: {doc}"
    );
    assert_eq!(doc["empty"], "", "an empty body is an empty string");
    assert_eq!(r.header("ringway-partial"), Some("liar"));
});

both_drivers!(head_answers_like_get_and_calls_are_get, |driver: &str| {
    let (a, b) = (echo("a", 0), echo("b", 0));
    let gw = start(
        driver,
        &[("a", a.endpoint()), ("b", b.endpoint())],
        &format!("[route.fanout]\n{}{}", call("a", ""), call("b", "")),
    );
    let mut client = Client::connect(gw.addr);
    let get = client.get("/page");
    client.send(b"HEAD /page HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.read_response(true).expect("HEAD answer");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        get.header("content-length"),
        "HEAD has GET's length"
    );
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.header("server-timing").is_some());
    // No body came: the next answer on the connection parses cleanly.
    let again = client.get("/page");
    assert_eq!(again.status, 200);
    assert_eq!(again.body.len(), get.body.len());
    for h in a.heads().iter().chain(b.heads().iter()) {
        assert!(h.starts_with("GET /"), "calls are GET even for HEAD: {h}");
    }
    assert_eq!(a.requests(), 3);
});

both_drivers!(only_get_and_head, |driver: &str| {
    let a = echo("a", 0);
    let gw = start(
        driver,
        &[("a", a.endpoint())],
        &format!("[route.fanout]\n{}", call("a", "")),
    );
    let mut client = Client::connect(gw.addr);
    client.send(b"DELETE /page HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = client.read_response(false).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        r.header("connection"),
        None,
        "no body: the connection is kept"
    );
    assert_eq!(client.get("/page").status, 200);
    client.send(b"POST /page HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let r = client.read_response(false).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("connection"), Some("close"), "unread body: close");
    assert!(client.is_closed(Duration::from_secs(2)));
    assert_eq!(a.requests(), 1, "a refused method never reaches a backend");
});

both_drivers!(
    query_headers_and_forwarding_fields_reach_every_call,
    |driver: &str| {
        let (a, b) = (echo("a", 0), echo("b", 0));
        let gw = start(
            driver,
            &[("a", a.endpoint()), ("b", b.endpoint())],
            &format!(
                "[route.fanout]\n{}{}",
                call("a", ""),
                call("b", "forward_headers = [\"x-tenant\"]")
            ),
        );
        let mut client = Client::connect(gw.addr);
        client.send(
            concat!(
                "GET /page?user=42&lang=en HTTP/1.1\r\nHost: t\r\nX-Request-Id: rid-7\r\n",
                "Cookie: s=1\r\nX-Tenant: t9\r\nX-Other: no\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = client.read_response(false).unwrap();
        assert_eq!(r.status, 200);
        let doc = json(&r);
        assert_eq!(doc["a"]["target"], "/a?user=42&lang=en");
        assert_eq!(doc["b"]["target"], "/b?user=42&lang=en");
        assert_eq!(doc["a"]["request_id"], "rid-7");
        assert_eq!(doc["b"]["request_id"], "", "b forwards only x-tenant");
        assert_eq!(doc["a"]["xff"], "10.1.1.1, 127.0.0.1");
        let ha = a.heads()[0].to_ascii_lowercase();
        let hb = b.heads()[0].to_ascii_lowercase();
        assert!(
            ha.contains("\r\ncookie: s=1\r\n")
                && !ha.contains("x-tenant")
                && !ha.contains("x-other"),
            "{ha}"
        );
        assert!(
            hb.contains("\r\nx-tenant: t9\r\n") && !hb.contains("cookie"),
            "{hb}"
        );
        for h in [&ha, &hb] {
            assert!(
                h.contains("\r\nvia: 1.1 ringway\r\n")
                    && h.contains("\r\nx-forwarded-proto: http\r\n"),
                "{h}"
            );
        }
    }
);

both_drivers!(keepalive_and_pipelining_across_fanouts, |driver: &str| {
    let (a, b) = (echo_unix("a", 150), echo_unix("b", 100));
    let gw = start(
        driver,
        &[("a", a.endpoint()), ("b", b.endpoint())],
        &format!(
            "[route.fanout]\ntimeout = \"10s\"\n{}{}",
            call("a", ""),
            call("b", "")
        ),
    );
    let mut client = Client::connect(gw.addr);
    assert_eq!(client.get("/page").status, 200);
    assert_eq!(
        client.get("/proxied").status,
        200,
        "a proxy request after a fan-out"
    );
    assert_eq!(client.get("/page").status, 200);
    // A second request arrives while the first fan-out is in flight: pipelined bytes waiting in
    // the socket are not a disconnect, and answers come in order.
    client.send(b"GET /page?n=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(80));
    client.send(b"GET /page?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r1 = client.read_response(false).expect("first pipelined answer");
    let r2 = client
        .read_response(false)
        .expect("second pipelined answer");
    assert_eq!((r1.status, r2.status), (200, 200));
    assert_eq!(json(&r1)["a"]["target"], "/a?n=1");
    assert_eq!(json(&r2)["a"]["target"], "/a?n=2");
    assert_eq!(fanout_metric(&gw, "a", "cancelled"), 0.0);
    for (name, be) in [("a", &a), ("b", &b)] {
        assert_eq!(
            (opened(&gw, name), be.accepted()),
            (1.0, 1),
            "{name}: one pooled connection carried every call (and a's proxy request)"
        );
    }
});

both_drivers!(
    thousand_sequential_fanouts_reuse_pooled_connections,
    |driver: &str| {
        // a over TCP, b and c over Unix sockets: both endpoint kinds pool.
        let (a, b, c) = (echo("a", 0), echo_unix("b", 0), echo_unix("c", 0));
        let gw = start(
            driver,
            &[
                ("a", a.endpoint()),
                ("b", b.endpoint()),
                ("c", c.endpoint()),
            ],
            // A generous deadline: a call stalled by a loaded test machine would time out, and
            // its connection would (rightly) be closed, not pooled.
            &format!(
                "[route.fanout]\ntimeout = \"10s\"\n{}{}{}",
                call("a", ""),
                call("b", ""),
                call("c", "")
            ),
        );
        let mut client = Client::connect(gw.addr);
        for i in 0..1000 {
            let r = client.get("/page");
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            assert_eq!(r.header("ringway-partial"), None, "request {i}: {r:?}");
            // Client connections are recycled too, now and then: pools are per shard, not per client.
            if i % 250 == 249 {
                client = Client::connect(gw.addr);
            }
        }
        for (name, be) in [("a", &a), ("b", &b), ("c", &c)] {
            assert_eq!(be.requests(), 1000, "{name}");
            // The gateway's own count is exact; a TCP backend's accept count could in principle
            // include a stray connect from another process on this machine, so it is checked
            // exactly only for the Unix ones.
            let n = opened(&gw, name);
            if n != 1.0 {
                let metrics = gw.admin_get("/metrics").1;
                let lines: Vec<&str> = metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with("ringway_upstream") || l.starts_with("ringway_fanout")
                    })
                    .collect();
                panic!(
                    "{name}: expected one pooled connection, opened {n}, backend accepted {}\n{}\n{}",
                    be.accepted(),
                    lines.join("\n"),
                    gw.stderr()
                );
            }
            if be.path.is_some() {
                assert_eq!(be.accepted(), 1, "{name}: backend saw one connection");
            }
        }
        assert_eq!(fanout_metric(&gw, "b", "ok"), 1000.0);
    }
);

both_drivers!(
    client_disconnect_cancels_calls_without_leaks,
    |driver: &str| {
        let (a, b, c) = (echo("a", 1500), echo("b", 1500), echo("c", 0));
        let gw = start(
            driver,
            &[
                ("a", a.endpoint()),
                ("b", b.endpoint()),
                ("c", c.endpoint()),
            ],
            &format!(
                "[route.fanout]\ntimeout = \"3s\"\n{}{}{}",
                call("a", ""),
                call("b", ""),
                call("c", "")
            ),
        );
        let pid = gw.child.id();
        let port = |be: &Backend| be.addr.map_or(0, |a| a.port());
        // The baseline once the start-up probe's admin socket is gone: no backend connection yet.
        let fds_before = gw.open_fds();
        let fd_list_before = describe_fds(pid);
        let mut client = Client::connect(gw.addr);
        client.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(
            eventually(Duration::from_secs(2), || a.requests() == 1
                && b.requests() == 1),
            "the calls started"
        );
        assert_eq!(
            (tcp_fds_to(pid, port(&a)), tcp_fds_to(pid, port(&b))),
            (1, 1),
            "each in-flight call holds one backend connection: {:?}",
            describe_fds(pid)
        );
        drop(client);
        let t0 = Instant::now();
        assert!(
            eventually(Duration::from_secs(1), || {
                fanout_metric(&gw, "a", "cancelled") == 1.0
            }),
            "the gateway noticed the disconnect:\n{}",
            gw.admin_get("/metrics").1
        );
        assert!(
            t0.elapsed() < Duration::from_millis(800),
            "noticed within a few polls: {:?}",
            t0.elapsed()
        );
        assert_eq!(fanout_metric(&gw, "b", "cancelled"), 1.0);
        assert_eq!(fanout_metric(&gw, "c", "ok"), 1.0, "c had finished before");
        for up in ["a", "b"] {
            let active = format!("ringway_upstream_pool_active{{upstream=\"{up}\"}}");
            let idle = format!("ringway_upstream_pool_idle{{upstream=\"{up}\"}}");
            assert_eq!(gw.metric(&active), Some(0.0), "{up}: no slot leaked");
            assert_eq!(
                gw.metric(&idle),
                Some(0.0),
                "{up}: cancelled, so not pooled"
            );
        }
        assert_eq!(
            gw.metric("ringway_upstream_pool_idle{upstream=\"c\"}"),
            Some(1.0)
        );
        // a's and b's connections were closed, c's clean one is pooled, the client's is gone:
        // exactly one fd more than before (transient admin sockets aside, hence the per-peer
        // counts first).
        let settled = eventually(Duration::from_secs(2), || {
            tcp_fds_to(pid, port(&a)) == 0
                && tcp_fds_to(pid, port(&b)) == 0
                && tcp_fds_to(pid, port(&c)) == 1
                && gw.open_fds() <= fds_before + 1
        });
        assert!(
            settled,
            "fds: before {fds_before} {fd_list_before:?}\nnow {} {:?}\nbackend ports a {} b {} c {}",
            gw.open_fds(),
            describe_fds(pid),
            port(&a),
            port(&b),
            port(&c)
        );
        assert_eq!(
            gw.metric("ringway_requests_total{route=\"/page\",status=\"499\"}"),
            Some(1.0)
        );
        // The gateway still serves; the cancelled backends get fresh connections.
        let mut client = Client::connect(gw.addr);
        let t0 = Instant::now();
        assert_eq!(client.get("/page").status, 200);
        assert!(t0.elapsed() >= Duration::from_millis(1400));
    }
);

/// Runs `ringway check` on `text`; returns (success, stdout + stderr).
fn check(text: &str, tag: &str) -> (bool, String) {
    let dir =
        std::env::temp_dir().join(format!("ringway-fanout-check-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fan.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let mut all = String::from_utf8_lossy(&out.stdout).to_string();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), all)
}

both_drivers!(check_validates_fanout_config, |driver: &str| {
    let ups = [
        ("ads", "127.0.0.1:9001".to_string()),
        ("profile", "unix:/run/p.sock".to_string()),
    ];
    let good = format!(
        "[route.fanout]\ntimeout = \"300ms\"\n{}{}",
        call(
            "ads",
            "required = false\ntimeout = \"100ms\"\nforward_headers = [\"x-request-id\"]"
        ),
        call("profile", "required = true")
    );
    let (cfg, _, _) = config(driver, &ups, &good);
    let (ok, out) = check(&cfg, &format!("{driver}-good"));
    assert!(ok, "valid fan-out config rejected: {out}");
    assert!(
        out.contains("fanout") && out.contains("profile"),
        "prints the resolved config: {out}"
    );
    let bad = [
        (
            "dup",
            format!("[route.fanout]\n{}{}", call("ads", ""), call("ads", "")),
            "already defined",
        ),
        (
            "unknown",
            format!("[route.fanout]\n{}", call("nope", "")),
            "no `[[upstream]]` is named `nope`",
        ),
        (
            "timeout",
            format!("[route.fanout]\ntimeout = \"100ms\"\n{}", call("ads", "timeout = \"1s\"")),
            "longer than the route's fan-out timeout",
        ),
        (
            "name",
            "[route.fanout]\n[[route.fanout.call]]\nname = \"a\\\"b\"\nupstream = \"ads\"\npath = \"/a\"\n"
                .to_string(),
            "not a valid call name",
        ),
    ];
    for (tag, fanout, want) in bad {
        let (cfg, _, _) = config(driver, &ups, &fanout);
        let (ok, out) = check(&cfg, &format!("{driver}-{tag}"));
        assert!(!ok, "{tag}: must be rejected");
        assert!(out.contains(want), "{tag}: expected `{want}` in: {out}");
        assert!(
            out.contains("fan.toml:") && out.contains("route[0].fanout"),
            "{tag}: located: {out}"
        );
    }
});

both_drivers!(access_log_records_the_fanout_outcome, |driver: &str| {
    let ok = echo("ok", 0);
    let err = Backend::tcp(BackendSpec {
        status: 500,
        ..BackendSpec::default()
    });
    let log_path = std::env::temp_dir().join(format!(
        "ringway-fanout-access-{}-{driver}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log_path);
    let (body, addr, admin) = config(
        driver,
        &[("ok", ok.endpoint()), ("err", err.endpoint())],
        &format!("[route.fanout]\n{}{}", call("ok", ""), call("err", "")),
    );
    // `[log]` must come before the `[[upstream]]` arrays: put it right after the preamble.
    let cut = body.find("[[upstream]]").unwrap_or(body.len());
    let cfg = format!(
        "{}[log]\naccess = \"{}\"\nformat = \"json\"\n\n{}",
        &body[..cut],
        log_path.display(),
        &body[cut..]
    );
    let required = cfg.replace(
        "name = \"err\"\nupstream = \"err\"\npath = \"/err\"\n",
        "name = \"err\"\nupstream = \"err\"\npath = \"/err\"\nrequired = true\n",
    );
    let cases = [
        (&cfg, "partial:err", 200, "HTTP/1.1 200 OK\r\n\r\n"),
        (
            &required,
            "failed:err",
            502,
            "HTTP/1.1 502 Bad Gateway\r\n\r\n",
        ),
    ];
    for (cfg, want, status, status_line) in cases {
        let _ = std::fs::remove_file(&log_path);
        // Fresh ports for each gateway: a port released by the first one can be taken meanwhile
        // (e.g. as another process's ephemeral port) on a busy machine.
        let (fresh, fresh_addr, fresh_admin) = preamble(driver, 1);
        let cfg = cfg
            .replace(&addr.to_string(), &fresh_addr.to_string())
            .replace(&admin.to_string(), &fresh_admin.to_string());
        assert!(cfg.starts_with(&fresh[..20]), "ports swapped in: {cfg}");
        let mut gw = Gateway::start(&cfg, fresh_addr, fresh_admin);
        let mut c = Client::connect(gw.addr);
        let r = c.get("/page?x=1");
        assert_eq!(r.status, status);
        let head_len = r
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
            + status_line.len();
        drop(c);
        gw.signal(libc::SIGTERM);
        assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
        let text = std::fs::read_to_string(&log_path).expect("access log written");
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or(""))
            .unwrap_or_else(|e| panic!("bad JSON line ({e}): {text}"));
        assert_eq!(line["fanout"], want, "{text}");
        assert_eq!(line["status"], status);
        assert_eq!(line["route"], "/page");
        assert_eq!(
            line["bytes"].as_u64(),
            Some((head_len + r.body.len()) as u64),
            "{text}"
        );
    }
});

both_drivers!(drain_mid_fanout_answers_then_closes, |driver: &str| {
    let (a, b) = (echo("a", 400), echo("b", 0));
    let mut gw = start(
        driver,
        &[("a", a.endpoint()), ("b", b.endpoint())],
        &format!("[route.fanout]\n{}{}", call("a", ""), call("b", "")),
    );
    let mut client = Client::connect(gw.addr);
    client.send(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(eventually(Duration::from_secs(2), || a.requests() == 1));
    gw.signal(libc::SIGTERM);
    let r = client
        .read_response(false)
        .expect("the in-flight fan-out is answered during the drain");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["a"]["backend"], "a");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a drain that began mid-fan-out closes the connection"
    );
    assert!(client.is_closed(Duration::from_secs(2)));
    assert_eq!(
        gw.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        gw.stderr()
    );
});

both_drivers!(
    client_that_stops_reading_is_cut_after_client_idle,
    |driver: &str| {
        // A 5 MB body: more than loopback buffers hold (about 3 MB here) once the client stops
        // reading. Plain text, escaped cheaply: validating megabytes of JSON in a debug build
        // would load the machine and starve the other timing tests.
        let big = "x".repeat(5 * 1024 * 1024);
        let a = backend("a", 0, Some(&big), "text/plain");
        let (body, addr, admin) = config(
            driver,
            &[("a", a.endpoint())],
            &format!("[route.fanout]\n{}", call("a", "")),
        );
        let cut = body.find("[[upstream]]").unwrap_or(body.len());
        let cfg = format!(
            "{}[timeouts]\nclient_idle = \"300ms\"\n\n{}",
            &body[..cut],
            &body[cut..]
        );
        let gw = Gateway::start(&cfg, addr, admin);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&gw.addr.into()).unwrap();
        let mut s: std::net::TcpStream = s.into();
        s.write_all(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // Only a scrape every shard answered counts: a shard busy past the admin's 2 s scrape limit
        // is left out of the sums, which would read as "0 open".
        let open = || {
            let (_, text) = gw.admin_get("/metrics");
            let value = |series: &str| {
                text.lines().find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
            };
            if value("ringway_shards_reporting") == Some(1.0) {
                value("ringway_client_connections_open").unwrap_or(-1.0)
            } else {
                -1.0
            }
        };
        assert!(eventually(Duration::from_secs(2), || open() == 1.0));
        // Never read: the gateway must give up on the write after client_idle, not hold on forever.
        assert!(
            eventually(Duration::from_secs(10), || open() == 0.0),
            "the stalled fan-out write was cut; open connections: {}",
            open()
        );
        // What the client can still read ends in a reset (RST), not a clean end of a whole answer.
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let r = std::io::Read::read_to_end(&mut s, &mut got);
        assert!(
            r.is_err() || got.len() < big.len(),
            "a truncated answer must not look complete: {r:?}, {} bytes",
            got.len()
        );
    }
);

// An HTTP/1.0 client that asks for keep-alive only keeps the connection if the answer says
// `Connection: keep-alive` (RFC 9112 §9.3); without it the client waits for a close that never
// comes. The fan-out's answer and the gateway's own error answers must say it.
both_drivers!(http10_keepalive_is_announced, |driver: &str| {
    let a = echo_unix("a", 0);
    let gw = start(
        driver,
        &[("a", a.endpoint())],
        &format!("[route.fanout]\ntimeout = \"5s\"\n{}", call("a", "")),
    );
    let mut client = Client::connect(gw.addr);
    for (i, req) in [
        "GET /page HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        // Fan-out routes answer GET and HEAD only: a gateway-made 405.
        "DELETE /page HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /page?again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        client.send(req.as_bytes());
        let r = client.read_response(false).expect("answer");
        assert!(r.status == 200 || r.status == 405, "request {i}: {r:?}");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{driver}: request {i} ({}) must announce keep-alive",
            r.status
        );
    }
    // Without `Connection: keep-alive`, HTTP/1.0 closes after the answer.
    client.send(b"GET /page HTTP/1.0\r\n\r\n");
    let r = client.read_response(false).expect("answer");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(client.is_closed(Duration::from_secs(2)));
});

// A pooled call connection that, idle, received a whole unsolicited response (or a FIN) must
// not carry the next call: its answer would be the stray one. On io_uring the check rides with
// the call's write; the call is then resent on a fresh connection.
both_drivers!(stale_pooled_call_connection_is_not_used, |driver: &str| {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let done = Arc::new(AtomicUsize::new(0));
    let signal = done.clone();
    // Connection 0 answers once, then sends a stray response while idle; connection 1 answers
    // once, then closes while idle; later ones answer every request.
    let backend = common::scripted::Scripted::start(move |mut s, n| {
        let mut buf = Vec::new();
        while let Some(head) = common::scripted::read_head(&mut s, &mut buf) {
            common::scripted::read_body(&mut s, &mut buf, common::scripted::content_length(&head));
            common::scripted::respond(&mut s, format!("conn{n}").as_bytes(), "");
            if n < 2 {
                std::thread::sleep(Duration::from_millis(50));
                if n == 0 {
                    common::scripted::respond(&mut s, b"stray", "");
                }
                signal.fetch_add(1, Ordering::SeqCst);
                // Holds connection 0 open with its stray bytes unread; closes connection 1.
                if n == 0 {
                    let _ = common::scripted::read_head(&mut s, &mut buf);
                }
                return;
            }
        }
    });
    let gw = start(
        driver,
        &[("s", backend.addr.to_string())],
        &format!("[route.fanout]\ntimeout = \"2s\"\n{}", call("s", "")),
    );
    let mut c = Client::connect(gw.addr);
    let r = c.get("/page");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"s":"conn0"}"#));
    common::scripted::wait_for_misdeeds(&done, 1);
    let r = c.get("/page");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"s":"conn1"}"#),
        "{driver}: the connection holding a stray response was not used"
    );
    common::scripted::wait_for_misdeeds(&done, 2);
    let r = c.get("/page");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"s":"conn2"}"#),
        "{driver}: the connection the backend closed was not used"
    );
    assert_eq!(r.header("ringway-partial"), None);
    assert_eq!(backend.accepted(), 3);
});
