//! Reports: results.json, report.md, SVG charts, and the terminal table.
//!
//! Pure presentation over [`Results`]; nothing here measures or starts anything.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::scenarios::HELLO_BODY;
use super::targets::TargetKind;
use super::{Cell, Metrics, Results};

/// Writes results.json, report.md and the SVG charts into `out`, and prints the main table.
///
/// # Errors
/// File write or chart rendering failures.
pub fn write_all(r: &Results, out: &Path) -> anyhow::Result<()> {
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(out.join("report.md"), markdown(r))?;
    let scenarios = scenario_names(r);
    let throughput: Vec<_> = scenarios
        .iter()
        .filter(|s| *s != "idle-10k")
        .cloned()
        .collect();
    bar_chart(
        r,
        &throughput,
        &out.join("throughput.svg"),
        "Throughput (median req/s)",
        "req/s",
        |m| Some(m.rps),
    )?;
    bar_chart(
        r,
        &throughput,
        &out.join("cpu_per_req.svg"),
        "Target CPU per request (median µs)",
        "µs/request",
        |m| m.cpu_us_per_req,
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
    for s in &throughput {
        latency_chart(r, s, &out.join(format!("latency_{s}.svg")))?;
    }
    println!("{}", terminal_table(r));
    Ok(())
}

fn scenario_names(r: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in &r.cells {
        if !v.contains(&c.scenario) {
            v.push(c.scenario.clone());
        }
    }
    v
}

fn target_names(r: &Results) -> Vec<String> {
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

fn med<'a>(r: &'a Results, scenario: &str, target: &str) -> Option<&'a Metrics> {
    cell(r, scenario, target).and_then(|c| c.median.as_ref())
}

