//! What a capacity search found: `capacity.json` (the stable contract), the text summary,
//! a self-contained `capacity.html` (latency and throughput against load) and JUnit.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::level::TrialResult;
use super::model::{Usl, knee};
use super::search::{Outcome, OutcomeKind};
use super::{CapacityArgs, Vary};
use crate::report::plot::{self, Series};

/// `capacity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Result {
    pub schema: String,
    /// `peers` or `rate`.
    pub varied: Vary,
    /// What the varied unit means.
    pub unit: String,
    pub slos: Vec<String>,
    /// `pass` (capacity bracketed, and at least `--require` when given), `fail` (below
    /// `--require`, or below the first level) or `inconclusive` (generator-bound).
    pub verdict: String,
    /// Why, in one sentence.
    pub reason: String,
    /// Capacity lies in [low, high) of the varied unit.
    pub interval: Interval,
    /// The same interval in deliveries per second (steady-window throughput measured at
    /// the `low` and `high` levels).
    pub deliveries_per_s: Interval,
    pub require: Option<f64>,
    /// The highest level at which throughput kept up with the offered load (≥ 95 %).
    pub knee: Option<f64>,
    /// Universal Scalability Law fit of deliveries/s against the level (≥ 4 levels).
    pub usl: Option<Usl>,
    pub tolerance: f64,
    pub trials_per_level: u32,
    pub levels: Vec<Level>,
}

/// Bounds; `None` is open (below the first level, above the last).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Interval {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// One level with its trials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub level: f64,
    /// The majority: `pass`, `fail`, or `undecided`.
    pub verdict: String,
    pub trials: Vec<TrialResult>,
}

impl Result {
    pub fn new(args: &CapacityArgs, o: Outcome, trials: &[TrialResult]) -> Result {
        let mut levels: Vec<Level> = Vec::new();
        for t in trials {
            match levels.iter_mut().find(|l| l.level == t.level) {
                Some(l) => l.trials.push(t.clone()),
                None => levels.push(Level {
                    level: t.level,
                    verdict: String::new(),
                    trials: vec![t.clone()],
                }),
            }
        }
        levels.sort_by(|a, b| a.level.total_cmp(&b.level));
        for l in &mut levels {
            let n = |v: &str| l.trials.iter().filter(|t| t.verdict == v).count();
            l.verdict = if n("pass") > l.trials.len() / 2 {
                "pass"
            } else if n("fail") > l.trials.len() / 2 {
                "fail"
            } else {
                "undecided"
            }
            .into();
        }
        let mean_dps = |level: Option<f64>| {
            let l = levels.iter().find(|l| Some(l.level) == level)?;
            let ts: Vec<f64> = l.trials.iter().map(|t| t.deliveries_per_s).collect();
            Some(ts.iter().sum::<f64>() / ts.len().max(1) as f64)
        };
        // Offered load in deliveries/s, relative to the lowest level's, against achieved.
        let points: Vec<(f64, f64)> = levels
            .iter()
            .map(|l| {
                let d = l.trials.iter().map(|t| t.deliveries_per_s).sum::<f64>()
                    / l.trials.len().max(1) as f64;
                (l.level, d)
            })
            .collect();
        let knee = levels.first().and_then(|first| {
            let base = mean_dps(Some(first.level))? / first.level;
            let offered: Vec<(f64, f64)> = points.iter().map(|(l, d)| (l * base, *d)).collect();
            knee(&offered, 0.95).map(|o| o / base)
        });
        let low = o.low;
        let (verdict, reason) = match (o.kind, args.require) {
            (OutcomeKind::Inconclusive, _) => (
                "inconclusive",
                "generator-bound: the harness, not the server, was the bottleneck at the last level; add --workers (or machines) and run again".to_owned(),
            ),
            (_, Some(req)) if low.unwrap_or(0.0) < req => (
                "fail",
                format!("capacity is below the required {req}"),
            ),
            (OutcomeKind::BelowRange, _) => (
                "fail",
                "even the first level broke an SLO: capacity is below --from".to_owned(),
            ),
            (OutcomeKind::AboveRange, _) => (
                "pass",
                "the highest level (--to) held every SLO: capacity is at least that".to_owned(),
            ),
            (OutcomeKind::Found, _) => ("pass", "bracketed within the tolerance".to_owned()),
        };
        Result {
            schema: "stampede.capacity/1".into(),
            varied: args.vary,
            unit: match args.vary {
                Vary::Peers => "peers".into(),
                Vary::Rate => "publishes/s per peer (--rate)".into(),
            },
            slos: args.slos.clone(),
            verdict: verdict.into(),
            reason,
            interval: Interval { low, high: o.high },
            // The high end is the load the first failing level offered, scaled from the
            // passing level's deliveries per unit: what it achieved is capped by the server
            // (a 5,000/s server delivers 5,000/s at any level above it).
            deliveries_per_s: Interval {
                low: mean_dps(low),
                high: match (mean_dps(low), low, o.high) {
                    (Some(d), Some(l), Some(h)) if l > 0.0 => Some(d * h / l),
                    _ => mean_dps(o.high),
                },
            },
            require: args.require,
            knee,
            usl: Usl::fit(&points),
            tolerance: args.tolerance,
            trials_per_level: args.trials,
            levels,
        }
    }
}

