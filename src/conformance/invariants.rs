//! Checks applied to every frame any case receives, whatever the case tests: framing
//! (FRAME-1), the shapes the official parsers require (FRAME-14, PFR-1, WEL-3, GA-2),
//! `welcome` first and once (WEL-1, ORD-1), and `null` for omitted optionals (FRAME-13,
//! non-strict). A broken frame fails the case it shows up in, naming the rule.

use serde_json::Value;

/// Rules every case checks on every frame it receives (violations fail the case), so a
/// case that fails on one of them proves it whatever rules the case itself cites.
pub const RULES: &[&str] = &[
    "FRAME-1", "FRAME-14", "PFR-1", "WEL-1", "WEL-3", "WEL-5", "GA-2", "ORD-1", "DIR-1", "ERRF-2",
];

/// What one frame revealed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    /// Hard violations (the case fails).
    pub violations: Vec<String>,
    /// Tolerated deviations (the case is non-strict).
    pub notes: Vec<String>,
}

/// Per-connection state the checks need.
#[derive(Debug, Default, Clone)]
pub struct ConnState {
    /// Text frames seen so far on this connection.
    pub frames: usize,
    pub welcomes: usize,
}

fn kind(v: Option<&Value>) -> &'static str {
    match v {
        None => "absent",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// Checks one text frame; `text` is the raw payload.
pub fn check_text(text: &str, state: &mut ConnState) -> (Option<Value>, Findings) {
    let mut f = Findings::default();
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            f.violations.push(format!(
                "FRAME-1: the server sent a text frame that is not JSON ({e})"
            ));
            state.frames += 1;
            return (None, f);
        }
    };
    let Some(obj) = value.as_object() else {
        f.violations
            .push("FRAME-1: the server sent a JSON value that is not an object".into());
        state.frames += 1;
        return (Some(value), f);
    };
    let Some(ty) = obj.get("type").and_then(Value::as_str) else {
        f.violations
            .push("FRAME-1: the server sent an object without a string `type`".into());
        state.frames += 1;
        return (Some(value), f);
    };
    let first = state.frames == 0;
    state.frames += 1;

    let mut need = |rule: &str, name: &str, ok: fn(&Value) -> bool, what: &str| {
        let v = obj.get(name);
        if !v.is_some_and(ok) {
            f.violations.push(format!(
                "{rule}: `{ty}.{name}` must be {what}, got {}",
                kind(v)
            ));
        }
    };
    match ty {
        "welcome" => {
            state.welcomes += 1;
            need("FRAME-14", "peerId", Value::is_string, "a string");
            need(
                "WEL-3",
                "expiresAt",
                |v| v.is_null() || v.is_i64(),
                "an integer or null (present)",
            );
            need("FRAME-14", "serverTime", Value::is_number, "a number");
            need(
                "WEL-5",
                "maxMessageSize",
                |v| v.as_i64().is_some_and(|n| n > 0),
                "a positive integer",
            );
        }
        "ack" => need("FRAME-14", "requestId", Value::is_string, "a string"),
        "error" => need(
            "ERRF-2",
            "code",
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
            "a non-empty string",
        ),
        "message" => {
            need("FRAME-14", "channel", Value::is_string, "a string");
            need("FRAME-14", "from", Value::is_string, "a string");
            need("FRAME-14", "data", |_| true, "present");
        }
        "direct" => {
            need("FRAME-14", "from", Value::is_string, "a string");
            need("FRAME-14", "data", |_| true, "present");
            if obj.contains_key("channel") || obj.contains_key("to") {
                f.violations
                    .push("DIR-1: a `direct` frame carries `channel` or `to`".into());
            }
        }
        "presence" => {
            need("FRAME-14", "channel", Value::is_string, "a string");
            for list in ["joined", "left"] {
                match obj.get(list) {
                    Some(Value::Array(entries)) => {
                        for e in entries {
                            match e {
                                Value::Object(p) if p.get("peerId").is_some_and(Value::is_string) => {
                                    match p.get("metadata") {
                                        None | Some(Value::Object(_)) => {}
                                        Some(Value::Null) => f.notes.push(format!(
                                            "FRAME-13: a `presence.{list}` entry has `metadata: null` instead of omitting it"
                                        )),
                                        Some(other) => f.violations.push(format!(
                                            "PFR-1: a `presence.{list}` entry has metadata that is {}, not an object",
                                            kind(Some(other))
                                        )),
                                    }
                                }
                                other => f.violations.push(format!(
                                    "PFR-1: a `presence.{list}` entry is not an object with a string `peerId`: {other}"
                                )),
                            }
                        }
                    }
                    other => f.violations.push(format!(
                        "PFR-1: `presence.{list}` must be an array (always present), got {}",
                        kind(other)
                    )),
                }
            }
        }
        "going_away" => {
            if let Some(v) = obj.get("retryAfterMs")
                && v.as_i64().is_none_or(|n| n <= 0)
            {
                f.violations.push(format!(
                    "GA-2: `going_away.retryAfterMs` must be a positive integer, got {v}"
                ));
            }
        }
        _ => {}
    }
    // Optional members sent as null (FRAME-13): tolerated, but noted.
    let optional: &[&str] = match ty {
        "ack" => &[],
        "error" => &["requestId", "message"],
        "message" | "direct" => &["fromMetadata"],
        "welcome" => &["metadata"],
        "pong" => &["requestId"],
        _ => &[],
    };
    for name in optional {
        if obj.get(*name) == Some(&Value::Null) {
            f.notes.push(format!(
                "FRAME-13: `{ty}.{name}` is null instead of omitted"
            ));
        }
    }
    for name in ["requestId", "message"] {
        if let Some(v) = obj.get(name)
            && !v.is_null()
            && !v.is_string()
            && matches!(ty, "error" | "pong")
        {
            f.violations.push(format!(
                "FRAME-14: `{ty}.{name}` must be a string, got {}",
                kind(Some(v))
            ));
        }
    }
    for name in ["fromMetadata", "metadata"] {
        if let Some(v) = obj.get(name)
            && !v.is_null()
            && !v.is_object()
            && matches!(ty, "message" | "direct" | "welcome")
        {
            f.violations.push(format!(
                "FRAME-14: `{ty}.{name}` must be an object, got {}",
                kind(Some(v))
            ));
        }
    }
    if ty == "welcome" && !first {
        f.violations.push(if state.welcomes > 1 {
            "WEL-1: a second `welcome` on the same connection".into()
        } else {
            "ORD-1: `welcome` is not the first frame of the connection".into()
        });
    }
    if first && ty != "welcome" && ty != "error" {
        f.violations.push(format!(
            "ORD-1: the first frame of the connection is `{ty}`, not `welcome`"
        ));
    }
    (Some(value), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(frames: &[&str]) -> Findings {
        let mut s = ConnState::default();
        let mut all = Findings::default();
        for f in frames {
            let (_, x) = check_text(f, &mut s);
            all.violations.extend(x.violations);
            all.notes.extend(x.notes);
        }
        all
    }

    const WELCOME: &str =
        r#"{"type":"welcome","peerId":"a","expiresAt":null,"serverTime":1,"maxMessageSize":65536}"#;

    #[test]
    fn clean_session() {
        let f = check(&[
            WELCOME,
            r#"{"type":"ack","requestId":"s1"}"#,
            r#"{"type":"presence","channel":"c","joined":[{"peerId":"b","metadata":{"n":1}}],"left":[]}"#,
            r#"{"type":"message","channel":"c","from":"b","data":null}"#,
            r#"{"type":"going_away","retryAfterMs":1000}"#,
        ]);
        assert_eq!(f, Findings::default());
    }

    #[test]
    fn broken_frames() {
        assert!(check(&["nope"]).violations[0].starts_with("FRAME-1"));
        assert!(
            check(&[r#"{"type":"welcome","peerId":"a","serverTime":1,"maxMessageSize":1}"#])
                .violations[0]
                .starts_with("WEL-3")
        );
        let f = check(&[
            WELCOME,
            r#"{"type":"presence","channel":"c","joined":[],"left":null}"#,
        ]);
        assert!(f.violations[0].starts_with("PFR-1"), "{f:?}");
        let f = check(&[WELCOME, r#"{"type":"message","channel":"c","from":"b"}"#]);
        assert!(f.violations[0].contains("data"), "{f:?}");
        let f = check(&[WELCOME, WELCOME]);
        assert!(f.violations[0].starts_with("WEL-1"), "{f:?}");
        let f = check(&[r#"{"type":"ack","requestId":"x"}"#]);
        assert!(f.violations[0].starts_with("ORD-1"), "{f:?}");
        let f = check(&[WELCOME, r#"{"type":"error","code":"x","requestId":null}"#]);
        assert!(f.violations.is_empty() && f.notes.len() == 1, "{f:?}");
    }
}
