//! What a load run produces, and its files.
//!
//! - [`RunData`]: the raw, mergeable result of one process (or of all workers merged):
//!   histograms, per-second intervals, delivery accounting, counts by error and close
//!   code, harness CPU and memory. Worker processes send it to the coordinator as JSON.
//! - [`Summary`]: the stable contract of `summary.json` (schema `stampede.summary/1`,
//!   documented field by field in docs/LOAD.md). Field docs below double as JSON docs.
//! - [`files`]: writes and reads a run directory (`summary.json`, `timeseries.csv`,
//!   `<metric>.hlog`, `percentiles-<metric>.csv`, `scenario.toml`); [`files::read_run_dir`]
//!   lets a later renderer (HTML, compare) read a run back.
//! - [`text`]: the end-of-run summary printed to stdout.
//!
//! Imports `metrics` only.

mod calls;
pub mod files;
pub mod finish;
pub mod hlog;
pub mod html;
pub mod plot;
pub mod rest_html;
mod run;
mod summary;
pub mod text;

pub use calls::{Calls, FailedSide, MAX_FAILED_SIDES};
pub use files::{RunDir, TimeseriesRow, read_run_dir, write_run_dir};
pub use run::*;
pub use summary::*;

/// Version tag of `summary.json`; bumped only on incompatible changes.
pub const SUMMARY_SCHEMA: &str = "stampede.summary/1";

/// `850 µs`, `12.3 ms`, `1.50 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}
