//! The "Over time" section: `timeseries.csv` columns grouped into charts by name, and
//! per-interval percentiles from the interval logs where the CSV has none.

use std::collections::BTreeMap;

use super::ReportError;
use super::kit::{figure, metric_title};
use super::load::{RunDir, Table};
use crate::report::hlog;
use crate::report::plot::{self, Series};

/// Chart a time-series column belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeriesGroup {
    Connected,
    /// Connects, attempts, disconnects per second.
    Churn,
    Publishes,
    Deliveries,
    /// Latency columns of one metric (`fanout`, `ack`, …), plotted in ms.
    Latency(String),
    Errors,
    /// The harness's own CPU and memory.
    Harness,
    Other,
}

impl SeriesGroup {
    fn title(&self) -> String {
        match self {
            SeriesGroup::Connected => "Connected peers".into(),
            SeriesGroup::Churn => "Connects and disconnects per second".into(),
            SeriesGroup::Publishes => "Publishes and sends per second".into(),
            SeriesGroup::Deliveries => "Deliveries per second".into(),
            SeriesGroup::Latency(m) => format!("{} per second", metric_title(m)),
            SeriesGroup::Errors => "Errors and closes per second".into(),
            SeriesGroup::Harness => "Harness resources".into(),
            SeriesGroup::Other => "Other counters per second".into(),
        }
    }
    fn y_label(&self) -> &'static str {
        match self {
            SeriesGroup::Connected => "peers",
            SeriesGroup::Latency(_) => "latency (ms)",
            SeriesGroup::Harness => "value",
            _ => "per second",
        }
    }
}

/// Groups a `timeseries.csv` column by its name, first match wins: latency (`fanout_p99_us`
/// is a latency, not a delivery count), errors (`connect_failures` is an error, not a
/// connect), harness resources, connected peers (a level), connection churn, publishes,
/// deliveries, other.
pub fn group_of(column: &str) -> SeriesGroup {
    let c = column.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| c.contains(w));
    let is_pct = c.split(|ch: char| !ch.is_ascii_alphanumeric()).any(|tok| {
        tok.len() >= 2 && tok.starts_with('p') && tok[1..].chars().all(|d| d.is_ascii_digit())
    });
    if is_pct || c.ends_with("_us") || c.ends_with("_ms") || has(&["latency", "lag"]) {
        let metric = [
            "fanout", "fan_out", "ack", "connect", "presence", "direct", "lag",
        ]
        .iter()
        .find(|m| c.contains(*m))
        .map(|m| match *m {
            "fan_out" => "fanout".to_string(),
            "lag" => "schedule_lag".to_string(),
            m => m.to_string(),
        })
        .unwrap_or_else(|| "other".to_string());
        return SeriesGroup::Latency(metric);
    }
    if has(&[
        "error",
        "close",
        "reject",
        "fail",
        "timeout",
        "refus",
        "drop",
        "unexpected",
    ]) {
        SeriesGroup::Errors
    } else if has(&["cpu", "rss", "memory"]) {
        SeriesGroup::Harness
    } else if c == "connected"
        || has(&[
            "peers",
            "connections",
            "online",
            "subscribed",
            "members",
            "open_conn",
        ])
    {
        SeriesGroup::Connected
    } else if has(&["connect"]) {
        SeriesGroup::Churn
    } else if has(&["publish", "sent", "send", "pub"]) {
        SeriesGroup::Publishes
    } else if has(&["deliver", "recv", "received", "fanout", "messages"]) {
        SeriesGroup::Deliveries
    } else {
        SeriesGroup::Other
    }
}

/// Index of the time column: a column named like t, time, second, elapsed.
fn time_column(headers: &[String]) -> Option<usize> {
    headers.iter().position(|h| {
        let h = h.to_ascii_lowercase();
        matches!(
            h.as_str(),
            "t" | "t_s"
                | "time"
                | "time_s"
                | "ts"
                | "sec"
                | "second"
                | "seconds"
                | "elapsed"
                | "elapsed_s"
                | "offset_s"
                | "timestamp"
                | "unix_s"
                | "epoch_s"
        ) || h.starts_with("elapsed")
    })
}

/// Numeric columns of the time-series table as series against seconds since start.
pub fn timeseries_series(t: &Table) -> Vec<(String, Vec<(f64, f64)>)> {
    let tcol = time_column(&t.headers);
    let xs: Vec<f64> = t
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tcol.and_then(|c| r.get(c))
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or((i + 1) as f64)
        })
        .collect();
    // Epoch stamps become offsets so the axis reads "seconds since start".
    let x0 = xs.first().copied().filter(|x| *x > 1e8).unwrap_or(0.0);
    let mut out = Vec::new();
    for (c, name) in t.headers.iter().enumerate() {
        if Some(c) == tcol {
            continue;
        }
        let cells: Vec<Option<&String>> = t.rows.iter().map(|r| r.get(c)).collect();
        let parsed: Vec<Option<f64>> = cells
            .iter()
            .map(|cell| {
                cell.filter(|s| !s.is_empty())
                    .map(|s| s.parse::<f64>().ok())
                    .unwrap_or(Some(f64::NAN))
            })
            .collect();
        if parsed.iter().any(Option::is_none) || parsed.iter().all(|v| v.is_none_or(|x| x.is_nan()))
        {
            continue; // not a numeric column
        }
        let points = xs
            .iter()
            .zip(parsed)
            .map(|(x, y)| (x - x0, y.unwrap_or(f64::NAN)))
            .collect();
        out.push((name.clone(), points));
    }
    out
}

