//! Built-in checks: whatever misbehaviour the harness observes fails the run (exit 1),
//! in every scenario, unless the scenario tolerates it (`[checks]`, `--allow`; see
//! [`config`]). Thresholds are what a scenario *asks* for; checks are what any correct
//! server must do, so a server that acks nothing, delivers nothing, closes connections
//! or floods foreign frames never passes.
//!
//! Each check counts one kind of misbehaviour after subtracting what the scenario causes
//! itself (4002 closes with expiring tokens, 1009 with oversized frames, 4020 with REST
//! kicks, `peer_not_found` for directs to peers that churn) and what it allows, holds the
//! count to its tolerance (`==0` unless relaxed; `<1%` compares the count with the check's
//! base), and says what it saw: counts by code or kind, and the first examples.
//!
//! Pure: reads a [`Summary`], the run's examples and plan facts, and the scenario.

mod calls;
pub mod config;
mod findings;

use crate::report::{CheckResult, Examples, Planned, Summary};
use crate::rules::{self, Suffix};

use super::scenario::Scenario;
use findings::{
    Finding, aborted, acks, closes, closes_allowed, connections, delivery, duplicated, errors,
    expiry, lost, oversized, reordered, rest, unexpected,
};

/// Every check, in report order.
pub const NAMES: [&str; 15] = [
    "connections",
    "closes",
    "acks",
    "delivery",
    "lost",
    "duplicated",
    "reordered",
    "unexpected",
    "errors",
    "aborted",
    "rest",
    "expiry",
    "oversized",
    "calls",
    "signalling",
];

/// Checks that take an `allow` list, and what it lists.
pub const ALLOW_LISTS: [(&str, &str); 4] = [
    ("closes", "close codes"),
    ("errors", "error codes"),
    ("connections", "failure kinds (connections.failures)"),
    ("unexpected", "frame kinds (unexpected_frames)"),
];

/// What the checks read besides the summary.
pub struct Inputs<'a> {
    pub scenario: &'a Scenario,
    pub summary: &'a Summary,
    pub examples: &'a Examples,
    pub planned: &'a Planned,
}

/// Runs every check.
pub fn evaluate(i: &Inputs) -> Vec<CheckResult> {
    NAMES
        .iter()
        .map(|&name| {
            let relax = i.scenario.checks.get(name).cloned().unwrap_or_default();
            let allow: Vec<&str> = relax.allow.iter().map(String::as_str).collect();
            let finding = match name {
                "connections" => connections(i, &allow, closes_allowed(i)),
                "closes" => closes(i, &allow),
                "acks" => acks(i),
                "delivery" => delivery(i),
                "lost" => lost(i),
                "duplicated" => duplicated(i),
                "reordered" => reordered(i),
                "unexpected" => unexpected(i, &allow),
                "errors" => errors(i, &allow),
                "aborted" => aborted(i),
                "rest" => rest(i),
                "expiry" => expiry(i),
                "calls" => calls::calls(i),
                "signalling" => calls::signalling(i),
                _ => oversized(i),
            };
            verdict(name, &relax, finding)
        })
        .collect()
}

fn verdict(name: &str, relax: &config::Relax, f: Option<Finding>) -> CheckResult {
    let Some(f) = f else {
        return CheckResult {
            name: name.into(),
            passed: true,
            enabled: !relax.off,
            limit: "==0".into(),
            evidence: format!("not applicable: {}", not_applicable(name)),
            ..Default::default()
        };
    };
    if relax.off {
        return CheckResult {
            name: name.into(),
            passed: true,
            enabled: false,
            count: f.count,
            limit: "off".into(),
            evidence: format!("off (scenario [checks] or --allow); saw: {}", f.evidence),
            examples: f.examples,
        };
    }
    let limit = relax.tolerance.clone().unwrap_or_else(|| "==0".into());
    // Validated with the scenario; a tolerance that still does not parse fails the check.
    let passed = match rules::parse_condition(&limit) {
        Ok((op, l)) if l.suffix == Suffix::Percent => {
            let share = if f.base == 0 {
                0.0
            } else {
                f.count as f64 / f.base as f64
            };
            op.holds(share, l.absolute())
        }
        Ok((op, l)) => op.holds(f.count as f64, l.absolute()),
        Err(_) => false,
    };
    CheckResult {
        name: name.into(),
        passed,
        enabled: true,
        count: f.count,
        limit,
        evidence: f.evidence,
        examples: if passed { Vec::new() } else { f.examples },
    }
}

fn not_applicable(name: &str) -> &'static str {
    match name {
        "rest" => "no [[rest]] population",
        "expiry" => "no population with expiring tokens ([population.token])",
        "oversized" => "no population sends oversized frames ([population.oversize])",
        "calls" | "signalling" => "no population makes calls ([population.call])",
        _ => "nothing to check in this run",
    }
}

#[cfg(test)]
mod tests;
