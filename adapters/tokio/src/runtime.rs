//! tokio as a [`Runtime`]: `tokio::spawn` with abort-on-drop, and a resettable `Sleep`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use sotto_driver::{BoxTask, Runtime, TaskGuard, TaskHandle, Timer};

/// The tokio runtime the current task runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// Aborts the task when dropped (unless detached).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

impl TaskHandle for AbortOnDrop {
    fn detach(mut self: Box<Self>) {
        // Dropping a JoinHandle detaches the task.
        drop(self.0.take());
    }
}

impl Runtime for Tokio {
    type Timer = TokioTimer;

    fn spawn(&self, task: BoxTask) -> TaskGuard {
        Box::new(AbortOnDrop(Some(tokio::spawn(task))))
    }

    fn timer(&self) -> TokioTimer {
        TokioTimer { sleep: None }
    }

    fn yield_wake(cx: &mut Context<'_>) {
        // `yield_now` defers the wake-up until the scheduler has polled its I/O driver and
        // the other ready tasks (waking at once outside a runtime).
        let yielded = std::pin::pin!(tokio::task::yield_now());
        let _ = yielded.poll(cx);
    }
}

/// A `tokio::time::Sleep`, allocated on first use and reset in place afterwards.
#[derive(Debug)]
pub struct TokioTimer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer for TokioTimer {
    fn reset(&mut self, at: std::time::Instant) {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().reset(at.into()),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at.into()))),
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
