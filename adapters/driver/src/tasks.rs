//! A count of the tasks this crate has started and not yet finished or cancelled, for
//! diagnostics and for tests that check dropping a handle ends everything it started.

use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Tasks (session drivers and acceptors) currently alive in this process: started and whose
/// future has not been dropped yet.
#[must_use]
pub fn live_tasks() -> usize {
    LIVE.load(Ordering::SeqCst)
}

/// Counts one live task from construction until drop. Put one in every spawned future.
#[derive(Debug)]
pub(crate) struct LiveTask(());

impl LiveTask {
    pub(crate) fn new() -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Self(())
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
