//! Connection-ending conditions of the reference server (SPEC §13, §15–§17, §19, CONN-*):
//! every close code it sends, and the HTTP-level refusals.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use futures_util::SinkExt;
use serde_json::json;
use stampede::embedded::{EmbeddedServer, Options};
use stampede::proto::auth;
use stampede::server::Config;
use stampede::transport::{ConnectError, Connector};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn refused(url: &str, code: u16) {
    let mut c = Client::open(url).await;
    c.expect_close(code).await;
}

#[tokio::test]
async fn oversized_frames_close_1009_and_the_limit_is_inclusive() {
    let srv = start_server().await;
    let mut a = Client::peer(&srv, "a").await;
    // Exactly maxMessageSize bytes is accepted (FRAME-9, AMB-7).
    let prefix = r#"{"type":"publish","channel":"c","requestId":"big","data":""#;
    let pad = 65536 - prefix.len() - 2;
    let exact = format!("{prefix}{}\"}}", "x".repeat(pad));
    assert_eq!(exact.len(), 65536);
    a.send_text(&exact).await;
    assert_eq!(a.recv().await, json!({"type": "ack", "requestId": "big"}));
    // One byte more closes with 1009.
    let over = format!("{prefix}{}\"}}", "x".repeat(pad + 1));
    a.send_text(&over).await;
    a.expect_close(1009).await;
    // A 70 000-byte frame, and a binary one, as well.
    let mut b = Client::peer(&srv, "b").await;
    b.send_text(&"y".repeat(70_000)).await;
    b.expect_close(1009).await;
    let mut c = Client::peer(&srv, "c").await;
    c.send_binary(vec![0; 70_000]).await;
    c.expect_close(1009).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let srv = start_server().await;
    let mut a = Client::peer(&srv, "a").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    a.ws.send(Message::Frame(frame)).await.unwrap();
    a.expect_close(1007).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_close_4001_without_welcome() {
    let srv = start_server().await;
    let t = srv.target().clone();
    let ws = &t.ws_url;
    let exp = now_s() + 3600;
    let good = token(&srv, json!({"sub": "a"}));
    // Bad signature.
    let forged = auth::mint(
        "sk_id_dev",
        b"wrong-secret",
        &json!({"sub": "a", "exp": exp}),
    );
    refused(&format!("{ws}?token={forged}"), 4001).await;
    // alg none, signature stripped.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = good.split('.').nth(1).unwrap();
    let none = format!(
        "{}.{payload}.",
        b64.encode(br#"{"alg":"none","kid":"sk_id_dev","typ":"JWT"}"#)
    );
    refused(&format!("{ws}?token={none}"), 4001).await;
    // Unknown kid, garbage, missing exp, bad sub, both credentials, none.
    let unknown = auth::mint(
        "sk_id_nope",
        b"sk_secret_dev",
        &json!({"sub": "a", "exp": exp}),
    );
    refused(&format!("{ws}?token={unknown}"), 4001).await;
    refused(&format!("{ws}?token=garbage"), 4001).await;
    refused(
        &format!(
            "{ws}?token={}",
            auth::mint("sk_id_dev", b"sk_secret_dev", &json!({"sub": "a"}))
        ),
        4001,
    )
    .await;
    refused(&token_url(&srv, json!({"sub": "bad\u{7}"})), 4001).await;
    refused(&format!("{ws}?token={good}&key=pk_live_dev"), 4001).await;
    refused(ws, 4001).await;
    refused(&format!("{ws}?key=pk_live_nope"), 4001).await;
    // A token from another app's key is valid, but for that app only.
    let (k, s) = t.other_app.clone().unwrap();
    let mut other = Client::open(&url_for(&srv, &k, &s, json!({"sub": "a"}))).await;
    assert_eq!(other.recv().await["type"], "welcome");
    // Percent-encoded token (CONN-2).
    let enc = good.replace('.', "%2E");
    let mut c = Client::open(&format!("{ws}?token={enc}")).await;
    assert_eq!(c.recv().await["peerId"], "a");
    // A revoked key refuses new connections (CFG-2).
    let (app, key, secret, pk) = new_app(&srv, json!({})).await;
    let (st, _) = admin(
        &srv,
        "POST",
        &format!("/_admin/apps/{app}/keys/{key}/revoke"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    refused(&url_for(&srv, &key, &secret, json!({"sub": "a"})), 4001).await;
    admin(
        &srv,
        "POST",
        &format!("/_admin/apps/{app}/keys/{pk}/revoke"),
        None,
    )
    .await;
    refused(&format!("{ws}?key={pk}"), 4001).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn origin_is_checked_only_when_present() {
    let srv = start_server().await;
    let (_, _, _, pk) = new_app(
        &srv,
        json!({"publishable": {"allowedOrigins": ["https://ok.example"]}}),
    )
    .await;
    let url = format!("{}?key={pk}", srv.target().ws_url);
    let c = Connector::default();
    let mut ok = Client::open_with(&c, &url, Some("https://ok.example"))
        .await
        .unwrap();
    assert_eq!(ok.recv().await["type"], "welcome");
    let mut bad = Client::open_with(&c, &url, Some("https://evil.example"))
        .await
        .unwrap();
    bad.expect_close(4001).await;
    let mut none = Client::open(&url).await;
    assert_eq!(none.recv().await["type"], "welcome");
    srv.shutdown().await;
}

#[tokio::test]
async fn expiry_closes_4002_at_connect_and_250ms_before_exp() {
    let srv = start_server().await;
    refused(
        &token_url(&srv, json!({"sub": "a", "exp": now_s() - 10})),
        4002,
    )
    .await;
    // exp at least 1.3 s away, rounded up to a whole second.
    let exp = (now_ms() + 1300 + 999) / 1000;
    let (mut c, w) = Client::connect(&srv, json!({"sub": "late", "exp": exp})).await;
    assert_eq!(w["expiresAt"], exp);
    let mut watcher = Client::peer(&srv, "w").await;
    watcher.subscribe("room").await;
    c.subscribe("room").await;
    watcher.recv().await;
    let (closed, frames) = c.closed_within(Duration::from_secs(3)).await;
    let at = now_ms();
    assert_eq!(closed, Closed::Code(4002), "{frames:?}");
    assert!(
        frames.is_empty(),
        "no going_away or error before 4002: {frames:?}"
    );
    assert!(
        at >= exp * 1000 - 1000 && at <= exp * 1000 + 500,
        "closed at {at}, exp {exp}"
    );
    // The leave delta follows (PRES-6, EXP-3).
    assert_eq!(watcher.recv().await["left"], json!([{"peerId": "late"}]));
    // Publishable keys never expire: covered by expiresAt null (welcome test).
    srv.shutdown().await;
}

#[tokio::test]
async fn compat_switch_closes_4003_instead_of_the_error_frame() {
    let srv = start_server().await;
    let (_, key, secret, _) = new_app(
        &srv,
        json!({"keyPatterns": ["acme/**"], "compat": {"unauthorizedSubscribeCloses": true}}),
    )
    .await;
    let mut c = Client::open(&url_for(&srv, &key, &secret, json!({"sub": "a"}))).await;
    c.recv().await;
    c.subscribe("acme/ok").await;
    // publish keeps the error frame (AUTHZ-4).
    c.expect_error(
        json!({"type": "publish", "channel": "other", "data": 1}),
        "p",
        "channel_not_authorized",
    )
    .await;
    c.send(json!({"type": "subscribe", "channel": "other", "requestId": "s"}))
        .await;
    c.expect_close(4003).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn concurrent_limit_closes_4010_unless_overages_are_usable() {
    let srv = start_server().await;
    let (app, key, secret, _) = new_app(
        &srv,
        json!({"plan": {"maxConcurrentConnections": 1, "overagesAllowed": false}}),
    )
    .await;
    let url = url_for(&srv, &key, &secret, json!({"sub": "a"}));
    let first = {
        let mut c = Client::open(&url).await;
        assert_eq!(c.recv().await["type"], "welcome");
        c
    };
    refused(&url, 4010).await;
    // Closing frees the slot (QUOTA-7).
    first.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = Client::open(&url).await;
    assert_eq!(again.recv().await["type"], "welcome");
    // With usable overages the extra connection is admitted and billed.
    let (st, _) = admin(
        &srv,
        "PATCH",
        &format!("/_admin/apps/{app}/plan"),
        Some(json!({"overagesAllowed": true, "overagesEnabled": true})),
    )
    .await;
    assert_eq!(st, 200);
    let mut extra = Client::open(&url).await;
    assert_eq!(extra.recv().await["type"], "welcome");
    let (_, usage) = rest(
        &srv,
        "GET",
        "/v1/usage",
        Some(&format!("{key}:{secret}")),
        None,
    )
    .await;
    assert_eq!(usage["overageConnections"], 1, "{usage}");
    assert_eq!(usage["concurrentNow"], 2, "{usage}");
    srv.shutdown().await;
}

#[tokio::test]
async fn rate_limit_closes_4011_before_processing() {
    let srv = start_server().await;
    let (_, key, secret, _) =
        new_app(&srv, json!({"rate": {"refillPerSec": 1, "burst": 20}})).await;
    let mut c = Client::open(&url_for(&srv, &key, &secret, json!({"sub": "a"}))).await;
    c.recv().await;
    for i in 0..25 {
        c.send(json!({"type": "publish", "channel": "c", "data": i, "requestId": format!("p{i}")}))
            .await;
    }
    let (closed, frames) = c.closed_within(Duration::from_secs(2)).await;
    assert_eq!(closed, Closed::Code(4011));
    assert!(
        (19..=21).contains(&frames.len()),
        "about the burst is processed: {}",
        frames.len()
    );
    assert!(
        frames.iter().all(|f| f["type"] == "ack"),
        "no error frame for rate (RATE-3)"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn suspension_closes_open_and_new_connections_4012() {
    let srv = start_server().await;
    let (app, key, secret, _) = new_app(&srv, json!({})).await;
    let url = url_for(&srv, &key, &secret, json!({"sub": "a"}));
    let mut open = Client::open(&url).await;
    open.recv().await;
    let (st, v) = admin(&srv, "POST", &format!("/_admin/apps/{app}/suspend"), None).await;
    assert_eq!((st, v["closed"].as_u64()), (200, Some(1)));
    open.expect_close(4012).await;
    refused(&url, 4012).await;
    admin(&srv, "POST", &format!("/_admin/apps/{app}/resume"), None).await;
    let mut back = Client::open(&url).await;
    assert_eq!(back.recv().await["type"], "welcome");
    srv.shutdown().await;
}

#[tokio::test]
async fn http_level_refusals() {
    let srv = start_with(Options {
        ip_connect_limit: Some(3),
        ..Options::default()
    })
    .await;
    let (st, body) = http(&srv, "GET", "/v1", None, None).await;
    assert_eq!(st, 426, "{body}");
    let (st, v) = rest(&srv, "GET", "/nowhere", None, None).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")));
    let url = token_url(&srv, json!({"sub": "a"}));
    for _ in 0..3 {
        let mut c = Client::open(&url).await;
        assert_eq!(c.recv().await["type"], "welcome");
    }
    // The fourth attempt within the window: HTTP 429, no upgrade (RATE-5).
    match Client::try_open(&url).await {
        Err(ConnectError::Http { status, .. }) => assert_eq!(status, 429),
        Err(e) => panic!("expected HTTP 429, got {e}"),
        Ok(_) => panic!("expected HTTP 429, got an upgrade"),
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_ping_grace() {
    let mut cfg = Config::dev();
    cfg.limits.ping_interval = Duration::from_millis(200);
    cfg.limits.pong_grace = Duration::from_millis(200);
    cfg.limits.ip_connect_limit = 0;
    let srv = EmbeddedServer::with_config(cfg).await.unwrap();
    let mut live = Client::peer(&srv, "live").await;
    let mut silent = Client::peer(&srv, "silent").await;
    // `live` keeps reading, so tungstenite answers the server's Pings; `silent` does not.
    live.expect_silence(900).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        silent.closed_within(Duration::from_secs(2)).await.0,
        Closed::Abnormal,
        "HB-2: no close handshake"
    );
    live.send(json!({"type": "ping"})).await;
    assert_eq!(live.recv().await["type"], "pong");
    srv.shutdown().await;
}
