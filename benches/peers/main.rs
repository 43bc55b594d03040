//! Side by side: stampede, a bare receiver (the floor for our I/O model) and, where it is
//! installed, Artillery with a hook that counts and times deliveries, on the same
//! workloads against a fresh `stampede serve` each run, rounds interleaved.
//!
//! For each run it samples every 0.5 s the tool's process tree (user + system CPU from
//! /proc, RSS) and the server's queued copies (`GET /_admin/stats` → `copies`). The
//! **steady window** is the span in which the server's count goes from 15 % to 85 % of
//! its final value; steady CPU per delivery = the tool's CPU in that span / the copies in
//! it. Whole-run CPU per delivery divides all of the tool's CPU by all copies.
//!
//! ```text
//! cargo build --release && cargo bench --bench peers -- [ROUNDS] [WORKLOAD...]
//! ```
//! ROUNDS defaults to 3; workloads `typing-storm-200` and `firehose` (both by default).
//! Artillery: `cd benches/peers/artillery && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci`.

mod artillery;
mod probe;
mod receiver;

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use probe::Sample;

/// One workload, written out for each tool from this single description.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub peers: u32,
    pub room_size: u32,
    /// Publishes per second per peer (constant arrival).
    pub rate: f64,
    /// Publishing starts this long after the first connect.
    pub start_s: f64,
    /// Publishing ends here (from the first connect).
    pub duration_s: f64,
    pub grace_s: f64,
    /// Bytes of `data`.
    pub size: usize,
}

impl Workload {
    pub fn publishes(&self) -> u32 {
        ((self.duration_s - self.start_s) * self.rate).round() as u32
    }
    pub fn expected_deliveries(&self) -> u64 {
        u64::from(self.peers) * u64::from(self.publishes()) * u64::from(self.room_size - 1)
    }
    fn scenario_toml(&self) -> String {
        format!(
            r#"name = "{name}"
duration = "{dur}s"
grace = "{grace}s"
seed = 1

[[population]]
name = "members"
peers = {peers}
room_size = {room}
channel = "bench/room-{{room}}"
ramp = "1s"

[population.publish]
rate = {rate}
arrival = "constant"
size = {size}
publishers = 1.0
start = "{start}s"
"#,
            name = self.name,
            dur = self.duration_s,
            grace = self.grace_s,
            peers = self.peers,
            room = self.room_size,
            rate = self.rate,
            size = self.size,
            start = self.start_s,
        )
    }
}

fn workloads() -> Vec<Workload> {
    vec![
        // 200 peers in 10 rooms of 20, 60 publishes each at 2/s: 228,000 copies, ~7,600/s.
        Workload {
            name: "typing-storm-200",
            peers: 200,
            room_size: 20,
            rate: 2.0,
            start_s: 2.0,
            duration_s: 32.0,
            grace_s: 2.0,
            size: 85,
        },
        // The same peers in 2 rooms of 100: ~39,600 copies/s, ~200 frames/s per connection.
        Workload {
            name: "firehose",
            peers: 200,
            room_size: 100,
            rate: 2.0,
            start_s: 2.0,
            duration_s: 32.0,
            grace_s: 2.0,
            size: 85,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    Stampede,
    Bare,
    Artillery,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Stampede => "stampede",
            Tool::Bare => "bare receiver",
            Tool::Artillery => "artillery+hook",
        }
    }
}

