//! Threshold rules (`fanout.p99<50ms`, `delivery.lost==0`) and their verdict.
//!
//! A rule names a number of `summary.json` by a short path: `<latency>.<stat>` for the
//! latencies (`fanout`, `ack`, `connect` and its phases `tcp_connect`, `tls_handshake`,
//! `ws_upgrade`, `welcome`, `presence`, `direct`, `schedule_lag`, `reconnect`,
//! `system_fanout`; stats `count min p50 p90 p99 p999 max mean`), `errors.total`,
//! `errors.<code>`, `closes.total`, `closes.<code>`, `valid` (1 or 0), or any numeric
//! field by its JSON path (`delivery.lost`, `throughput.deliveries_per_s`,
//! `harness.cpu_percent`, `tls.handshakes.resumed`, `tls.by_version.TLSv1.2`). Latency
//! limits need a unit (`us`, `ms`, `s`); other limits may end in `%` (divided by 100).

use serde_json::Value;

use crate::metrics::Metric;
use crate::report::ThresholdResult;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error(
        "invalid threshold \"{0}\": write METRIC OP VALUE, e.g. fanout.p99<50ms or delivery.lost==0 (OP is one of < <= > >= == !=)"
    )]
    Syntax(String),
    #[error("invalid threshold \"{rule}\": {why}")]
    Value { rule: String, why: String },
    #[error("invalid threshold \"{rule}\": unknown metric `{metric}`; {hint}")]
    Metric {
        rule: String,
        metric: String,
        hint: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => (actual - limit).abs() < 1e-9,
            Op::Ne => (actual - limit).abs() >= 1e-9,
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    pub metric: String,
    pub op: Op,
    /// The limit in the metric's own unit (µs for latencies).
    pub limit: f64,
    pub latency: bool,
}

const STATS: [&str; 8] = ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"];
const GROUPS: [&str; 12] = [
    "delivery",
    "rest",
    "tls",
    "directs",
    "throughput",
    "connections",
    "harness",
    "expectations",
    "errors",
    "closes",
    "peers",
    "duration_s",
];

fn is_latency(metric: &str) -> Option<(Metric, &str)> {
    let (m, stat) = metric.split_once('.')?;
    let m = Metric::from_name(m)?;
    STATS.contains(&stat).then_some((m, stat))
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, ThresholdError> {
        let t = text.trim();
        let syntax = || ThresholdError::Syntax(text.to_owned());
        let cut = t.find(['<', '>', '=', '!']).ok_or_else(syntax)?;
        let metric = t[..cut].trim().to_owned();
        let rest = &t[cut..];
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|r| (op, r.trim())))
        .ok_or_else(syntax)?;
        if metric.is_empty() || rest.is_empty() {
            return Err(syntax());
        }
        if !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return Err(syntax());
        }
        check_metric(&metric).map_err(|hint| ThresholdError::Metric {
            rule: text.to_owned(),
            metric: metric.clone(),
            hint,
        })?;
        let latency = is_latency(&metric).is_some_and(|(_, stat)| stat != "count");
        let limit = if latency {
            parse_time_us(rest).map_err(|why| ThresholdError::Value {
                rule: text.to_owned(),
                why,
            })?
        } else {
            parse_plain(rest).map_err(|why| ThresholdError::Value {
                rule: text.to_owned(),
                why,
            })?
        };
        Ok(Rule {
            text: t.to_owned(),
            metric,
            op,
            limit,
            latency,
        })
    }

    /// The number this rule checks, from the summary JSON.
    pub fn actual(&self, summary: &Value) -> Option<f64> {
        if let Some((m, stat)) = is_latency(&self.metric) {
            let key = if m == Metric::ScheduleLag {
                summary.get("schedule_lag_us")
            } else {
                summary
                    .get("latency")
                    .and_then(|l| l.get(format!("{}_us", m.name())))
            };
            return key?.get(stat)?.as_f64();
        }
        let mut parts = self.metric.split('.');
        let first = parts.next()?;
        if first == "valid" && self.metric == "valid" {
            return summary
                .get("valid")?
                .as_bool()
                .map(|v| f64::from(u8::from(v)));
        }
        if (first == "errors" || first == "closes")
            && let Some(key) = parts.next()
        {
            let map = summary.get(first)?.as_object()?;
            if key == "total" {
                return Some(map.values().filter_map(Value::as_f64).sum::<f64>() + 0.0);
            }
            return Some(map.get(key).and_then(Value::as_f64).unwrap_or(0.0));
        }
        let rest: Vec<&str> = parts.collect();
        let v = match walk(summary.get(first)?, &rest) {
            Some(v) => v,
            // The TLS tables list only what was negotiated: a version never seen counted 0.
            None if first == "tls"
                && rest.len() >= 2
                && matches!(rest[0], "by_version" | "by_cipher" | "by_group") =>
            {
                summary.get("tls")?.get(rest[0])?;
                return Some(0.0);
            }
            None => return None,
        };
        match v {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            other => other.as_f64(),
        }
    }

    pub fn evaluate(&self, summary: &Value) -> ThresholdResult {
        let actual = self.actual(summary);
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

/// Follows `path` down from `v`. A key may itself hold dots (`TLSv1.3` in `tls.by_version`),
/// so the longest key that exists wins.
fn walk<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    (1..=path.len())
        .rev()
        .find_map(|n| walk(v.get(path[..n].join("."))?, &path[n..]))
}

