//! Ordering (SPEC §11), the slow-consumer policy, TURN injection and a few fault switches.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use stampede::embedded::{EmbeddedServer, Options};
use stampede::server::Config;

#[tokio::test]
async fn messages_and_directs_from_one_sender_arrive_in_order() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        rate: Some((0, 0)),
        ..Options::default()
    })
    .await;
    let mut rx = Client::peer(&srv, "rx").await;
    rx.subscribe("o").await;
    let mut tx = Client::peer(&srv, "tx").await;
    // ORD-7: tx's join reaches rx before tx's first direct.
    tx.subscribe("o").await;
    tx.send(json!({"type": "send", "to": "rx", "data": "hello"}))
        .await;
    assert_eq!(rx.recv().await["joined"], json!([{"peerId": "tx"}]));
    assert_eq!(rx.recv().await["type"], "direct");
    // ORD-5: a mixture of 500 messages and directs keeps the sender's order.
    for i in 0..500 {
        if i % 3 == 0 {
            tx.send(json!({"type": "send", "to": "rx", "data": i}))
                .await;
        } else {
            tx.send(json!({"type": "publish", "channel": "o", "data": i}))
                .await;
        }
    }
    for i in 0..500 {
        let f = rx.recv().await;
        assert_eq!(f["data"], i, "{f}");
        assert_eq!(f["type"], if i % 3 == 0 { "direct" } else { "message" });
    }
    // UNSUB-5: nothing after the unsubscribe ack.
    rx.send(json!({"type": "unsubscribe", "channel": "o", "requestId": "u"}))
        .await;
    assert_eq!(rx.recv().await["type"], "ack");
    tx.send(json!({"type": "publish", "channel": "o", "data": "late"}))
        .await;
    rx.expect_silence(150).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_counted_not_silently_dropped() {
    let mut cfg = Config::dev();
    cfg.limits.ip_connect_limit = 0;
    cfg.limits.rate = None;
    cfg.limits.queue.frames = 64;
    let srv = EmbeddedServer::with_config(cfg).await.unwrap();
    let mut slow = Client::peer(&srv, "slow").await;
    slow.subscribe("flood").await;
    let mut ok = Client::peer(&srv, "ok").await;
    ok.subscribe("flood").await;
    slow.recv().await;
    let mut tx = Client::peer(&srv, "tx").await;
    let payload = "p".repeat(16_000);
    // `slow` stops reading; socket buffers fill, then its queue; `ok` keeps reading.
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 1500 {
            if ok.recv().await["type"] == "message" {
                n += 1;
            }
        }
        ok
    });
    for i in 0..1500 {
        tx.send(json!({"type": "publish", "channel": "flood", "data": {"i": i, "p": payload}}))
            .await;
    }
    let _ok = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("ok got all")
        .unwrap();
    assert_eq!(srv.slow_consumer_closes(), 1);
    // The slow connection ends: 1013 if the close frame still fits, else a dropped TCP.
    let mut seen = 0;
    let end = loop {
        match slow.next_within(Duration::from_secs(3)).await {
            Ok(Some(_)) => seen += 1,
            Ok(None) => panic!("slow consumer still open after {seen} frames"),
            Err(c) => break c,
        }
    };
    assert!(
        matches!(end, Closed::Code(1013) | Closed::Abnormal),
        "{end:?}"
    );
    assert!(seen < 1500, "it did not get everything: {seen}");
    srv.shutdown().await;
}

#[tokio::test]
async fn turn_servers_are_injected_unless_the_token_has_its_own() {
    let mut cfg = Config::dev();
    cfg.limits.ip_connect_limit = 0;
    let servers = json!([{"urls": "turn:relay.example:3478", "username": "u", "credential": "c"}]);
    cfg.turn_ice_servers = Some(servers.clone());
    cfg.apps[0].secret_keys[0].auto_inject_turn = true;
    let srv = EmbeddedServer::with_config(cfg).await.unwrap();
    let (_, w) = Client::connect(&srv, json!({"sub": "a", "metadata": {"x": 1}})).await;
    assert_eq!(w["metadata"], json!({"x": 1, "iceServers": servers}));
    let own = json!([{"urls": "stun:own.example"}]);
    let (_, w) = Client::connect(&srv, json!({"sub": "b", "metadata": {"iceServers": own}})).await;
    assert_eq!(w["metadata"]["iceServers"], own);
    let mut p = Client::open(&format!("{}?key=pk_live_dev", srv.target().ws_url)).await;
    assert_eq!(p.recv().await["metadata"]["iceServers"], servers);
    srv.shutdown().await;
}

