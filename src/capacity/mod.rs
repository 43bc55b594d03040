//! `stampede capacity`: the most load a server holds within its SLOs.
//!
//! - [`search`]: the search as a pure state machine (grow, then bisect; robust majorities;
//!   generator-bound trials make it inconclusive);
//! - [`model`]: percentile confidence intervals, the throughput knee, the Universal
//!   Scalability Law fit;
//! - [`level`]: one trial of one level, a `stampede run` judged on its steady window;
//! - [`report`]: capacity.json, the HTML page and JUnit.
//!
//! Levels are independent runs of the run engine (a child `stampede run` each), so every
//! target, TLS and `--workers` flag of a run works here too.

pub mod level;
pub mod model;
pub mod report;
pub mod search;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use self::level::TrialResult;
use self::search::{Config, OutcomeKind, Search, Step};
use crate::load::scenario;
use crate::shutdown::Stop;
use crate::transport::TlsArgs;

/// What a capacity search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vary {
    /// Total peers (`--peers`); the scenario's rates per peer stay.
    Peers,
    /// Publish rate (`--rate`: per peer, or in total for `aggregate_rate` populations).
    Rate,
}

/// Flags of `stampede capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Scenario file or built-in name; its other settings stay fixed.
    pub scenario: String,
    /// What to vary.
    #[arg(long, value_enum)]
    pub vary: Vary,
    /// An SLO every level must meet, in the threshold grammar (e.g. 'fanout.p99<50ms',
    /// 'delivery.lost==0'); repeatable, at least one.
    #[arg(long = "slo", value_name = "RULE", required = true)]
    pub slos: Vec<String>,
    /// First level [default: 100 peers, or the scenario's rate].
    #[arg(long)]
    pub from: Option<f64>,
    /// Highest level to try [default: unbounded].
    #[arg(long)]
    pub to: Option<f64>,
    /// Stop when the interval is this narrow, relative to its low end (e.g. 5% or 0.05).
    #[arg(long, default_value = "5%", value_parser = parse_fraction)]
    pub tolerance: f64,
    /// Runs per level; the majority decides.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=15))]
    pub trials: u32,
    /// How long each level publishes after its warm-up, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = scenario::parse_duration)]
    pub level_duration: Duration,
    /// Dropped from the start of every level before judging it, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = scenario::parse_duration)]
    pub warmup: Duration,
    /// Exit 1 unless the capacity is at least this (in the varied unit).
    #[arg(long)]
    pub require: Option<f64>,
    /// Server to load (repeatable), as for `stampede run`; default: the in-process server.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    #[arg(long, env = "STAMPEDE_KEY_ID")]
    pub key_id: Option<String>,
    #[arg(long, env = "STAMPEDE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long, env = "STAMPEDE_PUBLISHABLE_KEY")]
    pub publishable_key: Option<String>,
    /// Worker processes per level run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub workers: u32,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output directory (capacity.json, capacity.html, one run directory per trial).
    /// Default: reports/capacity-<scenario>-<UTC timestamp>/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write JUnit XML (one testcase per level, and the requirement) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `5%` → 0.05; `0.05` → 0.05.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid fraction {s:?}: write e.g. 5% or 0.05");
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s:?} is out of range: use more than 0% and less than 100%"
        ))
    }
}

