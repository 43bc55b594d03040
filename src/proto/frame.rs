//! Wire frames (SPEC §7–§13): the client→server request parser with the check order of
//! §7.1 (steps 4–7), the server→client frames, error codes and close codes.
//!
//! Inbound parsing is tolerant of unknown members (FRAME-3); outbound frames omit absent
//! optionals (FRAME-13). `data` is carried as raw JSON text so it is relayed byte-for-byte
//! (FRAME-16).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::limits::{valid_channel, valid_peer_id, valid_request_id};

/// Error-frame codes (SPEC §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedMessage,
    UnknownType,
    InvalidChannel,
    InvalidPeerId,
    ChannelNotAuthorized,
    ChannelReserved,
    ChannelLimitExceeded,
    PeerNotFound,
    MissingData,
    ActionNotPermitted,
    OverMessageQuota,
    BackendError,
    InternalError,
}

impl ErrorCode {
    /// Every code, in the order of the §12 table.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownType,
        ErrorCode::InvalidChannel,
        ErrorCode::InvalidPeerId,
        ErrorCode::ChannelNotAuthorized,
        ErrorCode::ChannelReserved,
        ErrorCode::ChannelLimitExceeded,
        ErrorCode::PeerNotFound,
        ErrorCode::MissingData,
        ErrorCode::ActionNotPermitted,
        ErrorCode::OverMessageQuota,
        ErrorCode::BackendError,
        ErrorCode::InternalError,
    ];

    /// The wire string, e.g. `malformed_message`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::InvalidPeerId => "invalid_peer_id",
            ErrorCode::ChannelNotAuthorized => "channel_not_authorized",
            ErrorCode::ChannelReserved => "channel_reserved",
            ErrorCode::ChannelLimitExceeded => "channel_limit_exceeded",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::MissingData => "missing_data",
            ErrorCode::ActionNotPermitted => "action_not_permitted",
            ErrorCode::OverMessageQuota => "over_message_quota",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the protocol uses (SPEC §13).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const CLIENT_INACTIVITY: u16 = 4000;
    pub const INVALID_TOKEN: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4002;
    pub const CHANNEL_NOT_AUTHORIZED: u16 = 4003;
    pub const OVER_CONCURRENT_LIMIT: u16 = 4010;
    pub const OVER_MESSAGE_RATE: u16 = 4011;
    pub const ACCOUNT_SUSPENDED: u16 = 4012;
    pub const ADMIN_DISCONNECT: u16 = 4020;

    /// A short name for reports, e.g. `4011 over_message_rate`.
    pub fn name(code: u16) -> &'static str {
        match code {
            NORMAL => "normal",
            GOING_AWAY => "going_away",
            ABNORMAL => "abnormal",
            INVALID_PAYLOAD => "invalid_payload",
            POLICY => "policy_violation",
            TOO_BIG => "message_too_big",
            INTERNAL => "internal_error",
            CLIENT_INACTIVITY => "client_inactivity",
            INVALID_TOKEN => "invalid_token",
            TOKEN_EXPIRED => "token_expired",
            CHANNEL_NOT_AUTHORIZED => "channel_not_authorized",
            OVER_CONCURRENT_LIMIT => "over_concurrent_limit",
            OVER_MESSAGE_RATE => "over_message_rate",
            ACCOUNT_SUSPENDED => "account_suspended",
            ADMIN_DISCONNECT => "admin_disconnect",
            _ => "other",
        }
    }
}

/// A request the server accepted syntactically (checks 4–7 of §7.1 passed).
#[derive(Debug, PartialEq)]
pub struct Inbound<'a> {
    /// The valid `requestId`, if any (FRAME-4).
    pub request_id: Option<String>,
    pub request: Request<'a>,
}

/// A client→server request (SPEC §8); `data` borrows the frame's raw JSON text.
#[derive(Debug)]
pub enum Request<'a> {
    Subscribe {
        channel: String,
        include_sender_metadata: bool,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        data: &'a RawValue,
    },
    Send {
        to: String,
        data: &'a RawValue,
    },
    Ping,
}

