//! One trial of one level: a `stampede run` of its own (so `--workers`, TLS and every
//! target flag work as for a run), judged on its steady window: the seconds after the
//! warm-up and before the drain, never the whole run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{Z95, quantile_interval};
use super::search::Trial;
use crate::load::thresholds;
use crate::metrics::{Hist, Stats};
use crate::report::files::{RunDir, read_run_dir};

/// What a trial measured and how it was judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub level: f64,
    /// 1-based trial number at this level.
    pub trial: u32,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Each SLO rule with its value on the steady window (`null` when not measured).
    pub slos: Vec<SloValue>,
    /// Offered and achieved rates on the steady window.
    pub publishes_per_s: f64,
    pub deliveries_per_s: f64,
    /// Seconds judged (after the warm-up, before the drain).
    pub steady_s: f64,
    /// Why the generator was the bottleneck, for inconclusive trials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The trial's report directory.
    pub dir: PathBuf,
}

/// One SLO on one trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SloValue {
    pub rule: String,
    pub passed: bool,
    pub actual: Option<f64>,
    /// `actual` (and the interval) are µs.
    #[serde(default)]
    pub micros: bool,
    /// A 95 % confidence interval of the percentile, for latency percentile rules (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<(u64, u64)>,
}

impl TrialResult {
    pub fn trial(&self) -> Trial {
        match self.verdict.as_str() {
            "pass" => Trial::Pass,
            "fail" => Trial::Fail,
            _ => Trial::Inconclusive,
        }
    }
}

/// Runs one trial: `args` is the `stampede run` command line without `--out`.
pub async fn run(
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    limit: Duration,
) -> anyhow::Result<RunDir> {
    let exe = std::env::current_exe().context("cannot find this program to run levels")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .arg("--out")
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().context("cannot start a level's run")?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("a level's run did not finish within {} s", limit.as_secs()))?
        .context("a level's run failed")?;
    // 0 and 1 are verdicts of the run's own thresholds and checks, judged again below on
    // the steady window; 2 means it could not run at all.
    if !matches!(out.status.code(), Some(0) | Some(1)) {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "the run for {} could not run ({}): {}",
            dir.display(),
            out.status,
            err.trim()
        );
    }
    read_run_dir(dir)
}

/// Judges a finished trial on its steady window: seconds in [warmup, end of publishing).
pub fn judge(
    run: &RunDir,
    level: f64,
    trial: u32,
    slos: &[String],
    warmup: Duration,
) -> TrialResult {
    let s = &run.summary;
    let from = warmup.as_secs_f64();
    let to = s.duration_s;
    let in_window = |t: f64| t >= from && t < to;
    let mut steady: BTreeMap<String, Hist> = BTreeMap::new();
    for (metric, seconds) in &run.intervals {
        let mut h = Hist::default();
        for (_, iv) in seconds.iter().filter(|(t, _)| in_window(*t)) {
            h.add(&iv.0);
        }
        steady.insert(metric.clone(), h);
    }
    let rows: Vec<_> = run
        .timeseries
        .iter()
        .filter(|r| in_window(r.second as f64))
        .collect();
    let steady_s = rows.len() as f64;
    let per_s = |f: fn(&crate::report::files::TimeseriesRow) -> u64| {
        if steady_s > 0.0 {
            rows.iter().map(|r| f(r)).sum::<u64>() as f64 / steady_s
        } else {
            0.0
        }
    };
    let publishes_per_s = per_s(|r| r.publishes);
    let deliveries_per_s = per_s(|r| r.deliveries);

    // The summary with its latencies and rates replaced by the steady window's, so SLO
    // rules read exactly as thresholds do.
    let mut json = serde_json::to_value(s).unwrap_or(Value::Null);
    for (metric, h) in &steady {
        if let Some(lat) = json.get_mut("latency").and_then(Value::as_object_mut) {
            let key = format!("{metric}_us");
            if lat.contains_key(&key) {
                lat.insert(
                    key,
                    serde_json::to_value(Stats::of(&h.0)).unwrap_or_default(),
                );
            }
        }
        if metric == "schedule_lag" {
            json["schedule_lag_us"] = serde_json::to_value(Stats::of(&h.0)).unwrap_or_default();
        }
    }
    json["throughput"]["publishes_per_s"] = publishes_per_s.into();
    json["throughput"]["deliveries_per_s"] = deliveries_per_s.into();

    let results = thresholds::evaluate(slos, &json);
    let slo_values: Vec<SloValue> = results
        .iter()
        .map(|r| SloValue {
            rule: r.rule.clone(),
            // A latency with no sample in the window says nothing held: it fails.
            passed: r.passed && !(r.unit == "us" && samples(&r.rule, &steady) == Some(0)),
            actual: r.actual,
            micros: r.unit == "us",
            ci95: percentile_ci(&r.rule, &steady),
        })
        .collect();
    let (verdict, reasons) = if !s.valid && beyond_lag(slos, &json, &steady) {
        (
            "fail",
            vec![format!(
                "the generator lagged ({}), but a latency SLO fails by more than the lag explains",
                s.invalid_reasons.join("; ")
            )],
        )
    } else if !s.valid {
        ("inconclusive", s.invalid_reasons.clone())
    } else if steady_s < 1.0 {
        (
            "inconclusive",
            vec![format!(
                "no steady window: the run lasted {to:.1} s and the warm-up is {from:.1} s"
            )],
        )
    } else if slo_values.iter().all(|v| v.passed) {
        ("pass", Vec::new())
    } else {
        ("fail", Vec::new())
    };
    TrialResult {
        level,
        trial,
        verdict: verdict.into(),
        slos: slo_values,
        publishes_per_s,
        deliveries_per_s,
        steady_s,
        reasons,
        dir: run.dir.clone(),
    }
}

