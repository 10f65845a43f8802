//! The runtime-neutral half of sotto's async adapters, shared by `sotto-tokio` and
//! `sotto-smol` so that each of those is only glue (how to spawn a task, how to arm a timer,
//! which stream types to accept).
//!
//! What lives here:
//!
//! - the per-session **driver** task: one future per session looping "drain the core's
//!   outputs, check the clock against `poll_timeout`, wait for one input (link readable or
//!   writable, application command, new link, timer), feed it"; reads go into one reusable
//!   `BytesMut` (polled only when the stream has woken since its last `Pending`: a spurious
//!   wake-up of the task costs no read system call), writes are batched through
//!   [`sotto_proto::stream::LendingBatch`] (one write call for many frames; large items written
//!   straight from the replay ring, vectored). The
//!   loop is generic over the state it drives, so the same code runs raw stable conduits and
//!   session-layer sessions;
//! - the **session API**: [`connect_session`], [`serve_sessions`] ([`SessionAcceptor`]),
//!   [`SessionHandle`] (open, accept, events, stats, graceful close) and [`Connection`]
//!   (`Stream<Item = Bytes>` + `Sink<Bytes>`, and `futures::io::AsyncRead` + `AsyncWrite` as a
//!   byte stream; per-connection credit backpressure);
//! - the **raw stable-conduit API** for vox peers: [`connect`], [`serve`] ([`Acceptor`]),
//!   [`StableConduit`] (items in and out, events, stats, graceful close);
//! - the initiator's **redial** policy ([`Backoff`]: exponential with full jitter, randomness
//!   injected).
//!
//! A runtime plugs in through [`Runtime`] (spawn a task that is cancelled when its guard is
//! dropped, or detached; make a resettable [`Timer`]; tell the time). Streams are `futures::io::AsyncRead +
//! AsyncWrite`; the tokio adapter wraps tokio streams.
//!
//! # Where a session's state lives, and why
//!
//! Every session has **one driver task** and its state behind **one lock**, shared by the
//! driver and the application's handles: the handles call the core directly (`send` copies
//! a payload once, into the replay ring; nothing is queued in between), and the driver takes
//! the lock once per batch of input (a whole read's worth of messages is fed under one lock).
//!
//! What a message costs the application: [`ConnSender::send`] takes the lock once per
//! message; [`ConnSender::send_many`] and the connection's `Sink` (which stages up to 256
//! messages and queues them on flush) take it once per burst, which at 16 B messages is the
//! difference between about 0.7x and 1.0-1.1x of raw buffered TCP (`docs/benchmarks.md`).
//! On the receiving side a whole read's messages reach the connection's queue under one
//! lock, a peer's batch of small messages as one entry, cut into messages as the reader
//! takes them; the reader takes the whole queue under one lock.
//!
//! - An initiator owns its [`sotto_proto::session::Session`]: one mutex per session.
//! - An acceptor runs the core [`sotto_proto::endpoint::Endpoint`], which owns all of the
//!   listener's sessions (allocated up front), routes every new link by its resume key and
//!   enforces the acceptor's limits (pending handshakes and their deadline, per-source
//!   failure budget, detached sessions). The endpoint lives behind **one mutex shared by the
//!   acceptor task and every session's driver task**; each driver locks it to drive its own
//!   session (reached by its generational handle), and a routed link is handed to the session's
//!   driver through a mailbox in that same lock, so routing (which supersedes the old link in
//!   the core) and the driver's switch to the new stream are atomic.
//!
//!   The alternative, one endpoint task that owns every session with per-link I/O tasks
//!   feeding it through channels, would add a task hop and a copy per message on every
//!   session, and a second queue to bound; the shared lock costs nothing with one session
//!   and only serializes the short, bounded core calls of an acceptor's many sessions, which
//!   is what the endpoint's single key index requires anyway. An acceptor that must use many
//!   cores for many busy sessions can run several listeners.
//!
//! The raw stable-conduit acceptor keeps a small resume-key router of its own (`router`):
//! the core endpoint hosts session-layer sessions, not bare conduits.
//!
//! The session's lock is `lean_mutex::LeanMutex`, not `std::sync::Mutex`: every `send` takes
//! it once, and its uncontended unlock is one release store instead of an atomic swap
//! (without that swap, sotto's 16-byte `send` rate rose 10-20 %; see docs/benchmarks.md). It is the only `unsafe` code in the workspace (an `UnsafeCell` behind
//! the lock); CI runs its tests under Miri. Everything else here is `deny(unsafe_code)`.
//!
//! Applications use `sotto-tokio` or `sotto-smol`, which re-export the types of this crate.
#![deny(unsafe_code)]

