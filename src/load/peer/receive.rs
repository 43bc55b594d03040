//! What a peer receives: the hot-path scan of `message` and `direct` frames, the serde_json
//! slow path, acks, errors and presence.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use memchr::memmem::Finder;
use serde_json::Value;

use super::{Peer, Pending, Session};
use crate::load::accounting::{ACKED, REJECTED, with_status};
use crate::load::scenario::{OversizeExpect, OversizeKind};
use crate::metrics::{Counter, Metric};
use crate::proto::ServerFrame;

static DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""data":{"p":"#));

impl Peer {
    /// Counts a frame that fits no expectation, keeping the first few as examples (`what`:
    /// the frame, or what was wrong with it). Messages and directs that carry no data of
    /// this run also count as unexpected copies in the delivery accounting.
    pub(super) fn unexpected(&mut self, kind: &str, what: &str) {
        match kind {
            "message_not_from_this_run"
            | "message_from_unknown_publisher"
            | "message_with_implausible_sequence" => self.out.log.foreign += 1,
            "direct_not_from_this_run" => self.out.log.foreign_directs += 1,
            _ => {}
        }
        self.sh.metrics.count(Counter::UnexpectedFrames, 1);
        let at = self.rel(self.now()) as f64 / 1e6;
        self.sh.event(|ev| {
            *ev.unexpected.entry(kind.to_owned()).or_default() += 1;
            ev.note(&format!("unexpected/{kind}"), || {
                format!("t={at:.3} s peer {}: {kind}: {}", self.id, excerpt(what))
            });
        });
    }

