//! A scripted server that misbehaves in one way per [`Mode`], for proving that `stampede
//! run` and `stampede conform` fail (never pass), name the reason, and stay within time
//! and memory whatever a server sends. It listens on 127.0.0.1 only; every connection
//! task ends with the test's runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// One way of misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts TCP, never answers the upgrade.
    NoUpgrade,
    /// Answers the upgrade with HTTP 200.
    Http200,
    /// Upgrades (101), then says nothing.
    SilentAfter101,
    /// Sends `welcome`, then nothing (no acks, no deliveries).
    WelcomeThenSilence,
    /// Acks subscribes (with an empty snapshot) and nothing else.
    AcksSubscribesOnly,
    /// After `welcome`, a frame header claiming 2^62 bytes.
    HugeFrameHeader,
    /// After `welcome`, a 200 MB text message in 64 KiB fragments.
    HugeFragmented,
    /// After `welcome`, random bytes as fast as the client reads them.
    GarbageFlood,
    /// After `welcome`, one byte of a frame header, then a TCP reset.
    RstMidHeader,
    /// The 101 response dripped one byte a second.
    Drip101,
    /// After `welcome`, control pings as fast as the client reads them.
    PingFlood,
    /// Every client frame answered with 10,000 foreign `message` frames.
    Amplify,
    /// Acks every request, never answers or acts on a close frame.
    IgnoreClose,
    /// A correct server (the reference server behind a proxy) for 4 s, then every
    /// connection is reset, and so is every later one.
    WorksThenDrops,
}

impl Mode {
    pub const ALL: [Mode; 14] = [
        Mode::NoUpgrade,
        Mode::Http200,
        Mode::SilentAfter101,
        Mode::WelcomeThenSilence,
        Mode::AcksSubscribesOnly,
        Mode::HugeFrameHeader,
        Mode::HugeFragmented,
        Mode::GarbageFlood,
        Mode::RstMidHeader,
        Mode::Drip101,
        Mode::PingFlood,
        Mode::Amplify,
        Mode::IgnoreClose,
        Mode::WorksThenDrops,
    ];
}

