//! REST control-plane load driven by goose: a `[[rest]]` population of a scenario.
//!
//! A backend calls `POST /v1/channels/:id/publish` (and, by weight, `GET
//! /v1/channels/:id/peers` and `DELETE /v1/peers/:id`) on the rooms of one WebSocket
//! population while its members listen. goose does what it is good at: the HTTP client,
//! per-endpoint request metrics (count, failures, status codes, response-time
//! percentiles in µs). It is a closed-loop tool (each user waits for its response), so
//! the *schedule* is ours, as for peer publishes: every request has an intended time
//! (constant or Poisson arrivals at the aggregate `rate`), the goose users take the next
//! request in time order, sleep until its intended time and send it; lateness goes into
//! `schedule_lag` like any send of the engine.
//!
//! A REST publish carries `{"p":P,"s":S,"t":T,"pad":…}` in `data`, where `P` is a
//! *virtual publisher* id `REST_BASE + user × channels + channel`: one per goose user and
//! room, so the sequence numbers of one publisher → subscriber pair come from one
//! sequential client (a reordering is the server's). Subscribers record these `system`
//! messages in their own histogram (`system_fanout`), and each virtual publisher becomes
//! one more publisher log for [`super::accounting::account`]: its copies are expected at
//! every member subscribed before the send and still subscribed `grace` after it (REST-31
//! excludes nobody). A 200 response is the "ack"; 4xx/5xx refuse the publish; a
//! transport error leaves it unconfirmed.
//!
//! Ctrl-C: `GooseAttack::execute` installs a process-wide SIGINT handler with
//! `ctrlc::set_handler`, which *overwrites* whatever was there (our two-stage tokio
//! handler included); its first Ctrl-C would stop only the attack, its second would
//! `exit(1)` before our report is written. So the SIGINT disposition is saved before the
//! attack and put back by the first goose transaction (goose installs its handler while
//! setting up, before any user runs): our handler stays in charge, our stop (first
//! Ctrl-C) ends the attack through goose's public killswitch, and the report is written.
//! `ctrlc` installs only once per process, so later attacks leave the signal alone.
//!
//! Limits: one `[[rest]]` population per scenario (goose's killswitch is process-wide, so
//! one attack per process), single-process runs only (`--workers 1`), and goose's users
//! are tasks with a full HTTP client each (~150 KB): tens of users, not thousands.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goose::GooseAttack;
use goose::config::GooseConfiguration;
use goose::goose::{
    GooseMethod, GooseRequest, GooseUser, Scenario as GooseScenario, Transaction, TransactionResult,
};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::accounting::{ACKED, Accounts, PeerLog, REJECTED, UNCONFIRMED, pack, with_status};
use super::engine::Shared;
use super::scenario::{Arrival, Dur, FieldPath, Scenario, Seg};
use crate::metrics::{Counter, Metric, Stats};
use crate::report::Delivery;

/// Virtual publisher ids of REST publishes start here (peer indexes stay far below).
pub const REST_BASE: u32 = 1 << 30;
/// Most requests one run may schedule (bounded memory: 24 B each).
const MAX_REQUESTS: usize = 5_000_000;

/// `[[rest]]` in a scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestPopulation {
    /// Names the population in the report (`rest.population`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The WebSocket population whose rooms are hit (each request picks one at random).
    pub population: String,
    /// goose users: concurrent HTTP clients that share the schedule.
    #[serde(default = "default_users")]
    pub users: u32,
    /// Requests per second, all endpoints together.
    pub rate: f64,
    #[serde(default)]
    pub arrival: Arrival,
    /// Share of each endpoint in the requests.
    #[serde(default)]
    pub weights: Weights,
    /// Bytes of the `data` JSON of each publish (at least 64).
    #[serde(default = "default_size")]
    pub size: u32,
    /// First request this long after the start.
    #[serde(default)]
    pub start: Dur,
    /// `from` of the publishes (REST-34).
    #[serde(default = "default_from")]
    pub from: String,
    /// Per-request timeout; a request that times out is unconfirmed.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