/// What one run measured.
#[derive(Debug, Default, Clone)]
struct Outcome {
    steady_us: f64,
    whole_us: f64,
    peak_rss_mb: f64,
    copies: u64,
    /// Every expected copy counted by the tool.
    complete: bool,
    /// The latency the tool itself reports, as text.
    latency: String,
    fanout_minus_ack_us: Option<i64>,
    lag_p99_us: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("bare-receiver") {
        let w = workloads()
            .into_iter()
            .find(|w| Some(w.name) == args.get(1).map(String::as_str))
            .expect("bare-receiver WORKLOAD URL");
        let ok = receiver::run(&w, args.get(2).expect("URL"));
        std::process::exit(if ok { 0 } else { 1 });
    }
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let chosen: Vec<&String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .collect();
    let list: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| chosen.is_empty() || chosen.iter().any(|c| *c == w.name))
        .collect();
    let out = std::env::temp_dir().join(format!("stampede-peers-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("out dir");
    let artillery = artillery_bin();
    if artillery.is_none() {
        println!(
            "artillery: not installed; run `cd benches/peers/artillery && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci` to include it"
        );
    }
    let mut tools = vec![Tool::Stampede, Tool::Bare];
    if artillery.is_some() {
        tools.push(Tool::Artillery);
    }
    for w in &list {
        println!(
            "\n== {} · {} peers, rooms of {}, {} publishes/s each · {} copies expected",
            w.name,
            w.peers,
            w.room_size,
            w.rate,
            w.expected_deliveries()
        );
        let mut results: Vec<(Tool, Outcome)> = Vec::new();
        for round in 1..=rounds {
            for &tool in &tools {
                let o = run_one(w, tool, &out, round, artillery.as_deref());
                println!(
                    "round {round} {:<15} steady {:>6.2} µs/delivery · whole {:>6.2} µs · peak RSS {:>6.1} MB · copies {:>9} {} · {}",
                    tool.name(),
                    o.steady_us,
                    o.whole_us,
                    o.peak_rss_mb,
                    o.copies,
                    if o.complete {
                        "all counted"
                    } else {
                        "INCOMPLETE"
                    },
                    o.latency
                );
                results.push((tool, o));
            }
        }
        summarize(&results, &tools);
    }
    println!("\nruns kept in {}", out.display());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn summarize(results: &[(Tool, Outcome)], tools: &[Tool]) {
    let med = |t: Tool, f: fn(&Outcome) -> f64| {
        median(
            results
                .iter()
                .filter(|(x, _)| *x == t)
                .map(|(_, o)| f(o))
                .collect(),
        )
    };
    let bare = med(Tool::Bare, |o| o.steady_us);
    println!("median of rounds:");
    for &t in tools {
        let steady = med(t, |o| o.steady_us);
        println!(
            "  {:<15} steady {:>6.2} µs/delivery ({:.2}× bare) · whole {:>6.2} µs · peak RSS {:>6.1} MB",
            t.name(),
            steady,
            steady / bare,
            med(t, |o| o.whole_us),
            med(t, |o| o.peak_rss_mb)
        );
    }
    let gaps: Vec<f64> = results
        .iter()
        .filter_map(|(_, o)| o.fanout_minus_ack_us.map(|g| g as f64))
        .collect();
    let lags: Vec<f64> = results
        .iter()
        .filter_map(|(_, o)| o.lag_p99_us.map(|g| g as f64))
        .collect();
    if !gaps.is_empty() {
        println!(
            "  stampede harness-added latency: fan-out p50 − ack p50 = {:.0} µs (median; runs {:?}) · schedule-lag p99 {:.0} µs (median; runs {:?})",
            median(gaps.clone()),
            gaps,
            median(lags.clone()),
            lags
        );
    }
}

fn run_one(
    w: &Workload,
    tool: Tool,
    out: &Path,
    round: usize,
    artillery: Option<&Path>,
) -> Outcome {
    let server = Server::start(&["--admin-token", "bench"]);
    let stats = server.ws_url.replace("ws://", "").replace("/v1", "");
    let dir = out.join(format!(
        "{}-{}-{round}",
        w.name,
        tool.name().replace([' ', '+'], "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = match tool {
        Tool::Stampede => {
            let scenario = dir.join("scenario.toml");
            std::fs::write(&scenario, w.scenario_toml()).unwrap();
            let mut c = Command::new(stampede_bin());
            c.arg("run")
                .arg(&scenario)
                .args(["--target", &server.ws_url, "--out"])
                .arg(dir.join("run"));
            c
        }
        Tool::Bare => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["bare-receiver", w.name, &server.ws_url]);
            c
        }
        Tool::Artillery => {
            let (config, processor) = artillery::files(w, &dir, &server.ws_url);
            let mut c = Command::new(artillery.expect("checked"));
            c.arg("run")
                .arg(&config)
                .env("STAMPEDE_BENCH_PROCESSOR", &processor)
                .env("ARTILLERY_DISABLE_TELEMETRY", "true");
            c
        }
    };
    let log = std::fs::File::create(dir.join("output.txt")).unwrap();
    // Reaped with wait4 (probe::reap), which also gives its CPU: std's wait would not.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tool.name()));
    let pid = child.id();
    let limit = Instant::now() + Duration::from_secs_f64(w.duration_s + w.grace_s + 60.0);
    let mut samples: Vec<Sample> = Vec::new();
    let (success, whole_cpu_us) = loop {
        samples.push(probe::sample(pid, &stats));
        if let Some(done) = probe::reap(pid) {
            break done;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            break probe::reap_blocking(pid);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let final_copies = probe::copies(&stats).unwrap_or(0);
    drop(server);
    let win = probe::window(&samples, final_copies);
    let mut o = Outcome {
        steady_us: win.steady_us,
        whole_us: whole_cpu_us as f64 / final_copies.max(1) as f64,
        peak_rss_mb: win.peak_rss_mb,
        copies: final_copies,
        complete: success,
        latency: "—".into(),
        ..Default::default()
    };
    reported(&mut o, tool, &dir, w);
    o
}

/// Adds what the tool itself reported: its latencies, and whether it counted every copy.
fn reported(o: &mut Outcome, tool: Tool, dir: &Path, w: &Workload) {
    match tool {
        Tool::Stampede => {
            let Ok(text) = std::fs::read_to_string(dir.join("run/summary.json")) else {
                o.complete = false;
                o.latency = "no summary.json".into();
                return;
            };
            let s: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let l = &s["latency"];
            let n = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
            let (f50, f99, a50) = (
                n(&l["fanout_us"]["p50"]),
                n(&l["fanout_us"]["p99"]),
                n(&l["ack_us"]["p50"]),
            );
            let lag99 = n(&s["schedule_lag_us"]["p99"]);
            o.complete &= s["delivery"]["delivered"].as_u64() == Some(w.expected_deliveries())
                && s["delivery"]["lost"].as_u64() == Some(0);
            o.fanout_minus_ack_us = Some(f50 - a50);
            o.lag_p99_us = Some(lag99 as u64);
            o.latency = format!(
                "fan-out p50 {f50} µs p99 {f99} µs · ack p50 {a50} µs · lag p99 {lag99} µs"
            );
        }
        Tool::Bare => {}
        Tool::Artillery => {
            let text = std::fs::read_to_string(dir.join("output.txt")).unwrap_or_default();
            o.latency = artillery::latency(&text);
            o.complete &= artillery::received(&text) == Some(w.expected_deliveries());
        }
    }
}

fn stampede_bin() -> PathBuf {
    std::env::var_os("STAMPEDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/stampede"))
}

fn artillery_bin() -> Option<PathBuf> {
    let p = PathBuf::from("benches/peers/artillery/node_modules/.bin/artillery");
    p.exists().then_some(p)
}
