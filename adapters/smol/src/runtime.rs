//! smol as a [`Runtime`]: `smol::spawn` or the application's executor (a dropped `Task` is
//! cancelled) and an `async_io::Timer` re-armed with `set_at`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sotto_driver::{BoxTask, Runtime, TaskGuard, TaskHandle, Timer};

/// Where sotto runs its tasks (session drivers, acceptors): smol's global executor
/// ([`Smol::global`], which the crate's free functions use) or an executor of the
/// application's ([`Smol::on`]). Timers and sockets use async-io's reactor either way.
#[derive(Clone, Debug, Default)]
pub struct Smol {
    executor: Option<Arc<smol::Executor<'static>>>,
}

impl Smol {
    /// smol's global executor (`smol::spawn`), whose threads run by themselves.
    #[must_use]
    pub fn global() -> Self {
        Self::default()
    }

    /// `executor`: sotto's tasks are spawned on it, so they run only while the application
    /// runs it (`executor.run(..)`, typically under `smol::block_on`). With one thread
    /// running it, the application's tasks and sotto's share that thread, as on tokio's
    /// current-thread runtime.
    #[must_use]
    pub fn on(executor: Arc<smol::Executor<'static>>) -> Self {
        Self { executor: Some(executor) }
    }
}

impl Runtime for Smol {
    type Timer = SmolTimer;

    fn spawn(&self, task: BoxTask) -> TaskGuard {
        let task = match &self.executor {
            Some(executor) => executor.spawn(task),
            None => smol::spawn(task),
        };
        Box::new(SmolTask(Some(task)))
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
