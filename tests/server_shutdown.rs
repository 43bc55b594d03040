//! Graceful shutdown (SPEC §18) and the injected delivery faults (`Inject`), whose counts
//! must match what a receiver observes exactly.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use stampede::embedded::{Inject, Options};

#[tokio::test]
async fn graceful_shutdown_sends_going_away_then_1001() {
    let srv = start_server().await;
    let mut a = Client::peer(&srv, "a").await;
    let mut b = Client::peer(&srv, "b").await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    a.recv().await;
    let addr = srv.addr();
    let down = tokio::spawn(srv.shutdown());
    for c in [&mut a, &mut b] {
        let (closed, frames) = c.closed_within(Duration::from_secs(3)).await;
        assert_eq!(closed, Closed::Code(1001));
        assert_eq!(
            frames.last(),
            Some(&json!({"type": "going_away", "retryAfterMs": 1000})),
            "going_away is the last frame before 1001: {frames:?}"
        );
        assert_eq!(
            frames.iter().filter(|f| f["type"] == "going_away").count(),
            1
        );
    }
    tokio::time::timeout(Duration::from_secs(6), down)
        .await
        .expect("shutdown is bounded")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn during_the_drain_new_work_gets_503() {
    let srv = start_server().await;
    // A client that never reads keeps the drain going for the close-handshake timeout.
    let _stuck = Client::peer(&srv, "stuck").await;
    let url = token_url(&srv, json!({"sub": "late"}));
    let auth = dev_auth(&srv);
    let srv = std::sync::Arc::new(tokio::sync::Mutex::new(Some(srv)));
    let s = srv.lock().await.take().unwrap();
    let target_addr = s.addr();
    let probe = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Same port, fresh connections: REST and upgrades are refused with 503 (SHUT-4).
        let headers = [("authorization".to_owned(), format!("Bearer {auth}"))];
        let status = stampede::transport::Connector::default()
            .http(
                &format!("http://{target_addr}/v1/usage"),
                "GET",
                &headers,
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .status;
        let ws = match Client::try_open(&url).await {
            Err(stampede::transport::ConnectError::Http { status, .. }) => status,
            other => panic!("expected 503, got {:?}", other.map(|_| "an upgrade")),
        };
        (status, ws)
    };
    let (_, (rest_status, ws_status)) = tokio::join!(s.shutdown(), probe);
    assert_eq!((rest_status, ws_status), (503, 503));
}

#[tokio::test]
async fn injected_drops_dups_and_swaps_are_counted_exactly() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        rate: Some((0, 0)),
        inject: Inject {
            drop_rate: 0.1,
            dup_rate: 0.05,
            reorder_rate: 0.05,
            seed: 42,
            ..Inject::default()
        },
        ..Options::default()
    })
    .await;
    let mut rx = Client::peer(&srv, "rx").await;
    rx.subscribe("inj").await;
    let mut tx = Client::peer(&srv, "tx").await;
    const N: u64 = 2000;
    let sender = async {
        for seq in 0..N {
            tx.send(json!({"type": "publish", "channel": "inj", "data": seq}))
                .await;
        }
        tx
    };
    let receiver = async {
        let mut got = Vec::new();
        loop {
            match rx.next_within(Duration::from_millis(800)).await {
                Ok(Some(m)) if m["type"] == "message" => got.push(m["data"].as_u64().unwrap()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(c) => panic!("receiver closed: {c:?}"),
            }
        }
        got
    };
    let (_tx, got) = tokio::join!(sender, receiver);
    let distinct: HashSet<u64> = got.iter().copied().collect();
    let missing = N - distinct.len() as u64;
    let dups = got.len() as u64 - distinct.len() as u64;
    let mut max = None;
    let mut reordered = 0;
    for &seq in &got {
        match max {
            Some(m) if seq < m => reordered += 1,
            _ => max = Some(seq.max(max.unwrap_or(0))),
        }
    }
    let c = srv.injected();
    assert_eq!(
        (missing, dups, reordered),
        (c.dropped, c.duplicated, c.reordered),
        "{c:?}"
    );
    assert!(
        c.dropped > 120 && c.duplicated > 40 && c.reordered > 20,
        "{c:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn injected_delay_preserves_order() {
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        inject: Inject {
            fanout_delay_ms: 300,
            ..Inject::default()
        },
        ..Options::default()
    })
    .await;
    let mut rx = Client::peer(&srv, "rx").await;
    rx.subscribe("d").await;
    let mut tx = Client::peer(&srv, "tx").await;
    let t0 = tokio::time::Instant::now();
    for seq in 0..20 {
        tx.send(json!({"type": "publish", "channel": "d", "data": seq}))
            .await;
    }
    let first = rx.recv().await;
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "delayed: {:?}",
        t0.elapsed()
    );
    assert_eq!(first["data"], 0);
    for seq in 1..20 {
        assert_eq!(rx.recv().await["data"], seq);
    }
    assert_eq!(srv.injected(), Default::default());
    srv.shutdown().await;
}
