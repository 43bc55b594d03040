//! [`RunData`]: the raw, mergeable result of one process (or of all workers merged), and
//! the counters it is made of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::collector::Interval;
use crate::metrics::{Counts, Hist, Metric};

/// Delivery accounting of channel messages (or directs), per publisher → subscriber pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Copies that had to arrive: the recipient was subscribed (acked) before the send
    /// and stayed subscribed at least `grace` after it; the publish was acknowledged.
    pub expected: u64,
    /// Expected copies that arrived (each counted once).
    pub delivered: u64,
    /// Expected copies that never arrived.
    pub lost: u64,
    /// Extra copies of a message a recipient already had.
    pub duplicated: u64,
    /// Copies that arrived after a later message of the same publisher on that pair.
    pub reordered: u64,
    /// Copies that must not have arrived: from a refused publish, to the publisher
    /// itself, from another room, or long before the recipient subscribed.
    pub unexpected: u64,
    /// Copies that arrived where the rules cannot decide (recipient joining or leaving
    /// within `grace` of the send, or publish unconfirmed because its connection closed).
    pub unaccounted: u64,
}

impl Delivery {
    pub fn merge(&mut self, o: &Delivery) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
        self.unaccounted += o.unaccounted;
    }
}

/// Outcomes of one kind of oversized frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OversizeOutcome {
    /// Frames sent (or, with `expect = "refuse"`, refused before sending).
    pub sent: u64,
    /// Acknowledged by the server (right for `at`, wrong for `over`/`far`).
    pub accepted: u64,
    /// Connection closed with 1009.
    pub closed_1009: u64,
    /// Answered with an `error` frame.
    pub error_frame: u64,
    /// Not sent: the peer refused locally (CLI-5).
    pub refused: u64,
    /// Closed with another code, or no answer before the connection ended.
    pub other: u64,
    /// Outcomes different from the scenario's expectation.
    pub mismatched: u64,
}

impl OversizeOutcome {
    pub fn merge(&mut self, o: &OversizeOutcome) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        self.closed_1009 += o.closed_1009;
        self.error_frame += o.error_frame;
        self.refused += o.refused;
        self.other += o.other;
        self.mismatched += o.mismatched;
    }
}

/// Expiring tokens (EXP-1): sessions whose token ran out mid-run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExpiry {
    /// Sessions whose token expired while connected.
    pub expired_sessions: u64,
    /// 4002 closes seen within the tolerance window (exp − 1 s .. exp + 0.5 s).
    pub closed_4002_on_time: u64,
    /// 4002 closes outside that window.
    pub closed_4002_off_time: u64,
    /// Expired tokens still connected 1 s after `exp` (no 4002 came).
    pub not_closed: u64,
    /// Sessions that came back with a fresh token.
    pub reconnected: u64,
}

impl TokenExpiry {
    pub fn merge(&mut self, o: &TokenExpiry) {
        self.expired_sessions += o.expired_sessions;
        self.closed_4002_on_time += o.closed_4002_on_time;
        self.closed_4002_off_time += o.closed_4002_off_time;
        self.not_closed += o.not_closed;
        self.reconnected += o.reconnected;
    }
}

/// One reconnect storm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StormOutcome {
    /// When it hit, seconds after the start.
    pub at_s: f64,
    /// Connections dropped at once.
    pub dropped: u64,
    /// Of those, peers subscribed again before the end of the run.
    pub reconnected: u64,
}

/// Checks of outcomes the scenario asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expectations {
    pub token_expiry: TokenExpiry,
    /// Keyed by `at`, `over`, `far`.
    pub oversized: BTreeMap<String, OversizeOutcome>,
    pub storms: Vec<StormOutcome>,
    /// Sessions started (first connects, churn, reconnects).
    pub sessions: u64,
    /// Sessions the peers ended on purpose (churn).
    pub churn_leaves: u64,
    /// Call setup (`[population.call]`); reported as `calls` in summary.json.
    #[serde(default, skip_serializing_if = "super::Calls::is_empty")]
    pub calls: super::Calls,
}

impl Expectations {
    pub fn merge(&mut self, o: &Expectations) {
        self.token_expiry.merge(&o.token_expiry);
        for (k, v) in &o.oversized {
            self.oversized.entry(k.clone()).or_default().merge(v);
        }
        for (i, s) in o.storms.iter().enumerate() {
            if let Some(mine) = self.storms.get_mut(i) {
                mine.dropped += s.dropped;
                mine.reconnected += s.reconnected;
            } else {
                self.storms.push(*s);
            }
        }
        self.sessions += o.sessions;
        self.churn_leaves += o.churn_leaves;
        self.calls.merge(&o.calls);
    }
}

