//! Tokens (SPEC §4): HS256 JWTs with the key id in `kid`. `mint` is used by the harness
//! (simulated peers, `stampede mint`) and the REST mint endpoint; `verify` by the server.

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::limits::{
    MAX_METADATA_BYTES, MAX_PEER_METADATA_BYTES, MAX_TOKEN_CHANNELS, MAX_TOKEN_PERMISSIONS,
    valid_channel, valid_peer_id,
};

/// An operation a credential may allow (AUTHZ-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    Subscribe,
    Presence,
    Send,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Publish,
        Action::Subscribe,
        Action::Presence,
        Action::Send,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Presence => "presence",
            Action::Send => "send",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A set of actions as a bitmask: small enough to keep per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b1111);

    fn bit(a: Action) -> u8 {
        1 << (a as u8)
    }
    pub fn contains(self, a: Action) -> bool {
        self.0 & Self::bit(a) != 0
    }
    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | Self::bit(a))
    }
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    /// Known action names from `names`; unknown strings are ignored (JWT table `[choice]`).
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Actions {
        names
            .into_iter()
            .filter_map(|n| Action::parse(n.as_ref()))
            .fold(Actions::NONE, Actions::with)
    }
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
    pub fn names(self) -> Vec<String> {
        self.iter().map(|a| a.as_str().to_owned()).collect()
    }
}

/// Claims as a token carries them (SPEC §4.2). Optional claims are omitted when `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// Signs `claims` with HS256 and `kid` = `key_id` (JWT-1, JWT-2, REST-14).
pub fn mint(key_id: &str, secret: &[u8], claims: &impl Serialize) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key_id.to_owned());
    header.typ = Some("JWT".to_owned());
    // HMAC signing of serializable claims cannot fail with the rust_crypto backend.
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("HS256 signing never fails")
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Close 4001 (AUTH-8).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Close 4002 (AUTH-9, EXP-2).
    #[error("token expired")]
    Expired,
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub key_id: String,
    pub sub: Option<String>,
    /// Unix seconds (JWT-6).
    pub exp: i64,
    pub channels: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
    /// The claim's JSON text exactly as the token carries it: relayed unmodified (MSG-2,
    /// PFR-2), so member order, number spelling and escapes survive.
    pub peer_metadata: Option<Box<RawValue>>,
    /// The claim's JSON text as the token carries it (JWT-10: relayed verbatim).
    pub metadata: Option<Box<RawValue>>,
}

/// Milliseconds before `exp` at which a live session is closed, and below which a new
/// connection is refused (EXP-1, EXP-2).
pub const EXPIRY_LEAD_MS: i64 = 250;

/// Verifies `token`: header (`alg` HS256, known `kid`), signature, then the claim rules of
/// the §4.2 table, then expiry. `secret_for` maps a key id to its signing secret;
/// `now_ms` is the server clock in Unix milliseconds (injectable, CFG-5).
pub fn verify<'k>(
    token: &str,
    secret_for: impl Fn(&str) -> Option<&'k [u8]>,
    now_ms: i64,
) -> Result<VerifiedToken, TokenError> {
    let invalid = |why: &str| TokenError::Invalid(why.to_owned());
    let header =
        decode_header(token).map_err(|_| invalid("malformed token or unsupported algorithm"))?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid("algorithm must be HS256"));
    }
    let key_id = header.kid.ok_or_else(|| invalid("kid header missing"))?;
    let secret = secret_for(&key_id).ok_or_else(|| invalid("key not found"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Claim checks are ours (§4.2); the crate only checks the signature.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    // Claims stay raw JSON text: a `Map` would re-sort the metadata members and respell
    // its numbers, and both are relayed unmodified.
    let data = decode::<HashMap<String, Box<RawValue>>>(
        token,
        &DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid("bad signature"),
        _ => invalid("malformed token"),
    })?;
    let claims = data.claims;
    let parsed = |name: &str| -> Option<Value> {
        claims
            .get(name)
            .map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null))
    };

    let sub = match parsed("sub") {
        None => None,
        Some(Value::String(s)) if valid_peer_id(&s) => Some(s),
        Some(_) => return Err(invalid("sub must be 1-128 bytes of printable ASCII")),
    };
    let exp = match parsed("exp") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid("exp must be an integer"))?,
        Some(_) => return Err(invalid("exp must be an integer")),
        None => return Err(invalid("exp claim missing")),
    };
    let channels = string_list(&claims, "channels", MAX_TOKEN_CHANNELS)?;
    if channels.iter().flatten().any(|c| !valid_channel(c)) {
        return Err(invalid(
            "channels entries must be 1-256 bytes without control characters",
        ));
    }
    let permissions = string_list(&claims, "permissions", MAX_TOKEN_PERMISSIONS)?;
    let peer_metadata = object_claim(&claims, "peerMetadata", MAX_PEER_METADATA_BYTES)?;
    let metadata = object_claim(&claims, "metadata", MAX_METADATA_BYTES)?;
    if let Some(nbf) = parsed("nbf") {
        let nbf = nbf
            .as_i64()
            .ok_or_else(|| invalid("nbf must be an integer"))?;
        if nbf.saturating_mul(1000) > now_ms + 5_000 {
            return Err(invalid("token not yet valid (nbf)"));
        }
    }
    if exp.saturating_mul(1000).saturating_sub(now_ms) < EXPIRY_LEAD_MS {
        return Err(TokenError::Expired);
    }
    Ok(VerifiedToken {
        key_id,
        sub,
        exp,
        channels,
        permissions,
        peer_metadata,
        metadata,
    })
}

