//! The collector: once a second it empties the recording stripes into an [`Interval`]
//! (counts, gauges and each metric's histogram of that second, kept V2-encoded so a long
//! run stays small) and adds them to the run totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Counts, Hist, Metric, Metrics, Stats, Stripe, sys};

/// One second of a run (`second` counts from the start of the run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub second: u32,
    /// Peers connected (welcomed) at the end of the second.
    pub connected: i64,
    pub counts: Counts,
    /// CPU the harness used in this second, in percent of one core.
    pub harness_cpu_percent: f64,
    /// How busy the whole machine was in this second (all processes), percent of all cores.
    #[serde(default)]
    pub machine_cpu_percent: f64,
    /// Histogram of each metric with samples in this second, base64 V2.
    #[serde(default)]
    pub hists: BTreeMap<String, String>,
}

impl Interval {
    pub fn hist(&self, m: Metric) -> Option<Hist> {
        self.hists
            .get(m.name())
            .and_then(|t| Hist::from_base64(t).ok())
    }

    pub fn stats(&self, m: Metric) -> Stats {
        self.hist(m).map(|h| h.stats()).unwrap_or_default()
    }

    /// Merges another worker's same second into this one.
    pub fn merge(&mut self, o: &Interval) {
        self.connected += o.connected;
        self.counts.merge(&o.counts);
        self.harness_cpu_percent += o.harness_cpu_percent;
        // One machine: every worker saw the same machine; keep the highest reading.
        self.machine_cpu_percent = self.machine_cpu_percent.max(o.machine_cpu_percent);
        for (name, text) in &o.hists {
            let merged = match (self.hists.get(name), Hist::from_base64(text)) {
                (Some(mine), Ok(theirs)) => match Hist::from_base64(mine) {
                    Ok(mut h) => {
                        h.add(&theirs.0);
                        h.to_base64()
                    }
                    Err(_) => text.clone(),
                },
                _ => text.clone(),
            };
            self.hists.insert(name.clone(), merged);
        }
    }
}

/// What the progress view shows about the last second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latest {
    pub second: u32,
    pub counts: Counts,
    pub fanout: Stats,
    pub ack: Stats,
    /// Calls: mesh-ready samples of the second.
    pub mesh_ready: Stats,
    pub connected: i64,
    pub harness_cpu_percent: f64,
}

/// Owns the totals; the engine calls [`Collector::tick`] once a second.
pub struct Collector {
    metrics: Arc<Metrics>,
    scratch: Stripe,
    pub totals: Stripe,
    pub intervals: Vec<Interval>,
    pub latest: Latest,
    last_cpu: Duration,
    last_tick: std::time::Instant,
    last_machine: Option<(u64, u64)>,
}

impl Collector {
    pub fn new(metrics: Arc<Metrics>) -> Collector {
        Collector {
            metrics,
            scratch: Stripe::default(),
            totals: Stripe::default(),
            intervals: Vec::new(),
            latest: Latest::default(),
            last_cpu: sys::harness_cpu(),
            last_tick: std::time::Instant::now(),
            last_machine: sys::machine_ticks(),
        }
    }

    /// Closes second `second`: drains the stripes, records the interval, adds to totals.
    pub fn tick(&mut self, second: u32) -> &Interval {
        self.metrics.drain_into(&mut self.scratch);
        let cpu = sys::harness_cpu();
        let wall = self.last_tick.elapsed().as_secs_f64().max(1e-3);
        let cpu_percent =
            (cpu.saturating_sub(self.last_cpu).as_secs_f64() / wall * 100.0 * 10.0).round() / 10.0;
        self.last_cpu = cpu;
        self.last_tick = std::time::Instant::now();
        let machine = sys::machine_ticks();
        let machine_cpu_percent = match (self.last_machine, machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                ((b1 - b0) as f64 / (t1 - t0) as f64 * 1000.0).round() / 10.0
            }
            _ => 0.0,
        };
        self.last_machine = machine;
        let connected = self.metrics.connected.load(Ordering::Relaxed);
        let mut hists = BTreeMap::new();
        for m in Metric::ALL {
            if let Some(h) = self.scratch.hist(m) {
                hists.insert(m.name().to_owned(), Hist(h.clone()).to_base64());
            }
        }
        self.latest = Latest {
            second,
            counts: self.scratch.counts,
            fanout: self.stats_of(Metric::Fanout),
            ack: self.stats_of(Metric::Ack),
            mesh_ready: self.stats_of(Metric::MeshReady),
            connected,
            harness_cpu_percent: cpu_percent,
        };
        self.intervals.push(Interval {
            second,
            connected,
            counts: self.scratch.counts,
            harness_cpu_percent: cpu_percent,
            machine_cpu_percent,
            hists,
        });
        self.totals.take_from(&mut self.scratch);
        // `take_from` emptied the scratch stripe for the next second.
        self.intervals.last().expect("just pushed")
    }

    pub fn dropped(&self) -> u64 {
        self.metrics.dropped()
    }

    /// Statistics of the second being closed.
    fn stats_of(&self, m: Metric) -> Stats {
        self.scratch.hist(m).map(Stats::of).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counter;

    #[test]
    fn ticks_split_samples_by_second_and_totals_add_up() {
        let m = Arc::new(Metrics::new(4));
        let mut c = Collector::new(m.clone());
        m.record(Metric::Fanout, 100);
        m.count(Counter::Deliveries, 1);
        c.tick(0);
        m.record(Metric::Fanout, 300);
        m.record(Metric::Fanout, 500);
        m.count(Counter::Deliveries, 2);
        c.tick(1);
        assert_eq!(c.intervals.len(), 2);
        assert_eq!(c.intervals[0].counts.deliveries, 1);
        assert_eq!(c.intervals[1].stats(Metric::Fanout).count, 2);
        assert_eq!(c.totals.hist(Metric::Fanout).map_or(0, |h| h.len()), 3);
        assert_eq!(c.totals.counts.deliveries, 3);
        assert_eq!(c.latest.fanout.count, 2);

        let mut merged = c.intervals[1].clone();
        merged.merge(&c.intervals[1]);
        assert_eq!(merged.stats(Metric::Fanout).count, 4);
        assert_eq!(merged.counts.deliveries, 4);
    }
}
