//! Connect-time credential checks (CONN-2/3, AUTH-1…10, JWT-*): the query string's token
//! or publishable key becomes an [`Admitted`] connection or a [`Refusal`] (close code).
//! Runs once per upgrade, before the session task exists.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::faults::{Fault, FaultSet};
use super::state::{App, Matcher, Scope, Shared};
use crate::proto::auth::{self, TokenError, VerifiedToken};
use crate::proto::{Actions, close};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// A connection that passed credential verification (CONN-6 step 3).
#[derive(Debug)]
pub struct Admitted {
    pub app: Arc<App>,
    pub peer_id: String,
    /// Token `exp` (Unix s); `None` for publishable keys.
    pub expires_at: Option<i64>,
    /// The token had expired and was let in by the `accept-expired` fault.
    pub expired_admitted: bool,
    pub scope: Arc<Scope>,
    pub actions: Actions,
    /// The token's `peerMetadata` text, relayed unmodified (MSG-2, PFR-2, SEND-6).
    pub peer_metadata: Option<Box<RawValue>>,
    /// What `welcome.metadata` carries: the token's text plus injected TURN servers.
    pub metadata: Option<Box<RawValue>>,
}

/// Why a connection was refused after the upgrade: close code and reason.
pub type Refusal = (u16, &'static str);

fn percent_decode(v: &str) -> Option<String> {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Verifies the credential in the query string (CONN-2/3, AUTH-1…10, JWT-*).
pub fn authenticate(
    sh: &Shared,
    query: Option<&str>,
    origin: Option<&str>,
) -> Result<Admitted, Refusal> {
    let (mut token, mut key, mut n_token, mut n_key) = (None, None, 0, 0);
    let f = sh.faults;
    let decode = |v: &str| {
        if f.has(Fault::CredentialNotDecoded) {
            Some(v.to_owned())
        } else {
            percent_decode(v)
        }
    };
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "token" => {
                n_token += 1;
                token = decode(value);
            }
            "key" => {
                n_key += 1;
                key = decode(value);
            }
            _ => {}
        }
    }
    const BAD: Refusal = (close::INVALID_TOKEN, "invalid token");
    match (n_token, n_key) {
        (1, 0) => verify_token(sh, token.as_deref().ok_or(BAD)?),
        (1, 1) if f.has(Fault::TokenAndKeyAccepted) => {
            verify_token(sh, token.as_deref().ok_or(BAD)?)
        }
        (0, 1) => verify_publishable(sh, key.as_deref().ok_or(BAD)?, origin),
        (0, 0) => Err((close::INVALID_TOKEN, "no token or key given")),
        _ => Err((close::INVALID_TOKEN, "give either token or key, not both")),
    }
}

