//! Server-wide state: apps with their plans, usage and hub; keys; the clock; the
//! per-IP connection limiter; counters. Shared by every task through one `Arc<Shared>`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::{AppConfig, Compat, Config, Limits, Plan, RateLimit};
use super::faults::FaultSet;
use super::hub::Hub;
use super::inject::Injector;
use super::variants::VariantSet;
use crate::proto::{Actions, Pattern};

/// Length of a billing period the server starts by itself.
pub const PERIOD_SECS: i64 = 30 * 86_400;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every guarded value here stays consistent across a panic (plain data).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// The wall clock used for `exp`, `serverTime` and billing periods, with an adjustable
/// offset so tests can move time (CFG-5). Rate limits use tokio's monotonic clock, which
/// tests control with `tokio::time::pause`.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        sys.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
    }
}

/// A compiled channel pattern with fast paths for the common `**` and literal cases.
#[derive(Debug, Clone)]
pub enum Matcher {
    All,
    Exact(Box<str>),
    Glob(Pattern),
    /// The `pattern-case-insensitive` fault: a lowercased pattern against lowercased names.
    Lower(Pattern),
}

impl Matcher {
    /// [`Matcher::new`] with the pattern faults applied (`fault_text::faulted_pattern`).
    pub fn with_faults(pattern: &str, f: FaultSet) -> Matcher {
        if f.is_empty() {
            return Matcher::new(pattern);
        }
        let p = super::fault_text::faulted_pattern(f, pattern);
        if f.has(super::faults::Fault::PatternCaseInsensitive) {
            return Matcher::Lower(Pattern::new(&p.to_lowercase()));
        }
        Matcher::new(&p)
    }

    pub fn new(pattern: &str) -> Matcher {
        let p = Pattern::new(pattern);
        if !p.is_wildcard() {
            // An escaped-only pattern like `a\*b` still needs the pattern's unescaping.
            if pattern.contains('\\') {
                Matcher::Glob(p)
            } else {
                Matcher::Exact(pattern.into())
            }
        } else if pattern.chars().all(|c| c == '*') && pattern.len() >= 2 {
            Matcher::All
        } else {
            Matcher::Glob(p)
        }
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Exact(name) => **name == *channel,
            Matcher::Glob(p) => p.matches(channel),
            Matcher::Lower(p) => p.matches(&channel.to_lowercase()),
        }
    }
}

/// The channels a connection may use (AUTHZ-1): the key's patterns, intersected with the
/// token's `channels` claim when present.
#[derive(Debug)]
pub struct Scope {
    pub key: Arc<[Matcher]>,
    pub token: Option<Box<[Matcher]>>,
}

impl Scope {
    pub fn allows(&self, channel: &str) -> bool {
        self.key.iter().any(|m| m.matches(channel))
            && self
                .token
                .as_ref()
                .is_none_or(|t| t.iter().any(|m| m.matches(channel)))
    }
}

/// A secret key as the server uses it (CFG-2).
#[derive(Debug)]
pub struct SecretKey {
    pub id: String,
    pub secret: String,
    pub legacy: Option<String>,
    pub app: Arc<App>,
    pub patterns: Arc<[Matcher]>,
    pub actions: Actions,
    pub auto_inject_turn: bool,
    pub revoked: AtomicBool,
}

/// A publishable key (CFG-3).
#[derive(Debug)]
pub struct PublishableKey {
    pub id: String,
    pub app: Arc<App>,
    pub patterns: Arc<[Matcher]>,
    pub actions: Actions,
    pub allowed_origins: Vec<String>,
    pub auto_inject_turn: bool,
    pub revoked: AtomicBool,
}

/// Billing counters of one app (QUOTA-*, REST-50).
#[derive(Debug, Default)]
pub struct Usage {
    period: Mutex<(Option<i64>, Option<i64>)>,
    pub concurrent: AtomicU64,
    pub peak: AtomicU64,
    pub messages_used: AtomicU64,
    pub overage_messages: AtomicU64,
    pub overage_connections: AtomicU64,
}

/// One tenant: plan, usage, limits and its routing hub.
#[derive(Debug)]
pub struct App {
    pub id: String,
    pub suspended: AtomicBool,
    pub plan: RwLock<Plan>,
    pub usage: Usage,
    pub max_message_size: usize,
    pub rate: Option<RateLimit>,
    pub compat: Compat,
    pub hub: Hub,
}

impl App {
    pub fn plan(&self) -> Plan {
        read(&self.plan).clone()
    }

