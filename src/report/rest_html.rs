//! The "REST control plane (goose)" section of `report.html`: goose's per-endpoint request
//! metrics and the REST publishes' own delivery accounting, from `rest` in summary.json.

use std::fmt::Write;

use serde_json::Value;

use super::html::{esc, fmt_ms, fmt_num};

/// Empty when the run had no `[[rest]]` population.
pub fn rest_section(s: &Value) -> String {
    let Some(rest) = s.get("rest").filter(|r| r.is_object()) else {
        return String::new();
    };
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut b = String::from("<h2>REST control plane (goose)</h2>\n");
    let _ = writeln!(
        b,
        "<p class=\"sub\">Population <b>{}</b>: {} goose users, {} requests/s on the {} rooms of <b>{}</b>. \
         Planned {}, sent {}, not sent {} (the run ended first). Response times are goose's (request sent → response), in ms.</p>",
        esc(&text(rest, "population")),
        fmt_num(num(rest, "users")),
        fmt_num(num(rest, "rate")),
        fmt_num(num(rest, "rooms")),
        esc(&text(rest, "rooms_of")),
        fmt_num(num(rest, "planned")),
        fmt_num(num(rest, "sent")),
        fmt_num(num(rest, "skipped")),
    );
    if let Some(err) = rest.pointer("/goose/error").and_then(Value::as_str) {
        let _ = writeln!(b, "<div class=\"warn\">goose failed: {}</div>", esc(err));
    }
    b.push_str(
        "<table><tr><th>endpoint</th><th class=\"n\">requests</th><th class=\"n\">ok</th>\
         <th class=\"n\">failed</th><th>status codes</th><th class=\"n\">p50</th><th class=\"n\">p90</th>\
         <th class=\"n\">p99</th><th class=\"n\">p99.9</th><th class=\"n\">max</th><th class=\"n\">mean</th></tr>\n",
    );
    if let Some(Value::Object(eps)) = rest.get("endpoints") {
        for ep in eps.values() {
            let codes = ep
                .get("status_codes")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(c, n)| format!("{c} × {}", fmt_num(n.as_f64().unwrap_or(0.0))))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let r = ep.get("response_us").cloned().unwrap_or(Value::Null);
            let failed = num(ep, "failures");
            let _ = write!(
                b,
                "<tr><td><code>{} {}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td><td>{}</td>",
                esc(&text(ep, "method")),
                esc(&text(ep, "path")),
                fmt_num(num(ep, "requests")),
                fmt_num(num(ep, "successes")),
                if failed > 0.0 { "n bad" } else { "n" },
                fmt_num(failed),
                esc(&codes),
            );
            for k in ["p50", "p90", "p99", "p999", "max", "mean"] {
                let _ = write!(b, "<td class=\"n\">{}</td>", fmt_ms(num(&r, k)));
            }
            b.push_str("</tr>\n");
        }
    }
    b.push_str("</table>\n");
    if let Some(d) = rest.get("delivery").filter(|d| d.is_object()) {
        b.push_str("<h3>REST publishes: delivery to the WebSocket subscribers</h3>\n<table><tr>");
        let cols = ["expected", "delivered", "lost", "duplicated", "reordered"];
        for c in cols {
            let _ = write!(b, "<th class=\"n\">{c}</th>");
        }
        b.push_str(
            "<th class=\"n\">server-reported (REST-33 <code>delivered</code>)</th></tr>\n<tr>",
        );
        for c in cols {
            let v = num(d, c);
            let bad = c != "expected" && c != "delivered" && v > 0.0;
            let _ = write!(
                b,
                "<td class=\"{}\">{}</td>",
                if bad { "n bad" } else { "n" },
                fmt_num(v)
            );
        }
        let _ = writeln!(
            b,
            "<td class=\"n\">{}</td></tr></table>",
            fmt_num(num(rest, "publish_delivered"))
        );
        b.push_str("<p class=\"sub\">Included in the delivery table above. The fan-out latency of these <code>system</code> messages is the \"System-message fan-out\" plot (intended send time → each subscriber's receipt). The server-reported count includes copies to members that were joining or leaving, which the accounting leaves out.</p>\n");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_endpoints_and_delivery() {
        let s: Value = serde_json::from_str(
            r#"{"rest":{"population":"backend","rooms_of":"listeners","rooms":4,"users":2,"rate":50,
            "planned":100,"sent":99,"skipped":1,"publish_delivered":400,
            "endpoints":{"publish":{"method":"POST","path":"/v1/channels/:id/publish","requests":99,
            "successes":98,"failures":1,"status_codes":{"200":98,"429":1},
            "response_us":{"count":99,"min":100,"p50":800,"p90":900,"p99":1200,"p999":1500,"max":1500,"mean":820.5}}},
            "delivery":{"expected":392,"delivered":392,"lost":0,"duplicated":0,"reordered":0}}}"#,
        )
        .unwrap();
        let h = rest_section(&s);
        assert!(h.contains("POST /v1/channels/:id/publish"));
        assert!(h.contains("429 × 1"));
        assert!(h.contains("392"));
        assert!(rest_section(&serde_json::json!({})).is_empty());
    }
}
