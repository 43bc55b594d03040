//! The built-in checks on the report page: a header card and a table (check, result,
//! count, tolerance, evidence and first examples), from `checks` in summary.json.
//! Summaries written before the checks existed have none, and the page says nothing.

use std::fmt::Write as _;

use serde_json::Value;

use super::kit::{esc, fmt_value};

/// One check as summary.json lists it.
struct Row {
    name: String,
    passed: bool,
    enabled: bool,
    count: String,
    limit: String,
    evidence: String,
    examples: Vec<String>,
}

fn rows(s: &Value) -> Vec<Row> {
    let Some(Value::Array(list)) = s.get("checks") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|c| {
            Some(Row {
                name: c.get("name")?.as_str()?.to_owned(),
                passed: c.get("passed").and_then(Value::as_bool).unwrap_or(false),
                enabled: c.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                count: c.get("count").map(fmt_value).unwrap_or_default(),
                limit: c
                    .get("limit")
                    .and_then(Value::as_str)
                    .unwrap_or("==0")
                    .to_owned(),
                evidence: c
                    .get("evidence")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                examples: c
                    .get("examples")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The header card: `ALL 15 PASSED`, or how many failed.
pub(super) fn checks_card(s: &Value) -> Option<String> {
    let rows = rows(s);
    if rows.is_empty() {
        return None;
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    Some(if failed > 0 {
        format!(
            "<span class=\"badge bad\">{failed} FAILED</span> <span class=\"ok\">{} passed</span>",
            rows.len() - failed
        )
    } else {
        format!("<span class=\"badge ok\">ALL {} PASSED</span>", rows.len())
    })
}

/// The "Built-in checks" section.
pub(super) fn checks_section(s: &Value) -> String {
    let rows = rows(s);
    if rows.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h2>Built-in checks</h2>\n<p class=\"sub\">What any correct server must do, checked in every run; a scenario relaxes a check with <code>[checks]</code>, the command line with <code>--allow</code>.</p>\n<table><tr><th>check</th><th>result</th><th class=\"n\">count</th><th>tolerance</th><th>evidence</th></tr>\n",
    );
    for r in rows {
        let (cls, txt) = match (r.enabled, r.passed) {
            (false, _) => ("", "off"),
            (true, true) => ("ok", "passed"),
            (true, false) => ("bad", "FAILED"),
        };
        let mut evidence = esc(&r.evidence);
        for e in &r.examples {
            let _ = write!(evidence, "<br><small>e.g. {}</small>", esc(e));
        }
        let _ = writeln!(
            b,
            "<tr><td><code>checks.{}</code></td><td class=\"{cls}\">{txt}</td><td class=\"n\">{}</td><td><code>{}</code></td><td>{evidence}</td></tr>",
            esc(&r.name),
            esc(&r.count),
            esc(&r.limit)
        );
    }
    b.push_str("</table>\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_checks_with_evidence_and_examples() {
        let s = json!({"checks": [
            {"name": "acks", "passed": true, "enabled": true, "count": 0, "limit": "==0", "evidence": "all acked", "examples": []},
            {"name": "closes", "passed": false, "enabled": true, "count": 4, "limit": "==0", "evidence": "1006 × 4", "examples": ["peer <x>: 1006"]},
            {"name": "lost", "passed": true, "enabled": false, "count": 2, "limit": "off", "evidence": "off", "examples": []}
        ]});
        let html = checks_section(&s);
        assert!(
            html.contains("checks.closes") && html.contains("FAILED"),
            "{html}"
        );
        assert!(html.contains("e.g. peer &lt;x&gt;: 1006"), "{html}");
        assert!(html.contains(">off<"), "{html}");
        assert!(checks_card(&s).unwrap().contains("1 FAILED"));
        assert!(checks_section(&json!({})).is_empty());
    }
}
