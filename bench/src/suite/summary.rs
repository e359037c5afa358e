//! The summary of report.md, in the form the top-level README uses: one table per figure with
//! only the best proxy of each row in bold, the open-loop table, the wrk check with its flags,
//! and the goals of issue 19 stated one by one as met or missed on this host.
//!
//! Pure presentation over [`Results`].

use std::fmt::Write as _;

use super::report::{f1, med, scenario_names, target_names};
use super::scenarios::OPEN_LOOP_LOADS;
use super::{Cell, Metrics, Results};

/// The proxies compared for "best in row" (`direct` is no proxy: the ceiling, never bold).
pub const PROXIES: [&str; 4] = ["ringway-uring", "ringway-epoll", "nginx", "haproxy"];
/// Summary columns, in order.
const COLUMNS: [&str; 5] = [
    "ringway-uring",
    "ringway-epoll",
    "nginx",
    "haproxy",
    "direct",
];
/// A client CPU busier than this means req/s measured the client, not the target.
pub const CLIENT_SATURATED: f64 = 0.9;
/// Smallest relative difference counted as a ranking disagreement, whatever the rounds' spread.
const MIN_NOISE: f64 = 0.05;

/// The proxy with the lowest (or highest) value of `key` in one scenario, if any has one.
pub fn best<'a>(
    r: &'a Results,
    scenario: &str,
    key: &dyn Fn(&Metrics) -> Option<f64>,
    lower_is_better: bool,
) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in r.cells.iter().filter(|c| c.scenario == scenario) {
        if !PROXIES.contains(&c.target.as_str()) {
            continue;
        }
        let Some(v) = c.median.as_ref().and_then(key) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((_, b)) => (lower_is_better && v < b) || (!lower_is_better && v > b),
        };
        if better {
            best = Some((c.target.as_str(), v));
        }
    }
    best.map(|(t, _)| t)
}

/// `**text**` when `bold`.
fn bold(text: String, bold: bool) -> String {
    if bold { format!("**{text}**") } else { text }
}

