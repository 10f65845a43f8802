//! The application's handle on one session-layer session ([`SessionHandle`]), the peer's
//! connection requests ([`IncomingOpen`]), and [`connect_session`] for initiators.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::Stream;
use sotto_proto::session::message::BATCH_VERSION;
use sotto_proto::session::{refusal, CommandError, ConnId, Session, SessionFailure};
use sotto_proto::{Role, SessionEnd};

use super::conn::Connection;
use super::home::{Home, SessDriverHost};
use super::state::{self, ConnSlot, Owed, Phase, SessState, DROPPED_OPEN_CODE};
use crate::config::Config;
use crate::dialer::{DialFuture, Dialer};
use crate::driver::{Driver, Source};
use crate::handle::{ConnectError, Ended};
use crate::runtime::{Io, Runtime, TaskGuard};
use crate::shared::{Clock, ConduitEvent, DialFailure, LinkDownCause, ResumeTiming};

/// What happened to a session's links, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The first link completed its handshake.
    LinkUp {
        /// sotto's extensions (standalone acks, keepalive, goodbye) are in force.
        ext: bool,
    },
    /// The link is gone; the session lives on (the initiator redials, the acceptor waits).
    LinkDown {
        /// Why.
        cause: LinkDownCause,
    },
    /// A new link resumed the session; what was in flight is replayed first.
    Resumed {
        /// Frames replayed on it before any new one.
        replaying: u64,
        /// sotto's extensions are in force.
        ext: bool,
    },
    /// Initiator: a dial failed; its error, and when the next one starts (`None`: there is
    /// none, the error being permanent). For a UI's "reconnecting in 2 s: connection refused".
    /// Consecutive failed dials nobody has read yet share one event
    /// ([`DialFailure::failures`] counts them), so an outage never pushes other events out.
    DialFailed(DialFailure),
    /// The session ended gracefully (our close or the peer's GOODBYE). The last event.
    Closed(SessionEnd),
    /// The session is lost (recovery timeout, REJECTED resume, protocol failure, eviction, a
    /// redial error the connector marked permanent). What the peer never acknowledged:
    /// [`SessionHandle::unacknowledged`]. The last event.
    Lost(SessionEnd),
}

impl From<ConduitEvent> for SessionEvent {
    fn from(e: ConduitEvent) -> Self {
        match e {
            ConduitEvent::LinkUp { resumed: false, ext, .. } => Self::LinkUp { ext },
            ConduitEvent::LinkUp { resumed: true, replaying, ext } => Self::Resumed { replaying, ext },
            ConduitEvent::LinkDown { cause } => Self::LinkDown { cause },
            ConduitEvent::DialFailed(f) => Self::DialFailed(f),
            ConduitEvent::Ended(end) if end.is_lost() => Self::Lost(end),
            ConduitEvent::Ended(end) => Self::Closed(end),
        }
    }
}

/// A snapshot of a session's counters: the core's and the driver's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct SessionStats {
    /// The session layer's counters (with the conduit's inside).
    pub session: sotto_proto::session::SessionStats,
    /// Bytes allocated for this session's link buffers now: the replay ring, and the
    /// driver's read and write buffers (as of its last step). They grow with traffic and
    /// shrink back once no item has moved for a second.
    pub buffer_bytes: u64,
    /// Links that completed a handshake.
    pub link_ups: u64,
    /// Links lost or dropped.
    pub link_downs: u64,
    /// Dials started (initiator).
    pub dials: u64,
    /// Dials that failed before a link existed (initiator).
    pub dial_failures: u64,
    /// Events dropped because nobody read them.
    pub events_dropped: u64,
    /// Whether a link is established now.
    pub link_established: bool,
    /// Payload bytes the application has taken from its connections.
    pub delivered_bytes: u64,
    /// Delivered messages waiting in connection queues for their readers.
    pub queued_messages: usize,
    /// Peer Opens waiting for [`SessionHandle::accept`].
    pub pending_opens: usize,
}

