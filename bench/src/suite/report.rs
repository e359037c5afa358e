//! Reports: results.json, report.md, SVG charts, and the terminal table.
//!
//! Pure presentation over [`Results`]; nothing here measures or starts anything.

use std::fmt::Write as _;
use std::path::Path;

use super::charts::{bar_chart, latency_chart};
use super::scenarios::HELLO_BODY;
use super::targets::TargetKind;
use super::{Cell, Metrics, Results, goals, summary};

/// Writes results.json, report.md and the SVG charts into `out`, and prints the main table.
///
/// # Errors
/// File write or chart rendering failures.
pub fn write_all(r: &Results, out: &Path) -> anyhow::Result<()> {
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(out.join("report.md"), markdown(r))?;
    let scenarios = scenario_names(r);
    let closed: Vec<_> = scenarios
        .iter()
        .filter(|s| *s != "idle-10k" && !s.starts_with("latency-open"))
        .cloned()
        .collect();
    bar_chart(
        r,
        &closed,
        &out.join("throughput.svg"),
        "Throughput (median req/s)",
        "req/s",
        |m| Some(m.rps),
    )?;
    bar_chart(
        r,
        &closed,
        &out.join("cpu_per_req.svg"),
        "Target CPU per request (median µs, no tracer)",
        "µs/request",
        |m| m.cpu_us_per_req,
    )?;
    bar_chart(
        r,
        &closed,
        &out.join("cpu_user_per_req.svg"),
        "Target user-space CPU per request (median µs)",
        "µs/request",
        |m| m.cpu_user_us_per_req,
    )?;
    bar_chart(
        r,
        &closed,
        &out.join("cpu_kernel_per_req.svg"),
        "Target kernel CPU per request (median µs)",
        "µs/request",
        |m| m.cpu_sys_us_per_req,
    )?;
    if scenarios.iter().any(|s| s == "idle-10k") {
        bar_chart(
            r,
            &["idle-10k".to_string()],
            &out.join("idle_rss_per_conn.svg"),
            "RSS per idle connection (bytes)",
            "bytes",
            |m| m.rss_per_conn_bytes,
        )?;
    }
    let open: Vec<String> = scenarios
        .iter()
        .filter(|s| s.starts_with("latency-open"))
        .cloned()
        .collect();
    if !open.is_empty() {
        bar_chart(
            r,
            &open,
            &out.join("latency_open_p99.svg"),
            "Open-loop p99 latency at each load (median µs)",
            "µs",
            |m| Some(m.p99_us),
        )?;
    }
    for s in closed.iter().chain(&open) {
        latency_chart(r, s, &out.join(format!("latency_{s}.svg")))?;
    }
    println!("{}", terminal_table(r));
    Ok(())
}

pub fn scenario_names(r: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cells {
        if !v.contains(&c.scenario) {
            v.push(c.scenario.clone());
        }
    }
    v
}

pub fn target_names(r: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cells {
        if !v.contains(&c.target) {
            v.push(c.target.clone());
        }
    }
    v
}

fn cell<'a>(r: &'a Results, scenario: &str, target: &str) -> Option<&'a Cell> {
    r.cells
        .iter()
        .find(|c| c.scenario == scenario && c.target == target)
}

pub fn med<'a>(r: &'a Results, scenario: &str, target: &str) -> Option<&'a Metrics> {
    cell(r, scenario, target).and_then(|c| c.median.as_ref())
}

