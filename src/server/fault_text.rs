//! Fault switches that work on frame text: inbound frames the server should refuse but
//! accepts (or the reverse), and outbound frames whose members are wrong. Called only
//! when some fault is on (`FaultSet::is_empty` first), so the clean server never parses
//! a frame twice.

use std::collections::HashMap;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::faults::{Fault, FaultSet};
use super::variant_io::Members;
use crate::proto::frame::{Inbound, Rejection, Request};
use crate::proto::limits::{is_control, valid_channel, valid_request_id};
use crate::proto::{ErrorCode, close};

/// The text of `object` with member `key` set to `value` (raw JSON; appended when
/// absent) or removed (`None`), every other member kept in place.
pub fn with_member(object: &str, key: &str, value: Option<&str>) -> Option<String> {
    let Members(members) = serde_json::from_str(object).ok()?;
    let mut out = String::with_capacity(object.len() + 16);
    out.push('{');
    let mut found = false;
    let mut first = true;
    let mut put = |out: &mut String, k: &str, v: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(v);
    };
    for (k, v) in &members {
        if k == key {
            found = true;
            if let Some(value) = value {
                put(&mut out, k, value);
            }
        } else {
            put(&mut out, k, v.get());
        }
    }
    if let (false, Some(value)) = (found, value) {
        put(&mut out, key, value);
    }
    out.push('}');
    Some(out)
}

fn member<'a>(members: &HashMap<String, &'a RawValue>, key: &str) -> Option<&'a str> {
    members.get(key).map(|r| r.get())
}

fn string_member(members: &HashMap<String, &RawValue>, key: &str) -> Option<String> {
    serde_json::from_str(member(members, key)?).ok()
}

const CLIENT_TYPES: [&str; 5] = ["subscribe", "unsubscribe", "publish", "send", "ping"];
const KNOWN_MEMBERS: [&str; 6] = [
    "type",
    "requestId",
    "channel",
    "data",
    "to",
    "includeSenderMetadata",
];

/// Text to process instead of an inbound frame, for faults that accept what SPEC
/// refuses: a type in the wrong case (`type-case-insensitive`), a publish or send
/// without `data` (`missing-data-as-null`).
pub fn rewrite_inbound(f: FaultSet, text: &str) -> Option<String> {
    let members: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let ty = string_member(&members, "type")?;
    let lower = ty.to_ascii_lowercase();
    if f.has(Fault::TypeCaseInsensitive) && ty != lower && CLIENT_TYPES.contains(&lower.as_str()) {
        return with_member(text, "type", Some(&serde_json::to_string(&lower).ok()?));
    }
    if f.has(Fault::MissingDataAsNull)
        && matches!(ty.as_str(), "publish" | "send")
        && !members.contains_key("data")
    {
        return with_member(text, "data", Some("null"));
    }
    None
}

/// A refusal of a frame SPEC accepts (`unknown-members-rejected`: FRAME-3).
pub fn refuse_inbound(f: FaultSet, text: &str) -> Option<Rejection> {
    if !f.has(Fault::UnknownMembersRejected) {
        return None;
    }
    let members: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let unknown = members.keys().any(|k| !KNOWN_MEMBERS.contains(&k.as_str()));
    unknown.then(|| Rejection {
        code: ErrorCode::MalformedMessage,
        request_id: string_member(&members, "requestId").filter(|r| valid_request_id(r)),
        message: "unknown member (fault switch)".into(),
    })
}

/// What to answer a refused frame with under the faults: `None` says nothing
/// (`malformed-ignored`); `malformed-echoes-bad-request-id` echoes an invalid requestId.
pub fn rejection(f: FaultSet, text: &str, mut r: Rejection) -> Option<Rejection> {
    if r.code == ErrorCode::MalformedMessage {
        let members: Option<HashMap<String, &RawValue>> = serde_json::from_str(text).ok();
        if f.has(Fault::MalformedIgnored) && members.is_none() {
            return None;
        }
        if f.has(Fault::MalformedEchoesBadRequestId) && r.request_id.is_none() {
            r.request_id = members.as_ref().and_then(|m| string_member(m, "requestId"));
        }
    }
    if r.code == ErrorCode::InvalidPeerId && f.has(Fault::InvalidPeerIdNotFound) {
        r.code = ErrorCode::PeerNotFound;
    }
    Some(r)
}

