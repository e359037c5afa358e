//! Hardening II (issue 16) through the running gateway, on both drivers: request-target
//! normalization (the path routed is the path forwarded), chunk extensions (strict, never
//! forwarded), codings an HTTP/1.0 client cannot be told about, and CONNECT.

mod common;

use ringway::both_drivers;

use std::time::Duration;

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, Response, preamble};
use common::scripted::{Scripted, read_head};
use common::tap::Tap;

/// A gateway (1 shard) with `/admin` going to the `admin` backend and everything else to the
/// `app` backend, each behind a recording tap.
struct Rig {
    gw: Gateway,
    admin: Backend,
    app: Backend,
    app_tap: Tap,
}

impl Rig {
    fn start(driver: &str, extra_server: &str) -> Rig {
        let admin = Backend::tcp(BackendSpec {
            name: "admin".into(),
            ..BackendSpec::default()
        });
        let app = Backend::tcp(BackendSpec {
            name: "app".into(),
            ..BackendSpec::default()
        });
        let app_tap = Tap::new(app.addr.unwrap());
        let (mut cfg, addr, admin_addr) = preamble(driver, 1);
        // Server keys go into the preamble's [server] table.
        cfg = cfg.replacen(
            "pin_cpus = false\n",
            &format!("pin_cpus = false\n{extra_server}"),
            1,
        );
        cfg.push_str(&format!(
            "[[upstream]]\nname = \"admin\"\nendpoints = [\"{}\"]\n\n\
             [[upstream]]\nname = \"app\"\nendpoints = [\"{}\"]\n\n\
             [[route]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
            admin.endpoint(),
            app_tap.endpoint()
        ));
        let gw = Gateway::start(&cfg, addr, admin_addr);
        Rig {
            gw,
            admin,
            app,
            app_tap,
        }
    }

    fn send(&self, raw: &[u8]) -> (Response, Client) {
        let mut c = Client::connect(self.gw.addr);
        c.send(raw);
        let r = c
            .read_response(false)
            .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(raw)));
        (r, c)
    }

    fn get(&self, target: &str) -> Response {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .0
    }
}

/// The request line of the last head a backend received.
fn last_request_line(b: &Backend) -> String {
    b.heads()
        .last()
        .and_then(|h| h.lines().next().map(str::to_string))
        .unwrap_or_default()
}

both_drivers!(bypasses_are_routed_and_forwarded_as_admin, |driver| {
    let rig = Rig::start(driver, "");
    for target in [
        "/admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/%61dmin",
        "//admin",
        "/public/./%2E%2e//admin?q=/../x",
    ] {
        let before = rig.admin.requests();
        let r = rig.get(target);
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert!(
            r.text().contains("\"backend\":\"admin\""),
            "{target} must be routed by the /admin route, got {}",
            r.text()
        );
        assert_eq!(rig.admin.requests(), before + 1, "{target}");
        let want = match target.split_once('?') {
            Some((_, q)) => format!("GET /admin?{q} HTTP/1.1"),
            None => "GET /admin HTTP/1.1".to_string(),
        };
        assert_eq!(last_request_line(&rig.admin), want, "{target} forwarded as");
    }
    assert_eq!(
        rig.app.requests(),
        0,
        "the app backend saw {:?}",
        rig.app.heads()
    );
});

both_drivers!(other_paths_forwarded_normalized, |driver| {
    let rig = Rig::start(driver, "");
    let r = rig.get("/a/b/../%63?x=%2e%2E");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_request_line(&rig.app), "GET /a/c?x=%2e%2E HTTP/1.1");
    let raw = String::from_utf8_lossy(&rig.app_tap.received()).to_string();
    assert!(raw.starts_with("GET /a/c?x=%2e%2E HTTP/1.1\r\n"), "{raw}");
});

both_drivers!(paths_refused_with_400, |driver| {
    let rig = Rig::start(driver, "");
    for (target, reason) in [
        ("/../admin", "path_above_root"),
        ("/public/%2e%2e/%2e%2e/admin", "path_above_root"),
        ("/admin%2fx", "encoded_slash"),
        ("/admin%5Cx", "encoded_slash"),
        ("/admin\\x", "encoded_slash"),
        ("/bad%zz", "invalid_target"),
    ] {
        let (r, mut c) = rig.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert!(r.text().contains(reason), "{target}: {}", r.text());
        assert!(c.is_closed(Duration::from_secs(3)), "{target}: not closed");
    }
    assert_eq!(rig.admin.requests() + rig.app.requests(), 0);
});

