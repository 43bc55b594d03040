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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use memchr::memmem::Finder;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::accounting::{
    ACKED, DirectRec, PENDING, PairRx, REJECTED, SessionLog, UNCONFIRMED, pack, sent_of, status_of,
    with_status,
};
use super::connect::{self, Attempt, OpenError, Welcome, Ws};
use super::engine::Shared;
use super::plan::{self, PeerPlan, Ticker};
use super::scenario::{Backoff, Credential, Leave, OversizeExpect, OversizeKind, StormMode};
use crate::metrics::{Counter, Metric};
use crate::proto::frame::close;
use crate::proto::{Claims, ServerFrame, auth};
use crate::report::{OversizeOutcome, TokenExpiry};
use crate::transport::{self, TlsSession};

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

static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""data":{"p":"#));

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
    /// When the first session was welcomed (absolute µs).
    pub first_welcome_us: Option<u64>,
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
                _ = tokio::time::sleep_until(wake) => {}
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

    async fn connect(&mut self) -> Result<(Ws, Welcome), OpenError> {
        let sh = self.sh.clone();
        let _permit = sh.handshakes.acquire().await;
        let started = self.now();
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
                Ok((o.connected.ws, o.welcome))
            }
            Err(e) => {
                sh.metrics.with(|s| {
                    s.count(Counter::ConnectAttempts, 1);
                    s.count(Counter::ConnectFailures, 1);
                });
                sh.event(|ev| {
                    *ev.failures.entry(e.kind()).or_default() += 1;
                    if let Some(code) = e.close_code() {
                        *ev.closes.entry(code.to_string()).or_default() += 1;
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
            // Boxed: the handshake future is large and only lives during a connect.
            let delay_us = match Box::pin(p.connect()).await {
                Ok((ws, welcome)) => {
                    attempt = 0;
                    let end = p.session(ws, welcome, &mut stop).await;
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

    async fn session(
        &mut self,
        mut ws: Ws,
        welcome: Welcome,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let now = self.now();
        self.session_no += 1;
        self.out.sessions_started += 1;
        self.out.first_welcome_us.get_or_insert(now);
        self.sh.metrics.connected.fetch_add(1, Ordering::Relaxed);
        let cell = &self.sh.cells[self.local as usize];
        cell.online.store(true, Ordering::Release);
        if welcome.peer_id != self.id {
            // Publishable keys: the server names the peer.
            self.sh.register_server_id(self.local, &welcome.peer_id);
            self.id = welcome.peer_id.clone();
        }
        if self.after_4002 {
            self.after_4002 = false;
            self.out.token.reconnected += 1;
        }
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let leave_at = pop
            .session
            .as_ref()
            .map(|s| now + plan::sample_duration_us(&s.duration, &mut self.rng))
            .unwrap_or(u64::MAX);
        let exp_us = match (&pop.token, welcome.expires_at) {
            (Some(_), Some(exp)) if exp > 0 => exp as u64 * 1_000_000,
            _ => u64::MAX,
        };
        let mut s = Session {
            log: SessionLog {
                welcomed_us: self.rel(now),
                ..Default::default()
            },
            rx: HashMap::new(),
            pending: VecDeque::new(),
            pub_start: self.out.log.publishes.len(),
            dir_start: self.out.log.directs.len(),
            subscribed: false,
            snapshot_seen: false,
            leaving: false,
            draining: false,
            leave_at,
            sub_deadline: u64::MAX,
            token_check_at: exp_us.saturating_add(1_500_000),
            exp_us,
            max_message_size: welcome.max_message_size,
            oversize_pending: None,
            unsub_rid: None,
        };
        while self.next_storm < self.storms.len() && self.storms[self.next_storm].1 <= now {
            self.next_storm += 1;
        }
        let end = match Box::pin(self.subscribe(&mut ws, &mut s)).await {
            Err(end) => end,
            Ok(()) => self.session_loop(&mut ws, &mut s, stop).await,
        };
        self.end_session(s, end);
        end
    }

    async fn subscribe(&mut self, ws: &mut Ws, s: &mut Session) -> Result<(), End> {
        let Some(ch) = self.plan.channel else {
            // No room: "ready" at welcome.
            self.on_ready(s);
            return Ok(());
        };
        let now = self.now();
        let cell = &self.sh.cells[self.local as usize];
        cell.join_cause_us.store(now, Ordering::Release);
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let frame = format!(
            r#"{{"type":"subscribe","channel":{},"requestId":"s{}"{}}}"#,
            self.sh.channel_json[ch as usize],
            self.session_no,
            if pop.include_sender_metadata {
                r#","includeSenderMetadata":true"#
            } else {
                ""
            }
        );
        s.log.subscribe_sent_us = self.rel(now).max(1);
        s.sub_deadline = now + ACK_TIMEOUT_US;
        self.send(ws, frame).await
    }

    /// Subscribed (or welcomed, without a room): start the schedules.
    fn on_ready(&mut self, s: &mut Session) {
        let now = self.now();
        s.subscribed = true;
        s.sub_deadline = u64::MAX;
        if let Some(since) = self.reconnect_since.take() {
            self.sh
                .metrics
                .record(Metric::Reconnect, now.saturating_sub(since));
        }
        if let Some(i) = self.storm_pending.take() {
            self.out.storms[i].1 += 1;
        }
        let rng = &mut self.rng;
        for t in [&mut self.publish, &mut self.direct, &mut self.oversize]
            .into_iter()
            .flatten()
        {
            t.resume(now, rng);
        }
    }

    fn park_schedules(&mut self) {
        for t in [&mut self.publish, &mut self.direct, &mut self.oversize]
            .into_iter()
            .flatten()
        {
            t.park();
        }
    }

    fn next_deadline(&self, s: &Session) -> u64 {
        let end = self.sh.end_us();
        let mut d = if s.draining {
            end.saturating_add(self.sh.grace_us)
        } else {
            end
        };
        d = d.min(s.leave_at).min(s.sub_deadline).min(s.token_check_at);
        if let Some(&(_, at)) = self.storms.get(self.next_storm) {
            d = d.min(at);
        }
        if s.subscribed && !s.draining && !s.leaving {
            for t in [&self.publish, &self.direct, &self.oversize]
                .into_iter()
                .flatten()
            {
                d = d.min(t.next());
            }
        }
        d
    }

    async fn session_loop(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let mut deadline = self.next_deadline(s);
        let sleep = tokio::time::sleep_until(self.sh.clock.instant_at(deadline));
        tokio::pin!(sleep);
        // One waiter for the whole session: re-creating it per frame costs a Notify
        // registration per received frame.
        let stopped = stop.changed();
        tokio::pin!(stopped);
        let mut stop_seen = false;
        loop {
            tokio::select! {
                biased;
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(s, text.as_str()),
                    Some(Ok(Message::Close(cf))) => {
                        let code = cf.map(|f| u16::from(f.code)).unwrap_or(1005);
                        self.on_server_close(s, code);
                        Box::pin(transport::ws::answer_close(ws)).await;
                        return End::Server(code);
                    }
                    Some(Ok(Message::Binary(_))) => self.unexpected("binary_frame"),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        self.on_server_close(s, close::ABNORMAL);
                        return End::Lost;
                    }
                },
                _ = &mut sleep => {
                    // Boxed: sends nest several futures; keep them off every idle peer.
                    if let Some(end) = Box::pin(self.on_timer(ws, s)).await {
                        return end;
                    }
                }
                changed = &mut stopped, if !stop_seen => {
                    stop_seen = true;
                    if changed.is_err() {
                        // Engine gone: treat as the end of the run.
                        Box::pin(close_quietly(ws)).await;
                        return End::RunOver;
                    }
                    // The end of the run moved: the deadline below picks it up.
                }
            }
            let next = self.next_deadline(s);
            if next != deadline {
                deadline = next;
                sleep.as_mut().reset(self.sh.clock.instant_at(deadline));
            }
        }
    }

    async fn on_timer(&mut self, ws: &mut Ws, s: &mut Session) -> Option<End> {
        let now = self.now();
        let end = self.sh.end_us();
        if !s.draining && now >= end {
            s.draining = true;
            self.park_schedules();
        }
        if s.draining {
            if now >= end.saturating_add(self.sh.grace_us) {
                self.leave_now(s, now);
                close_quietly(ws).await;
                return Some(End::RunOver);
            }
            return None;
        }
        if now >= s.leave_at {
            let pop = &self.sh.scenario.populations[self.plan.population as usize];
            let unsubscribe = match pop.session.as_ref().map(|x| x.leave) {
                Some(Leave::Unsubscribe) => true,
                Some(Leave::Mixed) => self.rng.random_bool(0.5),
                _ => false,
            };
            self.out.churn_leaves += 1;
            self.leave_now(s, now);
            if unsubscribe && s.subscribed {
                self.unsubscribe_and_close(ws, s).await;
            } else {
                close_quietly(ws).await;
            }
            return Some(End::Churn);
        }
        if let Some(&(i, at)) = self.storms.get(self.next_storm)
            && now >= at
        {
            self.next_storm += 1;
            self.out.storms[i].0 += 1;
            self.storm_pending = Some(i);
            self.reconnect_since = Some(now);
            self.leave_now(s, now);
            match self.sh.scenario.storms[i].mode {
                StormMode::Abort => transport::ws::abort_on_drop(ws),
                StormMode::Close => close_quietly(ws).await,
            }
            return Some(End::Storm(i));
        }
        if now >= s.token_check_at {
            // The token expired more than 1.5 s ago and no 4002 came (EXP-1).
            self.out.token.expired_sessions += 1;
            self.out.token.not_closed += 1;
            self.leave_now(s, now);
            close_quietly(ws).await;
            return Some(End::Stuck);
        }
        if now >= s.sub_deadline {
            self.sh.event(|ev| {
                ev.warn("no ack for a subscribe within 15 s; reconnecting", 1);
            });
            self.leave_now(s, now);
            close_quietly(ws).await;
            return Some(End::Stuck);
        }
        if !s.subscribed || s.leaving {
            return None;
        }
        for _ in 0..MAX_BURST {
            let Some(intended) = self
                .publish
                .as_ref()
                .map(Ticker::next)
                .filter(|t| *t <= now)
            else {
                break;
            };
            if let Some(t) = self.publish.as_mut() {
                t.advance(&mut self.rng);
            }
            if let Err(end) = self.send_publish(ws, s, intended).await {
                return Some(end);
            }
        }
        for _ in 0..MAX_BURST {
            let Some(intended) = self.direct.as_ref().map(Ticker::next).filter(|t| *t <= now)
            else {
                break;
            };
            if let Some(t) = self.direct.as_mut() {
                t.advance(&mut self.rng);
            }
            if let Err(end) = self.send_direct(ws, s, intended).await {
                return Some(end);
            }
        }
        if let Some(intended) = self
            .oversize
            .as_ref()
            .map(Ticker::next)
            .filter(|t| *t <= now)
        {
            if let Some(t) = self.oversize.as_mut() {
                t.advance(&mut self.rng);
            }
            if s.oversize_pending.is_none()
                && let Err(end) = self.send_oversize(ws, s, intended).await
            {
                return Some(end);
            }
        }
        None
    }

    /// Marks the session as leaving now (before the frame that causes it is sent).
    fn leave_now(&mut self, s: &mut Session, now: u64) {
        if s.leaving {
            return;
        }
        s.leaving = true;
        s.log.left_us = self.rel(now).max(1);
        let cell = &self.sh.cells[self.local as usize];
        cell.online.store(false, Ordering::Release);
        cell.leave_cause_us.store(now, Ordering::Release);
        self.park_schedules();
    }

    async fn unsubscribe_and_close(&mut self, ws: &mut Ws, s: &mut Session) {
        let Some(ch) = self.plan.channel else { return };
        let rid = self.session_no;
        s.unsub_rid = Some(rid);
        let frame = format!(
            r#"{{"type":"unsubscribe","channel":{},"requestId":"u{rid}"}}"#,
            self.sh.channel_json[ch as usize]
        );
        if self.send(ws, frame).await.is_ok() {
            // Wait (bounded) for the ack so the leave is announced by unsubscribe, not close.
            let want = format!(r#""requestId":"u{rid}""#);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = &m
                        && t.as_str().contains(&want)
                    {
                        break;
                    }
                }
            })
            .await;
        }
        close_quietly(ws).await;
    }

    fn on_server_close(&mut self, s: &mut Session, code: u16) {
        let now = self.now();
        self.sh.metrics.count(Counter::Closes, 1);
        self.sh.event(|ev| {
            *ev.closes.entry(code.to_string()).or_default() += 1;
            if let Some(a) = connect::close_advice(code)
                && code != close::TOKEN_EXPIRED
            {
                ev.warn(a, 1);
            }
        });
        if !s.leaving {
            // The server ended it: the leave is not ours to time (no presence cause).
            s.leaving = true;
            s.log.left_us = self.rel(now).max(1);
            let cell = &self.sh.cells[self.local as usize];
            cell.online.store(false, Ordering::Release);
            cell.leave_cause_us.store(0, Ordering::Release);
            self.park_schedules();
        }
        if now < self.sh.end_us() {
            self.reconnect_since.get_or_insert(now);
        }
        if code == close::TOKEN_EXPIRED && s.exp_us != u64::MAX {
            self.out.token.expired_sessions += 1;
            let early = s.exp_us.saturating_sub(1_000_000);
            let late = s.exp_us + 600_000;
            if (early..=late).contains(&now) {
                self.out.token.closed_4002_on_time += 1;
            } else {
                self.out.token.closed_4002_off_time += 1;
            }
            self.after_4002 = true;
        }
        if let Some((kind, seq)) = s.oversize_pending.take() {
            let o = &mut self.out.oversized[kind as usize];
            let pop = &self.sh.scenario.populations[self.plan.population as usize];
            let expect = pop.oversize.as_ref().map(|x| x.expect).unwrap_or_default();
            if code == close::TOO_BIG {
                o.closed_1009 += 1;
                if kind == OversizeKind::At || expect != OversizeExpect::Close {
                    o.mismatched += 1;
                }
                // The server did not process it: never deliverable.
                if let Some(e) = self.out.log.publishes.get_mut(seq as usize) {
                    *e = with_status(*e, REJECTED);
                }
            } else {
                o.other += 1;
                o.mismatched += 1;
            }
        }
    }

    fn end_session(&mut self, s: Session, end: End) {
        let now = self.now();
        let mut log = s.log;
        if log.left_us == 0 {
            log.left_us = self.rel(now).max(1);
        }
        let cell = &self.sh.cells[self.local as usize];
        cell.online.store(false, Ordering::Release);
        self.sh.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        self.sh.metrics.count(Counter::Disconnects, 1);
        if let Some((kind, _)) = s.oversize_pending {
            let o = &mut self.out.oversized[kind as usize];
            o.other += 1;
            o.mismatched += 1;
        }
        // Settle what never got an answer.
        let grace = self.sh.grace_us;
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let acked_mode = pop.publish.as_ref().is_none_or(|p| p.ack);
        let left = log.left_us;
        let mut unanswered = 0u64;
        for e in &mut self.out.log.publishes[s.pub_start..] {
            if status_of(*e) == PENDING {
                let survived = sent_of(*e) + grace <= left && !matches!(end, End::Lost);
                if acked_mode && sent_of(*e) + ACK_TIMEOUT_US / 3 <= left {
                    unanswered += 1;
                }
                *e = with_status(
                    *e,
                    if !acked_mode && survived {
                        ACKED
                    } else {
                        UNCONFIRMED
                    },
                );
            }
        }
        if unanswered > 0 {
            self.sh.event(|ev| {
                ev.warn("publishes got no ack within 5 s (ACK-1); they are left out of the expected set", unanswered);
            });
        }
        for d in &mut self.out.log.directs[s.dir_start..] {
            if d.status == PENDING {
                d.status = UNCONFIRMED;
            }
        }
        let mut rx: Vec<(u32, PairRx)> = s.rx.into_iter().collect();
        rx.sort_unstable_by_key(|(g, _)| *g);
        log.rx = rx;
        self.out.log.sessions.push(log);
    }

    async fn send(&mut self, ws: &mut Ws, text: String) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(End::Lost),
        }
    }

    fn track(&mut self, s: &mut Session, kind: u8, id: u32, sent_us: u64) {
        if s.pending.len() >= MAX_PENDING {
            s.pending.pop_front();
            self.sh.event(|ev| {
                ev.warn(
                    "requests were never answered (more than 4096 waiting on one connection)",
                    1,
                );
            });
        }
        s.pending.push_back(Pending { kind, id, sent_us });
    }

    fn data(&mut self, key: char, seq: u32, intended: u64, size: usize) -> String {
        let mut d = format!(
            r#"{{"p":{},"{key}":{seq},"t":{intended},"pad":""#,
            self.plan.global
        );
        let pad = size.saturating_sub(d.len() + 2);
        d.extend(std::iter::repeat_n('x', pad));
        d.push_str("\"}");
        d
    }

    async fn send_publish(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        intended: u64,
    ) -> Result<(), End> {
        let Some(ch) = self.plan.channel else {
            return Ok(());
        };
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let Some(pb) = pop.publish.as_ref() else {
            return Ok(());
        };
        let ack = pb.ack;
        let size = plan::sample_size(&pb.size, &mut self.rng);
        let seq = self.out.log.publishes.len() as u32;
        let data = self.data('s', seq, intended, size);
        let frame = if ack {
            format!(
                r#"{{"type":"publish","channel":{},"requestId":"p{seq}","data":{data}}}"#,
                self.sh.channel_json[ch as usize]
            )
        } else {
            format!(
                r#"{{"type":"publish","channel":{},"data":{data}}}"#,
                self.sh.channel_json[ch as usize]
            )
        };
        let now = self.now();
        self.out.log.publishes.push(pack(self.rel(now), PENDING));
        if ack {
            self.track(s, b'p', seq, now);
        }
        self.sh.metrics.with(|st| {
            st.record(Metric::ScheduleLag, now.saturating_sub(intended));
            st.count(Counter::Publishes, 1);
        });
        self.send(ws, frame).await
    }

    async fn send_direct(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        intended: u64,
    ) -> Result<(), End> {
        let Some(ch) = self.plan.channel else {
            return Ok(());
        };
        let members = &self.sh.rooms[ch as usize];
        if members.len() < 2 {
            return Ok(());
        }
        let mut target = None;
        for _ in 0..4 {
            let cand = members[self.rng.random_range(0..members.len())];
            if cand != self.local && self.sh.cells[cand as usize].online.load(Ordering::Acquire) {
                target = Some(cand);
                break;
            }
        }
        let Some(target) = target else {
            return Ok(()); // nobody online to talk to right now
        };
        let target_global = self.sh.locals[target as usize];
        let Some(to) = self.sh.wire_id(target) else {
            return Ok(());
        };
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let size = pop
            .direct
            .as_ref()
            .map(|d| plan::sample_size(&d.size, &mut self.rng))
            .unwrap_or(64);
        let dseq = self.out.log.directs.len() as u32;
        let data = self.data('d', dseq, intended, size);
        let to_json = serde_json::to_string(&to).unwrap_or_default();
        let frame =
            format!(r#"{{"type":"send","to":{to_json},"requestId":"d{dseq}","data":{data}}}"#);
        let now = self.now();
        self.out.log.directs.push(DirectRec {
            target: target_global,
            status: PENDING,
            sent_rel_us: self.rel(now),
        });
        self.track(s, b'd', dseq, now);
        self.sh.metrics.with(|st| {
            st.record(Metric::ScheduleLag, now.saturating_sub(intended));
            st.count(Counter::DirectsSent, 1);
        });
        self.send(ws, frame).await
    }

    async fn send_oversize(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        intended: u64,
    ) -> Result<(), End> {
        let Some(ch) = self.plan.channel else {
            return Ok(());
        };
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let Some(cfg) = pop.oversize.as_ref() else {
            return Ok(());
        };
        let kind = cfg.frames[self.oversize_turn % cfg.frames.len()];
        let expect = cfg.expect;
        self.oversize_turn += 1;
        let limit = s.max_message_size;
        let total = match kind {
            OversizeKind::At => limit,
            OversizeKind::Over => limit + 1,
            OversizeKind::Far => limit * 4,
        };
        let o = &mut self.out.oversized[kind as usize];
        o.sent += 1;
        if kind != OversizeKind::At && expect == OversizeExpect::Refuse {
            // The SDKs' pre-check (CLI-5): never put it on the wire.
            o.refused += 1;
            return Ok(());
        }
        let seq = self.out.log.publishes.len() as u32;
        let head = format!(
            r#"{{"type":"publish","channel":{},"requestId":"o{seq}","data":{{"p":{},"s":{seq},"t":{intended},"pad":""#,
            self.sh.channel_json[ch as usize], self.plan.global
        );
        let tail = "\"}}";
        let pad = total.saturating_sub(head.len() + tail.len());
        let mut frame = String::with_capacity(head.len() + pad + tail.len());
        frame.push_str(&head);
        frame.extend(std::iter::repeat_n('x', pad));
        frame.push_str(tail);
        if frame.len() + 4096 > self.sh.ws_config.max_write_buffer_size {
            let o = &mut self.out.oversized[kind as usize];
            o.other += 1;
            o.mismatched += 1;
            self.sh.event(|ev| {
                ev.warn(format!(
                        "an oversized frame of {} bytes exceeds the harness's write limit; the server's maxMessageSize is larger than planned",
                        frame.len()
                    ), 1);
            });
            return Ok(());
        }
        let now = self.now();
        self.out.log.publishes.push(pack(self.rel(now), PENDING));
        self.track(s, b'o', seq, now);
        s.oversize_pending = Some((kind, seq));
        self.sh.metrics.with(|st| {
            st.record(Metric::ScheduleLag, now.saturating_sub(intended));
            st.count(Counter::Publishes, 1);
        });
        self.send(ws, frame).await
    }

    fn unexpected(&self, kind: &str) {
        self.sh.metrics.count(Counter::UnexpectedFrames, 1);
        self.sh.event(|ev| {
            *ev.unexpected.entry(kind.to_owned()).or_default() += 1;
        });
    }

    /// Every text frame of a session.
    fn on_text(&mut self, s: &mut Session, text: &str) {
        let b = text.as_bytes();
        if b.starts_with(br#"{"type":"message""#) {
            if let Some((p, key, seq, t)) = scan_data(b)
                && key == b's'
            {
                self.on_message(s, p, seq, t);
                return;
            }
        } else if b.starts_with(br#"{"type":"ack","requestId":""#) {
            let rest = &text[27..];
            if let Some(end) = rest.find('"') {
                self.on_ack(s, &rest[..end]);
                return;
            }
        } else if b.starts_with(br#"{"type":"direct""#)
            && let Some((p, key, seq, t)) = scan_data(b)
            && key == b'd'
        {
            self.on_direct(s, p, seq, t);
            return;
        }
        self.slow_path(s, text);
    }

    fn slow_path(&mut self, s: &mut Session, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(f) => f,
            Err(_) => return self.unexpected("unparseable"),
        };
        match frame {
            ServerFrame::Message { data, .. } => {
                self.sh.slow_path.fetch_add(1, Ordering::Relaxed);
                match data_fields(&data, "s") {
                    Some((p, seq, t)) => self.on_message(s, p, seq, t),
                    None => self.unexpected("message_not_from_this_run"),
                }
            }
            ServerFrame::Direct { data, .. } => {
                self.sh.slow_path.fetch_add(1, Ordering::Relaxed);
                match data_fields(&data, "d") {
                    Some((p, seq, t)) => self.on_direct(s, p, seq, t),
                    None => self.unexpected("direct_not_from_this_run"),
                }
            }
            ServerFrame::Ack { request_id } => self.on_ack(s, &request_id),
            ServerFrame::Error {
                request_id, code, ..
            } => self.on_error(s, &code, request_id.as_deref()),
            ServerFrame::Presence { joined, left, .. } => self.on_presence(s, &joined, &left),
            ServerFrame::GoingAway { .. } => {
                self.sh.event(|ev| {
                    ev.warn(
                        "the server is shutting down (going_away); peers reconnect",
                        1,
                    );
                });
            }
            ServerFrame::Pong { .. } => self.unexpected("unsolicited_pong"),
            ServerFrame::Welcome { .. } => self.unexpected("second_welcome"),
        }
    }

    fn on_message(&mut self, s: &mut Session, p: u32, seq: u32, t: u64) {
        let now = self.now();
        let lat = if now >= t {
            now - t
        } else {
            self.sh.clock_skew.fetch_add(1, Ordering::Relaxed);
            0
        };
        // REST publishes (`system` messages) carry virtual publisher ids (load::rest).
        let system = p >= super::rest::REST_BASE;
        self.sh.metrics.with(|st| {
            st.record(
                if system {
                    Metric::SystemFanout
                } else {
                    Metric::Fanout
                },
                lat,
            );
            st.count(Counter::Deliveries, 1);
        });
        if s.leaving {
            return;
        }
        if p as usize >= self.sh.layout.peers.len() && !system {
            return self.unexpected("message_from_unknown_publisher");
        }
        if !s.rx.entry(p).or_default().insert(seq) {
            self.unexpected("message_with_implausible_sequence");
        }
    }

    fn on_direct(&mut self, s: &mut Session, p: u32, dseq: u32, t: u64) {
        let now = self.now();
        let lat = if now >= t {
            now - t
        } else {
            self.sh.clock_skew.fetch_add(1, Ordering::Relaxed);
            0
        };
        self.sh.metrics.with(|st| {
            st.record(Metric::Direct, lat);
            st.count(Counter::DirectsReceived, 1);
        });
        if !s.leaving {
            s.log.direct_rx.push((p, dseq));
        }
    }

    fn take_pending(&mut self, s: &mut Session, kind: u8, id: u32) -> Option<Pending> {
        let pos = s
            .pending
            .iter()
            .position(|x| x.kind == kind && x.id == id)?;
        s.pending.remove(pos)
    }

    fn on_ack(&mut self, s: &mut Session, rid: &str) {
        let now = self.now();
        let (kind, num) = match (
            rid.as_bytes().first(),
            rid.get(1..).and_then(|n| n.parse::<u32>().ok()),
        ) {
            (Some(k), Some(n)) => (*k, n),
            _ => return self.unexpected("ack_for_unknown_request"),
        };
        match kind {
            b's' if num == self.session_no => {
                if !s.subscribed {
                    s.log.subscribed_us = self.rel(now).max(1);
                    self.on_ready(s);
                }
            }
            b'u' if Some(num) == s.unsub_rid => {}
            b'p' | b'd' | b'o' => {
                let Some(pend) = self.take_pending(s, kind, num) else {
                    return self.unexpected("ack_for_unknown_request");
                };
                self.sh.metrics.with(|st| {
                    st.record(Metric::Ack, now.saturating_sub(pend.sent_us));
                    st.count(Counter::Acks, 1);
                });
                match kind {
                    b'd' => {
                        if let Some(d) = self.out.log.directs.get_mut(num as usize) {
                            d.status = ACKED;
                        }
                    }
                    _ => {
                        if let Some(e) = self.out.log.publishes.get_mut(num as usize) {
                            *e = with_status(*e, ACKED);
                        }
                    }
                }
                if kind == b'o'
                    && let Some((k, seq)) = s.oversize_pending
                    && seq == num
                {
                    s.oversize_pending = None;
                    let o = &mut self.out.oversized[k as usize];
                    o.accepted += 1;
                    if k != OversizeKind::At {
                        o.mismatched += 1;
                    }
                }
            }
            _ => self.unexpected("ack_for_unknown_request"),
        }
    }

    fn on_error(&mut self, s: &mut Session, code: &str, rid: Option<&str>) {
        self.sh.metrics.count(Counter::Errors, 1);
        self.sh.event(|ev| {
            *ev.errors.entry(code.to_owned()).or_default() += 1;
        });
        let Some(rid) = rid else { return };
        let (kind, num) = match (
            rid.as_bytes().first(),
            rid.get(1..).and_then(|n| n.parse::<u32>().ok()),
        ) {
            (Some(k), Some(n)) => (*k, n),
            _ => return,
        };
        match kind {
            b's' => {
                s.sub_deadline = u64::MAX;
                self.sh.event(|ev| {
                    ev.warn(format!("the server refused a subscribe with {code}"), 1);
                });
            }
            b'p' | b'o' => {
                self.take_pending(s, kind, num);
                if let Some(e) = self.out.log.publishes.get_mut(num as usize) {
                    *e = with_status(*e, REJECTED);
                }
                if kind == b'o'
                    && let Some((k, seq)) = s.oversize_pending
                    && seq == num
                {
                    s.oversize_pending = None;
                    let pop = &self.sh.scenario.populations[self.plan.population as usize];
                    let expect = pop.oversize.as_ref().map(|x| x.expect).unwrap_or_default();
                    let o = &mut self.out.oversized[k as usize];
                    o.error_frame += 1;
                    if k == OversizeKind::At || expect != OversizeExpect::Error {
                        o.mismatched += 1;
                    }
                }
            }
            b'd' => {
                self.take_pending(s, kind, num);
                if let Some(d) = self.out.log.directs.get_mut(num as usize) {
                    d.status = REJECTED;
                }
            }
            _ => {}
        }
    }

    fn on_presence(
        &mut self,
        s: &mut Session,
        joined: &[crate::proto::PresencePeer],
        left: &[crate::proto::PresencePeer],
    ) {
        if !s.snapshot_seen {
            // ORD-3: the first presence frame after subscribing is the snapshot.
            s.snapshot_seen = true;
            return;
        }
        let now = self.now();
        let n = (joined.len() + left.len()) as u64;
        let mut samples: [u64; 8] = [0; 8];
        let mut k = 0;
        for (list, join) in [(joined, true), (left, false)] {
            for entry in list {
                let Some(local) = self.sh.local_of_id(&entry.peer_id) else {
                    continue;
                };
                let cell = &self.sh.cells[local as usize];
                let cause = if join {
                    cell.join_cause_us.load(Ordering::Acquire)
                } else {
                    cell.leave_cause_us.load(Ordering::Acquire)
                };
                if cause > 0 && cause <= now && k < samples.len() {
                    samples[k] = now - cause;
                    k += 1;
                }
            }
        }
        self.sh.metrics.with(|st| {
            st.count(Counter::PresenceEvents, n);
            for v in &samples[..k] {
                st.record(Metric::Presence, *v);
            }
        });
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

/// Closes like a real client: close 1000, at most 1 s for the server's close, then TCP
/// goes away (frames still arriving are not ours to count any more).
async fn close_quietly(ws: &mut Ws) {
    transport::ws::close(ws, close::NORMAL, |_| {}).await;
}

/// Finds `"data":{"p":P,"K":S,"t":T` in a frame: (P, K, S, T).
pub fn scan_data(b: &[u8]) -> Option<(u32, u8, u32, u64)> {
    let start = DATA.find(b)? + br#""data":{"p":"#.len();
    let (p, mut i) = digits(b, start)?;
    if b.get(i) != Some(&b',')
        || b.get(i + 1) != Some(&b'"')
        || b.get(i + 3) != Some(&b'"')
        || b.get(i + 4) != Some(&b':')
    {
        return None;
    }
    let key = *b.get(i + 2)?;
    let (seq, j) = digits(b, i + 5)?;
    i = j;
    if b.get(i..i + 5)? != br#","t":"# {
        return None;
    }
    let (t, _) = digits(b, i + 5)?;
    Some((u32::try_from(p).ok()?, key, u32::try_from(seq).ok()?, t))
}

fn digits(b: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut v: u64 = 0;
    while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        i += 1;
    }
    (i > start).then_some((v, i))
}

