//! One process's share of a run: builds the shared state of its peers, spawns one task
//! per peer and the once-a-second collector, moves the end of the run forward on a
//! stop, bounds every wait, and turns what the peers logged into [`RunData`].
//!
//! Stops are bounded: a stop (first Ctrl-C) moves the end of publishing to now and
//! shortens the drain to [`STOP_DRAIN`]; [`STOP_URGENT_AFTER`] later, or at once on a
//! second Ctrl-C, every peer still busy (a send or a close a server does not answer, a
//! flood it keeps reading) drops its connection and returns what it logged; a task still
//! running [`URGENT_ABORT_AFTER`] after that is aborted and counted. The same urgency ends
//! a run whose peers are still busy [`HARD_STOP_SLACK`] after the drain.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::peer::{Peer, PeerOutcome};
use super::plan::Layout;
use crate::metrics::collector::Collector;
use crate::metrics::{Hist, Metric, sys};
use crate::report::{Expectations, Planned, Requests, RunData, StormOutcome};
use crate::shutdown::Stop;
use crate::transport;

pub use super::shared::{Cell, Clock, Creds, Events, Live, ServerIds, Setup, Shared};

/// Handshakes in flight per process: enough for ~15k connects/s on loopback without
/// flooding the server's accept backlog (LIMITS.md).
const HANDSHAKES_IN_FLIGHT: usize = 256;
/// How long past the drain the engine waits for peers before making them return.
const HARD_STOP_SLACK: Duration = Duration::from_secs(20);
/// The drain after a stop, when `grace` is longer: copies in flight get this long.
pub const STOP_DRAIN: Duration = Duration::from_millis(500);
/// After a stop, peers still busy this long later drop their connections at once; with
/// the drain, the close handshake (bounded by the transport to ~1 s) fits before it.
pub const STOP_URGENT_AFTER: Duration = Duration::from_millis(1500);
/// Tasks still running this long after urgency are aborted (their accounting is lost).
pub const URGENT_ABORT_AFTER: Duration = Duration::from_millis(500);

/// When the engine makes peers return: shortly after a stop, or long after the drain.
fn urgent_deadline(sh: &Shared) -> u64 {
    match sh.stopped_at_us.load(Ordering::Acquire) {
        0 => sh.drain_end_us() + HARD_STOP_SLACK.as_micros() as u64,
        at => at + STOP_URGENT_AFTER.as_micros() as u64,
    }
}

/// What this process's plan makes possible: publishers, and rooms where a copy or a
/// direct has someone to reach (rooms are pinned to one shard, so this is exact per shard).
fn planned(sh: &Shared) -> Planned {
    let s = &sh.scenario;
    let mut p = Planned::default();
    for members in sh.rooms.iter().filter(|m| !m.is_empty()) {
        let plans: Vec<_> = members
            .iter()
            .map(|l| &sh.layout.peers[sh.locals[*l as usize] as usize])
            .collect();
        let publishers = plans.iter().filter(|x| x.publisher).count();
        if publishers > 0 && plans.len() >= 2 {
            p.rooms_with_recipients += 1;
        }
        let directs = plans
            .iter()
            .any(|x| s.populations[x.population as usize].direct.is_some());
        if directs && plans.len() >= 2 {
            p.rooms_with_directs += 1;
        }
    }
    p.publishers = sh
        .locals
        .iter()
        .filter(|g| sh.layout.peers[**g as usize].publisher)
        .count() as u64;
    p
}

