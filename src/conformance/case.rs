//! Case files: the TOML model of a conformance case, the loader and its validation.
//!
//! One file per SPEC area (`conformance/<area>.toml`). The built-in files are compiled
//! into the binary; `--cases DIR` adds files from a directory at run time, and a case
//! there with the same id replaces the built-in one. Every table is
//! `deny_unknown_fields`, so a misspelt field is an error naming the file, the line,
//! the case id and the field. Imports nothing but serde, toml and serde_json.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;

/// The built-in case files, compiled in so `conform` works outside the repository.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "conform/conn.toml",
        include_str!("../../conformance/conn.toml"),
    ),
    (
        "conform/auth.toml",
        include_str!("../../conformance/auth.toml"),
    ),
    (
        "conform/jwt.toml",
        include_str!("../../conformance/jwt.toml"),
    ),
    (
        "conform/authz.toml",
        include_str!("../../conformance/authz.toml"),
    ),
    (
        "conform/frame.toml",
        include_str!("../../conformance/frame.toml"),
    ),
    (
        "conform/sub.toml",
        include_str!("../../conformance/sub.toml"),
    ),
    (
        "conform/unsub.toml",
        include_str!("../../conformance/unsub.toml"),
    ),
    (
        "conform/pub.toml",
        include_str!("../../conformance/pub.toml"),
    ),
    (
        "conform/send.toml",
        include_str!("../../conformance/send.toml"),
    ),
    (
        "conform/ping.toml",
        include_str!("../../conformance/ping.toml"),
    ),
    (
        "conform/welcome.toml",
        include_str!("../../conformance/welcome.toml"),
    ),
    (
        "conform/presence.toml",
        include_str!("../../conformance/presence.toml"),
    ),
    (
        "conform/order.toml",
        include_str!("../../conformance/order.toml"),
    ),
    (
        "conform/relay.toml",
        include_str!("../../conformance/relay.toml"),
    ),
    (
        "conform/rate.toml",
        include_str!("../../conformance/rate.toml"),
    ),
    (
        "conform/quota.toml",
        include_str!("../../conformance/quota.toml"),
    ),
    (
        "conform/expiry.toml",
        include_str!("../../conformance/expiry.toml"),
    ),
    (
        "conform/shutdown.toml",
        include_str!("../../conformance/shutdown.toml"),
    ),
    (
        "conform/rest.toml",
        include_str!("../../conformance/rest.toml"),
    ),
];

/// Why case files could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read case file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list case directory {}: {source}", path.display())]
    ListDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {where_}{message}", file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        /// "case `id`: " when the error lies inside a case.
        where_: String,
        message: String,
    },
    #[error("{}:{line}: case `{case}`: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        case: String,
        message: String,
    },
    #[error("no case files in {}: expected *.toml files", path.display())]
    Empty { path: PathBuf },
}

/// How much a case matters for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A failure fails the run.
    Must,
    /// A failure fails the run only under `--strict`; otherwise it is reported as non-strict.
    Should,
    /// Reported only.
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "must",
            Level::Should => "should",
            Level::Info => "info",
        })
    }
}

/// What a case needs from the target; when the target cannot provide it the case is
/// skipped with a reason. Most are derived from the steps; `reference` is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// The admin hook (CFG-7): isolated apps, suspend, plan changes.
    Admin,
    /// A second app's secret key (tenant isolation).
    OtherApp,
    /// A publishable key.
    PublishableKey,
    /// A private embedded server, e.g. to shut it down.
    DedicatedServer,
    /// The reference server only (checks of its exact `[choice]` boundaries).
    Reference,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Requirement::Admin => "admin",
            Requirement::OtherApp => "other_app",
            Requirement::PublishableKey => "publishable_key",
            Requirement::DedicatedServer => "dedicated_server",
            Requirement::Reference => "reference",
        })
    }
}

/// The credential a peer connects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// A valid HS256 token with the peer's claims.
    #[default]
    Token,
    /// The target's publishable key (`?key=`).
    Publishable,
    /// No credential at all.
    None,
    /// Both a valid token and a publishable key (CONN-3).
    Both,
    /// A token whose `exp` passed an hour ago.
    Expired,
    /// A token expiring `expires_in_ms` after the connect (aligned to the second).
    Expiring,
    /// Signed with the wrong secret.
    BadSignature,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS512 with the right secret (only HS256 is allowed).
    WrongAlg,
    /// A `kid` no key has, signed with the real secret.
    UnknownKid,
    /// No `kid` header.
    NoKid,
    /// Not a JWT at all.
    Malformed,
    /// The query string is given verbatim in `query`.
    Raw,
}