/// Whether a latency SLO still fails with every latency figure lowered by the generator's
/// own send lag (p99 over the window): fan-out is timed from the intended send, so a late
/// generator adds at most that much. Then the server broke the SLO whatever the generator
/// did, and the level fails rather than being inconclusive. Counts (lost copies) stay
/// inconclusive: a starved generator that reads too slowly gets closed for it.
fn beyond_lag(slos: &[String], json: &Value, steady: &BTreeMap<String, Hist>) -> bool {
    let Some(lag) = steady.get("schedule_lag").map(|h| Stats::of(&h.0).p99) else {
        return false;
    };
    let mut lowered = json.clone();
    if let Some(lat) = lowered.get_mut("latency").and_then(Value::as_object_mut) {
        for stats in lat.values_mut().filter_map(Value::as_object_mut) {
            for (k, v) in stats.iter_mut() {
                if k != "count"
                    && let Some(x) = v.as_f64()
                {
                    *v = (x - lag as f64).max(0.0).into();
                }
            }
        }
    }
    thresholds::evaluate(slos, &lowered)
        .iter()
        .any(|r| r.unit == "us" && !r.passed)
}

/// How many samples the latency a rule reads has in the window (`None`: not a latency
/// the window has).
fn samples(rule: &str, steady: &BTreeMap<String, Hist>) -> Option<u64> {
    let metric = rule.split(['<', '>', '=', '!']).next()?.trim();
    let (name, _) = metric.rsplit_once('.')?;
    let name = name.trim_start_matches("latency.").trim_end_matches("_us");
    Some(steady.get(name).map_or(0, |h| h.0.len()))
}

/// For `METRIC.pNN…` rules on a latency: the 95 % interval of that percentile.
fn percentile_ci(rule: &str, steady: &BTreeMap<String, Hist>) -> Option<(u64, u64)> {
    let metric = rule.split(['<', '>', '=', '!']).next()?.trim();
    let (name, stat) = metric.rsplit_once('.')?;
    let name = name.trim_start_matches("latency.").trim_end_matches("_us");
    let q = match stat {
        "p50" => 0.5,
        "p90" => 0.9,
        "p99" => 0.99,
        "p999" | "p99.9" => 0.999,
        _ => return None,
    };
    steady
        .get(name)
        .and_then(|h| quantile_interval(&h.0, q, Z95))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_rules_get_an_interval() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.0.record(v).unwrap();
        }
        let steady = BTreeMap::from([("fanout".to_owned(), h)]);
        let (lo, hi) = percentile_ci("fanout.p99<50ms", &steady).unwrap();
        assert!(lo <= 990 && hi >= 990, "[{lo}, {hi}]");
        assert!(percentile_ci("latency.fanout_us.p99 < 50ms", &steady).is_some());
        assert!(percentile_ci("delivery.lost==0", &steady).is_none());
        assert!(percentile_ci("ack.p99<5ms", &steady).is_none());
        assert_eq!(samples("fanout.p99<50ms", &steady), Some(1000));
        assert_eq!(samples("ack.p99<5ms", &steady), Some(0));
    }

    fn lag(us: u64) -> BTreeMap<String, Hist> {
        let mut h = Hist::default();
        h.0.record_n(us, 100).unwrap();
        BTreeMap::from([("schedule_lag".to_string(), h)])
    }

    #[test]
    fn a_breach_far_beyond_the_generators_lag_is_the_servers() {
        let slos = vec!["fanout.p99<50ms".to_string()];
        let summary =
            |p99: u64| serde_json::json!({"latency": {"fanout_us": {"count": 9, "p99": p99}}});
        // 7.4 s of fan-out with 37 ms of send lag: the server failed.
        assert!(beyond_lag(&slos, &summary(7_434_239), &lag(37_000)));
        // 60 ms with 37 ms of lag: the lag could explain it.
        assert!(!beyond_lag(&slos, &summary(60_000), &lag(37_000)));
        // Counts are never excused this way.
        let lost = vec!["delivery.lost==0".to_string()];
        assert!(!beyond_lag(
            &lost,
            &serde_json::json!({"delivery": {"lost": 5}}),
            &lag(37_000)
        ));
    }
}
