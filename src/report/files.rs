//! The run directory: writing it at the end of a run and reading it back.
//!
//! - `summary.json`: [`Summary`](super::Summary);
//! - `timeseries.csv`: one [`TimeseriesRow`] per second;
//! - `<metric>.hlog`: HdrHistogram interval logs (one interval per second, V2 + DEFLATE,
//!   the format of Java's HistogramLogProcessor; values in µs);
//! - `percentiles-<metric>.csv`: the percentile distribution of the whole run;
//! - `scenario.toml`: the scenario as it ran, flags folded in.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use serde::{Deserialize, Serialize};

use super::{Files, RunData, Summary};
use crate::metrics::{Hist, Metric};

/// One line of `timeseries.csv`. Counts are events within that second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeseriesRow {
    /// Seconds since the start of the run.
    pub second: u32,
    /// `ramp`, `hold` or `drain`.
    pub phase: String,
    pub connected: i64,
    pub connect_attempts: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub publishes: u64,
    pub deliveries: u64,
    pub directs_sent: u64,
    pub directs_received: u64,
    pub presence_events: u64,
    pub acks: u64,
    pub errors: u64,
    pub closes: u64,
    pub unexpected_frames: u64,
    pub fanout_p50_us: u64,
    pub fanout_p99_us: u64,
    pub fanout_max_us: u64,
    pub ack_p99_us: u64,
    pub presence_p99_us: u64,
    pub schedule_lag_p99_us: u64,
    pub harness_cpu_percent: f64,
    pub machine_cpu_percent: f64,
}

/// A run directory read back.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
    pub summary: Summary,
    pub timeseries: Vec<TimeseriesRow>,
    /// Whole-run histogram of each metric, merged from its interval log.
    pub hists: BTreeMap<String, Hist>,
    /// Per-second histograms of each metric: (second, histogram).
    pub intervals: BTreeMap<String, Vec<(f64, Hist)>>,
    pub scenario_toml: String,
}

fn phase_of(run: &RunData, second: u32, ramp_s: f64) -> &'static str {
    let t = second as f64;
    if t >= run.ran_s {
        "drain"
    } else if t < ramp_s {
        "ramp"
    } else {
        "hold"
    }
}

/// Writes every file of the run into `dir` (created if needed) and fills
/// `summary.files`; `summary.json` is written last.
pub fn write_run_dir(
    dir: &Path,
    run: &RunData,
    summary: &mut Summary,
    ramp_s: f64,
) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create report directory {}", dir.display()))?;
    let mut files = Files {
        timeseries: "timeseries.csv".into(),
        scenario: "scenario.toml".into(),
        ..Files::default()
    };
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    write(&files.scenario, run.scenario_toml.as_bytes())?;

    // timeseries.csv
    let mut w = csv::Writer::from_writer(Vec::new());
    for iv in &run.intervals {
        let f = iv.stats(Metric::Fanout);
        w.serialize(TimeseriesRow {
            second: iv.second,
            phase: phase_of(run, iv.second, ramp_s).into(),
            connected: iv.connected,
            connect_attempts: iv.counts.connect_attempts,
            connects: iv.counts.connects,
            connect_failures: iv.counts.connect_failures,
            disconnects: iv.counts.disconnects,
            publishes: iv.counts.publishes,
            deliveries: iv.counts.deliveries,
            directs_sent: iv.counts.directs_sent,
            directs_received: iv.counts.directs_received,
            presence_events: iv.counts.presence_events,
            acks: iv.counts.acks,
            errors: iv.counts.errors,
            closes: iv.counts.closes,
            unexpected_frames: iv.counts.unexpected_frames,
            fanout_p50_us: f.p50,
            fanout_p99_us: f.p99,
            fanout_max_us: f.max,
            ack_p99_us: iv.stats(Metric::Ack).p99,
            presence_p99_us: iv.stats(Metric::Presence).p99,
            schedule_lag_p99_us: iv.stats(Metric::ScheduleLag).p99,
            harness_cpu_percent: iv.harness_cpu_percent,
            machine_cpu_percent: iv.machine_cpu_percent,
        })?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot render timeseries.csv: {e}"))?;
    write(&files.timeseries, &bytes)?;

    // Interval logs and percentile tables, for metrics that have samples.
    let start = UNIX_EPOCH + Duration::from_micros(run.started_at_us);
    for m in Metric::ALL {
        let total = run.hist(m);
        if total.0.is_empty() {
            continue;
        }
        let mut buf = Vec::new();
        {
            let mut ser = V2DeflateSerializer::new();
            let mut log = IntervalLogWriterBuilder::new()
                .add_comment(&format!(
                    "stampede {} latency of scenario {}, values in microseconds",
                    m.name(),
                    run.scenario
                ))
                .with_start_time(start)
                .with_base_time(start)
                .with_max_value_divisor(1000.0)
                .begin_log_with(&mut buf, &mut ser)
                .context("cannot start an interval log")?;
            for iv in &run.intervals {
                if let Some(h) = iv.hist(m) {
                    log.write_histogram(
                        &h.0,
                        Duration::from_secs(iv.second as u64),
                        Duration::from_secs(1),
                        Tag::new(m.name()),
                    )
                    .map_err(|e| anyhow::anyhow!("cannot write {}.hlog: {e:?}", m.name()))?;
                }
            }
        }
        let name = format!("{}.hlog", m.name());
        write(&name, &buf)?;
        files.hlog.push(name);

        let mut out = String::from("percentile,value_us,count,inverted\n");
        for v in total.0.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let inverted = if q < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - q))
            } else {
                "inf".into()
            };
            out.push_str(&format!(
                "{:.6},{},{},{}\n",
                q * 100.0,
                v.value_iterated_to(),
                v.count_since_last_iteration(),
                inverted
            ));
        }
        let name = format!("percentiles-{}.csv", m.name());
        write(&name, out.as_bytes())?;
        files.percentiles.push(name);
    }

    summary.files = files;
    write_summary(dir, summary)
}

