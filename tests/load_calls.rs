//! The call model (`[population.call]`) against the reference server: a small video-rooms
//! run passes with every signalling message delivered once and in order, and truth tests
//! where the server perturbs `direct` copies in known, counted ways: a fixed delay grows
//! pair negotiation by the one-way trips the model makes × the delay; swaps show as
//! exactly as many out-of-order signalling messages; drops leave calls that cannot finish,
//! counted and named as failed calls. Runs are serialized so latencies do not mix.

mod common;

use stampede::embedded::Inject;
use stampede::load::scenario::{Scenario, Source, parse};
use stampede::report::Summary;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scenario(text: &str) -> Scenario {
    parse(&Source {
        origin: "calls.toml".into(),
        text: text.into(),
    })
    .expect("scenario parses")
}

async fn run(inject: Inject, sc: Scenario) -> (Summary, stampede::embedded::InjectedCounts) {
    let (s, counts) = common::run_injected(inject, sc).await;
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections);
    (s, counts)
}

fn failed_checks(s: &Summary) -> Vec<&str> {
    s.checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect()
}

/// Video rooms of 4 (both sides offer: glare on every pair), a renegotiation after join,
/// and a 10 % drop-and-rejoin storm: every check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_video_rooms_pass_with_every_message_once_and_in_order() {
    let _serial = SERIAL.lock().await;
    let sc = scenario(
        r#"
name = "video-rooms-small"
duration = "9s"
grace = "2s"
seed = 5
[[population]]
name = "callers"
peers = 120
room_size = 4
assign = "random"
channel = "video/{room}"
ramp = "3s"
[population.call]
renegotiate = { after = "500ms", round_trips = 2 }
[[storm]]
at = "5s"
drop = 0.1
mode = "abort"
backoff = { initial = "300ms", max = "2s", jitter = 0.2 }
[thresholds]
"calls.failed" = "==0"
"mesh_ready.p99" = "<2s"
"#,
    );
    let (s, _) = run(Inject::default(), sc).await;
    assert_eq!(failed_checks(&s), Vec::<&str>::new(), "{:#?}", s.checks);
    assert!(s.thresholds_passed, "{:?}", s.thresholds);
    let c = s.calls.as_ref().expect("calls reported");
    // 30 rooms of 4 fill up: 6 pairs each, plus the pairs of members who rejoined.
    assert!(c.pairs >= 180, "{c:?}");
    assert_eq!(c.negotiated, c.pairs - c.abandoned - c.cut_off, "{c:?}");
    assert_eq!((c.failed, c.out_of_order, c.stale), (0, 0, 0), "{c:?}");
    assert!(c.glare > 0 && c.glare == c.ignored_offers, "{c:?}");
    assert!(c.meshes_ready > 0 && c.renegotiations > 0, "{c:?}");
    let d = s.directs.counts;
    assert_eq!((d.lost, d.duplicated, d.reordered), (0, 0, 0), "{d:?}");
    assert!(d.delivered > 3000, "{d:?}");
    assert!(s.latency.mesh_ready_us.count > 0 && s.latency.negotiation_us.count > 0);
    // Each kind is timed at its receipt; only messages to members that left go unreceived.
    let received = s.latency.offer_us.count
        + s.latency.answer_us.count
        + s.latency.candidate_us.count
        + s.latency.track_meta_us.count;
    let sent: u64 = c.sent.values().sum();
    assert!(received <= sent && sent - received <= d.unaccounted + c.peer_not_found);
}

