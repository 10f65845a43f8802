//! The runtime glue, the driver's lowest layer: what it needs from an async runtime
//! ([`Runtime`]: spawn a task cancelled when its guard is dropped, make a resettable
//! [`Timer`], tell the time) and from a byte stream ([`Io`]). An adapter implements these
//! for its runtime and its stream wrappers; nothing here knows of links or sessions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::BytesMut;

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
    /// wrap TCP and Unix streams in [`WithPeer`](crate::WithPeer).
    fn peer_addr(&self) -> Option<PeerAddr> {
        None
    }

    /// Who the peer at the other end is, if a link hook established it (a client
    /// certificate's fingerprint; see [`AcceptHooks`](crate::AcceptHooks)). The driver reads
    /// it once per link, when the link is attached, and a resume binding reads it before.
    /// The default knows none; [`WithPeer::with_identity`](crate::WithPeer::with_identity)
    /// sets one.
    fn peer_identity(&self) -> Option<crate::PeerIdentity> {
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

/// The peer address of a link, when the stream type can tell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix socket peer: its path, `None` for an unnamed socket (as a connecting client's
    /// usually is).
    Unix(Option<PathBuf>),
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Self::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}
