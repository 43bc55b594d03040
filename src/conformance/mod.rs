//! The conformance suite (`stampede conform`): data-driven cases (`conformance/*.toml`)
//! that check a server against SPEC over the wire, against the in-process reference
//! server by default or any `--target`.
//!
//! - [`case`]: the case model and loader; [`matcher`]: placeholders and subset matching;
//! - [`client`]: raw WebSocket peers and the REST client; [`invariants`]: checks on
//!   every received frame; [`runner`]: runs cases concurrently with timeouts;
//! - [`verdict`]: grading; [`report`]: text, JUnit, JSON and Markdown output;
//! - [`coverage`]: which SPEC rules the cases cover; [`selfcheck`]: the suite against
//!   the reference server with each fault switch.
//!
//! The harness reaches the reference server only through a socket; `embedded` starts it.

pub mod case;
pub mod client;
pub mod coverage;
pub mod invariants;
pub mod log;
pub mod matcher;
pub mod rawjson;
pub mod report;
pub mod runner;
pub mod selfcheck;
pub mod verdict;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use self::case::Case;
use self::client::{ConnectOptions, Event, Pacer, SourceIps, WsConn};
use self::runner::Env;
use self::verdict::{CaseResult, RunOutcome};
use crate::embedded::{EmbeddedServer, Options, Tls};
use crate::shutdown::Stop;
use crate::target::Target;
use crate::transport::{ConnectError, Connector, Endpoint, TlsArgs};

/// Flags of `stampede conform`.
#[derive(Debug, Clone, Args)]
pub struct ConformArgs {
    /// WebSocket endpoint of the server under test, e.g. wss://staging.example.com/v1.
    /// Without it the reference server is started in-process on an ephemeral port.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Without --target: serve the in-process reference server over TLS (a fresh
    /// self-signed certificate), so the suite runs over wss:// and https://.
    #[arg(long = "tls", conflicts_with = "target")]
    pub embedded_tls: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// REST base of the target; default derived from --target (wss://h/v1 → https://h/v1).
    #[arg(long, value_name = "URL", requires = "target")]
    pub rest_url: Option<String>,
    /// Secret key id used to sign tokens and call REST (default sk_id_dev, the
    /// reference server's development key).
    #[arg(long, env = "STAMPEDE_KEY_ID", value_name = "ID", requires = "secret")]
    pub key_id: Option<String>,
    /// Signing secret of --key-id.
    #[arg(
        long,
        env = "STAMPEDE_SECRET",
        value_name = "S",
        requires = "key_id",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// A publishable key of the target; cases that need one are skipped without it.
    #[arg(long, env = "STAMPEDE_PUBLISHABLE_KEY", value_name = "pk_…")]
    pub publishable_key: Option<String>,
    /// A secret key of a second app, for tenant-isolation cases (AUTHZ-9).
    #[arg(long, value_name = "ID", requires = "other_secret")]
    pub other_key_id: Option<String>,
    /// Signing secret of --other-key-id.
    #[arg(
        long,
        value_name = "S",
        requires = "other_key_id",
        hide_env_values = true
    )]
    pub other_secret: Option<String>,
    /// Admin token of a reference server started with --admin-token (enables the
    /// cases that create isolated apps, suspend accounts or change plans).
    #[arg(long, value_name = "T")]
    pub admin_token: Option<String>,
    /// Run only cases whose id, area or SPEC rule id matches; `*` is a wildcard,
    /// comma-separated or repeated (e.g. --only 'sub/*,PRES-3').
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,
    /// Leave out cases whose id, area or SPEC rule id matches (as --only).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// SHOULD-level cases and non-strict deviations fail the run too.
    #[arg(long)]
    pub strict: bool,
    /// Skip cases that rest on a [choice] rule of SPEC (for third-party servers).
    #[arg(long)]
    pub skip_choices: bool,
    /// List what would run (and why cases would be skipped) without connecting.
    #[arg(long)]
    pub dry_run: bool,
    /// List every case: id, level, SPEC ids, title.
    #[arg(long)]
    pub list: bool,
    /// Show every SPEC rule with the cases citing it; exit 1 if an observable
    /// server-side MUST is uncovered.
    #[arg(long)]
    pub coverage: bool,
    /// Run the suite against the clean reference server and once per fault switch;
    /// print a kill table; exit 1 if a fault survives.
    #[arg(long)]
    pub self_check: bool,
    /// Also load case files (*.toml) from DIR; a case with a built-in id replaces it.
    #[arg(long, value_name = "DIR")]
    pub cases: Option<PathBuf>,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// How long to wait for an expected frame, close or response, in ms.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub timeout_ms: u64,
    /// Cases run at the same time.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: u64,
    /// Connect attempts per 60 s against a remote target (its per-IP limit, RATE-5, is
    /// 60 by default); 0 turns pacing off. Not used when each case gets its own
    /// loopback source address (embedded or loopback targets).
    #[arg(long, value_name = "N/60s", default_value = "55", value_parser = parse_budget)]
    pub connect_budget: u32,
    /// Connect every case from one source address, as against a remote server (so the
    /// connect budget applies); for testing the pacing itself.
    #[arg(long, hide = true)]
    pub single_source: bool,
    /// Run the embedded reference server with these fault switches (repeatable).
    #[arg(long, value_name = "NAME", hide = true, conflicts_with = "target")]
    pub fault: Vec<String>,
    /// Run the embedded reference server as this legal variant (repeatable).
    #[arg(long, value_name = "NAME", hide = true, conflicts_with = "target")]
    pub variant: Vec<String>,
    /// Show timings of passing cases too.
    #[arg(long, short)]
    pub verbose: bool,
}

