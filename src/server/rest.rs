//! The REST control plane (SPEC §20): tokens, channel peers, system publish, kick, usage.
//! `Authorization: Bearer <keyId>:<secret>`; every authentication failure is the same
//! 401, checked in constant time with respect to which part failed (REST-5).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode, header};
use serde::Serialize;
use serde_json::value::RawValue;

use super::faults::{Fault, FaultSet};
use super::http::{Resp, error_response, json_response, ordered};
use super::state::{App, SecretKey, Shared};
use crate::proto::auth;
use crate::proto::auth::check_object;
use crate::proto::limits::{
    MAX_METADATA_BYTES, MAX_PEER_METADATA_BYTES, MAX_TOKEN_CHANNELS, MAX_TOKEN_PERMISSIONS,
    is_reserved, valid_channel, valid_peer_id,
};
use crate::proto::{Action, Actions, close};

/// A REST failure: status, stable code, message.
pub type Failure = (StatusCode, &'static str, String);

fn fail<T>(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Result<T, Failure> {
    Err((status, code, message.into()))
}

fn bad<T>(message: impl Into<String>) -> Result<T, Failure> {
    fail(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Compares two byte strings in time independent of where they differ.
pub fn ct_eq(expected: &[u8], given: &[u8]) -> bool {
    // Time depends only on the expected length, never on where the inputs differ.
    let mut diff = expected.len() ^ given.len();
    for (i, x) in expected.iter().enumerate() {
        diff |= (x ^ given.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// The bearer credential of a request, if the header has that shape.
pub fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// REST-2…5: resolves the secret key, or `None` for the uniform 401.
fn authenticate(sh: &Shared, req: &Request<Incoming>) -> Option<Arc<SecretKey>> {
    let credential = bearer(req).unwrap_or_default();
    if sh.faults.has(Fault::RestNoAuth) {
        let id = credential.split(':').next().unwrap_or_default();
        return sh.secret_key(id).or_else(|| sh.first_secret_key());
    }
    let (id, secret) = match credential.split_once(':') {
        Some((id, secret)) => (id, secret),
        None if sh.legacy_rest_auth => {
            let key = sh.legacy_key(credential);
            let expected = key
                .as_ref()
                .and_then(|k| k.legacy.clone())
                .unwrap_or_default();
            let ok = ct_eq(expected.as_bytes(), credential.as_bytes()) && key.is_some();
            return key.filter(|k| ok && !k.revoked.load(Ordering::Relaxed));
        }
        None => (credential, ""),
    };
    let key = sh.secret_key(id);
    // Compare against something even for unknown ids, so timing does not reveal them.
    let expected = key
        .as_ref()
        .map_or("\u{0}unknown-key\u{0}", |k| k.secret.as_str());
    let ok = ct_eq(expected.as_bytes(), secret.as_bytes()) && !secret.is_empty();
    key.filter(|k| ok && !k.revoked.load(Ordering::Relaxed))
}

/// Reads a request body of at most `limit` bytes (LIM-12 → 413).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Vec<u8>, Failure> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_big = || {
        fail::<Vec<u8>>(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body is larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return too_big();
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => too_big(),
        Err(_) => bad("could not read the request body"),
    }
}

/// Parses a JSON object body into raw members (values stay byte-exact).
fn members(body: &[u8]) -> Result<HashMap<String, &RawValue>, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return bad("request body must be a JSON object");
    }
    serde_json::from_slice(body).or_else(|e| bad(format!("request body is not a JSON object: {e}")))
}

/// An object member checked for shape and compact size, kept as the text the client
/// sent: metadata is relayed unmodified (MSG-2, PFR-2).
fn object_member<'a>(
    m: &HashMap<String, &'a RawValue>,
    name: &str,
    max: usize,
) -> Result<Option<&'a RawValue>, Failure> {
    let Some(raw) = m.get(name) else {
        return Ok(None);
    };
    match check_object(raw, max) {
        Ok(()) => Ok(Some(*raw)),
        Err(why) => bad(format!("`{name}` {why}")),
    }
}

fn string_list(
    m: &HashMap<String, &RawValue>,
    name: &str,
    max: usize,
) -> Result<Option<Vec<String>>, Failure> {
    let Some(raw) = m.get(name) else {
        return Ok(None);
    };
    match serde_json::from_str::<Vec<String>>(raw.get()) {
        Ok(v) if v.len() <= max => Ok(Some(v)),
        _ => bad(format!(
            "`{name}` must be an array of at most {max} strings"
        )),
    }
}

/// Routes one REST request.
pub async fn handle(sh: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    match dispatch(sh, req).await {
        Ok(resp) => resp,
        Err((status, code, message)) if sh.faults.has(Fault::RestErrorBodyCode) => {
            json_response(status, &ordered!({"code": code, "message": message}))
        }
        Err((status, code, message)) => error_response(status, code, &message),
    }
}

enum Route {
    Tokens,
    Usage,
    Kick(String),
    Peers(String),
    Publish(String),
}

fn decode(segment: &str, raw: bool) -> Result<String, Failure> {
    if raw {
        return Ok(segment.to_owned());
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .or_else(|_| bad("path parameter is not valid UTF-8"))
}

/// `raw`: the `rest-no-percent-decode` fault.
fn route(method: &Method, path: &str, raw: bool) -> Result<Route, Failure> {
    let decode = |s: &str| decode(s, raw);
    let not_found = || fail(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    match (method, path) {
        (&Method::POST, "/v1/tokens") => return Ok(Route::Tokens),
        (&Method::GET, "/v1/usage") => return Ok(Route::Usage),
        _ => {}
    }
    if let Some(id) = path.strip_prefix("/v1/peers/") {
        return if method == Method::DELETE {
            Ok(Route::Kick(decode(id)?))
        } else {
            not_found()
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/channels/") {
        // REST-11: everything between the prefix and the last segment is the channel,
        // so both `a%2Fb` and a raw `a/b` work.
        if let Some(ch) = rest.strip_suffix("/peers") {
            return if method == Method::GET {
                Ok(Route::Peers(decode(ch)?))
            } else {
                not_found()
            };
        }
        if let Some(ch) = rest.strip_suffix("/publish") {
            return if method == Method::POST {
                Ok(Route::Publish(decode(ch)?))
            } else {
                not_found()
            };
        }
    }
    not_found()
}

async fn dispatch(sh: &Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Failure> {
    let f = sh.faults;
    let route = route(
        req.method(),
        req.uri().path(),
        f.has(Fault::RestNoPercentDecode),
    )?;
    if matches!(route, Route::Tokens) && f.has(Fault::RestTokensMissing) {
        return fail(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    if sh.is_shutting_down() {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal_error",
            "server is shutting down",
        );
    }
    if sh.faults.has(Fault::Rest503) {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal_error",
            "injected internal error (fault switch)",
        );
    }
    let Some(key) = authenticate(sh, &req) else {
        if matches!(route, Route::Usage) && f.has(Fault::RestUsageAuth500) {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "fault switch",
            );
        }
        return fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials: use Authorization: Bearer <keyId>:<secret>",
        );
    };
    let body_limit = if f.has(Fault::RestBodyUnlimited) {
        1 << 20
    } else {
        sh.limits.rest_body_limit
    };
    match route {
        Route::Tokens => {
            let body = read_body(req, body_limit).await?;
            tokens(sh, &key, &body)
        }
        Route::Usage => {
            let mut usage = key.app.usage();
            if f.has(Fault::RestUsageFrozen) {
                for (k, v) in usage.0.iter_mut() {
                    if *k == "messagesUsed" {
                        *v = RawValue::from_string("0".into()).expect("0 is JSON");
                    }
                }
            }
            Ok(json_response(StatusCode::OK, &usage))
        }
        Route::Kick(id) => kick(sh, &key, id),
        Route::Peers(channel) => {
            check_channel(sh, &key, &channel, Action::Presence)?;
            let per_connection = f.has(Fault::RestPeersPerConnection);
            let entries: Vec<Arc<str>> = apps_of(sh, &key)
                .iter()
                .flat_map(|app| app.hub.peers_in(&channel, per_connection))
                .collect();
            let list = format!(
                "[{}]",
                entries.iter().map(|e| &**e).collect::<Vec<_>>().join(",")
            );
            let peers = RawValue::from_string(list).or_else(|_| {
                fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "internal_error",
                    "bad entry",
                )
            })?;
            Ok(json_response(
                StatusCode::OK,
                &ordered!({"channel": channel, "peers": peers}),
            ))
        }
        Route::Publish(channel) => {
            check_channel(sh, &key, &channel, Action::Publish)?;
            let body = read_body(req, body_limit).await?;
            publish(sh, &key, &channel, &body)
        }
    }
}

/// The apps a REST call acts on: the key's (REST-9), or all of them under the
/// `rest-cross-app` fault.
fn apps_of(sh: &Shared, key: &SecretKey) -> Vec<Arc<App>> {
    if sh.faults.has(Fault::RestCrossApp) {
        sh.apps()
    } else {
        vec![key.app.clone()]
    }
}

/// `DELETE /v1/peers/:id` (REST-40…44).
fn kick(sh: &Shared, key: &SecretKey, id: String) -> Result<Resp, Failure> {
    let f = sh.faults;
    if !valid_peer_id(&id) && !f.has(Fault::RestKickNoValidation) {
        return bad("peer id must be 1-128 bytes of printable ASCII");
    }
    if f.has(Fault::RestKickNeedsPublish) && !key.actions.contains(Action::Publish) {
        return fail(
            StatusCode::FORBIDDEN,
            "action_not_permitted",
            "this key lacks the `publish` action (fault switch)",
        );
    }
    let code = if f.has(Fault::RestKickWrongCode) {
        close::NORMAL
    } else {
        close::ADMIN_DISCONNECT
    };
    let closed: usize = apps_of(sh, key)
        .iter()
        .map(|app| app.hub.close_peer(&id, code))
        .sum();
    if f.has(Fault::RestKickRevokes) {
        let mut kicked = sh
            .fault_state
            .kicked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        kicked.insert((key.app.id.clone(), id.clone()));
    }
    if closed == 0 && f.has(Fault::RestKick404) {
        return fail(StatusCode::NOT_FOUND, "not_found", "peer is not connected");
    }
    Ok(json_response(
        StatusCode::OK,
        &ordered!({"peerId": id, "closed": closed}),
    ))
}

/// Channel validity, reserved names, action and key scope (REST-20, REST-30).
fn check_channel(
    sh: &Shared,
    key: &SecretKey,
    channel: &str,
    action: Action,
) -> Result<(), Failure> {
    if !valid_channel(channel) {
        return bad("channel must be 1-256 bytes without control characters");
    }
    if is_reserved(channel) {
        return fail(
            StatusCode::BAD_REQUEST,
            "channel_reserved",
            "reserved channel prefix",
        );
    }
    if sh.faults.has(Fault::RestIgnoresKeyScope) {
        return Ok(());
    }
    if !key.actions.contains(action) {
        return fail(
            StatusCode::FORBIDDEN,
            "action_not_permitted",
            format!("this key lacks the `{}` action", action.as_str()),
        );
    }
    if !key.patterns.iter().any(|p| p.matches(channel)) {
        return fail(
            StatusCode::FORBIDDEN,
            "channel_not_authorized",
            format!("channel {channel} is outside this key's patterns"),
        );
    }
    Ok(())
}

/// The claims `POST /v1/tokens` signs, in the order of SPEC A.1. The metadata members
/// are the request's own text, so the token carries them unmodified.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MintClaims<'a> {
    sub: &'a str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<String>>,
    permissions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_metadata: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a RawValue>,
}

/// `POST /v1/tokens` (REST-12…14).
fn tokens(sh: &Shared, key: &SecretKey, body: &[u8]) -> Result<Resp, Failure> {
    let m = members(body)?;
    let peer_id = m
        .get("peerId")
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .filter(|p| {
            valid_peer_id(p)
                || (sh.faults.has(Fault::LongPeerIdsAccepted)
                    && p.len() <= 256
                    && p.bytes().all(|b| (0x20..=0x7E).contains(&b)))
        });
    let Some(peer_id) = peer_id else {
        return bad("`peerId` is required: 1-128 bytes of printable ASCII");
    };
    let unlimited = sh.faults.has(Fault::RestMintNoLimits);
    let cap = |max: usize| if unlimited { usize::MAX } else { max };
    let channels = string_list(&m, "channels", cap(MAX_TOKEN_CHANNELS))?;
    if channels.iter().flatten().any(|c| !valid_channel(c)) {
        return bad("`channels` entries must be 1-256 bytes without control characters");
    }
    let permissions = string_list(&m, "permissions", cap(MAX_TOKEN_PERMISSIONS))?;
    if let Some(unknown) = permissions
        .iter()
        .flatten()
        .find(|p| Action::parse(p).is_none())
    {
        return bad(format!(
            "unknown permission {unknown:?} (expected publish, subscribe, presence, send)"
        ));
    }
    let limits = &sh.limits;
    let ttl = match m.get("expiresInSec") {
        None => limits.token_default_ttl_secs,
        Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(n) if (1..=limits.token_max_ttl_secs).contains(&n) || unlimited => n,
            _ => {
                return bad(format!(
                    "`expiresInSec` must be an integer from 1 to {}",
                    limits.token_max_ttl_secs
                ));
            }
        },
    };
    let metadata = object_member(&m, "metadata", MAX_METADATA_BYTES)?;
    let peer_metadata = object_member(&m, "peerMetadata", MAX_PEER_METADATA_BYTES)?;
    let requested = Actions::from_names(permissions.iter().flatten());
    if let Some(a) = requested.iter().find(|a| !key.actions.contains(*a)) {
        return fail(
            StatusCode::FORBIDDEN,
            "action_not_permitted",
            format!("this key lacks the `{}` action", a.as_str()),
        );
    }
    // REST-13: each requested entry, read literally, must match one of the key's patterns.
    if let Some(c) = channels
        .iter()
        .flatten()
        .find(|c| !key.patterns.iter().any(|p| p.matches(c)))
    {
        return fail(
            StatusCode::FORBIDDEN,
            "channel_not_authorized",
            format!("channel {c} is outside this key's patterns"),
        );
    }
    let now = sh.clock.now_s();
    let exp = now + ttl as i64;
    let claims = MintClaims {
        sub: &peer_id,
        exp,
        iat: now,
        channels,
        permissions: match permissions {
            Some(p) => Actions::from_names(p).names(),
            None => key.actions.names(),
        },
        peer_metadata,
        metadata,
    };
    let f = sh.faults;
    let token = if f.has(Fault::RestMintHs384) {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384);
        header.kid = Some(key.id.clone());
        header.typ = Some("JWT".into());
        let secret = jsonwebtoken::EncodingKey::from_secret(key.secret.as_bytes());
        jsonwebtoken::encode(&header, &claims, &secret).unwrap_or_default()
    } else {
        auth::mint(&key.id, key.secret.as_bytes(), &claims)
    };
    let shown_exp = if f.has(Fault::RestTokenExpiresMs) {
        exp.saturating_mul(1000)
    } else {
        exp
    };
    Ok(json_response(
        success(f),
        &ordered!({"token": token, "expiresAt": shown_exp}),
    ))
}

