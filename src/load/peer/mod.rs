//! One simulated peer: a task that lives for the whole run, opening sessions one after
//! another (ramp, churn, storms, token expiry, server closes), and inside a session
//! subscribes to its room, publishes and sends directs on its open-model schedule,
//! sends oversized frames, and reads everything the server pushes.
//!
//! The hot path (a `message` or `direct` frame) is a prefix check plus one static
//! `memmem::Finder` scan for `"data":{"p":`, three integer parses, a clock read and one
//! stripe record; frames that do not match the layout we publish fall back to
//! serde_json (counted as slow-path frames). State per peer is small: schedules, logs
//! for accounting and the current session; histograms live in the shared stripes.

mod call;
mod receive;
mod send;
mod session;
mod settle;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::Value;
use tokio::sync::watch;

use super::accounting::{PairRx, SessionLog};
use super::connect::{self, Attempt, OpenError, Welcome, Ws};
use super::engine::Shared;
use super::plan::{self, PeerPlan, Ticker};
use super::scenario::{Backoff, Credential, OversizeKind};
use crate::metrics::{Counter, Metric};
use crate::proto::frame::close;
use crate::proto::{Claims, auth};
use crate::report::{OversizeOutcome, Requests, TokenExpiry};
use crate::transport::TlsSession;

/// How long a connect stage, a subscribe ack, a send or a close may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT_US: u64 = 15_000_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving peer waits for the ack of its unsubscribe.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most sends one wake-up makes before reading again (a peer far behind catches up
/// over several wake-ups instead of starving its reads).
const MAX_BURST: usize = 64;
/// Requests awaiting an ack; beyond this the oldest are forgotten (a server that never
/// acks must not grow memory without bound).
const MAX_PENDING: usize = 4096;

/// What one peer hands back at the end of the run.
#[derive(Debug, Default)]
pub struct PeerOutcome {
    pub log: super::accounting::PeerLog,
    pub token: TokenExpiry,
    /// Indexed like `OversizeKind` (at, over, far).
    pub oversized: [OversizeOutcome; 3],
    /// Per storm: (dropped, reconnected).
    pub storms: Vec<(u64, u64)>,
    pub sessions_started: u64,
    pub churn_leaves: u64,
    /// Requests that asked for an ack, and what became of them.
    pub requests: Requests,
    /// Call setup (`[population.call]`).
    pub calls: crate::report::Calls,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    RunOver,
    Churn,
    Storm(usize),
    Server(u16),
    Lost,
    Stuck,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: u8,
    id: u32,
    sent_us: u64,
}

/// The state of the current connection.
struct Session {
    log: SessionLog,
    rx: HashMap<u32, PairRx>,
    pending: VecDeque<Pending>,
    pub_start: usize,
    dir_start: usize,
    subscribed: bool,
    snapshot_seen: bool,
    leaving: bool,
    draining: bool,
    /// Absolute µs deadlines (u64::MAX = none).
    leave_at: u64,
    sub_deadline: u64,
    token_check_at: u64,
    exp_us: u64,
    max_message_size: usize,
    oversize_pending: Option<(OversizeKind, u32)>,
    unsub_rid: Option<u32>,
    /// The server answered the subscribe with an `error`.
    sub_refused: bool,
    /// WebSocket Ping control frames received (tungstenite answers them itself).
    pings: u64,
    /// Call negotiations (`[population.call]`).
    calls: call::CallSession,
}

pub struct Peer {
    sh: Arc<Shared>,
    local: u32,
    plan: PeerPlan,
    rng: SmallRng,
    id: String,
    publish: Option<Ticker>,
    direct: Option<Ticker>,
    oversize: Option<Ticker>,
    oversize_turn: usize,
    /// Storms that hit this peer: (index, absolute µs).
    storms: Vec<(usize, u64)>,
    next_storm: usize,
    reconnect_since: Option<u64>,
    storm_pending: Option<usize>,
    after_4002: bool,
    session_no: u32,
    /// When the current session's connect started (absolute µs): a join's start.
    join_started_us: u64,
    /// The TLS configuration this peer dials with (its own session cache with
    /// `--tls-resumption per-peer`); made at the first `wss://` connect.
    tls: Option<TlsSession>,
    out: PeerOutcome,
}

