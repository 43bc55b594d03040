//! Reference-server configuration (SPEC §23): apps, keys, plans, limits, TURN list and
//! compatibility switches, from a TOML file and/or flags, plus the development
//! configuration used when nothing is configured.
//!
//! Errors name the file, the line and the field (`invalid config file x.toml:12:
//! apps[0].secretKeys[1].actions: unknown action "fly"`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::faults::FaultSet;
use super::inject::Inject;
use super::outbox::QueueLimits;
use super::tls::{Pem, TlsConfig};
use super::variants::VariantSet;
use crate::proto::limits::{self, valid_channel};
use crate::proto::{Action, Actions};

/// A per-connection token bucket (RATE-1): `burst` tokens, refilled at `refill_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub refill_per_sec: u32,
    pub burst: u32,
}

impl RateLimit {
    /// SPEC defaults: 100/s sustained, burst 200 (LIM-14).
    pub const DEFAULT: RateLimit = RateLimit {
        refill_per_sec: 100,
        burst: 200,
    };

    /// `(refill, burst)` with zeros meaning "off".
    pub fn from_pair((refill_per_sec, burst): (u32, u32)) -> Option<RateLimit> {
        (refill_per_sec > 0 || burst > 0).then_some(RateLimit {
            refill_per_sec,
            burst: burst.max(1),
        })
    }
}

/// Tunables of CFG-4 (server-wide; some can be overridden per app).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_subscriptions: usize,
    /// `None` = no per-connection rate limit.
    pub rate: Option<RateLimit>,
    /// Connection attempts per IP per `ip_window`; 0 = off (RATE-5).
    pub ip_connect_limit: u32,
    pub ip_window: Duration,
    pub ping_interval: Duration,
    pub pong_grace: Duration,
    pub going_away_retry_after_ms: u64,
    pub shutdown_drain: Duration,
    pub rest_body_limit: usize,
    pub token_default_ttl_secs: u64,
    pub token_max_ttl_secs: u64,
    pub queue: QueueLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: limits::DEFAULT_MAX_MESSAGE_SIZE,
            max_subscriptions: limits::DEFAULT_MAX_SUBSCRIPTIONS,
            rate: Some(RateLimit::DEFAULT),
            ip_connect_limit: 60,
            ip_window: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            pong_grace: Duration::from_secs(10),
            going_away_retry_after_ms: 1000,
            shutdown_drain: Duration::from_secs(5),
            rest_body_limit: limits::REST_BODY_LIMIT,
            token_default_ttl_secs: 3600,
            token_max_ttl_secs: 86_400,
            queue: QueueLimits::default(),
        }
    }
}

/// A billing plan (QUOTA-1, CFG-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: Option<String>,
    pub max_concurrent_connections: u64,
    pub max_messages_per_period: u64,
    pub overages_allowed: bool,
    pub overages_enabled: bool,
    /// The prepaid overage balance is used up (overages then need auto-recharge).
    pub balance_exhausted: bool,
    pub auto_recharge: bool,
}

impl Plan {
    /// The development plan: limits no test or load run reaches.
    pub fn unlimited() -> Plan {
        Plan {
            name: Some("SIGNALLING_DEV".into()),
            max_concurrent_connections: 1_000_000_000,
            max_messages_per_period: 1_000_000_000_000,
            overages_allowed: true,
            overages_enabled: true,
            balance_exhausted: false,
            auto_recharge: false,
        }
    }

    /// Whether a request over a limit proceeds as an overage (QUOTA-2/3).
    pub fn overages_usable(&self) -> bool {
        self.overages_allowed
            && self.overages_enabled
            && (!self.balance_exhausted || self.auto_recharge)
    }
}

/// Compatibility switches (CFG-9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compat {
    /// An out-of-scope `subscribe` closes with 4003 instead of `channel_not_authorized`.
    pub unauthorized_subscribe_closes: bool,
}

/// A secret key (CFG-2).
#[derive(Debug, Clone)]
pub struct SecretKeyConfig {
    pub id: String,
    pub secret: String,
    /// Older single-string credential `sk_live_…` for REST (REST-3), when enabled.
    pub legacy: Option<String>,
    pub channel_patterns: Vec<String>,
    pub actions: Actions,
    pub auto_inject_turn: bool,
    pub revoked: bool,
}

/// A publishable key (CFG-3).
#[derive(Debug, Clone)]
pub struct PublishableKeyConfig {
    pub id: String,
    pub channel_patterns: Vec<String>,
    pub actions: Actions,
    pub allowed_origins: Vec<String>,
    pub auto_inject_turn: bool,
    pub revoked: bool,
}

