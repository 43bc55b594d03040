//! The capacity search as a pure state machine: grow geometrically from `from` to the
//! first level that robustly fails, then bisect between the last robust pass and the
//! first robust fail until the interval is within the tolerance. A level is robust when
//! a majority of its trials agree; a trial where the generator was the bottleneck makes
//! the search inconclusive (never a server failure).
//!
//! The caller runs what [`Search::next`] asks for and reports each trial with
//! [`Search::record`]; no I/O here, so the logic is tested against simulated servers.

use std::collections::BTreeMap;

/// How one trial of a level went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    /// Every SLO held on the level's steady window.
    Pass,
    /// An SLO broke.
    Fail,
    /// The generator was the bottleneck (schedule lag, harness CPU): says nothing about
    /// the server.
    Inconclusive,
}

/// The search's settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub from: f64,
    /// Largest level to try; `None` = unbounded (growth stops at the first fail).
    pub to: Option<f64>,
    /// Stop when (high − low) / low ≤ this, e.g. 0.05.
    pub tolerance: f64,
    /// Trials per level; the majority decides.
    pub trials: u32,
    /// Growth factor between levels in the first phase.
    pub growth: f64,
    /// Levels are whole numbers (peers).
    pub whole: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Run one (more) trial at this level.
    Run(f64),
    Done(Outcome),
}

/// The result: capacity lies in `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The highest level that robustly passed; `None` when even `from` failed.
    pub low: Option<f64>,
    /// The lowest level that robustly failed; `None` when `to` still passed.
    pub high: Option<f64>,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Bracketed within the tolerance.
    Found,
    /// Even the lowest level failed: capacity is below `from`.
    BelowRange,
    /// The highest level (`to`) passed: capacity is at least `to`.
    AboveRange,
    /// A trial was generator-bound: no verdict about the server at that level.
    Inconclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Grow,
    Bisect,
}

/// The search state.
#[derive(Debug, Clone)]
pub struct Search {
    cfg: Config,
    phase: Phase,
    current: f64,
    low: Option<f64>,
    high: Option<f64>,
    /// Trials so far per level (keyed by the level's bits: levels are exact values).
    trials: BTreeMap<u64, Vec<Trial>>,
    done: Option<Outcome>,
}

impl Search {
    pub fn new(cfg: Config) -> Search {
        let from = round(cfg.from, cfg.whole).max(if cfg.whole { 1.0 } else { f64::MIN_POSITIVE });
        Search {
            cfg: Config {
                trials: cfg.trials.max(1),
                growth: cfg.growth.max(1.01),
                ..cfg
            },
            phase: Phase::Grow,
            current: from,
            low: None,
            high: None,
            trials: BTreeMap::new(),
            done: None,
        }
    }

    /// The next trial to run, or the result.
    pub fn next(&self) -> Step {
        match self.done {
            Some(o) => Step::Done(o),
            None => Step::Run(self.current),
        }
    }