/// Why [`SessionHandle::open`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer rejected the connection.
    Rejected {
        /// The peer's code.
        code: u32,
        /// The peer's metadata.
        metadata: Bytes,
    },
    /// The session is over (or closing).
    Ended(SessionEnd),
    /// The session's limits refused it (too many connections, ids used up, metadata too
    /// large).
    Refused(CommandError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected { code, .. } => write!(f, "connection rejected by the peer (code {code})"),
            Self::Ended(end) => write!(f, "session ended: {end}"),
            Self::Refused(e) => write!(f, "refused by the session's limits: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why answering an [`IncomingOpen`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    /// The peer closed the connection before the answer.
    Closed,
    /// The session is over.
    Ended(SessionEnd),
    /// The metadata is larger than `max_metadata` (the Open is rejected).
    MetadataTooLarge,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("the peer closed the connection"),
            Self::Ended(end) => write!(f, "session ended: {end}"),
            Self::MetadataTooLarge => f.write_str("metadata too large"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// The end of a session whose command failed with `Ended` (closing counts as closed).
pub(crate) fn end_of(s: &Session, st: &SessState) -> SessionEnd {
    st.common.end(s.conduit()).unwrap_or(SessionEnd::LocalClose { code: sotto_proto::conduit::goodbye_code::NORMAL })
}

/// A session's identity in this process: assigned by the driver when the session starts
/// (on either side, session-layer or raw), unique among the process's sessions, the same for
/// the session's whole life, across every resume. Not sent on the wire: the peer numbers its
/// sessions itself. Its number is the `session` field of the `sotto_session` tracing span
/// the session's task runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The next id of this process.
    pub(crate) fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Goodbye {
    /// The peer's GOODBYE as the core reports it.
    pub(crate) fn new(code: u32, reason: &str) -> Self {
        Self { code, reason: reason.to_owned() }
    }
}

impl std::fmt::Display for Goodbye {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GOODBYE {}: {}", self.code, self.reason)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// The peer's GOODBYE: its code and reason (the reason at most
/// [`MAX_GOODBYE_REASON`](sotto_proto::conduit::MAX_GOODBYE_REASON) bytes, cut there by the
/// core).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Goodbye {
    /// The peer's code.
    pub code: u32,
    /// The peer's reason.
    pub reason: String,
}

/// One session: virtual connections, each an ordered, exactly-once message stream with
/// credit flow control, surviving link loss underneath.
///
/// [`open`](Self::open) connections and [`accept`](Self::accept) the peer's; watch
/// [`events`](Self::events); [`close`](Self::close) gracefully, from any clone.
///
/// The handle is cheap to clone (a reference count): every clone is the same session.
/// Dropping the **last** clone starts a graceful close (GOODBYE once queued data is out,
/// bounded by `drain_timeout`), after which the session's task ends; connections still held
/// then fail with `Ended`: connections do not keep a session open, its handles do.
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<HandleInner>,
}

/// What every clone of a [`SessionHandle`] shares; dropped with the last one.
struct HandleInner {
    home: Home,
    id: SessionId,
    task: Option<TaskGuard>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.inner.id)
            .field("peer_addr", &self.peer_addr())
            .field("stats", &self.stats())
            .finish()
    }
}

impl SessionHandle {
    pub(crate) fn new(home: Home, id: SessionId, task: TaskGuard) -> Self {
        Self { inner: Arc::new(HandleInner { home, id, task: Some(task) }) }
    }