/// Relative weights of the endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// `POST /v1/channels/:id/publish`.
    #[serde(default = "one")]
    pub publish: f64,
    /// `GET /v1/channels/:id/peers`.
    #[serde(default)]
    pub peers: f64,
    /// `DELETE /v1/peers/:id` of a random member of the room (closed with 4020; the SDK
    /// policy never reconnects after 4020, so kicks thin the room out).
    #[serde(default)]
    pub kick: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            publish: 1.0,
            peers: 0.0,
            kick: 0.0,
        }
    }
}

fn default_name() -> String {
    "backend".into()
}
fn default_users() -> u32 {
    8
}
fn default_size() -> u32 {
    96
}
fn default_from() -> String {
    "system".into()
}
fn default_timeout() -> Dur {
    Dur::secs(5)
}
fn one() -> f64 {
    1.0
}

/// Checks the `[[rest]]` tables of `s`; the error names the field.
pub fn validate(s: &Scenario) -> Result<(), (FieldPath, String)> {
    use Seg::{Idx, Key};
    let at = |i: usize, k: &'static str| FieldPath(vec![Key("rest"), Idx(i), Key(k)]);
    if s.rest.len() > 1 {
        return Err((
            FieldPath(vec![Key("rest"), Idx(1)]),
            "at most one [[rest]] population per scenario (goose runs one attack per process)"
                .into(),
        ));
    }
    for (i, r) in s.rest.iter().enumerate() {
        if r.name.trim().is_empty() {
            return Err((at(i, "name"), "must not be empty".into()));
        }
        let Some(p) = s.populations.iter().find(|p| p.name == r.population) else {
            let names: Vec<&str> = s.populations.iter().map(|p| p.name.as_str()).collect();
            return Err((
                at(i, "population"),
                format!(
                    "no population named \"{}\" (have: {})",
                    r.population,
                    names.join(", ")
                ),
            ));
        };
        if p.room_count() == 0 {
            return Err((
                at(i, "population"),
                format!("population \"{}\" has no rooms to publish to", p.name),
            ));
        }
        if !(1..=1000).contains(&r.users) {
            return Err((at(i, "users"), format!("{} must be 1..=1000", r.users)));
        }
        if !(r.rate.is_finite() && r.rate > 0.0 && r.rate <= 10_000.0) {
            return Err((
                at(i, "rate"),
                format!("{} must be > 0 and at most 10000 per second", r.rate),
            ));
        }
        let w = &r.weights;
        if [w.publish, w.peers, w.kick]
            .iter()
            .any(|x| !x.is_finite() || *x < 0.0)
            || w.publish + w.peers + w.kick <= 0.0
        {
            return Err((
                at(i, "weights"),
                "weights must be ≥ 0 with a positive sum".into(),
            ));
        }
        if !(64..=30_000).contains(&r.size) {
            return Err((
                at(i, "size"),
                format!(
                    "{} must be 64..=30000 bytes (REST bodies are limited to 32 KB)",
                    r.size
                ),
            ));
        }
        if r.start >= s.duration {
            return Err((at(i, "start"), "must be before `duration`".into()));
        }
        if r.from.is_empty()
            || r.from.len() > 128
            || !r.from.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err((
                at(i, "from"),
                "must be 1-128 bytes of printable ASCII (REST-34)".into(),
            ));
        }
        if r.timeout.0 < Duration::from_millis(100) || r.timeout.0 > Duration::from_secs(60) {
            return Err((at(i, "timeout"), "must be 100ms..=60s".into()));
        }
        let planned = r.rate * s.duration.0.saturating_sub(r.start.0).as_secs_f64();
        if planned > MAX_REQUESTS as f64 {
            return Err((
                at(i, "rate"),
                format!("{planned:.0} requests planned; at most {MAX_REQUESTS} per run"),
            ));
        }
    }
    Ok(())
}

/// One endpoint as the report shows it (from goose's request metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub method: String,
    pub path: String,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    /// HTTP status → count (`"0"`: no response).
    pub status_codes: BTreeMap<String, u64>,
    /// Request sent → response received, µs (goose's timing buckets).
    pub response_us: Stats,
}

