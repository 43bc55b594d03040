//! Calls: WebRTC call setup over `send`/`direct` frames, the way the JS SDK's MeteredPeer
//! negotiates (`[population.call]`, docs/LOAD.md "Calls").
//!
//! A peer that joins finds the members already present in its presence snapshot and
//! negotiates with each; with `offers = "both"` each member that sees it join offers too,
//! and the offers cross (glare): the polite side (lower peer id) rolls back and answers,
//! the impolite side ignores the other offer, as in perfect negotiation. A negotiation is
//! an optional track-metadata message, an offer carrying how many candidates will follow,
//! the answer (also with its count), and each side's candidates trickled after its
//! description. The offering side records `negotiation` once it holds the answer and
//! every candidate of the other side; the joining peer records `mesh_ready` once every
//! member it found is negotiated (its own side of each pair).
//!
//! Every signalling message carries, besides the engine's `p`/`d`/`t`, a `sig` object:
//! kind, the sender's session, a sequence number per (sender connection, receiver), the
//! negotiation id and the candidate count. Delivery is accounted with the directs; the
//! order per sender connection is checked here: a message arriving after a later one is
//! out of order (an answer before its offer breaks a real call).
//!
//! Every send is a job on a timer heap with its intended time, so replies and trickled
//! candidates leave on the open-model schedule and their lag is measured like any send.
//!
//! Here: the types, presence (the mesh), deadlines and the end of a session; [`receive`]:
//! order, glare and finishing negotiations; [`send`]: the job heap and the frames.

mod receive;
mod send;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::Deserialize;

use super::{End, Peer, Session};
use crate::load::accounting::PairRx;
use crate::load::plan;
use crate::load::scenario::{Call, Offers};
use crate::metrics::Metric;
use crate::report::{FailedSide, MAX_FAILED_SIDES};

/// Candidates that arrived before their description, kept per side (bounded).
const MAX_EARLY: usize = 256;
/// Negotiations in progress per side; beyond this the oldest is dropped as stale.
const MAX_NEGS: usize = 4;

/// The `sig` object of a signalling message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Sig {
    /// `m` track metadata, `o` offer, `a` answer, `i` candidate.
    pub k: char,
    /// The sender's session number.
    pub s: u32,
    /// Sequence number per (sender connection, receiver).
    pub n: u32,
    /// Negotiation id: the offerer's global index × 2^24 + its offer counter.
    pub g: u64,
    /// Candidates the sender will trickle after this description.
    pub c: u32,
}

/// Finds and parses `"sig":{…}` in a direct frame (no nesting inside `sig`).
pub fn scan_sig(b: &[u8]) -> Option<Sig> {
    static SIG: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""sig":{"#));
    let start = SIG.find(b)? + br#""sig":"#.len();
    let len = memchr::memchr(b'}', &b[start..])?;
    serde_json::from_slice(&b[start..=start + len]).ok()
}

fn kind_name(k: char) -> &'static str {
    match k {
        'm' => "track_meta",
        'o' => "offer",
        'a' => "answer",
        _ => "candidate",
    }
}

fn kind_metric(k: char) -> Metric {
    match k {
        'm' => Metric::TrackMeta,
        'o' => Metric::Offer,
        'a' => Metric::Answer,
        _ => Metric::Candidate,
    }
}

/// Why a negotiation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Purpose {
    /// Setting up the pair.
    Initial,
    /// A track added after join: `left` more round trips after this one; the cycle
    /// started at `first` (intended, µs).
    Renegotiate { left: u32, first: u64 },
}

/// The negotiation in progress with one member.
#[derive(Debug, Clone, Copy)]
struct Neg {
    g: u64,
    /// This peer offered (waits for the answer) rather than answered.
    mine: bool,
    /// Intended time of this side's first offer (the `negotiation` sample's start).
    offer_intended: u64,
    /// When this side started waiting, and when it gives up (absolute µs).
    started: u64,
    deadline: u64,
    /// The other side's description arrived.
    desc: bool,
    /// Candidates the other side announced, and how many arrived.
    expect: u32,
    got: u32,
    /// This side answered (answerers only).
    answered: bool,
    purpose: Purpose,
}

/// This peer's side of the pair with one member.
#[derive(Debug)]
struct Side {
    /// The member's id as a JSON string (the `to` of our sends).
    to: String,
    polite: bool,
    /// Found in this peer's presence snapshot: its pair counts towards mesh-ready.
    in_mesh: bool,
    ready: bool,
    /// Negotiations in progress, oldest first. The last is the live offer/answer
    /// exchange; earlier ones have both descriptions and only wait for candidates (a
    /// newer offer may start while candidates of the last one still trickle).
    negs: Vec<Neg>,
    /// Our offer rolled back during glare: its remaining candidates are not sent.
    rolled_back: Option<u64>,
    /// An offer ignored during glare (impolite side): its candidates are dropped too.
    ignoring: Option<u64>,
    /// Candidates per negotiation id that came before their description.
    early: Vec<u64>,
    /// Next sequence number of our messages to this member (this session).
    tx_n: u32,
    /// The member's session and the sequence numbers seen from it.
    rx: Option<(u32, PairRx)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Offer (starting a negotiation, or the next renegotiation round).
    Offer(Purpose),
    Answer(u64),
    Candidate(u64),
    Deadline(u64),
    /// Add a track: renegotiate with every ready member.
    AddTrack,
}