/// Connection attempts and how they ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    pub attempts: u64,
    /// Welcomed.
    pub established: u64,
    pub failed: u64,
    /// Failed attempts by reason (`http_429`, `close_4010`, `timeout`, `refused`, …).
    pub failures: BTreeMap<String, u64>,
    /// Most peers connected at once (sum over workers, per second).
    pub peak_connected: i64,
    /// Peers that connected at least once.
    #[serde(default)]
    pub peers_connected: u64,
    /// Seconds from the start until the last peer's first welcome.
    #[serde(default)]
    pub all_connected_after_s: f64,
    /// peers_connected / all_connected_after_s: the achieved connect rate of the ramp.
    #[serde(default)]
    pub connect_rate_per_s: f64,
    /// Peers that tried to connect and never got a `welcome`.
    #[serde(default)]
    pub never_connected: u64,
    /// Peers whose task had to be cut off at the end (they did not finish after the drain
    /// or a stop) or failed; what they measured before is kept, their accounting is not.
    #[serde(default)]
    pub aborted: u64,
}

impl Connections {
    pub fn merge(&mut self, o: &Connections) {
        self.attempts += o.attempts;
        self.established += o.established;
        self.failed += o.failed;
        add_map(&mut self.failures, &o.failures);
        self.peers_connected += o.peers_connected;
        self.never_connected += o.never_connected;
        self.aborted += o.aborted;
        self.all_connected_after_s = self.all_connected_after_s.max(o.all_connected_after_s);
    }
}

/// What became of the requests of one kind that carried a `requestId` (ACK-1: each gets
/// an `ack` or an `error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub sent: u64,
    pub acked: u64,
    /// Answered with an `error` (or, for an oversized frame, a 1009 close).
    pub refused: u64,
    /// No answer although the connection stayed open `grace` (at most 5 s) after the send:
    /// the server broke ACK-1.
    pub unacked: u64,
    /// No answer, but the connection ended sooner than that after the send (the close is
    /// judged on its own).
    pub unsettled: u64,
}

impl RequestCounts {
    pub fn merge(&mut self, o: &RequestCounts) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.unacked += o.unacked;
        self.unsettled += o.unsettled;
    }
}

/// `requests` in summary.json: publishes (oversized frames included), directs and
/// subscribes that asked for an ack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub publishes: RequestCounts,
    pub directs: RequestCounts,
    pub subscribes: RequestCounts,
}

impl Requests {
    pub fn merge(&mut self, o: &Requests) {
        self.publishes.merge(&o.publishes);
        self.directs.merge(&o.directs);
        self.subscribes.merge(&o.subscribes);
    }

    /// All three kinds summed.
    pub fn total(&self) -> RequestCounts {
        let mut t = self.publishes;
        t.merge(&self.directs);
        t.merge(&self.subscribes);
        t
    }
}

/// First examples of what went wrong, by key (`closes/1006`, `acks/publish`, `lost`):
/// a few lines each, so a failing check can show what it saw without the harness keeping
/// everything a hostile server sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Examples(pub BTreeMap<String, Vec<String>>);

impl Examples {
    /// Lines kept per key.
    pub const PER_KEY: usize = 3;
    /// Keys kept; a server failing in ever-new ways cannot grow this.
    pub const KEYS: usize = 64;

    /// Keeps `line()` under `key` unless that key is full; `line` runs only when kept.
    pub fn note(&mut self, key: &str, line: impl FnOnce() -> String) {
        if let Some(v) = self.0.get_mut(key) {
            if v.len() < Self::PER_KEY {
                v.push(truncate(line(), 200));
            }
        } else if self.0.len() < Self::KEYS {
            self.0.insert(key.to_owned(), vec![truncate(line(), 200)]);
        }
    }

    pub fn merge(&mut self, o: &Examples) {
        for (k, lines) in &o.0 {
            for l in lines {
                self.note(k, || l.clone());
            }
        }
    }

    /// Rewrites every line (e.g. to name peers by id).
    pub fn map_lines(&mut self, f: impl Fn(&str) -> String) {
        for lines in self.0.values_mut() {
            for l in lines.iter_mut() {
                *l = f(l);
            }
        }
    }

    /// The lines under `key` and under every `key/…`.
    pub fn under(&self, key: &str) -> Vec<&str> {
        let nested = format!("{key}/");
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() == key || k.starts_with(&nested))
            .flat_map(|(_, v)| v.iter().map(String::as_str))
            .collect()
    }
}

/// At most `max` bytes of `s`, on a character boundary, with `…` when cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// What the plan made possible, for judging a run by what it could have shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// Peers that publish on a schedule.
    pub publishers: u64,
    /// Rooms with a publisher and at least one other member: copies can be expected.
    pub rooms_with_recipients: u64,
    /// Rooms of at least two members whose population sends directs.
    pub rooms_with_directs: u64,
}

