//! Scenario files (TOML): the types, the loader and the validation.
//!
//! A scenario names populations of simulated peers (count, rooms, metadata, ramp) and
//! what they do (churn sessions, publishes, directs, oversized frames, expiring tokens),
//! plus reconnect storms, thresholds and validity limits. Every table denies unknown
//! fields. Errors name the file, the line and the field (`population[0].publish.rate`).
//!
//! CLI flags (`--peers`, `--duration`, `--rate`, `--seed`, `--threshold`) are folded in by
//! [`Scenario::apply`] and then validated by the same [`Scenario::validate`] a file goes
//! through: one code path. Imports only `proto` (channel-name rules).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::checks::config::ChecksConfig;
use crate::proto::limits::{is_reserved, valid_channel};

/// The built-in scenarios, compiled into the binary: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("smoke", include_str!("../../scenarios/smoke.toml")),
    (
        "typing-storm",
        include_str!("../../scenarios/typing-storm.toml"),
    ),
    (
        "presence-churn",
        include_str!("../../scenarios/presence-churn.toml"),
    ),
    ("chat-room", include_str!("../../scenarios/chat-room.toml")),
    (
        "backend-broadcast",
        include_str!("../../scenarios/backend-broadcast.toml"),
    ),
    ("dm-storm", include_str!("../../scenarios/dm-storm.toml")),
    (
        "reconnect-storm",
        include_str!("../../scenarios/reconnect-storm.toml"),
    ),
    (
        "oversized-frames",
        include_str!("../../scenarios/oversized-frames.toml"),
    ),
    (
        "token-expiry",
        include_str!("../../scenarios/token-expiry.toml"),
    ),
    ("idle-hold", include_str!("../../scenarios/idle-hold.toml")),
    (
        "video-rooms",
        include_str!("../../scenarios/video-rooms.toml"),
    ),
    ("webinar", include_str!("../../scenarios/webinar.toml")),
];

/// Why a scenario could not be loaded. The `Display` text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "cannot read scenario {path}: {source}; give a file path or one of the built-in names ({})",
        builtin_names()
    )]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A syntax, type or validation error at a known place.
    #[error("{origin}:{line}:{column}: `{field}`: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    /// A bad value coming from a command-line flag.
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
}

fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

mod call;
mod dist;

pub use call::{Call, Offers, Renegotiate};
pub use dist::{Dur, DurDist, SizeDist, parse_duration};

// ---------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------

/// A load scenario, as written in a TOML file (see docs/LOAD.md for the format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in the report directory name.
    pub name: String,
    /// One line for `stampede scenarios`.
    #[serde(default)]
    pub description: String,
    /// How long the run publishes and churns, ramp included; a drain of `grace` follows.
    pub duration: Dur,
    /// Seed of every random choice (rooms, arrivals, sizes, churn, storms).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long after a publish its copies must have arrived: a member counts as an
    /// expected recipient only if it stays subscribed this long after the send, and the
    /// run drains this long after the last publish.
    #[serde(default = "default_grace")]
    pub grace: Dur,
    #[serde(default, rename = "population")]
    pub populations: Vec<Population>,
    #[serde(default, rename = "storm", skip_serializing_if = "Vec::is_empty")]
    pub storms: Vec<Storm>,
    /// REST control-plane load through goose (at most one; see [`super::rest`]).
    #[serde(default, rename = "rest", skip_serializing_if = "Vec::is_empty")]
    pub rest: Vec<super::rest::RestPopulation>,
    /// Pass/fail rules: `"fanout.p99" = "<50ms"`; CLI `--threshold` rules are appended.
    #[serde(default, skip_serializing_if = "Thresholds::is_empty")]
    pub thresholds: Thresholds,
    /// How the built-in checks are relaxed (`[checks]`; CLI `--allow` folds in).
    #[serde(default, skip_serializing_if = "ChecksConfig::is_empty")]
    pub checks: ChecksConfig,
    #[serde(default)]
    pub validity: Validity,
}

fn default_seed() -> u64 {
    1
}
fn default_grace() -> Dur {
    Dur::secs(2)
}

