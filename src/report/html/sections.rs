//! The report's other sections: header cards, warnings, thresholds, latency, delivery, error
//! and close codes, everything else in summary.json, and the scenario as it ran.

use std::fmt::Write as _;

use serde_json::Value;

use super::ReportError;
use super::connect::PHASES;
use super::kit::{
    CORE_METRICS, esc, figure, fmt_ms, fmt_num, fmt_value, lookup, metric_order, metric_title,
    points_from_stats, thresholds, verdict,
};
use super::load::{RunDir, is_stats};
use crate::report::plot::{self, Series};

fn card(k: &str, v_html: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{v_html}</div></div>",
        esc(k)
    )
}

pub(super) fn header_cards(run: &RunDir) -> String {
    let s = &run.summary;
    let mut b = String::from("<div class=\"cards\">");
    b.push_str(&card("scenario", &esc(&run.scenario_name())));
    let target = target_text(s);
    b.push_str(&card("target", &esc(&target)));
    b.push_str(&card(
        "peers",
        &esc(&s.get("peers").map(fmt_value).unwrap_or("—".into())),
    ));
    let duration = s
        .get("duration_s")
        .and_then(Value::as_f64)
        .map(|d| format!("{} s", fmt_num(d)))
        .unwrap_or("—".into());
    b.push_str(&card("duration", &esc(&duration)));
    let (valid, reason) = verdict(s);
    let badge = match valid {
        Some(true) => "<span class=\"badge ok\">VALID</span>".to_string(),
        Some(false) => "<span class=\"badge bad\">INVALID</span>".to_string(),
        None => "<span class=\"badge unk\">NO VERDICT</span>".to_string(),
    };
    b.push_str(&card("run validity", &badge));
    for (path, label) in [
        ("throughput.publishes_per_s", "publishes / s"),
        ("throughput.deliveries_per_s", "deliveries / s"),
    ] {
        if let Some(v) = lookup(s, path).and_then(Value::as_f64) {
            b.push_str(&card(label, &esc(&fmt_num(v))));
        }
    }
    if let Some(html) = super::checks::checks_card(s) {
        b.push_str(&card("checks", &html));
    }
    let rows = thresholds(s);
    if !rows.is_empty() {
        let broken = rows.iter().filter(|r| r.passed == Some(false)).count();
        let met = rows.iter().filter(|r| r.passed == Some(true)).count();
        let html = if broken > 0 {
            format!(
                "<span class=\"badge bad\">{broken} BROKEN</span> <span class=\"ok\">{met} met</span>"
            )
        } else {
            format!("<span class=\"badge ok\">ALL {met} MET</span>")
        };
        b.push_str(&card("thresholds", &html));
    }
    b.push_str("</div>\n");
    let mut facts = Vec::new();
    for (key, label) in [
        ("started_at", "started"),
        ("scenario_file", "scenario from"),
        ("seed", "seed"),
        ("workers", "workers"),
        ("schema", "schema"),
    ] {
        if let Some(v) = s
            .get(key)
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
        {
            facts.push(format!("{label} <code>{}</code>", esc(&fmt_value(v))));
        }
    }
    if s.get("interrupted").and_then(Value::as_bool) == Some(true) {
        facts.push(
            "<span class=\"bad\">interrupted (Ctrl-C): the verdict is incomplete</span>".into(),
        );
    } else if s.get("stopped_early").and_then(Value::as_bool) == Some(true) {
        facts.push("<span class=\"bad\">stopped early (Ctrl-C)</span>".into());
    }
    if !facts.is_empty() {
        let _ = writeln!(b, "<p class=\"sub\">{}</p>", facts.join(" · "));
    }
    if let Some(r) = reason {
        let label = if valid == Some(false) {
            "Invalid because"
        } else {
            "Note"
        };
        let _ = writeln!(
            b,
            "<p><b>{label}:</b> <span class=\"reason\">{}</span></p>",
            esc(&r)
        );
    }
    b
}

/// The target as one line: `embedded reference server ws://…` or the URLs joined.
pub fn target_text(s: &Value) -> String {
    match s.get("target") {
        Some(Value::Object(o)) => {
            let urls = o
                .get("urls")
                .or_else(|| o.get("ws_url"))
                .or_else(|| o.get("url"))
                .map(fmt_value)
                .unwrap_or_default();
            match o.get("embedded").and_then(Value::as_bool) {
                Some(true) => format!("embedded reference server {urls}")
                    .trim()
                    .to_string(),
                _ if !urls.is_empty() => urls,
                _ => Value::Object(o.clone()).to_string(),
            }
        }
        Some(v) => fmt_value(v),
        None => "—".into(),
    }
}

