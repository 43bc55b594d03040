//! The call checks: `calls` (every negotiation a join started finished) and `signalling`
//! (every signalling message arrived in the order it was sent).

use super::Inputs;
use super::findings::Finding;
use crate::report::fmt_us;
use crate::report::text::thousands;

pub(super) fn calls(i: &Inputs) -> Option<Finding> {
    let c = i.summary.calls.as_ref()?;
    // Silence is not success: pairs started and none negotiated is a failure too.
    let none = c.pairs > 0 && c.negotiated == 0 && c.failed == 0;
    let count = c.failed + u64::from(none);
    let mut evidence = if none {
        format!(
            "{} pair negotiations started and none finished",
            thousands(c.pairs)
        )
    } else if c.failed > 0 {
        format!(
            "{} calls not negotiated within the timeout ({} sides waited in vain)",
            thousands(c.failed),
            thousands(c.failed_sides)
        )
    } else {
        format!(
            "{} negotiations finished, {} of {} meshes ready",
            thousands(c.negotiated),
            thousands(c.meshes_ready),
            thousands(c.meshes)
        )
    };
    let l = &i.summary.latency;
    if l.mesh_ready_us.count > 0 {
        evidence.push_str(&format!(
            "; mesh-ready p50 {} p99 {}, negotiation p50 {} p99 {}",
            fmt_us(l.mesh_ready_us.p50),
            fmt_us(l.mesh_ready_us.p99),
            fmt_us(l.negotiation_us.p50),
            fmt_us(l.negotiation_us.p99)
        ));
    }
    if c.cut_off + c.abandoned > 0 {
        evidence.push_str(&format!(
            "; not judged: {} cut off by the end of the run, {} abandoned by a member leaving",
            thousands(c.cut_off),
            thousands(c.abandoned)
        ));
    }
    Some(Finding::new(count, c.pairs, evidence).with_examples(i.examples.under("calls/failed")))
}

pub(super) fn signalling(i: &Inputs) -> Option<Finding> {
    let c = i.summary.calls.as_ref()?;
    let sent: u64 = c.sent.values().sum();
    let evidence = if c.out_of_order == 0 {
        format!("{} signalling messages, none out of order", thousands(sent))
    } else {
        format!(
            "{} signalling messages arrived after a later one from the same connection (an answer before its offer, a candidate before its description break a call)",
            thousands(c.out_of_order)
        )
    };
    Some(
        Finding::new(c.out_of_order, sent, evidence)
            .with_examples(i.examples.under("calls/out_of_order")),
    )
}
