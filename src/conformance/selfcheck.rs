//! `--self-check`: proves the suite's verdicts both ways. It runs the must cases against
//! the clean reference server (all must pass), against every legal variant — a correct
//! server built differently — (all must pass, except cases resting on a `[choice]` the
//! variant departs from, which are skipped and counted), and against one embedded server
//! per fault switch (a must case citing a rule the fault names must fail), several runs
//! at a time. It prints
//! a variant table and a kill table; a failing variant or a surviving fault fails the
//! command.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinSet;

use super::case::{Case, Level};
use super::verdict::Verdict;
use super::{ConformArgs, env_for, report, run_suite};
use crate::embedded::{EmbeddedServer, Options, Tls};
use crate::shutdown::Stop;

pub use crate::embedded::{fault_names, variant_departures, variant_names};

/// Fault runs at the same time. Each is a full suite with its own server; a faulted run
/// is mostly cases waiting out their timeouts, which costs no CPU, so several overlap
/// well even on 2 cores.
const PARALLEL_FAULTS: usize = 6;

/// Variant runs at the same time: they pass, so they are short, but several of them
/// measure timing (delays, late closes), which CPU contention on 2 cores would blur.
const PARALLEL_VARIANTS: usize = 3;

/// One suite run against an embedded server with `faults` and `variants`; returns the
/// failed must cases.
async fn run_against(
    faults: Vec<String>,
    variants: Vec<String>,
    cases: Vec<Arc<Case>>,
    args: &ConformArgs,
    jobs: usize,
    stop: Stop,
) -> anyhow::Result<(Vec<String>, super::verdict::RunOutcome)> {
    let tls = args.embedded_tls.then(Tls::self_signed).transpose()?;
    let server = EmbeddedServer::start(Options {
        faults: faults.clone(),
        variants: variants.clone(),
        tls: tls.clone(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot start the embedded server with faults {faults:?}"))?;
    let mut env = env_for(server.target().clone(), args, faults, true, tls).await?;
    env.variants = variants;
    let outcome = run_suite(cases, env, jobs, stop, false).await;
    server.shutdown().await;
    let failed = outcome
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Fail && r.level == Level::Must)
        .map(|r| r.id.clone())
        .collect();
    Ok((failed, outcome))
}

pub async fn run(cases: Vec<Arc<Case>>, args: &ConformArgs, stop: Stop) -> anyhow::Result<i32> {
    let started = Instant::now();
    // Only must cases decide kills; strictness would let non-strict notes count.
    let musts: Vec<Arc<Case>> = cases
        .into_iter()
        .filter(|c| c.level == Level::Must)
        .collect();
    let args = ConformArgs {
        strict: false,
        skip_choices: false,
        ..args.clone()
    };
    let jobs = args.jobs as usize;
    println!(
        "self-check: {} must cases against the clean reference server",
        musts.len()
    );
    let (failed, clean) = run_against(
        Vec::new(),
        Vec::new(),
        musts.clone(),
        &args,
        jobs,
        stop.clone(),
    )
    .await?;
    let s = clean.summary();
    println!(
        "clean server: {} in {:.1} s",
        s.line(),
        clean.duration.as_secs_f64()
    );
    if !failed.is_empty() {
        for r in clean.results.iter().filter(|r| r.verdict == Verdict::Fail) {
            println!("{}", report::text::case_line(r, false));
        }
        println!(
            "self-check FAILED: the clean server fails {} must case(s); fix those first",
            failed.len()
        );
        return Ok(1);
    }

    // A correct server built differently must pass too: a verdict that fails it is as
    // wrong as one that passes a broken server. Faults run even when a variant failed, so
    // one run shows both tables.
    let over_fired = run_variants(&musts, &args, jobs, &stop).await?;

    let faults = fault_names();
    let named: std::collections::HashMap<String, Vec<String>> =
        crate::embedded::fault_rules().into_iter().collect();
    println!(
        "\n{} faults, {PARALLEL_FAULTS} at a time, each against the must cases citing a rule it breaks:",
        faults.len()
    );
    // Failing cases wait out `--timeout-ms`; more of them at once keeps a run short.
    let per_run_jobs = jobs.max(16) * 2;
    let mut table: Vec<(String, anyhow::Result<Vec<String>>)> = Vec::new();
    let mut set = JoinSet::new();
    let mut queue = faults.clone().into_iter();
    let args = Arc::new(args);
    loop {
        while set.len() < PARALLEL_FAULTS && !stop.is_stopped() {
            let Some(fault) = queue.next() else { break };
            let rules = named.get(&fault).cloned().unwrap_or_default();
            let cases = cases_citing(&musts, &rules);
            let (args, stop) = (args.clone(), stop.clone());
            set.spawn(async move {
                let r = run_against(
                    vec![fault.clone()],
                    Vec::new(),
                    cases,
                    &args,
                    per_run_jobs,
                    stop,
                )
                .await
                .map(|(failed, _)| failed);
                (fault, r)
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok((fault, r)) => {
                match &r {
                    Ok(killed) if !killed.is_empty() => {
                        println!("  {fault:<34} killed by {} case(s)", killed.len())
                    }
                    Ok(_) => println!("  {fault:<34} SURVIVED"),
                    Err(e) => println!("  {fault:<34} ERROR: {e:#}"),
                }
                table.push((fault, r));
            }
            Err(e) => anyhow::bail!("a fault run panicked: {e}"),
        }
    }
    if stop.is_stopped() {
        anyhow::bail!("interrupted");
    }
    table.sort_by_key(|(f, _)| faults.iter().position(|x| x == f));

    println!("\nkill table:");
    println!("{:<34} killed by", "fault");
    let mut survived = 0;
    for (fault, r) in &table {
        let what = match r {
            Ok(killed) if killed.is_empty() => {
                survived += 1;
                "SURVIVED".to_owned()
            }
            Ok(killed) => {
                let shown: Vec<&str> = killed.iter().take(5).map(String::as_str).collect();
                let more = if killed.len() > 5 {
                    format!(" (+{} more)", killed.len() - 5)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            }
            Err(e) => {
                survived += 1;
                format!("ERROR: {e:#}")
            }
        };
        println!("{fault:<34} {what}");
    }
    let unproven = unproven_pairs(&table, &musts)?;
    if !unproven.is_empty() {
        println!(
            "\nfaults killed, but not by a case citing a rule they name (the --coverage pairing is then unproven):"
        );
        for (fault, rule) in &unproven {
            println!("  {fault:<34} {rule}");
        }
    }
    let killed = table.len() - survived;
    println!(
        "\n{killed}/{} faults killed ({:.0}%), self-check took {:.1} s",
        table.len(),
        if table.is_empty() {
            100.0
        } else {
            100.0 * killed as f64 / table.len() as f64
        },
        started.elapsed().as_secs_f64()
    );
    if over_fired > 0 {
        println!(
            "self-check FAILED: the suite fails {over_fired} legal variant(s) of a correct server"
        );
    }
    if !unproven.is_empty() {
        println!(
            "self-check FAILED: {} fault/rule pair(s) unproven",
            unproven.len()
        );
    }
    Ok(if survived == 0 && over_fired == 0 && unproven.is_empty() {
        0
    } else {
        1
    })
}

/// The must cases that can prove a fault: those citing a rule it breaks, or a rule every
/// case checks on every frame (`invariants::RULES`). A fault must be killed by one of
/// them anyway (`unproven_pairs`), so running only these gives the same verdict in a
/// fraction of the time. A fault naming no cited rule runs against every must case.
fn cases_citing(musts: &[Arc<Case>], rules: &[String]) -> Vec<Arc<Case>> {
    let every_case = rules
        .iter()
        .any(|r| super::invariants::RULES.contains(&r.as_str()));
    let citing: Vec<Arc<Case>> = musts
        .iter()
        .filter(|c| every_case || c.spec.iter().any(|r| rules.contains(r)))
        .cloned()
        .collect();
    if citing.is_empty() {
        musts.to_vec()
    } else {
        citing
    }
}

/// What one variant run showed.
struct VariantRun {
    name: String,
    /// Must cases skipped because they rest on a `[choice]` the variant departs from.
    skipped: usize,
    departs: Vec<String>,
    result: anyhow::Result<(Vec<String>, super::verdict::RunOutcome)>,
}

/// The must cases that apply to a variant departing from `departs`, and how many do not.
fn cases_for(musts: &[Arc<Case>], departs: &[String]) -> (Vec<Arc<Case>>, usize) {
    let applies = |c: &Arc<Case>| !(c.choice && c.spec.iter().any(|r| departs.contains(r)));
    let run: Vec<Arc<Case>> = musts.iter().filter(|c| applies(c)).cloned().collect();
    let skipped = musts.len() - run.len();
    (run, skipped)
}

/// Runs the suite against every legal variant and prints the variant table; returns how
/// many variants failed a must case.
async fn run_variants(
    musts: &[Arc<Case>],
    args: &ConformArgs,
    jobs: usize,
    stop: &Stop,
) -> anyhow::Result<usize> {
    let variants = variant_names();
    println!(
        "\n{} legal variants, {PARALLEL_VARIANTS} at a time (each must pass):",
        variants.len()
    );
    let args = Arc::new(args.clone());
    let mut set = JoinSet::new();
    let mut queue = variants.clone().into_iter();
    let mut runs: Vec<VariantRun> = Vec::new();
    loop {
        while set.len() < PARALLEL_VARIANTS && !stop.is_stopped() {
            let Some(name) = queue.next() else { break };
            let departs = variant_departures(&name);
            let (cases, skipped) = cases_for(musts, &departs);
            let (args, stop) = (args.clone(), stop.clone());
            set.spawn(async move {
                let result =
                    run_against(Vec::new(), vec![name.clone()], cases, &args, jobs, stop).await;
                VariantRun {
                    name,
                    skipped,
                    departs,
                    result,
                }
            });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok(run) => runs.push(run),
            Err(e) => anyhow::bail!("a variant run panicked: {e}"),
        }
    }
    if stop.is_stopped() {
        anyhow::bail!("interrupted");
    }
    runs.sort_by_key(|r| variants.iter().position(|v| *v == r.name));

    println!("\nvariant table:");
    println!("{:<34} verdict", "variant");
    let mut over_fired = 0;
    for run in &runs {
        let skipped = if run.skipped > 0 {
            format!(
                " ({} case(s) resting on {} skipped: a [choice] it departs from)",
                run.skipped,
                run.departs.join(", ")
            )
        } else {
            String::new()
        };
        match &run.result {
            Ok((failed, outcome)) if failed.is_empty() => println!(
                "{:<34} passed in {:.1} s{skipped}",
                run.name,
                outcome.duration.as_secs_f64()
            ),
            Ok((failed, outcome)) => {
                over_fired += 1;
                println!(
                    "{:<34} FAILED by {} must case(s){skipped}:",
                    run.name,
                    failed.len()
                );
                for r in outcome
                    .results
                    .iter()
                    .filter(|r| r.verdict == Verdict::Fail)
                {
                    println!("    {}", report::text::case_line(r, false));
                }
            }
            Err(e) => {
                over_fired += 1;
                println!("{:<34} ERROR: {e:#}", run.name);
            }
        }
    }
    Ok(over_fired)
}

/// (fault, rule) pairs where the fault names a wire-observable server MUST but no case
/// citing that rule killed it: `--coverage` would claim a proof the run did not give.
fn unproven_pairs(
    table: &[(String, anyhow::Result<Vec<String>>)],
    musts: &[Arc<Case>],
) -> anyhow::Result<Vec<(String, String)>> {
    let asked: std::collections::BTreeSet<String> = super::coverage::rules()?
        .into_iter()
        .filter(|r| r.side == "server" && r.level == "must" && r.observable)
        .map(|r| r.id)
        .collect();
    let spec_of = |id: &str| {
        musts
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.spec.clone())
            .unwrap_or_default()
    };
    let named: std::collections::HashMap<String, Vec<String>> =
        crate::embedded::fault_rules().into_iter().collect();
    let mut out = Vec::new();
    for (fault, result) in table {
        let Ok(killers) = result else { continue };
        if killers.is_empty() {
            continue;
        }
        // Every case checks the invariant rules on every frame (invariants.rs).
        let cited: std::collections::BTreeSet<String> = killers
            .iter()
            .flat_map(|k| spec_of(k))
            .chain(super::invariants::RULES.iter().map(|r| r.to_string()))
            .collect();
        for rule in named.get(fault).into_iter().flatten() {
            if asked.contains(rule) && !cited.contains(rule) {
                out.push((fault.clone(), rule.clone()));
            }
        }
    }
    Ok(out)
}
