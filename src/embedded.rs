//! Starts the reference server in-process on an ephemeral loopback port and describes it
//! as a [`Target`](crate::target::Target), for `stampede conform` / `stampede run`
//! without a server argument, and for tests.

use std::fmt;

use crate::server::tls::{self, TlsConfig};
use crate::server::{self, Config, FaultSet, Running, VariantSet, config};
use crate::target::Target;

pub use crate::server::{Inject, InjectedCounts};

/// How to start the embedded server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fault switch names (`stampede serve --list-faults`).
    pub faults: Vec<String>,
    /// Legal variant names (`stampede serve --list-variants`).
    pub variants: Vec<String>,
    /// RATE-5 attempts per 60 s; `None` = default 60; `Some(0)` = off.
    pub ip_connect_limit: Option<u32>,
    /// Per-connection bucket (refill/s, burst); `None` = 100/200; `Some((0, 0))` = off.
    pub rate: Option<(u32, u32)>,
    pub inject: Inject,
    /// `None`: plain `ws://` and `http://`.
    pub tls: Option<Tls>,
}

/// TLS for the embedded server: its target's URLs become `wss://` and `https://`.
#[derive(Clone)]
pub enum Tls {
    /// A new in-memory self-signed certificate for 127.0.0.1, localhost and ::1; the
    /// target's `ca_pem` is that certificate.
    SelfSigned,
    /// This certificate chain (PEM, leaf first) and key.
    Pem {
        cert_pem: String,
        key_pem: String,
        /// When set, clients must present a certificate issued by this CA.
        client_ca_pem: Option<String>,
        /// What clients must trust to reach the server (the CA that issued `cert_pem`);
        /// becomes the target's `ca_pem`.
        trust_pem: Option<String>,
    },
}

impl fmt::Debug for Tls {
    // The key stays out of logs and assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::SelfSigned => f.write_str("SelfSigned"),
            Tls::Pem { client_ca_pem, .. } => f
                .debug_struct("Pem")
                .field("client_ca", &client_ca_pem.is_some())
                .finish_non_exhaustive(),
        }
    }
}

impl Tls {
    /// A self-signed certificate for 127.0.0.1, localhost and ::1, made once so that
    /// several servers can share it (clients then trust all of them).
    pub fn self_signed() -> anyhow::Result<Tls> {
        let g = tls::self_signed(&tls::LOOPBACK_NAMES, tls::Validity::days(30))?;
        Ok(Tls::Pem {
            trust_pem: Some(g.cert_pem.clone()),
            cert_pem: g.cert_pem,
            key_pem: g.key_pem,
            client_ca_pem: None,
        })
    }

    /// The server's TLS configuration and the PEM clients must trust.
    fn resolve(self) -> Result<(TlsConfig, Option<String>), tls::TlsError> {
        Ok(match self {
            Tls::SelfSigned => {
                let g = tls::self_signed(&tls::LOOPBACK_NAMES, tls::Validity::days(30))?;
                (TlsConfig::generated(&g), Some(g.cert_pem))
            }
            Tls::Pem {
                cert_pem,
                key_pem,
                client_ca_pem,
                trust_pem,
            } => (
                TlsConfig {
                    cert: tls::Pem::Text(cert_pem),
                    key: tls::Pem::Text(key_pem),
                    client_ca: client_ca_pem.map(tls::Pem::Text),
                },
                trust_pem,
            ),
        })
    }
}

/// The reference server running inside this process.
#[derive(Debug)]
pub struct EmbeddedServer {
    running: Running,
    target: Target,
}

impl EmbeddedServer {
    /// Starts the development configuration on `127.0.0.1:0` with an admin token.
    pub async fn start(opts: Options) -> anyhow::Result<EmbeddedServer> {
        let mut cfg = Config::dev();
        cfg.faults = FaultSet::parse(&opts.faults)?;
        cfg.variants = VariantSet::parse(&opts.variants)?;
        if let Some(n) = opts.ip_connect_limit {
            cfg.limits.ip_connect_limit = n;
        }
        if let Some(pair) = opts.rate {
            cfg.limits.rate = config::RateLimit::from_pair(pair);
        }
        cfg.inject = opts.inject;
        match opts.tls {
            Some(t) => Self::with_config_tls(cfg, t).await,
            None => Self::with_config(cfg).await,
        }
    }

