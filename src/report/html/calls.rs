//! The calls section of the report page (`calls` in summary.json): how the pair
//! negotiations of `[population.call]` ended, glare, meshes and the signalling counts.

use std::fmt::Write as _;

use serde_json::Value;

use super::kit::{esc, fmt_value};

/// Rows: (summary key, label, bad when non-zero).
const ROWS: [(&str, &str, bool); 15] = [
    ("pairs", "pair negotiations started by joins", false),
    (
        "negotiated",
        "negotiated (offering side had answer and all candidates)",
        false,
    ),
    (
        "failed",
        "failed calls (not negotiated within the timeout)",
        true,
    ),
    ("failed_sides", "sides that waited in vain", true),
    ("abandoned", "abandoned (a member left)", false),
    ("cut_off", "cut off by the end of the run", false),
    ("glare", "offer collisions (polite side rolled back)", false),
    (
        "ignored_offers",
        "offers ignored by the impolite side",
        false,
    ),
    ("meshes", "joins that found members", false),
    ("meshes_ready", "meshes ready", false),
    ("renegotiations", "renegotiations finished", false),
    ("out_of_order", "signalling messages out of order", true),
    (
        "stale",
        "signalling messages matching no negotiation",
        false,
    ),
    ("peer_not_found", "directs to members that had left", false),
    ("ice_servers", "welcomes with iceServers (AUTH-14)", false),
];

pub(super) fn calls_section(s: &Value) -> String {
    let Some(c) = s.get("calls").filter(|c| c.is_object()) else {
        return String::new();
    };
    let mut b = String::from(
        "<h2>Calls</h2>\n<p class=\"sub\">WebRTC call setup over directs, the way MeteredPeer negotiates (docs/LOAD.md, \"Calls\").</p>\n<table><tr><th>what</th><th class=\"n\">count</th></tr>\n",
    );
    for (key, label, bad_if_any) in ROWS {
        let v = c.get(key).cloned().unwrap_or(Value::Null);
        let bad = bad_if_any && v.as_f64().is_some_and(|x| x > 0.0);
        let _ = writeln!(
            b,
            "<tr><td>{} <code>calls.{key}</code></td><td class=\"n{}\">{}</td></tr>",
            esc(label),
            if bad { " bad" } else { "" },
            esc(&fmt_value(&v))
        );
    }
    if let Some(Value::Object(sent)) = c.get("sent") {
        for (kind, n) in sent {
            let _ = writeln!(
                b,
                "<tr><td>sent: {} <code>calls.sent.{}</code></td><td class=\"n\">{}</td></tr>",
                esc(kind),
                esc(kind),
                esc(&fmt_value(n))
            );
        }
    }
    b.push_str("</table>\n");
    b
}