impl PartialEq for Request<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Request::*;
        match (self, other) {
            (
                Subscribe {
                    channel: a,
                    include_sender_metadata: x,
                },
                Subscribe {
                    channel: b,
                    include_sender_metadata: y,
                },
            ) => a == b && x == y,
            (Unsubscribe { channel: a }, Unsubscribe { channel: b }) => a == b,
            (
                Publish {
                    channel: a,
                    data: x,
                },
                Publish {
                    channel: b,
                    data: y,
                },
            ) => a == b && x.get() == y.get(),
            (Send { to: a, data: x }, Send { to: b, data: y }) => a == b && x.get() == y.get(),
            (Ping, Ping) => true,
            _ => false,
        }
    }
}

impl Request<'_> {
    /// The frame's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish { .. } => "publish",
            Request::Send { .. } => "send",
            Request::Ping => "ping",
        }
    }
}

/// Why a text frame was refused with an `error` frame (the connection stays open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    /// Echoed only when the frame carried a valid one (FRAME-4/6/7).
    pub request_id: Option<String>,
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, request_id: Option<String>, message: impl Into<String>) -> Self {
        Rejection {
            code,
            request_id,
            message: message.into(),
        }
    }
}

/// Parses one inbound text frame, applying checks 4–7 of SPEC §7.1 in order.
///
/// Size, rate and UTF-8 (checks 1–3) are the transport's job; authorization and
/// routing (8–13) are the server's.
pub fn parse_request(text: &str) -> Result<Inbound<'_>, Rejection> {
    if nesting_depth(text) > MAX_NESTING {
        return Err(Rejection::new(
            ErrorCode::MalformedMessage,
            None,
            "JSON nested deeper than 128 levels",
        ));
    }
    // Duplicate members: the last one wins, as in serde_json's own maps.
    let members: HashMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
        let why = if e.is_data() {
            "frame is not a JSON object"
        } else {
            "frame is not valid JSON"
        };
        Rejection::new(ErrorCode::MalformedMessage, None, why)
    })?;
    let request_id = match members.get("requestId") {
        None => Ok(None),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(id) if valid_request_id(&id) => Ok(Some(id)),
            _ => Err(()),
        },
    };
    let type_name = members
        .get("type")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let Some(type_name) = type_name else {
        // FRAME-7: a valid requestId is echoed even though the type is unusable.
        return Err(Rejection::new(
            ErrorCode::MalformedMessage,
            request_id.unwrap_or(None),
            "`type` is missing or not a string",
        ));
    };
    let Ok(request_id) = request_id else {
        return Err(Rejection::new(
            ErrorCode::MalformedMessage,
            None,
            "`requestId` must be a string of 1-128 bytes",
        ));
    };
    let reject = |code, message: &str| Rejection::new(code, request_id.clone(), message);
    let channel = || -> Result<String, Rejection> {
        members
            .get("channel")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .filter(|c| valid_channel(c))
            .ok_or_else(|| {
                reject(
                    ErrorCode::InvalidChannel,
                    "`channel` must be 1-256 bytes without control characters",
                )
            })
    };
    let data = || -> Result<&RawValue, Rejection> {
        members
            .get("data")
            .copied()
            .ok_or_else(|| reject(ErrorCode::MissingData, "`data` is required"))
    };
    let request = match type_name.as_str() {
        "subscribe" => Request::Subscribe {
            channel: channel()?,
            include_sender_metadata: members
                .get("includeSenderMetadata")
                .is_some_and(|raw| raw.get() == "true"),
        },
        "unsubscribe" => Request::Unsubscribe {
            channel: channel()?,
        },
        "publish" => {
            let channel = channel()?;
            Request::Publish {
                channel,
                data: data()?,
            }
        }
        "send" => {
            let to = members
                .get("to")
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .filter(|to| valid_peer_id(to))
                .ok_or_else(|| {
                    reject(
                        ErrorCode::InvalidPeerId,
                        "`to` must be 1-128 bytes of printable ASCII",
                    )
                })?;
            Request::Send { to, data: data()? }
        }
        "ping" => Request::Ping,
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(reject(
                ErrorCode::UnknownType,
                &format!("unknown frame type `{shown}`"),
            ));
        }
    };
    Ok(Inbound {
        request_id,
        request,
    })
}

/// Deepest JSON nesting accepted (FRAME-15).
pub const MAX_NESTING: usize = 128;

/// Bracket nesting depth of JSON text, ignoring brackets inside strings. `RawValue`
/// skips nested data without serde_json's recursion limit, so the limit is ours.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// One entry of a presence list: `{"peerId", "metadata"?}` (PFR-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresencePeer {
    #[serde(rename = "peerId")]
    pub peer_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A frame the server sends (SPEC §9). Serialization is exact (FRAME-13);
