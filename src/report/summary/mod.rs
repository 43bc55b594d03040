//! [`Summary`]: the stable contract of `summary.json`, built from a [`RunData`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::metrics::{Hist, collector::Interval};
use crate::metrics::{Metric, Stats};

use super::*;

/// Where the run went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The in-process reference server (no `--target`).
    pub embedded: bool,
    /// WebSocket URLs; rooms are pinned to one each.
    pub urls: Vec<String>,
}

/// The latencies, each `{count,min,p50,p90,p99,p999,max,mean}` in µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Intended publish time → each subscriber's receipt (includes any send lag).
    pub fanout_us: Stats,
    /// Publish/send written → ack received.
    pub ack_us: Stats,
    /// The whole connect: name resolution + TCP + TLS (`wss://`) + WebSocket upgrade +
    /// welcome. The four phases below are its parts, timed on the same (successful) attempts,
    /// so their counts match this one.
    pub connect_us: Stats,
    /// TCP connect: SYN → established.
    #[serde(default)]
    pub tcp_connect_us: Stats,
    /// TLS handshake: ClientHello → handshake complete (`wss://` only; empty for `ws://`).
    #[serde(default)]
    pub tls_handshake_us: Stats,
    /// WebSocket upgrade request written → HTTP 101 received.
    #[serde(default)]
    pub ws_upgrade_us: Stats,
    /// HTTP 101 → the server's `welcome` frame.
    #[serde(default)]
    pub welcome_us: Stats,
    /// A join or leave the engine caused → each other member's presence delta.
    pub presence_us: Stats,
    /// Intended send time of a direct → the target's receipt.
    pub direct_us: Stats,
    /// Connection lost (storm, server close) → subscribed again.
    pub reconnect_us: Stats,
    /// REST publish intended time → each subscriber's receipt (`[[rest]]` populations).
    #[serde(default)]
    pub system_fanout_us: Stats,
    /// Calls: a pair's first offer intended → the offerer holds the answer and every
    /// candidate of the other side.
    #[serde(default)]
    pub negotiation_us: Stats,
    /// Calls: a peer's join (connect started) → every member it found negotiated.
    #[serde(default)]
    pub mesh_ready_us: Stats,
    /// Calls: a track added after join → its last renegotiation answer.
    #[serde(default)]
    pub renegotiation_us: Stats,
    /// Calls: signalling latency per kind, intended send → receipt.
    #[serde(default)]
    pub offer_us: Stats,
    #[serde(default)]
    pub answer_us: Stats,
    #[serde(default)]
    pub candidate_us: Stats,
    #[serde(default)]
    pub track_meta_us: Stats,
}

/// Volumes and rates over the publishing time (`duration_s`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub publishes: u64,
    pub publishes_per_s: f64,
    /// Message copies received by subscribers.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub directs_sent: u64,
    pub directs_received: u64,
    pub presence_events: u64,
    pub acks: u64,
}

/// [`Delivery`] plus the loss ratio (lost / expected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOut {
    #[serde(flatten)]
    pub counts: Delivery,
    pub loss_ratio: f64,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        DeliveryOut {
            counts: d,
            loss_ratio: if d.expected == 0 {
                0.0
            } else {
                d.lost as f64 / d.expected as f64
            },
        }
    }
}

/// One threshold rule and its verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// As written, e.g. `fanout.p99<50ms`.
    pub rule: String,
    pub metric: String,
    pub op: String,
    /// The limit in the metric's unit (`unit`: "us" for latencies, else empty).
    pub limit: f64,
    pub unit: String,
    /// `null` when the run has no such number.
    pub actual: Option<f64>,
    pub passed: bool,
}

/// One built-in check and its verdict (`checks` in summary.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `acks`, `closes`, … (`checks.acks` in the text, HTML and JUnit).
    pub name: String,
    pub passed: bool,
    /// False when the scenario's `[checks]` or `--allow` turned it off (it then passes).
    pub enabled: bool,
    /// What the check counted, after what the scenario expects or allows.
    pub count: u64,
    /// The tolerance it was held to: `==0` unless relaxed (`<=10`, `<1%`), `off`.
    pub limit: String,
    /// What was observed, with counts; says why when it failed.
    pub evidence: String,
    /// First examples (at most 5).
    pub examples: Vec<String>,
}

