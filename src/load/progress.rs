//! The live view: an indicatif line redrawn 5 times a second from the run's atomic
//! gauge and the collector's last second (never touched per frame). When stderr is not
//! a terminal the bar hides itself and a plain line is logged every 10 s instead.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::engine::{Clock, Live};
use crate::report::fmt_us;
use crate::report::text::thousands;

const REDRAW: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(10);

fn phase(live: &Live, now: u64) -> &'static str {
    let end = live.end_us.load(Ordering::Acquire);
    if now < live.t0_us {
        "starting"
    } else if now < end {
        "running"
    } else if now < end + live.grace_us {
        "draining"
    } else {
        "closing"
    }
}

/// One status line.
pub fn line(live: &Live, clock: &Clock) -> String {
    let now = clock.now_us();
    let l = *live.latest.lock().unwrap_or_else(|p| p.into_inner());
    let connected = live.metrics.connected.load(Ordering::Relaxed).max(0) as u64;
    let mut s = format!(
        "{} · connected {}/{} · publish {}/s · deliver {}/s · fan-out p99 {} · errors {} · closes {}",
        phase(live, now),
        thousands(connected),
        thousands(live.peers),
        thousands(l.counts.publishes),
        thousands(l.counts.deliveries),
        if l.fanout.count > 0 {
            fmt_us(l.fanout.p99)
        } else {
            "—".into()
        },
        thousands(l.counts.errors),
        thousands(l.counts.closes),
    );
    // Directs and call setup, when the run makes them.
    if l.counts.directs_sent > 0 {
        s.push_str(&format!(
            " · directs {}/s",
            thousands(l.counts.directs_sent)
        ));
    }
    if l.mesh_ready.count > 0 {
        s.push_str(&format!(
            " · mesh-ready p99 {} ({} joins)",
            fmt_us(l.mesh_ready.p99),
            thousands(l.mesh_ready.count)
        ));
    }
    if let Some(h) = live
        .headline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        s.push_str(" · ⚠ ");
        s.push_str(h);
    }
    s
}

/// Drives the view until `live.done`; `quiet` silences the plain log lines too.
pub fn spawn(live: Arc<Live>, title: String, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clock = Clock::new();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(title.clone());
        let plain = !quiet && !std::io::stderr().is_terminal();
        let mut last_plain = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(REDRAW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !live.done.load(Ordering::Acquire) {
            tick.tick().await;
            let msg = line(&live, &clock);
            if plain {
                if last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = tokio::time::Instant::now();
                    let secs = clock.now_us().saturating_sub(live.t0_us) / 1_000_000;
                    eprintln!("[{secs:>4} s] {title} {msg}");
                }
            } else {
                bar.set_message(msg);
                bar.tick();
            }
        }
        bar.finish_and_clear();
    })
}
