//! The CLI's promises about bad input: exit 2 with a message naming file, line and field
//! (or the URL), within seconds; thresholds decide exit 0 or 1.

use std::process::Command;
use std::time::{Duration, Instant};

fn stampede() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
}

#[test]
fn malformed_scenario_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\nduration = \"5s\"\n\n[[population]]\nname = \"m\"\npeers = 10\nroom_size = 5\n\n[population.publish]\nrate = 2\narival = \"poisson\"\n",
    )
    .unwrap();
    let res = stampede()
        .arg("run")
        .arg(&path)
        .arg("--quiet")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}:11:")), "{err}");
    assert!(err.contains("population[0].publish"), "{err}");
    assert!(err.contains("arival"), "{err}");

    std::fs::write(
        &path,
        "name = \"bad\"\nduration = \"5s\"\n[[population]]\nname = \"m\"\npeers = 10\nroom_size = 5\n[population.publish]\nrate = 0.0\n",
    )
    .unwrap();
    let res = stampede().arg("run").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{file}:8:")), "{err}");
    assert!(err.contains("`population[0].publish.rate`"), "{err}");
}

#[test]
fn unreachable_target_exits_2_within_seconds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/v1");
    let started = Instant::now();
    let res = stampede()
        .args(["run", "smoke", "--quiet", "--target", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains(&url), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

#[test]
fn bad_flags_exit_2_with_the_expected_form() {
    let res = stampede()
        .args(["run", "smoke", "--threshold", "fanout.p99 50ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("METRIC OP VALUE"), "{err}");
    let res = stampede().args(["run", "no-such-thing"]).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("typing-storm"), "{err}");
    let res = stampede()
        .args(["run", "smoke", "--duration", "5 parsecs"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
}

#[test]
fn broken_threshold_exits_1_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let res = stampede()
        .args([
            "run",
            "smoke",
            "--quiet",
            "--peers",
            "40",
            "--duration",
            "2s",
            "--threshold",
            "fanout.p99<1us",
            "--out",
        ])
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&res.stdout);
    assert_eq!(res.status.code(), Some(1), "{out}");
    assert!(out.contains("BROKEN fanout.p99<1us"), "{out}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["thresholds_passed"], false);
    let rule = s["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rule"] == "fanout.p99<1us")
        .unwrap();
    assert_eq!(rule["passed"], false);
}

#[test]
fn scenarios_lists_every_builtin() {
    let res = stampede().arg("scenarios").output().unwrap();
    let out = String::from_utf8_lossy(&res.stdout);
    assert_eq!(res.status.code(), Some(0));
    for name in [
        "smoke",
        "typing-storm",
        "presence-churn",
        "chat-room",
        "dm-storm",
        "reconnect-storm",
        "oversized-frames",
    ] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    let res = stampede().args(["scenarios", "smoke"]).output().unwrap();
    assert!(String::from_utf8_lossy(&res.stdout).contains("[[population]]"));
}

#[test]
fn runs_that_cannot_fit_the_socket_limit_are_refused_up_front() {
    // 50,000 peers with the in-process server need ~100k descriptors in one process.
    if stampede::metrics::sys::max_open_files().is_none_or(|n| n > 100_000) {
        eprintln!("skipped: this machine allows more than 100k descriptors per process");
        return;
    }
    let res = stampede()
        .args(["run", "idle-hold", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
    assert!(err.contains("--target"), "{err}");
}

#[test]
fn credentials_the_in_process_server_would_ignore_are_refused() {
    let res = stampede()
        .args([
            "run", "smoke", "--quiet", "--key-id", "sk_id_x", "--secret", "wrong",
        ])
        .env_remove("STAMPEDE_KEY_ID")
        .env_remove("STAMPEDE_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--key-id, --secret only apply to servers given with --target"),
        "{err}"
    );
    let res = stampede()
        .args(["run", "smoke", "--quiet"])
        .env("STAMPEDE_SECRET", "wrong")
        .env_remove("STAMPEDE_KEY_ID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("--secret (from STAMPEDE_SECRET)"), "{err}");
}

#[test]
fn peer_counts_past_the_socket_limit_are_refused_before_the_plan_is_built() {
    if stampede::metrics::sys::max_open_files().is_none_or(|n| n > 1_000_000) {
        eprintln!("skipped: this machine allows more than 1M descriptors per process");
        return;
    }
    let started = Instant::now();
    let res = stampede()
        .args(["run", "smoke", "--quiet", "--peers", "10000000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The largest child this test process has waited for: with the 10M-peer plan built
    // first it was ~570 MB; every other run here stays far below.
    // SAFETY: getrusage fills a zeroed, properly sized struct.
    let maxrss_kb = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    assert!(maxrss_kb < 300 * 1024, "a child reached {maxrss_kb} KiB");
}
