//! The stop signal for long-running commands.
//!
//! A stop has two stages: *stop* (finish gracefully: drain, close, write everything) and
//! *urgent* (drop what is still open and write what was measured, now). Two handlers
//! produce them: [`ctrl_c_twice`] (`serve`, `conform`: a second Ctrl-C exits at once with
//! 130) and [`ctrl_c_stages`] (`run`: a second Ctrl-C asks for urgency, so summary.json is
//! still written; a third, or the run not exiting within [`URGENT_EXIT`], exits with 130).

use std::time::Duration;

use tokio::sync::watch;

/// Stage values carried by the watch channel.
const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const URGENT: u8 = 2;

/// How long an urgent stop may take before the process exits anyway (130).
pub const URGENT_EXIT: Duration = Duration::from_secs(3);

/// The exit code of an interrupted command, as shells report a SIGINT death (128 + 2).
pub const INTERRUPTED: i32 = 130;

/// A cloneable view of the stop signal.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<u8>);

/// The sending side of a [`Stop`] (tests, worker processes, embedded use).
#[derive(Debug)]
pub struct StopSender(watch::Sender<u8>);

impl StopSender {
    /// Asks for a graceful stop.
    pub fn stop(&self) {
        self.0.send_if_modified(|v| raise(v, STOPPING));
    }

    /// Asks for an urgent stop (implies a stop).
    pub fn urgent(&self) {
        self.0.send_if_modified(|v| raise(v, URGENT));
    }
}

fn raise(v: &mut u8, to: u8) -> bool {
    let changed = *v < to;
    *v = (*v).max(to);
    changed
}

impl Stop {
    /// A stop that fires only through the returned sender (tests, embedded use).
    pub fn never() -> (StopSender, Stop) {
        let (tx, rx) = watch::channel(RUNNING);
        (StopSender(tx), Stop(rx))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow() >= STOPPING
    }

    pub fn is_urgent(&self) -> bool {
        *self.0.borrow() >= URGENT
    }

    /// Resolves once a stop is requested (or the sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v >= STOPPING).await;
    }

    /// Resolves once an urgent stop is requested; never when the sender is gone without
    /// asking (a finished signal task is no reason to cut a run short).
    pub async fn wait_urgent(&mut self) {
        if self.0.wait_for(|v| *v >= URGENT).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Installs the two-stage Ctrl-C / SIGTERM handler of `serve` and `conform`: the first
/// signal asks for a graceful stop, the second exits at once with status 130.
/// Must be called inside a tokio runtime.
pub fn ctrl_c_twice() -> Stop {
    let (tx, rx) = Stop::never();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_signal().await;
            signals += 1;
            if signals == 1 {
                eprintln!("\nstopping: finishing up (press Ctrl-C again to exit at once)");
                tx.stop();
            } else {
                eprintln!("\ninterrupted");
                std::process::exit(INTERRUPTED);
            }
        }
    });
    rx
}

/// Installs the Ctrl-C / SIGTERM handler of `run`: the first signal stops the run
/// gracefully (drain, close, full report), the second makes it urgent (connections
/// dropped, summary.json written at once), the third — or an urgent stop still running
/// after [`URGENT_EXIT`] — exits with status 130. Must be called inside a tokio runtime.
pub fn ctrl_c_stages() -> Stop {
    let (tx, rx) = Stop::never();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_signal().await;
            signals += 1;
            match signals {
                1 => {
                    eprintln!(
                        "\nstopping: draining and writing the report (Ctrl-C again: write summary.json and exit now)"
                    );
                    tx.stop();
                }
                2 => {
                    eprintln!("\nstopping now: writing summary.json of what was measured");
                    tx.urgent();
                    // A plain thread: it must fire even if the runtime is wedged.
                    std::thread::spawn(|| {
                        std::thread::sleep(URGENT_EXIT);
                        eprintln!("interrupted (the report could not be written in time)");
                        std::process::exit(INTERRUPTED);
                    });
                }
                _ => {
                    eprintln!("\ninterrupted");
                    std::process::exit(INTERRUPTED);
                }
            }
        }
    });
    rx
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_go_up() {
        let (tx, mut stop) = Stop::never();
        assert!(!stop.is_stopped());
        tx.urgent();
        tx.stop();
        assert!(stop.is_stopped() && stop.is_urgent());
        stop.wait().await;
        stop.wait_urgent().await;
    }

    #[tokio::test]
    async fn a_gone_sender_stops_but_is_not_urgent() {
        let (tx, mut stop) = Stop::never();
        drop(tx);
        stop.wait().await;
        let urgent = tokio::time::timeout(Duration::from_millis(50), stop.wait_urgent()).await;
        assert!(urgent.is_err());
    }
}
