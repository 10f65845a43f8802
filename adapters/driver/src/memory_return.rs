//! Giving freed buffer memory back to the system.
//!
//! A session's read buffer, write buffer and replay ring grow with traffic (to hundreds of
//! KiB under a burst) and are freed once the session has been idle for a second
//! ([`BufferConfig`](crate::BufferConfig)). With glibc's malloc, freeing is not enough for the
//! process's resident memory to fall: glibc's mmap threshold rises to the largest block freed
//! (so after the first busy session the large buffers come from the heap, not from their own
//! mappings), and the heap gives back only its top, which the bookkeeping of live sessions
//! keeps pinned. An acceptor whose sessions each carried a few MiB then went idle stays at the
//! burst's peak: about 330 KiB per session where the live allocations are under 9 KiB
//! (docs/benchmarks.md, "Idle memory").
//!
//! So drivers [`note`] the bytes they free, and once at least [`THRESHOLD`] were freed
//! since the last time, one background thread (spawned on first use, parked otherwise)
//! calls glibc's `malloc_trim(0)`, which returns every free page of every arena with
//! `madvise`; then it waits [`INTERVAL`] before it may do so again. The trim walks the heap
//! under each arena's lock in turn (about 30 ms for a 350 MiB heap on the project machine),
//! which is why it runs on its own thread and at most once per interval: a runtime worker
//! never blocks on it, and threads allocating meanwhile wait at most one arena's walk. The
//! data path allocates nothing in steady state, so it does not meet that lock at all.
//!
//! Elsewhere (musl, other systems, Miri) there is nothing to call and [`note`] does nothing:
//! those allocators return large freed blocks themselves or have no such call. Turned off by
//! `BufferConfig::return_freed_memory = false`, e.g. in a process whose global allocator is
//! not glibc's (jemalloc, mimalloc), where the trim would only walk an almost empty heap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// Bytes freed since the last trim that wake the trimming thread.
pub(crate) const THRESHOLD: usize = 1 << 20;

/// The least time between two trims.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// The process's one account of freed bytes, and its trimming thread.
static GLOBAL: Returner = Returner::new();

/// A driver freed `bytes` of buffers. Wakes the trimming thread once [`THRESHOLD`] bytes
/// were freed since the last trim. Bounded work: one atomic add, and on crossing the
/// threshold one unpark (the first time, the thread's spawn).
pub(crate) fn note(bytes: usize) {
    if SUPPORTED {
        GLOBAL.note(bytes, trim);
    }
}

/// Freed bytes since the last trim, and the trimming thread.
struct Returner {
    freed: AtomicUsize,
    /// The thread, once spawned (`None` if spawning it failed: then nothing is trimmed).
    thread: OnceLock<Option<Thread>>,
}

impl Returner {
    const fn new() -> Self {
        Self { freed: AtomicUsize::new(0), thread: OnceLock::new() }
    }

    fn note(&'static self, bytes: usize, trim: fn()) {
        let before = self.freed.fetch_add(bytes, Ordering::Relaxed);
        if before < THRESHOLD && before.saturating_add(bytes) >= THRESHOLD {
            if let Some(t) = self.thread.get_or_init(|| self.spawn(trim)) {
                // Parked: it wakes. Trimming or pausing: the token makes its next `park`
                // return at once, so what was freed meanwhile is trimmed after the pause.
                t.unpark();
            }
        }
    }

    fn spawn(&'static self, trim: fn()) -> Option<Thread> {
        let spawned = std::thread::Builder::new().name("sotto-memory-return".into()).spawn(move || loop {
            std::thread::park();
            if self.freed.load(Ordering::Relaxed) < THRESHOLD {
                continue; // a spurious wake-up
            }
            // What is freed from here on counts toward the next trim (what was freed just
            // before the reset is covered by this one).
            self.freed.store(0, Ordering::Relaxed);
            trim();
            std::thread::sleep(INTERVAL);
        });
        spawned.ok().map(|h| h.thread().clone())
    }
}

/// Whether there is an allocator to ask.
const SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu", not(miri)));

#[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
#[allow(unsafe_code)]
fn trim() {
    extern "C" {
        /// glibc, `<malloc.h>`: returns free memory at the top of the heap and, since glibc
        /// 2.8, every whole free page inside every arena; returns 1 if anything was released.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes no pointer and has no precondition: `pad` is a byte count
    // (0: keep no slack). glibc documents it MT-Safe; it takes each arena's own lock, the
    // same lock every malloc and free of that arena takes, so it never races with another
    // thread's allocation, and it only releases pages inside free chunks (`madvise`), never
    // memory a live allocation owns. The symbol exists in every glibc since 2.0, and this
    // item is compiled only for target_env = "gnu".
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static AT: std::sync::Mutex<Vec<Instant>> = std::sync::Mutex::new(Vec::new());

    fn count() {
        AT.lock().expect("not poisoned").push(Instant::now());
        CALLS.fetch_add(1, Ordering::Relaxed);
    }

    fn wait_for(n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while CALLS.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "trim {n} did not come within {within:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn freeing_past_the_threshold_trims_once_then_waits_the_interval() {
        static R: Returner = Returner::new();
        R.note(THRESHOLD / 2, count);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(CALLS.load(Ordering::Relaxed), 0, "half the threshold freed: no thread, no trim");
        assert!(R.thread.get().is_none());
        R.note(THRESHOLD / 2, count);
        wait_for(1, Duration::from_secs(10));
        assert_eq!(CALLS.load(Ordering::Relaxed), 1, "one trim for one crossing");
        // Freed again at once: trimmed, but only after the interval.
        R.note(THRESHOLD, count);
        wait_for(2, INTERVAL + Duration::from_secs(10));
        let at = AT.lock().expect("not poisoned").clone();
        let apart = at[1] - at[0];
        assert!(apart >= INTERVAL, "two trims {apart:?} apart, under the interval");
        // Less than the threshold since: no third trim.
        R.note(THRESHOLD - 1, count);
        std::thread::sleep(INTERVAL + Duration::from_millis(200));
        assert_eq!(CALLS.load(Ordering::Relaxed), 2, "under the threshold: no trim");
    }
}
