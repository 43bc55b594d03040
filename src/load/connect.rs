//! Opening one peer connection: TCP from this worker's source address (bound with
//! `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port at connect time and one
//! source address reaches 28k connections per server port without the TIME_WAIT trap
//! of plain `bind(ip, 0)`), the WebSocket upgrade with small tungstenite buffers (read
//! 4 KiB, write 4 KiB: ~7 KB per connection instead of ~138 KB), then `welcome`.
//!
//! Failures are classified ([`ConnectError::kind`]) and the ones a user can act on
//! (HTTP 429, closes 4010/4011/4001/4012) come with [`ConnectError::advice`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::proto::frame::close;
use crate::proto::{ServerFrame, limits};

pub type Ws = WebSocketStream<TcpStream>;

/// The welcome frame's fields the engine uses.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub peer_id: String,
    /// Unix seconds; `None` for publishable keys.
    pub expires_at: Option<i64>,
    pub max_message_size: usize,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out during {stage} after {after:?}")]
    Timeout {
        stage: &'static str,
        after: Duration,
    },
    #[error("the server answered the upgrade with HTTP {status}")]
    Http { status: u16 },
    #[error("the server closed with {code} ({}) before welcome{}", close::name(*code), if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Closed { code: u16, reason: String },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("protocol error before welcome: {0}")]
    Protocol(String),
    #[error("bad target URL {url}: {why}")]
    Url { url: String, why: String },
}

impl ConnectError {
    /// A short key for counting failures by kind (`http_429`, `close_4010`, …).
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Tcp { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "tcp_refused".into(),
                std::io::ErrorKind::AddrNotAvailable => "tcp_no_source_port".into(),
                _ => "tcp_error".into(),
            },
            ConnectError::Timeout { stage, .. } => format!("timeout_{stage}"),
            ConnectError::Http { status } => format!("http_{status}"),
            ConnectError::Closed { code, .. } => format!("close_{code}"),
            ConnectError::Handshake(_) => "handshake".into(),
            ConnectError::Protocol(_) => "protocol".into(),
            ConnectError::Url { .. } => "bad_url".into(),
        }
    }

    /// The close code, when the server refused with one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ConnectError::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What the server limits and what to change, for failures a user can act on.
    pub fn advice(&self) -> Option<String> {
        match self {
            ConnectError::Http { status: 429 } => Some(advice_429()),
            ConnectError::Http { status: 503 } => Some(
                "HTTP 503 at upgrade: the server is shutting down (SHUT-4); peers retry with backoff"
                    .into(),
            ),
            ConnectError::Closed { code, .. } => close_advice(*code),
            ConnectError::Tcp { source, addr } if source.kind() == std::io::ErrorKind::ConnectionRefused => Some(format!(
                "nothing listens at {addr}: is the server running? (e.g. stampede serve --listen {addr} --ip-connect-limit 0)"
            )),
            ConnectError::Tcp { source, addr } if source.kind() == std::io::ErrorKind::AddrNotAvailable => Some(format!(
                "out of source ports towards {addr}: one source address reaches one server port at most 28,232 times; use more --workers (each gets its own 127.x.y.z source) or more --target servers"
            )),
            _ => None,
        }
    }
}

/// The advice for HTTP 429 at upgrade (RATE-5).
pub fn advice_429() -> String {
    "HTTP 429 at upgrade: the server limits connection attempts per source IP (RATE-5, by default 60 per minute); \
     disable or raise that limit on the server (stampede serve --ip-connect-limit 0), ramp slower, \
     or spread peers over more source addresses (--workers)"
        .into()
}

