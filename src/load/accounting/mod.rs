//! Exact delivery accounting from the engine's own membership timeline.
//!
//! During the run each peer keeps: its publish log (one entry per publish, the index is
//! the sequence number carried in `data.s`: actual send time and status), its direct
//! log, and per session the times it was welcomed, sent its subscribe, got the ack and
//! left, plus what it received (a bitset of sequence numbers per publisher, and the
//! directs in arrival order). After the run, [`account`] decides for every publish who
//! had to receive it:
//!
//! a member's session is an *expected recipient* of a publish sent at `t` when its
//! subscribe was acknowledged before `t` and it left no earlier than `t + grace`, the
//! publish was acknowledged (or, without acks, its connection outlived `t + grace`), and
//! the member is not the publisher. Expected copies that arrived are `delivered`, the
//! others `lost`; extra copies are `duplicated`; a copy arriving after a later one of the
//! same publisher on that pair is `reordered`. Copies of refused publishes, to the
//! publisher, from outside the room, or from long before the subscribe are `unexpected`;
//! copies in the undecidable margins (joining or leaving within `grace`, unconfirmed
//! publishes) are `unaccounted`. Directs follow the same rules with "connected" in place
//! of "subscribed". `message` and `direct` frames that carry no data of this run
//! (foreign messages) are `unexpected` at the population that received them; copies from
//! a peer whose log was lost (a task aborted at the end) are `unaccounted`. The first
//! few lost, duplicated, reordered and unexpected copies are kept as examples, naming
//! peers `#<global index>` (the engine turns that into peer ids).
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::report::{Delivery, Examples};

/// Status of a logged publish or direct (2 bits).
pub const PENDING: u8 = 0;
pub const ACKED: u8 = 1;
pub const REJECTED: u8 = 2;
pub const UNCONFIRMED: u8 = 3;

/// A publish log entry: send time (µs after the run start) and status in one u64.
#[inline]
pub fn pack(sent_rel_us: u64, status: u8) -> u64 {
    (sent_rel_us << 2) | status as u64
}
#[inline]
pub fn sent_of(entry: u64) -> u64 {
    entry >> 2
}
#[inline]
pub fn status_of(entry: u64) -> u8 {
    (entry & 3) as u8
}
#[inline]
pub fn with_status(entry: u64, status: u8) -> u64 {
    (entry & !3) | status as u64
}

/// One direct message sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectRec {
    /// Global index of the target peer.
    pub target: u32,
    pub status: u8,
    /// Send time, µs after the run start.
    pub sent_rel_us: u64,
}

/// Sequence numbers received from one publisher on one session: a bitset that grows
/// both ways, plus duplicate and reorder counts taken at arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairRx {
    base: u32,
    words: Vec<u64>,
    max: u32,
    any: bool,
    pub dups: u32,
    pub reorders: u32,
}

/// A bitset span larger than this (in bits) is refused: the sequence is not ours.
const MAX_SPAN: u32 = 1 << 24;

impl PairRx {
    /// Records `seq`; false when it is implausible (far outside what was seen).
    pub fn insert(&mut self, seq: u32) -> bool {
        if self.words.is_empty() {
            self.base = seq & !63;
        }
        if seq < self.base {
            let new_base = seq & !63;
            if self.base - new_base > MAX_SPAN {
                return false;
            }
            let shift = ((self.base - new_base) / 64) as usize;
            self.words.splice(0..0, std::iter::repeat_n(0, shift));
            self.base = new_base;
        }
        let off = seq - self.base;
        if off > MAX_SPAN {
            return false;
        }
        let w = (off / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let bit = 1u64 << (off % 64);
        if self.words[w] & bit != 0 {
            self.dups += 1;
            return true;
        }
        self.words[w] |= bit;
        if self.any && seq < self.max {
            self.reorders += 1;
        }
        if !self.any || seq > self.max {
            self.max = seq;
            self.any = true;
        }
        true
    }

    pub fn contains(&self, seq: u32) -> bool {
        if seq < self.base {
            return false;
        }
        let off = seq - self.base;
        let w = (off / 64) as usize;
        w < self.words.len() && self.words[w] & (1u64 << (off % 64)) != 0
    }

    /// Distinct sequence numbers received, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(move |(i, &w)| {
            let base = self.base + i as u32 * 64;
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| base + b)
        })
    }

    pub fn distinct(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }
}

/// One connection of a peer, from welcome to leaving.
#[derive(Debug, Clone, Default)]
pub struct SessionLog {
    /// µs after the run start.
    pub welcomed_us: u64,
    /// 0 when no subscribe was sent.
    pub subscribe_sent_us: u64,
    /// 0 when the subscribe was never acknowledged.
    pub subscribed_us: u64,
    /// When the peer decided to leave, or saw the connection end.
    pub left_us: u64,
    /// Received channel messages by publisher (global index), sorted by publisher.
    pub rx: Vec<(u32, PairRx)>,
    /// Received directs (sender, direct sequence), in arrival order.
    pub direct_rx: Vec<(u32, u32)>,
}

