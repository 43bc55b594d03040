//! What the peers of one process share while a run goes on: the clock, the end of the
//! run (which a stop moves), the stop stages, the layout and rooms, rare events under one
//! lock, and per-peer cells other peers read. Also the live view the progress line and
//! the worker protocol read.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connect::Dest;
use super::plan::{Layout, Shard};
use super::scenario::Scenario;
use crate::metrics::collector::Latest;
use crate::metrics::{Metrics, sys};
use crate::report::Examples;
use crate::transport::Connector;

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
    pub fn instant_at(&self, us: u64) -> Instant {
        let offset = Duration::from_micros(us.saturating_sub(self.base_us));
        self.base + offset.min(Duration::from_secs(86_400 * 365))
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
    /// First examples of failures, by key (`closes/1006`, `acks/publish`, …).
    pub examples: Examples,
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

    /// Keeps an example line under `key` (bounded; `line` runs only when kept).
    pub fn note(&mut self, key: &str, line: impl FnOnce() -> String) {
        self.examples.note(key, line);
    }
}

/// Per-peer state other peers read (presence causes, who is online) and the engine reads
/// even for a peer it had to abort (whether it ever connected).
#[derive(Debug, Default)]
pub struct Cell {
    pub online: AtomicBool,
    /// The peer tried to connect at least once.
    pub attempted: AtomicBool,
    /// When its first session was welcomed (absolute µs; 0 = never).
    pub first_welcome_us: AtomicU64,
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
    pub(super) end_us: AtomicU64,
    /// The accounting margin: a member must stay this long after a send to be an
    /// expected recipient of it.
    pub grace_us: u64,
    /// How long peers drain after the end: `grace`, shortened by a stop (the accounting
    /// keeps `grace`, so a short drain makes copies unaccounted, never lost).
    pub(super) drain_us: AtomicU64,
    /// When a stop was requested (absolute µs; 0 = none).
    pub(super) stopped_at_us: AtomicU64,
    /// Flips to true when `end_us` moved (a stop), waking sleeping peers.
    pub stop: watch::Receiver<bool>,
    /// Flips to true when every peer must drop its connection and return at once (a
    /// second Ctrl-C, or peers still busy well after a stop or the drain).
    pub(super) urgent: watch::Sender<bool>,
    /// When urgency began (absolute µs; 0 = not yet).
    pub(super) urgent_at_us: AtomicU64,
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
    pub(super) id_prefix: String,
    pub(super) server_ids: ServerIds,
    pub(super) events: Mutex<Events>,
    pub slow_path: AtomicU64,
    pub clock_skew: AtomicU64,
}

impl Shared {
    pub fn end_us(&self) -> u64 {
        self.end_us.load(Ordering::Acquire)
    }

    /// When peers close: the end of publishing plus the drain.
    pub fn drain_end_us(&self) -> u64 {
        self.end_us()
            .saturating_add(self.drain_us.load(Ordering::Acquire))
    }

    /// A receiver that turns true when peers must return at once.
    pub fn urgent(&self) -> watch::Receiver<bool> {
        self.urgent.subscribe()
    }

    /// Tells every peer to drop its connection and return now.
    pub fn go_urgent(&self) {
        let _ = self.urgent_at_us.compare_exchange(
            0,
            self.clock.now_us().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.urgent.send_replace(true);
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
