//! The suite runner: scenarios × targets in interleaved rounds, medians, reports.
//!
//! Method (see bench/README.md): the target is pinned to the last allowed CPU, this process (load
//! generator and in-process backends) to the others. Each round runs every scenario, and within a
//! scenario every target, in an order rotated by one per round (A B C, B C A, C A B) so slow drift
//! of the machine does not favour whoever runs first. Each run: start the target fresh, warm up,
//! measure CPU with no tracer attached, then (hello, proxy-small) the same with wrk, then count
//! syscalls and allocations in a separate traced window, stop. The open-loop scenario runs after
//! every closed-loop round, at rates taken from the reference's proxy-small median of the same
//! run. Reports show the median over rounds; all rounds are kept in results.json.

mod charts;
mod goals;
pub mod host;
pub mod idle;
pub mod measure;
pub mod report;
pub mod scenarios;
mod summary;
pub mod targets;
pub mod trace;
pub mod wrk;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::procfs;
use host::Host;
use scenarios::Scenario;
use targets::{TargetKind, Tools};

/// Descriptor limit the suite asks for: 10k idle client sockets here plus slack.
const NOFILE: u64 = 65_536;

/// Suite options (the CLI maps onto this).
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Short runs, 1 round by default.
    pub quick: bool,
    /// Output directory (None: `bench/results/<date>-<short cpu name>/`).
    pub out: Option<PathBuf>,
    /// Targets to run (None: all).
    pub targets: Option<Vec<String>>,
    /// Scenarios to run (None: all).
    pub scenarios: Option<Vec<String>>,
    /// Rounds (None: 3, or 1 with --quick).
    pub rounds: Option<usize>,
    /// ringway binary.
    pub ringway: Option<PathBuf>,
    /// Measured duration per window (None: 5 s, or 2 s with --quick).
    pub duration: Option<Duration>,
}

/// One run's measurements. CPU figures come from the untraced window only; syscalls and
/// allocations from the separate traced window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// Completed responses in the measured window.
    pub requests: u64,
    /// Errors (non-2xx, connect, reset, timeout).
    pub errors: u64,
    /// Completed responses per second.
    pub rps: f64,
    /// Open loop: the scheduled rate (requests per second); None for closed loop.
    pub offered_rps: Option<f64>,
    /// Open loop: p99 of how late the client's own timer sent requests whose connection was
    /// free at the scheduled time, µs (those latencies count from the real send).
    pub send_lag_p99_us: Option<f64>,
    /// Latency percentiles and max, microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Target CPU (utime+stime of its process tree) per request, microseconds, no tracer.
    pub cpu_us_per_req: Option<f64>,
    /// The user-space part (utime) of `cpu_us_per_req`.
    pub cpu_user_us_per_req: Option<f64>,
    /// The kernel part (stime) of `cpu_us_per_req`.
    pub cpu_sys_us_per_req: Option<f64>,
    /// Target syscalls per request (perf raw_syscalls:sys_enter, traced window), when perf works.
    pub syscalls_per_req: Option<f64>,
    /// Target malloc+calloc+realloc calls per request (uprobes, traced window), when uprobes work.
    pub allocs_per_req: Option<f64>,
    /// Target RSS at the end of the window, KiB.
    pub rss_kib: Option<u64>,
    /// idle-10k: RSS growth per idle connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Load generator worker CPU per request, microseconds.
    pub loadgen_cpu_us_per_req: f64,
    /// CPU use of this process (load generator + backends) over the window, in cores.
    pub client_cpu_cores: f64,
    /// How busy the client CPUs were over the window (0..1, every process, /proc/stat).
    pub client_core_busy: Option<f64>,
    /// How busy the target CPU was over the window (0..1, /proc/stat).
    pub target_core_busy: Option<f64>,
    /// wrk's req/s against the same target (hello, proxy-small).
    pub wrk_rps: Option<f64>,
    /// wrk's errors (socket errors + non-2xx).
    pub wrk_errors: Option<u64>,
    /// Target CPU per request under wrk, microseconds.
    pub wrk_cpu_us_per_req: Option<f64>,
    /// How busy the client CPUs were while wrk ran.
    pub wrk_client_core_busy: Option<f64>,
    /// Measured window, seconds.
    pub duration_s: f64,
}

/// Results of one scenario × target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Scenario name (`latency-open-50` for one load of the open-loop scenario).
    pub scenario: String,
    /// Target name.
    pub target: String,
    /// `ok`, `skipped` or `failed`.
    pub status: String,
    /// Why skipped or failed.
    pub note: Option<String>,
    /// Median over the successful rounds.
    pub median: Option<Metrics>,
    /// Every successful round.
    pub rounds: Vec<Metrics>,
}

