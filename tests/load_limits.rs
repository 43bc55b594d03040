//! Server limits are named in plain words (HTTP 429 at upgrade, close 4011), and rooms
//! spread over several `--target` servers stay exactly accounted.

use std::process::Command;

use stampede::embedded::{EmbeddedServer, Options};
use stampede::load::scenario::{Source, parse};
use stampede::report::Summary;
use stampede::shutdown::Stop;

fn scenario(text: &str) -> stampede::load::scenario::Scenario {
    parse(&Source {
        origin: "t.toml".into(),
        text: text.into(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_at_upgrade_is_explained() {
    // Default RATE-5: 60 connection attempts per source IP per minute; 120 peers exceed it.
    let server = EmbeddedServer::start(Options::default()).await.unwrap();
    let sc = scenario(
        r#"
name = "t"
duration = "2s"
grace = "500ms"
[[population]]
name = "m"
peers = 120
room_size = 10
"#,
    );
    let (_keep, stop) = Stop::never();
    let run = stampede::load::run_scenario(sc, server.target(), stop)
        .await
        .unwrap();
    server.shutdown().await;
    let s = Summary::from_run(&run);
    assert!(
        s.connections.failures.get("http_429").copied().unwrap_or(0) > 0,
        "{:?}",
        s.connections
    );
    let advice = s
        .warnings
        .iter()
        .find(|w| w.message.contains("HTTP 429"))
        .unwrap_or_else(|| panic!("{:?}", s.warnings));
    assert!(
        advice.message.contains("--ip-connect-limit 0"),
        "{}",
        advice.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_4011_is_explained() {
    // A per-connection bucket of 2 frames/s, burst 4, and peers publishing 20/s.
    let server = EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        rate: Some((2, 4)),
        ..Default::default()
    })
    .await
    .unwrap();
    let sc = scenario(
        r#"
name = "t"
duration = "2s"
grace = "500ms"
[[population]]
name = "m"
peers = 20
room_size = 10
[population.publish]
rate = 20.0
"#,
    );
    let (_keep, stop) = Stop::never();
    let run = stampede::load::run_scenario(sc, server.target(), stop)
        .await
        .unwrap();
    server.shutdown().await;
    let s = Summary::from_run(&run);
    assert!(
        s.closes.get("4011").copied().unwrap_or(0) > 0,
        "{:?}",
        s.closes
    );
    let advice = s
        .warnings
        .iter()
        .find(|w| w.message.starts_with("close 4011"))
        .unwrap_or_else(|| panic!("{:?}", s.warnings));
    assert!(advice.message.contains("rate limit"), "{}", advice.message);
    // Refused or cut-off publishes are never counted as lost.
    assert_eq!(s.delivery.counts.lost, 0, "{:?}", s.delivery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_several_targets() {
    let a = EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let b = EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let (ua, ub) = (a.target().ws_url.clone(), b.target().ws_url.clone());
    let res = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_stampede"))
            .args([
                "run",
                "smoke",
                "--quiet",
                "--peers",
                "100",
                "--duration",
                "2500ms",
            ])
            .args(["--target", &ua, "--target", &ub, "--out"])
            .arg(&out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["target"]["urls"].as_array().unwrap().len(), 2);
    assert_eq!(s["delivery"]["lost"], 0);
    assert_eq!(s["delivery"]["delivered"], s["delivery"]["expected"]);
    assert!(s["delivery"]["expected"].as_u64().unwrap() > 100);
}
