//! What the call model (`[population.call]`) observed: pair negotiations, meshes, glare,
//! signalling messages and their order. Mergeable across workers like the rest of
//! [`super::RunData`]; the summary carries it as `calls`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::text::thousands;

/// One side of a pair that gave up waiting: `a < b` are the pair's global peer indexes,
/// `at_us` the deadline (µs after the run start), `window_us` the call timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailedSide {
    pub a: u32,
    pub b: u32,
    pub at_us: u64,
    pub window_us: u64,
}

/// Failed sides kept per process; beyond this `failed` is counted from the sides alone.
pub const MAX_FAILED_SIDES: usize = 100_000;

/// Call setup, counted over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calls {
    /// Pair negotiations a join started: one per member already present when a peer
    /// joined (counted by the joining peer).
    pub pairs: u64,
    /// Negotiations finished on the offering side (each is a `negotiation` sample).
    pub negotiated: u64,
    /// Failed calls: pairs whose negotiation did not finish within the timeout on at least
    /// one side (both sides of one pair failing within the timeout count once). Derived
    /// from `sides` by [`Calls::settle`].
    pub failed: u64,
    /// Sides that gave up waiting (a failed call has one or two).
    pub failed_sides: u64,
    /// Negotiations left unfinished because a member left (churn, storm, server close).
    pub abandoned: u64,
    /// Negotiations still within their timeout when the run ended.
    pub cut_off: u64,
    /// Offer collisions resolved by perfect negotiation (the polite side rolled back).
    pub glare: u64,
    /// Offers the impolite side ignored during a collision.
    pub ignored_offers: u64,
    /// Joins that found members to negotiate with, and those whose every pair finished.
    pub meshes: u64,
    pub meshes_ready: u64,
    /// Renegotiation cycles (a track added after join) finished.
    pub renegotiations: u64,
    /// Signalling messages sent, by kind (`track_meta`, `offer`, `answer`, `candidate`).
    pub sent: BTreeMap<String, u64>,
    /// Signalling messages that arrived after a later one from the same connection: an
    /// answer before its offer, a candidate before its description. Each breaks a call.
    pub out_of_order: u64,
    /// Signalling messages that matched no negotiation (an answer to no offer).
    pub stale: u64,
    /// Directs the server refused with `peer_not_found` (the member had left).
    pub peer_not_found: u64,
    /// Sessions whose `welcome` carried `metadata.iceServers` (AUTH-14), of all sessions.
    pub ice_servers: u64,
    pub sessions: u64,
    /// The sides behind `failed`, merged across workers and folded into `failed` by
    /// [`Calls::settle`]; not part of summary.json.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sides: Vec<FailedSide>,
}

impl Calls {
    pub fn is_empty(&self) -> bool {
        *self == Calls::default()
    }

    pub fn merge(&mut self, o: &Calls) {
        self.pairs += o.pairs;
        self.negotiated += o.negotiated;
        self.failed_sides += o.failed_sides;
        self.abandoned += o.abandoned;
        self.cut_off += o.cut_off;
        self.glare += o.glare;
        self.ignored_offers += o.ignored_offers;
        self.meshes += o.meshes;
        self.meshes_ready += o.meshes_ready;
        self.renegotiations += o.renegotiations;
        for (k, v) in &o.sent {
            *self.sent.entry(k.clone()).or_default() += v;
        }
        self.out_of_order += o.out_of_order;
        self.stale += o.stale;
        self.peer_not_found += o.peer_not_found;
        self.ice_servers += o.ice_servers;
        self.sessions += o.sessions;
        // `failed` is derived from the sides once, by `settle`: the engine merges every
        // peer's outcome, and sorting the sides at each merge would be quadratic.
        let room = MAX_FAILED_SIDES.saturating_sub(self.sides.len());
        self.sides.extend(o.sides.iter().take(room).copied());
    }

    /// Failed calls from the failed sides: the sides of one pair whose deadlines lie
    /// within one timeout of the group's first are one call.
    fn count_failed(&self) -> u64 {
        let mut sides = self.sides.clone();
        sides.sort_unstable();
        let mut calls = 0u64;
        let mut group: Option<&FailedSide> = None;
        for s in &sides {
            let same = group.is_some_and(|g| {
                g.a == s.a && g.b == s.b && s.at_us.saturating_sub(g.at_us) <= g.window_us
            });
            if !same {
                calls += 1;
                group = Some(s);
            }
        }
        // Sides beyond the kept list count one call each.
        calls + self.failed_sides.saturating_sub(sides.len() as u64)
    }

    /// The `calls` and `signalling` lines of a run with `[population.call]`.
    pub fn text_lines(&self) -> String {
        let c = self;
        let sent = |k: &str| thousands(c.sent.get(k).copied().unwrap_or(0));
        format!(
            "calls       {} pairs · {} negotiated · {} failed · {} abandoned · {} cut off · glare {} · meshes {} of {} ready · renegotiations {}\n\
             signalling  {} offers · {} answers · {} candidates · {} track meta · out of order {} · stale {} · peer_not_found {} · iceServers in {} of {} welcomes\n",
            thousands(c.pairs),
            thousands(c.negotiated),
            thousands(c.failed),
            thousands(c.abandoned),
            thousands(c.cut_off),
            thousands(c.glare),
            thousands(c.meshes_ready),
            thousands(c.meshes),
            thousands(c.renegotiations),
            sent("offer"),
            sent("answer"),
            sent("candidate"),
            sent("track_meta"),
            thousands(c.out_of_order),
            thousands(c.stale),
            thousands(c.peer_not_found),
            thousands(c.ice_servers),
            thousands(c.sessions),
        )
    }

    /// Folds the kept sides into `failed` and drops them (for the summary).
    pub fn settle(&mut self) {
        self.failed = self.count_failed();
        self.sides = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(a: u32, b: u32, at_s: u64) -> FailedSide {
        FailedSide {
            a,
            b,
            at_us: at_s * 1_000_000,
            window_us: 10_000_000,
        }
    }

    #[test]
    fn both_sides_of_a_pair_are_one_call() {
        let mut c = Calls {
            failed_sides: 4,
            sides: vec![
                side(1, 2, 20),
                side(1, 2, 21),
                side(1, 3, 20),
                side(1, 2, 45),
            ],
            ..Default::default()
        };
        c.settle();
        // (1,2) at 20 and 21 s: one call; (1,3): one; (1,2) again at 45 s: another.
        assert_eq!(c.failed, 3);
        assert!(c.sides.is_empty());
        let mut merged = Calls::default();
        merged.merge(&Calls {
            failed_sides: 1,
            sides: vec![side(4, 5, 3)],
            ..Default::default()
        });
        merged.merge(&Calls {
            failed_sides: 1,
            sides: vec![side(4, 5, 4)],
            ..Default::default()
        });
        merged.settle();
        assert_eq!(merged.failed, 1);
    }
}