/// Where the open-loop rates came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenLoopRef {
    /// The target whose closed-loop maximum sets the rates (nginx unless it is missing).
    pub target: String,
    /// Its closed-loop req/s on proxy-small.
    pub max_rps: f64,
    /// `proxy-small median of N rounds` or `calibration run`.
    pub source: String,
    /// Percent of `max_rps` per cell.
    pub loads_pct: Vec<u32>,
}

/// Machine and run description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The machine: CPU, mitigations, kernel, hypervisor, peer versions.
    pub host: Host,
    /// `uname -r` (also in `host`).
    pub kernel: String,
    /// /proc/cpuinfo model name (also in `host`).
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// UTC start time, RFC 3339.
    pub date: String,
    /// `git rev-parse HEAD` of the repository, if any.
    pub git_revision: Option<String>,
    /// Quick mode.
    pub quick: bool,
    /// Rounds.
    pub rounds: usize,
    /// Measured seconds per CPU window.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Seconds of the traced (syscall/allocation) window per run; 0 without perf.
    pub trace_s: f64,
    /// Seconds of the wrk window per run (hello, proxy-small); 0 without wrk.
    pub wrk_s: f64,
    /// CPUs the target is pinned to.
    pub target_cpus: Vec<usize>,
    /// CPUs the load generator and backends are pinned to.
    pub client_cpus: Vec<usize>,
    /// Load generator threads.
    pub load_threads: usize,
    /// Whether perf counted syscalls (in the traced window only).
    pub perf: bool,
    /// Whether uprobes counted allocations (in the traced window only).
    pub alloc_probes: bool,
    /// Why allocations were not counted, when they were not.
    pub alloc_probes_note: Option<String>,
    /// Versions of the targets (first line of `-v`; ringway: its path).
    pub versions: std::collections::BTreeMap<String, String>,
    /// RLIMIT_NOFILE in force.
    pub nofile: u64,
    /// Open-loop rates, when latency-open ran.
    pub open_loop: Option<OpenLoopRef>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
}

/// Everything the suite writes to results.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Machine and run description.
    pub meta: Meta,
    /// One entry per scenario × target.
    pub cells: Vec<Cell>,
}

