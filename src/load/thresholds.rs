//! Run thresholds (`fanout.p99<50ms`, `delivery.lost==0`) and their verdict, in the one
//! rule grammar of [`crate::rules`].
//!
//! A rule names a number of `summary.json` by its path or a short form: `<latency>.<stat>`
//! for the latencies (`fanout`, `ack`, `connect` and its phases `tcp_connect`,
//! `tls_handshake`, `ws_upgrade`, `welcome`, `presence`, `direct`, `schedule_lag`,
//! `reconnect`, `system_fanout`; stats `count min p50 p90 p99 p999 max mean`),
//! `errors.total`, `errors.<code>`, `closes.total`, `closes.<code>`, `valid` (1 or 0), or
//! any numeric field by its JSON path (`delivery.lost`, `throughput.deliveries_per_s`,
//! `harness.cpu_percent`, `tls.handshakes.resumed`, `tls.by_version.TLSv1.2`), short forms
//! as in compare (`lost` = `delivery.lost`). Paths are checked against the schema of
//! summary.json before the run. Latency limits need a unit (`us`, `ms`, `s`); other
//! limits may end in `%` (divided by 100). A sign is part of the number.

use serde_json::Value;

use crate::metrics::Metric;
use crate::report::ThresholdResult;
use crate::rules;
pub use crate::rules::Op;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error(
        "invalid threshold \"{rule}\": {problem}; write METRIC OP VALUE, e.g. fanout.p99<50ms or delivery.lost==0 (OP is one of < <= > >= == !=)"
    )]
    Syntax { rule: String, problem: String },
    #[error("invalid threshold \"{rule}\": {why}")]
    Value { rule: String, why: String },
    #[error("invalid threshold \"{rule}\": unknown metric `{metric}`; {hint}")]
    Metric {
        rule: String,
        metric: String,
        hint: String,
    },
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    /// As written (`fanout.p99`).
    pub metric: String,
    /// Where it lives in summary.json (`latency.fanout_us.p99`).
    pub path: String,
    pub op: Op,
    /// The limit in the metric's own unit (µs for latencies).
    pub limit: f64,
    pub latency: bool,
}

const STATS: [&str; 8] = ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"];

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, ThresholdError> {
        let r = rules::Rule::parse(text).map_err(|e| ThresholdError::Syntax {
            rule: text.trim().to_owned(),
            problem: e.0,
        })?;
        let path = resolve(&r.metric).map_err(|hint| ThresholdError::Metric {
            rule: r.text.clone(),
            metric: r.metric.clone(),
            hint,
        })?;
        let value_err = |why: String| ThresholdError::Value {
            rule: r.text.clone(),
            why,
        };
        let latency = rules::is_micros(&path) && !path.ends_with(".count");
        // The value as written: metrics hold no operator characters, so the first
        // occurrence of the operator is the operator.
        let at = r.text.find(r.op.as_str()).unwrap_or(0) + r.op.as_str().len();
        let shown = r.text[at..].trim().to_owned();
        let limit = match (latency, r.limit.suffix) {
            (true, rules::Suffix::Unit(_)) => r.limit.absolute(),
            (true, rules::Suffix::None) => {
                return Err(value_err(format!(
                    "`{shown}` needs a unit for a latency: us, ms or s (e.g. {shown}ms)"
                )));
            }
            (true, rules::Suffix::Percent) => {
                return Err(value_err(format!(
                    "`{shown}` is a percentage, but `{path}` is a latency: use us, ms or s"
                )));
            }
            (false, rules::Suffix::Unit(u)) => {
                return Err(value_err(format!(
                    "`{shown}` is not a number for `{path}`: time units ({}) only apply to latencies, and `{path}` is not a latency",
                    u.as_str()
                )));
            }
            (false, _) => r.limit.absolute(),
        };
        Ok(Rule {
            text: r.text,
            metric: r.metric,
            path,
            op: r.op,
            limit,
            latency,
        })
    }

    /// The number this rule checks, from the summary JSON (`None`: the run has none).
    pub fn actual(&self, summary: &Value) -> Option<f64> {
        rules::value_at(&rules::flatten(summary), &self.path)
    }

    pub fn evaluate(&self, summary: &Value) -> ThresholdResult {
        self.evaluate_flat(&rules::flatten(summary))
    }

    fn evaluate_flat(&self, flat: &std::collections::BTreeMap<String, f64>) -> ThresholdResult {
        let actual = rules::value_at(flat, &self.path);
        ThresholdResult {
            rule: self.text.clone(),
            metric: self.metric.clone(),
            op: self.op.as_str().to_owned(),
            limit: self.limit,
            unit: if self.latency {
                "us".into()
            } else {
                String::new()
            },
            actual,
            passed: actual.is_some_and(|a| self.op.holds(a, self.limit)),
        }
    }
}

