//! What each built-in check counts, and the evidence it gives: one function per check,
//! returning `None` when the check does not apply to the scenario.

use std::collections::BTreeMap;

use super::Inputs;
use crate::load::scenario::{OversizeExpect, OversizeKind, Scenario};
use crate::report::text::thousands;

/// Most examples shown per check.
const EXAMPLES: usize = 5;

/// Frame kinds that are also unexpected copies in the delivery accounting.
const FOREIGN: [&str; 4] = [
    "message_not_from_this_run",
    "message_from_unknown_publisher",
    "message_with_implausible_sequence",
    "direct_not_from_this_run",
];

/// What one check saw.
pub(super) struct Finding {
    pub count: u64,
    /// What a `%` tolerance divides by.
    pub base: u64,
    pub evidence: String,
    pub examples: Vec<String>,
}

impl Finding {
    pub(super) fn new(count: u64, base: u64, evidence: String) -> Finding {
        Finding {
            count,
            base,
            evidence,
            examples: Vec::new(),
        }
    }

    pub(super) fn with_examples<'a>(mut self, lines: impl IntoIterator<Item = &'a str>) -> Finding {
        self.examples = lines
            .into_iter()
            .take(EXAMPLES)
            .map(str::to_owned)
            .collect();
        self
    }
}

