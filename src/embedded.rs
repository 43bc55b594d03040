//! Starts the reference server in-process on an ephemeral loopback port and describes it
//! as a [`Target`](crate::target::Target), for `stampede conform` / `stampede run`
//! without a server argument, and for tests.

use crate::server::{self, Config, FaultSet, Running, config};
use crate::target::Target;

pub use crate::server::{Inject, InjectedCounts};

/// How to start the embedded server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fault switch names (`stampede serve --list-faults`).
    pub faults: Vec<String>,
    /// RATE-5 attempts per 60 s; `None` = default 60; `Some(0)` = off.
    pub ip_connect_limit: Option<u32>,
    /// Per-connection bucket (refill/s, burst); `None` = 100/200; `Some((0, 0))` = off.
    pub rate: Option<(u32, u32)>,
    pub inject: Inject,
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
        if let Some(n) = opts.ip_connect_limit {
            cfg.limits.ip_connect_limit = n;
        }
        if let Some(pair) = opts.rate {
            cfg.limits.rate = config::RateLimit::from_pair(pair);
        }
        cfg.inject = opts.inject;
        Self::with_config(cfg).await
    }

    /// Starts an arbitrary configuration; the listen address is forced to `127.0.0.1:0`
    /// and an admin token is generated when none is set.
    pub async fn with_config(mut cfg: Config) -> anyhow::Result<EmbeddedServer> {
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
        let running = server::start(cfg).await?;
        let addr = running.local_addr;
        let ws_url = format!("ws://{addr}/v1");
        let target = Target {
            rest_url: Target::rest_from_ws(&ws_url),
            ws_url,
            key_id: first_key.as_ref().map(|k| k.0.clone()),
            secret: first_key.map(|k| k.1),
            publishable_key,
            other_app,
            admin_token: Some(admin_token),
            embedded: true,
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
