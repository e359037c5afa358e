//! One run of one target: start it, warm up, measure the windows, stop it; and the rounds
//! that repeat runs in rotated order.
//!
//! Windows of a closed-loop run, in order:
//! 1. **CPU** (untraced): requests, latency, utime/stime of the target's process tree, how busy
//!    the client and target CPUs were. Nothing is attached to the target.
//! 2. **wrk** (hello, proxy-small, when wrk is installed): wrk's req/s against the same target.
//! 3. **traced** (when perf works): `perf stat` counts syscalls and libc allocations; its CPU
//!    and latency figures are discarded.

use std::path::Path;
use std::time::{Duration, Instant};

use super::scenarios::{self, OPEN_LOOP_LOADS, OPEN_LOOP_REFERENCE, Scenario};
use super::targets::{self, RunningTarget, TargetKind, TargetSetup, Tools};
use super::trace::{self, PerfCount};
use super::{Cell, Metrics, OpenLoopRef, Windows, idle, wrk};
use crate::addr::Addr;
use crate::backend::{self, BackendConfig, BackendHandle};
use crate::load::{self, LoadConfig, LoadReport};
use crate::procfs::{self, CpuSplit};

/// Per-response timeout for the load generator during the suite.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rough start-up plus stop time of one target, for the time estimate.
const START_STOP_S: f64 = 0.6;
/// Rough time of one idle-10k run, for the time estimate.
const IDLE_RUN_S: f64 = 4.0;

/// Shared inputs of every run.
pub struct RunCtx<'a> {
    /// Binaries found.
    pub tools: &'a Tools,
    /// Temp directory for configs and logs.
    pub dir: &'a Path,
    /// CPUs of the target.
    pub target_cpus: &'a [usize],
    /// CPUs of this process (load generator, backends, wrk).
    pub client_cpus: &'a [usize],
    /// Load generator threads.
    pub threads: usize,
    /// Window lengths.
    pub win: Windows,
    /// perf counts syscalls in the traced window.
    pub perf: bool,
    /// Allocation uprobe events (empty: allocations not counted).
    pub alloc_events: &'a [String],
    /// RLIMIT_NOFILE in force.
    pub nofile: u64,
}

/// Seconds the plan should take (printed at start so a 25-minute budget can be checked).
pub fn planned_secs(
    scen: &[Scenario],
    targets: &[TargetKind],
    tools: &Tools,
    rounds: usize,
    w: &Windows,
    perf: bool,
) -> f64 {
    let runnable = |sc: &Scenario| {
        targets
            .iter()
            .filter(|t| t.unsupported(sc).is_none() && tools.binary(**t).is_ok())
            .count() as f64
    };
    let trace = if perf {
        w.trace.as_secs_f64() + trace::PERF_ATTACH.as_secs_f64()
    } else {
        0.0
    };
    let per_round: f64 = scen
        .iter()
        .map(|sc| {
            let n = runnable(sc);
            if sc.idle_connections.is_some() {
                n * IDLE_RUN_S
            } else if sc.open_loop {
                n * (START_STOP_S
                    + w.warmup.as_secs_f64()
                    + OPEN_LOOP_LOADS.len() as f64 * w.duration.as_secs_f64())
            } else {
                let wrk = if sc.wrk_check && tools.wrk.is_some() {
                    w.wrk.as_secs_f64()
                } else {
                    0.0
                };
                n * (START_STOP_S + w.warmup.as_secs_f64() + w.duration.as_secs_f64() + wrk + trace)
            }
        })
        .sum();
    per_round * rounds as f64
}

