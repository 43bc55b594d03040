//! The verdict of `stampede run` through the real CLI: the built-in checks fail a run
//! against a server that misbehaves and name the check (`--allow` relaxes it), and stops
//! are bounded: Ctrl-C writes the report and exits 130, a second Ctrl-C writes
//! summary.json at once, and a server flooding its peers cannot hold a stop past 3 s.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use stampede::embedded::{EmbeddedServer, Options};
use tokio_tungstenite::tungstenite::Message;

fn stampede() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {}", s["checks"]))
}

/// Runs `smoke` (small) against the reference server with `fault`, plus `extra` flags.
async fn run_against_fault(fault: &str, extra: &[&str], dir: &Path) -> Output {
    let server = EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        faults: vec![fault.into()],
        ..Default::default()
    })
    .await
    .expect("server starts");
    let url = server.target().ws_url.clone();
    let mut cmd = stampede();
    cmd.args([
        "run",
        "smoke",
        "--quiet",
        "--peers",
        "40",
        "--duration",
        "2500ms",
    ])
    .args(["--target", &url, "--out"])
    .arg(dir)
    .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    server.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_acks_publishes_fails_checks_acks() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_against_fault("ack-missing-publish", &[], &dir.path().join("r")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED checks.acks"), "{}", text(&out));
    let s = summary(&dir.path().join("r"));
    assert_eq!(s["outcome"], "failed");
    assert_eq!(s["checks_passed"], false);
    let acks = check(&s, "acks");
    assert_eq!(acks["passed"], false);
    assert!(acks["count"].as_u64().unwrap() > 0, "{acks}");
    assert!(!acks["examples"].as_array().unwrap().is_empty(), "{acks}");
    let p = &s["requests"]["publishes"];
    assert_eq!(p["unacked"], p["sent"], "{p}");
    // The unacked publishes still count as sent: their copies are expected and arrived.
    assert!(
        s["delivery"]["expected"].as_u64().unwrap() > 0,
        "{}",
        s["delivery"]
    );
    assert_eq!(s["delivery"]["lost"], 0, "{}", s["delivery"]);
    // Only acks failed: the server delivered everything.
    for c in s["checks"].as_array().unwrap() {
        assert!(c["passed"] == true || c["name"] == "acks", "{c}");
    }

    // Tolerated on the command line: the same server passes, and the check says so.
    let out = run_against_fault(
        "ack-missing-publish",
        &["--allow", "acks"],
        &dir.path().join("a"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = summary(&dir.path().join("a"));
    let acks = check(&s, "acks");
    assert_eq!(
        (acks["passed"].clone(), acks["enabled"].clone()),
        (true.into(), false.into())
    );
    let scenario = std::fs::read_to_string(dir.path().join("a/scenario.toml")).unwrap();
    assert!(
        scenario.contains("[checks]") && scenario.contains("acks = \"off\""),
        "{scenario}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_the_scenario_did_not_cause_fail_checks_closes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_against_fault("close-1011", &[], &dir.path().join("r")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = summary(&dir.path().join("r"));
    let closes = check(&s, "closes");
    assert_eq!(closes["passed"], false, "{closes}");
    assert!(
        closes["evidence"].as_str().unwrap().contains("1011 ×"),
        "{closes}"
    );
    assert!(
        closes["examples"][0]
            .as_str()
            .unwrap()
            .contains("1011 (internal_error"),
        "{closes}"
    );
}

#[test]
fn a_bad_allow_exits_2_with_the_forms() {
    let out = stampede()
        .args(["run", "smoke", "--allow", "clozes:4011"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("unknown check `clozes`") && t.contains("CHECK:A,B"),
        "{t}"
    );
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits for `child` to exit, at most `limit`; the exit code and how long it took.
fn wait(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn long_run(dir: &Path, target: Option<&str>) -> Child {
    let mut cmd = stampede();
    cmd.args([
        "run",
        "smoke",
        "--quiet",
        "--peers",
        "40",
        "--duration",
        "60s",
        "--out",
    ])
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    cmd.spawn().unwrap()
}

#[test]
fn ctrl_c_writes_the_report_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let mut child = long_run(&out, None);
    std::thread::sleep(Duration::from_secs(2));
    sigint(&child);
    let (code, took) = wait(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
    let s = summary(&out);
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["outcome"], "interrupted");
    assert_eq!(s["stopped_early"], true);
    assert!(
        s["throughput"]["publishes"].as_u64().unwrap() > 0,
        "{}",
        s["throughput"]
    );
    assert!(out.join("report.html").exists() && out.join("timeseries.csv").exists());
}

#[test]
fn a_second_ctrl_c_writes_summary_json_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let mut child = long_run(&out, None);
    std::thread::sleep(Duration::from_secs(2));
    sigint(&child);
    std::thread::sleep(Duration::from_millis(100));
    sigint(&child);
    let (code, took) = wait(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(1),
        "the urgent stop took {took:?}"
    );
    let s = summary(&out);
    assert_eq!(s["outcome"], "interrupted");
    assert!(s["connections"]["established"].as_u64().unwrap() > 0);
}

/// A server that welcomes every connection, then floods it with pings and foreign
/// messages and never reads again (so close frames and pongs go unanswered).
async fn flooding_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut tx, _rx) = ws.split();
                let welcome = r#"{"type":"welcome","peerId":"flooded","expiresAt":null,"serverTime":0,"maxMessageSize":65536}"#;
                if tx.send(Message::text(welcome)).await.is_err() {
                    return;
                }
                let foreign = r#"{"type":"message","channel":"x","from":"y","data":"not yours"}"#;
                loop {
                    if tx.send(Message::Ping(Vec::new().into())).await.is_err()
                        || tx.send(Message::text(foreign)).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_against_a_flooding_server_takes_under_3_s() {
    let url = flooding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let (code, took) = tokio::task::spawn_blocking(move || {
        let mut child = long_run(&out, Some(&url));
        std::thread::sleep(Duration::from_secs(3));
        sigint(&child);
        let r = wait(&mut child, Duration::from_secs(20));
        (r, out)
    })
    .await
    .map(|((code, took), out)| {
        let s = summary(&out);
        assert_eq!(s["outcome"], "interrupted");
        // What the flood did is on record even though the run was stopped.
        let u = check(&s, "unexpected");
        assert_eq!(u["passed"], false, "{u}");
        (code, took)
    })
    .unwrap();
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_server_fails_the_run_on_time() {
    let url = flooding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let started = Instant::now();
    let o = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            stampede()
                .args([
                    "run",
                    "smoke",
                    "--quiet",
                    "--peers",
                    "40",
                    "--duration",
                    "2s",
                ])
                .args(["--target", &url, "--out"])
                .arg(&out)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // 2 s of run + 1 s of drain + the closes the server never answers (bounded).
    assert!(took < Duration::from_secs(8), "the run took {took:?}");
    let s = summary(&out);
    let u = check(&s, "unexpected");
    assert_eq!(u["passed"], false, "{u}");
    assert!(
        u["evidence"]
            .as_str()
            .unwrap()
            .contains("message_not_from_this_run"),
        "{u}"
    );
    // Ping control frames are answered by the WebSocket layer; a flood of them is named.
    assert!(
        u["evidence"].as_str().unwrap().contains("ping_flood"),
        "{u}"
    );
    assert!(
        s["delivery"]["unexpected"].as_u64().unwrap() > 0,
        "{}",
        s["delivery"]
    );
    assert_eq!(check(&s, "acks")["passed"], false);
}