    /// Admits a connection against `maxConcurrentConnections` (QUOTA-6); false → 4010.
    pub fn admit(&self) -> bool {
        let (max, usable) = {
            let plan = read(&self.plan);
            (plan.max_concurrent_connections, plan.overages_usable())
        };
        let u = &self.usage;
        let mut cur = u.concurrent.load(Ordering::Acquire);
        loop {
            if cur >= max && !usable {
                return false;
            }
            match u.concurrent.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur >= max {
            u.overage_connections.fetch_add(1, Ordering::Relaxed);
        }
        u.peak.fetch_max(cur + 1, Ordering::Relaxed);
        true
    }

    /// A connection admitted by [`App::admit`] ended (QUOTA-7).
    pub fn release(&self) {
        self.usage.concurrent.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts one `publish`/`send`/REST publish at the quota gate (QUOTA-2…4, PUB-7,
    /// SEND-7). False → `over_message_quota`; the attempt is counted either way.
    pub fn charge_message(&self) -> bool {
        let (max, usable) = {
            let plan = read(&self.plan);
            (plan.max_messages_per_period, plan.overages_usable())
        };
        let used = self.usage.messages_used.fetch_add(1, Ordering::Relaxed);
        if used < max {
            true
        } else if usable {
            self.usage.overage_messages.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Starts a new billing period at `now_s`: counters reset, peak = current count.
    pub fn new_period(&self, now_s: i64) {
        *lock(&self.usage.period) = (Some(now_s), Some(now_s + PERIOD_SECS));
        let u = &self.usage;
        u.messages_used.store(0, Ordering::Relaxed);
        u.overage_messages.store(0, Ordering::Relaxed);
        u.overage_connections.store(0, Ordering::Relaxed);
        u.peak
            .store(u.concurrent.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The `GET /v1/usage` body (REST-50) as a `Value` (admin hook, tests).
    pub fn usage_json(&self) -> Value {
        serde_json::to_value(self.usage()).expect("usage serializes")
    }

    /// The `GET /v1/usage` body (REST-50), members in SPEC's order.
    pub fn usage(&self) -> super::http::Ordered {
        let (start, end) = *lock(&self.usage.period);
        let plan = self.plan();
        let u = &self.usage;
        super::http::ordered!({
            "appId": self.id,
            "periodStartUnix": start,
            "periodEndUnix": end,
            "concurrentNow": u.concurrent.load(Ordering::Relaxed),
            "peakConcurrent": u.peak.load(Ordering::Relaxed),
            "messagesUsed": u.messages_used.load(Ordering::Relaxed),
            "overageMessages": u.overage_messages.load(Ordering::Relaxed),
            "overageConnections": u.overage_connections.load(Ordering::Relaxed),
            "plan": super::http::ordered!({
                "name": plan.name,
                "maxConcurrentConnections": plan.max_concurrent_connections,
                "maxMessagesPerPeriod": plan.max_messages_per_period,
                "overagesAllowed": plan.overages_allowed,
                "overagesEnabled": plan.overages_enabled,
            }),
        })
    }
}

/// Per-source-IP connection-attempt buckets (RATE-5): capacity `per_window`, refilled
/// evenly over `window`.
#[derive(Debug)]
pub struct IpLimiter {
    per_window: u32,
    window: Duration,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl IpLimiter {
    pub fn new(per_window: u32, window: Duration) -> IpLimiter {
        IpLimiter {
            per_window,
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `ip`; false → HTTP 429.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.per_window == 0 {
            return true;
        }
        let cap = self.per_window as f64;
        let per_sec = cap / self.window.as_secs_f64().max(0.001);
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() > 65_536 {
            // Forget sources whose buckets have refilled: they carry no state.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < cap
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Server-wide counters (for logs, `/_admin/stats` and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections closed with 1013 because their outbound queue overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// WebSocket connections that got a `welcome`.
    pub connections_total: AtomicU64,
    /// Upgrades refused by the per-IP limit.
    pub ip_limited: AtomicU64,
    /// Connections closed by the 4011 rate limit.
    pub rate_limited: AtomicU64,
    /// TLS handshakes that failed or timed out (bad or missing client certificate, a
    /// client that does not trust ours, plain HTTP on the TLS port, …).
    pub tls_handshake_failures: AtomicU64,
    /// `message` and `direct` copies queued for delivery (benchmarks read the steady
    /// window from it: `GET /_admin/stats`).
    pub copies: AtomicU64,
    /// Heartbeat Pings sent (HB-1), Pongs received, and connections dropped because no
    /// frame followed a Ping within the grace period (HB-2).
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub heartbeat_drops: AtomicU64,
}

/// What fault switches remember across connections: `subscriptions-restored` keeps each
/// peer's last subscriptions, `rest-kick-revokes` the kicked peers. Both keyed by
/// (app, peerId); untouched unless those faults are on.
#[derive(Debug, Default)]
pub struct FaultState {
    pub restore: Mutex<HashMap<AppPeer, Vec<Box<str>>>>,
    pub kicked: Mutex<std::collections::HashSet<AppPeer>>,
}

/// (app id, peerId).
pub type AppPeer = (String, String);

/// Everything the tasks of one server share.
#[derive(Debug)]
pub struct Shared {
    pub limits: Limits,
    pub faults: FaultSet,
    pub variants: VariantSet,
    pub injector: Option<Injector>,
    /// Injected delays or capacity: sessions also ask the precise timer to wake them
    /// when their queued copies fall due (`delay::wake_at`).
    pub precise_delays: bool,
    pub clock: Clock,
    /// `turn.iceServers` (a JSON array) for AUTH-14 injection.
    pub turn: Option<Value>,
    pub admin_token: Option<String>,
    pub legacy_rest_auth: bool,
    pub compat: Compat,
    apps: RwLock<HashMap<String, Arc<App>>>,
    secret_keys: RwLock<HashMap<String, Arc<SecretKey>>>,
    publishable_keys: RwLock<HashMap<String, Arc<PublishableKey>>>,
    legacy_keys: RwLock<HashMap<String, Arc<SecretKey>>>,
    first_secret_key: RwLock<Option<Arc<SecretKey>>>,
    /// Set at the start of a graceful shutdown: new upgrades and REST calls get 503.
    pub shutting_down: AtomicBool,
    pub ip_limiter: IpLimiter,
    /// Upgraded WebSocket tasks still running (drained at shutdown).
    pub live_sessions: AtomicUsize,
    next_id: AtomicU64,
    pub stats: Stats,
    /// Memory of the fault switches that need some (empty otherwise).
    pub fault_state: FaultState,
    /// Asks the server to stop (admin hook, embedded shutdown).
    pub stop_request: watch::Sender<bool>,
}

impl Shared {
    /// When a frame queued now may be written: a random 0-50 ms from now with the
    /// `delayed-frames` variant, otherwise at once (`None`, one bit test).
    #[inline]
    /// When the next `message` or `direct` copy may leave under an injected capacity.
    pub fn capacity_due(&self) -> Option<Instant> {
        self.injector.as_ref().and_then(|i| i.capacity_due())
    }

    pub fn variant_delay(&self) -> Option<Instant> {
        if !self.variants.has(super::variants::Variant::DelayedFrames) {
            return None;
        }
        let ms = rand::random_range(0..=50u64);
        Some(Instant::now() + Duration::from_millis(ms))
    }

    pub fn new(cfg: &Config) -> Shared {
        let injector = cfg
            .inject
            .is_active()
            .then(|| Injector::new(cfg.inject.clone()));
        let shared = Shared {
            limits: cfg.limits.clone(),
            faults: cfg.faults,
            variants: cfg.variants,
            precise_delays: cfg.inject.fanout_delay_ms > 0 || cfg.inject.capacity_per_s > 0,
            injector,
            clock: Clock::default(),
            turn: cfg.turn_ice_servers.clone(),
            admin_token: cfg.admin_token.clone(),
            legacy_rest_auth: cfg.legacy_rest_auth,
            compat: cfg.compat,
            apps: RwLock::new(HashMap::new()),
            secret_keys: RwLock::new(HashMap::new()),
            publishable_keys: RwLock::new(HashMap::new()),
            legacy_keys: RwLock::new(HashMap::new()),
            first_secret_key: RwLock::new(None),
            shutting_down: AtomicBool::new(false),
            ip_limiter: IpLimiter::new(cfg.limits.ip_connect_limit, cfg.limits.ip_window),
            live_sessions: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            stats: Stats::default(),
            fault_state: FaultState::default(),
            stop_request: watch::channel(false).0,
        };
        for app in &cfg.apps {
            shared.add_app(app);
        }
        shared
    }

    /// A fresh id for a connection (also the origin id of its messages).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an app and its keys. Key ids are global (a token's `kid` names the app).
    pub fn add_app(&self, cfg: &AppConfig) -> Arc<App> {
        let app = Arc::new(App {
            id: cfg.id.clone(),
            suspended: AtomicBool::new(cfg.suspended),
            plan: RwLock::new(cfg.plan.clone()),
            usage: Usage::default(),
            max_message_size: cfg.max_message_size.unwrap_or(self.limits.max_message_size),
            rate: cfg.rate.unwrap_or(self.limits.rate),
            compat: cfg.compat.unwrap_or(self.compat),
            hub: Hub::default(),
        });
        match cfg.period {
            Some((start, end)) => *lock(&app.usage.period) = (Some(start), Some(end)),
            None => app.new_period(self.clock.now_s()),
        }
        write(&self.apps).insert(app.id.clone(), app.clone());
        for k in &cfg.secret_keys {
            let key = Arc::new(SecretKey {
                id: k.id.clone(),
                secret: k.secret.clone(),
                legacy: k.legacy.clone(),
                app: app.clone(),
                patterns: k
                    .channel_patterns
                    .iter()
                    .map(|p| Matcher::with_faults(p, self.faults))
                    .collect(),
                actions: k.actions,
                auto_inject_turn: k.auto_inject_turn,
                revoked: AtomicBool::new(k.revoked),
            });
            if let Some(legacy) = &k.legacy {
                write(&self.legacy_keys).insert(legacy.clone(), key.clone());
            }
            write(&self.first_secret_key).get_or_insert_with(|| key.clone());
            write(&self.secret_keys).insert(k.id.clone(), key);
        }
        for k in &cfg.publishable_keys {
            let key = Arc::new(PublishableKey {
                id: k.id.clone(),
                app: app.clone(),
                patterns: k
                    .channel_patterns
                    .iter()
                    .map(|p| Matcher::with_faults(p, self.faults))
                    .collect(),
                actions: k.actions,
                allowed_origins: k.allowed_origins.clone(),
                auto_inject_turn: k.auto_inject_turn,
                revoked: AtomicBool::new(k.revoked),
            });
            write(&self.publishable_keys).insert(k.id.clone(), key);
        }
        app
    }

    pub fn app(&self, id: &str) -> Option<Arc<App>> {
        read(&self.apps).get(id).cloned()
    }

    pub fn apps(&self) -> Vec<Arc<App>> {
        read(&self.apps).values().cloned().collect()
    }

    /// A secret key by id, revoked or not.
    pub fn secret_key(&self, id: &str) -> Option<Arc<SecretKey>> {
        read(&self.secret_keys).get(id).cloned()
    }

    pub fn legacy_key(&self, credential: &str) -> Option<Arc<SecretKey>> {
        read(&self.legacy_keys).get(credential).cloned()
    }

    pub fn publishable_key(&self, id: &str) -> Option<Arc<PublishableKey>> {
        read(&self.publishable_keys).get(id).cloned()
    }

    /// Any publishable key (the `publishable-unknown-accepted` fault admits with it).
    pub fn first_publishable_key(&self) -> Option<Arc<PublishableKey>> {
        read(&self.publishable_keys)
            .values()
            .min_by_key(|k| k.id.clone())
            .cloned()
    }

    /// The first configured secret key (the `accept-unknown-kid` fault verifies with it).
    pub fn first_secret_key(&self) -> Option<Arc<SecretKey>> {
        read(&self.first_secret_key).clone()
    }

    /// Revokes key `key_id` of `app`; false if the app has no such key.
    pub fn revoke_key(&self, app: &App, key_id: &str) -> bool {
        if let Some(k) = self.secret_key(key_id).filter(|k| k.app.id == app.id) {
            k.revoked.store(true, Ordering::Relaxed);
            return true;
        }
        if let Some(k) = self.publishable_key(key_id).filter(|k| k.app.id == app.id) {
            k.revoked.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Open WebSocket connections over all apps.
    pub fn connection_count(&self) -> usize {
        self.apps().iter().map(|a| a.hub.connection_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_fast_paths_agree_with_patterns() {
        for p in ["**", "***", "room-1", "a\\*b", "room-*", "a/**", "*"] {
            let m = Matcher::new(p);
            let pat = Pattern::new(p);
            for name in ["room-1", "a*b", "a/b/c", "room-2", "x", "a\\*b"] {
                assert_eq!(m.matches(name), pat.matches(name), "{p} vs {name}");
            }
        }
        assert!(matches!(Matcher::new("**"), Matcher::All));
    }

    #[test]
    fn quota_and_admission() {
        let mut cfg = AppConfig::new("a");
        cfg.plan.max_concurrent_connections = 1;
        cfg.plan.max_messages_per_period = 2;
        cfg.plan.overages_allowed = false;
        let shared = Shared::new(&Config {
            apps: vec![],
            ..Config::dev()
        });
        let app = shared.add_app(&cfg);
        assert!(app.admit());
        assert!(!app.admit());
        app.release();
        assert!(app.admit());
        assert!(app.charge_message() && app.charge_message());
        assert!(!app.charge_message());
        assert_eq!(app.usage_json()["messagesUsed"], 3);
        app.new_period(100);
        assert!(app.charge_message());
        let u = app.usage_json();
        assert_eq!(
            (u["messagesUsed"].as_u64(), u["periodStartUnix"].as_i64()),
            (Some(1), Some(100))
        );
        write(&app.plan).overages_allowed = true;
        write(&app.plan).overages_enabled = true;
        assert!(app.admit());
        assert_eq!(app.usage_json()["overageConnections"], 1);
    }

    #[test]
    fn ip_limiter_refuses_beyond_capacity() {
        let l = IpLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(l.allow(ip) && l.allow(ip) && l.allow(ip));
        assert!(!l.allow(ip));
        assert!(l.allow("127.0.0.2".parse().unwrap()));
        assert!(IpLimiter::new(0, Duration::from_secs(1)).allow(ip));
    }
}
