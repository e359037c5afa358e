//! The uring driver's start-up self-test and ring sizing (issue 15): a failed self-test step, or a
//! ring that does not fit RLIMIT_MEMLOCK, makes `--io auto` serve on epoll with one line saying
//! why, and `--io uring` exit with a message that says what to do. The failures are made on this
//! kernel: a step by the `RINGWAY_SELFTEST_FAIL` hook, memlock by a seccomp filter that answers
//! ENOMEM to big rings, as kernels whose io_uring predates 5.12 do. The real kernels are in
//! `tests/kernels/`. Each case names the driver it is about; epoll is the control.

mod common;

use std::process::Command;

use common::backend::{Backend, BackendSpec};
use common::gateway::{Client, Gateway, preamble};
use common::seccomp::enomem_for_rings_over;

fn proxy_config(
    driver: &str,
    backend: &Backend,
) -> (String, std::net::SocketAddr, std::net::SocketAddr) {
    let (mut cfg, addr, admin) = preamble(driver, 2);
    cfg.push_str(&format!(
        "[[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"b\"\n",
        backend.endpoint()
    ));
    (cfg, addr, admin)
}

/// The driver the gateway's "listening on" line names.
fn serving_driver(log: &str) -> &str {
    let line = log
        .lines()
        .find(|l| l.contains("listening on 127.0.0.1"))
        .unwrap_or_else(|| panic!("no listening line in:\n{log}"));
    let at = line.find("driver=").expect("driver field") + "driver=".len();
    line[at..].split_whitespace().next().unwrap_or("")
}

/// Runs `ringway run` to its exit (it must fail to start) and returns its stderr.
fn run_to_failure(cfg: &str, adjust: impl FnOnce(&mut Command)) -> String {
    // One file per call: tests run in parallel, and a config read while another test rewrites
    // it would be half a file.
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringway-selftest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringway.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.arg("run").arg("--config").arg(&path);
    adjust(&mut cmd);
    // Bounded: a gateway that started after all would serve forever.
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringway did not exit within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "ringway must not start; stderr:\n{err}"
    );
    err
}

fn fallback_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("using the epoll driver"))
        .collect()
}

/// Every step of the self-test, as it names itself: a failure at any one must be caught.
const STEPS: [&str; 11] = [
    "tcp listen",
    "tcp connect",
    "tcp accept",
    "tcp send/receive",
    "reuse check",
    "idle read",
    "timer on a pending read",
    "cancelled read",
    "unix listen",
    "unix connect",
    "unix accept",
];

#[test]
fn auto_serves_on_epoll_when_a_self_test_step_fails() {
    let backend = Backend::tcp(BackendSpec::default());
    for step in ["tcp connect", "cancelled read", "unix connect"] {
        let (cfg, addr, admin) = proxy_config("auto", &backend);
        let gw = Gateway::start_with(&cfg, addr, admin, |cmd| {
            cmd.env("RINGWAY_SELFTEST_FAIL", step);
        });
        assert_eq!(Client::connect(addr).get("/x").status, 200, "step {step}");
        let log = gw.stderr();
        let lines = fallback_lines(&log);
        assert_eq!(lines.len(), 1, "one fallback line for {step}; log:\n{log}");
        assert!(
            lines[0].contains("self-test") && lines[0].contains(&format!("\"{step}\"")),
            "the line names the step {step}: {}",
            lines[0]
        );
        assert_eq!(serving_driver(&log), "epoll", "log:\n{log}");
    }
}

#[test]
fn uring_exits_when_a_self_test_step_fails() {
    let backend = Backend::tcp(BackendSpec::default());
    for step in STEPS {
        let (cfg, _, _) = proxy_config("uring", &backend);
        let err = run_to_failure(&cfg, |cmd| {
            cmd.env("RINGWAY_SELFTEST_FAIL", step);
        });
        assert!(
            err.contains(&format!("\"{step}\"")),
            "names the step {step}: {err}"
        );
        assert!(err.contains("--io epoll"), "says what to do: {err}");
    }
}

#[test]
fn self_test_passes_and_uring_serves() {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config("auto", &backend);
    let gw = Gateway::start(&cfg, addr, admin);
    assert_eq!(Client::connect(addr).get("/x").status, 200);
    let log = gw.stderr();
    assert!(fallback_lines(&log).is_empty(), "no fallback; log:\n{log}");
    assert_eq!(serving_driver(&log), "uring", "log:\n{log}");
}

#[test]
fn epoll_runs_no_self_test() {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config("epoll", &backend);
    let gw = Gateway::start_with(&cfg, addr, admin, |cmd| {
        cmd.env("RINGWAY_SELFTEST_FAIL", "tcp connect");
    });
    assert_eq!(Client::connect(addr).get("/x").status, 200);
    assert_eq!(serving_driver(&gw.stderr()), "epoll");
}

#[test]
fn uring_ring_shrinks_to_fit_memlock() {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config("uring", &backend);
    let gw = Gateway::start_with(&cfg, addr, admin, |cmd| enomem_for_rings_over(cmd, 256));
    let mut c = Client::connect(addr);
    for _ in 0..50 {
        assert_eq!(c.get("/x").status, 200);
    }
    let log = gw.stderr();
    assert_eq!(serving_driver(&log), "uring", "log:\n{log}");
    let shrunk: Vec<&str> = log.lines().filter(|l| l.contains("ring shrunk")).collect();
    assert_eq!(shrunk.len(), 2, "one warning per shard; log:\n{log}");
    assert!(
        shrunk[0].contains("entries=256") && shrunk[0].contains("LimitMEMLOCK"),
        "says the size and the fix: {}",
        shrunk[0]
    );
}

#[test]
fn auto_serves_on_epoll_when_no_ring_fits_memlock() {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, addr, admin) = proxy_config("auto", &backend);
    // The probe's 8-entry rings fit; the driver's smallest ring does not.
    let gw = Gateway::start_with(&cfg, addr, admin, |cmd| enomem_for_rings_over(cmd, 8));
    assert_eq!(Client::connect(addr).get("/x").status, 200);
    let log = gw.stderr();
    let lines = fallback_lines(&log);
    assert_eq!(lines.len(), 1, "one fallback line; log:\n{log}");
    assert!(
        lines[0].contains("ENOMEM") || lines[0].contains("memory"),
        "says why: {}",
        lines[0]
    );
    assert!(
        lines[0].contains("LimitMEMLOCK"),
        "says the fix: {}",
        lines[0]
    );
    assert_eq!(serving_driver(&log), "epoll");
}

#[test]
fn uring_exits_when_no_ring_fits_memlock() {
    let backend = Backend::tcp(BackendSpec::default());
    let (cfg, _, _) = proxy_config("uring", &backend);
    let err = run_to_failure(&cfg, |cmd| enomem_for_rings_over(cmd, 8));
    assert!(
        err.contains("LimitMEMLOCK") && err.contains("ulimit -l"),
        "says the fix: {err}"
    );
    assert!(err.contains("--io epoll"), "says the alternative: {err}");
}
