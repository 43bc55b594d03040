//! `stampede run` and `stampede conform` against servers that misbehave on purpose
//! (`common::hostile`): each must fail (exit 1 or 2, never 0), name the reason, and stay
//! within its time and memory budget whatever the server sends.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hostile::{self, Mode};

/// How a child process ended.
struct Ended {
    code: Option<i32>,
    output: String,
    took: Duration,
    peak_rss_mb: f64,
}

/// Runs the CLI with `args`, killing it after `limit`, watching its peak RSS.
fn stampede(args: &[String], limit: Duration) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut child = child;
    let pid = child.id();
    let mut hwm_kb = 0u64;
    let code = loop {
        // VmHWM is the peak of this process image (getrusage's maxrss would carry the
        // forking test process's size across exec).
        hwm_kb = hwm_kb.max(vm_hwm_kb(pid));
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ended {
        code,
        output: std::fs::read_to_string(&out_path).unwrap_or_default(),
        took: started.elapsed(),
        peak_rss_mb: hwm_kb as f64 / 1024.0,
    }
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The verdict must be a failure with a reason, in time, within memory.
fn judged(what: &str, e: &Ended, limit: Duration, rss_mb: f64, reasons: &[&str]) {
    let tail: String = {
        let lines: Vec<&str> = e.output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        matches!(e.code, Some(1) | Some(2)),
        "{what}: exit {:?} after {:?} (must be 1 or 2)\n{tail}",
        e.code,
        e.took
    );
    assert!(e.took < limit, "{what}: took {:?}\n{tail}", e.took);
    assert!(
        e.peak_rss_mb < rss_mb,
        "{what}: peak RSS {:.0} MB (budget {rss_mb} MB)\n{tail}",
        e.peak_rss_mb
    );
    assert!(
        reasons.iter().any(|r| e.output.contains(r)),
        "{what}: none of {reasons:?} named in\n{tail}"
    );
    let named: Vec<&str> = e
        .output
        .lines()
        .filter(|l| reasons.iter().any(|r| l.contains(r)))
        .take(3)
        .collect();
    let named = named.join(" | ");
    eprintln!(
        "{what}: exit {:?} in {:.1} s, peak RSS {:.0} MB; e.g. {}",
        e.code,
        e.took.as_secs_f64(),
        e.peak_rss_mb,
        named.chars().take(300).collect::<String>()
    );
}

/// `stampede conform` against one hostile mode.
async fn conform_against(mode: Mode, reasons: &[&str]) {
    let server = hostile::start(mode).await;
    // Short case timeouts keep the suite's bound, (cases × timeout) / jobs, small.
    let conform = args(&["conform", "--target", &server.ws_url, "--timeout-ms", "500"]);
    let limit = Duration::from_secs(60);
    let e = tokio::task::spawn_blocking(move || stampede(&conform, limit))
        .await
        .unwrap();
    drop(server);
    judged(&format!("conform vs {mode:?}"), &e, limit, 200.0, reasons);
}

/// `stampede run smoke` against one hostile mode.
async fn run_against(mode: Mode, reasons: &[&str]) {
    let server = hostile::start(mode).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    let run = args(&[
        "run",
        "smoke",
        "--quiet",
        "--target",
        &server.ws_url,
        "--out",
        &out,
    ]);
    let limit = Duration::from_secs(40);
    let e = tokio::task::spawn_blocking(move || stampede(&run, limit))
        .await
        .unwrap();
    drop(server);
    judged(&format!("run vs {mode:?}"), &e, limit, 100.0, reasons);
}

macro_rules! hostile_tests {
    ($($name:ident: $mode:ident, run: [$($r:literal),*], conform: [$($c:literal),*];)*) => {
        mod conform {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    conform_against(Mode::$mode, &[$($c),*]).await;
                }
            )*
        }
        mod run {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run_against(Mode::$mode, &[$($r),*]).await;
                }
            )*
        }
    };
}

hostile_tests! {
    never_answers_the_upgrade: NoUpgrade,
        run: ["timed out during upgrade"], conform: ["timed out during upgrade"];
    answers_http_200: Http200,
        run: ["HTTP 200"], conform: ["HTTP 200"];
    silent_after_101: SilentAfter101,
        run: ["no welcome"], conform: ["welcome"];
    welcome_then_silence: WelcomeThenSilence,
        run: ["FAILED checks.acks", "FAILED checks.delivery"], conform: ["FAIL "];
    acks_subscribes_only: AcksSubscribesOnly,
        run: ["FAILED checks.acks", "FAILED checks.lost"], conform: ["FAIL "];
    frame_header_of_2_62_bytes: HugeFrameHeader,
        run: ["FAILED checks.closes"], conform: ["FAIL "];
    message_of_200_mb_in_fragments: HugeFragmented,
        run: ["FAILED checks.closes"], conform: ["FAIL "];
    garbage_flood: GarbageFlood,
        run: ["FAILED checks.closes"], conform: ["FAIL "];
    reset_in_a_frame_header: RstMidHeader,
        run: ["FAILED checks.closes"], conform: ["FAIL "];
    upgrade_answer_dripped: Drip101,
        run: ["timed out during upgrade"], conform: ["timed out during upgrade"];
    ping_flood: PingFlood,
        run: ["FAILED checks.unexpected"], conform: ["ping frames"];
    every_frame_answered_10000_times: Amplify,
        run: ["FAILED checks.unexpected"], conform: ["FAIL "];
    close_frames_ignored: IgnoreClose,
        run: ["FAILED checks.lost", "FAILED checks.delivery"], conform: ["FAIL "];
    works_then_drops_every_connection: WorksThenDrops,
        run: ["FAILED checks.closes"], conform: ["FAIL ", "reset"];
}