/// A warning and how many times it happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub message: String,
    pub count: u64,
}

/// Files of the run directory, relative to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub timeseries: String,
    pub scenario: String,
    pub hlog: Vec<String>,
    pub percentiles: Vec<String>,
}

/// `summary.json`. Stable: fields are only added, never renamed or removed, within
/// schema `stampede.summary/1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub scenario: String,
    /// Where the scenario came from: a path or `builtin:<name>`.
    pub scenario_file: String,
    pub target: TargetInfo,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Planned peers.
    pub peers: u64,
    pub workers: u32,
    pub seed: u64,
    /// Seconds of publishing (the run until stop; ramp included, drain excluded).
    pub duration_s: f64,
    pub planned_duration_s: f64,
    /// Drain after the last publish.
    pub grace_s: f64,
    pub stopped_early: bool,
    /// A stop was requested (Ctrl-C, SIGTERM): the run is incomplete, whatever the
    /// checks and thresholds say; `stampede run` exits 130.
    #[serde(default)]
    pub interrupted: bool,
    /// The verdict in one word: `passed` (exit 0), `failed` (a check or threshold broke,
    /// exit 1), `interrupted` (exit 130), `no_connection` (no peer connected, exit 2).
    #[serde(default)]
    pub outcome: String,
    pub latency: Latency,
    /// Lateness of publishes and directs behind their intended time, µs.
    pub schedule_lag_us: Stats,
    pub throughput: Throughput,
    pub delivery: DeliveryOut,
    pub delivery_by_population: BTreeMap<String, DeliveryOut>,
    pub directs: DeliveryOut,
    pub directs_by_population: BTreeMap<String, DeliveryOut>,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Connection closes by code (`1006` for a connection lost without a close frame).
    pub closes: BTreeMap<String, u64>,
    /// Frames that fit no expectation, by kind.
    pub unexpected_frames: BTreeMap<String, u64>,
    pub connections: Connections,
    pub expectations: Expectations,
    pub harness: Harness,
    /// False when the numbers describe the harness more than the server.
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    pub warnings: Vec<Warning>,
    pub thresholds: Vec<ThresholdResult>,
    /// All thresholds passed (true when there are none).
    pub thresholds_passed: bool,
    /// Requests that asked for an ack (publishes, directs, subscribes), and what became of
    /// them.
    #[serde(default)]
    pub requests: Requests,
    /// The built-in checks, run on every load run (docs/LOAD.md, "Built-in checks").
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// Every check passed.
    #[serde(default = "yes")]
    pub checks_passed: bool,
    pub files: Files,
    /// REST control-plane load (`[[rest]]`): goose's per-endpoint request metrics and
    /// the REST publishes' own delivery accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<crate::load::rest::RestReport>,
    /// TLS as the peers negotiated it; absent for `ws://` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSummary>,
    /// Call setup (`[population.call]`); absent when no population makes calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Calls>,
}

/// `tls` in summary.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsSummary {
    /// `--insecure`: server certificates were not verified (`warnings` says so too).
    pub insecure: bool,
    /// `--tls-resumption`: `off`, `per-peer` or `shared`.
    pub resumption: String,
    pub handshakes: TlsHandshakes,
    /// Successful handshakes by protocol version (`TLSv1.3`), cipher suite
    /// (`TLS13_AES_128_GCM_SHA256`) and key-exchange group (`X25519MLKEM768`).
    pub by_version: BTreeMap<String, u64>,
    pub by_cipher: BTreeMap<String, u64>,
    pub by_group: BTreeMap<String, u64>,
}

/// `tls.handshakes`: how the handshakes went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    /// Successful handshakes: `full + resumed`.
    pub total: u64,
    pub full: u64,
    /// Abbreviated handshakes on a resumed session (needs `--tls-resumption`).
    pub resumed: u64,
    /// resumed / total (0 when there were none).
    pub resumed_ratio: f64,
    /// Connect attempts that failed in TLS: the `tls_*` and `timeout_tls` kinds of
    /// `connections.failures`.
    pub failed: u64,
}

/// Whether a `connections.failures` kind is a TLS failure.
pub fn is_tls_failure(kind: &str) -> bool {
    kind.starts_with("tls_") || kind == "timeout_tls"
}

