//! One process's share of a run: builds the shared state of its peers, spawns one task
//! per peer and the once-a-second collector, moves the end of the run forward on a
//! stop, bounds every wait, and turns what the peers logged into [`RunData`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connect::Dest;
use super::peer::{Peer, PeerOutcome};
use super::plan::{Layout, Shard};
use super::scenario::Scenario;
use crate::metrics::collector::{Collector, Latest};
use crate::metrics::{Hist, Metric, Metrics, sys};
use crate::report::{Expectations, RunData, StormOutcome};
use crate::shutdown::Stop;
use crate::transport::{self, Connector};

/// Handshakes in flight per process: enough for ~15k connects/s on loopback without
/// flooding the server's accept backlog (LIMITS.md).
const HANDSHAKES_IN_FLIGHT: usize = 256;
/// How long past the drain the engine waits for peers before aborting them.
const HARD_STOP_SLACK: Duration = Duration::from_secs(20);

/// Wall-clock µs, read through a monotonic clock: one `SystemTime` read at start, then
/// `Instant` (cheaper, and never steps backwards). Processes on one machine agree to
/// within microseconds; across machines it is as good as their clock sync.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            base: Instant::now(),
            base_us,
        }
    }
    #[inline]
    pub fn now_us(&self) -> u64 {
        self.base_us + self.base.elapsed().as_micros() as u64
    }
    pub fn instant_at(&self, us: u64) -> tokio::time::Instant {
        let offset = Duration::from_micros(us.saturating_sub(self.base_us));
        tokio::time::Instant::from_std(self.base + offset.min(Duration::from_secs(86_400 * 365)))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Credentials for the peers' connections.
#[derive(Debug, Clone, Default)]
pub struct Creds {
    pub key_id: String,
    pub secret: String,
    pub publishable: Option<String>,
}

/// Rare events, counted under one lock (errors, closes, failures, warnings).
#[derive(Debug, Default)]
pub struct Events {
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub unexpected: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub warnings: BTreeMap<String, u64>,
    pub tls: crate::report::TlsStats,
}

/// Distinct warning texts kept; beyond this they are lumped together, so a server that
/// fails in ever-new words cannot grow the harness's memory.
const MAX_WARNINGS: usize = 64;

impl Events {
    pub fn warn(&mut self, message: impl Into<String>, n: u64) {
        let message = message.into();
        let key = if self.warnings.len() >= MAX_WARNINGS && !self.warnings.contains_key(&message) {
            "more warnings of other kinds (see connections.failures, closes and errors)".to_owned()
        } else {
            message
        };
        *self.warnings.entry(key).or_default() += n;
    }
}

/// Per-peer state other peers read: presence causes and who is online.
#[derive(Debug, Default)]
pub struct Cell {
    pub online: AtomicBool,
    /// When the peer last sent a subscribe / caused a leave (µs; 0 = unknown).
    pub join_cause_us: AtomicU64,
    pub leave_cause_us: AtomicU64,
}

/// Server-assigned peer ids (publishable keys), both ways.
#[derive(Debug, Default)]
pub struct ServerIds {
    by_local: Mutex<HashMap<u32, String>>,
    by_id: Mutex<HashMap<String, u32>>,
}

/// What the peers of this process share.
pub struct Shared {
    pub clock: Clock,
    pub t0_us: u64,
    /// End of publishing (µs); a stop moves it forward.
    end_us: AtomicU64,
    pub grace_us: u64,
    /// Flips to true when `end_us` moved (a stop), waking sleeping peers.
    pub stop: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    pub scenario: Arc<Scenario>,
    pub layout: Arc<Layout>,
    /// local index → global index, and back (u32::MAX when not in this shard).
    pub locals: Box<[u32]>,
    pub local_of: Box<[u32]>,
    pub cells: Box<[Cell]>,
    /// Channel id → local members (empty for rooms of other shards).
    pub rooms: Box<[Vec<u32>]>,
    /// Channel id → the name as a JSON string literal.
    pub channel_json: Box<[String]>,
    pub pub_rates: Vec<f64>,
    pub endpoints: Vec<Dest>,
    pub connector: Connector,
    pub creds: Creds,
    pub source_ip: Option<Ipv4Addr>,
    pub handshakes: Semaphore,
    pub ws_config: WebSocketConfig,
    id_prefix: String,
    server_ids: ServerIds,
    events: Mutex<Events>,
    pub slow_path: AtomicU64,
    pub clock_skew: AtomicU64,
}

impl Shared {
    pub fn end_us(&self) -> u64 {
        self.end_us.load(Ordering::Acquire)
    }

    pub fn event(&self, f: impl FnOnce(&mut Events)) {
        let mut g = self.events.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    /// The `sub` of a peer's tokens.
    pub fn peer_id(&self, global: u32) -> String {
        format!("{}{global}", self.id_prefix)
    }

    pub fn register_server_id(&self, local: u32, id: &str) {
        let global = self.locals[local as usize];
        let old = self
            .server_ids
            .by_local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(local, id.to_owned());
        let mut by_id = self
            .server_ids
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = old {
            by_id.remove(&old);
        }
        by_id.insert(id.to_owned(), global);
    }

    /// The id to address `local` with in a `send`.
    pub fn wire_id(&self, local: u32) -> Option<String> {
        let ids = self
            .server_ids
            .by_local
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match ids.get(&local) {
            Some(id) => Some(id.clone()),
            None => Some(self.peer_id(self.locals[local as usize])),
        }
    }

    /// The local index of a peer named `id` on the wire, if it is one of ours.
    pub fn local_of_id(&self, id: &str) -> Option<u32> {
        let global = match id
            .strip_prefix(self.id_prefix.as_str())
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(g) => g,
            None => *self
                .server_ids
                .by_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)?,
        };
        let local = *self.local_of.get(global as usize)?;
        (local != u32::MAX).then_some(local)
    }
}

