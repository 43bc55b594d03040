//! SVG charts for the HTML reports, drawn with plotters' SVG backend (no font libraries: text is
//! left to the browser, so sizes here are estimates and the charts keep generous margins).
//!
//! Two kinds: an HdrHistogram-style percentile distribution (x is `1/(1-p)` on a log scale, so
//! the tail up to 99.999% gets as much room as the median) and a per-second time series.
//! Both take already-converted series and return a standalone `<svg>` string.

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Chart size: two side by side fit a 1280-px laptop screen at their native size, so the
/// browser never scales the text down. Legends live in the HTML under each chart (they never
/// hide a line and can carry more text).
pub const SIZE: (u32, u32) = (600, 340);

/// Decades shown on the percentile axis: 10^5 = 1/(1-0.99999).
const PERCENTILE_DECADES: f64 = 5.0;

/// Series colours: Tableau 10, distinct for the common kinds of colour blindness.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`-th series, also used by the HTML tables to match legends.
pub fn color_hex(i: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart `{title}`: {message}")]
pub struct PlotError {
    pub title: String,
    pub message: String,
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y) pairs; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// Position on the percentile axis of quantile `q` (0 ≤ q < 1): log10(1/(1-q)).
pub fn percentile_x(q: f64) -> f64 {
    (1.0 / (1.0 - q.clamp(0.0, 0.999_999_9))).log10()
}

/// Samples a histogram's percentile distribution for [`percentile_svg`], dividing values by
/// `divisor` (1000 turns µs into ms). The curve stops where the samples run out: with n samples
/// nothing is known past quantile 1 - 1/n, so the last point there is the maximum.
pub fn percentile_points(h: &Histogram<u64>, divisor: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let last_x = (h.len() as f64).log10().clamp(0.0, PERCENTILE_DECADES);
    const STEPS: usize = 400;
    let mut points = Vec::with_capacity(STEPS + 2);
    for i in 0..=STEPS {
        let x = PERCENTILE_DECADES * i as f64 / STEPS as f64;
        if x >= last_x {
            break;
        }
        let q = 1.0 - 10f64.powf(-x);
        points.push((x, h.value_at_quantile(q) as f64 / divisor));
    }
    points.push((last_x, h.max() as f64 / divisor));
    points
}

/// Label of a percentile-axis position: 0 → "0%", 2 → "99%", 5 → "99.999%".
pub fn percentile_label(x: f64) -> String {
    let nines = x.round() as i32;
    if (x - f64::from(nines)).abs() > 1e-6 {
        return format!("{:.4}%", 100.0 * (1.0 - 10f64.powf(-x)));
    }
    match nines {
        i32::MIN..=0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
    }
}

/// An HdrHistogram-style percentile distribution: one line per series, x from 0% to 99.999%
/// on a log `1/(1-p)` scale, y in `y_unit`. Series points come from [`percentile_points`].
pub fn percentile_svg(title: &str, y_unit: &str, series: &[Series]) -> Result<String, PlotError> {
    let y_max = y_upper(series);
    draw(title, series, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .margin_right(40)
            .x_label_area_size(50)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..PERCENTILE_DECADES, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc(format!("latency ({y_unit})"))
            // One tick per decade: 0%, 90%, 99%, … 99.999%.
            .x_labels(PERCENTILE_DECADES as usize + 1)
            .y_labels(7)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| short_number(*y))
            .label_style(("sans-serif", 17))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(finite(&s.points), color.stroke_width(2)))?;
        }
        Ok(())
    })
}

/// A time series: x in seconds since the run began, one line per series, y in `y_label`.
pub fn timeseries_svg(title: &str, y_label: &str, series: &[Series]) -> Result<String, PlotError> {
    xy_svg(title, "time since start (s)", y_label, series)
}