/// `rest` in summary.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestReport {
    pub population: String,
    /// The WebSocket population whose rooms were hit.
    pub rooms_of: String,
    pub rooms: u64,
    pub users: u32,
    pub rate: f64,
    /// Requests on the schedule, sent, and not sent (the run ended or was stopped first).
    pub planned: u64,
    pub sent: u64,
    pub skipped: u64,
    /// By endpoint name: `publish`, `peers`, `kick`.
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Sum of `delivered` in publish responses (REST-33: connections sent the message).
    pub publish_delivered: u64,
    /// Accounting of the REST publishes alone (also included in `delivery`).
    pub delivery: Delivery,
    /// goose's own view of the run: version, users started, seconds it ran.
    pub goose: GooseInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GooseInfo {
    pub version: String,
    pub users_started: u64,
    pub duration_s: u64,
    /// Set when goose itself failed; the REST numbers are then incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the attack hands back to the engine.
pub struct RestOutcome {
    /// One publisher log per virtual publisher, for the accounting.
    pub logs: Vec<PeerLog>,
    pub report: RestReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    Peers,
    Kick,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    at_rel_us: u64,
    kind: Kind,
    channel: u32,
    /// Global index of the member to kick.
    member: u32,
}

/// The schedule: every request with its intended time, in time order.
fn schedule(s: &Scenario, r: &RestPopulation, sh: &Shared) -> (Vec<Req>, u64) {
    let layout = &sh.layout;
    let pi = s
        .populations
        .iter()
        .position(|p| p.name == r.population)
        .unwrap_or(0) as u16;
    let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in &layout.peers {
        if let (Some(c), true) = (p.channel, p.population == pi) {
            members.entry(c).or_default().push(p.global);
        }
    }
    let rooms: Vec<(u32, Vec<u32>)> = members.into_iter().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed ^ 0x5245_5354); // "REST"
    let w = &r.weights;
    let total_w = w.publish + w.peers + w.kick;
    let end = s.duration.as_us();
    let gap = 1e6 / r.rate;
    let mut t = r.start.as_us() as f64
        + match r.arrival {
            Arrival::Constant => rng.random::<f64>() * gap,
            Arrival::Poisson => -gap * (1.0 - rng.random::<f64>()).ln(),
        };
    let mut out = Vec::new();
    while (t as u64) < end && out.len() < MAX_REQUESTS && !rooms.is_empty() {
        let (channel, m) = &rooms[rng.random_range(0..rooms.len())];
        let x = rng.random::<f64>() * total_w;
        let kind = if x < w.publish {
            Kind::Publish
        } else if x < w.publish + w.peers {
            Kind::Peers
        } else {
            Kind::Kick
        };
        out.push(Req {
            at_rel_us: t as u64,
            kind,
            channel: *channel,
            member: m[rng.random_range(0..m.len())],
        });
        t += match r.arrival {
            Arrival::Constant => gap,
            Arrival::Poisson => -gap * (1.0 - rng.random::<f64>()).ln(),
        };
    }
    (out, rooms.len() as u64)
}

/// Publish log of one virtual publisher.
struct VPub {
    channel: u32,
    log: Vec<u64>,
}

/// The SIGINT disposition before goose replaced it.
#[derive(Clone, Copy)]
struct SavedSigint(libc::sigaction);

impl SavedSigint {
    fn save() -> Option<SavedSigint> {
        // SAFETY: a query (null new action) into a zeroed, properly sized struct.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) == 0)
                .then_some(SavedSigint(old))
        }
    }

    fn restore(&self) {
        // SAFETY: reinstalls exactly the action the kernel reported before.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.0, std::ptr::null_mut());
        }
    }
}

struct State {
    sh: Arc<Shared>,
    sigint: Option<SavedSigint>,
    sigint_restored: std::sync::atomic::AtomicBool,
    reqs: Vec<Req>,
    cursor: AtomicUsize,
    /// Requests claimed and finished (sent or skipped).
    finished: AtomicUsize,
    sent: AtomicU64,
    skipped: AtomicU64,
    delivered: AtomicU64,
    /// Per endpoint index (`Endpoint` of the room's target): `http://host:port/v1`.
    rest_urls: Vec<String>,
    auth: String,
    channels: u32,
    pad: String,
    from_json: String,
    pubs: Mutex<HashMap<u32, VPub>>,
}

