//! `stampede run` leaves a self-contained `report.html` in its run directory, and
//! `--junit` writes one testcase per threshold and per built-in check. Over wss:// every output shows the connect
//! phases and the handshakes, and an `--insecure` run says so in each.

use std::process::Command;

#[test]
fn run_writes_a_self_contained_html_report_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let junit = dir.path().join("junit.xml");
    let res = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["run", "scenarios/typing-storm.toml", "--peers", "100"])
        .args(["--duration", "4s", "--ramp", "500ms", "--quiet", "--out"])
        .arg(&out)
        .arg("--junit")
        .arg(&junit)
        .args([
            "--threshold",
            "delivery.lost==0",
            "--threshold",
            "fanout.p99<1us",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    // typing-storm publishes from 3 s on. fanout.p99<1us cannot hold: exit 1 proves the
    // thresholds were evaluated.
    assert_eq!(res.status.code(), Some(1), "{stdout}\n{stderr}");

    let html_path = out.join("report.html");
    assert!(
        stdout.contains(&format!("report: {}", html_path.display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&html_path).expect("report.html exists");
    assert!(html.contains("<svg"), "plots are inline SVG");
    assert!(html.contains("<h2>Delivery</h2>"), "delivery section");
    assert!(
        html.contains("<h2>Built-in checks</h2>") && html.contains("<code>checks.acks</code>"),
        "checks section"
    );
    assert!(html.contains("expected") && html.contains("lost"));

    assert_self_contained(&html);

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("JUnit XML parses");
    let suite = |name: &str| {
        report
            .test_suites
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap_or_else(|| panic!("no suite {name} in {xml}"))
    };
    // typing-storm's own two rules plus the two given here; one broken.
    let thresholds = suite("stampede.run.typing-storm");
    assert_eq!(thresholds.test_cases.len(), 4, "{xml}");
    assert_eq!(thresholds.failures, 1, "{xml}");
    assert!(xml.contains("fanout.p99&lt;1us"), "{xml}");
    // Every built-in check, all passed against the reference server.
    let checks = suite("stampede.run.typing-storm.checks");
    assert_eq!(checks.test_cases.len(), 15, "{xml}");
    assert_eq!(checks.failures, 0, "{xml}");
    assert!(
        checks
            .test_cases
            .iter()
            .any(|c| c.name.as_str() == "checks.acks"),
        "{xml}"
    );
}

/// Nothing is fetched from elsewhere (the SVG xmlns is a name, not a fetch).
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for needle in ["<link", "@import", "url(", "<script src", "<iframe"] {
        assert!(!lower.contains(needle), "report embeds `{needle}`");
    }
    for attr in ["src=", "href="] {
        for (at, _) in lower.match_indices(attr) {
            let value = &lower[at + attr.len()..];
            let value = value.trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http:")
                    && !value.starts_with("https:")
                    && !value.starts_with("//"),
                "external {attr} at byte {at}: {}",
                &lower[at..(at + 80).min(lower.len())]
            );
        }
    }
}

/// Runs the built-in smoke scenario over wss:// against the in-process TLS server.
fn tls_run(out: &std::path::Path, extra: &[&str]) -> (String, serde_json::Value, String) {
    let res = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["run", "smoke", "--tls", "--peers", "40", "--duration", "1s"])
        .args(["--quiet", "--out"])
        .arg(out)
        .args(["--threshold", "tls_handshake.p99<10s"])
        .args(["--threshold", "tls.handshakes.failed==0"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(0), "{stdout}\n{stderr}");
    let summary = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    (stdout, serde_json::from_str(&summary).unwrap(), html)
}

#[test]
fn a_tls_run_reports_its_connect_phases_and_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (stdout, summary, html) = tls_run(&out, &[]);

    for phase in ["tcp_connect", "tls_handshake", "ws_upgrade", "welcome"] {
        let count = summary["latency"][format!("{phase}_us")]["count"].as_u64();
        assert!(count.is_some_and(|n| n >= 40), "{phase}: {count:?}");
        assert!(out.join(format!("{phase}.hlog")).is_file(), "{phase}.hlog");
        assert!(out.join(format!("percentiles-{phase}.csv")).is_file());
    }
    let tls = &summary["tls"];
    assert_eq!(tls["insecure"], false);
    assert_eq!(tls["resumption"], "off");
    assert_eq!(tls["handshakes"]["total"], tls["handshakes"]["full"]);
    assert_eq!(tls["by_version"]["TLSv1.3"], tls["handshakes"]["total"]);
    assert!(summary["thresholds"].as_array().unwrap().len() >= 2);
    assert_eq!(summary["thresholds_passed"], true);

    assert!(stdout.contains("\n  connect phases\n"), "{stdout}");
    assert!(stdout.contains("\n  tls handshake "), "{stdout}");
    assert!(stdout.contains("\ntls         "), "{stdout}");
    assert!(!stdout.contains("--insecure"), "{stdout}");

    assert!(html.contains("<h2>Connect phases</h2>"));
    assert!(html.contains("<code>latency.tls_handshake_us</code>"));
    assert!(html.contains("<h2>TLS</h2>") && html.contains("TLSv1.3"));
    assert!(html.contains("<span class=\"ok\">verified</span>"));
    assert!(!html.contains("warn loud"));
    assert_self_contained(&html);
}

#[test]
fn an_insecure_run_says_so_in_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (stdout, summary, html) = tls_run(&out, &["--insecure"]);

    assert_eq!(summary["tls"]["insecure"], true);
    let first = summary["warnings"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.starts_with("--insecure: server certificates were not verified"),
        "{}",
        summary["warnings"]
    );
    assert!(
        stdout.contains("\nWARNING     --insecure: server certificates were not verified"),
        "{stdout}"
    );
    assert!(html.contains("<div class=\"warn loud\"><b>warning: --insecure</b>"));
    assert!(html.contains("<h2>Warnings</h2>"));
    assert!(html.contains("NOT verified (--insecure)"));
}