/// A few fault switches, end to end (the conformance suite proves all of them).
#[tokio::test]
async fn fault_switches_break_what_they_name() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        faults: vec![
            "echo-publisher".into(),
            "ack-missing-publish".into(),
            "presence-null-left".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut a = Client::peer(&srv, "a").await;
    a.subscribe("f").await;
    let mut b = Client::peer(&srv, "b").await;
    b.subscribe("f").await;
    let join = a.recv().await;
    assert!(join["left"].is_null(), "presence-null-left: {join}");
    a.send(json!({"type": "publish", "channel": "f", "data": 1, "requestId": "p"}))
        .await;
    let echoed = a.recv().await;
    assert_eq!(
        (echoed["type"].as_str(), echoed["from"].as_str()),
        (Some("message"), Some("a")),
        "echo, no ack"
    );
    srv.shutdown().await;

    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        faults: vec!["no-going-away".into(), "rest-kick-wrong-code".into()],
        ..Options::default()
    })
    .await;
    let mut k = Client::peer(&srv, "k").await;
    rest(&srv, "DELETE", "/v1/peers/k", Some(&dev_auth(&srv)), None).await;
    k.expect_close(1000).await;
    let mut g = Client::peer(&srv, "g").await;
    let down = tokio::spawn(srv.shutdown());
    g.expect_close(1001).await;
    down.await.unwrap();
}

/// The CFG-10 switches: the codes a clean server never emits.
#[tokio::test]
async fn injected_backend_and_internal_errors() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        faults: vec![
            "backend-error".into(),
            "internal-error".into(),
            "rest-503".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut a = Client::peer(&srv, "a").await;
    a.expect_error(
        json!({"type": "subscribe", "channel": "c"}),
        "s",
        "internal_error",
    )
    .await;
    a.expect_error(
        json!({"type": "publish", "channel": "c", "data": 1}),
        "p",
        "backend_error",
    )
    .await;
    a.expect_error(
        json!({"type": "send", "to": "a", "data": 1}),
        "d",
        "backend_error",
    )
    .await;
    let (st, v) = rest(&srv, "GET", "/v1/usage", Some(&dev_auth(&srv)), None).await;
    assert_eq!((st, v["error"].as_str()), (503, Some("internal_error")));
    srv.shutdown().await;

    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        faults: vec!["close-1011".into()],
        ..Options::default()
    })
    .await;
    let mut a = Client::peer(&srv, "a").await;
    a.send(json!({"type": "publish", "channel": "c", "data": 1}))
        .await;
    a.expect_close(1011).await;
    srv.shutdown().await;
}

/// `long-channel-accepted` takes a 300-byte channel; a multi-byte character across byte 256
/// must not panic the session.
#[tokio::test]
async fn long_channel_fault_handles_multibyte_names() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        faults: vec!["long-channel-accepted".into()],
        ..Options::default()
    })
    .await;
    let mut a = Client::peer(&srv, "a").await;
    a.send(json!({"type": "subscribe", "channel": "l".repeat(300), "requestId": "long"}))
        .await;
    assert_eq!(a.recv().await, json!({"type": "ack", "requestId": "long"}));
    assert_eq!(a.recv().await["type"], "presence");
    let odd = format!("a{}", "é".repeat(150));
    a.send(json!({"type": "subscribe", "channel": odd, "requestId": "mb"}))
        .await;
    let r = a.recv().await;
    assert_eq!(r["requestId"], "mb", "{r}");
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv_type("pong").await["type"], "pong");
    srv.shutdown().await;
}