/// deserialization (for harness use) tolerates unknown members. The server relays `data`
/// byte-for-byte through [`message_text`] and [`direct_text`] instead of this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        #[serde(rename = "peerId")]
        peer_id: String,
        /// Always present; `null` for publishable keys (WEL-3).
        #[serde(rename = "expiresAt")]
        expires_at: Option<i64>,
        #[serde(rename = "serverTime")]
        server_time: i64,
        #[serde(rename = "maxMessageSize")]
        max_message_size: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        metadata: Option<Map<String, Value>>,
    },
    Ack {
        #[serde(rename = "requestId")]
        request_id: String,
    },
    Error {
        #[serde(rename = "requestId", skip_serializing_if = "Option::is_none", default)]
        request_id: Option<String>,
        code: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        message: Option<String>,
    },
    Message {
        channel: String,
        from: String,
        data: Value,
        #[serde(
            rename = "fromMetadata",
            skip_serializing_if = "Option::is_none",
            default
        )]
        from_metadata: Option<Map<String, Value>>,
    },
    Direct {
        from: String,
        data: Value,
        #[serde(
            rename = "fromMetadata",
            skip_serializing_if = "Option::is_none",
            default
        )]
        from_metadata: Option<Map<String, Value>>,
    },
    Presence {
        channel: String,
        joined: Vec<PresencePeer>,
        left: Vec<PresencePeer>,
    },
    Pong {
        #[serde(rename = "requestId", skip_serializing_if = "Option::is_none", default)]
        request_id: Option<String>,
    },
    GoingAway {
        #[serde(rename = "retryAfterMs")]
        retry_after_ms: u64,
    },
}

impl ServerFrame {
    /// Compact JSON text of the frame.
    pub fn to_text(&self) -> String {
        // Serializing these types cannot fail: every key is a string and RawValue is valid JSON.
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// Parses a server frame (harness side).
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// An `error` frame for `code`.
    pub fn error(code: ErrorCode, request_id: Option<String>, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            request_id,
            code: code.as_str().to_owned(),
            message: Some(message.into()),
        }
    }
}

impl From<Rejection> for ServerFrame {
    fn from(r: Rejection) -> Self {
        ServerFrame::error(r.code, r.request_id, r.message)
    }
}