/// A running hostile server.
pub struct Hostile {
    pub ws_url: String,
    accept: JoinHandle<()>,
    /// The reference server behind [`Mode::WorksThenDrops`].
    _backend: Option<stampede::embedded::EmbeddedServer>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts a hostile server in `mode` on an ephemeral loopback port.
pub async fn start(mode: Mode) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = if mode == Mode::WorksThenDrops {
        Some(
            stampede::embedded::EmbeddedServer::start(stampede::embedded::Options {
                ip_connect_limit: Some(0),
                ..Default::default()
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let backend_addr = backend.as_ref().map(|b| b.addr());
    let started = Instant::now();
    let accept = tokio::spawn(async move {
        let backend_addr = Arc::new(backend_addr);
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let backend_addr = backend_addr.clone();
            tokio::spawn(async move {
                let _ = serve(mode, tcp, *backend_addr, started).await;
            });
        }
    });
    Hostile {
        ws_url: format!("ws://{addr}/v1"),
        accept,
        _backend: backend,
    }
}

type Res = std::io::Result<()>;

async fn serve(
    mode: Mode,
    mut tcp: TcpStream,
    backend: Option<SocketAddr>,
    started: Instant,
) -> Res {
    if mode == Mode::WorksThenDrops {
        return proxy(tcp, backend.unwrap(), started).await;
    }
    let key = read_upgrade(&mut tcp).await?;
    match mode {
        Mode::NoUpgrade => return discard(tcp).await,
        Mode::Http200 => {
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await?;
            return discard(tcp).await;
        }
        Mode::Drip101 => {
            for b in switching(&key).bytes() {
                tcp.write_all(&[b]).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            return discard(tcp).await;
        }
        _ => tcp.write_all(switching(&key).as_bytes()).await?,
    }
    if mode == Mode::SilentAfter101 {
        return discard(tcp).await;
    }
    tcp.write_all(&frame(0x1, true, welcome().as_bytes()))
        .await?;
    match mode {
        Mode::WelcomeThenSilence => discard(tcp).await,
        Mode::HugeFrameHeader => {
            let mut h = vec![0x81, 127];
            h.extend((1u64 << 62).to_be_bytes());
            tcp.write_all(&h).await?;
            discard(tcp).await
        }
        Mode::HugeFragmented => {
            let chunk = vec![b'a'; 64 * 1024];
            let n = 200 * 1024 * 1024 / chunk.len();
            for i in 0..n {
                let op = if i == 0 { 0x1 } else { 0x0 };
                tcp.write_all(&frame(op, i + 1 == n, &chunk)).await?;
            }
            discard(tcp).await
        }
        Mode::GarbageFlood => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            loop {
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                tcp.write_all(&buf).await?;
            }
        }
        Mode::RstMidHeader => {
            tcp.write_all(&[0x81]).await?;
            tcp.set_zero_linger()?;
            drop(tcp);
            Ok(())
        }
        Mode::PingFlood => {
            let ping = frame(0x9, true, b"");
            let burst: Vec<u8> = ping
                .iter()
                .copied()
                .cycle()
                .take(ping.len() * 512)
                .collect();
            loop {
                tcp.write_all(&burst).await?;
            }
        }
        Mode::AcksSubscribesOnly | Mode::Amplify | Mode::IgnoreClose => respond(mode, tcp).await,
        _ => unreachable!("handled above"),
    }
}

/// Reads client frames and answers per `mode`; never answers a close frame.
async fn respond(mode: Mode, tcp: TcpStream) -> Res {
    let (mut rd, mut wr) = tcp.into_split();
    let mut buf = Vec::new();
    loop {
        let Some((opcode, payload)) = read_frame(&mut rd, &mut buf).await? else {
            return Ok(());
        };
        if opcode != 0x1 {
            continue; // close, ping, pong: ignored on purpose
        }
        let text = String::from_utf8_lossy(&payload);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let rid = v.get("requestId").and_then(|r| r.as_str());
        match mode {
            Mode::AcksSubscribesOnly if v["type"] == "subscribe" => {
                if let Some(rid) = rid {
                    let ack = serde_json::json!({"type": "ack", "requestId": rid});
                    wr.write_all(&frame(0x1, true, ack.to_string().as_bytes()))
                        .await?;
                }
                let snap = serde_json::json!({"type": "presence", "channel": v["channel"], "joined": [], "left": []});
                wr.write_all(&frame(0x1, true, snap.to_string().as_bytes()))
                    .await?;
            }
            Mode::IgnoreClose => {
                if let Some(rid) = rid {
                    let ack = serde_json::json!({"type": "ack", "requestId": rid});
                    wr.write_all(&frame(0x1, true, ack.to_string().as_bytes()))
                        .await?;
                }
            }
            Mode::Amplify => {
                let m = frame(
                    0x1,
                    true,
                    br#"{"type":"message","channel":"elsewhere","from":"stranger","data":{"x":1}}"#,
                );
                let burst: Vec<u8> = m.iter().copied().cycle().take(m.len() * 1000).collect();
                for _ in 0..10 {
                    wr.write_all(&burst).await?;
                }
            }
            _ => {}
        }
    }
}

/// Reads one masked client frame (payloads up to 1 MiB); `None` at EOF.
async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 2];
    if rd.read_exact(&mut h).await.is_err() {
        return Ok(None);
    }
    let opcode = h[0] & 0x0f;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        rd.read_exact(&mut b).await?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        rd.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    if len > 1 << 20 {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        rd.read_exact(&mut mask).await?;
    }
    buf.resize(len as usize, 0);
    rd.read_exact(buf).await?;
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some((opcode, buf.clone())))
}

/// Reads the HTTP upgrade request (bounded) and returns its Sec-WebSocket-Key.
async fn read_upgrade(tcp: &mut TcpStream) -> std::io::Result<String> {
    let mut req = Vec::with_capacity(1024);
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut b).await?;
        if n == 0 || req.len() > 16 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        req.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    Ok(text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default())
}

fn switching(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

fn welcome() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({
        "type": "welcome",
        "peerId": format!("hostile-{:x}", rand::random::<u64>()),
        "expiresAt": now + 3600,
        "serverTime": now,
        "maxMessageSize": 65536,
    })
    .to_string()
}

/// An unmasked server frame.
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Reads and forgets everything until the client goes away.
async fn discard(mut tcp: TcpStream) -> Res {
    let mut b = vec![0u8; 16 * 1024];
    while tcp.read(&mut b).await? > 0 {}
    Ok(())
}

/// Forwards to the reference server until 4 s after the start, then resets the client.
async fn proxy(client: TcpStream, backend: SocketAddr, started: Instant) -> Res {
    let until = started + Duration::from_secs(4);
    if Instant::now() >= until {
        client.set_zero_linger()?;
        return Ok(());
    }
    let server = TcpStream::connect(backend).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let both = async {
        let up = tokio::io::copy(&mut cr, &mut sw);
        let down = tokio::io::copy(&mut sr, &mut cw);
        tokio::join!(up, down)
    };
    if tokio::time::timeout_at(until.into(), both).await.is_err() {
        let client = cr.reunite(cw).map_err(|_| std::io::ErrorKind::Other)?;
        client.set_zero_linger()?;
    }
    Ok(())
}
