//! Durations and distributions as scenario files write them: `"30s"`, a constant, or a
//! `{ dist = "uniform" | "exponential", … }` table.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a humantime string in TOML (`"30s"`, `"1m 30s"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_us(self) -> u64 {
        self.0.as_micros() as u64
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"250ms\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses `"30s"`, `"250ms"`, `"1m 30s"`; the message names the expected form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration \"{text}\" ({e}): use a number with a unit, e.g. 500ms, 30s, 2m")
    })
}

/// A distribution of durations: a plain string is a constant,
/// a table picks one with `dist = "constant" | "uniform" | "exponential"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DurDist {
    Constant(Dur),
    Uniform {
        min: Dur,
        max: Dur,
    },
    /// Exponential with `mean`, capped at `max` (default 10 × mean) so one draw cannot
    /// outlive the run by orders of magnitude.
    Exponential {
        mean: Dur,
        max: Option<Dur>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
enum DurDistTable {
    Constant {
        value: Dur,
    },
    Uniform {
        min: Dur,
        max: Dur,
    },
    Exponential {
        mean: Dur,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<Dur>,
    },
}

impl<'de> Deserialize<'de> for DurDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DurDist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration string (\"30s\") or a table such as \
                     { dist = \"exponential\", mean = \"20s\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurDist, E> {
                parse_duration(v)
                    .map(|d| DurDist::Constant(Dur(d)))
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DurDist, A::Error> {
                let t = DurDistTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    DurDistTable::Constant { value } => DurDist::Constant(value),
                    DurDistTable::Uniform { min, max } => DurDist::Uniform { min, max },
                    DurDistTable::Exponential { mean, max } => DurDist::Exponential { mean, max },
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for DurDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            DurDist::Constant(v) => v.serialize(s),
            DurDist::Uniform { min, max } => DurDistTable::Uniform { min, max }.serialize(s),
            DurDist::Exponential { mean, max } => {
                DurDistTable::Exponential { mean, max }.serialize(s)
            }
        }
    }
}

impl DurDist {
    pub(super) fn check(&self) -> Result<(), String> {
        match *self {
            DurDist::Uniform { min, max } if min > max => {
                Err(format!("uniform min {min} is larger than max {max}"))
            }
            DurDist::Exponential { mean, .. } if mean.0.is_zero() => {
                Err("exponential mean must be > 0".into())
            }
            _ => Ok(()),
        }
    }
}

/// A distribution of payload sizes in bytes (the JSON text of `data`): a plain integer is
/// a constant, a table picks `dist = "constant" | "uniform" | "exponential"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeDist {
    Constant(u32),
    Uniform { min: u32, max: u32 },
    Exponential { mean: u32, max: Option<u32> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
enum SizeDistTable {
    Constant {
        value: u32,
    },
    Uniform {
        min: u32,
        max: u32,
    },
    Exponential {
        mean: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
}

impl<'de> Deserialize<'de> for SizeDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SizeDist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a byte count (128) or a table such as \
                     { dist = \"uniform\", min = 32, max = 512 }",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeDist, E> {
                u32::try_from(v)
                    .map(SizeDist::Constant)
                    .map_err(|_| E::custom(format!("size {v} must be between 0 and 4294967295")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeDist, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SizeDist, A::Error> {
                let t = SizeDistTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    SizeDistTable::Constant { value } => SizeDist::Constant(value),
                    SizeDistTable::Uniform { min, max } => SizeDist::Uniform { min, max },
                    SizeDistTable::Exponential { mean, max } => SizeDist::Exponential { mean, max },
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for SizeDist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            SizeDist::Constant(v) => s.serialize_u32(v),
            SizeDist::Uniform { min, max } => SizeDistTable::Uniform { min, max }.serialize(s),
            SizeDist::Exponential { mean, max } => {
                SizeDistTable::Exponential { mean, max }.serialize(s)
            }
        }
    }
}

impl SizeDist {
    /// The largest size a draw can produce.
    pub fn max(&self) -> u32 {
        match *self {
            SizeDist::Constant(v) => v,
            SizeDist::Uniform { max, .. } => max,
            SizeDist::Exponential { mean, max } => max.unwrap_or(mean.saturating_mul(10)),
        }
    }
    pub(super) fn check(&self) -> Result<(), String> {
        match *self {
            SizeDist::Uniform { min, max } if min > max => {
                Err(format!("uniform min {min} is larger than max {max}"))
            }
            SizeDist::Exponential { mean: 0, .. } => Err("exponential mean must be > 0".into()),
            _ => Ok(()),
        }
    }
}
