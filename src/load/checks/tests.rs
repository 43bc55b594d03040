use std::collections::BTreeMap;

use super::*;
use crate::load::scenario::{Source, parse};
use crate::report::{DeliveryOut, RequestCounts};

fn scenario(extra: &str) -> Scenario {
    let text = format!(
        "name = \"t\"\nduration = \"5s\"\ngrace = \"1s\"\n[[population]]\nname = \"m\"\npeers = 20\nroom_size = 10\n[population.publish]\nrate = 1.0\nstart = \"1s\"\n{extra}"
    );
    parse(&Source {
        origin: "t.toml".into(),
        text,
    })
    .unwrap()
}

/// A clean run: everything sent was acked and delivered once.
fn healthy() -> Summary {
    let mut s = Summary {
        peers: 20,
        duration_s: 5.0,
        ..Default::default()
    };
    s.connections.attempts = 20;
    s.connections.established = 20;
    s.connections.peers_connected = 20;
    s.throughput.publishes = 100;
    s.throughput.deliveries = 900;
    s.requests.publishes = RequestCounts {
        sent: 100,
        acked: 100,
        ..Default::default()
    };
    s.requests.subscribes = RequestCounts {
        sent: 20,
        acked: 20,
        ..Default::default()
    };
    s.delivery = DeliveryOut::from(crate::report::Delivery {
        expected: 900,
        delivered: 900,
        ..Default::default()
    });
    s
}

fn planned() -> Planned {
    Planned {
        publishers: 20,
        rooms_with_recipients: 2,
        rooms_with_directs: 0,
    }
}

fn run(sc: &Scenario, s: &Summary, ex: &Examples) -> BTreeMap<String, CheckResult> {
    evaluate(&Inputs {
        scenario: sc,
        summary: s,
        examples: ex,
        planned: &planned(),
    })
    .into_iter()
    .map(|c| (c.name.clone(), c))
    .collect()
}

#[test]
fn a_clean_run_passes_every_check() {
    let c = run(&scenario(""), &healthy(), &Examples::default());
    assert_eq!(c.len(), NAMES.len());
    for (name, r) in &c {
        assert!(r.passed && r.enabled, "{name}: {r:?}");
    }
    assert!(c["rest"].evidence.starts_with("not applicable"));
}

#[test]
fn a_server_that_acks_and_delivers_nothing_fails() {
    let mut s = healthy();
    s.requests.publishes = RequestCounts {
        sent: 100,
        unacked: 100,
        ..Default::default()
    };
    s.delivery = DeliveryOut::from(crate::report::Delivery {
        expected: 900,
        lost: 900,
        ..Default::default()
    });
    let mut ex = Examples::default();
    ex.note("acks/publish", || "peer r-1: publish p0 …".into());
    ex.note("lost", || "peer #0 seq 0 → peer #1".into());
    let c = run(&scenario(""), &s, &ex);
    assert!(!c["acks"].passed, "{:?}", c["acks"]);
    assert!(
        c["acks"].evidence.contains("publishes 100 of 100"),
        "{:?}",
        c["acks"]
    );
    assert_eq!(c["acks"].examples, vec!["peer r-1: publish p0 …"]);
    assert!(!c["lost"].passed && c["lost"].count == 900);
    assert!(!c["delivery"].passed);
    assert!(
        c["delivery"]
            .evidence
            .contains("none of 900 expected copies arrived")
    );
}

#[test]
fn nothing_sent_because_no_subscribe_was_acked() {
    let mut s = healthy();
    s.throughput.publishes = 0;
    s.requests.publishes = RequestCounts::default();
    s.requests.subscribes = RequestCounts {
        sent: 20,
        unacked: 20,
        ..Default::default()
    };
    s.delivery = DeliveryOut::default();
    let c = run(&scenario(""), &s, &Examples::default());
    let d = &c["delivery"];
    assert!(!d.passed);
    assert!(
        d.evidence.contains("no publish was sent") && d.evidence.contains("none of 20 subscribes"),
        "{d:?}"
    );
    assert!(!c["acks"].passed);
}

