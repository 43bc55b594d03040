//! The readable end-of-run summary printed to stdout.

use std::fmt::Write;

use super::{DeliveryOut, INSECURE_WARNING, Summary, TlsSummary, fmt_us};
use crate::metrics::Stats;

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn lat_row(out: &mut String, name: &str, s: &Stats) {
    if s.count == 0 {
        let _ = writeln!(out, "  {name:<13} {:>10}", "—");
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<13} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        thousands(s.count),
        fmt_us(s.p50),
        fmt_us(s.p90),
        fmt_us(s.p99),
        fmt_us(s.p999),
        fmt_us(s.max),
    );
}

fn delivery_line(d: &DeliveryOut) -> String {
    let c = &d.counts;
    format!(
        "expected {} · delivered {} · lost {} · duplicated {} · reordered {} · unexpected {} · unaccounted {}",
        thousands(c.expected),
        thousands(c.delivered),
        thousands(c.lost),
        thousands(c.duplicated),
        thousands(c.reordered),
        thousands(c.unexpected),
        thousands(c.unaccounted)
    )
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} × {}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `TLSv1.3`, or `TLSv1.3 × 150, TLSv1.2 × 50` when the handshakes differed.
fn distribution(map: &std::collections::BTreeMap<String, u64>) -> String {
    match map.len() {
        0 => "—".into(),
        1 => map.keys().next().cloned().unwrap_or_default(),
        _ => {
            let mut by_count: Vec<_> = map.iter().collect();
            by_count.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
            by_count
                .iter()
                .map(|(k, v)| format!("{k} × {}", thousands(**v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

fn tls_line(t: &TlsSummary) -> String {
    let h = &t.handshakes;
    let mut line = format!(
        "tls         {} handshakes · full {} · resumed {}",
        thousands(h.total),
        thousands(h.full),
        thousands(h.resumed)
    );
    if h.failed > 0 {
        let _ = write!(line, " · failed {}", thousands(h.failed));
    }
    for map in [&t.by_version, &t.by_cipher, &t.by_group] {
        if !map.is_empty() {
            let _ = write!(line, " · {}", distribution(map));
        }
    }
    let _ = write!(line, " · resumption {}", t.resumption);
    line
}

/// Renders `s` for a terminal; `dir` is where the files went.
pub fn render(s: &Summary, dir: &str) -> String {
    let mut o = String::new();
    let target = if s.target.embedded {
        format!("in-process server {}", s.target.urls.join(" "))
    } else {
        s.target.urls.join(" ")
    };
    let _ = writeln!(o, "scenario {} → {target}", s.scenario);
    let _ = writeln!(
        o,
        "peers {} (peak connected {}) · {:.1} s{} + {:.1} s drain · seed {} · {} worker{}",
        thousands(s.peers),
        thousands(s.connections.peak_connected.max(0) as u64),
        s.duration_s,
        if s.interrupted {
            " (interrupted)"
        } else if s.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        s.grace_s,
        s.seed,
        s.workers,
        if s.workers == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        o,
        "\n  {:<13} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    lat_row(&mut o, "fan-out", &s.latency.fanout_us);
    lat_row(&mut o, "ack", &s.latency.ack_us);
    lat_row(&mut o, "connect", &s.latency.connect_us);
    lat_row(&mut o, "presence", &s.latency.presence_us);
    if s.latency.direct_us.count > 0 {
        lat_row(&mut o, "direct", &s.latency.direct_us);
    }
    if s.latency.reconnect_us.count > 0 {
        lat_row(&mut o, "reconnect", &s.latency.reconnect_us);
    }
    if s.latency.system_fanout_us.count > 0 {
        lat_row(&mut o, "sys fan-out", &s.latency.system_fanout_us);
    }
    if s.calls.is_some() {
        let l = &s.latency;
        for (name, st) in [
            ("negotiation", &l.negotiation_us),
            ("mesh ready", &l.mesh_ready_us),
            ("renegotiation", &l.renegotiation_us),
            ("offer", &l.offer_us),
            ("answer", &l.answer_us),
            ("candidate", &l.candidate_us),
            ("track meta", &l.track_meta_us),
        ] {
            if st.count > 0 || name == "negotiation" || name == "mesh ready" {
                lat_row(&mut o, name, st);
            }
        }
    }
    lat_row(&mut o, "schedule lag", &s.schedule_lag_us);
    let l = &s.latency;
    let phases = [
        ("tcp connect", &l.tcp_connect_us),
        ("tls handshake", &l.tls_handshake_us),
        ("ws upgrade", &l.ws_upgrade_us),
        ("welcome", &l.welcome_us),
    ];
    if phases.iter().any(|(_, st)| st.count > 0) {
        let _ = writeln!(o, "  connect phases");
        for (name, st) in phases {
            // A ws:// run has no handshake: a dash row would suggest one went missing.
            if st.count > 0 || (name == "tls handshake" && s.tls.is_some()) {
                lat_row(&mut o, name, st);
            }
        }
    }
    let t = &s.throughput;
    let _ = writeln!(
        o,
        "\nthroughput  {} publishes ({:.0}/s) → {} deliveries ({:.0}/s); {} presence events; {} directs",
        thousands(t.publishes),
        t.publishes_per_s,
        thousands(t.deliveries),
        t.deliveries_per_s,
        thousands(t.presence_events),
        thousands(t.directs_sent)
    );
    let _ = writeln!(o, "delivery    {}", delivery_line(&s.delivery));
    if s.delivery_by_population.len() > 1 {
        for (name, d) in &s.delivery_by_population {
            let _ = writeln!(o, "  {name:<10}{}", delivery_line(d));
        }
    }
    if let Some(r) = &s.rest {
        o.push_str(&crate::load::rest::text_lines(r));
    }
    if s.directs.counts.expected > 0 || s.throughput.directs_sent > 0 {
        let _ = writeln!(o, "directs     {}", delivery_line(&s.directs));
    }
    if let Some(c) = &s.calls {
        o.push_str(&c.text_lines());
    }
    let _ = writeln!(o, "{}", connections_line(s));
    if let Some(t) = &s.tls {
        let _ = writeln!(o, "{}", tls_line(t));
        if t.insecure {
            let _ = writeln!(o, "WARNING     {INSECURE_WARNING}");
        }
    }
    let _ = writeln!(o, "errors      {}", counts(&s.errors));
    let _ = writeln!(o, "closes      {}", counts(&s.closes));
    if !s.unexpected_frames.is_empty() {
        let _ = writeln!(o, "unexpected  {}", counts(&s.unexpected_frames));
    }
    let e = &s.expectations;
    if e.token_expiry.expired_sessions > 0 {
        let t = &e.token_expiry;
        let _ = writeln!(
            o,
            "token expiry {} expired · 4002 on time {} · off time {} · not closed {} · reconnected {}",
            t.expired_sessions,
            t.closed_4002_on_time,
            t.closed_4002_off_time,
            t.not_closed,
            t.reconnected
        );
    }
    for (kind, x) in &e.oversized {
        let _ = writeln!(
            o,
            "oversized {kind:<4} sent {} · accepted {} · closed 1009 {} · error {} · refused {} · other {} · mismatched {}",
            x.sent, x.accepted, x.closed_1009, x.error_frame, x.refused, x.other, x.mismatched
        );
    }
    for st in &e.storms {
        let _ = writeln!(
            o,
            "storm at {:.1} s: dropped {} · reconnected {}",
            st.at_s, st.dropped, st.reconnected
        );
    }
    let h = &s.harness;
    let _ = writeln!(
        o,
        "harness     CPU {:.0}% of one core on average (peak {:.0}% of {} cores; machine {:.0}% busy) · RSS {:.1} MB{}",
        h.cpu_percent,
        h.cpu_peak_share * 100.0,
        h.cores,
        h.machine_cpu_percent,
        h.rss_peak_bytes as f64 / 1e6,
        if h.rss_per_peer_bytes > 0 {
            format!(
                " ({} B per connected peer)",
                thousands(h.rss_per_peer_bytes)
            )
        } else {
            String::new()
        }
    );
    if h.timer_not_realtime > 0 {
        let _ = writeln!(
            o,
            "            send timer without real-time priority in {} process(es): sends lag more under load (run as root or grant CAP_SYS_NICE)",
            h.timer_not_realtime
        );
    }
    for w in &s.warnings {
        if w.message == INSECURE_WARNING {
            continue; // already printed, loudly, under the tls line
        }
        let _ = writeln!(o, "warning     {} (× {})", w.message, thousands(w.count));
    }
    if s.valid {
        let _ = writeln!(o, "valid       yes");
    } else {
        for r in &s.invalid_reasons {
            let _ = writeln!(o, "INVALID     {r}");
        }
    }
    for t in &s.thresholds {
        let actual = match t.actual {
            None => "no value".into(),
            Some(a) if t.unit == "us" => fmt_us(a.max(0.0) as u64),
            Some(a) => format!("{a}"),
        };
        let _ = writeln!(
            o,
            "threshold   {} {} (actual {actual})",
            if t.passed { "ok    " } else { "BROKEN" },
            t.rule
        );
    }
    checks_lines(&mut o, s);
    let _ = writeln!(o, "verdict     {}", verdict(s));
    let _ = writeln!(o, "report      {dir}");
    o
}

/// One line on connections whose parts agree: attempts and sessions established, and how
/// many of the planned peers connected (never "all" unless every one did).
fn connections_line(s: &Summary) -> String {
    let c = &s.connections;
    let failures = if c.failures.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts(&c.failures))
    };
    let peers = if c.peers_connected >= s.peers && s.peers > 0 {
        format!(
            "all {} peers up after {:.1} s ({}/s)",
            thousands(c.peers_connected),
            c.all_connected_after_s,
            thousands(c.connect_rate_per_s as u64)
        )
    } else {
        let mut p = format!(
            "{} of {} peers connected",
            thousands(c.peers_connected),
            thousands(s.peers)
        );
        if c.peers_connected > 0 {
            let _ = write!(p, " (the last after {:.1} s)", c.all_connected_after_s);
        }
        if c.never_connected > 0 {
            let _ = write!(p, " · {} never got a welcome", thousands(c.never_connected));
        }
        p
    };
    let mut line = format!(
        "connections {} attempts · {} established · {} failed{failures} · {peers}",
        thousands(c.attempts),
        thousands(c.established),
        thousands(c.failed),
    );
    if c.aborted > 0 {
        let _ = write!(line, " · {} aborted at the end", thousands(c.aborted));
    }
    line
}

/// The built-in checks: one line for those that passed, one per failed or relaxed check
/// with its evidence and first examples.
fn checks_lines(o: &mut String, s: &Summary) {
    if s.checks.is_empty() {
        return;
    }
    let ok: Vec<&str> = s
        .checks
        .iter()
        .filter(|c| {
            c.passed && c.enabled && c.limit == "==0" && !c.evidence.starts_with("not applicable")
        })
        .map(|c| c.name.as_str())
        .collect();
    if !ok.is_empty() {
        let _ = writeln!(o, "checks      ok     {}", ok.join(", "));
    }
    for c in &s.checks {
        let tag = if !c.enabled {
            "off   "
        } else if !c.passed {
            "FAILED"
        } else if c.limit != "==0" {
            "ok    "
        } else {
            continue;
        };
        let limit = if c.enabled && c.limit != "==0" {
            format!(" (tolerance {}, count {})", c.limit, thousands(c.count))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "check       {tag} checks.{}{limit}: {}",
            c.name, c.evidence
        );
        for e in &c.examples {
            let _ = writeln!(o, "                   e.g. {e}");
        }
    }
}

fn verdict(s: &Summary) -> String {
    let failed_checks = s.checks.iter().filter(|c| !c.passed).count();
    let broken = s.thresholds.iter().filter(|t| !t.passed).count();
    if s.interrupted {
        return "INTERRUPTED: the run was stopped, so it proves nothing (exit 130)".into();
    }
    if s.outcome == "no_connection" {
        return "COULD NOT RUN: no peer connected (exit 2)".into();
    }
    if failed_checks + broken == 0 {
        return format!(
            "passed: {} checks and {} thresholds",
            s.checks.len(),
            s.thresholds.len()
        );
    }
    let mut why = Vec::new();
    if failed_checks > 0 {
        why.push(format!(
            "{failed_checks} of {} checks failed",
            s.checks.len()
        ));
    }
    if broken > 0 {
        why.push(format!(
            "{broken} of {} thresholds broken",
            s.thresholds.len()
        ));
    }
    format!("FAILED: {} (exit 1)", why.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn renders_a_default_summary() {
        let text = render(&Summary::default(), "reports/x");
        assert!(text.contains("fan-out"));
        assert!(text.contains("reports/x"));
        assert!(!text.contains("connect phases") && !text.contains("tls "));
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
    }

    #[test]
    fn renders_connect_phases_and_tls() {
        let s = Summary::from_run(&crate::report::tls_run_for_tests(false));
        let text = render(&s, "reports/x");
        let connect = line(&text, "  connect   ");
        let header = line(&text, "  latency ");
        assert!(text.contains("\n  connect phases\n"), "{text}");
        for name in ["tcp connect", "tls handshake", "ws upgrade", "welcome"] {
            let row = line(&text, &format!("  {name} "));
            // Same columns as the table above.
            assert_eq!(row.chars().count(), connect.chars().count(), "{row}");
            assert_eq!(row.chars().count(), header.chars().count(), "{row}");
        }
        assert!(line(&text, "  tcp connect").contains(" 189 µs "), "{text}");
        assert_eq!(
            line(&text, "tls "),
            "tls         200 handshakes · full 150 · resumed 50 · failed 3 · TLSv1.3 · \
             TLS13_AES_256_GCM_SHA384 × 150, TLS13_CHACHA20_POLY1305_SHA256 × 50 · \
             X25519MLKEM768 · resumption per-peer"
        );
        // TLS failures: counted on the connections line, explained as a warning.
        let conns = line(&text, "connections ");
        assert!(
            conns.contains("timeout_tls × 1") && conns.contains("tls_unknown_issuer × 2"),
            "{conns}"
        );
        assert!(
            line(&text, "warning ").contains("pass the issuing CA with --cacert FILE"),
            "{text}"
        );
        assert!(!text.contains("--insecure"), "{text}");
    }

    #[test]
    fn connection_lines_agree_with_each_other() {
        let mut s = Summary {
            peers: 200,
            ..Default::default()
        };
        s.connections.attempts = 200;
        s.connections.established = 200;
        s.connections.peers_connected = 2;
        s.connections.never_connected = 0;
        s.connections.aborted = 198;
        s.connections.peak_connected = 200;
        let text = render(&s, "reports/x");
        let conns = line(&text, "connections ");
        assert!(!conns.contains("all "), "{conns}");
        assert!(
            conns.contains("2 of 200 peers connected") && conns.contains("198 aborted"),
            "{conns}"
        );
        s.connections.peers_connected = 200;
        s.connections.aborted = 0;
        let text = render(&s, "reports/x");
        assert!(
            line(&text, "connections ").contains("all 200 peers up"),
            "{text}"
        );
    }

    #[test]
    fn checks_and_the_verdict_are_printed() {
        let mut s = Summary {
            checks: vec![
                crate::report::CheckResult {
                    name: "acks".into(),
                    passed: true,
                    enabled: true,
                    limit: "==0".into(),
                    evidence: "all acked".into(),
                    ..Default::default()
                },
                crate::report::CheckResult {
                    name: "closes".into(),
                    passed: false,
                    enabled: true,
                    count: 3,
                    limit: "==0".into(),
                    evidence: "1006 × 3".into(),
                    examples: vec!["peer r-1: 1006".into()],
                },
            ],
            outcome: "failed".into(),
            ..Default::default()
        };
        let text = render(&s, "reports/x");
        assert_eq!(line(&text, "checks "), "checks      ok     acks");
        assert_eq!(
            line(&text, "check "),
            "check       FAILED checks.closes: 1006 × 3"
        );
        assert!(
            text.contains("\n                   e.g. peer r-1: 1006\n"),
            "{text}"
        );
        assert!(
            line(&text, "verdict ").contains("FAILED: 1 of 2 checks failed"),
            "{text}"
        );
        s.interrupted = true;
        let text = render(&s, "reports/x");
        assert!(line(&text, "verdict ").contains("INTERRUPTED"), "{text}");
    }

    #[test]
    fn insecure_is_loud_and_said_once() {
        let s = Summary::from_run(&crate::report::tls_run_for_tests(true));
        let text = render(&s, "reports/x");
        let tls = text.find("\ntls ").unwrap();
        let warn = text.find("\nWARNING     --insecure: ").expect(&text);
        assert!(warn > tls, "right under the tls line:\n{text}");
        assert_eq!(text.matches("--insecure").count(), 1, "{text}");
    }

    #[test]
    fn plain_ws_runs_show_phases_without_a_tls_row() {
        let mut run = crate::report::tls_run_for_tests(false);
        run.tls = None;
        run.hists.remove("tls_handshake");
        let text = render(&Summary::from_run(&run), "reports/x");
        assert!(text.contains("  tcp connect ") && text.contains("  ws upgrade "));
        assert!(
            !text.contains("tls handshake") && !text.contains("\ntls "),
            "{text}"
        );
    }
}