/// `code × n (name), …` for the entries of `map` that `keep`, most frequent first.
pub(super) fn list(
    map: &BTreeMap<String, u64>,
    keep: impl Fn(&str) -> bool,
    name: fn(&str) -> String,
) -> String {
    let mut v: Vec<(&String, &u64)> = map.iter().filter(|(k, n)| keep(k) && **n > 0).collect();
    v.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    v.iter()
        .map(|(k, n)| format!("{k} × {}{}", thousands(**n), name(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn no_name(_: &str) -> String {
    String::new()
}

pub(super) fn close_name(code: &str) -> String {
    code.parse::<u16>()
        .map(|c| format!(" ({})", crate::proto::frame::close::name(c)))
        .unwrap_or_default()
}

/// Close codes the scenario causes itself, and why.
pub(super) fn expected_closes(s: &Scenario) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if s.populations.iter().any(|p| p.token.is_some()) {
        out.push(("4002".to_owned(), "expiring tokens"));
    }
    if s.populations.iter().any(|p| {
        p.oversize.as_ref().is_some_and(|o| {
            o.expect == OversizeExpect::Close && o.frames.iter().any(|k| *k != OversizeKind::At)
        })
    }) {
        out.push(("1009".to_owned(), "oversized frames"));
    }
    if s.rest.iter().any(|r| r.weights.kick > 0.0) {
        out.push(("4020".to_owned(), "REST kicks"));
    }
    out
}

/// Close codes neither counted by `closes` nor, as `close_<code>`, by `connections`.
pub(super) fn closes_allowed(i: &Inputs) -> Vec<String> {
    let mut codes: Vec<String> = expected_closes(i.scenario)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    if let Some(r) = i.scenario.checks.get("closes") {
        codes.extend(r.allow.iter().cloned());
    }
    codes
}

pub(super) fn connections(i: &Inputs, allow: &[&str], close_codes: Vec<String>) -> Option<Finding> {
    let c = &i.summary.connections;
    let allowed = |kind: &str| {
        allow.contains(&kind)
            || kind
                .strip_prefix("close_")
                .is_some_and(|code| close_codes.iter().any(|x| x == code))
    };
    let listed: u64 = c.failures.values().sum();
    let counted: u64 = c
        .failures
        .iter()
        .filter(|(k, _)| !allowed(k))
        .map(|(_, n)| n)
        .sum::<u64>()
        + c.failed.saturating_sub(listed);
    let mut evidence = if counted == 0 {
        format!(
            "{} attempts, {} established, none failed",
            thousands(c.attempts),
            thousands(c.established)
        )
    } else {
        format!(
            "{} of {} connection attempts failed: {}",
            thousands(counted),
            thousands(c.attempts),
            list(&c.failures, |k| !allowed(k), no_name)
        )
    };
    if c.never_connected > 0 {
        evidence.push_str(&format!(
            "; {} peers never got a welcome",
            thousands(c.never_connected)
        ));
    }
    let tolerated = list(&c.failures, allowed, no_name);
    if !tolerated.is_empty() {
        evidence.push_str(&format!(" (tolerated: {tolerated})"));
    }
    let keys: Vec<String> = c
        .failures
        .keys()
        .filter(|k| !allowed(k))
        .map(|k| format!("connections/{k}"))
        .collect();
    Some(
        Finding::new(counted, c.attempts, evidence)
            .with_examples(keys.iter().flat_map(|k| i.examples.under(k))),
    )
}

pub(super) fn closes(i: &Inputs, allow: &[&str]) -> Option<Finding> {
    let closes = &i.summary.closes;
    let expected = expected_closes(i.scenario);
    let ok = |code: &str| allow.contains(&code) || expected.iter().any(|(c, _)| c == code);
    let counted: u64 = closes.iter().filter(|(k, _)| !ok(k)).map(|(_, n)| n).sum();
    let mut evidence = if counted == 0 {
        "no close the scenario did not cause".to_owned()
    } else {
        format!(
            "closes the scenario did not cause: {}",
            list(closes, |k| !ok(k), close_name)
        )
    };
    let tolerated = list(closes, ok, close_name);
    if !tolerated.is_empty() {
        let why: Vec<String> = expected
            .iter()
            .map(|(c, why)| format!("{c} for {why}"))
            .chain(allow.iter().map(|c| format!("{c} allowed")))
            .collect();
        evidence.push_str(&format!("; expected: {tolerated} ({})", why.join(", ")));
    }
    let keys: Vec<String> = closes
        .keys()
        .filter(|k| !ok(k))
        .map(|k| format!("closes/{k}"))
        .collect();
    Some(
        Finding::new(counted, i.summary.connections.attempts, evidence)
            .with_examples(keys.iter().flat_map(|k| i.examples.under(k))),
    )
}

pub(super) fn acks(i: &Inputs) -> Option<Finding> {
    let r = &i.summary.requests;
    let t = r.total();
    let evidence = if t.unacked == 0 {
        format!(
            "{} of {} requests acked, {} refused with an error, none left unanswered",
            thousands(t.acked),
            thousands(t.sent),
            thousands(t.refused)
        )
    } else {
        let part = |what: &str, c: &crate::report::RequestCounts| {
            format!("{what} {} of {}", thousands(c.unacked), thousands(c.sent))
        };
        format!(
            "never acknowledged although the connection stayed open (ACK-1): {}, {}, {}",
            part("publishes", &r.publishes),
            part("directs", &r.directs),
            part("subscribes", &r.subscribes)
        )
    };
    let evidence = if t.unsettled > 0 {
        format!(
            "{evidence}; {} more unanswered when their connection ended (judged by checks.closes)",
            thousands(t.unsettled)
        )
    } else {
        evidence
    };
    Some(Finding::new(t.unacked, t.sent, evidence).with_examples(i.examples.under("acks")))
}

pub(super) fn delivery(i: &Inputs) -> Option<Finding> {
    let s = i.summary;
    let sc = i.scenario;
    let rest_pubs = sc.rest.iter().any(|r| r.weights.publish > 0.0);
    let rest_sent = s
        .rest
        .as_ref()
        .and_then(|r| r.endpoints.get("publish"))
        .map_or(0, |e| e.requests);
    let planned = i.planned.publishers > 0 || rest_pubs;
    let start_s = sc
        .populations
        .iter()
        .filter_map(|p| p.publish.as_ref().map(|pb| pb.start.0.as_secs_f64()))
        .chain(sc.rest.iter().map(|r| r.start.0.as_secs_f64()))
        .fold(f64::INFINITY, f64::min);
    let sent = s.throughput.publishes + rest_sent;
    let d = &s.delivery.counts;
    let x = &s.directs.counts;
    let subs = &s.requests.subscribes;
    let mut problems = Vec::new();
    let why_nothing = || {
        let mut why = Vec::new();
        if s.connections.established == 0 {
            why.push("no peer connected".to_owned());
        } else if subs.sent > 0 && subs.acked == 0 {
            why.push(format!(
                "none of {} subscribes was acknowledged",
                thousands(subs.sent)
            ));
        }
        if s.requests.publishes.refused > 0 {
            why.push(format!(
                "{} publishes refused",
                thousands(s.requests.publishes.refused)
            ));
        }
        let ended = s.requests.publishes.unsettled;
        if ended > 0 {
            why.push(format!(
                "{} publishes unanswered when the server ended their connection within the grace",
                thousands(ended)
            ));
        }
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join("; "))
        }
    };
    // A stop shortens the run and its drain, so "nothing could be expected" says more
    // about the stop than about the server; what did arrive is still judged.
    let whole = !s.interrupted;
    if whole && planned && s.duration_s > start_s && sent == 0 {
        problems.push(format!(
            "no publish was sent although the scenario publishes from {start_s} s{}",
            why_nothing()
        ));
    }
    let expectable =
        i.planned.rooms_with_recipients > 0 || s.rest.as_ref().is_some_and(|r| r.rooms > 0);
    if whole && sent > 0 && d.expected == 0 && expectable {
        problems.push(format!(
            "{} publishes sent but no copy could be expected{}",
            thousands(sent),
            why_nothing()
        ));
    }
    if d.expected > 0 && d.delivered == 0 {
        problems.push(format!(
            "none of {} expected copies arrived",
            thousands(d.expected)
        ));
    }
    let dsent = s.throughput.directs_sent;
    if whole && dsent > 0 && x.expected == 0 && i.planned.rooms_with_directs > 0 {
        problems.push(format!(
            "{} directs sent but none could be expected ({} refused)",
            thousands(dsent),
            thousands(s.requests.directs.refused)
        ));
    }
    if x.expected > 0 && x.delivered == 0 {
        problems.push(format!(
            "none of {} expected directs arrived",
            thousands(x.expected)
        ));
    }
    let evidence = if problems.is_empty() {
        let mut e = format!(
            "{} publishes sent, {} copies expected, {} delivered",
            thousands(sent),
            thousands(d.expected),
            thousands(d.delivered)
        );
        if dsent > 0 {
            e.push_str(&format!(
                "; {} directs sent, {} expected, {} delivered",
                thousands(dsent),
                thousands(x.expected),
                thousands(x.delivered)
            ));
        }
        e
    } else {
        problems.join("; ")
    };
    Some(
        Finding::new(problems.len() as u64, 1, evidence)
            .with_examples(i.examples.under("acks/subscribe")),
    )
}

pub(super) fn lost(i: &Inputs) -> Option<Finding> {
    let (d, x) = (&i.summary.delivery.counts, &i.summary.directs.counts);
    let n = d.lost + x.lost;
    let evidence = format!(
        "{} of {} expected copies never arrived (channel messages {}, directs {})",
        thousands(n),
        thousands(d.expected + x.expected),
        thousands(d.lost),
        thousands(x.lost)
    );
    Some(Finding::new(n, d.expected + x.expected, evidence).with_examples(i.examples.under("lost")))
}

pub(super) fn duplicated(i: &Inputs) -> Option<Finding> {
    let (d, x) = (&i.summary.delivery.counts, &i.summary.directs.counts);
    let n = d.duplicated + x.duplicated;
    let evidence = format!(
        "{} extra copies of messages already received (channel messages {}, directs {})",
        thousands(n),
        thousands(d.duplicated),
        thousands(x.duplicated)
    );
    Some(
        Finding::new(n, d.delivered + x.delivered, evidence)
            .with_examples(i.examples.under("duplicated")),
    )
}

pub(super) fn reordered(i: &Inputs) -> Option<Finding> {
    let (d, x) = (&i.summary.delivery.counts, &i.summary.directs.counts);
    let n = d.reordered + x.reordered;
    let evidence = format!(
        "{} copies arrived after a later one from the same sender (ORD-5; channel messages {}, directs {})",
        thousands(n),
        thousands(d.reordered),
        thousands(x.reordered)
    );
    Some(
        Finding::new(n, d.delivered + x.delivered, evidence)
            .with_examples(i.examples.under("reordered")),
    )
}

pub(super) fn unexpected(i: &Inputs, allow: &[&str]) -> Option<Finding> {
    let s = i.summary;
    let frames = &s.unexpected_frames;
    let counted_frames: u64 = frames
        .iter()
        .filter(|(k, _)| !allow.contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    let foreign: u64 = FOREIGN.iter().filter_map(|k| frames.get(*k)).sum();
    let (d, x) = (&s.delivery.counts, &s.directs.counts);
    // Foreign frames are also unexpected copies: count them once.
    let copies = (d.unexpected + x.unexpected).saturating_sub(foreign);
    let mut parts = Vec::new();
    if counted_frames > 0 {
        parts.push(format!(
            "frames that fit no expectation: {}",
            list(frames, |k| !allow.contains(&k), no_name)
        ));
    }
    if copies > 0 {
        parts.push(format!(
            "copies that must not have arrived: {} (refused publishes, own publishes, other rooms, before subscribing)",
            thousands(copies)
        ));
    }
    let tolerated = list(frames, |k| allow.contains(&k), no_name);
    if !tolerated.is_empty() {
        parts.push(format!("tolerated: {tolerated}"));
    }
    let evidence = if parts.is_empty() {
        "no unexpected frames or copies".to_owned()
    } else {
        parts.join("; ")
    };
    let mut keys: Vec<String> = frames
        .keys()
        .filter(|k| !allow.contains(&k.as_str()))
        .map(|k| format!("unexpected/{k}"))
        .collect();
    keys.extend(
        ["copy", "stranger", "refused", "direct"]
            .iter()
            .map(|k| format!("unexpected/{k}")),
    );
    Some(
        Finding::new(
            counted_frames + copies,
            s.throughput.deliveries + s.throughput.directs_received,
            evidence,
        )
        .with_examples(keys.iter().flat_map(|k| i.examples.under(k))),
    )
}

pub(super) fn errors(i: &Inputs, allow: &[&str]) -> Option<Finding> {
    let s = i.summary;
    let sc = i.scenario;
    // A direct may find its target gone when peers leave: churn, storms, expiring
    // tokens, REST kicks.
    let targets_leave = !sc.storms.is_empty()
        || sc.rest.iter().any(|r| r.weights.kick > 0.0)
        || sc
            .populations
            .iter()
            .any(|p| p.session.is_some() || p.token.is_some());
    let directs = sc
        .populations
        .iter()
        .any(|p| p.direct.is_some() || p.call.is_some());
    let expected = |code: &str| code == "peer_not_found" && directs && targets_leave;
    let ok = |code: &str| allow.contains(&code) || expected(code);
    // Error frames answering oversized frames are judged by checks.oversized.
    let oversize: u64 = s
        .expectations
        .oversized
        .values()
        .map(|o| o.error_frame)
        .sum();
    let counted = s
        .errors
        .iter()
        .filter(|(k, _)| !ok(k))
        .map(|(_, n)| n)
        .sum::<u64>()
        .saturating_sub(oversize);
    let mut evidence = if counted == 0 {
        "no error frames the scenario did not cause".to_owned()
    } else {
        format!("error frames: {}", list(&s.errors, |k| !ok(k), no_name))
    };
    let tolerated = list(&s.errors, ok, no_name);
    if !tolerated.is_empty() {
        evidence.push_str(&format!("; tolerated: {tolerated}"));
    }
    if oversize > 0 {
        evidence.push_str(&format!(
            "; {} answered oversized frames (checks.oversized)",
            thousands(oversize)
        ));
    }
    let keys: Vec<String> = s
        .errors
        .keys()
        .filter(|k| !ok(k))
        .map(|k| format!("errors/{k}"))
        .collect();
    Some(
        Finding::new(counted, s.requests.total().sent, evidence)
            .with_examples(keys.iter().flat_map(|k| i.examples.under(k))),
    )
}

pub(super) fn aborted(i: &Inputs) -> Option<Finding> {
    let n = i.summary.connections.aborted;
    let evidence = if n == 0 {
        "every peer finished".to_owned()
    } else {
        format!(
            "{} of {} peers had to be aborted at the end (still busy in a send, a close or a flood, or failed); their accounting is lost",
            thousands(n),
            thousands(i.summary.peers)
        )
    };
    Some(Finding::new(n, i.summary.peers, evidence).with_examples(i.examples.under("aborted")))
}

pub(super) fn rest(i: &Inputs) -> Option<Finding> {
    if i.scenario.rest.is_empty() {
        return None;
    }
    let Some(r) = &i.summary.rest else {
        return Some(Finding::new(
            1,
            1,
            "the [[rest]] population reported nothing (goose did not finish)".into(),
        ));
    };
    let failures: u64 = r.endpoints.values().map(|e| e.failures).sum();
    let mut parts = Vec::new();
    if let Some(e) = &r.goose.error {
        parts.push(format!("goose failed: {e}"));
    }
    for (name, e) in &r.endpoints {
        if e.failures > 0 {
            let codes: Vec<String> = e
                .status_codes
                .iter()
                .filter(|(c, _)| !c.starts_with('2'))
                .map(|(c, n)| format!("{c} × {}", thousands(*n)))
                .collect();
            parts.push(format!(
                "{name}: {} of {} requests failed ({})",
                thousands(e.failures),
                thousands(e.requests),
                codes.join(", ")
            ));
        }
    }
    let count = failures + u64::from(r.goose.error.is_some());
    let evidence = if parts.is_empty() {
        format!(
            "{} requests sent, none failed",
            thousands(r.endpoints.values().map(|e| e.requests).sum())
        )
    } else {
        parts.join("; ")
    };
    Some(Finding::new(count, r.sent.max(1), evidence))
}

pub(super) fn expiry(i: &Inputs) -> Option<Finding> {
    if !i.scenario.populations.iter().any(|p| p.token.is_some()) {
        return None;
    }
    let t = &i.summary.expectations.token_expiry;
    let n = t.not_closed + t.closed_4002_off_time;
    let evidence = format!(
        "{} sessions saw their token expire: 4002 on time {}, off time {}, not closed {} (EXP-1)",
        thousands(t.expired_sessions),
        thousands(t.closed_4002_on_time),
        thousands(t.closed_4002_off_time),
        thousands(t.not_closed)
    );
    Some(Finding::new(n, t.expired_sessions, evidence))
}

pub(super) fn oversized(i: &Inputs) -> Option<Finding> {
    if !i.scenario.populations.iter().any(|p| p.oversize.is_some()) {
        return None;
    }
    let o = &i.summary.expectations.oversized;
    let n: u64 = o.values().map(|x| x.mismatched).sum();
    let sent: u64 = o.values().map(|x| x.sent).sum();
    let parts: Vec<String> = o
        .iter()
        .map(|(k, x)| {
            format!(
                "{k}: {} sent, {} accepted, {} closed 1009, {} error, {} other, {} not as expected",
                x.sent, x.accepted, x.closed_1009, x.error_frame, x.other, x.mismatched
            )
        })
        .collect();
    let evidence = if parts.is_empty() {
        "no oversized frame was sent".into()
    } else {
        parts.join("; ")
    };
    Some(Finding::new(n, sent, evidence))
}
