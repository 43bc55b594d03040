//! `stampede report` and `stampede compare` on synthetic run directories: a summary.json, a
//! tagged interval log written with hdrhistogram's IntervalLogWriter, a timeseries.csv and a
//! scenario.toml, shaped like the load engine's output. Set STAMPEDE_KEEP_FIXTURES=DIR to keep
//! the directories (and their rendered pages) for a look in a browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const SECONDS: u64 = 10;

fn stats(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(), "min": h.min(), "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max(), "mean": h.mean(),
    })
}

/// Writes a run directory shaped like the load engine's (`stampede.summary/1`: one
/// `<metric>.hlog` per metric, `timeseries.csv` with its columns, `files` listing them) whose
/// fan-out latencies are shifted by `extra_fanout_us`.
fn write_run(dir: &Path, seed: u64, extra_fanout_us: u64, lost: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut exp = |mean: f64| -> u64 { (-mean * (1.0 - rng.random::<f64>()).ln()) as u64 };
    // (metric, floor µs, mean of the exponential tail µs, samples per second, seconds with samples)
    let metrics: [(&str, u64, f64, u64, u64); 4] = [
        ("fanout", 1_200 + extra_fanout_us, 900.0, 2_000, SECONDS),
        ("ack", 300, 250.0, 200, SECONDS),
        ("connect", 900, 600.0, 100, 2),
        ("presence", 1_500, 1_200.0, 60, SECONDS),
    ];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let mut totals = Vec::new();
    let mut per_second: Vec<Vec<Histogram<u64>>> = Vec::new();
    for (name, floor, mean, per_s, active_s) in metrics {
        let mut log = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!("stampede {name} latency, µs"))
            .with_start_time(t0)
            .with_base_time(t0)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut log, &mut ser)
            .unwrap();
        let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut secs = Vec::new();
        for s in 0..SECONDS {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            if s < active_s {
                for _ in 0..per_s {
                    h.record(floor + exp(mean)).unwrap();
                }
            }
            w.write_histogram(
                &h,
                Duration::from_secs(s),
                Duration::from_secs(1),
                Tag::new(name),
            )
            .unwrap();
            total.add(&h).unwrap();
            secs.push(h);
        }
        std::fs::write(dir.join(format!("{name}.hlog")), log).unwrap();
        totals.push(total);
        per_second.push(secs);
    }
    let mut csv = String::from(
        "second,phase,connected,connect_attempts,connects,connect_failures,disconnects,publishes,deliveries,directs_sent,directs_received,presence_events,acks,errors,closes,unexpected_frames,fanout_p50_us,fanout_p99_us,fanout_max_us,ack_p99_us,presence_p99_us,schedule_lag_p99_us,harness_cpu_percent\n",
    );
    for (s, f) in per_second[0].iter().enumerate() {
        let connects = if s < 2 { 100 } else { 0 };
        csv.push_str(&format!(
            "{s},{},{},{connects},{connects},0,0,200,{},0,0,60,200,{},{},0,{},{},{},{},{},{},{:.1}\n",
            if s < 2 { "ramp" } else { "hold" },
            100 * (s + 1).min(2),
            f.len(),
            u64::from(s == 6),
            u64::from(s == 6),
            f.value_at_quantile(0.5),
            f.value_at_quantile(0.99),
            f.max(),
            per_second[1][s].value_at_quantile(0.99),
            per_second[3][s].value_at_quantile(0.99),
            150 + 10 * s,
            35.0 + s as f64
        ));
    }
    std::fs::write(dir.join("timeseries.csv"), csv).unwrap();
    std::fs::write(
        dir.join("scenario.toml"),
        "name = \"typing-storm\"\nduration = \"10s\"\nseed = 7\n\n[[population]]\nname = \"typists\"\ncount = 200\nrooms = 10\npublish = { rate_per_sec = 1.0, arrivals = \"poisson\", payload_bytes = 64 }\n",
    )
    .unwrap();
    let delivered = totals[0].len();
    let delivery = json!({"expected": delivered + lost, "delivered": delivered, "lost": lost, "duplicated": 0,
                          "reordered": 0, "unexpected": 0, "unaccounted": 0,
                          "loss_ratio": lost as f64 / (delivered + lost) as f64});
    let p99 = totals[0].value_at_quantile(0.99);
    let summary = json!({
        "schema": "stampede.summary/1",
        "scenario": "typing-storm",
        "scenario_file": "builtin:typing-storm",
        "target": {"embedded": true, "urls": ["ws://127.0.0.1:41234/v1"]},
        "started_at": "2026-11-18T09:46:40Z",
        "peers": 200, "workers": 1, "seed": 7,
        "duration_s": SECONDS, "planned_duration_s": SECONDS, "grace_s": 1.0, "stopped_early": false,
        "latency": {
            "fanout_us": stats(&totals[0]), "ack_us": stats(&totals[1]),
            "connect_us": stats(&totals[2]), "presence_us": stats(&totals[3]),
            "direct_us": {"count": 0, "min": 0, "p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0, "mean": 0.0},
        },
        "schedule_lag_us": {"count": 2000, "min": 3, "p50": 40, "p90": 90, "p99": 210, "p999": 400, "max": 900, "mean": 52.5},
        "throughput": {"publishes": 2000, "publishes_per_s": 200.0, "deliveries": delivered,
                       "deliveries_per_s": delivered as f64 / SECONDS as f64, "acks": 2000},
        "delivery": delivery,
        "delivery_by_population": {"typists": delivery},
        "directs": {"expected": 0, "delivered": 0, "lost": 0, "duplicated": 0, "reordered": 0, "loss_ratio": 0.0},
        "directs_by_population": {},
        "errors": {"rate_limited": 1},
        "closes": {"1000": 199, "4011": 1},
        "unexpected_frames": {},
        "connections": {"attempts": 200, "established": 200, "failed": 0, "failures": {}, "peak_connected": 200},
        "harness": {"cpu_s": 4.1, "cpu_percent": 41.0, "cores": 2, "rss_peak_bytes": 48_000_000, "rss_per_peer_bytes": 9_800},
        "valid": true,
        "invalid_reasons": [],
        "warnings": [],
        "thresholds": [
            {"rule": "fanout.p99<50ms", "metric": "latency.fanout_us.p99", "op": "<", "limit": 50_000.0, "unit": "us", "actual": p99, "passed": p99 < 50_000},
            {"rule": "delivery.lost==0", "metric": "delivery.lost", "op": "==", "limit": 0.0, "unit": "", "actual": lost, "passed": lost == 0},
        ],
        "thresholds_passed": p99 < 50_000 && lost == 0,
        "files": {"timeseries": "timeseries.csv", "scenario": "scenario.toml",
                  "hlog": ["fanout.hlog", "ack.hlog", "connect.hlog", "presence.hlog"], "percentiles": []},
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
}

struct Fixture {
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    match std::env::var_os("STAMPEDE_KEEP_FIXTURES") {
        Some(d) => {
            let root = PathBuf::from(d).join(name);
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Fixture { _tmp: None, root }
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            Fixture {
                _tmp: Some(tmp),
                root,
            }
        }
    }
}

fn stampede(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .output()
        .expect("run stampede")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// No `http://` or `https://` anywhere except the SVG namespace attribute.
fn assert_self_contained(html: &str) {
    let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !stripped.contains("http://") && !stripped.contains("https://"),
        "external URL in page"
    );
    assert!(
        !stripped.contains("src=\"") && !stripped.contains("<link"),
        "external resource in page"
    );
    assert!(html.contains("<svg"));
}

#[test]
fn compare_a_with_itself_holds() {
    let f = fixture("same");
    let a = f.root.join("a");
    write_run(&a, 1, 0, 0);
    let a = a.to_str().unwrap();
    let out = stampede(&[
        "compare",
        a,
        a,
        "--fail-on",
        "fanout.p99>+10%",
        "--fail-on",
        "lost>0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("latency.fanout_us.p99") && t.contains("0 of 2 fail-on rules triggered"),
        "{t}"
    );
}

#[test]
fn a_20ms_fanout_regression_fails_the_named_rule() {
    let f = fixture("regression");
    let (a, b) = (f.root.join("base"), f.root.join("delayed"));
    write_run(&a, 1, 0, 0);
    write_run(&b, 2, 20_000, 0);
    let junit = f.root.join("junit.xml");
    let out = stampede(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-on",
        "fanout.p99>+10%",
        "--fail-on",
        "lost>0",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("fail-on rule `fanout.p99>+10%` triggered"),
        "{t}"
    );
    assert!(t.contains("ok    lost>0"), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"2\"") && xml.contains("failures=\"1\""),
        "{xml}"
    );

    let html = std::fs::read_to_string(b.join("compare.html")).unwrap();
    assert_self_contained(&html);
    assert!(
        html.contains("BASE: p50") && html.contains("NEW: p50"),
        "both runs overlaid"
    );
    assert!(html.contains("FAIL"));

    let out = stampede(&["report", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(b.join("report.html")).unwrap();
    assert_self_contained(&html);
    for needle in [
        "Delivery",
        "typists",
        "Fan-out latency",
        "99.999%",
        "Connected peers",
        "4011",
        "over message rate",
        "name = &quot;typing-storm&quot;",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
}

#[test]
fn could_not_run_exits_2_with_reasons() {
    let f = fixture("errors");
    let a = f.root.join("a");
    write_run(&a, 1, 0, 0);
    let a = a.to_str().unwrap();
    let missing = f.root.join("nope");
    let out = stampede(&["compare", a, missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no summary.json"), "{}", text(&out));

    let out = stampede(&["compare", a, a, "--fail-on", "fanout.p99>10%"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("needs a sign") && t.contains("METRIC>+N%"),
        "{t}"
    );

    let out = stampede(&["compare", a, a, "--fail-on", "fanuot.p99>+10%"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("unknown metric `fanuot.p99`"),
        "{}",
        text(&out)
    );

    std::fs::write(f.root.join("a/summary.json"), "{\"scenario\": ").unwrap();
    let out = stampede(&["report", a]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("invalid JSON in") && text(&out).contains("line 1"),
        "{}",
        text(&out)
    );
}
