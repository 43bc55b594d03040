//! `stampede compare BASE_DIR NEW_DIR`: a side-by-side table of every numeric metric of two
//! runs, a combined HTML page (overlaid percentile distributions), and an exit code from
//! `--fail-on` rules, so CI can gate a release on "p99 no more than 10% worse and zero loss".
//!
//! Both runs are read as `serde_json::Value` (through [`crate::report::html::RunDir`]) and
//! flattened into dotted metric paths (`latency.fanout_us.p99`), so this works on any summary
//! the load engine writes, old or new. Rule text → [`Rule`] → evaluated against both runs.
//!
//! Each `--fail-on` rule is a *failure condition*: the comparison fails (exit 1) when it is true.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use crate::junit;
use crate::report::html::{self, RunDir, esc, fmt_ms, fmt_num};
use crate::report::plot::{self, Series};
use crate::rules::{self, Suffix, is_micros, is_millis, is_sparse};
pub use crate::rules::{Op, Unit, flatten};

/// The forms a rule may take, quoted in every syntax error.
pub const RULE_SYNTAX: &str = "METRIC>+N%  METRIC<-N%  (relative change from BASE), METRIC>+N  METRIC<-N  (absolute change; ms, us or s allowed for latencies), METRIC>N  METRIC<N  METRIC>=N  METRIC<=N  METRIC==N  METRIC!=N  (value of NEW); e.g. 'fanout.p99>+10%', 'fanout.p99>+5ms', 'lost>0', 'valid==false'";

/// Flags of `stampede compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directory of the baseline (holds summary.json).
    #[arg(value_name = "BASE_DIR")]
    pub base: PathBuf,
    /// Run directory of the candidate compared against the baseline.
    #[arg(value_name = "NEW_DIR")]
    pub new: PathBuf,
    /// Fail (exit 1) when this condition is true, e.g. 'fanout.p99>+10%' (p99 grew by more than
    /// 10%), 'fanout.p99>+5ms', 'lost>0', 'valid==false'. Repeatable. Metrics are summary.json
    /// paths or short forms: fanout.p99 = latency.fanout_us.p99, lost = delivery.lost.
    #[arg(long = "fail-on", value_name = "RULE", value_parser = Rule::parse_arg)]
    pub fail_on: Vec<Rule>,
    /// Also write a JUnit XML file with one testcase per --fail-on rule.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the combined HTML page here [default: NEW_DIR/compare.html].
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Do not write the HTML page.
    #[arg(long, conflicts_with = "html")]
    pub no_html: bool,
}

/// A rule that could not be parsed or resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid rule `{rule}`: {problem}; expected one of: {RULE_SYNTAX}")]
    Syntax { rule: String, problem: String },
    #[error("rule `{rule}`: unknown metric `{metric}` (in neither summary.json){hint}")]
    UnknownMetric {
        rule: String,
        metric: String,
        hint: String,
    },
    #[error("rule `{rule}`: metric `{path}` is missing from the {which} run's summary.json")]
    Missing {
        rule: String,
        path: String,
        which: &'static str,
    },
    #[error(
        "rule `{rule}`: unit `{unit}` given, but `{path}` is not a latency (only paths with a _us or _ms part take a time unit)"
    )]
    UnitOnCount {
        rule: String,
        unit: String,
        path: String,
    },
}

/// What the metric is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rhs {
    /// `METRIC>N`: the value in NEW.
    Value(f64),
    /// `METRIC>+N`: NEW − BASE (signed).
    Delta(f64),
    /// `METRIC>+N%`: (NEW − BASE) / |BASE| × 100 (signed).
    Percent(f64),
}

/// One `--fail-on` rule: the shared grammar ([`crate::rules`]) read with a baseline, so a
/// sign means "change from BASE".
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule as the user wrote it (names the JUnit testcase).
    pub text: String,
    pub metric: String,
    pub op: Op,
    pub rhs: Rhs,
    pub unit: Option<Unit>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    /// Parses `METRIC OP RHS`; see [`RULE_SYNTAX`].
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let syntax = |problem: String| RuleError::Syntax {
            rule: text.to_string(),
            problem,
        };
        let r = rules::Rule::parse(text).map_err(|e| syntax(e.0))?;
        let l = r.limit;
        let rhs = match (l.sign, l.suffix) {
            (Some(s), Suffix::Percent) => Rhs::Percent(s * l.number),
            (None, Suffix::Percent) => {
                return Err(syntax(
                    "a percentage is a change from BASE, so it needs a sign: +10% or -10%".into(),
                ));
            }
            (Some(s), _) => Rhs::Delta(s * l.number),
            (None, _) => Rhs::Value(l.number),
        };
        Ok(Rule {
            text: r.text,
            metric: r.metric,
            op: r.op,
            rhs,
            unit: l.unit(),
        })
    }

    /// `value_parser` for clap: errors carry the expected syntax.
    pub fn parse_arg(text: &str) -> Result<Rule, String> {
        Rule::parse(text).map_err(|e| e.to_string())
    }
}

