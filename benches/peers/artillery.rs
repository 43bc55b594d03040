//! Artillery 2.0.34 as the peer tool: its `ws` engine never reads inbound frames on its
//! own, so a processor hook counts every `message` and records its fan-out latency (from
//! the send time the publisher put in `data`) in an Artillery histogram. Each virtual
//! user gets its own token; its flow follows the workload (subscribe, wait, publish at
//! the rate, wait, close). Artillery's loop is closed (think times add to send times).

use std::path::{Path, PathBuf};

use super::Workload;

/// Writes the config and processor for `w` into `dir`.
pub fn files(w: &Workload, dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let tokens: Vec<String> = (0..w.peers)
        .map(|i| super::common::dev_token(&format!("art-{i}")))
        .collect();
    let processor = dir.join("processor.js");
    std::fs::write(
        &processor,
        PROCESSOR
            .replace("__TOKENS__", &serde_json::to_string(&tokens).unwrap())
            .replace("__ROOM_SIZE__", &w.room_size.to_string())
            .replace("__PAD__", &"x".repeat(w.size.saturating_sub(40))),
    )
    .unwrap();
    let config = dir.join("artillery.yml");
    let think_ms = (1000.0 / w.rate).round() as u64;
    std::fs::write(
        &config,
        format!(
            r#"config:
  target: "{url}"
  processor: "./processor.js"
  phases:
    - duration: 1
      arrivalCount: {peers}
scenarios:
  - engine: ws
    flow:
      - connect:
          function: "pickToken"
      - function: "subscribe"
      - think: "{start_ms}ms"
      - loop:
          - function: "publish"
          - think: "{think_ms}ms"
        count: {count}
      - think: "{grace_ms}ms"
"#,
            peers = w.peers,
            start_ms = (w.start_s * 1000.0) as u64,
            count = w.publishes(),
            grace_ms = (w.grace_s * 1000.0) as u64,
        ),
    )
    .unwrap();
    (config, processor)
}

/// The hook: tokens by arrival order, subscribe, publish with the send time, and count and
/// time every delivered `message`.
const PROCESSOR: &str = r#"'use strict';
const { performance } = require('node:perf_hooks');
const TOKENS = __TOKENS__;
const ROOM_SIZE = __ROOM_SIZE__;
let next = 0;
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

// Artillery calls the connect function with the socket's arguments before it dials.
function pickToken(wsArgs, context, done) {
  const i = next++;
  context.vars.room = Math.floor(i / ROOM_SIZE);
  wsArgs.target = wsArgs.target + '?token=' + TOKENS[i];
  done();
}

function subscribe(context, events, done) {
  const ws = context.ws;
  ws.on('message', (raw) => {
    const text = raw.toString();
    if (!text.startsWith('{"type":"message"')) return;
    const m = JSON.parse(text);
    events.emit('counter', 'delivered', 1);
    events.emit('histogram', 'fanout_ms', (nowUs() - m.data.t) / 1000);
  });
  ws.send(JSON.stringify({ type: 'subscribe', channel: 'bench/room-' + context.vars.room, requestId: 's' }));
  done();
}

let seq = 0;
function publish(context, events, done) {
  seq++;
  context.ws.send(JSON.stringify({
    type: 'publish', channel: 'bench/room-' + context.vars.room, requestId: 'p' + seq,
    data: { t: nowUs(), pad: '__PAD__' },
  }));
  done();
}

module.exports = { pickToken, subscribe, publish };
"#;

/// Deliveries the hook counted, from Artillery's final summary.
pub fn received(output: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("delivered:"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.trim().parse().ok())
}

/// The fan-out latency Artillery summarised (its `fanout_ms` histogram).
pub fn latency(output: &str) -> String {
    let tail: Vec<&str> = output.lines().rev().take(80).collect();
    let field = |name: &str| {
        let mut in_fanout = false;
        for l in tail.iter().rev() {
            let t = l.trim();
            if t.starts_with("fanout_ms:") {
                in_fanout = true;
            } else if in_fanout && t.starts_with(name) {
                return t.rsplit(' ').next().map(str::to_owned);
            }
        }
        None
    };
    match (field("median:"), field("p99:")) {
        (Some(p50), Some(p99)) => format!("fan-out p50 {p50} ms p99 {p99} ms (its own)"),
        _ => "no fanout_ms summary".into(),
    }
}
