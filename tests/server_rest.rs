//! The REST control plane of the reference server (SPEC §20), good and bad auth.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn every_auth_failure_is_the_same_401() {
    let srv = start_server().await;
    let good = dev_auth(&srv);
    let (st, _) = rest(&srv, "GET", "/v1/usage", Some(&good), None).await;
    assert_eq!(st, 200);
    let pk = srv.target().publishable_key.clone().unwrap();
    for bad in [
        None,
        Some("sk_id_dev"),
        Some("sk_id_dev:"),
        Some("sk_id_dev:wrong"),
        Some("sk_id_nope:sk_secret_dev"),
        Some(pk.as_str()),
        Some("garbage"),
    ] {
        for (method, path) in [
            ("GET", "/v1/usage"),
            ("POST", "/v1/tokens"),
            ("GET", "/v1/channels/room/peers"),
            ("POST", "/v1/channels/room/publish"),
            ("DELETE", "/v1/peers/a"),
        ] {
            let (st, v) = rest(&srv, method, path, bad, Some("{}")).await;
            assert_eq!(
                (st, v["error"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path} with {bad:?}"
            );
        }
    }
    // Unknown endpoint and wrong method: 404 not_found (REST-7).
    let (st, v) = rest(&srv, "GET", "/v1/tokens", Some(&good), None).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")));
    srv.shutdown().await;
}

#[tokio::test]
async fn tokens_mint_and_validate() {
    let srv = start_server().await;
    let auth = dev_auth(&srv);
    let body = json!({"peerId": "eli-7", "channels": ["acme/support-17"], "permissions": ["subscribe", "publish"],
                      "expiresInSec": 900, "peerMetadata": {"name": "Eli"}, "metadata": {"m": 1}});
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&auth),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let exp = v["expiresAt"].as_i64().unwrap();
    assert!((exp - now_s() - 900).abs() <= 2);
    let token = v["token"].as_str().unwrap();
    let mut c = Client::open(&format!("{}?token={token}", srv.target().ws_url)).await;
    let w = c.recv().await;
    assert_eq!(
        (w["peerId"].as_str(), w["expiresAt"].as_i64()),
        (Some("eli-7"), Some(exp))
    );
    assert_eq!(w["metadata"], json!({"m": 1}));
    // No `presence` permission: ack but no snapshot (AUTHZ-6).
    c.send(json!({"type": "subscribe", "channel": "acme/support-17", "requestId": "s1"}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "ack", "requestId": "s1"}));
    c.expect_silence(100).await;
    c.expect_error(
        json!({"type": "send", "to": "x", "data": 1}),
        "s",
        "action_not_permitted",
    )
    .await;
    c.expect_error(
        json!({"type": "subscribe", "channel": "acme/other"}),
        "o",
        "channel_not_authorized",
    )
    .await;

    for (body, status, code) in [
        (json!({}), 400, "invalid_request"),
        (json!({"peerId": ""}), 400, "invalid_request"),
        (json!({"peerId": "é"}), 400, "invalid_request"),
        (
            json!({"peerId": "a", "expiresInSec": 0}),
            400,
            "invalid_request",
        ),
        (
            json!({"peerId": "a", "expiresInSec": 86401}),
            400,
            "invalid_request",
        ),
        (
            json!({"peerId": "a", "permissions": ["fly"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"peerId": "a", "channels": vec!["c"; 101]}),
            400,
            "invalid_request",
        ),
        (
            json!({"peerId": "a", "peerMetadata": {"x": "y".repeat(4100)}}),
            400,
            "invalid_request",
        ),
        (
            json!({"peerId": "a", "metadata": []}),
            400,
            "invalid_request",
        ),
    ] {
        let (st, v) = rest(
            &srv,
            "POST",
            "/v1/tokens",
            Some(&auth),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!((st, v["error"].as_str()), (status, Some(code)), "{body}");
    }
    let (st, _) = rest(&srv, "POST", "/v1/tokens", Some(&auth), Some("not json")).await;
    assert_eq!(st, 400);
    // Key narrower than the request: 403s (REST-13).
    let (_, key, secret, _) = new_app(
        &srv,
        json!({"keyPatterns": ["acme/*"], "keyActions": ["subscribe"]}),
    )
    .await;
    let narrow = format!("{key}:{secret}");
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&narrow),
        Some(r#"{"peerId":"a","permissions":["publish"]}"#),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("action_not_permitted"))
    );
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&narrow),
        Some(r#"{"peerId":"a","channels":["other/x"]}"#),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("channel_not_authorized"))
    );
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/tokens",
        Some(&narrow),
        Some(r#"{"peerId":"a","channels":["acme/x"]}"#),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    // Oversized body: 413 (LIM-12).
    let big = json!({"peerId": "a", "metadata": {"x": "y".repeat(40_000)}}).to_string();
    let (st, v) = rest(&srv, "POST", "/v1/tokens", Some(&auth), Some(&big)).await;
    assert_eq!((st, v["error"].as_str()), (413, Some("invalid_request")));
    srv.shutdown().await;
}