    /// Where the session lives.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn home(&self) -> &Home {
        &self.inner.home
    }

    /// This session's id (see [`SessionId`]): the same on every clone and after every resume.
    #[must_use]
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The peer address of the session's current link (its last one while it has none),
    /// when the stream told it: TCP and Unix sockets made by the adapters do, a stream of
    /// your own does if it implements [`Io::peer_addr`](crate::Io::peer_addr) (or is wrapped
    /// in [`WithPeer`](crate::WithPeer)). `None` before the first link attached.
    #[must_use]
    pub fn peer_addr(&self) -> Option<crate::runtime::PeerAddr> {
        self.inner.home.lock().parts().1.common.peer_addr.clone()
    }

    /// The identity of the peer of the session's current link (its last one while it has
    /// none), as the acceptor's link hook established it (a client certificate's
    /// fingerprint or subject; see [`AcceptHooks`](crate::AcceptHooks)). `None` without a
    /// link hook, when the hook named no identity, and before the first link attached.
    #[must_use]
    pub fn peer_identity(&self) -> Option<crate::PeerIdentity> {
        self.inner.home.lock().parts().1.common.peer_identity.clone()
    }

    /// Resolves once the session is over, with how it ended (at once if it already has).
    /// Cancel-safe; any number of tasks may wait. The session's task may still be writing
    /// its last frames: [`close`](Self::close) waits for that.
    pub async fn closed(&self) -> SessionEnd {
        poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            if let Some(end) = st.common.end(s.conduit()) {
                return Poll::Ready(end);
            }
            st.common.watchers.register(cx);
            Poll::Pending
        })
        .await
    }

    /// The peer's GOODBYE (code and reason), once it has sent one.
    #[must_use]
    pub fn peer_goodbye(&self) -> Option<Goodbye> {
        let l = self.inner.home.lock();
        let (code, reason) = l.parts_ref().0.conduit().peer_goodbye()?;
        Some(Goodbye::new(code, reason))
    }

    /// Initiator: the error of the last failed dial, if any; after the session ended with
    /// [`SessionEnd::PermanentDialError`], the error the connector marked permanent.
    #[must_use]
    pub fn last_dial_error(&self) -> Option<Arc<io::Error>> {
        self.inner.home.lock().parts_ref().1.common.last_dial_error.clone()
    }

    /// Initiator: get a fresh link now. Call it when the network changed (a new interface,
    /// a VPN came up) or a user asked to retry. While the session waits out a redial
    /// backoff, the wait is cut short and the next dial starts at once. While a link is up,
    /// it is **cycled**: dropped (a `LinkDown` with [`LinkDownCause::Reconnect`]) and a new
    /// one dialed at once, over which the session resumes (nothing is lost). A dial or
    /// handshake in progress goes on. No effect on an acceptor's session or an ended one.
    pub fn reconnect_now(&self) {
        let mut l = self.inner.home.lock();
        let st = l.parts().1;
        st.common.reconnect = true;
        st.common.wake_driver();
    }

    /// Open a connection with `metadata` and wait for the peer's answer. Waits for the
    /// session handshake and for room in the replay ring first. Cancel-safe: dropped before
    /// the answer, the connection is closed as soon as it is accepted.
    pub async fn open(&self, metadata: &[u8]) -> Result<Connection, OpenError> {
        let id = poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            if let Some(end) = st.common.end(s.conduit()) {
                return Poll::Ready(Err(OpenError::Ended(end)));
            }
            match s.open(metadata) {
                Ok(id) => {
                    let mut slot = ConnSlot::new(Phase::Opening, Bytes::new());
                    slot.open_metadata = Bytes::copy_from_slice(metadata);
                    st.conns.insert(id, slot);
                    st.common.wake_driver();
                    Poll::Ready(Ok(id))
                }
                Err(CommandError::NotReady) => {
                    st.common.watchers.register(cx);
                    Poll::Pending
                }
                Err(CommandError::WouldBlock) => {
                    st.ring.register(cx);
                    Poll::Pending
                }
                Err(CommandError::Ended) => Poll::Ready(Err(OpenError::Ended(end_of(s, st)))),
                Err(e) => Poll::Ready(Err(OpenError::Refused(e))),
            }
        })
        .await?;
        // Dropped before the answer (cancelled): the connection is closed once accepted.
        let mut guard = OpenGuard { home: &self.inner.home, id, armed: true };
        let metadata = poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            let end = st.common.end(s.conduit());
            let Some(slot) = st.conns.get_mut(&id) else {
                return Poll::Ready(Err(OpenError::Ended(end.unwrap_or(SessionEnd::Evicted))));
            };
            match &slot.phase {
                Phase::Open => Poll::Ready(Ok(slot.metadata.clone())),
                Phase::Rejected { code, metadata } => {
                    Poll::Ready(Err(OpenError::Rejected { code: *code, metadata: metadata.clone() }))
                }
                Phase::Opening => match end {
                    Some(end) => Poll::Ready(Err(OpenError::Ended(end))),
                    None => {
                        crate::shared::register(&mut slot.rx, cx);
                        Poll::Pending
                    }
                },
            }
        })
        .await;
        guard.armed = false;
        match metadata {
            Ok(metadata) => Ok(Connection::new(self.inner.home.clone(), id, metadata, self.release_at())),
            Err(e) => {
                let mut l = self.inner.home.lock();
                l.parts().1.conns.remove(&id);
                Err(e)
            }
        }
    }

    fn release_at(&self) -> usize {
        let l = self.inner.home.lock();
        (l.parts_ref().0.config().initial_credit as usize / 4).max(1)
    }

    /// The peer's next connection request. Cancel-safe. After the session ended, the
    /// requests already received are still returned, then `Err`.
    pub async fn accept(&self) -> Result<IncomingOpen, Ended> {
        let (id, metadata) = poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            if let Some(open) = st.incoming.pop_front() {
                return Poll::Ready(Ok(open));
            }
            if let Some(end) = st.common.end(s.conduit()) {
                return Poll::Ready(Err(Ended(end)));
            }
            st.acceptors.register(cx);
            Poll::Pending
        })
        .await?;
        Ok(IncomingOpen { home: self.inner.home.clone(), id, metadata, answered: false, release_at: self.release_at() })
    }

    /// The next link event, or `None` once the session is over and every event was read.
    /// Events nobody reads are kept up to a bound, oldest dropped first.
    pub async fn next_event(&self) -> Option<SessionEvent> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// [`next_event`](Self::next_event) as a poll function.
    pub fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        let mut l = self.inner.home.lock();
        let st = l.parts().1;
        if let Some(e) = st.common.events.pop_front() {
            return Poll::Ready(Some(e.into()));
        }
        if st.common.driver_done {
            return Poll::Ready(None);
        }
        st.common.watchers.register(cx);
        Poll::Pending
    }

    /// The link events as a stream (see [`next_event`](Self::next_event)).
    pub fn events(&self) -> impl Stream<Item = SessionEvent> + '_ {
        futures::stream::poll_fn(move |cx| self.poll_event(cx))
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        let l = self.inner.home.lock();
        let (s, st) = l.parts_ref();
        let c = st.common.counters;
        SessionStats {
            session: s.stats(),
            buffer_bytes: c.io_buffer_bytes + s.conduit().buffer_bytes() as u64,
            link_ups: c.link_ups,
            link_downs: c.link_downs,
            dials: c.dials,
            dial_failures: c.dial_failures,
            events_dropped: c.events_dropped,
            link_established: s.conduit().is_established(),
            delivered_bytes: st.delivered_bytes,
            queued_messages: st.conns.values().map(|c| c.queue.messages()).sum(),
            pending_opens: st.incoming.len(),
        }
    }

    /// Take the timings of the resumes so far (up to the last 64 not yet taken): when each
    /// outage began, when the link resumed, when the first message arrived over it. A resume
    /// still waiting for its first message is kept for a later call.
    #[must_use]
    pub fn take_resume_timings(&self) -> Vec<ResumeTiming> {
        self.inner.home.lock().parts().1.common.take_timings(self.inner.home.clock())
    }

    /// How the session ended, if it has.
    #[must_use]
    pub fn ended(&self) -> Option<SessionEnd> {
        let l = self.inner.home.lock();
        let (s, st) = l.parts_ref();
        st.common.end(s.conduit())
    }

    /// Conduit items sent that the peer has not acknowledged yet (they wait in the replay
    /// ring; one item carries one message, or a batch of small ones sent in a burst). After
    /// a [`close`](Self::close) that ended the session without GOODBYE (no link at the
    /// time), these may never have reached the peer: this is how many items the close may
    /// have lost. After a GOODBYE they were all written before it. The messages themselves,
    /// once the session has ended: [`unacknowledged`](Self::unacknowledged).
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.inner.home.lock().parts_ref().0.conduit().unacked()
    }

    /// Once the session has ended on a session-protocol failure, which: the peer broke a
    /// rule (`Violation`, answered with `ProtocolError`: data after its end of stream on a
    /// half-closed connection is [`SessionViolation::AfterFin`](sotto_proto::session::SessionViolation::AfterFin)),
    /// the peer reported our error (`PeerProtocolError`), or a handshake was refused. The
    /// session's end is then `LocalClose { code: goodbye_code::PROTOCOL_ERROR }` (we closed
    /// it) or the peer's GOODBYE. `None` for every other end, and while the session lives.
    /// Call it after [`closed`](Self::closed) to tell a protocol failure from a close.
    #[must_use]
    pub fn protocol_failure(&self) -> Option<SessionFailure> {
        self.inner.home.lock().parts_ref().0.failure()
    }

    /// Once the session has ended (lost, or closed): the messages the peer never
    /// acknowledged, with their connections, in order, and the connections the application
    /// held, to open again on a new session and send those messages again. `None` while the
    /// session lives. Each call collects afresh (one allocation for all payloads). A session
    /// handed off to another process (`SessionEnd::HandedOff`) leaves nothing here.
    ///
    /// Delivery across a loss is **at least once**: a message the peer's application
    /// received but its session had not acknowledged yet is returned too. See
    /// [`Unacknowledged`](super::Unacknowledged) for the guarantee and what each kind of
    /// message means, and
    /// [`ReconnectingSession`](super::ReconnectingSession) for a new session started for
    /// you.
    #[must_use]
    pub fn unacknowledged(&self) -> Option<super::Unacknowledged> {
        let mut l = self.inner.home.lock();
        let (s, st) = l.parts();
        super::loss::unacknowledged(s, st)
    }

    /// The metadata of the peer's session hello, once the handshake got that far.
    #[must_use]
    pub fn peer_metadata(&self) -> Option<Bytes> {
        self.inner.home.lock().parts_ref().1.peer_metadata.clone()
    }

    /// Wait until the peer has acknowledged everything sent on the session before the call
    /// (on every connection: messages, opens, closes, ends of stream): its session holds
    /// it, whatever happens to links from now on. Waits across link losses (the replay on
    /// the next link is acknowledged like the first sending). Errors with how the session
    /// ended if it ends before that. Cancel-safe. Messages a connection's `Sink` staged but
    /// did not queue yet are not covered (see [`ConnSender::flush_acked`](super::ConnSender::flush_acked)).
    pub async fn flush(&self) -> Result<(), Ended> {
        let target = self.inner.home.lock().parts_ref().0.conduit().items_sent();
        poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            state::poll_acked(s, st, cx, target).map_err(Ended)
        })
        .await
    }

    /// End the session gracefully; [`close_within`](Self::close_within) bounded by
    /// [`ProtocolConfig::close_timeout`](crate::ProtocolConfig::close_timeout) (default 10 s).
    pub async fn close(&self, code: u32, reason: &str) -> SessionEnd {
        let bound = self.inner.home.lock().parts_ref().1.close_timeout;
        self.close_within(code, reason, bound).await
    }

    /// End the session gracefully: first wait, for at most `bound`, until the peer has
    /// acknowledged everything sent so far (as [`flush`](Self::flush)) with a link up; then
    /// GOODBYE with `code` and `reason` goes out after anything still queued; the peer does
    /// not reconnect, and neither do we. A close while no link is up waits for the next link
    /// (the initiator keeps redialing): the replay of what was queued during the outage goes
    /// first, the GOODBYE after it. Resolves once the session's task is done, with how the
    /// session ended (not `LocalClose` if it had already ended otherwise).
    ///
    /// If `bound` passes with a link up, the GOODBYE goes anyway (after the queued data, as
    /// always). If it passes with no link, the session ends at once, without GOODBYE: what
    /// the peer had not acknowledged may be lost, and [`unacked`](Self::unacked) says how
    /// many items that is. `Duration::ZERO` closes at once.
    pub async fn close_within(&self, code: u32, reason: &str, bound: std::time::Duration) -> SessionEnd {
        {
            let mut l = self.inner.home.lock();
            let now = self.inner.home.clock().now();
            let (s, st) = l.parts();
            let bound = sotto_proto::Duration::from_nanos(u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX));
            let deadline = now.saturating_add(bound);
            if st.pending_close.is_none() {
                let target = s.conduit().items_sent();
                st.pending_close = Some(state::PendingClose { code, reason: reason.to_owned(), target, deadline });
            }
            state::settle_close(s, st, now);
            st.common.wake_driver();
        }
        poll_fn(|cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            if st.common.driver_done {
                return Poll::Ready(st.common.end(s.conduit()).unwrap_or(SessionEnd::LocalClose { code }));
            }
            st.common.watchers.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Wait until the session handshake has finished, or the session ended before that.
    fn wait_ready(&self) -> impl Future<Output = Result<(), ConnectError>> + '_ {
        poll_fn(move |cx| {
            let mut l = self.inner.home.lock();
            let (s, st) = l.parts();
            if st.ready {
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = st.common.end(s.conduit()) {
                return Poll::Ready(Err(ConnectError::from_end(end, &mut st.common)));
            }
            st.common.watchers.register(cx);
            Poll::Pending
        })
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        {
            let mut l = self.home.lock();
            let st = l.parts().1;
            st.common.handle_dropped = true;
            st.common.wake_driver();
        }
        // The task finishes the graceful close on its own, bounded by `drain_timeout`.
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

/// Closes a connection whose `open` was cancelled before the answer.
struct OpenGuard<'a> {
    home: &'a Home,
    id: ConnId,
    armed: bool,
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut l = self.home.lock();
            let now = self.home.clock().now();
            let (s, st) = l.parts();
            state::abandon(s, st, now, self.id);
        }
    }
}

