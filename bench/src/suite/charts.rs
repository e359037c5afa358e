//! SVG charts (plotters) over [`Results`]: grouped bars per scenario, latency percentiles per
//! scenario, and the open-loop latency at each load.

use std::path::Path;

use plotters::prelude::*;

use super::report::{med, target_names};
use super::{Metrics, Results};

/// Grouped bars: one group per scenario, one bar per target.
pub fn bar_chart(
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
pub fn latency_chart(r: &Results, scenario: &str, path: &Path) -> anyhow::Result<()> {
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