/// Candidate paths for a metric as written, most specific first (see
/// [`crate::rules::candidates`]).
pub fn aliases(metric: &str) -> Vec<String> {
    rules::candidates(metric)
}

/// The result of one rule against two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rule: Rule,
    /// Resolved summary path.
    pub path: String,
    pub base: f64,
    pub new: f64,
    /// True when the failure condition holds: the comparison fails.
    pub triggered: bool,
    /// The summary holds a boolean here (shown as true/false, not 1/0).
    pub boolean: bool,
}

impl Outcome {
    /// A value of this metric as people read it: ms for latencies, true/false for flags.
    pub fn show(&self, v: f64) -> String {
        if v.is_nan() {
            "—".into()
        } else if self.boolean {
            (v != 0.0).to_string()
        } else if is_micros(&self.path) {
            format!("{} ms", fmt_ms(v))
        } else {
            fmt_num(v)
        }
    }

    /// The change from BASE to NEW: `+20.2 ms, +100.5%`, or `—` for flags and missing values.
    pub fn change(&self) -> String {
        if self.boolean || self.base.is_nan() {
            return "—".into();
        }
        let delta = self.new - self.base;
        let sign = if delta >= 0.0 { "+" } else { "" };
        let d = if is_micros(&self.path) {
            format!("{sign}{} ms", fmt_ms(delta))
        } else {
            format!("{sign}{}", fmt_num(delta))
        };
        format!("{d}, {}", fmt_pct(self.base, self.new))
    }

    /// `latency.fanout_us.p99: base 20.1 ms, new 40.3 ms (+20.2 ms, +100.5%)`.
    pub fn describe(&self) -> String {
        format!(
            "{}: base {}, new {} ({})",
            self.path,
            self.show(self.base),
            self.show(self.new),
            self.change()
        )
    }
}

/// Relative change as text: `+12.5%`, `0%`, or `new` when BASE is 0.
pub fn fmt_pct(base: f64, new: f64) -> String {
    match pct(base, new) {
        Some(p) => format!("{}{:.1}%", if p >= 0.0 { "+" } else { "" }, p),
        None => "new".into(),
    }
}

fn pct(base: f64, new: f64) -> Option<f64> {
    if base == new {
        Some(0.0)
    } else if base == 0.0 {
        None
    } else {
        Some((new - base) / base.abs() * 100.0)
    }
}

