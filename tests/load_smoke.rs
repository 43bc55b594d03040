//! Runs scenarios/smoke.toml (3 s, 200 peers) through the real CLI against the in-process
//! server and checks the invariants of a healthy run and the shape of the report.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn stampede() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
}

/// Runs `stampede ARGS --out DIR`, requires exit 0 and returns DIR's summary.json.
fn run_ok(args: &[&str], dir: &Path) -> Value {
    let res = stampede()
        .args(args)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    summary(dir)
}

fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

fn check_healthy(s: &Value) {
    let d = &s["delivery"];
    assert!(d["expected"].as_u64().unwrap() > 1000, "{d}");
    assert_eq!(d["delivered"], d["expected"], "{d}");
    for k in ["lost", "duplicated", "reordered", "unexpected"] {
        assert_eq!(d[k], 0, "delivery.{k}: {d}");
    }
    assert_eq!(s["directs"]["lost"], 0, "{}", s["directs"]);
    assert_eq!(s["connections"]["failed"], 0);
    assert_eq!(s["thresholds_passed"], true, "{}", s["thresholds"]);
    assert_eq!(s["checks_passed"], true, "{}", s["checks"]);
    assert_eq!(s["outcome"], "passed");
    let r = &s["requests"];
    for kind in ["publishes", "directs", "subscribes"] {
        assert_eq!(r[kind]["acked"], r[kind]["sent"], "requests.{kind}: {r}");
        assert_eq!(r[kind]["unacked"], 0, "requests.{kind}: {r}");
    }
    assert!(
        s["errors"].as_object().unwrap().is_empty(),
        "{}",
        s["errors"]
    );
}

#[test]
fn smoke_scenario_runs_clean_and_writes_the_report() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let res = stampede()
        .args(["run", "scenarios/smoke.toml", "--quiet", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(stdout.contains("delivery"), "{stdout}");

    let s = summary(&dir);
    assert_eq!(s["schema"], "stampede.summary/1");
    assert_eq!(s["scenario"], "smoke");
    assert_eq!(s["peers"], 200);
    assert_eq!(s["target"]["embedded"], true);
    for key in ["fanout_us", "ack_us", "connect_us", "presence_us"] {
        let l = &s["latency"][key];
        for stat in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(l[stat].is_number(), "latency.{key}.{stat}: {l}");
        }
        assert!(
            l["count"].as_u64().unwrap() > 0,
            "latency.{key} has no samples"
        );
    }
    for stat in ["count", "p50", "p99"] {
        assert!(s["schedule_lag_us"][stat].is_number());
    }
    assert!(s["valid"].is_boolean());
    assert!(s["duration_s"].as_f64().unwrap() >= 2.9);
    check_healthy(&s);

    for f in [
        "timeseries.csv",
        "scenario.toml",
        "fanout.hlog",
        "percentiles-fanout.csv",
        "connect.hlog",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let ts = std::fs::read_to_string(dir.join("timeseries.csv")).unwrap();
    assert!(ts.starts_with("second,phase,connected,"), "{ts}");
    assert!(ts.lines().count() >= 4, "{ts}");
    // The report reads back for later renderers.
    let back = stampede::report::read_run_dir(&dir).unwrap();
    assert_eq!(back.summary.scenario, "smoke");
    assert_eq!(
        back.hists["fanout"].0.len(),
        s["latency"]["fanout_us"]["count"].as_u64().unwrap()
    );
}

#[test]
fn two_workers_merge_into_one_exact_report() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let s = run_ok(&["run", "smoke", "--workers", "2", "--quiet"], &dir);
    assert_eq!(s["workers"], 2);
    assert_eq!(s["peers"], 200);
    assert_eq!(s["connections"]["established"], 200);
    check_healthy(&s);
    let fanout = s["latency"]["fanout_us"]["count"].as_u64().unwrap();
    assert_eq!(s["throughput"]["deliveries"].as_u64().unwrap(), fanout);
}

/// The smoke scenario over `wss://` (the in-process server with a generated
/// certificate): every copy delivered once, every connect a measured TLS handshake.
#[test]
fn smoke_scenario_over_wss_delivers_every_copy_once() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let s = run_ok(&["run", "smoke", "--tls", "--quiet"], &dir);
    assert!(
        s["target"].to_string().contains("wss://"),
        "{}",
        s["target"]
    );
    check_healthy(&s);
    let connects = s["connections"]["established"].as_u64().unwrap();
    assert_eq!(connects, 200);
    for phase in [
        "tcp_connect_us",
        "tls_handshake_us",
        "ws_upgrade_us",
        "welcome_us",
    ] {
        assert_eq!(
            s["latency"][phase]["count"].as_u64(),
            Some(connects),
            "latency.{phase}"
        );
    }
    assert!(dir.join("tls_handshake.hlog").is_file());
}

/// Two worker processes against the in-process TLS server: the coordinator hands its
/// certificate to the workers, and the merge stays exact.
#[test]
fn two_workers_over_wss_merge_into_one_exact_report() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let s = run_ok(
        &["run", "smoke", "--tls", "--workers", "2", "--quiet"],
        &dir,
    );
    assert_eq!(s["workers"], 2);
    assert_eq!(s["connections"]["established"], 200);
    check_healthy(&s);
}