    /// Trials recorded for `level`.
    pub fn trials_of(&self, level: f64) -> &[Trial] {
        self.trials
            .get(&level.to_bits())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Records a trial of the level [`next`](Self::next) asked for.
    pub fn record(&mut self, level: f64, trial: Trial) {
        if self.done.is_some() || level != self.current {
            return;
        }
        let ts = self.trials.entry(level.to_bits()).or_default();
        ts.push(trial);
        if trial == Trial::Inconclusive {
            self.finish(OutcomeKind::Inconclusive);
            return;
        }
        let majority = self.cfg.trials / 2 + 1;
        let passes = ts.iter().filter(|t| **t == Trial::Pass).count() as u32;
        let fails = ts.iter().filter(|t| **t == Trial::Fail).count() as u32;
        let robust = if passes >= majority {
            Trial::Pass
        } else if fails >= majority {
            Trial::Fail
        } else {
            return; // undecided: run another trial of this level
        };
        match robust {
            Trial::Pass => self.low = Some(level),
            _ => self.high = Some(level),
        }
        self.advance();
    }

    fn advance(&mut self) {
        match (self.phase, self.low, self.high) {
            (_, None, Some(_)) => self.finish(OutcomeKind::BelowRange),
            (Phase::Grow, Some(lo), None) => match self.cfg.to {
                Some(to) if lo >= to => self.finish(OutcomeKind::AboveRange),
                to => {
                    let mut next =
                        round(lo * self.cfg.growth, self.cfg.whole).max(lo + step(self.cfg.whole));
                    if let Some(to) = to {
                        next = next.min(to);
                    }
                    self.current = next;
                }
            },
            (_, Some(lo), Some(hi)) => {
                self.phase = Phase::Bisect;
                let mid = round((lo + hi) / 2.0, self.cfg.whole);
                if (hi - lo) / lo <= self.cfg.tolerance || mid <= lo || mid >= hi {
                    self.finish(OutcomeKind::Found);
                } else {
                    self.current = mid;
                }
            }
            (_, None, None) => {}
            (Phase::Bisect, Some(_), None) => unreachable!("bisection always has a fail above"),
        }
    }

    fn finish(&mut self, kind: OutcomeKind) {
        self.done = Some(Outcome {
            low: self.low,
            high: self.high,
            kind,
        });
    }
}

fn round(x: f64, whole: bool) -> f64 {
    if whole { x.round().max(1.0) } else { x }
}

fn step(whole: bool) -> f64 {
    if whole { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a server that passes below `capacity`, with a noisy band
    /// around it where a trial fails with probability rising from 0 to 1.
    fn against(capacity: f64, noise: f64, cfg: Config, seed: u64) -> (Outcome, usize) {
        let mut s = Search::new(cfg);
        let mut x = seed | 1;
        let mut runs = 0;
        loop {
            match s.next() {
                Step::Done(o) => return (o, runs),
                Step::Run(level) => {
                    runs += 1;
                    assert!(runs < 1000, "the search does not end");
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = (x % 10_000) as f64 / 10_000.0;
                    let p_fail = ((level - capacity * (1.0 - noise)) / (2.0 * capacity * noise))
                        .clamp(0.0, 1.0);
                    let t = if u < p_fail { Trial::Fail } else { Trial::Pass };
                    s.record(level, t);
                }
            }
        }
    }

    fn cfg(from: f64) -> Config {
        Config {
            from,
            to: None,
            tolerance: 0.05,
            trials: 3,
            growth: 2.0,
            whole: false,
        }
    }

    #[test]
    fn brackets_a_sharp_capacity_within_the_tolerance() {
        for capacity in [5_000.0, 20_000.0, 40_000.0] {
            let (o, _) = against(capacity, 0.0, cfg(1_000.0), 7);
            assert_eq!(o.kind, OutcomeKind::Found);
            let (lo, hi) = (o.low.unwrap(), o.high.unwrap());
            assert!(lo <= capacity && capacity <= hi, "{capacity}: [{lo}, {hi}]");
            assert!((hi - lo) / lo <= 0.05, "[{lo}, {hi}]");
        }
    }

    #[test]
    fn a_noisy_boundary_still_brackets_it_with_majorities() {
        for seed in 1..20 {
            let (o, runs) = against(20_000.0, 0.02, cfg(1_000.0), seed);
            let (lo, hi) = (o.low.unwrap(), o.high.unwrap());
            // Fails happen only above 19,600 and passes only below 20,400 (the band),
            // and the bracket is at most 5 % wide.
            assert!(
                hi >= 19_600.0 && lo <= 20_400.0,
                "seed {seed}: [{lo}, {hi}]"
            );
            assert!((hi - lo) / lo <= 0.05, "seed {seed}: [{lo}, {hi}]");
            assert!(runs < 60, "{runs}");
        }
    }

    #[test]
    fn whole_levels_for_peers() {
        let mut c = cfg(10.0);
        c.whole = true;
        let (o, _) = against(737.0, 0.0, c, 3);
        let (lo, hi) = (o.low.unwrap(), o.high.unwrap());
        assert_eq!(lo.fract(), 0.0);
        assert!(
            lo <= 737.0 && 737.0 <= hi && (hi - lo) / lo <= 0.05,
            "[{lo}, {hi}]"
        );
    }

    #[test]
    fn ranges_and_inconclusive_trials_end_the_search() {
        let (o, _) = against(100.0, 0.0, cfg(1_000.0), 1);
        assert_eq!(o.kind, OutcomeKind::BelowRange);
        assert_eq!((o.low, o.high), (None, Some(1_000.0)));

        let mut c = cfg(1_000.0);
        c.to = Some(3_000.0);
        let (o, _) = against(1e9, 0.0, c, 1);
        assert_eq!(o.kind, OutcomeKind::AboveRange);
        assert_eq!(o.low, Some(3_000.0));

        let mut s = Search::new(cfg(1_000.0));
        s.record(1_000.0, Trial::Pass);
        s.record(1_000.0, Trial::Pass);
        assert_eq!(s.next(), Step::Run(2_000.0));
        s.record(2_000.0, Trial::Inconclusive);
        match s.next() {
            Step::Done(o) => {
                assert_eq!(o.kind, OutcomeKind::Inconclusive);
                assert_eq!(o.low, Some(1_000.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_split_level_runs_its_deciding_trial() {
        let mut s = Search::new(cfg(1_000.0));
        s.record(1_000.0, Trial::Pass);
        s.record(1_000.0, Trial::Fail);
        assert_eq!(s.next(), Step::Run(1_000.0));
        assert_eq!(s.trials_of(1_000.0).len(), 2);
        s.record(1_000.0, Trial::Pass);
        assert_eq!(s.next(), Step::Run(2_000.0));
    }
}