/// `stampede capacity`.
pub async fn main(args: CapacityArgs, mut stop: Stop) -> anyhow::Result<i32> {
    for rule in &args.slos {
        crate::load::thresholds::Rule::parse(rule).map_err(|e| anyhow::anyhow!("--slo {e}"))?;
    }
    let src = scenario::resolve(&args.scenario)?;
    let sc = scenario::parse(&src)?;
    let from = match (args.from, args.vary) {
        (Some(f), _) if f > 0.0 => f,
        (Some(f), _) => bail!("--from {f} must be above 0"),
        (None, Vary::Peers) => 100.0,
        (None, Vary::Rate) => sc
            .populations
            .iter()
            .filter_map(|p| p.publish.as_ref())
            .find_map(|p| p.rate.or(p.aggregate_rate).filter(|r| *r > 0.0))
            .context("the scenario publishes nothing: give --from")?,
    };
    if let Some(to) = args.to {
        anyhow::ensure!(to >= from, "--to {to} is below --from {from}");
    }
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| crate::load::verdict::default_out_dir(&format!("capacity-{}", sc.name)));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut search = Search::new(Config {
        from,
        to: args.to,
        tolerance: args.tolerance,
        trials: args.trials,
        growth: 2.0,
        whole: args.vary == Vary::Peers,
    });
    let unit = match args.vary {
        Vary::Peers => "peers",
        Vary::Rate => "msg/s per peer",
    };
    println!(
        "capacity of {} ({}), varying {unit}; SLOs: {}",
        args.targets
            .first()
            .map(String::as_str)
            .unwrap_or("the in-process reference server"),
        sc.name,
        args.slos.join(", ")
    );
    println!(
        "{:>12}  {:>5}  {:<12}  {:>14}  SLO figures (steady window)",
        "level", "trial", "verdict", "deliveries/s"
    );
    let mut trials: Vec<TrialResult> = Vec::new();
    let limit = args.warmup + args.level_duration + Duration::from_secs(120);
    let outcome = loop {
        let level = match search.next() {
            Step::Done(o) => break o,
            Step::Run(level) => level,
        };
        let n = search.trials_of(level).len() as u32 + 1;
        let run_dir = dir.join(format!("level-{}-t{n}", level_name(level)));
        let (cmd, env) = run_command(&args, level);
        let run = tokio::select! {
            r = level::run(&cmd, &env, &run_dir, limit) => r?,
            _ = stop.wait() => bail!("interrupted; levels so far are in {}", dir.display()),
        };
        let t = level::judge(&run, level, n, &args.slos, args.warmup);
        println!("{}", report::row(&t));
        search.record(level, t.trial());
        trials.push(t);
    };
    let result = report::Result::new(&args, outcome, &trials);
    report::write(&dir, &result)?;
    print!("{}", report::text(&result));
    println!("report: {}", dir.join("capacity.html").display());
    if let Some(path) = &args.junit {
        report::write_junit(path, &result)?;
        println!("junit: {}", path.display());
    }
    Ok(match (outcome.kind, args.require) {
        (OutcomeKind::Inconclusive, _) => 2,
        (_, Some(req)) if outcome.low.unwrap_or(0.0) < req => 1,
        (OutcomeKind::BelowRange, None) => 1,
        _ => 0,
    })
}

fn level_name(level: f64) -> String {
    if level.fract() == 0.0 {
        format!("{level:.0}")
    } else {
        format!("{level}")
    }
}

/// The `stampede run` command line of one level (without `--out`), and its environment
/// (credentials stay off command lines other users can read).
fn run_command(args: &CapacityArgs, level: f64) -> (Vec<String>, Vec<(String, String)>) {
    let mut a: Vec<String> = vec![
        "run".into(),
        args.scenario.clone(),
        "--quiet".into(),
        "--duration".into(),
        format!("{}ms", (args.warmup + args.level_duration).as_millis()),
        "--workers".into(),
        args.workers.to_string(),
    ];
    match args.vary {
        Vary::Peers => a.extend(["--peers".into(), format!("{level:.0}")]),
        Vary::Rate => a.extend(["--rate".into(), level.to_string()]),
    }
    for t in &args.targets {
        a.extend(["--target".into(), t.clone()]);
    }
    a.extend(args.tls.to_args());
    let mut env = Vec::new();
    for (k, v) in [
        ("STAMPEDE_KEY_ID", &args.key_id),
        ("STAMPEDE_SECRET", &args.secret),
        ("STAMPEDE_PUBLISHABLE_KEY", &args.publishable_key),
    ] {
        if let Some(v) = v {
            env.push((k.to_owned(), v.clone()));
        }
    }
    (a, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_read_like_people_write_them() {
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert_eq!(parse_fraction("0.1"), Ok(0.1));
        assert!(parse_fraction("five").unwrap_err().contains("5%"));
        assert!(parse_fraction("100%").unwrap_err().contains("out of range"));
        assert_eq!(level_name(2000.0), "2000");
        assert_eq!(level_name(2.5), "2.5");
    }
}
