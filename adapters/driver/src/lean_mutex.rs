//! The lock around a session's core: a mutex whose uncontended unlock is one plain
//! release store.
//!
//! A `std::sync::Mutex` pays two atomic read-modify-write instructions per lock and unlock
//! pair (a compare-exchange to lock, a swap to unlock, which must see whether a waiter
//! sleeps). Every `ConnSender::send` takes the session's lock once, so at 16-byte messages
//! the pair is a large share of the per-message cost (docs/benchmarks.md: the send rate went
//! from 0.71x to 0.84x of raw TCP with a single-instruction unlock). [`LeanMutex`] locks
//! with one compare-exchange and unlocks with a release store followed by a plain load of
//! its waiter count.
//!
//! Waiting: a thread that finds the lock taken spins briefly (the session's critical
//! sections are short, bounded core calls), then counts itself in `waiters` and sleeps on a
//! condition variable. An unlock that sees `waiters > 0` wakes one sleeper. The unlock's
//! load may miss a waiter that registered in the same instant (the store and the load are
//! not fenced: a fence is exactly the cost this lock avoids), so a sleeper also wakes on
//! its own after [`PARK_TIMEOUT`] and tries again: in that rare race a waiter is delayed by
//! at most that long, never stranded. Mutual exclusion rests on the compare-exchange alone
//! (acquire) and the release store, as in any spin lock.
//!
//! A panic while the lock is held unlocks it on unwind; like the crate's other locks, the
//! lock is then usable (the core never panics on input, so its state is consistent).
//!
//! Limits, as for `std`'s futex mutex unless said otherwise:
//! - not fair: a thread on the fast path can take the lock ahead of a woken sleeper (no
//!   hand-off), so a sleeper's wait has no fixed bound under constant traffic;
//! - taking it twice on one thread deadlocks (std's may panic instead);
//! - while a sleeper is counted, every unlock pays a wake-up (a lock of `sleep` and a
//!   `notify_one`), even if one is already on its way; and each sleeper looks again every
//!   [`PARK_TIMEOUT`] while the lock stays busy.
//!
//! The guard is `!Send`, as std's, so a `Send` future cannot hold it across an `.await`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long a sleeping waiter waits for a wake-up before it looks at the lock again (see
/// the module docs for the race it covers).
pub(crate) const PARK_TIMEOUT: Duration = Duration::from_micros(500);

/// Spin rounds before a waiter sleeps: rounds `0..SPIN_ROUNDS / 2` spin `2^round` times,
/// the rest yield the thread.
const SPIN_ROUNDS: u32 = 10;

/// A mutual-exclusion lock with a one-store uncontended unlock (see the module docs).
pub(crate) struct LeanMutex<T> {
    locked: AtomicBool,
    /// Threads counted here may be asleep on `wake`.
    waiters: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time (the guard exists
// only while `locked` is held by its thread), so sharing the lock between threads needs
// only `T: Send`, as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for LeanMutex<T> {}

impl<T> LeanMutex<T> {
    /// A new, unlocked mutex holding `value`.
    pub(crate) fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Lock, waiting (spinning briefly, then sleeping) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> LeanGuard<'_, T> {
        if !self.try_acquire() {
            self.lock_contended();
        }
        LeanGuard { lock: self, _access: PhantomData, _not_send: PhantomData }
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[cold]
    fn lock_contended(&self) {
        for round in 0..SPIN_ROUNDS {
            if round < SPIN_ROUNDS / 2 {
                for _ in 0..1u32 << round {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if !self.locked.load(Ordering::Relaxed) && self.try_acquire() {
                return;
            }
        }
        // Relaxed: no ordering here closes the race with `unlock`'s unfenced load (that
        // would take a fence on both sides); the timed wait covers it.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let mut asleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.try_acquire() {
            asleep = self.wake.wait_timeout(asleep, PARK_TIMEOUT).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(asleep);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        // Taking `sleep` orders this wake-up after a waiter's failed attempt: a waiter holds
        // it from its attempt until it is asleep, so it either sees the lock free or gets
        // this notification.
        drop(self.sleep.lock().unwrap_or_else(PoisonError::into_inner));
        self.wake.notify_one();
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for LeanMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanMutex").field("locked", &self.locked.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// Access to a [`LeanMutex`]'s value; unlocks when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct LeanGuard<'a, T> {
    lock: &'a LeanMutex<T>,
    /// Makes the guard `Sync` only for `T: Sync` (a shared guard hands out `&T`).
    _access: PhantomData<&'a mut T>,
    /// Makes the guard `!Send`, as std's: a future holding it across an `.await` is then not
    /// `Send`, so the crate's spawned futures cannot (they must be `Send`), and no thread
    /// blocks on a lock held by a suspended task.
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<T> Deref for LeanGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held (acquired by its creation,
        // released by its drop), so no other reference to the value exists meanwhile.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for LeanGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LeanGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn excludes_other_threads() {
        // A non-atomic read-modify-write under the lock: a lost update would show.
        const THREADS: usize = 4;
        const ROUNDS: usize = if cfg!(miri) { 300 } else { 20_000 };
        let m = Arc::new(LeanMutex::new((0usize, 0usize)));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let mut g = m.lock();
                        let seen = g.0;
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                        g.0 = seen + 1;
                        g.1 += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let g = m.lock();
        assert_eq!(*g, (THREADS * ROUNDS, THREADS * ROUNDS));
    }

    #[test]
    fn a_sleeping_waiter_gets_the_lock_when_it_is_released() {
        let m = Arc::new(LeanMutex::new(0u32));
        let g = m.lock();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                *m.lock() += 1;
            })
        };
        // Long enough for the waiter to pass its spin rounds and sleep, counted.
        let t = Instant::now();
        while m.waiters.load(Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "the waiter never slept");
            std::thread::yield_now();
        }
        drop(g);
        waiter.join().expect("waiter");
        assert_eq!(*m.lock(), 1);
        assert_eq!(m.waiters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn several_sleeping_waiters_all_get_the_lock() {
        const WAITERS: usize = 3;
        let m = Arc::new(LeanMutex::new(0usize));
        let g = m.lock();
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    *m.lock() += 1;
                })
            })
            .collect();
        let t = Instant::now();
        while m.waiters.load(Ordering::SeqCst) < WAITERS {
            assert!(t.elapsed() < Duration::from_secs(10), "the waiters never all slept");
            std::thread::yield_now();
        }
        drop(g);
        for w in waiters {
            w.join().expect("waiter");
        }
        assert_eq!(*m.lock(), WAITERS);
        assert_eq!(m.waiters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panic_under_the_lock_releases_it() {
        let m = Arc::new(LeanMutex::new(5u32));
        let m2 = Arc::clone(&m);
        let r = std::thread::spawn(move || {
            let mut g = m2.lock();
            *g = 6;
            panic!("under the lock");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*m.lock(), 6);
    }
}
