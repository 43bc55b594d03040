//! What `stampede run` does after the run directory is written: render `report.html`
//! (a rendering failure is a warning, never a failed run: the numbers are already on disk)
//! and, with `--junit FILE`, write one JUnit testcase per threshold and per built-in check
//! so CI can show them.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{CheckResult, ThresholdResult};
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

/// The JUnit cases of the built-in checks: one per check, named `checks.<name>`; a failed
/// check carries its evidence and first examples, a check turned off is skipped.
pub fn check_cases(checks: &[CheckResult]) -> Vec<Case> {
    checks
        .iter()
        .map(|c| {
            let name = format!("checks.{}", c.name);
            let detail = format!(
                "{name} (count {}, limit {}): {}",
                c.count, c.limit, c.evidence
            );
            let outcome = if !c.enabled {
                Outcome::Skipped {
                    message: format!("{name} is off"),
                }
            } else if c.passed {
                Outcome::Passed
            } else {
                let mut text = detail.clone();
                for e in &c.examples {
                    text.push_str("\n  e.g. ");
                    text.push_str(e);
                }
                Outcome::Failed {
                    message: format!("{name} failed: {}", c.evidence),
                    kind: Some("check".into()),
                    text,
                }
            };
            Case {
                output: Some(detail),
                ..Case::new(name, outcome)
            }
        })
        .collect()
}

/// Writes the JUnit XML of a run to `path`: the thresholds in suite
/// `stampede.run.<scenario>`, the built-in checks in `stampede.run.<scenario>.checks`.
pub fn write_junit(
    path: &Path,
    scenario: &str,
    thresholds: &[ThresholdResult],
    checks: &[CheckResult],
) -> anyhow::Result<()> {
    junit::write(
        path,
        "stampede",
        &[
            Suite {
                name: format!("stampede.run.{scenario}"),
                cases: threshold_cases(thresholds),
            },
            Suite {
                name: format!("stampede.run.{scenario}.checks"),
                cases: check_cases(checks),
            },
        ],
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

    #[test]
    fn checks_are_cases_failed_with_evidence_and_skipped_when_off() {
        let check = |name: &str, passed: bool, enabled: bool| CheckResult {
            name: name.into(),
            passed,
            enabled,
            count: u64::from(!passed),
            limit: "==0".into(),
            evidence: format!("{name} evidence"),
            examples: vec!["peer r-1: close 1006".into()],
        };
        let cases = check_cases(&[
            check("acks", true, true),
            check("closes", false, true),
            check("lost", true, false),
        ]);
        assert_eq!(cases[0].name, "checks.acks");
        assert!(cases[0].passed());
        match &cases[1].outcome {
            Outcome::Failed { message, text, .. } => {
                assert!(message.contains("checks.closes failed: closes evidence"));
                assert!(text.contains("e.g. peer r-1: close 1006"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(cases[2].outcome, Outcome::Skipped { .. }));
    }
}
