//! Reads HdrHistogram interval logs (`*.hlog`, the Java `HistogramLogProcessor` format) back
//! into one merged histogram per tag, plus a small per-interval digest for time series.
//!
//! The load engine writes these logs with `IntervalLogWriter` + `V2DeflateSerializer`; this
//! module only reads them, so it imports nothing of the engine. The merged histogram is exact
//! (`Histogram::add` of same-configured histograms loses nothing), which is why the report plots
//! from the logs rather than from the few percentiles kept in `summary.json`.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry, LogIteratorError};

/// Why an interval log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse interval log {} at line {line}: not a `#` comment, a legend or a `Tag=…,start,length,max,BASE64` line", path.display())]
    Parse { path: PathBuf, line: usize },
    #[error("cannot decode the histogram of interval log {} line {line}: {message}", path.display())]
    Decode {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot merge histogram of interval log {} line {line} into tag `{tag}`: {message}", path.display())]
    Merge {
        path: PathBuf,
        line: usize,
        tag: String,
        message: String,
    },
}

/// A digest of one interval, enough to draw a per-second percentile line.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalDigest {
    /// Start of the interval in seconds since the earliest interval of the run directory.
    pub start_s: f64,
    pub duration_s: f64,
    pub count: u64,
    /// Values in the log's unit (µs for stampede).
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Every interval of one tag, merged.
#[derive(Debug, Clone)]
pub struct TagLog {
    /// Canonical metric name (see [`canonical_metric`]), e.g. `fanout`.
    pub metric: String,
    /// The exact merge of every interval of this tag.
    pub total: Histogram<u64>,
    /// One digest per interval line, in start order.
    pub intervals: Vec<IntervalDigest>,
    /// The files the intervals came from.
    pub files: Vec<PathBuf>,
}

/// Maps a tag or a summary key to the metric name the report uses:
/// lower case, without a `_us` unit suffix or a `latency.` prefix (`fanout_us` → `fanout`).
pub fn canonical_metric(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let lower = lower.strip_prefix("latency.").unwrap_or(&lower);
    let lower = lower.strip_suffix("_us").unwrap_or(lower);
    lower.to_string()
}

/// Reads every `*.hlog` file directly in `dir` and merges intervals per tag.
/// Untagged intervals take the file stem as their tag (`fanout.hlog` → `fanout`).
/// A directory without logs gives an empty map.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, TagLog>, HlogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HlogError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hlog") && p.is_file())
        .collect();
    paths.sort();
    read_files(&paths)
}

/// Raw interval before time normalization.
struct RawInterval {
    abs_start_s: f64,
    digest: IntervalDigest,
}

/// Reads and merges the given interval logs (see [`read_dir`]).
pub fn read_files(paths: &[PathBuf]) -> Result<BTreeMap<String, TagLog>, HlogError> {
    let mut out: BTreeMap<String, TagLog> = BTreeMap::new();
    let mut raw: BTreeMap<String, Vec<RawInterval>> = BTreeMap::new();
    for path in paths {
        read_one(path, &mut out, &mut raw)?;
    }
    // Time series are drawn against seconds since the run began, whatever base each file used.
    let origin = raw
        .values()
        .flatten()
        .map(|r| r.abs_start_s)
        .fold(f64::INFINITY, f64::min);
    for (metric, intervals) in raw {
        if let Some(log) = out.get_mut(&metric) {
            log.intervals = intervals
                .into_iter()
                .map(|r| IntervalDigest {
                    start_s: r.abs_start_s - origin,
                    ..r.digest
                })
                .collect();
            log.intervals
                .sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        }
    }
    Ok(out)
}