/// A group of peers that behave alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    pub name: String,
    /// Number of peers (over all workers).
    pub peers: u32,
    /// Number of rooms (channels) the peers are spread over; 0 = no subscription.
    /// Alternative to `room_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<u32>,
    /// Peers per room; the room count follows from `peers` (and scales with `--peers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_size: Option<u32>,
    /// Channel name template; `{room}` is the room number, `{population}` the name.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// How peers are dealt to rooms.
    #[serde(default)]
    pub assign: Assign,
    /// Connects are spread evenly over this long from the start of the run.
    #[serde(default)]
    pub ramp: Dur,
    /// Subscribe with `includeSenderMetadata: true` (PUB-6).
    #[serde(default)]
    pub include_sender_metadata: bool,
    /// `peerMetadata` claim of each peer's token; strings may use `{peer}`, `{index}`,
    /// `{room}` and `{population}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_metadata: Option<Map<String, Value>>,
    /// How peers authenticate: minted tokens (default) or the publishable key.
    #[serde(default)]
    pub credential: Credential,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<Direct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversize: Option<Oversize>,
    /// WebRTC call setup over directs (`[population.call]`, docs/LOAD.md "Calls").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenLife>,
}

fn default_channel() -> String {
    "room-{room}".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assign {
    /// Consecutive peers share a room (peers 0..k in room 0, …).
    #[default]
    Block,
    /// Peer i goes to room i mod rooms.
    RoundRobin,
    /// A seeded shuffle, then blocks.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// `?token=` minted per connection from `--key-id/--secret`.
    #[default]
    Token,
    /// `?key=` with `--publishable-key` (server-assigned peer ids, no expiry).
    Publishable,
}

/// Churn: peers connect, subscribe, stay for `duration`, leave, stay away for `gap`, repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// How long a session stays subscribed.
    pub duration: DurDist,
    /// How long a peer stays away between sessions.
    #[serde(default = "default_gap")]
    pub gap: DurDist,
    /// How a session ends.
    #[serde(default)]
    pub leave: Leave,
}

fn default_gap() -> DurDist {
    DurDist::Constant(Dur::secs(1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leave {
    /// Unsubscribe (waiting for the ack), then close with 1000.
    Unsubscribe,
    /// Close with 1000 without unsubscribing.
    #[default]
    Close,
    /// Each session picks one of the two at random.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced, each peer with its own random phase.
    #[default]
    Constant,
    /// Exponential gaps (a Poisson process).
    Poisson,
}

/// Channel publishes to the peer's room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Publishes per second per publishing peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Publishes per second over the whole population (split evenly over its publishers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_rate: Option<f64>,
    #[serde(default)]
    pub arrival: Arrival,
    /// Size of the `data` JSON text in bytes (at least the ~60 bytes the harness needs).
    #[serde(default = "default_size")]
    pub size: SizeDist,
    /// Fraction of each room's members that publish (0..=1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<f64>,
    /// Exact number of publishers per room (instead of `publishers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_room: Option<u32>,
    /// Publishing starts this long after the start of the run.
    #[serde(default)]
    pub start: Dur,
    /// Send a `requestId` and measure the ack (the SDKs always do, CLI-4).
    #[serde(default = "yes")]
    pub ack: bool,
}

fn default_size() -> SizeDist {
    SizeDist::Constant(96)
}
fn yes() -> bool {
    true
}

/// Direct messages (`send`) to random members of the peer's room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Direct {
    /// Directs per second per peer.
    pub rate: f64,
    #[serde(default)]
    pub arrival: Arrival,
    #[serde(default = "default_size")]
    pub size: SizeDist,
    #[serde(default)]
    pub start: Dur,
}

/// Oversized frames: each peer periodically sends a publish whose whole frame is exactly
/// at, just over or far over the server's `maxMessageSize` (from `welcome`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oversize {
    /// One oversized frame per peer this often (the kinds take turns).
    pub every: Dur,
    #[serde(default = "default_oversize_kinds")]
    pub frames: Vec<OversizeKind>,
    /// What must happen to a frame over the limit.
    #[serde(default)]
    pub expect: OversizeExpect,
    #[serde(default)]
    pub start: Dur,
}