/// A connection the peer wants to open. Answer with [`accept`](Self::accept) or
/// [`reject`](Self::reject); dropping it rejects it (code 0x100, no metadata).
pub struct IncomingOpen {
    home: Home,
    id: ConnId,
    metadata: Bytes,
    answered: bool,
    release_at: usize,
}

impl std::fmt::Debug for IncomingOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingOpen").field("id", &self.id).field("metadata", &self.metadata).finish()
    }
}

impl IncomingOpen {
    /// The connection's id (the peer's parity).
    #[must_use]
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's Open metadata.
    #[must_use]
    pub fn metadata(&self) -> &Bytes {
        &self.metadata
    }

    /// Accept the connection with `metadata`. Waits for room in the replay ring.
    pub async fn accept(mut self, metadata: &[u8]) -> Result<Connection, AnswerError> {
        let id = self.id;
        poll_fn(|cx| {
            let mut l = self.home.lock();
            let (s, st) = l.parts();
            match s.accept(id, metadata) {
                Ok(()) => {
                    st.conns.insert(id, ConnSlot::new(Phase::Open, self.metadata.clone()));
                    st.common.wake_driver();
                    Poll::Ready(Ok(()))
                }
                Err(e) => answer_failed(e, s, st, cx),
            }
        })
        .await
        .inspect(|()| self.answered = true)?;
        Ok(Connection::new(self.home.clone(), id, self.metadata.clone(), self.release_at))
    }

