//! Operations (issue 8): metrics match the traffic, readiness during drain, reload under load with
//! zero failures, an invalid reload keeps the old config, access log lines parse. Both drivers.

mod common;

use ringway::both_drivers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, preamble};

fn upstream_route(name: &str, backend: &Backend, prefix: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{name}\"\n\n",
        backend.endpoint()
    )
}

both_drivers!(metrics_count_what_happened, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(&upstream_route("api", &backend, "/api/"));
    let gw = Gateway::start(&cfg, addr, admin);
    let mut c = Client::connect(addr);
    for _ in 0..25 {
        assert_eq!(c.get("/api/x").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/nowhere").status, 404);
    }
    let ok = gw.metric("ringway_requests_total{route=\"/api/\",status=\"200\"}");
    assert_eq!(ok, Some(25.0), "25 proxied requests counted");
    let nf = gw.metric("ringway_requests_total{route=\"\",status=\"404\"}");
    assert_eq!(nf, Some(3.0), "3 unrouted requests counted");
    assert_eq!(
        gw.metric("ringway_upstream_requests_total{upstream=\"api\",outcome=\"ok\"}"),
        Some(25.0)
    );
    assert_eq!(
        gw.metric("ringway_upstream_connections_opened_total{upstream=\"api\"}"),
        Some(1.0),
        "one keepalive connection served all 25"
    );
    assert_eq!(
        gw.metric("ringway_upstream_pool_idle{upstream=\"api\"}"),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("ringway_request_duration_seconds_count"),
        Some(28.0)
    );
    assert_eq!(gw.metric("ringway_client_connections_open"), Some(1.0));
    assert_eq!(backend.accepted(), 1);
});

both_drivers!(readyz_turns_503_during_drain_grace, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str("[timeouts]\ndrain_grace = \"1500ms\"\ndrain = \"2s\"\n\n");
    cfg.push_str(&upstream_route("api", &backend, "/"));
    let mut gw = Gateway::start(&cfg, addr, admin);
    assert_eq!(gw.admin_get("/readyz").0, 200);
    assert_eq!(gw.admin_get("/healthz").0, 200);
    gw.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let mut saw_503 = false;
    while t0.elapsed() < Duration::from_millis(800) {
        if gw.admin_get("/readyz").0 == 503 {
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "/readyz answers 503 once SIGTERM arrived");
    // Still serving during the grace period (a load balancer is noticing meanwhile).
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/x").status, 200, "served during drain_grace");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(6)),
        Some(0),
        "stderr:\n{}",
        gw.stderr()
    );
});

both_drivers!(reload_under_load_loses_nothing, |driver: &str| {
    let a = Backend::tcp(BackendSpec {
        name: "a".into(),
        ..BackendSpec::default()
    });
    let b = Backend::tcp(BackendSpec {
        name: "b".into(),
        ..BackendSpec::default()
    });
    let (pre, addr, admin) = preamble(driver, 2);
    let cfg_a = format!("{pre}{}", upstream_route("svc", &a, "/"));
    let cfg_b = format!("{pre}{}", upstream_route("svc", &b, "/"));
    let gw = Gateway::start(&cfg_a, addr, admin);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
                    match c.read_response(false) {
                        Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gw.config_path, &cfg_b).unwrap();
    gw.signal(libc::SIGHUP);
    // Wait until new requests reach b.
    let t0 = Instant::now();
    while b.requests() == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        b.requests() > 0,
        "after reload, requests reach the new backend"
    );
    assert!(
        a.requests() > 0,
        "before reload, requests reached the old backend"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "zero failed requests across the reload"
    );
    assert!(ok.load(Ordering::SeqCst) > 50);
    assert!(
        gw.stderr().contains("reload applied"),
        "stderr:\n{}",
        gw.stderr()
    );
});

both_drivers!(invalid_reload_keeps_serving, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (mut cfg, addr, admin) = preamble(driver, 1);
    cfg.push_str(&upstream_route("api", &backend, "/"));
    let gw = Gateway::start(&cfg, addr, admin);
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/x").status, 200);
    std::fs::write(&gw.config_path, "[server]\nlisten = [\"not an address\"]\n").unwrap();
    gw.signal(libc::SIGHUP);
    let t0 = Instant::now();
    while !gw.stderr().contains("reload rejected") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gw.stderr().contains("reload rejected"),
        "stderr:\n{}",
        gw.stderr()
    );
    assert!(
        gw.stderr().contains("ringway.toml:2:"),
        "the rejection names file and line"
    );
    assert_eq!(c.get("/y").status, 200, "the old config still serves");
    let mut c2 = Client::connect(addr);
    assert_eq!(c2.get("/z").status, 200, "new connections too");
});

both_drivers!(access_log_lines_parse, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (mut cfg, addr, admin) = preamble(driver, 1);
    let log_path = std::env::temp_dir().join(format!(
        "ringway-access-{}-{driver}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log_path);
    cfg.push_str(&format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n\n",
        log_path.display()
    ));
    cfg.push_str(&upstream_route("api", &backend, "/api/"));
    let mut gw = Gateway::start(&cfg, addr, admin);
    let mut c = Client::connect(addr);
    for i in 0..5 {
        assert_eq!(c.get(&format!("/api/item?n={i}")).status, 200);
    }
    assert_eq!(c.get("/missing").status, 404);
    drop(c);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
    let text = std::fs::read_to_string(&log_path).expect("access log written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 6, "one line per request:\n{text}");
    for (i, l) in lines[..5].iter().enumerate() {
        assert_eq!(l["status"], 200);
        assert_eq!(l["method"], "GET");
        assert_eq!(l["path"], format!("/api/item?n={i}"));
        assert_eq!(l["route"], "/api/");
        assert_eq!(l["client"], "127.0.0.1");
        assert!(
            l["upstream"]
                .as_str()
                .is_some_and(|u| u == backend.endpoint())
        );
        assert!(l["bytes"].as_u64().is_some_and(|b| b > 0));
    }
    assert_eq!(lines[5]["status"], 404);
    assert!(lines[5]["route"].is_null());
});
