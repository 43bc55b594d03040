//! Reading a run directory: `summary.json` as plain JSON, the interval logs, `timeseries.csv`
//! and the scenario file; a broken optional file becomes a warning, never an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ReportError;
use super::kit::lookup;
use crate::report::hlog::{self, TagLog, canonical_metric};

/// Everything read from one run directory.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub summary: Value,
    /// Interval logs merged per canonical metric name (`fanout`, `ack`, …).
    pub hlogs: BTreeMap<String, TagLog>,
    pub timeseries: Option<Table>,
    /// `(file name, text)` of the scenario as it ran, when the directory has one.
    pub scenario_file: Option<(String, String)>,
    /// Problems with optional files; shown in the page and printed by the CLI.
    pub warnings: Vec<String>,
}

/// A CSV file: header and rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl RunDir {
    /// Reads `dir`. Only `summary.json` is required; it must be valid JSON.
    pub fn load(dir: &Path) -> Result<RunDir, ReportError> {
        let summary_path = dir.join("summary.json");
        if !summary_path.is_file() {
            return Err(ReportError::NoSummary {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&summary_path).map_err(|source| ReportError::Read {
            path: summary_path.clone(),
            source,
        })?;
        let summary: Value = serde_json::from_str(&text).map_err(|source| ReportError::Json {
            path: summary_path.clone(),
            source,
        })?;
        let mut warnings = Vec::new();
        // The summary's own file list wins: stray logs in the directory (a worker's shard, a
        // copy) must not be merged twice.
        let listed = |key: &str| lookup(&summary, &format!("files.{key}"));
        let hlogs = match listed("hlog").and_then(Value::as_array) {
            Some(names) => hlog::read_files(
                &names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|n| dir.join(n))
                    .collect::<Vec<_>>(),
            ),
            None => hlog::read_dir(dir),
        };
        let hlogs = hlogs.unwrap_or_else(|e| {
            warnings.push(format!("{e:#}; latency plots fall back to summary.json"));
            BTreeMap::new()
        });
        let ts_path = dir.join(
            listed("timeseries")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("timeseries.csv"),
        );
        let timeseries = if ts_path.is_file() {
            match read_csv(&ts_path) {
                Ok(t) => Some(t),
                Err(e) => {
                    warnings.push(e);
                    None
                }
            }
        } else {
            None
        };
        let named = listed("scenario")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let scenario_file = named
            .into_iter()
            .chain(["scenario.toml", "scenario.json", "scenario.resolved.toml"])
            .find_map(|name| {
                let p = dir.join(name);
                std::fs::read_to_string(&p)
                    .ok()
                    .map(|t| (name.to_string(), t))
            });
        Ok(RunDir {
            dir: dir.to_path_buf(),
            summary,
            hlogs,
            timeseries,
            scenario_file,
            warnings,
        })
    }

    /// Scenario name: `scenario` as a string, or its `name` when it is an object.
    pub fn scenario_name(&self) -> String {
        match self.summary.get("scenario") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)")
                .to_string(),
            _ => "(unknown)".to_string(),
        }
    }

    /// Latency statistics objects (`{count,p50,…}` in µs) by canonical metric name.
    pub fn latency_stats(&self) -> BTreeMap<String, (String, &Value)> {
        let mut out = BTreeMap::new();
        if let Some(Value::Object(lat)) = self.summary.get("latency") {
            for (k, v) in lat {
                if is_stats(v) {
                    out.insert(canonical_metric(k), (format!("latency.{k}"), v));
                }
            }
        }
        if let Value::Object(top) = &self.summary {
            for (k, v) in top {
                if k.ends_with("_us") && is_stats(v) {
                    out.insert(canonical_metric(k), (k.clone(), v));
                }
            }
        }
        out
    }
}

pub(super) fn is_stats(v: &Value) -> bool {
    v.get("p50").is_some() || v.get("count").is_some() && v.get("max").is_some()
}

fn read_csv(path: &Path) -> Result<Table, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let headers = rdr
        .headers()
        .map_err(|e| format!("cannot read the header of {}: {e}", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("cannot read {} row {}: {e}", path.display(), i + 2))?;
        rows.push(rec.iter().map(|c| c.trim().to_string()).collect());
    }
    Ok(Table { headers, rows })
}