/// How the credential value is put into the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Percent-encode what needs it (as the SDKs do).
    #[default]
    Normal,
    /// Percent-encode every byte (CONN-2: the server must decode).
    All,
}

/// A named peer of a case: one WebSocket connection, opened on first use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    #[serde(default)]
    pub credential: Credential,
    /// `other` (the target's second app) or the name of an app from `apps`.
    pub app: Option<String>,
    /// `sub` claim; default `{run}-<peer name>`. Placeholders allowed.
    pub sub: Option<String>,
    /// Leave `sub` out (the server assigns a UUID, AUTH-10).
    #[serde(default)]
    pub no_sub: bool,
    pub channels: Option<Vec<String>>,
    pub permissions: Option<Vec<String>>,
    /// The `peerMetadata` claim: a table, or a string holding the claim's exact JSON
    /// text (member order, number spelling and escapes as written; a table's members
    /// come out sorted). Either way `{peer_metadata.<peer>}` is its JSON text.
    pub peer_metadata: Option<Json>,
    /// The `metadata` claim, as `peer_metadata`; `{metadata.<peer>}` is its JSON text.
    pub metadata: Option<Json>,
    /// Token lifetime; default one hour. Required for `credential = "expiring"`.
    pub expires_in_ms: Option<i64>,
    /// Leave `exp` out (JWT-7).
    #[serde(default)]
    pub no_exp: bool,
    /// Extra or overriding claims, merged last (e.g. a claim of the wrong type).
    pub claims: Option<serde_json::Map<String, Json>>,
    /// The query string for `credential = "raw"`, e.g. `token={tok}`.
    pub query: Option<String>,
    #[serde(default)]
    pub encode: Encoding,
    /// An `Origin` header for the upgrade request.
    pub origin: Option<String>,
    /// Another path than the target's (e.g. `/v2`).
    pub path: Option<String>,
    /// Wait for the `welcome` right after connecting (default true); set false when the
    /// case expects a close before any welcome or inspects the welcome itself.
    pub auto_welcome: Option<bool>,
}

impl PeerSpec {
    pub fn auto_welcome(&self) -> bool {
        self.auto_welcome.unwrap_or(true)
    }
}

/// `send_padded`: a frame padded with a `pad` member to exactly `size` bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Padded {
    pub frame: Json,
    /// A number, or a placeholder such as `"{mms+1}"`.
    pub size: Json,
    /// Send as this many WebSocket fragments (FRAME-9: the limit applies after reassembly).
    #[serde(default = "one")]
    pub fragments: usize,
}

fn one() -> usize {
    1
}

/// `burst`: `count` copies of a frame written back to back (`{n}` is the copy's index).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub frame: Json,
    pub count: u32,
}

/// `expect_close`: the connection ends with `code`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseExpect {
    pub code: u16,
    /// No application frame may precede the close (CONN-7), apart from the uncorrelated
    /// error frame ERRF-4 tolerates before 4001/4002/4012.
    #[serde(default)]
    pub nothing_before: bool,
    /// The close must come within [exp − 1000 ms, exp + 500 ms] of this peer's token
    /// expiry (EXP-1).
    pub at_exp: Option<String>,
    /// The close frame must carry a non-empty reason of at most 123 bytes (CONN-10).
    #[serde(default)]
    pub with_reason: bool,
}

/// `assert`: a value built from placeholders must match an expectation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertSpec {
    pub value: Json,
    pub expect: Json,
}

/// `connect_flood`: upgrade attempts from this case's source address until HTTP 429.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// The per-IP limit the server should enforce (RATE-5: 60).
    pub limit: u32,
    /// Tolerance around the limit, for refill during the flood.
    #[serde(default = "five")]
    pub slack: u32,
}

fn five() -> u32 {
    5
}

/// `rest`: one HTTP request to the control plane and what must come back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestSpec {
    #[serde(default = "get")]
    pub method: String,
    /// Relative to the REST base (`…/v1`), e.g. `/channels/{room|url}/peers`.
    pub path: String,
    /// `path` is relative to the server root instead of the REST base.
    #[serde(default)]
    pub root: bool,
    /// `key` (default), `none`, `id_only`, `wrong_secret`, `unknown_key`, `publishable`,
    /// `malformed`, `other`, `app:<name>`, or `raw:<header value>`.
    pub auth: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<Json>,
    pub body_raw: Option<String>,
    /// Pad the JSON body with a `pad` member to exactly this many bytes.
    pub pad_to: Option<usize>,
    /// Expected HTTP status.
    pub status: u16,
    /// Expected body (subset match; `{=name}` captures).
    pub expect_body: Option<Json>,
}