/// `metadata` for the welcome: the token's claim verbatim (JWT-10), with the configured
/// `iceServers` appended when the key injects TURN and the claim has none (AUTH-14: the
/// token's own iceServers win).
fn turn_metadata(
    sh: &Shared,
    inject: bool,
    metadata: Option<Box<RawValue>>,
) -> Option<Box<RawValue>> {
    let servers = match (&sh.turn, inject) {
        (Some(servers), true) => servers.to_string(),
        _ => return metadata,
    };
    let Some(raw) = metadata else {
        return RawValue::from_string(format!(r#"{{"iceServers":{servers}}}"#)).ok();
    };
    let members: HashMap<String, &RawValue> = serde_json::from_str(raw.get()).unwrap_or_default();
    if members.contains_key("iceServers") {
        return Some(raw);
    }
    // Append as the last member, leaving every byte of the claim's own text in place.
    let body = raw.get().trim_end().strip_suffix('}').unwrap_or_default();
    let sep = if members.is_empty() { "" } else { "," };
    RawValue::from_string(format!(r#"{body}{sep}"iceServers":{servers}}}"#))
        .ok()
        .or(Some(raw))
}

/// The `metadata-reordered` fault: the text re-serialized through a sorted map, as a
/// server that parses metadata into a plain map and writes it back would (MSG-2, JWT-10).
fn reordered(raw: Option<Box<RawValue>>, sh: &Shared) -> Option<Box<RawValue>> {
    if !sh.faults.has(Fault::MetadataReordered) {
        return raw;
    }
    raw.map(|r| {
        serde_json::from_str::<Value>(r.get())
            .ok()
            .and_then(|v| serde_json::value::to_raw_value(&v).ok())
            .unwrap_or(r)
    })
}

fn verify_publishable(
    sh: &Shared,
    key_id: &str,
    origin: Option<&str>,
) -> Result<Admitted, Refusal> {
    let f = sh.faults;
    let key = sh
        .publishable_key(key_id)
        .filter(|k| !k.revoked.load(Ordering::Relaxed))
        .or_else(|| {
            f.has(Fault::PublishableUnknownAccepted)
                .then(|| sh.first_publishable_key())
                .flatten()
        })
        .ok_or((close::INVALID_TOKEN, "unknown or revoked key"))?;
    if let Some(origin) = origin
        && !key.allowed_origins.is_empty()
        && !key.allowed_origins.iter().any(|o| o == origin)
    {
        return Err((close::INVALID_TOKEN, "origin not allowed for this key"));
    }
    Ok(Admitted {
        app: key.app.clone(),
        peer_id: if f.has(Fault::PublishablePeerIdFixed) {
            "00000000-0000-4000-8000-000000000000".to_owned()
        } else {
            Uuid::new_v4().to_string()
        },
        expires_at: None,
        expired_admitted: false,
        scope: Arc::new(Scope {
            key: key.patterns.clone(),
            token: None,
        }),
        actions: key.actions,
        peer_metadata: None,
        metadata: turn_metadata(sh, key.auto_inject_turn, None),
    })
}

/// The claims of a token, unverified (used only by fault switches); raw, so a re-signed
/// token carries the same metadata text.
fn unverified_claims(token: &str) -> Option<HashMap<String, Box<RawValue>>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn verify_token(sh: &Shared, token: &str) -> Result<Admitted, Refusal> {
    const BAD: Refusal = (close::INVALID_TOKEN, "invalid token");
    let f = sh.faults;
    let header = jsonwebtoken::decode_header(token).map_err(|_| BAD)?;
    let kid = header.kid.unwrap_or_default();
    let key = sh
        .secret_key(&kid)
        .filter(|k| !k.revoked.load(Ordering::Relaxed))
        .or_else(|| {
            f.has(Fault::AcceptUnknownKid)
                .then(|| sh.first_secret_key())
                .flatten()
        })
        .ok_or((close::INVALID_TOKEN, "key not found"))?;
    if f.has(Fault::RestKickRevokes) && kicked(sh, &key.app.id, token) {
        return Err(BAD);
    }
    if f.has(Fault::AccountCheckedFirst) && key.app.suspended.load(Ordering::Acquire) {
        return Err((close::ACCOUNT_SUSPENDED, "account suspended"));
    }
    let now_ms = sh.clock.now_ms();
    let secret = key.secret.as_bytes();
    let mut token = std::borrow::Cow::Borrowed(token);
    let mut expired_admitted = false;
    if f.has(Fault::AcceptOtherAlg)
        && matches!(header.alg, Algorithm::HS384 | Algorithm::HS512)
        && let Some(claims) = signed_claims(&token, header.alg, secret)
    {
        token = std::borrow::Cow::Owned(auth::mint(&kid, secret, &claims));
    }
    let mut result = auth::verify(&token, |_| Some(secret), now_ms);
    if !f.is_empty() {
        result = relax_claims(f, result, &token, &kid, secret, now_ms);
    }
    if f.has(Fault::AcceptBadSignature)
        && matches!(&result, Err(TokenError::Invalid(why)) if why == "bad signature")
    {
        // Re-sign the claims with the right secret, so every other check still applies.
        let claims = unverified_claims(&token).ok_or(BAD)?;
        token = std::borrow::Cow::Owned(auth::mint(&kid, secret, &claims));
        result = auth::verify(&token, |_| Some(secret), now_ms);
    }
    if f.has(Fault::AcceptExpired) && matches!(result, Err(TokenError::Expired)) {
        let exp = unverified_claims(&token)
            .and_then(|c| c.get("exp").and_then(|e| e.get().parse::<i64>().ok()))
            .ok_or(BAD)?;
        result = auth::verify(&token, |_| Some(secret), exp.saturating_mul(1000) - 1000);
        expired_admitted = true;
    }
    let v = result.map_err(|e| match e {
        TokenError::Expired => (close::TOKEN_EXPIRED, "token expired"),
        TokenError::Invalid(_) => BAD,
    })?;
    let actions = match &v.permissions {
        Some(p) => Actions::from_names(p).intersect(key.actions),
        None => key.actions,
    };
    let token_scope = v
        .channels
        .as_ref()
        .map(|c| c.iter().map(|p| Matcher::with_faults(p, f)).collect());
    Ok(Admitted {
        app: key.app.clone(),
        peer_id: v.sub.unwrap_or_else(|| Uuid::new_v4().to_string()),
        expires_at: Some(v.exp),
        expired_admitted,
        scope: Arc::new(Scope {
            key: key.patterns.clone(),
            token: token_scope,
        }),
        actions,
        peer_metadata: reordered(v.peer_metadata, sh),
        metadata: turn_metadata(sh, key.auto_inject_turn, reordered(v.metadata, sh)),
    })
}

/// The claims of `token` if its signature checks out with `alg` (the `accept-other-alg`
/// fault re-signs them with HS256).
fn signed_claims(
    token: &str,
    alg: Algorithm,
    secret: &[u8],
) -> Option<HashMap<String, Box<RawValue>>> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode(token, &DecodingKey::from_secret(secret), &v)
        .ok()
        .map(|d| d.claims)
}

/// Faults that admit tokens whose claims SPEC refuses: a refusal for a claim (the
/// signature already checked out) is retried with the claim repaired, and an oversized
/// metadata claim is put back afterwards so it is relayed.
fn relax_claims(
    f: FaultSet,
    result: Result<VerifiedToken, TokenError>,
    token: &str,
    kid: &str,
    secret: &[u8],
    now_ms: i64,
) -> Result<VerifiedToken, TokenError> {
    let Err(TokenError::Invalid(why)) = &result else {
        return result;
    };
    let Some(mut claims) = unverified_claims(token) else {
        return result;
    };
    let list = |name: &str| name.starts_with("channels") || name.starts_with("permissions");
    let mut restore = None;
    if why == "exp claim missing" && f.has(Fault::AcceptNoExp) {
        let exp = RawValue::from_string((now_ms / 1000 + 3600).to_string());
        claims.insert("exp".into(), exp.expect("an integer is JSON"));
    } else if why.starts_with("peerMetadata is") && f.has(Fault::AcceptBigPeerMetadata) {
        restore = claims.remove("peerMetadata").map(|r| (true, r));
    } else if why.starts_with("metadata is") && f.has(Fault::AcceptBigMetadata) {
        restore = claims.remove("metadata").map(|r| (false, r));
    } else if list(why) {
        let name = if why.starts_with("channels") {
            "channels"
        } else {
            "permissions"
        };
        let items = claims
            .get(name)
            .and_then(|r| serde_json::from_str::<Vec<String>>(r.get()).ok());
        if items.is_some() || !f.has(Fault::AcceptBadClaimTypes) {
            return result;
        }
        claims.remove(name);
    } else {
        return result;
    }
    let token = auth::mint(kid, secret, &claims);
    let mut v = auth::verify(&token, |_| Some(secret), now_ms)?;
    match restore {
        Some((true, raw)) => v.peer_metadata = Some(raw),
        Some((false, raw)) => v.metadata = Some(raw),
        None => {}
    }
    Ok(v)
}

/// Whether the token's `sub` was kicked in `app` (the `rest-kick-revokes` fault).
fn kicked(sh: &Shared, app: &str, token: &str) -> bool {
    let sub = unverified_claims(token).and_then(|c| {
        c.get("sub")
            .and_then(|s| serde_json::from_str::<String>(s.get()).ok())
    });
    let set = sh
        .fault_state
        .kicked
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    sub.is_some_and(|s| set.contains(&(app.to_owned(), s)))
}