/// A joining peer's view of its mesh.
#[derive(Debug, Clone, Copy)]
struct Mesh {
    started: u64,
    waiting: u32,
    /// Pairs of the mesh set up so far.
    negotiated: u32,
    failed: bool,
    ready: bool,
}

/// Call state of one session.
#[derive(Debug, Default)]
pub(super) struct CallSession {
    sides: HashMap<u32, Side>,
    jobs: BinaryHeap<Reverse<(u64, u32, Job)>>,
    mesh: Option<Mesh>,
    snapshot_seen: bool,
    offers: u32,
}

impl CallSession {
    /// The next job's time (u64::MAX: none).
    pub(super) fn next(&self) -> u64 {
        self.jobs
            .peek()
            .map(|Reverse((at, _, _))| *at)
            .unwrap_or(u64::MAX)
    }

    fn push(&mut self, at: u64, remote: u32, job: Job) {
        self.jobs.push(Reverse((at, remote, job)));
    }
}

impl Peer {
    fn call_cfg(&self) -> Option<&Call> {
        self.sh.scenario.populations[self.plan.population as usize]
            .call
            .as_ref()
    }

    /// Whether this peer's population makes calls.
    pub(super) fn makes_calls(&self) -> bool {
        self.call_cfg().is_some()
    }

    /// The member's id on the wire, as a JSON string.
    fn remote_to(&self, global: u32) -> Option<(String, String)> {
        let local = *self.sh.local_of.get(global as usize)?;
        if local == u32::MAX {
            return None;
        }
        let id = self.sh.wire_id(local)?;
        let json = serde_json::to_string(&id).ok()?;
        Some((id, json))
    }

    fn new_side(&self, remote: u32, in_mesh: bool) -> Option<Side> {
        let (id, to) = self.remote_to(remote)?;
        Some(Side {
            to,
            // Perfect negotiation's tie-break, as the SDK computes it.
            polite: self.id < id,
            in_mesh,
            ready: false,
            negs: Vec::new(),
            rolled_back: None,
            ignoring: None,
            early: Vec::new(),
            tx_n: 0,
            rx: None,
        })
    }

    /// The presence frames of a call session: the snapshot starts the mesh, joins and
    /// leaves add and drop members.
    pub(super) fn call_presence(
        &mut self,
        s: &mut Session,
        joined: &[crate::proto::PresencePeer],
        left: &[crate::proto::PresencePeer],
    ) {
        let Some(cfg) = self.call_cfg() else { return };
        let offers = cfg.offers;
        let now = self.now();
        let globals = |list: &[crate::proto::PresencePeer]| -> Vec<u32> {
            list.iter()
                .filter(|e| e.peer_id != self.id)
                .filter_map(|e| self.sh.local_of_id(&e.peer_id))
                .map(|l| self.sh.locals[l as usize])
                .collect()
        };
        let (joined, left) = (globals(joined), globals(left));
        if !s.calls.snapshot_seen {
            s.calls.snapshot_seen = true;
            let mut waiting = 0;
            for g in joined {
                // A member whose offer came before the snapshot keeps what it started.
                let side = match s.calls.sides.remove(&g) {
                    Some(mut x) => {
                        x.in_mesh = true;
                        Some(x)
                    }
                    None => self.new_side(g, true),
                };
                if let Some(side) = side {
                    s.calls.sides.insert(g, side);
                    s.calls.push(now, g, Job::Offer(Purpose::Initial));
                    waiting += 1;
                }
            }
            if waiting > 0 {
                self.out.calls.pairs += waiting as u64;
                self.out.calls.meshes += 1;
                s.calls.mesh = Some(Mesh {
                    started: self.join_started_us,
                    waiting,
                    negotiated: 0,
                    failed: false,
                    ready: false,
                });
            }
            return;
        }
        for g in left {
            self.drop_side(s, g);
        }
        for g in joined {
            // A member seen again (it reconnected before its leave was noticed): the old
            // pair is gone with its connection.
            self.drop_side(s, g);
            if let Some(side) = self.new_side(g, false) {
                s.calls.sides.insert(g, side);
                if offers == Offers::Both {
                    s.calls.push(now, g, Job::Offer(Purpose::Initial));
                }
            }
        }
    }

