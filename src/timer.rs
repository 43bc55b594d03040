//! One precise wake-up thread for the whole process. tokio's timer rounds every deadline up
//! to its 1 ms tick and fires up to ~2 ms late: a send scheduled for t leaves at t + 0.5..2 ms,
//! and that lag sits inside every fan-out figure. This thread keeps the deadlines in a heap,
//! waits on a condvar with the kernel's timer slack set to 1 ns, and wakes the waiting
//! tasks within tens of microseconds. `Sleep` asks to be woken `EARLY` and spins the rest,
//! so a send leaves within ~20 µs of its time at the median (docs/PERFORMANCE.md).
//!
//! A task registers once per deadline, not per poll, so the cost is one heap entry per
//! scheduled wake-up. A deadline that moves leaves its old entry behind; it fires as a
//! spurious wake, which every waiter tolerates (futures re-check the clock).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
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

/// The process's wake-up thread.
pub struct Timer {
    heap: Mutex<Heap>,
    cv: Condvar,
    /// False when the thread could not be started: waiters then fall back to tokio's timer.
    running: bool,
}

static TIMER: OnceLock<Timer> = OnceLock::new();

/// Sleeps are woken this much early and spin the rest: waking a parked runtime worker takes
/// tens of µs, as long as the timer's own lateness.
const EARLY: Duration = Duration::from_micros(50);
/// The last stretch of a long wait is slept separately (see `run`).
const FINAL_STRETCH: Duration = Duration::from_micros(200);

impl Timer {
    /// The process's timer, started on first use.
    pub fn global() -> &'static Timer {
        TIMER.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("stampede-timer".into())
                .spawn(|| Timer::global().run());
            if let Err(e) = &spawned {
                tracing::warn!("cannot start the timer thread ({e}); sends use tokio's 1 ms timer");
            }
            Timer {
                heap: Mutex::new(Heap::default()),
                cv: Condvar::new(),
                running: spawned.is_ok(),
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heap> {
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes `waker` at `at` (or soon after; never before).
    pub fn wake_at(&self, at: Instant, waker: Waker) {
        let mut heap = self.lock();
        heap.seq += 1;
        let seq = heap.seq;
        let earliest = heap.entries.peek().is_none_or(|top| at < top.at);
        heap.entries.push(Entry { at, seq, waker });
        drop(heap);
        if earliest {
            self.cv.notify_one();
        }
    }

    fn run(&self) {
        REALTIME.store(precise_slack(), Ordering::Relaxed);
        let mut due = Vec::new();
        let mut heap = self.lock();
        loop {
            let now = Instant::now();
            while heap.entries.peek().is_some_and(|top| top.at <= now) {
                due.push(heap.entries.pop().expect("peeked").waker);
            }
            if !due.is_empty() {
                // Wake outside the lock: a wake can take a runtime's own locks.
                drop(heap);
                due.drain(..).for_each(Waker::wake);
                heap = self.lock();
                continue;
            }
            heap = match heap.entries.peek() {
                None => self.cv.wait(heap).unwrap_or_else(|e| e.into_inner()),
                Some(top) => {
                    // A sleep of milliseconds wakes tens of µs later than one of a few hundred
                    // µs on a VM (the host stops polling for the halted vCPU): sleep long, then
                    // short for the last stretch.
                    let wait = top.at - now;
                    let wait = if wait > FINAL_STRETCH * 2 {
                        wait - FINAL_STRETCH
                    } else {
                        wait
                    };
                    self.cv
                        .wait_timeout(heap, wait)
                        .map(|(h, _)| h)
                        .unwrap_or_else(|e| e.into_inner().0)
                }
            };
        }
    }
}

/// Linux lets a sleeping thread's timer fire up to 50 µs late (the timer slack), to batch
/// wake-ups, and a woken thread waits for a busy core's time slice. This thread exists to
/// be on time: slack 1 ns, and the lowest real-time priority where permitted (root or
/// CAP_SYS_NICE; it only ever sleeps and wakes, so it cannot starve anyone). Without it,
/// wake-ups under load are later (p99 ≈ 300 µs instead of ≈ 100 µs on a busy 2-core VM).
fn precise_slack() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls take plain integers / a plain struct and touch only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

static REALTIME: AtomicBool = AtomicBool::new(false);

/// Whether the timer thread runs at real-time priority (for the run report).
pub fn realtime() -> bool {
    REALTIME.load(Ordering::Relaxed)
}

/// Resolves at `at`; like `tokio::time::sleep_until`, but on time.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep {
        at,
        armed: None,
        fallback: None,
    }
}

/// A deadline that can be moved (`reset`) without allocating.
pub struct Sleep {
    at: Instant,
    /// The deadline and waker last registered with the timer.
    armed: Option<(Instant, Waker)>,
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Sleep {
    pub fn reset(&mut self, at: Instant) {
        self.at = at;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let now = Instant::now();
        if this.armed.is_some() && now < this.at && this.at - now <= EARLY {
            while Instant::now() < this.at {
                std::hint::spin_loop();
            }
        }
        if Instant::now() >= this.at {
            this.armed = None;
            return Poll::Ready(());
        }
        let timer = Timer::global();
        if !timer.running {
            let at = tokio::time::Instant::from_std(this.at);
            let sleep = this
                .fallback
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            return sleep.as_mut().poll(cx);
        }
        let stale = match &this.armed {
            Some((at, waker)) => *at != this.at || !waker.will_wake(cx.waker()),
            None => true,
        };
        if stale {
            timer.wake_at(
                this.at.checked_sub(EARLY).unwrap_or(this.at),
                cx.waker().clone(),
            );
            this.armed = Some((this.at, cx.waker().clone()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_fires_early_and_follows_a_reset() {
        let start = Instant::now();
        sleep_until(start + Duration::from_millis(5)).await;
        assert!(start.elapsed() >= Duration::from_millis(5));

        let mut s = sleep_until(start + Duration::from_secs(3600));
        let early = Instant::now() + Duration::from_millis(3);
        // Poll once so the far deadline is registered, then move it closer.
        assert!(futures_poll_once(&mut s).is_pending());
        s.reset(early);
        s.await;
        assert!(Instant::now() >= early);
    }

    fn futures_poll_once(s: &mut Sleep) -> Poll<()> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(s).poll(&mut cx)
    }
}