/// Thousands separators: 27855 → `27,855`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// One summary table: a row per scenario, a column per target, the best proxy in bold.
fn table(
    r: &Results,
    s: &mut String,
    scenarios: &[String],
    key: &dyn Fn(&Metrics) -> Option<f64>,
    show: &dyn Fn(&Metrics) -> String,
    lower_is_better: bool,
) {
    let cols: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|t| target_names(r).iter().any(|n| n == t))
        .collect();
    let _ = writeln!(
        s,
        "| scenario | {} |\n|---|{}",
        cols.join(" | "),
        "---:|".repeat(cols.len())
    );
    for sc in scenarios {
        let b = best(r, sc, key, lower_is_better);
        let row: Vec<String> = cols
            .iter()
            .map(|t| match med(r, sc, t) {
                Some(m) if key(m).is_some() => bold(show(m), b == Some(*t)),
                _ => "—".into(),
            })
            .collect();
        let _ = writeln!(s, "| {sc} | {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

fn closed_loop_scenarios(r: &Results) -> Vec<String> {
    scenario_names(r)
        .into_iter()
        .filter(|s| s != "idle-10k" && !s.starts_with("latency-open"))
        .collect()
}

/// The summary section (README format).
pub fn summary(r: &Results, s: &mut String) {
    let m = &r.meta;
    let scen = closed_loop_scenarios(r);
    let _ = writeln!(
        s,
        "## Summary\n\nHost: {}. Git `{}`. {} interleaved round(s), {:.0} s CPU windows. Medians; **bold**: the best proxy in the row (direct is no proxy and never bold).\n",
        m.host.summary(),
        m.git_revision
            .as_deref()
            .map_or("unknown", |g| &g[..g.len().min(7)]),
        m.rounds,
        m.duration_s,
    );
    let _ = writeln!(
        s,
        "CPU µs per request of the target, user + kernel (no tracer attached):\n"
    );
    table(
        r,
        s,
        &scen,
        &|m| m.cpu_us_per_req,
        &|m| {
            format!(
                "{} ({} + {})",
                f1(m.cpu_us_per_req),
                f1(m.cpu_user_us_per_req),
                f1(m.cpu_sys_us_per_req)
            )
        },
        true,
    );
    let _ = writeln!(s, "Throughput, req/s (closed loop):\n");
    table(r, s, &scen, &|m| Some(m.rps), &|m| thousands(m.rps), false);
    let _ = writeln!(s, "Closed-loop p99 latency, µs:\n");
    table(
        r,
        s,
        &scen,
        &|m| Some(m.p99_us),
        &|m| thousands(m.p99_us),
        true,
    );
    if m.perf {
        let _ = writeln!(
            s,
            "Syscalls · heap allocations per request (separate traced window{}; **bold**: the fewest syscalls):\n",
            if m.alloc_probes {
                "; malloc+calloc+realloc uprobes"
            } else {
                "; allocations not counted"
            }
        );
        table(
            r,
            s,
            &scen,
            &|m| m.syscalls_per_req,
            &|m| format!("{} · {}", f1(m.syscalls_per_req), f1(m.allocs_per_req)),
            true,
        );
    }
    if scenario_names(r).iter().any(|s| s == "idle-10k") {
        let _ = writeln!(s, "RSS per idle connection (idle-10k), bytes:\n");
        table(
            r,
            s,
            &["idle-10k".to_string()],
            &|m| m.rss_per_conn_bytes,
            &|m| thousands(m.rss_per_conn_bytes.unwrap_or(0.0)),
            true,
        );
    }
    open_loop_table(r, s);
}

/// Open-loop latency per target and load, the lowest p99 among proxies in bold.
fn open_loop_table(r: &Results, s: &mut String) {
    let Some(ol) = &r.meta.open_loop else {
        return;
    };
    let _ = writeln!(
        s,
        "Open-loop latency (latency-open: proxy-small traffic on a fixed send schedule at {} of {}'s closed-loop maximum, {} req/s from {}; latency from the scheduled send time; **bold**: the lowest p99 among proxies at that load):\n",
        ol.loads_pct
            .iter()
            .map(|p| format!("{p}%"))
            .collect::<Vec<_>>()
            .join(" and "),
        ol.target,
        thousands(ol.max_rps),
        ol.source
    );
    let _ = writeln!(
        s,
        "| load | target | offered req/s | achieved req/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/req (user + kernel) | errors | client timer lag p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for pct in OPEN_LOOP_LOADS {
        let sc = format!("latency-open-{pct}");
        let b = best(r, &sc, &|m| Some(m.p99_us), true);
        for c in r.cells.iter().filter(|c| c.scenario == sc) {
            match &c.median {
                Some(m) => {
                    let _ = writeln!(
                        s,
                        "| {pct}% | {} | {} | {} | {} | {} | {} | {} | {} ({} + {}) | {} | {} |",
                        c.target,
                        thousands(m.offered_rps.unwrap_or(0.0)),
                        thousands(m.rps),
                        thousands(m.p50_us),
                        bold(thousands(m.p99_us), b == Some(c.target.as_str())),
                        thousands(m.p999_us),
                        thousands(m.max_us),
                        f1(m.cpu_us_per_req),
                        f1(m.cpu_user_us_per_req),
                        f1(m.cpu_sys_us_per_req),
                        m.errors,
                        m.send_lag_p99_us.map_or("–".into(), thousands)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {pct}% | {} | {}: {} | | | | | | | | |",
                        c.target,
                        c.status,
                        c.note.as_deref().unwrap_or("").replace('|', "/")
                    );
                }
            }
        }
    }
    let _ = writeln!(
        s,
        "\nA target whose achieved rate falls short of the offered one could not keep up: its queue shows in the percentiles, as it should. A request whose connection was still busy at its scheduled time counts from that time; one whose connection was free counts from the real send, and `client timer lag` is how late the client's own 1 ms timer sent those: a large lag means the client missed its schedule.\n"
    );
}

/// Relative spread (max − min) / median of `key` over a cell's rounds; 0 with one round.
fn spread(c: &Cell, key: &dyn Fn(&Metrics) -> Option<f64>) -> f64 {
    let v: Vec<f64> = c.rounds.iter().filter_map(key).collect();
    let (Some(lo), Some(hi)) = (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) else {
        return 0.0;
    };
    match super::med(v) {
        Some(m) if m > 0.0 => (hi - lo) / m,
        _ => 0.0,
    }
}

/// Pairs of targets that the suite's client and wrk rank in opposite order, each by more than
/// the noise (the larger of [`MIN_NOISE`] and the rounds' relative spread of the four values).
pub fn ranking_disagreements(r: &Results, scenario: &str) -> Vec<String> {
    let cells: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .filter(|c| c.median.as_ref().is_some_and(|m| m.wrk_rps.is_some()))
        .collect();
    let suite = |m: &Metrics| Some(m.rps);
    let wrk = |m: &Metrics| m.wrk_rps;
    let mut out = Vec::new();
    for (i, a) in cells.iter().enumerate() {
        for b in &cells[i + 1..] {
            let (Some(ma), Some(mb)) = (&a.median, &b.median) else {
                continue;
            };
            let (Some(wa), Some(wb)) = (ma.wrk_rps, mb.wrk_rps) else {
                continue;
            };
            if mb.rps <= 0.0 || wb <= 0.0 {
                continue;
            }
            let noise = [
                spread(a, &suite),
                spread(b, &suite),
                spread(a, &wrk),
                spread(b, &wrk),
            ]
            .into_iter()
            .fold(MIN_NOISE, f64::max);
            let rs = ma.rps / mb.rps;
            let rw = wa / wb;
            if (rs > 1.0 + noise && rw < 1.0 - noise) || (rs < 1.0 - noise && rw > 1.0 + noise) {
                out.push(format!(
                    "{scenario}: the suite's client has {} at {rs:.2}× {}, wrk at {rw:.2}× (noise ±{:.0}%)",
                    a.target,
                    b.target,
                    noise * 100.0
                ));
            }
        }
    }
    out
}

/// Cells whose client CPUs were more than [`CLIENT_SATURATED`] busy (suite client or wrk).
pub fn saturated_clients(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    for c in &r.cells {
        let Some(m) = &c.median else { continue };
        for (who, v) in [
            ("suite client", m.client_core_busy),
            ("wrk", m.wrk_client_core_busy),
        ] {
            if let Some(v) = v.filter(|v| *v > CLIENT_SATURATED) {
                out.push(format!(
                    "{} / {}: client CPUs {:.0}% busy under the {who}: req/s there measures the client, not the target; compare CPU per request",
                    c.scenario,
                    c.target,
                    v * 100.0
                ));
            }
        }
    }
    out
}

/// The wrk check: req/s of both clients side by side, ranking disagreements, saturated clients.
pub fn wrk_check(r: &Results, s: &mut String) {
    let with_wrk: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| c.median.as_ref().is_some_and(|m| m.wrk_rps.is_some()))
        .collect();
    if !with_wrk.is_empty() {
        let _ = writeln!(
            s,
            "## wrk check\n\nThe same target measured with the suite's client and with wrk (`{}`, -t{} -c<conns>, {:.0} s), medians. CPU µs/req is the target's under each client.\n",
            r.meta.host.wrk.as_deref().unwrap_or("wrk"),
            r.meta.load_threads,
            r.meta.wrk_s
        );
        let _ = writeln!(
            s,
            "| scenario | target | suite req/s | wrk req/s | wrk/suite | CPU µs/req suite · wrk | client CPUs busy suite · wrk | wrk errors |\n|---|---|---:|---:|---:|---:|---:|---:|"
        );
        for c in with_wrk {
            let Some(m) = &c.median else { continue };
            let w = m.wrk_rps.unwrap_or(0.0);
            let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.0}%", v * 100.0));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {} · {} | {} · {} | {} |",
                c.scenario,
                c.target,
                thousands(m.rps),
                thousands(w),
                if m.rps > 0.0 { w / m.rps } else { 0.0 },
                f1(m.cpu_us_per_req),
                f1(m.wrk_cpu_us_per_req),
                pct(m.client_core_busy),
                pct(m.wrk_client_core_busy),
                m.wrk_errors.unwrap_or(0)
            );
        }
        let _ = writeln!(s);
        let dis: Vec<String> = scenario_names(r)
            .iter()
            .flat_map(|sc| ranking_disagreements(r, sc))
            .collect();
        if dis.is_empty() {
            let _ = writeln!(
                s,
                "Ranking: the two clients order the targets alike (no pair in opposite order by more than the noise).\n"
            );
        } else {
            let _ = writeln!(
                s,
                "**Ranking disagreements** (beyond the noise):\n\n{}\n",
                dis.iter()
                    .map(|d| format!("- {d}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    let sat = saturated_clients(r);
    if !sat.is_empty() {
        let _ = writeln!(
            s,
            "**Saturated client** (client CPUs over {:.0}% busy, every process counted):\n\n{}\n",
            CLIENT_SATURATED * 100.0,
            sat.iter()
                .map(|d| format!("- {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::tests::{cell_with, results};

    #[test]
    fn only_the_best_proxy_is_bold_and_direct_never() {
        let r = results(vec![
            cell_with("proxy-small", "ringway-uring", |m| {
                m.cpu_us_per_req = Some(30.0);
                m.rps = 20_000.0;
            }),
            cell_with("proxy-small", "nginx", |m| {
                m.cpu_us_per_req = Some(25.0);
                m.rps = 21_000.0;
            }),
            cell_with("proxy-small", "direct", |m| {
                m.cpu_us_per_req = Some(10.0);
                m.rps = 40_000.0;
            }),
        ]);
        assert_eq!(
            best(&r, "proxy-small", &|m| m.cpu_us_per_req, true),
            Some("nginx")
        );
        assert_eq!(
            best(&r, "proxy-small", &|m| Some(m.rps), false),
            Some("nginx")
        );
        let mut s = String::new();
        summary(&r, &mut s);
        assert!(
            s.contains("| proxy-small | 30.0 (– + –) | **25.0 (– + –)** | 10.0 (– + –) |"),
            "{s}"
        );
        assert!(
            s.contains("| proxy-small | 20,000 | **21,000** | 40,000 |"),
            "{s}"
        );
        assert_eq!(s.matches("**").count() % 2, 0);
    }

    #[test]
    fn disagreement_needs_opposite_order_beyond_noise() {
        let mk = |t: &str, rps: f64, wrk: f64| {
            cell_with("hello", t, |m| {
                m.rps = rps;
                m.wrk_rps = Some(wrk);
            })
        };
        // Suite: a 1.2× b; wrk: a 0.8× b → disagreement.
        let r = results(vec![mk("a", 120.0, 80.0), mk("b", 100.0, 100.0)]);
        let d = ranking_disagreements(&r, "hello");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("a at 1.20× b, wrk at 0.80×"), "{d:?}");
        // Same order in both: none.
        let r = results(vec![mk("a", 120.0, 110.0), mk("b", 100.0, 100.0)]);
        assert!(ranking_disagreements(&r, "hello").is_empty());
        // Opposite order but within 5%: none.
        let r = results(vec![mk("a", 103.0, 97.0), mk("b", 100.0, 100.0)]);
        assert!(ranking_disagreements(&r, "hello").is_empty());
        // Opposite by 20%, but the rounds spread by 50%: noise, none.
        let mut a = mk("a", 120.0, 80.0);
        a.rounds = [80.0, 120.0, 130.0]
            .iter()
            .map(|v| Metrics {
                rps: *v,
                ..Metrics::default()
            })
            .collect();
        let r = results(vec![a, mk("b", 100.0, 100.0)]);
        assert!(ranking_disagreements(&r, "hello").is_empty());
    }

    #[test]
    fn saturated_client_is_flagged() {
        let r = results(vec![
            cell_with("hello", "direct", |m| m.client_core_busy = Some(0.97)),
            cell_with("hello", "nginx", |m| {
                m.client_core_busy = Some(0.5);
                m.wrk_client_core_busy = Some(0.95);
            }),
            cell_with("hello", "haproxy", |m| m.client_core_busy = Some(0.89)),
        ]);
        let f = saturated_clients(&r);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].starts_with("hello / direct: client CPUs 97% busy under the suite client"));
        assert!(f[1].starts_with("hello / nginx: client CPUs 95% busy under the wrk"));
        assert_eq!(thousands(27_855.4), "27,855");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