fn f1(v: Option<f64>) -> String {
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
        "{:<12} {:<tw$} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7}",
        "scenario",
        "target",
        "req/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "cpu/req",
        "sys/req",
        "RSS MiB",
        "errors"
    );
    for c in &r.cells {
        match &c.median {
            Some(m) if c.scenario == "idle-10k" => {
                let _ = writeln!(
                    s,
                    "{:<12} {:<tw$} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9.1} {:>7}  RSS/conn {} B",
                    c.scenario,
                    c.target,
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
                    "{:<12} {:<tw$} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>8} {:>9.1} {:>7}",
                    c.scenario,
                    c.target,
                    m.rps,
                    m.p50_us,
                    m.p99_us,
                    m.p999_us,
                    f1(m.cpu_us_per_req),
                    f1(m.syscalls_per_req),
                    m.rss_kib.unwrap_or(0) as f64 / 1024.0,
                    m.errors
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{:<12} {:<tw$} {}: {}",
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

/// report.md: machine, method, per-scenario tables, ratios, notes.
pub fn markdown(r: &Results) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let _ = writeln!(s, "# ringway benchmark report\n");
    let _ = writeln!(
        s,
        "- date: {}\n- kernel: {}\n- CPU: {} ({} cores usable)\n- git revision: {}\n- target pinned to CPU {:?}; load generator + backends on CPU {:?} ({} load thread(s))\n- rounds: {} (interleaved, rotated order), {:.1} s measured after {:.1} s warm-up per run{}\n- syscalls counted with perf: {}\n- versions: {}\n",
        m.date,
        m.kernel,
        m.cpu_model,
        m.cores,
        m.git_revision.as_deref().unwrap_or("unknown"),
        m.target_cpus,
        m.client_cpus,
        m.load_threads,
        m.rounds,
        m.duration_s,
        m.warmup_s,
        if m.quick { " (quick mode)" } else { "" },
        if m.perf {
            "yes"
        } else {
            "no (perf unavailable)"
        },
        m.versions
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        s,
        "All values are medians over rounds. CPU/req and syscalls/req are the *target's* (its process tree), not the load generator's. `client cores` is the CPU the load generator and backends used: near the number of client CPUs means the client side, not the target, limited throughput.\n"
    );
    for sc in scenario_names(r) {
        let _ = writeln!(s, "## {sc}\n");
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
                "| target | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | CPU µs/req | syscalls/req | RSS MiB | errors | client cores |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
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
                        "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} | {} | {:.2} |",
                        c.target,
                        x.rps,
                        x.p50_us,
                        x.p90_us,
                        x.p99_us,
                        x.p999_us,
                        x.max_us,
                        f1(x.cpu_us_per_req),
                        f1(x.syscalls_per_req),
                        x.rss_kib.unwrap_or(0) as f64 / 1024.0,
                        x.errors,
                        x.client_cpu_cores
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
    let _ = writeln!(
        s,
        "## Ratios\n\nThroughput ratios (> 1: the first is faster) and CPU/request ratios (< 1: the first is cheaper).\n"
    );
    let _ = writeln!(
        s,
        "| scenario | uring/epoll req/s | uring/epoll CPU/req | ringway/nginx req/s | ringway/nginx CPU/req | ringway/direct req/s |\n|---|---:|---:|---:|---:|---:|"
    );
    for sc in scenario_names(r) {
        if sc == "idle-10k" {
            continue;
        }
        let g = |t: &str, f: &dyn Fn(&Metrics) -> Option<f64>| med(r, &sc, t).and_then(f);
        let rps = |m: &Metrics| Some(m.rps);
        let cpu = |m: &Metrics| m.cpu_us_per_req;
        let _ = writeln!(
            s,
            "| {sc} | {} | {} | {} | {} | {} |",
            ratio(g("ringway-uring", &rps), g("ringway-epoll", &rps)),
            ratio(g("ringway-uring", &cpu), g("ringway-epoll", &cpu)),
            ratio(g("ringway-uring", &rps), g("nginx", &rps)),
            ratio(g("ringway-uring", &cpu), g("nginx", &cpu)),
            ratio(g("ringway-uring", &rps), g("direct", &rps))
        );
    }
    let _ = writeln!(
        s,
        "\nringway/… ratios use `ringway-uring`. Charts: throughput.svg, cpu_per_req.svg, latency_<scenario>.svg, idle_rss_per_conn.svg. Raw rounds: results.json."
    );
    feature_effects(r, &mut s);
    s
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

/// Grouped bars: one group per scenario, one bar per target.
fn bar_chart(
    r: &Results,
    scenarios: &[String],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&Metrics) -> Option<f64>,
) -> anyhow::Result<()> {
    let targets = target_names(r);
    let ymax = scenarios
        .iter()
        .flat_map(|s| targets.iter().filter_map(|t| med(r, s, t).and_then(&value)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let n = scenarios.len().max(1);
    let root = SVGBackend::new(path, (160 * n as u32 + 240, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)?;
    let names = scenarios.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()?;
    let w = 0.8 / targets.len().max(1) as f64;
    for (j, t) in targets.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let bars: Vec<_> = scenarios
            .iter()
            .enumerate()
            .filter_map(|(i, s)| med(r, s, t).and_then(&value).map(|v| (i, v)))
            .map(|(i, v)| {
                let x0 = i as f64 - 0.4 + j as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v)], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(t.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency percentiles (p50, p90, p99, p99.9, max) of every target for one scenario, log scale.
fn latency_chart(r: &Results, scenario: &str, path: &Path) -> anyhow::Result<()> {
    let targets = target_names(r);
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let pts = |m: &Metrics| [m.p50_us, m.p90_us, m.p99_us, m.p999_us, m.max_us];
    let ymax = targets
        .iter()
        .filter_map(|t| med(r, scenario, t))
        .flat_map(pts)
        .fold(10.0f64, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Latency percentiles, {scenario} (median of rounds)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            -0.25f64..(labels.len() as f64 - 0.75),
            (1.0f64..ymax).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels
                    .get(i as usize)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs (log)")
        .draw()?;
    for (j, t) in targets.iter().enumerate() {
        let Some(m) = med(r, scenario, t) else {
            continue;
        };
        let color = Palette99::pick(j).to_rgba();
        let series: Vec<(f64, f64)> = pts(m)
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v.max(1.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
            .label(t.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        chart.draw_series(
            series
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Cell, Meta};

    fn cell(scenario: &str, target: &str, rps: f64, cpu: f64) -> Cell {
        Cell {
            scenario: scenario.into(),
            target: target.into(),
            status: "ok".into(),
            note: None,
            median: Some(Metrics {
                rps,
                cpu_us_per_req: Some(cpu),
                ..Metrics::default()
            }),
            rounds: Vec::new(),
        }
    }

    fn results(cells: Vec<Cell>) -> Results {
        Results {
            meta: Meta {
                kernel: "6.1".into(),
                cpu_model: "cpu".into(),
                cores: 2,
                date: "2025-01-01T00:00:00Z".into(),
                git_revision: None,
                quick: true,
                rounds: 1,
                duration_s: 1.0,
                warmup_s: 0.5,
                target_cpus: vec![1],
                client_cpus: vec![0],
                load_threads: 1,
                perf: false,
                versions: Default::default(),
                nofile: 1024,
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
}
