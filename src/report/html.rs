//! `stampede report DIR`: renders a run directory into one self-contained `report.html`
//! (inline CSS and SVG, no external URL), and the page pieces `compare` reuses.
//!
//! It reads the run directory's files, never the load engine's Rust types: `summary.json` as a
//! `serde_json::Value`, `timeseries.csv` column by column (every numeric column becomes a
//! series, grouped into charts by name), and the `*.hlog` interval logs through [`super::hlog`].
//! So a run written by another version of the engine, or a directory copied from CI, still
//! renders, and a missing part shows as a note instead of failing the whole report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use super::hlog::{self, TagLog, canonical_metric};
use super::plot::{self, Series};

/// Flags of `stampede report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directory written by `stampede run` (it holds summary.json, *.hlog, timeseries.csv).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Write the page here instead of DIR/report.html.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{} is not a run directory: it has no summary.json (run `stampede run` first, or pass the directory it printed)", dir.display())]
    NoSummary { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}

/// `stampede report DIR`: exit 0 once the page is written.
pub fn main(args: ReportArgs) -> anyhow::Result<i32> {
    let run = RunDir::load(&args.dir)?;
    for w in &run.warnings {
        eprintln!("warning: {w}");
    }
    let out = args.output.unwrap_or_else(|| args.dir.join("report.html"));
    write_page(&out, &render_report(&run)?)?;
    println!("{}", out.display());
    Ok(0)
}

/// Renders `dir/report.html` from the run directory `dir`; the load engine calls this at the end
/// of every run. Unreadable optional parts (a bad `.hlog`, a bad CSV) become warnings in the page.
pub fn write_report(dir: &Path) -> anyhow::Result<PathBuf> {
    let run = RunDir::load(dir)?;
    let out = dir.join("report.html");
    write_page(&out, &render_report(&run)?)?;
    Ok(out)
}

