//! Runs cases: one task per case (at most `--jobs` at a time), each with its own
//! peers, unique names (`{run}`), source address or connect pacing, and a hard time cap;
//! limit-testing cases (`alone`) run afterwards, one at a time, the connect flood last.
//!
//! A case's steps run in order. Every wait is bounded by the step's `within_ms`, the
//! run's `--timeout-ms`, or a silence window; a dead server makes steps fail with a
//! reason, never hang.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::case::{
    Action, AdminOp, Case, CloseExpect, Credential, Encoding, Flood, Level, PeerSpec, Requirement,
    RestSpec, Step,
};
use super::client::{ConnectError, ConnectOptions, Event, Pacer, SourceIps, WsConn, clip};
use super::invariants::{ConnState, check_text};
use super::log::Log;
use super::matcher::{Outcome, Vars, match_frame, match_value};
use super::verdict::{CaseResult, Failure, Transcript, Verdict, grade};
use crate::embedded::{EmbeddedServer, Options, Tls};
use crate::shutdown::Stop;
use crate::target::Target;
use crate::transport::Connector;

/// Events a silence window keeps for later steps; more is a flood, not a case.
const MAX_KEPT: usize = 10_000;
/// Wire-rule violations kept per case (the first ones explain the failure).
const MAX_VIOLATIONS: usize = 50;
/// Control or unexpected frames during one wait that are worth naming as a flood.
const FLOOD: u64 = 1_000;

/// Everything cases share during one run.
pub struct Env {
    pub target: Target,
    /// Wait bound for an expected frame, close or response.
    pub timeout_ms: u64,
    pub strict: bool,
    pub skip_choices: bool,
    /// Give each case its own loopback source address (embedded or loopback targets).
    pub spread: bool,
    pub ips: Arc<SourceIps>,
    /// Connect budget for remote targets.
    pub pacer: Option<Arc<Pacer>>,
    /// Faults of the server under test, for private embedded servers (self-check).
    pub faults: Vec<String>,
    /// Legal variants of the server under test, for private embedded servers.
    pub variants: Vec<String>,
    /// Random per run, so names never collide with another run on a shared server.
    pub run_id: String,
    /// The target is the reference server (its exact `[choice]` boundaries apply).
    pub reference: bool,
    /// How every connection and REST call of the suite is made (TLS, `--connect-to`).
    pub connector: Connector,
    /// TLS of the embedded servers the suite starts itself (the same certificate as
    /// the target's, so the connector trusts them too).
    pub embedded_tls: Option<Tls>,
}

impl Env {
    /// Why `case` cannot run against this target, if it cannot.
    pub fn skip_reason(&self, case: &Case) -> Option<String> {
        if self.skip_choices && case.choice {
            return Some("rests on a [choice] rule (--skip-choices)".into());
        }
        for r in &case.requires {
            let missing = match r {
                Requirement::Admin if self.target.admin_token.is_none() => Some(
                    "needs the admin hook (CFG-7): the target has no admin token (--admin-token)",
                ),
                Requirement::OtherApp if self.target.other_app.is_none() => Some(
                    "needs a second app's key for isolation checks (--other-key-id/--other-secret)",
                ),
                Requirement::PublishableKey if self.target.publishable_key.is_none() => {
                    Some("needs a publishable key (--publishable-key)")
                }
                Requirement::DedicatedServer if !self.target.embedded => Some(
                    "needs a private embedded server (shuts it down); runs only without --target",
                ),
                Requirement::Reference if !self.reference => {
                    Some("checks an exact boundary of the reference server only")
                }
                _ => None,
            };
            if let Some(why) = missing {
                return Some(why.into());
            }
        }
        let needs_key = case.peers.values().any(|p| {
            p.app.is_none()
                && !matches!(
                    p.credential,
                    Credential::Publishable | Credential::None | Credential::Raw | Credential::Malformed
                )
        }) || case
            .steps
            .iter()
            .any(|s| matches!(&s.action, Action::Rest(r) if r.auth.as_deref().is_none_or(|a| a == "key")));
        if needs_key && (self.target.key_id.is_none() || self.target.secret.is_none()) {
            return Some("needs a secret key (--key-id and --secret)".into());
        }
        None
    }

    fn case_cap(&self) -> Duration {
        if self.pacer.is_some() {
            Duration::from_secs(900)
        } else {
            Duration::from_secs(60)
        }
    }
}

/// Runs `cases` and returns one result per case, in the order given. `on_done` is called
/// as each case finishes (progress display).
pub async fn run_all(
    cases: Vec<Arc<Case>>,
    env: Arc<Env>,
    jobs: usize,
    stop: Stop,
    on_done: Arc<dyn Fn(&CaseResult) + Send + Sync>,
) -> Vec<CaseResult> {
    let mut results: Vec<Option<CaseResult>> = vec![None; cases.len()];
    let mut pooled = Vec::new();
    let mut alone = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Some(why) = env.skip_reason(case) {
            let r = CaseResult::skipped(case, why);
            on_done(&r);
            results[i] = Some(r);
        } else if case.alone {
            alone.push(i);
        } else {
            pooled.push(i);
        }
    }
    // The connect flood exhausts the per-IP budget: nothing may run after it.
    alone.sort_by_key(|i| cases[*i].floods());

    let semaphore = Arc::new(Semaphore::new(jobs.max(1)));
    let mut set = JoinSet::new();
    for i in pooled {
        if stop.is_stopped() {
            break;
        }
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let (case, env, done) = (cases[i].clone(), env.clone(), on_done.clone());
        let mut stop = stop.clone();
        set.spawn(async move {
            // A stop request ends running cases at once (their connections drop).
            let r = tokio::select! {
                r = run_case(&case, i, &env) => r,
                () = stop.wait() => CaseResult::skipped(&case, "interrupted"),
            };
            drop(permit);
            done(&r);
            (i, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => tracing::error!("a case task failed: {e}"),
        }
    }
    for i in alone {
        if stop.is_stopped() {
            break;
        }
        let mut stop = stop.clone();
        let r = tokio::select! {
            r = run_case(&cases[i], i, &env) => r,
            () = stop.wait() => CaseResult::skipped(&cases[i], "interrupted"),
        };
        on_done(&r);
        results[i] = Some(r);
    }
    results
        .into_iter()
        .zip(&cases)
        .map(|(r, case)| {
            r.unwrap_or_else(|| {
                let mut r = CaseResult::skipped(case, "not run: interrupted, or its task failed");
                if !stop.is_stopped() {
                    r.verdict = Verdict::Fail;
                    r.detail = "the case's task panicked (a bug in stampede)".into();
                }
                r
            })
        })
        .collect()
}

/// Runs one case to a graded result; never takes longer than the case cap.
pub async fn run_case(case: &Case, index: usize, env: &Env) -> CaseResult {
    let started = Instant::now();
    let mut ctx = Ctx::new(case, index, env);
    let cap = env.case_cap();
    let outcome = match tokio::time::timeout(cap, ctx.run()).await {
        Ok(r) => r,
        Err(_) => Err(StepFail::new(
            "the case to finish",
            format!("still running after {} s; stopped", cap.as_secs()),
        )),
    };
    ctx.finish().await;
    let (raw, detail, failure) = match outcome {
        Err(fail) if fail.skip => (Verdict::Skip, fail.actual, None),
        Err(fail) => {
            let step = ctx.current_step.clone();
            let detail = format!("{step}: expected {}; got {}", fail.expected, fail.actual);
            let failure = Failure {
                step,
                expected: fail.expected,
                actual: fail.actual,
                seen: ctx.transcripts(),
            };
            (Verdict::Fail, detail, Some(failure))
        }
        Ok(()) if !ctx.violations.is_empty() => {
            let detail = ctx.violations.join("; ");
            let failure = Failure {
                step: "frames received during the case".into(),
                expected: "frames that satisfy the wire rules".into(),
                actual: detail.clone(),
                seen: ctx.transcripts(),
            };
            (Verdict::Fail, detail, Some(failure))
        }
        Ok(()) if !ctx.notes.is_empty() => (Verdict::NonStrict, ctx.notes.join("; "), None),
        Ok(()) => (Verdict::Pass, String::new(), None),
    };
    let verdict = grade(case.level, raw.clone(), env.strict);
    let detail = match (&raw, &verdict, case.level) {
        (Verdict::Fail, Verdict::NonStrict, Level::Should) => format!("SHOULD not met: {detail}"),
        (Verdict::Fail, Verdict::NonStrict, Level::Info) => format!("informative: {detail}"),
        _ => detail,
    };
    CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        area: case.area.clone(),
        spec: case.spec.clone(),
        level: case.level,
        choice: case.choice,
        verdict,
        detail,
        failure,
        duration: started.elapsed(),
    }
}

