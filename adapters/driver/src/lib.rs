//! The runtime-neutral half of sotto's async adapters, shared by `sotto-tokio` and
//! `sotto-smol` so that each of those is only glue (how to spawn a task, how to arm a timer,
//! which stream types to accept).
//!
//! What lives here:
//!
//! - the per-session **driver** task: one future per session looping "drain the core's
//!   outputs, check the clock against `poll_timeout`, wait for one input (link readable or
//!   writable, application command, new link, timer), feed it"; reads go into one reusable
//!   `BytesMut` and delivered items are handed out as `Bytes` slices of it, writes are
//!   batched through [`sotto::stream::WriteBatch`];
//! - the **handles** the application holds: [`StableConduit`] (items in and out, events,
//!   stats, graceful close) and [`Acceptor`] (new sessions from a listener);
//! - the initiator's **redial** policy ([`Backoff`]: exponential with full jitter, randomness
//!   injected) and the acceptor's **link routing** by resume key (one small module that the
//!   core endpoint will replace).
//!
//! A runtime plugs in through [`Runtime`] (spawn a task that is cancelled when its guard is
//! dropped; make a resettable [`Timer`]). Streams are `futures::io::AsyncRead +
//! AsyncWrite`; the tokio adapter wraps tokio streams.
//!
//! Applications use `sotto-tokio` or `sotto-smol`, which re-export the types of this crate.
#![forbid(unsafe_code)]

mod acceptor;
mod backoff;
mod config;
mod dialer;
mod driver;
mod handle;
mod keys;
mod read_buffer;
mod router;
mod shared;
mod tasks;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use acceptor::{serve, Acceptor, AcceptorStats};
pub use backoff::{is_transient, Backoff};
pub use config::Config;
pub use handle::{connect, ConnectError, Ended, SendError, StableConduit, TrySendError};
pub use shared::{ConduitEvent, LinkDownCause, Stats};
pub use tasks::live_tasks;

/// A boxed, sendable future: what [`Runtime::spawn`] runs.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Keeps a spawned task alive; dropping it cancels the task.
pub type TaskGuard = Box<dyn Send + Sync + 'static>;

/// What the driver needs from an async runtime.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's resettable timer.
    type Timer: Timer;

    /// Run `task` in the background. Dropping the returned guard must cancel the task (drop
    /// its future), so that dropping a handle ends every task it started.
    fn spawn(&self, task: BoxTask) -> TaskGuard;

    /// A timer that has not been armed yet (it never fires until [`Timer::reset`]).
    fn timer(&self) -> Self::Timer;
}

/// A one-shot timer that can be re-armed; the driver keeps one and moves its deadline.
pub trait Timer: Send + Unpin + 'static {
    /// Arm (or re-arm) the timer to fire at `at`.
    fn reset(&mut self, at: std::time::Instant);

    /// Ready once the armed deadline has passed; registers `cx` otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A byte stream the driver can carry a link over: anything `futures::io::AsyncRead +
/// AsyncWrite` (TCP, Unix sockets, pipes, test wrappers).
pub trait Io: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static> Io for T {}
