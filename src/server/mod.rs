//! The reference server (`stampede serve`): a complete implementation of SPEC §2–§20
//! with the `[choice]` decisions of §24, the configuration model of §23, an admin hook,
//! fault switches and injected delivery faults for testing harnesses.
//!
//! Map (imports only `proto` and `shutdown` from the rest of the crate):
//! - [`config`]: apps, keys, plans, limits; TOML file; the development configuration;
//! - [`state`]: server-wide shared state (apps, keys, usage, clock, per-IP limiter);
//! - [`http`]: the listener, accept loop, HTTP routing and the WebSocket upgrade;
//! - [`tls`]: rustls configuration (certificate, key, client CA, resumption) and
//!   certificate generation;
//! - [`session`]: one WebSocket connection (auth, frame checks, heartbeat, expiry);
//! - [`hub`]: per-app routing (channels, presence, wildcards, directs, kicks);
//! - [`outbox`]: the bounded per-connection outbound queue (slow-consumer policy);
//! - [`rest`], [`admin`]: the REST control plane and the admin hook;
//! - [`faults`], [`inject`]: switches that break one SPEC rule each, and exact-count
//!   delivery perturbations.

pub mod admin;
pub mod admit;
mod closing;
pub mod config;
pub mod delay;
pub mod fault_text;
pub mod faults;
pub mod http;
pub mod hub;
pub mod inject;
pub mod outbox;
mod requests;
pub mod rest;
pub mod session;
pub mod state;
pub mod tls;
pub mod variant_io;
pub mod variants;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::Config;
pub use faults::{Fault, FaultSet};
pub use inject::{Inject, InjectedCounts};
pub use variants::{Variant, VariantSet};

use crate::proto::{auth, close};
use crate::shutdown::Stop;
use config::{PublishableKeyConfig, RateLimit, SecretKeyConfig};
use state::Shared;

/// `REFILL/BURST`, e.g. `100/200`; `0` (or `0/0`) switches the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateArg(pub u32, pub u32);

fn parse_rate(s: &str) -> Result<RateArg, String> {
    let err =
        || format!("invalid rate {s:?}: use REFILL/BURST frames, e.g. 100/200, or 0 for no limit");
    match s.split_once('/') {
        None => match s.trim().parse::<u32>() {
            Ok(0) => Ok(RateArg(0, 0)),
            Ok(n) => Ok(RateArg(n, n.saturating_mul(2))),
            Err(_) => Err(err()),
        },
        Some((r, b)) => Ok(RateArg(
            r.trim().parse().map_err(|_| err())?,
            b.trim().parse().map_err(|_| err())?,
        )),
    }
}

/// Flags of `stampede serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket (one port) [default: 127.0.0.1:8080, or the config file's].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Secret key id of the development app (replaces sk_id_dev; needs --secret).
    #[arg(long, value_name = "ID", requires = "secret")]
    pub key_id: Option<String>,
    /// Signing secret for --key-id.
    #[arg(long, value_name = "SECRET", requires = "key_id")]
    pub secret: Option<String>,
    /// Publishable key id of the development app (replaces pk_live_dev).
    #[arg(long, value_name = "PK")]
    pub publishable_key: Option<String>,
    /// Connection attempts allowed per source IP per 60 s (RATE-5); 0 = no limit [default: 60].
    #[arg(long, value_name = "N")]
    pub ip_connect_limit: Option<u32>,
    /// Per-connection token bucket REFILL/BURST in frames (RATE-1); 0 = no limit [default: 100/200].
    #[arg(long, value_name = "R/B", value_parser = parse_rate)]
    pub rate: Option<RateArg>,
    /// Largest inbound frame in bytes, advertised in welcome (LIM-1) [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// TOML file with apps, keys, plans, limits, turn.iceServers and compat (docs/SERVER.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Enables the admin hook under /_admin/ with this bearer token (docs/SERVER.md).
    #[arg(long, value_name = "TOKEN", env = "STAMPEDE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Breaks one SPEC behaviour on purpose (repeatable; see --list-faults).
    #[arg(long = "fault", value_name = "NAME")]
    pub faults: Vec<String>,
    /// Prints the fault switches and exits.
    #[arg(long)]
    pub list_faults: bool,
    /// Behaves like a correct server built differently (repeatable; see --list-variants).
    #[arg(long = "variant", value_name = "NAME")]
    pub variants: Vec<String>,
    /// Prints the legal variants and exits.
    #[arg(long)]
    pub list_variants: bool,
    /// Test only: delay every channel message copy by this many ms.
    #[arg(long, hide = true, default_value_t = 0)]
    pub inject_delay_ms: u64,
    /// Test only: drop a message copy with this probability.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub inject_drop: f64,
    /// Test only: duplicate a message copy with this probability.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub inject_dup: f64,
    /// Test only: swap a message copy with the next one with this probability.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub inject_reorder: f64,
    /// Truth for capacity tests: every message and direct copy passes one queue served at
    /// N copies per second (latency flat below N, growing without bound above) [default: off].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub inject_capacity: u64,
    /// Test only: RNG seed of the injected faults.
    #[arg(long, hide = true, default_value_t = 0)]
    pub inject_seed: u64,
    /// Test only: the injected delay, drops, duplicates and swaps hit direct copies too.
    #[arg(long, hide = true)]
    pub inject_directs: bool,
    /// Serve TLS (wss://, https://) with this certificate chain (PEM, leaf first); needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a new self-signed certificate for localhost, 127.0.0.1 and ::1, valid
    /// 30 days, written with its key to a new directory under the temp dir; the banner
    /// prints the --cacert flag clients need.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// Require client certificates issued by a CA in FILE (PEM); clients without one fail
    /// the TLS handshake. Needs TLS (--tls-cert, --tls-self-signed or [tls] in --config).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
}