fn string_list(
    claims: &HashMap<String, Box<RawValue>>,
    name: &str,
    max: usize,
) -> Result<Option<Vec<String>>, TokenError> {
    let Some(raw) = claims.get(name) else {
        return Ok(None);
    };
    let bad = || TokenError::Invalid(format!("{name} must be an array of at most {max} strings"));
    match serde_json::from_str::<Vec<String>>(raw.get()) {
        Ok(items) if items.len() <= max => Ok(Some(items)),
        _ => Err(bad()),
    }
}

fn object_claim(
    claims: &HashMap<String, Box<RawValue>>,
    name: &str,
    max_bytes: usize,
) -> Result<Option<Box<RawValue>>, TokenError> {
    let Some(raw) = claims.get(name) else {
        return Ok(None);
    };
    check_object(raw, max_bytes)
        .map(|()| Some(raw.clone()))
        .map_err(|why| TokenError::Invalid(format!("{name} {why}")))
}

/// Checks that `raw` is a JSON object whose compact serialization is at most `max_bytes`
/// (JWT-8/9, REST-13), without parsing it into a map: the text is relayed as it is.
pub fn check_object(raw: &RawValue, max_bytes: usize) -> Result<(), String> {
    if !raw.get().starts_with('{') {
        return Err("must be a JSON object".into());
    }
    let size = compact_len(raw.get());
    if size > max_bytes {
        return Err(format!("is {size} bytes, over the {max_bytes}-byte limit"));
    }
    Ok(())
}