/// Builds the `welcome` text, members in the order of SPEC §9.1. `expires_at` is
/// `Some(None)` for `null` (publishable keys, WEL-3) and `None` to leave the member out
/// (only a fault switch does); `metadata` is relayed as given (JWT-10).
pub fn welcome_text(
    peer_id: &str,
    expires_at: Option<Option<i64>>,
    server_time: i64,
    max_message_size: u64,
    metadata: Option<&RawValue>,
) -> String {
    let mut out =
        String::with_capacity(112 + peer_id.len() + metadata.map_or(0, |m| m.get().len()));
    out.push_str(r#"{"type":"welcome","peerId":"#);
    push_json_str(&mut out, peer_id);
    match expires_at {
        Some(Some(exp)) => out.push_str(&format!(r#","expiresAt":{exp}"#)),
        Some(None) => out.push_str(r#","expiresAt":null"#),
        None => {}
    }
    out.push_str(&format!(
        r#","serverTime":{server_time},"maxMessageSize":{max_message_size}"#
    ));
    if let Some(meta) = metadata {
        out.push_str(r#","metadata":"#);
        out.push_str(meta.get());
    }
    out.push('}');
    out
}

/// Builds `{"type":"message",…}` text directly from pre-serialized parts, so a broadcast is
/// serialized once per (channel, metadata variant) rather than per recipient.
pub fn message_text(
    channel: &str,
    from: &str,
    data: &RawValue,
    from_metadata: Option<&RawValue>,
) -> String {
    let mut out = String::with_capacity(64 + channel.len() + from.len() + data.get().len());
    out.push_str(r#"{"type":"message","channel":"#);
    push_json_str(&mut out, channel);
    out.push_str(r#","from":"#);
    push_json_str(&mut out, from);
    out.push_str(r#","data":"#);
    out.push_str(data.get());
    if let Some(meta) = from_metadata {
        out.push_str(r#","fromMetadata":"#);
        out.push_str(meta.get());
    }
    out.push('}');
    out
}

/// Builds `{"type":"direct",…}` text from pre-serialized parts.
pub fn direct_text(from: &str, data: &RawValue, from_metadata: Option<&RawValue>) -> String {
    let mut out = String::with_capacity(48 + from.len() + data.get().len());
    out.push_str(r#"{"type":"direct","from":"#);
    push_json_str(&mut out, from);
    out.push_str(r#","data":"#);
    out.push_str(data.get());
    if let Some(meta) = from_metadata {
        out.push_str(r#","fromMetadata":"#);
        out.push_str(meta.get());
    }
    out.push('}');
    out
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping; writing into a String cannot fail.
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rejected(text: &str) -> (ErrorCode, Option<String>) {
        let r = parse_request(text).expect_err(text);
        (r.code, r.request_id)
    }

    #[test]
    fn appendix_a2_frames_parse() {
        let i =
            parse_request(r#"{"type":"subscribe","channel":"acme/support-17","requestId":"r-1"}"#)
                .unwrap();
        assert_eq!(i.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            i.request,
            Request::Subscribe {
                channel: "acme/support-17".into(),
                include_sender_metadata: false
            }
        );
        let i = parse_request(
            r#"{"type":"subscribe","channel":"acme/support-17","includeSenderMetadata":true,"requestId":"r-2"}"#,
        )
        .unwrap();
        assert!(matches!(
            i.request,
            Request::Subscribe {
                include_sender_metadata: true,
                ..
            }
        ));
        let text = r#"{"type":"publish","channel":"acme/support-17","data":{"kind":"note","body":"on my way"},"requestId":"r-5"}"#;
        match parse_request(text).unwrap().request {
            Request::Publish { data, .. } => {
                assert_eq!(data.get(), r#"{"kind":"note","body":"on my way"}"#)
            }
            other => panic!("{other:?}"),
        }
        match parse_request(r#"{"type":"publish","channel":"acme/support-17","data":null}"#)
            .unwrap()
        {
            Inbound {
                request_id: None,
                request: Request::Publish { data, .. },
            } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
        let i = parse_request(
            r#"{"type":"send","to":"eli-7","data":{"kind":"whisper"},"requestId":"r-6"}"#,
        )
        .unwrap();
        assert!(matches!(i.request, Request::Send { ref to, .. } if to == "eli-7"));
        assert_eq!(
            parse_request(r#"{"type":"ping"}"#).unwrap().request,
            Request::Ping
        );
    }

    #[test]
    fn appendix_b2_rejections() {
        assert_eq!(
            rejected(r#"{"type":"publish","channel":"acme/support-17","requestId":"c"}"#),
            (ErrorCode::MissingData, Some("c".into()))
        );
        assert_eq!(
            rejected(r#"{"type":"shout","requestId":"d"}"#),
            (ErrorCode::UnknownType, Some("d".into()))
        );
        assert_eq!(rejected("not json"), (ErrorCode::MalformedMessage, None));
    }

    #[test]
    fn malformed_variants() {
        assert_eq!(rejected("[1,2]").0, ErrorCode::MalformedMessage);
        assert_eq!(rejected("{\"type\":\"unsub").0, ErrorCode::MalformedMessage);
        assert_eq!(
            rejected(r#"{"type":5,"requestId":"x"}"#),
            (ErrorCode::MalformedMessage, Some("x".into()))
        );
        assert_eq!(
            rejected(r#"{"requestId":"x"}"#),
            (ErrorCode::MalformedMessage, Some("x".into()))
        );
        assert_eq!(
            rejected(r#"{"type":"ping","requestId":""}"#),
            (ErrorCode::MalformedMessage, None)
        );
        assert_eq!(
            rejected(r#"{"type":"ping","requestId":7}"#),
            (ErrorCode::MalformedMessage, None)
        );
        let long = "r".repeat(129);
        assert_eq!(
            rejected(&format!(r#"{{"type":"ping","requestId":"{long}"}}"#)),
            (ErrorCode::MalformedMessage, None)
        );
        assert_eq!(
            rejected(r#"{"type":"welcome","requestId":"w"}"#),
            (ErrorCode::UnknownType, Some("w".into()))
        );
        assert_eq!(
            rejected(r#"{"type":"Subscribe","channel":"a"}"#),
            (ErrorCode::UnknownType, None)
        );
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(
            parse_request(&format!(
                r#"{{"type":"publish","channel":"a","data":{ok}}}"#
            ))
            .is_ok()
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            rejected(&format!(
                r#"{{"type":"publish","channel":"a","data":{deep}}}"#
            ))
            .0,
            ErrorCode::MalformedMessage
        );
    }

    #[test]
    fn field_validation_order() {
        // channel is checked before data (§7.1 step 7).
        assert_eq!(
            rejected(r#"{"type":"publish","requestId":"p"}"#).0,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            rejected(r#"{"type":"publish","channel":"","data":1}"#).0,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            rejected(r#"{"type":"subscribe","channel":7}"#).0,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            rejected(r#"{"type":"unsubscribe","channel":"a\u0001"}"#).0,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            rejected(r#"{"type":"send","data":1}"#).0,
            ErrorCode::InvalidPeerId
        );
        assert_eq!(
            rejected(r#"{"type":"send","to":"é","data":1}"#).0,
            ErrorCode::InvalidPeerId
        );
        assert_eq!(
            rejected(r#"{"type":"send","to":"bob"}"#).0,
            ErrorCode::MissingData
        );
    }

    #[test]
    fn include_sender_metadata_only_literal_true() {
        for (v, want) in [
            ("true", true),
            ("false", false),
            ("\"true\"", false),
            ("1", false),
        ] {
            let text =
                format!(r#"{{"type":"subscribe","channel":"a","includeSenderMetadata":{v}}}"#);
            assert!(
                matches!(parse_request(&text).unwrap().request, Request::Subscribe { include_sender_metadata, .. } if include_sender_metadata == want)
            );
        }
    }

    #[test]
    fn unknown_members_are_ignored() {
        let i = parse_request(r#"{"type":"ping","extra":{"deep":[1,2]},"requestId":"p"}"#).unwrap();
        assert_eq!(i.request, Request::Ping);
    }

    #[test]
    fn appendix_a3_wire_forms() {
        let welcome = ServerFrame::Welcome {
            peer_id: "0b6f2d4e-8a51-4c3e-9d77-2f1e6a0c9b13".into(),
            expires_at: None,
            server_time: 1767225600,
            max_message_size: 65536,
            metadata: None,
        };
        assert_eq!(
            serde_json::from_str::<Value>(&welcome.to_text()).unwrap(),
            json!({"type": "welcome", "peerId": "0b6f2d4e-8a51-4c3e-9d77-2f1e6a0c9b13", "expiresAt": null, "serverTime": 1767225600, "maxMessageSize": 65536})
        );
        assert_eq!(
            ServerFrame::Ack {
                request_id: "r-5".into()
            }
            .to_text(),
            r#"{"type":"ack","requestId":"r-5"}"#
        );
        assert_eq!(
            ServerFrame::error(ErrorCode::MalformedMessage, None, "frame is not valid JSON")
                .to_text(),
            r#"{"type":"error","code":"malformed_message","message":"frame is not valid JSON"}"#
        );
        assert_eq!(
            ServerFrame::Presence {
                channel: "acme/support-17".into(),
                joined: vec![],
                left: vec![]
            }
            .to_text(),
            r#"{"type":"presence","channel":"acme/support-17","joined":[],"left":[]}"#
        );
        assert_eq!(
            ServerFrame::Pong { request_id: None }.to_text(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            ServerFrame::GoingAway {
                retry_after_ms: 1500
            }
            .to_text(),
            r#"{"type":"going_away","retryAfterMs":1500}"#
        );
        let data = RawValue::from_string(r#"{"kind": "note", "big": 12345678901234567890}"#.into())
            .unwrap();
        let meta = RawValue::from_string(r#"{"displayName":"Dana"}"#.into()).unwrap();
        assert_eq!(
            message_text("acme/support-17", "dana-42", &data, Some(&meta)),
            r#"{"type":"message","channel":"acme/support-17","from":"dana-42","data":{"kind": "note", "big": 12345678901234567890},"fromMetadata":{"displayName":"Dana"}}"#
        );
        assert_eq!(
            direct_text("e\"li", &data, None),
            r#"{"type":"direct","from":"e\"li","data":{"kind": "note", "big": 12345678901234567890}}"#
        );
        // The hand-built text decodes as the typed frame.
        assert!(matches!(
            ServerFrame::decode(&message_text("c", "f", &data, None)).unwrap(),
            ServerFrame::Message { .. }
        ));
    }
}