/// Everything one peer logged, handed to [`account`] at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct PeerLog {
    pub global: u32,
    pub population: u16,
    /// Global channel id of the peer's room.
    pub channel: Option<u32>,
    pub publishes: Vec<u64>,
    pub directs: Vec<DirectRec>,
    pub sessions: Vec<SessionLog>,
    /// `message` frames received that no publisher of this run sent (no data of ours, an
    /// unknown publisher, an implausible sequence number).
    pub foreign: u64,
    /// The same for `direct` frames.
    pub foreign_directs: u64,
    /// The peer's task was aborted: its log is lost, so copies from it prove nothing.
    pub incomplete: bool,
}

/// The accounting of a run.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// Channel messages per receiving population.
    pub channel: BTreeMap<String, Delivery>,
    /// Directs per receiving population.
    pub direct: BTreeMap<String, Delivery>,
    /// First lost, duplicated, reordered and unexpected copies.
    pub examples: Examples,
}

fn copies(n: u64) -> String {
    if n == 1 {
        "1 copy".into()
    } else {
        format!("{n} copies")
    }
}

fn at_s(rel_us: u64) -> f64 {
    rel_us as f64 / 1e6
}

/// Accounting per receiving population.
pub fn account(logs: &[PeerLog], population_names: &[String], grace_us: u64) -> Accounts {
    let mut ex = Examples::default();
    let pop = |i: u16| {
        population_names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("population-{i}"))
    };
    let mut channel: BTreeMap<String, Delivery> = BTreeMap::new();
    let mut direct: BTreeMap<String, Delivery> = BTreeMap::new();
    let index: HashMap<u32, usize> = logs
        .iter()
        .enumerate()
        .map(|(i, l)| (l.global, i))
        .collect();

    let incomplete: HashSet<u32> = logs
        .iter()
        .filter(|l| l.incomplete)
        .map(|l| l.global)
        .collect();

    // Publishers of each room.
    let mut publishers: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, l) in logs.iter().enumerate() {
        if let (Some(ch), false) = (l.channel, l.publishes.is_empty()) {
            publishers.entry(ch).or_default().push(i);
        }
    }

    for r in logs {
        let d = channel.entry(pop(r.population)).or_default();
        d.unexpected += r.foreign;
        for (k, sess) in r.sessions.iter().enumerate() {
            let room_pubs: &[usize] = r
                .channel
                .and_then(|c| publishers.get(&c))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            // Publishers of the room: expected ranges.
            for &pi in room_pubs {
                let p = &logs[pi];
                if p.global == r.global {
                    continue;
                }
                let pair = sess
                    .rx
                    .binary_search_by_key(&p.global, |(g, _)| *g)
                    .ok()
                    .map(|k| &sess.rx[k].1);
                let log = &p.publishes;
                let (lo, hi) =
                    if sess.subscribed_us > 0 && sess.left_us > sess.subscribed_us + grace_us {
                        let lo = log.partition_point(|e| sent_of(*e) <= sess.subscribed_us);
                        let until = sess.left_us - grace_us;
                        let hi = log.partition_point(|e| sent_of(*e) < until).max(lo);
                        (lo, hi)
                    } else {
                        (0, 0)
                    };
                for (i, e) in log.iter().enumerate().take(hi).skip(lo) {
                    let got = pair.is_some_and(|x| x.contains(i as u32));
                    match status_of(*e) {
                        ACKED => {
                            d.expected += 1;
                            if got {
                                d.delivered += 1;
                            } else {
                                d.lost += 1;
                                ex.note("lost", || {
                                    format!(
                                        "peer #{} seq {i} (sent at {:.3} s) → peer #{} session {}: never arrived",
                                        p.global,
                                        at_s(sent_of(*e)),
                                        r.global,
                                        k + 1
                                    )
                                });
                            }
                        }
                        REJECTED if got => {
                            d.unexpected += 1;
                            ex.note("unexpected/refused", || {
                                format!(
                                    "peer #{} got seq {i} of peer #{}, a publish the server refused",
                                    r.global, p.global
                                )
                            });
                        }
                        _ if got => d.unaccounted += 1,
                        _ => {}
                    }
                }
                if let Some(pair) = pair {
                    d.duplicated += pair.dups as u64;
                    d.reordered += pair.reorders as u64;
                    if pair.dups > 0 {
                        ex.note("duplicated", || {
                            format!(
                                "peer #{} session {} got {} from peer #{} twice",
                                r.global,
                                k + 1,
                                copies(pair.dups as u64),
                                p.global
                            )
                        });
                    }
                    if pair.reorders > 0 {
                        ex.note("reordered", || {
                            format!(
                                "peer #{} session {} got {} from peer #{} after a later one (ORD-5)",
                                r.global,
                                k + 1,
                                copies(pair.reorders as u64),
                                p.global
                            )
                        });
                    }
                    let floor = sess.subscribe_sent_us.saturating_sub(grace_us);
                    for seq in pair.iter() {
                        let i = seq as usize;
                        if (lo..hi).contains(&i) {
                            continue;
                        }
                        let why = match log.get(i) {
                            None => "never sent",
                            Some(e) if status_of(*e) == REJECTED => "refused by the server",
                            Some(e) if sess.subscribe_sent_us == 0 || sent_of(*e) < floor => {
                                "sent before the member subscribed"
                            }
                            Some(_) => {
                                d.unaccounted += 1;
                                continue;
                            }
                        };
                        d.unexpected += 1;
                        ex.note("unexpected/copy", || {
                            format!(
                                "peer #{} session {} got seq {seq} of peer #{}: {why}",
                                r.global,
                                k + 1,
                                p.global
                            )
                        });
                    }
                }
            }
            // Copies from peers that do not publish to this room (or from itself).
            for (g, pair) in &sess.rx {
                let in_room = room_pubs.iter().any(|&pi| logs[pi].global == *g);
                let n = pair.distinct() + pair.dups as u64;
                if incomplete.contains(g) && *g != r.global {
                    d.unaccounted += n;
                } else if !in_room || *g == r.global {
                    d.unexpected += n;
                    ex.note("unexpected/stranger", || {
                        format!(
                            "peer #{} session {} got {} from peer #{g}, {}",
                            r.global,
                            k + 1,
                            copies(n),
                            if *g == r.global {
                                "its own publishes (PUB-4)"
                            } else {
                                "which does not publish to its room"
                            }
                        )
                    });
                }
            }
        }
    }

    // Directs: what each target received, by (sender, dseq) → sessions.
    let mut received: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); logs.len()];
    for (ti, t) in logs.iter().enumerate() {
        let d = direct.entry(pop(t.population)).or_default();
        d.unexpected += t.foreign_directs;
        for (si, sess) in t.sessions.iter().enumerate() {
            let mut max_by_sender: HashMap<u32, u32> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for &(sender, dseq) in &sess.direct_rx {
                received[ti].push((sender, dseq, si as u32));
                if !seen.insert((sender, dseq)) {
                    continue; // duplicates are counted below
                }
                let m = max_by_sender.entry(sender).or_insert(dseq);
                if dseq < *m {
                    d.reordered += 1;
                } else {
                    *m = dseq;
                }
            }
        }
        received[ti].sort_unstable();
    }
    for s in logs {
        for (dseq, rec) in s.directs.iter().enumerate() {
            let Some(&ti) = index.get(&rec.target) else {
                continue;
            };
            let t = &logs[ti];
            let d = direct.entry(pop(t.population)).or_default();
            let key = (s.global, dseq as u32);
            let lo = received[ti].partition_point(|&(a, b, _)| (a, b) < key);
            let hits: Vec<u32> = received[ti][lo..]
                .iter()
                .take_while(|&&(a, b, _)| (a, b) == key)
                .map(|&(_, _, si)| si)
                .collect();
            if hits.len() > 1 {
                d.duplicated += hits.len() as u64 - 1;
                ex.note("duplicated", || {
                    format!(
                        "direct d{dseq} of peer #{} reached peer #{} {} times",
                        s.global,
                        t.global,
                        hits.len()
                    )
                });
            }
            let got = !hits.is_empty();
            match rec.status {
                ACKED => {
                    let expected_in = t.sessions.iter().position(|x| {
                        x.welcomed_us < rec.sent_rel_us && x.left_us >= rec.sent_rel_us + grace_us
                    });
                    match expected_in {
                        Some(si) => {
                            d.expected += 1;
                            if hits.contains(&(si as u32)) {
                                d.delivered += 1;
                            } else {
                                d.lost += 1;
                                ex.note("lost", || {
                                    format!(
                                        "direct d{dseq} peer #{} → peer #{} (sent at {:.3} s): never arrived",
                                        s.global,
                                        t.global,
                                        at_s(rec.sent_rel_us)
                                    )
                                });
                                if got {
                                    d.unaccounted += 1;
                                }
                            }
                        }
                        None if got => d.unaccounted += 1,
                        None => {}
                    }
                }
                REJECTED if got => d.unexpected += 1,
                _ if got => d.unaccounted += 1,
                _ => {}
            }
        }
    }
    // Directs from senders that never sent them.
    for (ti, t) in logs.iter().enumerate() {
        let d = direct.entry(pop(t.population)).or_default();
        for &(sender, dseq, _) in &received[ti] {
            let known = index.get(&sender).is_some_and(|&si| {
                (dseq as usize) < logs[si].directs.len()
                    && logs[si].directs[dseq as usize].target == t.global
            });
            if incomplete.contains(&sender) {
                d.unaccounted += 1;
            } else if !known {
                d.unexpected += 1;
                ex.note("unexpected/direct", || {
                    format!(
                        "peer #{} got direct d{dseq} of peer #{sender}, which never sent it to it",
                        t.global
                    )
                });
            }
        }
    }
    Accounts {
        channel,
        direct,
        examples: ex,
    }
}

#[cfg(test)]
mod tests;
