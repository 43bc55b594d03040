//! Test-only truth switches (`Inject`): perturb channel `message` deliveries in known,
//! exactly counted ways, so the load engine's loss / duplicate / reorder detection can be
//! checked against the truth. They apply per recipient copy, from one seeded RNG.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which perturbations to apply to channel `message` copies, and with `directs` to
/// `direct` copies too (never to other frames).
#[derive(Debug, Clone, Default)]
pub struct Inject {
    /// Delay every copy by this many milliseconds (order preserved).
    pub fanout_delay_ms: u64,
    /// Probability of dropping a copy.
    pub drop_rate: f64,
    /// Probability of sending a copy twice.
    pub dup_rate: f64,
    /// Probability of swapping a copy with the next copy from the same origin to the same
    /// recipient (so per-publisher sequence checks can see it).
    pub reorder_rate: f64,
    /// Seed of the RNG every decision comes from.
    pub seed: u64,
    /// A known capacity: every `message` and `direct` copy passes one shaper at this many
    /// copies per second (0 = off; bursts of 100 ms worth pass at once). Below it latency
    /// stays flat; above it the backlog, and latency with it, grows without bound. The
    /// truth `stampede capacity` is tested against.
    pub capacity_per_s: u64,
    /// Apply the delay, drops, duplicates and swaps to `direct` copies too (swaps pair a
    /// direct with the sender connection's next direct to the same recipient).
    pub directs: bool,
}

impl Inject {
    /// Whether any perturbation is switched on.
    pub fn is_active(&self) -> bool {
        self.capacity_per_s > 0
            || self.fanout_delay_ms > 0
            || self.drop_rate > 0.0
            || self.dup_rate > 0.0
            || self.reorder_rate > 0.0
    }

    /// Checks the rates are probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("drop", self.drop_rate),
            ("dup", self.dup_rate),
            ("reorder", self.reorder_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("inject {name} rate {rate} must be between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// Bursts the injected capacity lets through at once (100 ms worth of it). With 25 ms, a
/// 5,000/s capacity fed batches of 19 copies queued past a 50 ms p99 at 94–97 % of N (the
/// random backlog of a nearly full queue), so an SLO search found its knee below N; 100 ms
/// absorbs that backlog, and any load above N still grows without bound.
const BURST: Duration = Duration::from_millis(100);

/// A rate shaper: copies leave `period_ns` apart on average.
#[derive(Debug)]
struct Pace {
    base: Instant,
    period_ns: u64,
    /// The theoretical arrival time of the next copy, ns after `base`.
    next_ns: AtomicU64,
}

/// Exact counts of what [`Inject`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedCounts {
    /// Copies never delivered.
    pub dropped: u64,
    /// Copies delivered twice (each counts once).
    pub duplicated: u64,
    /// Copies delivered after the copy that followed them (each swap counts once).
    pub reordered: u64,
}

/// What to do with one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Deliver { dup: bool, hold: bool },
}

/// The live injector: configuration, RNG and counters.
#[derive(Debug)]
pub struct Injector {
    pub cfg: Inject,
    capacity: Option<Pace>,
    rng: Mutex<StdRng>,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

impl Injector {
    pub fn new(cfg: Inject) -> Injector {
        Injector {
            capacity: (cfg.capacity_per_s > 0).then(|| Pace {
                base: Instant::now(),
                period_ns: 1_000_000_000 / cfg.capacity_per_s.min(1_000_000_000),
                next_ns: AtomicU64::new(0),
            }),
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
            cfg,
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
        }
    }