impl Peer {
    fn new(sh: Arc<Shared>, local: u32) -> Peer {
        let global = sh.locals[local as usize];
        let plan = sh.layout.peers[global as usize];
        let pop = &sh.scenario.populations[plan.population as usize];
        let seed = sh.scenario.seed;
        let mut rng = plan::peer_rng(seed, global);
        let begin = |start: super::scenario::Dur| sh.t0_us + start.as_us();
        let publish = pop.publish.as_ref().filter(|_| plan.publisher).map(|p| {
            let rate = sh.pub_rates[plan.population as usize];
            Ticker::new(p.arrival, rate, begin(p.start), rng.random())
        });
        let direct = pop
            .direct
            .as_ref()
            .filter(|_| plan.channel.is_some())
            .map(|d| Ticker::new(d.arrival, d.rate, begin(d.start), rng.random()));
        let oversize = pop.oversize.as_ref().map(|o| {
            Ticker::new(
                super::scenario::Arrival::Constant,
                1.0 / o.every.0.as_secs_f64(),
                begin(o.start),
                rng.random(),
            )
        });
        let storms = sh
            .scenario
            .storms
            .iter()
            .enumerate()
            .filter(|(_, s)| s.population.as_ref().is_none_or(|n| *n == pop.name))
            .filter(|(i, s)| plan::storm_hits(seed, global, *i, s.drop))
            .map(|(i, s)| (i, sh.t0_us + s.at.as_us()))
            .collect();
        let out = PeerOutcome {
            log: super::accounting::PeerLog {
                global,
                population: plan.population,
                channel: plan.channel,
                ..Default::default()
            },
            storms: vec![(0, 0); sh.scenario.storms.len()],
            ..Default::default()
        };
        Peer {
            id: sh.peer_id(global),
            sh,
            local,
            plan,
            rng,
            publish,
            direct,
            oversize,
            oversize_turn: 0,
            storms,
            next_storm: 0,
            reconnect_since: None,
            storm_pending: None,
            after_4002: false,
            session_no: 0,
            join_started_us: 0,
            tls: None,
            out,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.sh.clock.now_us()
    }

    #[inline]
    fn rel(&self, abs_us: u64) -> u64 {
        abs_us.saturating_sub(self.sh.t0_us)
    }

    /// Sleeps until `at` (absolute µs); false when the run ended first.
    async fn sleep_until(&self, at: u64, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            let end = self.sh.end_us();
            let now = self.now();
            if now >= end {
                return false;
            }
            if now >= at {
                return true;
            }
            let wake = self.sh.clock.instant_at(at.min(end));
            tokio::select! {
                _ = crate::timer::sleep_until(wake) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The engine is gone; nothing more to do.
                        return false;
                    }
                }
            }
        }
    }

    fn query(&mut self, now_us: u64) -> String {
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        match pop.credential {
            Credential::Publishable => {
                let key = self.sh.creds.publishable.as_deref().unwrap_or_default();
                format!(
                    "key={}",
                    percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                )
            }
            Credential::Token => {
                let now_s = (now_us / 1_000_000) as i64;
                let exp = match &pop.token {
                    Some(t) => now_s + t.ttl.0.as_secs().max(2) as i64,
                    // Long enough for the run, so no token expires by accident.
                    None => now_s + 3600 + (self.sh.scenario.duration.0.as_secs() as i64) * 2,
                };
                let room = self.plan.channel.map(|c| c.to_string()).unwrap_or_default();
                let claims = Claims {
                    sub: Some(self.id.clone()),
                    exp: Some(exp),
                    iat: Some(now_s),
                    peer_metadata: pop
                        .peer_metadata
                        .as_ref()
                        .map(|m| template(m, &self.id, self.plan.pos, &room, &pop.name)),
                    ..Default::default()
                };
                let (kid, secret) = (&self.sh.creds.key_id, &self.sh.creds.secret);
                format!("token={}", auth::mint(kid, secret.as_bytes(), &claims))
            }
        }
    }

    /// Opens a connection. The WebSocket is boxed: the peer's task holds the result across
    /// the whole session, and inline its ~320 bytes would be held twice.
    async fn connect(&mut self) -> Result<(Box<Ws>, Welcome), OpenError> {
        let sh = self.sh.clone();
        let _permit = sh.handshakes.acquire().await;
        let started = self.now();
        self.join_started_us = started;
        sh.cells[self.local as usize]
            .attempted
            .store(true, Ordering::Release);
        let query = self.query(started);
        let dest = &sh.endpoints[self.plan.target as usize % sh.endpoints.len()];
        if dest.endpoint.secure && self.tls.is_none() {
            self.tls = sh.connector.session();
        }
        let res = connect::open(
            &sh.connector,
            Attempt {
                dest,
                query: &query,
                source: sh.source_ip,
                tls: self.tls.as_ref(),
                config: sh.ws_config,
                timeout: CONNECT_TIMEOUT,
            },
        )
        .await;
        let took = self.now().saturating_sub(started);
        match res {
            Ok(o) => {
                let p = o.connected.phases;
                let us = |d: Duration| d.as_micros() as u64;
                sh.metrics.with(|s| {
                    s.count(Counter::ConnectAttempts, 1);
                    s.count(Counter::Connects, 1);
                    s.record(Metric::Connect, took);
                    s.record(Metric::TcpConnect, us(p.tcp));
                    if let Some(t) = p.tls {
                        s.record(Metric::TlsHandshake, us(t));
                    }
                    s.record(Metric::WsUpgrade, us(p.upgrade));
                    s.record(Metric::Welcome, us(o.welcome_wait));
                });
                if let Some(info) = &o.connected.tls {
                    sh.event(|ev| ev.tls.record(info));
                }
                Ok((Box::new(o.connected.ws), o.welcome))
            }
            Err(e) => {
                sh.metrics.with(|s| {
                    s.count(Counter::ConnectAttempts, 1);
                    s.count(Counter::ConnectFailures, 1);
                });
                let at = self.rel(started);
                sh.event(|ev| {
                    let kind = e.kind();
                    ev.note(&format!("connections/{kind}"), || {
                        format!("t={:.3} s peer {}: {e}", at as f64 / 1e6, self.id)
                    });
                    *ev.failures.entry(kind).or_default() += 1;
                    if let Some(code) = e.close_code() {
                        *ev.closes.entry(code.to_string()).or_default() += 1;
                        ev.note(&format!("closes/{code}"), || {
                            format!(
                                "t={:.3} s peer {}: closed {code} ({}) before welcome",
                                at as f64 / 1e6,
                                self.id,
                                close::name(code)
                            )
                        });
                    }
                    let msg = e.advice().unwrap_or_else(|| format!("connect failed: {e}"));
                    ev.warn(msg, 1);
                });
                Err(e)
            }
        }
    }

    /// The peer's whole life.
    pub async fn run(sh: Arc<Shared>, local: u32) -> PeerOutcome {
        let mut p = Peer::new(sh, local);
        let mut stop = p.sh.stop.clone();
        let mut urgent = p.sh.urgent();
        let start = p.sh.t0_us + p.plan.start_us;
        if !p.sleep_until(start, &mut stop).await {
            return p.finish();
        }
        let default_backoff = Backoff::default();
        let mut backoff = default_backoff;
        let mut attempt = 0u32;
        loop {
            if p.now() >= p.sh.end_us() {
                break;
            }
            // Boxed: the handshake future is large and only lives during a connect. An
            // urgent stop abandons it (nothing of it was recorded yet).
            let opened = tokio::select! {
                biased;
                _ = urgent.wait_for(|u| *u) => break,
                r = Box::pin(p.connect()) => r,
            };
            let delay_us = match opened {
                Ok((ws, welcome)) => {
                    attempt = 0;
                    let end = p.session(ws, welcome, &mut stop, &mut urgent).await;
                    match end {
                        End::RunOver => break,
                        End::Churn => {
                            let pop = &p.sh.scenario.populations[p.plan.population as usize];
                            let gap = pop.session.as_ref().map(|s| s.gap);
                            gap.map(|g| plan::sample_duration_us(&g, &mut p.rng))
                                .unwrap_or(1_000_000)
                        }
                        End::Storm(i) => {
                            backoff = p.sh.scenario.storms[i].backoff;
                            attempt = 1;
                            plan::backoff_us(&backoff, 1, &mut p.rng)
                        }
                        End::Server(code) if is_terminal(code) => {
                            p.sh.event(|ev| {
                                ev.warn(format!(
                                        "a peer stopped after close {code} ({}), which clients treat as final",
                                        close::name(code)
                                    ), 1);
                            });
                            break;
                        }
                        End::Server(close::TOKEN_EXPIRED) => p.rng.random_range(0..100_000),
                        End::Server(close::OVER_CONCURRENT_LIMIT) => {
                            30_000_000 + plan::backoff_us(&backoff, 1, &mut p.rng)
                        }
                        End::Server(close::TOO_BIG) => plan::backoff_us(&backoff, 1, &mut p.rng),
                        End::Server(_) | End::Lost | End::Stuck => {
                            backoff = default_backoff;
                            attempt = 1;
                            plan::backoff_us(&backoff, 1, &mut p.rng)
                        }
                    }
                }
                Err(e) => {
                    attempt += 1;
                    match e.close_code() {
                        Some(code) if is_terminal(code) => break,
                        Some(close::OVER_CONCURRENT_LIMIT) => {
                            30_000_000 + plan::backoff_us(&backoff, attempt, &mut p.rng)
                        }
                        _ => plan::backoff_us(&backoff, attempt, &mut p.rng),
                    }
                }
            };
            let at = p.now() + delay_us;
            if !p.sleep_until(at, &mut stop).await {
                break;
            }
        }
        p.finish()
    }

    fn finish(self) -> PeerOutcome {
        self.out
    }
}

