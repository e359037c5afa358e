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

/// The newest `ringway` binary of this workspace (debug or release build). Integration tests of
/// a package only get their own binaries built, so this one comes from a previous
/// `cargo build` / `cargo test --workspace`.
fn ringway_binary() -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("ringway"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no ringway binary in target/{debug,release}: run `cargo build` first")
}

/// `hello` (the targets answer by themselves) with ringway-uring, its all-features-off variant
/// and the tokio backend: every cell serves requests without errors, and the report has the
/// hello section and the feature effect table. About 8 s.
#[test]
fn quick_hello_with_ringway_and_a_feature_variant() {
    let out = tempfile::tempdir().expect("temp dir for suite output");
    let status = Command::new(env!("CARGO_BIN_EXE_ringway-bench"))
        .args([
            "suite",
            "--quick",
            "--targets",
            "ringway-uring,ringway-uring-5.10,direct",
            "--scenarios",
            "hello",
            "--rounds",
            "1",
            "--duration",
            "1s",
            "--ringway",
        ])
        .arg(ringway_binary())
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("run ringway-bench suite");
    assert!(status.success(), "suite exited with {status}");

    let text =
        std::fs::read_to_string(out.path().join("results.json")).expect("results.json written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("results.json is JSON");
    let cells = v["cells"].as_array().expect("cells is an array");
    let targets: Vec<&str> = cells.iter().filter_map(|c| c["target"].as_str()).collect();
    assert_eq!(targets, ["ringway-uring", "ringway-uring-5.10", "direct"]);
    for c in cells {
        assert_eq!(c["scenario"], "hello");
        assert_eq!(c["status"], "ok", "cell: {c}");
        let m = &c["median"];
        assert!(
            m["requests"].as_u64().is_some_and(|n| n > 100),
            "too few requests: {c}"
        );
        // A wrong body length or status would show up as errors in the load generator.
        assert_eq!(m["errors"].as_u64(), Some(0), "errors: {c}");
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    for want in [
        "## hello",
        "tokio current_thread",
        "## Feature effect (io_uring)",
        "| hello | ringway-uring-5.10 |",
    ] {
        assert!(
            report.contains(want),
            "missing {want:?} in report:\n{report}"
        );
    }
}