pub fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// The table printed at the end of a run: one line per scenario × target.
pub fn terminal_table(r: &Results) -> String {
    let mut s = String::new();
    // Wide enough for the variant targets (`ringway-uring-no-multishot_accept`).
    let tw = target_names(r)
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(14);
    let _ = writeln!(
        s,
        "{:<16} {:<tw$} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "scenario",
        "target",
        "req/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "cpu/req",
        "user",
        "kernel",
        "sys/req",
        "alloc/rq",
        "RSS MiB",
        "errors"
    );
    for c in &r.cells {
        match &c.median {
            Some(m) if c.scenario == "idle-10k" => {
                let _ = writeln!(
                    s,
                    "{:<16} {:<tw$} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.1} {:>7}  RSS/conn {} B",
                    c.scenario,
                    c.target,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    m.rss_kib.unwrap_or(0) as f64 / 1024.0,
                    m.errors,
                    f1(m.rss_per_conn_bytes)
                );
            }
            Some(m) => {
                let _ = writeln!(
                    s,
                    "{:<16} {:<tw$} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.1} {:>7}",
                    c.scenario,
                    c.target,
                    m.rps,
                    m.p50_us,
                    m.p99_us,
                    m.p999_us,
                    f1(m.cpu_us_per_req),
                    f1(m.cpu_user_us_per_req),
                    f1(m.cpu_sys_us_per_req),
                    f1(m.syscalls_per_req),
                    f1(m.allocs_per_req),
                    m.rss_kib.unwrap_or(0) as f64 / 1024.0,
                    m.errors
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{:<16} {:<tw$} {}: {}",
                    c.scenario,
                    c.target,
                    c.status,
                    c.note.as_deref().unwrap_or("")
                );
            }
        }
    }
    s
}

/// The host and run description at the top of report.md.
fn header(r: &Results, s: &mut String) {
    let m = &r.meta;
    let h = &m.host;
    let _ = writeln!(s, "# ringway benchmark report\n\n## Host\n");
    let _ = writeln!(
        s,
        "- CPU: {} (vendor {}), {} cores usable\n- hypervisor: {}\n- kernel: {}",
        h.cpu_model,
        h.cpu_vendor,
        m.cores,
        match (h.hypervisor, &h.hypervisor_vendor) {
            (true, Some(v)) => format!("yes ({v})"),
            (true, None) => "yes".into(),
            (false, _) => "none detected (no `hypervisor` CPU flag)".into(),
        },
        h.kernel
    );
    if h.mitigations.is_empty() {
        let _ = writeln!(s, "- mitigations: none reported");
    } else {
        let _ = writeln!(
            s,
            "- mitigations (/sys/devices/system/cpu/vulnerabilities):"
        );
        for l in &h.mitigations {
            let _ = writeln!(s, "  - {l}");
        }
    }
    let v = |o: &Option<String>| o.clone().unwrap_or_else(|| "not installed".into());
    let _ = writeln!(
        s,
        "- nginx: {}\n- HAProxy: {}\n- wrk: {}\n- perf: {}\n",
        v(&h.nginx),
        v(&h.haproxy),
        v(&h.wrk),
        v(&h.perf)
    );
    let _ = writeln!(
        s,
        "## Run\n\n- date: {}\n- git revision: {}\n- target pinned to CPU {:?}; load generator + backends on CPU {:?} ({} load thread(s))\n- rounds: {} (interleaved, rotated order); per run {:.1} s warm-up, {:.1} s CPU window with no tracer attached{}{}\n- wall time: {:.1} min\n- ringway: {}\n",
        m.date,
        m.git_revision.as_deref().unwrap_or("unknown"),
        m.target_cpus,
        m.client_cpus,
        m.load_threads,
        m.rounds,
        m.warmup_s,
        m.duration_s,
        if m.wrk_s > 0.0 {
            format!(", {:.0} s wrk window (hello, proxy-small)", m.wrk_s)
        } else {
            String::new()
        },
        if m.perf {
            format!(
                ", then a separate {:.1} s traced window for syscalls{} (its CPU is not used)",
                m.trace_s,
                if m.alloc_probes {
                    " and allocations (uprobes on libc malloc, calloc, realloc)".to_string()
                } else {
                    format!(
                        "; allocations not counted: {}",
                        m.alloc_probes_note.as_deref().unwrap_or("no probes")
                    )
                }
            )
        } else {
            "; syscalls and allocations not counted (perf unavailable)".into()
        },
        m.wall_s / 60.0,
        m.versions
            .get("ringway")
            .map_or("not found", String::as_str),
    );
    if m.quick {
        let _ = writeln!(
            s,
            "**Quick mode**: one short round; a functional check, not a measurement.\n"
        );
    }
}

