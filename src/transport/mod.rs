//! The one network client of the harness. Every connection that the load engine, the
//! conformance runner, target probes, benches and tests open goes through a
//! [`Connector`]: URL → `--connect-to` → DNS → TCP (source address, TCP_NODELAY) →
//! TLS (rustls) → WebSocket upgrade or HTTP/1.1, with each phase timed.
//!
//! - [`endpoint`]: URLs (`ws`, `wss`, `http`, `https`) and `--connect-to` rules;
//! - [`socket`]: source-address binding and TCP connect;
//! - [`tls`]: the rustls client configuration (`--cacert`, `--insecure`, client
//!   certificates, server name, resumption, SSLKEYLOGFILE) and what a handshake negotiated;
//! - [`ws`]: the stream type, the buffer configuration and the close handshake of a real client;
//! - [`upgrade`]: the WebSocket upgrade (our own read of the response head, so a connection
//!   starts with the configured read buffer);
//! - [`http`]: one HTTP/1.1 request (the REST control plane);
//! - [`error`]: why a connect failed, with a key for counting and advice.
//!
//! Imports nothing from the rest of the crate: what frames mean (welcome, close codes)
//! belongs to the callers.

pub mod endpoint;
pub mod error;
pub mod http;
pub mod socket;
pub mod tls;
mod upgrade;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use endpoint::{ConnectTo, Endpoint};
pub use error::{ConnectError, Stage, TlsFailure};
pub use tls::{ResumptionMode, TlsArgs, TlsClient, TlsInfo, TlsSession};
pub use ws::{Stream, Ws};

/// One connect: what to dial and how.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    /// The full URL with its query, e.g. `wss://host/v1?token=…`.
    pub url: &'a str,
    /// Where to dial, when already resolved (the load engine resolves each target
    /// once); `None` resolves now, after `--connect-to`.
    pub addr: Option<SocketAddr>,
    /// Loopback source address to bind (IPv4 targets only).
    pub source: Option<Ipv4Addr>,
    /// An `Origin` header to send with the upgrade.
    pub origin: Option<&'a str>,
    /// Budget for the whole connect; each phase gets what is left of it.
    pub timeout: Duration,
    /// The peer's TLS configuration (its session cache); `None` uses the shared one.
    pub tls: Option<&'a TlsSession>,
}

impl<'a> Dial<'a> {
    pub fn new(url: &'a str, timeout: Duration) -> Dial<'a> {
        Dial {
            url,
            addr: None,
            source: None,
            origin: None,
            timeout,
            tls: None,
        }
    }
}

/// How long each phase of a connect took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// `--connect-to` and DNS (zero when the address was given).
    pub resolve: Duration,
    pub tcp: Duration,
    /// `None` for plain-text connections.
    pub tls: Option<Duration>,
    /// WebSocket upgrade request → 101 (or the HTTP exchange).
    pub upgrade: Duration,
}

/// An open WebSocket connection and how it was made.
#[derive(Debug)]
pub struct Connected {
    pub ws: Ws,
    pub phases: Phases,
    /// What TLS negotiated; `None` for `ws://`.
    pub tls: Option<TlsInfo>,
}

/// The configured client: TLS settings and `--connect-to` rules. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<Arc<TlsClient>>,
    connect_to: Arc<[ConnectTo]>,
}

impl Connector {
    /// A connector for these flags. TLS is configured (certificate files read, trust
    /// store loaded) only when `secure` (some target is `wss`/`https`) or a TLS flag is
    /// given, so a typo in a file fails before anything connects. `extra_roots` are PEM
    /// certificates trusted on top of the flags' (the embedded server's own).
    pub fn new(
        args: &TlsArgs,
        secure: bool,
        extra_roots: Option<&str>,
    ) -> Result<Connector, tls::TlsConfigError> {
        let wanted = secure
            || args.insecure
            || !args.cacert.is_empty()
            || args.client_cert.is_some()
            || args.tls_server_name.is_some()
            || args.tls_resumption != ResumptionMode::Off;
        let tls = if wanted {
            Some(Arc::new(TlsClient::new(args, extra_roots)?))
        } else {
            None
        };
        Ok(Connector {
            tls,
            connect_to: args.connect_to.clone().into(),
        })
    }

    /// A plain client (tests, loopback probes): TLS with the default trust store plus
    /// `extra_roots`, no `--connect-to`.
    pub fn with_roots(extra_roots: Option<&str>) -> Connector {
        Connector::new(&TlsArgs::default(), true, extra_roots)
            .expect("the default TLS configuration builds")
    }

