//! The one JUnit XML writer (through `quick-junit`): `run --junit` (thresholds and
//! built-in checks), `compare --junit` (fail-on rules) and `conform --junit` (cases) all
//! describe their verdicts as [`Suite`]s of [`Case`]s and render them here, so every CI
//! system reads the same shape: one testcase per rule, check or case; a failure carries
//! a one-line message naming what broke and a text with the evidence.
//!
//! Imports nothing of the crate.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

/// How one case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    /// `message`: one line naming what broke; `kind` fills the `type` attribute; `text`
    /// the element's body (expected, actual, evidence).
    Failed {
        message: String,
        kind: Option<String>,
        text: String,
    },
    Skipped {
        message: String,
    },
}

/// One testcase.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    /// Defaults to the suite's name.
    pub classname: Option<String>,
    pub outcome: Outcome,
    /// `<system-out>`: what was observed, for passing cases too.
    pub output: Option<String>,
    pub time: Option<Duration>,
    pub properties: Vec<(String, String)>,
}

impl Case {
    /// A case with just a name and an outcome.
    pub fn new(name: impl Into<String>, outcome: Outcome) -> Case {
        Case {
            name: name.into(),
            classname: None,
            outcome,
            output: None,
            time: None,
            properties: Vec::new(),
        }
    }

    pub fn passed(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// One testsuite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

/// Renders `suites` as one JUnit document named `report`.
pub fn render(
    report: &str,
    suites: &[Suite],
    time: Option<Duration>,
) -> Result<String, quick_junit::SerializeError> {
    let mut out = Report::new(report);
    if let Some(t) = time {
        out.set_time(t);
    }
    for s in suites {
        let mut suite = TestSuite::new(s.name.as_str());
        for c in &s.cases {
            let status = match &c.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Failed {
                    message,
                    kind,
                    text,
                } => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(message.as_str());
                    if let Some(k) = kind {
                        st.set_type(k.as_str());
                    }
                    if !text.is_empty() {
                        st.set_description(text.as_str());
                    }
                    st
                }
                Outcome::Skipped { message } => {
                    let mut st = TestCaseStatus::skipped();
                    st.set_message(message.as_str());
                    st
                }
            };
            let mut tc = TestCase::new(c.name.as_str(), status);
            tc.set_classname(c.classname.as_deref().unwrap_or(s.name.as_str()));
            if let Some(t) = c.time {
                tc.set_time(t);
            }
            for (k, v) in &c.properties {
                tc.add_property(Property::new(k.as_str(), v.as_str()));
            }
            if let Some(o) = &c.output {
                tc.set_system_out(o.as_str());
            }
            suite.add_test_case(tc);
        }
        out.add_test_suite(suite);
    }
    out.to_string()
}

/// Renders and writes `suites` to `path`; the error names the file.
pub fn write(path: &std::path::Path, report: &str, suites: &[Suite]) -> anyhow::Result<()> {
    let xml = render(report, suites, None)?;
    std::fs::write(path, xml)
        .map_err(|e| anyhow::anyhow!("cannot write JUnit file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_testcase_per_case_failures_carry_message_and_text() {
        let suites = [
            Suite {
                name: "a".into(),
                cases: vec![
                    Case::new("lost>0", Outcome::Passed),
                    Case::new(
                        "fanout.p99>+10%",
                        Outcome::Failed {
                            message: "triggered".into(),
                            kind: None,
                            text: "base 1, new 2".into(),
                        },
                    ),
                ],
            },
            Suite {
                name: "b".into(),
                cases: vec![Case::new(
                    "x",
                    Outcome::Skipped {
                        message: "not run".into(),
                    },
                )],
            },
        ];
        let xml = render("stampede", &suites, None).unwrap();
        assert!(
            xml.contains("tests=\"3\"") && xml.contains("failures=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("fanout.p99&gt;+10%"), "{xml}");
        assert!(
            xml.contains("base 1, new 2") && xml.contains("<skipped"),
            "{xml}"
        );
        assert!(xml.contains("classname=\"a\""), "{xml}");
    }
}
