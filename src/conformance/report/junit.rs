//! JUnit XML: one test suite per area, one test case per conformance case, the SPEC ids,
//! level and `[choice]` flag as properties.

use std::collections::BTreeMap;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::super::verdict::{RunOutcome, Verdict};

pub fn render(run: &RunOutcome) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("stampede conform");
    report.set_time(run.duration);
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for r in &run.results {
        let status = match r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::NonStrict => TestCaseStatus::success(),
            Verdict::Skip => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.detail.as_str());
                s
            }
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.detail.as_str());
                s.set_type(format!("{} {}", r.level, r.spec.join(",")));
                if let Some(f) = &r.failure {
                    let mut text = format!(
                        "{}\nexpected: {}\nactual:   {}\n",
                        f.step, f.expected, f.actual
                    );
                    for super::super::verdict::Transcript { label: peer, lines } in &f.seen {
                        text.push_str(&format!("{peer}:\n"));
                        for l in lines {
                            text.push_str(l);
                            text.push('\n');
                        }
                    }
                    s.set_description(text);
                }
                s
            }
        };
        let mut case = TestCase::new(r.id.as_str(), status);
        case.set_classname(format!("conform.{}", r.area));
        case.set_time(r.duration);
        for rule in &r.spec {
            case.add_property(Property::new("spec", rule.as_str()));
        }
        case.add_property(Property::new("level", r.level.to_string()));
        case.add_property(Property::new("choice", r.choice.to_string()));
        case.add_property(Property::new("verdict", r.verdict.as_str()));
        if r.verdict == Verdict::NonStrict {
            case.set_system_out(format!("non-strict: {}", r.detail));
        }
        suites
            .entry(r.area.as_str())
            .or_insert_with(|| TestSuite::new(format!("conform.{}", r.area)))
            .add_test_case(case);
    }
    report.add_test_suites(suites.into_values());
    report.to_string()
}