/// Lines over a linear x axis named `x_label` (time, load levels).
pub fn xy_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<String, PlotError> {
    let (mut x_min, mut x_max) = series
        .iter()
        .flat_map(|s| finite(&s.points))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
            (lo.min(x), hi.max(x))
        });
    if !x_min.is_finite() {
        (x_min, x_max) = (0.0, 1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_max = y_upper(series);
    let y_min = series
        .iter()
        .flat_map(|s| finite(&s.points))
        .map(|(_, y)| y)
        .fold(0f64, f64::min);
    draw(title, series, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .margin_right(40)
            .x_label_area_size(50)
            .y_label_area_size(72)
            .build_cartesian_2d(x_min..x_max, y_min..y_max)?;
        let series: Vec<Series> = series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: decimate(&finite(&s.points), MAX_LINE_POINTS),
            })
            .collect();
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(10)
            .y_labels(7)
            .x_label_formatter(&|x| short_number(*x))
            .y_label_formatter(&|y| short_number(*y))
            .label_style(("sans-serif", 17))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(finite(&s.points), color.stroke_width(2)))?;
        }
        Ok(())
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(
    title: &str,
    series: &[Series],
    body: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.into())
            .and_then(|()| body(&root))
            .and_then(|()| root.present().map_err(|e| e.into()))
    };
    result.map_err(|e| PlotError {
        title: title.to_string(),
        message: format!("{e} ({} series)", series.len()),
    })?;
    Ok(svg)
}

/// Most points one time-series line draws; longer series keep each bucket's lowest and
/// highest point, so a one-second spike in an hour-long soak still shows.
const MAX_LINE_POINTS: usize = 1200;

/// Reduces a line to at most about `max` points, keeping the extremes of each bucket in x order.
pub fn decimate(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let buckets = max / 2;
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for chunk in points.chunks(size) {
        let lo = chunk.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        let hi = chunk.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo.0 <= hi.0 {
                out.push(lo);
                out.push(hi);
            } else {
                out.push(hi);
                out.push(lo);
            }
        }
    }
    out
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Top of the y axis: the largest point plus a little air, or 1 for an empty chart.
fn y_upper(series: &[Series]) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| finite(&s.points))
        .map(|(_, y)| y)
        .fold(0f64, f64::max);
    if max > 0.0 { max * 1.08 } else { 1.0 }
}

/// Axis tick text: integers without decimals, small numbers with a few, thousands as `12k`.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || (v.fract() == 0.0) {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        let labels: Vec<String> = (0..=5).map(|i| percentile_label(i as f64)).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        assert!((percentile_x(0.999) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn percentile_points_end_at_max() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let pts = percentile_points(&h, 1000.0);
        let (x, y) = *pts.last().unwrap();
        assert!((x - 3.0).abs() < 1e-9);
        assert!((y - 1000.0).abs() < 1.0, "{y}");
        assert!(pts.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(percentile_points(&Histogram::<u64>::new(3).unwrap(), 1.0).is_empty());
    }

    #[test]
    fn decimation_keeps_spikes_and_order() {
        let mut pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[7_777].1 = 500.0;
        let d = decimate(&pts, 1200);
        assert!(d.len() <= 1200);
        assert!(d.contains(&(7_777.0, 500.0)));
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(decimate(&pts[..10], 1200).len(), 10);
    }

    #[test]
    fn charts_are_svg_with_labels() {
        let s = vec![
            Series {
                name: "base".into(),
                points: vec![(0.0, 1.0), (2.0, 3.0)],
            },
            Series {
                name: "new".into(),
                points: vec![(0.0, 1.5), (2.0, f64::NAN)],
            },
        ];
        let svg = percentile_svg("fan-out", "ms", &s).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("99.999%") && svg.contains("fan-out"));
        let svg = timeseries_svg("deliveries", "per second", &s).unwrap();
        assert!(svg.contains("time since start (s)"));
        let empty = timeseries_svg("nothing", "per second", &[]).unwrap();
        assert!(empty.contains("nothing"));
    }
}