pub(crate) fn write_page(path: &Path, html: &str) -> Result<(), ReportError> {
    std::fs::write(path, html).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

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

fn is_stats(v: &Value) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Page pieces shared with `compare`.

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --fg:#1d2430; --muted:#5b6676; --line:#d9dee5; --bg:#f6f7f9; --ok:#17803d; --bad:#c0262d; --warn:#a15c00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
main { max-width:1240px; margin:0 auto; padding:20px 28px 60px; }
h1 { font-size:26px; margin:6px 0 4px; }
h2 { font-size:20px; margin:34px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:18px 0 6px; }
p.sub { color:var(--muted); margin:0 0 14px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:150px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:20px; font-weight:600; word-break:break-all; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; color:#fff; font-weight:700; font-size:14px; }
.badge.ok { background:var(--ok); } .badge.bad { background:var(--bad); } .badge.unk { background:var(--muted); }
.badge.ok, .badge.bad, .badge.unk { color:#fff; }
.reason { color:var(--bad); font-weight:600; }
table { border-collapse:collapse; background:#fff; border:1px solid var(--line); margin:6px 0 12px; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#eef1f5; font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fafbfc; }
td.bad, span.bad { color:var(--bad); font-weight:700; } td.ok, span.ok { color:var(--ok); font-weight:600; }
td.better { color:var(--ok); } td.worse { color:var(--bad); }
.charts { display:grid; grid-template-columns:repeat(auto-fill, minmax(540px, 1fr)); gap:14px; margin:10px 0 18px; }
figure { margin:0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px; min-width:0; }
figure svg { display:block; width:100%; max-width:600px; height:auto; margin:0 auto; }
.legend { display:flex; flex-wrap:wrap; gap:4px 16px; padding:6px 8px 0; font-size:14px; }
.legend span { display:inline-flex; align-items:center; gap:6px; }
.legend i { display:inline-block; width:22px; height:4px; border-radius:2px; }
figcaption { color:var(--muted); font-size:13px; padding:4px 8px 0; }
.note { background:#fff; border:1px dashed var(--line); border-radius:8px; padding:10px 14px; color:var(--muted); margin:8px 0; }
.warn { background:#fff7e6; border:1px solid #f0c36d; border-radius:8px; padding:8px 14px; color:var(--warn); margin:8px 0; }
pre { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; overflow:auto; font-size:13px; max-height:520px; }
details summary { cursor:pointer; color:var(--muted); margin:8px 0; }
code { background:#eef1f5; padding:1px 4px; border-radius:4px; }
.more { display:flex; flex-wrap:wrap; gap:0 28px; align-items:flex-start; }
footer { color:var(--muted); font-size:12px; margin-top:40px; }
"#;

/// A whole HTML document around `body`, with the inline style sheet.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n<footer>Generated by stampede {} — self-contained page: no scripts, no external resources.</footer>\n</main>\n</body>\n</html>\n",
        esc(title),
        env!("CARGO_PKG_VERSION"),
    )
}

/// A figure holding an SVG chart, its legend (colours as drawn by [`plot`]) and its caption.
pub fn figure(svg: &str, series: &[Series], caption: &str) -> String {
    let mut legend = String::from("<div class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            legend,
            "<span><i style=\"background:{}\"></i>{}</span>",
            plot::color_hex(i),
            esc(&s.name)
        );
    }
    legend.push_str("</div>");
    format!(
        "<figure>{svg}{legend}<figcaption>{}</figcaption></figure>\n",
        esc(caption)
    )
}

/// A number as the tables show it: integers plainly (with thin grouping), others to 3 decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        group_thousands(&format!("{}", v as i64))
    } else if v.abs() >= 1000.0 {
        group_thousands(&format!("{v:.1}"))
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn group_thousands(s: &str) -> String {
    let (sign, rest) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// µs → a millisecond figure with precision that suits its size.
pub fn fmt_ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms.abs() < 1.0 {
        format!("{ms:.3}")
    } else if ms.abs() < 100.0 {
        format!("{ms:.2}")
    } else {
        group_thousands(&format!("{ms:.1}"))
    }
}

/// Compact one-line rendering of any JSON value for a table cell.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| x.is_string() || x.is_number()) => {
            a.iter().map(fmt_value).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// Human title of a latency metric.
pub fn metric_title(metric: &str) -> String {
    match metric {
        "fanout" => "Fan-out latency (publish → each subscriber)".into(),
        "ack" => "Ack round trip (request → ack)".into(),
        "connect" => "Connect time (TCP + WebSocket upgrade + welcome)".into(),
        "presence" => "Presence propagation (join/leave → each member)".into(),
        "schedule_lag" => "Schedule lag (intended → actual send)".into(),
        "direct" => "Direct-message latency (intended send → target)".into(),
        "reconnect" => "Reconnect time (connection lost → subscribed again)".into(),
        "system_fanout" => "System-message fan-out (REST publish → each subscriber)".into(),
        other => format!("{other} latency"),
    }
}

/// Latency metrics in the order the pages show them: the four the engine always measures, then
/// any other found in the logs or in summary.json.
pub fn metric_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut rest: BTreeSet<String> = names.into_iter().cloned().collect();
    let mut out = Vec::new();
    for m in CORE_METRICS {
        rest.remove(m);
        out.push(m.to_string());
    }
    out.extend(rest);
    out
}

/// Latency metrics every run measures, shown first and always.
pub const CORE_METRICS: [&str; 4] = ["fanout", "ack", "connect", "presence"];

/// Percentile points (x per [`plot::percentile_x`], y in ms) from the few percentiles a
/// summary keeps; a coarse stand-in when there is no interval log.
pub fn points_from_stats(stats: &Value) -> Vec<(f64, f64)> {
    let count = stats.get("count").and_then(Value::as_f64).unwrap_or(0.0);
    if count <= 0.0 {
        return Vec::new();
    }
    let mut pts = Vec::new();
    for (key, q) in [
        ("min", 0.0),
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p999", 0.999),
    ] {
        if let Some(v) = stats.get(key).and_then(Value::as_f64) {
            let x = plot::percentile_x(q);
            if x <= count.log10() + 1e-9 {
                pts.push((x, v / 1000.0));
            }
        }
    }
    if let Some(max) = stats.get("max").and_then(Value::as_f64) {
        pts.push((count.log10().clamp(0.0, 5.0), max / 1000.0));
    }
    pts
}

/// Looks up a dotted path (`latency.fanout_us.p99`) in a JSON value.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(o) => o.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The validity verdict of a run: `Some(true|false)` and a reason, or `None` when absent.
pub fn verdict(summary: &Value) -> (Option<bool>, Option<String>) {
    let valid = match summary.get("valid") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Object(o)) => o
            .get("ok")
            .or_else(|| o.get("valid"))
            .and_then(Value::as_bool),
        _ => None,
    };
    let text = |r: &Value| match r {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(a) if !a.is_empty() => {
            Some(a.iter().map(fmt_value).collect::<Vec<_>>().join("; "))
        }
        _ => None,
    };
    let reason = [
        "reason",
        "invalid_reasons",
        "valid_reason",
        "invalid_reason",
        "validity_reason",
    ]
    .iter()
    .find_map(|k| summary.get(*k).and_then(text))
    .or_else(|| {
        summary
            .get("valid")
            .and_then(|v| v.get("reason"))
            .and_then(text)
    });
    (valid, reason)
}

/// One threshold as listed in a summary: its text, whether it held, and the observed value.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRow {
    pub rule: String,
    pub passed: Option<bool>,
    pub actual: Option<String>,
}

