//! The one rule grammar behind every pass/fail number: run thresholds (`--threshold`,
//! `[thresholds]`), the tolerances of the built-in checks (`[checks]`, `--allow`) and
//! `stampede compare --fail-on`.
//!
//! A rule is `METRIC OP [SIGN]NUMBER[SUFFIX]`:
//! - `OP` is one of `< <= > >= == !=`;
//! - `NUMBER` may be `true` / `false` (1 / 0);
//! - `SUFFIX` is a time unit (`us`, `µs`, `ms`, `s`) or `%`.
//!
//! What a sign and a `%` mean depends on who reads the rule, and each reader says so:
//! a run has one summary, so [`Limit::absolute`] reads `-5` as minus five and `0.1%` as
//! 0.001; compare has two, so a sign there means "change from BASE" (`+10%` relative,
//! `+5ms` absolute).
//!
//! `METRIC` is a path into summary.json or a short form ([`candidates`]): `fanout.p99` is
//! `latency.fanout_us.p99`, `lost` is `delivery.lost`, `p99.9` is `p999`. Values come from
//! [`flatten`]ed summaries ([`value_at`]), where booleans count 1/0, `errors.total` sums a
//! table, and a code absent from a sparse table (`errors.X`, `closes.X`, …) counts 0.
//!
//! Pure: no I/O. Imports nothing of the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Comparison operator.
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
    /// Longest first, so `<=` is never read as `<` followed by `=`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

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

    /// Whether `lhs OP rhs` holds. Whole numbers (counts, µs) compare exactly; fractions
    /// with a relative tolerance of 1e-9, so `0.1 + 0.2 == 0.3`. Infinities (a change from
    /// a zero baseline) are never close to a finite bound.
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        let whole = lhs.fract() == 0.0 && rhs.fract() == 0.0;
        let close = lhs == rhs
            || (!whole
                && lhs.is_finite()
                && rhs.is_finite()
                && (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(rhs.abs()).max(1.0));
        match self {
            Op::Gt => lhs > rhs && !close,
            Op::Ge => lhs > rhs || close,
            Op::Lt => lhs < rhs && !close,
            Op::Le => lhs < rhs || close,
            Op::Eq => close,
            Op::Ne => !close,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A time unit written after a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Us,
    Ms,
    S,
}

impl Unit {
    pub fn micros(self) -> f64 {
        match self {
            Unit::Us => 1.0,
            Unit::Ms => 1e3,
            Unit::S => 1e6,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Us => "us",
            Unit::Ms => "ms",
            Unit::S => "s",
        }
    }
}

/// What follows the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    None,
    Unit(Unit),
    Percent,
}

/// The right-hand side of a rule, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// `Some(1.0)` for a leading `+`, `Some(-1.0)` for `-`.
    pub sign: Option<f64>,
    /// The number without its sign (`true` is 1, `false` 0).
    pub number: f64,
    pub suffix: Suffix,
}

impl Limit {
    /// The value for a reader with one summary: the signed number, a `%` divided by 100,
    /// a time unit converted to µs.
    pub fn absolute(&self) -> f64 {
        let n = self.number * self.sign.unwrap_or(1.0);
        match self.suffix {
            Suffix::None => n,
            Suffix::Percent => n / 100.0,
            Suffix::Unit(u) => n * u.micros(),
        }
    }

    pub fn unit(&self) -> Option<Unit> {
        match self.suffix {
            Suffix::Unit(u) => Some(u),
            _ => None,
        }
    }
}

/// A rule split into its parts; what the parts mean is the reader's (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// As written, trimmed (names JUnit test cases and report rows).
    pub text: String,
    /// As written; resolve it with [`candidates`].
    pub metric: String,
    pub op: Op,
    pub limit: Limit,
}

/// Why rule text does not parse. The reader wraps it with its own syntax line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

impl Rule {
    /// Parses `METRIC OP VALUE`.
    pub fn parse(text: &str) -> Result<Rule, SyntaxError> {
        let t = text.trim();
        let cut = t
            .find(['<', '>', '=', '!'])
            .ok_or_else(|| SyntaxError("no comparison operator (>, <, >=, <=, ==, !=)".into()))?;
        let metric = t[..cut].trim();
        if metric.is_empty() {
            return Err(SyntaxError("no metric before the operator".into()));
        }
        if !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(SyntaxError(format!(
                "metric `{metric}` may hold only letters, digits, `.`, `_` and `-`"
            )));
        }
        let (op, limit) = parse_condition(&t[cut..])?;
        Ok(Rule {
            text: t.to_owned(),
            metric: metric.to_owned(),
            op,
            limit,
        })
    }
}

