//! `stampede run` leaves a self-contained `report.html` in its run directory, and
//! `--junit` writes one testcase per threshold.

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
    assert!(html.contains("expected") && html.contains("lost"));

    // Self-contained: nothing is fetched from elsewhere (the SVG xmlns is a name, not a fetch).
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

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    // typing-storm's own two rules plus the two given here.
    assert_eq!(xml.matches("<testcase").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
    assert!(xml.contains("fanout.p99&lt;1us"), "{xml}");
}
