//! The bare receiver: the same connections and publishes as the workload, through the
//! same transport (tokio multi-thread, tungstenite, our buffer sizes), but the receive
//! side only counts frames. Its CPU per delivery is the floor for our I/O model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use stampede::transport::{Connector, Dial, ws};
use tokio_tungstenite::tungstenite::Message;

use super::Workload;
use super::common::dev_token;

/// Runs `w` against `url`; prints `received N messages, M frames` and returns whether
/// every expected copy arrived.
pub fn run(w: &Workload, url: &str) -> bool {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(drive(w, url))
}

async fn drive(w: &Workload, url: &str) -> bool {
    let messages = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let connector = Connector::default();
    let t0 = Instant::now();
    let ramp = Duration::from_secs(1);
    let mut tasks = Vec::new();
    for i in 0..w.peers {
        let url = format!("{url}?token={}", dev_token(&format!("bare-{i}")));
        let connect_at = t0 + ramp * i / w.peers;
        // Constant arrival with a random phase per peer, as the engine does.
        let phase = Duration::from_secs_f64(phase(i) / w.rate);
        let first = t0 + Duration::from_secs_f64(w.start_s) + phase;
        let room = i / w.room_size;
        let (connector, messages, frames) = (connector.clone(), messages.clone(), frames.clone());
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(connect_at.into()).await;
            let dial = Dial::new(&url, Duration::from_secs(30));
            let mut c = connector
                .dial(dial, ws::peer_config(0, 1 << 20))
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let sub = format!(
                r#"{{"type":"subscribe","channel":"bench/room-{room}","requestId":"s"}}"#
            );
            c.ws.send(Message::text(sub)).await.expect("subscribe");
            let pad = "x".repeat(w.size.saturating_sub(2));
            let gap = Duration::from_secs_f64(1.0 / w.rate);
            let end = t0 + Duration::from_secs_f64(w.duration_s + w.grace_s);
            let mut next = first;
            let mut sent = 0;
            loop {
                tokio::select! {
                    frame = c.ws.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            frames.fetch_add(1, Ordering::Relaxed);
                            if t.as_str().starts_with(r#"{"type":"message""#) {
                                messages.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(next.into()), if sent < w.publishes() => {
                        sent += 1;
                        next += gap;
                        let p = format!(
                            r#"{{"type":"publish","channel":"bench/room-{room}","requestId":"p{sent}","data":"{pad}"}}"#
                        );
                        if c.ws.send(Message::text(p)).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(end.into()) => break,
                }
            }
            ws::close(&mut c.ws, 1000, |_| {}).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let got = messages.load(Ordering::Relaxed);
    let expected = w.expected_deliveries();
    println!(
        "bare receiver: received {got} of {expected} messages ({} frames)",
        frames.load(Ordering::Relaxed)
    );
    got == expected
}

/// A phase in [0, 1) per peer, deterministic (a multiplicative hash).
fn phase(i: u32) -> f64 {
    (u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}