impl Planned {
    pub fn merge(&mut self, o: &Planned) {
        self.publishers += o.publishers;
        self.rooms_with_recipients += o.rooms_with_recipients;
        self.rooms_with_directs += o.rooms_with_directs;
    }
}

/// The harness's own resource use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Harness {
    /// CPU seconds of the load engine threads (all workers).
    pub cpu_s: f64,
    /// Average CPU in percent of one core over the run (all workers).
    pub cpu_percent: f64,
    /// Cores of the machine.
    pub cores: usize,
    /// Highest per-second CPU as a fraction of the cores (0..1).
    pub cpu_peak_share: f64,
    /// Average busy share of the whole machine while publishing (all processes, 0..100);
    /// near 100 means server, harness and anything else competed for the cores.
    #[serde(default)]
    pub machine_cpu_percent: f64,
    /// Resident memory before the first connect (summed over processes).
    pub rss_baseline_bytes: u64,
    /// Highest resident memory during the run (summed over processes).
    pub rss_peak_bytes: u64,
    /// (peak − baseline) / peak connected peers. With the in-process server this
    /// includes the server's memory.
    pub rss_per_peer_bytes: u64,
    /// Samples lost because every recording stripe was busy (should be 0).
    pub metrics_dropped: u64,
    /// Frames the fast scanner could not read (parsed with serde_json instead).
    pub slow_path_frames: u64,
    /// Receipts stamped earlier than their send time (clocks of different machines).
    pub clock_skew_samples: u64,
    /// Worker processes.
    pub workers: u32,
    /// Processes whose send timer could not get real-time priority (`crate::timer`):
    /// their sends lag more under load; schedule_lag shows by how much.
    #[serde(default)]
    pub timer_not_realtime: u32,
}

impl Harness {
    pub fn merge(&mut self, o: &Harness) {
        self.cpu_s += o.cpu_s;
        self.rss_baseline_bytes += o.rss_baseline_bytes;
        self.rss_peak_bytes += o.rss_peak_bytes;
        self.metrics_dropped += o.metrics_dropped;
        self.slow_path_frames += o.slow_path_frames;
        self.clock_skew_samples += o.clock_skew_samples;
        self.timer_not_realtime += o.timer_not_realtime;
        self.cores = self.cores.max(o.cores);
    }
}

/// The raw result of a run (or of one worker's shard of it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunData {
    pub scenario: String,
    /// `scenarios/x.toml` or `builtin:x`.
    pub scenario_origin: String,
    /// The scenario as it ran, flags folded in.
    pub scenario_toml: String,
    pub targets: Vec<String>,
    pub embedded: bool,
    pub workers: u32,
    /// Planned peers covered by this data.
    pub peers: u64,
    pub seed: u64,
    /// Start of the run, Unix µs.
    pub started_at_us: u64,
    /// Planned duration and the time publishing actually lasted.
    pub planned_s: f64,
    pub ran_s: f64,
    pub grace_s: f64,
    /// Ctrl-C (or a stop request) ended the run early.
    pub stopped_early: bool,
    /// A stop was requested (Ctrl-C, SIGTERM): the run is incomplete, whatever it shows.
    #[serde(default)]
    pub interrupted: bool,
    /// Run totals per metric (`fanout`, `ack`, …).
    pub hists: BTreeMap<String, Hist>,
    pub counts: Counts,
    pub intervals: Vec<Interval>,
    /// Channel-message accounting per receiving population.
    pub delivery: BTreeMap<String, Delivery>,
    /// Direct-message accounting per receiving population.
    pub directs: BTreeMap<String, Delivery>,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub unexpected_frames: BTreeMap<String, u64>,
    pub connections: Connections,
    pub expectations: Expectations,
    pub harness: Harness,
    /// Plain-language warnings with how often they happened.
    pub warnings: BTreeMap<String, u64>,
    /// Requests that asked for an ack, and what became of them.
    #[serde(default)]
    pub requests: Requests,
    /// First examples of failures, for the checks' evidence.
    #[serde(default)]
    pub examples: Examples,
    /// What the plan made possible (publishers, rooms with recipients).
    #[serde(default)]
    pub planned: Planned,
    /// Largest acceptable schedule-lag p99 (µs) and CPU share, from the scenario.
    pub max_lag_p99_us: u64,
    pub max_cpu_share: f64,
    /// The `[[rest]]` population's requests (goose metrics), when the scenario has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<crate::load::rest::RestReport>,
    /// TLS as the peers negotiated it; `None` for `ws://` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStats>,
}

