//! Foundation (issue 2): shards spread connections, SIGTERM drains, config errors carry
//! positions, `--io auto` falls back under a real seccomp filter. Every test runs on both drivers.

mod common;

use ringway::both_drivers;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, preamble};

fn proxy_config(
    driver: &str,
    shards: usize,
    backend: &Backend,
) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
    let (mut cfg, addr, admin) = preamble(driver, shards);
    cfg.push_str(&format!(
        "[[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n",
        backend.endpoint()
    ));
    (cfg, addr, admin)
}

both_drivers!(connections_spread_over_two_shards, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config(driver, 2, &backend);
    let gw = Gateway::start(&cfg, addr, admin);
    let accepts = |shard: usize| {
        gw.metric(&format!("ringway_shard_accepts_total{{shard=\"{shard}\"}}"))
            .unwrap_or(0.0)
    };
    let (b0, b1) = (accepts(0), accepts(1));
    const N: usize = 64;
    let mut clients: Vec<Client> = (0..N).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        let r = c.get("/x");
        assert_eq!(r.status, 200, "expected 200 through the proxy, got {r:?}");
    }
    let (s0, s1) = (accepts(0) - b0, accepts(1) - b1);
    assert_eq!(
        (s0 + s1) as usize,
        N,
        "every connection accepted exactly once: shard0={s0} shard1={s1}"
    );
    assert!(
        s0 > 0.0 && s1 > 0.0,
        "SO_REUSEPORT spreads over both shards: shard0={s0} shard1={s1}"
    );
    assert!(gw.stderr().contains(&format!("driver={driver}")) || gw.stderr().contains(driver));
});

both_drivers!(sigterm_drains_an_inflight_request, |driver: &str| {
    let backend = Backend::tcp(BackendSpec {
        delay: Duration::from_millis(600),
        ..BackendSpec::default()
    });
    let (cfg, addr, admin) = proxy_config(driver, 1, &backend);
    let mut gw = Gateway::start(&cfg, addr, admin);
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(150));
    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    let r = c
        .read_response(false)
        .expect("the in-flight request is answered during drain");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a response during drain closes the connection"
    );
    let code = gw.wait_exit(Duration::from_secs(5));
    assert_eq!(
        code,
        Some(0),
        "graceful drain exits 0; stderr:\n{}",
        gw.stderr()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "no longer accepting after drain"
    );
});

both_drivers!(sigterm_closes_idle_keepalive_connections, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config(driver, 1, &backend);
    let mut gw = Gateway::start(&cfg, addr, admin);
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/a").status, 200);
    gw.signal(libc::SIGTERM);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "idle keepalive connection closed by drain"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
});