/// 200, or 201 under the `rest-201` fault (REST-10).
fn success(f: FaultSet) -> StatusCode {
    if f.has(Fault::Rest201) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// An origin id for REST publishes, so injected swaps only pair messages with one `from`.
fn rest_origin(app: &str, from: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (app, from).hash(&mut h);
    h.finish() | 1 << 63
}

/// `POST /v1/channels/:id/publish` (REST-30…36).
fn publish(sh: &Shared, key: &SecretKey, channel: &str, body: &[u8]) -> Result<Resp, Failure> {
    let m = members(body)?;
    let Some(data) = m.get("data").copied() else {
        return bad("`data` is required (null is allowed)");
    };
    let f = sh.faults;
    let from = match m.get("from") {
        None => "system".to_owned(),
        Some(_) if f.has(Fault::RestFromIgnored) => "system".to_owned(),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(f) if valid_peer_id(&f) => f,
            _ => return bad("`from` must be 1-128 bytes of printable ASCII"),
        },
    };
    let meta = object_member(&m, "peerMetadata", MAX_PEER_METADATA_BYTES)?;
    if !f.has(Fault::RestPublishNoQuota) && !key.app.charge_message() {
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "over_message_quota",
            "message quota exhausted for this period",
        );
    }
    if f.has(Fault::RestPublishSubscribes) {
        key.app.hub.phantom_presence(channel, &from);
    }
    let others: usize = apps_of(sh, key)
        .iter()
        .filter(|app| app.id != key.app.id)
        .map(|app| app.hub.publish(sh, None, 0, channel, &from, data, meta))
        .sum();
    let delivered = others
        + key.app.hub.publish(
            sh,
            None,
            rest_origin(&key.app.id, &from),
            channel,
            &from,
            data,
            meta,
        );
    let delivered = if f.has(Fault::RestDeliveredZero) {
        0
    } else {
        delivered
    };
    Ok(json_response(
        success(f),
        &ordered!({"channel": channel, "delivered": delivered}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route(&Method::POST, "/v1/tokens", false),
            Ok(Route::Tokens)
        ));
        assert!(
            matches!(route(&Method::GET, "/v1/channels/a%2Fb/peers", false), Ok(Route::Peers(c)) if c == "a/b")
        );
        assert!(
            matches!(route(&Method::GET, "/v1/channels/a/b/peers", false), Ok(Route::Peers(c)) if c == "a/b")
        );
        assert!(
            matches!(route(&Method::POST, "/v1/channels/x/publish", false), Ok(Route::Publish(c)) if c == "x")
        );
        assert!(
            matches!(route(&Method::DELETE, "/v1/peers/eli-7", false), Ok(Route::Kick(p)) if p == "eli-7")
        );
        assert!(matches!(
            route(&Method::GET, "/v1/peers/eli-7", false),
            Err((StatusCode::NOT_FOUND, _, _))
        ));
        assert!(matches!(
            route(&Method::GET, "/v1/nope", false),
            Err((StatusCode::NOT_FOUND, _, _))
        ));
    }
}