fn get() -> String {
    "GET".into()
}

/// `admin`: an operation on the reference server's admin hook (CFG-7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    pub op: AdminOp,
    /// Name of an app from the case's `apps`.
    pub app: String,
    /// For `op = "plan"`: the partial plan.
    pub plan: Option<Json>,
    /// For `op = "revoke"`: `secret` (default) or `publishable`.
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminOp {
    Suspend,
    Resume,
    Plan,
    Period,
    Revoke,
}

/// A step as written: every action is an optional field so that a misspelt one is an
/// unknown-field error; exactly one action must be present.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The peer the step acts on; default `a`.
    pub peer: Option<String>,
    /// Run the step this many times with `{i}` = 0, 1, …
    pub repeat: Option<u32>,
    /// Wait bound for `expect*` (default `--timeout-ms`).
    pub within_ms: Option<u64>,
    /// Window for `expect_none` (default 300 ms).
    pub ms: Option<u64>,
    /// With `expect`: the matched frame's raw text must contain this (placeholders allowed).
    pub raw_contains: Option<String>,
    /// With `expect`/`expect_all`: frames matching this are dropped while waiting.
    pub skip: Option<Json>,

    pub connect: Option<bool>,
    pub reconnect: Option<bool>,
    pub send: Option<Json>,
    pub send_raw: Option<String>,
    pub send_binary: Option<String>,
    pub send_text_hex: Option<String>,
    pub send_padded: Option<Padded>,
    pub burst: Option<Burst>,
    pub ws_ping: Option<String>,
    pub expect: Option<Json>,
    pub expect_all: Option<Vec<Json>>,
    pub expect_none: Option<Json>,
    pub expect_silence: Option<u64>,
    pub expect_close: Option<CloseExpect>,
    pub expect_http: Option<u16>,
    pub expect_ws_pong: Option<String>,
    pub rest: Option<RestSpec>,
    pub admin: Option<AdminSpec>,
    pub wait_ms: Option<u64>,
    pub close: Option<u16>,
    pub drop: Option<bool>,
    pub shutdown_server: Option<bool>,
    pub connect_flood: Option<Flood>,
    pub assert: Option<AssertSpec>,
    pub subscribe: Option<SubscribeSpec>,
}

/// `subscribe`: shorthand for a subscribe with a requestId, its ack and its snapshot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeSpec {
    pub channel: String,
    #[serde(default)]
    pub include_sender_metadata: bool,
    /// The snapshot's `joined` array (exact, in order; use `{ "$set" = [...] }` for any
    /// order); absent: any snapshot for the channel; `false`: no snapshot expected.
    pub snapshot: Option<Json>,
}

/// What a step does, after validation.
#[derive(Debug, Clone)]
pub enum Action {
    Connect,
    Reconnect,
    Send(Json),
    SendRaw(String),
    SendBinary(String),
    SendTextBytes(Vec<u8>),
    SendPadded(Padded),
    Burst(Burst),
    WsPing(String),
    Expect {
        frame: Json,
        raw_contains: Option<String>,
        skip: Option<Json>,
    },
    ExpectAll {
        frames: Vec<Json>,
        skip: Option<Json>,
    },
    ExpectNone {
        frame: Json,
        ms: u64,
    },
    ExpectSilence(u64),
    ExpectClose(CloseExpect),
    ExpectHttp(u16),
    ExpectWsPong(String),
    Rest(RestSpec),
    Admin(AdminSpec),
    Wait(u64),
    Close(u16),
    Drop,
    ShutdownServer,
    ConnectFlood(Flood),
    Assert(AssertSpec),
}

impl Action {
    /// Whether the action needs a peer connection.
    pub fn uses_peer(&self) -> bool {
        !matches!(
            self,
            Action::Rest(_)
                | Action::Admin(_)
                | Action::Wait(_)
                | Action::ShutdownServer
                | Action::Assert(_)
        )
    }