    /// Every text frame of a session.
    pub(super) fn on_text(&mut self, s: &mut Session, text: &str) {
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
            let sig = if self.makes_calls() {
                super::call::scan_sig(b)
            } else {
                None
            };
            self.on_direct(s, p, seq, t, sig);
            return;
        }
        self.slow_path(s, text);
    }

    pub(super) fn slow_path(&mut self, s: &mut Session, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(f) => f,
            Err(_) => return self.unexpected("unparseable", text),
        };
        match frame {
            ServerFrame::Message { data, .. } => {
                self.sh.slow_path.fetch_add(1, Ordering::Relaxed);
                match data_fields(&data, "s") {
                    Some((p, seq, t)) => self.on_message(s, p, seq, t),
                    None => self.unexpected("message_not_from_this_run", text),
                }
            }
            ServerFrame::Direct { data, .. } => {
                self.sh.slow_path.fetch_add(1, Ordering::Relaxed);
                let sig = data
                    .get("sig")
                    .filter(|_| self.makes_calls())
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                match data_fields(&data, "d") {
                    Some((p, seq, t)) => self.on_direct(s, p, seq, t, sig),
                    None => self.unexpected("direct_not_from_this_run", text),
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
            ServerFrame::Pong { .. } => self.unexpected("unsolicited_pong", text),
            ServerFrame::Welcome { .. } => self.unexpected("second_welcome", text),
        }
    }

    pub(super) fn on_message(&mut self, s: &mut Session, p: u32, seq: u32, t: u64) {
        let now = self.now();
        let lat = if now >= t {
            now - t
        } else {
            self.sh.clock_skew.fetch_add(1, Ordering::Relaxed);
            0
        };
        // REST publishes (`system` messages) carry virtual publisher ids (load::rest).
        let system = p >= crate::load::rest::REST_BASE;
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
            return self.unexpected(
                "message_from_unknown_publisher",
                &format!("publisher index {p} is not a peer of this run"),
            );
        }
        if !s.rx.entry(p).or_default().insert(seq) {
            self.unexpected(
                "message_with_implausible_sequence",
                &format!("seq {seq} of publisher #{p} is far outside the sequence seen"),
            );
        }
    }

    pub(super) fn on_direct(
        &mut self,
        s: &mut Session,
        p: u32,
        dseq: u32,
        t: u64,
        sig: Option<super::call::Sig>,
    ) {
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
        if let Some(sig) = sig {
            self.on_signal(s, p, t, sig);
        }
    }

    pub(super) fn take_pending(&mut self, s: &mut Session, kind: u8, id: u32) -> Option<Pending> {
        let pos = s
            .pending
            .iter()
            .position(|x| x.kind == kind && x.id == id)?;
        s.pending.remove(pos)
    }

    pub(super) fn on_ack(&mut self, s: &mut Session, rid: &str) {
        let now = self.now();
        let (kind, num) = match (
            rid.as_bytes().first(),
            rid.get(1..).and_then(|n| n.parse::<u32>().ok()),
        ) {
            (Some(k), Some(n)) => (*k, n),
            _ => return self.unexpected("ack_for_unknown_request", &format!("requestId {rid:?}")),
        };
        match kind {
            b's' if num == self.session_no => {
                if !s.subscribed {
                    self.out.requests.subscribes.acked += 1;
                    s.log.subscribed_us = self.rel(now).max(1);
                    self.on_ready(s);
                }
            }
            b'u' if Some(num) == s.unsub_rid => {}
            b'p' | b'd' | b'o' => {
                let Some(pend) = self.take_pending(s, kind, num) else {
                    return self.unexpected(
                        "ack_for_unknown_request",
                        &format!("requestId {rid:?}, not pending (answered twice, or never sent)"),
                    );
                };
                self.sh.metrics.with(|st| {
                    st.record(Metric::Ack, now.saturating_sub(pend.sent_us));
                    st.count(Counter::Acks, 1);
                });
                match kind {
                    b'd' => self.out.requests.directs.acked += 1,
                    _ => self.out.requests.publishes.acked += 1,
                }
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
            _ => self.unexpected("ack_for_unknown_request", &format!("requestId {rid:?}")),
        }
    }

    pub(super) fn on_error(&mut self, s: &mut Session, code: &str, rid: Option<&str>) {
        self.sh.metrics.count(Counter::Errors, 1);
        let at = self.rel(self.now()) as f64 / 1e6;
        self.sh.event(|ev| {
            *ev.errors.entry(code.to_owned()).or_default() += 1;
            ev.note(&format!("errors/{code}"), || {
                format!(
                    "t={at:.3} s peer {}: error {} for {}",
                    self.id,
                    excerpt(code),
                    rid.map(|r| format!("requestId {}", excerpt(r)))
                        .unwrap_or_else(|| "no requestId".into())
                )
            });
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
                if num == self.session_no && !s.subscribed && !s.sub_refused {
                    s.sub_refused = true;
                    self.out.requests.subscribes.refused += 1;
                }
                s.sub_deadline = u64::MAX;
                self.sh.event(|ev| {
                    ev.warn(format!("the server refused a subscribe with {code}"), 1);
                });
            }
            b'p' | b'o' => {
                if self.take_pending(s, kind, num).is_some() {
                    self.out.requests.publishes.refused += 1;
                }
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
                if self.take_pending(s, kind, num).is_some() {
                    self.out.requests.directs.refused += 1;
                }
                if code == "peer_not_found" && self.makes_calls() {
                    self.call_peer_gone();
                }
                if let Some(d) = self.out.log.directs.get_mut(num as usize) {
                    d.status = REJECTED;
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_presence(
        &mut self,
        s: &mut Session,
        joined: &[crate::proto::PresencePeer],
        left: &[crate::proto::PresencePeer],
    ) {
        if self.makes_calls() {
            self.call_presence(s, joined, left);
        }
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

/// The start of a frame for an example line: at most 160 bytes, control characters
/// escaped, so a hostile frame cannot break the report's lines.
fn excerpt(text: &str) -> String {
    let mut cut = text.len().min(160);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out: String = text[..cut].escape_debug().collect();
    if cut < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn scans_the_data_layout_we_publish() {
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
    pub(super) fn slow_path_reads_reordered_data() {
        let v: Value = serde_json::from_str(r#"{"t":3,"s":1,"p":2}"#).unwrap();
        assert_eq!(data_fields(&v, "s"), Some((2, 1, 3)));
        assert_eq!(data_fields(&v, "d"), None);
    }
}
