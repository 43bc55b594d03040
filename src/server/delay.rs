//! A precise wake-up thread for injected fan-out delays. tokio's timer has 1 ms ticks and
//! fires up to ~2 ms late, which would blur a truth test that injects "20 ms"; a thread
//! waiting on a condvar wakes within tens of microseconds. A session registers only when
//! the head of its queue is not yet due, so the cost is one entry per wake-up, not per
//! message. Runs only while delay injection is on.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::hub::Conn;

struct Entry {
    at: Instant,
    seq: u64,
    conn: Arc<Conn>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and the earliest entry must be on top.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Entry>,
    seq: u64,
}

/// The wake-up thread's handle.
#[derive(Default)]
pub struct DelayTimer {
    heap: Mutex<Heap>,
    cv: Condvar,
    stopped: AtomicBool,
}

impl std::fmt::Debug for DelayTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DelayTimer")
    }
}

impl DelayTimer {
    /// Starts the thread.
    pub fn start() -> Arc<DelayTimer> {
        let timer = Arc::new(DelayTimer::default());
        let t = timer.clone();
        let spawned = std::thread::Builder::new()
            .name("stampede-delay".into())
            .spawn(move || t.run());
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the delay thread ({e}); injected delays use tokio's timer"
            );
        }
        timer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heap> {
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes `conn`'s session at `at` (it then writes the frames due by then).
    pub fn wake_at(&self, at: Instant, conn: Arc<Conn>) {
        let mut heap = self.lock();
        heap.seq += 1;
        let seq = heap.seq;
        let earliest = heap.entries.peek().is_none_or(|top| at < top.at);
        heap.entries.push(Entry { at, seq, conn });
        drop(heap);
        if earliest {
            self.cv.notify_one();
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.cv.notify_one();
    }

    fn run(&self) {
        let mut heap = self.lock();
        while !self.stopped.load(Ordering::Acquire) {
            let now = Instant::now();
            match heap.entries.peek() {
                None => heap = self.cv.wait(heap).unwrap_or_else(|e| e.into_inner()),
                Some(top) if top.at <= now => {
                    let entry = heap.entries.pop().expect("peeked");
                    entry.conn.out.wake();
                }
                Some(top) => {
                    let wait = top.at - now;
                    heap = self
                        .cv
                        .wait_timeout(heap, wait)
                        .map(|(h, _)| h)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }
}