#[tokio::test]
async fn peers_publish_kick_and_usage() {
    let srv = start_server().await;
    let auth = dev_auth(&srv);
    let mut a = Client::connect(&srv, json!({"sub": "alice", "peerMetadata": {"n": "A"}}))
        .await
        .0;
    let mut b1 = Client::peer(&srv, "bob").await;
    let mut b2 = Client::peer(&srv, "bob").await;
    a.subscribe("acme/room").await;
    b1.subscribe("acme/room").await;
    a.recv().await;
    b2.send(json!({"type": "subscribe", "channel": "acme/room", "includeSenderMetadata": true, "requestId": "s"})).await;
    b2.recv().await;
    b2.recv().await;

    // Peers: once per peerId, in join order, encoded and raw slashes (REST-11/21/22).
    let want = json!({"channel": "acme/room", "peers": [{"peerId": "alice", "metadata": {"n": "A"}}, {"peerId": "bob"}]});
    for path in [
        "/v1/channels/acme%2Froom/peers",
        "/v1/channels/acme/room/peers",
    ] {
        let (st, v) = rest(&srv, "GET", path, Some(&auth), None).await;
        assert_eq!((st, &v), (200, &want), "{path}");
    }
    let (st, v) = rest(&srv, "GET", "/v1/channels/empty/peers", Some(&auth), None).await;
    assert_eq!((st, v), (200, json!({"channel": "empty", "peers": []})));
    let (st, v) = rest(
        &srv,
        "GET",
        "/v1/channels/_system%2Fx/peers",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("channel_reserved")));

    // Publish: from defaults to system; fromMetadata only with peerMetadata and opt-in.
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/acme%2Froom/publish",
        Some(&auth),
        Some(r#"{"data":{"n":12345678901234567890}}"#),
    )
    .await;
    assert_eq!(
        (st, v),
        (200, json!({"channel": "acme/room", "delivered": 3}))
    );
    for c in [&mut a, &mut b1, &mut b2] {
        let m = c.recv().await;
        assert_eq!(m["from"], "system");
        assert!(m.get("fromMetadata").is_none());
    }
    let (st, _) = rest(
        &srv,
        "POST",
        "/v1/channels/acme/room/publish",
        Some(&auth),
        Some(r#"{"data":null,"from":"ops","peerMetadata":{"role":"bot"}}"#),
    )
    .await;
    assert_eq!(st, 200);
    assert!(a.recv().await.get("fromMetadata").is_none());
    b1.recv().await;
    let m = b2.recv().await;
    assert_eq!(
        (m["from"].as_str(), &m["fromMetadata"]),
        (Some("ops"), &json!({"role": "bot"}))
    );
    assert!(m["data"].is_null());
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/acme/room/publish",
        Some(&auth),
        Some(r#"{"from":"x"}"#),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_request")));
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/_metered%2Fx/publish",
        Some(&auth),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("channel_reserved")));

    // Kick: every connection of bob closes 4020, alice sees bob leave (REST-41/42).
    let (st, v) = rest(&srv, "DELETE", "/v1/peers/bob", Some(&auth), None).await;
    assert_eq!((st, v), (200, json!({"peerId": "bob", "closed": 2})));
    b1.expect_close(4020).await;
    b2.expect_close(4020).await;
    assert_eq!(a.recv().await["left"], json!([{"peerId": "bob"}]));
    let (st, v) = rest(&srv, "DELETE", "/v1/peers/nobody", Some(&auth), None).await;
    assert_eq!((st, v["closed"].as_u64()), (200, Some(0)));
    let (st, _) = rest(&srv, "DELETE", "/v1/peers/%C3%A9", Some(&auth), None).await;
    assert_eq!(st, 400);

    // Usage of the calling key's app.
    let (st, u) = rest(&srv, "GET", "/v1/usage", Some(&auth), None).await;
    assert_eq!(st, 200);
    assert_eq!(u["appId"], "app_dev");
    assert_eq!(u["concurrentNow"], 1, "{u}");
    assert!(u["messagesUsed"].as_u64().unwrap() >= 2);
    assert!(u["plan"]["maxConcurrentConnections"].as_u64().is_some());
    assert!(u["periodStartUnix"].as_i64().is_some());
    srv.shutdown().await;
}