/// report.md: host, summary, goals, per-scenario tables, ratios, wrk check, notes.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    header(r, &mut s);
    summary::summary(r, &mut s);
    goals::goals(r, &mut s);
    summary::wrk_check(r, &mut s);
    let _ = writeln!(
        s,
        "## Per scenario\n\nAll values are medians over rounds. CPU/req (user, kernel) is the *target's* process tree over the untraced window; syscalls/req and allocs/req come from the separate traced window. `client busy` is how busy the client CPUs were (every process): over 90% means the client, not the target, limited req/s.\n"
    );
    for sc in scenario_names(r) {
        let _ = writeln!(s, "### {sc}\n");
        if sc == "hello" {
            let _ = writeln!(
                s,
                "The driver alone: every target answers `GET /hello` by itself with the same `text/plain` body `{HELLO_BODY}`, no backend runs. ringway: a `respond` route; nginx: `return 200`; haproxy: `http-request return`; `direct`: the bench backend, a tokio current_thread server (the \"tokio hello world\" reference).\n"
            );
        }
        if sc == "idle-10k" {
            let _ = writeln!(
                s,
                "| target | open conns | errors | RSS MiB | RSS per conn (B) | CPU µs/conn |\n|---|---:|---:|---:|---:|---:|"
            );
        } else {
            let _ = writeln!(
                s,
                "| target | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | CPU µs/req | user | kernel | syscalls/req | allocs/req | RSS MiB | errors | client busy | target busy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
        let pct = |v: Option<f64>| {
            v.map_or("–".into(), |v| {
                let flag = if v > summary::CLIENT_SATURATED {
                    " ⚠"
                } else {
                    ""
                };
                format!("{:.0}%{flag}", v * 100.0)
            })
        };
        for c in r.cells.iter().filter(|c| c.scenario == sc) {
            match &c.median {
                Some(x) if sc == "idle-10k" => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {:.1} | {} | {} |",
                        c.target,
                        x.requests,
                        x.errors,
                        x.rss_kib.unwrap_or(0) as f64 / 1024.0,
                        f1(x.rss_per_conn_bytes),
                        f1(x.cpu_us_per_req)
                    );
                }
                Some(x) => {
                    let _ = writeln!(
                        s,
                        "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
                        c.target,
                        x.rps,
                        x.p50_us,
                        x.p90_us,
                        x.p99_us,
                        x.p999_us,
                        x.max_us,
                        f1(x.cpu_us_per_req),
                        f1(x.cpu_user_us_per_req),
                        f1(x.cpu_sys_us_per_req),
                        f1(x.syscalls_per_req),
                        f1(x.allocs_per_req),
                        x.rss_kib.unwrap_or(0) as f64 / 1024.0,
                        x.errors,
                        pct(x.client_core_busy),
                        x.target_core_busy
                            .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {} | {}: {} |",
                        c.target,
                        c.status,
                        c.note.as_deref().unwrap_or("").replace('|', "/")
                    );
                }
            }
        }
        let _ = writeln!(s);
    }
    ratios(r, &mut s);
    feature_effects(r, &mut s);
    s
}

/// Paired per-round ratios `a / b` of one field (rounds are paired by index: the same round).
pub fn round_ratios(
    r: &Results,
    sc: &str,
    a: &str,
    b: &str,
    key: &dyn Fn(&Metrics) -> Option<f64>,
) -> Vec<f64> {
    let (Some(ca), Some(cb)) = (cell(r, sc, a), cell(r, sc, b)) else {
        return Vec::new();
    };
    ca.rounds
        .iter()
        .zip(&cb.rounds)
        .filter_map(|(x, y)| {
            let (x, y) = (key(x)?, key(y)?);
            (y > 0.0).then(|| x / y)
        })
        .collect()
}

