//! The JSON report: `{"cases":[{"id","spec","level","choice","verdict","detail"}],
//! "summary":{"passed","failed","skipped"}}` plus a few extra fields (title, area,
//! duration, the failure's parts, non-strict count, pacing cost).

use serde::Serialize;

use super::super::verdict::{Failure, RunOutcome, Summary};

#[derive(Serialize)]
struct JsonCase<'a> {
    id: &'a str,
    spec: &'a [String],
    level: String,
    choice: bool,
    verdict: &'static str,
    detail: &'a str,
    title: &'a str,
    area: &'a str,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a Failure>,
}

#[derive(Serialize)]
struct JsonSummary {
    #[serde(flatten)]
    counts: Summary,
    duration_ms: u64,
    pacing_ms: u64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    target: &'a str,
    strict: bool,
    cases: Vec<JsonCase<'a>>,
    summary: JsonSummary,
}

pub fn render(run: &RunOutcome) -> String {
    let report = JsonReport {
        target: &run.target,
        strict: run.strict,
        cases: run
            .results
            .iter()
            .map(|r| JsonCase {
                id: &r.id,
                spec: &r.spec,
                level: r.level.to_string(),
                choice: r.choice,
                verdict: r.verdict.as_str(),
                detail: &r.detail,
                title: &r.title,
                area: &r.area,
                duration_ms: r.duration.as_millis() as u64,
                failure: r.failure.as_ref(),
            })
            .collect(),
        summary: JsonSummary {
            counts: run.summary(),
            duration_ms: run.duration.as_millis() as u64,
            pacing_ms: run.pacing.as_millis() as u64,
        },
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