/// Runs this process's peers to the end of the run (or a stop) and returns its data.
pub async fn run(setup: Setup, mut stop: Stop, live: Arc<Live>) -> RunData {
    let s = setup.scenario.clone();
    let layout = Arc::new(Layout::build(
        &s,
        setup.shard.count,
        setup.endpoints.len() as u32,
    ));
    let locals: Box<[u32]> = layout
        .peers
        .iter()
        .filter(|p| p.shard == setup.shard.index)
        .map(|p| p.global)
        .collect();
    let mut local_of = vec![u32::MAX; layout.peers.len()].into_boxed_slice();
    for (i, g) in locals.iter().enumerate() {
        local_of[*g as usize] = i as u32;
    }
    let mut rooms: Vec<Vec<u32>> = vec![Vec::new(); layout.channels.len()];
    for (i, g) in locals.iter().enumerate() {
        if let Some(c) = layout.peers[*g as usize].channel {
            rooms[c as usize].push(i as u32);
        }
    }
    let channel_json = layout
        .channels
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "\"\"".into()))
        .collect();
    let pub_rates = (0..s.populations.len())
        .map(|p| layout.publish_rate(&s, p))
        .collect();
    let grace_us = s.grace.as_us();
    let end_us = setup.t0_us + s.duration.as_us();
    live.end_us.store(end_us, Ordering::Release);
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        clock: Clock::new(),
        t0_us: setup.t0_us,
        end_us: AtomicU64::new(end_us),
        grace_us,
        drain_us: AtomicU64::new(grace_us),
        stopped_at_us: AtomicU64::new(0),
        stop: stop_rx,
        urgent: watch::Sender::new(false),
        urgent_at_us: AtomicU64::new(0),
        metrics: live.metrics.clone(),
        scenario: s.clone(),
        layout: layout.clone(),
        cells: (0..locals.len()).map(|_| Cell::default()).collect(),
        locals,
        local_of,
        rooms: rooms.into_boxed_slice(),
        channel_json,
        pub_rates,
        endpoints: setup.endpoints.clone(),
        connector: setup.connector.clone(),
        creds: setup.creds.clone(),
        source_ip: setup.source_ip,
        handshakes: Semaphore::new(HANDSHAKES_IN_FLIGHT),
        ws_config: transport::ws::peer_config(
            s.largest_frame(crate::proto::limits::DEFAULT_MAX_MESSAGE_SIZE),
            s.largest_inbound(),
        ),
        id_prefix: format!("{}-", setup.run_tag),
        server_ids: ServerIds::default(),
        events: Mutex::new(Events::default()),
        slow_path: AtomicU64::new(0),
        clock_skew: AtomicU64::new(0),
    });
    let rss_baseline = sys::rss_bytes();
    let cpu_start = sys::harness_cpu();

    // A stop moves the end of the run to now and shortens the drain; peers then drain and
    // close. Urgency follows on a second Ctrl-C, or STOP_URGENT_AFTER later.
    let stopper = {
        let sh = sh.clone();
        let live = live.clone();
        tokio::spawn(async move {
            stop.wait().await;
            let now = sh.clock.now_us();
            sh.stopped_at_us.store(now.max(1), Ordering::Release);
            sh.drain_us.store(
                grace_us.min(STOP_DRAIN.as_micros() as u64),
                Ordering::Release,
            );
            let new_end = now.max(sh.t0_us).min(sh.end_us());
            sh.end_us.store(new_end, Ordering::Release);
            live.end_us.store(new_end, Ordering::Release);
            let _ = stop_tx.send(true);
            tokio::select! {
                _ = stop.wait_urgent() => {}
                _ = tokio::time::sleep(STOP_URGENT_AFTER) => {}
            }
            sh.go_urgent();
            // Keep the sender alive: dropping it would wake peers with an error.
            std::future::pending::<()>().await;
        })
    };

    // The collector: one tick per second of the run, aligned to t0.
    let (done_tx, mut done_rx) = watch::channel(false);
    let collector = {
        let sh = sh.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let mut c = Collector::new(sh.metrics.clone());
            let mut rss_peak = sys::rss_bytes();
            let mut second = 0u32;
            loop {
                let at = sh.t0_us + (second as u64 + 1) * 1_000_000;
                let finished = tokio::select! {
                    _ = tokio::time::sleep_until(sh.clock.instant_at(at).into()) => false,
                    _ = done_rx.wait_for(|d| *d) => true,
                };
                if sh.clock.now_us() >= sh.t0_us || finished {
                    c.tick(second);
                    rss_peak = rss_peak.max(sys::rss_bytes());
                    *live.latest.lock().unwrap_or_else(|p| p.into_inner()) = c.latest;
                    let headline = sh
                        .events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .warnings
                        .iter()
                        .max_by_key(|(_, n)| **n)
                        .map(|(m, _)| m.clone());
                    *live.headline.lock().unwrap_or_else(|p| p.into_inner()) = headline;
                    second += 1;
                }
                if finished {
                    return (c, rss_peak);
                }
            }
        })
    };

    // One task per peer; task ids name the peers the engine may have to abort.
    let mut tasks = JoinSet::new();
    let mut task_peer: HashMap<tokio::task::Id, u32> = HashMap::with_capacity(sh.locals.len());
    for local in 0..sh.locals.len() as u32 {
        let handle = tasks.spawn(Peer::run(sh.clone(), local));
        task_peer.insert(handle.id(), local);
    }
    // The `[[rest]]` population (goose), if the scenario has one.
    let mut rest_task = tokio::spawn(super::rest::run(sh.clone()));
    let mut outcomes: Vec<PeerOutcome> = Vec::with_capacity(sh.locals.len());
    let mut cut_off: Vec<u32> = Vec::new();
    loop {
        tokio::select! {
            next = tasks.join_next_with_id() => match next {
                Some(Ok((id, o))) => {
                    task_peer.remove(&id);
                    outcomes.push(o);
                }
                Some(Err(e)) => {
                    if let Some(local) = task_peer.remove(&e.id()) {
                        cut_off.push(local);
                    }
                    if e.is_panic() {
                        sh.event(|ev| ev.warn(format!("a peer task failed: {e}"), 1));
                    }
                }
                None => break,
            },
            // Wakes often enough to keep the stop budget (STOP_URGENT_AFTER).
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let now = sh.clock.now_us();
                if sh.urgent_at_us.load(Ordering::Acquire) == 0 && now >= urgent_deadline(&sh) {
                    sh.go_urgent();
                }
                let urgent_at = sh.urgent_at_us.load(Ordering::Acquire);
                if urgent_at > 0 && now >= urgent_at + URGENT_ABORT_AFTER.as_micros() as u64 {
                    let left = tasks.len();
                    tasks.abort_all();
                    sh.event(|ev| {
                        ev.warn(format!("{left} peers did not return when told to stop and were aborted"), 1);
                    });
                    while let Some(r) = tasks.join_next_with_id().await {
                        match r {
                            Ok((id, o)) => {
                                task_peer.remove(&id);
                                outcomes.push(o);
                            }
                            Err(e) => cut_off.extend(task_peer.remove(&e.id())),
                        }
                    }
                    break;
                }
            }
        }
    }
    stopper.abort();
    let _ = done_tx.send(true);
    let (collector, rss_peak) = match collector.await {
        Ok(v) => v,
        Err(_) => (Collector::new(sh.metrics.clone()), sys::rss_bytes()),
    };
    live.done.store(true, Ordering::Release);
    let cpu_s = sys::harness_cpu().saturating_sub(cpu_start).as_secs_f64();

    // Accounting and outcomes.
    let names: Vec<String> = s.populations.iter().map(|p| p.name.clone()).collect();
    let mut logs = Vec::with_capacity(outcomes.len() + cut_off.len());
    let mut exp = Expectations {
        storms: s
            .storms
            .iter()
            .map(|st| StormOutcome {
                at_s: st.at.0.as_secs_f64(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut requests = Requests::default();
    for o in outcomes {
        exp.token_expiry.merge(&o.token);
        for (kind, out) in [
            super::scenario::OversizeKind::At,
            super::scenario::OversizeKind::Over,
            super::scenario::OversizeKind::Far,
        ]
        .iter()
        .zip(o.oversized.iter())
        {
            if out.sent > 0 {
                exp.oversized
                    .entry(kind.as_str().to_owned())
                    .or_default()
                    .merge(out);
            }
        }
        for (i, (dropped, back)) in o.storms.iter().enumerate() {
            exp.storms[i].dropped += dropped;
            exp.storms[i].reconnected += back;
        }
        exp.sessions += o.sessions_started;
        exp.churn_leaves += o.churn_leaves;
        exp.calls.merge(&o.calls);
        requests.merge(&o.requests);
        logs.push(o.log);
    }
    // Peers cut off lost their logs: their copies can be judged neither way.
    for &local in &cut_off {
        let plan = &layout.peers[sh.locals[local as usize] as usize];
        logs.push(super::accounting::PeerLog {
            global: plan.global,
            population: plan.population,
            channel: plan.channel,
            incomplete: true,
            ..Default::default()
        });
        sh.event(|ev| {
            ev.note("aborted", || {
                format!(
                    "peer {}: still busy when the run ended; its copies are unaccounted",
                    sh.peer_id(plan.global)
                )
            })
        });
    }
    // Bounded: goose answers its killswitch within its request timeout; after a stop the
    // report must not wait for it.
    let rest_wait = if sh.stopped_at_us.load(Ordering::Acquire) > 0 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    };
    let rest = match tokio::time::timeout(rest_wait, &mut rest_task).await {
        Ok(r) => r.ok().flatten(),
        Err(_) => {
            rest_task.abort();
            sh.event(|ev| {
                ev.warn(
                    "the [[rest]] population (goose) did not stop in time; its numbers are missing",
                    1,
                )
            });
            None
        }
    };
    let (accounts, rest) = super::rest::account(logs, &names, grace_us, rest);
    let (delivery, directs) = (accounts.channel, accounts.direct);
    // The accounting names peers by index; people search logs by peer id.
    let mut named = accounts.examples;
    named.map_lines(|l| l.replace("peer #", &format!("peer {}", sh.id_prefix)));
    sh.event(|ev| ev.examples.merge(&named));

    // Who connected, from the cells: they outlive an aborted task.
    let mut peers_connected = 0u64;
    let mut never_connected = 0u64;
    let mut last_first_welcome = setup.t0_us;
    for c in sh.cells.iter() {
        match c.first_welcome_us.load(Ordering::Acquire) {
            0 if c.attempted.load(Ordering::Acquire) => never_connected += 1,
            0 => {}
            at => {
                peers_connected += 1;
                last_first_welcome = last_first_welcome.max(at);
            }
        }
    }

    let events = std::mem::take(&mut *sh.events.lock().unwrap_or_else(|p| p.into_inner()));
    let totals = &collector.totals;
    let end = sh.end_us();
    let planned_end = setup.t0_us + s.duration.as_us();
    let mut hists = BTreeMap::new();
    for m in Metric::ALL {
        if let Some(h) = totals.hist(m) {
            hists.insert(m.name().to_owned(), Hist(h.clone()));
        }
    }
    let connections = crate::report::Connections {
        attempts: totals.counts.connect_attempts,
        established: totals.counts.connects,
        failed: totals.counts.connect_failures,
        failures: events.failures,
        peak_connected: collector
            .intervals
            .iter()
            .map(|i| i.connected)
            .max()
            .unwrap_or(0),
        peers_connected,
        all_connected_after_s: last_first_welcome.saturating_sub(setup.t0_us) as f64 / 1e6,
        connect_rate_per_s: 0.0,
        never_connected,
        aborted: cut_off.len() as u64,
    };
    let mut run = RunData {
        scenario: s.name.clone(),
        scenario_origin: setup.origin.clone(),
        scenario_toml: s.to_toml(),
        targets: setup.endpoints.iter().map(|e| e.url().to_owned()).collect(),
        embedded: setup.embedded,
        workers: setup.workers,
        peers: sh.locals.len() as u64,
        seed: s.seed,
        started_at_us: setup.t0_us,
        planned_s: s.duration.0.as_secs_f64(),
        ran_s: end.saturating_sub(setup.t0_us) as f64 / 1e6,
        grace_s: s.grace.0.as_secs_f64(),
        stopped_early: end < planned_end,
        interrupted: sh.stopped_at_us.load(Ordering::Acquire) > 0,
        hists,
        counts: totals.counts,
        intervals: collector.intervals.clone(),
        delivery,
        directs,
        errors: events.errors,
        closes: events.closes,
        unexpected_frames: events.unexpected,
        connections,
        expectations: exp,
        harness: crate::report::Harness {
            cpu_s,
            cores: sys::cores(),
            rss_baseline_bytes: rss_baseline,
            rss_peak_bytes: rss_peak,
            metrics_dropped: collector.dropped(),
            slow_path_frames: sh.slow_path.load(Ordering::Relaxed),
            clock_skew_samples: sh.clock_skew.load(Ordering::Relaxed),
            workers: setup.workers,
            timer_not_realtime: u32::from(!crate::timer::realtime()),
            ..Default::default()
        },
        warnings: events.warnings,
        requests,
        examples: events.examples,
        planned: planned(&sh),
        max_lag_p99_us: s.validity.max_lag_p99.as_us(),
        max_cpu_share: s.validity.max_cpu,
        rest,
        tls: setup.connector.tls().map(|t| {
            let mut stats = events.tls;
            stats.insecure = t.insecure;
            stats.resumption = t.resumption_name().to_owned();
            stats
        }),
    };
    run.finish();
    run
}