    /// The step's keyword, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Reconnect => "reconnect",
            Action::Send(_) => "send",
            Action::SendRaw(_) => "send_raw",
            Action::SendBinary(_) => "send_binary",
            Action::SendTextBytes(_) => "send_text_hex",
            Action::SendPadded(_) => "send_padded",
            Action::Burst(_) => "burst",
            Action::WsPing(_) => "ws_ping",
            Action::Expect { .. } => "expect",
            Action::ExpectAll { .. } => "expect_all",
            Action::ExpectNone { .. } => "expect_none",
            Action::ExpectSilence(_) => "expect_silence",
            Action::ExpectClose(_) => "expect_close",
            Action::ExpectHttp(_) => "expect_http",
            Action::ExpectWsPong(_) => "expect_ws_pong",
            Action::Rest(_) => "rest",
            Action::Admin(_) => "admin",
            Action::Wait(_) => "wait_ms",
            Action::Close(_) => "close",
            Action::Drop => "drop",
            Action::ShutdownServer => "shutdown_server",
            Action::ConnectFlood(_) => "connect_flood",
            Action::Assert(_) => "assert",
        }
    }
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct Step {
    pub peer: String,
    pub repeat: u32,
    pub within_ms: Option<u64>,
    pub action: Action,
    /// 1-based line in the case file, for messages.
    pub line: usize,
    /// 1-based position of the step as written (a `subscribe` shorthand expands into
    /// several steps with the same index).
    pub index: usize,
}

/// A case as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    pub id: String,
    pub spec: Vec<String>,
    pub level: Level,
    #[serde(default)]
    pub choice: bool,
    pub title: String,
    #[serde(default)]
    pub requires: Vec<Requirement>,
    /// Tests a limit of the server itself (rate, concurrency): run last and alone.
    #[serde(default)]
    pub alone: bool,
    #[serde(default)]
    pub peers: BTreeMap<String, PeerSpec>,
    /// Isolated apps created through the admin hook: name → body of `POST /_admin/apps`.
    #[serde(default)]
    pub apps: BTreeMap<String, Json>,
    pub steps: Vec<Spanned<StepSpec>>,
}

/// A case file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    area: String,
    title: String,
    #[serde(default)]
    about: Option<String>,
    #[serde(rename = "case", default)]
    cases: Vec<CaseSpec>,
}

/// The first pass: only where each case is and what it is called, so errors of the
/// strict pass can name the case.
#[derive(Debug, Deserialize)]
struct FileOutline {
    #[serde(rename = "case", default)]
    cases: Vec<Spanned<toml::Table>>,
}

/// A loaded, validated case.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub spec: Vec<String>,
    pub level: Level,
    pub choice: bool,
    pub title: String,
    /// Declared and derived requirements.
    pub requires: BTreeSet<Requirement>,
    pub alone: bool,
    pub peers: BTreeMap<String, PeerSpec>,
    pub apps: BTreeMap<String, Json>,
    pub steps: Vec<Step>,
    /// The case's area (the file's `area`).
    pub area: String,
    /// Where it came from, e.g. `conform/sub.toml:12`.
    pub source: String,
}

impl Case {
    /// Whether the case floods connects (it must run after every other case).
    pub fn floods(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.action, Action::ConnectFlood(_)))
    }
}

/// A loaded case file.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub path: PathBuf,
    pub area: String,
    pub title: String,
    pub about: Option<String>,
    pub cases: Vec<Case>,
}

