//! The admin hook (CFG-7), not part of the public protocol: on the same port under
//! `/_admin/`, only when the server has an admin token (`Authorization: Bearer <token>`).
//! It creates isolated apps, suspends and resumes them, changes plans, starts billing
//! periods, revokes keys, moves the clock (CFG-5), reports counters and triggers a
//! graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{
    AppConfig, Compat, Plan, PublishableKeyConfig, RateLimit, SecretKeyConfig,
    default_publishable_actions,
};
use super::http::{Resp, error_response, json_response};
use super::rest::{Failure, bearer, ct_eq, read_body};
use super::state::Shared;
use crate::proto::limits::valid_channel;
use crate::proto::{Action, Actions, close};

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PlanPatch {
    name: Option<String>,
    max_concurrent_connections: Option<u64>,
    max_messages_per_period: Option<u64>,
    overages_allowed: Option<bool>,
    overages_enabled: Option<bool>,
    balance_exhausted: Option<bool>,
    auto_recharge: Option<bool>,
}

impl PlanPatch {
    fn apply(self, plan: &mut Plan) {
        if let Some(n) = self.name {
            plan.name = Some(n);
        }
        if let Some(n) = self.max_concurrent_connections {
            plan.max_concurrent_connections = n;
        }
        if let Some(n) = self.max_messages_per_period {
            plan.max_messages_per_period = n;
        }
        if let Some(b) = self.overages_allowed {
            plan.overages_allowed = b;
        }
        if let Some(b) = self.overages_enabled {
            plan.overages_enabled = b;
        }
        if let Some(b) = self.balance_exhausted {
            plan.balance_exhausted = b;
        }
        if let Some(b) = self.auto_recharge {
            plan.auto_recharge = b;
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishableSpec {
    patterns: Option<Vec<String>>,
    actions: Option<Vec<String>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CompatSpec {
    #[serde(default)]
    unauthorized_subscribe_closes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RateSpec {
    refill_per_sec: u32,
    burst: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewApp {
    plan: Option<PlanPatch>,
    key_patterns: Option<Vec<String>>,
    key_actions: Option<Vec<String>>,
    publishable: Option<PublishableSpec>,
    compat: Option<CompatSpec>,
    max_message_size: Option<usize>,
    rate: Option<RateSpec>,
}

fn actions(names: &[String]) -> Result<Actions, Failure> {
    match names.iter().find(|n| Action::parse(n).is_none()) {
        Some(n) => bad(format!(
            "unknown action {n:?} (expected publish, subscribe, presence, send)"
        )),
        None => Ok(Actions::from_names(names)),
    }
}

fn patterns(list: Option<Vec<String>>) -> Result<Vec<String>, Failure> {
    let list = list.unwrap_or_else(|| vec!["**".into()]);
    match list.iter().find(|p| !valid_channel(p)) {
        Some(p) => bad(format!(
            "pattern {p:?} must be 1-256 bytes without control characters"
        )),
        None => Ok(list),
    }
}

fn hex_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).or_else(|e| bad(format!("invalid body: {e}")))
}

/// Routes one admin request.
pub async fn handle(sh: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    match dispatch(sh, req).await {
        Ok(resp) => resp,
        Err((status, code, message)) => error_response(status, code, &message),
    }
}

async fn dispatch(sh: &Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Failure> {
    let token = sh.admin_token.as_deref().unwrap_or_default();
    let given = bearer(&req).unwrap_or_default();
    if token.is_empty() || !ct_eq(token.as_bytes(), given.as_bytes()) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token required",
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path
        .trim_start_matches("/_admin/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let body = read_body(req, sh.limits.rest_body_limit).await?;
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match (&method, segments.as_slice()) {
        (&Method::POST, ["apps"]) => create_app(sh, &body),
        (&Method::GET, ["stats"]) => {
            let s = &sh.stats;
            let inj = sh.injector.as_ref().map(|i| i.counts()).unwrap_or_default();
            ok(json!({
                "connections": sh.connection_count(),
                "connectionsTotal": s.connections_total.load(Ordering::Relaxed),
                "slowConsumerCloses": s.slow_consumer_closes.load(Ordering::Relaxed),
                "ipLimited": s.ip_limited.load(Ordering::Relaxed),
                "rateLimited": s.rate_limited.load(Ordering::Relaxed),
                "tlsHandshakeFailures": s.tls_handshake_failures.load(Ordering::Relaxed),
                "copies": s.copies.load(Ordering::Relaxed),
                "pings": s.pings.load(Ordering::Relaxed),
                "pongs": s.pongs.load(Ordering::Relaxed),
                "heartbeatDrops": s.heartbeat_drops.load(Ordering::Relaxed),
                "injected": {"dropped": inj.dropped, "duplicated": inj.duplicated, "reordered": inj.reordered},
            }))
        }
        (&Method::POST, ["clock"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct Clock {
                offset_ms: i64,
            }
            let c: Clock = parse(&body)?;
            sh.clock.set_offset_ms(c.offset_ms);
            ok(json!({"offsetMs": c.offset_ms, "nowMs": sh.clock.now_ms()}))
        }
        (&Method::POST, ["shutdown"]) => {
            sh.stop_request.send_replace(true);
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"shuttingDown": true}),
            ))
        }
        (m, ["apps", id, rest @ ..]) => {
            let Some(app) = sh.app(id) else {
                return fail(StatusCode::NOT_FOUND, "not_found", format!("no app {id:?}"));
            };
            match (m, rest) {
                (&Method::POST, ["suspend"]) => {
                    app.suspended.store(true, Ordering::Release);
                    // AUTH-11: open connections are closed with 4012 as well.
                    let closed = app.hub.close_all(close::ACCOUNT_SUSPENDED);
                    ok(json!({"appId": app.id, "suspended": true, "closed": closed}))
                }
                (&Method::POST, ["resume"]) => {
                    app.suspended.store(false, Ordering::Release);
                    ok(json!({"appId": app.id, "suspended": false}))
                }
                (&Method::PATCH, ["plan"]) => {
                    let patch: PlanPatch = parse(&body)?;
                    let mut plan = app.plan.write().unwrap_or_else(|e| e.into_inner());
                    patch.apply(&mut plan);
                    drop(plan);
                    ok(app.usage_json()["plan"].clone())
                }
                (&Method::POST, ["period"]) => {
                    app.new_period(sh.clock.now_s());
                    ok(app.usage_json())
                }
                (&Method::POST, ["keys", key_id, "revoke"]) => {
                    if sh.revoke_key(&app, key_id) {
                        ok(json!({"keyId": key_id, "revoked": true}))
                    } else {
                        fail(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            format!("app {id:?} has no key {key_id:?}"),
                        )
                    }
                }
                _ => fail(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
            }
        }
        _ => fail(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

/// `POST /_admin/apps`: a fresh, isolated app with one secret and one publishable key.
fn create_app(sh: &Shared, body: &[u8]) -> Result<Resp, Failure> {
    let spec: NewApp = parse(body)?;
    let suffix = hex_id();
    let mut app = AppConfig::new(&format!("app_{suffix}"));
    if let Some(patch) = spec.plan {
        patch.apply(&mut app.plan);
    }
    if let Some(size) = spec.max_message_size {
        if size < 1024 {
            return bad("`maxMessageSize` must be at least 1024");
        }
        app.max_message_size = Some(size);
    }
    if let Some(r) = spec.rate {
        app.rate = Some(RateLimit::from_pair((r.refill_per_sec, r.burst)));
    }
    if let Some(c) = spec.compat {
        app.compat = Some(Compat {
            unauthorized_subscribe_closes: c.unauthorized_subscribe_closes,
        });
    }
    let key_id = format!("sk_id_{suffix}");
    let secret = format!("sk_secret_{}{}", hex_id(), hex_id());
    let publishable_key = format!("pk_live_{suffix}");
    app.secret_keys.push(SecretKeyConfig {
        id: key_id.clone(),
        secret: secret.clone(),
        legacy: None,
        channel_patterns: patterns(spec.key_patterns)?,
        actions: match &spec.key_actions {
            Some(a) => actions(a)?,
            None => Actions::ALL,
        },
        auto_inject_turn: false,
        revoked: false,
    });
    let p = spec.publishable.unwrap_or_default();
    app.publishable_keys.push(PublishableKeyConfig {
        id: publishable_key.clone(),
        channel_patterns: patterns(p.patterns)?,
        actions: match &p.actions {
            Some(a) => actions(a)?,
            None => default_publishable_actions(),
        },
        allowed_origins: p.allowed_origins,
        auto_inject_turn: true,
        revoked: false,
    });
    let app = sh.add_app(&app);
    Ok(json_response(
        StatusCode::OK,
        &json!({"appId": app.id, "keyId": key_id, "secret": secret, "publishableKey": publishable_key}),
    ))
}