fn check(text: &str) -> (bool, String) {
    // One directory per call: the uring and epoll runs of a test go in parallel, and their texts
    // can have the same length.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "ringway-check-{}-{call}-{}",
        std::process::id(),
        text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
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
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

both_drivers!(config_errors_name_file_line_and_key, |driver: &str| {
    let head = format!("[server]\nio = \"{driver}\"\nlisten = [\"127.0.0.1:8080\"]\n");
    // Unknown key on line 4.
    let (ok, err) = check(&format!("{head}bogus = 1\n"));
    assert!(!ok, "unknown key must fail");
    assert!(
        err.contains("bad.toml:4:"),
        "expected bad.toml:4:<col> in: {err}"
    );
    assert!(err.contains("bogus"), "expected the key name in: {err}");
    // Bad duration on line 5.
    let (ok, err) = check(&format!(
        "{head}\n[timeouts]\nclient_idle = \"10 parsecs\"\n"
    ));
    assert!(!ok);
    assert!(err.contains("bad.toml:6:"), "expected line 6 in: {err}");
    assert!(err.contains("client_idle"), "expected the key in: {err}");
    // A route that names an upstream nobody defines, on line 6.
    let (ok, err) = check(&format!(
        "{head}\n[[route]]\npath_prefix = \"/\"\nupstream = \"nope\"\n"
    ));
    assert!(!ok);
    assert!(err.contains("bad.toml:7:"), "expected line 7 in: {err}");
    assert!(err.contains("nope"), "expected the upstream name in: {err}");
    // An unparseable endpoint.
    let (ok, err) = check(&format!(
        "{head}\n[[upstream]]\nname = \"a\"\nendpoints = [\"not an endpoint\"]\n"
    ));
    assert!(!ok);
    assert!(err.contains("bad.toml:7:"), "expected line 7 in: {err}");
    // A valid config prints the resolved config.
    let (ok, err) = check(&head);
    assert!(ok, "valid config rejected: {err}");
});

both_drivers!(probe_tells_the_truth, |driver: &str| {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("probe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        text.contains(release.trim()),
        "probe prints the kernel release; got:\n{text}"
    );
    assert!(
        text.contains("auto would pick"),
        "probe says what auto picks; got:\n{text}"
    );
    let _ = driver;
});

mod seccomp_fallback {
    use super::*;
    use common::seccomp::deny_io_uring;

    /// `--io auto` under a filter that denies io_uring: serves on epoll, says why, once.
    #[test]
    fn auto_falls_back_to_epoll() {
        let backend = Backend::tcp(BackendSpec::default());
        let (cfg, addr, admin) = proxy_config("auto", 1, &backend);
        let gw = Gateway::start_with(&cfg, addr, admin, |cmd| deny_io_uring(cmd, libc::EPERM));
        let mut c = Client::connect(addr);
        assert_eq!(c.get("/x").status, 200);
        let log = gw.stderr();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("using the epoll driver"))
            .collect();
        assert_eq!(lines.len(), 1, "exactly one fallback line; log:\n{log}");
        assert!(
            lines[0].contains("io_uring") && lines[0].contains("EPERM"),
            "the line says why: {}",
            lines[0]
        );
    }

    /// `--io uring` under the same filter: exits non-zero naming io_uring, the errno and the cause.
    #[test]
    fn uring_fails_clearly() {
        let backend = Backend::tcp(BackendSpec::default());
        let (cfg, _addr, _admin) = proxy_config("uring", 1, &backend);
        let dir = std::env::temp_dir().join(format!("ringway-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringway.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg("run").arg("--config").arg(&path);
        deny_io_uring(&mut cmd, libc::EPERM);
        let out = cmd.output().unwrap();
        assert!(
            !out.status.success(),
            "--io uring must fail where io_uring is denied"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("io_uring"), "names io_uring: {err}");
        assert!(err.contains("EPERM"), "names the errno: {err}");
        assert!(err.contains("seccomp"), "names the likely cause: {err}");
    }

    /// `--io epoll` under the filter just works (the epoll driver never touches io_uring).
    #[test]
    fn epoll_works_under_the_filter() {
        let backend = Backend::tcp(BackendSpec::default());
        let (cfg, addr, admin) = proxy_config("epoll", 1, &backend);
        let _gw = Gateway::start_with(&cfg, addr, admin, |cmd| deny_io_uring(cmd, libc::EPERM));
        let mut c = Client::connect(addr);
        assert_eq!(c.get("/y").status, 200);
    }
}

both_drivers!(shards_are_pinned_to_distinct_cpus, |driver: &str| {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config(driver, 2, &backend);
    let cfg = cfg.replace("pin_cpus = false", "pin_cpus = true");
    let gw = Gateway::start(&cfg, addr, admin);
    let pid = gw.child.id();
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("ringway-shard-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        pinned.push((comm.trim().to_string(), cpus));
    }
    pinned.sort();
    assert_eq!(pinned.len(), 2, "two named shard threads: {pinned:?}");
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, cpus) in &pinned {
        assert!(
            cpus.parse::<usize>().is_ok(),
            "{name} is pinned to exactly one CPU, got {cpus:?}"
        );
    }
    if online >= 2 {
        assert_ne!(
            pinned[0].1, pinned[1].1,
            "shards on distinct CPUs: {pinned:?}"
        );
    }
});