#[test]
fn closes_the_scenario_causes_are_expected_the_others_fail() {
    let mut s = healthy();
    s.closes.insert("4002".into(), 40);
    let token = scenario("[population.token]\nttl = \"2s\"\n");
    let c = run(&token, &s, &Examples::default());
    assert!(c["closes"].passed, "{:?}", c["closes"]);
    assert!(
        c["closes"].evidence.contains("4002 × 40"),
        "{:?}",
        c["closes"]
    );
    s.closes.insert("1006".into(), 7);
    let mut ex = Examples::default();
    ex.note("closes/1006", || "t=1 s peer r-1 session 1: 1006".into());
    ex.note("closes/4002", || "t=2 s peer r-2: 4002".into());
    let c = run(&token, &s, &ex);
    let closes = &c["closes"];
    assert!(!closes.passed && closes.count == 7, "{closes:?}");
    assert!(
        closes.evidence.contains("1006 × 7 (abnormal)"),
        "{closes:?}"
    );
    assert_eq!(closes.examples, vec!["t=1 s peer r-1 session 1: 1006"]);
    // Without expiring tokens, 4002 is the server's doing.
    let c = run(&scenario(""), &s, &ex);
    assert_eq!(c["closes"].count, 47);
    // Allowed codes, in the scenario or with --allow.
    let c = run(
        &scenario("[checks]\ncloses = { allow = [1006, 4002] }\n"),
        &s,
        &ex,
    );
    assert!(c["closes"].passed, "{:?}", c["closes"]);
    // An allowed close code also allows the connect failure it causes.
    s.connections.failed = 3;
    s.connections.failures.insert("close_4010".into(), 3);
    let c = run(
        &scenario("[checks]\ncloses = { allow = [4010] }\n"),
        &s,
        &ex,
    );
    assert!(c["connections"].passed, "{:?}", c["connections"]);
    let c = run(&scenario(""), &s, &ex);
    assert!(!c["connections"].passed);
}

#[test]
fn foreign_messages_count_once() {
    let mut s = healthy();
    s.unexpected_frames
        .insert("message_not_from_this_run".into(), 2_000);
    s.unexpected_frames.insert("binary_frame".into(), 3);
    s.delivery.counts.unexpected = 2_000;
    let c = run(&scenario(""), &s, &Examples::default());
    let u = &c["unexpected"];
    assert_eq!(u.count, 2_003, "{u:?}");
    assert!(
        u.evidence.contains("message_not_from_this_run × 2,000"),
        "{u:?}"
    );
    let c = run(
        &scenario("[checks]\nunexpected = { allow = [\"binary_frame\"] }\n"),
        &s,
        &Examples::default(),
    );
    assert_eq!(c["unexpected"].count, 2_000);
}

#[test]
fn tolerances_counts_shares_and_off() {
    let mut s = healthy();
    s.delivery.counts.lost = 5;
    s.delivery.counts.delivered = 895;
    let c = run(
        &scenario("[checks]\nlost = \"<=5\"\n"),
        &s,
        &Examples::default(),
    );
    assert!(c["lost"].passed && c["lost"].limit == "<=5");
    let c = run(
        &scenario("[checks]\nlost = \"<1%\"\n"),
        &s,
        &Examples::default(),
    );
    assert!(c["lost"].passed, "5 of 900 is 0.56%");
    let c = run(
        &scenario("[checks]\nlost = \"<0.5%\"\n"),
        &s,
        &Examples::default(),
    );
    assert!(!c["lost"].passed);
    let c = run(
        &scenario("[checks]\nlost = \"off\"\n"),
        &s,
        &Examples::default(),
    );
    assert!(c["lost"].passed && !c["lost"].enabled && c["lost"].limit == "off");
}

#[test]
fn directs_to_peers_that_leave_may_find_them_gone() {
    let mut s = healthy();
    s.errors.insert("peer_not_found".into(), 4);
    let churn = scenario(
        "[population.direct]\nrate = 1.0\n[population.session]\nduration = \"2s\"\ngap = \"1s\"\n",
    );
    assert!(run(&churn, &s, &Examples::default())["errors"].passed);
    let stable = scenario("[population.direct]\nrate = 1.0\n");
    let c = run(&stable, &s, &Examples::default());
    assert!(!c["errors"].passed && c["errors"].evidence.contains("peer_not_found × 4"));
}

#[test]
fn a_rest_population_that_failed_fails_checks_rest() {
    let sc = scenario("[[rest]]\npopulation = \"m\"\nrate = 5.0\n");
    let mut s = healthy();
    assert!(
        !run(&sc, &s, &Examples::default())["rest"].passed,
        "no report at all"
    );
    let mut r = crate::load::rest::RestReport {
        sent: 50,
        ..Default::default()
    };
    r.endpoints.insert(
        "publish".into(),
        crate::load::rest::EndpointStats {
            requests: 50,
            successes: 47,
            failures: 3,
            status_codes: BTreeMap::from([("200".into(), 47), ("503".into(), 3)]),
            ..Default::default()
        },
    );
    s.rest = Some(r.clone());
    let c = run(&sc, &s, &Examples::default());
    assert!(!c["rest"].passed);
    assert!(
        c["rest"]
            .evidence
            .contains("publish: 3 of 50 requests failed (503 × 3)"),
        "{:?}",
        c["rest"]
    );
    r.endpoints.clear();
    r.goose.error = Some("cannot start the goose thread".into());
    s.rest = Some(r);
    let c = run(&sc, &s, &Examples::default());
    assert!(
        c["rest"].evidence.contains("goose failed: cannot start"),
        "{:?}",
        c["rest"]
    );
    assert!(!c["rest"].passed);
}