/// The ratio table, with the per-round ratios of uring/epoll and uring/nginx CPU.
fn ratios(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "## Ratios\n\nThroughput ratios (> 1: the first is faster) and CPU/request ratios (< 1: the first is cheaper), of the medians; in brackets the same ratio round by round.\n"
    );
    let _ = writeln!(
        s,
        "| scenario | uring/epoll req/s | uring/epoll CPU/req | uring/nginx req/s | uring/nginx CPU/req | uring/nginx user CPU/req | uring/direct req/s |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let rps = |m: &Metrics| Some(m.rps);
    let cpu = |m: &Metrics| m.cpu_us_per_req;
    let user = |m: &Metrics| m.cpu_user_us_per_req;
    let per_round = |v: Vec<f64>| {
        if v.len() < 2 {
            String::new()
        } else {
            format!(
                " [{}]",
                v.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    };
    for sc in scenario_names(r) {
        if sc == "idle-10k" {
            continue;
        }
        let g = |t: &str, f: &dyn Fn(&Metrics) -> Option<f64>| med(r, &sc, t).and_then(f);
        let (u, e, n) = ("ringway-uring", "ringway-epoll", "nginx");
        let _ = writeln!(
            s,
            "| {sc} | {} | {}{} | {} | {}{} | {} | {} |",
            ratio(g(u, &rps), g(e, &rps)),
            ratio(g(u, &cpu), g(e, &cpu)),
            per_round(round_ratios(r, &sc, u, e, &cpu)),
            ratio(g(u, &rps), g(n, &rps)),
            ratio(g(u, &cpu), g(n, &cpu)),
            per_round(round_ratios(r, &sc, u, n, &cpu)),
            ratio(g(u, &user), g(n, &user)),
            ratio(g(u, &rps), g("direct", &rps))
        );
    }
    let _ = writeln!(
        s,
        "\nCharts: throughput.svg, cpu_per_req.svg, cpu_user_per_req.svg, cpu_kernel_per_req.svg, latency_<scenario>.svg, latency_open_p99.svg, idle_rss_per_conn.svg. Raw rounds: results.json."
    );
}

/// The io_uring variant targets present in the results, in [`TargetKind::variants`] order.
fn variant_names(r: &Results) -> Vec<&'static str> {
    let present = target_names(r);
    TargetKind::variants()
        .map(TargetKind::name)
        .filter(|n| present.iter().any(|p| p == n))
        .collect()
}

/// Signed change of `a` relative to `b`, in percent (`+4.2%`).
fn change(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:+.1}%", (a / b - 1.0) * 100.0),
        _ => "–".into(),
    }
}