/// One cell per scenario × target (two per target for the open-loop scenario, one per load),
/// marked `skipped` where the target cannot run.
pub fn plan_cells(scen: &[Scenario], targets: &[TargetKind], tools: &Tools) -> Vec<Cell> {
    let mut cells = Vec::new();
    for sc in scen {
        let names: Vec<String> = if sc.open_loop {
            OPEN_LOOP_LOADS
                .iter()
                .map(|p| scenarios::open_loop_cell(sc, *p))
                .collect()
        } else {
            vec![sc.name.to_string()]
        };
        for name in names {
            for t in targets {
                let (status, note) = match (t.unsupported(sc), tools.binary(*t)) {
                    (Some(why), _) => ("skipped", Some(why.to_string())),
                    (None, Err(why)) => ("skipped", Some(why)),
                    (None, Ok(_)) => ("ok", None),
                };
                cells.push(Cell {
                    scenario: name.clone(),
                    target: t.name().into(),
                    status: status.into(),
                    note,
                    median: None,
                    rounds: Vec::new(),
                });
            }
        }
    }
    cells
}

/// `targets` rotated left by `round`: A B C, B C A, C A B.
pub fn rotated(targets: &[TargetKind], round: usize) -> Vec<TargetKind> {
    let mut order = targets.to_vec();
    if !order.is_empty() {
        let k = round % order.len();
        order.rotate_left(k);
    }
    order
}

fn cell_mut<'a>(cells: &'a mut [Cell], scenario: &str, target: &str) -> Option<&'a mut Cell> {
    cells
        .iter_mut()
        .find(|c| c.scenario == scenario && c.target == target)
}

