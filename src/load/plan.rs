//! Schedule math, pure and deterministic: who is in which room, which worker and which
//! target hosts a room, when each peer connects, when each publish is due (constant or
//! Poisson arrivals), how long sessions last, how big payloads are, reconnect backoff and
//! storm selection. Everything derives from the scenario seed, so every worker process
//! computes the same global layout and takes its own shard of it.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::scenario::{Arrival, Assign, Backoff, DurDist, Scenario, SizeDist};

/// Mixes `x` (splitmix64): a cheap, well-spread hash for seeded per-peer choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from (seed, a, b).
pub fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let h = mix(seed ^ mix(a ^ mix(b.wrapping_add(0x5851_F42D_4C95_7F2D))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The seeded random stream of one peer.
pub fn peer_rng(seed: u64, global: u32) -> SmallRng {
    SmallRng::seed_from_u64(mix(seed ^ mix(global as u64 + 1)))
}

/// Which part of the run this process plays: `index` of `count`, 0-based (`--shard 2/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/N` with 0 <= i < N (the index a Kubernetes Indexed Job hands out).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard \"{text}\": use i/N with 0 <= i < N, e.g. 0/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One peer of the global layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerPlan {
    /// Index over all peers of the run; the peer id is derived from it.
    pub global: u32,
    pub population: u16,
    /// Position inside its population.
    pub pos: u32,
    /// Global channel id of its room (index into [`Layout::channels`]).
    pub channel: Option<u32>,
    /// Publishes to its room.
    pub publisher: bool,
    /// Connect time, µs after the start of the run (the ramp).
    pub start_us: u64,
    /// The worker that runs it and the target it connects to.
    pub shard: u32,
    pub target: u32,
}

/// The whole run's peers and rooms, identical in every worker.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Distinct channels in order of first appearance; a room is pinned to one shard and
    /// one target by its id.
    pub channels: Vec<String>,
    pub peers: Vec<PeerPlan>,
    /// Per population: publishing peers over the whole run (for aggregate rates).
    pub publishers: Vec<u32>,
}

impl Layout {
    pub fn build(s: &Scenario, shards: u32, targets: u32) -> Layout {
        let shards = shards.max(1);
        let targets = targets.max(1);
        let mut channels: Vec<String> = Vec::new();
        let mut channel_ids = std::collections::HashMap::<String, u32>::new();
        let mut peers = Vec::with_capacity(s.peers() as usize);
        let mut publishers = Vec::with_capacity(s.populations.len());
        let mut global = 0u32;
        for (pi, pop) in s.populations.iter().enumerate() {
            let n = pop.peers;
            let rooms = pop.room_count();
            // Room of each position.
            let room_of: Vec<Option<u32>> = if rooms == 0 {
                vec![None; n as usize]
            } else {
                match pop.assign {
                    Assign::Block => (0..n)
                        .map(|i| Some((i as u64 * rooms as u64 / n as u64) as u32))
                        .collect(),
                    Assign::RoundRobin => (0..n).map(|i| Some(i % rooms)).collect(),
                    Assign::Random => {
                        let mut order: Vec<u32> = (0..n).collect();
                        let mut rng = SmallRng::seed_from_u64(mix(s.seed ^ (pi as u64 + 99)));
                        for i in (1..order.len()).rev() {
                            let j = rng.random_range(0..=i);
                            order.swap(i, j);
                        }
                        let mut room_of = vec![None; n as usize];
                        for (slot, &pos) in order.iter().enumerate() {
                            room_of[pos as usize] =
                                Some((slot as u64 * rooms as u64 / n as u64) as u32);
                        }
                        room_of
                    }
                }
            };
            // Channel ids, in first-appearance order.
            let mut room_channel = Vec::with_capacity(rooms as usize);
            for r in 0..rooms {
                let name = pop.channel_name(r);
                let id = *channel_ids.entry(name.clone()).or_insert_with(|| {
                    channels.push(name);
                    channels.len() as u32 - 1
                });
                room_channel.push(id);
            }
            // Publishers: the first k members of each room (in position order).
            let mut is_pub = vec![false; n as usize];
            if let Some(pb) = &pop.publish {
                let mut members: Vec<Vec<u32>> = vec![Vec::new(); rooms as usize];
                for (pos, r) in room_of.iter().enumerate() {
                    if let Some(r) = r {
                        members[*r as usize].push(pos as u32);
                    }
                }
                for m in &members {
                    let k = match (pb.per_room, pb.publishers) {
                        (Some(k), _) => k as usize,
                        (None, Some(f)) => ((m.len() as f64) * f).ceil() as usize,
                        (None, None) => m.len(),
                    };
                    for &pos in m.iter().take(k) {
                        is_pub[pos as usize] = true;
                    }
                }
            }
            publishers.push(is_pub.iter().filter(|p| **p).count() as u32);
            let ramp_us = pop.ramp.as_us();
            for pos in 0..n {
                let channel = room_of[pos as usize].map(|r| room_channel[r as usize]);
                let pin = channel.unwrap_or(global);
                peers.push(PeerPlan {
                    global,
                    population: pi as u16,
                    pos,
                    channel,
                    publisher: is_pub[pos as usize],
                    start_us: ramp_us * pos as u64 / n.max(1) as u64,
                    shard: pin % shards,
                    target: pin % targets,
                });
                global += 1;
            }
        }
        Layout {
            channels,
            peers,
            publishers,
        }
    }