fn default_oversize_kinds() -> Vec<OversizeKind> {
    vec![OversizeKind::At, OversizeKind::Over, OversizeKind::Far]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeKind {
    /// Exactly `maxMessageSize` bytes: must be accepted (FRAME-9).
    At,
    /// One byte over: close 1009.
    Over,
    /// Four times the limit: close 1009.
    Far,
}

impl OversizeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OversizeKind::At => "at",
            OversizeKind::Over => "over",
            OversizeKind::Far => "far",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeExpect {
    /// The server closes with 1009 (FRAME-9, the reference behaviour).
    #[default]
    Close,
    /// The server answers with an `error` frame and keeps the connection.
    Error,
    /// The peer refuses to send it, as the SDKs' size pre-check does (CLI-5).
    Refuse,
}

/// Tokens that expire mid-run: each connection's token lives `ttl`; the server must close
/// with 4002 (EXP-1) and the peer reconnects with a fresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLife {
    pub ttl: Dur,
}

/// A reconnect storm: at `at`, `drop` (a fraction) of the connected peers lose their
/// connection at once and reconnect with backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storm {
    pub at: Dur,
    pub drop: f64,
    #[serde(default)]
    pub mode: StormMode,
    #[serde(default)]
    pub backoff: Backoff,
    /// Limit the storm to one population.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StormMode {
    /// Drop the TCP connection without a close handshake (the server sees 1006).
    #[default]
    Abort,
    /// Close with 1000.
    Close,
}

/// Reconnect delays (CLI-7): attempt n waits min(initial × 2^(n-1), max) ± jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_initial")]
    pub initial: Dur,
    #[serde(default = "default_backoff_max")]
    pub max: Dur,
    /// Relative jitter, 0..1.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_initial() -> Dur {
    Dur::millis(500)
}
fn default_backoff_max() -> Dur {
    Dur::secs(30)
}
fn default_jitter() -> f64 {
    0.2
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_initial(),
            max: default_backoff_max(),
            jitter: default_jitter(),
        }
    }
}

/// When a run is declared invalid (its numbers describe the harness, not the server).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// Largest acceptable p99 of the send lag behind the schedule.
    #[serde(default = "default_max_lag")]
    pub max_lag_p99: Dur,
    /// Largest acceptable harness CPU use, as a fraction of the cores it can use.
    #[serde(default = "default_max_cpu")]
    pub max_cpu: f64,
}

fn default_max_lag() -> Dur {
    Dur::millis(20)
}
fn default_max_cpu() -> f64 {
    0.9
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            max_lag_p99: default_max_lag(),
            max_cpu: default_max_cpu(),
        }
    }
}

/// Threshold rules as `metric op value` strings, e.g. `fanout.p99<50ms`. In TOML a
/// `[thresholds]` table: `"fanout.p99" = "<50ms"` (dotted keys may also be unquoted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds(pub Vec<String>);

impl Thresholds {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Thresholds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = Map::<String, Value>::deserialize(d)?;
        let mut out = Vec::new();
        flatten_thresholds("", &table, &mut out).map_err(de::Error::custom)?;
        Ok(Thresholds(out))
    }
}

fn flatten_thresholds(
    prefix: &str,
    table: &Map<String, Value>,
    out: &mut Vec<String>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::String(rule) => out.push(format!("{key}{}", rule.trim())),
            Value::Object(inner) => flatten_thresholds(&key, inner, out)?,
            other => {
                return Err(format!(
                    "threshold `{key}` must be a string such as \"<50ms\" or \"==0\", got {other}"
                ));
            }
        }
    }
    Ok(())
}

impl Serialize for Thresholds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for rule in &self.0 {
            let cut = rule.find(['<', '>', '=', '!']).unwrap_or(rule.len());
            m.serialize_entry(rule[..cut].trim(), rule[cut..].trim())?;
        }
        m.end()
    }
}

// ---------------------------------------------------------------------------------------
// Command-line overrides
// ---------------------------------------------------------------------------------------

/// Flags that override a scenario file; applied by [`Scenario::apply`].
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Total peers; every population is scaled in proportion.
    pub peers: Option<u32>,
    pub duration: Option<Duration>,
    /// Publish rate: per peer for populations with `rate`, total for `aggregate_rate`.
    pub rate: Option<f64>,
    pub seed: Option<u64>,
    /// Connect ramp of every population.
    pub ramp: Option<Duration>,
    /// Appended to the scenario's own rules.
    pub thresholds: Vec<String>,
    /// `--allow` flags, folded into `[checks]`.
    pub allow: Vec<String>,
}