/// Writes `dir/summary.json` alone (creating `dir`): what an urgent stop leaves behind.
pub fn write_summary(dir: &Path, summary: &Summary) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create report directory {}", dir.display()))?;
    let mut json = serde_json::to_vec_pretty(summary)?;
    json.push(b'\n');
    let path = dir.join("summary.json");
    let mut f =
        fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(&json)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads a run directory written by [`write_run_dir`].
pub fn read_run_dir(dir: &Path) -> anyhow::Result<RunDir> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let summary: Summary = serde_json::from_slice(&read("summary.json")?)
        .with_context(|| format!("{}/summary.json is not a stampede summary", dir.display()))?;
    let mut timeseries = Vec::new();
    let ts = read(&summary.files.timeseries)?;
    for row in csv::Reader::from_reader(ts.as_slice()).deserialize() {
        timeseries.push(row.with_context(|| {
            format!(
                "{}/{} has a bad row",
                dir.display(),
                summary.files.timeseries
            )
        })?);
    }
    let mut hists = BTreeMap::new();
    let mut intervals = BTreeMap::new();
    for name in &summary.files.hlog {
        let bytes = read(name)?;
        let metric = name.trim_end_matches(".hlog").to_owned();
        let mut total = Hist::default();
        let mut per_second = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            let entry = entry.map_err(|e| anyhow::anyhow!("{name}: bad interval log: {e:?}"))?;
            if let LogEntry::Interval(iv) = entry {
                let h = Hist::from_base64(iv.encoded_histogram())
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                total.add(&h.0);
                per_second.push((iv.start_timestamp().as_secs_f64(), h));
            }
        }
        hists.insert(metric.clone(), total);
        intervals.insert(metric, per_second);
    }
    let scenario_toml = String::from_utf8_lossy(&read(&summary.files.scenario)?).into_owned();
    Ok(RunDir {
        dir: dir.to_owned(),
        summary,
        timeseries,
        hists,
        intervals,
        scenario_toml,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collector::Interval;

    #[test]
    fn a_run_dir_reads_back_what_was_written() {
        let mut run = RunData {
            scenario: "t".into(),
            scenario_toml: "name = \"t\"\n".into(),
            started_at_us: 1_767_225_600_000_000,
            ran_s: 2.0,
            ..Default::default()
        };
        let mut total = Hist::default();
        for s in 0..3u32 {
            let mut h = Hist::default();
            for v in 0..100u64 {
                h.0.record(100 + v * (s as u64 + 1)).unwrap();
            }
            total.add(&h.0);
            let mut iv = Interval {
                second: s,
                connected: 10,
                ..Default::default()
            };
            iv.counts.deliveries = 100;
            iv.hists.insert("fanout".into(), h.to_base64());
            run.intervals.push(iv);
        }
        run.hists.insert("fanout".into(), total.clone());
        let mut summary = Summary::from_run(&run);
        let dir = tempfile::tempdir().unwrap();
        write_run_dir(dir.path(), &run, &mut summary, 1.0).unwrap();
        let back = read_run_dir(dir.path()).unwrap();
        assert_eq!(back.summary, summary);
        assert_eq!(back.summary.files.hlog, vec!["fanout.hlog"]);
        assert_eq!(back.timeseries.len(), 3);
        assert_eq!(back.timeseries[0].phase, "ramp");
        assert_eq!(back.timeseries[2].phase, "drain");
        assert_eq!(back.timeseries[1].deliveries, 100);
        assert_eq!(back.hists["fanout"], total);
        assert_eq!(back.intervals["fanout"].len(), 3);
        let pct = fs::read_to_string(dir.path().join("percentiles-fanout.csv")).unwrap();
        assert!(pct.starts_with("percentile,value_us,count,inverted\n"));
        assert!(pct.lines().count() > 10);
    }
}