/// Everything a process needs to play its share.
#[derive(Clone)]
pub struct Setup {
    pub scenario: Arc<Scenario>,
    pub origin: String,
    pub shard: Shard,
    pub workers: u32,
    pub endpoints: Vec<Dest>,
    /// TLS and `--connect-to` settings every peer dials with.
    pub connector: Connector,
    pub embedded: bool,
    pub creds: Creds,
    pub source_ip: Option<Ipv4Addr>,
    /// Prefix of peer ids, unique per run (`st3f9a-`).
    pub run_tag: String,
    /// Start of the run, Unix µs (the same in every worker).
    pub t0_us: u64,
}

/// What the progress view and the worker protocol read while a run goes on.
pub struct Live {
    pub metrics: Arc<Metrics>,
    pub latest: Mutex<Latest>,
    pub t0_us: u64,
    pub end_us: AtomicU64,
    pub grace_us: u64,
    pub peers: u64,
    /// The most frequent warning so far.
    pub headline: Mutex<Option<String>>,
    pub done: AtomicBool,
}

impl Live {
    pub fn new(t0_us: u64, end_us: u64, grace_us: u64, peers: u64) -> Arc<Live> {
        Arc::new(Live {
            metrics: Arc::new(Metrics::new(stripes())),
            latest: Mutex::new(Latest::default()),
            t0_us,
            end_us: AtomicU64::new(end_us),
            grace_us,
            peers,
            headline: Mutex::new(None),
            done: AtomicBool::new(false),
        })
    }
}

fn stripes() -> usize {
    (sys::cores() * 4).clamp(4, 64)
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
        stop: stop_rx,
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
        // Clients accept inbound frames up to 1 MiB (CLI-6).
        ws_config: transport::ws::peer_config(
            s.largest_frame(crate::proto::limits::DEFAULT_MAX_MESSAGE_SIZE),
            1 << 20,
        ),
        id_prefix: format!("{}-", setup.run_tag),
        server_ids: ServerIds::default(),
        events: Mutex::new(Events::default()),
        slow_path: AtomicU64::new(0),
        clock_skew: AtomicU64::new(0),
    });
    let rss_baseline = sys::rss_bytes();
    let cpu_start = sys::harness_cpu();

    // A stop moves the end of the run to now; peers then drain and close.
    let stopper = {
        let sh = sh.clone();
        let live = live.clone();
        tokio::spawn(async move {
            stop.wait().await;
            let now = sh.clock.now_us();
            let new_end = now.max(sh.t0_us).min(sh.end_us());
            sh.end_us.store(new_end, Ordering::Release);
            live.end_us.store(new_end, Ordering::Release);
            let _ = stop_tx.send(true);
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
                    _ = tokio::time::sleep_until(sh.clock.instant_at(at)) => false,
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

    // One task per peer.
    let mut tasks = JoinSet::new();
    for local in 0..sh.locals.len() as u32 {
        tasks.spawn(Peer::run(sh.clone(), local));
    }
    // The `[[rest]]` population (goose), if the scenario has one.
    let rest_task = tokio::spawn(super::rest::run(sh.clone()));
    let mut outcomes: Vec<PeerOutcome> = Vec::with_capacity(sh.locals.len());
    loop {
        let hard = sh.end_us() + grace_us + HARD_STOP_SLACK.as_micros() as u64;
        let wait = Duration::from_micros(hard.saturating_sub(sh.clock.now_us()));
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok(o)) => outcomes.push(o),
                Some(Err(e)) => {
                    sh.event(|ev| {
                        ev.warn(format!("a peer task failed: {e}"), 1);
                    });
                }
                None => break,
            },
            _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {
                if sh.clock.now_us() >= hard {
                    let left = tasks.len();
                    tasks.abort_all();
                    sh.event(|ev| {
                        ev.warn(format!("{left} peers did not finish within 20 s after the drain and were aborted"), 1);
                    });
                    while tasks.join_next().await.is_some() {}
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
    let mut logs = Vec::with_capacity(outcomes.len());
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
    let mut peers_connected = 0u64;
    let mut last_first_welcome = setup.t0_us;
    for o in outcomes {
        if let Some(at) = o.first_welcome_us {
            peers_connected += 1;
            last_first_welcome = last_first_welcome.max(at);
        }
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
        logs.push(o.log);
    }
    let rest = rest_task.await.ok().flatten();
    let (delivery, directs, rest) = super::rest::account(logs, &names, grace_us, rest);

    let events = std::mem::take(&mut *sh.events.lock().unwrap_or_else(|p| p.into_inner()));
    let totals = &collector.totals;
    let end = sh.end_us();
    let planned_end = setup.t0_us + s.duration.as_us();
    let mut hists = BTreeMap::new();
    for m in Metric::ALL {
        let h = totals.hist(m);
        if !h.is_empty() {
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
            ..Default::default()
        },
        warnings: events.warnings,
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
