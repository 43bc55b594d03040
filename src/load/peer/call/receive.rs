//! Receiving signalling: order per sender connection, glare, and finishing negotiations.

use super::{Job, MAX_EARLY, MAX_NEGS, Neg, Purpose, Sig, kind_metric, kind_name};
use crate::load::accounting::PairRx;
use crate::load::peer::{Peer, Session};
use crate::metrics::Metric;

impl Peer {
    /// A signalling message from member `from` (global), intended at `t`.
    pub(in crate::load::peer) fn on_signal(
        &mut self,
        s: &mut Session,
        from: u32,
        t: u64,
        sig: Sig,
    ) {
        let now = self.now();
        self.sh
            .metrics
            .record(kind_metric(sig.k), now.saturating_sub(t));
        if s.leaving {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = s.calls.sides.entry(from) {
            // An offer from a member whose join we have not seen (yet): answer it anyway.
            match self.new_side(from, false) {
                Some(side) => {
                    e.insert(side);
                }
                None => {
                    self.out.calls.stale += 1;
                    return;
                }
            }
        }
        let Some(cfg) = self.call_cfg() else { return };
        let timeout = cfg.timeout.as_us();
        let side = s.calls.sides.get_mut(&from).expect("inserted above");
        // Order per sender connection.
        if side.rx.as_ref().is_none_or(|(sess, _)| *sess != sig.s) {
            side.rx = Some((sig.s, PairRx::default()));
        }
        let rx = &mut side.rx.as_mut().expect("set above").1;
        let (dups, reorders) = (rx.dups, rx.reorders);
        rx.insert(sig.n);
        if rx.dups > dups {
            // Counted by the direct accounting; a duplicate changes nothing here.
            return;
        }
        if rx.reorders > reorders {
            self.out.calls.out_of_order += 1;
            let (me, at) = (self.id.clone(), self.rel(now) as f64 / 1e6);
            let who = self.sh.peer_id(from);
            self.sh.event(|ev| {
                ev.note("calls/out_of_order", || {
                    format!(
                        "t={at:.3} s peer {me}: {} #{} from {who} arrived after a later message",
                        kind_name(sig.k),
                        sig.n
                    )
                })
            });
        }
        let side = s.calls.sides.get_mut(&from).expect("present");
        match sig.k {
            'o' => {
                let live = side.negs.last().copied();
                let making = live.is_some_and(|n| n.mine && !n.desc);
                if making && !side.polite {
                    side.ignoring = Some(sig.g);
                    self.out.calls.ignored_offers += 1;
                    return;
                }
                let (started, purpose) = match live {
                    Some(n) if making => {
                        // Rollback: our offer and its candidates are abandoned.
                        self.out.calls.glare += 1;
                        side.rolled_back = Some(n.g);
                        side.negs.pop();
                        (n.started, n.purpose)
                    }
                    _ if side.ready || side.negs.iter().any(|n| n.purpose == Purpose::Initial) => {
                        // Their renegotiation (the pair was set up already, or its
                        // candidates still trickle): answered, not timed here.
                        (
                            now,
                            Purpose::Renegotiate {
                                left: 0,
                                first: now,
                            },
                        )
                    }
                    _ => (now, Purpose::Initial),
                };
                if side.negs.len() >= MAX_NEGS {
                    side.negs.remove(0);
                    self.out.calls.stale += 1;
                }
                let got = take_early(&mut side.early, sig.g);
                side.negs.push(Neg {
                    g: sig.g,
                    mine: false,
                    offer_intended: t,
                    started,
                    deadline: started + timeout,
                    desc: true,
                    expect: sig.c,
                    got,
                    answered: false,
                    purpose,
                });
                s.calls.push(now, from, Job::Answer(sig.g));
                s.calls.push(started + timeout, from, Job::Deadline(sig.g));
            }
            'a' => match side.negs.iter_mut().find(|n| n.g == sig.g) {
                Some(n) if n.mine && !n.desc => {
                    n.desc = true;
                    n.expect = sig.c;
                    n.got = take_early(&mut side.early, sig.g);
                    self.check_done(s, from, sig.g);
                }
                _ => self.out.calls.stale += 1,
            },
            'i' => match side.negs.iter_mut().find(|n| n.g == sig.g) {
                Some(n) if n.desc => {
                    n.got += 1;
                    self.check_done(s, from, sig.g);
                }
                _ if side.ignoring == Some(sig.g) => {}
                _ => {
                    if side.early.len() < MAX_EARLY {
                        side.early.push(sig.g);
                    }
                }
            },
            _ => {}
        }
    }

    /// Finishes the negotiation with `remote` if this side has everything it waits for.
    pub(super) fn check_done(&mut self, s: &mut Session, remote: u32, g: u64) {
        let now = self.now();
        let Some(side) = s.calls.sides.get_mut(&remote) else {
            return;
        };
        let Some(i) = side.negs.iter().position(|n| n.g == g) else {
            return;
        };
        let n = side.negs[i];
        if !(n.desc && n.got >= n.expect && (n.mine || n.answered)) {
            return;
        }
        side.negs.remove(i);
        // The pair is set up once its first negotiation finished (a renegotiation may
        // finish before the first one's last candidates arrive).
        let was_ready = side.ready;
        side.ready |= n.purpose == Purpose::Initial;
        let in_mesh = side.in_mesh;
        match n.purpose {
            Purpose::Initial => {
                if n.mine {
                    self.out.calls.negotiated += 1;
                    self.sh
                        .metrics
                        .record(Metric::Negotiation, now.saturating_sub(n.offer_intended));
                }
                if in_mesh && !was_ready {
                    self.mesh_progress(s, true);
                }
            }
            Purpose::Renegotiate { left, first } if n.mine => {
                if left > 0 {
                    s.calls.push(
                        now,
                        remote,
                        Job::Offer(Purpose::Renegotiate {
                            left: left - 1,
                            first,
                        }),
                    );
                } else {
                    self.out.calls.renegotiations += 1;
                    self.sh
                        .metrics
                        .record(Metric::Renegotiation, now.saturating_sub(first));
                }
            }
            Purpose::Renegotiate { .. } => {}
        }
    }
}

/// Takes the candidates of negotiation `g` that came early.
fn take_early(early: &mut Vec<u64>, g: u64) -> u32 {
    let before = early.len();
    early.retain(|x| *x != g);
    (before - early.len()) as u32
}