/// The warning every `--insecure` run carries, in summary.json and on every page.
pub const INSECURE_WARNING: &str = "--insecure: server certificates were not verified; the results say nothing about the server's certificate (pass its CA with --cacert FILE to verify it)";

impl TlsSummary {
    fn of(tls: &TlsStats, failures: &BTreeMap<String, u64>) -> TlsSummary {
        let total = tls.full + tls.resumed;
        TlsSummary {
            insecure: tls.insecure,
            resumption: tls.resumption.clone(),
            handshakes: TlsHandshakes {
                total,
                full: tls.full,
                resumed: tls.resumed,
                resumed_ratio: if total == 0 {
                    0.0
                } else {
                    (tls.resumed as f64 / total as f64 * 1e4).round() / 1e4
                },
                failed: failures
                    .iter()
                    .filter(|(k, _)| is_tls_failure(k))
                    .map(|(_, n)| n)
                    .sum(),
            },
            by_version: tls.by_version.clone(),
            by_cipher: tls.by_cipher.clone(),
            by_group: tls.by_group.clone(),
        }
    }
}

impl Summary {
    /// Builds the summary of `run` (thresholds are evaluated afterwards, on this JSON).
    pub fn from_run(run: &RunData) -> Summary {
        let stats = |m: Metric| run.hist(m).stats();
        let ran = run.ran_s.max(1e-3);
        let mut delivery = Delivery::default();
        for d in run.delivery.values() {
            delivery.merge(d);
        }
        let mut directs = Delivery::default();
        for d in run.directs.values() {
            directs.merge(d);
        }
        let lag = stats(Metric::ScheduleLag);
        let mut invalid = Vec::new();
        let machine_busy = run.harness.machine_cpu_percent >= 80.0;
        if lag.count > 0 && lag.p99 > run.max_lag_p99_us {
            invalid.push(format!(
                "the generator fell behind its schedule: p99 send lag {} > {}; {}",
                fmt_us(lag.p99),
                fmt_us(run.max_lag_p99_us),
                if machine_busy {
                    format!(
                        "the machine was {:.0}% busy (server, harness and other processes share its cores): give the harness its own cores or machine, or lower the load",
                        run.harness.machine_cpu_percent
                    )
                } else {
                    "lower the rates or add --workers".to_owned()
                }
            ));
        }
        let share = run.harness.cpu_peak_share;
        if run.max_cpu_share > 0.0 && share > run.max_cpu_share {
            invalid.push(format!(
                "the harness ran out of CPU: it used {:.0}% of the {} cores in its busiest second (limit {:.0}%); latencies may be its own queueing; add machines or lower the load",
                share * 100.0,
                run.harness.cores,
                run.max_cpu_share * 100.0
            ));
        }
        if run.harness.metrics_dropped > 0 {
            invalid.push(format!(
                "{} samples were dropped by the recorder",
                run.harness.metrics_dropped
            ));
        }
        let mut warnings: Vec<Warning> = run
            .warnings
            .iter()
            .map(|(m, c)| Warning {
                message: m.clone(),
                count: *c,
            })
            .collect();
        warnings.sort_by_key(|w| std::cmp::Reverse(w.count));
        if let Some(tls) = run.tls.as_ref().filter(|t| t.insecure) {
            // First, whatever its count: it changes what every other number means.
            warnings.insert(
                0,
                Warning {
                    message: INSECURE_WARNING.into(),
                    count: (tls.full + tls.resumed).max(1),
                },
            );
        }
        Summary {
            schema: SUMMARY_SCHEMA.into(),
            scenario: run.scenario.clone(),
            scenario_file: run.scenario_origin.clone(),
            target: TargetInfo {
                embedded: run.embedded,
                urls: run.targets.clone(),
            },
            started_at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(run.started_at_us),
            )
            .to_string(),
            peers: run.peers,
            workers: run.workers,
            seed: run.seed,
            duration_s: round3(run.ran_s),
            planned_duration_s: run.planned_s,
            grace_s: run.grace_s,
            stopped_early: run.stopped_early,
            interrupted: run.interrupted,
            outcome: String::new(),
            latency: Latency {
                fanout_us: stats(Metric::Fanout),
                ack_us: stats(Metric::Ack),
                connect_us: stats(Metric::Connect),
                tcp_connect_us: stats(Metric::TcpConnect),
                tls_handshake_us: stats(Metric::TlsHandshake),
                ws_upgrade_us: stats(Metric::WsUpgrade),
                welcome_us: stats(Metric::Welcome),
                presence_us: stats(Metric::Presence),
                direct_us: stats(Metric::Direct),
                reconnect_us: stats(Metric::Reconnect),
                system_fanout_us: stats(Metric::SystemFanout),
                negotiation_us: stats(Metric::Negotiation),
                mesh_ready_us: stats(Metric::MeshReady),
                renegotiation_us: stats(Metric::Renegotiation),
                offer_us: stats(Metric::Offer),
                answer_us: stats(Metric::Answer),
                candidate_us: stats(Metric::Candidate),
                track_meta_us: stats(Metric::TrackMeta),
            },
            schedule_lag_us: lag,
            throughput: Throughput {
                publishes: run.counts.publishes,
                publishes_per_s: round1(run.counts.publishes as f64 / ran),
                deliveries: run.counts.deliveries,
                deliveries_per_s: round1(run.counts.deliveries as f64 / ran),
                directs_sent: run.counts.directs_sent,
                directs_received: run.counts.directs_received,
                presence_events: run.counts.presence_events,
                acks: run.counts.acks,
            },
            delivery: delivery.into(),
            delivery_by_population: run
                .delivery
                .iter()
                .map(|(k, v)| (k.clone(), (*v).into()))
                .collect(),
            directs: directs.into(),
            directs_by_population: run
                .directs
                .iter()
                .map(|(k, v)| (k.clone(), (*v).into()))
                .collect(),
            errors: run.errors.clone(),
            closes: run.closes.clone(),
            unexpected_frames: run.unexpected_frames.clone(),
            connections: run.connections.clone(),
            expectations: Expectations {
                // Reported once, as `calls`.
                calls: Calls::default(),
                ..run.expectations.clone()
            },
            harness: run.harness.clone(),
            valid: invalid.is_empty(),
            invalid_reasons: invalid,
            warnings,
            thresholds: Vec::new(),
            thresholds_passed: true,
            requests: run.requests,
            checks: Vec::new(),
            checks_passed: true,
            files: Files::default(),
            rest: run.rest.clone(),
            tls: run
                .tls
                .as_ref()
                .map(|t| TlsSummary::of(t, &run.connections.failures)),
            calls: Some(&run.expectations.calls)
                .filter(|c| c.sessions > 0)
                .map(|c| {
                    let mut c = c.clone();
                    c.settle();
                    c
                }),
        }
    }
}