fn parse_budget(s: &str) -> Result<u32, String> {
    let n = s.strip_suffix("/60s").unwrap_or(s);
    n.parse().map_err(|_| {
        format!(
            "`{s}` is not a connect budget: use a number of connects per 60 s, e.g. 55 or 55/60s"
        )
    })
}

/// Whether `pattern` (with `*` wildcards) matches `text`, ignoring ASCII case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn selected(case: &Case, patterns: &[String]) -> bool {
    patterns
        .iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| glob(p, &case.id) || glob(p, &case.area) || case.spec.iter().any(|r| glob(p, r)))
}

/// Loads every case and applies --only/--skip.
pub fn load_selected(args: &ConformArgs) -> anyhow::Result<(Vec<Arc<Case>>, usize)> {
    let known = coverage::rule_ids()?;
    let files = case::load(args.cases.as_deref(), Some(&known))?;
    let all: Vec<Case> = files.into_iter().flat_map(|f| f.cases).collect();
    let total = all.len();
    let chosen: Vec<Arc<Case>> = all
        .into_iter()
        .filter(|c| args.only.is_empty() || selected(c, &args.only))
        .filter(|c| !selected(c, &args.skip))
        .map(Arc::new)
        .collect();
    if chosen.is_empty() {
        bail!(
            "no case matches --only {:?} / --skip {:?} (see --list)",
            args.only,
            args.skip
        );
    }
    Ok((chosen, total))
}

fn run_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Creates (truncates) an output file up front, so a bad path fails before the run.
fn create_output(path: &Path, flag: &str) -> anyhow::Result<()> {
    std::fs::File::create(path)
        .map(|_| ())
        .with_context(|| format!("--{flag} {}: cannot create the file", path.display()))
}

