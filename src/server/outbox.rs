//! The bounded outbound queue of one connection. Every frame for a connection (its own
//! acks and errors, broadcasts, directs, presence) goes through it, so per-sender →
//! per-recipient order is the order of pushes (ORD-5) and a connection's session task is
//! the only writer of its socket.
//!
//! Slow-consumer policy `[choice]`: the queue holds at most `frames` frames and `bytes`
//! bytes; a push beyond either bound closes that connection with 1013 (Try Again Later)
//! and is counted, never dropped silently. Pushes after a close was requested are
//! discarded, since the connection is ending.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::inject::{Decision, Injector};

/// Close code for a slow consumer whose queue overflowed (RFC 6455 "Try Again Later").
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Pseudo close code: drop the connection at once, without a close handshake (used after
/// the shutdown drain timed out).
pub const ABORT: u16 = 1;

/// How long a copy held back for a swap waits for the next copy from its origin before it
/// is released unswapped.
const HOLD_MAX: Duration = Duration::from_millis(100);

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            frames: 4096,
            bytes: 8 << 20,
        }
    }
}

/// One queued frame.
#[derive(Debug)]
pub struct Item {
    pub text: Utf8Bytes,
    /// Not to be written before this instant (injected fan-out delay).
    pub due: Option<Instant>,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// This push overflowed the queue: the connection is now closing with 1013.
    Overflow,
    /// The connection is already closing; the frame was discarded.
    Closed,
}

#[derive(Debug)]
struct Held {
    item: Item,
    origin: u64,
    deadline: Instant,
    /// Held by the injector (counted on swap) rather than by a fault switch.
    injected: bool,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Item>,
    bytes: usize,
    held: Option<Held>,
}