/// Evaluates every rule; unknown metrics fail (with `actual: null`).
pub fn evaluate(rules: &[String], summary: &Value) -> Vec<ThresholdResult> {
    rules
        .iter()
        .map(|r| match Rule::parse(r) {
            Ok(rule) => rule.evaluate(summary),
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

fn check_metric(metric: &str) -> Result<(), String> {
    let hint = || {
        format!(
            "use <latency>.<stat> with latency one of {} and stat one of {}, or errors.total, closes.<code>, valid, delivery.lost, throughput.deliveries_per_s, …",
            Metric::ALL.map(|m| m.name()).join(" "),
            STATS.join(" ")
        )
    };
    if metric == "valid" || is_latency(metric).is_some() {
        return Ok(());
    }
    let first = metric.split('.').next().unwrap_or_default();
    if Metric::from_name(first).is_some() {
        return Err(format!("unknown statistic; use one of {}", STATS.join(" ")));
    }
    if first == "errors" || first == "closes" {
        return if metric.split('.').count() == 2 {
            Ok(())
        } else {
            Err("use errors.total, errors.<code>, closes.total or closes.<code>".into())
        };
    }
    if !GROUPS.contains(&first) {
        return Err(hint());
    }
    // Check the path against the schema of an empty summary.
    let mut schema = serde_json::to_value(crate::report::Summary::default()).unwrap_or(Value::Null);
    if first == "rest" {
        // Present only in runs with a [[rest]] population.
        schema["rest"] =
            serde_json::to_value(crate::load::rest::RestReport::default()).unwrap_or(Value::Null);
    }
    if first == "tls" {
        // Present only in wss:// runs.
        schema["tls"] =
            serde_json::to_value(crate::report::TlsSummary::default()).unwrap_or(Value::Null);
    }
    let mut v = &schema;
    for p in metric.split('.') {
        match v.get(p) {
            Some(next) => v = next,
            // Per-population maps are keyed by names only known at run time.
            None if v.is_object() && v.as_object().is_some_and(|o| o.is_empty()) => return Ok(()),
            None => {
                return Err(format!(
                    "`{p}` is not a field of summary.json here; see docs/LOAD.md"
                ));
            }
        }
    }
    if v.is_number() || v.is_boolean() {
        Ok(())
    } else {
        Err("that names a group, not a number; add the field, e.g. delivery.lost".into())
    }
}

/// `50ms`, `1.5s`, `800us`, `800µs` → µs.
fn parse_time_us(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a number with a unit"))?;
    let factor = match unit.trim() {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "" => {
            return Err(format!(
                "`{t}` needs a unit for a latency: us, ms or s (e.g. {t}ms)"
            ));
        }
        other => return Err(format!("unknown unit `{other}` in `{t}`: use us, ms or s")),
    };
    Ok(n * factor)
}

fn parse_plain(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return p
            .trim()
            .parse::<f64>()
            .map(|v| v / 100.0)
            .map_err(|_| format!("`{t}` is not a percentage"));
    }
    t.parse::<f64>()
        .map_err(|_| format!("`{t}` is not a number (time units only apply to latencies)"))
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