impl State {
    fn url(&self, channel: u32) -> &str {
        // Rooms are pinned to targets by id, as for the peers (plan::Layout).
        &self.rest_urls[channel as usize % self.rest_urls.len()]
    }
}

/// How goose's users reach the REST control plane: the targets' REST bases
/// (`https://host:port/v1`), the run's TLS configuration (`--cacert`, `--insecure`,
/// client certificates, SSLKEYLOGFILE) and each host pinned to the address the peers
/// dial (`--connect-to`, resolved once).
#[derive(Clone)]
pub struct RestClient {
    urls: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    pins: Vec<(String, std::net::SocketAddr)>,
    timeout: Duration,
}

impl RestClient {
    /// Fails (with the reason) when goose's client cannot dial the way the peers do.
    pub fn new(
        endpoints: &[super::connect::Dest],
        connector: &crate::transport::Connector,
        timeout: Duration,
    ) -> Result<RestClient, String> {
        let mut urls = Vec::new();
        let mut pins = Vec::new();
        for d in endpoints {
            let ep = &d.endpoint;
            let mut url = crate::transport::Endpoint::rest_base(d.url());
            if d.addr.port() != ep.port {
                // reqwest dials the URL's port whatever the pinned address says.
                let default = if ep.secure { 443 } else { 80 };
                if ep.port != default {
                    return Err(format!(
                        "the [[rest]] population cannot follow --connect-to from port {} to {} (its HTTP client always dials the URL's port); use a target URL on port {default} or a rule that keeps the port",
                        ep.port,
                        d.addr.port()
                    ));
                }
                url = url.replacen(&format!(":{}/", ep.port), "/", 1);
            }
            match ep.host.parse::<std::net::IpAddr>() {
                Err(_) => pins.push((ep.host.clone(), d.addr)),
                // reqwest resolves no IP literal: it can only dial the URL's address.
                Ok(ip) if ip != d.addr.ip() => {
                    return Err(format!(
                        "the [[rest]] population cannot follow --connect-to from {ip} to {} (its HTTP client dials an IP address URL as written); name the target by host name",
                        d.addr.ip()
                    ));
                }
                Ok(_) => {}
            }
            urls.push(url);
        }
        Ok(RestClient {
            urls,
            tls: connector.tls().map(|t| t.config().clone()),
            pins,
            timeout,
        })
    }

    /// Gives the goose user a client built like the peers' connections.
    async fn install(&self, user: &mut GooseUser) -> TransactionResult {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("stampede/", env!("CARGO_PKG_VERSION")))
            .timeout(self.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            b = b.tls_backend_preconfigured((**tls).clone());
        }
        for (host, addr) in &self.pins {
            b = b.resolve(host, *addr);
        }
        user.set_client_builder(b).await?;
        Ok(())
    }
}

