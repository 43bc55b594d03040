//! The end of a session: settling what it sent that never got an answer (ACK-1), and
//! handing its log to the accounting.

use std::sync::atomic::Ordering;

use super::{ACK_TIMEOUT_US, End, Peer, Session};
use crate::load::accounting::{
    ACKED, PENDING, PairRx, UNCONFIRMED, sent_of, status_of, with_status,
};
use crate::metrics::Counter;

/// Ping control frames a connection may receive without it counting as a flood: a
/// burst, then many times any sane heartbeat (HB-1 says one per 30 s).
const PING_BURST: u64 = 10;
const PINGS_PER_S: u64 = 10;

impl Peer {
    /// Counts Ping control frames beyond [`PINGS_PER_S`] as unexpected (`ping_flood`):
    /// tungstenite answers each one, so a flood would otherwise leave no trace but a
    /// busy harness.
    fn judge_pings(&mut self, pings: u64, log: &crate::load::accounting::SessionLog) {
        let open_s = log.left_us.saturating_sub(log.welcomed_us) / 1_000_000 + 1;
        let excess = pings.saturating_sub(PING_BURST + PINGS_PER_S * open_s);
        if excess == 0 {
            return;
        }
        self.sh.metrics.count(Counter::UnexpectedFrames, excess);
        let (id, n) = (&self.id, self.session_no);
        self.sh.event(|ev| {
            *ev.unexpected.entry("ping_flood".into()).or_default() += excess;
            ev.note("unexpected/ping_flood", || {
                format!("peer {id} session {n}: {pings} ping frames in {open_s} s")
            });
        });
    }

    pub(super) fn end_session(&mut self, mut s: Session, end: End) {
        if self.makes_calls() {
            self.call_session_end(&mut s, end);
        }
        let now = self.now();
        let mut log = s.log;
        if log.left_us == 0 {
            log.left_us = self.rel(now).max(1);
        }
        self.judge_pings(s.pings, &log);
        let cell = &self.sh.cells[self.local as usize];
        cell.online.store(false, Ordering::Release);
        self.sh.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        self.sh.metrics.count(Counter::Disconnects, 1);
        if let Some((kind, _)) = s.oversize_pending {
            let o = &mut self.out.oversized[kind as usize];
            o.other += 1;
            o.mismatched += 1;
        }
        // Settle what never got an answer. An ack has the scenario's grace (at most 5 s)
        // to arrive, like a copy: a request still unanswered although its connection
        // stayed open that long broke ACK-1 (`unacked`); one whose connection ended sooner
        // is `unsettled` (the close is judged on its own). For the accounting, a publish
        // or direct whose connection outlived the send by `grace` counts as sent, acked or
        // not (as with `ack = false`): a server that acks and delivers nothing then shows
        // lost copies, not an empty expected set.
        let grace = self.sh.grace_us;
        let ack_wait = grace.min(ACK_TIMEOUT_US / 3);
        let pop = &self.sh.scenario.populations[self.plan.population as usize];
        let acked_mode = pop.publish.as_ref().is_none_or(|p| p.ack);
        let left = log.left_us;
        let lost_conn = matches!(end, End::Lost);
        let answered_in_time = |sent: u64| left.saturating_sub(sent) < ack_wait;
        let mut examples: Vec<(&str, String)> = Vec::new();
        for (i, e) in self.out.log.publishes[s.pub_start..].iter_mut().enumerate() {
            if status_of(*e) != PENDING {
                continue;
            }
            let sent = sent_of(*e);
            if acked_mode {
                if answered_in_time(sent) {
                    self.out.requests.publishes.unsettled += 1;
                } else {
                    self.out.requests.publishes.unacked += 1;
                    if examples.len() < 2 {
                        examples.push((
                            "acks/publish",
                            format!(
                                "publish p{} sent at {:.3} s",
                                s.pub_start + i,
                                sent as f64 / 1e6
                            ),
                        ));
                    }
                }
            }
            let survived = sent + grace <= left && !lost_conn;
            *e = with_status(*e, if survived { ACKED } else { UNCONFIRMED });
        }
        for (i, d) in self.out.log.directs[s.dir_start..].iter_mut().enumerate() {
            if d.status != PENDING {
                continue;
            }
            if answered_in_time(d.sent_rel_us) {
                self.out.requests.directs.unsettled += 1;
            } else {
                self.out.requests.directs.unacked += 1;
                if examples.len() < 4 {
                    examples.push((
                        "acks/direct",
                        format!(
                            "send d{} sent at {:.3} s",
                            s.dir_start + i,
                            d.sent_rel_us as f64 / 1e6
                        ),
                    ));
                }
            }
            let survived = d.sent_rel_us + grace <= left && !lost_conn;
            d.status = if survived { ACKED } else { UNCONFIRMED };
        }
        let sub_sent = log.subscribe_sent_us;
        if sub_sent > 0 && !s.subscribed && !s.sub_refused {
            if answered_in_time(sub_sent) {
                self.out.requests.subscribes.unsettled += 1;
            } else {
                self.out.requests.subscribes.unacked += 1;
                examples.push((
                    "acks/subscribe",
                    format!(
                        "subscribe s{} sent at {:.3} s",
                        self.session_no,
                        sub_sent as f64 / 1e6
                    ),
                ));
            }
        }
        if !examples.is_empty() {
            let id = &self.id;
            let open_s = ack_wait as f64 / 1e6;
            self.sh.event(|ev| {
                for (key, what) in examples {
                    ev.note(key, || {
                        format!("peer {id}: {what}: no ack or error although the connection stayed open {open_s:.1} s longer")
                    });
                }
            });
        }
        let mut rx: Vec<(u32, PairRx)> = s.rx.into_iter().collect();
        rx.sort_unstable_by_key(|(g, _)| *g);
        log.rx = rx;
        self.out.log.sessions.push(log);
    }
}
