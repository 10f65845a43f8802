//! Whether the link's read side is worth polling: after a read returned `Pending`, only once
//! the stream has woken its waker since.
//!
//! The driver task wakes for many reasons (the application queued data, a reader released
//! credit, a timer). Without the gate every wake-up polls the stream's read, and a
//! `futures::io` stream such as smol's `Async` answers each poll with a `read` system call
//! that fails with `EAGAIN` and a re-registration with the reactor. The gate hands the
//! stream its own waker, which records that it fired and then wakes the driver task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures::task::AtomicWaker;
use sotto_proto::LinkId;

/// The stream's read waker: records the wake-up, then wakes the driver task.
#[derive(Debug, Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The read gate of one driver.
#[derive(Debug)]
pub(crate) struct ReadGate {
    signal: Arc<Signal>,
    /// The waker handed to the stream (wakes `signal`).
    waker: Waker,
    /// The link whose last read returned `Pending` (and has not woken since).
    armed: Option<LinkId>,
}

impl Default for ReadGate {
    fn default() -> Self {
        let signal = Arc::new(Signal::default());
        Self { waker: Waker::from(Arc::clone(&signal)), signal, armed: None }
    }
}

impl ReadGate {
    /// Whether to poll `link`'s read now (with [`waker`](Self::waker)); registers the driver
    /// task (`cx`) for the stream's next wake-up either way.
    pub(crate) fn open(&mut self, link: LinkId, cx: &Context<'_>) -> bool {
        self.signal.task.register(cx.waker());
        let fired = self.signal.fired.swap(false, Ordering::AcqRel);
        if self.armed != Some(link) || fired {
            self.armed = None;
            return true;
        }
        false
    }

    /// The waker to poll the stream's read with.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// `link`'s read returned `Pending`: closed until the stream wakes.
    pub(crate) fn pending(&mut self, link: LinkId) {
        self.armed = Some(link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn closed_after_pending_until_the_stream_wakes() {
        let task = Arc::new(Count::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let cx = Context::from_waker(&task_waker);
        let (a, b) = (LinkId(1), LinkId(2));
        let mut gate = ReadGate::default();
        assert!(gate.open(a, &cx), "open before any read");
        gate.pending(a);
        assert!(!gate.open(a, &cx), "a spurious wake-up of the task does not poll the read");
        assert!(gate.open(b, &cx), "a new link is polled at once");
        gate.pending(a);
        gate.waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the stream's wake-up reaches the task");
        assert!(gate.open(a, &cx), "open once the stream woke");
        assert!(gate.open(a, &cx), "and stays open until the next Pending");
    }
}