/// Warnings the run recorded: `warnings` as a list of strings or of `{message, count}`.
pub(super) fn warnings_section(s: &Value) -> String {
    let Some(Value::Array(list)) = s.get("warnings") else {
        return String::new();
    };
    if list.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Warnings</h2>\n<table><tr><th>warning</th><th class=\"n\">times</th></tr>\n",
    );
    for w in list {
        let (msg, count) = match w {
            Value::Object(o) => (
                o.get("message")
                    .map(fmt_value)
                    .unwrap_or_else(|| w.to_string()),
                o.get("count").map(fmt_value).unwrap_or_default(),
            ),
            other => (fmt_value(other), String::new()),
        };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&msg),
            esc(&count)
        );
    }
    b.push_str("</table>\n");
    b
}

pub(super) fn thresholds_section(s: &Value) -> String {
    let rows = thresholds(s);
    if rows.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Thresholds</h2>\n<table><tr><th>threshold</th><th>result</th><th class=\"n\">observed</th></tr>\n",
    );
    for r in rows {
        let (cls, txt) = match r.passed {
            Some(true) => ("ok", "met"),
            Some(false) => ("bad", "BROKEN"),
            None => ("", "?"),
        };
        let _ = writeln!(
            b,
            "<tr><td><code>{}</code></td><td class=\"{cls}\">{txt}</td><td class=\"n\">{}</td></tr>",
            esc(&r.rule),
            esc(r.actual.as_deref().unwrap_or("—"))
        );
    }
    b.push_str("</table>\n");
    b
}