fn read_one(
    path: &Path,
    out: &mut BTreeMap<String, TagLog>,
    raw: &mut BTreeMap<String, Vec<RawInterval>>,
) -> Result<(), HlogError> {
    let bytes = std::fs::read(path).map_err(|source| HlogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line_of = |offset: usize| {
        bytes[..offset.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    };
    let mut start_time: Option<f64> = None;
    let mut base_time: Option<f64> = None;
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| match e {
            LogIteratorError::ParseError { offset } => HlogError::Parse {
                path: path.to_path_buf(),
                line: line_of(offset),
            },
        })?;
        match entry {
            LogEntry::StartTime(d) => start_time = Some(d.as_secs_f64()),
            LogEntry::BaseTime(d) => base_time = Some(d.as_secs_f64()),
            LogEntry::Interval(iv) => {
                let encoded = iv.encoded_histogram();
                // The payload borrows from `bytes`, so its address gives the line for errors;
                // counted only on error, since counting per interval would be quadratic.
                let offset = (encoded.as_ptr() as usize).saturating_sub(bytes.as_ptr() as usize);
                let decode_err = |message: String| HlogError::Decode {
                    path: path.to_path_buf(),
                    line: line_of(offset),
                    message,
                };
                let compressed = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| decode_err(format!("bad base64: {e}")))?;
                let hist: Histogram<u64> = deserializer
                    .deserialize(&mut Cursor::new(&compressed))
                    .map_err(|e| decode_err(format!("{e:?}")))?;
                let tag = iv
                    .tag()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_else(|| stem.clone());
                let metric = canonical_metric(&tag);
                let ts = iv.start_timestamp().as_secs_f64();
                // Java convention: with a BaseTime, stamps are offsets from it; small stamps with
                // only a StartTime are offsets from that; otherwise they are absolute.
                let abs_start_s = match (base_time, start_time) {
                    (Some(b), _) => b + ts,
                    (None, Some(s)) if ts < 1e8 => s + ts,
                    _ => ts,
                };
                let digest = IntervalDigest {
                    start_s: 0.0,
                    duration_s: iv.duration().as_secs_f64(),
                    count: hist.len(),
                    p50: if hist.is_empty() {
                        0
                    } else {
                        hist.value_at_quantile(0.5)
                    },
                    p99: if hist.is_empty() {
                        0
                    } else {
                        hist.value_at_quantile(0.99)
                    },
                    max: hist.max(),
                };
                raw.entry(metric.clone()).or_default().push(RawInterval {
                    abs_start_s,
                    digest,
                });
                match out.get_mut(&metric) {
                    Some(log) => {
                        log.total.add(&hist).map_err(|e| HlogError::Merge {
                            path: path.to_path_buf(),
                            line: line_of(offset),
                            tag: tag.clone(),
                            message: format!("{e:?}"),
                        })?;
                        if !log.files.iter().any(|f| f == path) {
                            log.files.push(path.to_path_buf());
                        }
                    }
                    None => {
                        let mut total = Histogram::new_from(&hist);
                        // A later interval may hold a value beyond this one's range.
                        total.auto(true);
                        total.add(&hist).map_err(|e| HlogError::Merge {
                            path: path.to_path_buf(),
                            line: line_of(offset),
                            tag: tag.clone(),
                            message: format!("{e:?}"),
                        })?;
                        out.insert(
                            metric.clone(),
                            TagLog {
                                metric,
                                total,
                                intervals: Vec::new(),
                                files: vec![path.to_path_buf()],
                            },
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use std::time::{Duration, SystemTime};

    fn write_log(path: &Path, tagged: bool, per_interval: &[Vec<u64>]) {
        let mut buf = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("test log")
            .with_start_time(t0)
            .with_base_time(t0)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut ser)
            .unwrap();
        for (i, values) in per_interval.iter().enumerate() {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for v in values {
                h.record(*v).unwrap();
            }
            let tag = if tagged { Tag::new("fanout") } else { None };
            w.write_histogram(
                &h,
                Duration::from_secs(i as u64),
                Duration::from_secs(1),
                tag,
            )
            .unwrap();
        }
        std::fs::write(path, buf).unwrap();
    }

    #[test]
    fn merges_intervals_per_tag_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let intervals: Vec<Vec<u64>> = (0..5)
            .map(|i| (1..=100).map(|v| v * 10 + i).collect())
            .collect();
        write_log(&dir.path().join("fanout.hlog"), true, &intervals);
        write_log(&dir.path().join("ack.hlog"), false, &intervals[..2]);
        let logs = read_dir(dir.path()).unwrap();
        let fanout = &logs["fanout"];
        assert_eq!(fanout.total.len(), 500);
        assert_eq!(fanout.intervals.len(), 5);
        assert_eq!(fanout.intervals[3].start_s, 3.0);
        assert_eq!(fanout.intervals[0].count, 100);
        assert_eq!(logs["ack"].total.len(), 200);
        assert_eq!(fanout.total.max(), fanout.total.highest_equivalent(1004));
    }

    #[test]
    fn same_tag_in_several_files_adds_up() {
        // Two workers' logs of one metric: the merge is the union of their samples.
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<Vec<u64>> = vec![(1..=300).collect()];
        let b: Vec<Vec<u64>> = vec![(301..=500).collect(), vec![10_000]];
        write_log(&dir.path().join("w0.hlog"), true, &a);
        write_log(&dir.path().join("w1.hlog"), true, &b);
        let only_w0 = read_files(&[dir.path().join("w0.hlog")]).unwrap();
        assert_eq!(only_w0["fanout"].total.len(), 300);
        let logs = read_dir(dir.path()).unwrap();
        let f = &logs["fanout"];
        assert_eq!(f.total.len(), 501);
        assert_eq!(f.total.max(), f.total.highest_equivalent(10_000));
        assert_eq!(f.files.len(), 2);
        assert_eq!(f.intervals.len(), 3);
    }

    #[test]
    fn garbage_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.hlog");
        std::fs::write(
            &p,
            "#[StartTime: 1.000 (seconds since epoch)]\nnot a log line\n",
        )
        .unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.hlog") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_payload_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.hlog");
        std::fs::write(&p, "#[BaseTime: 1.000 (seconds since epoch)]\n#comment\nTag=ack,0.000,1.000,1.0,!!notbase64\n").unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("x.hlog line 3") && err.contains("base64"),
            "{err}"
        );
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_metric("fanout_us"), "fanout");
        assert_eq!(canonical_metric("latency.ACK_us"), "ack");
        assert_eq!(canonical_metric("presence"), "presence");
    }
}