/// One app (tenant).
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: String,
    pub suspended: bool,
    pub plan: Plan,
    /// Billing period `(start, end)` in Unix seconds; `None` = from server start, 30 days.
    pub period: Option<(i64, i64)>,
    pub secret_keys: Vec<SecretKeyConfig>,
    pub publishable_keys: Vec<PublishableKeyConfig>,
    pub max_message_size: Option<usize>,
    /// `Some(None)` switches the rate limit off for this app.
    pub rate: Option<Option<RateLimit>>,
    pub compat: Option<Compat>,
}

impl AppConfig {
    /// An app with the unlimited plan and no keys.
    pub fn new(id: &str) -> AppConfig {
        AppConfig {
            id: id.to_owned(),
            suspended: false,
            plan: Plan::unlimited(),
            period: None,
            secret_keys: Vec::new(),
            publishable_keys: Vec::new(),
            max_message_size: None,
            rate: None,
            compat: None,
        }
    }
}

/// The default actions of a new publishable key (AUTH-6): no `send`.
pub fn default_publishable_actions() -> Actions {
    Actions::NONE
        .with(Action::Subscribe)
        .with(Action::Publish)
        .with(Action::Presence)
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` to listen on.
    pub listen: String,
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub compat: Compat,
    /// Accept `Authorization: Bearer sk_live_…` on REST (REST-3).
    pub legacy_rest_auth: bool,
    /// `turn.iceServers` for AUTH-14 injection (a JSON array).
    pub turn_ice_servers: Option<Value>,
    pub apps: Vec<AppConfig>,
    pub faults: FaultSet,
    /// Legal variants (`--variant`): a correct server built differently.
    pub variants: VariantSet,
    pub inject: Inject,
    /// True for the built-in development configuration (the banner prints its secrets).
    pub dev: bool,
    /// Serve TLS (`wss://`, `https://`) instead of plain TCP.
    pub tls: Option<TlsConfig>,
}

pub const DEV_APP: &str = "app_dev";
pub const DEV_KEY_ID: &str = "sk_id_dev";
pub const DEV_SECRET: &str = "sk_secret_dev";
pub const DEV_PUBLISHABLE_KEY: &str = "pk_live_dev";
pub const OTHER_APP: &str = "app_other";
pub const OTHER_KEY_ID: &str = "sk_id_other";
pub const OTHER_SECRET: &str = "sk_secret_other";

impl Config {
    /// The development configuration: `app_dev` (unlimited plan, `sk_id_dev` /
    /// `sk_secret_dev` with `**` and every action, `pk_live_dev` with `**` and the
    /// default publishable actions) and `app_other` (`sk_id_other` / `sk_secret_other`) for
    /// isolation tests.
    pub fn dev() -> Config {
        let all = vec!["**".to_owned()];
        let mut dev = AppConfig::new(DEV_APP);
        dev.secret_keys.push(SecretKeyConfig {
            id: DEV_KEY_ID.into(),
            secret: DEV_SECRET.into(),
            legacy: None,
            channel_patterns: all.clone(),
            actions: Actions::ALL,
            auto_inject_turn: false,
            revoked: false,
        });
        dev.publishable_keys.push(PublishableKeyConfig {
            id: DEV_PUBLISHABLE_KEY.into(),
            channel_patterns: all.clone(),
            actions: default_publishable_actions(),
            allowed_origins: Vec::new(),
            auto_inject_turn: true,
            revoked: false,
        });
        let mut other = AppConfig::new(OTHER_APP);
        other.secret_keys.push(SecretKeyConfig {
            id: OTHER_KEY_ID.into(),
            secret: OTHER_SECRET.into(),
            legacy: None,
            channel_patterns: all,
            actions: Actions::ALL,
            auto_inject_turn: false,
            revoked: false,
        });
        Config {
            listen: "127.0.0.1:8080".into(),
            admin_token: None,
            limits: Limits::default(),
            compat: Compat::default(),
            legacy_rest_auth: false,
            turn_ice_servers: None,
            apps: vec![dev, other],
            faults: FaultSet::NONE,
            variants: VariantSet::NONE,
            inject: Inject::default(),
            dev: true,
            tls: None,
        }
    }