/// Resolves the rule's metric in two flattened summaries and evaluates it.
pub fn evaluate(
    rule: &Rule,
    base: &BTreeMap<String, f64>,
    new: &BTreeMap<String, f64>,
) -> Result<Outcome, RuleError> {
    let candidates = aliases(&rule.metric);
    let known = |p: &str| {
        [base, new]
            .iter()
            .any(|m| m.contains_key(p) || rules::value_at(m, p).is_some() && !is_sparse(p))
    };
    let path = candidates
        .iter()
        .find(|p| known(p))
        .or_else(|| candidates.iter().find(|p| is_sparse(p)))
        .cloned()
        .ok_or_else(|| {
            let last = rule.metric.rsplit('.').next().unwrap_or(&rule.metric);
            let near: Vec<&String> = new
                .keys()
                .chain(base.keys())
                .filter(|k| k.ends_with(&format!(".{last}")) || k.as_str() == last)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .take(8)
                .collect();
            let hint = if near.is_empty() {
                "; short forms: fanout.p99, ack.p50, connect.max, presence.p999, lost, delivered"
                    .to_string()
            } else {
                format!(
                    "; did you mean {}",
                    near.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            RuleError::UnknownMetric {
                rule: rule.text.clone(),
                metric: rule.metric.clone(),
                hint,
            }
        })?;
    let get = |m: &BTreeMap<String, f64>, which: &'static str| {
        rules::value_at(m, &path)
            // A code or TLS parameter absent from a run counted 0, even in a run without
            // the table (compare reads summaries of any age).
            .or(is_sparse(&path).then_some(0.0))
            .ok_or_else(|| RuleError::Missing {
                rule: rule.text.clone(),
                path: path.clone(),
                which,
            })
    };
    let new_v = get(new, "NEW")?;
    // A rule on NEW's value alone needs no baseline figure.
    let base_v = match rule.rhs {
        Rhs::Value(_) => get(base, "BASE").unwrap_or(f64::NAN),
        _ => get(base, "BASE")?,
    };
    let scale = match rule.unit {
        None => 1.0,
        Some(u) => match rules::unit_scale(&path, u) {
            Some(scale) => scale,
            None => {
                return Err(RuleError::UnitOnCount {
                    rule: rule.text.clone(),
                    unit: u.as_str().to_string(),
                    path,
                });
            }
        },
    };
    let triggered = match rule.rhs {
        Rhs::Value(n) => rule.op.holds(new_v, n * scale),
        Rhs::Delta(d) => rule.op.holds(new_v - base_v, d * scale),
        Rhs::Percent(p) => {
            let change = pct(base_v, new_v).unwrap_or(if new_v > base_v {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            });
            rule.op.holds(change, p)
        }
    };
    Ok(Outcome {
        rule: rule.clone(),
        path,
        base: base_v,
        new: new_v,
        triggered,
        boolean: false,
    })
}

/// The JUnit cases of a comparison: one per rule, failed when the rule triggered.
pub fn junit_cases(outcomes: &[Outcome]) -> Vec<junit::Case> {
    outcomes
        .iter()
        .map(|o| {
            let outcome = if o.triggered {
                junit::Outcome::Failed {
                    message: format!("fail-on rule `{}` triggered", o.rule.text),
                    kind: None,
                    text: o.describe(),
                }
            } else {
                junit::Outcome::Passed
            };
            junit::Case {
                output: Some(o.describe()),
                ..junit::Case::new(o.rule.text.clone(), outcome)
            }
        })
        .collect()
}

/// `stampede compare`: 0 every rule holds, 1 a rule triggered; errors (exit 2) for missing
/// directories, unreadable summaries and rules naming unknown metrics.
pub fn main(args: CompareArgs) -> anyhow::Result<i32> {
    let base = RunDir::load(&args.base)?;
    let new = RunDir::load(&args.new)?;
    for (which, run) in [("BASE", &base), ("NEW", &new)] {
        for w in &run.warnings {
            eprintln!("warning: {which}: {w}");
        }
    }
    let fb = flatten(&base.summary);
    let fnew = flatten(&new.summary);
    // Resolve every rule before writing anything: a typo is "could not run", not a verdict.
    let mut outcomes = args
        .fail_on
        .iter()
        .map(|r| evaluate(r, &fb, &fnew))
        .collect::<Result<Vec<_>, _>>()?;
    for o in &mut outcomes {
        o.boolean = [&new.summary, &base.summary]
            .iter()
            .any(|s| html::lookup(s, &o.path).is_some_and(Value::is_boolean));
    }

    print!("{}", text_table(&base, &new, &fb, &fnew));
    if !args.no_html {
        let out = args
            .html
            .clone()
            .unwrap_or_else(|| args.new.join("compare.html"));
        html::write_page(&out, &render_html(&base, &new, &fb, &fnew, &outcomes)?)?;
        println!("\nwrote {}", out.display());
    }
    if let Some(path) = &args.junit {
        junit::write(
            path,
            "stampede",
            &[junit::Suite {
                name: "stampede.compare".into(),
                cases: junit_cases(&outcomes),
            }],
        )?;
        println!("wrote {}", path.display());
    }
    if outcomes.is_empty() {
        return Ok(0);
    }
    println!();
    let mut failed = 0;
    for o in &outcomes {
        if o.triggered {
            failed += 1;
            println!("FAIL  {}  → {}", o.rule.text, o.describe());
            eprintln!("fail-on rule `{}` triggered: {}", o.rule.text, o.describe());
        } else {
            println!("ok    {}  → {}", o.rule.text, o.describe());
        }
    }
    println!("{} of {} fail-on rules triggered", failed, outcomes.len());
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Every numeric metric side by side, as aligned plain text.
fn text_table(
    base: &RunDir,
    new: &RunDir,
    fb: &BTreeMap<String, f64>,
    fnew: &BTreeMap<String, f64>,
) -> String {
    let keys: BTreeSet<&String> = fb.keys().chain(fnew.keys()).collect();
    let rows: Vec<[String; 5]> = keys
        .into_iter()
        .map(|k| {
            let b = fb.get(k).copied();
            let n = fnew.get(k).copied();
            let cell = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "—".into());
            let (d, p) = match (b, n) {
                (Some(b), Some(n)) => {
                    let d = n - b;
                    (
                        format!("{}{}", if d > 0.0 { "+" } else { "" }, fmt_num(d)),
                        fmt_pct(b, n),
                    )
                }
                _ => ("—".into(), "—".into()),
            };
            [k.clone(), cell(b), cell(n), d, p]
        })
        .collect();
    let header = ["metric", "base", "new", "delta", "delta %"];
    let mut w = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BASE {} ({})\nNEW  {} ({})\n",
        base.dir.display(),
        base.scenario_name(),
        new.dir.display(),
        new.scenario_name()
    );
    let line = |cells: &[String; 5]| {
        let mut s = format!("{:<w0$}", cells[0], w0 = w[0]);
        for i in 1..5 {
            let pad = w[i] - cells[i].chars().count();
            s.push_str("  ");
            s.push_str(&" ".repeat(pad));
            s.push_str(&cells[i]);
        }
        s
    };
    let _ = writeln!(out, "{}", line(&header.map(str::to_string)));
    let _ = writeln!(out, "{}", "-".repeat(w.iter().sum::<usize>() + 8));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// Whether an increase of this metric is bad news (latency, loss, errors), for colouring.
fn higher_is_worse(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    (is_micros(&p) || is_millis(&p) && !p.contains("duration"))
        || [
            "lost",
            "duplicated",
            "reordered",
            "unexpected",
            "errors.",
            "closes.",
            "dropped",
        ]
        .iter()
        .any(|w| p.contains(w))
}

fn render_html(
    base: &RunDir,
    new: &RunDir,
    fb: &BTreeMap<String, f64>,
    fnew: &BTreeMap<String, f64>,
    outcomes: &[Outcome],
) -> anyhow::Result<String> {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Run comparison — {} vs {}</h1>",
        esc(&base.scenario_name()),
        esc(&new.scenario_name())
    );
    b.push_str("<table><tr><th></th><th>directory</th><th>scenario</th><th class=\"n\">peers</th><th class=\"n\">duration (s)</th><th>validity</th></tr>\n");
    for (label, run) in [("BASE", base), ("NEW", new)] {
        let s = &run.summary;
        let (valid, reason) = html::verdict(s);
        let v = match valid {
            Some(true) => "<span class=\"ok\">valid</span>".to_string(),
            Some(false) => format!(
                "<span class=\"bad\">invalid</span> {}",
                esc(reason.as_deref().unwrap_or(""))
            ),
            None => "—".into(),
        };
        let _ = writeln!(
            b,
            "<tr><td><b>{label}</b></td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{v}</td></tr>",
            esc(&run.dir.display().to_string()),
            esc(&run.scenario_name()),
            esc(&s.get("peers").map(html::fmt_value).unwrap_or("—".into())),
            esc(&s
                .get("duration_s")
                .map(html::fmt_value)
                .unwrap_or("—".into())),
        );
    }
    b.push_str("</table>\n");

    if !outcomes.is_empty() {
        let failed = outcomes.iter().filter(|o| o.triggered).count();
        let badge = if failed > 0 {
            format!(
                "<span class=\"badge bad\">{failed} of {} FAIL-ON RULES TRIGGERED</span>",
                outcomes.len()
            )
        } else {
            format!(
                "<span class=\"badge ok\">ALL {} RULES HOLD</span>",
                outcomes.len()
            )
        };
        let _ = writeln!(b, "<h2>Gate</h2><p>{badge}</p>");
        b.push_str("<table><tr><th>fail-on rule</th><th>result</th><th>metric</th><th class=\"n\">base</th><th class=\"n\">new</th><th class=\"n\">change</th></tr>\n");
        for o in outcomes {
            let (cls, txt) = if o.triggered {
                ("bad", "FAIL")
            } else {
                ("ok", "ok")
            };
            let _ = writeln!(
                b,
                "<tr><td><code>{}</code></td><td class=\"{cls}\">{txt}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&o.rule.text),
                esc(&o.path),
                o.show(o.base),
                o.show(o.new),
                o.change()
            );
        }
        b.push_str("</table>\n");
    }

    b.push_str("<h2>Latency percentile distributions, BASE vs NEW</h2>\n<div class=\"charts\">\n");
    let base_stats = base.latency_stats();
    let new_stats = new.latency_stats();
    let names: Vec<&String> = base
        .hlogs
        .keys()
        .chain(new.hlogs.keys())
        .chain(base_stats.keys())
        .chain(new_stats.keys())
        .collect();
    for m in html::metric_order(names) {
        let core = html::CORE_METRICS.contains(&m.as_str());
        let mut series = Vec::new();
        let mut sources = Vec::new();
        for (label, run, stats) in [("BASE", base, &base_stats), ("NEW", new, &new_stats)] {
            if let Some(log) = run.hlogs.get(&m).filter(|l| !l.total.is_empty()) {
                let h = &log.total;
                series.push(Series {
                    name: format!(
                        "{label}: p50 {} · p99 {} · max {} ms",
                        fmt_ms(h.value_at_quantile(0.5) as f64),
                        fmt_ms(h.value_at_quantile(0.99) as f64),
                        fmt_ms(h.max() as f64)
                    ),
                    points: plot::percentile_points(h, 1000.0),
                });
                sources.push(format!("{label} from its .hlog"));
            } else if let Some((_, v)) = stats.get(&m) {
                let pts = html::points_from_stats(v);
                if !pts.is_empty() {
                    series.push(Series {
                        name: format!("{label} (summary percentiles only)"),
                        points: pts,
                    });
                    sources.push(format!("{label} from summary.json"));
                }
            }
            // Keep BASE first and NEW second so their colours never swap between charts.
            if series.len() < if label == "BASE" { 1 } else { 2 } {
                series.push(Series {
                    name: format!("{label}: no samples"),
                    points: Vec::new(),
                });
            }
        }
        let title = html::metric_title(&m);
        if series.iter().all(|s| s.points.is_empty()) {
            if !core {
                continue;
            }
            let _ = writeln!(
                b,
                "<div class=\"note\">{}: no samples in either run.</div>",
                esc(&title)
            );
            continue;
        }
        let svg = plot::percentile_svg(&title, "ms", &series)?;
        b.push_str(&html::figure(
            &svg,
            &series,
            &format!("Sources: {}.", sources.join("; ")),
        ));
    }
    b.push_str("</div>\n");

    b.push_str("<h2>Every metric</h2>\n<p class=\"sub\">Paths into summary.json; latencies in µs (<code>_us</code>). Red: worse (a latency, loss or error count went up); green: better.</p>\n");
    b.push_str("<table><tr><th>metric</th><th class=\"n\">base</th><th class=\"n\">new</th><th class=\"n\">delta</th><th class=\"n\">delta %</th></tr>\n");
    let keys: BTreeSet<&String> = fb.keys().chain(fnew.keys()).collect();
    for k in keys {
        let bv = fb.get(k).copied();
        let nv = fnew.get(k).copied();
        let cell = |v: Option<f64>| v.map(fmt_num).unwrap_or_else(|| "—".into());
        let (d, p, cls) = match (bv, nv) {
            (Some(x), Some(y)) => {
                let cls = if x == y || !higher_is_worse(k) {
                    "n"
                } else if y > x {
                    "n worse"
                } else {
                    "n better"
                };
                let d = y - x;
                (
                    format!("{}{}", if d > 0.0 { "+" } else { "" }, fmt_num(d)),
                    fmt_pct(x, y),
                    cls,
                )
            }
            _ => ("—".into(), "—".into(), "n"),
        };
        let _ = writeln!(
            b,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{cls}\">{d}</td><td class=\"{cls}\">{p}</td></tr>",
            esc(k),
            cell(bv),
            cell(nv)
        );
    }
    b.push_str("</table>\n");
    Ok(html::page(
        &format!(
            "stampede compare — {} vs {}",
            base.scenario_name(),
            new.scenario_name()
        ),
        &b,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> BTreeMap<String, f64> {
        flatten(&v)
    }

    #[test]
    fn parses_every_form() {
        let r = Rule::parse("fanout.p99>+10%").unwrap();
        assert_eq!(
            (r.metric.as_str(), r.op, r.rhs, r.unit),
            ("fanout.p99", Op::Gt, Rhs::Percent(10.0), None)
        );
        let r = Rule::parse(" fanout.p99 > +5ms ").unwrap();
        assert_eq!(
            (r.op, r.rhs, r.unit),
            (Op::Gt, Rhs::Delta(5.0), Some(Unit::Ms))
        );
        assert_eq!(
            Rule::parse("deliveries_per_s<-10%").unwrap().rhs,
            Rhs::Percent(-10.0)
        );
        assert_eq!(
            Rule::parse("fanout.p99<50ms").unwrap().rhs,
            Rhs::Value(50.0)
        );
        assert_eq!(Rule::parse("lost==0").unwrap().op, Op::Eq);
        assert_eq!(Rule::parse("lost!=0").unwrap().op, Op::Ne);
        assert_eq!(Rule::parse("lost>=1").unwrap().op, Op::Ge);
        assert_eq!(Rule::parse("ack.p50<=2.5").unwrap().rhs, Rhs::Value(2.5));
        assert_eq!(Rule::parse("valid==false").unwrap().rhs, Rhs::Value(0.0));
        assert_eq!(Rule::parse("p.x>1.5us").unwrap().unit, Some(Unit::Us));
    }

    #[test]
    fn syntax_errors_quote_the_syntax() {
        for bad in [
            "fanout.p99",
            ">5",
            "fanout.p99>",
            "fanout.p99>10%",
            "fanout.p99>+10 parsecs",
            "fan out>1",
            "x>abc",
        ] {
            let e = Rule::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("METRIC>+N%") && e.contains(bad.trim()),
                "{bad}: {e}"
            );
        }
        assert!(
            Rule::parse("fanout.p99>10%")
                .unwrap_err()
                .to_string()
                .contains("needs a sign")
        );
    }

    #[test]
    fn aliases_reach_summary_paths() {
        let m = flat(
            json!({"latency": {"fanout_us": {"p99": 1.0, "p999": 2.0}}, "delivery": {"lost": 0}, "schedule_lag_us": {"max": 3}}),
        );
        let path = |metric: &str| {
            evaluate(&Rule::parse(&format!("{metric}>0")).unwrap(), &m, &m)
                .unwrap()
                .path
        };
        assert_eq!(path("fanout.p99"), "latency.fanout_us.p99");
        assert_eq!(path("fanout_us.p99.9"), "latency.fanout_us.p999");
        assert_eq!(path("lost"), "delivery.lost");
        assert_eq!(path("latency.fanout_us.p99"), "latency.fanout_us.p99");
        assert_eq!(path("schedule_lag.max"), "schedule_lag_us.max");
        assert_eq!(path("errors.rate_limited"), "errors.rate_limited");
        let t = flat(json!({"throughput": {"deliveries_per_s": 10.0}}));
        let r = Rule::parse("deliveries_per_s<-10%").unwrap();
        assert_eq!(
            evaluate(&r, &t, &t).unwrap().path,
            "throughput.deliveries_per_s"
        );
    }

    #[test]
    fn connect_phases_and_tls_resolve() {
        let base = flat(json!({
            "latency": {"tcp_connect_us": {"p99": 100}, "tls_handshake_us": {"p99": 2_000}},
            "tls": {"handshakes": {"resumed": 0}, "by_version": {"TLSv1.3": 200}}
        }));
        let new = flat(json!({
            "latency": {"tcp_connect_us": {"p99": 120}, "tls_handshake_us": {"p99": 2_100}},
            "tls": {"handshakes": {"resumed": 150}, "by_version": {"TLSv1.3": 150, "TLSv1.2": 50}}
        }));
        let out = |r: &str| evaluate(&Rule::parse(r).unwrap(), &base, &new).unwrap();
        assert_eq!(
            out("tcp_connect.p99>+10%").path,
            "latency.tcp_connect_us.p99"
        );
        assert!(out("tcp_connect.p99>+10%").triggered); // +20%
        assert!(!out("tls_handshake.p99>+10%").triggered); // +5%
        assert!(!out("tls_handshake.p99>+1ms").triggered);
        assert!(!out("tls.handshakes.resumed<-10%").triggered);
        // TLS 1.2 appeared: absent from BASE counts 0.
        assert!(out("tls.by_version.TLSv1.2>0").triggered);
        assert_eq!(out("tls.by_version.TLSv1.2>+0").base, 0.0);
    }

    #[test]
    fn evaluates_relative_absolute_and_value_rules() {
        let base = flat(
            json!({"latency": {"fanout_us": {"p99": 20_000}}, "delivery": {"lost": 0}, "valid": true}),
        );
        let new = flat(
            json!({"latency": {"fanout_us": {"p99": 23_000}}, "delivery": {"lost": 2}, "valid": false, "errors": {"4011": 1}}),
        );
        let t = |r: &str| {
            evaluate(&Rule::parse(r).unwrap(), &base, &new)
                .unwrap()
                .triggered
        };
        assert!(t("fanout.p99>+10%")); // +15%
        assert!(!t("fanout.p99>+20%"));
        assert!(t("fanout.p99>+2ms"));
        assert!(!t("fanout.p99>+3ms")); // exactly +3 ms is not more than 3 ms
        assert!(t("fanout.p99>=+3ms"));
        assert!(t("fanout.p99>0.02s"));
        assert!(!t("fanout.p99>50ms"));
        assert!(t("lost>0"));
        assert!(t("lost!=0"));
        assert!(!t("lost==0"));
        assert!(t("valid==false"));
        assert!(t("errors.4011>0"));
        assert!(!t("closes.1006>0"), "absent close codes count 0");
        assert!(!t("fanout.p99<-10%"));
        // A zero baseline: any growth is an infinite relative change.
        assert!(t("lost>+1000%"));
        let same = evaluate(&Rule::parse("fanout.p99>+0%").unwrap(), &base, &base).unwrap();
        assert!(!same.triggered);
    }

    #[test]
    fn resolution_errors_are_specific() {
        let m = flat(json!({"latency": {"fanout_us": {"p99": 1}}, "delivery": {"lost": 0}}));
        let e = evaluate(&Rule::parse("fanuot.p99>1").unwrap(), &m, &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown metric `fanuot.p99`") && e.contains("latency.fanout_us.p99"),
            "{e}"
        );
        let e = evaluate(&Rule::parse("lost>+1ms").unwrap(), &m, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a latency"), "{e}");
        let empty = BTreeMap::new();
        let e = evaluate(&Rule::parse("fanout.p99>+1%").unwrap(), &empty, &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing from the BASE"), "{e}");
    }

    #[test]
    fn flattens_lists_by_name_and_bools() {
        let m = flat(
            json!({"valid": true, "populations": [{"name": "talkers", "lost": 1}, {"lost": 2}], "scenario": "x"}),
        );
        assert_eq!(m.get("valid"), Some(&1.0));
        assert_eq!(m.get("populations.talkers.lost"), Some(&1.0));
        assert_eq!(m.get("populations.1.lost"), Some(&2.0));
        assert!(!m.contains_key("scenario"));
    }

    #[test]
    fn junit_has_one_case_per_rule() {
        let base = flat(json!({"latency": {"fanout_us": {"p99": 10}}, "delivery": {"lost": 0}}));
        let new = flat(json!({"latency": {"fanout_us": {"p99": 20}}, "delivery": {"lost": 0}}));
        let outcomes: Vec<Outcome> = ["lost>0", "fanout.p99>+10%"]
            .iter()
            .map(|r| evaluate(&Rule::parse(r).unwrap(), &base, &new).unwrap())
            .collect();
        let suite = junit::Suite {
            name: "stampede.compare".into(),
            cases: junit_cases(&outcomes),
        };
        let xml = junit::render("stampede", &[suite], None).unwrap();
        assert!(
            xml.contains("tests=\"2\"")
                && xml.contains("failures=\"1\"")
                && xml.contains("fanout.p99&gt;+10%"),
            "{xml}"
        );
    }

    #[test]
    fn totals_sum_their_table() {
        let base = flat(json!({"errors": {}}));
        let new = flat(json!({"errors": {"a": 1, "b": 2}}));
        let o = evaluate(&Rule::parse("errors.total>2").unwrap(), &base, &new).unwrap();
        assert_eq!((o.path.as_str(), o.base, o.new), ("errors.total", 0.0, 3.0));
        assert!(o.triggered);
    }
}
