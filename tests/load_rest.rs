//! The `[[rest]]` population (goose) against the in-process reference server: REST
//! publishes reach the WebSocket listeners as `system` messages, their fan-out is measured
//! and accounted exactly (checked against the server's own injected drops and duplicates),
//! and goose's per-endpoint request metrics land in the summary.
//! One test function: goose's killswitch is process-wide, so attacks must not overlap.

use stampede::embedded::{EmbeddedServer, Inject, Options, Tls};
use stampede::load::scenario::{Scenario, Source, parse};
use stampede::report::Summary;
use stampede::shutdown::Stop;

fn scenario(weights: &str) -> Scenario {
    let text = format!(
        r#"
name = "rest-truth"
duration = "4s"
grace = "1s"
seed = 3
[[population]]
name = "listeners"
peers = 120
room_size = 12
channel = "rest/{{room}}"
ramp = "300ms"
peer_metadata = {{ name = "l-{{peer}}" }}
[[rest]]
population = "listeners"
users = 4
rate = 60.0
arrival = "poisson"
start = "1s"
size = 128
[rest.weights]
{weights}
"#
    );
    parse(&Source {
        origin: "rest.toml".into(),
        text,
    })
    .expect("scenario parses")
}

async fn run(
    inject: Inject,
    sc: Scenario,
    tls: Option<Tls>,
) -> (Summary, stampede::embedded::InjectedCounts) {
    let server = EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        inject,
        tls,
        ..Default::default()
    })
    .await
    .expect("server starts");
    let (_keep, stop) = Stop::never();
    let data = stampede::load::run_scenario(sc, server.target(), stop)
        .await
        .expect("run completes");
    let counts = server.injected();
    server.shutdown().await;
    (Summary::from_run(&data), counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_population_publishes_reads_kicks_and_is_accounted_exactly() {
    // 1. Clean server, all three endpoints.
    let (s, _) = run(
        Inject::default(),
        scenario("publish = 10.0\npeers = 2.0\nkick = 0.3"),
        None,
    )
    .await;
    let rest = s.rest.as_ref().expect("rest section");
    assert!(rest.goose.error.is_none(), "{:?}", rest.goose);
    assert!(rest.planned > 100, "{rest:?}");
    assert_eq!(rest.sent + rest.skipped, rest.planned, "{rest:?}");
    let publish = &rest.endpoints["publish"];
    assert!(publish.requests > 80, "{publish:?}");
    assert_eq!(publish.failures, 0, "{publish:?}");
    assert_eq!(publish.status_codes.get("200"), Some(&publish.requests));
    assert!(publish.response_us.count > 0 && publish.response_us.p50 > 0);
    assert_eq!(publish.path, "/v1/channels/:id/publish");
    assert!(rest.endpoints["peers"].requests > 0, "{rest:?}");
    assert_eq!(rest.endpoints["peers"].failures, 0, "{rest:?}");
    assert!(rest.endpoints.contains_key("kick"), "{rest:?}");
    assert_eq!(rest.endpoints["kick"].failures, 0, "{rest:?}");
    // Kicked listeners were closed with 4020.
    assert!(
        s.closes.get("4020").copied().unwrap_or(0) > 0,
        "{:?}",
        s.closes
    );
    // System messages: measured in their own histogram, every expected copy delivered.
    assert!(s.latency.system_fanout_us.count > 0);
    assert_eq!(s.latency.fanout_us.count, 0, "no peer publishes here");
    assert!(rest.delivery.expected > 500, "{:?}", rest.delivery);
    assert_eq!(rest.delivery.lost, 0, "{:?}", rest.delivery);
    assert_eq!(rest.delivery.duplicated, 0);
    assert_eq!(rest.delivery.reordered, 0);
    assert_eq!(s.delivery.counts.unexpected, 0, "{:?}", s.delivery);
    assert_eq!(s.delivery.counts.expected, rest.delivery.expected);
    // The server sent at least every expected copy (REST-33 counts connections).
    assert!(rest.publish_delivered >= rest.delivery.expected);

    // 2. The server drops and duplicates copies: the accounting must say exactly so.
    let (s, counts) = run(
        Inject {
            drop_rate: 0.03,
            dup_rate: 0.02,
            seed: 11,
            ..Default::default()
        },
        scenario("publish = 1.0"),
        None,
    )
    .await;
    let rest = s.rest.as_ref().expect("rest section");
    assert!(counts.dropped > 0 && counts.duplicated > 0, "{counts:?}");
    assert_eq!(s.delivery.counts.unaccounted, 0, "{:?}", s.delivery);
    assert_eq!(rest.delivery.lost, counts.dropped, "{:?}", rest.delivery);
    assert_eq!(
        rest.delivery.duplicated, counts.duplicated,
        "{:?}",
        rest.delivery
    );
    assert_eq!(
        rest.delivery.expected,
        rest.delivery.delivered + rest.delivery.lost
    );

    // 3. Over TLS: goose publishes over https:// with the run's TLS configuration while
    // the listeners receive over wss://; every copy still arrives exactly once.
    let (s, _) = run(
        Inject::default(),
        scenario("publish = 1.0\npeers = 0.2"),
        Some(Tls::SelfSigned),
    )
    .await;
    let rest = s.rest.as_ref().expect("rest section");
    assert!(rest.goose.error.is_none(), "{:?}", rest.goose);
    let publish = &rest.endpoints["publish"];
    assert!(publish.requests > 80, "{publish:?}");
    assert_eq!(publish.failures, 0, "{publish:?}");
    assert_eq!(publish.status_codes.get("200"), Some(&publish.requests));
    assert_eq!(rest.endpoints["peers"].failures, 0, "{rest:?}");
    assert!(rest.delivery.expected > 500, "{:?}", rest.delivery);
    assert_eq!(rest.delivery.lost, 0, "{:?}", rest.delivery);
    assert_eq!(rest.delivery.duplicated, 0);
    assert!(s.latency.connect_us.count >= 120);
}
