//! Truth tests of the load engine: the reference server injects known faults into channel
//! deliveries (a fixed fan-out delay, drops, duplicates, swaps), counts exactly what it
//! did, and the engine's report must say the same. Small runs: 100-200 peers, ~4 s each.
//! Runs in this file are serialized so they do not disturb each other's latencies.
//! A run with injected faults must also fail the built-in check that names them
//! (`checks.lost`, `checks.duplicated`, `checks.reordered`) and no other: the verdict is
//! part of the truth.

mod common;

use stampede::embedded::Inject;
use stampede::load::scenario::{Scenario, Source, parse};
use stampede::report::{CheckResult, Summary};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stable rooms (everyone subscribed before the first publish, nobody leaves before the
/// drain) with one publisher per room, so every copy the server makes is expected.
fn scenario(peers: u32, rate: f64) -> Scenario {
    let text = format!(
        r#"
name = "truth"
duration = "3500ms"
grace = "1s"
seed = 7
[[population]]
name = "m"
peers = {peers}
room_size = 10
channel = "truth/{{room}}"
ramp = "300ms"
[population.publish]
rate = {rate}
per_room = 1
start = "1s"
size = 80
"#
    );
    parse(&Source {
        origin: "truth.toml".into(),
        text,
    })
    .expect("truth scenario parses")
}

async fn run(inject: Inject, sc: Scenario) -> (Summary, stampede::embedded::InjectedCounts) {
    let (s, counts) = common::run_injected(inject, sc).await;
    assert_eq!(s.connections.failed, 0, "{:?}", s.connections);
    assert_eq!(s.delivery.counts.unexpected, 0, "{:?}", s.delivery);
    assert_eq!(s.delivery.counts.unaccounted, 0, "{:?}", s.delivery);
    assert!(s.delivery.counts.expected > 1000, "{:?}", s.delivery);
    (s, counts)
}

/// The checks that failed, by name.
fn failed(s: &Summary) -> Vec<&CheckResult> {
    s.checks.iter().filter(|c| !c.passed).collect()
}

/// Exactly `name` failed, counting `count`.
fn only_failed(s: &Summary, name: &str, count: u64) {
    let f = failed(s);
    assert_eq!(
        f.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec![name],
        "{f:#?}"
    );
    assert_eq!(f[0].count, count, "{:?}", f[0]);
    assert!(!f[0].examples.is_empty(), "{:?}", f[0]);
    assert_eq!(s.outcome, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_drops_are_reported_exactly_as_lost() {
    let _serial = SERIAL.lock().await;
    let inject = Inject {
        drop_rate: 0.05,
        seed: 11,
        ..Default::default()
    };
    let (s, truth) = run(inject, scenario(200, 20.0)).await;
    assert!(truth.dropped > 50, "{truth:?}");
    let d = s.delivery.counts;
    assert_eq!(d.lost, truth.dropped, "{d:?} vs {truth:?}");
    assert_eq!(d.delivered + d.lost, d.expected);
    assert_eq!(d.duplicated, 0);
    assert_eq!(d.reordered, 0);
    only_failed(&s, "lost", truth.dropped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_duplicates_are_counted_exactly() {
    let _serial = SERIAL.lock().await;
    let inject = Inject {
        dup_rate: 0.05,
        seed: 12,
        ..Default::default()
    };
    let (s, truth) = run(inject, scenario(200, 20.0)).await;
    assert!(truth.duplicated > 50, "{truth:?}");
    let d = s.delivery.counts;
    assert_eq!(d.duplicated, truth.duplicated, "{d:?} vs {truth:?}");
    assert_eq!(d.lost, 0);
    assert_eq!(d.delivered, d.expected);
    assert_eq!(d.reordered, 0);
    only_failed(&s, "duplicated", truth.duplicated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_swaps_are_counted_exactly_as_reordered() {
    let _serial = SERIAL.lock().await;
    let inject = Inject {
        reorder_rate: 0.05,
        seed: 13,
        ..Default::default()
    };
    let (s, truth) = run(inject, scenario(200, 20.0)).await;
    assert!(truth.reordered > 50, "{truth:?}");
    let d = s.delivery.counts;
    assert_eq!(d.reordered, truth.reordered, "{d:?} vs {truth:?}");
    assert_eq!(d.lost, 0);
    assert_eq!(d.duplicated, 0);
    assert_eq!(d.delivered, d.expected);
    only_failed(&s, "reordered", truth.reordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_fanout_delay_shows_in_the_median() {
    let _serial = SERIAL.lock().await;
    // Light load, so the median is the path, not queueing. The machine is shared with
    // other work, which can shift one run's median; up to three attempts.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (base, _) = run(Inject::default(), scenario(100, 10.0)).await;
        let (delayed, _) = run(
            Inject {
                fanout_delay_ms: 20,
                ..Default::default()
            },
            scenario(100, 10.0),
        )
        .await;
        assert_eq!(delayed.delivery.counts.lost, 0);
        // A slower server is not a wrong one: no check fails.
        assert!(failed(&base).is_empty() && failed(&delayed).is_empty());
        let b = base.latency.fanout_us.p50 as i64;
        let d = delayed.latency.fanout_us.p50 as i64;
        // The server releases each copy from a dedicated wake-up thread at its deadline
        // (src/server/delay.rs), so the shift is the injected 20 ms within the issue's 1 ms.
        let extra = d - b - 20_000;
        if (-1_000..=1_000).contains(&extra) {
            return;
        }
        seen.push(format!(
            "baseline p50 {b} µs, delayed p50 {d} µs (shift {} µs)",
            d - b
        ));
    }
    panic!("expected a shift of 20 ms ± 1 ms: {seen:?}");
}
