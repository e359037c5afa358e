//! Smoke tests: tiny `suite --quick` and `ab` runs. No timing assertions (the machine may be
//! busy), but every value must be one a working measurement produces: requests flowed with no
//! errors, the target used CPU, user + kernel add up to the total, and the report's ratios are
//! the ratios of its own cells.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The tests run one at a time: each pins its load generator to the same client CPU, and three
/// suites at once on a busy 2-core machine can starve a 1 s window of any response at all.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `ringway` binary of the same build as this test: tests live in `<target>/<profile>/deps/`
/// and binaries in `<target>/<profile>/`, wherever `CARGO_TARGET_DIR` put them. Integration
/// tests only get their own package's binaries built, so this one comes from the same
/// `cargo test --workspace` (or a `cargo build`) run. `RINGWAY_BIN` overrides.
fn ringway_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps/");
    let bin = profile_dir.join("ringway");
    assert!(
        bin.is_file(),
        "no ringway binary at {} (next to this test's build): run `cargo build --bin ringway` \
         with the same profile and target dir first, or set RINGWAY_BIN",
        bin.display()
    );
    bin
}

fn run_suite(args: &[&str], out: &Path) -> (Value, String) {
    let status = Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .arg("suite")
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .expect("run ringway-bench suite");
    assert!(status.success(), "suite exited with {status}");
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let v: Value = serde_json::from_str(&text).expect("results.json is JSON");
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    (v, report)
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// A cell that ran: one round, requests, no errors, CPU spent, user + kernel = total, req/s =
/// requests / window, and the median equal to its only round.
fn assert_sane_cell(c: &Value) {
    assert_eq!(c["status"], "ok", "cell: {c}");
    let rounds = c["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 1, "cell: {c}");
    let m = &c["median"];
    assert_eq!(&rounds[0], m, "one round: the median is that round");
    assert!(
        m["requests"].as_u64().is_some_and(|n| n > 0),
        "no requests: {c}"
    );
    assert_eq!(m["errors"].as_u64(), Some(0), "errors: {c}");
    let cpu = f(m, "cpu_us_per_req");
    assert!(cpu > 0.0, "the target used no CPU: {c}");
    let parts = f(m, "cpu_user_us_per_req") + f(m, "cpu_sys_us_per_req");
    assert!(
        (parts - cpu).abs() <= 1e-6 * cpu.max(1.0),
        "user + kernel {parts} != total {cpu}: {c}"
    );
    let rps = f(m, "requests") / f(m, "duration_s");
    assert!(
        (rps - f(m, "rps")).abs() <= 1e-6 * rps,
        "rps {} is not requests / duration {rps}: {c}",
        f(m, "rps")
    );
    assert!(f(m, "p50_us") > 0.0 && f(m, "p50_us") <= f(m, "p99_us"));
    assert!(f(m, "p99_us") <= f(m, "max_us"), "{c}");
    assert!(m["rss_kib"].as_u64().is_some_and(|n| n > 0), "no RSS: {c}");
}

#[test]
fn quick_suite_writes_complete_results() {
    let _one = serial();
    let out = tempfile::tempdir().expect("temp dir for suite output");
    let (v, report) = run_suite(
        &[
            "--quick",
            "--targets",
            "direct",
            "--scenarios",
            "proxy-small",
            "--rounds",
            "1",
            "--duration",
            "1s",
        ],
        out.path(),
    );
    let meta = &v["meta"];
    let host = &meta["host"];
    for key in ["cpu_model", "cpu_vendor", "cpu_short", "kernel"] {
        let s = host[key].as_str().unwrap_or("");
        assert!(!s.is_empty() && s != "unknown", "host.{key}: {host}");
    }
    assert!(host["mitigations"].is_array(), "{host}");
    assert!(host["hypervisor"].is_boolean(), "{host}");
    let cpu_model = host["cpu_model"].as_str().unwrap_or("");
    assert!(
        report.starts_with("# ringway benchmark report\n\n## Host\n")
            && report.contains(&format!("- CPU: {cpu_model}")),
        "the report names the host first:\n{report}"
    );
    let cells = v["cells"].as_array().expect("cells is an array");
    assert_eq!(cells.len(), 1, "one scenario × one target, got {cells:?}");
    let c = &cells[0];
    assert_eq!(c["scenario"], "proxy-small");
    assert_eq!(c["target"], "direct");
    assert_sane_cell(c);
    let m = &c["median"];
    // Counts come from the traced window, only when perf works; the backend answering directly
    // makes at least one syscall per request.
    if meta["perf"] == true {
        assert!(f(m, "syscalls_per_req") >= 1.0, "{c}");
    } else {
        assert!(m["syscalls_per_req"].is_null(), "{c}");
    }
    // proxy-small is checked with wrk too when wrk is installed.
    if host["wrk"].is_string() {
        assert!(f(m, "wrk_rps") > 0.0, "{c}");
        assert_eq!(m["wrk_errors"].as_u64(), Some(0), "{c}");
        assert!(f(m, "wrk_cpu_us_per_req") > 0.0, "{c}");
    } else {
        assert!(m["wrk_rps"].is_null(), "{c}");
    }
    if meta["alloc_probes"] == false {
        assert!(m["allocs_per_req"].is_null(), "{c}");
    }
    for f in [
        "report.md",
        "throughput.svg",
        "cpu_per_req.svg",
        "cpu_user_per_req.svg",
        "latency_proxy-small.svg",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
}

/// `hello` (the targets answer by themselves) with ringway-uring, its all-features-off variant
/// and the tokio backend, then latency-open: every cell serves requests without errors, the
/// report's ratio and feature-effect rows are computed from the cells, and the open-loop cells
/// ran at the fractions of the reference rate they say. About 25 s.
#[test]
fn quick_hello_and_open_loop_with_ringway() {
    let _one = serial();
    let out = tempfile::tempdir().expect("temp dir for suite output");
    let ringway = ringway_binary();
    let (v, report) = run_suite(
        &[
            "--quick",
            "--targets",
            "ringway-uring,ringway-uring-5.10,direct",
            "--scenarios",
            "hello,latency-open",
            "--rounds",
            "1",
            "--duration",
            "1s",
            "--ringway",
            ringway.to_str().expect("utf-8 path"),
        ],
        out.path(),
    );
    let cells = v["cells"].as_array().expect("cells is an array");
    let get = |sc: &str, t: &str| -> &Value {
        cells
            .iter()
            .find(|c| c["scenario"] == sc && c["target"] == t)
            .unwrap_or_else(|| panic!("no cell {sc}/{t} in {cells:?}"))
    };
    for t in ["ringway-uring", "ringway-uring-5.10", "direct"] {
        let c = get("hello", t);
        assert_sane_cell(c);
    }
    let rps = |sc: &str, t: &str| f(&get(sc, t)["median"], "rps");
    let cpu = |sc: &str, t: &str| f(&get(sc, t)["median"], "cpu_us_per_req");
    let want_ratio = format!(
        "| {:.2} |",
        rps("hello", "ringway-uring") / rps("hello", "direct")
    );
    let ratio_row = report
        .lines()
        .find(|l| l.starts_with("| hello | – |"))
        .unwrap_or_else(|| panic!("no hello ratio row in:\n{report}"));
    assert!(
        ratio_row.ends_with(&want_ratio),
        "uring/direct req/s should be {want_ratio} in {ratio_row:?}"
    );
    let effect = format!(
        "| hello | ringway-uring-5.10 | {:.0} | {:+.1}% | {:.1} | {:+.1}% |",
        rps("hello", "ringway-uring-5.10"),
        (rps("hello", "ringway-uring-5.10") / rps("hello", "ringway-uring") - 1.0) * 100.0,
        cpu("hello", "ringway-uring-5.10"),
        (cpu("hello", "ringway-uring-5.10") / cpu("hello", "ringway-uring") - 1.0) * 100.0,
    );
    assert!(
        report.contains(&effect),
        "missing {effect:?} in report:\n{report}"
    );
    for want in [
        "## Host",
        "## Summary",
        "## Goals on this host",
        "### hello",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }

    // Open loop: the rates are the given fractions of the reference's closed-loop maximum.
    let ol = &v["meta"]["open_loop"];
    let max = f(ol, "max_rps");
    assert!(max > 0.0, "{ol}");
    for (pct, t) in [
        (50.0, "ringway-uring"),
        (90.0, "ringway-uring"),
        (50.0, "direct"),
    ] {
        let c = get(&format!("latency-open-{pct:.0}"), t);
        assert_sane_cell(c);
        let m = &c["median"];
        let offered = f(m, "offered_rps");
        assert!(
            (offered - max * pct / 100.0).abs() < 1e-6 * max,
            "offered {offered} at {pct}% of {max}: {c}"
        );
        assert!(f(m, "rps") <= offered * 1.1, "achieved above offered: {c}");
        // The timer lag exists only when some connection was free at its scheduled time; a
        // target that cannot keep up keeps every connection busy.
        assert!(
            m["send_lag_p99_us"].is_null() || f(m, "send_lag_p99_us") >= 0.0,
            "timer lag: {c}"
        );
    }
    assert!(out.path().join("latency_open_p99.svg").is_file());
}

/// `ab` of the two drivers of one build, 2 pairs: every slice served requests, the order
/// flipped, and the reported median ratio is the median of the per-pair ratios.
#[test]
fn ab_of_two_drivers() {
    let _one = serial();
    let out = tempfile::tempdir().expect("temp dir");
    let ringway = ringway_binary();
    let status = Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .args(["ab", "--a"])
        .arg(&ringway)
        .arg("--b")
        .arg(&ringway)
        .args([
            "--a-args",
            "--io uring",
            "--b-args",
            "--io epoll",
            "--scenario",
            "hello",
            "--pairs",
            "2",
            "--slice",
            "500ms",
            "--warmup",
            "200ms",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("run ringway-bench ab");
    assert!(status.success(), "ab exited with {status}");
    let text = std::fs::read_to_string(out.path().join("ab.json")).expect("ab.json");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let pairs = v["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 2, "{v}");
    let firsts: Vec<bool> = pairs
        .iter()
        .map(|p| p["a"]["first"].as_bool().expect("first"))
        .collect();
    assert_eq!(firsts, [true, false], "A first, then B first");
    let mut ratios = Vec::new();
    for p in pairs {
        for side in ["a", "b"] {
            let s = &p[side];
            assert!(s["requests"].as_u64().is_some_and(|n| n > 0), "{p}");
            assert_eq!(s["errors"].as_u64(), Some(0), "{p}");
            assert!(f(s, "user_us") + f(s, "sys_us") > 0.0, "{p}");
        }
        let cpu = |s: &Value| f(s, "user_us") + f(s, "sys_us");
        ratios.push(cpu(&p["b"]) / cpu(&p["a"]));
    }
    let want = (ratios[0] + ratios[1]) / 2.0;
    let got = f(&v["comparison"]["cpu"], "median_ratio");
    assert!(
        (got - want).abs() < 1e-9,
        "median ratio {got}, pairs {ratios:?}"
    );
    assert!(v["b"].as_str().is_some_and(|b| b.ends_with("--io epoll")));
    let md = std::fs::read_to_string(out.path().join("ab.md")).expect("ab.md");
    assert!(md.contains("| CPU µs/request (user + kernel) |"), "{md}");
}
