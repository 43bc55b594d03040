//! Injected fan-out delays and the capacity shaper release copies on the process's precise
//! timer (`crate::timer`): tokio's timer has 1 ms ticks and fires up to ~2 ms late, which
//! would blur a truth test that injects "20 ms". A session registers only when the head of
//! its queue is not yet due, so the cost is one entry per wake-up, not per message.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Instant;

use super::hub::Conn;

/// Wakes a session's writer: its outbox then writes the frames due by then.
struct WakeWriter(Arc<Conn>);

impl Wake for WakeWriter {
    fn wake(self: Arc<Self>) {
        self.0.out.wake();
    }
}

/// Wakes `conn`'s session at `at` (it then writes the frames due by then).
pub fn wake_at(at: Instant, conn: Arc<Conn>) {
    crate::timer::Timer::global().wake_at(at, Waker::from(Arc::new(WakeWriter(conn))));
}
