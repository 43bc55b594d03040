//! Robustness: ≥ 10,000 random and malformed frames at one connection while another
//! connection keeps receiving its messages; the server never panics and the fuzzed
//! connection stays usable. Invalid UTF-8 and oversize go on their own connections.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use stampede::embedded::Options;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => char::from_u32(rng.random_range(0..0x20)).unwrap(),
            1 => ['*', '/', '\\', '"', 'é', '€', '\u{85}', '😀'][rng.random_range(0..8)],
            _ => rng.random_range(b'a'..=b'z') as char,
        })
        .collect()
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 3 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(random_string(rng, 20)),
        4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| (random_string(rng, 8), random_json(rng, depth + 1)))
                .collect(),
        ),
    }
}

fn random_value_for(rng: &mut StdRng, field: &str) -> Value {
    match rng.random_range(0..8) {
        0 => random_json(rng, 0),
        1 => json!(""),
        2 => json!("x".repeat(rng.random_range(100..400))),
        3 if field == "channel" => json!(
            ["_system/x", "_METERED/y", "room-*", "**", "a\\*", "watch"][rng.random_range(0..6)]
        ),
        3 if field == "to" => json!(format!("p-{}", rng.random_range(0..5))),
        _ => json!(random_string(rng, 30)),
    }
}

/// One random frame: mostly text (bad JSON, wrong types, odd members, huge strings, deep
/// nesting), some binary.
fn random_frame(rng: &mut StdRng) -> Message {
    match rng.random_range(0..100) {
        0..=4 => Message::Binary(Bytes::from(
            (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<u8>>(),
        )),
        5..=14 => Message::text(random_string(rng, 80)),
        15..=22 => {
            let valid =
                json!({"type": "publish", "channel": "c", "data": random_json(rng, 0)}).to_string();
            let cut = rng.random_range(0..valid.len());
            Message::text(valid.chars().take(cut).collect::<String>())
        }
        23..=27 => {
            let depth = rng.random_range(100..300);
            Message::text(format!(
                r#"{{"type":"publish","channel":"c","data":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ))
        }
        28 => Message::text(
            json!({"type": "publish", "channel": "big", "data": "z".repeat(50_000)}).to_string(),
        ),
        29..=33 => Message::text(random_json(rng, 0).to_string()),
        34..=36 => {
            Message::text(r#"{"type":"ping","type":"send","requestId":"dup","requestId":7}"#)
        }
        _ => {
            let types = [
                "subscribe",
                "unsubscribe",
                "publish",
                "send",
                "ping",
                "welcome",
                "Subscribe",
                "",
                "message",
            ];
            let mut obj = serde_json::Map::new();
            match rng.random_range(0..12) {
                0 => {
                    obj.insert("type".into(), random_json(rng, 2));
                }
                1 => {}
                _ => {
                    obj.insert(
                        "type".into(),
                        json!(types[rng.random_range(0..types.len())]),
                    );
                }
            }
            for field in [
                "channel",
                "to",
                "data",
                "requestId",
                "includeSenderMetadata",
            ] {
                if rng.random_bool(0.6) {
                    let v = match field {
                        "requestId" if rng.random_bool(0.7) => {
                            json!(format!("r{}", rng.random::<u32>()))
                        }
                        "includeSenderMetadata" => random_json(rng, 3),
                        "data" => random_json(rng, 0),
                        f => random_value_for(rng, f),
                    };
                    obj.insert(field.into(), v);
                }
            }
            Message::text(Value::Object(obj).to_string())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_frames_do_not_disturb_anyone() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info)
    }));
    let srv = start_with(Options {
        ip_connect_limit: Some(0),
        rate: Some((0, 0)),
        ..Options::default()
    })
    .await;
    let mut watcher = Client::peer(&srv, "watcher").await;
    watcher.subscribe("watch").await;
    let mut steady = Client::peer(&srv, "steady").await;
    let fuzzer = Client::peer(&srv, "fuzzer").await;
    let (mut sink, mut stream) = fuzzer.ws.split();

    // Reads everything the fuzzed connection gets; every frame must be a valid server frame.
    let reader = tokio::spawn(async move {
        let mut frames = 0usize;
        let allowed = ["ack", "error", "presence", "message", "direct", "pong"];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                    let ty = v["type"].as_str().expect("frames have a string type");
                    assert!(allowed.contains(&ty), "unexpected frame {v}");
                    if ty == "error" {
                        let code = v["code"].as_str().unwrap();
                        assert!(code != "internal_error" && code != "backend_error", "{v}");
                    }
                    frames += 1;
                    if ty == "pong" && v["requestId"] == "final" {
                        return frames;
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => panic!("fuzzed connection closed: {f:?}"),
                Ok(Some(Ok(_))) => {}
                other => panic!("fuzzed connection ended: {other:?}"),
            }
        }
    });

    let mut rng = StdRng::seed_from_u64(0x5eed);
    const FRAMES: usize = 10_000;
    let mut published = 0u64;
    for i in 0..FRAMES {
        sink.send(random_frame(&mut rng)).await.expect("fuzz send");
        if i % 50 == 0 {
            steady
                .send(json!({"type": "publish", "channel": "watch", "data": {"seq": published}}))
                .await;
            published += 1;
        }
    }
    sink.send(Message::text(r#"{"type":"ping","requestId":"final"}"#))
        .await
        .unwrap();
    let frames = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the fuzzed connection answers its final ping")
        .expect("reader");
    assert!(frames >= FRAMES / 2, "most frames got a response: {frames}");

    // The watcher got every steady message, in order, despite the noise.
    let mut next = 0u64;
    while next < published {
        let m = watcher.recv().await;
        if m["type"] == "message" && m["from"] == "steady" {
            assert_eq!(m["data"]["seq"], next, "in order, none lost");
            next += 1;
        }
    }

    // Invalid UTF-8 and oversize end only their own connections.
    let mut bad = Client::peer(&srv, "utf8").await;
    let frame = Frame::message(vec![b'"', 0xc3, 0x28, b'"'], OpCode::Data(Data::Text), true);
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    bad.expect_close(1007).await;
    let mut huge = Client::peer(&srv, "huge").await;
    huge.send_text(&"h".repeat(200_000)).await;
    huge.expect_close(1009).await;

    // And the server still serves new connections.
    let mut late = Client::peer(&srv, "late").await;
    late.send(json!({"type": "ping"})).await;
    assert_eq!(late.recv().await["type"], "pong");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server task panicked");
    srv.shutdown().await;
}
