//! A count of the tasks this crate has started and not yet finished or cancelled, for
//! diagnostics and for tests that check dropping a handle ends everything it started.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

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

/// `task`, boxed for [`Runtime::spawn`](crate::Runtime::spawn), with panics caught at the
/// task's boundary (SCENARIOS A9): in its polls, and in dropping it (when it finishes, panics
/// or is cancelled). A panic can only come from the application's code the task calls (its
/// stream's `AsyncRead`/`AsyncWrite` or `Drop`; the connector and a pending link's stream
/// are isolated per call): the task's state is dropped, which ends its session for every
/// handle (`SessionEnd::Evicted`, as for a cancelled task), and the runtime's worker thread
/// and every other session go on.
pub(crate) fn isolated<F: Future<Output = ()> + Send + 'static>(task: F) -> crate::runtime::BoxTask {
    Box::pin(Isolated(Some(Box::pin(task))))
}

/// See [`isolated`].
struct Isolated<F>(Option<Pin<Box<F>>>);

impl<F> Isolated<F> {
    /// Drop the task, catching a panic in its `Drop`.
    fn drop_task(&mut self) {
        let task = self.0.take();
        if catch_unwind(AssertUnwindSafe(move || drop(task))).is_err() {
            tracing::error!("sotto: a driver task panicked in application code while dropped");
        }
    }
}

impl<F: Future<Output = ()>> Future for Isolated<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(task) = this.0.as_mut() else { return Poll::Ready(()) };
        match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.drop_task();
                Poll::Ready(())
            }
            Err(_) => {
                tracing::error!("sotto: a driver task panicked in application code; its session ended");
                this.drop_task();
                Poll::Ready(())
            }
        }
    }
}

impl<F> Drop for Isolated<F> {
    fn drop(&mut self) {
        self.drop_task();
    }
}