/// The slow path: the fields from a parsed `data` object.
fn data_fields(data: &Value, key: &str) -> Option<(u32, u32, u64)> {
    let p = u32::try_from(data.get("p")?.as_u64()?).ok()?;
    let s = u32::try_from(data.get(key)?.as_u64()?).ok()?;
    let t = data.get("t")?.as_u64()?;
    Some((p, s, t))
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
    fn scans_the_data_layout_we_publish() {
        let frame = br#"{"type":"message","channel":"room-1","from":"r-7","data":{"p":7,"s":42,"t":1767225600123456,"pad":"xx"},"fromMetadata":{"name":"x"}}"#;
        assert_eq!(scan_data(frame), Some((7, b's', 42, 1767225600123456)));
        let direct = br#"{"type":"direct","from":"r-7","data":{"p":7,"d":3,"t":5,"pad":""}}"#;
        assert_eq!(scan_data(direct), Some((7, b'd', 3, 5)));
        // Re-serialized data (spaces, other order) is not ours to scan: slow path.
        assert_eq!(
            scan_data(br#"{"type":"message","data":{"s":1,"p":2,"t":3}}"#),
            None
        );
        assert_eq!(
            scan_data(br#"{"type":"message","data":{"p": 2,"s":1,"t":3}}"#),
            None
        );
        assert_eq!(
            scan_data(br#"{"type":"message","data":{"p":99999999999,"s":1,"t":3}}"#),
            None
        );
    }

    #[test]
    fn slow_path_reads_reordered_data() {
        let v: Value = serde_json::from_str(r#"{"t":3,"s":1,"p":2}"#).unwrap();
        assert_eq!(data_fields(&v, "s"), Some((2, 1, 3)));
        assert_eq!(data_fields(&v, "d"), None);
    }

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