/// How long `--tls-self-signed` certificates are valid.
const SELF_SIGNED_DAYS: u64 = 30;

impl ServeArgs {
    /// Folds the flags into a configuration (the config file first, flags on top).
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::dev(),
        };
        if let Some(listen) = &self.listen {
            cfg.listen = listen.clone();
        }
        if let (Some(id), Some(secret)) = (&self.key_id, &self.secret) {
            let key = SecretKeyConfig {
                id: id.clone(),
                secret: secret.clone(),
                legacy: None,
                channel_patterns: vec!["**".into()],
                actions: crate::proto::Actions::ALL,
                auto_inject_turn: false,
                revoked: false,
            };
            let app = &mut cfg.apps[0];
            if cfg.dev {
                app.secret_keys = vec![key];
            } else {
                anyhow::ensure!(
                    !app.secret_keys.iter().any(|k| k.id == *id),
                    "--key-id {id} is already configured in the config file"
                );
                app.secret_keys.push(key);
            }
        }
        if let Some(pk) = &self.publishable_key {
            let key = PublishableKeyConfig {
                id: pk.clone(),
                channel_patterns: vec!["**".into()],
                actions: config::default_publishable_actions(),
                allowed_origins: Vec::new(),
                auto_inject_turn: true,
                revoked: false,
            };
            let app = &mut cfg.apps[0];
            if cfg.dev {
                app.publishable_keys = vec![key];
            } else {
                app.publishable_keys.push(key);
            }
        }
        if let Some(n) = self.ip_connect_limit {
            cfg.limits.ip_connect_limit = n;
        }
        if let Some(RateArg(r, b)) = self.rate {
            cfg.limits.rate = RateLimit::from_pair((r, b));
        }
        if let Some(size) = self.max_message_size {
            anyhow::ensure!(
                size >= 1024,
                "--max-message-size {size} is too small: use at least 1024"
            );
            cfg.limits.max_message_size = size;
        }
        if self.admin_token.is_some() {
            cfg.admin_token = self.admin_token.clone();
        }
        cfg.faults = FaultSet::parse(&self.faults)?;
        cfg.variants = VariantSet::parse(&self.variants)?;
        cfg.inject = Inject {
            fanout_delay_ms: self.inject_delay_ms,
            drop_rate: self.inject_drop,
            dup_rate: self.inject_dup,
            reorder_rate: self.inject_reorder,
            seed: self.inject_seed,
            capacity_per_s: self.inject_capacity,
            directs: self.inject_directs,
        };
        cfg.inject.validate().map_err(anyhow::Error::msg)?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            cfg.tls = Some(tls::TlsConfig::files(cert, key));
        }
        if self.tls_self_signed {
            let generated =
                tls::self_signed(&tls::LOOPBACK_NAMES, tls::Validity::days(SELF_SIGNED_DAYS))?;
            cfg.tls = Some(tls::TlsConfig::generated(&generated));
        }
        if let Some(ca) = &self.tls_client_ca {
            let Some(t) = cfg.tls.as_mut() else {
                anyhow::bail!(
                    "--tls-client-ca needs TLS: add --tls-cert and --tls-key, or --tls-self-signed"
                );
            };
            t.client_ca = Some(tls::Pem::File(ca.clone()));
        }
        Ok(cfg)
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    pub shared: Arc<Shared>,
    pub local_addr: SocketAddr,
    http_stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Binds and starts serving; returns once the port is open.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    cfg.inject.validate().map_err(anyhow::Error::msg)?;
    // Before binding: a bad certificate or key stops the server before it listens.
    let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
    let addr = tokio::net::lookup_host(&cfg.listen)
        .await
        .with_context(|| format!("invalid listen address {:?}: use HOST:PORT", cfg.listen))?
        .next()
        .with_context(|| format!("listen address {:?} resolves to nothing", cfg.listen))?;
    let listener = http::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(&cfg));
    let (http_stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(http::accept_loop(listener, shared.clone(), stop_rx, tls));
    Ok(Running {
        shared,
        local_addr,
        http_stop,
        task: Some(task),
    })
}