/// Evaluates every rule; a rule that does not parse fails (with `actual: null`).
pub fn evaluate(rules: &[String], summary: &Value) -> Vec<ThresholdResult> {
    let flat = rules::flatten(summary);
    rules
        .iter()
        .map(|r| match Rule::parse(r) {
            Ok(rule) => rule.evaluate_flat(&flat),
            Err(e) => ThresholdResult {
                rule: r.clone(),
                metric: e.to_string(),
                op: String::new(),
                limit: 0.0,
                unit: String::new(),
                actual: None,
                passed: false,
            },
        })
        .collect()
}

/// The summary.json path `metric` names, checked against the schema of an empty summary;
/// the error is a hint saying what to write instead.
fn resolve(metric: &str) -> Result<String, String> {
    let schema = schema();
    if let Some(path) = rules::candidates(metric)
        .into_iter()
        .find(|c| schema_number(&schema, c).is_ok())
    {
        return Ok(path);
    }
    let first = metric.split('.').next().unwrap_or_default();
    if Metric::from_name(first.strip_suffix("_us").unwrap_or(first)).is_some() {
        return Err(format!("unknown statistic; use one of {}", STATS.join(" ")));
    }
    if first == "errors" || first == "closes" {
        return Err("use errors.total, errors.<code>, closes.total or closes.<code>".into());
    }
    if schema.get(first).is_none() {
        return Err(format!(
            "use <latency>.<stat> with latency one of {} and stat one of {}, or errors.total, closes.<code>, valid, delivery.lost, throughput.deliveries_per_s, …",
            Metric::ALL.map(|m| m.name()).join(" "),
            STATS.join(" ")
        ));
    }
    Err(schema_number(&schema, metric)
        .err()
        .unwrap_or_else(|| "see docs/LOAD.md".into()))
}

/// The schema of summary.json: an empty summary with the optional groups filled in.
fn schema() -> Value {
    let mut schema = serde_json::to_value(crate::report::Summary::default()).unwrap_or(Value::Null);
    // Present only in runs with a [[rest]] population.
    schema["rest"] =
        serde_json::to_value(crate::load::rest::RestReport::default()).unwrap_or(Value::Null);
    // Present only in wss:// runs.
    schema["tls"] =
        serde_json::to_value(crate::report::TlsSummary::default()).unwrap_or(Value::Null);
    // Present only in runs with a [population.call].
    schema["calls"] = serde_json::to_value(crate::report::Calls::default()).unwrap_or(Value::Null);
    schema
}

