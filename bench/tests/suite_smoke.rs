//! Smoke test: a tiny `suite --quick` run against the `direct` target writes a complete
//! results.json. No timing assertions: only that every field is there and requests flowed.

use std::process::Command;

#[test]
fn quick_suite_writes_complete_results() {
    let out = tempfile::tempdir().expect("temp dir for suite output");
    let status = Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .args([
            "suite",
            "--quick",
            "--targets",
            "direct",
            "--scenarios",
            "proxy-small",
            "--rounds",
            "1",
            "--duration",
            "1s",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("run ringway-bench suite");
    assert!(status.success(), "suite exited with {status}");

    let text =
        std::fs::read_to_string(out.path().join("results.json")).expect("results.json written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("results.json is JSON");
    for key in [
        "kernel",
        "cpu_model",
        "cores",
        "date",
        "git_revision",
        "rounds",
        "target_cpus",
        "client_cpus",
        "perf",
    ] {
        assert!(v["meta"].get(key).is_some(), "meta.{key} missing in {text}");
    }
    let cells = v["cells"].as_array().expect("cells is an array");
    assert_eq!(cells.len(), 1, "one scenario × one target, got {cells:?}");
    let c = &cells[0];
    assert_eq!(c["scenario"], "proxy-small");
    assert_eq!(c["target"], "direct");
    assert_eq!(c["status"], "ok", "cell: {c}");
    assert_eq!(c["rounds"].as_array().map(Vec::len), Some(1), "cell: {c}");
    let m = &c["median"];
    for key in [
        "requests",
        "errors",
        "rps",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "cpu_us_per_req",
        "syscalls_per_req",
        "rss_kib",
        "loadgen_cpu_us_per_req",
        "client_cpu_cores",
        "duration_s",
    ] {
        assert!(m.get(key).is_some(), "median.{key} missing in {c}");
    }
    assert!(
        m["requests"].as_u64().is_some_and(|n| n > 0),
        "no requests: {c}"
    );
    assert!(m["rss_kib"].as_u64().is_some_and(|n| n > 0), "no RSS: {c}");
    for f in [
        "report.md",
        "throughput.svg",
        "cpu_per_req.svg",
        "latency_proxy-small.svg",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
}