impl Scenario {
    /// Folds the command-line flags in. The result is validated like a file.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(total) = o.peers {
            let old: u64 = self.populations.iter().map(|p| p.peers as u64).sum();
            let n = self.populations.len();
            let mut assigned = 0u64;
            for (i, p) in self.populations.iter_mut().enumerate() {
                let Some(scaled) = (p.peers as u64 * total as u64).checked_div(old) else {
                    break; // no peers to scale
                };
                let share = if i + 1 == n {
                    (total as u64).saturating_sub(assigned)
                } else {
                    // Keep small populations (e.g. a few talkers) alive when scaling down.
                    scaled.max(u64::from(p.peers > 0))
                };
                assigned += share;
                p.peers = share as u32;
            }
        }
        if let Some(d) = o.duration {
            self.duration = Dur(d);
        }
        if let Some(rate) = o.rate {
            for p in &mut self.populations {
                if let Some(publish) = &mut p.publish {
                    if publish.aggregate_rate.is_some() {
                        publish.aggregate_rate = Some(rate);
                    } else {
                        publish.rate = Some(rate);
                    }
                }
            }
        }
        if let Some(seed) = o.seed {
            self.seed = seed;
        }
        if let Some(ramp) = o.ramp {
            for p in &mut self.populations {
                p.ramp = Dur(ramp);
            }
        }
        self.thresholds.0.extend(o.thresholds.iter().cloned());
        self.checks.apply(&o.allow);
    }

    /// Semantic checks. Each problem is reported with its field path
    /// (`population[1].publish.rate`) so the loader can point at the line.
    pub fn validate(&self) -> Result<(), (FieldPath, String)> {
        use Seg::{Idx, Key};
        let p = |segs: &[Seg]| FieldPath(segs.to_vec());
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err((
                p(&[Key("name")]),
                "must be non-empty and use only letters, digits, '-', '_' and '.' (it names the report directory)".into(),
            ));
        }
        if self.duration.0.is_zero() {
            return Err((p(&[Key("duration")]), "must be > 0".into()));
        }
        if self.populations.is_empty() {
            return Err((
                p(&[Key("population")]),
                "a scenario needs at least one [[population]]".into(),
            ));
        }
        let total: u64 = self.populations.iter().map(|p| p.peers as u64).sum();
        if total == 0 {
            return Err((
                p(&[Key("population")]),
                "no peers: every population has peers = 0".into(),
            ));
        }
        if total > 10_000_000 {
            return Err((
                p(&[Key("population")]),
                format!("{total} peers is more than this harness plans for (10M)"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, pop) in self.populations.iter().enumerate() {
            let at = |k: &'static str| p(&[Key("population"), Idx(i), Key(k)]);
            let at2 = |k: &'static str, k2: &'static str| {
                p(&[Key("population"), Idx(i), Key(k), Key(k2)])
            };
            if !names.insert(pop.name.as_str()) {
                return Err((
                    at("name"),
                    format!("population name `{}` is used twice", pop.name),
                ));
            }
            if pop.rooms.is_some() && pop.room_size.is_some() {
                return Err((
                    at("room_size"),
                    "give `rooms` or `room_size`, not both".into(),
                ));
            }
            if pop.room_size == Some(0) {
                return Err((
                    at("room_size"),
                    "must be > 0 (use rooms = 0 for no subscription)".into(),
                ));
            }
            let rooms = pop.room_count();
            if rooms > 0 {
                if !pop.channel.contains("{room}") && rooms > 1 {
                    return Err((
                        at("channel"),
                        format!("with {rooms} rooms the template needs `{{room}}`"),
                    ));
                }
                for r in [0, rooms - 1] {
                    let name = pop.channel_name(r);
                    if !valid_channel(&name) {
                        return Err((
                            at("channel"),
                            format!(
                                "`{name}` is not a valid channel name (1-256 bytes, no control characters)"
                            ),
                        ));
                    }
                    if is_reserved(&name) {
                        return Err((
                            at("channel"),
                            format!("`{name}` is a reserved channel name"),
                        ));
                    }
                    if crate::proto::pattern::is_wildcard(&name) {
                        return Err((
                            at("channel"),
                            format!("`{name}` is a pattern; rooms must be concrete channels"),
                        ));
                    }
                }
            }
            if let Some(s) = &pop.session {
                s.duration
                    .check()
                    .map_err(|m| (at2("session", "duration"), m))?;
                s.gap.check().map_err(|m| (at2("session", "gap"), m))?;
            }
            if let Some(pb) = &pop.publish {
                if rooms == 0 {
                    return Err((
                        at("publish"),
                        "publishing needs rooms (set `rooms` or `room_size`)".into(),
                    ));
                }
                match (pb.rate, pb.aggregate_rate) {
                    (Some(_), Some(_)) => {
                        return Err((
                            at2("publish", "aggregate_rate"),
                            "give `rate` or `aggregate_rate`, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err((
                            at2("publish", "rate"),
                            "missing: give `rate` (per peer) or `aggregate_rate`".into(),
                        ));
                    }
                    (Some(r), None) | (None, Some(r))
                        if !(r.is_finite() && r > 0.0 && r <= 100_000.0) =>
                    {
                        let k = if pb.rate.is_some() {
                            "rate"
                        } else {
                            "aggregate_rate"
                        };
                        return Err((
                            at2("publish", k),
                            format!("{r} must be > 0 and at most 100000 per second"),
                        ));
                    }
                    _ => {}
                }
                if let Some(f) = pb.publishers
                    && !(f > 0.0 && f <= 1.0)
                {
                    return Err((
                        at2("publish", "publishers"),
                        format!("{f} must be a fraction in (0, 1]"),
                    ));
                }
                if pb.publishers.is_some() && pb.per_room.is_some() {
                    return Err((
                        at2("publish", "per_room"),
                        "give `publishers` or `per_room`, not both".into(),
                    ));
                }
                pb.size.check().map_err(|m| (at2("publish", "size"), m))?;
                if pb.size.max() > 16 * 1024 * 1024 {
                    return Err((
                        at2("publish", "size"),
                        "payloads over 16 MiB are not supported".into(),
                    ));
                }
            }
            if let Some(d) = &pop.direct {
                if !(d.rate.is_finite() && d.rate > 0.0 && d.rate <= 10_000.0) {
                    return Err((
                        at2("direct", "rate"),
                        format!("{} must be > 0 and at most 10000 per second", d.rate),
                    ));
                }
                d.size.check().map_err(|m| (at2("direct", "size"), m))?;
            }
            if let Some(c) = &pop.call {
                if pop.direct.is_some() {
                    return Err((
                        at("call"),
                        "a population makes calls or sends random directs, not both (use two populations)".into(),
                    ));
                }
                let size = pop
                    .room_size
                    .unwrap_or_else(|| pop.peers.div_ceil(rooms.max(1)));
                if rooms == 0 || !(2..=call::MAX_ROOM).contains(&size) {
                    return Err((
                        at("call"),
                        format!(
                            "calls need rooms of 2 to {} members (set `room_size`); this population has {}",
                            call::MAX_ROOM,
                            if rooms == 0 {
                                "no rooms".to_owned()
                            } else {
                                format!("{size} per room")
                            }
                        ),
                    ));
                }
                c.check().map_err(|(field, m)| (at2("call", field), m))?;
            }
            if let Some(o) = &pop.oversize {
                if o.every.0 < Duration::from_millis(10) {
                    return Err((at2("oversize", "every"), "must be at least 10ms".into()));
                }
                if o.frames.is_empty() {
                    return Err((
                        at2("oversize", "frames"),
                        "list at least one of \"at\", \"over\", \"far\"".into(),
                    ));
                }
                if rooms == 0 {
                    return Err((at("oversize"), "oversized publishes need rooms".into()));
                }
            }
            if let Some(t) = &pop.token {
                if pop.credential == Credential::Publishable {
                    return Err((at2("token", "ttl"), "publishable-key connections never expire (AUTH-4); use credential = \"token\"".into()));
                }
                if t.ttl.0 < Duration::from_secs(2) {
                    return Err((
                        at2("token", "ttl"),
                        "must be at least 2s (the server refuses tokens within 250 ms of expiry)"
                            .into(),
                    ));
                }
            }
        }
        for (i, s) in self.storms.iter().enumerate() {
            let at = |k: &'static str| p(&[Key("storm"), Idx(i), Key(k)]);
            if !(s.drop > 0.0 && s.drop <= 1.0) {
                return Err((
                    at("drop"),
                    format!("{} must be a fraction in (0, 1]", s.drop),
                ));
            }
            if s.at >= self.duration {
                return Err((
                    at("at"),
                    format!(
                        "{} is not before the end of the run ({})",
                        s.at, self.duration
                    ),
                ));
            }
            if !(0.0..1.0).contains(&s.backoff.jitter) {
                return Err((at("backoff"), "jitter must be in [0, 1)".into()));
            }
            if let Some(name) = &s.population
                && !self.populations.iter().any(|p| &p.name == name)
            {
                return Err((at("population"), format!("no population is named `{name}`")));
            }
        }
        if !(self.validity.max_cpu > 0.0 && self.validity.max_cpu <= 1.0) {
            return Err((
                p(&[Key("validity"), Key("max_cpu")]),
                "must be a fraction in (0, 1]".into(),
            ));
        }
        for (i, rule) in self.thresholds.0.iter().enumerate() {
            if let Err(e) = crate::load::thresholds::Rule::parse(rule) {
                return Err((p(&[Key("thresholds"), Idx(i)]), e.to_string()));
            }
        }
        if let Err((name, msg)) = self.checks.validate() {
            let mut path = vec![Key("checks")];
            path.extend(name.map(Key));
            return Err((FieldPath(path), msg));
        }
        super::rest::validate(self)
    }

    /// Total planned peers.
    pub fn peers(&self) -> u64 {
        self.populations.iter().map(|p| p.peers as u64).sum()
    }

    /// The largest frame any peer will send, for sizing the WebSocket write limit.
    pub fn largest_frame(&self, max_message_size: usize) -> usize {
        let mut largest = 4096usize;
        for p in &self.populations {
            if let Some(pb) = &p.publish {
                largest = largest.max(pb.size.max() as usize + 512);
            }
            if let Some(d) = &p.direct {
                largest = largest.max(d.size.max() as usize + 512);
            }
            if let Some(c) = &p.call {
                largest = largest.max(c.largest_payload() + 512);
            }
            if p.oversize.is_some() {
                largest = largest.max(max_message_size * 4 + 1024);
            }
        }
        largest
    }

    /// The largest frame a peer can legitimately receive: a copy of another peer's
    /// publish or direct, or of a REST publish, with envelope and sender metadata, or a
    /// presence snapshot of the largest room. Clients may accept up to 1 MiB (CLI-6); a
    /// bound fitted to the scenario keeps a hostile server from pinning a megabyte of
    /// fragments per connection (200 peers would be 200 MB).
    pub fn largest_inbound(&self) -> usize {
        const ENVELOPE: usize = 16 * 1024;
        let mut largest = 64 * 1024;
        for p in &self.populations {
            if let Some(pb) = &p.publish {
                largest = largest.max(pb.size.max() as usize + ENVELOPE);
            }
            if let Some(d) = &p.direct {
                largest = largest.max(d.size.max() as usize + ENVELOPE);
            }
            if let Some(c) = &p.call {
                largest = largest.max(c.largest_payload() + ENVELOPE);
            }
            let rooms = p.room_count().max(1);
            let members = p.peers.div_ceil(rooms) as usize;
            // A snapshot lists every member: id and metadata, generously 1 KiB each.
            largest = largest.max(members * 1024 + ENVELOPE);
        }
        for r in &self.rest {
            largest = largest.max(r.size as usize + ENVELOPE);
        }
        largest.min(1 << 20)
    }

    /// The scenario as TOML, as it ran (flags folded in).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render scenario: {e}\n"))
    }
}

