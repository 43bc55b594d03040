use super::*;

fn src(text: &str) -> Source {
    Source {
        origin: "t.toml".into(),
        text: text.into(),
    }
}

const MINIMAL: &str = r#"
name = "t"
duration = "10s"

[[population]]
name = "members"
peers = 100
room_size = 10

[population.publish]
rate = 2.5
arrival = "poisson"
size = { dist = "uniform", min = 64, max = 128 }
"#;

#[test]
fn every_builtin_parses_and_validates() {
    for (name, text) in BUILTIN {
        let s = parse(&Source {
            origin: format!("builtin:{name}"),
            text: (*text).into(),
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&s.name, name);
        assert!(!s.description.is_empty(), "{name} has no description");
    }
}

#[test]
fn minimal_parses_with_defaults() {
    let s = parse(&src(MINIMAL)).unwrap();
    assert_eq!(s.grace, Dur::secs(2));
    let p = &s.populations[0];
    assert_eq!(p.room_count(), 10);
    assert_eq!(p.channel_name(3), "room-3");
    let pb = p.publish.as_ref().unwrap();
    assert_eq!(pb.arrival, Arrival::Poisson);
    assert_eq!(pb.size, SizeDist::Uniform { min: 64, max: 128 });
    assert!(pb.ack);
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = MINIMAL.replace("rate = 2.5", "rate = 2.5\nrat = 3");
    let e = parse(&src(&text)).unwrap_err().to_string();
    assert!(e.starts_with("t.toml:12:"), "{e}");
    assert!(e.contains("unknown field `rat`"), "{e}");
    assert!(e.contains("population[0].publish"), "{e}");
}

#[test]
fn wrong_type_names_the_field() {
    let text = MINIMAL.replace("peers = 100", "peers = \"many\"");
    let e = parse(&src(&text)).unwrap_err().to_string();
    assert!(e.starts_with("t.toml:7:"), "{e}");
    assert!(e.contains("`population[0].peers`"), "{e}");
}

#[test]
fn bad_duration_is_explained() {
    let text = MINIMAL.replace("\"10s\"", "\"10 parsecs\"");
    let e = parse(&src(&text)).unwrap_err().to_string();
    assert!(e.starts_with("t.toml:3:"), "{e}");
    assert!(e.contains("`duration`"), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn semantic_error_points_at_the_line() {
    let text = MINIMAL.replace("rate = 2.5", "rate = -1.0");
    let e = parse(&src(&text)).unwrap_err().to_string();
    assert!(e.starts_with("t.toml:11:"), "{e}");
    assert!(e.contains("`population[0].publish.rate`"), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = parse(&src("name = \"x\"\nduration = \n"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t.toml:2:"), "{e}");
}

#[test]
fn thresholds_table_flattens_quoted_and_dotted_keys() {
    let text =
        format!("{MINIMAL}\n[thresholds]\n\"fanout.p99\" = \"<50ms\"\ndelivery.lost = \"==0\"\n");
    let s = parse(&src(&text)).unwrap();
    let mut rules = s.thresholds.0.clone();
    rules.sort();
    assert_eq!(rules, vec!["delivery.lost==0", "fanout.p99<50ms"]);
    // and back to TOML
    let again: Scenario = toml::from_str(&s.to_toml()).unwrap();
    let mut back = again.thresholds.0;
    back.sort();
    assert_eq!(back, rules);
}

#[test]
fn overrides_fold_in_through_one_path() {
    let text =
        MINIMAL.to_owned() + "\n[[population]]\nname = \"talkers\"\npeers = 10\nroom_size = 10\n";
    let mut s = parse(&src(&text)).unwrap();
    s.apply(&Overrides {
        peers: Some(55),
        duration: Some(Duration::from_secs(3)),
        rate: Some(7.0),
        seed: Some(9),
        ramp: Some(Duration::from_millis(250)),
        thresholds: vec!["delivery.lost==0".into()],
        allow: vec!["closes:4011".into()],
    });
    assert_eq!(s.peers(), 55);
    assert_eq!(s.checks.get("closes").unwrap().allow, vec!["4011"]);
    assert_eq!(s.populations[0].peers, 50);
    assert_eq!(s.populations[1].peers, 5);
    assert_eq!(s.duration, Dur::secs(3));
    assert_eq!(s.populations[0].publish.as_ref().unwrap().rate, Some(7.0));
    assert_eq!(s.seed, 9);
    assert_eq!(s.populations[1].ramp, Dur::millis(250));
    assert_eq!(s.thresholds.0, vec!["delivery.lost==0"]);
    s.validate().unwrap();
}

#[test]
fn scenario_round_trips_through_toml() {
    for (name, text) in BUILTIN {
        let s: Scenario = toml::from_str(text).unwrap();
        let again: Scenario =
            toml::from_str(&s.to_toml()).unwrap_or_else(|e| panic!("{name}: {e}\n{}", s.to_toml()));
        assert_eq!(again.to_toml(), s.to_toml(), "{name}");
    }
}

#[test]
fn resolve_finds_builtins_and_reports_missing_files() {
    assert_eq!(resolve("smoke").unwrap().origin, "builtin:smoke");
    let e = resolve("nope/missing.toml").unwrap_err().to_string();
    assert!(e.contains("cannot read scenario nope/missing.toml"), "{e}");
    let e = resolve("no-such-scenario").unwrap_err().to_string();
    assert!(e.contains("typing-storm"), "{e}");
}

#[test]
fn calls_take_sdk_defaults_and_name_bad_fields() {
    let ok = "name = \"c\"\nduration = \"5s\"\n[[population]]\nname = \"p\"\npeers = 8\nroom_size = 4\n[population.call]\n";
    let s = parse(&src(ok)).unwrap();
    let c = s.populations[0].call.as_ref().unwrap();
    assert_eq!(c.offers, Offers::Both);
    assert!(c.track_meta && c.renegotiate.is_none());
    assert_eq!(c.timeout, Dur::secs(10));
    // The largest SDP plus its envelope fits the write limit.
    assert!(s.largest_frame(65536) >= 6000 + 256);
    for (extra, field) in [
        ("candidates = 500", "population[0].call.candidates"),
        ("offers = \"maybe\"", "population[0].call.offers"),
        ("timeout = \"0s\"", "population[0].call.timeout"),
    ] {
        let e = parse(&src(&format!("{ok}{extra}\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{extra}: {e}");
    }
    let one = ok.replace("room_size = 4", "room_size = 1");
    let e = parse(&src(&one)).unwrap_err().to_string();
    assert!(e.contains("rooms of 2 to 50"), "{e}");
}