/// The length of `json` without the whitespace between its tokens: the size of its
/// compact serialization with member order, escapes and number spelling as written.
pub fn compact_len(json: &str) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    const KID: &str = "sk_id_4e1c0a";
    const SECRET: &[u8] = b"sk_secret_9f8e7d6c";
    const NOW_MS: i64 = 1_767_225_600_000;

    fn lookup(kid: &str) -> Option<&'static [u8]> {
        (kid == KID).then_some(SECRET)
    }

    fn token(claims: Value) -> String {
        mint(KID, SECRET, &claims)
    }

    #[test]
    fn appendix_a1_token_round_trips() {
        let t = token(json!({
            "sub": "dana-42", "exp": 1767229200,
            "channels": ["acme/support-*", "acme/team/**"],
            "permissions": ["subscribe", "publish", "presence", "send"],
            "peerMetadata": {"displayName": "Dana", "tier": "agent"},
            "metadata": {"iceServers": [{"urls": "turn:relay:3478", "username": "t1", "credential": "c1"}]}
        }));
        let header = decode_header(&t).unwrap();
        assert_eq!(header.kid.as_deref(), Some(KID));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let v = verify(&t, lookup, NOW_MS).unwrap();
        assert_eq!(v.sub.as_deref(), Some("dana-42"));
        assert_eq!(v.exp, 1767229200);
        assert_eq!(v.channels.unwrap().len(), 2);
        assert_eq!(
            v.peer_metadata.unwrap().get(),
            r#"{"displayName":"Dana","tier":"agent"}"#
        );
    }

    #[test]
    fn metadata_claims_keep_their_text() {
        let exp = NOW_MS / 1000 + 3600;
        let meta = r#"{"name":"Ann","color":"teal","n":9007199254740993,"u":"\u00e9","x":1.50,"o":{"z":[1e2]}}"#;
        let claims = format!(r#"{{"exp":{exp},"peerMetadata":{meta},"metadata":{meta}}}"#);
        let claims = RawValue::from_string(claims).unwrap();
        let v = verify(&mint(KID, SECRET, &claims), lookup, NOW_MS).unwrap();
        assert_eq!(v.peer_metadata.unwrap().get(), meta);
        assert_eq!(v.metadata.unwrap().get(), meta);
        assert_eq!(
            compact_len(r#"{ "a" : [1, 2],"b":" x y " }"#),
            r#"{"a":[1,2],"b":" x y "}"#.len()
        );
    }

    #[test]
    fn refusals() {
        let exp = NOW_MS / 1000 + 3600;
        let good = token(json!({"sub": "a", "exp": exp}));
        let other = mint(KID, b"wrong", &json!({"sub": "a", "exp": exp}));
        assert!(matches!(
            verify(&other, lookup, NOW_MS),
            Err(TokenError::Invalid(_))
        ));
        let unknown = mint("sk_id_nope", SECRET, &json!({"sub": "a", "exp": exp}));
        assert_eq!(
            verify(&unknown, lookup, NOW_MS).err(),
            Some(TokenError::Invalid("key not found".into()))
        );
        // alg none: header rewritten, signature stripped.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = good.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","kid":"sk_id_4e1c0a"}"#),
            payload
        );
        assert!(matches!(
            verify(&none, lookup, NOW_MS),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify("garbage", lookup, NOW_MS),
            Err(TokenError::Invalid(_))
        ));
        for bad in [
            json!({"sub": "a"}),
            json!({"sub": "é", "exp": exp}),
            json!({"sub": "a", "exp": "soon"}),
            json!({"exp": exp, "channels": "room"}),
            json!({"exp": exp, "channels": [1]}),
            json!({"exp": exp, "permissions": vec!["publish"; 17]}),
            json!({"exp": exp, "channels": vec!["a"; 101]}),
            json!({"exp": exp, "peerMetadata": ["x"]}),
            json!({"exp": exp, "peerMetadata": {"x": "y".repeat(4100)}}),
            json!({"exp": exp, "metadata": {"x": "y".repeat(8200)}}),
            json!({"exp": exp, "nbf": exp}),
        ] {
            assert!(
                matches!(
                    verify(&token(bad.clone()), lookup, NOW_MS),
                    Err(TokenError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(
            verify(
                &token(json!({"exp": exp, "permissions": ["fly", "publish"]})),
                lookup,
                NOW_MS
            )
            .is_ok()
        );
    }

    #[test]
    fn expiry_boundaries() {
        let exp_s = NOW_MS / 1000 + 1;
        let t = token(json!({"exp": exp_s}));
        assert!(verify(&t, lookup, exp_s * 1000 - 251).is_ok());
        assert_eq!(
            verify(&t, lookup, exp_s * 1000 - 249).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(
            verify(&t, lookup, exp_s * 1000 + 60_000).err(),
            Some(TokenError::Expired)
        );
        // A bad signature on an expired token is still 4001, not 4002.
        let forged = mint(KID, b"x", &json!({"exp": 1}));
        assert!(matches!(
            verify(&forged, lookup, NOW_MS),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn actions_mask() {
        let a = Actions::from_names(["publish", "fly", "send"]);
        assert!(
            a.contains(Action::Publish)
                && a.contains(Action::Send)
                && !a.contains(Action::Presence)
        );
        assert_eq!(
            a.intersect(Actions::NONE.with(Action::Send)).names(),
            vec!["send"]
        );
        assert_eq!(Actions::ALL.names().len(), 4);
    }
}