fn yes() -> bool {
    true
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
/// A `wss://` run with every connect phase measured, for the renderers' tests.
#[cfg(test)]
pub(crate) fn tls_run_for_tests(insecure: bool) -> RunData {
    let mut run = RunData {
        scenario: "smoke".into(),
        targets: vec!["wss://127.0.0.1:4443/v1".into()],
        embedded: true,
        ran_s: 3.0,
        ..Default::default()
    };
    for (m, base) in [
        (Metric::Connect, 1_300),
        (Metric::TcpConnect, 90),
        (Metric::TlsHandshake, 600),
        (Metric::WsUpgrade, 350),
        (Metric::Welcome, 250),
    ] {
        let mut h = Hist::default();
        for i in 0..200u64 {
            h.0.record(base + i).unwrap();
        }
        run.hists.insert(m.name().into(), h);
    }
    run.connections.attempts = 203;
    run.connections.established = 200;
    run.connections.failed = 3;
    run.connections
        .failures
        .insert("tls_unknown_issuer".into(), 2);
    run.connections.failures.insert("timeout_tls".into(), 1);
    run.warnings.insert(
        "the certificate's issuer is not in the trust store: pass the issuing CA with --cacert FILE (PEM)".into(),
        2,
    );
    run.tls = Some(TlsStats {
        insecure,
        resumption: "per-peer".into(),
        full: 150,
        resumed: 50,
        by_version: BTreeMap::from([("TLSv1.3".into(), 200)]),
        by_cipher: BTreeMap::from([
            ("TLS13_AES_256_GCM_SHA384".into(), 150),
            ("TLS13_CHACHA20_POLY1305_SHA256".into(), 50),
        ]),
        by_group: BTreeMap::from([("X25519MLKEM768".into(), 200)]),
    });
    run
}

#[cfg(test)]
mod tests;