pub(super) fn timeseries_section(run: &RunDir) -> Result<String, ReportError> {
    let mut b = String::from("<h2>Over time</h2>\n");
    let mut groups: BTreeMap<SeriesGroup, Vec<Series>> = BTreeMap::new();
    match &run.timeseries {
        Some(t) => {
            for (name, points) in timeseries_series(t) {
                let group = group_of(&name);
                let lower = name.to_ascii_lowercase();
                // Latency columns are plotted in ms whatever unit the column carries.
                let points = if matches!(group, SeriesGroup::Latency(_)) {
                    let div = if lower.ends_with("_ms") {
                        1.0
                    } else if lower.ends_with("_s") {
                        0.001
                    } else {
                        1000.0
                    };
                    points.into_iter().map(|(x, y)| (x, y / div)).collect()
                } else {
                    points
                };
                groups
                    .entry(group)
                    .or_default()
                    .push(Series { name, points });
            }
        }
        None => b.push_str("<div class=\"note\">No timeseries.csv in the run directory.</div>\n"),
    }
    // Per-interval percentiles from the logs when the CSV has no latency column for the metric.
    for (m, log) in &run.hlogs {
        let key = SeriesGroup::Latency(m.clone());
        if groups.contains_key(&key)
            || log.intervals.len() < 2
            || !matches!(
                m.as_str(),
                "fanout" | "ack" | "negotiation" | "mesh_ready" | "renegotiation"
            )
        {
            continue;
        }
        let iv = &log.intervals;
        let end = |d: &hlog::IntervalDigest| d.start_s + d.duration_s;
        groups.insert(
            key,
            vec![
                Series {
                    name: format!("{m} p50 (from .hlog)"),
                    points: iv
                        .iter()
                        .filter(|d| d.count > 0)
                        .map(|d| (end(d), d.p50 as f64 / 1000.0))
                        .collect(),
                },
                Series {
                    name: format!("{m} p99 (from .hlog)"),
                    points: iv
                        .iter()
                        .filter(|d| d.count > 0)
                        .map(|d| (end(d), d.p99 as f64 / 1000.0))
                        .collect(),
                },
            ],
        );
    }
    b.push_str("<div class=\"charts\">\n");
    for (group, series) in &groups {
        let title = group.title();
        let svg = plot::timeseries_svg(&title, group.y_label(), series)?;
        let from_hlog = series.iter().any(|s| s.name.contains("(from .hlog)"));
        let mut caption = if from_hlog {
            "Percentiles of each interval of the .hlog (timeseries.csv has no latency column for this metric).".to_string()
        } else {
            format!(
                "timeseries.csv columns {}, one point per row.",
                series
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if matches!(group, SeriesGroup::Latency(_)) {
            caption.push_str(" A spike the whole-run distribution hides shows when it happened.");
        }
        b.push_str(&figure(&svg, series, &caption));
    }
    b.push_str("</div>\n");
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_columns_by_name() {
        assert_eq!(
            group_of("fanout_p99_us"),
            SeriesGroup::Latency("fanout".into())
        );
        assert_eq!(
            group_of("p50_fanout_us"),
            SeriesGroup::Latency("fanout".into())
        );
        assert_eq!(group_of("connect_errors"), SeriesGroup::Errors);
        assert_eq!(group_of("closes_4011"), SeriesGroup::Errors);
        assert_eq!(group_of("connected"), SeriesGroup::Connected);
        assert_eq!(group_of("publishes_per_s"), SeriesGroup::Publishes);
        assert_eq!(group_of("deliveries"), SeriesGroup::Deliveries);
        assert_eq!(group_of("acks"), SeriesGroup::Other);
        // The load engine's columns (src/report/files.rs TimeseriesRow).
        assert_eq!(group_of("connect_attempts"), SeriesGroup::Churn);
        assert_eq!(group_of("disconnects"), SeriesGroup::Churn);
        assert_eq!(group_of("connect_failures"), SeriesGroup::Errors);
        assert_eq!(group_of("unexpected_frames"), SeriesGroup::Errors);
        assert_eq!(group_of("directs_sent"), SeriesGroup::Publishes);
        assert_eq!(group_of("directs_received"), SeriesGroup::Deliveries);
        assert_eq!(
            group_of("fanout_max_us"),
            SeriesGroup::Latency("fanout".into())
        );
        assert_eq!(
            group_of("schedule_lag_p99_us"),
            SeriesGroup::Latency("schedule_lag".into())
        );
        assert_eq!(group_of("harness_cpu_percent"), SeriesGroup::Harness);
    }
}
