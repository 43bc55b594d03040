//! `--self-check`: proves the suite catches broken servers. It runs the must cases
//! against the clean reference server (all must pass), then against one embedded
//! server per fault switch (at least one must case must fail), several faults at a
//! time, and prints a kill table. A surviving fault fails the command.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::task::JoinSet;

use super::case::{Case, Level};
use super::verdict::Verdict;
use super::{ConformArgs, env_for, report, run_suite};
use crate::embedded::{EmbeddedServer, Options, Tls};
use crate::shutdown::Stop;

pub use crate::embedded::{fault_names, variant_names};

/// Fault runs at the same time. Each is a full suite with its own server; a faulted run
/// is mostly cases waiting out their timeouts, which costs no CPU, so several overlap
/// well even on 2 cores.
const PARALLEL_FAULTS: usize = 6;

/// One suite run against an embedded server with `faults`; returns the failed must cases.
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
        variants,
        tls: tls.clone(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot start the embedded server with faults {faults:?}"))?;
    let env = env_for(server.target().clone(), args, faults, true, tls).await?;
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
    // wrong as one that passes a broken server.
    let variants = variant_names();
    println!("\n{} legal variants (each must pass):", variants.len());
    let mut over_fired = 0;
    for variant in &variants {
        let (failed, outcome) = run_against(
            Vec::new(),
            vec![variant.clone()],
            musts.clone(),
            &args,
            jobs,
            stop.clone(),
        )
        .await?;
        if failed.is_empty() {
            println!("  {variant:<34} passed");
        } else {
            over_fired += 1;
            println!("  {variant:<34} FAILED by {} case(s):", failed.len());
            for r in outcome
                .results
                .iter()
                .filter(|r| r.verdict == Verdict::Fail)
            {
                println!("    {}", report::text::case_line(r, false));
            }
        }
    }
    if over_fired > 0 {
        println!(
            "self-check FAILED: the suite fails {over_fired} legal variant(s) of a correct server"
        );
        return Ok(1);
    }

    let faults = fault_names();
    println!("\n{} faults, {PARALLEL_FAULTS} at a time:", faults.len());
    // Failing cases wait out `--timeout-ms`; more of them at once keeps a run short.
    let per_run_jobs = jobs.max(16) * 2;
    let mut table: Vec<(String, anyhow::Result<Vec<String>>)> = Vec::new();
    let mut set = JoinSet::new();
    let mut queue = faults.clone().into_iter();
    let args = Arc::new(args);
    loop {
        while set.len() < PARALLEL_FAULTS && !stop.is_stopped() {
            let Some(fault) = queue.next() else { break };
            let (cases, args, stop) = (musts.clone(), args.clone(), stop.clone());
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
    Ok(if survived == 0 { 0 } else { 1 })
}