/// Rooms of 2, only the newcomer offers, fixed candidate count and spacing: negotiation
/// is the offer's trip, the answer's trip and the answerer's fixed trickle.
fn pairs_of_two(extra: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "calls-truth"
duration = "5s"
grace = "1s"
seed = 9
[[population]]
name = "callers"
peers = 200
room_size = 2
channel = "truth/{{room}}"
ramp = "1500ms"
[population.call]
offers = "newcomer"
track_meta = false
candidates = 3
candidate_spacing = "10ms"
{extra}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_delay_grows_negotiation_by_the_trips_times_the_delay() {
    let _serial = SERIAL.lock().await;
    let reneg = r#"renegotiate = { after = "300ms", round_trips = 2 }"#;
    let (base, _) = run(Inject::default(), pairs_of_two(reneg)).await;
    let delay_ms = 20;
    let (slow, _) = run(
        Inject {
            fanout_delay_ms: delay_ms,
            directs: true,
            ..Default::default()
        },
        pairs_of_two(reneg),
    )
    .await;
    for s in [&base, &slow] {
        assert_eq!(failed_checks(s), Vec::<&str>::new(), "{:#?}", s.checks);
        assert_eq!(s.calls.as_ref().unwrap().negotiated, 100);
    }
    let d = delay_ms as f64 * 1000.0;
    let grew = |f: fn(&Summary) -> f64| f(&slow) - f(&base);
    // Offer → answer (the answerer's trickle follows the answer on the same path).
    let neg = grew(|s| s.latency.negotiation_us.p50 as f64);
    assert!((neg - 2.0 * d).abs() <= 2000.0, "negotiation grew {neg} µs");
    // The newcomer's mesh is its one pair.
    let mesh = grew(|s| s.latency.mesh_ready_us.p50 as f64);
    assert!(
        (mesh - 2.0 * d).abs() <= 2000.0,
        "mesh-ready grew {mesh} µs"
    );
    // Two offer/answer round trips.
    let re = grew(|s| s.latency.renegotiation_us.p50 as f64);
    eprintln!(
        "delay {delay_ms} ms on every direct: negotiation p50 grew {:.2} ms (2 trips), mesh-ready {:.2} ms (2 trips), renegotiation {:.2} ms (4 trips)",
        neg / 1e3,
        mesh / 1e3,
        re / 1e3
    );
    assert!((re - 4.0 * d).abs() <= 2000.0, "renegotiation grew {re} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_swaps_are_counted_exactly_as_out_of_order_signalling() {
    let _serial = SERIAL.lock().await;
    let (s, truth) = run(
        Inject {
            reorder_rate: 0.1,
            directs: true,
            seed: 21,
            ..Default::default()
        },
        // Both sides offer: every kind of message is in play.
        scenario(
            r#"
name = "calls-swaps"
duration = "5s"
grace = "1s"
seed = 4
[[population]]
name = "callers"
peers = 160
room_size = 4
channel = "swap/{room}"
ramp = "1500ms"
[population.call]
"#,
        ),
    )
    .await;
    let c = s.calls.as_ref().unwrap();
    eprintln!(
        "server swapped {} directs; out of order {}",
        truth.reordered, c.out_of_order
    );
    assert!(truth.reordered > 20, "{truth:?}");
    assert_eq!(c.out_of_order, truth.reordered, "{c:?} vs {truth:?}");
    assert_eq!(s.directs.counts.reordered, truth.reordered);
    let failed = failed_checks(&s);
    assert!(failed.contains(&"signalling"), "{failed:?}");
    let check = s.checks.iter().find(|x| x.name == "signalling").unwrap();
    assert_eq!(check.count, truth.reordered);
    assert!(!check.examples.is_empty(), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_loss_leaves_failed_calls_counted_and_named() {
    let _serial = SERIAL.lock().await;
    let (s, truth) = run(
        Inject {
            drop_rate: 0.03,
            directs: true,
            seed: 33,
            ..Default::default()
        },
        pairs_of_two(r#"timeout = "1500ms""#),
    )
    .await;
    let c = s.calls.as_ref().unwrap();
    eprintln!(
        "server dropped {} directs; lost {}; failed sides {}; failed calls {}; negotiated {}",
        truth.dropped, s.directs.counts.lost, c.failed_sides, c.failed, c.negotiated
    );
    assert!(truth.dropped > 5, "{truth:?}");
    assert_eq!(s.directs.counts.lost, truth.dropped);
    // Every message of a newcomer-offer negotiation is awaited: each side that lost one
    // gave up. Two losses on one side make one failed side.
    assert!(
        c.failed_sides >= 1 && c.failed_sides <= truth.dropped,
        "{c:?}"
    );
    assert!(c.failed >= 1 && c.failed <= c.failed_sides, "{c:?}");
    let check = s.checks.iter().find(|x| x.name == "calls").unwrap();
    assert!(!check.passed && check.count == c.failed, "{check:?}");
    assert!(
        check.examples.iter().all(|e| e.contains("not negotiated")),
        "{check:?}"
    );
    assert!(!check.examples.is_empty());
}