    /// Publish rate of one publishing peer of population `pop`, per second.
    pub fn publish_rate(&self, s: &Scenario, pop: usize) -> f64 {
        let Some(pb) = &s.populations[pop].publish else {
            return 0.0;
        };
        match (pb.rate, pb.aggregate_rate) {
            (Some(r), _) => r,
            (None, Some(total)) => total / self.publishers[pop].max(1) as f64,
            (None, None) => 0.0,
        }
    }
}

/// Intended send times of one peer's periodic action (publishes, directs, oversized).
/// Open model: times never depend on responses; a session that starts late resumes at
/// the first time after its start instead of catching up.
#[derive(Debug, Clone, Copy)]
pub struct Ticker {
    kind: Arrival,
    period_us: f64,
    /// Absolute µs at which the schedule begins (run start + `start`), plus the phase.
    origin_us: f64,
    k: u64,
    next_us: u64,
}

impl Ticker {
    /// `phase` in [0, 1) spreads constant-rate peers over one period.
    pub fn new(kind: Arrival, rate_per_s: f64, begin_us: u64, phase: f64) -> Ticker {
        let period_us = 1e6 / rate_per_s.max(1e-9);
        Ticker {
            kind,
            period_us,
            origin_us: begin_us as f64 + phase * period_us,
            k: 0,
            next_us: u64::MAX,
        }
    }

    /// Positions the schedule at the first intended time after `now_us`.
    pub fn resume(&mut self, now_us: u64, rng: &mut impl Rng) {
        match self.kind {
            Arrival::Constant => {
                let since = now_us as f64 - self.origin_us;
                self.k = if since < 0.0 {
                    0
                } else {
                    (since / self.period_us).floor() as u64 + 1
                };
                self.next_us = (self.origin_us + self.k as f64 * self.period_us) as u64;
            }
            Arrival::Poisson => {
                let from = (now_us as f64).max(self.origin_us);
                self.next_us = (from + exp_sample(self.period_us, rng)) as u64;
            }
        }
    }

    /// The next intended time (µs, absolute).
    pub fn next(&self) -> u64 {
        self.next_us
    }

    /// Moves past the current intended time.
    pub fn advance(&mut self, rng: &mut impl Rng) {
        match self.kind {
            Arrival::Constant => {
                self.k += 1;
                self.next_us = (self.origin_us + self.k as f64 * self.period_us) as u64;
            }
            Arrival::Poisson => {
                self.next_us += exp_sample(self.period_us, rng).max(1.0) as u64;
            }
        }
    }

    /// Parks the ticker (no session).
    pub fn park(&mut self) {
        self.next_us = u64::MAX;
    }
}