/// Marks a claimed request finished on every path out of [`step`].
struct Finished<'a>(&'a State);
impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// One goose transaction: the next request of the schedule, sent at its intended time.
async fn step(st: Arc<State>, user: &mut GooseUser) -> TransactionResult {
    if let Some(saved) = st.sigint
        && !st.sigint_restored.swap(true, Ordering::AcqRel)
    {
        saved.restore();
    }
    let i = st.cursor.fetch_add(1, Ordering::AcqRel);
    let Some(r) = st.reqs.get(i).copied() else {
        // Schedule exhausted: idle until the engine ends the attack.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(());
    };
    let _done = Finished(&st);
    let sh = &st.sh;
    let intended = sh.t0_us + r.at_rel_us;
    loop {
        if intended >= sh.end_us() {
            st.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let now = sh.clock.now_us();
        if now >= intended {
            break;
        }
        tokio::time::sleep(Duration::from_micros(intended - now).min(Duration::from_millis(100)))
            .await;
    }
    let now = sh.clock.now_us();
    sh.metrics.record(Metric::ScheduleLag, now - intended);
    st.sent.fetch_add(1, Ordering::Relaxed);
    let base = st.url(r.channel);
    let enc = percent_encoding::utf8_percent_encode(
        &sh.layout.channels[r.channel as usize],
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    match r.kind {
        Kind::Publish => {
            let vp = REST_BASE + user.weighted_users_index as u32 * st.channels + r.channel;
            let sent_rel = sh.clock.now_us().saturating_sub(sh.t0_us);
            let seq = {
                let mut pubs = st.pubs.lock().unwrap_or_else(|p| p.into_inner());
                let e = pubs.entry(vp).or_insert_with(|| VPub {
                    channel: r.channel,
                    log: Vec::new(),
                });
                e.log.push(pack(sent_rel, super::accounting::PENDING));
                e.log.len() - 1
            };
            let data = format!(
                "{{\"p\":{vp},\"s\":{seq},\"t\":{intended},\"pad\":\"{}\"}}",
                st.pad
            );
            let body = format!("{{\"data\":{data},\"from\":{}}}", st.from_json);
            let url = format!("{base}/channels/{enc}/publish");
            let rb = user
                .get_request_builder(&GooseMethod::Post, &url)?
                .header("authorization", &st.auth)
                .header("content-type", "application/json")
                .body(body);
            let req = GooseRequest::builder()
                .method(GooseMethod::Post)
                .name("publish")
                .set_request_builder(rb)
                .build();
            sh.metrics.count(Counter::Publishes, 1);
            let status = match user.request(req).await {
                Ok(resp) => match resp.response {
                    Ok(res) if res.status().as_u16() == 200 => {
                        if let Ok(text) = res.text().await
                            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                            && let Some(n) = v.get("delivered").and_then(|d| d.as_u64())
                        {
                            st.delivered.fetch_add(n, Ordering::Relaxed);
                        }
                        ACKED
                    }
                    Ok(_) => REJECTED,
                    Err(_) => UNCONFIRMED,
                },
                Err(_) => UNCONFIRMED,
            };
            let mut pubs = st.pubs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = pubs.get_mut(&vp).and_then(|v| v.log.get_mut(seq)) {
                *e = with_status(*e, status);
            }
        }
        Kind::Peers => {
            let url = format!("{base}/channels/{enc}/peers");
            let rb = user
                .get_request_builder(&GooseMethod::Get, &url)?
                .header("authorization", &st.auth);
            let req = GooseRequest::builder()
                .method(GooseMethod::Get)
                .name("peers")
                .set_request_builder(rb)
                .build();
            let _ = user.request(req).await;
        }
        Kind::Kick => {
            let id = sh.peer_id(r.member);
            let url = format!("{base}/peers/{id}");
            let rb = user
                .get_request_builder(&GooseMethod::Delete, &url)?
                .header("authorization", &st.auth);
            let req = GooseRequest::builder()
                .method(GooseMethod::Delete)
                .name("kick")
                .set_request_builder(rb)
                .build();
            let _ = user.request(req).await;
        }
    }
    Ok(())
}

fn path_of(name: &str) -> &'static str {
    match name {
        "publish" => "/v1/channels/:id/publish",
        "peers" => "/v1/channels/:id/peers",
        "kick" => "/v1/peers/:id",
        _ => "",
    }
}

fn endpoint_stats(m: &goose::metrics::GooseMetrics) -> BTreeMap<String, EndpointStats> {
    let mut out = BTreeMap::new();
    for (key, a) in &m.requests {
        // goose keys requests "METHOD name".
        let name = key
            .split_once(' ')
            .map(|(_, n)| n)
            .unwrap_or(key)
            .to_owned();
        let t = &a.raw_data;
        let count = t.counter as u64;
        let response_us = if count == 0 {
            Stats::default()
        } else {
            Stats {
                count,
                min: t.minimum_time_us,
                p50: t.percentile_us(0.5),
                p90: t.percentile_us(0.9),
                p99: t.percentile_us(0.99),
                p999: t.percentile_us(0.999),
                max: t.maximum_time_us,
                mean: (t.total_time_us as f64 / count as f64 * 10.0).round() / 10.0,
            }
        };
        out.insert(
            name.clone(),
            EndpointStats {
                method: format!("{:?}", a.method).to_uppercase(),
                path: path_of(&name).to_owned(),
                requests: (a.success_count + a.fail_count) as u64,
                successes: a.success_count as u64,
                failures: a.fail_count as u64,
                status_codes: a
                    .status_code_counts
                    .iter()
                    .map(|(c, n)| (c.to_string(), *n as u64))
                    .collect(),
                response_us,
            },
        );
    }
    out
}

/// Runs the `[[rest]]` population of `sh.scenario` (if any) to the end of the run.
/// goose runs on its own runtime thread, so its futures need not be `Send` and its
/// work stays off the peers' schedulers; the threads carry the harness's name, so the
/// CPU they use counts as the harness's.
pub async fn run(sh: Arc<Shared>) -> Option<RestOutcome> {
    let s = sh.scenario.clone();
    let r = s.rest.first()?.clone();
    let (reqs, rooms) = schedule(&s, &r, &sh);
    let planned = reqs.len() as u64;
    let client = match RestClient::new(&sh.endpoints, &sh.connector, r.timeout.0) {
        Ok(c) => c,
        Err(why) => {
            return Some(RestOutcome {
                logs: Vec::new(),
                report: RestReport {
                    population: r.name.clone(),
                    goose: GooseInfo {
                        error: Some(why),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            });
        }
    };
    let rest_urls = client.urls.clone();
    // data = {"p":…,"s":…,"t":…,"pad":"…"}: ~45 bytes of fields, the rest padding.
    let pad = "x".repeat((r.size as usize).saturating_sub(60));
    let st = Arc::new(State {
        auth: format!("Bearer {}:{}", sh.creds.key_id, sh.creds.secret),
        channels: sh.layout.channels.len() as u32,
        from_json: serde_json::to_string(&r.from).unwrap_or_else(|_| "\"system\"".into()),
        sh: sh.clone(),
        sigint: SavedSigint::save(),
        sigint_restored: std::sync::atomic::AtomicBool::new(false),
        reqs,
        cursor: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        rest_urls,
        pad,
        pubs: Mutex::new(HashMap::new()),
    });
    let mut report = RestReport {
        population: r.name.clone(),
        rooms_of: r.population.clone(),
        rooms,
        users: r.users,
        rate: r.rate,
        planned,
        goose: GooseInfo {
            version: "0.19".into(),
            ..Default::default()
        },
        ..Default::default()
    };

    // Upper bound of the attack: the end of the run plus the drain, plus slack.
    let limit_s = (sh.end_us() + sh.grace_us).saturating_sub(sh.clock.now_us()) / 1_000_000 + 15;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let attack_state = st.clone();
    let users = r.users as usize;
    let timeout = r.timeout.0.as_secs_f64();
    let host = st.rest_urls[0].clone();
    let spawned = std::thread::Builder::new()
        .name(crate::metrics::sys::LOAD_THREAD_NAME.into())
        .spawn(move || {
            let result = (|| -> anyhow::Result<goose::metrics::GooseMetrics> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(crate::metrics::sys::LOAD_THREAD_NAME)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut cfg = GooseConfiguration::default();
                    cfg.host = Some(host);
                    cfg.users = Some(users);
                    cfg.increase_rate = Some(format!("{}", users * 20));
                    cfg.run_time = Some(format!("{limit_s}"));
                    cfg.timeout = Some(format!("{timeout}"));
                    cfg.no_print_metrics = true;
                    cfg.no_error_summary = true;
                    cfg.no_reset_metrics = true;
                    cfg.no_telnet = true;
                    cfg.no_transaction_metrics = true;
                    cfg.no_scenario_metrics = true;
                    cfg.quiet = 1;
                    let on_start = Transaction::new(Arc::new(move |u| {
                        let c = client.clone();
                        Box::pin(async move { c.install(u).await })
                    }))
                    .set_name("client")
                    .set_on_start();
                    let st = attack_state.clone();
                    let tx = Transaction::new(Arc::new(move |u| {
                        let st = st.clone();
                        Box::pin(async move { step(st, u).await })
                    }))
                    .set_name("next request");
                    let attack = GooseAttack::initialize_with_config(cfg)?.register_scenario(
                        GooseScenario::new("rest")
                            .register_transaction(on_start)
                            .register_transaction(tx),
                    );
                    Ok(attack.execute().await?)
                })
            })();
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        report.goose.error = Some(format!("cannot start the goose thread: {e}"));
        return Some(RestOutcome {
            logs: Vec::new(),
            report,
        });
    }

    // End the attack once the schedule is done, on a stop, or at the hard limit. goose
    // clears its killswitch when an attack starts, so keep pulling it until it returns.
    let ender = {
        let st = st.clone();
        tokio::spawn(async move {
            let hard = st.sh.clock.now_us() + limit_s * 1_000_000;
            loop {
                let sh = &st.sh;
                let now = sh.clock.now_us();
                let all_done = st.finished.load(Ordering::Acquire) >= st.reqs.len()
                    || (now >= sh.end_us()
                        && st.finished.load(Ordering::Acquire)
                            >= st.cursor.load(Ordering::Acquire).min(st.reqs.len()));
                if all_done || now >= hard {
                    goose::trigger_killswitch("stampede: REST schedule finished");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = match tokio::time::timeout(Duration::from_secs(limit_s + 30), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(anyhow::anyhow!("the goose thread ended without a result")),
        Err(_) => Err(anyhow::anyhow!(
            "goose did not stop within {}s",
            limit_s + 30
        )),
    };
    ender.abort();
    // If no transaction ever ran, goose's handler may still be installed.
    if let Some(saved) = st.sigint
        && !st.sigint_restored.swap(true, Ordering::AcqRel)
    {
        saved.restore();
    }
    match result {
        Ok(m) => {
            report.endpoints = endpoint_stats(&m);
            report.goose.users_started = m.maximum_users as u64;
            report.goose.duration_s = m.duration as u64;
        }
        Err(e) => report.goose.error = Some(format!("{e:#}")),
    }
    report.sent = st.sent.load(Ordering::Relaxed);
    report.skipped = st.skipped.load(Ordering::Relaxed)
        + planned.saturating_sub(st.cursor.load(Ordering::Acquire).min(st.reqs.len()) as u64);
    report.publish_delivered = st.delivered.load(Ordering::Relaxed);

    let pubs = std::mem::take(&mut *st.pubs.lock().unwrap_or_else(|p| p.into_inner()));
    let mut logs: Vec<PeerLog> = pubs
        .into_iter()
        .map(|(vp, v)| PeerLog {
            global: vp,
            population: u16::MAX,
            channel: Some(v.channel),
            publishes: v
                .log
                .into_iter()
                .map(|e| {
                    // A request still pending here never got an answer.
                    if super::accounting::status_of(e) == super::accounting::PENDING {
                        with_status(e, UNCONFIRMED)
                    } else {
                        e
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    logs.sort_by_key(|l| l.global);
    Some(RestOutcome { logs, report })
}

/// The REST lines of the end-of-run summary on stdout.
pub fn text_lines(r: &RestReport) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1e3);
    let mut o = format!(
        "rest        {} (goose, {} users): {} requests planned, {} sent, {} not sent\n",
        r.population, r.users, r.planned, r.sent, r.skipped
    );
    for (name, e) in &r.endpoints {
        let codes: Vec<String> = e
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        o.push_str(&format!(
            "  {:<7} {} {} · {} requests · {} failed · {} · p50 {} · p99 {} · max {}\n",
            name,
            e.method,
            e.path,
            e.requests,
            e.failures,
            codes.join(" "),
            ms(e.response_us.p50),
            ms(e.response_us.p99),
            ms(e.response_us.max),
        ));
    }
    let d = &r.delivery;
    o.push_str(&format!(
        "  system messages: expected {} · delivered {} · lost {} · duplicated {} · reordered {} (server says delivered {})\n",
        d.expected, d.delivered, d.lost, d.duplicated, d.reordered, r.publish_delivered
    ));
    if let Some(e) = &r.goose.error {
        o.push_str(&format!("  goose failed: {e}\n"));
    }
    o
}

/// Delivery accounting with the REST publishers' logs added as publishers of their rooms;
/// also fills the REST report's own `delivery` (the REST publishes alone).
pub fn account(
    mut logs: Vec<PeerLog>,
    names: &[String],
    grace_us: u64,
    rest: Option<RestOutcome>,
) -> (Accounts, Option<RestReport>) {
    let Some(mut rest) = rest else {
        return (super::accounting::account(&logs, names, grace_us), None);
    };
    let total = |m: &BTreeMap<String, Delivery>| {
        let mut t = Delivery::default();
        for d in m.values() {
            t.merge(d);
        }
        t
    };
    let peers_only = super::accounting::account(&logs, names, grace_us).channel;
    logs.append(&mut rest.logs);
    let mut all = super::accounting::account(&logs, names, grace_us);
    // The virtual publishers receive nothing: drop their empty rows.
    let none = format!("population-{}", u16::MAX);
    all.channel.remove(&none);
    all.direct.remove(&none);
    rest.report.delivery = share(&total(&all.channel), &total(&peers_only));
    (all, Some(rest.report))
}

/// The REST publishes' share of the accounting: `with` (all publishers) minus `without`
/// (peer publishers only); expected, delivered, lost, duplicated and reordered add up
/// per publisher → subscriber pair, so the difference is exact.
pub fn share(with: &Delivery, without: &Delivery) -> Delivery {
    Delivery {
        expected: with.expected.saturating_sub(without.expected),
        delivered: with.delivered.saturating_sub(without.delivered),
        lost: with.lost.saturating_sub(without.lost),
        duplicated: with.duplicated.saturating_sub(without.duplicated),
        reordered: with.reordered.saturating_sub(without.reordered),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Result<Scenario, String> {
        let text = format!(
            "name = \"t\"\nduration = \"5s\"\n[[population]]\nname = \"listeners\"\npeers = 20\nroom_size = 5\n{extra}"
        );
        let s: Scenario = toml::from_str(&text).map_err(|e| e.to_string())?;
        s.validate().map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(s)
    }

    #[test]
    fn rest_tables_parse_and_validate() {
        let s = scenario("[[rest]]\npopulation = \"listeners\"\nrate = 50\n").unwrap();
        assert_eq!(s.rest[0].users, 8);
        assert_eq!(s.rest[0].from, "system");
        let e = scenario("[[rest]]\npopulation = \"nobody\"\nrate = 50\n").unwrap_err();
        assert!(
            e.contains("rest[0].population") && e.contains("nobody"),
            "{e}"
        );
        let e = scenario("[[rest]]\npopulation = \"listeners\"\nrate = 0\n").unwrap_err();
        assert!(e.contains("rest[0].rate"), "{e}");
        let e =
            scenario("[[rest]]\npopulation = \"listeners\"\nrate = 5\nsize = 10\n").unwrap_err();
        assert!(e.contains("rest[0].size"), "{e}");
        let e =
            scenario("[[rest]]\npopulation = \"listeners\"\nrate = 5\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        // Round trip: the scenario as it ran keeps the table.
        let s = scenario(
            "[[rest]]\npopulation = \"listeners\"\nrate = 50\n[rest.weights]\npeers = 0.5\n",
        )
        .unwrap();
        let back: Scenario = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(back.rest[0].weights.peers, 0.5);
    }

    #[test]
    fn share_is_the_difference() {
        let with = Delivery {
            expected: 10,
            delivered: 9,
            lost: 1,
            ..Default::default()
        };
        let without = Delivery {
            expected: 4,
            delivered: 4,
            ..Default::default()
        };
        let d = share(&with, &without);
        assert_eq!((d.expected, d.delivered, d.lost), (6, 5, 1));
    }
}