/// The TLS handshakes of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsStats {
    /// `--insecure`: server certificates were not verified.
    pub insecure: bool,
    /// `--tls-resumption`: `off`, `per-peer` or `shared`.
    pub resumption: String,
    /// Successful handshakes by kind.
    pub full: u64,
    pub resumed: u64,
    /// Successful handshakes by protocol version (`TLSv1.3`), cipher suite
    /// (`TLS13_AES_128_GCM_SHA256`) and key-exchange group (`X25519MLKEM768`).
    pub by_version: BTreeMap<String, u64>,
    pub by_cipher: BTreeMap<String, u64>,
    pub by_group: BTreeMap<String, u64>,
}

impl TlsStats {
    /// Counts one handshake.
    pub fn record(&mut self, info: &crate::transport::TlsInfo) {
        if info.resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
        *self.by_version.entry(info.version.to_owned()).or_default() += 1;
        *self.by_cipher.entry(info.cipher.to_owned()).or_default() += 1;
        *self.by_group.entry(info.group.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, o: &TlsStats) {
        self.insecure |= o.insecure;
        if self.resumption.is_empty() {
            self.resumption = o.resumption.clone();
        }
        self.full += o.full;
        self.resumed += o.resumed;
        add_map(&mut self.by_version, &o.by_version);
        add_map(&mut self.by_cipher, &o.by_cipher);
        add_map(&mut self.by_group, &o.by_group);
    }
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl RunData {
    pub fn hist(&self, m: Metric) -> Hist {
        self.hists.get(m.name()).cloned().unwrap_or_default()
    }

    /// Merges another worker's shard: histograms exactly, counts summed, intervals by second.
    pub fn merge(&mut self, o: &RunData) {
        for (k, h) in &o.hists {
            self.hists.entry(k.clone()).or_default().add(&h.0);
        }
        self.counts.merge(&o.counts);
        for iv in &o.intervals {
            match self
                .intervals
                .binary_search_by_key(&iv.second, |x| x.second)
            {
                Ok(i) => self.intervals[i].merge(iv),
                Err(i) => self.intervals.insert(i, iv.clone()),
            }
        }
        for (k, d) in &o.delivery {
            self.delivery.entry(k.clone()).or_default().merge(d);
        }
        for (k, d) in &o.directs {
            self.directs.entry(k.clone()).or_default().merge(d);
        }
        add_map(&mut self.errors, &o.errors);
        add_map(&mut self.closes, &o.closes);
        add_map(&mut self.unexpected_frames, &o.unexpected_frames);
        add_map(&mut self.warnings, &o.warnings);
        self.requests.merge(&o.requests);
        self.examples.merge(&o.examples);
        self.planned.merge(&o.planned);
        self.connections.merge(&o.connections);
        match (&mut self.tls, &o.tls) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.tls = Some(b.clone()),
            _ => {}
        }
        self.expectations.merge(&o.expectations);
        self.harness.merge(&o.harness);
        self.peers += o.peers;
        self.ran_s = self.ran_s.max(o.ran_s);
        self.stopped_early |= o.stopped_early;
        self.interrupted |= o.interrupted;
    }

    /// Recomputes the figures that only make sense over all workers.
    pub fn finish(&mut self) {
        self.connections.peak_connected = self
            .intervals
            .iter()
            .map(|i| i.connected)
            .max()
            .unwrap_or(0)
            .max(self.connections.peak_connected);
        self.connections.connect_rate_per_s = if self.connections.all_connected_after_s > 0.0 {
            (self.connections.peers_connected as f64 / self.connections.all_connected_after_s)
                .round()
        } else {
            0.0
        };
        let wall = self.intervals.len().max(1) as f64;
        self.harness.cpu_percent = (self.harness.cpu_s / wall * 100.0 * 10.0).round() / 10.0;
        let cores = self.harness.cores.max(1) as f64;
        // The busiest second while publishing; the closing second is short and spiky.
        let hold = self.ran_s;
        self.harness.cpu_peak_share = self
            .intervals
            .iter()
            .filter(|i| (i.second as f64) + 1.0 <= hold.max(1.0))
            .map(|i| i.harness_cpu_percent / 100.0 / cores)
            .fold(0.0, f64::max);
        let busy: Vec<f64> = self
            .intervals
            .iter()
            .filter(|i| (i.second as f64) + 1.0 <= hold.max(1.0))
            .map(|i| i.machine_cpu_percent)
            .collect();
        self.harness.machine_cpu_percent = if busy.is_empty() {
            0.0
        } else {
            (busy.iter().sum::<f64>() / busy.len() as f64 * 10.0).round() / 10.0
        };
        let peers = self.connections.peak_connected.max(1) as u64;
        self.harness.rss_per_peer_bytes = self
            .harness
            .rss_peak_bytes
            .saturating_sub(self.harness.rss_baseline_bytes)
            / peers;
    }
}
