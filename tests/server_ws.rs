//! WebSocket behaviour of the reference server: welcome, subscribe/snapshot, presence
//! deltas, fan-out, directs, acks and every error code (SPEC §7–§12).

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn welcome_fields_for_token_and_publishable_key() {
    let srv = start_server().await;
    let exp = now_s() + 600;
    let (mut c, w) = Client::connect(
        &srv,
        json!({"sub": "dana-42", "exp": exp, "metadata": {"boot": [1, 2]}}),
    )
    .await;
    assert_eq!(w["peerId"], "dana-42");
    assert_eq!(w["expiresAt"], exp);
    let st = w["serverTime"].as_i64().unwrap();
    assert!((st - now_s()).abs() <= 2, "serverTime in seconds: {w}");
    assert_eq!(w["maxMessageSize"], 65536);
    assert_eq!(w["metadata"], json!({"boot": [1, 2]}));
    c.expect_silence(100).await;

    // No metadata claim → no metadata member (WEL-7).
    let (_, w) = Client::connect(&srv, json!({"sub": "x"})).await;
    assert!(w.get("metadata").is_none(), "{w}");

    // Publishable key: generated UUID peerId, expiresAt present and null (WEL-3, AUTH-3/4).
    let url = format!(
        "{}?key={}",
        srv.target().ws_url,
        srv.target().publishable_key.as_deref().unwrap()
    );
    let mut p = Client::open(&url).await;
    let w = p.recv().await;
    assert_eq!(w["type"], "welcome");
    assert!(
        w.as_object().unwrap().contains_key("expiresAt") && w["expiresAt"].is_null(),
        "{w}"
    );
    let id = w["peerId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    let mut p2 = Client::open(&url).await;
    assert_ne!(p2.recv().await["peerId"], id, "fresh peerId per connection");

    // An exp far beyond any Instant: welcomed, and the session keeps working.
    let far = 4_000_000_000_000i64;
    let (mut f, w) = Client::connect(&srv, json!({"sub": "far", "exp": far})).await;
    assert_eq!(w["expiresAt"], far);
    f.send(json!({"type": "ping"})).await;
    assert_eq!(f.recv().await["type"], "pong");

    // No sub → UUID (AUTH-10).
    let (_, w) = Client::connect(&srv, json!({})).await;
    assert!(uuid::Uuid::parse_str(w["peerId"].as_str().unwrap()).is_ok());
    srv.shutdown().await;
}

#[tokio::test]
async fn subscribe_acks_then_snapshots_and_presence_deltas_flow() {
    let srv = start_server().await;
    let mut a = Client::connect(
        &srv,
        json!({"sub": "alice", "peerMetadata": {"name": "Alice"}}),
    )
    .await
    .0;
    let (_, snap) = a.subscribe("room").await;
    assert_eq!(
        snap,
        json!({"type": "presence", "channel": "room", "joined": [], "left": []})
    );

    let mut b = Client::peer(&srv, "bob").await;
    let (_, snap) = b.subscribe("room").await;
    assert_eq!(
        snap,
        json!({"type": "presence", "channel": "room", "joined": [{"peerId": "alice", "metadata": {"name": "Alice"}}], "left": []})
    );
    assert_eq!(
        a.recv().await,
        json!({"type": "presence", "channel": "room", "joined": [{"peerId": "bob"}], "left": []})
    );

    // A second tab of bob: no new join (PRES-1); snapshot excludes bob itself (PRES-4).
    let mut b2 = Client::peer(&srv, "bob").await;
    let (_, snap) = b2.subscribe("room").await;
    assert_eq!(
        snap["joined"],
        json!([{"peerId": "alice", "metadata": {"name": "Alice"}}])
    );
    a.expect_silence(150).await;

    // Re-subscribe: ack + fresh snapshot, no announcement (SUB-7/8).
    let (_, snap) = b2.subscribe("room").await;
    assert_eq!(snap["joined"].as_array().unwrap().len(), 1);
    a.expect_silence(100).await;

    // Unsubscribe of one tab: bob still present; the other tab leaving → left delta.
    b2.send(json!({"type": "unsubscribe", "channel": "room", "requestId": "u1"}))
        .await;
    assert_eq!(b2.recv().await, json!({"type": "ack", "requestId": "u1"}));
    a.expect_silence(100).await;
    b.send(json!({"type": "unsubscribe", "channel": "room", "requestId": "u2"}))
        .await;
    assert_eq!(b.recv().await, json!({"type": "ack", "requestId": "u2"}));
    assert_eq!(
        a.recv().await,
        json!({"type": "presence", "channel": "room", "joined": [], "left": [{"peerId": "bob"}]})
    );
    b.expect_silence(100).await;

    // Join again, then disconnect → left delta (PRES-6).
    b.subscribe("room").await;
    assert_eq!(a.recv().await["joined"], json!([{"peerId": "bob"}]));
    b.close().await;
    assert_eq!(a.recv().await["left"], json!([{"peerId": "bob"}]));

    // Unsubscribe of something not held is acked (UNSUB-2); without requestId nothing.
    a.send(json!({"type": "unsubscribe", "channel": "nowhere", "requestId": "u3"}))
        .await;
    assert_eq!(a.recv().await, json!({"type": "ack", "requestId": "u3"}));
    a.send(json!({"type": "subscribe", "channel": "quiet"}))
        .await;
    assert_eq!(
        a.recv().await["type"],
        "presence",
        "snapshot without ack (SUB-10)"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fan_out_with_and_without_sender_metadata_and_no_echo() {
    let srv = start_server().await;
    let mut publisher = Client::connect(
        &srv,
        json!({"sub": "dana", "peerMetadata": {"tier": "agent"}}),
    )
    .await
    .0;
    let mut plain = Client::peer(&srv, "eli").await;
    let mut opted = Client::peer(&srv, "fay").await;
    plain.subscribe("news").await;
    opted
        .send(json!({"type": "subscribe", "channel": "news", "includeSenderMetadata": true, "requestId": "s"}))
        .await;
    assert_eq!(opted.recv().await["type"], "ack");
    opted.recv_type("presence").await;
    assert_eq!(plain.recv().await["joined"][0]["peerId"], "fay");
    publisher.subscribe("news").await;
    assert_eq!(plain.recv().await["joined"][0]["peerId"], "dana");
    assert_eq!(opted.recv().await["joined"][0]["peerId"], "dana");

    let data = json!({"body": "hi", "from": "mallory", "big": 12345678901234567890u64});
    publisher
        .send_text(r#"{"type":"publish","channel":"news","data":{"body":"hi","from":"mallory","big":12345678901234567890},"requestId":"p1"}"#)
        .await;
    assert_eq!(
        publisher.recv().await,
        json!({"type": "ack", "requestId": "p1"})
    );
    let m = plain.recv().await;
    assert_eq!(
        m,
        json!({"type": "message", "channel": "news", "from": "dana", "data": data})
    );
    assert!(m.get("fromMetadata").is_none());
    let m = opted.recv().await;
    assert_eq!(m["fromMetadata"], json!({"tier": "agent"}));
    assert_eq!(m["from"], "dana", "from is server-stamped (MSG-1)");
    publisher.expect_silence(150).await;

    // data null is relayed as null; a publisher need not be subscribed (PUB-3).
    let mut outsider = Client::peer(&srv, "ghost").await;
    outsider
        .send(json!({"type": "publish", "channel": "news", "data": null}))
        .await;
    let m = plain.recv().await;
    assert!(m.as_object().unwrap().contains_key("data") && m["data"].is_null());
    assert_eq!(opted.recv().await["from"], "ghost");
    assert_eq!(publisher.recv().await["from"], "ghost");
    outsider.expect_silence(100).await;

    // Another connection of the publisher's own peerId does receive it (PUB-5).
    let mut dana2 = Client::peer(&srv, "dana").await;
    dana2.subscribe("news").await;
    publisher
        .send(json!({"type": "publish", "channel": "news", "data": 2}))
        .await;
    assert_eq!(dana2.recv().await["data"], 2);
    publisher.expect_silence(100).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn directs_carry_metadata_and_reach_every_tab() {
    let srv = start_server().await;
    let mut a = Client::connect(&srv, json!({"sub": "alice", "peerMetadata": {"n": 1}}))
        .await
        .0;
    let mut b1 = Client::peer(&srv, "bob").await;
    let mut b2 = Client::peer(&srv, "bob").await;
    a.send(json!({"type": "send", "to": "bob", "data": {"x": 1}, "requestId": "d1"}))
        .await;
    assert_eq!(a.recv().await, json!({"type": "ack", "requestId": "d1"}));
    let want =
        json!({"type": "direct", "from": "alice", "data": {"x": 1}, "fromMetadata": {"n": 1}});
    assert_eq!(b1.recv().await, want);
    assert_eq!(b2.recv().await, want);

    // Sender without peerMetadata: no fromMetadata.
    b1.send(json!({"type": "send", "to": "alice", "data": "yo"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "direct", "from": "bob", "data": "yo"})
    );
    b1.expect_silence(100).await;

    // Self-send reaches the other tab only; alone → peer_not_found (SEND-5).
    b1.send(json!({"type": "send", "to": "bob", "data": 1, "requestId": "self"}))
        .await;
    assert_eq!(b1.recv().await["type"], "ack");
    assert_eq!(b2.recv().await["from"], "bob");
    a.expect_error(
        json!({"type": "send", "to": "alice", "data": 1}),
        "me",
        "peer_not_found",
    )
    .await;
    a.expect_error(
        json!({"type": "send", "to": "nobody", "data": 1}),
        "nf",
        "peer_not_found",
    )
    .await;
    // Without requestId the error is uncorrelated (FRAME-5).
    a.send(json!({"type": "send", "to": "nobody", "data": 1}))
        .await;
    let e = a.recv().await;
    assert_eq!(e["code"], "peer_not_found");
    assert!(e.get("requestId").is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn ping_pong_and_request_id_rules() {
    let srv = start_server().await;
    let mut a = Client::peer(&srv, "a").await;
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong"}));
    a.send(json!({"type": "ping", "requestId": "p"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "requestId": "p"}));
    // Publish without requestId: no ack (FRAME-5).
    a.send(json!({"type": "publish", "channel": "c", "data": 1}))
        .await;
    a.expect_silence(150).await;
    // Unknown members are ignored (FRAME-3).
    a.send(json!({"type": "ping", "extra": {"deep": [1]}, "requestId": "q"}))
        .await;
    assert_eq!(a.recv().await["requestId"], "q");
    srv.shutdown().await;
}

async fn expect_uncorrelated(c: &mut Client, code: &str) {
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some(code)),
        "{e}"
    );
    assert!(e.get("requestId").is_none(), "{e}");
}

#[tokio::test]
async fn every_error_code_the_clean_server_emits() {
    let srv = start_server().await;
    let (key, secret, pk) = {
        let (_, k, s, p) = new_app(
            &srv,
            json!({"plan": {"maxMessagesPerPeriod": 1, "overagesAllowed": false}}),
        )
        .await;
        (k, s, p)
    };
    let mut a = Client::peer(&srv, "a").await;

    // malformed_message: not JSON, not an object, no type, bad requestId, binary (ERR-1).
    a.send_text("not json").await;
    expect_uncorrelated(&mut a, "malformed_message").await;
    a.send_text("[1,2]").await;
    expect_uncorrelated(&mut a, "malformed_message").await;
    a.send_text(r#"{"requestId":"m1"}"#).await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["requestId"].as_str()),
        (Some("malformed_message"), Some("m1"))
    );
    a.send_text(&json!({"type": "ping", "requestId": "r".repeat(129)}).to_string())
        .await;
    expect_uncorrelated(&mut a, "malformed_message").await;
    a.send_binary(vec![1, 2, 3]).await;
    expect_uncorrelated(&mut a, "malformed_message").await;
    let deep = format!(
        r#"{{"type":"publish","channel":"c","data":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    a.send_text(&deep).await;
    expect_uncorrelated(&mut a, "malformed_message").await;

    // unknown_type (ERR-2), including server-side type names.
    a.expect_error(json!({"type": "shout"}), "u1", "unknown_type")
        .await;
    a.expect_error(json!({"type": "welcome"}), "u2", "unknown_type")
        .await;

    // invalid_channel (ERR-3), invalid_peer_id (ERR-4), missing_data (ERR-9).
    a.expect_error(
        json!({"type": "subscribe", "channel": ""}),
        "c1",
        "invalid_channel",
    )
    .await;
    a.expect_error(
        json!({"type": "subscribe", "channel": "x".repeat(257)}),
        "c2",
        "invalid_channel",
    )
    .await;
    a.expect_error(
        json!({"type": "publish", "channel": "a\u{1}b", "data": 1}),
        "c3",
        "invalid_channel",
    )
    .await;
    a.expect_error(
        json!({"type": "unsubscribe", "channel": 5}),
        "c4",
        "invalid_channel",
    )
    .await;
    a.expect_error(
        json!({"type": "send", "to": "é", "data": 1}),
        "p1",
        "invalid_peer_id",
    )
    .await;
    a.expect_error(
        json!({"type": "send", "to": "p".repeat(129), "data": 1}),
        "p2",
        "invalid_peer_id",
    )
    .await;
    a.expect_error(
        json!({"type": "publish", "channel": "c"}),
        "d1",
        "missing_data",
    )
    .await;
    a.expect_error(json!({"type": "send", "to": "b"}), "d2", "missing_data")
        .await;

    // channel_reserved (ERR-6), before authorization.
    a.expect_error(
        json!({"type": "subscribe", "channel": "_System/x"}),
        "r1",
        "channel_reserved",
    )
    .await;
    a.expect_error(
        json!({"type": "publish", "channel": "_metered/x", "data": 1}),
        "r2",
        "channel_reserved",
    )
    .await;

    // channel_not_authorized (ERR-5): token channels ∩ key patterns.
    let mut scoped = Client::connect(&srv, json!({"sub": "s", "channels": ["acme/*"]}))
        .await
        .0;
    scoped.subscribe("acme/room").await;
    scoped
        .expect_error(
            json!({"type": "subscribe", "channel": "other/room"}),
            "n1",
            "channel_not_authorized",
        )
        .await;
    scoped
        .expect_error(
            json!({"type": "publish", "channel": "acme/a/b", "data": 1}),
            "n2",
            "channel_not_authorized",
        )
        .await;

    // action_not_permitted (ERR-10): publishable keys lack send (AUTH-6); token permissions.
    let url = format!(
        "{}?key={}",
        srv.target().ws_url,
        srv.target().publishable_key.as_deref().unwrap()
    );
    let mut p = Client::open(&url).await;
    p.recv().await;
    p.expect_error(
        json!({"type": "send", "to": "a", "data": 1}),
        "x1",
        "action_not_permitted",
    )
    .await;
    let mut ro = Client::connect(&srv, json!({"sub": "ro", "permissions": ["subscribe"]}))
        .await
        .0;
    ro.expect_error(
        json!({"type": "publish", "channel": "c", "data": 1}),
        "x2",
        "action_not_permitted",
    )
    .await;
    let mut none = Client::connect(&srv, json!({"sub": "none", "permissions": []}))
        .await
        .0;
    none.expect_error(
        json!({"type": "subscribe", "channel": "c"}),
        "x3",
        "action_not_permitted",
    )
    .await;

    // channel_limit_exceeded (ERR-7): 100 subscriptions, the 101st fails, re-subscribe is fine.
    let mut many = Client::peer(&srv, "many").await;
    for i in 0..100 {
        many.send(json!({"type": "subscribe", "channel": format!("ch-{i}")}))
            .await;
        assert_eq!(many.recv().await["type"], "presence");
    }
    many.expect_error(
        json!({"type": "subscribe", "channel": "ch-100"}),
        "l1",
        "channel_limit_exceeded",
    )
    .await;
    many.subscribe("ch-7").await;
    many.expect_error(
        json!({"type": "subscribe", "channel": "ch-*"}),
        "l2",
        "channel_limit_exceeded",
    )
    .await;

    // peer_not_found (ERR-8).
    a.expect_error(
        json!({"type": "send", "to": "nobody", "data": 1}),
        "f1",
        "peer_not_found",
    )
    .await;

    // over_message_quota (ERR-11): a fresh app with a 1-message plan.
    let mut q = Client::open(&url_for(&srv, &key, &secret, json!({"sub": "q"}))).await;
    q.recv().await;
    q.send(json!({"type": "publish", "channel": "c", "data": 1, "requestId": "ok"}))
        .await;
    assert_eq!(q.recv().await["type"], "ack");
    q.expect_error(
        json!({"type": "publish", "channel": "c", "data": 1}),
        "o1",
        "over_message_quota",
    )
    .await;
    q.expect_error(
        json!({"type": "send", "to": "q", "data": 1}),
        "o2",
        "over_message_quota",
    )
    .await;
    q.send(json!({"type": "publish", "channel": "c", "data": 1}))
        .await;
    expect_uncorrelated(&mut q, "over_message_quota").await;
    // The connection stays open and still receives (QUOTA-5).
    let mut qp = Client::open(&format!("{}?key={pk}", srv.target().ws_url)).await;
    qp.recv().await;
    q.subscribe("room").await;
    qp.subscribe("room").await;
    assert_eq!(q.recv().await["type"], "presence");
    srv.shutdown().await;
}

#[tokio::test]
async fn wildcard_subscriptions_deliver_concrete_channels_once() {
    let srv = start_server().await;
    let mut logger = Client::connect(&srv, json!({"sub": "logger", "channels": ["devices/**"]}))
        .await
        .0;
    logger
        .send(json!({"type": "subscribe", "channel": "devices/*/events", "requestId": "w"}))
        .await;
    assert_eq!(logger.recv().await["type"], "ack");
    assert_eq!(
        logger.recv().await,
        json!({"type": "presence", "channel": "devices/*/events", "joined": [], "left": []})
    );
    logger.subscribe("devices/d1/events").await;
    let mut dev = Client::connect(&srv, json!({"sub": "d1", "peerMetadata": {"k": 1}}))
        .await
        .0;
    dev.send(json!({"type": "publish", "channel": "devices/d1/events", "data": 1}))
        .await;
    let m = logger.recv().await;
    assert_eq!(
        (m["channel"].as_str(), m["data"].as_i64()),
        (Some("devices/d1/events"), Some(1))
    );
    dev.send(json!({"type": "publish", "channel": "devices/d2/events", "data": 2}))
        .await;
    assert_eq!(logger.recv().await["channel"], "devices/d2/events");
    dev.send(json!({"type": "publish", "channel": "devices/d2/x/events", "data": 3}))
        .await;
    logger.expect_silence(150).await;
    // The wildcard subscriber is never announced.
    let mut other = Client::peer(&srv, "o").await;
    let (_, snap) = other.subscribe("devices/d1/events").await;
    assert_eq!(
        snap["joined"],
        json!([{"peerId": "logger"}]),
        "only the exact subscription counts"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let srv = start_server().await;
    let (k, s) = srv.target().other_app.clone().unwrap();
    let mut other = Client::open(&url_for(&srv, &k, &s, json!({"sub": "bob"}))).await;
    other.recv().await;
    other.subscribe("room").await;
    let mut a = Client::peer(&srv, "alice").await;
    a.subscribe("room").await;
    a.send(json!({"type": "publish", "channel": "room", "data": 1}))
        .await;
    a.expect_error(
        json!({"type": "send", "to": "bob", "data": 1}),
        "x",
        "peer_not_found",
    )
    .await;
    other.expect_silence(200).await;
    srv.shutdown().await;
}

#[allow(dead_code)]
fn _unused(_: Value) {}