/// Parses `OP VALUE` (a rule without its metric, as `[thresholds]` values and check
/// tolerances are written).
pub fn parse_condition(text: &str) -> Result<(Op, Limit), SyntaxError> {
    let t = text.trim();
    let (op, rest) = Op::ALL
        .into_iter()
        .find_map(|(s, op)| t.strip_prefix(s).map(|r| (op, r.trim())))
        .ok_or_else(|| {
            SyntaxError(format!(
                "`{t}` does not start with a comparison operator (>, <, >=, <=, ==, !=)"
            ))
        })?;
    Ok((op, parse_limit(rest)?))
}

fn parse_limit(text: &str) -> Result<Limit, SyntaxError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(SyntaxError("nothing after the operator".into()));
    }
    if let Some(b) = match rest {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    } {
        return Ok(Limit {
            sign: None,
            number: f64::from(u8::from(b)),
            suffix: Suffix::None,
        });
    }
    let sign = match rest.as_bytes()[0] {
        b'+' => Some(1.0),
        b'-' => Some(-1.0),
        _ => None,
    };
    if sign.is_some() {
        rest = rest[1..].trim_start();
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(end);
    let number: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| SyntaxError(format!("`{}` is not a number", text.trim())))?;
    let suffix = match suffix.trim() {
        "" => Suffix::None,
        "%" => Suffix::Percent,
        "us" | "µs" => Suffix::Unit(Unit::Us),
        "ms" => Suffix::Unit(Unit::Ms),
        "s" => Suffix::Unit(Unit::S),
        other => {
            return Err(SyntaxError(format!(
                "unknown unit `{other}` in `{}`: use us, ms or s (or %)",
                text.trim()
            )));
        }
    };
    Ok(Limit {
        sign,
        number,
        suffix,
    })
}

/// Candidate summary paths for a metric as written, most specific first:
/// `fanout.p99` → `latency.fanout_us.p99`; `lag.p99` → `schedule_lag_us.p99`;
/// `lost` → `delivery.lost`; `deliveries_per_s` → `throughput.deliveries_per_s`;
/// `p99.9` → `p999`, `median` → `p50`.
pub fn candidates(metric: &str) -> Vec<String> {
    let m = metric.replace("p99.99", "p9999").replace("p99.9", "p999");
    let m = m.replace(".median", ".p50");
    let mut out = vec![m.clone()];
    if let Some((head, rest)) = m.split_once('.') {
        let head = head.strip_suffix("_us").unwrap_or(head);
        let head = if head == "fan-out" || head == "fan_out" {
            "fanout"
        } else {
            head
        };
        out.push(format!("latency.{head}_us.{rest}"));
        out.push(format!("{head}_us.{rest}"));
        out.push(format!("latency.{head}.{rest}"));
        if head == "lag" {
            out.push(format!("schedule_lag_us.{rest}"));
        }
    }
    out.push(format!("delivery.{m}"));
    out.push(format!("throughput.{m}"));
    out
}

/// Tables that list only what occurred (error and close codes, frame kinds, failure
/// kinds, negotiated TLS parameters): a key absent from a run counted 0.
pub fn is_sparse(path: &str) -> bool {
    [
        "errors.",
        "closes.",
        "unexpected_frames.",
        "connections.failures.",
        "tls.by_",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// A path holding µs (a segment ends in `_us`).
pub fn is_micros(path: &str) -> bool {
    path.split('.').any(|seg| seg.ends_with("_us"))
}

/// A path holding ms (a segment ends in `_ms`).
pub fn is_millis(path: &str) -> bool {
    path.split('.').any(|seg| seg.ends_with("_ms"))
}

/// How many of a time unit make one of the path's own unit; `None` when the path holds
/// no time (a count, a ratio), where a unit is a mistake.
pub fn unit_scale(path: &str, unit: Unit) -> Option<f64> {
    if is_micros(path) {
        Some(unit.micros())
    } else if is_millis(path) {
        Some(unit.micros() / 1e3)
    } else {
        None
    }
}

/// Numeric leaves of a summary by dotted path; booleans count as 1 and 0. List items are
/// keyed by their `name` when they have one, else by index. Keys may hold dots
/// (`tls.by_version.TLSv1.3`).
pub fn flatten(v: &Value) -> BTreeMap<String, f64> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, f64>) {
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.insert(prefix.to_string(), x);
                }
            }
            Value::Bool(b) => {
                out.insert(prefix.to_string(), if *b { 1.0 } else { 0.0 });
            }
            Value::Object(o) => {
                for (k, v) in o {
                    walk(v, &join(k), out);
                }
            }
            Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let key = item
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string());
                    walk(item, &join(&key), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", &mut out);
    out
}

/// Tables whose `.total` is the sum of their entries.
const TOTALS: [&str; 4] = [
    "errors",
    "closes",
    "unexpected_frames",
    "connections.failures",
];

