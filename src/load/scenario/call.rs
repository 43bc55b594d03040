//! `[population.call]`: WebRTC call setup over `send`/`direct` frames the way the JS SDK's
//! MeteredPeer does it (docs/LOAD.md, "Calls", cites the seed passage behind each default).

use serde::{Deserialize, Serialize};

use super::dist::{Dur, DurDist, SizeDist};

/// Each member negotiates with every other member of its room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// Who offers when a member joins.
    #[serde(default)]
    pub offers: Offers,
    /// A `__meteredTrackMeta` direct before every offer (the SDK sends track metadata
    /// before the matching offer so order is preserved).
    #[serde(default = "yes")]
    pub track_meta: bool,
    /// Bytes of SDP in an offer.
    #[serde(default = "default_sdp")]
    pub offer_size: SizeDist,
    /// Bytes of SDP in an answer.
    #[serde(default = "default_sdp")]
    pub answer_size: SizeDist,
    /// ICE candidates each side trickles per negotiation.
    #[serde(default = "default_candidates")]
    pub candidates: SizeDist,
    /// Gap before each candidate, from the description it follows.
    #[serde(default = "default_spacing")]
    pub candidate_spacing: DurDist,
    /// Bytes of one candidate message.
    #[serde(default = "default_candidate_size")]
    pub candidate_size: SizeDist,
    /// A track added after the mesh is ready: a renegotiation with every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiate: Option<Renegotiate>,
    /// A negotiation not finished this long after it started is a failed call.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

/// Who sends the offer for a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offers {
    /// Both sides, as MeteredPeer does (each sees the other in presence and attaches its
    /// tracks): the offers cross and perfect negotiation resolves the glare (the polite
    /// side, the lower peer id, rolls back and answers).
    #[default]
    Both,
    /// Only the member that joins offers; the others answer.
    Newcomer,
}

/// A track added after join (SDK: "two extra round trips per peer").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renegotiate {
    /// How long after the peer's mesh is ready the track is added.
    #[serde(default = "default_after")]
    pub after: DurDist,
    /// Offer/answer round trips per pair.
    #[serde(default = "default_round_trips")]
    pub round_trips: u32,
}

fn yes() -> bool {
    true
}
fn default_sdp() -> SizeDist {
    SizeDist::Uniform {
        min: 2000,
        max: 6000,
    }
}
fn default_candidates() -> SizeDist {
    SizeDist::Uniform { min: 2, max: 8 }
}
fn default_spacing() -> DurDist {
    DurDist::Uniform {
        min: Dur::millis(5),
        max: Dur::millis(50),
    }
}
fn default_candidate_size() -> SizeDist {
    SizeDist::Constant(200)
}
fn default_timeout() -> Dur {
    Dur::secs(10)
}
fn default_after() -> DurDist {
    DurDist::Constant(Dur::secs(2))
}
fn default_round_trips() -> u32 {
    2
}

/// Most members a room of calls may have (the SDK caps a channel at 256 peers; a mesh of
/// more than a few dozen is not a call any product makes).
pub const MAX_ROOM: u32 = 50;

impl Call {
    /// The largest `data` a signalling message carries, in bytes.
    pub fn largest_payload(&self) -> usize {
        // The harness's own fields and the SDK's JSON around the SDP.
        const OVERHEAD: usize = 256;
        [&self.offer_size, &self.answer_size, &self.candidate_size]
            .iter()
            .map(|d| d.max() as usize)
            .max()
            .unwrap_or(0)
            + OVERHEAD
    }

    /// Checks the numbers; the error names the field under `call`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, d) in [
            ("offer_size", &self.offer_size),
            ("answer_size", &self.answer_size),
            ("candidates", &self.candidates),
            ("candidate_size", &self.candidate_size),
        ] {
            d.check().map_err(|e| (field, e))?;
        }
        if self.candidates.max() > 200 {
            return Err((
                "candidates",
                "at most 200 candidates per negotiation (the SDK drops more)".into(),
            ));
        }
        if self.offer_size.max() > 60_000 || self.answer_size.max() > 60_000 {
            return Err((
                "offer_size",
                "an SDP of more than 60,000 bytes does not fit a 64 KiB frame".into(),
            ));
        }
        self.candidate_spacing
            .check()
            .map_err(|e| ("candidate_spacing", e))?;
        if self.timeout.0.is_zero() {
            return Err(("timeout", "must be longer than 0".into()));
        }
        if let Some(r) = &self.renegotiate {
            r.after.check().map_err(|e| ("renegotiate.after", e))?;
            if !(1..=10).contains(&r.round_trips) {
                return Err(("renegotiate.round_trips", "use 1 to 10".into()));
            }
        }
        Ok(())
    }
}