/// "Feature effect": each `ringway-uring-no-<feature>` / `ringway-uring-5.10` against
/// `ringway-uring` of the same run, per scenario. Nothing when no variant ran.
fn feature_effects(r: &Results, s: &mut String) {
    let variants = variant_names(r);
    if variants.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Feature effect (io_uring)\n\nEach variant is `ringway-uring` with `[io_uring]` keys forced off (`ringway-uring-5.10`: all of them), measured in the same rounds. Changes are relative to `ringway-uring`: a variant with *lower* req/s or *higher* CPU/req means the feature helps. A feature the kernel lacks is off in both, so its variant shows noise only (`ringway probe` lists what this kernel has).\n"
    );
    let _ = writeln!(
        s,
        "| scenario | target | req/s | req/s change | CPU µs/req | CPU/req change | syscalls/req | syscalls/req change |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for sc in scenario_names(r) {
        if sc == "idle-10k" {
            continue;
        }
        let base = med(r, &sc, "ringway-uring");
        for v in &variants {
            let Some(m) = med(r, &sc, v) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {sc} | {v} | {:.0} | {} | {} | {} | {} | {} |",
                m.rps,
                change(Some(m.rps), base.map(|b| b.rps)),
                f1(m.cpu_us_per_req),
                change(m.cpu_us_per_req, base.and_then(|b| b.cpu_us_per_req)),
                f1(m.syscalls_per_req),
                change(m.syscalls_per_req, base.and_then(|b| b.syscalls_per_req)),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::suite::host::Host;
    use crate::suite::{Cell, Meta};

    /// A cell whose median is `Metrics::default()` changed by `f`.
    pub(crate) fn cell_with(scenario: &str, target: &str, f: impl FnOnce(&mut Metrics)) -> Cell {
        let mut m = Metrics::default();
        f(&mut m);
        Cell {
            scenario: scenario.into(),
            target: target.into(),
            status: "ok".into(),
            note: None,
            median: Some(m),
            rounds: Vec::new(),
        }
    }

    fn cell(scenario: &str, target: &str, rps: f64, cpu: f64) -> Cell {
        cell_with(scenario, target, |m| {
            m.rps = rps;
            m.cpu_us_per_req = Some(cpu);
        })
    }

    pub(crate) fn results(cells: Vec<Cell>) -> Results {
        Results {
            meta: Meta {
                host: Host {
                    cpu_model: "AMD EPYC".into(),
                    cpu_vendor: "AuthenticAMD".into(),
                    cpu_short: "amd-epyc".into(),
                    mitigations: vec!["spectre_v2: Mitigation: Retpolines".into()],
                    kernel: "6.1".into(),
                    hypervisor: true,
                    ..Host::default()
                },
                kernel: "6.1".into(),
                cpu_model: "AMD EPYC".into(),
                cores: 2,
                date: "2025-01-01T00:00:00Z".into(),
                git_revision: None,
                quick: true,
                rounds: 1,
                duration_s: 1.0,
                warmup_s: 0.5,
                trace_s: 0.0,
                wrk_s: 0.0,
                target_cpus: vec![1],
                client_cpus: vec![0],
                load_threads: 1,
                perf: false,
                alloc_probes: false,
                alloc_probes_note: None,
                versions: Default::default(),
                nofile: 1024,
                open_loop: None,
                wall_s: 0.0,
            },
            cells,
        }
    }

    #[test]
    fn feature_effect_table_compares_with_ringway_uring() {
        let r = results(vec![
            cell("hello", "ringway-uring", 100_000.0, 10.0),
            cell("hello", "ringway-uring-no-multishot_accept", 90_000.0, 11.0),
            cell("hello", "ringway-uring-5.10", 80_000.0, 12.5),
            cell("proxy-small", "ringway-uring", 50_000.0, 20.0),
            cell("proxy-small", "ringway-uring-5.10", 50_000.0, 19.0),
        ]);
        let md = markdown(&r);
        assert!(md.contains("## Feature effect (io_uring)"), "{md}");
        for row in [
            "| hello | ringway-uring-no-multishot_accept | 90000 | -10.0% | 11.0 | +10.0% | – | – |",
            "| hello | ringway-uring-5.10 | 80000 | -20.0% | 12.5 | +25.0% | – | – |",
            "| proxy-small | ringway-uring-5.10 | 50000 | +0.0% | 19.0 | -5.0% | – | – |",
        ] {
            assert!(md.contains(row), "missing {row:?} in:\n{md}");
        }
        // The variants come after the main tables, in feature order, and hello says what it is.
        assert!(md.contains("tokio current_thread"), "{md}");
        let without = results(vec![cell("hello", "ringway-uring", 1.0, 1.0)]);
        assert!(!markdown(&without).contains("Feature effect"));
    }

    #[test]
    fn report_names_the_host_first() {
        let md = markdown(&results(vec![cell("hello", "nginx", 1.0, 1.0)]));
        let host = md.find("## Host").expect("host section");
        let summary = md.find("## Summary").expect("summary");
        assert!(host < summary, "{md}");
        for want in [
            "- CPU: AMD EPYC (vendor AuthenticAMD)",
            "- hypervisor: yes",
            "  - spectre_v2: Mitigation: Retpolines",
            "- nginx: not installed",
            "## Goals on this host",
        ] {
            assert!(md.contains(want), "missing {want:?} in:\n{md}");
        }
    }

    #[test]
    fn round_ratios_pair_rounds_by_index() {
        let mut a = cell("proxy-small", "ringway-uring", 1.0, 1.0);
        let mut b = cell("proxy-small", "ringway-epoll", 1.0, 1.0);
        let cpu = |v: f64| Metrics {
            cpu_us_per_req: Some(v),
            ..Metrics::default()
        };
        a.rounds = vec![cpu(10.0), cpu(30.0)];
        b.rounds = vec![cpu(20.0), cpu(20.0), cpu(5.0)];
        let r = results(vec![a, b]);
        let v = round_ratios(&r, "proxy-small", "ringway-uring", "ringway-epoll", &|m| {
            m.cpu_us_per_req
        });
        assert_eq!(v, [0.5, 1.5]);
    }
}