    /// The TLS client, when configured.
    pub fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_deref()
    }

    /// Whether certificates go unverified (`--insecure`).
    pub fn insecure(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.insecure)
    }

    /// A TLS configuration for one peer (its own session cache with `per-peer`).
    pub fn session(&self) -> Option<TlsSession> {
        self.tls.as_ref().map(|t| t.session())
    }

    /// Resolves where `ep` is dialled (after `--connect-to`).
    pub async fn resolve(
        &self,
        ep: &Endpoint,
        want_v4: bool,
        timeout: Duration,
    ) -> Result<SocketAddr, ConnectError> {
        endpoint::resolve(ep, &self.connect_to, want_v4, timeout).await
    }

    /// TCP, then TLS when `ep` is secure: the stream an upgrade or an HTTP request
    /// runs on. Phases are filled in as they complete.
    async fn stream(
        &self,
        ep: &Endpoint,
        addr: Option<SocketAddr>,
        source: Option<Ipv4Addr>,
        session: Option<&TlsSession>,
        deadline: tokio::time::Instant,
        phases: &mut Phases,
    ) -> Result<(Stream, Option<TlsInfo>), ConnectError> {
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let t = Instant::now();
        let addr = match addr {
            Some(a) => a,
            None => self.resolve(ep, source.is_some(), budget).await?,
        };
        phases.resolve = t.elapsed();
        let t = Instant::now();
        let tcp = tokio::time::timeout_at(deadline, socket::connect(addr, source))
            .await
            .map_err(|_| ws::timed_out(Stage::Tcp, budget))?
            .map_err(|e| ConnectError::Tcp {
                addr,
                kind: e.kind(),
                why: e.to_string(),
            })?;
        phases.tcp = t.elapsed();
        if !ep.secure {
            return Ok((Stream::Plain(tcp), None));
        }
        let tls_client = self.tls.as_ref().ok_or_else(|| ConnectError::Url {
            url: ep.url.clone(),
            why: "TLS is not configured for this client".into(),
        })?;
        let config = match session {
            Some(s) => s.0.clone(),
            None => tls_client.config().clone(),
        };
        let name = tls_client
            .server_name(&ep.host)
            .map_err(|why| ConnectError::Url {
                url: ep.url.clone(),
                why,
            })?;
        let t = Instant::now();
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let tls = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| ws::timed_out(Stage::Tls, budget))?
            .map_err(|e| ConnectError::Tls {
                host: ep.authority(),
                cause: TlsFailure::from_io(&e).unwrap_or_else(|| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        TlsFailure::Other(
                            "the server closed the connection during the TLS handshake".into(),
                        )
                    } else {
                        TlsFailure::Other(e.to_string())
                    }
                }),
            })?;
        phases.tls = Some(t.elapsed());
        let info = TlsInfo::of(tls.get_ref().1);
        Ok((Stream::Tls(Box::new(tls)), Some(info)))
    }

    /// Opens a WebSocket: resolve, TCP, TLS, upgrade, all within `d.timeout`.
    pub async fn dial(
        &self,
        d: Dial<'_>,
        config: WebSocketConfig,
    ) -> Result<Connected, ConnectError> {
        let deadline = tokio::time::Instant::now() + d.timeout;
        let ep = Endpoint::parse(d.url)?;
        if !ep.websocket {
            return Err(ConnectError::Url {
                url: d.url.to_owned(),
                why: "a WebSocket URL starts with ws:// or wss://".into(),
            });
        }
        let mut request = d.url.into_client_request().map_err(|e| ConnectError::Url {
            url: d.url.to_owned(),
            why: e.to_string(),
        })?;
        if let Some(origin) = d.origin {
            let value = origin.parse().map_err(|_| ConnectError::Url {
                url: d.url.to_owned(),
                why: format!("bad Origin header {origin:?}"),
            })?;
            request.headers_mut().insert("Origin", value);
        }
        let mut phases = Phases::default();
        let (stream, tls) = self
            .stream(&ep, d.addr, d.source, d.tls, deadline, &mut phases)
            .await?;
        let t = Instant::now();
        let upgrade = upgrade::client(request, stream, config);
        let ws = tokio::time::timeout_at(deadline, upgrade)
            .await
            .map_err(|_| ws::timed_out(Stage::Upgrade, d.timeout))?
            .map_err(|e| ws::upgrade_error(e, &ep.authority()))?;
        phases.upgrade = t.elapsed();
        Ok(Connected { ws, phases, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_are_classified() {
        // Bind then drop: nothing listens on that port now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("ws://{addr}/v1");
        let c = Connector::default();
        let e = c
            .dial(
                Dial::new(&url, Duration::from_secs(2)),
                ws::peer_config(0, 1 << 20),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "tcp_refused");
        assert!(e.advice().unwrap().contains("nothing listens"));
    }

    #[tokio::test]
    async fn a_plain_port_is_not_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let url = format!("wss://{addr}/v1");
        let e = Connector::with_roots(None)
            .dial(
                Dial::new(&url, Duration::from_secs(2)),
                ws::peer_config(0, 1 << 20),
            )
            .await
            .unwrap_err();
        assert!(e.tls().is_some(), "{e}");
    }

    #[tokio::test]
    async fn wss_without_tls_configured_says_so() {
        let e = Connector::default()
            .dial(
                Dial {
                    addr: Some("127.0.0.1:9".parse().unwrap()),
                    ..Dial::new("wss://127.0.0.1:9/v1", Duration::from_secs(1))
                },
                ws::peer_config(0, 1 << 20),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Tcp { .. } | ConnectError::Url { .. }),
            "{e}"
        );
    }
}