/// Summary row values (µs) for one stats object, in table column order.
const STAT_COLS: [(&str, &str); 8] = [
    ("count", "count"),
    ("min", "min"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
    ("mean", "mean"),
];

pub(super) fn latency_section(run: &RunDir) -> Result<String, ReportError> {
    let stats = run.latency_stats();
    let mut b = String::from("<h2>Latency</h2>\n");
    if !stats.is_empty() {
        b.push_str("<table><tr><th>metric</th>");
        for (_, label) in STAT_COLS {
            let unit = if label == "count" { "" } else { " (ms)" };
            let _ = write!(b, "<th class=\"n\">{label}{unit}</th>");
        }
        b.push_str("</tr>\n");
        for m in metric_order(stats.keys()) {
            let Some((path, v)) = stats.get(&m).filter(|_| !PHASES.contains(&m.as_str())) else {
                continue;
            };
            let empty = v.get("count").and_then(Value::as_f64) == Some(0.0);
            // Optional metrics the run never measured (direct, reconnect, system fan-out)
            // are noise in the table; the four core ones always show, empty or not.
            if empty && !["fanout", "ack", "connect", "presence"].contains(&m.as_str()) {
                continue;
            }
            let _ = write!(
                b,
                "<tr><td>{} <code>{}</code></td>",
                esc(&metric_title(&m)),
                esc(path)
            );
            for (key, _) in STAT_COLS {
                let cell = match v.get(key).and_then(Value::as_f64) {
                    Some(x) if key == "count" => fmt_num(x),
                    Some(_) if empty => "—".into(),
                    Some(x) => fmt_ms(x),
                    None => "—".into(),
                };
                let _ = write!(b, "<td class=\"n\">{cell}</td>");
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n");
    }
    b.push_str("<h3>Percentile distributions</h3>\n<div class=\"charts\">\n");
    let mut names: Vec<&String> = stats.keys().collect();
    names.extend(run.hlogs.keys());
    for m in metric_order(names) {
        if PHASES.contains(&m.as_str()) {
            continue; // charted together under "Connect phases"
        }
        let title = metric_title(&m);
        let has_samples = run.hlogs.get(&m).is_some_and(|l| !l.total.is_empty())
            || stats
                .get(&m)
                .is_some_and(|(_, v)| !points_from_stats(v).is_empty());
        // The four core metrics always get a slot (an empty one says "not measured");
        // optional ones (direct, reconnect, …) only when the run had them.
        if !has_samples && !CORE_METRICS.contains(&m.as_str()) {
            continue;
        }
        if let Some(log) = run.hlogs.get(&m).filter(|l| !l.total.is_empty()) {
            let h = &log.total;
            let series = vec![Series {
                name: format!(
                    "{m}: n={} p50={} p99={} max={} ms",
                    fmt_num(h.len() as f64),
                    fmt_ms(h.value_at_quantile(0.5) as f64),
                    fmt_ms(h.value_at_quantile(0.99) as f64),
                    fmt_ms(h.max() as f64)
                ),
                points: plot::percentile_points(h, 1000.0),
            }];
            let files: Vec<String> = log
                .files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let svg = plot::percentile_svg(&title, "ms", &series)?;
            b.push_str(&figure(
                &svg,
                &series,
                &format!(
                    "Every sample of the run, merged from {} ({} intervals). Each step right on the x axis is one more nine.",
                    files.join(", "),
                    log.intervals.len()
                ),
            ));
        } else if let Some((path, v)) = stats
            .get(&m)
            .filter(|(_, v)| !points_from_stats(v).is_empty())
        {
            let series = vec![Series {
                name: format!("{m} (summary percentiles only)"),
                points: points_from_stats(v),
            }];
            let svg = plot::percentile_svg(&title, "ms", &series)?;
            b.push_str(&figure(
                &svg,
                &series,
                &format!("No interval log for this metric: the line joins the few percentiles of {path} in summary.json (min, p50, p90, p99, p99.9, max)."),
            ));
        } else {
            let _ = writeln!(
                b,
                "<div class=\"note\">{}: no samples in this run.</div>",
                esc(&title)
            );
        }
    }
    b.push_str("</div>\n");
    Ok(b)
}

/// Columns of the delivery tables, in the order people read them.
const DELIVERY_COLS: [&str; 5] = ["expected", "delivered", "lost", "duplicated", "reordered"];

/// Per-population accounting of `kind` (`delivery` or `directs`), from `<kind>_by_population`,
/// `<kind>.{populations|per_population|by_population}` or (for `delivery`) top-level
/// `populations` (maps or lists with a `name`), each holding counters directly or under `<kind>`.
pub fn population_delivery(s: &Value, kind: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
    let mut out = Vec::new();
    let mut sources = vec![
        s.get(format!("{kind}_by_population").as_str()),
        lookup(s, &format!("{kind}.populations")),
        lookup(s, &format!("{kind}.per_population")),
        lookup(s, &format!("{kind}.by_population")),
    ];
    if kind == "delivery" {
        sources.push(s.get("populations"));
        sources.push(s.get("per_population"));
    }
    let pick = |v: &Value| -> Option<serde_json::Map<String, Value>> {
        let d = v.get(kind).unwrap_or(v);
        d.as_object()
            .filter(|o| o.contains_key("expected") || o.contains_key("delivered"))
            .cloned()
    };
    for src in sources.into_iter().flatten() {
        match src {
            Value::Object(o) => {
                for (k, v) in o {
                    if let Some(d) = pick(v) {
                        out.push((k.clone(), d));
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    if let Some(d) = pick(v) {
                        let name = v
                            .get("name")
                            .or_else(|| v.get("population"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("#{i}"));
                        out.push((name, d));
                    }
                }
            }
            _ => {}
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

pub(super) fn delivery_section(s: &Value) -> String {
    let mut b = String::from("<h2>Delivery</h2>\n");
    match delivery_table(s, "delivery") {
        Some(t) => {
            b.push_str("<h3>Channel messages, by receiving population</h3>\n");
            b.push_str(&t);
        }
        None => b.push_str("<div class=\"note\">summary.json has no delivery accounting.</div>\n"),
    }
    let directs_used = lookup(s, "directs.expected")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        > 0.0
        || lookup(s, "directs.delivered")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            > 0.0;
    if directs_used && let Some(t) = delivery_table(s, "directs") {
        b.push_str("<h3>Direct messages, by receiving population</h3>\n");
        b.push_str(&t);
    }
    b.push_str("<p class=\"sub\">Expected: copies the engine's membership timeline says each subscriber must receive (subscribed before the send, still subscribed after it should have arrived, publisher excluded). Lost, duplicated and reordered count per publisher → subscriber pair.</p>\n");
    b
}

/// The accounting table of `kind`: the total row, then one row per population.
fn delivery_table(s: &Value, kind: &str) -> Option<String> {
    let mut b = String::new();
    let mut rows: Vec<(String, serde_json::Map<String, Value>)> = Vec::new();
    if let Some(Value::Object(total)) = s.get(kind) {
        rows.push(("all populations".into(), total.clone()));
    }
    rows.extend(population_delivery(s, kind));
    if rows.is_empty() {
        return None;
    }
    let mut cols: Vec<String> = DELIVERY_COLS.iter().map(|c| c.to_string()).collect();
    for (_, r) in &rows {
        for (k, v) in r {
            if v.is_number() && !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    b.push_str("<table><tr><th>population</th>");
    for c in &cols {
        let _ = write!(b, "<th class=\"n\">{}</th>", esc(c));
    }
    b.push_str("</tr>\n");
    for (name, r) in &rows {
        let _ = write!(b, "<tr><td>{}</td>", esc(name));
        for c in &cols {
            let v = r.get(c).and_then(Value::as_f64);
            let bad = matches!(
                c.as_str(),
                "lost" | "duplicated" | "reordered" | "unexpected" | "loss_ratio"
            ) && v.is_some_and(|x| x > 0.0);
            let cls = if bad { "n bad" } else { "n" };
            let _ = write!(
                b,
                "<td class=\"{cls}\">{}</td>",
                match v {
                    Some(x) if c.ends_with("_ratio") =>
                        format!("{}%", fmt_num((x * 100.0 * 1e4).round() / 1e4)),
                    Some(x) => fmt_num(x),
                    None => "—".into(),
                }
            );
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table>\n");
    Some(b)
}

/// Name of a WebSocket close code (RFC 6455 and SPEC §close codes).
pub fn close_name(code: &str) -> &'static str {
    use crate::proto::frame::close;
    match code.parse::<u16>().unwrap_or(0) {
        close::NORMAL => "normal closure",
        close::GOING_AWAY => "going away",
        close::ABNORMAL => "abnormal (no close frame)",
        close::INVALID_PAYLOAD => "invalid payload",
        close::POLICY => "policy violation",
        close::TOO_BIG => "message too big",
        close::INTERNAL => "internal error",
        close::CLIENT_INACTIVITY => "client inactivity",
        close::INVALID_TOKEN => "invalid token",
        close::TOKEN_EXPIRED => "token expired",
        close::CHANNEL_NOT_AUTHORIZED => "channel not authorized",
        close::OVER_CONCURRENT_LIMIT => "over concurrent-connection limit",
        close::OVER_MESSAGE_RATE => "over message rate",
        close::ACCOUNT_SUSPENDED => "account suspended",
        close::ADMIN_DISCONNECT => "disconnected by admin",
        _ => "",
    }
}

pub(super) fn codes_section(s: &Value, key: &str, title: &str, col: &str) -> String {
    let mut b = format!("<h2>{}</h2>\n", esc(title));
    let entries: Vec<(String, Value)> = match s.get(key) {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                let k = v
                    .get("code")
                    .map(fmt_value)
                    .unwrap_or_else(|| v.to_string());
                (k, v.get("count").cloned().unwrap_or(Value::Null))
            })
            .collect(),
        _ => Vec::new(),
    };
    if entries.is_empty() {
        let _ = writeln!(
            b,
            "<div class=\"note\">None recorded (<code>{key}</code> is empty or absent).</div>"
        );
        return b;
    }
    let named = key == "closes";
    let _ = write!(b, "<table><tr><th>{}</th>", esc(col));
    if named {
        b.push_str("<th>meaning</th>");
    }
    b.push_str("<th class=\"n\">count</th></tr>\n");
    for (k, v) in entries {
        let _ = write!(b, "<tr><td><code>{}</code></td>", esc(&k));
        if named {
            let _ = write!(b, "<td>{}</td>", esc(close_name(&k)));
        }
        let _ = writeln!(b, "<td class=\"n\">{}</td></tr>", esc(&fmt_value(&v)));
    }
    b.push_str("</table>\n");
    b
}

/// Top-level summary keys the sections above already show.
const SHOWN_KEYS: &[&str] = &[
    "rest",
    "tls",
    "calls",
    "schema",
    "scenario",
    "scenario_file",
    "target",
    "started_at",
    "peers",
    "workers",
    "seed",
    "duration_s",
    "stopped_early",
    "valid",
    "reason",
    "invalid_reasons",
    "valid_reason",
    "invalid_reason",
    "validity_reason",
    "latency",
    "delivery",
    "delivery_by_population",
    "directs",
    "directs_by_population",
    "errors",
    "closes",
    "thresholds",
    "thresholds_passed",
    "checks",
    "checks_passed",
    "interrupted",
    "outcome",
    "warnings",
    "files",
    "command",
    "argv",
    "command_line",
    "populations",
    "per_population",
    "scenario_resolved",
    "resolved_scenario",
    "plan",
];

/// Leaves of a JSON value as (dotted path, display text).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(o) => o.iter().for_each(|(k, v)| leaves(v, &join(k), out)),
        Value::Array(a) if !a.iter().all(|x| x.is_string() || x.is_number()) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, &join(&i.to_string()), out)),
        other => out.push((prefix.to_string(), fmt_value(other))),
    }
}

/// Whatever else the engine put in summary.json (REST/goose request metrics, harness CPU and
/// memory, …), so a new field shows up in the report before anyone writes a section for it.
/// A map of objects (e.g. endpoint → stats) becomes a matrix; anything else a path/value list.
pub(super) fn extra_section(s: &Value) -> String {
    let Value::Object(top) = s else {
        return String::new();
    };
    let mut scalars = Vec::new();
    let mut blocks = String::new();
    let mut lists = String::new();
    for (k, v) in top {
        if SHOWN_KEYS.contains(&k.as_str()) || k.ends_with("_us") && is_stats(v) {
            continue;
        }
        match v {
            Value::Object(o) if !o.is_empty() && o.values().all(Value::is_object) => {
                let rows: Vec<(&String, Vec<(String, String)>)> = o
                    .iter()
                    .map(|(name, inner)| {
                        let mut l = Vec::new();
                        leaves(inner, "", &mut l);
                        (name, l)
                    })
                    .collect();
                let mut cols: Vec<String> = Vec::new();
                for (_, l) in &rows {
                    for (p, _) in l {
                        if !cols.contains(p) {
                            cols.push(p.clone());
                        }
                    }
                }
                let _ = write!(
                    blocks,
                    "<h3><code>{}</code></h3><table><tr><th></th>",
                    esc(k)
                );
                for c in &cols {
                    let _ = write!(blocks, "<th class=\"n\">{}</th>", esc(c));
                }
                blocks.push_str("</tr>\n");
                for (name, l) in rows {
                    let _ = write!(blocks, "<tr><td>{}</td>", esc(name));
                    for c in &cols {
                        let cell = l
                            .iter()
                            .find(|(p, _)| p == c)
                            .map_or("—", |(_, v)| v.as_str());
                        let _ = write!(blocks, "<td class=\"n\">{}</td>", esc(cell));
                    }
                    blocks.push_str("</tr>\n");
                }
                blocks.push_str("</table>\n");
            }
            Value::Object(_) | Value::Array(_) => {
                let mut l = Vec::new();
                leaves(v, "", &mut l);
                if l.is_empty() {
                    continue;
                }
                let _ = write!(lists, "<div><h3><code>{}</code></h3><table>", esc(k));
                for (p, val) in l {
                    let _ = write!(
                        lists,
                        "<tr><td><code>{}</code></td><td class=\"n\">{}</td></tr>",
                        esc(&p),
                        esc(&val)
                    );
                }
                lists.push_str("</table></div>\n");
            }
            other => scalars.push((k.clone(), fmt_value(other))),
        }
    }
    if scalars.is_empty() && blocks.is_empty() && lists.is_empty() {
        return String::new();
    }
    let mut b = String::from("<h2>More from summary.json</h2>\n<div class=\"more\">");
    if !scalars.is_empty() {
        b.push_str("<div><h3>other fields</h3><table>");
        for (k, v) in scalars {
            let _ = write!(
                b,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td></tr>",
                esc(&k),
                esc(&v)
            );
        }
        b.push_str("</table></div>\n");
    }
    b.push_str(&lists);
    b.push_str("</div>\n");
    b.push_str(&blocks);
    b
}

pub(super) fn scenario_section(run: &RunDir) -> String {
    let mut b = String::from("<h2>Scenario as it ran</h2>\n");
    if let Some((name, text)) = &run.scenario_file {
        let _ = writeln!(
            b,
            "<p class=\"sub\">{} from the run directory (command-line flags folded in):</p><pre>{}</pre>",
            esc(name),
            esc(text)
        );
    } else if let Some(v) = ["scenario", "scenario_resolved", "resolved_scenario", "plan"]
        .iter()
        .find_map(|k| run.summary.get(*k).filter(|v| v.is_object()))
    {
        let _ = writeln!(
            b,
            "<p class=\"sub\">From summary.json:</p><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(v).unwrap_or_default())
        );
    } else {
        b.push_str("<div class=\"note\">The run directory has no scenario.toml and summary.json has no scenario object.</div>\n");
    }
    if let Some(cmd) = ["command", "argv", "command_line"]
        .iter()
        .find_map(|k| run.summary.get(*k))
    {
        let text = match cmd {
            Value::Array(a) => a.iter().map(fmt_value).collect::<Vec<_>>().join(" "),
            v => fmt_value(v),
        };
        let _ = writeln!(b, "<p>Command: <code>{}</code></p>", esc(&text));
    }
    b
}