both_drivers!(encoded_slashes_kept_when_configured, |driver| {
    let rig = Rig::start(
        driver,
        "encoded_slashes = \"keep\"\nmerge_slashes = false\n",
    );
    let r = rig.get("/files/a%2fb\\c");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_request_line(&rig.app), "GET /files/a%2Fb\\c HTTP/1.1");
    // Unmerged: `//admin` is not `/admin`, it goes to the app as sent.
    let r = rig.get("//admin");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_request_line(&rig.app), "GET //admin HTTP/1.1");
    assert_eq!(rig.admin.requests(), 0);
});

/// A request the backend must never see; smuggling cases hide it after a bad body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// A gateway (1 shard) proxying every path to `backend`.
fn proxy_to(driver: &str, backend: &str) -> Gateway {
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(&format!(
        "[[upstream]]\nname = \"b\"\nendpoints = [\"{backend}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n"
    ));
    Gateway::start(&cfg, addr, admin)
}

/// Sends `raw` and reads until the gateway closes: the response bytes as they came.
fn exchange_raw(gw: &Gateway, raw: &[u8]) -> String {
    let mut c = Client::connect(gw.addr);
    c.send(raw);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.reader, &mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// A scripted backend that reads one request head and answers `response` (then closes).
fn answering(response: &'static [u8]) -> Scripted {
    Scripted::start(move |mut s, _| {
        let mut buf = Vec::new();
        if read_head(&mut s, &mut buf).is_some() {
            let _ = std::io::Write::write_all(&mut s, response);
        }
    })
}

both_drivers!(request_chunk_extensions_validated_and_dropped, |driver| {
    let backend = Backend::tcp(BackendSpec::default());
    let tap = Tap::new(backend.addr.unwrap());
    let gw = proxy_to(driver, &tap.endpoint());
    let head = "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut c = Client::connect(gw.addr);
    c.send(format!("{head}5 ; a = b;c=\"d \\\" e\"\r\nhello\r\n0;last\r\n\r\n").as_bytes());
    let r = c.read_response(false).expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"body_len\":5"), "{}", r.text());
    let raw = String::from_utf8_lossy(&tap.received()).to_string();
    assert!(
        raw.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "the backend must get the chunk sizes alone, got {raw:?}"
    );
    assert!(!raw.contains(";"), "an extension was forwarded: {raw:?}");

    for (name, body) in [
        ("no_name", "2;\r\nhi\r\n0\r\n\r\n"),
        ("name_not_token", "2;a@b\r\nhi\r\n0\r\n\r\n"),
        ("empty_value", "2;a=\r\nhi\r\n0\r\n\r\n"),
        ("unterminated_quote", "2;a=\"b\r\nhi\r\n0\r\n\r\n"),
        ("trailing_bws", "2;a \r\nhi\r\n0\r\n\r\n"),
        ("last_chunk", "2\r\nhi\r\n0;=x\r\n\r\n"),
    ] {
        tap.clear();
        let out = exchange_raw(&gw, format!("{head}{body}{SMUGGLED}").as_bytes());
        assert!(out.starts_with("HTTP/1.1 400 "), "{name}: {out}");
        assert!(out.contains("invalid_chunk_extension"), "{name}: {out}");
        let raw = String::from_utf8_lossy(&tap.received()).to_string();
        assert!(!raw.contains("/smuggled"), "{name}: smuggled: {raw:?}");
    }
});