fn write_output(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The target described by flags (remote).
fn remote_target(args: &ConformArgs, url: &str) -> anyhow::Result<Target> {
    let ep = Endpoint::parse(url).map_err(|e| anyhow::anyhow!("--target {e}"))?;
    if !ep.websocket {
        bail!("--target {url}: expected a ws:// or wss:// URL, e.g. wss://staging.example.com/v1");
    }
    if ep.path_and_query.contains('?') {
        bail!(
            "--target {url}: leave the query out; credentials come from --key-id/--secret or --publishable-key"
        );
    }
    let rest_url = args
        .rest_url
        .clone()
        .unwrap_or_else(|| Endpoint::rest_base(url));
    if Endpoint::parse(&rest_url).is_ok_and(|e| e.websocket) || !rest_url.contains("://") {
        bail!(
            "--rest-url {rest_url}: expected an http:// or https:// URL, e.g. https://staging.example.com/v1"
        );
    }
    Endpoint::parse(&rest_url).map_err(|e| anyhow::anyhow!("--rest-url {e}"))?;
    Ok(Target {
        ws_url: url.trim_end_matches('/').to_owned(),
        rest_url: rest_url.trim_end_matches('/').to_owned(),
        key_id: Some(args.key_id.clone().unwrap_or_else(|| "sk_id_dev".into())),
        secret: Some(
            args.secret
                .clone()
                .unwrap_or_else(|| "sk_secret_dev".into()),
        ),
        publishable_key: args.publishable_key.clone(),
        other_app: args.other_key_id.clone().zip(args.other_secret.clone()),
        admin_token: args.admin_token.clone(),
        embedded: false,
        ca_pem: None,
    })
}

/// Whether the target is dialled on this machine's loopback (after `--connect-to`), so
/// cases can use their own 127.x.y.z source addresses instead of pacing.
async fn dialled_on_loopback(connector: &Connector, url: &str) -> bool {
    let Ok(ep) = Endpoint::parse(url) else {
        return false;
    };
    connector
        .resolve(&ep, true, Duration::from_secs(5))
        .await
        .is_ok_and(|a| a.is_ipv4() && a.ip().is_loopback())
}

/// Checks the target answers like a protocol server before running anything: a
/// dead or wrong endpoint is "could not run" (exit 2), not 150 failed cases.
async fn probe(target: &Target, connector: &Connector) -> anyhow::Result<()> {
    const PROBE: Duration = Duration::from_secs(5);
    let (kid, secret) = (
        target.key_id.clone().unwrap_or_default(),
        target.secret.clone().unwrap_or_default(),
    );
    let exp = matcher::now_s() + 600;
    let token = crate::proto::auth::mint(
        &kid,
        secret.as_bytes(),
        &serde_json::json!({"sub": format!("conform-probe-{}", run_id()), "exp": exp}),
    );
    let url = format!("{}?token={token}", target.ws_url);
    let opts = ConnectOptions {
        origin: None,
        source: None,
        timeout_ms: PROBE.as_millis() as u64,
    };
    let mut conn = match WsConn::connect(connector, &url, &opts).await {
        Ok(c) => c,
        Err(e @ ConnectError::Tcp { .. }) => {
            bail!("cannot reach the target {}: {e}", target.ws_url)
        }
        Err(ConnectError::Http { status: 429, .. }) => bail!(
            "the target {} refuses connects from this address (HTTP 429, its per-IP limit RATE-5); wait a minute and retry",
            target.ws_url
        ),
        Err(ConnectError::Http { status, body }) => bail!(
            "the target {} answered the WebSocket upgrade with HTTP {status} {body}; is this the protocol's /v1 endpoint?",
            target.ws_url
        ),
        Err(e) => {
            let advice = e.advice().map(|a| format!("\n  {a}")).unwrap_or_default();
            bail!("cannot open a WebSocket to {}: {e}{advice}", target.ws_url)
        }
    };
    let verdict = match conn.next_event(Instant::now() + PROBE).await {
        Some(Event::Text { text, .. }) if text.contains("\"welcome\"") => Ok(()),
        Some(Event::Closed {
            code: Some(4001), ..
        }) => Err(anyhow::anyhow!(
            "the target {} refused a token signed with key {kid} (close 4001): pass its --key-id and --secret",
            target.ws_url
        )),
        Some(e) => Err(anyhow::anyhow!(
            "the target {} did not send `welcome` first: {}",
            target.ws_url,
            e.describe()
        )),
        None => Err(anyhow::anyhow!(
            "the target {} sent no `welcome` within {} s",
            target.ws_url,
            PROBE.as_secs()
        )),
    };
    let _ = conn.close(1000).await;
    verdict
}

/// A target describing the embedded server without starting it (for --dry-run).
fn embedded_capabilities() -> Target {
    Target {
        ws_url: "ws://127.0.0.1:0/v1".into(),
        rest_url: "http://127.0.0.1:0/v1".into(),
        key_id: Some("sk_id_dev".into()),
        secret: Some("sk_secret_dev".into()),
        publishable_key: Some("pk_live_dev".into()),
        other_app: Some(("sk_id_other".into(), "sk_secret_other".into())),
        admin_token: Some("dry-run".into()),
        embedded: true,
        ca_pem: None,
    }
}

/// An environment for running cases against `target`. `embedded_tls` is the TLS of the
/// embedded servers the suite starts itself (the target's, when it is embedded).
pub async fn env_for(
    target: Target,
    args: &ConformArgs,
    faults: Vec<String>,
    reference: bool,
    embedded_tls: Option<Tls>,
) -> anyhow::Result<Env> {
    let secure = target.ws_url.starts_with("wss://") || target.rest_url.starts_with("https://");
    let connector = Connector::new(&args.tls, secure, target.ca_pem.as_deref())?;
    let spread = !args.single_source
        && (target.embedded || dialled_on_loopback(&connector, &target.ws_url).await);
    Ok(Env {
        pacer: (!spread && args.connect_budget > 0)
            .then(|| Arc::new(Pacer::new(args.connect_budget))),
        target,
        timeout_ms: args.timeout_ms,
        strict: args.strict,
        skip_choices: args.skip_choices,
        spread,
        ips: Arc::new(SourceIps::default()),
        faults,
        variants: Vec::new(),
        run_id: run_id(),
        reference,
        connector,
        embedded_tls,
    })
}

/// Runs `cases` against `env`, with a progress bar on a terminal.
pub async fn run_suite(
    cases: Vec<Arc<Case>>,
    env: Env,
    jobs: usize,
    stop: Stop,
    progress: bool,
) -> RunOutcome {
    let started = Instant::now();
    let bar = if progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(cases.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cases {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let b = bar.clone();
    let on_done: Arc<dyn Fn(&CaseResult) + Send + Sync> = Arc::new(move |r: &CaseResult| {
        if let Some(b) = &b {
            b.inc(1);
            if r.verdict == verdict::Verdict::Fail {
                b.set_message(format!("(last failure: {})", r.id));
            }
        }
    });
    let env = Arc::new(env);
    let results = runner::run_all(cases, env.clone(), jobs, stop, on_done).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    RunOutcome {
        target: if env.target.embedded {
            format!("the embedded reference server ({})", env.target.ws_url)
        } else {
            env.target.ws_url.clone()
        },
        results,
        duration: started.elapsed(),
        pacing: env.pacer.as_ref().map(|p| p.waited()).unwrap_or_default(),
        strict: env.strict,
    }
}

fn print_list(cases: &[Arc<Case>]) {
    let mut out = std::io::stdout().lock();
    for c in cases {
        let _ = writeln!(
            out,
            "{:<48} {:<6} {}{}  {}",
            c.id,
            c.level.to_string(),
            c.spec.join(","),
            if c.choice { " [choice]" } else { "" },
            c.title
        );
    }
    let _ = writeln!(out, "{} cases", cases.len());
}

pub async fn main(args: ConformArgs, stop: Stop) -> anyhow::Result<i32> {
    let (cases, total) = load_selected(&args)?;
    if args.list {
        print_list(&cases);
        return Ok(0);
    }
    if args.coverage {
        let rules = coverage::rules()?;
        let all = load_selected(&ConformArgs {
            only: Vec::new(),
            skip: Vec::new(),
            ..args.clone()
        })?
        .0;
        let refs: Vec<&Case> = all.iter().map(|c| c.as_ref()).collect();
        let (text, complete) = coverage::render(&rules, &refs);
        print!("{text}");
        return Ok(if complete { 0 } else { 1 });
    }
    if args.self_check {
        if args.target.is_some() {
            bail!("--self-check runs against the embedded reference server; leave out --target");
        }
        return selfcheck::run(cases, &args, stop).await;
    }
    for (path, flag) in [
        (&args.junit, "junit"),
        (&args.json, "json"),
        (&args.markdown, "markdown"),
    ] {
        if let Some(p) = path {
            create_output(p, flag)?;
        }
    }

    let mut server = None;
    let embedded_tls = if args.embedded_tls && !args.dry_run {
        Some(Tls::self_signed()?)
    } else {
        None
    };
    let target = match &args.target {
        Some(url) => remote_target(&args, url)?,
        None if args.dry_run => embedded_capabilities(),
        None => {
            let s = EmbeddedServer::start(Options {
                faults: args.fault.clone(),
                variants: args.variant.clone(),
                tls: embedded_tls.clone(),
                ..Default::default()
            })
            .await
            .context("cannot start the embedded reference server")?;
            let t = s.target().clone();
            server = Some(s);
            t
        }
    };
    let reference = target.embedded || target.admin_token.is_some();
    let mut env = env_for(target, &args, args.fault.clone(), reference, embedded_tls).await?;
    env.variants = args.variant.clone();
    if env.connector.insecure() {
        eprintln!(
            "warning: --insecure: server certificates are NOT verified; the verdicts say nothing about the target's certificate"
        );
    }

    if args.dry_run {
        let mut runs = 0;
        for c in &cases {
            match env.skip_reason(c) {
                Some(why) => println!("SKIP       {} — {why}", c.id),
                None => {
                    runs += 1;
                    println!(
                        "RUN        {} [{}]{}",
                        c.id,
                        c.spec.join(", "),
                        if c.alone { " (alone, last)" } else { "" }
                    )
                }
            }
        }
        println!(
            "{runs} of {} selected cases would run ({total} loaded)",
            cases.len()
        );
        return Ok(0);
    }
    if server.is_none() {
        probe(&env.target, &env.connector).await?;
        if let Some(p) = &env.pacer {
            eprintln!(
                "note: pacing connects to {} per 60 s for {} (its per-IP limit, RATE-5); this run may take minutes",
                args.connect_budget, env.target.ws_url
            );
            // The probe used one connect.
            p.acquire().await;
        }
    }

    let outcome = run_suite(cases, env, args.jobs as usize, stop, true).await;
    if let Some(s) = server {
        s.shutdown().await;
    }
    print!("{}", report::text::render(&outcome, args.verbose));
    if let Some(p) = &args.junit {
        let xml = report::junit::render(&outcome).context("cannot render the JUnit report")?;
        write_output(p, &xml)?;
    }
    if let Some(p) = &args.json {
        write_output(p, &report::json::render(&outcome))?;
    }
    if let Some(p) = &args.markdown {
        write_output(p, &report::markdown::render(&outcome))?;
    }
    Ok(outcome.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("sub/*", "sub/ack-then-snapshot"));
        assert!(glob("SUB-5", "SUB-5"));
        assert!(glob("sub-5", "SUB-5"));
        assert!(!glob("SUB-5", "SUB-50"));
        assert!(glob("*snapshot*", "sub/ack-then-snapshot"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acd"));
    }

    #[test]
    fn budgets() {
        assert_eq!(parse_budget("55"), Ok(55));
        assert_eq!(parse_budget("30/60s"), Ok(30));
        assert!(parse_budget("fast").is_err());
    }

    #[tokio::test]
    async fn loopback_detection() {
        let c = Connector::default();
        assert!(dialled_on_loopback(&c, "ws://127.0.0.1:8080/v1").await);
        assert!(dialled_on_loopback(&c, "ws://127.3.4.5:8080/v1").await);
        assert!(!dialled_on_loopback(&c, "ws://10.0.0.1:8080/v1").await);
        let args = TlsArgs {
            connect_to: vec![
                crate::transport::ConnectTo::parse("staging.invalid:443:127.0.0.1:8443").unwrap(),
            ],
            ..Default::default()
        };
        let c = Connector::new(&args, false, None).unwrap();
        assert!(dialled_on_loopback(&c, "wss://staging.invalid/v1").await);
    }

    #[test]
    fn credential_default_is_token() {
        assert_eq!(case::Credential::default(), case::Credential::Token);
    }
}
