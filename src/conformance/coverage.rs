//! `--coverage`: every SPEC rule id with the cases citing it, and every server-side MUST
//! that no case covers, marked uncovered or not observable on the wire (with why).
//!
//! The rule table is `conformance/spec-rules.toml`, derived from SPEC.md and compiled in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Deserialize;

use super::case::{Case, Level};

/// The rule table, compiled in.
pub const RULES_TOML: &str = include_str!("../../conformance/spec-rules.toml");

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

/// The `--coverage` report and whether every observable server-side MUST is covered.
pub fn render(rules: &[Rule], cases: &[&Case]) -> (String, bool) {
    let table = compute(rules, cases);
    let mut out = String::new();
    let _ = writeln!(out, "{:<10} {:<7} {:<7} cases", "rule", "level", "side");
    for (rule, status) in &table {
        let what = match status {
            Status::Covered(ids) => {
                let shown: Vec<&str> = ids.iter().take(6).map(String::as_str).collect();
                let more = if ids.len() > 6 {
                    format!(" (+{} more)", ids.len() - 6)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            }
            Status::Uncovered => "UNCOVERED".into(),
            Status::NotObservable(why) => format!("not observable: {why}"),
            Status::NotRequired => match &rule.why {
                Some(why) => format!("— ({why})"),
                None => "—".into(),
            },
        };
        let _ = writeln!(
            out,
            "{:<10} {:<7} {:<7} {what}",
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
    (out, uncovered.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

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
