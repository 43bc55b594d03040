//! What a peer sends: publishes, directs and oversized frames on their schedules, each
//! tracked until its ack.

use std::sync::atomic::Ordering;

use futures_util::SinkExt;
use rand::Rng;
use tokio_tungstenite::tungstenite::Message;

use super::{End, MAX_PENDING, Peer, Pending, SEND_TIMEOUT, Session};
use crate::load::accounting::{DirectRec, PENDING, pack};
use crate::load::connect::Ws;
use crate::load::plan;
use crate::load::scenario::{OversizeExpect, OversizeKind};
use crate::metrics::{Counter, Metric};

impl Peer {
    pub(super) async fn send(&mut self, ws: &mut Ws, text: String) -> Result<(), End> {
        match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(End::Lost),
        }
    }

    /// Sends a frame the schedule asked for at `intended` (µs), recording how late it
    /// left (`now`) and counting it.
    async fn send_scheduled(
        &mut self,
        ws: &mut Ws,
        frame: String,
        counter: Counter,
        intended: u64,
        now: u64,
    ) -> Result<(), End> {
        self.sh.metrics.with(|st| {
            st.record(Metric::ScheduleLag, now.saturating_sub(intended));
            st.count(counter, 1);
        });
        self.send(ws, frame).await
    }

    pub(super) fn track(&mut self, s: &mut Session, kind: u8, id: u32, sent_us: u64) {
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

    pub(super) fn data(&mut self, key: char, seq: u32, intended: u64, size: usize) -> String {
        let mut d = format!(
            r#"{{"p":{},"{key}":{seq},"t":{intended},"pad":""#,
            self.plan.global
        );
        let pad = size.saturating_sub(d.len() + 2);
        d.extend(std::iter::repeat_n('x', pad));
        d.push_str("\"}");
        d
    }

    pub(super) async fn send_publish(
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
            self.out.requests.publishes.sent += 1;
        }
        self.send_scheduled(ws, frame, Counter::Publishes, intended, now)
            .await
    }

    pub(super) async fn send_direct(
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
        self.send_logged_direct(ws, s, target_global, &to_json, data, intended)
            .await
    }

    /// Sends `data` as direct number `dseq = directs.len()` to `target` (`to_json`: its
    /// id as a JSON string), logged for the accounting and tracked until its ack.
    pub(super) async fn send_logged_direct(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        target: u32,
        to_json: &str,
        data: String,
        intended: u64,
    ) -> Result<(), End> {
        let dseq = self.out.log.directs.len() as u32;
        let frame =
            format!(r#"{{"type":"send","to":{to_json},"requestId":"d{dseq}","data":{data}}}"#);
        let now = self.now();
        self.out.log.directs.push(DirectRec {
            target,
            status: PENDING,
            sent_rel_us: self.rel(now),
        });
        self.track(s, b'd', dseq, now);
        self.out.requests.directs.sent += 1;
        self.send_scheduled(ws, frame, Counter::DirectsSent, intended, now)
            .await
    }

    pub(super) async fn send_oversize(
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
        self.out.requests.publishes.sent += 1;
        s.oversize_pending = Some((kind, seq));
        self.send_scheduled(ws, frame, Counter::Publishes, intended, now)
            .await
    }
}