    /// Starts an arbitrary configuration; the listen address is forced to `127.0.0.1:0`
    /// and an admin token is generated when none is set. A `cfg.tls` is served as given
    /// (`wss://` URLs, no `ca_pem`); [`with_config_tls`](Self::with_config_tls) also tells
    /// the target what to trust.
    pub async fn with_config(cfg: Config) -> anyhow::Result<EmbeddedServer> {
        Self::launch(cfg, None).await
    }

    /// [`with_config`](Self::with_config) serving `tls`; the target's `ca_pem` says what
    /// to trust.
    pub async fn with_config_tls(mut cfg: Config, tls: Tls) -> anyhow::Result<EmbeddedServer> {
        let (tls, ca_pem) = tls.resolve()?;
        cfg.tls = Some(tls);
        Self::launch(cfg, ca_pem).await
    }

    async fn launch(mut cfg: Config, ca_pem: Option<String>) -> anyhow::Result<EmbeddedServer> {
        cfg.listen = "127.0.0.1:0".into();
        let admin_token = cfg
            .admin_token
            .get_or_insert_with(|| format!("adm_{:032x}", rand::random::<u128>()))
            .clone();
        let first_key = cfg
            .apps
            .first()
            .and_then(|a| a.secret_keys.first())
            .map(|k| (k.id.clone(), k.secret.clone()));
        let publishable_key = cfg
            .apps
            .first()
            .and_then(|a| a.publishable_keys.first())
            .map(|k| k.id.clone());
        let other_app = cfg
            .apps
            .get(1)
            .and_then(|a| a.secret_keys.first())
            .map(|k| (k.id.clone(), k.secret.clone()));
        let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
        let running = server::start(cfg).await?;
        let addr = running.local_addr;
        let ws_url = format!("{scheme}://{addr}/v1");
        let target = Target {
            rest_url: crate::transport::Endpoint::rest_base(&ws_url),
            ws_url,
            key_id: first_key.as_ref().map(|k| k.0.clone()),
            secret: first_key.map(|k| k.1),
            publishable_key,
            other_app,
            admin_token: Some(admin_token),
            embedded: true,
            ca_pem,
        };
        Ok(EmbeddedServer { running, target })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.local_addr
    }

    /// Exact counts of what [`Inject`] did so far.
    pub fn injected(&self) -> InjectedCounts {
        self.running
            .shared
            .injector
            .as_ref()
            .map(|i| i.counts())
            .unwrap_or_default()
    }

    /// Connections closed with 1013 because their outbound queue overflowed.
    pub fn slow_consumer_closes(&self) -> u64 {
        self.running
            .shared
            .stats
            .slow_consumer_closes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TLS handshakes that failed or timed out.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.running
            .shared
            .stats
            .tls_handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.running.shared.connection_count()
    }

    /// Graceful shutdown: `going_away` + 1001 to every connection, bounded by 5 s.
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

/// Names of the reference server's fault switches (`stampede serve --list-faults`), for
/// the conformance self-check, which must not import the server itself.
pub fn fault_names() -> Vec<String> {
    server::Fault::ALL
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

/// Each fault switch with the SPEC rules it breaks, for `conform --coverage` and the
/// self-check.
pub fn fault_rules() -> Vec<(String, Vec<String>)> {
    server::Fault::ALL
        .iter()
        .map(|f| {
            let rules = f.rules().iter().map(|r| r.to_string()).collect();
            (f.name().to_owned(), rules)
        })
        .collect()
}

/// Names of the reference server's legal variants (`stampede serve --list-variants`),
/// for the conformance self-check.
pub fn variant_names() -> Vec<String> {
    server::Variant::ALL
        .iter()
        .map(|v| v.name().to_owned())
        .collect()
}

/// The `[choice]` rules a legal variant departs from (cases resting on them do not apply
/// to it); empty for an unknown name.
pub fn variant_departures(name: &str) -> Vec<String> {
    server::Variant::parse(name)
        .map(|v| v.departs_from().iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}
