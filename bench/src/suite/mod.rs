//! The suite runner: scenarios × targets in interleaved rounds, medians, reports.
//!
//! Method (see bench/README.md): the target is pinned to the last allowed CPU, this process (load
//! generator and in-process backends) to the others. Each round runs every scenario, and within a
//! scenario every target, in an order rotated by one per round (A B C, B C A, C A B) so slow drift
//! of the machine does not favour whoever runs first. Each run: start the target fresh, warm up,
//! measure, stop. Reports show the median over rounds; all rounds are kept in results.json.

pub mod idle;
pub mod report;
pub mod scenarios;
pub mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::addr::Addr;
use crate::backend::{self, BackendConfig, BackendHandle};
use crate::load::{self, LoadConfig};
use crate::procfs;
use scenarios::Scenario;
use targets::{RunningTarget, TargetKind, TargetSetup, Tools};

/// Descriptor limit the suite asks for: 10k idle client sockets here plus slack.
const NOFILE: u64 = 65_536;
/// Per-response timeout for the load generator during the suite.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time perf needs to attach before the measured window opens.
const PERF_ATTACH: Duration = Duration::from_millis(300);

/// Suite options (the CLI maps onto this).
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Short runs, 1 round by default.
    pub quick: bool,
    /// Output directory.
    pub out: PathBuf,
    /// Targets to run (None: all).
    pub targets: Option<Vec<String>>,
    /// Scenarios to run (None: all).
    pub scenarios: Option<Vec<String>>,
    /// Rounds (None: 3, or 1 with --quick).
    pub rounds: Option<usize>,
    /// ringway binary.
    pub ringway: Option<PathBuf>,
    /// Measured duration per run (None: 10 s, or 2 s with --quick).
    pub duration: Option<Duration>,
}

/// One run's measurements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Completed responses in the measured window.
    pub requests: u64,
    /// Errors (non-2xx, connect, reset, timeout).
    pub errors: u64,
    /// Completed responses per second.
    pub rps: f64,
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
    /// Target CPU (utime+stime of its process tree) per request, microseconds.
    pub cpu_us_per_req: Option<f64>,
    /// Target syscalls per request (perf raw_syscalls:sys_enter), when perf works.
    pub syscalls_per_req: Option<f64>,
    /// Target RSS at the end of the window, KiB.
    pub rss_kib: Option<u64>,
    /// idle-10k: RSS growth per idle connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Load generator worker CPU per request, microseconds.
    pub loadgen_cpu_us_per_req: f64,
    /// CPU use of this process (load generator + backends) over the window, in cores.
    pub client_cpu_cores: f64,
    /// Measured window, seconds.
    pub duration_s: f64,
}

/// Results of one scenario × target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Scenario name.
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

/// Machine and run description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// `uname -r`.
    pub kernel: String,
    /// /proc/cpuinfo model name.
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
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// CPUs the target is pinned to.
    pub target_cpus: Vec<usize>,
    /// CPUs the load generator and backends are pinned to.
    pub client_cpus: Vec<usize>,
    /// Load generator threads.
    pub load_threads: usize,
    /// Whether perf counted syscalls.
    pub perf: bool,
    /// Versions of the third-party targets (first line of `-v`).
    pub versions: std::collections::BTreeMap<String, String>,
    /// RLIMIT_NOFILE in force.
    pub nofile: u64,
}

/// Everything the suite writes to results.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Machine and run description.
    pub meta: Meta,
    /// One entry per scenario × target.
    pub cells: Vec<Cell>,
}

/// RFC 3339 UTC timestamp without a date crate (days-from-civil inverse, Howard Hinnant).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
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
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn cmd_first_line(bin: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
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

/// True when `perf stat -e raw_syscalls:sys_enter` works here (needs tracefs and permissions).
fn perf_works() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdout(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stderr).contains("raw_syscalls"))
        .unwrap_or(false)
}

/// A running `perf stat` counting the target's syscalls.
struct PerfCount {
    child: std::process::Child,
    out: PathBuf,
}

