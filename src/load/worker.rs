//! Scaling past one process: `--workers N` starts N copies of this binary, each running
//! `stampede run SCENARIO --shard i/N …` (the very command a Kubernetes Indexed Job runs
//! per pod), each with its own loopback source address. Rooms are pinned to one shard,
//! so each worker's accounting is exact on its own and the coordinator only adds.
//!
//! Protocol on a worker's stdout, one JSON object per line:
//! `{"tick":{…}}` once a second (live progress), then `{"result":<RunData>}` at the end.
//! On its stdin the coordinator writes `stop` (first Ctrl-C) and `urgent` (second Ctrl-C:
//! drop connections, report now); EOF means the coordinator is gone and the worker stops
//! too.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::engine::Live;
use crate::metrics::collector::Latest;
use crate::metrics::{Counts, Stats};
use crate::report::RunData;
use crate::shutdown::Stop;

/// A worker's once-a-second status line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    pub second: u32,
    pub connected: i64,
    pub counts: Counts,
    pub fanout_p99_us: u64,
    pub harness_cpu_percent: f64,
    pub headline: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Tick(Tick),
    Result(Box<RunData>),
}

/// Worker side: prints a tick line every second until the run is done.
pub fn spawn_ticker(live: Arc<Live>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !live.done.load(Ordering::Acquire) {
            every.tick().await;
            let l = *live.latest.lock().unwrap_or_else(|p| p.into_inner());
            let tick = Tick {
                second: l.second,
                connected: live.metrics.connected.load(Ordering::Relaxed),
                counts: l.counts,
                fanout_p99_us: l.fanout.p99,
                harness_cpu_percent: l.harness_cpu_percent,
                headline: live
                    .headline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            };
            emit(&Line::Tick(tick));
        }
    })
}

/// Writes one protocol line to stdout (whole line, then flush).
pub fn emit(line: &Line) {
    use std::io::Write;
    if let Ok(mut text) = serde_json::to_string(line) {
        text.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Worker side: a stop that fires on the parent's Ctrl-C, on `stop` on stdin, or when
/// stdin closes (the coordinator is gone); urgent on the parent's second Ctrl-C or on
/// `urgent`.
pub fn stop_from_stdin(parent: Stop) -> Stop {
    let (tx, rx) = Stop::never();
    let tx = Arc::new(tx);
    {
        let tx = tx.clone();
        let mut parent = parent;
        tokio::spawn(async move {
            parent.wait().await;
            tx.stop();
            parent.wait_urgent().await;
            tx.urgent();
        });
    }
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.trim() == "stop" => tx.stop(),
                Ok(Some(l)) if l.trim() == "urgent" => tx.urgent(),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        tx.stop();
        // Keep the sender: dropping it would look like a stop anyway, but be explicit.
        std::future::pending::<()>().await;
    });
    rx
}

