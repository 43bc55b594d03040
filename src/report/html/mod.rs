//! `stampede report DIR`: renders a run directory into one self-contained `report.html`
//! (inline CSS and SVG, no external URL), and the page pieces `compare` reuses.
//!
//! It reads the run directory's files, never the load engine's Rust types: `summary.json` as a
//! `serde_json::Value`, `timeseries.csv` column by column (every numeric column becomes a
//! series, grouped into charts by name), and the `*.hlog` interval logs through [`super::hlog`].
//! So a run written by another version of the engine, or a directory copied from CI, still
//! renders, and a missing part shows as a note instead of failing the whole report.
//!
//! Split along its seams: [`load`] reads a run directory, [`kit`] holds the page pieces
//! `compare` reuses (escaping, number formats, page shell, figures), [`sections`] and
//! [`timeseries`] render the report's sections.

mod calls;
mod checks;
mod connect;
mod kit;
mod load;
mod sections;
mod timeseries;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::plot;
use sections::{
    codes_section, delivery_section, extra_section, header_cards, latency_section,
    scenario_section, thresholds_section, warnings_section,
};
use timeseries::timeseries_section;

pub use kit::{
    CORE_METRICS, ThresholdRow, esc, figure, fmt_ms, fmt_num, fmt_value, lookup, metric_order,
    metric_title, page, points_from_stats, thresholds, verdict,
};
pub use load::{RunDir, Table};
pub use sections::{close_name, population_delivery, target_text};
pub use timeseries::{SeriesGroup, group_of, timeseries_series};

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
    b.push_str(&connect::insecure_box(s));
    b.push_str(&warnings_section(s));
    b.push_str(&checks::checks_section(s));
    b.push_str(&thresholds_section(s));
    b.push_str(&latency_section(run)?);
    b.push_str(&connect::connect_phases_section(run)?);
    b.push_str(&connect::tls_section(s));
    b.push_str(&timeseries_section(run)?);
    b.push_str(&delivery_section(s));
    b.push_str(&calls::calls_section(s));
    b.push_str(&crate::report::rest_html::rest_section(s));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
