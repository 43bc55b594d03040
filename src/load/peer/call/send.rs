//! Sending signalling: the job heap's offers, answers and trickled candidates, each at its
//! intended time, and the frames in the SDK's shapes.

use std::cmp::Reverse;

use super::{Job, MAX_NEGS, Neg, Purpose, kind_name};
use crate::load::connect::Ws;
use crate::load::peer::{End, MAX_BURST, Peer, Session};
use crate::load::plan;
use crate::load::scenario::Call;

impl Peer {
    /// Runs the due call jobs (at most [`MAX_BURST`] sends per wake-up).
    pub(in crate::load::peer) async fn call_jobs(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        now: u64,
    ) -> Result<(), End> {
        let Some(cfg) = self.call_cfg().cloned() else {
            return Ok(());
        };
        let mut sends = 0;
        while sends < MAX_BURST {
            let Some(&Reverse((at, remote, job))) = s.calls.jobs.peek() else {
                break;
            };
            if at > now {
                break;
            }
            s.calls.jobs.pop();
            match job {
                Job::Offer(p) => {
                    let Some(side) = s.calls.sides.get(&remote) else {
                        continue;
                    };
                    let set_up =
                        side.ready || side.negs.iter().any(|n| n.purpose == Purpose::Initial);
                    if side.negs.iter().any(|n| !n.desc || !(n.mine || n.answered))
                        || (p == Purpose::Initial && set_up)
                    {
                        // An offer/answer exchange is under way, or their offer set the
                        // pair up first: ours rides along.
                        continue;
                    }
                    let purpose = p;
                    s.calls.offers += 1;
                    let g = ((self.plan.global as u64) << 24) | (s.calls.offers as u64 & 0xFF_FFFF);
                    let cands = if purpose == Purpose::Initial {
                        plan::sample_size(&cfg.candidates, &mut self.rng) as u32
                    } else {
                        0
                    };
                    let timeout = cfg.timeout.as_us();
                    if let Some(side) = s.calls.sides.get_mut(&remote) {
                        if side.negs.len() >= MAX_NEGS {
                            side.negs.remove(0);
                            self.out.calls.stale += 1;
                        }
                        side.negs.push(Neg {
                            g,
                            mine: true,
                            offer_intended: at,
                            started: at,
                            deadline: at + timeout,
                            desc: false,
                            expect: 0,
                            got: 0,
                            answered: false,
                            purpose,
                        });
                    }
                    s.calls.push(at + timeout, remote, Job::Deadline(g));
                    if cfg.track_meta {
                        self.send_signal(ws, s, remote, 'm', g, 0, at, 160).await?;
                        sends += 1;
                    }
                    let size = plan::sample_size(&cfg.offer_size, &mut self.rng);
                    self.send_signal(ws, s, remote, 'o', g, cands, at, size)
                        .await?;
                    sends += 1;
                    self.schedule_candidates(s, &cfg, remote, g, at, cands);
                }
                Job::Answer(g) => {
                    let Some(side) = s.calls.sides.get_mut(&remote) else {
                        continue;
                    };
                    let Some(n) = side.negs.iter_mut().find(|n| n.g == g && !n.mine) else {
                        continue;
                    };
                    n.answered = true;
                    let initial = n.purpose == Purpose::Initial;
                    let cands = if initial {
                        plan::sample_size(&cfg.candidates, &mut self.rng) as u32
                    } else {
                        0
                    };
                    let size = plan::sample_size(&cfg.answer_size, &mut self.rng);
                    self.send_signal(ws, s, remote, 'a', g, cands, at, size)
                        .await?;
                    sends += 1;
                    self.schedule_candidates(s, &cfg, remote, g, at, cands);
                    self.check_done(s, remote, g);
                }
                Job::Candidate(g) => {
                    let Some(side) = s.calls.sides.get(&remote) else {
                        continue;
                    };
                    if side.rolled_back == Some(g) {
                        continue;
                    }
                    let size = plan::sample_size(&cfg.candidate_size, &mut self.rng);
                    self.send_signal(ws, s, remote, 'i', g, 0, at, size).await?;
                    sends += 1;
                }
                Job::Deadline(g) => self.deadline(s, remote, g, at),
                Job::AddTrack => {
                    let Some(r) = cfg.renegotiate.as_ref() else {
                        continue;
                    };
                    let ready: Vec<u32> = s
                        .calls
                        .sides
                        .iter()
                        .filter(|(_, x)| x.ready && x.negs.is_empty())
                        .map(|(g, _)| *g)
                        .collect();
                    for g in ready {
                        s.calls.push(
                            at,
                            g,
                            Job::Offer(Purpose::Renegotiate {
                                left: r.round_trips - 1,
                                first: at,
                            }),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn schedule_candidates(
        &mut self,
        s: &mut Session,
        cfg: &Call,
        remote: u32,
        g: u64,
        from: u64,
        n: u32,
    ) {
        let mut at = from;
        for _ in 0..n {
            at += plan::sample_duration_us(&cfg.candidate_spacing, &mut self.rng);
            s.calls.push(at, remote, Job::Candidate(g));
        }
    }

    /// Sends one signalling message of `size` bytes of payload.
    #[allow(clippy::too_many_arguments)]
    async fn send_signal(
        &mut self,
        ws: &mut Ws,
        s: &mut Session,
        remote: u32,
        k: char,
        g: u64,
        c: u32,
        intended: u64,
        size: usize,
    ) -> Result<(), End> {
        let Some(side) = s.calls.sides.get_mut(&remote) else {
            return Ok(());
        };
        let n = side.tx_n;
        side.tx_n += 1;
        let to = side.to.clone();
        let dseq = self.out.log.directs.len() as u32;
        let mut data = format!(
            r#"{{"p":{},"d":{dseq},"t":{intended},"sig":{{"k":"{k}","s":{},"n":{n},"g":{g},"c":{c}}},"#,
            self.plan.global, self.session_no
        );
        // The SDK's shapes: `rtc-description`, `rtc-ice`, `__meteredTrackMeta`.
        let (head, tail) = match k {
            'm' => (
                format!(r#""__meteredTrackMeta":{{"trackId":"t{g}","metadata":{{"pad":""#),
                "\"}}}",
            ),
            'o' | 'a' => (
                format!(
                    r#""type":"rtc-description","description":{{"type":"{}","sdp":"v=0\r\no=- {g} 2 IN IP4 127.0.0.1\r\ns=-\r\n"#,
                    if k == 'o' { "offer" } else { "answer" }
                ),
                "\"}}",
            ),
            _ => (
                r#""type":"rtc-ice","candidate":{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host "#.to_owned(),
                "\"}}",
            ),
        };
        data.push_str(&head);
        let pad = size.saturating_sub(data.len() + tail.len());
        data.extend(std::iter::repeat_n('x', pad));
        data.push_str(tail);
        *self
            .out
            .calls
            .sent
            .entry(kind_name(k).to_owned())
            .or_default() += 1;
        self.send_logged_direct(ws, s, remote, &to, data, intended)
            .await
    }
}