/// What a close code means for a load run, when the user can act on it.
pub fn close_advice(code: u16) -> Option<String> {
    Some(match code {
        close::OVER_CONCURRENT_LIMIT => "close 4010: the app's plan caps concurrent connections (maxConcurrentConnections, QUOTA-6); raise the plan's limit or enable overages, or run fewer peers".into(),
        close::OVER_MESSAGE_RATE => "close 4011: a connection exceeded the per-connection rate limit (RATE-1, by default 100 frames/s with bursts of 200); lower the per-peer publish/direct rates or raise the server's per-connection rate".into(),
        close::INVALID_TOKEN => "close 4001: the server refused the credentials; check that --key-id/--secret (or --publishable-key) match the server's keys".into(),
        close::ACCOUNT_SUSPENDED => "close 4012: the app's account is suspended on the server".into(),
        close::TOKEN_EXPIRED => "close 4002 at connect: the token was already expired; the clocks of harness and server may differ".into(),
        close::CHANNEL_NOT_AUTHORIZED => "close 4003: the server closes connections that subscribe outside their scope; the key's channelPatterns must cover the scenario's channels".into(),
        _ => return None,
    })
}

/// A target endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given, e.g. `ws://127.0.0.1:8080/v1`.
    pub url: String,
    pub addr: SocketAddr,
    /// `ws://host:port/path` without query, to which `?token=` is appended.
    pub base: String,
    /// Whether `base` already carries a query string.
    has_query: bool,
}

impl Endpoint {
    /// Parses and resolves `url` (ws:// only: traffic stays on loopback).
    pub async fn resolve(url: &str) -> Result<Endpoint, ConnectError> {
        let bad = |why: &str| ConnectError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if url.starts_with("wss://") {
            return Err(bad(
                "wss:// is not supported (the harness drives local servers over ws://)",
            ));
        } else {
            return Err(bad("must start with ws://, e.g. ws://127.0.0.1:8080/v1"));
        };
        let (hostport, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1"),
        };
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if hostport.starts_with('[') {
            if hostport.contains("]:") {
                hostport.to_owned()
            } else {
                format!("{hostport}:80")
            }
        } else if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| bad(&format!("cannot resolve {with_port}: {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("{with_port} resolves to no address")))?;
        let path = if path.starts_with('?') {
            format!("/v1{path}")
        } else {
            path.to_owned()
        };
        Ok(Endpoint {
            url: url.to_owned(),
            addr,
            base: format!("ws://{hostport}{path}"),
            has_query: path.contains('?'),
        })
    }

    /// The URL with a credential query appended (`token=…` or `key=…`).
    pub fn url_with(&self, query: &str) -> String {
        let sep = if self.has_query { '&' } else { '?' };
        format!("{}{sep}{query}", self.base)
    }

    pub fn is_loopback_v4(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }
}

/// The tungstenite configuration of simulated peers: small buffers (LIMITS.md) and a
/// write limit that fits the largest frame the scenario sends.
pub fn ws_config(largest_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size((16 * 1024).max(largest_frame + 4 * 1024))
        // Clients accept inbound frames up to 1 MiB (CLI-6).
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// A TCP connection from `source` (port chosen at connect time).
pub async fn tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, std::io::Error> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(ip), true) = (source, addr.is_ipv4()) {
        crate::net::bind_source(&sock, ip)?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects, upgrades and waits for `welcome`; every stage is bounded by `timeout`.
pub async fn open(
    ep: &Endpoint,
    query: &str,
    source: Option<Ipv4Addr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<(Ws, Welcome), ConnectError> {
    let stream = tokio::time::timeout(timeout, tcp(ep.addr, source))
        .await
        .map_err(|_| ConnectError::Timeout {
            stage: "tcp",
            after: timeout,
        })?
        .map_err(|source| ConnectError::Tcp {
            addr: ep.addr,
            source,
        })?;
    let request = ep
        .url_with(query)
        .into_client_request()
        .map_err(|e| ConnectError::Url {
            url: ep.url.clone(),
            why: e.to_string(),
        })?;
    let (mut ws, _resp) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        stage: "upgrade",
        after: timeout,
    })?
    .map_err(|e| match e {
        tungstenite::Error::Http(resp) => ConnectError::Http {
            status: resp.status().as_u16(),
        },
        other => ConnectError::Handshake(other.to_string()),
    })?;
    let welcome = tokio::time::timeout(timeout, read_welcome(&mut ws))
        .await
        .map_err(|_| ConnectError::Timeout {
            stage: "welcome",
            after: timeout,
        })??;
    Ok((ws, welcome))
}

async fn read_welcome(ws: &mut Ws) -> Result<Welcome, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match ServerFrame::decode(text.as_str()) {
                    Ok(ServerFrame::Welcome {
                        peer_id,
                        expires_at,
                        max_message_size,
                        ..
                    }) => Ok(Welcome {
                        peer_id,
                        expires_at,
                        max_message_size: usize::try_from(max_message_size)
                            .unwrap_or(limits::DEFAULT_MAX_MESSAGE_SIZE),
                    }),
                    Ok(_) => Err(ConnectError::Protocol(format!(
                        "the first frame is not welcome (WEL-1): {}",
                        truncate(text.as_str(), 120)
                    ))),
                    Err(e) => Err(ConnectError::Protocol(format!(
                        "the first frame does not parse as welcome ({e}): {}",
                        truncate(text.as_str(), 120)
                    ))),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(ConnectError::Closed { code, reason });
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(ConnectError::Protocol(
                    "a binary frame before welcome".into(),
                ));
            }
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => return Err(ConnectError::Handshake(e.to_string())),
            None => {
                return Err(ConnectError::Closed {
                    code: close::ABNORMAL,
                    reason: "connection dropped before welcome".into(),
                });
            }
        }
    }
}

