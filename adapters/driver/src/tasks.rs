//! A count of the tasks this crate has started and not yet finished or cancelled, for
//! diagnostics and for tests that check dropping a handle ends everything it started.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;

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

/// `task`, boxed for [`Runtime::spawn`](crate::Runtime::spawn), with a panic caught at the
/// task's boundary (SCENARIOS A9). A panic can only come from the application's code the
/// task calls (its stream's `AsyncRead`/`AsyncWrite`, a stream source; the connector is
/// isolated per call in the dialer): the task's state is dropped during the unwind, which
/// ends its session for every handle (`SessionEnd::Evicted`, as for a cancelled task), and
/// the runtime's worker thread and every other session go on.
pub(crate) fn isolated<F: Future<Output = ()> + Send + 'static>(task: F) -> crate::BoxTask {
    Box::pin(async move {
        if AssertUnwindSafe(task).catch_unwind().await.is_err() {
            tracing::error!("sotto: a driver task panicked in application code; its session ended");
        }
    })
}