/// The shared half of a connection's queue: producers push, the session takes.
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Signalled on every push.
    data: Notify,
    /// Signalled when a close is requested.
    ctl: Notify,
    /// Requested close code; 0 = none. The first request wins (but [`ABORT`] overrides).
    close: AtomicU16,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The queue holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame that is not a channel message (ack, error, presence, direct, pong).
    pub fn push(&self, text: Utf8Bytes, limits: QueueLimits) -> Pushed {
        self.push_due(text, None, limits)
    }

    /// [`Outbox::push`], not to be written before `due` (the `delayed-frames` variant).
    /// Frames behind it wait for it, so the connection's order holds.
    pub fn push_due(&self, text: Utf8Bytes, due: Option<Instant>, limits: QueueLimits) -> Pushed {
        let pushed = {
            let mut q = self.lock();
            self.push_locked(&mut q, Item { text, due }, None, limits)
        };
        if pushed == Pushed::Queued {
            self.data.notify_one();
        }
        pushed
    }

    fn push_locked(
        &self,
        q: &mut Inner,
        item: Item,
        extra: Option<Item>,
        limits: QueueLimits,
    ) -> Pushed {
        if self.close.load(Ordering::Relaxed) != 0 {
            return Pushed::Closed;
        }
        let n = 1 + extra.is_some() as usize;
        let len = item.text.len() + extra.as_ref().map_or(0, |e| e.text.len());
        if q.items.len() + n > limits.frames || q.bytes + len > limits.bytes {
            return if self.request_close(TRY_AGAIN_LATER) {
                Pushed::Overflow
            } else {
                Pushed::Closed
            };
        }
        q.bytes += len;
        q.items.push_back(item);
        if let Some(extra) = extra {
            q.items.push_back(extra);
        }
        Pushed::Queued
    }

    /// Queues one recipient's copy of a channel `message`, applying the injector and the
    /// `reorder-per-publisher` fault (`swap_fault`). `origin` identifies the sender, so
    /// swaps only exchange copies from one sender.
    pub fn push_message(
        &self,
        text: Utf8Bytes,
        origin: u64,
        due: Option<Instant>,
        injector: Option<&Injector>,
        swap_fault: bool,
        limits: QueueLimits,
    ) -> Pushed {
        let item = Item { text, due };
        let pushed = {
            let mut q = self.lock();
            if q.held.as_ref().is_some_and(|h| h.origin == origin) {
                let held = q.held.take().expect("checked just above");
                let pushed = self.push_locked(&mut q, item, Some(held.item), limits);
                if pushed == Pushed::Queued && held.injected {
                    if let Some(inj) = injector {
                        inj.count_swap();
                    }
                }
                pushed
            } else {
                let can_hold = q.held.is_none();
                let decision = match injector {
                    Some(inj) => inj.decide(can_hold),
                    None => Decision::Deliver {
                        dup: false,
                        hold: false,
                    },
                };
                match decision {
                    Decision::Drop => return Pushed::Queued,
                    _ if swap_fault && can_hold => {
                        self.hold(&mut q, item, origin, false);
                        Pushed::Queued
                    }
                    Decision::Deliver { hold: true, .. } => {
                        self.hold(&mut q, item, origin, true);
                        Pushed::Queued
                    }
                    Decision::Deliver { dup, .. } => {
                        let copy = dup.then(|| Item {
                            text: item.text.clone(),
                            due: item.due,
                        });
                        self.push_locked(&mut q, item, copy, limits)
                    }
                }
            }
        };
        if pushed == Pushed::Queued {
            self.data.notify_one();
        }
        pushed
    }

    fn hold(&self, q: &mut Inner, item: Item, origin: u64, injected: bool) {
        if self.close.load(Ordering::Relaxed) == 0 {
            q.held = Some(Held {
                item,
                origin,
                deadline: Instant::now() + HOLD_MAX,
                injected,
            });
        }
    }

    /// Moves up to `max` frames that are due at `now` into `out`. Returns the instant at
    /// which more frames become due (delayed or held ones), if any.
    pub fn take(&self, now: Instant, out: &mut VecDeque<Item>, max: usize) -> Option<Instant> {
        let mut q = self.lock();
        if q.held.as_ref().is_some_and(|h| h.deadline <= now) {
            // Nothing from its origin followed: release it in place, unswapped.
            let held = q.held.take().expect("checked just above");
            q.bytes += held.item.text.len();
            q.items.push_back(held.item);
        }
        let mut moved = 0;
        while moved < max {
            match q.items.front() {
                Some(item) if item.due.is_none_or(|d| d <= now) => {
                    let item = q.items.pop_front().expect("front exists");
                    q.bytes -= item.text.len();
                    out.push_back(item);
                    moved += 1;
                }
                _ => break,
            }
        }
        if q.items.is_empty() && q.items.capacity() > 16 {
            // A burst grew the queue; give the memory back rather than keep it per connection.
            q.items.shrink_to(4);
        }
        let next = q.items.front().and_then(|i| i.due);
        let held = q.held.as_ref().map(|h| h.deadline);
        match (next, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether frames are waiting (ready or not).
    pub fn has_pending(&self) -> bool {
        let q = self.lock();
        !q.items.is_empty() || q.held.is_some()
    }

    /// Asks the session to close with `code`. Returns false if a close was already
    /// requested (the first request wins), except that [`ABORT`] always applies.
    pub fn request_close(&self, code: u16) -> bool {
        let first = if code == ABORT {
            self.close.swap(ABORT, Ordering::AcqRel) == 0
        } else {
            self.close
                .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        };
        if first || code == ABORT {
            self.ctl.notify_one();
        }
        first
    }

    /// The requested close code, if any.
    pub fn close_requested(&self) -> Option<u16> {
        match self.close.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Wakes the session as if frames were pushed (delayed frames became due).
    pub fn wake(&self) {
        self.data.notify_one();
    }

    /// Resolves when frames were pushed since the last call (may be spurious).
    pub async fn pushed(&self) {
        self.data.notified().await
    }

    /// Resolves when a close was requested since the last call.
    pub async fn close_signal(&self) {
        self.ctl.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::inject::Inject;

    fn texts(q: &Outbox) -> Vec<String> {
        let mut out = VecDeque::new();
        q.take(
            Instant::now() + Duration::from_secs(1),
            &mut out,
            usize::MAX,
        );
        out.into_iter()
            .map(|i| i.text.as_str().to_owned())
            .collect()
    }

    #[test]
    fn overflow_requests_1013_once() {
        let q = Outbox::default();
        let lim = QueueLimits {
            frames: 2,
            bytes: 1000,
        };
        assert_eq!(q.push("a".into(), lim), Pushed::Queued);
        assert_eq!(q.push("b".into(), lim), Pushed::Queued);
        assert_eq!(q.push("c".into(), lim), Pushed::Overflow);
        assert_eq!(q.push("d".into(), lim), Pushed::Closed);
        assert_eq!(q.close_requested(), Some(TRY_AGAIN_LATER));
        let lim = QueueLimits {
            frames: 10,
            bytes: 3,
        };
        let q = Outbox::default();
        assert_eq!(q.push("abc".into(), lim), Pushed::Queued);
        assert_eq!(q.push("d".into(), lim), Pushed::Overflow);
    }

    #[test]
    fn swap_fault_swaps_pairs_per_origin() {
        let q = Outbox::default();
        let lim = QueueLimits::default();
        for t in ["1", "2", "3", "4"] {
            q.push_message(t.into(), 7, None, None, true, lim);
        }
        q.push_message("x".into(), 8, None, None, true, lim);
        assert_eq!(texts(&q), ["2", "1", "4", "3", "x"]);
    }

    #[test]
    fn injected_swaps_are_counted() {
        let inj = Injector::new(Inject {
            reorder_rate: 1.0,
            seed: 1,
            ..Inject::default()
        });
        let q = Outbox::default();
        let lim = QueueLimits::default();
        for t in ["1", "2", "3"] {
            q.push_message(t.into(), 1, None, Some(&inj), false, lim);
        }
        // "3" is held until its deadline passes; take() with a later `now` releases it.
        assert_eq!(texts(&q), ["2", "1", "3"]);
        assert_eq!(inj.counts().reordered, 1);
    }

    #[test]
    fn close_first_wins_but_abort_overrides() {
        let q = Outbox::default();
        assert!(q.request_close(4020));
        assert!(!q.request_close(1001));
        assert_eq!(q.close_requested(), Some(4020));
        q.request_close(ABORT);
        assert_eq!(q.close_requested(), Some(ABORT));
    }
}
