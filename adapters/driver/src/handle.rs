//! The application's handle on one stable conduit session, and `connect` for initiators.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use sotto_proto::conduit::{ConfigError, SendError as CoreSendError};
use sotto_proto::{Conduit, Role, SessionEnd};

use crate::config::Config;
use crate::dialer::{DialFuture, Dialer};
use crate::driver::{Driver, Source};
use crate::raw::Shared;
use crate::runtime::{Io, Runtime, TaskGuard};
use crate::session::{Goodbye, SessionId};
use crate::shared::{Clock, Common, ConduitEvent, Stats};

/// The session is over; carries how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended(pub SessionEnd);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session ended: {}", self.0)
    }
}

impl std::error::Error for Ended {}

/// Why [`StableConduit::send`] refused an item. No sequence number was assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The item is larger than [`StableConduit::max_item_len`].
    TooLarge {
        /// The item's length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// [`StableConduit::close`] was called; nothing more is sent.
    Closing,
    /// The session is over.
    Ended(SessionEnd),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "item of {len} bytes exceeds {max}"),
            Self::Closing => f.write_str("session is closing"),
            Self::Ended(end) => write!(f, "session ended: {end}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`StableConduit::try_send`] refused an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError {
    /// The replay ring is full now; `send` would wait.
    Full,
    /// As for [`send`](StableConduit::send).
    Failed(SendError),
}

impl std::fmt::Display for TrySendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("replay ring full"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TrySendError {}

/// Why [`connect`] gave up.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration cannot work.
    Config(ConfigError),
    /// The acceptor answered REJECTED. Never retried.
    Rejected,
    /// A sotto acceptor answered REJECTED because it is full (`max_sessions` sessions live,
    /// none detached), not because of a key: nothing was lost, and a later try (or another
    /// acceptor) may succeed. Never retried by `connect`. A vox acceptor never says this.
    Full,
    /// No link completed its handshake within `connect_timeout`.
    TimedOut {
        /// The last dial error, if the dials failed (rather than the handshakes).
        last_error: Option<io::Error>,
    },
    /// The connector failed with an error that retrying cannot fix.
    Io(io::Error),
    /// The session ended otherwise before its first link attached.
    Ended(SessionEnd),
}

impl ConnectError {
    /// Why connecting failed, the session having ended with `end` before its first link
    /// attached (an initiator's `common` keeps its last dial error).
    pub(crate) fn from_end(end: SessionEnd, common: &mut Common) -> Self {
        match end {
            SessionEnd::Rejected => Self::Rejected,
            SessionEnd::Full => Self::Full,
            SessionEnd::RecoveryTimeout => match common.last_dial_error.take().map(unshare) {
                Some(e) if common.dial_permanent => Self::Io(e),
                last_error => Self::TimedOut { last_error },
            },
            other => Self::Ended(other),
        }
    }
}

/// The error itself if nobody else holds it (the application did not keep its
/// `DialFailed` event), else one with the same kind whose message and source are its.
pub(crate) fn unshare(e: Arc<io::Error>) -> io::Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| io::Error::new(e.kind(), SharedIoError(e)))
}

/// A shared `io::Error` as an error of its own (see [`unshare`]).
#[derive(Debug)]
struct SharedIoError(Arc<io::Error>);

impl std::fmt::Display for SharedIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedIoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "bad configuration: {e}"),
            Self::Rejected => f.write_str("the acceptor rejected the session"),
            Self::Full => f.write_str("the acceptor is full"),
            Self::TimedOut { last_error: Some(e) } => write!(f, "connect timed out (last error: {e})"),
            Self::TimedOut { last_error: None } => f.write_str("connect timed out"),
            Self::Io(e) => write!(f, "connect failed: {e}"),
            Self::Ended(end) => write!(f, "session ended before it attached: {end}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::TimedOut { last_error: Some(e) } | Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// One stable conduit session: an ordered, exactly-once stream of items in each direction
/// that survives link loss. Items are opaque byte strings (a vox peer's are postcard-encoded
/// messages).
///
/// All methods take `&self`; `send` and `recv` are cancel-safe (a dropped `send` future did
/// not send its item; a dropped `recv` future lost nothing). Dropping the handle closes the
/// session as [`close`](Self::close) does (what was sent goes out, then GOODBYE; against a
/// peer without sotto's extensions, or without a link, it ends at once); its task finishes
/// that on its own, within `drain_timeout`.
pub struct StableConduit {
    shared: Arc<Shared>,
    max_item_len: u32,
    id: SessionId,
    task: Option<TaskGuard>,
}

impl std::fmt::Debug for StableConduit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableConduit")
            .field("id", &self.id)
            .field("peer_addr", &self.peer_addr())
            .field("stats", &self.stats())
            .finish()
    }
}

impl StableConduit {
    pub(crate) fn new(shared: Arc<Shared>, id: SessionId, task: TaskGuard) -> Self {
        let max_item_len = shared.lock_inner().conduit.max_item_len();
        Self { shared, max_item_len, id, task: Some(task) }
    }