    /// Reject the connection with `code` and `metadata`. Waits for room in the replay ring.
    pub async fn reject(mut self, code: u32, metadata: &[u8]) -> Result<(), AnswerError> {
        let id = self.id;
        poll_fn(|cx| {
            let mut l = self.home.lock();
            let now = self.home.clock().now();
            let (s, st) = l.parts();
            match s.reject(now, id, code, metadata) {
                Ok(()) => {
                    st.common.wake_driver();
                    Poll::Ready(Ok(()))
                }
                Err(e) => answer_failed(e, s, st, cx),
            }
        })
        .await
        .inspect(|()| self.answered = true)
    }
}

/// An answer to an incoming open failed with `e`: wait for room in the replay ring
/// (registering `cx`), or the error for the application.
fn answer_failed<T>(
    e: CommandError,
    s: &Session,
    st: &mut SessState,
    cx: &Context<'_>,
) -> Poll<Result<T, AnswerError>> {
    match e {
        CommandError::WouldBlock => {
            st.ring.register(cx);
            Poll::Pending
        }
        CommandError::Ended => Poll::Ready(Err(AnswerError::Ended(end_of(s, st)))),
        CommandError::MetadataTooLarge => Poll::Ready(Err(AnswerError::MetadataTooLarge)),
        _ => Poll::Ready(Err(AnswerError::Closed)),
    }
}