/// Seconds since the epoch as (YYYY, MM, DD, hh, mm, ss), UTC (days-from-civil inverse, Howard
/// Hinnant).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp without a date crate.
pub fn utc_now() -> String {
    let (y, m, d, hh, mm, ss) = civil(now_secs());
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// The default output directory: `bench/results/<YYYY-MM-DD>-<short cpu name>/` of this
/// workspace when it exists (else `bench-results/...` here), with `-2`, `-3`... appended when
/// that name is taken, so a second run never overwrites the first.
pub fn default_out(host: &Host) -> PathBuf {
    let (y, m, d, ..) = civil(now_secs());
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let base = if results.is_dir() {
        results
    } else {
        PathBuf::from("bench-results")
    };
    let name = format!("{y:04}-{m:02}-{d:02}-{}", host.cpu_short);
    let first = base.join(&name);
    if !first.exists() {
        return first;
    }
    // Bounded: 2..100, then the last candidate is reused.
    (2..100)
        .map(|i| base.join(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| base.join(format!("{name}-99")))
}

fn git_revision() -> Option<String> {
    let o = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Window lengths of one suite run.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Untraced CPU window (closed loop) and each open-loop window.
    pub duration: Duration,
    /// Warm-up before the first window.
    pub warmup: Duration,
    /// Traced window (syscalls, allocations).
    pub trace: Duration,
    /// wrk window (whole seconds).
    pub wrk: Duration,
}

impl Windows {
    /// The defaults: 5 s windows after 1.5 s warm-up (2 s after 0.5 s with `quick`); a traced
    /// window of 2 s (1 s); wrk 3 s (2 s). `duration` overrides the CPU window and caps the others.
    pub fn new(quick: bool, duration: Option<Duration>) -> Windows {
        let (d, w, t, k) = if quick {
            (2.0, 0.5, 1.0, 2.0)
        } else {
            (5.0, 1.5, 2.0, 3.0)
        };
        let duration = duration.unwrap_or(Duration::from_secs_f64(d));
        Windows {
            duration,
            warmup: Duration::from_secs_f64(w).min(duration),
            trace: Duration::from_secs_f64(t).min(duration),
            wrk: Duration::from_secs_f64(k)
                .min(duration)
                .max(Duration::from_secs(1)),
        }
    }
}

/// Parses `--targets` / `--scenarios` names.
fn pick<T: Copy>(
    names: &Option<Vec<String>>,
    all: &[T],
    by_name: impl Fn(&str) -> Option<T>,
    known: &[&str],
    what: &str,
) -> anyhow::Result<Vec<T>> {
    match names {
        None => Ok(all.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| {
                by_name(n).ok_or_else(|| {
                    anyhow::anyhow!("unknown {what} {n:?} (known: {})", known.join(", "))
                })
            })
            .collect(),
    }
}

/// Runs the suite and writes results.json, report.md and the SVG charts into the output
/// directory (`opts.out`, or [`default_out`]).
///
/// # Errors
/// Bad target/scenario names, output directory or temp directory failures. A target that fails
/// to start is recorded as `failed` in the results, not returned as an error.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<(Results, PathBuf)> {
    let t_start = std::time::Instant::now();
    let scen_names: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
    let scen: Vec<Scenario> = pick(
        &opts.scenarios,
        &scenarios::ALL,
        scenarios::by_name,
        &scen_names,
        "scenario",
    )?;
    let targets: Vec<TargetKind> = pick(
        &opts.targets,
        &TargetKind::ALL,
        TargetKind::by_name,
        &TargetKind::known_names(),
        "target",
    )?;
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    let win = Windows::new(opts.quick, opts.duration);

    let nofile = procfs::raise_nofile(NOFILE);
    let allowed = procfs::allowed_cpus();
    // The target gets the last core; everything else (this process, backends) the rest. With a
    // single core both share it and the numbers only compare targets relative to each other.
    let target_cpus = vec![*allowed.last().unwrap_or(&0)];
    let client_cpus: Vec<usize> = if allowed.len() > 1 {
        allowed[..allowed.len() - 1].to_vec()
    } else {
        allowed.clone()
    };
    // Pin this thread before any worker thread exists: threads and children inherit the mask.
    if let Err(e) = procfs::set_affinity(0, &client_cpus) {
        eprintln!("warning: could not pin the load generator to {client_cpus:?}: {e}");
    }
    let load_threads = client_cpus.len();
    let tools = Tools::discover(opts.ringway.clone());
    let host = Host::detect(
        tools.nginx.as_deref(),
        tools.haproxy.as_deref(),
        tools.wrk.as_deref(),
    );
    let out = opts.out.clone().unwrap_or_else(|| default_out(&host));
    std::fs::create_dir_all(&out)?;
    let perf = trace::perf_works();
    let probes = if perf {
        trace::Probes::setup()
    } else {
        trace::Probes::none("perf unavailable (apt-get install linux-perf)")
    };
    let mut versions = std::collections::BTreeMap::new();
    for (k, v) in [("nginx", &host.nginx), ("haproxy", &host.haproxy)] {
        if let Some(v) = v {
            versions.insert(k.to_string(), v.clone());
        }
    }
    if let Some(r) = &tools.ringway {
        versions.insert("ringway".into(), r.display().to_string());
    }
    let any_wrk = scen.iter().any(|s| s.wrk_check) && tools.wrk.is_some();
    let mut meta = Meta {
        kernel: host.kernel.clone(),
        cpu_model: host.cpu_model.clone(),
        host,
        cores: allowed.len(),
        date: utc_now(),
        git_revision: git_revision(),
        quick: opts.quick,
        rounds,
        duration_s: win.duration.as_secs_f64(),
        warmup_s: win.warmup.as_secs_f64(),
        trace_s: if perf { win.trace.as_secs_f64() } else { 0.0 },
        wrk_s: if any_wrk { win.wrk.as_secs_f64() } else { 0.0 },
        target_cpus: target_cpus.clone(),
        client_cpus: client_cpus.clone(),
        load_threads,
        perf,
        alloc_probes: !probes.events.is_empty(),
        alloc_probes_note: probes.why_not.clone(),
        versions,
        nofile,
        open_loop: None,
        wall_s: 0.0,
    };
    eprintln!(
        "host: {}; results: {}; planned about {:.0} min",
        meta.host.summary(),
        out.display(),
        measure::planned_secs(&scen, &targets, &tools, rounds, &win, perf) / 60.0
    );

    let tmp = std::env::temp_dir().join(format!("ringway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let ctx = measure::RunCtx {
        tools: &tools,
        dir: &tmp,
        target_cpus: &target_cpus,
        client_cpus: &client_cpus,
        threads: load_threads,
        win,
        perf,
        alloc_events: &probes.events,
        nofile,
    };
    let mut cells = measure::plan_cells(&scen, &targets, &tools);
    measure::closed_loop_rounds(&ctx, &scen, &targets, rounds, &mut cells);
    if let Some(sc) = scen.iter().find(|s| s.open_loop) {
        meta.open_loop = measure::open_loop_rounds(&ctx, sc, &targets, rounds, &mut cells);
    }
    for c in &mut cells {
        c.median = median(&c.rounds);
    }
    probes.remove();
    // RINGWAY_BENCH_KEEP_TMP=1 keeps configs and target logs for debugging.
    if std::env::var_os("RINGWAY_BENCH_KEEP_TMP").is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("kept {}", tmp.display());
    }
    meta.wall_s = t_start.elapsed().as_secs_f64();
    let results = Results { meta, cells };
    report::write_all(&results, &out)?;
    eprintln!(
        "results in {} ({:.1} min)",
        out.display(),
        results.meta.wall_s / 60.0
    );
    Ok((results, out))
}

/// Median of one field over rounds.
pub fn med(v: Vec<f64>) -> Option<f64> {
    crate::stats::median(&v)
}

/// Field-wise median over rounds (each field independently, as is usual for benchmark tables).
pub fn median(rounds: &[Metrics]) -> Option<Metrics> {
    if rounds.is_empty() {
        return None;
    }
    let f = |g: &dyn Fn(&Metrics) -> f64| med(rounds.iter().map(g).collect()).unwrap_or(0.0);
    let o = |g: &dyn Fn(&Metrics) -> Option<f64>| med(rounds.iter().filter_map(g).collect());
    Some(Metrics {
        requests: f(&|m| m.requests as f64) as u64,
        errors: f(&|m| m.errors as f64) as u64,
        rps: f(&|m| m.rps),
        offered_rps: o(&|m| m.offered_rps),
        send_lag_p99_us: o(&|m| m.send_lag_p99_us),
        p50_us: f(&|m| m.p50_us),
        p90_us: f(&|m| m.p90_us),
        p99_us: f(&|m| m.p99_us),
        p999_us: f(&|m| m.p999_us),
        max_us: f(&|m| m.max_us),
        cpu_us_per_req: o(&|m| m.cpu_us_per_req),
        cpu_user_us_per_req: o(&|m| m.cpu_user_us_per_req),
        cpu_sys_us_per_req: o(&|m| m.cpu_sys_us_per_req),
        syscalls_per_req: o(&|m| m.syscalls_per_req),
        allocs_per_req: o(&|m| m.allocs_per_req),
        rss_kib: o(&|m| m.rss_kib.map(|v| v as f64)).map(|v| v as u64),
        rss_per_conn_bytes: o(&|m| m.rss_per_conn_bytes),
        loadgen_cpu_us_per_req: f(&|m| m.loadgen_cpu_us_per_req),
        client_cpu_cores: f(&|m| m.client_cpu_cores),
        client_core_busy: o(&|m| m.client_core_busy),
        target_core_busy: o(&|m| m.target_core_busy),
        wrk_rps: o(&|m| m.wrk_rps),
        wrk_errors: o(&|m| m.wrk_errors.map(|v| v as f64)).map(|v| v as u64),
        wrk_cpu_us_per_req: o(&|m| m.wrk_cpu_us_per_req),
        wrk_client_core_busy: o(&|m| m.wrk_client_core_busy),
        duration_s: f(&|m| m.duration_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_fieldwise() {
        let m = |rps: f64, cpu: Option<f64>| Metrics {
            rps,
            cpu_us_per_req: cpu,
            ..Metrics::default()
        };
        let got = median(&[m(3.0, Some(1.0)), m(1.0, None), m(2.0, Some(3.0))]).expect("non-empty");
        assert_eq!(got.rps, 2.0);
        assert_eq!(got.cpu_us_per_req, Some(2.0));
        assert!(median(&[]).is_none());
    }

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "got {d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T', "got {d}");
        // 2026-12-06T19:56:07Z
        assert_eq!(civil(1_796_586_967), (2026, 12, 6, 19, 56, 7));
    }

    #[test]
    fn windows_are_capped_by_the_duration() {
        let w = Windows::new(false, None);
        assert_eq!(w.duration, Duration::from_secs(5));
        assert!(w.trace < w.duration && w.warmup < w.duration);
        let q = Windows::new(true, Some(Duration::from_millis(500)));
        assert_eq!(q.warmup, Duration::from_millis(500));
        assert_eq!(q.trace, Duration::from_millis(500));
        // wrk counts whole seconds.
        assert_eq!(q.wrk, Duration::from_secs(1));
    }
}