/// Reads `thresholds` in any of the shapes an engine may write: a list of objects
/// (`{rule|threshold|expr|name, passed|ok|met, actual|value}`), a list of strings, or a map
/// from rule text to a bool or such an object.
pub fn thresholds(summary: &Value) -> Vec<ThresholdRow> {
    fn from_obj(rule: Option<String>, o: &serde_json::Map<String, Value>) -> ThresholdRow {
        let rule = rule
            .or_else(|| {
                ["rule", "threshold", "expr", "expression", "name", "spec"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_string))
            })
            .unwrap_or_else(|| Value::Object(o.clone()).to_string());
        let passed = ["passed", "ok", "met", "pass", "holds"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_bool))
            .or_else(|| {
                ["broken", "failed", "violated"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_bool).map(|b| !b))
            })
            .or_else(|| {
                o.get("status").and_then(Value::as_str).map(|s| {
                    matches!(
                        s.to_ascii_lowercase().as_str(),
                        "ok" | "pass" | "passed" | "met"
                    )
                })
            });
        // Latency thresholds carry µs values with `unit: "us"`; people read ms.
        let micros = o.get("unit").and_then(Value::as_str) == Some("us");
        let show = |v: &Value| match v.as_f64() {
            Some(x) if micros => format!("{} ms", fmt_ms(x)),
            _ => fmt_value(v),
        };
        let actual = ["actual", "value", "observed", "measured"]
            .iter()
            .find_map(|k| o.get(*k))
            .map(show);
        ThresholdRow {
            rule,
            passed,
            actual,
        }
    }
    match summary.get("thresholds") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| match t {
                Value::Object(o) => from_obj(None, o),
                other => ThresholdRow {
                    rule: fmt_value(other),
                    passed: None,
                    actual: None,
                },
            })
            .collect(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Value::Bool(b) => ThresholdRow {
                    rule: k.clone(),
                    passed: Some(*b),
                    actual: None,
                },
                Value::Object(inner) => from_obj(Some(k.clone()), inner),
                other => ThresholdRow {
                    rule: k.clone(),
                    passed: None,
                    actual: Some(fmt_value(other)),
                },
            })
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The run report.

/// Renders the whole report page of one run.
pub fn render_report(run: &RunDir) -> Result<String, ReportError> {
    let s = &run.summary;
    let name = run.scenario_name();
    let mut b = String::new();
    let _ = writeln!(b, "<h1>Load run report — {}</h1>", esc(&name));
    let _ = writeln!(
        b,
        "<p class=\"sub\">Run directory <code>{}</code></p>",
        esc(&run.dir.display().to_string())
    );
    for w in &run.warnings {
        let _ = writeln!(b, "<div class=\"warn\">warning: {}</div>", esc(w));
    }
    b.push_str(&header_cards(run));
    b.push_str(&warnings_section(s));
    b.push_str(&thresholds_section(s));
    b.push_str(&latency_section(run)?);
    b.push_str(&timeseries_section(run)?);
    b.push_str(&delivery_section(s));
    b.push_str(&super::rest_html::rest_section(s));
    b.push_str(&codes_section(s, "errors", "Error frames by code", "code"));
    b.push_str(&codes_section(s, "closes", "Close codes", "close code"));
    b.push_str(&extra_section(s));
    b.push_str(&scenario_section(run));
    let _ = writeln!(
        b,
        "<h2>Raw summary</h2><details><summary>summary.json as written by the run (click to expand)</summary><pre>{}</pre></details>",
        esc(&serde_json::to_string_pretty(s).unwrap_or_default())
    );
    Ok(page(&format!("stampede report — {name}"), &b))
}

fn card(k: &str, v_html: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{v_html}</div></div>",
        esc(k)
    )
}

