//! smol as a [`Runtime`]: `smol::spawn` (a dropped `Task` is cancelled) and an
//! `async_io::Timer` re-armed with `set_at`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use sotto_driver::{BoxTask, Runtime, TaskGuard, TaskHandle, Timer};

/// smol's global executor and async-io's reactor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Timer = SmolTimer;

    fn spawn(&self, task: BoxTask) -> TaskGuard {
        Box::new(SmolTask(Some(smol::spawn(task))))
    }

    fn timer(&self) -> SmolTimer {
        SmolTimer(async_io::Timer::never())
    }
}

/// A smol task, cancelled when dropped (unless detached).
struct SmolTask(Option<smol::Task<()>>);

impl TaskHandle for SmolTask {
    fn detach(mut self: Box<Self>) {
        if let Some(t) = self.0.take() {
            t.detach();
        }
    }
}

/// An `async_io::Timer`.
#[derive(Debug)]
pub struct SmolTimer(async_io::Timer);

impl Timer for SmolTimer {
    fn reset(&mut self, at: std::time::Instant) {
        self.0.set_at(at);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
