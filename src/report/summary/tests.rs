use super::*;

#[test]
fn summary_breaks_connect_down_and_reports_tls() {
    let s = Summary::from_run(&tls_run_for_tests(false));
    assert_eq!(s.latency.connect_us.count, 200);
    assert_eq!(s.latency.tcp_connect_us.min, 90);
    assert_eq!(s.latency.tls_handshake_us.min, 600);
    assert_eq!(s.latency.ws_upgrade_us.min, 350);
    assert_eq!(s.latency.welcome_us.min, 250);
    let tls = s.tls.as_ref().expect("tls");
    assert_eq!(
        tls.handshakes,
        TlsHandshakes {
            total: 200,
            full: 150,
            resumed: 50,
            resumed_ratio: 0.25,
            failed: 3,
        }
    );
    assert!(!tls.insecure);
    assert!(
        s.warnings.iter().all(|w| w.message != INSECURE_WARNING),
        "{:?}",
        s.warnings
    );
    let json = serde_json::to_value(&s).unwrap();
    for lat in [
        "tcp_connect_us",
        "tls_handshake_us",
        "ws_upgrade_us",
        "welcome_us",
    ] {
        for k in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(json["latency"][lat].get(k).is_some(), "{lat}.{k}");
        }
    }
    assert_eq!(json["tls"]["resumption"], "per-peer");
    assert_eq!(json["tls"]["handshakes"]["resumed"], 50);
    assert_eq!(json["tls"]["by_version"]["TLSv1.3"], 200);
    assert_eq!(json["tls"]["by_group"]["X25519MLKEM768"], 200);
    let back: Summary = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn insecure_runs_carry_the_warning_first() {
    let s = Summary::from_run(&tls_run_for_tests(true));
    assert!(s.tls.as_ref().unwrap().insecure);
    assert_eq!(s.warnings[0].message, INSECURE_WARNING);
    assert_eq!(s.warnings[0].count, 200);
    assert_eq!(
        s.warnings.len(),
        2,
        "the TLS advice stays: {:?}",
        s.warnings
    );
}

#[test]
fn plain_runs_have_empty_phases_and_no_tls() {
    let s = Summary::from_run(&RunData::default());
    assert_eq!(s.latency.tls_handshake_us, Stats::default());
    let json = serde_json::to_value(&s).unwrap();
    assert!(json.get("tls").is_none());
    assert!(json["latency"]["tls_handshake_us"].get("p99").is_some());
}

#[test]
fn summaries_from_before_tls_still_load() {
    let mut json = serde_json::to_value(Summary::from_run(&RunData::default())).unwrap();
    let lat = json["latency"].as_object_mut().unwrap();
    for k in [
        "tcp_connect_us",
        "tls_handshake_us",
        "ws_upgrade_us",
        "welcome_us",
    ] {
        lat.remove(k);
    }
    let old: Summary = serde_json::from_value(json).unwrap();
    assert_eq!(old.latency.welcome_us.count, 0);
    assert!(old.tls.is_none());
}

#[test]
fn merge_adds_everything_and_aligns_seconds() {
    let mut a = RunData::default();
    let mut h = Hist::default();
    h.0.record(100).unwrap();
    a.hists.insert("fanout".into(), h.clone());
    a.delivery.insert(
        "m".into(),
        Delivery {
            expected: 5,
            delivered: 5,
            ..Default::default()
        },
    );
    a.intervals.push(Interval {
        second: 0,
        connected: 3,
        ..Default::default()
    });
    a.errors.insert("peer_not_found".into(), 1);
    let mut b = a.clone();
    b.intervals[0].second = 1;
    a.merge(&b);
    a.finish();
    assert_eq!(a.hist(Metric::Fanout).0.len(), 2);
    assert_eq!(a.delivery["m"].expected, 10);
    assert_eq!(a.intervals.len(), 2);
    assert_eq!(a.errors["peer_not_found"], 2);
    assert_eq!(a.connections.peak_connected, 3);
}

#[test]
fn summary_flags_invalid_runs() {
    let mut run = RunData {
        max_lag_p99_us: 20_000,
        max_cpu_share: 0.9,
        ran_s: 10.0,
        ..Default::default()
    };
    let mut lag = Hist::default();
    lag.0.record(50_000).unwrap();
    run.hists.insert("schedule_lag".into(), lag);
    let s = Summary::from_run(&run);
    assert!(!s.valid);
    assert!(
        s.invalid_reasons[0].contains("fell behind"),
        "{:?}",
        s.invalid_reasons
    );
    let json = serde_json::to_value(&s).unwrap();
    for key in [
        "scenario",
        "target",
        "peers",
        "duration_s",
        "latency",
        "schedule_lag_us",
        "delivery",
        "errors",
        "closes",
        "valid",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    for lat in ["fanout_us", "ack_us", "connect_us", "presence_us"] {
        let l = &json["latency"][lat];
        for k in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(l.get(k).is_some(), "{lat}.{k}");
        }
    }
    for k in ["expected", "delivered", "lost", "duplicated", "reordered"] {
        assert!(json["delivery"].get(k).is_some(), "{k}");
    }
    let back: Summary = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}
