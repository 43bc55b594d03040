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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stampede::transport::{Connector, Dial};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let subs = nums.first().copied().unwrap_or(500);
    let msgs = nums.get(1).copied().unwrap_or(4000);
    let bin = std::env::var("STAMPEDE_BIN").unwrap_or_else(|_| "target/release/stampede".into());
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ip-connect-limit",
            "0",
            "--rate",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (run `cargo build --release` first)"));
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ws_url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.trim().to_owned();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("server exited before printing its address");
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let url = move |sub: &str| {
        let claims = json!({"sub": sub, "exp": exp});
        let token = stampede::proto::auth::mint("sk_id_dev", b"sk_secret_dev", &claims);
        format!("{ws_url}?token={token}")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, rss_after) = rt.block_on(async move {
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
        (started.elapsed(), rss_mb(pid))
    });
    let deliveries = (subs * msgs) as f64;
    println!(
        "fanout: {subs} subscribers x {msgs} messages = {deliveries:.0} deliveries in {:.2} s = {:.0} deliveries/s; server VmRSS afterwards {rss_after:.1} MB",
        elapsed.as_secs_f64(),
        deliveries / elapsed.as_secs_f64()
    );
    // SAFETY: kill(2) with our own child's pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}