impl Drop for IncomingOpen {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut l = self.home.lock();
        let now = self.home.clock().now();
        let (s, st) = l.parts();
        state::owe(s, st, now, Owed::Reject(self.id, DROPPED_OPEN_CODE));
    }
}

/// Start an initiator session: dial with `connector` (called once per link; it returns a
/// fresh stream), run the link and session handshakes, and return once the session is ready
/// for connections. Dial errors and failed handshakes are retried as for
/// [`connect`](crate::handle::connect); after that, lost links are redialed with backoff until
/// `config.protocol.recovery_timeout`, then the session is reported lost. The session Hello
/// carries no metadata (see [`connect_session_with`]).
///
/// The session speaks protocol version 4 (no LetsGo), with version 3 (half-close) or older
/// if the acceptor answers with it. An acceptor of version 2 or older refuses that Hello;
/// the refusal is recognised and a new session speaking version 2 is started at once
/// (everything works but half-close, which falls back to a full close; see
/// [`ConnSender::finish`](super::ConnSender::finish)).
pub async fn connect_session<R, S, F, Fut>(rt: R, connector: F, config: Config) -> Result<SessionHandle, ConnectError>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    connect_session_with(rt, connector, config, &[]).await
}

/// [`connect_session`], with `metadata` in the session Hello: the acceptor reads it with
/// [`SessionHandle::peer_metadata`] on the session it accepts (who is connecting, a token,
/// a protocol version). At most `config.protocol.max_metadata` bytes, else
/// [`ConnectError::Config`] with `SessionLimits`. Sent once, with the session's first
/// handshake: resumes do not repeat it.
pub async fn connect_session_with<R, S, F, Fut>(
    rt: R,
    connector: F,
    config: Config,
    metadata: &[u8],
) -> Result<SessionHandle, ConnectError>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let connector = Arc::new(std::sync::Mutex::new(connector));
    match start_session(&rt, &connector, config, metadata, sotto_proto::session::PROTOCOL_VERSION).await {
        Err((_, Some(SessionFailure::PeerRefused { code: refusal::VERSION }))) => {
            tracing::debug!(
                version = sotto_proto::session::PROTOCOL_VERSION,
                "sotto: the acceptor refused our session protocol version; starting a version-2 session"
            );
            start_session(&rt, &connector, config, metadata, BATCH_VERSION).await.map_err(|(e, _)| e)
        }
        r => r.map_err(|(e, _)| e),
    }
}