impl PerfCount {
    fn start(pids: &[u32], out: PathBuf) -> Option<PerfCount> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let child = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                "raw_syscalls:sys_enter",
                "-p",
                &list.join(","),
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(PerfCount { child, out })
    }

    /// Stops perf (SIGINT makes it print its counts) and returns the syscall count.
    fn finish(mut self) -> Option<u64> {
        // SAFETY: kill(2) on our own un-waited child: the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let until = Instant::now() + Duration::from_secs(5);
        // Bounded by 5 s, then killed.
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).ok()?;
        text.lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse().ok())
    }
}

/// Runs the suite and writes results.json, report.md and the SVG charts into `opts.out`.
///
/// # Errors
/// Bad target/scenario names, output directory or temp directory failures. A target that fails
/// to start is recorded as `failed` in the results, not returned as an error.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<Results> {
    let scen: Vec<Scenario> = match &opts.scenarios {
        None => scenarios::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                scenarios::by_name(n).ok_or_else(|| {
                    let all: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
                    anyhow::anyhow!("unknown scenario {n:?} (known: {})", all.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let targets: Vec<TargetKind> = match &opts.targets {
        None => TargetKind::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                TargetKind::by_name(n).ok_or_else(|| {
                    let all = TargetKind::known_names();
                    anyhow::anyhow!("unknown target {n:?} (known: {})", all.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    let duration = opts.duration.unwrap_or(if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    });
    let warmup = if opts.quick {
        Duration::from_millis(500).min(duration)
    } else {
        Duration::from_secs(2)
    };
    std::fs::create_dir_all(&opts.out)?;

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
    // Pin this thread before any worker thread exists: threads inherit the mask.
    if let Err(e) = procfs::set_affinity(0, &client_cpus) {
        eprintln!("warning: could not pin the load generator to {client_cpus:?}: {e}");
    }
    let load_threads = client_cpus.len();
    let tools = Tools::discover(opts.ringway.clone());
    let perf = perf_works();
    let mut versions = std::collections::BTreeMap::new();
    if let Some(n) = &tools.nginx {
        versions.insert(
            "nginx".into(),
            cmd_first_line(n, &["-v"]).unwrap_or_default(),
        );
    }
    if let Some(h) = &tools.haproxy {
        versions.insert(
            "haproxy".into(),
            cmd_first_line(h, &["-v"]).unwrap_or_default(),
        );
    }
    if let Some(r) = &tools.ringway {
        versions.insert("ringway".into(), r.display().to_string());
    }
    let meta = Meta {
        kernel: procfs::kernel(),
        cpu_model: procfs::cpu_model(),
        cores: allowed.len(),
        date: utc_now(),
        git_revision: git_revision(),
        quick: opts.quick,
        rounds,
        duration_s: duration.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        target_cpus: target_cpus.clone(),
        client_cpus: client_cpus.clone(),
        load_threads,
        perf,
        versions,
        nofile,
    };

    let tmp = std::env::temp_dir().join(format!("ringway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut cells: Vec<Cell> = Vec::new();
    for sc in &scen {
        for t in &targets {
            let (status, note) = match (t.unsupported(sc), tools.binary(*t)) {
                (Some(why), _) => ("skipped", Some(why.to_string())),
                (None, Err(why)) => ("skipped", Some(why)),
                (None, Ok(_)) => ("ok", None),
            };
            cells.push(Cell {
                scenario: sc.name.into(),
                target: t.name().into(),
                status: status.into(),
                note,
                median: None,
                rounds: Vec::new(),
            });
        }
    }
    let ctx = RunCtx {
        tools: &tools,
        dir: &tmp,
        target_cpus: &target_cpus,
        threads: load_threads,
        duration,
        warmup,
        perf,
        nofile,
    };
    for round in 0..rounds {
        for sc in &scen {
            // Rotate the target order by one per round: A B C, B C A, C A B.
            let mut order = targets.clone();
            if !order.is_empty() {
                let k = round % order.len();
                order.rotate_left(k);
            }
            // `hello`: the targets answer by themselves, no backend runs.
            let be = match start_backends(sc, &tmp, load_threads) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!(
                        "round {}: {}: backend failed to start: {e}",
                        round + 1,
                        sc.name
                    );
                    continue;
                }
            };
            for t in order {
                let Some(cell) = cells
                    .iter_mut()
                    .find(|c| c.scenario == sc.name && c.target == t.name())
                else {
                    continue;
                };
                if cell.status == "skipped" {
                    continue;
                }
                eprint!(
                    "round {}/{rounds}  {:<12} {:<20} ",
                    round + 1,
                    sc.name,
                    t.name()
                );
                let addrs = be.as_ref().map_or(&[][..], BackendHandle::addrs);
                match run_one(&ctx, sc, t, addrs) {
                    Ok(m) => {
                        eprintln!(
                            "{:>9.0} req/s  p99 {:>8.0} us  cpu {} us/req  errors {}",
                            m.rps,
                            m.p99_us,
                            fmt_opt(m.cpu_us_per_req),
                            m.errors
                        );
                        cell.rounds.push(m);
                        if cell.status == "failed" {
                            // A later round worked: keep the note, the median uses the good rounds.
                            cell.status = "ok".into();
                        }
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        if cell.rounds.is_empty() {
                            cell.status = "failed".into();
                        }
                        cell.note = Some(e);
                    }
                }
            }
            if let Some(be) = be {
                be.stop();
            }
        }
    }
    for c in &mut cells {
        c.median = median(&c.rounds);
    }
    // RINGWAY_BENCH_KEEP_TMP=1 keeps configs and target logs for debugging.
    if std::env::var_os("RINGWAY_BENCH_KEEP_TMP").is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("kept {}", tmp.display());
    }
    let results = Results { meta, cells };
    report::write_all(&results, &opts.out)?;
    Ok(results)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Shared inputs of every run.
struct RunCtx<'a> {
    tools: &'a Tools,
    dir: &'a Path,
    target_cpus: &'a [usize],
    threads: usize,
    duration: Duration,
    warmup: Duration,
    perf: bool,
    nofile: u64,
}

/// The in-process backend for a scenario (TCP, or a Unix socket in the temp dir for proxy-uds);
/// none for a scenario the targets answer by themselves.
fn start_backends(
    sc: &Scenario,
    dir: &Path,
    threads: usize,
) -> std::io::Result<Option<BackendHandle>> {
    if sc.local {
        return Ok(None);
    }
    let listen = if sc.uds {
        vec![Addr::Unix(dir.join(format!("backend-{}.sock", sc.name)))]
    } else {
        vec![Addr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))]
    };
    backend::spawn(BackendConfig {
        listen,
        body_size: sc.body_size,
        json: true,
        threads,
        ..BackendConfig::default()
    })
    .map(Some)
}

fn load_config(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    rt: &RunningTarget,
    duration: Duration,
) -> LoadConfig {
    let (host_port, unix) = match &rt.addr {
        Addr::Tcp(a) => (a.to_string(), None),
        Addr::Unix(p) => (rt.tcp_addr.clone(), Some(p.clone())),
    };
    LoadConfig {
        host_port,
        unix,
        path: sc.path.into(),
        connections: sc.connections,
        duration,
        pipeline: sc.pipeline,
        rate: None,
        threads: ctx.threads,
        timeout: RESPONSE_TIMEOUT,
    }
}

/// Starts one target, warms it up, measures, stops it.
fn run_one(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    t: TargetKind,
    backends: &[Addr],
) -> Result<Metrics, String> {
    let setup = TargetSetup {
        scenario: sc,
        backends,
        dir: ctx.dir,
        cpus: ctx.target_cpus,
        nofile: ctx.nofile,
    };
    let rt = targets::start(t, ctx.tools, &setup)?;
    let res = measure(ctx, sc, &rt);
    rt.stop();
    res
}

fn measure(ctx: &RunCtx<'_>, sc: &Scenario, rt: &RunningTarget) -> Result<Metrics, String> {
    let pid = rt.pid();
    if let Some(n) = sc.idle_connections {
        // Without CAP_SYS_RESOURCE the hard limit caps descriptors (20000 on some hosts): this
        // process holds one per idle connection and a proxy target two (haproxy reserves both),
        // so cap the count to what every target can hold; results record the real number.
        let cap = usize::try_from(ctx.nofile.saturating_sub(400) / 2).unwrap_or(n);
        return measure_idle(rt, sc, n.min(cap));
    }
    // Warm-up: fill pools, fault in memory, let the target reach steady state.
    load::run(&load_config(ctx, sc, rt, ctx.warmup)).map_err(|e| format!("warm-up: {e}"))?;
    let tree = procfs::process_tree(pid);
    let perf = if ctx.perf {
        let p = PerfCount::start(&tree, ctx.dir.join("perf.out"));
        std::thread::sleep(PERF_ATTACH);
        p
    } else {
        None
    };
    let cpu0 = procfs::tree_cpu(pid);
    let self0 = procfs::rusage(libc::RUSAGE_SELF);
    let r = load::run(&load_config(ctx, sc, rt, ctx.duration)).map_err(|e| format!("load: {e}"))?;
    let cpu1 = procfs::tree_cpu(pid);
    let self1 = procfs::rusage(libc::RUSAGE_SELF);
    let syscalls = perf.and_then(PerfCount::finish);
    let reqs = r.requests.max(1) as f64;
    if r.requests == 0 {
        return Err(format!("no responses (errors: {:?})", r.errors));
    }
    Ok(Metrics {
        requests: r.requests,
        errors: r.errors.total(),
        rps: r.rps(),
        p50_us: r.pct_us(0.5),
        p90_us: r.pct_us(0.9),
        p99_us: r.pct_us(0.99),
        p999_us: r.pct_us(0.999),
        max_us: r.hist.max() as f64 / 1000.0,
        cpu_us_per_req: Some(cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6 / reqs),
        syscalls_per_req: syscalls.map(|n| n as f64 / reqs),
        rss_kib: Some(procfs::tree_rss_kib(pid)),
        rss_per_conn_bytes: None,
        loadgen_cpu_us_per_req: r.worker_cpu_us_per_req(),
        client_cpu_cores: self1.saturating_sub(self0).as_secs_f64()
            / r.elapsed.as_secs_f64().max(1e-9),
        duration_s: r.elapsed.as_secs_f64(),
    })
}

/// idle-10k: RSS before and after opening N keepalive connections (one request each).
fn measure_idle(rt: &RunningTarget, sc: &Scenario, n: usize) -> Result<Metrics, String> {
    let pid = rt.pid();
    // One request first so lazily allocated per-process state is not charged to the connections.
    let _warm = idle::open(&rt.tcp_addr, sc.path, 1, RESPONSE_TIMEOUT);
    let rss0 = procfs::tree_rss_kib(pid);
    let cpu0 = procfs::tree_cpu(pid);
    let t0 = Instant::now();
    let set = idle::open(&rt.tcp_addr, sc.path, n, RESPONSE_TIMEOUT);
    let elapsed = t0.elapsed();
    // Let the target finish any deferred work (buffers returned, timers armed) before reading RSS.
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = procfs::tree_rss_kib(pid);
    let cpu1 = procfs::tree_cpu(pid);
    let open = set.conns.len();
    let errors = set.errors;
    drop(set);
    if open == 0 {
        return Err(format!(
            "no idle connection could be opened ({errors} errors)"
        ));
    }
    Ok(Metrics {
        requests: open as u64,
        errors,
        rps: open as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu_us_per_req: Some(cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6 / open as f64),
        rss_kib: Some(rss1),
        rss_per_conn_bytes: Some(rss1.saturating_sub(rss0) as f64 * 1024.0 / open as f64),
        duration_s: elapsed.as_secs_f64(),
        ..Metrics::default()
    })
}

/// Median of one field over rounds.
fn med(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
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
        p50_us: f(&|m| m.p50_us),
        p90_us: f(&|m| m.p90_us),
        p99_us: f(&|m| m.p99_us),
        p999_us: f(&|m| m.p999_us),
        max_us: f(&|m| m.max_us),
        cpu_us_per_req: o(&|m| m.cpu_us_per_req),
        syscalls_per_req: o(&|m| m.syscalls_per_req),
        rss_kib: o(&|m| m.rss_kib.map(|v| v as f64)).map(|v| v as u64),
        rss_per_conn_bytes: o(&|m| m.rss_per_conn_bytes),
        loadgen_cpu_us_per_req: f(&|m| m.loadgen_cpu_us_per_req),
        client_cpu_cores: f(&|m| m.client_cpu_cores),
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
    }
}
