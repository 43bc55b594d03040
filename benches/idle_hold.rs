//! Memory of `stampede serve` holding idle WebSocket connections.
//!
//! Starts `target/release/stampede serve` as a child process, opens N token connections
//! from this process (small tungstenite buffers), waits for every `welcome`, lets things
//! settle and reads the server's VmRSS from /proc. Rerun with:
//!
//! ```text
//! cargo build --release && cargo bench --bench idle_hold -- [N] [--subscribe]
//! ```
//! N defaults to 10000 (this process and the server each need N descriptors; the limit
//! here is 20000 per process). `--subscribe` also subscribes every connection to one of
//! 100 channels, to include hub state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stampede::transport::{Connector, Dial};
use tokio::sync::Semaphore;

mod common;
use common::Server;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let subscribe = args.iter().any(|a| a == "--subscribe");
    let server = Server::start(&[]);
    let ws_url = server.ws_url.clone();
    std::thread::sleep(Duration::from_millis(300));
    let before = server.status_kb("VmRSS:");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let held = rt.block_on(async {
        let cfg = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096)
            .max_write_buffer_size(16 * 1024);
        let gate = Arc::new(Semaphore::new(256));
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let gate = gate.clone();
            let claims = json!({"sub": format!("idle-{i}"), "exp": exp, "peerMetadata": {"i": i}});
            let token = stampede::proto::auth::mint("sk_id_dev", b"sk_secret_dev", &claims);
            let url = format!("{ws_url}?token={token}");
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let mut ws = Connector::default()
                    .dial(Dial::new(&url, Duration::from_secs(20)), cfg)
                    .await
                    .expect("connect")
                    .ws;
                let welcome = tokio::time::timeout(Duration::from_secs(20), ws.next()).await;
                assert!(
                    matches!(welcome, Ok(Some(Ok(Message::Text(_))))),
                    "no welcome"
                );
                if subscribe {
                    let frame =
                        json!({"type": "subscribe", "channel": format!("room-{}", i % 100)});
                    ws.send(Message::text(frame.to_string())).await.unwrap();
                }
                ws
            }));
        }
        let mut held = Vec::with_capacity(n);
        for t in tasks {
            held.push(t.await.expect("connection task"));
        }
        held
    });
    let connect_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let after = server.status_kb("VmRSS:");
    let hwm = server.status_kb("VmHWM:");
    println!(
        "idle_hold: {n} connections{} in {connect_s:.2} s; server VmRSS {:.1} MB before, {:.1} MB holding (peak {:.1} MB); {:.0} B per connection",
        if subscribe { " (each subscribed)" } else { "" },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
    );
    drop(server);
    drop(held);
}
