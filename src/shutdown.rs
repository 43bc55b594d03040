//! The stop signal for long-running commands: a first Ctrl-C (or SIGTERM) asks for a
//! graceful stop, a second one exits at once with status 130.

use tokio::sync::watch;

/// A cloneable view of the stop signal; `true` once a stop was requested.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop that never fires (tests, embedded use).
    pub fn never() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested (or the sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// Installs the two-stage Ctrl-C / SIGTERM handler and returns its stop signal.
/// Must be called inside a tokio runtime.
pub fn ctrl_c_twice() -> Stop {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_signal().await;
            signals += 1;
            if signals == 1 {
                eprintln!("\nstopping: finishing up (press Ctrl-C again to exit at once)");
                let _ = tx.send(true);
            } else {
                eprintln!("\ninterrupted");
                std::process::exit(130);
            }
        }
    });
    Stop(rx)
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