/// Whether `path` names a number (or flag) of the schema; the error says where it went wrong.
fn schema_number(schema: &Value, path: &str) -> Result<(), String> {
    if let Some(table) = path.strip_suffix(".total")
        && [
            "errors",
            "closes",
            "unexpected_frames",
            "connections.failures",
        ]
        .contains(&table)
    {
        return Ok(());
    }
    let mut v = schema;
    let parts: Vec<&str> = path.split('.').collect();
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        match v.get(p) {
            Some(next) => v = next,
            // Tables keyed at run time (populations, codes, TLS versions, oversize kinds):
            // anything below them may exist.
            None if v.as_object().is_some_and(|o| o.is_empty()) => return Ok(()),
            None => {
                return Err(format!(
                    "`{p}` is not a field of summary.json here; see docs/LOAD.md"
                ));
            }
        }
        i += 1;
    }
    if v.is_number() || v.is_boolean() {
        Ok(())
    } else {
        Err("that names a group, not a number; add the field, e.g. delivery.lost".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary() -> Value {
        json!({
            "latency": {"fanout_us": {"count": 10, "p50": 800, "p99": 40_000}},
            "schedule_lag_us": {"p99": 900},
            "delivery": {"lost": 0, "expected": 100, "loss_ratio": 0.0},
            "errors": {"peer_not_found": 2},
            "closes": {"4011": 3, "1000": 4},
            "valid": true
        })
    }

    #[test]
    fn parses_and_evaluates_rules() {
        let s = summary();
        let pass = |r: &str| Rule::parse(r).unwrap().evaluate(&s).passed;
        assert!(pass("fanout.p99<50ms"));
        assert!(!pass("fanout.p99 < 40ms"));
        assert!(pass("fanout.p99<=40ms"));
        assert!(pass("schedule_lag.p99<1ms"));
        assert!(pass("delivery.lost==0"));
        assert!(pass("delivery.loss_ratio<0.1%"));
        assert!(pass("errors.total==2"));
        assert!(pass("errors.invalid_channel==0"));
        assert!(pass("closes.4011==3"));
        assert!(pass("closes.total>6"));
        assert!(pass("valid==1"));
        assert!(pass("fanout.count>=10"));
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = Rule::parse("fanout.p99 50ms").unwrap_err().to_string();
        assert!(e.contains("METRIC OP VALUE"), "{e}");
        let e = Rule::parse("fanout.p99<50").unwrap_err().to_string();
        assert!(e.contains("needs a unit"), "{e}");
        let e = Rule::parse("fanout.p98<5ms").unwrap_err().to_string();
        assert!(e.contains("unknown statistic"), "{e}");
        let e = Rule::parse("latnecy.p99<5ms").unwrap_err().to_string();
        assert!(e.contains("unknown metric"), "{e}");
        let e = Rule::parse("delivery.lots==0").unwrap_err().to_string();
        assert!(e.contains("`lots`"), "{e}");
        let e = Rule::parse("delivery.lost==0ms").unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn connect_phases_and_tls_are_gated_like_the_rest() {
        let s = json!({
            "latency": {
                "tls_handshake_us": {"count": 200, "p99": 2_700},
                "tcp_connect_us": {"count": 200, "p99": 150},
                "ws_upgrade_us": {"count": 0, "p99": 0}
            },
            "tls": {
                "insecure": false,
                "handshakes": {"total": 200, "full": 200, "resumed": 0, "resumed_ratio": 0.0, "failed": 0},
                "by_version": {"TLSv1.3": 200},
                "by_group": {"X25519MLKEM768": 200}
            }
        });
        let eval = |r: &str| Rule::parse(r).unwrap().evaluate(&s);
        assert!(eval("tls_handshake.p99<50ms").passed);
        assert!(!eval("tls_handshake.p99<1ms").passed);
        assert_eq!(eval("tls_handshake.p99<1ms").unit, "us");
        assert!(eval("tcp_connect.p99<=150us").passed);
        assert!(eval("ws_upgrade.count==0").passed);
        assert!(eval("tls.handshakes.failed==0").passed);
        assert!(!eval("tls.handshakes.resumed>0").passed);
        assert!(eval("tls.handshakes.resumed_ratio<1%").passed);
        assert!(eval("tls.insecure==0").passed);
        // Keys with dots, and values never negotiated.
        assert_eq!(eval("tls.by_version.TLSv1.3==200").actual, Some(200.0));
        assert_eq!(eval("tls.by_version.TLSv1.2==0").actual, Some(0.0));
        assert!(eval("tls.by_group.X25519==0").passed);
        // A ws:// run has no `tls`: a TLS rule has nothing to hold on.
        let plain = summary();
        let r = Rule::parse("tls.handshakes.resumed>0")
            .unwrap()
            .evaluate(&plain);
        assert_eq!(r.actual, None);
        assert!(!r.passed);
        let e = Rule::parse("tls.handshakes.resumd>0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`resumd`"), "{e}");
        let e = Rule::parse("tls.handshakes<5").unwrap_err().to_string();
        assert!(e.contains("names a group"), "{e}");
    }

    #[test]
    fn missing_numbers_fail_the_rule() {
        let r = Rule::parse("ack.p99<5ms").unwrap().evaluate(&summary());
        assert_eq!(r.actual, None);
        assert!(!r.passed);
    }
}