impl Population {
    /// Rooms of this population (0 = peers do not subscribe).
    pub fn room_count(&self) -> u32 {
        match (self.rooms, self.room_size) {
            (Some(r), _) => r.min(self.peers.max(1)),
            (None, Some(size)) => self.peers.div_ceil(size.max(1)),
            (None, None) => 0,
        }
    }

    /// The channel of room `room`.
    pub fn channel_name(&self, room: u32) -> String {
        self.channel
            .replace("{room}", &room.to_string())
            .replace("{population}", &self.name)
    }
}

// ---------------------------------------------------------------------------------------
// Loading, with file/line/field in errors
// ---------------------------------------------------------------------------------------

/// One step of a field path.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(&'static str),
    Idx(usize),
}

/// A field path such as `population[0].publish.rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath(pub Vec<Seg>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Idx(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a scenario came from, for error messages and the report.
#[derive(Debug, Clone)]
pub struct Source {
    /// `scenarios/x.toml` or `builtin:typing-storm`.
    pub origin: String,
    pub text: String,
}

/// Finds `arg` as a file path or as a built-in scenario name.
pub fn resolve(arg: &str) -> Result<Source, ScenarioError> {
    let path = Path::new(arg);
    if path.exists() || arg.ends_with(".toml") || arg.contains('/') {
        return std::fs::read_to_string(path)
            .map(|text| Source {
                origin: arg.to_owned(),
                text,
            })
            .map_err(|source| ScenarioError::Read {
                path: arg.to_owned(),
                source,
            });
    }
    match BUILTIN.iter().find(|(name, _)| *name == arg) {
        Some((name, text)) => Ok(Source {
            origin: format!("builtin:{name}"),
            text: (*text).to_owned(),
        }),
        None => Err(ScenarioError::Read {
            path: arg.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or built-in scenario",
            ),
        }),
    }
}