/// One line of the live table.
pub fn row(t: &TrialResult) -> String {
    let figures: Vec<String> = t
        .slos
        .iter()
        .map(|s| {
            let fmt = |v: f64| if s.micros { ms(v) } else { short(v) };
            let v = s.actual.map(fmt).unwrap_or_else(|| "n/a".into());
            let ci = s
                .ci95
                .map(|(lo, hi)| format!(" (95% CI {}–{})", fmt(lo as f64), fmt(hi as f64)))
                .unwrap_or_default();
            let verdict = if s.passed { "ok" } else { "BROKEN" };
            format!("{}: {v}{ci} {verdict}", s.rule)
        })
        .collect();
    let mut line = format!(
        "{:>12}  {:>5}  {:<12}  {:>14.0}  {}",
        short(t.level),
        t.trial,
        t.verdict,
        t.deliveries_per_s,
        figures.join(" · ")
    );
    if !t.reasons.is_empty() {
        let _ = write!(line, " ({})", t.reasons.join("; "));
    }
    line
}

/// Levels and rates as people read them: whole numbers grouped, fractions to 4
/// significant digits (2.375, not 2.4: bisection steps must stay distinguishable).
fn short(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else {
        let digits = (4 - v.abs().log10().floor() as i32 - 1).clamp(0, 6) as usize;
        let s = format!("{v:.digits$}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// µs as milliseconds, e.g. `6.75 ms`.
fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// The closing lines of the text output.
pub fn text(r: &Result) -> String {
    let b = |v: Option<f64>| v.map(short).unwrap_or_else(|| "—".into());
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\ncapacity   [{}, {}) {} · [{}, {}) deliveries/s · {}: {}",
        b(r.interval.low),
        b(r.interval.high),
        r.unit,
        b(r.deliveries_per_s.low),
        b(r.deliveries_per_s.high),
        r.verdict.to_uppercase(),
        r.reason
    );
    if let Some(k) = r.knee {
        let _ = writeln!(
            o,
            "knee       throughput kept up with the offered load up to {}",
            short(k)
        );
    }
    match &r.usl {
        Some(u) => {
            let _ = writeln!(
                o,
                "USL fit    σ {:.4} · κ {:.6} · predicted peak {} at {} (R² {:.3}, {} levels)",
                u.sigma,
                u.kappa,
                u.peak_throughput
                    .map(short)
                    .unwrap_or_else(|| "none".into()),
                u.peak_load.map(short).unwrap_or_else(|| "—".into()),
                u.r2,
                u.points
            );
        }
        None => {
            let _ = writeln!(o, "USL fit    needs at least 4 levels");
        }
    }
    o
}

/// Writes capacity.json and capacity.html into `dir`.
pub fn write(dir: &Path, r: &Result) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    std::fs::write(dir.join("capacity.json"), json)
        .with_context(|| format!("cannot write {}/capacity.json", dir.display()))?;
    std::fs::write(dir.join("capacity.html"), html(r))
        .with_context(|| format!("cannot write {}/capacity.html", dir.display()))?;
    Ok(())
}

/// One testcase per level (its majority) and one for the requirement.
pub fn write_junit(path: &Path, r: &Result) -> anyhow::Result<()> {
    use crate::junit::{Case, Outcome, Suite};
    let mut cases: Vec<Case> = r
        .levels
        .iter()
        .map(|l| {
            let name = format!("level {}", short(l.level));
            let outcome = match l.verdict.as_str() {
                "pass" => Outcome::Passed,
                v => Outcome::Failed {
                    message: format!("{v}: {}", r.slos.join(", ")),
                    kind: Some(v.to_owned()),
                    text: l.trials.iter().map(row).collect::<Vec<_>>().join("\n"),
                },
            };
            Case::new(name, outcome)
        })
        .collect();
    let outcome = if r.verdict == "pass" {
        Outcome::Passed
    } else {
        Outcome::Failed {
            message: r.reason.clone(),
            kind: Some(r.verdict.clone()),
            text: text(r),
        }
    };
    cases.push(Case::new("capacity", outcome));
    crate::junit::write(
        path,
        "stampede capacity",
        &[Suite {
            name: "capacity".into(),
            cases,
        }],
    )
}

fn html(r: &Result) -> String {
    let xs: Vec<f64> = r.levels.iter().map(|l| l.level).collect();
    // Latency against load: each SLO rule that reads a latency, per trial, with its line.
    let mut lat = Vec::new();
    for (i, rule) in r.slos.iter().enumerate() {
        let slo = |t: &TrialResult| t.slos.get(i).cloned();
        let micros = r
            .levels
            .iter()
            .flat_map(|l| l.trials.iter())
            .any(|t| slo(t).is_some_and(|s| s.micros));
        if !micros {
            continue;
        }
        let pts: Vec<(f64, f64)> = r
            .levels
            .iter()
            .flat_map(|l| l.trials.iter())
            .filter_map(|t| Some((t.level, slo(t)?.actual? / 1000.0)))
            .collect();
        lat.push(Series {
            name: rule.clone(),
            points: pts,
        });
        if let Some(limit) = rule_limit_ms(rule) {
            lat.push(Series {
                name: format!("SLO {rule}"),
                points: vec![
                    (xs.first().copied().unwrap_or(0.0), limit),
                    (xs.last().copied().unwrap_or(1.0), limit),
                ],
            });
        }
    }
    let mut thr = vec![Series {
        name: "deliveries/s (steady window)".into(),
        points: r
            .levels
            .iter()
            .flat_map(|l| l.trials.iter().map(|t| (t.level, t.deliveries_per_s)))
            .collect(),
    }];
    if let Some(u) = &r.usl {
        let (lo, hi) = (
            xs.first().copied().unwrap_or(1.0),
            u.peak_load
                .unwrap_or(0.0)
                .max(xs.last().copied().unwrap_or(1.0)),
        );
        thr.push(Series {
            name: format!("USL fit (R² {:.3})", u.r2),
            points: (0..=60)
                .map(|i| lo + (hi - lo) * i as f64 / 60.0)
                .map(|n| (n, u.throughput(n)))
                .collect(),
        });
    }
    let chart = |title: &str, y: &str, s: &[Series]| {
        let svg = plot::xy_svg(title, &r.unit, y, s).unwrap_or_else(|e| format!("<p>{e}</p>"));
        let legend: String = s
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "<div><span style=\"display:inline-block;width:14px;height:4px;background:{};vertical-align:middle\"></span> {}</div>",
                    plot::color_hex(i),
                    esc(&s.name)
                )
            })
            .collect();
        format!("<figure>{svg}<figcaption>{legend}</figcaption></figure>")
    };
    let mut rows = String::new();
    for l in &r.levels {
        for t in &l.trials {
            let _ = writeln!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
                short(t.level),
                t.trial,
                t.verdict,
                t.deliveries_per_s,
                esc(&t
                    .slos
                    .iter()
                    .map(|s| {
                        let v = s.actual.map(|v| if s.micros { ms(v) } else { short(v) });
                        format!("{}: {}", s.rule, v.unwrap_or_else(|| "n/a".into()))
                    })
                    .collect::<Vec<_>>()
                    .join(" · "))
            );
        }
    }
    let b = |v: Option<f64>| v.map(short).unwrap_or_else(|| "—".into());
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>capacity</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1a2330}}table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:4px 8px;font-size:14px}}.v{{font-size:20px;font-weight:600}}figure{{display:inline-block;margin:8px 16px 8px 0;font-size:14px}}</style></head><body>
<h1>Capacity — {verdict}</h1>
<p class="v">[{lo}, {hi}) {unit} · [{dlo}, {dhi}) deliveries/s</p>
<p>{reason}. SLOs: <code>{slos}</code>; tolerance {tol:.0} %; {trials} trials per level.</p>
<div>{lat}{thr}</div>
<h2>Levels</h2><table><tr><th>level</th><th>trial</th><th>verdict</th><th>deliveries/s</th><th>SLO figures (steady window)</th></tr>
{rows}</table></body></html>
"#,
        verdict = esc(&r.verdict.to_uppercase()),
        lo = b(r.interval.low),
        hi = b(r.interval.high),
        unit = esc(&r.unit),
        dlo = b(r.deliveries_per_s.low),
        dhi = b(r.deliveries_per_s.high),
        reason = esc(&r.reason),
        slos = esc(&r.slos.join(", ")),
        tol = r.tolerance * 100.0,
        trials = r.trials_per_level,
        lat = chart("Latency against load (ms)", "ms", &lat),
        thr = chart("Throughput against load", "deliveries/s", &thr),
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The limit of a latency rule in ms (`fanout.p99<50ms` → 50; a bare number is µs).
fn rule_limit_ms(rule: &str) -> Option<f64> {
    let (_, cond) = rule.split_at(rule.find(['<', '>', '=', '!'])?);
    let (_, limit) = crate::rules::parse_condition(cond).ok()?;
    Some(limit.absolute() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_the_bisection_steps_apart() {
        assert_eq!(short(2.375), "2.375");
        assert_eq!(short(2.75), "2.75");
        assert_eq!(short(0.125), "0.125");
        assert_eq!(short(17455.3), "17,455");
        assert_eq!(short(400.0), "400");
        assert_eq!(short(12.5), "12.5");
    }
}