    /// Reads and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(path, &text)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                col,
                message: e.message().trim().to_owned(),
            }
        })?;
        Validator { path, text }.build(file)
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}:{line}:{col}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("invalid config file {}:{line}: `{field}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

// ---- the file format ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileConfig {
    listen: Option<String>,
    admin_token: Option<String>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    compat: FileCompat,
    turn: Option<FileTurn>,
    tls: Option<FileTls>,
    #[serde(default)]
    apps: Vec<FileApp>,
}

/// `[tls]`: PEM files, relative to the config file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileLimits {
    max_message_size: Option<Spanned<usize>>,
    max_subscriptions_per_connection: Option<usize>,
    token_bucket: Option<FileBucket>,
    ip_connect_limit: Option<FileIpLimit>,
    server_ping_interval_ms: Option<u64>,
    pong_grace_ms: Option<u64>,
    going_away_retry_after_ms: Option<Spanned<u64>>,
    shutdown_drain_ms: Option<u64>,
    rest_body_limit: Option<usize>,
    token_mint: Option<FileTokenMint>,
    outbound_queue: Option<FileQueue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileBucket {
    /// 0 switches the limit off.
    capacity: u32,
    refill_per_sec: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileIpLimit {
    /// 0 switches the limit off.
    per_window: u32,
    #[serde(default = "sixty")]
    window_sec: Spanned<u64>,
}

fn sixty() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileTokenMint {
    default_ttl_sec: Option<u64>,
    max_ttl_sec: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileQueue {
    frames: Option<Spanned<usize>>,
    bytes: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileCompat {
    #[serde(default)]
    unauthorized_subscribe_closes: bool,
    #[serde(default)]
    legacy_rest_auth: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileTurn {
    ice_servers: Spanned<Vec<FileIceServer>>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct FileIceServer {
    urls: toml::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileApp {
    id: Spanned<String>,
    #[serde(default)]
    suspended: bool,
    plan: Option<FilePlan>,
    period: Option<FilePeriod>,
    max_message_size: Option<Spanned<usize>>,
    token_bucket: Option<FileBucket>,
    compat: Option<FileAppCompat>,
    #[serde(default)]
    secret_keys: Vec<FileSecretKey>,
    #[serde(default)]
    publishable_keys: Vec<FilePublishableKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileAppCompat {
    #[serde(default)]
    unauthorized_subscribe_closes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilePlan {
    name: Option<String>,
    max_concurrent_connections: u64,
    max_messages_per_period: u64,
    #[serde(default)]
    overages_allowed: bool,
    overages_enabled: Option<bool>,
    #[serde(default)]
    balance_exhausted: bool,
    #[serde(default)]
    auto_recharge: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilePeriod {
    start_unix: Spanned<i64>,
    end_unix: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileSecretKey {
    id: Spanned<String>,
    secret: Spanned<String>,
    legacy: Option<String>,
    #[serde(default = "all_patterns")]
    channel_patterns: Spanned<Vec<String>>,
    actions: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    auto_inject_turn: bool,
    #[serde(default)]
    revoked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilePublishableKey {
    id: Spanned<String>,
    #[serde(default = "all_patterns")]
    channel_patterns: Spanned<Vec<String>>,
    actions: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default = "yes")]
    auto_inject_turn: bool,
    #[serde(default)]
    revoked: bool,
}

fn all_patterns() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["**".to_owned()])
}

fn yes() -> bool {
    true
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: String,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line: line_col(self.text, span.start).0,
            field,
            message: message.into(),
        })
    }

    fn actions(&self, field: String, names: &Spanned<Vec<String>>) -> Result<Actions, ConfigError> {
        for name in names.get_ref() {
            if Action::parse(name).is_none() {
                return self.err(
                    names.span(),
                    field,
                    format!(
                        "unknown action {name:?} (expected publish, subscribe, presence, send)"
                    ),
                );
            }
        }
        Ok(Actions::from_names(names.get_ref()))
    }

    fn patterns(
        &self,
        field: String,
        patterns: &Spanned<Vec<String>>,
    ) -> Result<Vec<String>, ConfigError> {
        for p in patterns.get_ref() {
            if !valid_channel(p) {
                return self.err(
                    patterns.span(),
                    field,
                    format!("pattern {p:?} must be 1-256 bytes without control characters"),
                );
            }
        }
        Ok(patterns.get_ref().clone())
    }

    fn build(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let mut cfg = Config::dev();
        cfg.dev = false;
        if let Some(listen) = file.listen {
            cfg.listen = listen;
        }
        cfg.admin_token = file.admin_token;
        let l = &mut cfg.limits;
        let fl = file.limits;
        if let Some(size) = fl.max_message_size {
            if *size.get_ref() < 1024 {
                return self.err(
                    size.span(),
                    "limits.maxMessageSize".into(),
                    "must be at least 1024 bytes",
                );
            }
            l.max_message_size = size.into_inner();
        }
        if let Some(n) = fl.max_subscriptions_per_connection {
            l.max_subscriptions = n;
        }
        if let Some(b) = fl.token_bucket {
            l.rate =
                RateLimit::from_pair((b.refill_per_sec, b.capacity)).filter(|_| b.capacity > 0);
        }
        if let Some(ip) = fl.ip_connect_limit {
            if *ip.window_sec.get_ref() == 0 {
                return self.err(
                    ip.window_sec.span(),
                    "limits.ipConnectLimit.windowSec".into(),
                    "must be at least 1",
                );
            }
            l.ip_connect_limit = ip.per_window;
            l.ip_window = Duration::from_secs(ip.window_sec.into_inner());
        }
        if let Some(ms) = fl.server_ping_interval_ms {
            l.ping_interval = Duration::from_millis(ms.max(100));
        }
        if let Some(ms) = fl.pong_grace_ms {
            l.pong_grace = Duration::from_millis(ms.max(100));
        }
        if let Some(ms) = fl.going_away_retry_after_ms {
            if *ms.get_ref() == 0 {
                return self.err(
                    ms.span(),
                    "limits.goingAwayRetryAfterMs".into(),
                    "must be a positive integer (GA-2)",
                );
            }
            l.going_away_retry_after_ms = ms.into_inner();
        }
        if let Some(ms) = fl.shutdown_drain_ms {
            l.shutdown_drain = Duration::from_millis(ms);
        }
        if let Some(n) = fl.rest_body_limit {
            l.rest_body_limit = n;
        }
        if let Some(t) = fl.token_mint {
            l.token_default_ttl_secs = t.default_ttl_sec.unwrap_or(l.token_default_ttl_secs);
            l.token_max_ttl_secs = t.max_ttl_sec.unwrap_or(l.token_max_ttl_secs);
        }
        if let Some(q) = fl.outbound_queue {
            for (name, v) in [("frames", &q.frames), ("bytes", &q.bytes)] {
                if let Some(v) = v
                    && *v.get_ref() < 16
                {
                    return self.err(
                        v.span(),
                        format!("limits.outboundQueue.{name}"),
                        "must be at least 16",
                    );
                }
            }
            if let Some(f) = q.frames {
                l.queue.frames = f.into_inner();
            }
            if let Some(b) = q.bytes {
                l.queue.bytes = b.into_inner();
            }
        }
        cfg.compat.unauthorized_subscribe_closes = file.compat.unauthorized_subscribe_closes;
        cfg.legacy_rest_auth = file.compat.legacy_rest_auth;
        if let Some(turn) = file.turn {
            let span = turn.ice_servers.span();
            let servers = turn.ice_servers.into_inner();
            if servers.len() > 16 {
                return self.err(
                    span,
                    "turn.iceServers".into(),
                    "at most 16 entries (the SDKs ignore longer lists)",
                );
            }
            for s in &servers {
                let urls: Vec<&str> = match &s.urls {
                    toml::Value::String(u) => vec![u.as_str()],
                    toml::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
                    _ => vec![],
                };
                let ok = !urls.is_empty()
                    && urls.iter().all(|u| {
                        u.len() <= 512
                            && ["stun:", "stuns:", "turn:", "turns:"]
                                .iter()
                                .any(|p| u.starts_with(p))
                    });
                if !ok {
                    return self.err(
                        span,
                        "turn.iceServers".into(),
                        "each entry needs `urls`: stun:/stuns:/turn:/turns: URLs of at most 512 characters",
                    );
                }
            }
            cfg.turn_ice_servers =
                Some(
                    serde_json::to_value(&servers).map_err(|e| ConfigError::Invalid {
                        path: self.path.to_owned(),
                        line: line_col(self.text, span.start).0,
                        field: "turn.iceServers".into(),
                        message: e.to_string(),
                    })?,
                );
        }
        if let Some(tls) = file.tls {
            // Relative to the file, so a config and its certificates move together.
            let dir = self.path.parent().unwrap_or(Path::new(""));
            cfg.tls = Some(TlsConfig {
                cert: Pem::File(dir.join(tls.cert)),
                key: Pem::File(dir.join(tls.key)),
                client_ca: tls.client_ca.map(|ca| Pem::File(dir.join(ca))),
            });
        }
        if file.apps.is_empty() {
            return self.err(
                0..0,
                "apps".into(),
                "at least one [[apps]] entry is required",
            );
        }
        cfg.apps.clear();
        let mut key_ids: Vec<String> = Vec::new();
        for (i, app) in file.apps.into_iter().enumerate() {
            let at = |f: &str| format!("apps[{i}].{f}");
            let id = app.id.get_ref().clone();
            if id.is_empty() {
                return self.err(app.id.span(), at("id"), "must not be empty");
            }
            if cfg.apps.iter().any(|a| a.id == id) {
                return self.err(app.id.span(), at("id"), format!("duplicate app id {id:?}"));
            }
            let mut out = AppConfig::new(&id);
            out.suspended = app.suspended;
            if let Some(p) = app.plan {
                let allowed = p.overages_allowed;
                out.plan = Plan {
                    name: p.name,
                    max_concurrent_connections: p.max_concurrent_connections,
                    max_messages_per_period: p.max_messages_per_period,
                    overages_allowed: allowed,
                    overages_enabled: p.overages_enabled.unwrap_or(allowed),
                    balance_exhausted: p.balance_exhausted,
                    auto_recharge: p.auto_recharge,
                };
            }
            if let Some(period) = app.period {
                if period.end_unix <= *period.start_unix.get_ref() {
                    return self.err(
                        period.start_unix.span(),
                        at("period"),
                        "endUnix must be after startUnix",
                    );
                }
                out.period = Some((period.start_unix.into_inner(), period.end_unix));
            }
            if let Some(size) = app.max_message_size {
                if *size.get_ref() < 1024 {
                    return self.err(
                        size.span(),
                        at("maxMessageSize"),
                        "must be at least 1024 bytes",
                    );
                }
                out.max_message_size = Some(size.into_inner());
            }
            if let Some(b) = app.token_bucket {
                out.rate = Some(
                    RateLimit::from_pair((b.refill_per_sec, b.capacity)).filter(|_| b.capacity > 0),
                );
            }
            out.compat = app.compat.map(|c| Compat {
                unauthorized_subscribe_closes: c.unauthorized_subscribe_closes,
            });
            if app.secret_keys.len() + app.publishable_keys.len() > 50 {
                return self.err(
                    app.id.span(),
                    at("secretKeys"),
                    "at most 50 keys per app (LIM-13)",
                );
            }
            for (j, k) in app.secret_keys.into_iter().enumerate() {
                let at = |f: &str| format!("apps[{i}].secretKeys[{j}].{f}");
                let kid = k.id.get_ref().clone();
                if kid.is_empty() || key_ids.contains(&kid) {
                    return self.err(
                        k.id.span(),
                        at("id"),
                        format!("key id {kid:?} is empty or used twice"),
                    );
                }
                if k.secret.get_ref().is_empty() {
                    return self.err(k.secret.span(), at("secret"), "must not be empty");
                }
                key_ids.push(kid.clone());
                let actions = match &k.actions {
                    Some(a) => self.actions(at("actions"), a)?,
                    None => Actions::ALL,
                };
                out.secret_keys.push(SecretKeyConfig {
                    id: kid,
                    secret: k.secret.into_inner(),
                    legacy: k.legacy,
                    channel_patterns: self.patterns(at("channelPatterns"), &k.channel_patterns)?,
                    actions,
                    auto_inject_turn: k.auto_inject_turn,
                    revoked: k.revoked,
                });
            }
            for (j, k) in app.publishable_keys.into_iter().enumerate() {
                let at = |f: &str| format!("apps[{i}].publishableKeys[{j}].{f}");
                let kid = k.id.get_ref().clone();
                if kid.is_empty() || key_ids.contains(&kid) {
                    return self.err(
                        k.id.span(),
                        at("id"),
                        format!("key id {kid:?} is empty or used twice"),
                    );
                }
                key_ids.push(kid.clone());
                let actions = match &k.actions {
                    Some(a) => self.actions(at("actions"), a)?,
                    None => default_publishable_actions(),
                };
                out.publishable_keys.push(PublishableKeyConfig {
                    id: kid,
                    channel_patterns: self.patterns(at("channelPatterns"), &k.channel_patterns)?,
                    actions,
                    allowed_origins: k.allowed_origins,
                    auto_inject_turn: k.auto_inject_turn,
                    revoked: k.revoked,
                });
            }
            cfg.apps.push(out);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text)
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9000"

[limits]
maxMessageSize = 32768
tokenBucket = { capacity = 0, refillPerSec = 0 }
ipConnectLimit = { perWindow = 10 }

[turn]
iceServers = [{ urls = "turn:relay.example:3478", username = "u", credential = "c" }]

[[apps]]
id = "app_acme"
plan = { name = "SIGNALLING_FREE", maxConcurrentConnections = 2, maxMessagesPerPeriod = 10 }

[[apps.secretKeys]]
id = "sk_id_acme"
secret = "sk_secret_acme"
channelPatterns = ["acme/**"]
actions = ["publish", "subscribe"]

[[apps.publishableKeys]]
id = "pk_live_acme"
allowedOrigins = ["https://acme.example"]
"#;

    #[test]
    fn good_file() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000");
        assert_eq!(cfg.limits.max_message_size, 32768);
        assert_eq!(cfg.limits.rate, None);
        assert_eq!(cfg.limits.ip_connect_limit, 10);
        assert_eq!(cfg.apps.len(), 1);
        let app = &cfg.apps[0];
        assert!(!app.plan.overages_usable());
        assert_eq!(app.secret_keys[0].actions.names(), ["publish", "subscribe"]);
        assert!(!app.publishable_keys[0].actions.contains(Action::Send));
        assert!(cfg.turn_ice_servers.unwrap()[0]["urls"].is_string());
        assert!(!cfg.dev);
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn tls_paths_are_relative_to_the_file() {
        let text = format!(
            "{GOOD}\n[tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\nclientCa = \"ca/x.pem\"\n"
        );
        let cfg = Config::from_toml(Path::new("/etc/stampede/s.toml"), &text).unwrap();
        let tls = cfg.tls.unwrap();
        let file = |p: &Pem| match p {
            Pem::File(f) => f.clone(),
            Pem::Text(_) => panic!("a file"),
        };
        assert_eq!(file(&tls.cert), Path::new("/etc/stampede/c.pem"));
        assert_eq!(file(&tls.key), Path::new("/abs/k.pem"));
        assert_eq!(
            file(&tls.client_ca.unwrap()),
            Path::new("/etc/stampede/ca/x.pem")
        );
        let e = parse(&format!("{GOOD}\n[tls]\ncert = \"c.pem\"\n")).unwrap_err();
        assert!(e.to_string().contains("missing field `key`"), "{e}");
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = GOOD.replace(
            r#"actions = ["publish", "subscribe"]"#,
            r#"actions = ["publish", "fly"]"#,
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("test.toml:20"), "{e}");
        assert!(e.contains("apps[0].secretKeys[0].actions"), "{e}");
        assert!(e.contains("\"fly\""), "{e}");

        let e = parse(&GOOD.replace("maxMessageSize = 32768", "maxMesageSize = 32768"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.toml:5:1") && e.contains("maxMesageSize"),
            "{e}"
        );

        let dup = format!("{GOOD}\n[[apps]]\nid = \"app_acme\"\n");
        let e = parse(&dup).unwrap_err().to_string();
        assert!(
            e.contains("duplicate app id") && e.contains("apps[1].id"),
            "{e}"
        );

        let e = parse("listen = 5").unwrap_err().to_string();
        assert!(e.contains("test.toml:1"), "{e}");
        assert!(parse("").unwrap_err().to_string().contains("apps"));
    }

    /// The example in docs/SERVER.md stays valid.
    #[test]
    fn documented_example_parses() {
        let doc = include_str!("../../docs/SERVER.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let end = start + doc[start..].find("```").expect("closed block");
        let cfg = parse(&doc[start..end]).unwrap();
        assert_eq!(cfg.apps[0].id, "app_acme");
        assert_eq!(cfg.admin_token.as_deref(), Some("change-me"));
        assert!(cfg.apps[0].secret_keys[0].legacy.is_some());
    }

    #[test]
    fn dev_config() {
        let cfg = Config::dev();
        assert!(cfg.dev);
        assert_eq!(cfg.apps[0].secret_keys[0].id, DEV_KEY_ID);
        assert_eq!(cfg.apps[0].publishable_keys[0].id, DEV_PUBLISHABLE_KEY);
        assert_eq!(cfg.apps[1].id, OTHER_APP);
        assert_eq!(cfg.limits.rate, Some(RateLimit::DEFAULT));
    }
}