/// Closes 4001, 4003, 4012 and 4020 end a client for good (CLOSE-16).
fn is_terminal(code: u16) -> bool {
    matches!(
        code,
        close::INVALID_TOKEN
            | close::CHANNEL_NOT_AUTHORIZED
            | close::ACCOUNT_SUSPENDED
            | close::ADMIN_DISCONNECT
    )
}

/// Fills `{peer}`, `{index}`, `{room}` and `{population}` in every string of `m`.
pub fn template(
    m: &serde_json::Map<String, Value>,
    peer: &str,
    index: u32,
    room: &str,
    population: &str,
) -> serde_json::Map<String, Value> {
    fn fill(v: &Value, f: &dyn Fn(&str) -> String) -> Value {
        match v {
            Value::String(s) => Value::String(f(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, f)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), fill(x, f))).collect())
            }
            other => other.clone(),
        }
    }
    let f = |s: &str| {
        if !s.contains('{') {
            return s.to_owned();
        }
        s.replace("{peer}", peer)
            .replace("{index}", &index.to_string())
            .replace("{room}", room)
            .replace("{population}", population)
    };
    m.iter().map(|(k, v)| (k.clone(), fill(v, &f))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_string() {
        let m: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"name":"user-{peer}","tags":["{population}"],"n":1}"#)
                .unwrap();
        let out = template(&m, "r-3", 3, "0", "members");
        assert_eq!(out["name"], "user-r-3");
        assert_eq!(out["tags"][0], "members");
        assert_eq!(out["n"], 1);
    }
}
