//! `stampede mint`: sign a token from flags, for poking a server by hand.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value};

use crate::proto::{Claims, auth};

/// Flags of `stampede mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Secret key id, written to the `kid` header.
    #[arg(long, env = "STAMPEDE_KEY_ID", default_value = "sk_id_dev")]
    pub key_id: String,
    /// Signing secret of that key.
    #[arg(long, env = "STAMPEDE_SECRET", default_value = "sk_secret_dev")]
    pub secret: String,
    /// Peer id (`sub` claim); omitted when not given, so the server assigns a UUID.
    #[arg(long)]
    pub sub: Option<String>,
    /// Channel pattern the token allows; repeatable. Absent: the key's own patterns.
    #[arg(long = "channel", value_name = "PATTERN")]
    pub channels: Vec<String>,
    /// Action the token allows (publish, subscribe, presence, send); repeatable.
    /// Absent: the key's full action set.
    #[arg(long = "permission", value_name = "ACTION")]
    pub permissions: Vec<String>,
    /// `peerMetadata` claim as a JSON object, e.g. '{"displayName":"Dana"}'.
    #[arg(long, value_name = "JSON")]
    pub peer_metadata: Option<String>,
    /// `metadata` claim (private bootstrap bag) as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Lifetime, e.g. 1h, 90s.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Mint a token that expired an hour ago (for testing close 4002).
    #[arg(long, conflicts_with = "ttl")]
    pub expired: bool,
    /// Print the decoded header and claims to stderr as well.
    #[arg(long)]
    pub verbose: bool,
}

fn object(flag: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text)
        .with_context(|| format!("--{flag} is not valid JSON: {text}"))?
    {
        Value::Object(map) => Ok(map),
        other => bail!("--{flag} must be a JSON object, got {other}"),
    }
}

/// Builds the claims the flags describe, relative to `now_s`.
pub fn claims(args: &MintArgs, now_s: i64) -> anyhow::Result<Claims> {
    let exp = if args.expired {
        now_s - 3600
    } else {
        now_s + args.ttl.as_secs().max(1) as i64
    };
    Ok(Claims {
        sub: args.sub.clone(),
        exp: Some(exp),
        iat: Some(now_s),
        channels: (!args.channels.is_empty()).then(|| args.channels.clone()),
        permissions: (!args.permissions.is_empty()).then(|| args.permissions.clone()),
        peer_metadata: args
            .peer_metadata
            .as_deref()
            .map(|t| object("peer-metadata", t))
            .transpose()?,
        metadata: args
            .metadata
            .as_deref()
            .map(|t| object("metadata", t))
            .transpose()?,
        nbf: None,
    })
}

/// Prints the token to stdout.
pub fn main(args: MintArgs) -> anyhow::Result<i32> {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = claims(&args, now_s)?;
    let token = auth::mint(&args.key_id, args.secret.as_bytes(), &claims);
    if args.verbose {
        eprintln!(
            "kid: {}\nclaims: {}",
            args.key_id,
            serde_json::to_string_pretty(&claims)?
        );
    }
    println!("{token}");
    Ok(0)
}
