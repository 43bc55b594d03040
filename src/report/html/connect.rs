//! Where connect time goes and what TLS the peers negotiated: the "Connect phases" and "TLS"
//! sections of `report.html`, and the warning box of an `--insecure` run. Read from
//! `latency.<phase>_us`, `tls` and `connections.failures` in summary.json and from the phases'
//! interval logs; a run without them (`ws://`, or written before they existed) gets no section.

use std::fmt::Write as _;

use serde_json::Value;

use super::ReportError;
use super::kit::{esc, figure, fmt_ms, fmt_num, lookup, metric_title, points_from_stats};
use super::load::RunDir;
use crate::report::plot::{self, Series};
use crate::report::{INSECURE_WARNING, is_tls_failure};

/// The parts of `connect`, in the order they happen. The latency section leaves them out:
/// they are shown here, next to the whole.
pub const PHASES: [&str; 4] = ["tcp_connect", "tls_handshake", "ws_upgrade", "welcome"];

/// A box at the top of the page when certificates went unverified: every number below was
/// measured against a server nobody authenticated.
pub(super) fn insecure_box(s: &Value) -> String {
    if lookup(s, "tls.insecure").and_then(Value::as_bool) != Some(true) {
        return String::new();
    }
    let (flag, rest) = INSECURE_WARNING
        .split_once(": ")
        .unwrap_or(("--insecure", INSECURE_WARNING));
    format!(
        "<div class=\"warn loud\"><b>warning: {}</b>: {}.</div>\n",
        esc(flag),
        esc(rest)
    )
}

/// Short row labels: the table sits next to the charts, whose titles say the rest.
fn label(metric: &str) -> &'static str {
    match metric {
        "connect" => "connect (whole)",
        "tcp_connect" => "TCP connect",
        "tls_handshake" => "TLS handshake",
        "ws_upgrade" => "WebSocket upgrade",
        "welcome" => "welcome",
        _ => "",
    }
}

/// Labels inside the bar, where room is short.
fn short_label(metric: &str) -> &'static str {
    match metric {
        "tcp_connect" => "TCP",
        "tls_handshake" => "TLS",
        "ws_upgrade" => "upgrade",
        "welcome" => "welcome",
        _ => "",
    }
}

/// One row of the phase table and one line of each chart.
struct Phase<'a> {
    metric: &'static str,
    stats: Option<&'a Value>,
    log: Option<&'a crate::report::hlog::TagLog>,
}