/// An exponential draw with the given mean.
pub fn exp_sample(mean: f64, rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

/// A draw of a duration distribution, in µs.
pub fn sample_duration_us(d: &DurDist, rng: &mut impl Rng) -> u64 {
    match *d {
        DurDist::Constant(v) => v.as_us(),
        DurDist::Uniform { min, max } => {
            let (a, b) = (min.as_us(), max.as_us());
            if a >= b { a } else { rng.random_range(a..=b) }
        }
        DurDist::Exponential { mean, max } => {
            let cap = max
                .map(|m| m.as_us())
                .unwrap_or(mean.as_us().saturating_mul(10));
            (exp_sample(mean.as_us() as f64, rng) as u64).min(cap)
        }
    }
}

/// A draw of a size distribution, in bytes.
pub fn sample_size(d: &SizeDist, rng: &mut impl Rng) -> usize {
    match *d {
        SizeDist::Constant(v) => v as usize,
        SizeDist::Uniform { min, max } => {
            if min >= max {
                min as usize
            } else {
                rng.random_range(min..=max) as usize
            }
        }
        SizeDist::Exponential { mean, max } => {
            let cap = max.unwrap_or(mean.saturating_mul(10)) as f64;
            exp_sample(mean as f64, rng).min(cap) as usize
        }
    }
}

/// Delay before reconnect attempt `attempt` (1-based), µs (CLI-7).
pub fn backoff_us(b: &Backoff, attempt: u32, rng: &mut impl Rng) -> u64 {
    let base = b.initial.as_us() as f64 * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = base.min(b.max.as_us() as f64);
    let j = if b.jitter > 0.0 {
        1.0 + b.jitter * (2.0 * rng.random::<f64>() - 1.0)
    } else {
        1.0
    };
    (capped * j).max(0.0) as u64
}

/// Whether `global` is among the peers storm `storm` drops (a seeded coin with
/// probability `fraction`).
pub fn storm_hits(seed: u64, global: u32, storm: usize, fraction: f64) -> bool {
    unit(seed ^ 0x5707_2A11, global as u64, storm as u64) < fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::scenario::{Dur, Source, parse};

    fn scenario(text: &str) -> Scenario {
        parse(&Source {
            origin: "t".into(),
            text: text.into(),
        })
        .unwrap()
    }

    const TWO_POPS: &str = r#"
name = "t"
duration = "10s"
[[population]]
name = "listeners"
peers = 100
rooms = 4
channel = "chat/{room}"
ramp = "2s"
[[population]]
name = "talkers"
peers = 8
rooms = 4
channel = "chat/{room}"
assign = "round_robin"
[population.publish]
aggregate_rate = 80.0
"#;

    #[test]
    fn shared_channels_get_one_id_and_one_shard() {
        let s = scenario(TWO_POPS);
        let l = Layout::build(&s, 3, 2);
        assert_eq!(l.channels, vec!["chat/0", "chat/1", "chat/2", "chat/3"]);
        for p in &l.peers {
            let c = p.channel.unwrap();
            assert_eq!(p.shard, c % 3);
            assert_eq!(p.target, c % 2);
        }
        // block assignment: 25 per room
        let in_room0 = l.peers[..100]
            .iter()
            .filter(|p| p.channel == Some(0))
            .count();
        assert_eq!(in_room0, 25);
        // ramp: evenly spread over 2 s
        assert_eq!(l.peers[0].start_us, 0);
        assert_eq!(l.peers[50].start_us, 1_000_000);
        // talkers all publish; aggregate 80/s over 8 publishers = 10/s each
        assert_eq!(l.publishers, vec![0, 8]);
        assert!((l.publish_rate(&s, 1) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn per_room_and_fraction_pick_publishers() {
        let text = r#"
name = "t"
duration = "10s"
[[population]]
name = "m"
peers = 40
room_size = 10
[population.publish]
rate = 1.0
per_room = 1
"#;
        let l = Layout::build(&scenario(text), 1, 1);
        assert_eq!(l.publishers, vec![4]);
        let text = text.replace("per_room = 1", "publishers = 0.25");
        let l = Layout::build(&scenario(&text), 1, 1);
        assert_eq!(l.publishers, vec![12]); // ceil(10 × 0.25) = 3 per room
    }

    #[test]
    fn random_assignment_is_balanced_and_seeded() {
        let text = TWO_POPS.replace("ramp = \"2s\"", "assign = \"random\"");
        let a = Layout::build(&scenario(&text), 1, 1);
        let b = Layout::build(&scenario(&text), 1, 1);
        assert_eq!(a.peers, b.peers);
        for room in 0..4 {
            let n = a.peers[..100]
                .iter()
                .filter(|p| p.channel == Some(room))
                .count();
            assert_eq!(n, 25);
        }
    }

    #[test]
    fn constant_ticker_keeps_its_grid_and_resumes_after_gaps() {
        let mut rng = peer_rng(1, 0);
        let mut t = Ticker::new(Arrival::Constant, 10.0, 1_000_000, 0.5);
        t.resume(0, &mut rng);
        assert_eq!(t.next(), 1_050_000);
        t.advance(&mut rng);
        assert_eq!(t.next(), 1_150_000);
        // a session starting at 2.0 s resumes at the next grid point, not catching up
        t.resume(2_000_000, &mut rng);
        assert_eq!(t.next(), 2_050_000);
        t.resume(2_050_000, &mut rng);
        assert_eq!(t.next(), 2_150_000);
    }

    #[test]
    fn poisson_ticker_has_the_right_mean_rate() {
        let mut rng = peer_rng(7, 3);
        let mut t = Ticker::new(Arrival::Poisson, 100.0, 0, 0.0);
        t.resume(0, &mut rng);
        let mut n = 0;
        while t.next() < 100_000_000 {
            n += 1;
            t.advance(&mut rng);
        }
        // 100 s at 100/s: 10,000 ± a few %
        assert!((9_600..10_400).contains(&n), "{n}");
    }

    #[test]
    fn distributions_sample_in_range() {
        let mut rng = peer_rng(3, 9);
        let u = DurDist::Uniform {
            min: Dur::secs(1),
            max: Dur::secs(3),
        };
        let e = DurDist::Exponential {
            mean: Dur::secs(2),
            max: None,
        };
        let mut sum = 0u64;
        for _ in 0..20_000 {
            let v = sample_duration_us(&u, &mut rng);
            assert!((1_000_000..=3_000_000).contains(&v));
            let x = sample_duration_us(&e, &mut rng);
            assert!(x <= 20_000_000);
            sum += x;
        }
        let mean = sum as f64 / 20_000.0;
        assert!((1.9e6..2.1e6).contains(&mean), "{mean}");
        let s = SizeDist::Uniform { min: 10, max: 20 };
        for _ in 0..1000 {
            assert!((10..=20).contains(&sample_size(&s, &mut rng)));
        }
        assert_eq!(sample_size(&SizeDist::Constant(77), &mut rng), 77);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let mut rng = peer_rng(1, 1);
        let b = Backoff {
            initial: Dur::millis(500),
            max: Dur::secs(4),
            jitter: 0.0,
        };
        let v: Vec<u64> = (1..=6).map(|a| backoff_us(&b, a, &mut rng)).collect();
        assert_eq!(
            v,
            vec![
                500_000, 1_000_000, 2_000_000, 4_000_000, 4_000_000, 4_000_000
            ]
        );
        let j = Backoff { jitter: 0.2, ..b };
        for _ in 0..1000 {
            let d = backoff_us(&j, 1, &mut rng);
            assert!((400_000..=600_000).contains(&d));
        }
    }

    #[test]
    fn storms_hit_about_the_fraction() {
        let hits = (0..10_000).filter(|g| storm_hits(5, *g, 0, 0.3)).count();
        assert!((2_800..3_200).contains(&hits), "{hits}");
    }

    #[test]
    fn shard_parse() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("x").unwrap_err().contains("i/N"));
    }
}
