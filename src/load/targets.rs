//! Where a run goes, checked before any peer connects: the targets (or the in-process
//! reference server) and their credentials, a probe of each target, and whether the run
//! fits this machine's per-process socket limit (checked before the plan is allocated).

use std::time::Duration;

use anyhow::{Context, bail};

use super::RunArgs;
use super::connect::{self, Dest};
use super::engine::Creds;
use super::plan;
use super::scenario::{Credential, Scenario};
use crate::embedded::{EmbeddedServer, Options};
use crate::proto::{Claims, auth};
use crate::transport::Connector;

/// Where the peers connect.
pub(super) struct Targets {
    pub endpoints: Vec<Dest>,
    pub creds: Creds,
    pub connector: Connector,
    /// A certificate the targets need trusted (the embedded server's self-signed one).
    pub ca_pem: Option<String>,
    pub embedded: Option<EmbeddedServer>,
}

/// Refuses credentials the in-process server would ignore: it accepts only its own dev
/// key, so a wrong `--secret` would "pass" a run that proves nothing about it.
fn refuse_ignored_credentials(args: &RunArgs) -> anyhow::Result<()> {
    let given: Vec<String> = [
        (args.key_id.is_some(), "--key-id", "STAMPEDE_KEY_ID"),
        (args.secret.is_some(), "--secret", "STAMPEDE_SECRET"),
        (
            args.publishable_key.is_some(),
            "--publishable-key",
            "STAMPEDE_PUBLISHABLE_KEY",
        ),
    ]
    .iter()
    .filter(|(set, _, _)| *set)
    .map(|(_, flag, env)| {
        if std::env::var_os(env).is_some() {
            format!("{flag} (from {env})")
        } else {
            (*flag).to_owned()
        }
    })
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    bail!(
        "{} only apply to servers given with --target: the in-process reference server accepts its own development key, so a wrong key would pass unnoticed; pass --target URL, or drop {} (unset the environment variable)",
        given.join(", "),
        if given.len() == 1 { "it" } else { "them" }
    )
}

pub(super) async fn targets(args: &RunArgs, sc: &Scenario) -> anyhow::Result<Targets> {
    let (urls, creds, ca_pem, embedded) = if args.targets.is_empty() {
        refuse_ignored_credentials(args)?;
        let server = EmbeddedServer::start(Options {
            ip_connect_limit: Some(0),
            tls: args
                .embedded_tls
                .then_some(crate::embedded::Tls::SelfSigned),
            ..Default::default()
        })
        .await
        .context("cannot start the in-process reference server")?;
        let t = server.target().clone();
        let creds = Creds {
            key_id: t.key_id.clone().unwrap_or_default(),
            secret: t.secret.clone().unwrap_or_default(),
            publishable: t.publishable_key.clone(),
        };
        (
            vec![t.ws_url.clone()],
            creds,
            t.ca_pem.clone(),
            Some(server),
        )
    } else {
        let creds = Creds {
            key_id: args.key_id.clone().unwrap_or_else(|| "sk_id_dev".into()),
            secret: args
                .secret
                .clone()
                .unwrap_or_else(|| "sk_secret_dev".into()),
            publishable: args
                .publishable_key
                .clone()
                .or_else(|| Some("pk_live_dev".into())),
        };
        (
            args.targets.clone(),
            creds,
            args.target_ca_pem.clone(),
            None,
        )
    };
    if sc
        .populations
        .iter()
        .any(|p| p.credential == Credential::Publishable)
        && creds.publishable.is_none()
    {
        bail!("a population uses credential = \"publishable\": give --publishable-key");
    }
    let secure = urls.iter().any(|u| u.starts_with("wss://"));
    let connector = Connector::new(&args.tls, secure, ca_pem.as_deref())?;
    let mut endpoints = Vec::with_capacity(urls.len());
    for url in &urls {
        endpoints.push(
            Dest::resolve(url, &connector)
                .await
                .with_context(|| format!("cannot use target {url}"))?,
        );
    }
    Ok(Targets {
        endpoints,
        creds,
        connector,
        ca_pem,
        embedded,
    })
}

