//! The project's performance goals (issue 19, and the earlier ones still standing), judged on
//! one run's medians: each one met, missed, or not measured in this run, with the figure.
//!
//! Pure over [`Results`]; the thresholds are the issue's, written once here.

use std::fmt::Write as _;

use super::report::med;
use super::{Metrics, Results};

/// A goal's outcome in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The figure is within the goal.
    Met,
    /// The figure is outside the goal.
    Missed,
    /// A target or scenario it needs did not run (or perf did not count).
    NotMeasured,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One goal as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The goal.
    pub goal: String,
    /// The figure it was judged on.
    pub measured: String,
    /// Met or missed.
    pub verdict: Verdict,
}

fn judge(goal: String, value: Option<(f64, String)>, ok: impl Fn(f64) -> bool) -> Judged {
    match value {
        Some((v, measured)) => Judged {
            goal,
            measured,
            verdict: if ok(v) { Verdict::Met } else { Verdict::Missed },
        },
        None => Judged {
            goal,
            measured: "—".into(),
            verdict: Verdict::NotMeasured,
        },
    }
}

/// `a / b` of one field of two targets' medians in a scenario.
fn ratio(
    r: &Results,
    sc: &str,
    a: &str,
    b: &str,
    key: &dyn Fn(&Metrics) -> Option<f64>,
) -> Option<(f64, String)> {
    let va = med(r, sc, a).and_then(key)?;
    let vb = med(r, sc, b).and_then(key)?;
    (vb > 0.0).then(|| {
        let q = va / vb;
        (q, format!("{q:.2}× ({va:.1} vs {vb:.1})"))
    })
}

/// Rounds (paired by index: the same round of the run) in which `a`'s value is below `b`'s.
fn rounds_lower(
    r: &Results,
    sc: &str,
    a: &str,
    b: &str,
    key: &dyn Fn(&Metrics) -> Option<f64>,
) -> Option<(usize, usize)> {
    let ca = r.cells.iter().find(|c| c.scenario == sc && c.target == a)?;
    let cb = r.cells.iter().find(|c| c.scenario == sc && c.target == b)?;
    let pairs: Vec<(f64, f64)> = ca
        .rounds
        .iter()
        .zip(&cb.rounds)
        .filter_map(|(x, y)| Some((key(x)?, key(y)?)))
        .collect();
    (!pairs.is_empty()).then(|| (pairs.iter().filter(|(x, y)| x < y).count(), pairs.len()))
}

/// Every goal, judged on `r`.
pub fn judge_all(r: &Results) -> Vec<Judged> {
    let cpu = |m: &Metrics| m.cpu_us_per_req;
    let user = |m: &Metrics| m.cpu_user_us_per_req;
    let rps = |m: &Metrics| Some(m.rps);
    let (u, e, n) = ("ringway-uring", "ringway-epoll", "nginx");
    let mut g = Vec::new();
    for sc in ["proxy-small", "proxy-256"] {
        g.push(judge(
            format!("{sc}: ringway-uring CPU/request ≤ 0.8× nginx"),
            ratio(r, sc, u, n, &cpu),
            |q| q <= 0.8,
        ));
    }
    g.push(judge(
        "fanout-4: ringway-uring CPU/request ≤ 0.35× nginx (SSI)".into(),
        ratio(r, "fanout-4", u, n, &cpu),
        |q| q <= 0.35,
    ));
    for sc in ["proxy-small", "proxy-256"] {
        g.push(judge(
            format!("{sc}: ringway-uring user-space CPU/request ≤ 0.5× nginx's"),
            ratio(r, sc, u, n, &user),
            |q| q <= 0.5,
        ));
    }
    for sc in ["proxy-small", "proxy-256", "fanout-4"] {
        let q = ratio(r, sc, u, e, &cpu);
        let won = rounds_lower(r, sc, u, e, &cpu);
        let both = match (q, won) {
            (Some((q, text)), Some((w, n))) => Some((
                if q <= 0.8 && w == n { 0.0 } else { 1.0 },
                format!("{text}; cheaper in {w}/{n} rounds"),
            )),
            _ => None,
        };
        g.push(judge(
            format!("{sc}: ringway-uring CPU/request ≤ 0.8× ringway-epoll, cheaper in every round"),
            both,
            |v| v == 0.0,
        ));
    }
    for sc in ["proxy-small", "proxy-256"] {
        // The goal holds where the target core is the bottleneck: say how busy it was.
        let busy = |t: &str| {
            med(r, sc, t)
                .and_then(|m| m.target_core_busy)
                .map_or("–".to_string(), |b| format!("{:.0}%", b * 100.0))
        };
        let q = ratio(r, sc, u, n, &rps).map(|(q, text)| {
            (
                q,
                format!("{text}; target CPU busy {} · {}", busy(u), busy(n)),
            )
        });
        g.push(judge(
            format!("{sc}: ringway-uring throughput ≥ nginx's (target core the bottleneck)"),
            q,
            |q| q >= 1.0,
        ));
    }
    let allocs = |sc: &str| {
        med(r, sc, u)
            .and_then(|m| m.allocs_per_req)
            .map(|v| (v, format!("{v:.2}")))
    };
    g.push(judge(
        "proxy-small: ≤ 0.1 heap allocations per proxied request (ringway-uring)".into(),
        allocs("proxy-small"),
        |v| v <= 0.1,
    ));
    g.push(judge(
        "fanout-4: ≤ 1 heap allocation per request (ringway-uring)".into(),
        allocs("fanout-4"),
        |v| v <= 1.0,
    ));
    g.push(judge(
        "idle-10k: ≤ 1 KiB RSS per idle connection (ringway-uring)".into(),
        med(r, "idle-10k", u)
            .and_then(|m| m.rss_per_conn_bytes)
            .map(|v| (v, format!("{v:.0} B"))),
        |v| v <= 1024.0,
    ));
    g.push(judge(
        "proxy-small: ≤ 1 syscall per request (ringway-uring)".into(),
        med(r, "proxy-small", u)
            .and_then(|m| m.syscalls_per_req)
            .map(|v| (v, format!("{v:.2}"))),
        |v| v <= 1.0,
    ));
    for pct in super::scenarios::OPEN_LOOP_LOADS {
        let sc = format!("latency-open-{pct}");
        g.push(judge(
            format!("latency-open at {pct}%: ringway-uring p99 below nginx's"),
            ratio(r, &sc, u, n, &|m| Some(m.p99_us)),
            |q| q < 1.0,
        ));
    }
    g
}

