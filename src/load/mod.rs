//! The load engine (`stampede run`, `stampede scenarios`).
//!
//! Map:
//! - [`scenario`]: scenario files (TOML), their loader and validation; CLI flags fold in.
//! - [`plan`]: pure schedule math (layout of peers and rooms, ramps, arrivals, backoff).
//! - [`connect`]: one peer connection through [`crate::transport`], up to `welcome`.
//! - [`peer`]: one simulated peer task; [`engine`]: one process's share of a run.
//! - [`accounting`]: expected recipients from the membership timeline; lost, duplicated,
//!   reordered per publisher → subscriber pair.
//! - [`worker`]: `--workers N` child processes (`--shard i/N`) and the merge.
//! - [`progress`]: the live view; [`thresholds`]: pass/fail rules and the exit code.
//!
//! Results go through [`crate::report`] (summary.json, timeseries, interval logs).
//! The engine reaches servers only through sockets; without `--target` it starts the
//! reference server in-process through [`crate::embedded`].

pub mod accounting;
pub mod checks;
pub mod connect;
pub mod engine;
pub mod peer;
pub mod plan;
pub mod progress;
pub mod rest;
pub mod scenario;
pub mod shared;
mod targets;
pub mod thresholds;
pub mod verdict;
pub mod worker;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use self::connect::Dest;
use self::engine::{Creds, Live, Setup};
use self::plan::Shard;
use self::scenario::{Overrides, Scenario};
use self::targets::Targets;
use crate::report::RunData;
use crate::shutdown::Stop;
use crate::transport::{Connector, TlsArgs};

/// Flags of `stampede run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Scenario file, or the name of a built-in scenario (`stampede scenarios` lists them).
    pub scenario: String,
    /// Total peers; every population is scaled in proportion.
    #[arg(long)]
    pub peers: Option<u32>,
    /// How long to publish and churn, ramp included (a drain of `grace` follows), e.g. 60s.
    #[arg(long, value_parser = scenario::parse_duration)]
    pub duration: Option<Duration>,
    /// Publish rate: per peer for populations with `rate`, in total for `aggregate_rate`.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of every random choice.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Connect ramp of every population, e.g. 10s (0s: all at once, as fast as possible).
    #[arg(long, value_parser = scenario::parse_duration)]
    pub ramp: Option<Duration>,
    /// Server to load, e.g. ws://127.0.0.1:8080/v1; repeat to spread rooms over several
    /// servers. Default: the reference server, started in-process.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// Secret key id for minting the peers' tokens (`kid`).
    #[arg(long, env = "STAMPEDE_KEY_ID")]
    pub key_id: Option<String>,
    /// Signing secret of --key-id.
    #[arg(long, env = "STAMPEDE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Publishable key, for populations with credential = "publishable".
    #[arg(long, env = "STAMPEDE_PUBLISHABLE_KEY")]
    pub publishable_key: Option<String>,
    /// Report directory. Default: reports/<scenario>-<UTC timestamp>/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Pass/fail rule, e.g. 'fanout.p99<50ms' or 'delivery.lost==0'; repeatable, added to
    /// the scenario's [thresholds]. Exit code: 0 met, 1 broken, 2 could not run.
    #[arg(long = "threshold", value_name = "RULE")]
    pub thresholds: Vec<String>,
    /// Tolerate what a built-in check would fail the run for: CHECK (turn it off),
    /// CHECK:A,B (these close codes, error codes or kinds, e.g. closes:4011) or
    /// CHECK OP VALUE (a tolerance, e.g. 'lost<=10'); repeatable, added to the scenario's
    /// [checks]. The checks: connections, closes, acks, delivery, lost, duplicated,
    /// reordered, unexpected, errors, aborted, rest, expiry, oversized.
    #[arg(long = "allow", value_name = "CHECK", value_parser = parse_allow_arg)]
    pub allow: Vec<String>,
    /// Run the peers in N worker processes (each holds at most ~19.9k sockets here).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub workers: u32,
    /// Run only shard i of N (0-based), as one worker of a larger run (e.g. a Kubernetes
    /// Indexed Job); give every shard the same --run-tag and --start-at.
    #[arg(long, value_name = "i/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Peer-id prefix shared by all shards of one run.
    #[arg(long)]
    pub run_tag: Option<String>,
    /// Common start of all shards, Unix seconds (fractions allowed). Default: now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub start_at: Option<f64>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Without --target: serve the in-process reference server over TLS (a fresh
    /// self-signed certificate), so the run exercises the whole wss:// path.
    #[arg(long = "tls", conflicts_with = "targets")]
    pub embedded_tls: bool,
    /// Worker mode: a PEM certificate to trust for the targets (the coordinator's
    /// embedded server), passed in the environment.
    #[arg(
        long,
        hide = true,
        env = "STAMPEDE_TARGET_CA_PEM",
        hide_env_values = true
    )]
    pub target_ca_pem: Option<String>,
    /// Bind the peers' connections to this loopback source address
    /// (default: a fresh 127.x.y.z per run and worker when the target is on 127/8).
    #[arg(long)]
    pub source_ip: Option<Ipv4Addr>,
    /// Also write the thresholds as JUnit XML (one testcase per rule) to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// No live progress and no log lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker mode: print the raw result as JSON lines on stdout instead of a report.
    #[arg(long, hide = true)]
    pub emit_result: bool,
}