    /// Decides the fate of one copy. `can_hold` is false when the recipient already holds
    /// a copy back for a swap. Drops and duplicates are counted here; swaps are counted by
    /// [`Injector::count_swap`] when they actually happen.
    pub fn decide(&self, can_hold: bool) -> Decision {
        let (drop, hold, dup) = {
            // A poisoned RNG lock only means another thread panicked mid-draw; the RNG
            // state is still a valid RNG state.
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let drop = self.cfg.drop_rate > 0.0 && rng.random::<f64>() < self.cfg.drop_rate;
            if drop {
                (true, false, false)
            } else {
                let hold =
                    self.cfg.reorder_rate > 0.0 && rng.random::<f64>() < self.cfg.reorder_rate;
                let dup = self.cfg.dup_rate > 0.0 && rng.random::<f64>() < self.cfg.dup_rate;
                (false, hold && can_hold, dup && !(hold && can_hold))
            }
        };
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Decision::Drop;
        }
        if dup {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        Decision::Deliver { dup, hold }
    }

    /// When a copy queued now may leave under the injected delay (`None`: no delay).
    pub fn delayed_until(&self) -> Option<Instant> {
        (self.cfg.fanout_delay_ms > 0)
            .then(|| Instant::now().checked_add(Duration::from_millis(self.cfg.fanout_delay_ms)))
            .flatten()
    }

    /// When the next copy may leave under the capacity (`None`: now, or no capacity).
    /// A shaper by the generic cell rate algorithm: copies leave at the capacity's pace,
    /// and bursts of up to [`BURST`] worth of it pass at once, so latency stays flat below
    /// the capacity (a publish into a room is a burst of copies) and grows without bound
    /// above it.
    pub fn capacity_due(&self) -> Option<Instant> {
        let p = self.capacity.as_ref()?;
        let now = p.base.elapsed().as_nanos() as u64;
        let burst = BURST.as_nanos() as u64;
        let mut cur = p.next_ns.load(Ordering::Relaxed);
        loop {
            // The theoretical arrival time of this copy, and of the next one.
            let tat = cur.max(now);
            // Relaxed: the counter is the only shared state; a lost race retries.
            match p.next_ns.compare_exchange_weak(
                cur,
                tat + p.period_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let due = tat.saturating_sub(burst);
                    return (due > now).then(|| p.base + Duration::from_nanos(due));
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Forgets the capacity's backlog (no connection is left to hold queued copies).
    pub fn capacity_idle(&self) {
        if let Some(p) = &self.capacity {
            p.next_ns.store(0, Ordering::Relaxed);
        }
    }

    /// Records one performed swap.
    pub fn count_swap(&self) {
        self.reordered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> InjectedCounts {
        // Relaxed: each counter is read on its own; callers read after deliveries settled.
        InjectedCounts {
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_decisions() {
        let inj = Injector::new(Inject {
            drop_rate: 0.2,
            dup_rate: 0.1,
            reorder_rate: 0.1,
            seed: 7,
            ..Inject::default()
        });
        let (mut drops, mut dups, mut holds) = (0, 0, 0);
        for i in 0..10_000 {
            match inj.decide(i % 2 == 0) {
                Decision::Drop => drops += 1,
                Decision::Deliver { dup, hold } => {
                    dups += dup as u64;
                    holds += hold as u64;
                    assert!(!(dup && hold));
                }
            }
        }
        let c = inj.counts();
        assert_eq!((c.dropped, c.duplicated, c.reordered), (drops, dups, 0));
        assert!((1500..2500).contains(&drops), "{drops}");
        assert!(holds > 100);
        assert!(
            Inject {
                drop_rate: 1.5,
                ..Inject::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn capacity_passes_bursts_then_paces() {
        let inj = Injector::new(Inject {
            capacity_per_s: 1_000,
            ..Inject::default()
        });
        // 100 ms worth at 1,000/s: the first ~100 copies of a burst leave at once.
        let immediate = (0..100).filter(|_| inj.capacity_due().is_none()).count();
        assert!(immediate >= 99, "{immediate}");
        // Then 1 ms apart: the 200th copy of the burst leaves about 100 ms later.
        let mut last = None;
        for _ in 100..200 {
            last = inj.capacity_due();
        }
        let wait = last.unwrap() - Instant::now();
        assert!(
            wait > Duration::from_millis(85) && wait < Duration::from_millis(105),
            "{wait:?}"
        );
        assert!(Injector::new(Inject::default()).capacity_due().is_none());
    }
}
