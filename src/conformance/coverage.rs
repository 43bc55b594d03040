//! `--coverage`: every SPEC rule id with the cases citing it and the reference server's
//! fault switches that break it, and every server-side MUST that no case covers, marked
//! uncovered or not observable on the wire (with why).
//!
//! The rule table is `conformance/spec-rules.toml`, derived from SPEC.md and compiled in.
//! Faults name their rules in `server/faults.rs` (through `embedded::fault_rules`); a
//! server MUST no fault can break has a written reason in `conformance/no-fault.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Deserialize;

use super::case::{Case, Level};

/// The rule table, compiled in.
pub const RULES_TOML: &str = include_str!("../../conformance/spec-rules.toml");
/// Why no fault switch breaks some server MUSTs, compiled in.
pub const NO_FAULT_TOML: &str = include_str!("../../conformance/no-fault.toml");

/// A server MUST that no fault switch breaks, and why none can be built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFault {
    pub id: String,
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFaultFile {
    #[serde(rename = "rule", default)]
    rules: Vec<NoFault>,
}

/// Parses the compiled-in table of rules without a fault.
pub fn no_fault() -> anyhow::Result<Vec<NoFault>> {
    let file: NoFaultFile = toml::from_str(NO_FAULT_TOML)
        .map_err(|e| anyhow::anyhow!("conformance/no-fault.toml (compiled in): {e}"))?;
    Ok(file.rules)
}

/// How a rule stands with respect to fault switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultStatus {
    /// Broken by these fault switches.
    Faults(Vec<String>),
    /// No fault can break it, for this reason.
    Reason(String),
    /// A server MUST with neither: work left.
    NoneYet,
    /// Not a wire-observable server MUST: faults are not asked for.
    NotAsked,
}

/// The fault status of every rule, in table order.
pub fn fault_status(
    rules: &[Rule],
    faults: &[(String, Vec<String>)],
    reasons: &[NoFault],
) -> Vec<FaultStatus> {
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (fault, broken) in faults {
        for r in broken {
            by_rule.entry(r.as_str()).or_default().push(fault.clone());
        }
    }
    rules
        .iter()
        .map(|r| match by_rule.get(r.id.as_str()) {
            Some(f) => FaultStatus::Faults(f.clone()),
            None => match reasons.iter().find(|n| n.id == r.id) {
                Some(n) => FaultStatus::Reason(n.why.clone()),
                None if r.side == "server" && r.level == "must" && r.observable => {
                    FaultStatus::NoneYet
                }
                None => FaultStatus::NotAsked,
            },
        })
        .collect()
}

/// A SPEC requirement as the rule table describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    /// `must`, `should`, `may` or `info`.
    pub level: String,
    /// `server` (the server's obligation), `client` (SDK behaviour) or `config`
    /// (the reference server's configuration model).
    pub side: String,
    /// Whether a client can observe the behaviour on the wire.
    pub observable: bool,
    #[serde(default)]
    pub choice: bool,
    pub summary: String,
    /// Why the rule cannot be observed (or needs no case).
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(rename = "rule")]
    rules: Vec<Rule>,
}

/// Parses the compiled-in rule table.
pub fn rules() -> anyhow::Result<Vec<Rule>> {
    let file: RuleFile = toml::from_str(RULES_TOML)
        .map_err(|e| anyhow::anyhow!("conformance/spec-rules.toml (compiled in): {e}"))?;
    Ok(file.rules)
}

/// Rule ids, for validating the `spec` field of cases.
pub fn rule_ids() -> anyhow::Result<BTreeSet<String>> {
    Ok(rules()?.into_iter().map(|r| r.id).collect())
}

/// How one rule is covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Covered(Vec<String>),
    /// A server-side MUST no case cites, though it is observable.
    Uncovered,
    NotObservable(String),
    /// Not a server-side MUST and not cited (clients, config, SHOULD/MAY).
    NotRequired,
}

/// Coverage of every rule, in table order.
pub fn compute(rules: &[Rule], cases: &[&Case]) -> Vec<(Rule, Status)> {
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in cases {
        for r in &c.spec {
            by_rule.entry(r.as_str()).or_default().push(c.id.clone());
        }
    }
    rules
        .iter()
        .map(|r| {
            let status = match by_rule.get(r.id.as_str()) {
                Some(ids) => Status::Covered(ids.clone()),
                None if r.side == "server" && r.level == "must" && r.observable => {
                    Status::Uncovered
                }
                None if r.side == "server" && r.level == "must" => Status::NotObservable(
                    r.why
                        .clone()
                        .unwrap_or_else(|| "not observable on the wire".into()),
                ),
                None => Status::NotRequired,
            };
            (r.clone(), status)
        })
        .collect()
}

/// The `--coverage` report and whether every observable server-side MUST is covered by
/// a case. Faults come from the reference server's switches.
pub fn render(rules: &[Rule], cases: &[&Case]) -> (String, bool) {
    let faults = crate::embedded::fault_rules();
    // The table is compiled in and checked by a unit test; a broken one shows no reasons.
    let reasons = no_fault().unwrap_or_default();
    render_with(rules, cases, &faults, &reasons)
}