/// A failed step: what was expected and what happened instead.
#[derive(Debug)]
struct StepFail {
    expected: String,
    actual: String,
    /// Not a failure: the case cannot run here (e.g. admin hook refused).
    skip: bool,
}

impl StepFail {
    fn new(expected: impl Into<String>, actual: impl Into<String>) -> StepFail {
        StepFail {
            expected: expected.into(),
            actual: actual.into(),
            skip: false,
        }
    }
}

type StepResult = Result<(), StepFail>;

/// Keys of an app a case uses.
#[derive(Debug, Clone)]
struct AppKeys {
    app_id: Option<String>,
    key_id: String,
    secret: String,
    publishable: Option<String>,
}

struct PeerState {
    name: String,
    spec: PeerSpec,
    conn: Option<WsConn>,
    /// Why the last connect failed, for `expect_http` / `expect_close`.
    refused: Option<ConnectError>,
    /// The URL of the last connect (reused by `reconnect`).
    url: Option<String>,
    /// `exp` of the peer's token (Unix s).
    exp: Option<i64>,
    /// Observed events not yet consumed by a step.
    inbox: VecDeque<Event>,
    transcript: Log,
    /// Pings and text frames seen when the current step began (to name a flood).
    pings_at_step: u64,
    texts_at_step: u64,
    wire: ConnState,
    connects: u32,
}

impl PeerState {
    fn connected(&self) -> bool {
        self.conn.is_some()
    }
}

struct Ctx<'a> {
    case: &'a Case,
    env: &'a Env,
    target: Target,
    dedicated: Option<EmbeddedServer>,
    shutdown_task: Option<tokio::task::JoinHandle<()>>,
    vars: Vars,
    source: Option<Ipv4Addr>,
    peers: BTreeMap<String, PeerState>,
    apps: HashMap<String, AppKeys>,
    violations: Vec<String>,
    notes: Vec<String>,
    current_step: String,
    /// `exp` chosen for an `expiring` credential before waiting for its moment.
    aligned_exp: Option<i64>,
    /// REST calls and their answers, for failure reports.
    rest_log: Vec<String>,
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Wall-clock Unix milliseconds of an `Instant` in the recent past.
fn wall_ms(at: Instant) -> i64 {
    now_ms() - Instant::now().saturating_duration_since(at).as_millis() as i64
}

/// Everything but RFC 3986 unreserved characters (query values).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_value(value: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Normal => percent_encoding::utf8_percent_encode(value, QUERY_VALUE).to_string(),
        Encoding::All => value.bytes().map(|b| format!("%{b:02X}")).collect(),
    }
}