impl Running {
    /// The address clients should use (loopback when listening on all interfaces).
    pub fn public_addr(&self) -> SocketAddr {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }

    /// Graceful shutdown (SHUT-1…5): refuse new work with 503, send every connection
    /// `going_away` then 1001, wait up to the drain time for the handshakes, then drop
    /// whatever is left and stop accepting.
    pub async fn shutdown(mut self) {
        let sh = self.shared.clone();
        sh.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + sh.limits.shutdown_drain;
        loop {
            // Repeated: a connection admitted during the sweep is caught next round.
            for app in sh.apps() {
                app.hub.close_all(close::GOING_AWAY);
            }
            if sh.live_sessions.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if sh.live_sessions.load(Ordering::Acquire) > 0 {
            for app in sh.apps() {
                app.hub.close_all(outbox::ABORT);
            }
            let end = Instant::now() + Duration::from_millis(500);
            while sh.live_sessions.load(Ordering::Acquire) > 0 && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.http_stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Not shut down gracefully: at least stop accepting, so the port is released.
        self.http_stop.send_replace(true);
    }
}

/// `stampede serve`.
pub async fn main(args: ServeArgs, mut stop: Stop) -> anyhow::Result<i32> {
    if args.list_faults {
        print!("{}", faults::listing());
        return Ok(0);
    }
    if args.list_variants {
        print!("{}", variants::listing());
        return Ok(0);
    }
    let cfg = args.to_config()?;
    let running = start(cfg.clone()).await?;
    let self_signed = match (&cfg.tls, args.tls_self_signed) {
        (Some(t), true) => Some(write_self_signed(t)?),
        _ => None,
    };
    print_banner(&cfg, &running, self_signed.as_ref());
    let mut admin_stop = running.shared.stop_request.subscribe();
    tokio::select! {
        _ = stop.wait() => {}
        _ = http::wait_true(&mut admin_stop) => {}
    }
    eprintln!(
        "stampede serve: shutting down: going_away then 1001 to {} connections (drain up to {} s)",
        running.shared.connection_count(),
        cfg.limits.shutdown_drain.as_secs()
    );
    running.shutdown().await;
    Ok(0)
}

/// Writes the `--tls-self-signed` certificate and key to files clients (and a restart)
/// can use.
fn write_self_signed(t: &tls::TlsConfig) -> anyhow::Result<tls::PemFiles> {
    let (tls::Pem::Text(cert_pem), tls::Pem::Text(key_pem)) = (&t.cert, &t.key) else {
        anyhow::bail!("internal error: --tls-self-signed without a generated certificate");
    };
    let generated = tls::Generated {
        cert_pem: cert_pem.clone(),
        key_pem: key_pem.clone(),
    };
    generated.write_to_new_temp_dir().with_context(|| {
        format!(
            "cannot write the self-signed certificate under {}",
            std::env::temp_dir().display()
        )
    })
}

fn print_banner(cfg: &Config, running: &Running, self_signed: Option<&tls::PemFiles>) {
    let addr = running.public_addr();
    let (ws_scheme, http_scheme) = match cfg.tls {
        Some(_) => ("wss", "https"),
        None => ("ws", "http"),
    };
    let ws = format!("{ws_scheme}://{addr}/v1");
    let rest = format!("{http_scheme}://{addr}/v1");
    // curl needs to be told to trust a self-signed certificate, like any other client.
    let cacert = self_signed.map_or(String::new(), |f| format!("--cacert {} ", f.cert.display()));
    let mut out = String::new();
    // The first line is parsed by scripts (e.g. the SDK interop test): keep its form.
    out.push_str(&format!("listening on {ws}\n"));
    out.push_str("stampede reference server (Metered Realtime Messaging v1)\n");
    out.push_str(&format!("  REST:             {rest}\n"));
    if let Some(t) = &cfg.tls {
        match self_signed {
            Some(f) => {
                out.push_str(&format!(
                    "  TLS:              self-signed for {}, valid {SELF_SIGNED_DAYS} days; cert and key in {}\n",
                    tls::LOOPBACK_NAMES.join(", "),
                    f.dir.display()
                ));
                out.push_str(&format!(
                    "  clients trust it: --cacert {}\n",
                    f.cert.display()
                ));
            }
            None => out.push_str(&format!(
                "  TLS:              certificate {}\n",
                t.cert.name("certificate")
            )),
        }
        if let Some(ca) = &t.client_ca {
            out.push_str(&format!(
                "  client certs:     required, issued by a CA in {}\n",
                ca.name("client CA")
            ));
        }
    }
    if let Some(app) = cfg.apps.first() {
        let key = app.secret_keys.iter().find(|k| !k.revoked);
        out.push_str(&format!(
            "  app:              {}{}\n",
            app.id,
            if cfg.dev {
                " (development plan, no quotas)"
            } else {
                ""
            }
        ));
        if let Some(k) = key {
            out.push_str(&format!("  secret key id:    {}\n", k.id));
            if cfg.dev {
                out.push_str(&format!("  secret:           {}\n", k.secret));
            }
        }
        if let Some(pk) = app.publishable_keys.iter().find(|k| !k.revoked) {
            out.push_str(&format!("  publishable key:  {}\n", pk.id));
        }
        if let Some(k) = key {
            let now = running.shared.clock.now_s();
            let claims = json!({
                "sub": "dev-peer",
                "exp": now + 3600,
                "iat": now,
                "peerMetadata": {"displayName": "Dev Peer"},
            });
            let token = auth::mint(&k.id, k.secret.as_bytes(), &claims);
            out.push_str(&format!("  token (1 h):      {token}\n"));
            out.push_str(&format!("  connect:          {ws}?token={token}\n"));
            if cfg.dev {
                out.push_str(&format!(
                    "  REST example:     curl {cacert}-H 'Authorization: Bearer {}:{}' {rest}/usage\n",
                    k.id, k.secret
                ));
            }
        }
        if cfg.apps.len() > 1 {
            let others: Vec<&str> = cfg.apps[1..].iter().map(|a| a.id.as_str()).collect();
            out.push_str(&format!("  other apps:       {}\n", others.join(", ")));
        }
    }
    let l = &cfg.limits;
    out.push_str(&format!(
        "  limits:           maxMessageSize {}, rate {}, connects per IP {}\n",
        l.max_message_size,
        l.rate.map_or("off".into(), |r| format!(
            "{}/s burst {}",
            r.refill_per_sec, r.burst
        )),
        if l.ip_connect_limit == 0 {
            "off".into()
        } else {
            format!("{} per {} s", l.ip_connect_limit, l.ip_window.as_secs())
        }
    ));
    match http::fd_limit() {
        // Each connection is one descriptor; keep a few for files and REST clients.
        Some(n) => out.push_str(&format!(
            "  file descriptors: ulimit -n {n}: room for about {} concurrent connections in this process\n",
            n.saturating_sub(http::open_fds() as u64 + 8)
        )),
        None => out.push_str("  file descriptors: limit unknown\n"),
    }
    if cfg.admin_token.is_some() {
        out.push_str(&format!(
            "  admin hook:       {}/_admin/ (Bearer <admin token>)\n",
            format_args!("{http_scheme}://{addr}")
        ));
    }
    if !cfg.faults.is_empty() {
        let names: Vec<&str> = cfg.faults.iter().map(|f| f.name()).collect();
        out.push_str(&format!(
            "  FAULTS ON:        {} (this server breaks the SPEC on purpose)\n",
            names.join(", ")
        ));
    }
    if cfg.inject.is_active() {
        out.push_str(&format!("  INJECTING:        {:?}\n", cfg.inject));
    }
    out.push_str("  stop:             Ctrl-C (graceful: going_away, then close 1001)\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_flag() {
        assert_eq!(parse_rate("100/200"), Ok(RateArg(100, 200)));
        assert_eq!(parse_rate("0"), Ok(RateArg(0, 0)));
        assert_eq!(parse_rate("50"), Ok(RateArg(50, 100)));
        assert!(parse_rate("fast").unwrap_err().contains("REFILL/BURST"));
        assert_eq!(RateLimit::from_pair((0, 0)), None);
    }
}