mod acceptor;
mod backoff;
mod config;
mod dialer;
mod driver;
mod handle;
mod host;
mod keys;
mod lean_mutex;
mod listen;
mod pending;
mod raw;
mod read_buffer;
mod read_gate;
mod router;
mod session;
mod shared;
mod tasks;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;

pub use acceptor::{serve, Acceptor, AcceptorStats};
pub use backoff::{is_transient, Backoff};
pub use config::{AcceptorConfig, BufferConfig, Config, DialConfig, ProtocolConfig};
pub use handle::{connect, ConnectError, Ended, SendError, StableConduit, TrySendError};
pub use session::{
    connect_session, serve_sessions, source_of, AnswerError, ConnError, ConnReceiver, ConnSender, Connection,
    IncomingOpen, OpenError, SessionAcceptor, SessionAcceptorStats, SessionEvent, SessionHandle, SessionStats,
    WRITE_CHUNK,
};
pub use shared::{ConduitEvent, LinkDownCause, ResumeTiming, Stats};
pub use tasks::live_tasks;

/// A boxed, sendable future: what [`Runtime::spawn`] runs.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A spawned task's handle: dropping it cancels the task (drops its future);
/// [`detach`](TaskHandle::detach) lets the task run to completion on its own.
pub trait TaskHandle: Send + Sync + 'static {
    /// Let the task run on without this handle.
    fn detach(self: Box<Self>);
}

/// Keeps a spawned task alive; dropping it cancels the task.
pub type TaskGuard = Box<dyn TaskHandle>;

/// What the driver needs from an async runtime.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's resettable timer.
    type Timer: Timer;

    /// Run `task` in the background. Dropping the returned guard must cancel the task (drop
    /// its future), so that dropping a handle ends every task it started.
    fn spawn(&self, task: BoxTask) -> TaskGuard;

    /// A timer that has not been armed yet (it never fires until [`Timer::reset`]).
    fn timer(&self) -> Self::Timer;

    /// The runtime's current time: every clock read of the driver (the core's "now", the
    /// deadlines its timers are armed for) goes through it. The default is the system's
    /// monotonic clock; a simulated runtime returns its virtual time (its timers fire by
    /// the same time).
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    /// A seed for an initiator's redial jitter, called once per session. The default draws
    /// it from the operating system; a simulated runtime returns a seeded value so that a
    /// run repeats exactly.
    fn jitter_seed(&self) -> u64 {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        u64::from_le_bytes(seed)
    }

    /// Arrange for the task polled with `cx` (which then returns `Pending`) to be polled
    /// again after the other tasks that are ready now had their turn. The default wakes it
    /// at once, which a runtime with a fair queue of ready tasks runs after them; tokio's
    /// current-thread scheduler polls its `block_on` future only between rounds, so its
    /// adapter defers the wake-up as `tokio::task::yield_now` does.
    fn yield_wake(cx: &mut Context<'_>) {
        cx.waker().wake_by_ref();
    }
}

/// A one-shot timer that can be re-armed; the driver keeps one and moves its deadline.
pub trait Timer: Send + Unpin + 'static {
    /// Arm (or re-arm) the timer to fire at `at`.
    fn reset(&mut self, at: std::time::Instant);

    /// Ready once the armed deadline has passed; registers `cx` otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A byte stream the driver can carry a link over: `futures::io::AsyncRead + AsyncWrite`
/// (TCP, Unix sockets, pipes, test wrappers), optionally able to read into uninitialized
/// buffer capacity. Wrap plain `futures::io` streams in [`FuturesIo`]; the tokio adapter's
/// `TokioIo` reads into uninitialized capacity.
pub trait Io: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static {
    /// Whether [`poll_read_uninit`](Self::poll_read_uninit) reads into uninitialized
    /// capacity; if not, the driver reads with `poll_read` into zero-filled room instead.
    const READS_UNINIT: bool = false;

    /// Read into `buf`'s spare capacity, appending what was read; `Ok(0)` at end of stream.
    /// The default zero-fills room and calls `poll_read`. Reporting more than the spare
    /// capacity it was given drops the link (`InvalidData`).
    fn poll_read_uninit(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<std::io::Result<usize>> {
        let start = buf.len();
        if buf.capacity() == start {
            buf.reserve(1024);
        }
        // Exactly the spare capacity: the driver holds a read to what it offered.
        let room = buf.capacity() - start;
        buf.resize(start + room, 0);
        let r = Pin::new(&mut *self).poll_read(cx, &mut buf[start..]);
        let n = match &r {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        buf.truncate(start + n);
        r
    }
}

/// A `futures::io` stream as an [`Io`] (reads go into zero-filled room).
#[derive(Debug)]
pub struct FuturesIo<T>(pub T);

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for FuturesIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for FuturesIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }
}

impl<T: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static> Io for FuturesIo<T> {}
