//! Latency histograms: one configuration everywhere (1 µs .. 60 s, 3 significant digits)
//! so every merge is exact, a serde form (base64 of the V2 encoding) that travels from
//! worker processes to the coordinator, and the summary statistics of the report.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Lowest value kept apart from 0, in µs.
pub const LOW_US: u64 = 1;
/// Highest trackable value, in µs; larger samples saturate here (60 s).
pub const HIGH_US: u64 = 60_000_000;
pub const SIGFIG: u8 = 3;

/// A fresh histogram with the one configuration.
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(LOW_US, HIGH_US, SIGFIG).expect("valid histogram bounds")
}

/// A histogram that serializes as base64 of its V2 encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(new_hist())
    }
}

impl Hist {
    /// Adds `other` exactly (same configuration everywhere, so this never loses counts).
    pub fn add(&mut self, other: &Histogram<u64>) {
        if other.is_empty() {
            return;
        }
        // Same bounds on both sides: `add` only fails when the source exceeds the target.
        self.0
            .add(other)
            .expect("histograms share one configuration");
    }

    pub fn stats(&self) -> Stats {
        Stats::of(&self.0)
    }

    pub fn to_base64(&self) -> String {
        use base64::Engine;
        let mut bytes = Vec::new();
        // Serializing into a Vec cannot fail for a valid histogram.
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("V2 serialization into memory");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Hist, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram does not decode: {e:?}"))?;
        // Re-home the counts in the standard configuration so later merges are exact.
        let mut out = new_hist();
        out.add(&h)
            .map_err(|e| format!("histogram out of range: {e:?}"))?;
        Ok(Hist(out))
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Hist::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// Summary statistics of one latency, all in µs: `{count,min,p50,p90,p99,p999,max,mean}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Stats {
    pub fn of(h: &Histogram<u64>) -> Stats {
        if h.is_empty() {
            return Stats::default();
        }
        Stats {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_exact_merge() {
        let mut even = Hist::default();
        let mut odd = Hist::default();
        let mut all = Hist::default();
        for v in 1..20_000u64 {
            let v = v * 37 % 5_000_000 + 1;
            all.0.record(v).unwrap();
            if v % 2 == 0 {
                even.0.record(v).unwrap();
            } else {
                odd.0.record(v).unwrap();
            }
        }
        let even = Hist::from_base64(&even.to_base64()).unwrap();
        let odd = Hist::from_base64(&odd.to_base64()).unwrap();
        let mut merged = Hist::default();
        merged.add(&even.0);
        merged.add(&odd.0);
        assert_eq!(merged, all);
        assert_eq!(merged.stats(), all.stats());
    }

    #[test]
    fn empty_stats_are_zero_and_saturation_holds() {
        assert_eq!(Hist::default().stats(), Stats::default());
        let mut h = Hist::default();
        h.0.saturating_record(u64::MAX);
        h.0.saturating_record(0);
        let s = h.stats();
        assert_eq!(s.count, 2);
        assert_eq!(s.min, 0);
        assert!(s.max >= HIGH_US && s.max < HIGH_US + HIGH_US / 500);
    }
}