impl<'a> Ctx<'a> {
    fn new(case: &'a Case, index: usize, env: &'a Env) -> Ctx<'a> {
        let run = format!("cf{}-{index}", env.run_id);
        let mut vars = Vars::default();
        vars.set("run", run.clone());
        vars.set("room", format!("{run}/room"));
        if let Some(k) = &env.target.key_id {
            vars.set("key_id", k.clone());
        }
        if let Some(pk) = &env.target.publishable_key {
            vars.set("pk", pk.clone());
        }
        let peers = case
            .peers
            .iter()
            .map(|(name, spec)| {
                (
                    name.clone(),
                    PeerState {
                        name: name.clone(),
                        spec: spec.clone(),
                        conn: None,
                        refused: None,
                        url: None,
                        exp: None,
                        inbox: VecDeque::new(),
                        transcript: Log::default(),
                        pings_at_step: 0,
                        texts_at_step: 0,
                        wire: ConnState::default(),
                        connects: 0,
                    },
                )
            })
            .collect();
        Ctx {
            case,
            env,
            target: env.target.clone(),
            dedicated: None,
            shutdown_task: None,
            vars,
            source: env.spread.then(|| env.ips.next()),
            peers,
            apps: HashMap::new(),
            violations: Vec::new(),
            notes: Vec::new(),
            current_step: "setup".into(),
            aligned_exp: None,
            rest_log: Vec::new(),
        }
    }

    async fn run(&mut self) -> StepResult {
        if self.case.requires.contains(&Requirement::DedicatedServer) {
            let opts = Options {
                faults: self.env.faults.clone(),
                variants: self.env.variants.clone(),
                tls: self.env.embedded_tls.clone(),
                ..Default::default()
            };
            let server = EmbeddedServer::start(opts).await.map_err(|e| {
                StepFail::new(
                    "a private embedded server",
                    format!("it did not start: {e:#}"),
                )
            })?;
            self.target = server.target().clone();
            self.dedicated = Some(server);
        }
        // Default peer ids are known before anyone connects.
        let run = self
            .vars
            .get("run")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        for (name, peer) in &self.case.peers {
            if !peer.no_sub && peer.sub.is_none() && self.token_like(peer.credential) {
                self.vars
                    .set(format!("peer.{name}"), format!("{run}-{name}"));
            }
        }
        // Explicit subs that only name other peers (`sub = "{peer.b}"`) are known too.
        for (name, peer) in &self.case.peers {
            if let Some(sub) = &peer.sub
                && !peer.no_sub
                && let Ok(id) = self.vars.text(sub)
            {
                self.vars.set(format!("peer.{name}"), id);
            }
        }
        for (name, body) in &self.case.apps {
            let keys = self.create_app(name, body).await?;
            self.vars
                .set(format!("app.{name}.key_id"), keys.key_id.clone());
            if let Some(id) = &keys.app_id {
                self.vars.set(format!("app.{name}.id"), id.clone());
            }
            self.apps.insert(name.clone(), keys);
        }
        for step in &self.case.steps {
            for i in 0..step.repeat {
                self.vars.set("i", i);
                self.current_step = format!(
                    "step {} (line {}{}{}): {}",
                    step.index,
                    step.line,
                    if step.action.uses_peer() {
                        format!(", peer {}", step.peer)
                    } else {
                        String::new()
                    },
                    if step.repeat > 1 {
                        format!(", repetition {}", i + 1)
                    } else {
                        String::new()
                    },
                    step.action.name()
                );
                for p in self.peers.values_mut() {
                    p.pings_at_step = p.transcript.count("ping");
                    p.texts_at_step = p.transcript.count("text");
                }
                self.step(step).await?;
            }
        }
        Ok(())
    }

    fn token_like(&self, c: Credential) -> bool {
        !matches!(
            c,
            Credential::Publishable | Credential::None | Credential::Raw | Credential::Malformed
        )
    }

    fn subst(&self, v: &Value) -> Result<Value, StepFail> {
        self.vars
            .value(v)
            .map_err(|e| StepFail::new("valid placeholders", e))
    }

    fn subst_text(&self, s: &str) -> Result<String, StepFail> {
        self.vars
            .text(s)
            .map_err(|e| StepFail::new("valid placeholders", e))
    }

    fn timeout(&self, step: &Step) -> Duration {
        Duration::from_millis(step.within_ms.unwrap_or(self.env.timeout_ms))
    }

    async fn step(&mut self, step: &Step) -> StepResult {
        let peer = step.peer.as_str();
        match &step.action {
            Action::Connect => {
                if self.peers[peer].connected() {
                    return Err(StepFail::new(
                        format!("peer {peer} not yet connected"),
                        "it is already connected (use reconnect)",
                    ));
                }
                self.connect(peer, false).await
            }
            Action::Reconnect => {
                if let Some(p) = self.peers.get_mut(peer) {
                    p.conn = None;
                    p.inbox.clear();
                }
                self.connect(peer, true).await
            }
            Action::Send(frame) => {
                let text = self.subst(frame)?.to_string();
                self.with_conn(peer, |c| Box::pin(c.send_text(text))).await
            }
            Action::SendRaw(raw) => {
                let text = self.subst_text(raw)?;
                self.with_conn(peer, |c| Box::pin(c.send_text(text))).await
            }
            Action::SendBinary(raw) => {
                let bytes = self.subst_text(raw)?.into_bytes();
                self.with_conn(peer, |c| Box::pin(c.send_binary(bytes)))
                    .await
            }
            Action::SendTextBytes(bytes) => {
                let bytes = bytes.clone();
                self.with_conn(peer, |c| Box::pin(c.send_text_bytes(bytes)))
                    .await
            }
            Action::SendPadded(p) => {
                let frame = self.subst(&p.frame)?;
                let size = self.subst(&p.size)?;
                let size = size.as_u64().ok_or_else(|| {
                    StepFail::new("a byte count for `send_padded.size`", size.to_string())
                })? as usize;
                let text =
                    pad_frame(&frame, size).map_err(|e| StepFail::new("a paddable frame", e))?;
                let pieces = p.fragments;
                self.with_conn(peer, |c| Box::pin(c.send_fragmented(text, pieces)))
                    .await
            }
            Action::Burst(b) => {
                let mut texts = Vec::with_capacity(b.count as usize);
                for n in 0..b.count {
                    self.vars.set("n", n);
                    texts.push(self.subst(&b.frame)?.to_string());
                }
                self.with_conn(peer, |c| {
                    Box::pin(async move {
                        for t in texts {
                            // A close in the middle of the burst is what 4011 cases expect.
                            if c.feed(tokio_tungstenite::tungstenite::Message::text(t))
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                        }
                        let _ = c.flush().await;
                        Ok(())
                    })
                })
                .await
            }
            Action::WsPing(payload) => {
                let bytes = payload.clone().into_bytes();
                self.with_conn(peer, |c| Box::pin(c.send_ping(bytes))).await
            }
            Action::Expect {
                frame,
                raw_contains,
                skip,
            } => {
                let t = self.timeout(step);
                self.expect(peer, frame, raw_contains.as_deref(), skip.as_ref(), t)
                    .await
            }
            Action::ExpectAll { frames, skip } => {
                let t = self.timeout(step);
                self.expect_all(peer, frames, skip.as_ref(), t).await
            }
            Action::ExpectNone { frame, ms } => self.expect_none(peer, Some(frame), *ms).await,
            Action::ExpectSilence(ms) => self.expect_none(peer, None, *ms).await,
            Action::ExpectClose(c) => {
                let t = self.timeout(step);
                self.expect_close(peer, c, t).await
            }
            Action::ExpectHttp(status) => self.expect_http(peer, *status).await,
            Action::ExpectWsPong(payload) => {
                let t = self.timeout(step);
                self.expect_pong(peer, payload, t).await
            }
            Action::Rest(r) => self.rest(r).await,
            Action::Admin(a) => {
                let app = self.apps[&a.app].clone();
                let Some(app_id) = app.app_id else {
                    return Err(StepFail::new(
                        "an app id from the admin hook",
                        "none was returned",
                    ));
                };
                let (method, path, body) = match a.op {
                    AdminOp::Suspend => ("POST", format!("/_admin/apps/{app_id}/suspend"), None),
                    AdminOp::Resume => ("POST", format!("/_admin/apps/{app_id}/resume"), None),
                    AdminOp::Period => ("POST", format!("/_admin/apps/{app_id}/period"), None),
                    AdminOp::Revoke => {
                        let key = match a.key.as_deref() {
                            None | Some("secret") => app.key_id.clone(),
                            Some("publishable") => app.publishable.clone().ok_or_else(|| {
                                StepFail::new("a publishable key of the app", "none was returned")
                            })?,
                            Some(other) => self.subst_text(other)?,
                        };
                        (
                            "POST",
                            format!("/_admin/apps/{app_id}/keys/{key}/revoke"),
                            None,
                        )
                    }
                    AdminOp::Plan => (
                        "PATCH",
                        format!("/_admin/apps/{app_id}/plan"),
                        a.plan.as_ref().map(|p| self.subst(p)).transpose()?,
                    ),
                };
                self.admin(method, &path, body).await.map(|_| ())
            }
            Action::Wait(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
            Action::Close(code) => {
                let code = *code;
                self.with_conn(peer, |c| Box::pin(c.close(code))).await
            }
            Action::Drop => {
                let p = self.peers.get_mut(peer).expect("validated peer");
                p.conn = None;
                Ok(())
            }
            Action::ShutdownServer => {
                let Some(server) = self.dedicated.take() else {
                    return Err(StepFail::new(
                        "a private server to shut down",
                        "it is already shut down",
                    ));
                };
                self.shutdown_task = Some(tokio::spawn(server.shutdown()));
                Ok(())
            }
            Action::ConnectFlood(f) => self.flood(peer, f).await,
            Action::Assert(a) => {
                let value = self.subst(&a.value)?;
                let mut caps = Vec::new();
                match match_value(&a.expect, Some(&value), &self.vars, &mut caps) {
                    Outcome::Match => {}
                    Outcome::NonStrict(n) => self.notes.push(n),
                    Outcome::Mismatch(why) => {
                        return Err(StepFail::new(
                            clip(&a.expect.to_string(), 400),
                            format!("{} ({why})", clip(&value.to_string(), 400)),
                        ));
                    }
                }
                for (k, v) in caps {
                    self.vars.set(k, v);
                }
                Ok(())
            }
        }
    }

    /// Runs a send on the peer's connection, connecting first if it never connected.
    /// A failed write is not a verdict: the close that explains it may still be in flight.
    async fn with_conn<F>(&mut self, peer: &str, f: F) -> StepResult
    where
        F: for<'c> FnOnce(
            &'c mut WsConn,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<(), String>> + Send + 'c>,
        >,
    {
        self.ensure(peer).await?;
        let p = self.peers.get_mut(peer).expect("validated peer");
        let Some(conn) = p.conn.as_mut() else {
            return Err(StepFail::new(
                format!("peer {peer} connected"),
                match &p.refused {
                    Some(e) => format!("its connect failed: {e}"),
                    None => "it is not connected (dropped earlier)".into(),
                },
            ));
        };
        if let Err(e) = f(conn).await {
            p.transcript.push("note", format!("  (note: {e})"));
        }
        Ok(())
    }

    /// Connects the peer on first use.
    async fn ensure(&mut self, peer: &str) -> StepResult {
        let p = &self.peers[peer];
        if p.connects == 0 {
            self.connect(peer, false).await?;
        }
        Ok(())
    }

    fn app_keys(&self, app: Option<&str>) -> Result<AppKeys, StepFail> {
        match app {
            None => match (&self.target.key_id, &self.target.secret) {
                (Some(k), Some(s)) => Ok(AppKeys {
                    app_id: None,
                    key_id: k.clone(),
                    secret: s.clone(),
                    publishable: self.target.publishable_key.clone(),
                }),
                _ => Err(StepFail::new(
                    "a secret key of the target",
                    "none configured",
                )),
            },
            Some("other") => match &self.target.other_app {
                Some((k, s)) => Ok(AppKeys {
                    app_id: None,
                    key_id: k.clone(),
                    secret: s.clone(),
                    publishable: None,
                }),
                None => Err(StepFail::new("a second app's key", "none configured")),
            },
            Some(name) => self
                .apps
                .get(name)
                .cloned()
                .ok_or_else(|| StepFail::new(format!("app `{name}`"), "it was not created")),
        }
    }

    /// The query string for a peer's credential; also records `exp`.
    async fn credential(&mut self, peer: &str) -> Result<String, StepFail> {
        let spec = self.peers[peer].spec.clone();
        let enc = spec.encode;
        let keys = if self.token_like(spec.credential) || spec.credential == Credential::Publishable
        {
            Some(self.app_keys(spec.app.as_deref())?)
        } else {
            None
        };
        let token = |this: &mut Self| -> Result<(String, Option<i64>), StepFail> {
            let keys = keys.clone().expect("keys for token credentials");
            this.mint(peer, &spec, &keys)
        };
        let query = match spec.credential {
            Credential::Publishable => {
                let pk = keys
                    .and_then(|k| k.publishable)
                    .ok_or_else(|| StepFail::new("a publishable key", "the target has none"))?;
                format!("key={}", encode_value(&pk, enc))
            }
            Credential::None => String::new(),
            Credential::Raw => self.subst_text(spec.query.as_deref().unwrap_or(""))?,
            Credential::Malformed => format!("token={}", encode_value("not-a-jwt", enc)),
            Credential::Both => {
                let (t, exp) = token(self)?;
                self.peers.get_mut(peer).expect("peer").exp = exp;
                let pk = keys
                    .and_then(|k| k.publishable)
                    .unwrap_or_else(|| "pk_live_unknown".into());
                format!(
                    "token={}&key={}",
                    encode_value(&t, enc),
                    encode_value(&pk, enc)
                )
            }
            _ => {
                if spec.credential == Credential::Expiring {
                    // Connect when exactly `expires_in_ms` are left before `exp`, which
                    // has whole-second resolution (≤ 1 s of waiting).
                    let n = spec.expires_in_ms.unwrap_or(0);
                    let exp_ms = (now_ms() + n + 999) / 1000 * 1000;
                    let wait = exp_ms - n - now_ms();
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    }
                    self.aligned_exp = Some(exp_ms / 1000);
                }
                let (t, exp) = token(self)?;
                self.peers.get_mut(peer).expect("peer").exp = exp;
                format!("token={}", encode_value(&t, enc))
            }
        };
        Ok(query)
    }

    /// Signs the peer's token according to its credential variant.
    fn mint(
        &mut self,
        peer: &str,
        spec: &PeerSpec,
        keys: &AppKeys,
    ) -> Result<(String, Option<i64>), StepFail> {
        let now = now_ms();
        let mut claims = Map::new();
        if !spec.no_sub {
            let sub = match &spec.sub {
                Some(s) => self.subst(&Value::String(s.clone()))?,
                None => Value::String(format!(
                    "{}-{peer}",
                    self.vars.get("run").and_then(Value::as_str).unwrap_or("")
                )),
            };
            if let Some(s) = sub.as_str() {
                self.vars.set(format!("peer.{peer}"), s.to_owned());
            }
            claims.insert("sub".into(), sub);
        }
        let exp = match spec.credential {
            Credential::Expired => Some(now / 1000 - 3600),
            Credential::Expiring => Some(
                self.aligned_exp
                    .take()
                    .unwrap_or((now + spec.expires_in_ms.unwrap_or(0) + 999) / 1000),
            ),
            _ if spec.no_exp => None,
            _ => Some((now + spec.expires_in_ms.unwrap_or(3_600_000)) / 1000),
        };
        if let Some(e) = exp {
            claims.insert("exp".into(), json!(e));
            self.vars.set(format!("exp.{peer}"), e);
        }
        claims.insert("iat".into(), json!(now / 1000));
        if let Some(ch) = &spec.channels {
            claims.insert("channels".into(), self.subst(&json!(ch))?);
        }
        if let Some(p) = &spec.permissions {
            claims.insert("permissions".into(), json!(p));
        }
        // Metadata claims go into the token as JSON text, so a case can mint members in an
        // order of its choosing (a `Map` would sort them).
        let mut texts: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
        for (claim, var, given) in [
            ("peerMetadata", "peer_metadata", &spec.peer_metadata),
            ("metadata", "metadata", &spec.metadata),
        ] {
            let text = match given {
                None => continue,
                Some(Value::String(text)) => self.subst_text(text)?,
                Some(table) => self.subst(table)?.to_string(),
            };
            let raw = RawValue::from_string(text.clone())
                .map_err(|e| StepFail::new(format!("JSON text for `{var}`"), e.to_string()))?;
            self.vars.set(format!("{var}.{peer}"), text);
            texts.insert(claim.into(), raw);
        }
        if let Some(extra) = &spec.claims {
            for (k, v) in extra {
                texts.remove(k);
                claims.insert(k.clone(), self.subst(v)?);
            }
        }
        let exp = claims.get("exp").and_then(Value::as_i64);
        for (k, v) in claims {
            // A Value always has a JSON text.
            texts.insert(
                k,
                serde_json::value::to_raw_value(&v).expect("values serialize"),
            );
        }
        let claims = texts;
        let secret = keys.secret.as_bytes();
        let sign = |alg: Algorithm, kid: Option<&str>, secret: &[u8]| {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            header.typ = Some("JWT".into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
                .map_err(|e| StepFail::new("a signed token", e.to_string()))
        };
        let token = match spec.credential {
            Credential::BadSignature => {
                let mut wrong = secret.to_vec();
                wrong.extend_from_slice(b"-wrong");
                sign(Algorithm::HS256, Some(&keys.key_id), &wrong)?
            }
            Credential::WrongAlg => sign(Algorithm::HS512, Some(&keys.key_id), secret)?,
            Credential::UnknownKid => {
                sign(Algorithm::HS256, Some("sk_id_unknown_conform"), secret)?
            }
            Credential::NoKid => sign(Algorithm::HS256, None, secret)?,
            Credential::AlgNone => {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let header = json!({"alg": "none", "typ": "JWT", "kid": keys.key_id});
                format!(
                    "{}.{}.",
                    b64.encode(header.to_string()),
                    b64.encode(serde_json::to_string(&claims).unwrap_or_default())
                )
            }
            _ => sign(Algorithm::HS256, Some(&keys.key_id), secret)?,
        };
        Ok((token, exp))
    }

    /// Opens the peer's connection (and waits for its welcome unless told not to).
    async fn connect(&mut self, peer: &str, reuse_url: bool) -> StepResult {
        // Wait for the connect budget before minting, so a short-lived token is not
        // spent waiting.
        if let Some(pacer) = &self.env.pacer {
            pacer.acquire().await;
        }
        let url = match (&self.peers[peer].url, reuse_url) {
            (Some(u), true) => u.clone(),
            _ => {
                let query = self.credential(peer).await?;
                let spec = &self.peers[peer].spec;
                let base = match &spec.path {
                    Some(path) => {
                        let path = self.subst_text(path)?;
                        replace_path(&self.target.ws_url, &path)
                    }
                    None => self.target.ws_url.clone(),
                };
                if query.is_empty() {
                    base
                } else {
                    format!("{base}?{query}")
                }
            }
        };
        let spec = self.peers[peer].spec.clone();
        let opts = ConnectOptions {
            origin: spec
                .origin
                .as_ref()
                .map(|o| self.subst_text(o))
                .transpose()?,
            source: self.source,
            timeout_ms: self.env.timeout_ms.max(1000),
        };
        let result = self.open(&url, &opts).await;
        let p = self.peers.get_mut(peer).expect("validated peer");
        p.url = Some(url);
        p.connects += 1;
        p.inbox.clear();
        p.wire = ConnState::default();
        match result {
            Ok(conn) => {
                p.transcript
                    .push("connect", format!("  -- connected ({})", p.connects));
                p.conn = Some(conn);
                p.refused = None;
            }
            Err(e) => {
                p.transcript
                    .push("connect", format!("  -- connect failed: {e}"));
                p.conn = None;
                p.refused = Some(e.clone());
                if spec.auto_welcome() {
                    return Err(StepFail::new(
                        format!("peer {peer} to connect"),
                        format!("connect failed: {e}"),
                    ));
                }
                return Ok(());
            }
        }
        if spec.auto_welcome() {
            let deadline = Instant::now() + Duration::from_millis(self.env.timeout_ms);
            let event = self.next_event(peer, deadline).await;
            match event {
                Some(Event::Text { text, .. }) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if v.get("type").and_then(Value::as_str) != Some("welcome") {
                        return Err(StepFail::new(
                            "`welcome` as the first frame (WEL-1, ORD-1)",
                            clip(&text, 300),
                        ));
                    }
                    let key = format!("peer.{peer}");
                    if self.vars.get(&key).is_none()
                        && let Some(id) = v.get("peerId").and_then(Value::as_str)
                    {
                        self.vars.set(key, id.to_owned());
                    }
                }
                Some(other) => {
                    return Err(StepFail::new(
                        "`welcome` as the first frame (WEL-1, ORD-1)",
                        other.describe(),
                    ));
                }
                None => {
                    return Err(StepFail::new(
                        "`welcome` after connecting",
                        format!("nothing within {} ms", self.env.timeout_ms),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One connect, paced and retried on HTTP 429 against remote targets.
    /// One connect (its budget already taken); against remote targets an HTTP 429 is
    /// waited out and retried rather than failing the case.
    async fn open(&self, url: &str, opts: &ConnectOptions) -> Result<WsConn, ConnectError> {
        let Some(pacer) = &self.env.pacer else {
            return WsConn::connect(&self.env.connector, url, opts).await;
        };
        let give_up = Instant::now() + Duration::from_secs(180);
        loop {
            match WsConn::connect(&self.env.connector, url, opts).await {
                Err(ConnectError::Http { status: 429, .. }) if Instant::now() < give_up => {
                    // The server's window is fuller than ours (other clients, or a
                    // stricter limit): back off and try again.
                    pacer.sleep(Duration::from_secs(5)).await;
                    pacer.acquire().await;
                }
                other => return other,
            }
        }
    }

    /// The peer's next event: from its inbox, else from the wire (observed on arrival).
    async fn next_event(&mut self, peer: &str, deadline: Instant) -> Option<Event> {
        let p = self.peers.get_mut(peer)?;
        if let Some(e) = p.inbox.pop_front() {
            return Some(e);
        }
        let event = p.conn.as_mut()?.next_event(deadline).await?;
        self.observe(peer, &event);
        Some(event)
    }

    /// Records an event in the transcript and applies the wire checks to it.
    fn observe(&mut self, peer: &str, event: &Event) {
        let p = self.peers.get_mut(peer).expect("peer");
        p.transcript
            .push(event.kind(), format!("  {}", event.describe()));
        match event {
            Event::Text { text, .. } => {
                let (_, findings) = check_text(text, &mut p.wire);
                for v in findings.violations {
                    // The first ones explain; a flood of the same must not grow memory.
                    if self.violations.len() < MAX_VIOLATIONS {
                        self.violations.push(format!("peer {peer}: {v}"));
                    }
                }
                for n in findings.notes {
                    self.notes.push(format!("peer {peer}: {n}"));
                }
            }
            Event::Binary { .. } if self.violations.len() < MAX_VIOLATIONS => self.violations.push(
                format!("peer {peer}: FRAME-1: the server sent a binary frame"),
            ),
            _ => {}
        }
    }

    /// Whether `text` matches the `skip` pattern of an expect step.
    fn skippable(&self, skip: Option<&Value>, text: &str) -> bool {
        skip.is_some_and(|s| {
            let actual: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            !matches!(
                match_frame(s, &actual, text, &self.vars, &mut Vec::new()),
                Outcome::Mismatch(_)
            )
        })
    }

    async fn expect(
        &mut self,
        peer: &str,
        frame: &Value,
        raw: Option<&str>,
        skip: Option<&Value>,
        t: Duration,
    ) -> StepResult {
        self.ensure(peer).await?;
        let deadline = Instant::now() + t;
        let want = frame.to_string();
        loop {
            let Some(event) = self.next_event(peer, deadline).await else {
                return Err(StepFail::new(
                    format!("{} on peer {peer}", clip(&want, 400)),
                    self.nothing_arrived(peer, t),
                ));
            };
            let text = match &event {
                Event::Text { text, .. } => text.clone(),
                Event::Ping { .. } | Event::Pong { .. } => continue,
                other => {
                    return Err(StepFail::new(
                        format!("{} on peer {peer}", clip(&want, 400)),
                        other.describe(),
                    ));
                }
            };
            let actual: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            let mut caps = Vec::new();
            let outcome = match_frame(frame, &actual, &text, &self.vars, &mut caps);
            if matches!(outcome, Outcome::Mismatch(_)) && self.skippable(skip, &text) {
                continue;
            }
            match outcome {
                Outcome::Match | Outcome::NonStrict(_) if raw.is_some() => {
                    let needle = self.subst_text(raw.unwrap_or_default())?;
                    if !text.contains(&needle) {
                        return Err(StepFail::new(
                            format!("a frame whose text contains {needle}"),
                            clip(&text, 400),
                        ));
                    }
                }
                Outcome::Match => {}
                Outcome::NonStrict(note) => self.notes.push(format!("peer {peer}: {note}")),
                Outcome::Mismatch(why) => {
                    return Err(StepFail::new(
                        format!("{} on peer {peer}", clip(&want, 400)),
                        format!("{} ({why})", clip(&text, 400)),
                    ));
                }
            }
            for (k, v) in caps {
                self.vars.set(k, v);
            }
            return Ok(());
        }
    }

    fn nothing_arrived(&self, peer: &str, t: Duration) -> String {
        let p = &self.peers[peer];
        if p.conn.is_none() {
            match &p.refused {
                Some(e) => format!("nothing: the peer is not connected ({e})"),
                None => "nothing: the peer is not connected".into(),
            }
        } else {
            let pings = p.transcript.count("ping").saturating_sub(p.pings_at_step);
            let texts = p.transcript.count("text").saturating_sub(p.texts_at_step);
            let mut why = format!("nothing within {} ms", t.as_millis());
            // A flood is named: it is why nothing useful arrived.
            if pings >= FLOOD {
                why.push_str(&format!(
                    "; the server sent {} ping frames meanwhile",
                    super::log::group(pings)
                ));
            }
            if texts >= FLOOD {
                why.push_str(&format!(
                    "; {} other frames arrived meanwhile",
                    super::log::group(texts)
                ));
            }
            why
        }
    }

    async fn expect_all(
        &mut self,
        peer: &str,
        frames: &[Value],
        skip: Option<&Value>,
        t: Duration,
    ) -> StepResult {
        self.ensure(peer).await?;
        let deadline = Instant::now() + t;
        let mut left: Vec<&Value> = frames.iter().collect();
        let want = || {
            format!(
                "all of {} on peer {peer}, in any order",
                clip(&Value::Array(frames.to_vec()).to_string(), 600)
            )
        };
        while !left.is_empty() {
            let Some(event) = self.next_event(peer, deadline).await else {
                let missing: Vec<String> = left.iter().map(|v| v.to_string()).collect();
                return Err(StepFail::new(
                    want(),
                    format!(
                        "{}; still missing {}",
                        self.nothing_arrived(peer, t),
                        missing.join(", ")
                    ),
                ));
            };
            let text = match &event {
                Event::Text { text, .. } => text.clone(),
                Event::Ping { .. } | Event::Pong { .. } => continue,
                other => return Err(StepFail::new(want(), other.describe())),
            };
            let actual: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let hit = left.iter().position(|w| {
                !matches!(
                    match_frame(w, &actual, &text, &self.vars, &mut Vec::new()),
                    Outcome::Mismatch(_)
                )
            });
            match hit {
                Some(i) => {
                    let w = left.remove(i);
                    let mut caps = Vec::new();
                    if let Outcome::NonStrict(n) =
                        match_frame(w, &actual, &text, &self.vars, &mut caps)
                    {
                        self.notes.push(format!("peer {peer}: {n}"));
                    }
                    for (k, v) in caps {
                        self.vars.set(k, v);
                    }
                }
                None if self.skippable(skip, &text) => {}
                None => return Err(StepFail::new(want(), clip(&text, 400))),
            }
        }
        Ok(())
    }

    /// No matching frame (or no frame at all, when `frame` is `None`) within `ms`.
    /// Frames that do not match stay queued for later steps.
    async fn expect_none(&mut self, peer: &str, frame: Option<&Value>, ms: u64) -> StepResult {
        self.ensure(peer).await?;
        let deadline = Instant::now() + Duration::from_millis(ms);
        let mut keep = Vec::new();
        let mut result = Ok(());
        while let Some(event) = self.next_event(peer, deadline).await {
            if matches!(event, Event::Ping { .. }) {
                continue; // no step looks for pings; they are counted in the log
            }
            if keep.len() >= MAX_KEPT {
                result = Err(StepFail::new(
                    format!("at most {MAX_KEPT} frames on peer {peer} in {ms} ms"),
                    format!("more than {MAX_KEPT} frames (a flood)"),
                ));
                break;
            }
            let hit = match (&event, frame) {
                (Event::Pong { .. }, _) => false,
                (_, None) => true,
                (Event::Text { text, .. }, Some(f)) => {
                    let actual: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                    !matches!(
                        match_frame(f, &actual, text, &self.vars, &mut Vec::new()),
                        Outcome::Mismatch(_)
                    )
                }
                _ => false,
            };
            if hit {
                let expected = match frame {
                    Some(f) => format!(
                        "no frame matching {} on peer {peer} for {ms} ms",
                        clip(&f.to_string(), 300)
                    ),
                    None => format!("no frame on peer {peer} for {ms} ms"),
                };
                result = Err(StepFail::new(expected, event.describe()));
                keep.push(event);
                break;
            }
            let end = event.is_end();
            keep.push(event);
            if end {
                break;
            }
        }
        let p = self.peers.get_mut(peer).expect("peer");
        for e in keep.into_iter().rev() {
            p.inbox.push_front(e);
        }
        result
    }

    async fn expect_close(&mut self, peer: &str, c: &CloseExpect, t: Duration) -> StepResult {
        self.ensure(peer).await?;
        let expected = format!(
            "close {} {} on peer {peer}",
            c.code,
            crate::proto::close::name(c.code)
        );
        let p = &self.peers[peer];
        if p.conn.is_none() {
            return match &p.refused {
                Some(ConnectError::Http {
                    status: s @ (401 | 403),
                    ..
                }) if matches!(c.code, 4001 | 4002 | 4012 | 4003) => {
                    // AMB-3: an HTTP refusal instead of the close is a deviation.
                    self.notes.push(format!(
                        "peer {peer}: refused at the upgrade with HTTP {s} instead of close {} (AMB-3)",
                        c.code
                    ));
                    Ok(())
                }
                Some(e) => Err(StepFail::new(expected, format!("the connect failed: {e}"))),
                None => Err(StepFail::new(expected, "the peer is not connected")),
            };
        }
        let exp_window = match &c.at_exp {
            Some(who) => match self.peers[who.as_str()].exp {
                Some(exp) => Some((exp * 1000 - 1000, exp * 1000 + 500)),
                None => {
                    return Err(StepFail::new(
                        "a token expiry to time the close against",
                        "the peer has none",
                    ));
                }
            },
            None => None,
        };
        let deadline = match exp_window {
            Some((_, late)) => {
                Instant::now() + Duration::from_millis((late - now_ms()).max(0) as u64) + t
            }
            None => Instant::now() + t,
        };
        let tolerated = match c.code {
            4001 => Some("invalid_token"),
            4002 => Some("token_expired"),
            4012 => Some("account_suspended"),
            _ => None,
        };
        loop {
            let Some(event) = self.next_event(peer, deadline).await else {
                return Err(StepFail::new(expected, self.nothing_arrived(peer, t)));
            };
            match &event {
                Event::Closed { code, at, reason } => {
                    if *code != Some(c.code) {
                        return Err(StepFail::new(expected, event.describe()));
                    }
                    if c.with_reason && (reason.is_empty() || reason.len() > 123) {
                        return Err(StepFail::new(
                            format!("{expected} with a reason of 1-123 bytes (CONN-10)"),
                            format!("a reason of {} bytes", reason.len()),
                        ));
                    }
                    if let Some((early, late)) = exp_window {
                        let when = wall_ms(*at);
                        if when < early || when > late {
                            return Err(StepFail::new(
                                format!(
                                    "{expected} between exp − 1000 ms and exp + 500 ms (EXP-1)"
                                ),
                                format!("the close came {} ms from exp", when - (early + 1000)),
                            ));
                        }
                    }
                    return Ok(());
                }
                Event::Dropped { .. } => return Err(StepFail::new(expected, event.describe())),
                Event::Text { text, .. } if c.nothing_before => {
                    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                    let is_tolerated = v.get("type").and_then(Value::as_str) == Some("error")
                        && v.get("requestId").is_none()
                        && tolerated.is_some()
                        && v.get("code").and_then(Value::as_str) == tolerated;
                    if !is_tolerated {
                        return Err(StepFail::new(
                            format!("{expected} with no application frame before it (CONN-7)"),
                            clip(text, 300),
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    async fn expect_http(&mut self, peer: &str, status: u16) -> StepResult {
        self.ensure(peer).await?;
        let p = &self.peers[peer];
        match (&p.conn, &p.refused) {
            (_, Some(ConnectError::Http { status: s, .. })) if *s == status => Ok(()),
            (_, Some(e)) => Err(StepFail::new(
                format!("the upgrade refused with HTTP {status}"),
                e.to_string(),
            )),
            (Some(_), None) => Err(StepFail::new(
                format!("the upgrade refused with HTTP {status}"),
                "the upgrade succeeded (101)",
            )),
            (None, None) => Err(StepFail::new(
                format!("HTTP {status}"),
                "no connect attempt",
            )),
        }
    }

    async fn expect_pong(&mut self, peer: &str, payload: &str, t: Duration) -> StepResult {
        self.ensure(peer).await?;
        let deadline = Instant::now() + t;
        let mut keep = Vec::new();
        let mut result = Err(StepFail::new(
            format!("a pong control frame with payload {payload:?} (HB-3)"),
            format!("none within {} ms", t.as_millis()),
        ));
        while let Some(event) = self.next_event(peer, deadline).await {
            match &event {
                Event::Pong { payload: p, .. } if p == payload.as_bytes() => {
                    result = Ok(());
                    break;
                }
                e if e.is_end() => {
                    result = Err(StepFail::new("a pong control frame (HB-3)", e.describe()));
                    keep.push(event);
                    break;
                }
                _ => keep.push(event),
            }
        }
        let p = self.peers.get_mut(peer).expect("peer");
        for e in keep.into_iter().rev() {
            p.inbox.push_front(e);
        }
        result
    }

    fn root_url(&self) -> String {
        let rest = &self.target.rest_url;
        match rest.find("://") {
            Some(i) => match rest[i + 3..].find('/') {
                Some(j) => rest[..i + 3 + j].to_owned(),
                None => rest.clone(),
            },
            None => rest.clone(),
        }
    }

    async fn rest(&mut self, r: &RestSpec) -> StepResult {
        let path = self.subst_text(&r.path)?;
        let url = if r.root {
            format!("{}{path}", self.root_url())
        } else {
            format!("{}{path}", self.target.rest_url.trim_end_matches('/'))
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        let auth = r.auth.as_deref().unwrap_or("key");
        let bearer = |k: &str, s: &str| format!("Bearer {k}:{s}");
        let value = match auth {
            "none" => None,
            "key" => {
                let k = self.app_keys(None)?;
                Some(bearer(&k.key_id, &k.secret))
            }
            "id_only" => Some(format!("Bearer {}", self.app_keys(None)?.key_id)),
            "wrong_secret" => {
                let k = self.app_keys(None)?;
                Some(bearer(&k.key_id, &format!("{}x", k.secret)))
            }
            "unknown_key" => Some(bearer("sk_id_unknown_conform", "sk_secret_unknown")),
            "malformed" => Some("Basic Zm9vOmJhcg==".into()),
            "publishable" => Some(format!(
                "Bearer {}",
                self.target.publishable_key.clone().unwrap_or_default()
            )),
            "other" => {
                let k = self.app_keys(Some("other"))?;
                Some(bearer(&k.key_id, &k.secret))
            }
            a if a.starts_with("app:") => {
                let k = self.app_keys(Some(&a[4..]))?;
                Some(bearer(&k.key_id, &k.secret))
            }
            a => Some(self.subst_text(a.strip_prefix("raw:").unwrap_or(a))?),
        };
        if let Some(v) = value {
            headers.push(("Authorization".into(), v));
        }
        for (k, v) in r.headers.iter().flatten() {
            headers.push((k.clone(), self.subst_text(v)?));
        }
        let body = match (&r.body, &r.body_raw) {
            (Some(b), _) => {
                let v = self.subst(b)?;
                Some(match r.pad_to {
                    Some(n) => pad_frame(&v, n).map_err(|e| StepFail::new("a paddable body", e))?,
                    None => v.to_string(),
                })
            }
            (None, Some(raw)) => Some(self.subst_text(raw)?),
            (None, None) => None,
        };
        let what = format!("{} {path}", r.method);
        let timeout = Duration::from_millis(self.env.timeout_ms.max(1000));
        let response = self
            .env
            .connector
            .http(
                &url,
                &r.method,
                &headers,
                body.map(String::into_bytes),
                timeout,
            )
            .await
            .map_err(|e| StepFail::new(format!("HTTP {} from {what}", r.status), e.to_string()))?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        self.rest_log.push(format!(
            "  {what} → HTTP {} {}",
            response.status,
            clip(&text, 200)
        ));
        if response.status != r.status {
            return Err(StepFail::new(
                format!("HTTP {} from {what}", r.status),
                format!("HTTP {} {}", response.status, clip(&text, 300)),
            ));
        }
        if let Some(expect) = &r.expect_body {
            let actual: Value = serde_json::from_str(&text)
                .map_err(|_| StepFail::new(format!("a JSON body from {what}"), clip(&text, 300)))?;
            let mut caps = Vec::new();
            match match_frame(expect, &actual, &text, &self.vars, &mut caps) {
                Outcome::Match => {}
                Outcome::NonStrict(n) => self.notes.push(format!("{what}: {n}")),
                Outcome::Mismatch(why) => {
                    return Err(StepFail::new(
                        format!("body {} from {what}", clip(&expect.to_string(), 300)),
                        format!("{} ({why})", clip(&text, 300)),
                    ));
                }
            }
            for (k, v) in caps {
                self.vars.set(k, v);
            }
        }
        Ok(())
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StepFail> {
        let Some(token) = &self.target.admin_token else {
            return Err(StepFail {
                expected: "the admin hook".into(),
                actual: "the target has no admin token".into(),
                skip: true,
            });
        };
        let url = format!("{}{path}", self.root_url());
        let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
        let timeout = Duration::from_millis(self.env.timeout_ms.max(2000));
        let response = self
            .env
            .connector
            .http(
                &url,
                method,
                &headers,
                body.map(|b| b.to_string().into_bytes()),
                timeout,
            )
            .await
            .map_err(|e| {
                StepFail::new(format!("admin {method} {path} to succeed"), e.to_string())
            })?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        if !(200..300).contains(&response.status) {
            return Err(StepFail::new(
                format!("admin {method} {path} to succeed"),
                format!("HTTP {} {}", response.status, clip(&text, 300)),
            ));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_app(&mut self, name: &str, body: &Value) -> Result<AppKeys, StepFail> {
        let body = self.subst(body)?;
        let v = self.admin("POST", "/_admin/apps", Some(body)).await?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match (field("keyId"), field("secret")) {
            (Some(key_id), Some(secret)) => Ok(AppKeys {
                app_id: field("appId"),
                key_id,
                secret,
                publishable: field("publishableKey"),
            }),
            _ => Err(StepFail::new(
                format!("app `{name}` from POST /_admin/apps with keyId and secret"),
                clip(&v.to_string(), 300),
            )),
        }
    }

    async fn flood(&mut self, peer: &str, f: &Flood) -> StepResult {
        let query = self.credential(peer).await?;
        let url = format!("{}?{query}", self.target.ws_url);
        let opts = ConnectOptions {
            origin: None,
            source: self.source,
            timeout_ms: self.env.timeout_ms.max(1000),
        };
        let fresh = self.source.is_some();
        let max = f.limit + f.slack;
        let mut open = Vec::new();
        for n in 1..=max {
            match WsConn::connect(&self.env.connector, &url, &opts).await {
                Ok(conn) => open.push(conn),
                Err(ConnectError::Http { status: 429, .. }) => {
                    drop(open);
                    if fresh && n + f.slack <= f.limit {
                        return Err(StepFail::new(
                            format!(
                                "at least {} upgrades admitted from a fresh address (RATE-5: {} per 60 s)",
                                f.limit - f.slack,
                                f.limit
                            ),
                            format!("HTTP 429 at attempt {n}"),
                        ));
                    }
                    return Ok(());
                }
                Err(e) => {
                    return Err(StepFail::new(
                        format!("an upgrade or HTTP 429 at attempt {n}"),
                        e.to_string(),
                    ));
                }
            }
            // Do not hold hundreds of sockets: only attempts count (RATE-5).
            if open.len() >= 8 {
                open.clear();
            }
        }
        Err(StepFail::new(
            format!(
                "HTTP 429 within {max} upgrade attempts from one address (RATE-5: {} per 60 s)",
                f.limit
            ),
            format!("all {max} attempts were admitted"),
        ))
    }

    /// Takes what is left on every connection through the wire checks, then closes all.
    async fn finish(&mut self) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            let events = match self.peers.get_mut(&name).and_then(|p| p.conn.as_mut()) {
                Some(conn) => conn.drain_now(),
                None => Vec::new(),
            };
            for e in &events {
                self.observe(&name, e);
            }
            if let Some(p) = self.peers.get_mut(&name) {
                p.conn = None;
            }
        }
        if let Some(server) = self.dedicated.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), server.shutdown()).await;
        }
        if let Some(task) = self.shutdown_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
    }

    fn transcripts(&self) -> Vec<Transcript> {
        let rest = (!self.rest_log.is_empty()).then(|| ("REST calls".to_owned(), &self.rest_log));
        let rest = rest.map(|(label, t)| {
            // The tail is what explains a failure; very long logs are cut.
            let skip = t.len().saturating_sub(40);
            let mut lines: Vec<String> = (skip > 0)
                .then(|| format!("  … {skip} earlier lines"))
                .into_iter()
                .collect();
            lines.extend(t[skip..].iter().cloned());
            Transcript { label, lines }
        });
        self.peers
            .values()
            .filter(|p| !p.transcript.is_empty())
            .map(|p| Transcript {
                label: format!("frames seen by {}", p.name),
                lines: p.transcript.lines(),
            })
            .chain(rest)
            .collect()
    }
}

/// Replaces the path of a ws:// URL.
fn replace_path(url: &str, path: &str) -> String {
    match url.find("://") {
        Some(i) => match url[i + 3..].find('/') {
            Some(j) => format!("{}{path}", &url[..i + 3 + j]),
            None => format!("{url}{path}"),
        },
        None => format!("{url}{path}"),
    }
}

/// Serializes `frame` (an object) with a `pad` member so the text is exactly `size` bytes.
pub fn pad_frame(frame: &Value, size: usize) -> Result<String, String> {
    let Value::Object(map) = frame else {
        return Err("only an object can be padded".into());
    };
    let base = frame.to_string();
    let overhead = if map.is_empty() {
        r#""pad":"""#.len()
    } else {
        r#","pad":"""#.len()
    };
    let fill = size.checked_sub(base.len() + overhead).ok_or_else(|| {
        format!(
            "the frame is already {} bytes, more than {size}",
            base.len()
        )
    })?;
    let head = &base[..base.len() - 1];
    let sep = if map.is_empty() { "" } else { "," };
    let text = format!("{head}{sep}\"pad\":\"{}\"}}", "x".repeat(fill));
    debug_assert_eq!(text.len(), size);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_exact() {
        let f = json!({"type": "publish", "channel": "c", "data": 1});
        let t = pad_frame(&f, 65_536).unwrap();
        assert_eq!(t.len(), 65_536);
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["data"], 1);
        assert_eq!(pad_frame(&json!({}), 20).unwrap().len(), 20);
        assert!(pad_frame(&f, 10).is_err());
    }

    #[test]
    fn paths_and_encoding() {
        assert_eq!(replace_path("ws://h:1/v1", "/v2"), "ws://h:1/v2");
        assert_eq!(encode_value("a.b-c", Encoding::Normal), "a.b-c");
        assert_eq!(encode_value("a.", Encoding::All), "%61%2E");
    }
}