/// One attempt of [`connect_session_with`], speaking protocol `version`; on failure, the
/// session-layer failure too (a refusal of the version).
async fn start_session<R, S, F, Fut>(
    rt: &R,
    connector: &Arc<std::sync::Mutex<F>>,
    config: Config,
    metadata: &[u8],
    version: u32,
) -> Result<SessionHandle, (ConnectError, Option<SessionFailure>)>
where
    R: Runtime,
    S: Io,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let session = Session::speaking(Role::Initiator, config.session_config(), metadata, version)
        .map_err(|e| (ConnectError::Config(e), None))?;
    let home = Home::new(session, SessState::new(&config), Clock::new(rt));
    let connector = Arc::clone(connector);
    let dial = Box::new(move || -> DialFuture<S> {
        Box::pin((connector.lock().unwrap_or_else(std::sync::PoisonError::into_inner))())
    });
    let dialer = Dialer::new(dial, &config, rt.now(), rt.jitter_seed());
    let host = Arc::new(SessDriverHost::<S>::new(home.clone()));
    let driver = Driver::<R, S, SessDriverHost<S>>::new(rt, host, Source::Dialer(dialer), config);
    let id = SessionId::next();
    let span = crate::trace::session_span(id, Role::Initiator, crate::trace::Api::Session, None);
    let task = crate::trace::spawn_in(rt, driver, span);
    let handle = SessionHandle::new(home, id, task);
    if let Err(e) = handle.wait_ready().await {
        let failure = handle.inner.home.lock().parts_ref().0.failure();
        return Err((e, failure));
    }
    Ok(handle)
}
