//! Opening one peer connection: the transport's dial (TCP from this worker's source
//! address, TLS, the upgrade with small buffers), then `welcome`; and what a refusal
//! means for a load run.
//!
//! Failures are classified ([`OpenError::kind`]) and the ones a user can act on
//! (HTTP 429, certificate problems, closes 4010/4011/4001/4012) come with
//! [`OpenError::advice`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::proto::frame::close;
use crate::proto::{ServerFrame, limits};
use crate::transport::{self, ConnectError, Connected, Connector, Dial, Endpoint, TlsSession};

pub use crate::transport::Ws;

/// The welcome frame's fields the engine uses.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub peer_id: String,
    /// Unix seconds; `None` for publishable keys.
    pub expires_at: Option<i64>,
    pub max_message_size: usize,
    /// `metadata.iceServers` is a non-empty list (AUTH-14: TURN credentials injected).
    pub ice_servers: bool,
}

/// Why a peer could not get to `welcome`.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no welcome within {} ms", after.as_millis())]
    WelcomeTimeout { after: Duration },
    #[error("the server closed with {code} ({}) before welcome{}", close::name(*code), if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Closed { code: u16, reason: String },
    #[error("protocol error before welcome: {0}")]
    Protocol(String),
}

impl OpenError {
    /// A short key for counting failures by kind (`http_429`, `close_4010`,
    /// `tls_unknown_issuer`, …).
    pub fn kind(&self) -> String {
        match self {
            OpenError::Connect(e) => e.kind(),
            OpenError::WelcomeTimeout { .. } => "timeout_welcome".into(),
            OpenError::Closed { code, .. } => format!("close_{code}"),
            OpenError::Protocol(_) => "protocol".into(),
        }
    }

    /// The close code, when the server refused with one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            OpenError::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What the server limits and what to change, for failures a user can act on.
    pub fn advice(&self) -> Option<String> {
        match self {
            OpenError::Connect(e) => e.advice(),
            OpenError::Closed { code, .. } => close_advice(*code),
            _ => None,
        }
    }
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

/// A target of the run, resolved once: peers reconnect to it thousands of times.
#[derive(Debug, Clone)]
pub struct Dest {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
}

impl Dest {
    pub async fn resolve(url: &str, connector: &Connector) -> Result<Dest, ConnectError> {
        let endpoint = Endpoint::parse(url)?.or_default_path("/v1");
        if !endpoint.websocket {
            return Err(ConnectError::Url {
                url: url.to_owned(),
                why: "a target starts with ws:// or wss://, e.g. wss://staging.example.com/v1"
                    .into(),
            });
        }
        let addr = connector
            .resolve(&endpoint, true, Duration::from_secs(10))
            .await?;
        Ok(Dest { endpoint, addr })
    }

    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Whether peers may bind a 127.x.y.z source address for it.
    pub fn is_loopback_v4(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }
}

/// A peer's connection up to `welcome`, and how long each phase took.
pub struct Opened {
    pub connected: Connected,
    pub welcome: Welcome,
    /// Upgrade done → `welcome` received.
    pub welcome_wait: Duration,
}

/// One connect attempt of a peer.
pub struct Attempt<'a> {
    pub dest: &'a Dest,
    pub query: &'a str,
    pub source: Option<Ipv4Addr>,
    pub tls: Option<&'a TlsSession>,
    pub config: WebSocketConfig,
    pub timeout: Duration,
}

/// Connects, upgrades and waits for `welcome`, all within `a.timeout`.
pub async fn open(connector: &Connector, a: Attempt<'_>) -> Result<Opened, OpenError> {
    let url = a.dest.endpoint.with_query(a.query);
    let started = Instant::now();
    let dial = Dial {
        addr: Some(a.dest.addr),
        source: a.source,
        tls: a.tls,
        ..Dial::new(&url, a.timeout)
    };
    let mut connected = connector.dial(dial, a.config).await?;
    let upgraded = Instant::now();
    let left = a.timeout.saturating_sub(started.elapsed());
    let welcome = tokio::time::timeout(left, read_welcome(&mut connected.ws))
        .await
        .map_err(|_| OpenError::WelcomeTimeout { after: a.timeout })??;
    Ok(Opened {
        connected,
        welcome,
        welcome_wait: upgraded.elapsed(),
    })
}

async fn read_welcome(ws: &mut Ws) -> Result<Welcome, OpenError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match ServerFrame::decode(text.as_str()) {
                    Ok(ServerFrame::Welcome {
                        peer_id,
                        expires_at,
                        max_message_size,
                        metadata,
                        ..
                    }) => Ok(Welcome {
                        ice_servers: metadata
                            .as_ref()
                            .and_then(|m| m.get("iceServers"))
                            .and_then(|v| v.as_array())
                            .is_some_and(|a| !a.is_empty()),
                        peer_id,
                        expires_at,
                        max_message_size: usize::try_from(max_message_size)
                            .unwrap_or(limits::DEFAULT_MAX_MESSAGE_SIZE),
                    }),
                    Ok(_) => Err(OpenError::Protocol(format!(
                        "the first frame is not welcome (WEL-1): {}",
                        transport::ws::clip(text.as_str(), 120)
                    ))),
                    Err(e) => Err(OpenError::Protocol(format!(
                        "the first frame does not parse as welcome ({e}): {}",
                        transport::ws::clip(text.as_str(), 120)
                    ))),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                transport::ws::answer_close(ws).await;
                return Err(OpenError::Closed { code, reason });
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(OpenError::Protocol("a binary frame before welcome".into()));
            }
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => {
                return Err(OpenError::Protocol(transport::ws::describe(&e)));
            }
            None => {
                return Err(OpenError::Closed {
                    code: close::ABNORMAL,
                    reason: "connection dropped before welcome".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_must_be_websocket_urls() {
        let c = Connector::default();
        let d = Dest::resolve("ws://127.0.0.1:9/v1", &c).await.unwrap();
        assert!(d.is_loopback_v4());
        assert_eq!(
            d.endpoint.with_query("token=x"),
            "ws://127.0.0.1:9/v1?token=x"
        );
        let e = Dest::resolve("http://x/v1", &c).await.unwrap_err();
        assert!(e.to_string().contains("ws://"), "{e}");
    }

    #[test]
    fn advice_names_limits_and_fixes() {
        let c = OpenError::Closed {
            code: 4010,
            reason: String::new(),
        };
        assert!(c.advice().unwrap().contains("maxConcurrentConnections"));
        assert!(close_advice(4011).unwrap().contains("rate"));
        assert_eq!(c.kind(), "close_4010");
        let h = OpenError::from(ConnectError::Http {
            status: 429,
            body: String::new(),
        });
        assert!(h.advice().unwrap().contains("--ip-connect-limit 0"));
    }
}
