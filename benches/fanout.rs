//! Fan-out throughput of `stampede serve` under saturation, and its memory afterwards.
//!
//! Starts `target/release/stampede serve` as a child, subscribes S connections to one
//! channel, publishes M messages (~110 B of data) from one more connection as fast as it can
//! send, and measures how long until every subscriber received every message. Rerun with:
//!
//! ```text
//! cargo build --release && cargo bench --bench fanout -- [SUBSCRIBERS] [MESSAGES]
//! ```
//! Defaults: 500 subscribers, 4000 messages (2 M deliveries). Server and clients share the
//! machine's cores, so this is a floor for the server alone.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stampede::transport::{Connector, Dial};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod common;
use common::Server;

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let subs = nums.first().copied().unwrap_or(500);
    let msgs = nums.get(1).copied().unwrap_or(4000);
    let server = Server::start(&[]);
    let ws_url = server.ws_url.clone();
    let url = move |sub: &str| format!("{ws_url}?token={}", common::dev_token(sub));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, rss_after) = rt.block_on(async {
        let cfg = WebSocketConfig::default().read_buffer_size(16 * 1024);
        let mut readers = Vec::with_capacity(subs);
        for i in 0..subs {
            let u = url(&format!("s{i}"));
            let mut ws = Connector::default()
                .dial(Dial::new(&u, Duration::from_secs(20)), cfg)
                .await
                .expect("connect")
                .ws;
            ws.next().await.expect("welcome").expect("welcome");
            ws.send(Message::text(r#"{"type":"subscribe","channel":"fan","requestId":"s"}"#)).await.unwrap();
            readers.push(ws);
        }
        // Let the presence joins settle before timing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tasks: Vec<_> = readers
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    let mut n = 0;
                    while n < msgs {
                        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                            // `{"type":"message"…`: byte 9 tells message frames apart cheaply.
                            Ok(Some(Ok(Message::Text(t)))) if t.as_bytes().get(9) == Some(&b'm') => n += 1,
                            Ok(Some(Ok(_))) => {}
                            other => panic!("subscriber lost after {n} messages: {other:?}"),
                        }
                    }
                    ws
                })
            })
            .collect();
        let u = url("publisher");
        let mut tx = Connector::default()
            .dial(Dial::new(&u, Duration::from_secs(20)), WebSocketConfig::default())
            .await
            .expect("connect")
            .ws;
        tx.next().await.expect("welcome").expect("welcome");
        let started = Instant::now();
        for seq in 0..msgs {
            let frame = json!({"type": "publish", "channel": "fan", "data": {"seq": seq, "pad": "abcdefghijklmnopqrstuvwxyz0123"}});
            tx.send(Message::text(frame.to_string())).await.unwrap();
        }
        let mut held = Vec::new();
        for t in tasks {
            held.push(t.await.expect("subscriber"));
        }
        (started.elapsed(), server.status_kb("VmRSS:") as f64 / 1024.0)
    });
    let deliveries = (subs * msgs) as f64;
    println!(
        "fanout: {subs} subscribers x {msgs} messages = {deliveries:.0} deliveries in {:.2} s = {:.0} deliveries/s; server VmRSS afterwards {rss_after:.1} MB",
        elapsed.as_secs_f64(),
        deliveries / elapsed.as_secs_f64()
    );
    drop(server);
}