/// A frame the server sends, as the outbound faults change it; `None` drops it.
pub fn outbound(f: FaultSet, text: Utf8Bytes) -> Option<Utf8Bytes> {
    let ty = {
        let members: HashMap<String, &RawValue> = serde_json::from_str(&text).ok()?;
        string_member(&members, "type")?
    };
    let changed = match ty.as_str() {
        "error" if f.has(Fault::ErrorCodeGeneric) => {
            with_member(&text, "code", Some(r#""bad_request""#))
        }
        "pong" if f.has(Fault::PongMissing) => return None,
        "pong" if f.has(Fault::PongDropsRequestId) => with_member(&text, "requestId", None),
        "direct" if f.has(Fault::DirectCarriesTo) => with_member(&text, "to", Some(r#""you""#)),
        _ => None,
    };
    Some(changed.map(Utf8Bytes::from).unwrap_or(text))
}

/// The close code for an oversize frame (`oversize-closes-1002`) or invalid UTF-8
/// (`utf8-closes-1002`) under the faults.
pub fn close_code(f: FaultSet, code: u16) -> u16 {
    match code {
        close::TOO_BIG if f.has(Fault::OversizeCloses1002) => 1002,
        close::INVALID_PAYLOAD if f.has(Fault::Utf8Closes1002) => 1002,
        close::OVER_MESSAGE_RATE if f.has(Fault::RateCloses4099) => 4099,
        other => other,
    }
}

/// A channel pattern as the pattern faults read it (PAT-2…6), by rewriting its text:
/// single `*` becomes `**` (`pattern-star-crosses-slash`), runs of two or more become
/// `*` (`pattern-double-star-stops-at-slash`), runs of three or more become `*`
/// (`pattern-star-runs`), backslashes are doubled so they escape nothing
/// (`pattern-no-escape`), and `**` is appended (`pattern-unanchored`).
pub fn faulted_pattern(f: FaultSet, pattern: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let stars = f.has(Fault::PatternStarCrossesSlash)
        || f.has(Fault::PatternDoubleStarStopsAtSlash)
        || f.has(Fault::PatternStarRuns);
    if !stars && !f.has(Fault::PatternNoEscape) && !f.has(Fault::PatternUnanchored) {
        return Cow::Borrowed(pattern);
    }
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if f.has(Fault::PatternNoEscape) => out.push_str("\\\\"),
            '\\' => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '*' => {
                let mut run = 1;
                while chars.peek() == Some(&'*') {
                    chars.next();
                    run += 1;
                }
                let written = match run {
                    1 if f.has(Fault::PatternStarCrossesSlash) => "**",
                    2.. if f.has(Fault::PatternDoubleStarStopsAtSlash) => "*",
                    3.. if f.has(Fault::PatternStarRuns) => "*",
                    _ => "",
                };
                if written.is_empty() {
                    (0..run).for_each(|_| out.push('*'));
                } else {
                    out.push_str(written);
                }
            }
            c => out.push(c),
        }
    }
    if f.has(Fault::PatternUnanchored) {
        out.push_str("**");
    }
    Cow::Owned(out)
}

/// Whether a fault accepts `channel`, which SPEC refuses (LIM-6, LIM-17, LIM-18):
/// `long-channel-accepted` (over 256 bytes), `channel-length-in-chars` (over 256 bytes
/// but not characters), `control-chars-in-channel`.
fn loosely_valid(f: FaultSet, channel: &str) -> bool {
    let control = channel.chars().any(is_control);
    let long = channel.len() > 256;
    if channel.is_empty() || (control && !f.has(Fault::ControlCharsInChannel)) {
        return false;
    }
    if !long {
        return control;
    }
    (f.has(Fault::LongChannelAccepted) && channel.get(..256).is_some_and(valid_channel))
        || (f.has(Fault::ChannelLengthInChars) && channel.chars().count() <= 256)
}

/// Parses a subscribe / unsubscribe / publish whose channel SPEC refuses but a fault
/// accepts ([`loosely_valid`]); everything else about the frame must be valid.
pub fn parse_loose_channel(f: FaultSet, text: &str) -> Option<Inbound<'_>> {
    let members: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let channel = string_member(&members, "channel")?;
    if !loosely_valid(f, &channel) {
        return None;
    }
    let request_id = match members.get("requestId") {
        None => None,
        Some(_) => Some(string_member(&members, "requestId").filter(|r| valid_request_id(r))?),
    };
    let request = match string_member(&members, "type")?.as_str() {
        "subscribe" => Request::Subscribe {
            channel,
            include_sender_metadata: members
                .get("includeSenderMetadata")
                .is_some_and(|r| r.get() == "true"),
        },
        "unsubscribe" => Request::Unsubscribe { channel },
        "publish" => Request::Publish {
            channel,
            data: members.get("data").copied()?,
        },
        _ => return None,
    };
    Some(Inbound {
        request_id,
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_set_removed_and_appended_in_place() {
        let t = r#"{"type":"pong","requestId":"p","x":{"b":1,"a":2}}"#;
        assert_eq!(
            with_member(t, "requestId", None).unwrap(),
            r#"{"type":"pong","x":{"b":1,"a":2}}"#
        );
        assert_eq!(
            with_member(t, "type", Some(r#""ping""#)).unwrap(),
            r#"{"type":"ping","requestId":"p","x":{"b":1,"a":2}}"#
        );
        assert_eq!(
            with_member(t, "to", Some("1")).unwrap(),
            r#"{"type":"pong","requestId":"p","x":{"b":1,"a":2},"to":1}"#
        );
    }

    #[test]
    fn pattern_faults_rewrite_the_text() {
        let f = |name: &str, p: &str| {
            faulted_pattern(FaultSet::parse(&[name]).unwrap(), p).into_owned()
        };
        assert_eq!(f("pattern-star-crosses-slash", "a/*/b/**"), "a/**/b/**");
        assert_eq!(f("pattern-double-star-stops-at-slash", "a/**"), "a/*");
        assert_eq!(f("pattern-star-runs", "a***b**"), "a*b**");
        assert_eq!(f("pattern-no-escape", r"a\*"), r"a\\*");
        assert_eq!(f("pattern-unanchored", "room"), "room**");
        assert_eq!(faulted_pattern(FaultSet::NONE, "a*"), "a*");
    }

    #[test]
    fn inbound_rewrites() {
        let f = FaultSet::parse(&["type-case-insensitive", "missing-data-as-null"]).unwrap();
        assert_eq!(
            rewrite_inbound(f, r#"{"type":"Ping"}"#).unwrap(),
            r#"{"type":"ping"}"#
        );
        assert_eq!(
            rewrite_inbound(f, r#"{"type":"publish","channel":"c"}"#).unwrap(),
            r#"{"type":"publish","channel":"c","data":null}"#
        );
        assert_eq!(rewrite_inbound(f, r#"{"type":"ping"}"#), None);
        assert_eq!(rewrite_inbound(FaultSet::NONE, r#"{"type":"Ping"}"#), None);
    }
}
