//! JUnit XML: one test suite per area, one test case per conformance case, the SPEC ids,
//! level and `[choice]` flag as properties; written by the one JUnit writer
//! ([`crate::junit`]).

use std::collections::BTreeMap;

use super::super::verdict::{RunOutcome, Verdict};
use crate::junit::{self, Case, Outcome, Suite};

pub fn render(run: &RunOutcome) -> Result<String, quick_junit::SerializeError> {
    let mut suites: BTreeMap<&str, Suite> = BTreeMap::new();
    for r in &run.results {
        let outcome = match r.verdict {
            Verdict::Pass | Verdict::NonStrict => Outcome::Passed,
            Verdict::Skip => Outcome::Skipped {
                message: r.detail.clone(),
            },
            Verdict::Fail => {
                let mut text = String::new();
                if let Some(f) = &r.failure {
                    text = format!(
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
                }
                Outcome::Failed {
                    message: r.detail.clone(),
                    kind: Some(format!("{} {}", r.level, r.spec.join(","))),
                    text,
                }
            }
        };
        let mut properties: Vec<(String, String)> = r
            .spec
            .iter()
            .map(|rule| ("spec".to_owned(), rule.clone()))
            .collect();
        properties.push(("level".into(), r.level.to_string()));
        properties.push(("choice".into(), r.choice.to_string()));
        properties.push(("verdict".into(), r.verdict.as_str().to_owned()));
        let case = Case {
            name: r.id.clone(),
            classname: Some(format!("conform.{}", r.area)),
            outcome,
            output: (r.verdict == Verdict::NonStrict).then(|| format!("non-strict: {}", r.detail)),
            time: Some(r.duration),
            properties,
        };
        suites
            .entry(r.area.as_str())
            .or_insert_with(|| Suite {
                name: format!("conform.{}", r.area),
                cases: Vec::new(),
            })
            .cases
            .push(case);
    }
    let suites: Vec<Suite> = suites.into_values().collect();
    junit::render("stampede conform", &suites, Some(run.duration))
}