/// 1-based (line, column) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// Parses and validates one case file. `known_rules` are the SPEC ids cases may cite
/// (`None`: any id is accepted).
pub fn parse_file(
    path: &Path,
    text: &str,
    known_rules: Option<&BTreeSet<String>>,
) -> Result<CaseFile, CaseError> {
    let parse_error = |e: toml::de::Error, outline: Option<&FileOutline>| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = line_col(text, offset);
        let where_ = outline
            .and_then(|o| {
                // An array-of-tables entry's span may cover only its `[[case]]`
                // header: the case is the last one starting before the error.
                o.cases
                    .iter()
                    .rev()
                    .find(|c| c.span().start <= offset)
                    .map(|c| match c.get_ref().get("id").and_then(|v| v.as_str()) {
                        Some(id) => format!("case `{id}`: "),
                        None => "case without id: ".to_owned(),
                    })
            })
            .unwrap_or_default();
        CaseError::Parse {
            file: path.to_owned(),
            line,
            column,
            where_,
            message: e.message().trim().to_owned(),
        }
    };
    let outline: FileOutline = toml::from_str(text).map_err(|e| parse_error(e, None))?;
    let spec: FileSpec = toml::from_str(text).map_err(|e| parse_error(e, Some(&outline)))?;

    let mut cases = Vec::with_capacity(spec.cases.len());
    for (i, case) in spec.cases.into_iter().enumerate() {
        let line = outline
            .cases
            .get(i)
            .map(|c| line_col(text, c.span().start).0)
            .unwrap_or(1);
        cases.push(validate(path, text, line, &spec.area, case, known_rules)?);
    }
    Ok(CaseFile {
        path: path.to_owned(),
        area: spec.area,
        title: spec.title,
        about: spec.about,
        cases,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_/.".contains(c))
}

fn validate(
    path: &Path,
    text: &str,
    line: usize,
    area: &str,
    case: CaseSpec,
    known_rules: Option<&BTreeSet<String>>,
) -> Result<Case, CaseError> {
    let invalid = |line: usize, message: String| CaseError::Invalid {
        file: path.to_owned(),
        line,
        case: case.id.clone(),
        message,
    };
    if !valid_id(&case.id) {
        return Err(invalid(
            line,
            "field `id`: use lowercase letters, digits and `-_/.` (at most 80)".into(),
        ));
    }
    if case.spec.is_empty() {
        return Err(invalid(
            line,
            "field `spec`: cite at least one SPEC rule id".into(),
        ));
    }
    if let Some(known) = known_rules {
        for rule in &case.spec {
            if !known.contains(rule) {
                return Err(invalid(
                    line,
                    format!("field `spec`: `{rule}` is not a rule id of SPEC"),
                ));
            }
        }
    }
    if case.steps.is_empty() {
        return Err(invalid(
            line,
            "field `steps`: a case needs at least one step".into(),
        ));
    }
    let mut requires: BTreeSet<Requirement> = case.requires.iter().copied().collect();
    if !case.apps.is_empty() {
        requires.insert(Requirement::Admin);
    }
    for (name, peer) in &case.peers {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            return Err(invalid(
                line,
                format!("field `peers.{name}`: peer names are letters, digits and `_`"),
            ));
        }
        match peer.credential {
            Credential::Publishable | Credential::Both
                if peer.app.as_deref().is_none_or(|a| a == "other") =>
            {
                requires.insert(Requirement::PublishableKey);
            }
            Credential::Expiring if peer.expires_in_ms.is_none() => {
                return Err(invalid(
                    line,
                    format!(
                        "field `peers.{name}.expires_in_ms`: required with credential = \"expiring\""
                    ),
                ));
            }
            Credential::Raw if peer.query.is_none() => {
                return Err(invalid(
                    line,
                    format!("field `peers.{name}.query`: required with credential = \"raw\""),
                ));
            }
            _ => {}
        }
        match peer.app.as_deref() {
            None => {}
            Some("other") => {
                requires.insert(Requirement::OtherApp);
            }
            Some(app) if case.apps.contains_key(app) => {}
            Some(app) => {
                return Err(invalid(
                    line,
                    format!(
                        "field `peers.{name}.app`: no app `{app}` in this case's `apps` (or use \"other\")"
                    ),
                ));
            }
        }
        for (field, value) in [
            ("peer_metadata", &peer.peer_metadata),
            ("metadata", &peer.metadata),
        ] {
            let ok = match value {
                None | Some(Json::Object(_)) => true,
                Some(Json::String(text)) => {
                    text.trim_start().starts_with('{')
                        && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
                }
                Some(_) => false,
            };
            if !ok {
                return Err(invalid(
                    line,
                    format!(
                        "field `peers.{name}.{field}`: must be a table, or a string holding a JSON object's text (use `claims` for a claim of the wrong type)"
                    ),
                ));
            }
        }
    }

    let mut steps = Vec::with_capacity(case.steps.len());
    for (written, spanned) in case.steps.iter().enumerate() {
        let step_line = line_col(text, spanned.span().start).0;
        let s = spanned.get_ref();
        let hex_bytes = match &s.send_text_hex {
            Some(hex) => Some(decode_hex(hex).ok_or_else(|| {
                invalid(
                    step_line,
                    "field `send_text_hex`: not an even-length hex string".into(),
                )
            })?),
            None => None,
        };
        let mut actions = Vec::new();
        let mut push = |present: bool, action: Option<Action>| {
            if present && let Some(a) = action {
                actions.push(a);
            }
        };
        push(s.connect == Some(true), Some(Action::Connect));
        push(s.reconnect == Some(true), Some(Action::Reconnect));
        push(true, s.send.clone().map(Action::Send));
        push(true, s.send_raw.clone().map(Action::SendRaw));
        push(true, s.send_binary.clone().map(Action::SendBinary));
        push(true, hex_bytes.map(Action::SendTextBytes));
        push(true, s.send_padded.clone().map(Action::SendPadded));
        push(true, s.burst.clone().map(Action::Burst));
        push(true, s.ws_ping.clone().map(Action::WsPing));
        push(
            true,
            s.expect.clone().map(|frame| Action::Expect {
                frame,
                raw_contains: s.raw_contains.clone(),
                skip: s.skip.clone(),
            }),
        );
        push(
            true,
            s.expect_all.clone().map(|frames| Action::ExpectAll {
                frames,
                skip: s.skip.clone(),
            }),
        );
        let sugar = s.subscribe.clone();
        push(sugar.is_some(), Some(Action::Wait(0)));
        push(
            true,
            s.expect_none.clone().map(|frame| Action::ExpectNone {
                frame,
                ms: s.ms.unwrap_or(300),
            }),
        );
        push(true, s.expect_silence.map(Action::ExpectSilence));
        push(true, s.expect_close.clone().map(Action::ExpectClose));
        push(true, s.expect_http.map(Action::ExpectHttp));
        push(true, s.expect_ws_pong.clone().map(Action::ExpectWsPong));
        push(true, s.rest.clone().map(Action::Rest));
        push(true, s.admin.clone().map(Action::Admin));
        push(true, s.wait_ms.map(Action::Wait));
        push(true, s.close.map(Action::Close));
        push(s.drop == Some(true), Some(Action::Drop));
        push(
            s.shutdown_server == Some(true),
            Some(Action::ShutdownServer),
        );
        push(true, s.connect_flood.clone().map(Action::ConnectFlood));
        push(true, s.assert.clone().map(Action::Assert));
        let action = match actions.len() {
            1 => actions.pop().expect("one action"),
            0 => {
                return Err(invalid(
                    step_line,
                    "step has no action: give one of connect, reconnect, send, send_raw, send_binary, \
                     send_text_hex, send_padded, burst, ws_ping, expect, expect_all, expect_none, \
                     expect_silence, expect_close, expect_http, expect_ws_pong, rest, admin, wait_ms, \
                     close, drop, shutdown_server, connect_flood, assert, subscribe"
                        .into(),
                ));
            }
            _ => {
                let names: Vec<_> = actions.iter().map(Action::name).collect();
                return Err(invalid(
                    step_line,
                    format!(
                        "step has several actions ({}): split it into one step per action",
                        names.join(", ")
                    ),
                ));
            }
        };
        if s.skip.is_some() && !matches!(action, Action::Expect { .. } | Action::ExpectAll { .. }) {
            return Err(invalid(
                step_line,
                "field `skip` only goes with `expect` or `expect_all`".into(),
            ));
        }
        if s.raw_contains.is_some() && !matches!(action, Action::Expect { .. }) {
            return Err(invalid(
                step_line,
                "field `raw_contains` only goes with `expect`".into(),
            ));
        }
        if s.ms.is_some() && !matches!(action, Action::ExpectNone { .. }) {
            return Err(invalid(
                step_line,
                "field `ms` only goes with `expect_none`".into(),
            ));
        }
        if s.within_ms.is_some()
            && !matches!(
                action,
                Action::Expect { .. }
                    | Action::ExpectAll { .. }
                    | Action::ExpectClose(_)
                    | Action::ExpectWsPong(_)
                    | Action::ExpectHttp(_)
            )
        {
            return Err(invalid(
                step_line,
                "field `within_ms` only goes with expect, expect_all, expect_close, expect_http or expect_ws_pong"
                    .into(),
            ));
        }
        let peer = s.peer.clone().unwrap_or_else(|| "a".to_owned());
        if action.uses_peer() && !case.peers.contains_key(&peer) {
            return Err(invalid(
                step_line,
                if s.peer.is_none() {
                    "field `peer`: the step names no peer and the case has no peer `a`".into()
                } else {
                    format!("field `peer`: no peer `{peer}` in this case's `peers`")
                },
            ));
        }
        match &action {
            Action::Rest(rest) => {
                if rest.body.is_some() && rest.body_raw.is_some() {
                    return Err(invalid(
                        step_line,
                        "field `rest`: give `body` or `body_raw`, not both".into(),
                    ));
                }
                match rest.auth.as_deref() {
                    Some("other") => {
                        requires.insert(Requirement::OtherApp);
                    }
                    Some("publishable") => {
                        requires.insert(Requirement::PublishableKey);
                    }
                    Some(a) if a.starts_with("app:") => {
                        if !case.apps.contains_key(&a[4..]) {
                            return Err(invalid(
                                step_line,
                                format!(
                                    "field `rest.auth`: no app `{}` in this case's `apps`",
                                    &a[4..]
                                ),
                            ));
                        }
                    }
                    Some(
                        "key" | "none" | "id_only" | "wrong_secret" | "unknown_key" | "malformed",
                    )
                    | None => {}
                    Some(a) if a.starts_with("raw:") => {}
                    Some(a) => {
                        return Err(invalid(
                            step_line,
                            format!(
                                "field `rest.auth`: unknown `{a}`; use key, none, id_only, wrong_secret, \
                                 unknown_key, malformed, publishable, other, app:<name> or raw:<header>"
                            ),
                        ));
                    }
                }
            }
            Action::Admin(admin) => {
                requires.insert(Requirement::Admin);
                if !case.apps.contains_key(&admin.app) {
                    return Err(invalid(
                        step_line,
                        format!(
                            "field `admin.app`: no app `{}` in this case's `apps`",
                            admin.app
                        ),
                    ));
                }
                if (admin.op == AdminOp::Plan) != admin.plan.is_some() {
                    return Err(invalid(
                        step_line,
                        "field `admin.plan`: required with op = \"plan\" and only then".into(),
                    ));
                }
            }
            Action::ShutdownServer => {
                requires.insert(Requirement::DedicatedServer);
            }
            Action::SendPadded(p) if p.fragments == 0 => {
                return Err(invalid(
                    step_line,
                    "field `send_padded.fragments`: at least 1".into(),
                ));
            }
            Action::ExpectClose(c) => {
                if let Some(p) = &c.at_exp
                    && !case.peers.contains_key(p)
                {
                    return Err(invalid(
                        step_line,
                        format!("field `expect_close.at_exp`: no peer `{p}`"),
                    ));
                }
            }
            _ => {}
        }
        let repeat = s.repeat.unwrap_or(1);
        if let Some(sub) = sugar {
            if s.within_ms.is_some() {
                return Err(invalid(
                    step_line,
                    "field `within_ms` does not go with `subscribe`".into(),
                ));
            }
            if repeat != 1 {
                return Err(invalid(
                    step_line,
                    "field `repeat` does not go with `subscribe`".into(),
                ));
            }
            if !case.peers.contains_key(&peer) {
                return Err(invalid(
                    step_line,
                    format!("field `peer`: no peer `{peer}` in this case's `peers`"),
                ));
            }
            let rid = format!("sub-{step_line}");
            let mut frame =
                serde_json::json!({"type": "subscribe", "channel": sub.channel, "requestId": rid});
            if sub.include_sender_metadata {
                frame["includeSenderMetadata"] = Json::Bool(true);
            }
            let mut expanded = vec![
                Action::Send(frame),
                Action::Expect {
                    frame: serde_json::json!({"type": "ack", "requestId": rid}),
                    raw_contains: None,
                    skip: None,
                },
            ];
            match sub.snapshot {
                Some(Json::Bool(false)) => {}
                joined => {
                    let mut snap =
                        serde_json::json!({"type": "presence", "channel": sub.channel, "left": []});
                    if let Some(j) = joined {
                        snap["joined"] = j;
                    }
                    expanded.push(Action::Expect {
                        frame: snap,
                        raw_contains: None,
                        skip: None,
                    });
                }
            }
            for action in expanded {
                steps.push(Step {
                    peer: peer.clone(),
                    repeat: 1,
                    within_ms: None,
                    action,
                    line: step_line,
                    index: written + 1,
                });
            }
            continue;
        }
        steps.push(Step {
            peer,
            repeat,
            within_ms: s.within_ms,
            action,
            line: step_line,
            index: written + 1,
        });
    }
    Ok(Case {
        source: format!("{}:{line}", path.display()),
        id: case.id,
        spec: case.spec,
        level: case.level,
        choice: case.choice,
        title: case.title,
        requires,
        alone: case.alone,
        peers: case.peers,
        apps: case.apps,
        steps,
        area: area.to_owned(),
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// Loads the built-in files, then every `*.toml` under `extra` (sorted by path); a case
/// whose id is already loaded replaces it. Duplicate ids within one source are an error.
pub fn load(
    extra: Option<&Path>,
    known_rules: Option<&BTreeSet<String>>,
) -> Result<Vec<CaseFile>, CaseError> {
    let mut files = Vec::new();
    for (name, text) in BUILTIN {
        files.push(parse_file(Path::new(name), text, known_rules)?);
    }
    check_duplicates(&files)?;
    if let Some(dir) = extra {
        let mut paths = toml_files_under(dir)?;
        paths.sort();
        if paths.is_empty() {
            return Err(CaseError::Empty {
                path: dir.to_owned(),
            });
        }
        let mut added = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CaseError::Read {
                path: path.clone(),
                source,
            })?;
            added.push(parse_file(&path, &text, known_rules)?);
        }
        check_duplicates(&added)?;
        let replaced: BTreeSet<String> = added
            .iter()
            .flat_map(|f| f.cases.iter().map(|c| c.id.clone()))
            .collect();
        for file in &mut files {
            file.cases.retain(|c| !replaced.contains(&c.id));
        }
        files.retain(|f| !f.cases.is_empty());
        files.extend(added);
    }
    Ok(files)
}

fn check_duplicates(files: &[CaseFile]) -> Result<(), CaseError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for file in files {
        for case in &file.cases {
            if let Some(first) = seen.insert(&case.id, &case.source) {
                let (path, line) = case.source.rsplit_once(':').unwrap_or((&case.source, "1"));
                return Err(CaseError::Invalid {
                    file: PathBuf::from(path),
                    line: line.parse().unwrap_or(1),
                    case: case.id.clone(),
                    message: format!("field `id`: duplicate id, first defined at {first}"),
                });
            }
        }
    }
    Ok(())
}

