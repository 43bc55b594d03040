//! Fixed protocol constants (SPEC §14, LIM-6…LIM-8, LIM-17) and the validators
//! that apply them. Tunable limits live in the server's configuration; only their
//! defaults are here.

/// Default inbound frame cap advertised in `welcome.maxMessageSize` (LIM-1).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;
/// Default subscriptions per connection (LIM-3).
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100;
/// Channel names: 1–256 UTF-8 bytes (LIM-6).
pub const MAX_CHANNEL_BYTES: usize = 256;
/// PeerIds: 1–128 bytes of printable ASCII (LIM-7).
pub const MAX_PEER_ID_BYTES: usize = 128;
/// requestIds: 1–128 bytes, any characters (LIM-8).
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// `peerMetadata` claim, compact JSON (LIM-4).
pub const MAX_PEER_METADATA_BYTES: usize = 4096;
/// `metadata` claim, compact JSON (LIM-5).
pub const MAX_METADATA_BYTES: usize = 8192;
/// Token `channels` entries (LIM-9).
pub const MAX_TOKEN_CHANNELS: usize = 100;
/// Token `permissions` entries (LIM-10).
pub const MAX_TOKEN_PERMISSIONS: usize = 16;
/// REST request body cap (LIM-12).
pub const REST_BODY_LIMIT: usize = 32_768;
/// Reserved channel prefixes, compared case-insensitively (AUTHZ-7).
pub const RESERVED_PREFIXES: [&str; 3] = ["_metered/", "_internal/", "_system/"];

/// U+0000–U+001F, U+007F and U+0080–U+009F (LIM-17).
pub fn is_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F)
}

/// A channel name or pattern that passes LIM-6 / LIM-17.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_BYTES && !name.chars().any(is_control)
}

/// A peerId that passes LIM-7: 1–128 bytes of printable ASCII (AMB-9).
pub fn valid_peer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_PEER_ID_BYTES
        && id.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

/// A requestId that passes LIM-8.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_BYTES
}

/// Whether `channel` starts with a reserved prefix (AUTHZ-7), ignoring ASCII case.
pub fn is_reserved(channel: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| {
        channel.len() >= p.len() && channel.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_bounds() {
        assert!(valid_channel("a"));
        assert!(valid_channel(&"x".repeat(256)));
        assert!(!valid_channel(&"x".repeat(257)));
        assert!(!valid_channel(""));
        assert!(!valid_channel("a\u{7f}b"));
        assert!(!valid_channel("a\u{85}b"));
        assert!(!valid_channel("a\nb"));
        // 86 three-byte characters are 258 bytes: bytes count, not characters (LIM-18).
        assert!(!valid_channel(&"€".repeat(86)));
        assert!(valid_channel("acme/support-17"));
    }

    #[test]
    fn peer_id_is_printable_ascii() {
        assert!(valid_peer_id("dana-42"));
        assert!(valid_peer_id(" ~"));
        assert!(!valid_peer_id("dané"));
        assert!(!valid_peer_id("a\tb"));
        assert!(!valid_peer_id(&"p".repeat(129)));
        assert!(valid_peer_id(&"p".repeat(128)));
    }

    #[test]
    fn reserved_prefixes_ignore_case() {
        assert!(is_reserved("_System/x"));
        assert!(is_reserved("_metered/"));
        assert!(is_reserved("_INTERNAL/a/b"));
        assert!(!is_reserved("_systemx/a"));
        assert!(!is_reserved("system/x"));
        assert!(!is_reserved("_sys"));
    }
}
