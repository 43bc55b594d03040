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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use stampede::transport::{Connector, Dial};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let subscribe = args.iter().any(|a| a == "--subscribe");
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
        .stderr(Stdio::inherit())
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
    // Keep draining the banner so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb(pid, "VmRSS:");

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
    let after = rss_kb(pid, "VmRSS:");
    let hwm = rss_kb(pid, "VmHWM:");
    println!(
        "idle_hold: {n} connections{} in {connect_s:.2} s; server VmRSS {:.1} MB before, {:.1} MB holding (peak {:.1} MB); {:.0} B per connection",
        if subscribe { " (each subscribed)" } else { "" },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
    );
    // SAFETY: kill(2) with our own child's pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    drop(held);
    let _ = child.wait();
}
