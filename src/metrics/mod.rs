//! Measurements of a load run.
//!
//! Peers record into [`Metrics`]: a few mutex-guarded stripes, each holding one histogram
//! per [`Metric`] and the event [`Counts`]. A peer picks its thread's stripe with
//! `try_lock` and moves on to the next stripe when that one is busy, so recording never
//! waits (a sample that finds every stripe busy is counted as dropped, and the report
//! says so). Histograms exist per stripe, never per peer (one is ~140 KB).
//!
//! The [`collector::Collector`] empties the stripes once a second into per-second
//! [`collector::Interval`]s and run totals. [`hist`] holds the histogram configuration
//! and its serde form; [`sys`] reads CPU time and memory of this process.
//! Imports nothing from the rest of the crate.

pub mod collector;
pub mod hist;
pub mod sys;

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use hist::{Hist, Stats, new_hist};

/// A latency the engine measures, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Publish intended send time → a subscriber's receipt, per delivered copy.
    Fanout,
    /// Publish/send actually sent → its ack.
    Ack,
    /// The whole connect: TCP + TLS + WebSocket upgrade + `welcome`.
    Connect,
    /// TCP connect (SYN → established).
    TcpConnect,
    /// TLS handshake (`wss://` only).
    TlsHandshake,
    /// WebSocket upgrade request → HTTP 101.
    WsUpgrade,
    /// HTTP 101 → `welcome`.
    Welcome,
    /// A join/leave the engine caused → its delta seen by each other member.
    Presence,
    /// `send` intended time → the target's receipt of the `direct`.
    Direct,
    /// How late sends left compared with their intended time.
    ScheduleLag,
    /// A dropped connection (storm or server close) → subscribed again.
    Reconnect,
    /// REST publish intended time → a subscriber's receipt of the `system` message.
    SystemFanout,
    /// A pair's first offer intended → the offerer holds the answer and every candidate
    /// of the other side.
    Negotiation,
    /// A peer's join (connect started) → every member it found negotiated.
    MeshReady,
    /// A track added after join (first renegotiation offer intended) → its last answer.
    Renegotiation,
    /// Signalling latency per kind: intended send → the other member's receipt.
    Offer,
    Answer,
    Candidate,
    TrackMeta,
}

impl Metric {
    pub const ALL: [Metric; 19] = [
        Metric::Fanout,
        Metric::Ack,
        Metric::Connect,
        Metric::TcpConnect,
        Metric::TlsHandshake,
        Metric::WsUpgrade,
        Metric::Welcome,
        Metric::Presence,
        Metric::Direct,
        Metric::ScheduleLag,
        Metric::Reconnect,
        Metric::SystemFanout,
        Metric::Negotiation,
        Metric::MeshReady,
        Metric::Renegotiation,
        Metric::Offer,
        Metric::Answer,
        Metric::Candidate,
        Metric::TrackMeta,
    ];

    /// Name in file names and threshold rules (`fanout.hlog`, `fanout.p99`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Fanout => "fanout",
            Metric::Ack => "ack",
            Metric::Connect => "connect",
            Metric::TcpConnect => "tcp_connect",
            Metric::TlsHandshake => "tls_handshake",
            Metric::WsUpgrade => "ws_upgrade",
            Metric::Welcome => "welcome",
            Metric::Presence => "presence",
            Metric::Direct => "direct",
            Metric::ScheduleLag => "schedule_lag",
            Metric::Reconnect => "reconnect",
            Metric::SystemFanout => "system_fanout",
            Metric::Negotiation => "negotiation",
            Metric::MeshReady => "mesh_ready",
            Metric::Renegotiation => "renegotiation",
            Metric::Offer => "offer",
            Metric::Answer => "answer",
            Metric::Candidate => "candidate",
            Metric::TrackMeta => "track_meta",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Event counts of one stripe, one second, or the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub connect_attempts: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub publishes: u64,
    pub deliveries: u64,
    pub directs_sent: u64,
    pub directs_received: u64,
    pub presence_events: u64,
    pub acks: u64,
    pub errors: u64,
    pub closes: u64,
    pub unexpected_frames: u64,
}

/// One field of [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ConnectAttempts,
    Connects,
    ConnectFailures,
    Disconnects,
    Publishes,
    Deliveries,
    DirectsSent,
    DirectsReceived,
    PresenceEvents,
    Acks,
    Errors,
    Closes,
    UnexpectedFrames,
}

impl Counts {
    pub fn add(&mut self, c: Counter, n: u64) {
        let f = match c {
            Counter::ConnectAttempts => &mut self.connect_attempts,
            Counter::Connects => &mut self.connects,
            Counter::ConnectFailures => &mut self.connect_failures,
            Counter::Disconnects => &mut self.disconnects,
            Counter::Publishes => &mut self.publishes,
            Counter::Deliveries => &mut self.deliveries,
            Counter::DirectsSent => &mut self.directs_sent,
            Counter::DirectsReceived => &mut self.directs_received,
            Counter::PresenceEvents => &mut self.presence_events,
            Counter::Acks => &mut self.acks,
            Counter::Errors => &mut self.errors,
            Counter::Closes => &mut self.closes,
            Counter::UnexpectedFrames => &mut self.unexpected_frames,
        };
        *f += n;
    }