/// Connects once to each target and waits for `welcome`, so a wrong URL, key or
/// certificate fails in seconds with a clear message instead of as a run full of failures.
pub(super) async fn probe(t: &Targets, sc: &Scenario, run_tag: &str) -> anyhow::Result<()> {
    let token = sc
        .populations
        .iter()
        .any(|p| p.credential == Credential::Token);
    for dest in &t.endpoints {
        let query = if token {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let claims = Claims {
                sub: Some(format!("{run_tag}-probe")),
                exp: Some(now + 300),
                iat: Some(now),
                ..Default::default()
            };
            format!(
                "token={}",
                auth::mint(&t.creds.key_id, t.creds.secret.as_bytes(), &claims)
            )
        } else {
            format!(
                "key={}",
                percent_encoding::utf8_percent_encode(
                    t.creds.publishable.as_deref().unwrap_or_default(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            )
        };
        let attempt = connect::Attempt {
            dest,
            query: &query,
            source: None,
            tls: None,
            config: crate::transport::ws::peer_config(0, 1 << 20),
            timeout: Duration::from_secs(5),
        };
        match connect::open(&t.connector, attempt).await {
            Ok(mut o) => {
                crate::transport::ws::close(&mut o.connected.ws, 1000, |_| {}).await;
            }
            Err(e) => {
                let advice = e.advice().map(|a| format!("\n  {a}")).unwrap_or_default();
                bail!("cannot use target {}: {e}{advice}", dest.url());
            }
        }
    }
    Ok(())
}

/// Refuses a run that cannot fit this machine's per-process socket limit, before any
/// connection is made (one process holds at most RLIMIT_NOFILE descriptors; with the
/// in-process server each peer costs two).
pub(super) fn check_sockets(args: &RunArgs, sc: &Scenario) -> anyhow::Result<()> {
    let Some(limit) = crate::metrics::sys::max_open_files() else {
        return Ok(());
    };
    let shards = args.shard.map(|s| s.count).unwrap_or(args.workers).max(1);
    let targets = args.targets.len().max(1) as u32;
    let embedded = args.targets.is_empty() && args.shard.is_none();
    let embedded_here = embedded && args.workers <= 1;
    let per_peer = if embedded_here { 2 } else { 1 };
    if embedded && args.workers > 1 && sc.peers() + 256 > limit {
        bail!(
            "the in-process server would hold all {} connections in this process, which may open {limit} file descriptors (RLIMIT_NOFILE); \
             start servers separately (stampede serve --listen 127.0.0.1:PORT --ip-connect-limit 0, one per ~19,000 peers) and pass one --target each",
            sc.peers()
        );
    }
    // The busiest process holds at least an even share: when that alone cannot fit,
    // refuse before allocating the plan (10M peers are ~0.5 GB of it). A single shard's
    // size is known only from the plan.
    let share = sc.peers().div_ceil(shards as u64);
    if args.shard.is_none() && share * per_peer + 256 > limit {
        return Err(too_many(
            sc,
            share,
            share * per_peer + 256,
            limit,
            embedded,
            embedded_here,
        ));
    }
    let layout = plan::Layout::build(sc, shards, targets);
    let mut per_shard = vec![0u64; shards as usize];
    for p in &layout.peers {
        per_shard[p.shard as usize] += 1;
    }
    let busiest = match args.shard {
        Some(s) => per_shard[s.index as usize],
        None => per_shard.iter().copied().max().unwrap_or(0),
    };
    let needed = busiest * per_peer + 256;
    if needed > limit {
        return Err(too_many(
            sc,
            busiest,
            needed,
            limit,
            embedded,
            embedded_here,
        ));
    }
    Ok(())
}

fn too_many(
    sc: &Scenario,
    busiest: u64,
    needed: u64,
    limit: u64,
    embedded: bool,
    embedded_here: bool,
) -> anyhow::Error {
    let per_process = limit.saturating_sub(256).max(1);
    let suggest = sc.peers().div_ceil(per_process).max(2);
    anyhow::anyhow!(
        "{busiest} peers in one process need about {needed} file descriptors{}, but this process may open {limit} (RLIMIT_NOFILE); {}",
        if embedded_here {
            " (the in-process server holds the other end of each connection)"
        } else {
            ""
        },
        if embedded {
            format!(
                "start servers separately (stampede serve --listen 127.0.0.1:PORT --ip-connect-limit 0, one per ~19,000 peers), pass one --target each, and use --workers {suggest}"
            )
        } else {
            format!("spread the peers over processes with --workers {suggest}")
        }
    )
}