pub fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The source address of worker `worker` of a run: 127.a.b.(worker+1), with a and b
/// derived from the run so consecutive runs use fresh addresses (TIME_WAIT buckets of a
/// previous run never collide with this one's).
pub fn source_ip(run_tag: &str, worker: u32) -> Ipv4Addr {
    let h = super::plan::mix(
        run_tag
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let a = 64 + (h % 190) as u8; // 127.64.x.x .. 127.253.x.x
    let b = (h >> 8) as u8;
    Ipv4Addr::new(127, a, b, (worker % 254 + 1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_parse_and_reject_what_they_cannot_do() {
        let ep = Endpoint::resolve("ws://127.0.0.1:9/v1").await.unwrap();
        assert_eq!(ep.url_with("token=x"), "ws://127.0.0.1:9/v1?token=x");
        assert!(ep.is_loopback_v4());
        let ep = Endpoint::resolve("ws://localhost:9").await.unwrap();
        assert!(ep.base.ends_with("/v1"));
        let e = Endpoint::resolve("wss://x/v1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("wss"), "{e}");
        let e = Endpoint::resolve("http://x/v1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("ws://"), "{e}");
    }

    #[tokio::test]
    async fn binds_a_loopback_source_without_a_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let src = source_ip("test-run", 3);
        let (c, s) = tokio::join!(tcp(addr, Some(src)), listener.accept());
        let c = c.unwrap();
        let (_, peer) = s.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(src));
        assert_eq!(c.local_addr().unwrap().ip(), IpAddr::V4(src));
    }

    #[tokio::test]
    async fn refused_connections_are_classified() {
        // Bind then drop: nothing listens on that port now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ep = Endpoint::resolve(&format!("ws://{addr}/v1")).await.unwrap();
        let e = open(&ep, "token=x", None, ws_config(0), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "tcp_refused");
    }

    #[test]
    fn advice_names_limits_and_fixes() {
        assert!(
            ConnectError::Http { status: 429 }
                .advice()
                .unwrap()
                .contains("--ip-connect-limit 0")
        );
        let c = ConnectError::Closed {
            code: 4010,
            reason: String::new(),
        };
        assert!(c.advice().unwrap().contains("maxConcurrentConnections"));
        assert!(close_advice(4011).unwrap().contains("rate"));
        assert_eq!(c.kind(), "close_4010");
    }
}