    /// This session's id in this process: assigned when the session starts, unique among
    /// the process's sessions (raw and session-layer alike), the same across every resume.
    /// It is the `session` field of the `sotto_session` tracing span the session's task runs
    /// in. Not sent on the wire.
    #[must_use]
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The peer address of the session's current link (its last one while it has none),
    /// when the stream told it (see
    /// [`SessionHandle::peer_addr`](crate::SessionHandle::peer_addr)). `None` before the
    /// first link attached.
    #[must_use]
    pub fn peer_addr(&self) -> Option<crate::PeerAddr> {
        self.shared.lock_inner().common.peer_addr.clone()
    }

    /// Resolves once the session is over, with how it ended (at once if it already has).
    /// Cancel-safe; any number of tasks may wait. Unlike [`close`](Self::close) it does not
    /// wait for the session's task to write its last frames.
    pub async fn closed(&self) -> SessionEnd {
        poll_fn(|cx| {
            let mut g = self.shared.lock_inner();
            if let Some(end) = g.end() {
                return Poll::Ready(end);
            }
            g.common.watchers.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Initiator: the error of the last failed dial, if any; after the session ended with
    /// [`SessionEnd::PermanentDialError`], the error the connector marked permanent.
    #[must_use]
    pub fn last_dial_error(&self) -> Option<Arc<io::Error>> {
        self.shared.lock_inner().common.last_dial_error.clone()
    }

    /// Initiator: get a fresh link now (see
    /// [`SessionHandle::reconnect_now`](crate::SessionHandle::reconnect_now)): a backoff
    /// wait is cut short; a live link is cycled (a `LinkDown` with
    /// [`LinkDownCause::Reconnect`](crate::LinkDownCause::Reconnect)) and the session
    /// resumes over a new one. No effect on an acceptor's session or an ended one.
    pub fn reconnect_now(&self) {
        let mut g = self.shared.lock_inner();
        g.common.reconnect = true;
        g.common.wake_driver();
    }

    /// The peer's GOODBYE (code and reason), once it has sent one. A vox peer never does
    /// (its sessions end without GOODBYE).
    #[must_use]
    pub fn peer_goodbye(&self) -> Option<Goodbye> {
        let g = self.shared.lock_inner();
        let (code, reason) = g.conduit.peer_goodbye()?;
        Some(Goodbye::new(code, reason))
    }

    /// The largest item `send` accepts.
    #[must_use]
    pub fn max_item_len(&self) -> usize {
        self.max_item_len as usize
    }

    /// Queue `item` for exactly-once, in-order delivery. Waits (without buffering anything
    /// outside the replay ring) while the ring is full; completes once the item is in the
    /// ring, which is before it is written to any link. Items sent while no link is up go out
    /// when one is.
    pub async fn send(&self, item: Bytes) -> Result<(), SendError> {
        poll_fn(|cx| self.poll_send(cx, &item)).await
    }

    /// [`send`](Self::send) as a poll function.
    pub fn poll_send(&self, cx: &mut Context<'_>, item: &[u8]) -> Poll<Result<(), SendError>> {
        match self.try_send(item) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Failed(e)) => Poll::Ready(Err(e)),
            Err(TrySendError::Full) => {
                let mut g = self.shared.lock_inner();
                // Re-check under the lock the driver wakes us under.
                if g.conduit.can_send(item.len()) || g.end().is_some() {
                    drop(g);
                    cx.waker().wake_by_ref();
                } else {
                    g.senders.register(cx);
                }
                Poll::Pending
            }
        }
    }

    /// Queue `item` if the replay ring has room now.
    pub fn try_send(&self, item: &[u8]) -> Result<(), TrySendError> {
        let mut g = self.shared.lock_inner();
        if let Some(end) = g.end() {
            return Err(TrySendError::Failed(SendError::Ended(end)));
        }
        let result = match g.conduit.send(item) {
            Ok(_) => Ok(()),
            Err(CoreSendError::WouldBlock) => Err(TrySendError::Full),
            Err(CoreSendError::TooLarge { len, max }) => Err(TrySendError::Failed(SendError::TooLarge { len, max })),
            // Ended (closing or over), or a refusal added later: nothing more is sent.
            Err(_) => Err(TrySendError::Failed(SendError::Closing)),
        };
        // A send may have queued frames (or, when the ring is full, a link cycle).
        g.common.wake_driver();
        result
    }

    /// The next item from the peer. Cancel-safe. After the session ended, the items already
    /// delivered are still returned, then `Err(Ended)`.
    pub async fn recv(&self) -> Result<Bytes, Ended> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll function.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Ended>> {
        let mut g = self.shared.lock_inner();
        if let Some(item) = g.inbound.pop_front() {
            g.inbound_bytes -= item.len();
            let (items, bytes) = g.resume_reading_at;
            if g.reader_blocked && g.inbound.len() <= items && g.inbound_bytes <= bytes {
                g.reader_blocked = false;
                g.common.wake_driver();
            }
            return Poll::Ready(Ok(item));
        }
        if let Some(end) = g.end() {
            return Poll::Ready(Err(Ended(end)));
        }
        g.receivers.register(cx);
        Poll::Pending
    }

    /// The next event (link up, link down, ended), or `None` once the session is over and
    /// every event was read. Events nobody reads are kept up to a bound, oldest dropped first.
    pub async fn next_event(&self) -> Option<ConduitEvent> {
        poll_fn(|cx| {
            let mut g = self.shared.lock_inner();
            if let Some(e) = g.common.events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if g.common.driver_done {
                return Poll::Ready(None);
            }
            g.common.watchers.register(cx);
            Poll::Pending
        })
        .await
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let g = self.shared.lock_inner();
        let c = g.common.counters;
        let mut s = Stats {
            link_ups: c.link_ups,
            link_downs: c.link_downs,
            dials: c.dials,
            dial_failures: c.dial_failures,
            events_dropped: c.events_dropped,
            ..Stats::default()
        };
        s.conduit = g.conduit.stats();
        s.buffer_bytes = c.io_buffer_bytes + g.conduit.buffer_bytes() as u64;
        s.inbound_items = g.inbound.len();
        s.inbound_bytes = g.inbound_bytes;
        s.link_established = g.conduit.is_established();
        s
    }

    /// Take the timings of the resumes so far; see
    /// [`SessionHandle::take_resume_timings`](crate::SessionHandle::take_resume_timings).
    #[must_use]
    pub fn take_resume_timings(&self) -> Vec<crate::shared::ResumeTiming> {
        self.shared.lock_inner().common.take_timings(self.shared.clock())
    }

    /// How the session ended, if it has.
    #[must_use]
    pub fn ended(&self) -> Option<SessionEnd> {
        self.shared.lock_inner().end()
    }

    /// Items sent that the peer has not acknowledged yet (they wait in the replay ring).
    /// After a [`close`](Self::close) that ended the session without GOODBYE (no link at
    /// the time, or a peer without sotto's extensions), these items may never have reached
    /// the peer: this is how many the close may have lost. After a GOODBYE they were all
    /// written before it.
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.shared.lock_inner().conduit.unacked()
    }