/// The number at `path` in a flattened summary: the value itself; for `errors.total`
/// (and the other tables of [`TOTALS`]) the sum of the table; for a key absent from a
/// sparse table, 0 when the run has that table (a `wss://` run's `tls.by_version.X`;
/// the code tables always). `None`: the run has no such number.
pub fn value_at(flat: &BTreeMap<String, f64>, path: &str) -> Option<f64> {
    if let Some(v) = flat.get(path) {
        return Some(*v);
    }
    if let Some(table) = path.strip_suffix(".total")
        && TOTALS.contains(&table)
    {
        let prefix = format!("{table}.");
        return Some(
            flat.range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| *v)
                .sum::<f64>()
                + 0.0,
        );
    }
    if !is_sparse(path) {
        return None;
    }
    if path.starts_with("tls.") {
        return flat
            .range("tls.".to_owned()..)
            .next()
            .filter(|(k, _)| k.starts_with("tls."))
            .map(|_| 0.0);
    }
    Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_form() {
        let r = Rule::parse(" fanout.p99 > +5ms ").unwrap();
        assert_eq!((r.metric.as_str(), r.op), ("fanout.p99", Op::Gt));
        assert_eq!(
            r.limit,
            Limit {
                sign: Some(1.0),
                number: 5.0,
                suffix: Suffix::Unit(Unit::Ms)
            }
        );
        assert_eq!(r.text, "fanout.p99 > +5ms");
        let r = Rule::parse("delivery.loss_ratio<0.1%").unwrap();
        assert_eq!(r.limit.absolute(), 0.001);
        assert_eq!(Rule::parse("x>-5").unwrap().limit.absolute(), -5.0);
        assert_eq!(Rule::parse("x>=1.5s").unwrap().limit.absolute(), 1.5e6);
        assert_eq!(Rule::parse("valid==false").unwrap().limit.absolute(), 0.0);
        assert_eq!(Rule::parse("valid==true").unwrap().limit.absolute(), 1.0);
        assert_eq!(Rule::parse("a<=2").unwrap().op, Op::Le);
        assert_eq!(Rule::parse("a!=2").unwrap().op, Op::Ne);
        assert_eq!(parse_condition("<50ms").unwrap().0, Op::Lt);
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        let e = |t: &str| Rule::parse(t).unwrap_err().0;
        assert!(e("fanout.p99").contains("no comparison operator"));
        assert!(e(">5").contains("no metric"));
        assert!(e("fanout.p99>").contains("nothing after"));
        assert!(e("fan out>1").contains("may hold only"));
        assert!(e("x>abc").contains("not a number"));
        assert!(e("x>5 parsecs").contains("unknown unit `parsecs`"));
        assert!(e("x>inf").contains("not a number"));
        assert!(parse_condition("50ms").unwrap_err().0.contains("operator"));
    }

    #[test]
    fn comparisons_are_exact_for_counts_and_tolerant_for_fractions() {
        assert!(Op::Eq.holds(0.1 + 0.2, 0.3));
        assert!(!Op::Eq.holds(1e12, 1e12 + 1.0));
        assert!(Op::Gt.holds(1e12 + 1.0, 1e12));
        assert!(!Op::Gt.holds(3.0, 3.0));
        assert!(Op::Ge.holds(3.0, 3.0));
        assert!(Op::Gt.holds(f64::INFINITY, 1000.0));
        assert!(Op::Ne.holds(1.0, 0.0));
    }

    #[test]
    fn short_forms_and_sparse_tables() {
        let c = candidates("fanout.p99.9");
        assert!(c.contains(&"latency.fanout_us.p999".to_owned()), "{c:?}");
        assert!(candidates("lag.p99").contains(&"schedule_lag_us.p99".to_owned()));
        assert!(candidates("lost").contains(&"delivery.lost".to_owned()));
        let flat = flatten(&json!({
            "errors": {"a": 2, "b": 3}, "closes": {},
            "valid": true, "checks": [{"name": "acks", "passed": false}],
            "tls": {"by_version": {"TLSv1.3": 5}}
        }));
        assert_eq!(value_at(&flat, "errors.total"), Some(5.0));
        assert_eq!(value_at(&flat, "closes.total"), Some(0.0));
        assert_eq!(value_at(&flat, "closes.1006"), Some(0.0));
        assert_eq!(value_at(&flat, "valid"), Some(1.0));
        assert_eq!(value_at(&flat, "checks.acks.passed"), Some(0.0));
        assert_eq!(value_at(&flat, "tls.by_version.TLSv1.3"), Some(5.0));
        assert_eq!(value_at(&flat, "tls.by_version.TLSv1.2"), Some(0.0));
        assert_eq!(value_at(&flat, "delivery.lost"), None);
        let plain = flatten(&json!({"errors": {}}));
        assert_eq!(value_at(&plain, "tls.by_version.TLSv1.2"), None);
        assert_eq!(unit_scale("latency.fanout_us.p99", Unit::Ms), Some(1e3));
        assert_eq!(unit_scale("rest.x.response_ms", Unit::S), Some(1e3));
        assert_eq!(unit_scale("delivery.lost", Unit::Ms), None);
    }
}
