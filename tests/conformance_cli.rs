//! The `stampede conform` command line: exit codes, error messages and report formats.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn stampede(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .env_remove("STAMPEDE_KEY_ID")
        .env_remove("STAMPEDE_SECRET")
        .env_remove("STAMPEDE_PUBLISHABLE_KEY")
        .output()
        .expect("stampede runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn unreachable_target_exits_2_quickly() {
    let started = Instant::now();
    let o = stampede(&["conform", "--target", "ws://127.0.0.1:9/v1"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the target ws://127.0.0.1:9/v1"),
        "{err}"
    );
}

#[test]
fn bad_target_urls_exit_2() {
    let o = stampede(&["conform", "--target", "http://127.0.0.1:9/v1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected a ws:// or wss:// URL"),
        "{}",
        stderr(&o)
    );
    let o = stampede(&["conform", "--target", "ftp://127.0.0.1:9/v1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unsupported scheme"), "{}", stderr(&o));
    let o = stampede(&["conform", "--target", "wss://127.0.0.1:9/v1?token=x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("leave the query out"), "{}", stderr(&o));
    // wss:// is a target like any other: here nothing listens.
    let o = stampede(&["conform", "--target", "wss://127.0.0.1:9/v1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot reach the target wss://127.0.0.1:9/v1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn misspelt_field_exits_2_naming_file_case_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        r#"area = "MINE"
title = "my cases"

[[case]]
id = "mine/ping"
spec = ["PING-1"]
level = "must"
title = "ping"
peers = { a = {} }
steps = [
  { send = { type = "ping" } },
  { expect = { type = "pong" }, withn_ms = 100 },
]
"#,
    )
    .unwrap();
    let o = stampede(&["conform", "--cases", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("mine.toml:12:"), "{err}");
    assert!(err.contains("case `mine/ping`"), "{err}");
    assert!(err.contains("unknown field `withn_ms`"), "{err}");
}

#[test]
fn user_cases_run_and_override_builtin_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        r#"area = "MINE"
title = "my cases"

[[case]]
id = "ping/pong"
spec = ["PING-1"]
level = "must"
title = "replaced built-in case"
peers = { a = {} }
steps = [
  { send = { type = "ping", requestId = "x" } },
  { expect = { type = "pong", requestId = "x" } },
]
"#,
    )
    .unwrap();
    let o = stampede(&[
        "conform",
        "--cases",
        dir.path().to_str().unwrap(),
        "--only",
        "ping/pong",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("PASS       ping/pong"), "{out}");
    assert!(
        out.trim_end().ends_with("1 passed, 0 failed, 0 skipped"),
        "{out}"
    );
}

#[test]
fn json_and_junit_reports_have_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let junit = dir.path().join("r.xml");
    let md = dir.path().join("r.md");
    let o = stampede(&[
        "conform",
        "--only",
        "ping/*,shutdown/*",
        "--json",
        json.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cases = v["cases"].as_array().expect("cases array");
    assert!(cases.len() >= 6);
    for c in cases {
        assert!(c["id"].is_string());
        assert!(
            c["spec"]
                .as_array()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|x| x.is_string()))
        );
        assert!(["must", "should", "info"].contains(&c["level"].as_str().unwrap()));
        assert!(c["choice"].is_boolean());
        assert!(["pass", "fail", "skip", "non_strict"].contains(&c["verdict"].as_str().unwrap()));
        assert!(c["detail"].is_string());
    }
    let s = &v["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("summary.{k}")) as usize;
    assert_eq!(n("passed") + n("failed") + n("skipped"), cases.len());
    assert_eq!(n("failed"), 0);

    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit XML parses");
    assert_eq!(report.tests, cases.len());
    assert_eq!(report.failures, 0);
    let testcases: Vec<_> = report
        .test_suites
        .iter()
        .flat_map(|s| s.test_cases.iter())
        .collect();
    assert_eq!(testcases.len(), cases.len());
    let pong = testcases
        .iter()
        .find(|t| t.name.as_str() == "ping/pong")
        .expect("ping/pong testcase");
    assert!(
        pong.properties
            .iter()
            .any(|p| p.name.as_str() == "spec" && p.value.as_str() == "PING-1"),
        "SPEC ids are properties"
    );

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("| verdict | case | SPEC | level | detail |"),
        "{md}"
    );
    assert!(
        stdout(&o)
            .trim_end()
            .ends_with(&format!("{} passed, 0 failed, 0 skipped", cases.len()))
    );
}

#[test]
fn failures_exit_1_and_show_expected_actual_and_frames() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong.toml"),
        r#"area = "WRONG"
title = "a case that cannot pass"

[[case]]
id = "wrong/pong-type"
spec = ["PING-1"]
level = "must"
title = "expects the wrong frame"
peers = { a = {} }
steps = [
  { send = { type = "ping" } },
  { expect = { type = "pang" }, within_ms = 500 },
]
"#,
    )
    .unwrap();
    let o = stampede(&[
        "conform",
        "--cases",
        dir.path().to_str().unwrap(),
        "--only",
        "wrong/*",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("FAIL       wrong/pong-type [PING-1]"), "{out}");
    assert!(out.contains("expected: {\"type\":\"pang\"}"), "{out}");
    assert!(out.contains("got:      {\"type\":\"pong\"}"), "{out}");
    assert!(out.contains("frames seen by a:"), "{out}");
    assert!(out.contains("0 passed, 1 failed, 0 skipped"), "{out}");
}

#[test]
fn should_failures_fail_only_under_strict() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("should.toml"),
        r#"area = "SHOULD"
title = "a SHOULD case that cannot pass"

[[case]]
id = "should/impossible"
spec = ["CONN-9"]
level = "should"
title = "expects a frame that never comes"
peers = { a = { auto_welcome = false } }
steps = [
  { send = { type = "ping" } },
  { expect = { type = "pang" }, within_ms = 200 },
]
"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = stampede(&["conform", "--cases", d, "--only", "should/*"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("NON-STRICT should/impossible"),
        "{}",
        stdout(&o)
    );
    let o = stampede(&["conform", "--cases", d, "--only", "should/*", "--strict"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn list_dry_run_and_coverage() {
    let o = stampede(&["conform", "--list"]);
    assert_eq!(o.status.code(), Some(0));
    let n: usize = stdout(&o)
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" cases"))
        .and_then(|n| n.parse().ok())
        .expect("count line");
    assert!(n >= 150, "{n}");

    let o = stampede(&[
        "conform",
        "--dry-run",
        "--target",
        "ws://127.0.0.1:9/v1",
        "--only",
        "shutdown/*,quota/*",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("SKIP       shutdown/going-away-then-1001"),
        "{out}"
    );
    assert!(out.contains("needs the admin hook"), "{out}");

    let o = stampede(&["conform", "--coverage"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(!out.contains("UNCOVERED"), "{out}");
    assert!(out.contains("not observable: "), "{out}");

    let o = stampede(&["conform", "--only", "no-such-case"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no case matches"), "{}", stderr(&o));
}
