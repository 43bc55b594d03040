//! A session: subscribe, the event loop over frames, timers and the stop signal, leaving,
//! server closes, and settling what the session sent when it ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{ACK_TIMEOUT_US, CLOSE_TIMEOUT, End, MAX_BURST, Peer, Session};
use crate::load::accounting::{REJECTED, SessionLog, with_status};
use crate::load::connect::{self, Welcome, Ws};
use crate::load::plan::{self, Ticker};
use crate::load::scenario::{Leave, OversizeExpect, OversizeKind, StormMode};
use crate::metrics::{Counter, Metric};
use crate::proto::frame::close;
use crate::transport;

/// How many frames a session reads before it compares the clock with its next deadline
/// (see `session_loop`): small enough that a flood delays a timer by well under a
/// millisecond, large enough that the clock read is lost in the frames' own cost.
const FRAMES_PER_CLOCK_CHECK: u32 = 32;

impl Peer {
    pub(super) async fn session(
        &mut self,
        mut ws: Box<Ws>,
        welcome: Welcome,
        stop: &mut watch::Receiver<bool>,
        urgent: &mut watch::Receiver<bool>,
    ) -> End {
        let now = self.now();
        self.session_no += 1;
        self.out.sessions_started += 1;
        self.sh.metrics.connected.fetch_add(1, Ordering::Relaxed);
        let cell = &self.sh.cells[self.local as usize];
        cell.online.store(true, Ordering::Release);
        let _ = cell.first_welcome_us.compare_exchange(
            0,
            now.max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
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
            sub_refused: false,
            pings: 0,
            calls: Default::default(),
        };
        if welcome.ice_servers && self.makes_calls() {
            self.out.calls.ice_servers += 1;
        }
        while self.next_storm < self.storms.len() && self.storms[self.next_storm].1 <= now {
            self.next_storm += 1;
        }
        // An urgent stop drops whatever the session awaits (a send the server does not
        // read, a close it does not answer, a flood it keeps sending): the session's state
        // stays here, so what it logged is settled and kept.
        let live = async {
            match Box::pin(self.subscribe(&mut ws, &mut s)).await {
                Err(end) => end,
                Ok(()) => self.session_loop(&mut ws, &mut s, stop).await,
            }
        };
        let end = tokio::select! {
            biased;
            _ = urgent.wait_for(|u| *u) => None,
            end = live => Some(end),
        };
        let end = end.unwrap_or_else(|| {
            let now = self.now();
            self.leave_now(&mut s, now);
            transport::ws::abort_on_drop(&ws);
            End::RunOver
        });
        self.end_session(s, end);
        end
    }

    pub(super) async fn subscribe(&mut self, ws: &mut Ws, s: &mut Session) -> Result<(), End> {
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
        self.out.requests.subscribes.sent += 1;
        self.send(ws, frame).await
    }

    /// Subscribed (or welcomed, without a room): start the schedules.
    pub(super) fn on_ready(&mut self, s: &mut Session) {
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

    pub(super) fn park_schedules(&mut self) {
        for t in [&mut self.publish, &mut self.direct, &mut self.oversize]
            .into_iter()
            .flatten()
        {
            t.park();
        }
    }

    pub(super) fn next_deadline(&self, s: &Session) -> u64 {
        let end = self.sh.end_us();
        let mut d = if s.draining {
            self.sh.drain_end_us()
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
            d = d.min(s.calls.next());
        }
        d
    }

    pub(super) async fn session_loop(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let mut deadline = self.next_deadline(s);
        // On time, not on tokio's 1 ms tick: the send lag is inside every latency we report.
        let mut sleep = crate::timer::sleep_until(self.sh.clock.instant_at(deadline));
        // One waiter for the whole session: re-creating it per frame costs a Notify
        // registration per received frame.
        let stopped = stop.changed();
        tokio::pin!(stopped);
        let mut stop_seen = false;
        // Frames read since the clock was last compared with the deadline. Reads come
        // first (biased), and a server that floods keeps them ready: tokio's cooperative
        // budget then runs out inside the read branch, so the timer branch would be polled
        // only without budget and never fire. The deadline is checked by hand instead.
        let mut unchecked = 0u32;
        loop {
            tokio::select! {
                biased;
                frame = ws.next() => {
                    unchecked += 1;
                    match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(s, text.as_str()),
                    Some(Ok(Message::Close(cf))) => {
                        let code = cf.map(|f| u16::from(f.code)).unwrap_or(1005);
                        self.on_server_close(s, code, "");
                        Box::pin(transport::ws::answer_close(ws)).await;
                        return End::Server(code);
                    }
                    Some(Ok(Message::Binary(b))) => {
                        self.unexpected("binary_frame", &format!("a binary frame of {} bytes", b.len()));
                    }
                    Some(Ok(Message::Ping(_))) => s.pings += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.on_server_close(s, close::ABNORMAL, &format!(": {e}"));
                        return End::Lost;
                    }
                    None => {
                        self.on_server_close(s, close::ABNORMAL, ": the connection ended");
                        return End::Lost;
                    }
                    }
                    if unchecked >= FRAMES_PER_CLOCK_CHECK {
                        unchecked = 0;
                        if self.now() >= deadline
                            && let Some(end) = Box::pin(self.on_timer(ws, s)).await
                        {
                            return end;
                        }
                    }
                },
                _ = &mut sleep => {
                    unchecked = 0;
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
                sleep.reset(self.sh.clock.instant_at(deadline));
            }
        }
    }

    pub(super) async fn on_timer(&mut self, ws: &mut Ws, s: &mut Session) -> Option<End> {
        let now = self.now();
        let end = self.sh.end_us();
        if !s.draining && now >= end {
            s.draining = true;
            self.park_schedules();
        }
        if s.draining {
            if now >= self.sh.drain_end_us() {
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
        if let Err(end) = self.call_jobs(ws, s, now).await {
            return Some(end);
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
    pub(super) fn leave_now(&mut self, s: &mut Session, now: u64) {
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

    pub(super) async fn unsubscribe_and_close(&mut self, ws: &mut Ws, s: &mut Session) {
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

    pub(super) fn on_server_close(&mut self, s: &mut Session, code: u16, why: &str) {
        let now = self.now();
        self.sh.metrics.count(Counter::Closes, 1);
        let (at, since) = (
            self.rel(now) as f64 / 1e6,
            self.rel(now).saturating_sub(s.log.welcomed_us) as f64 / 1e6,
        );
        self.sh.event(|ev| {
            ev.note(&format!("closes/{code}"), || {
                format!(
                    "t={at:.3} s peer {} session {}: {code} ({}{why}) {since:.1} s after welcome",
                    self.id,
                    self.session_no,
                    close::name(code)
                )
            });
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
                self.out.requests.publishes.refused += 1;
            } else {
                o.other += 1;
                o.mismatched += 1;
            }
        }
    }
}

/// Closes like a real client: close 1000, at most 1 s for the server's close, then TCP
/// goes away (frames still arriving are not ours to count any more).
async fn close_quietly(ws: &mut Ws) {
    transport::ws::close(ws, close::NORMAL, |_| {}).await;
}