fn header_cards(run: &RunDir) -> String {
    let s = &run.summary;
    let mut b = String::from("<div class=\"cards\">");
    b.push_str(&card("scenario", &esc(&run.scenario_name())));
    let target = target_text(s);
    b.push_str(&card("target", &esc(&target)));
    b.push_str(&card(
        "peers",
        &esc(&s.get("peers").map(fmt_value).unwrap_or("—".into())),
    ));
    let duration = s
        .get("duration_s")
        .and_then(Value::as_f64)
        .map(|d| format!("{} s", fmt_num(d)))
        .unwrap_or("—".into());
    b.push_str(&card("duration", &esc(&duration)));
    let (valid, reason) = verdict(s);
    let badge = match valid {
        Some(true) => "<span class=\"badge ok\">VALID</span>".to_string(),
        Some(false) => "<span class=\"badge bad\">INVALID</span>".to_string(),
        None => "<span class=\"badge unk\">NO VERDICT</span>".to_string(),
    };
    b.push_str(&card("run validity", &badge));
    for (path, label) in [
        ("throughput.publishes_per_s", "publishes / s"),
        ("throughput.deliveries_per_s", "deliveries / s"),
    ] {
        if let Some(v) = lookup(s, path).and_then(Value::as_f64) {
            b.push_str(&card(label, &esc(&fmt_num(v))));
        }
    }
    let rows = thresholds(s);
    if !rows.is_empty() {
        let broken = rows.iter().filter(|r| r.passed == Some(false)).count();
        let met = rows.iter().filter(|r| r.passed == Some(true)).count();
        let html = if broken > 0 {
            format!(
                "<span class=\"badge bad\">{broken} BROKEN</span> <span class=\"ok\">{met} met</span>"
            )
        } else {
            format!("<span class=\"badge ok\">ALL {met} MET</span>")
        };
        b.push_str(&card("thresholds", &html));
    }
    b.push_str("</div>\n");
    let mut facts = Vec::new();
    for (key, label) in [
        ("started_at", "started"),
        ("scenario_file", "scenario from"),
        ("seed", "seed"),
        ("workers", "workers"),
        ("schema", "schema"),
    ] {
        if let Some(v) = s
            .get(key)
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
        {
            facts.push(format!("{label} <code>{}</code>", esc(&fmt_value(v))));
        }
    }
    if s.get("stopped_early").and_then(Value::as_bool) == Some(true) {
        facts.push("<span class=\"bad\">stopped early (Ctrl-C)</span>".into());
    }
    if !facts.is_empty() {
        let _ = writeln!(b, "<p class=\"sub\">{}</p>", facts.join(" · "));
    }
    if let Some(r) = reason {
        let label = if valid == Some(false) {
            "Invalid because"
        } else {
            "Note"
        };
        let _ = writeln!(
            b,
            "<p><b>{label}:</b> <span class=\"reason\">{}</span></p>",
            esc(&r)
        );
    }
    b
}

/// The target as one line: `embedded reference server ws://…` or the URLs joined.
pub fn target_text(s: &Value) -> String {
    match s.get("target") {
        Some(Value::Object(o)) => {
            let urls = o
                .get("urls")
                .or_else(|| o.get("ws_url"))
                .or_else(|| o.get("url"))
                .map(fmt_value)
                .unwrap_or_default();
            match o.get("embedded").and_then(Value::as_bool) {
                Some(true) => format!("embedded reference server {urls}")
                    .trim()
                    .to_string(),
                _ if !urls.is_empty() => urls,
                _ => Value::Object(o.clone()).to_string(),
            }
        }
        Some(v) => fmt_value(v),
        None => "—".into(),
    }
}

/// Warnings the run recorded: `warnings` as a list of strings or of `{message, count}`.
fn warnings_section(s: &Value) -> String {
    let Some(Value::Array(list)) = s.get("warnings") else {
        return String::new();
    };
    if list.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Warnings</h2>\n<table><tr><th>warning</th><th class=\"n\">times</th></tr>\n",
    );
    for w in list {
        let (msg, count) = match w {
            Value::Object(o) => (
                o.get("message")
                    .map(fmt_value)
                    .unwrap_or_else(|| w.to_string()),
                o.get("count").map(fmt_value).unwrap_or_default(),
            ),
            other => (fmt_value(other), String::new()),
        };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&msg),
            esc(&count)
        );
    }
    b.push_str("</table>\n");
    b
}

fn thresholds_section(s: &Value) -> String {
    let rows = thresholds(s);
    if rows.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Thresholds</h2>\n<table><tr><th>threshold</th><th>result</th><th class=\"n\">observed</th></tr>\n",
    );
    for r in rows {
        let (cls, txt) = match r.passed {
            Some(true) => ("ok", "met"),
            Some(false) => ("bad", "BROKEN"),
            None => ("", "?"),
        };
        let _ = writeln!(
            b,
            "<tr><td><code>{}</code></td><td class=\"{cls}\">{txt}</td><td class=\"n\">{}</td></tr>",
            esc(&r.rule),
            esc(r.actual.as_deref().unwrap_or("—"))
        );
    }
    b.push_str("</table>\n");
    b
}