struct Worker {
    index: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    result: Arc<Mutex<Option<RunData>>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Coordinator side: runs `args` (the worker command lines, one per shard), aggregates
/// their ticks into `live`, forwards a stop, bounds the wait by `deadline`, and returns
/// each worker's data (or why it has none).
pub async fn run_workers(
    commands: Vec<Vec<String>>,
    env: Vec<(String, String)>,
    live: Arc<Live>,
    mut stop: Stop,
    deadline: Duration,
) -> anyhow::Result<Vec<Result<RunData, String>>> {
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let ticks: Arc<Mutex<Vec<Tick>>> = Arc::new(Mutex::new(vec![Tick::default(); commands.len()]));
    let mut workers = Vec::with_capacity(commands.len());
    for (i, args) in commands.into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start worker {i}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take();
        let result = Arc::new(Mutex::new(None));
        let reader = {
            let result = result.clone();
            let ticks = ticks.clone();
            let live = live.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Line>(&line) {
                        Ok(Line::Tick(t)) => {
                            let mut all = ticks.lock().unwrap_or_else(|p| p.into_inner());
                            all[i] = t;
                            aggregate(&all, &live);
                        }
                        Ok(Line::Result(r)) => {
                            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(*r);
                        }
                        Err(_) => eprintln!("worker {i}: {line}"),
                    }
                }
            })
        };
        workers.push(Worker {
            index: i as u32,
            child,
            stdin,
            result,
            reader,
        });
    }

    let started = tokio::time::Instant::now();
    let mut stopped = false;
    let mut urgent = false;
    let mut stop_urgent = stop.clone();
    // After a stop, workers get the engine's stop budget plus slack to report; after
    // that they are killed (their peers then miss from the results, with a warning).
    let mut stopped_at: Option<tokio::time::Instant> = None;
    let mut outcomes: Vec<Option<Result<RunData, String>>> =
        (0..workers.len()).map(|_| None).collect();
    loop {
        let mut running = 0;
        for (k, w) in workers.iter_mut().enumerate() {
            if outcomes[k].is_some() {
                continue;
            }
            match w.child.try_wait() {
                Ok(Some(status)) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut w.reader).await;
                    let data = w.result.lock().unwrap_or_else(|p| p.into_inner()).take();
                    outcomes[k] = Some(match data {
                        Some(d) => Ok(d),
                        None => Err(format!(
                            "worker {} exited ({status}) without results",
                            w.index
                        )),
                    });
                }
                Ok(None) => running += 1,
                Err(e) => outcomes[k] = Some(Err(format!("worker {}: {e}", w.index))),
            }
        }
        if running == 0 {
            break;
        }
        let stop_overdue = stopped_at.is_some_and(|at| {
            at.elapsed()
                > if urgent {
                    Duration::from_secs(2)
                } else {
                    Duration::from_secs(4)
                }
        });
        if started.elapsed() > deadline || stop_overdue {
            for (k, w) in workers.iter_mut().enumerate() {
                if outcomes[k].is_none() {
                    let _ = w.child.kill().await;
                    outcomes[k] = Some(Err(format!(
                        "worker {} did not finish {} and was killed",
                        w.index,
                        if stop_overdue {
                            "in time after the stop".to_owned()
                        } else {
                            format!("within {deadline:?}")
                        }
                    )));
                }
            }
            break;
        }
        let mut say = None;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait(), if !stopped => {
                stopped = true;
                stopped_at = Some(tokio::time::Instant::now());
                say = Some(&b"stop\n"[..]);
            }
            _ = stop_urgent.wait_urgent(), if stopped && !urgent => {
                urgent = true;
                stopped_at = Some(tokio::time::Instant::now());
                say = Some(&b"urgent\n"[..]);
            }
        }
        if let Some(line) = say {
            for w in &mut workers {
                if let Some(stdin) = w.stdin.as_mut() {
                    // Bounded: a worker that stopped reading must not hold the stop.
                    let _ = tokio::time::timeout(Duration::from_millis(200), async {
                        let _ = stdin.write_all(line).await;
                        let _ = stdin.flush().await;
                    })
                    .await;
                }
            }
        }
    }
    live.done.store(true, Ordering::Release);
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("worker lost".into())))
        .collect())
}

/// Sums the workers' last ticks into the coordinator's live view.
fn aggregate(ticks: &[Tick], live: &Live) {
    let mut l = Latest::default();
    let mut connected = 0;
    let mut p99 = 0;
    for t in ticks {
        l.counts.merge(&t.counts);
        connected += t.connected;
        p99 = p99.max(t.fanout_p99_us);
        l.harness_cpu_percent += t.harness_cpu_percent;
        l.second = l.second.max(t.second);
    }
    l.fanout = Stats {
        count: l.counts.deliveries,
        p99,
        ..Default::default()
    };
    l.connected = connected;
    live.metrics.connected.store(connected, Ordering::Relaxed);
    *live.latest.lock().unwrap_or_else(|p| p.into_inner()) = l;
    let headline = ticks.iter().find_map(|t| t.headline.clone());
    *live.headline.lock().unwrap_or_else(|p| p.into_inner()) = headline;
}