    /// End the session gracefully: items already sent go out first, then GOODBYE with
    /// `code` and `reason`; the peer does not reconnect, and neither do we. Resolves once the
    /// session's task is done, with how the session ended (which is not `LocalClose` if it
    /// had already ended otherwise). Without a link (or against a peer without sotto's
    /// extensions) the session ends at once and no GOODBYE is sent: what the peer had not
    /// acknowledged may be lost, and [`unacked`](Self::unacked) says how many items that is.
    pub async fn close(&self, code: u32, reason: &str) -> SessionEnd {
        {
            let mut g = self.shared.lock_inner();
            let now = self.shared.now();
            g.conduit.close(now, code, reason);
            g.common.wake_driver();
        }
        poll_fn(|cx| {
            let mut g = self.shared.lock_inner();
            if g.common.driver_done {
                return Poll::Ready(g.end().unwrap_or(SessionEnd::LocalClose { code }));
            }
            g.common.watchers.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Wait until the first link has attached, or the session ended before that.
    fn wait_attached(&self) -> impl Future<Output = Result<(), ConnectError>> + '_ {
        poll_fn(move |cx| {
            let mut g = self.shared.lock_inner();
            if g.conduit.has_attached() {
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = g.end() {
                return Poll::Ready(Err(ConnectError::from_end(end, &mut g.common)));
            }
            g.common.watchers.register(cx);
            Poll::Pending
        })
    }
}

impl Drop for StableConduit {
    fn drop(&mut self) {
        {
            let mut g = self.shared.lock_inner();
            g.common.handle_dropped = true;
            g.common.wake_driver();
        }
        // The task finishes the graceful close on its own, bounded by `drain_timeout`.
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

/// Start an initiator session: dial with `connector` (called once per link; it returns a
/// fresh stream), handshake, and return once the first link is attached. Transient dial
/// errors and failed handshakes are retried with backoff until `config.dial.connect_timeout`; a
/// REJECTED answer is never retried.
///
/// After that, a lost link is redialed at once and then with exponential backoff (50 ms to
/// 5 s by default, full jitter) until `config.protocol.recovery_timeout`, after which the
/// session ends as lost ([`ConduitEvent::Ended`] with [`SessionEnd::RecoveryTimeout`]).
pub async fn connect<R, S, F, Fut>(rt: R, mut connector: F, config: Config) -> Result<StableConduit, ConnectError>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let conduit = Conduit::new(Role::Initiator, config.conduit_config()).map_err(ConnectError::Config)?;
    let shared = Arc::new(Shared::new(conduit, &config, Clock::new(&rt), None));
    let dial = Box::new(move || -> DialFuture<S> { Box::pin(connector()) });
    let dialer = Dialer::new(dial, &config, rt.now(), rt.jitter_seed());
    let driver = Driver::<R, S, Shared>::new(&rt, Arc::clone(&shared), Source::Dialer(dialer), config);
    let id = SessionId::next();
    let span = crate::trace::session_span(id, Role::Initiator, crate::trace::Api::Conduit, None);
    let task = crate::trace::spawn_in(&rt, driver, span);
    let handle = StableConduit::new(shared, id, task);
    handle.wait_attached().await?;
    Ok(handle)
}