    /// A member left: what it was negotiating is abandoned.
    fn drop_side(&mut self, s: &mut Session, remote: u32) {
        let Some(side) = s.calls.sides.remove(&remote) else {
            return;
        };
        self.out.calls.abandoned += side.negs.len() as u64;
        if side.in_mesh && !side.ready {
            self.mesh_progress(s, false);
        }
    }

    /// One pair of the mesh finished, or will not count (its member left).
    fn mesh_progress(&mut self, s: &mut Session, negotiated: bool) {
        let now = self.now();
        let Some(m) = s.calls.mesh.as_mut() else {
            return;
        };
        m.waiting = m.waiting.saturating_sub(1);
        m.negotiated += u32::from(negotiated);
        // A mesh whose members all left before any pair was set up is not ready: it is gone.
        if m.waiting > 0 || m.ready || m.failed || m.negotiated == 0 {
            return;
        }
        m.ready = true;
        let started = m.started;
        self.out.calls.meshes_ready += 1;
        self.sh
            .metrics
            .record(Metric::MeshReady, now.saturating_sub(started));
        if let Some(r) = self.call_cfg().and_then(|c| c.renegotiate.clone()) {
            let at = now + plan::sample_duration_us(&r.after, &mut self.rng);
            s.calls.push(at, u32::MAX, Job::AddTrack);
        }
    }

    /// A negotiation's deadline passed: if it is still waiting, the call failed.
    fn deadline(&mut self, s: &mut Session, remote: u32, g: u64, at: u64) {
        let Some(side) = s.calls.sides.get_mut(&remote) else {
            return;
        };
        let Some(i) = side.negs.iter().position(|n| n.g == g && n.deadline <= at) else {
            return;
        };
        let n = side.negs.remove(i);
        let in_mesh = side.in_mesh && !side.ready && n.purpose == Purpose::Initial;
        let waiting = waiting_for(&n);
        self.fail_side(remote, n, &waiting);
        if in_mesh && let Some(m) = s.calls.mesh.as_mut() {
            m.failed = true;
        }
    }

    fn fail_side(&mut self, remote: u32, n: Neg, waiting: &str) {
        let me = self.plan.global;
        let side = FailedSide {
            a: me.min(remote),
            b: me.max(remote),
            at_us: self.rel(n.deadline),
            window_us: n.deadline.saturating_sub(n.started),
        };
        let c = &mut self.out.calls;
        c.failed_sides += 1;
        if c.sides.len() < MAX_FAILED_SIDES {
            c.sides.push(side);
        }
        let (id, other) = (self.id.clone(), self.sh.peer_id(remote));
        let (started, secs) = (
            self.rel(n.started) as f64 / 1e6,
            n.deadline.saturating_sub(n.started) as f64 / 1e6,
        );
        self.sh.event(|ev| {
            ev.note("calls/failed", || {
                format!(
                    "peer {id}: call with {other} started at {started:.3} s not negotiated within {secs:.0} s: waiting for {waiting}"
                )
            })
        });
    }

    /// The session ends: negotiations still waiting are cut off by the end of the run,
    /// failed when their timeout already passed, or abandoned when the peer leaves.
    pub(super) fn call_session_end(&mut self, s: &mut Session, end: End) {
        let now = self.now();
        self.out.calls.sessions += 1;
        let sides = std::mem::take(&mut s.calls.sides);
        for (remote, side) in sides {
            for n in side.negs {
                match end {
                    End::RunOver if now >= n.deadline => {
                        self.fail_side(remote, n, &waiting_for(&n));
                    }
                    End::RunOver => self.out.calls.cut_off += 1,
                    _ => self.out.calls.abandoned += 1,
                }
            }
        }
    }

    /// `peer_not_found` for a direct: the member left.
    pub(super) fn call_peer_gone(&mut self) {
        self.out.calls.peer_not_found += 1;
    }
}

fn waiting_for(n: &Neg) -> String {
    if !n.desc {
        if n.mine {
            "the answer".into()
        } else {
            "the offer".into()
        }
    } else {
        format!("candidates ({} of {} arrived)", n.got, n.expect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sig_object() {
        let frame = br#"{"type":"direct","from":"r-1","data":{"p":1,"d":4,"t":9,"sig":{"k":"o","s":1,"n":3,"g":16777217,"c":5},"type":"rtc-description","description":{"type":"offer","sdp":"v=0"}}}"#;
        assert_eq!(
            scan_sig(frame),
            Some(Sig {
                k: 'o',
                s: 1,
                n: 3,
                g: 16_777_217,
                c: 5
            })
        );
        assert_eq!(scan_sig(br#"{"data":{"p":1}}"#), None);
        assert_eq!(scan_sig(br#"{"data":{"sig":{"k":"o"}}}"#), None);
    }
}
