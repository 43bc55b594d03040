//! Connect rate and CPU per connect of the harness's transport, plain `ws://` next to
//! `wss://` with full and with resumed TLS handshakes.
//!
//! Starts two `target/release/stampede serve` children (one plain, one with
//! `--tls-self-signed`), then for each mode opens N connections from this process through
//! `stampede::transport` (256 in flight, the load engine's limit), each waiting for its
//! `welcome`, and closes them like a real client. Reported per mode: connects per second
//! (wall), this process's CPU per connect (getrusage), the server's CPU per connect
//! (/proc/PID/stat), and the client-side TLS handshake p50 from the transport's timings.
//! Modes: `ws` (plain), `wss full` (resumption off: every connect a full handshake),
//! `wss resumed` (a second round in which every connection resumes its own session from
//! the first round, as `--tls-resumption per-peer` reconnects do). Rerun with:
//!
//! ```text
//! cargo build --release && cargo bench --bench tls_connect -- [N] [ROUNDS]
//! ```
//! N defaults to 2000, ROUNDS (repetitions of the whole set, for a median) to 3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use stampede::transport::{Connector, Dial, ResumptionMode, TlsArgs, TlsSession, ws};
use tokio::sync::Semaphore;

mod common;
use common::Server;

fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(u.ru_utime) + us(u.ru_stime))
}

/// One measured round: N connects to `url`, each with its session (if any).
struct Round {
    connects_per_s: f64,
    client_cpu_us: f64,
    server_cpu_us: f64,
    tls_p50_us: u64,
    resumed: usize,
}

async fn round(
    connector: &Connector,
    server: &Server,
    urls: &[String],
    sessions: &[Option<TlsSession>],
) -> Round {
    let gate = Arc::new(Semaphore::new(256));
    let (cpu0, scpu0, t0) = (self_cpu(), server.cpu(), Instant::now());
    let mut tasks = Vec::with_capacity(urls.len());
    for (url, session) in urls.iter().zip(sessions) {
        let (gate, connector, url, session) = (
            gate.clone(),
            connector.clone(),
            url.clone(),
            session.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let dial = Dial {
                tls: session.as_ref(),
                ..Dial::new(&url, Duration::from_secs(30))
            };
            let mut c = connector
                .dial(dial, ws::peer_config(0, 1 << 20))
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let welcome = tokio::time::timeout(Duration::from_secs(30), c.ws.next()).await;
            assert!(matches!(welcome, Ok(Some(Ok(_)))), "no welcome");
            ws::close(&mut c.ws, 1000, |_| {}).await;
            c
        }));
    }
    let mut tls = Vec::with_capacity(urls.len());
    let mut resumed = 0;
    for t in tasks {
        let c = t.await.unwrap();
        if let Some(d) = c.phases.tls {
            tls.push(d.as_micros() as u64);
        }
        resumed += c.tls.is_some_and(|i| i.resumed) as usize;
    }
    let wall = t0.elapsed().as_secs_f64();
    let n = urls.len() as f64;
    tls.sort_unstable();
    Round {
        connects_per_s: n / wall,
        client_cpu_us: (self_cpu() - cpu0).as_micros() as f64 / n,
        server_cpu_us: (server.cpu() - scpu0).as_micros() as f64 / n,
        tls_p50_us: tls.get(tls.len() / 2).copied().unwrap_or(0),
        resumed,
    }
}

fn urls(base: &str, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{base}?token={}", common::dev_token(&format!("{tag}-{i}"))))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(2000);
    let rounds = args.get(1).copied().unwrap_or(3).max(1);
    let plain = Server::start(&[]);
    let secure = Server::start(&["--tls-self-signed"]);
    let pem = std::fs::read_to_string(secure.cacert.as_ref().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plain_c = Connector::default();
    let per_peer = Connector::new(
        &TlsArgs {
            tls_resumption: ResumptionMode::PerPeer,
            ..Default::default()
        },
        true,
        Some(&pem),
    )
    .unwrap();
    let mut table: Vec<(&str, Vec<Round>)> = vec![
        ("ws", vec![]),
        ("wss full", vec![]),
        ("wss resumed", vec![]),
    ];
    rt.block_on(async {
        for r in 0..rounds {
            let u = urls(&plain.ws_url, n, &format!("p{r}"));
            let none = vec![None; n];
            table[0].1.push(round(&plain_c, &plain, &u, &none).await);
            // Fresh per-peer sessions: the first round is all full handshakes, the second
            // resumes each connection's own session.
            let sessions: Vec<Option<TlsSession>> = (0..n).map(|_| per_peer.session()).collect();
            let u = urls(&secure.ws_url, n, &format!("s{r}"));
            table[1]
                .1
                .push(round(&per_peer, &secure, &u, &sessions).await);
            table[2]
                .1
                .push(round(&per_peer, &secure, &u, &sessions).await);
        }
    });
    println!(
        "tls_connect: {n} connects per round, median of {rounds} rounds (each connect: TCP, TLS, upgrade, welcome, close)"
    );
    println!(
        "{:<12} {:>12} {:>16} {:>16} {:>14} {:>9}",
        "mode", "connects/s", "client CPU/conn", "server CPU/conn", "TLS p50", "resumed"
    );
    for (mode, rs) in &table {
        println!(
            "{:<12} {:>12.0} {:>13.0} µs {:>13.0} µs {:>11} µs {:>9}",
            mode,
            median(rs.iter().map(|r| r.connects_per_s).collect()),
            median(rs.iter().map(|r| r.client_cpu_us).collect()),
            median(rs.iter().map(|r| r.server_cpu_us).collect()),
            median(rs.iter().map(|r| r.tls_p50_us as f64).collect()),
            rs.iter().map(|r| r.resumed).min().unwrap_or(0),
        );
    }
}