#[tokio::test]
async fn rest_scope_actions_and_quota() {
    let srv = start_server().await;
    let (app, key, secret, _) = new_app(
        &srv,
        json!({"keyPatterns": ["acme/**"], "keyActions": ["publish"],
               "plan": {"maxMessagesPerPeriod": 1, "overagesAllowed": false, "name": "SIGNALLING_FREE"}}),
    )
    .await;
    let auth = format!("{key}:{secret}");
    let (st, v) = rest(
        &srv,
        "GET",
        "/v1/channels/acme%2Fx/peers",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("action_not_permitted"))
    );
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/other/publish",
        Some(&auth),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("channel_not_authorized"))
    );
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/acme%2Fx/publish",
        Some(&auth),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!((st, v["delivered"].as_u64()), (200, Some(0)));
    let (st, v) = rest(
        &srv,
        "POST",
        "/v1/channels/acme%2Fx/publish",
        Some(&auth),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (429, Some("over_message_quota")));
    let (_, u) = rest(&srv, "GET", "/v1/usage", Some(&auth), None).await;
    assert_eq!(u["messagesUsed"], 2);
    assert_eq!(u["plan"]["name"], "SIGNALLING_FREE");
    // A new billing period resets the counters (admin hook).
    let (st, _) = admin(&srv, "POST", &format!("/_admin/apps/{app}/period"), None).await;
    assert_eq!(st, 200);
    let (st, _) = rest(
        &srv,
        "POST",
        "/v1/channels/acme%2Fx/publish",
        Some(&auth),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!(st, 200);
    // Another app's peers are invisible (REST-9).
    let mut c = Client::peer(&srv, "alice").await;
    c.subscribe("acme/x").await;
    let (st, v) = rest(&srv, "DELETE", "/v1/peers/alice", Some(&auth), None).await;
    assert_eq!((st, v["closed"].as_u64()), (200, Some(0)));
    // The admin hook refuses a wrong token.
    let (st, _) = rest(&srv, "POST", "/_admin/apps", Some("wrong"), Some("{}")).await;
    assert_eq!(st, 401);
    srv.shutdown().await;
}

/// Bodies the server writes itself list members in SPEC's order (REST-42, A.4), and a
/// minted token carries the request's metadata text unmodified (member order, numbers).
#[tokio::test]
async fn bodies_keep_spec_member_order_and_metadata_text() {
    use base64::Engine;
    let srv = start_server().await;
    let auth = dev_auth(&srv);
    let (st, text) = http(&srv, "DELETE", "/v1/peers/nobody", Some(&auth), None).await;
    assert_eq!(
        (st, text.as_str()),
        (200, r#"{"peerId":"nobody","closed":0}"#)
    );
    let (_, text) = http(&srv, "GET", "/v1/usage", Some(&auth), None).await;
    assert!(
        text.starts_with(r#"{"appId":"app_dev","periodStartUnix":"#),
        "{text}"
    );
    assert!(text.contains(r#""plan":{"name":"#), "{text}");
    let (_, text) = http(&srv, "GET", "/v1/nope", Some(&auth), None).await;
    assert!(
        text.starts_with(r#"{"error":"not_found","message":"#),
        "{text}"
    );

    let meta = r#"{"name":"Eli","color":"teal","n":9007199254740993,"x":1.50}"#;
    let body = format!(r#"{{"peerId":"eli-7","peerMetadata":{meta},"metadata":{meta}}}"#);
    let (st, text) = http(&srv, "POST", "/v1/tokens", Some(&auth), Some(&body)).await;
    assert_eq!(st, 200, "{text}");
    assert!(text.starts_with(r#"{"token":"#), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payload = v["token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims = String::from_utf8(claims).unwrap();
    assert!(
        claims.contains(&format!(r#""peerMetadata":{meta}"#)),
        "{claims}"
    );
    assert!(
        claims.contains(&format!(r#""metadata":{meta}"#)),
        "{claims}"
    );
    srv.shutdown().await;
}