fn shorten(items: &[String], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let more = if items.len() > max {
        format!(" (+{} more)", items.len() - max)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// [`render`] with the fault table given.
pub fn render_with(
    rules: &[Rule],
    cases: &[&Case],
    faults: &[(String, Vec<String>)],
    reasons: &[NoFault],
) -> (String, bool) {
    let table = compute(rules, cases);
    let fstatus = fault_status(rules, faults, reasons);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<7} {:<7} cases  ·  faults",
        "rule", "level", "side"
    );
    for ((rule, status), fs) in table.iter().zip(&fstatus) {
        let what = match status {
            Status::Covered(ids) => shorten(ids, 6),
            Status::Uncovered => "UNCOVERED".into(),
            Status::NotObservable(why) => format!("not observable: {why}"),
            Status::NotRequired => match &rule.why {
                Some(why) => format!("— ({why})"),
                None => "—".into(),
            },
        };
        let faults = match fs {
            FaultStatus::Faults(f) => format!("  ·  {}", shorten(f, 4)),
            FaultStatus::Reason(why) => format!("  ·  no fault: {why}"),
            FaultStatus::NoneYet => "  ·  NO FAULT YET".into(),
            FaultStatus::NotAsked => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<7} {:<7} {what}{faults}",
            rule.id, rule.level, rule.side
        );
    }
    let server_musts: Vec<_> = table
        .iter()
        .filter(|(r, _)| r.side == "server" && r.level == "must")
        .collect();
    let observable = server_musts.iter().filter(|(r, _)| r.observable).count();
    let covered = server_musts
        .iter()
        .filter(|(r, s)| r.observable && matches!(s, Status::Covered(_)))
        .count();
    let uncovered: Vec<&str> = table
        .iter()
        .filter(|(_, s)| *s == Status::Uncovered)
        .map(|(r, _)| r.id.as_str())
        .collect();
    let not_observable: Vec<&str> = server_musts
        .iter()
        .filter(|(r, s)| !r.observable && !matches!(s, Status::Covered(_)))
        .map(|(r, _)| r.id.as_str())
        .collect();
    let cited: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| c.spec.iter().map(String::as_str))
        .collect();
    let musts = cases.iter().filter(|c| c.level == Level::Must).count();
    let _ = writeln!(
        out,
        "\n{} rules, {} cited by {} cases ({} must). Server-side MUSTs: {} observable, {} covered{}; {} not observable on the wire ({}).",
        table.len(),
        cited.len(),
        cases.len(),
        musts,
        observable,
        covered,
        if uncovered.is_empty() {
            String::new()
        } else {
            format!(", UNCOVERED: {}", uncovered.join(", "))
        },
        not_observable.len(),
        not_observable.join(", ")
    );
    let asked = |r: &Rule| r.side == "server" && r.level == "must" && r.observable;
    let count = |want: fn(&FaultStatus) -> bool| {
        rules
            .iter()
            .zip(&fstatus)
            .filter(|(r, s)| asked(r) && want(s))
            .count()
    };
    let none_yet: Vec<&str> = rules
        .iter()
        .zip(&fstatus)
        .filter(|(r, s)| asked(r) && **s == FaultStatus::NoneYet)
        .map(|(r, _)| r.id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "Faults: {} switches. Observable server-side MUSTs ({observable}): broken by a fault {}, a written reason why no fault can be built {}, no fault yet {}{}.",
        faults.len(),
        count(|s| matches!(s, FaultStatus::Faults(_))),
        count(|s| matches!(s, FaultStatus::Reason(_))),
        none_yet.len(),
        if none_yet.is_empty() {
            String::new()
        } else {
            format!(" ({})", none_yet.join(", "))
        },
    );
    (out, uncovered.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_reasons_name_known_rules() {
        let ids = rule_ids().unwrap();
        for (fault, rules) in crate::embedded::fault_rules() {
            for r in rules {
                assert!(ids.contains(&r), "fault {fault} names unknown rule {r}");
            }
        }
        let faulted: BTreeSet<String> = crate::embedded::fault_rules()
            .into_iter()
            .flat_map(|(_, r)| r)
            .collect();
        let mut seen = BTreeSet::new();
        for n in no_fault().unwrap() {
            assert!(
                ids.contains(&n.id),
                "no-fault.toml names unknown rule {}",
                n.id
            );
            assert!(
                seen.insert(n.id.clone()),
                "no-fault.toml lists {} twice",
                n.id
            );
            assert!(
                !faulted.contains(&n.id),
                "{} has a fault now; drop it from no-fault.toml",
                n.id
            );
        }
    }

    #[test]
    fn rule_table_parses_and_is_consistent() {
        let rules = rules().unwrap();
        assert!(rules.len() > 250, "{}", rules.len());
        let mut seen = BTreeSet::new();
        for r in &rules {
            assert!(seen.insert(r.id.clone()), "duplicate {}", r.id);
            assert!(
                ["must", "should", "may", "info"].contains(&r.level.as_str()),
                "{}",
                r.id
            );
            assert!(
                ["server", "client", "config"].contains(&r.side.as_str()),
                "{}",
                r.id
            );
            if !r.observable && r.side == "server" && r.level == "must" {
                assert!(r.why.is_some(), "{} needs a why", r.id);
            }
        }
    }
}
