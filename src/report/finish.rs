//! What `stampede run` does after the run directory is written: render `report.html`
//! (a rendering failure is a warning, never a failed run: the numbers are already on disk)
//! and, with `--junit FILE`, write one JUnit testcase per threshold so CI can show them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ThresholdResult;
use crate::junit::{self, Case, Outcome, Suite};

/// Renders `dir/report.html`; returns its path, or prints a warning and returns `None`.
pub fn html_report(dir: &Path) -> Option<PathBuf> {
    match super::html::write_report(dir) {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!(
                "warning: could not render {}: {e:#} (summary.json is complete; retry with `stampede report {}`)",
                dir.join("report.html").display(),
                dir.display()
            );
            None
        }
    }
}

/// The JUnit cases of a run's thresholds: one per rule, failed when the rule is broken.
pub fn threshold_cases(thresholds: &[ThresholdResult]) -> Vec<Case> {
    thresholds
        .iter()
        .map(|t| {
            let actual = match t.actual {
                Some(v) if t.unit == "us" => format!("{v} µs"),
                Some(v) => format!("{v}"),
                None => "no such number in this run".to_owned(),
            };
            let limit = if t.unit == "us" {
                format!("{} µs", t.limit)
            } else {
                format!("{}", t.limit)
            };
            let detail = format!("{}: actual {actual}, limit {} {limit}", t.rule, t.op);
            let outcome = if t.passed {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    message: format!("threshold broken: {detail}"),
                    kind: None,
                    text: detail.clone(),
                }
            };
            Case {
                output: Some(detail),
                ..Case::new(t.rule.clone(), outcome)
            }
        })
        .collect()
}

/// Writes the JUnit XML of `thresholds` to `path` (suite named after the scenario).
pub fn write_junit(
    path: &Path,
    scenario: &str,
    thresholds: &[ThresholdResult],
) -> anyhow::Result<()> {
    junit::write(
        path,
        "stampede",
        &[Suite {
            name: format!("stampede.run.{scenario}"),
            cases: threshold_cases(thresholds),
        }],
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule: &str, passed: bool, actual: Option<f64>) -> ThresholdResult {
        ThresholdResult {
            rule: rule.into(),
            metric: "fanout.p99".into(),
            op: "<".into(),
            limit: 50_000.0,
            unit: "us".into(),
            actual,
            passed,
        }
    }

    #[test]
    fn one_case_per_threshold_failures_named() {
        let cases = threshold_cases(&[
            rule("fanout.p99<50ms", true, Some(1200.0)),
            rule("fanout.p99<1ms", false, Some(1200.0)),
            rule("direct.p99<1ms", false, None),
        ]);
        assert_eq!(cases.len(), 3);
        let message = |c: &Case| match &c.outcome {
            Outcome::Failed { message, .. } => message.clone(),
            _ => String::new(),
        };
        assert!(cases[0].passed());
        assert!(message(&cases[1]).contains("1200 µs"));
        assert!(message(&cases[2]).contains("no such number"));
        let suite = Suite {
            name: "s".into(),
            cases,
        };
        let xml = junit::render("stampede", &[suite], None).unwrap();
        assert_eq!(xml.matches("<testcase").count(), 3);
        assert_eq!(xml.matches("<failure").count(), 2);
    }
}