/// Records one run's outcome in its cell.
fn record(cell: &mut Cell, res: Result<Metrics, String>) {
    match res {
        Ok(m) => {
            eprintln!(
                "{:>9.0} req/s  p99 {:>8.0} us  cpu {} (user {} sys {}) us/req  errors {}",
                m.rps,
                m.p99_us,
                fmt_opt(m.cpu_us_per_req),
                fmt_opt(m.cpu_user_us_per_req),
                fmt_opt(m.cpu_sys_us_per_req),
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

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Every closed-loop scenario of `scen`, `rounds` times, targets in rotated order.
pub fn closed_loop_rounds(
    ctx: &RunCtx<'_>,
    scen: &[Scenario],
    targets: &[TargetKind],
    rounds: usize,
    cells: &mut [Cell],
) {
    for round in 0..rounds {
        for sc in scen.iter().filter(|s| !s.open_loop) {
            // `hello`: the targets answer by themselves, no backend runs.
            let be = match start_backends(sc, ctx.dir, ctx.threads) {
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
            for t in rotated(targets, round) {
                let Some(cell) = cell_mut(cells, sc.name, t.name()) else {
                    continue;
                };
                if cell.status == "skipped" {
                    continue;
                }
                eprint!(
                    "round {}/{rounds}  {:<14} {:<20} ",
                    round + 1,
                    sc.name,
                    t.name()
                );
                let addrs = be.as_ref().map_or(&[][..], BackendHandle::addrs);
                record(cell, run_one(ctx, sc, t, addrs));
            }
            if let Some(be) = be {
                be.stop();
            }
        }
    }
}

/// The reference target for the open-loop rates and its closed-loop maximum on proxy-small:
/// this run's proxy-small median when there is one, else one calibration run.
fn open_loop_reference(ctx: &RunCtx<'_>, cells: &[Cell]) -> Option<OpenLoopRef> {
    let t = OPEN_LOOP_REFERENCE
        .iter()
        .filter_map(|n| TargetKind::by_name(n))
        .find(|t| ctx.tools.binary(*t).is_ok())?;
    let from_run = cells
        .iter()
        .find(|c| c.scenario == "proxy-small" && c.target == t.name())
        .filter(|c| !c.rounds.is_empty())
        .and_then(|c| {
            let v: Vec<f64> = c.rounds.iter().map(|m| m.rps).collect();
            Some((super::med(v)?, c.rounds.len()))
        });
    let (max_rps, source) = match from_run {
        Some((rps, n)) => (rps, format!("proxy-small median of {n} round(s)")),
        None => {
            let sc = scenarios::by_name("proxy-small")?;
            eprint!("calibration  proxy-small    {:<20} ", t.name());
            let be = start_backends(&sc, ctx.dir, ctx.threads).ok()?;
            let addrs = be.as_ref().map_or(&[][..], BackendHandle::addrs);
            let r = run_one(ctx, &sc, t, addrs);
            if let Some(be) = be {
                be.stop();
            }
            match r {
                Ok(m) => {
                    eprintln!("{:.0} req/s", m.rps);
                    (
                        m.rps,
                        "calibration run (proxy-small not in this run)".into(),
                    )
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    return None;
                }
            }
        }
    };
    Some(OpenLoopRef {
        target: t.name().into(),
        max_rps,
        source,
        loads_pct: OPEN_LOOP_LOADS.to_vec(),
    })
}

/// The open-loop scenario: every target at each of [`OPEN_LOOP_LOADS`] of the reference's
/// closed-loop maximum, `rounds` times in rotated order. One start per target and round
/// serves every load (warm-up at the first load, then one window per load).
pub fn open_loop_rounds(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    targets: &[TargetKind],
    rounds: usize,
    cells: &mut [Cell],
) -> Option<OpenLoopRef> {
    let Some(reference) = open_loop_reference(ctx, cells) else {
        for c in cells
            .iter_mut()
            .filter(|c| c.scenario.starts_with(sc.name) && c.status == "ok")
        {
            c.status = "failed".into();
            c.note = Some("no reference rate: no proxy target ran proxy-small".into());
        }
        return None;
    };
    let rates: Vec<f64> = OPEN_LOOP_LOADS
        .iter()
        .map(|p| reference.max_rps * f64::from(*p) / 100.0)
        .collect();
    for round in 0..rounds {
        let be = match start_backends(sc, ctx.dir, ctx.threads) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("round {}: {}: backend failed: {e}", round + 1, sc.name);
                continue;
            }
        };
        let addrs = be.as_ref().map_or(&[][..], BackendHandle::addrs);
        for t in rotated(targets, round) {
            let first = scenarios::open_loop_cell(sc, OPEN_LOOP_LOADS[0]);
            if cell_mut(cells, &first, t.name()).is_none_or(|c| c.status == "skipped") {
                continue;
            }
            let results: Vec<Result<Metrics, String>> = match start(ctx, sc, t, addrs) {
                Ok(rt) => {
                    let warm = open_config(ctx, sc, &rt, ctx.win.warmup, rates[0]);
                    let res = match load::run(&warm) {
                        Ok(_) => rates
                            .iter()
                            .map(|r| {
                                let cfg = open_config(ctx, sc, &rt, ctx.win.duration, *r);
                                window(ctx, &rt, &cfg).map(|(mut m, lag)| {
                                    m.offered_rps = Some(*r);
                                    m.send_lag_p99_us = lag;
                                    m
                                })
                            })
                            .collect(),
                        Err(e) => rates.iter().map(|_| Err(format!("warm-up: {e}"))).collect(),
                    };
                    rt.stop();
                    res
                }
                Err(e) => rates.iter().map(|_| Err(e.clone())).collect(),
            };
            for (pct, res) in OPEN_LOOP_LOADS.iter().zip(results) {
                let name = scenarios::open_loop_cell(sc, *pct);
                eprint!("round {}/{rounds}  {name:<14} {:<20} ", round + 1, t.name());
                if let Some(cell) = cell_mut(cells, &name, t.name()) {
                    record(cell, res);
                }
            }
        }
        if let Some(be) = be {
            be.stop();
        }
    }
    Some(reference)
}

/// The in-process backend for a scenario (TCP, or a Unix socket in the temp dir for proxy-uds);
/// none for a scenario the targets answer by themselves.
pub fn start_backends(
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

/// The closed-loop load of a scenario against a running target.
pub fn load_config(
    threads: usize,
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
        threads,
        timeout: RESPONSE_TIMEOUT,
    }
}

fn open_config(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    rt: &RunningTarget,
    duration: Duration,
    rate: f64,
) -> LoadConfig {
    LoadConfig {
        rate: Some(rate),
        ..load_config(ctx.threads, sc, rt, duration)
    }
}

fn start(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    t: TargetKind,
    backends: &[Addr],
) -> Result<RunningTarget, String> {
    let setup = TargetSetup {
        scenario: sc,
        backends,
        dir: ctx.dir,
        cpus: ctx.target_cpus,
        nofile: ctx.nofile,
    };
    targets::start(t, ctx.tools, &setup)
}

/// Starts one target, warms it up, measures, stops it.
fn run_one(
    ctx: &RunCtx<'_>,
    sc: &Scenario,
    t: TargetKind,
    backends: &[Addr],
) -> Result<Metrics, String> {
    let rt = start(ctx, sc, t, backends)?;
    let res = measure(ctx, sc, &rt);
    rt.stop();
    res
}

/// What one load window measured about the target, with nothing attached to it.
pub struct Window {
    /// The load generator's report.
    pub load: LoadReport,
    /// Target CPU over the window.
    pub cpu: CpuSplit,
    /// Client CPUs' busy fraction.
    pub client_busy: Option<f64>,
    /// Target CPU's busy fraction.
    pub target_busy: Option<f64>,
    /// This process's CPU over the window.
    pub self_cpu: Duration,
}

/// Runs `cfg` against the target and reads its CPU around it.
pub fn load_window(
    pid: u32,
    cfg: &LoadConfig,
    client_cpus: &[usize],
    target_cpus: &[usize],
) -> Result<Window, String> {
    let c0 = procfs::core_times(client_cpus);
    let t0 = procfs::core_times(target_cpus);
    let cpu0 = procfs::tree_cpu_split(pid);
    let self0 = procfs::rusage(libc::RUSAGE_SELF);
    let load = load::run(cfg).map_err(|e| format!("load: {e}"))?;
    let cpu1 = procfs::tree_cpu_split(pid);
    let self1 = procfs::rusage(libc::RUSAGE_SELF);
    Ok(Window {
        load,
        cpu: cpu1.since(&cpu0),
        client_busy: procfs::core_times(client_cpus).busy_since(&c0),
        target_busy: procfs::core_times(target_cpus).busy_since(&t0),
        self_cpu: self1.saturating_sub(self0),
    })
}

/// Per-request microseconds of a CPU time.
fn per_req_us(d: Duration, reqs: u64) -> f64 {
    d.as_secs_f64() * 1e6 / reqs.max(1) as f64
}

/// One untraced window as [`Metrics`], with the p99 of the client's send lag (µs) when any
/// request was sent by the timer (open loop).
fn window(
    ctx: &RunCtx<'_>,
    rt: &RunningTarget,
    cfg: &LoadConfig,
) -> Result<(Metrics, Option<f64>), String> {
    let w = load_window(rt.pid(), cfg, ctx.client_cpus, ctx.target_cpus)?;
    let r = &w.load;
    if r.requests == 0 {
        return Err(format!("no responses (errors: {:?})", r.errors));
    }
    let lag = (!r.send_lag.is_empty()).then(|| r.send_lag.value_at_quantile(0.99) as f64 / 1000.0);
    let m = Metrics {
        requests: r.requests,
        errors: r.errors.total(),
        rps: r.rps(),
        p50_us: r.pct_us(0.5),
        p90_us: r.pct_us(0.9),
        p99_us: r.pct_us(0.99),
        p999_us: r.pct_us(0.999),
        max_us: r.hist.max() as f64 / 1000.0,
        cpu_us_per_req: Some(per_req_us(w.cpu.total(), r.requests)),
        cpu_user_us_per_req: Some(per_req_us(w.cpu.user, r.requests)),
        cpu_sys_us_per_req: Some(per_req_us(w.cpu.sys, r.requests)),
        rss_kib: Some(procfs::tree_rss_kib(rt.pid())),
        loadgen_cpu_us_per_req: r.worker_cpu_us_per_req(),
        client_cpu_cores: w.self_cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9),
        client_core_busy: w.client_busy,
        target_core_busy: w.target_busy,
        duration_s: r.elapsed.as_secs_f64(),
        ..Metrics::default()
    };
    Ok((m, lag))
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
    load::run(&load_config(ctx.threads, sc, rt, ctx.win.warmup))
        .map_err(|e| format!("warm-up: {e}"))?;
    let (mut m, _) = window(ctx, rt, &load_config(ctx.threads, sc, rt, ctx.win.duration))?;
    if let (true, Some(w), Addr::Tcp(a)) = (sc.wrk_check, &ctx.tools.wrk, &rt.addr) {
        let c0 = procfs::core_times(ctx.client_cpus);
        let cpu0 = procfs::tree_cpu_split(pid);
        match wrk::run(
            w,
            &a.to_string(),
            sc.path,
            sc.connections,
            ctx.threads,
            ctx.win.wrk,
        ) {
            Ok(r) => {
                let cpu = procfs::tree_cpu_split(pid).since(&cpu0);
                m.wrk_rps = Some(r.rps);
                m.wrk_errors = Some(r.errors);
                m.wrk_cpu_us_per_req = Some(per_req_us(cpu.total(), r.requests));
                m.wrk_client_core_busy = procfs::core_times(ctx.client_cpus).busy_since(&c0);
            }
            Err(e) => eprint!("(wrk failed: {e}) "),
        }
    }
    if ctx.perf {
        let tree = procfs::process_tree(pid);
        if let Some(p) = PerfCount::start(&tree, ctx.alloc_events, ctx.dir.join("perf.out")) {
            std::thread::sleep(trace::PERF_ATTACH);
            let traced = load::run(&load_config(ctx.threads, sc, rt, ctx.win.trace));
            let counts = p.finish();
            if let Ok(r) = traced {
                let reqs = r.requests.max(1) as f64;
                m.syscalls_per_req = counts.syscalls.map(|n| n as f64 / reqs);
                m.allocs_per_req = counts.allocs.map(|n| n as f64 / reqs);
            }
        }
    }
    Ok(m)
}

/// idle-10k: RSS before and after opening N keepalive connections (one request each).
fn measure_idle(rt: &RunningTarget, sc: &Scenario, n: usize) -> Result<Metrics, String> {
    let pid = rt.pid();
    // One request first so lazily allocated per-process state is not charged to the connections.
    let _warm = idle::open(&rt.tcp_addr, sc.path, 1, RESPONSE_TIMEOUT);
    let rss0 = procfs::tree_rss_kib(pid);
    let cpu0 = procfs::tree_cpu_split(pid);
    let t0 = Instant::now();
    let set = idle::open(&rt.tcp_addr, sc.path, n, RESPONSE_TIMEOUT);
    let elapsed = t0.elapsed();
    // Let the target finish any deferred work (buffers returned, timers armed) before reading RSS.
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = procfs::tree_rss_kib(pid);
    let cpu = procfs::tree_cpu_split(pid).since(&cpu0);
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
        cpu_us_per_req: Some(per_req_us(cpu.total(), open as u64)),
        cpu_user_us_per_req: Some(per_req_us(cpu.user, open as u64)),
        cpu_sys_us_per_req: Some(per_req_us(cpu.sys, open as u64)),
        rss_kib: Some(rss1),
        rss_per_conn_bytes: Some(rss1.saturating_sub(rss0) as f64 * 1024.0 / open as f64),
        duration_s: elapsed.as_secs_f64(),
        ..Metrics::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_open_loop_cells() {
        let t = [
            TargetKind::RingwayUring,
            TargetKind::Nginx,
            TargetKind::Haproxy,
        ];
        assert_eq!(rotated(&t, 0), t);
        assert_eq!(
            rotated(&t, 1),
            [
                TargetKind::Nginx,
                TargetKind::Haproxy,
                TargetKind::RingwayUring
            ]
        );
        assert_eq!(rotated(&t, 3), t);
        let sc = scenarios::by_name("latency-open").expect("scenario");
        let tools = Tools::default();
        let cells = plan_cells(&[sc], &t, &tools);
        let names: Vec<&str> = cells.iter().map(|c| c.scenario.as_str()).collect();
        assert_eq!(names.len(), 2 * t.len());
        assert!(names.contains(&"latency-open-50") && names.contains(&"latency-open-90"));
        // No binaries in an empty Tools: every cell is skipped, saying why.
        assert!(
            cells
                .iter()
                .all(|c| c.status == "skipped" && c.note.is_some())
        );
    }
}
