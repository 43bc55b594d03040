//! The end of `stampede run`: evaluate the built-in checks and the thresholds, write the
//! report directory, print the summary, and decide the exit code.
//!
//! Exit codes: **0** every check and threshold passed; **1** one broke; **2** could not run
//! (also: no peer could connect); **130** interrupted (Ctrl-C or SIGTERM, as shells report
//! a SIGINT death): an interrupted run is not a passing run, whatever its numbers say. The
//! first Ctrl-C still writes the whole report; after a second one only summary.json is
//! written.

use std::path::PathBuf;

use super::RunArgs;
use super::checks;
use super::scenario::Scenario;
use super::thresholds;
use crate::report::{RunData, Summary};
use crate::shutdown::INTERRUPTED;

/// Every check and threshold passed.
pub const PASSED: i32 = 0;
/// A check or a threshold broke.
pub const FAILED: i32 = 1;
/// Could not run (bad input, unreachable target, no peer connected).
pub const COULD_NOT_RUN: i32 = 2;

/// The summary of `run` with its verdict: checks, thresholds, `outcome`, and the exit code
/// that goes with it.
pub fn judge(sc: &Scenario, run: &RunData) -> (Summary, i32) {
    let mut summary = Summary::from_run(run);
    summary.checks = checks::evaluate(&checks::Inputs {
        scenario: sc,
        summary: &summary,
        examples: &run.examples,
        planned: &run.planned,
    });
    summary.checks_passed = summary.checks.iter().all(|c| c.passed);
    let json = serde_json::to_value(&summary).unwrap_or_default();
    summary.thresholds = thresholds::evaluate(&sc.thresholds.0, &json);
    summary.thresholds_passed = summary.thresholds.iter().all(|t| t.passed);
    let (code, outcome) = if run.interrupted {
        (INTERRUPTED, "interrupted")
    } else if run.connections.established == 0 {
        (COULD_NOT_RUN, "no_connection")
    } else if summary.checks_passed && summary.thresholds_passed {
        (PASSED, "passed")
    } else {
        (FAILED, "failed")
    };
    summary.outcome = outcome.into();
    (summary, code)
}

/// Writes the report, prints the summary, and decides the exit code. `urgent`: a second
/// Ctrl-C came; write summary.json alone, at once.
pub fn finish(args: &RunArgs, sc: &Scenario, run: RunData, urgent: bool) -> anyhow::Result<i32> {
    let (mut summary, code) = judge(sc, &run);
    let connected = run.connections.established > 0;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => default_out_dir(&sc.name),
    };
    if urgent {
        crate::report::files::write_summary(&dir, &summary)?;
        eprintln!(
            "interrupted: wrote {} (what was measured until the second Ctrl-C)",
            dir.join("summary.json").display()
        );
        return Ok(code);
    }
    let ramp_s = sc
        .populations
        .iter()
        .map(|p| p.ramp.0.as_secs_f64())
        .fold(0.0, f64::max);
    crate::report::write_run_dir(&dir, &run, &mut summary, ramp_s)?;
    print!(
        "{}",
        crate::report::text::render(&summary, &dir.display().to_string())
    );
    if let Some(html) = crate::report::finish::html_report(&dir) {
        println!("report: {}", html.display());
    }
    if let Some(path) = &args.junit {
        crate::report::finish::write_junit(path, &sc.name, &summary.thresholds, &summary.checks)?;
        println!("junit: {}", path.display());
    }
    if run.interrupted {
        eprintln!(
            "interrupted: the run was stopped, so its verdict is incomplete (exit {INTERRUPTED})"
        );
    } else if !connected {
        let why = run
            .connections
            .failures
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| format!("{k} × {n}"))
            .unwrap_or_else(|| "no attempt finished".into());
        let advice = run
            .warnings
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(m, _)| format!("; {m}"))
            .unwrap_or_default();
        eprintln!("error: no peer could connect ({why}){advice}");
    } else if !summary.checks_passed {
        for c in summary.checks.iter().filter(|c| !c.passed) {
            eprintln!("check failed: checks.{}: {}", c.name, c.evidence);
        }
    }
    Ok(code)
}

/// `reports/<name>-<UTC timestamp>/`, made unique with a suffix when taken.
pub fn default_out_dir(name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let base = PathBuf::from("reports").join(format!("{name}-{stamp}"));
    if !base.exists() {
        return base;
    }
    (2..1000)
        .map(|i| PathBuf::from("reports").join(format!("{name}-{stamp}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or(base)
}