impl Phase<'_> {
    fn count(&self) -> f64 {
        match self.log.filter(|l| !l.total.is_empty()) {
            Some(l) => l.total.len() as f64,
            None => self
                .stats
                .and_then(|v| v.get("count"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        }
    }

    /// A statistic in µs: from summary.json, else from the interval log.
    fn stat(&self, key: &str) -> Option<f64> {
        if let Some(v) = self.stats.and_then(|v| v.get(key)).and_then(Value::as_f64) {
            return Some(v);
        }
        let h = &self.log.filter(|l| !l.total.is_empty())?.total;
        Some(match key {
            "min" => h.min() as f64,
            "max" => h.max() as f64,
            "mean" => h.mean(),
            "p50" => h.value_at_quantile(0.5) as f64,
            "p90" => h.value_at_quantile(0.9) as f64,
            "p99" => h.value_at_quantile(0.99) as f64,
            "p999" => h.value_at_quantile(0.999) as f64,
            _ => return None,
        })
    }

    fn percentile_points(&self) -> Vec<(f64, f64)> {
        match self.log.filter(|l| !l.total.is_empty()) {
            Some(l) => plot::percentile_points(&l.total, 1000.0),
            None => self.stats.map(points_from_stats).unwrap_or_default(),
        }
    }
}

/// The table of `connect` and its phases, their percentile distributions side by side, and
/// their p99 per second when connects spread over more than one second.
pub(super) fn connect_phases_section(run: &RunDir) -> Result<String, ReportError> {
    let stats = run.latency_stats();
    // Position = colour, in the table and both charts: TLS keeps its colour in a ws:// run's
    // page (where it has no line), so two reports read side by side match.
    let all: Vec<Phase> = std::iter::once("connect")
        .chain(PHASES)
        .map(|metric| Phase {
            metric,
            stats: stats.get(metric).map(|(_, v)| *v),
            log: run.hlogs.get(metric),
        })
        .collect();
    let rows: Vec<(usize, &Phase)> = all
        .iter()
        .enumerate()
        .filter(|(_, p)| p.metric == "connect" || p.count() > 0.0)
        .collect();
    if rows.len() < 2 {
        return Ok(String::new());
    }
    let mut b = String::from("<h2>Connect phases</h2>\n");
    b.push_str("<p class=\"sub\">Each successful connect split into its phases, timed on the same attempt: TCP (SYN → established), the TLS handshake (<code>wss://</code> only), the WebSocket upgrade (request → 101) and the wait for <code>welcome</code>. Means add up to the whole but for name resolution and scheduling between the phases; percentiles do not (the slowest TCP connects and the slowest handshakes are rarely the same attempts).</p>\n");
    b.push_str("<table><tr><th>phase</th><th class=\"n\">count</th>");
    for stat in ["min", "p50", "p90", "p99", "p99.9", "max", "mean"] {
        let _ = write!(b, "<th class=\"n\">{stat} (ms)</th>");
    }
    b.push_str(
        "<th class=\"n\" title=\"mean of the phase / mean of connect\">% of connect</th></tr>\n",
    );
    let connect_mean = all[0].stat("mean").filter(|m| *m > 0.0);
    for &(i, p) in &rows {
        let _ = write!(
            b,
            "<tr><td title=\"{}\"><i class=\"swatch\" style=\"background:{}\"></i>{} <code>latency.{}_us</code></td><td class=\"n\">{}</td>",
            esc(&metric_title(p.metric)),
            plot::color_hex(i),
            label(p.metric),
            p.metric,
            fmt_num(p.count())
        );
        for key in ["min", "p50", "p90", "p99", "p999", "max", "mean"] {
            let cell = match p.stat(key) {
                Some(v) if p.count() > 0.0 => fmt_ms(v),
                _ => "—".into(),
            };
            let _ = write!(b, "<td class=\"n\">{cell}</td>");
        }
        let share = match (p.stat("mean"), connect_mean) {
            (Some(m), Some(total)) if p.count() > 0.0 => format!("{}%", percent(m / total)),
            _ => "—".into(),
        };
        let _ = writeln!(b, "<td class=\"n\">{share}</td></tr>");
    }
    b.push_str("</table>\n");
    if let Some(total) = connect_mean {
        b.push_str(&mean_bar(&rows, total));
    }
    b.push_str("<div class=\"charts\">\n");

    let series: Vec<Series> = all
        .iter()
        .map(|p| Series {
            name: match (p.stat("p50"), p.stat("p99")) {
                (Some(p50), Some(p99)) if p.count() > 0.0 => {
                    format!("{}: p50 {} · p99 {} ms", p.metric, fmt_ms(p50), fmt_ms(p99))
                }
                _ if p.metric == "tls_handshake" && run.summary.get("tls").is_none() => {
                    "tls_handshake: none (no TLS)".into()
                }
                _ => format!("{}: no samples", p.metric),
            },
            points: p.percentile_points(),
        })
        .collect();
    let logs: Vec<String> = all
        .iter()
        .filter_map(|p| p.log.filter(|l| !l.total.is_empty()))
        .flat_map(|l| &l.files)
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut caption = if logs.is_empty() {
        String::new()
    } else {
        format!("Every attempt of the run, from {}.", logs.join(", "))
    };
    if rows
        .iter()
        .any(|(_, p)| p.log.is_none_or(|l| l.total.is_empty()))
    {
        caption.push_str(" Lines without an interval log join the few percentiles of summary.json (min, p50, p90, p99, p99.9, max).");
    }
    let svg = plot::percentile_svg("Connect and its phases", "ms", &series)?;
    b.push_str(&figure(&svg, &series, caption.trim()));

    // Per second only says something when connects spread over time (ramp, churn, storms).
    let per_second: Vec<Series> = all
        .iter()
        .map(|p| Series {
            name: format!("{} p99", p.metric),
            points: p
                .log
                .map(|l| {
                    l.intervals
                        .iter()
                        .filter(|d| d.count > 0)
                        .map(|d| (d.start_s + d.duration_s, d.p99 as f64 / 1000.0))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    if per_second.iter().any(|s| s.points.len() >= 2) {
        let svg = plot::timeseries_svg(
            "Connect phases, p99 per second",
            "latency (ms)",
            &per_second,
        )?;
        b.push_str(&figure(
            &svg,
            &per_second,
            "The p99 of each one-second interval of the logs: a slow second of handshakes (a CPU-bound TLS terminator, a full accept queue) shows when it happened.",
        ));
    }
    b.push_str("</div>\n");
    Ok(b)
}

/// `0.1354` → `13.5`.
fn percent(share: f64) -> String {
    fmt_num((share * 1000.0).round() / 10.0)
}

/// The mean connect as one bar cut into its phases, in the table's colours: where the time
/// goes at a glance. What the phases do not cover (scheduling between them) stays grey.
fn mean_bar(rows: &[(usize, &Phase)], connect_mean: f64) -> String {
    let parts: Vec<(usize, &Phase, f64)> = rows
        .iter()
        .filter(|(_, p)| p.metric != "connect")
        .filter_map(|&(i, p)| Some((i, p, p.stat("mean").filter(|m| *m > 0.0)?)))
        .collect();
    let covered: f64 = parts.iter().map(|(_, _, m)| m).sum();
    // A summary from elsewhere may not add up: never draw past the whole.
    let whole = connect_mean.max(covered);
    let mut b = String::from("<div class=\"phasebar\">");
    for (i, p, mean) in &parts {
        let share = mean / whole;
        let _ = write!(
            b,
            "<span style=\"width:{:.2}%;background:{}\" title=\"{}: mean {} ms\">{}</span>",
            share * 100.0,
            plot::color_hex(*i),
            label(p.metric),
            fmt_ms(*mean),
            // A label only where it fits.
            if share >= 0.1 {
                format!("{} {}%", short_label(p.metric), percent(share))
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        b,
        "</div>\n<p class=\"sub\">Mean connect {} ms by phase{}.</p>",
        fmt_ms(connect_mean),
        if whole > covered * 1.005 {
            "; grey: time between the phases (DNS, scheduling)"
        } else {
            ""
        }
    );
    b
}

/// Handshakes by kind, the session-resumption mode, certificate verification, and the
/// negotiated versions, cipher suites and key-exchange groups; TLS failures by cause.
pub(super) fn tls_section(s: &Value) -> String {
    let Some(tls) = s.get("tls").filter(|t| t.is_object()) else {
        return String::new();
    };
    let num = |path: &str| lookup(tls, path).and_then(Value::as_f64).unwrap_or(0.0);
    let mut b =
        String::from("<h2>TLS</h2>\n<div class=\"more\">\n<div><h3>handshakes</h3><table>\n");
    let total = num("handshakes.total");
    let resumed = num("handshakes.resumed");
    let failed = num("handshakes.failed");
    let ratio = if total > 0.0 {
        format!(" ({}%)", percent(resumed / total))
    } else {
        String::new()
    };
    let verified = if tls.get("insecure").and_then(Value::as_bool) == Some(true) {
        "<span class=\"bad\">NOT verified (--insecure)</span>".to_string()
    } else {
        "<span class=\"ok\">verified</span>".to_string()
    };
    let resumption = tls
        .get("resumption")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or("—");
    for (k, v) in [
        ("successful", fmt_num(total)),
        ("full", fmt_num(num("handshakes.full"))),
        ("resumed", format!("{}{ratio}", fmt_num(resumed))),
        (
            "failed",
            if failed > 0.0 {
                format!("<span class=\"bad\">{}</span>", fmt_num(failed))
            } else {
                "0".into()
            },
        ),
        (
            "session resumption",
            format!("<code>{}</code>", esc(resumption)),
        ),
        ("server certificates", verified),
    ] {
        let _ = writeln!(b, "<tr><td>{k}</td><td class=\"n\">{v}</td></tr>");
    }
    b.push_str("</table></div>\n");
    b.push_str("<div><h3>negotiated</h3><table><tr><th></th><th></th><th class=\"n\">handshakes</th><th class=\"n\">share</th></tr>\n");
    for (key, title) in [
        ("by_version", "protocol version"),
        ("by_cipher", "cipher suite"),
        ("by_group", "key exchange group"),
    ] {
        let mut entries: Vec<(&String, f64)> = match tls.get(key) {
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| (k, v.as_f64().unwrap_or(0.0)))
                .collect(),
            _ => Vec::new(),
        };
        entries.sort_by(|a, b| b.1.total_cmp(&a.1));
        if entries.is_empty() {
            let _ = writeln!(b, "<tr><td>{title}</td><td>—</td><td></td><td></td></tr>");
        }
        for (i, (name, n)) in entries.into_iter().enumerate() {
            let share = if total > 0.0 {
                format!("{}%", percent(n / total))
            } else {
                "—".into()
            };
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{share}</td></tr>",
                if i == 0 { title } else { "" },
                esc(name),
                fmt_num(n)
            );
        }
    }
    b.push_str("</table></div>\n");
    b.push_str("</div>\n");
    let failures: Vec<(&String, &Value)> = match lookup(s, "connections.failures") {
        Some(Value::Object(o)) => o.iter().filter(|(k, _)| is_tls_failure(k)).collect(),
        _ => Vec::new(),
    };
    if !failures.is_empty() {
        b.push_str("<h3>Failed handshakes by cause</h3>\n<table><tr><th>cause (<code>connections.failures</code>)</th><th class=\"n\">attempts</th></tr>\n");
        for (k, v) in failures {
            let _ = writeln!(
                b,
                "<tr><td><code>{}</code></td><td class=\"n bad\">{}</td></tr>",
                esc(k),
                fmt_num(v.as_f64().unwrap_or(0.0))
            );
        }
        b.push_str("</table>\n<p class=\"sub\">What to do about each cause is under Warnings at the top of the page.</p>\n");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(insecure: bool) -> Value {
        let run = crate::report::tls_run_for_tests(insecure);
        serde_json::to_value(crate::report::Summary::from_run(&run)).unwrap()
    }

    #[test]
    fn tls_section_shows_what_was_negotiated_and_what_failed() {
        let html = tls_section(&summary_of(false));
        assert!(html.contains("<h2>TLS</h2>"));
        for needle in [
            "TLSv1.3",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "X25519MLKEM768",
            "<code>per-peer</code>",
            "50 (25%)",
            "<span class=\"ok\">verified</span>",
            "<code>tls_unknown_issuer</code>",
            "<code>timeout_tls</code>",
        ] {
            assert!(html.contains(needle), "{needle}: {html}");
        }
        assert!(insecure_box(&summary_of(false)).is_empty());
    }

    #[test]
    fn insecure_runs_get_a_warning_box() {
        let s = summary_of(true);
        assert!(tls_section(&s).contains("NOT verified (--insecure)"));
        let b = insecure_box(&s);
        assert!(
            b.contains("class=\"warn loud\"") && b.contains("<b>warning: --insecure</b>"),
            "{b}"
        );
    }

    fn run_dir(summary: &Value) -> (tempfile::TempDir, RunDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("summary.json"), summary.to_string()).unwrap();
        let run = RunDir::load(dir.path()).unwrap();
        (dir, run)
    }

    #[test]
    fn phases_sit_next_to_connect() {
        let (_dir, run) = run_dir(&summary_of(false));
        let html = connect_phases_section(&run).unwrap();
        assert!(html.starts_with("<h2>Connect phases</h2>"), "{html}");
        for m in [
            "connect",
            "tcp_connect",
            "tls_handshake",
            "ws_upgrade",
            "welcome",
        ] {
            assert!(
                html.contains(&format!("<code>latency.{m}_us</code>")),
                "{m}"
            );
        }
        // Means: connect 1.3995 ms, TCP 0.1895 ms.
        assert!(html.contains("<td class=\"n\">13.5%</td>"), "{html}");
        assert_eq!(
            html.matches("<svg").count(),
            1,
            "no per-second chart for one second"
        );
    }

    #[test]
    fn runs_without_tls_or_phases_get_no_section() {
        let plain = serde_json::json!({"latency": {"connect_us": {"count": 3, "p50": 900}}});
        assert!(tls_section(&plain).is_empty());
        assert!(insecure_box(&plain).is_empty());
        let (_dir, run) = run_dir(&plain);
        assert!(connect_phases_section(&run).unwrap().is_empty());
    }
}