/// The goals section of report.md.
pub fn goals(r: &Results, s: &mut String) {
    let _ = writeln!(
        s,
        "## Goals on this host\n\nIssue 19's goals (and the standing syscall and idle-memory goals), judged on this run's medians. Ratios are ringway-uring over the other target.\n\n| goal | measured | verdict |\n|---|---|---|"
    );
    for j in judge_all(r) {
        let _ = writeln!(s, "| {} | {} | {} |", j.goal, j.measured, j.verdict.text());
    }
    let _ = writeln!(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::tests::{cell_with, results};

    fn find<'a>(j: &'a [Judged], prefix: &str) -> &'a Judged {
        j.iter()
            .find(|g| g.goal.starts_with(prefix))
            .unwrap_or_else(|| panic!("no goal {prefix:?} in {j:?}"))
    }

    #[test]
    fn goals_are_judged_from_the_cells() {
        let mut uring = cell_with("proxy-small", "ringway-uring", |m| {
            m.cpu_us_per_req = Some(16.0);
            m.cpu_user_us_per_req = Some(6.0);
            m.rps = 30_000.0;
            m.allocs_per_req = Some(0.5);
        });
        let mut epoll = cell_with("proxy-small", "ringway-epoll", |m| {
            m.cpu_us_per_req = Some(25.0);
        });
        let cpu = |v: f64| Metrics {
            cpu_us_per_req: Some(v),
            ..Metrics::default()
        };
        uring.rounds = vec![cpu(15.0), cpu(16.0), cpu(30.0)];
        epoll.rounds = vec![cpu(25.0), cpu(24.0), cpu(26.0)];
        let r = results(vec![
            uring,
            epoll,
            cell_with("proxy-small", "nginx", |m| {
                m.cpu_us_per_req = Some(20.0);
                m.cpu_user_us_per_req = Some(10.0);
                m.rps = 25_000.0;
            }),
        ]);
        let j = judge_all(&r);
        let g = find(&j, "proxy-small: ringway-uring CPU/request ≤ 0.8× nginx");
        assert_eq!(g.verdict, Verdict::Met, "{g:?}");
        assert_eq!(g.measured, "0.80× (16.0 vs 20.0)");
        let g = find(&j, "proxy-small: ringway-uring user-space");
        assert_eq!(g.verdict, Verdict::Missed, "0.6 > 0.5: {g:?}");
        // 0.64× epoll on the medians, but one round of three was dearer: missed.
        let g = find(
            &j,
            "proxy-small: ringway-uring CPU/request ≤ 0.8× ringway-epoll",
        );
        assert_eq!(g.verdict, Verdict::Missed, "{g:?}");
        assert!(g.measured.ends_with("cheaper in 2/3 rounds"), "{g:?}");
        let g = find(&j, "proxy-small: ringway-uring throughput");
        assert_eq!(g.verdict, Verdict::Met, "{g:?}");
        let g = find(&j, "proxy-small: ≤ 0.1 heap allocations");
        assert_eq!(g.verdict, Verdict::Missed, "{g:?}");
        // No proxy-256 cells: not measured, never met by default.
        let g = find(&j, "proxy-256: ringway-uring CPU/request ≤ 0.8× nginx");
        assert_eq!(g.verdict, Verdict::NotMeasured, "{g:?}");
        let g = find(&j, "latency-open at 50%");
        assert_eq!(g.verdict, Verdict::NotMeasured, "{g:?}");
    }
}