/// Summary row values (µs) for one stats object, in table column order.
const STAT_COLS: [(&str, &str); 8] = [
    ("count", "count"),
    ("min", "min"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
    ("mean", "mean"),
];

fn latency_section(run: &RunDir) -> Result<String, ReportError> {
    let stats = run.latency_stats();
    let mut b = String::from("<h2>Latency</h2>\n");
    if !stats.is_empty() {
        b.push_str("<table><tr><th>metric</th>");
        for (_, label) in STAT_COLS {
            let unit = if label == "count" { "" } else { " (ms)" };
            let _ = write!(b, "<th class=\"n\">{label}{unit}</th>");
        }
        b.push_str("</tr>\n");
        for m in metric_order(stats.keys()) {
            let Some((path, v)) = stats.get(&m) else {
                continue;
            };
            let empty = v.get("count").and_then(Value::as_f64) == Some(0.0);
            // Optional metrics the run never measured (direct, reconnect, system fan-out)
            // are noise in the table; the four core ones always show, empty or not.
            if empty && !["fanout", "ack", "connect", "presence"].contains(&m.as_str()) {
                continue;
            }
            let _ = write!(
                b,
                "<tr><td>{} <code>{}</code></td>",
                esc(&metric_title(&m)),
                esc(path)
            );
            for (key, _) in STAT_COLS {
                let cell = match v.get(key).and_then(Value::as_f64) {
                    Some(x) if key == "count" => fmt_num(x),
                    Some(_) if empty => "—".into(),
                    Some(x) => fmt_ms(x),
                    None => "—".into(),
                };
                let _ = write!(b, "<td class=\"n\">{cell}</td>");
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n");
    }
    b.push_str("<h3>Percentile distributions</h3>\n<div class=\"charts\">\n");
    let mut names: Vec<&String> = stats.keys().collect();
    names.extend(run.hlogs.keys());
    for m in metric_order(names) {
        let title = metric_title(&m);
        let has_samples = run.hlogs.get(&m).is_some_and(|l| !l.total.is_empty())
            || stats
                .get(&m)
                .is_some_and(|(_, v)| !points_from_stats(v).is_empty());
        // The four core metrics always get a slot (an empty one says "not measured");
        // optional ones (direct, reconnect, …) only when the run had them.
        if !has_samples && !CORE_METRICS.contains(&m.as_str()) {
            continue;
        }
        if let Some(log) = run.hlogs.get(&m).filter(|l| !l.total.is_empty()) {
            let h = &log.total;
            let series = vec![Series {
                name: format!(
                    "{m}: n={} p50={} p99={} max={} ms",
                    fmt_num(h.len() as f64),
                    fmt_ms(h.value_at_quantile(0.5) as f64),
                    fmt_ms(h.value_at_quantile(0.99) as f64),
                    fmt_ms(h.max() as f64)
                ),
                points: plot::percentile_points(h, 1000.0),
            }];
            let files: Vec<String> = log
                .files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let svg = plot::percentile_svg(&title, "ms", &series)?;
            b.push_str(&figure(
                &svg,
                &series,
                &format!(
                    "Every sample of the run, merged from {} ({} intervals). Each step right on the x axis is one more nine.",
                    files.join(", "),
                    log.intervals.len()
                ),
            ));
        } else if let Some((path, v)) = stats
            .get(&m)
            .filter(|(_, v)| !points_from_stats(v).is_empty())
        {
            let series = vec![Series {
                name: format!("{m} (summary percentiles only)"),
                points: points_from_stats(v),
            }];
            let svg = plot::percentile_svg(&title, "ms", &series)?;
            b.push_str(&figure(
                &svg,
                &series,
                &format!("No interval log for this metric: the line joins the few percentiles of {path} in summary.json (min, p50, p90, p99, p99.9, max)."),
            ));
        } else {
            let _ = writeln!(
                b,
                "<div class=\"note\">{}: no samples in this run.</div>",
                esc(&title)
            );
        }
    }
    b.push_str("</div>\n");
    Ok(b)
}

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

fn timeseries_section(run: &RunDir) -> Result<String, ReportError> {
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
            || !matches!(m.as_str(), "fanout" | "ack")
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

/// Columns of the delivery tables, in the order people read them.
const DELIVERY_COLS: [&str; 5] = ["expected", "delivered", "lost", "duplicated", "reordered"];

/// Per-population accounting of `kind` (`delivery` or `directs`), from `<kind>_by_population`,
/// `<kind>.{populations|per_population|by_population}` or (for `delivery`) top-level
/// `populations` (maps or lists with a `name`), each holding counters directly or under `<kind>`.
pub fn population_delivery(s: &Value, kind: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
    let mut out = Vec::new();
    let mut sources = vec![
        s.get(format!("{kind}_by_population").as_str()),
        lookup(s, &format!("{kind}.populations")),
        lookup(s, &format!("{kind}.per_population")),
        lookup(s, &format!("{kind}.by_population")),
    ];
    if kind == "delivery" {
        sources.push(s.get("populations"));
        sources.push(s.get("per_population"));
    }
    let pick = |v: &Value| -> Option<serde_json::Map<String, Value>> {
        let d = v.get(kind).unwrap_or(v);
        d.as_object()
            .filter(|o| o.contains_key("expected") || o.contains_key("delivered"))
            .cloned()
    };
    for src in sources.into_iter().flatten() {
        match src {
            Value::Object(o) => {
                for (k, v) in o {
                    if let Some(d) = pick(v) {
                        out.push((k.clone(), d));
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if let Some(d) = pick(v) {
                        let name = v
                            .get("name")
                            .or_else(|| v.get("population"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("#{i}"));
                        out.push((name, d));
                    }
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

fn delivery_section(s: &Value) -> String {
    let mut b = String::from("<h2>Delivery</h2>\n");
    match delivery_table(s, "delivery") {
        Some(t) => {
            b.push_str("<h3>Channel messages, by receiving population</h3>\n");
            b.push_str(&t);
        }
        None => b.push_str("<div class=\"note\">summary.json has no delivery accounting.</div>\n"),
    }
    let directs_used = lookup(s, "directs.expected")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        > 0.0
        || lookup(s, "directs.delivered")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            > 0.0;
    if directs_used && let Some(t) = delivery_table(s, "directs") {
        b.push_str("<h3>Direct messages, by receiving population</h3>\n");
        b.push_str(&t);
    }
    b.push_str("<p class=\"sub\">Expected: copies the engine's membership timeline says each subscriber must receive (subscribed before the send, still subscribed after it should have arrived, publisher excluded). Lost, duplicated and reordered count per publisher → subscriber pair.</p>\n");
    b
}

/// The accounting table of `kind`: the total row, then one row per population.
fn delivery_table(s: &Value, kind: &str) -> Option<String> {
    let mut b = String::new();
    let mut rows: Vec<(String, serde_json::Map<String, Value>)> = Vec::new();
    if let Some(Value::Object(total)) = s.get(kind) {
        rows.push(("all populations".into(), total.clone()));
    }
    rows.extend(population_delivery(s, kind));
    if rows.is_empty() {
        return None;
    }
    let mut cols: Vec<String> = DELIVERY_COLS.iter().map(|c| c.to_string()).collect();
    for (_, r) in &rows {
        for (k, v) in r {
            if v.is_number() && !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    b.push_str("<table><tr><th>population</th>");
    for c in &cols {
        let _ = write!(b, "<th class=\"n\">{}</th>", esc(c));
    }
    b.push_str("</tr>\n");
    for (name, r) in &rows {
        let _ = write!(b, "<tr><td>{}</td>", esc(name));
        for c in &cols {
            let v = r.get(c).and_then(Value::as_f64);
            let bad = matches!(
                c.as_str(),
                "lost" | "duplicated" | "reordered" | "unexpected" | "loss_ratio"
            ) && v.is_some_and(|x| x > 0.0);
            let cls = if bad { "n bad" } else { "n" };
            let _ = write!(
                b,
                "<td class=\"{cls}\">{}</td>",
                match v {
                    Some(x) if c.ends_with("_ratio") =>
                        format!("{}%", fmt_num((x * 100.0 * 1e4).round() / 1e4)),
                    Some(x) => fmt_num(x),
                    None => "—".into(),
                }
            );
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table>\n");
    Some(b)
}

/// Name of a WebSocket close code (RFC 6455 and SPEC §close codes).
pub fn close_name(code: &str) -> &'static str {
    use crate::proto::frame::close;
    match code.parse::<u16>().unwrap_or(0) {
        close::NORMAL => "normal closure",
        close::GOING_AWAY => "going away",
        close::ABNORMAL => "abnormal (no close frame)",
        close::INVALID_PAYLOAD => "invalid payload",
        close::POLICY => "policy violation",
        close::TOO_BIG => "message too big",
        close::INTERNAL => "internal error",
        close::CLIENT_INACTIVITY => "client inactivity",
        close::INVALID_TOKEN => "invalid token",
        close::TOKEN_EXPIRED => "token expired",
        close::CHANNEL_NOT_AUTHORIZED => "channel not authorized",
        close::OVER_CONCURRENT_LIMIT => "over concurrent-connection limit",
        close::OVER_MESSAGE_RATE => "over message rate",
        close::ACCOUNT_SUSPENDED => "account suspended",
        close::ADMIN_DISCONNECT => "disconnected by admin",
        _ => "",
    }
}

fn codes_section(s: &Value, key: &str, title: &str, col: &str) -> String {
    let mut b = format!("<h2>{}</h2>\n", esc(title));
    let entries: Vec<(String, Value)> = match s.get(key) {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                let k = v
                    .get("code")
                    .map(fmt_value)
                    .unwrap_or_else(|| v.to_string());
                (k, v.get("count").cloned().unwrap_or(Value::Null))
            })
            .collect(),
        _ => Vec::new(),
    };
    if entries.is_empty() {
        let _ = writeln!(
            b,
            "<div class=\"note\">None recorded (<code>{key}</code> is empty or absent).</div>"
        );
        return b;
    }
    let named = key == "closes";
    let _ = write!(b, "<table><tr><th>{}</th>", esc(col));
    if named {
        b.push_str("<th>meaning</th>");
    }
    b.push_str("<th class=\"n\">count</th></tr>\n");
    for (k, v) in entries {
        let _ = write!(b, "<tr><td><code>{}</code></td>", esc(&k));
        if named {
            let _ = write!(b, "<td>{}</td>", esc(close_name(&k)));
        }
        let _ = writeln!(b, "<td class=\"n\">{}</td></tr>", esc(&fmt_value(&v)));
    }
    b.push_str("</table>\n");
    b
}

/// Top-level summary keys the sections above already show.
const SHOWN_KEYS: &[&str] = &[
    "rest",
    "schema",
    "scenario",
    "scenario_file",
    "target",
    "started_at",
    "peers",
    "workers",
    "seed",
    "duration_s",
    "stopped_early",
    "valid",
    "reason",
    "invalid_reasons",
    "valid_reason",
    "invalid_reason",
    "validity_reason",
    "latency",
    "delivery",
    "delivery_by_population",
    "directs",
    "directs_by_population",
    "errors",
    "closes",
    "thresholds",
    "thresholds_passed",
    "warnings",
    "files",
    "command",
    "argv",
    "command_line",
    "populations",
    "per_population",
    "scenario_resolved",
    "resolved_scenario",
    "plan",
];

/// Leaves of a JSON value as (dotted path, display text).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(o) => o.iter().for_each(|(k, v)| leaves(v, &join(k), out)),
        Value::Array(a) if !a.iter().all(|x| x.is_string() || x.is_number()) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, &join(&i.to_string()), out)),
        other => out.push((prefix.to_string(), fmt_value(other))),
    }
}

/// Whatever else the engine put in summary.json (REST/goose request metrics, harness CPU and
/// memory, …), so a new field shows up in the report before anyone writes a section for it.
/// A map of objects (e.g. endpoint → stats) becomes a matrix; anything else a path/value list.
fn extra_section(s: &Value) -> String {
    let Value::Object(top) = s else {
        return String::new();
    };
    let mut scalars = Vec::new();
    let mut blocks = String::new();
    let mut lists = String::new();
    for (k, v) in top {
        if SHOWN_KEYS.contains(&k.as_str()) || k.ends_with("_us") && is_stats(v) {
            continue;
        }
        match v {
            Value::Object(o) if !o.is_empty() && o.values().all(Value::is_object) => {
                let rows: Vec<(&String, Vec<(String, String)>)> = o
                    .iter()
                    .map(|(name, inner)| {
                        let mut l = Vec::new();
                        leaves(inner, "", &mut l);
                        (name, l)
                    })
                    .collect();
                let mut cols: Vec<String> = Vec::new();
                for (_, l) in &rows {
                    for (p, _) in l {
                        if !cols.contains(p) {
                            cols.push(p.clone());
                        }
                    }
                }
                let _ = write!(
                    blocks,
                    "<h3><code>{}</code></h3><table><tr><th></th>",
                    esc(k)
                );
                for c in &cols {
                    let _ = write!(blocks, "<th class=\"n\">{}</th>", esc(c));
                }
                blocks.push_str("</tr>\n");
                for (name, l) in rows {
                    let _ = write!(blocks, "<tr><td>{}</td>", esc(name));
                    for c in &cols {
                        let cell = l
                            .iter()
                            .find(|(p, _)| p == c)
                            .map_or("—", |(_, v)| v.as_str());
                        let _ = write!(blocks, "<td class=\"n\">{}</td>", esc(cell));
                    }
                    blocks.push_str("</tr>\n");
                }
                blocks.push_str("</table>\n");
            }
            Value::Object(_) | Value::Array(_) => {
                let mut l = Vec::new();
                leaves(v, "", &mut l);
                if l.is_empty() {
                    continue;
                }
                let _ = write!(lists, "<div><h3><code>{}</code></h3><table>", esc(k));
                for (p, val) in l {
                    let _ = write!(
                        lists,
                        "<tr><td><code>{}</code></td><td class=\"n\">{}</td></tr>",
                        esc(&p),
                        esc(&val)
                    );
                }
                lists.push_str("</table></div>\n");
            }
            other => scalars.push((k.clone(), fmt_value(other))),
        }
    }
    if scalars.is_empty() && blocks.is_empty() && lists.is_empty() {
        return String::new();
    }
    let mut b = String::from("<h2>More from summary.json</h2>\n<div class=\"more\">");
    if !scalars.is_empty() {
        b.push_str("<div><h3>other fields</h3><table>");
        for (k, v) in scalars {
            let _ = write!(
                b,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td></tr>",
                esc(&k),
                esc(&v)
            );
        }
        b.push_str("</table></div>\n");
    }
    b.push_str(&lists);
    b.push_str("</div>\n");
    b.push_str(&blocks);
    b
}

fn scenario_section(run: &RunDir) -> String {
    let mut b = String::from("<h2>Scenario as it ran</h2>\n");
    if let Some((name, text)) = &run.scenario_file {
        let _ = writeln!(
            b,
            "<p class=\"sub\">{} from the run directory (command-line flags folded in):</p><pre>{}</pre>",
            esc(name),
            esc(text)
        );
    } else if let Some(v) = ["scenario", "scenario_resolved", "resolved_scenario", "plan"]
        .iter()
        .find_map(|k| run.summary.get(*k).filter(|v| v.is_object()))
    {
        let _ = writeln!(
            b,
            "<p class=\"sub\">From summary.json:</p><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(v).unwrap_or_default())
        );
    } else {
        b.push_str("<div class=\"note\">The run directory has no scenario.toml and summary.json has no scenario object.</div>\n");
    }
    if let Some(cmd) = ["command", "argv", "command_line"]
        .iter()
        .find_map(|k| run.summary.get(*k))
    {
        let text = match cmd {
            Value::Array(a) => a.iter().map(fmt_value).collect::<Vec<_>>().join(" "),
            v => fmt_value(v),
        };
        let _ = writeln!(b, "<p>Command: <code>{}</code></p>", esc(&text));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn reads_threshold_shapes() {
        let a = thresholds(
            &json!({"thresholds": [{"rule": "fanout.p99<50ms", "passed": false, "actual": 61234}]}),
        );
        assert_eq!(
            a,
            vec![ThresholdRow {
                rule: "fanout.p99<50ms".into(),
                passed: Some(false),
                actual: Some("61,234".into())
            }]
        );
        let b = thresholds(&json!({"thresholds": {"lost==0": true}}));
        assert_eq!(b[0].passed, Some(true));
        assert!(thresholds(&json!({})).is_empty());
    }

    #[test]
    fn verdict_and_numbers() {
        assert_eq!(
            verdict(&json!({"valid": false, "reason": "generator fell behind"})),
            (Some(false), Some("generator fell behind".into()))
        );
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_ms(20_512.0), "20.51");
        assert_eq!(esc("<a href=\"x\">"), "&lt;a href=&quot;x&quot;&gt;");
    }

    #[test]
    fn renders_minimal_summary_without_optional_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("summary.json"),
            json!({"scenario": "smoke", "peers": 10, "duration_s": 2, "valid": true,
                   "latency": {"fanout_us": {"count": 100, "min": 500, "p50": 900, "p90": 1500, "p99": 3000, "p999": 3500, "max": 4000, "mean": 1000}},
                   "delivery": {"expected": 100, "delivered": 99, "lost": 1, "duplicated": 0, "reordered": 0},
                   "errors": {}, "closes": {"1000": 10}, "harness_cpu_pct": 41.5,
                   "http_checks": {"POST /v1/channels/:id/publish": {"count": 50, "fail": 0, "status": {"200": 50}, "p99_ms": 3}}})
            .to_string(),
        )
        .unwrap();
        let out = write_report(dir.path()).unwrap();
        let html = std::fs::read_to_string(out).unwrap();
        assert!(html.contains("<svg") && html.contains("summary percentiles only"));
        assert!(html.contains("no samples in this run"));
        assert!(html.contains("normal closure"));
        assert!(html.contains("<td class=\"n bad\">1</td>"));
        // Unknown keys still show: a map of objects as a matrix, scalars as a list.
        assert!(
            html.contains("More from summary.json")
                && html.contains("POST /v1/channels/:id/publish")
                && html.contains("status.200")
        );
        assert!(html.contains("harness_cpu_pct"));
    }

    #[test]
    fn missing_summary_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = RunDir::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no summary.json"), "{e}");
    }
}