fn toml_files_under(dir: &Path) -> Result<Vec<PathBuf>, CaseError> {
    let list_err = |source| CaseError::ListDir {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    // Bounded: a directory tree, each directory visited once (no symlink following).
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let kind = entry.file_type().map_err(list_err)?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "toml") {
                // The rule table sits beside the cases; it is not a case file.
                if path.file_name().is_some_and(|n| n == "spec-rules.toml") {
                    continue;
                }
                out.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CaseFile, CaseError> {
        parse_file(Path::new("t.toml"), text, None)
    }

    const GOOD: &str = r#"
area = "SUB"
title = "subscribe"

[[case]]
id = "sub/ack"
spec = ["SUB-5"]
level = "must"
title = "ack"
peers = { a = {}, b = { permissions = ["subscribe"] } }
steps = [
  { send = { type = "subscribe", channel = "{room}", requestId = "s1" } },
  { expect = { type = "ack", requestId = "s1" }, within_ms = 500 },
  { peer = "b", expect_silence = 300 },
  { rest = { method = "GET", path = "/usage", status = 200 } },
]
"#;

    #[test]
    fn parses_a_case() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.cases.len(), 1);
        let c = &f.cases[0];
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[2].peer, "b");
        assert_eq!(c.steps[1].within_ms, Some(500));
        assert_eq!(c.steps[0].line, 12);
        assert!(matches!(c.steps[3].action, Action::Rest(_)));
        assert_eq!(c.source, "t.toml:5");
    }

    #[test]
    fn misspelt_field_names_file_case_line_and_field() {
        let bad = GOOD.replace("spec = [\"SUB-5\"]", "spek = [\"SUB-5\"]");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("t.toml:"), "{e}");
        assert!(e.contains("case `sub/ack`"), "{e}");
        assert!(e.contains("spek"), "{e}");
        let bad = GOOD.replace("within_ms = 500", "within = 500");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("t.toml:13:"), "{e}");
        assert!(e.contains("`within`"), "{e}");
        let bad = GOOD.replace("permissions", "permission");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("`permission`") && e.contains("sub/ack"), "{e}");
    }

    #[test]
    fn semantic_errors() {
        let e = parse(&GOOD.replace("peer = \"b\"", "peer = \"c\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no peer `c`") && e.contains("t.toml:14"), "{e}");
        let e = parse(&GOOD.replace(
            "{ peer = \"b\", expect_silence = 300 }",
            "{ peer = \"b\", expect_silence = 300, wait_ms = 3 }",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("several actions"), "{e}");
        let known: BTreeSet<String> = ["SUB-4".to_owned()].into();
        let e = parse_file(Path::new("t.toml"), GOOD, Some(&known))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`SUB-5` is not a rule id"), "{e}");
    }

    #[test]
    fn requirements_are_derived() {
        let text = GOOD.replace(
            "b = { permissions = [\"subscribe\"] }",
            "b = { credential = \"publishable\" }, c = { app = \"other\" }",
        );
        let f = parse(&text).unwrap();
        let r = &f.cases[0].requires;
        assert!(r.contains(&Requirement::PublishableKey) && r.contains(&Requirement::OtherApp));
    }

    #[test]
    fn builtin_files_load() {
        let files = load(None, None).unwrap();
        let n: usize = files.iter().map(|f| f.cases.len()).sum();
        assert!(n > 0);
    }
}