/// Parses and validates a scenario; errors point at file, line and field.
pub fn parse(src: &Source) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = toml::from_str(&src.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let (line, column) = line_col(&src.text, span.start);
        let field = field_at(&src.text, span.start).unwrap_or_else(|| "(document)".into());
        ScenarioError::Invalid {
            origin: src.origin.clone(),
            line,
            column,
            field,
            message: e.message().trim().to_owned(),
        }
    })?;
    check(src, &scenario)?;
    Ok(scenario)
}

/// Validates (after overrides); a problem is located in `src` when the field is there.
pub fn check(src: &Source, scenario: &Scenario) -> Result<(), ScenarioError> {
    scenario.validate().map_err(|(path, message)| {
        let offset = span_of(&src.text, &path).unwrap_or(0);
        let (line, column) = line_col(&src.text, offset);
        ScenarioError::Invalid {
            origin: src.origin.clone(),
            line,
            column,
            field: path.to_string(),
            message,
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The start offset of the deepest existing prefix of `path` (the key of the field, or of
/// its nearest existing parent when the field itself is absent).
fn span_of(text: &str, path: &FieldPath) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable = doc.get_ref();
    let mut best = None;
    let mut value: Option<&DeValue> = None;
    for seg in &path.0 {
        match seg {
            Seg::Key(k) => {
                let t = match value {
                    None => table,
                    Some(DeValue::Table(t)) => t,
                    Some(_) => break,
                };
                let Some((key, v)) = t.get_key_value(*k) else {
                    break;
                };
                best = Some(key.span().start);
                table = t;
                value = Some(v.get_ref());
            }
            Seg::Idx(n) => {
                let Some(DeValue::Array(a)) = value else {
                    break;
                };
                let Some(item) = a.get(*n) else { break };
                best = Some(item.span().start);
                value = Some(item.get_ref());
            }
        }
    }
    best
}

/// The field path whose key or value contains `offset`, for deserialization errors.
fn field_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    fn walk(t: &DeTable, offset: usize, prefix: String, best: &mut Option<String>) {
        for (k, v) in t.iter() {
            let name = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let ks = k.span();
            let vs = v.span();
            let inside = ks.contains(&offset) || vs.contains(&offset) || vs.start == offset;
            let child_inside = matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_));
            if inside {
                *best = Some(name.clone());
            }
            if inside || child_inside {
                match v.get_ref() {
                    DeValue::Table(inner) => walk(inner, offset, name, best),
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let iname = format!("{name}[{i}]");
                            if item.span().contains(&offset) || item.span().start == offset {
                                *best = Some(iname.clone());
                            }
                            if let DeValue::Table(inner) = item.get_ref() {
                                walk(inner, offset, iname, best);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    walk(doc.get_ref(), offset, String::new(), &mut best);
    best
}

/// Lists the built-in scenarios with their one-line descriptions.
pub fn builtin_list() -> Vec<(String, String)> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            let description = toml::from_str::<Scenario>(text)
                .map(|s| s.description)
                .unwrap_or_else(|e| format!("(does not parse: {})", e.message()));
            ((*name).to_owned(), description)
        })
        .collect()
}

/// Checks the thresholds map, resolving rules for `BTreeMap` users (report).
pub fn thresholds_map(t: &Thresholds) -> BTreeMap<String, String> {
    t.0.iter()
        .map(|r| {
            let cut = r.find(['<', '>', '=', '!']).unwrap_or(r.len());
            (r[..cut].trim().to_owned(), r[cut..].trim().to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests;