both_drivers!(response_chunk_extensions_validated_and_dropped, |driver| {
    let good = answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"y\";z\r\nhello\r\n0 ;end=1\r\n\r\n",
    );
    let gw = proxy_to(driver, &good.addr.to_string());
    let out = exchange_raw(
        &gw,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(
        out.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "the client must get the chunk sizes alone: {out:?}"
    );

    let bad =
        answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n");
    let gw = proxy_to(driver, &bad.addr.to_string());
    let out = exchange_raw(
        &gw,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 502 "), "{out}");
    assert!(!out.contains("hello"), "{out}");
});

both_drivers!(coded_body_never_reaches_http10_client_unnamed, |driver| {
    // Opaque "coded" bytes: ringway does not decode gzip, it must not strip the field naming it.
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n";
    const UNTIL_CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00";
    for (name, response) in [("gzip_chunked", CHUNKED), ("gzip_until_close", UNTIL_CLOSE)] {
        let backend = answering(response);
        let gw = proxy_to(driver, &backend.addr.to_string());
        let out = exchange_raw(&gw, b"GET / HTTP/1.0\r\nHost: t\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 502 "),
            "{name} to HTTP/1.0: {out:?}"
        );
        assert!(
            !out.contains('\u{1f}'),
            "{name}: coded bytes reached the client: {out:?}"
        );
        // An HTTP/1.1 client gets the codings named.
        let out = exchange_raw(
            &gw,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(
            out.starts_with("HTTP/1.1 200 "),
            "{name} to HTTP/1.1: {out:?}"
        );
        assert!(
            out.to_ascii_lowercase().contains("transfer-encoding: gzip"),
            "{name} to HTTP/1.1: {out:?}"
        );
    }
});

both_drivers!(connect_is_not_supported, |driver| {
    let backend = Backend::tcp(BackendSpec::default());
    let gw = proxy_to(driver, &backend.endpoint());
    let mut c = Client::connect(gw.addr);
    // Keep-alive: the same connection then serves an ordinary request.
    c.send(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
    let r = c.read_response(false).expect("response to CONNECT");
    assert_eq!(r.status, 501, "{}", r.text());
    assert_eq!(r.text(), "{\"error\":\"connect_not_supported\"}\n");
    assert_eq!(r.header("connection"), None);
    let r = c.get("/after");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.requests(), 1, "CONNECT must not reach the backend");
    // With a body it cannot skip, or when asked, the connection closes.
    for raw in [
        &b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nConnection: close\r\n\r\n"[..],
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let mut c = Client::connect(gw.addr);
        c.send(raw);
        let r = c.read_response(false).expect("response to CONNECT");
        assert_eq!(r.status, 501, "{}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed(Duration::from_secs(3)));
    }
    assert_eq!(backend.requests(), 1);
});

/// A gateway (1 shard) with a fan-out route on `/page` calling `a` (optional) on `backend`.
fn fanout_to(driver: &str, backend: &str, required: bool) -> Gateway {
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(&format!(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"{backend}\"]\n\n\
         [[route]]\npath_prefix = \"/page\"\n[route.fanout]\ntimeout = \"2s\"\n\
         [[route.fanout.call]]\nname = \"a\"\nupstream = \"a\"\npath = \"/a\"\nrequired = {required}\n"
    ));
    Gateway::start(&cfg, addr, admin)
}

both_drivers!(fanout_call_fails_on_101_and_on_codings, |driver| {
    // After a 101 the connection speaks another protocol: what follows is not a response,
    // however much it looks like one.
    const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    const CODED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n";
    for (name, response) in [("101", SWITCH), ("gzip_chunked", CODED)] {
        let backend = answering(response);
        let gw = fanout_to(driver, &backend.addr.to_string(), false);
        let r = Client::connect(gw.addr).get("/page");
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.text(), "{\"a\":null}", "{name}: the call must fail");
        assert_eq!(r.header("ringway-partial"), Some("a"), "{name}");

        let gw = fanout_to(driver, &backend.addr.to_string(), true);
        let r = Client::connect(gw.addr).get("/page");
        assert_eq!(r.status, 502, "{name} on a required call: {}", r.text());
    }
});

both_drivers!(fanout_json_with_invalid_utf8_fails_the_call, |driver| {
    const BAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"s\":\"\xff\"}";
    // Valid JSON in many chunks, one UTF-8 sequence cut across two of them: embedded as is.
    const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"s\r\n3\r\n\":\"\r\n2\r\nx\xc3\r\n3\r\n\xa9\"}\r\n0\r\n\r\n";
    let backend = answering(BAD);
    let gw = fanout_to(driver, &backend.addr.to_string(), false);
    let r = Client::connect(gw.addr).get("/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "{\"a\":null}", "invalid UTF-8 must fail the call");
    assert_eq!(r.header("ringway-partial"), Some("a"));
    let gw = fanout_to(driver, &backend.addr.to_string(), true);
    assert_eq!(Client::connect(gw.addr).get("/page").status, 502);

    let backend = answering(GOOD);
    let gw = fanout_to(driver, &backend.addr.to_string(), false);
    let r = Client::connect(gw.addr).get("/page");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.body,
        "{\"a\":{\"s\":\"x\u{e9}\"}}".as_bytes(),
        "{}",
        r.text()
    );
    assert_eq!(r.header("ringway-partial"), None);
});
