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
//! - Every session, initiator or acceptor, owns its [`sotto_proto::session::Session`]: one
//!   mutex per session, taken by its own driver task and its own handles, never by another
//!   session.
//! - An acceptor runs the core [`sotto_proto::endpoint::Endpoint`], which only routes: it
//!   keeps the resume-key index, the pending handshakes and their deadline, the per-source
//!   failure budget and the bookkeeping of unready and detached sessions, behind a small
//!   lock of its own. The listener takes it to route a link; a session's driver takes it
//!   only when the session's lifecycle changes (ready, detached or attached, a resume's
//!   outcome, ended), never on the data path and never across a system call. A resume is
//!   handed to its session's driver through a mailbox in the session's own state, and the
//!   session checks the key before the new link may supersede the live one. So sessions of
//!   one acceptor progress in parallel on a multi-thread runtime.
//!
//! The raw stable-conduit acceptor routes through the same endpoint (`router`, `routing`):
//! one router for both, and its sessions check a resume the same way before it may
//! supersede their link. Links are accounted per source (the hash of a TCP peer's IP
//! address, from the stream's [`Io::peer_addr`] or the listener); links whose source is
//! unknown share the one source 0.
//!
//! The locks are `std::sync::Mutex`: a waiter is woken by the unlock that frees the lock,
//! never by a timed re-check. The crate has no `unsafe` code.
//!
//! Applications use `sotto-tokio` or `sotto-smol`, which re-export the types of this crate.
#![forbid(unsafe_code)]

mod acceptor;
mod backoff;
mod config;
mod dialer;
mod driver;
mod entry;
mod handle;
mod host;
mod keys;
mod listen;
mod peer;
mod pending;
mod raw;
mod read_buffer;
mod read_gate;
mod router;
mod routing;
mod session;
mod shared;
mod shutdown;
mod tasks;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;

pub use acceptor::{serve, Acceptor, AcceptorStats};
pub use backoff::{is_transient, permanent, Backoff, Permanent};
pub use config::{AcceptorConfig, BufferConfig, Config, DialConfig, ProtocolConfig};
pub use entry::{dial, dial_session, listen, listen_sessions, ListenerGlue, StreamGlue, Streams};
pub use handle::{connect, ConnectError, Ended, SendError, StableConduit, TrySendError};
pub use peer::{PeerAddr, WithPeer};
pub use routing::source_of;
pub use session::{
    connect_session, connect_session_with, serve_sessions, AnswerError, ConnError, ConnReceiver, ConnSender,
    Connection, Goodbye, IncomingOpen, OpenError, SessionAcceptor, SessionAcceptorStats, SessionEvent, SessionHandle,
    SessionId, SessionStats, WRITE_CHUNK,
};
pub use shared::{ConduitEvent, DialFailure, LinkDownCause, ResumeTiming, Stats};
pub use shutdown::ShutdownReport;
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

    /// The address of the peer at the other end, if this stream knows it. The driver reads
    /// it once per link, when the link is attached. The default knows none; the adapters
    /// wrap TCP and Unix streams in [`WithPeer`].
    fn peer_addr(&self) -> Option<PeerAddr> {
        None
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