/// Flags of `stampede scenarios`.
#[derive(Debug, Args)]
pub struct ScenariosArgs {
    /// Print the TOML of this built-in scenario instead of the list.
    pub show: Option<String>,
}

impl RunArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            peers: self.peers,
            duration: self.duration,
            rate: self.rate,
            seed: self.seed,
            ramp: self.ramp,
            thresholds: self.thresholds.clone(),
            allow: self.allow.clone(),
        }
    }
}

fn parse_allow_arg(text: &str) -> Result<String, String> {
    checks::config::parse_allow(text).map(|_| text.to_owned())
}

/// `stampede scenarios`.
pub fn list_scenarios(args: ScenariosArgs) -> anyhow::Result<i32> {
    if let Some(name) = args.show {
        let (_, text) = scenario::BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .with_context(|| {
                format!("no built-in scenario named `{name}`; `stampede scenarios` lists them")
            })?;
        print!("{text}");
        return Ok(0);
    }
    let list = scenario::builtin_list();
    let width = list.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, description) in list {
        println!("{name:<width$}  {description}");
    }
    println!(
        "\nrun one with `stampede run NAME` (or a path to a .toml file); `stampede scenarios NAME` prints its file"
    );
    Ok(0)
}

fn new_run_tag() -> String {
    format!("r{:06x}", rand::random::<u32>() & 0xFF_FFFF)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs `scenario` against `target` in this process and returns the raw data; the
/// library entry point used by tests (`stop` ends it early).
pub async fn run_scenario(
    scenario: Scenario,
    target: &crate::target::Target,
    stop: Stop,
) -> anyhow::Result<RunData> {
    scenario
        .validate()
        .map_err(|(path, msg)| anyhow::anyhow!("`{path}`: {msg}"))?;
    let connector = Connector::new(
        &TlsArgs::default(),
        target.ws_url.starts_with("wss://"),
        target.ca_pem.as_deref(),
    )?;
    let endpoint = Dest::resolve(&target.ws_url, &connector).await?;
    let run_tag = new_run_tag();
    let source_ip = endpoint
        .is_loopback_v4()
        .then(|| crate::transport::socket::run_source_ip(&run_tag, 0));
    let sc = Arc::new(scenario);
    let setup = Setup {
        origin: format!("inline:{}", sc.name),
        scenario: sc.clone(),
        shard: Shard::WHOLE,
        workers: 1,
        endpoints: vec![endpoint],
        connector,
        embedded: target.embedded,
        creds: Creds {
            key_id: target.key_id.clone().unwrap_or_else(|| "sk_id_dev".into()),
            secret: target
                .secret
                .clone()
                .unwrap_or_else(|| "sk_secret_dev".into()),
            publishable: target.publishable_key.clone(),
        },
        source_ip,
        run_tag,
        t0_us: now_us() + 100_000,
    };
    run_local(setup, stop, None).await
}

/// Runs one process's share on a dedicated runtime whose threads are named
/// `stampede-load`, so the harness's CPU can be told apart from an in-process server's.
async fn run_local(setup: Setup, stop: Stop, live: Option<Arc<Live>>) -> anyhow::Result<RunData> {
    let sc = setup.scenario.clone();
    let live = live.unwrap_or_else(|| {
        Live::new(
            setup.t0_us,
            setup.t0_us + sc.duration.as_us(),
            sc.grace.as_us(),
            sc.peers(),
        )
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::metrics::sys::cores())
        .thread_name(crate::metrics::sys::LOAD_THREAD_NAME)
        .enable_all()
        .build()
        .context("cannot start the load runtime")?;
    let handle = rt.spawn(engine::run(setup, stop, live));
    let result = handle.await;
    rt.shutdown_background();
    result.context("the load engine failed")
}

/// `stampede run`.
pub async fn main(args: RunArgs, stop: Stop) -> anyhow::Result<i32> {
    let src = scenario::resolve(&args.scenario)?;
    let mut sc = scenario::parse(&src)?;
    sc.apply(&args.overrides());
    scenario::check(&src, &sc).context("after applying the command-line flags")?;
    if !sc.rest.is_empty() && (args.workers > 1 || args.shard.is_some()) {
        bail!(
            "{}: [[rest]] populations run in one process only (goose runs one attack per process); drop --workers/--shard",
            src.origin
        );
    }
    if args.shard.is_some() && args.workers > 1 {
        bail!("--shard runs one worker of a larger run; it cannot be combined with --workers");
    }
    let sc = Arc::new(sc);
    let run_tag = args.run_tag.clone().unwrap_or_else(new_run_tag);
    let stop = if args.emit_result {
        worker::stop_from_stdin(stop)
    } else {
        stop
    };
    let stop_seen = stop.clone();

    targets::check_sockets(&args, &sc)?;
    let mut t = targets::targets(&args, &sc).await?;
    if !sc.rest.is_empty() {
        rest::RestClient::new(&t.endpoints, &t.connector, Duration::ZERO)
            .map_err(|why| anyhow::anyhow!("{}: {why}", src.origin))?;
    }
    if !args.emit_result {
        targets::probe(&t, &sc, &run_tag).await?;
    }
    let embedded = t.embedded.is_some();
    let urls: Vec<String> = t.endpoints.iter().map(|e| e.url().to_owned()).collect();
    let loopback = t.endpoints.iter().all(Dest::is_loopback_v4);
    if t.connector.insecure() && !args.emit_result {
        eprintln!(
            "warning: --insecure: server certificates are NOT verified; anyone on the path can impersonate the server (the report records this)"
        );
    }

    let result = if args.workers > 1 {
        coordinate(&args, &sc, &src.origin, &t, &run_tag, stop).await
    } else {
        let shard = args.shard.unwrap_or(Shard::WHOLE);
        let t0_us = match args.start_at {
            Some(s) if s > 0.0 => (s * 1e6) as u64,
            _ => now_us() + 200_000,
        };
        let source_ip = args.source_ip.or_else(|| {
            loopback.then(|| crate::transport::socket::run_source_ip(&run_tag, shard.index))
        });
        let setup = Setup {
            scenario: sc.clone(),
            origin: src.origin.clone(),
            shard,
            workers: 1,
            endpoints: t.endpoints.clone(),
            connector: t.connector.clone(),
            embedded,
            creds: t.creds.clone(),
            source_ip,
            run_tag: run_tag.clone(),
            t0_us,
        };
        let live = Live::new(t0_us, t0_us + sc.duration.as_us(), sc.grace.as_us(), {
            let layout = plan::Layout::build(&sc, shard.count, t.endpoints.len() as u32);
            layout
                .peers
                .iter()
                .filter(|p| p.shard == shard.index)
                .count() as u64
        });
        let ticker = if args.emit_result {
            Some(worker::spawn_ticker(live.clone()))
        } else {
            None
        };
        let view = progress::spawn(
            live.clone(),
            sc.name.clone(),
            args.quiet || args.emit_result,
        );
        let r = run_local(setup, stop, Some(live.clone())).await;
        live.done.store(true, std::sync::atomic::Ordering::Release);
        let _ = view.await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        r
    };
    if let Some(server) = t.embedded.take() {
        // After a stop the report comes first: the server's own drain is bounded.
        let limit = if stop_seen.is_stopped() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let _ = tokio::time::timeout(limit, server.shutdown()).await;
    }
    let mut run = result?;
    run.interrupted |= stop_seen.is_stopped();
    if args.emit_result {
        worker::emit(&worker::Line::Result(Box::new(run)));
        return Ok(0);
    }
    run.targets = urls;
    run.embedded = embedded;
    verdict::finish(&args, &sc, run, stop_seen.is_urgent())
}

async fn coordinate(
    args: &RunArgs,
    sc: &Arc<Scenario>,
    origin: &str,
    t: &Targets,
    run_tag: &str,
    stop: Stop,
) -> anyhow::Result<RunData> {
    let n = args.workers;
    let t0_us = now_us() + 1_500_000;
    let t0_s = format!("{:.6}", t0_us as f64 / 1e6);
    let loopback = t.endpoints.iter().all(Dest::is_loopback_v4);
    let mut commands = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut a: Vec<String> = vec![
            "run".into(),
            args.scenario.clone(),
            "--shard".into(),
            format!("{i}/{n}"),
            "--run-tag".into(),
            run_tag.into(),
            "--start-at".into(),
            t0_s.clone(),
            "--emit-result".into(),
            "--quiet".into(),
        ];
        for ep in &t.endpoints {
            a.extend(["--target".into(), ep.url().to_owned()]);
        }
        a.extend(args.tls.to_args());
        if let Some(p) = args.peers {
            a.extend(["--peers".into(), p.to_string()]);
        }
        if let Some(d) = args.duration {
            a.extend(["--duration".into(), format!("{}ms", d.as_millis())]);
        }
        if let Some(r) = args.rate {
            a.extend(["--rate".into(), r.to_string()]);
        }
        if let Some(s) = args.seed {
            a.extend(["--seed".into(), s.to_string()]);
        }
        if let Some(r) = args.ramp {
            a.extend(["--ramp".into(), format!("{}ms", r.as_millis())]);
        }
        if loopback {
            let ip = args
                .source_ip
                .map(|ip| {
                    let o = ip.octets();
                    Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(i as u8))
                })
                .unwrap_or_else(|| crate::transport::socket::run_source_ip(run_tag, i));
            a.extend(["--source-ip".into(), ip.to_string()]);
        }
        commands.push(a);
    }
    let live = Live::new(
        t0_us,
        t0_us + sc.duration.as_us(),
        sc.grace.as_us(),
        sc.peers(),
    );
    let view = progress::spawn(live.clone(), format!("{} ×{n}", sc.name), args.quiet);
    let deadline = Duration::from_micros(t0_us.saturating_sub(now_us()))
        + sc.duration.0
        + sc.grace.0
        + Duration::from_secs(60);
    // Credentials travel in the environment, not on command lines other users can read.
    let mut env = vec![
        ("STAMPEDE_KEY_ID".to_owned(), t.creds.key_id.clone()),
        ("STAMPEDE_SECRET".to_owned(), t.creds.secret.clone()),
    ];
    if let Some(pk) = &t.creds.publishable {
        env.push(("STAMPEDE_PUBLISHABLE_KEY".to_owned(), pk.clone()));
    }
    if let Some(pem) = &t.ca_pem {
        env.push(("STAMPEDE_TARGET_CA_PEM".to_owned(), pem.clone()));
    }
    let outcomes = worker::run_workers(commands, env, live.clone(), stop, deadline).await;
    live.done.store(true, std::sync::atomic::Ordering::Release);
    let _ = view.await;
    let mut merged: Option<RunData> = None;
    let mut failures = Vec::new();
    for r in outcomes? {
        match r {
            Ok(d) => match merged.as_mut() {
                None => merged = Some(d),
                Some(m) => m.merge(&d),
            },
            Err(why) => failures.push(why),
        }
    }
    let Some(mut run) = merged else {
        bail!("no worker returned results: {}", failures.join("; "));
    };
    for f in failures {
        *run.warnings
            .entry(format!("{f}; its peers are missing from the results"))
            .or_default() += 1;
    }
    run.workers = n;
    run.harness.workers = n;
    run.scenario_origin = origin.to_owned();
    run.finish();
    Ok(run)
}