    pub fn merge(&mut self, o: &Counts) {
        self.connect_attempts += o.connect_attempts;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.disconnects += o.disconnects;
        self.publishes += o.publishes;
        self.deliveries += o.deliveries;
        self.directs_sent += o.directs_sent;
        self.directs_received += o.directs_received;
        self.presence_events += o.presence_events;
        self.acks += o.acks;
        self.errors += o.errors;
        self.closes += o.closes;
        self.unexpected_frames += o.unexpected_frames;
    }
}

/// One stripe: a histogram per metric and the counts. A histogram is allocated at its
/// metric's first sample: each is ~140 KB, resident once zeroed, and most runs record a
/// few of the metrics (an idle hold records four; 10 stripes × 19 metrics allocated up
/// front would be ~27 MB before the first peer).
#[derive(Debug, Clone)]
pub struct Stripe {
    hists: [Option<Histogram<u64>>; Metric::ALL.len()],
    pub counts: Counts,
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            hists: std::array::from_fn(|_| None),
            counts: Counts::default(),
        }
    }
}

impl Stripe {
    #[inline]
    pub fn record(&mut self, m: Metric, us: u64) {
        self.hists[m as usize]
            .get_or_insert_with(new_hist)
            .saturating_record(us);
    }
    #[inline]
    pub fn count(&mut self, c: Counter, n: u64) {
        self.counts.add(c, n);
    }
    /// The histogram of `m`; `None` until its first sample.
    pub fn hist(&self, m: Metric) -> Option<&Histogram<u64>> {
        self.hists[m as usize].as_ref().filter(|h| !h.is_empty())
    }
    /// Adds `other` into `self` and empties `other` (a histogram `self` lacks is moved).
    pub fn take_from(&mut self, other: &mut Stripe) {
        for (mine, theirs) in self.hists.iter_mut().zip(other.hists.iter_mut()) {
            let Some(t) = theirs.as_mut().filter(|t| !t.is_empty()) else {
                continue;
            };
            match mine {
                Some(m) => {
                    // One configuration everywhere: adding never fails.
                    m.add(&*t).expect("histograms share one configuration");
                    t.reset();
                }
                None => *mine = theirs.take(),
            }
        }
        self.counts.merge(&other.counts);
        other.counts = Counts::default();
    }
    pub fn reset(&mut self) {
        for h in self.hists.iter_mut().flatten() {
            if !h.is_empty() {
                h.reset();
            }
        }
        self.counts = Counts::default();
    }
}

thread_local! {
    /// The stripe this thread tries first; threads spread over the stripes round-robin.
    static HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);

/// The recording side shared by every peer of a run.
#[derive(Debug)]
pub struct Metrics {
    stripes: Box<[Mutex<Stripe>]>,
    /// Peers with an open, welcomed connection right now.
    pub connected: AtomicI64,
    /// Samples lost because every stripe was busy (reported; should stay 0).
    dropped: AtomicU64,
}

impl Metrics {
    /// `stripes` should be a few times the number of threads that record.
    pub fn new(stripes: usize) -> Metrics {
        Metrics {
            stripes: (0..stripes.max(1))
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            connected: AtomicI64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Runs `f` on a free stripe without waiting; counts a drop when none is free.
    #[inline]
    pub fn with(&self, f: impl FnOnce(&mut Stripe)) {
        let n = self.stripes.len();
        let start = HINT.with(|h| {
            let mut v = h.get();
            if v == usize::MAX {
                // Relaxed: the hint only spreads threads; any value is correct.
                v = NEXT_HINT.fetch_add(1, Ordering::Relaxed);
                h.set(v);
            }
            v
        });
        for k in 0..n {
            let stripe = &self.stripes[(start + k) % n];
            let guard = match stripe.try_lock() {
                Ok(g) => g,
                // A panic while recording leaves plain numbers behind: still usable.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let mut guard = guard;
            f(&mut guard);
            return;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn record(&self, m: Metric, us: u64) {
        self.with(|s| s.record(m, us));
    }

    #[inline]
    pub fn count(&self, c: Counter, n: u64) {
        self.with(|s| s.count(c, n));
    }

    /// Moves everything recorded so far into `into` (the collector's side; may wait
    /// briefly for a stripe, which peers never do).
    pub fn drain_into(&self, into: &mut Stripe) {
        for stripe in self.stripes.iter() {
            let mut g = stripe.lock().unwrap_or_else(|p| p.into_inner());
            into.take_from(&mut g);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_recording_loses_nothing_when_stripes_suffice() {
        let m = Arc::new(Metrics::new(16));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        m.with(|s| {
                            s.record(Metric::Fanout, i % 1000 + t);
                            s.count(Counter::Deliveries, 1);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut total = Stripe::default();
        m.drain_into(&mut total);
        let delivered = total.counts.deliveries + m.dropped();
        assert_eq!(delivered, 200_000);
        assert_eq!(
            total.hist(Metric::Fanout).map_or(0, |h| h.len()),
            total.counts.deliveries
        );
        // drained: a second drain is empty
        let mut again = Stripe::default();
        m.drain_into(&mut again);
        assert_eq!(again.counts, Counts::default());
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
    }
}
