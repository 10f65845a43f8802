//! What every session's driver shares with the handles, whichever kind of session it is: the
//! driver-facing fields ([`Common`]: events for the application, wakers, lifecycle flags,
//! counters), waker lists, and the clock that maps `std` instants to the core's.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant as StdInstant};

use sotto_proto::conduit::{ConduitStats, LinkDropReason};
use sotto_proto::wire::FramingError;
use sotto_proto::{Conduit, Instant, SessionEnd};

/// Events kept for the application at most; older ones are dropped (and counted) when nobody
/// reads them.
const MAX_EVENTS: usize = 64;

/// What happened to a session's links, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConduitEvent {
    /// A link completed its handshake and frames flow.
    LinkUp {
        /// This link resumed the session (it is not the first).
        resumed: bool,
        /// Frames that are being replayed on it before any new one.
        replaying: u64,
        /// sotto's extensions (standalone acks, keepalive, goodbye) are in force.
        ext: bool,
    },
    /// The link is gone; the session lives on (the initiator redials, the acceptor waits).
    LinkDown {
        /// Why.
        cause: LinkDownCause,
    },
    /// Initiator: a dial failed (the connector's error, a dial timeout or a panic). While
    /// nobody reads the events, consecutive failed dials share one event: the latest
    /// replaces the unread one before it and counts it ([`DialFailure::failures`]), so a
    /// long outage never pushes older events out of the bounded queue.
    DialFailed(DialFailure),
    /// The session is over: lost ([`SessionEnd::is_lost`]) or closed. Always the last event.
    Ended(SessionEnd),
}

/// A failed dial: its error, and when the next one starts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DialFailure {
    /// The connector's error (or a dial timeout, or "the connector panicked").
    pub error: Arc<io::Error>,
    /// How long the backoff waits before the next dial; `None` when there is none (the
    /// error was permanent, or the first connect gave up).
    pub next_in: Option<Duration>,
    /// Consecutive failed dials this event stands for: 1, plus the unread `DialFailed`
    /// events it replaced (see [`ConduitEvent::DialFailed`]). `error` and `next_in` are the
    /// latest dial's.
    pub failures: u64,
}

impl DialFailure {
    /// One failed dial.
    pub(crate) fn new(error: Arc<io::Error>, next_in: Option<Duration>) -> Self {
        Self { error, next_in, failures: 1 }
    }
}

/// Two failures are equal when they are the same error (the same `Arc`) with the same delay
/// and count.
impl PartialEq for DialFailure {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.error, &other.error) && self.next_in == other.next_in && self.failures == other.failures
    }
}

impl Eq for DialFailure {}

impl std::fmt::Display for DialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.next_in {
            Some(d) => write!(f, "dial failed: {} (next dial in {d:?})", self.error),
            None => write!(f, "dial failed: {} (no further dial)", self.error),
        }
    }
}

/// Why a link went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkDownCause {
    /// The core dropped it (violation, gap, keepalive timeout, handshake failure, ...).
    Dropped(LinkDropReason),
    /// The peer closed the stream on a message boundary.
    Eof,
    /// The stream ended inside a message.
    Truncated,
    /// A write accepted zero bytes.
    WriteZero,
    /// The byte stream was not well framed (a length prefix above `max_frame_len`).
    Framing(FramingError),
    /// A read, write or flush failed.
    Io(io::ErrorKind),
    /// A newer link replaced it (acceptor).
    Superseded,
    /// The application asked for a fresh link (initiator:
    /// [`SessionHandle::reconnect_now`](crate::SessionHandle::reconnect_now)).
    Reconnect,
}

impl std::fmt::Display for LinkDownCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dropped(reason) => write!(f, "dropped: {reason}"),
            Self::Eof => f.write_str("the peer closed the stream"),
            Self::Truncated => f.write_str("the stream ended inside a message"),
            Self::WriteZero => f.write_str("a write accepted zero bytes"),
            Self::Framing(e) => write!(f, "bad framing: {e}"),
            Self::Io(kind) => write!(f, "I/O error: {kind}"),
            Self::Superseded => f.write_str("replaced by a newer link"),
            Self::Reconnect => f.write_str("replaced at the application's request (reconnect_now)"),
        }
    }
}

impl std::error::Error for LinkDownCause {}

/// A snapshot of a raw stable-conduit session's counters: the core's, and the driver's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct Stats {
    /// The stable conduit's counters.
    pub conduit: ConduitStats,
    /// Bytes allocated for this session's buffers now: the replay ring, and the driver's
    /// read and write buffers (as of its last step). They grow with traffic and shrink
    /// back once no item has moved for a second.
    pub buffer_bytes: u64,
    /// Links that completed a handshake.
    pub link_ups: u64,
    /// Links lost or dropped.
    pub link_downs: u64,
    /// Dials started (initiator).
    pub dials: u64,
    /// Dials that failed before a link existed (initiator).
    pub dial_failures: u64,
    /// Delivered items waiting for `recv`.
    pub inbound_items: usize,
    /// Bytes of those items.
    pub inbound_bytes: usize,
    /// Events dropped because nobody read them.
    pub events_dropped: u64,
    /// Whether a link is established now.
    pub link_established: bool,
}

/// How long a session was without a working link, measured by its driver under the
/// session's lock (so the instants are ordered exactly with the deliveries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeTiming {
    /// When the driver found the previous link gone (EOF, error, dropped by the core, or
    /// superseded by a new link at the acceptor).
    pub link_lost: StdInstant,
    /// When the next link completed its handshake (a resume).
    pub resumed: StdInstant,
    /// When the first message arrived over that link (`None` until one has).
    pub first_delivery: Option<StdInstant>,
}

/// A [`ResumeTiming`] on the core's clock, as the driver records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CoreTiming {
    link_lost: Instant,
    resumed: Instant,
    first_delivery: Option<Instant>,
}

/// Resume timings kept at most; older ones are dropped when nobody takes them.
const MAX_TIMINGS: usize = 64;

/// The driver's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) link_ups: u64,
    pub(crate) link_downs: u64,
    pub(crate) dials: u64,
    pub(crate) dial_failures: u64,
    pub(crate) events_dropped: u64,
    /// Bytes the driver's read and write buffers hold, as of its last step.
    pub(crate) io_buffer_bytes: u64,
}

/// Wakers of tasks waiting on one condition. Registering twice from the same task keeps one.
#[derive(Debug, Default)]
pub(crate) struct WakerList(Vec<Waker>);

impl WakerList {
    pub(crate) fn register(&mut self, cx: &Context<'_>) {
        if !self.0.iter().any(|w| w.will_wake(cx.waker())) {
            self.0.push(cx.waker().clone());
        }
    }
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// Register `cx` in a single-waker slot (replacing another task's waker).
pub(crate) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Wake the waker in a single-waker slot, if any.
pub(crate) fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// The fields of a session's shared state that the driver manages, for any kind of session.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// Link events for the application.
    pub(crate) events: VecDeque<ConduitEvent>,
    /// The driver task's waker.
    pub(crate) driver: Option<Waker>,
    /// Waiting for events, the end, or the first attach.
    pub(crate) watchers: WakerList,
    /// The driver task has finished (or was cancelled).
    pub(crate) driver_done: bool,
    /// The application dropped its handle: the driver stops.
    pub(crate) handle_dropped: bool,
    /// An acceptor's shutdown ran out of time: the driver stops now, abandoning what it
    /// had not written (the session has ended already).
    pub(crate) exit_now: bool,
    /// An acceptor's shutdown (asked for by the operator) is ending this session: however it
    /// ends, that is not a loss to warn about (see `trace::session_ended`).
    pub(crate) shut_down: bool,
    /// Initiator: the last dial error, reported if the first connect gives up, and the
    /// cause of a [`SessionEnd::PermanentDialError`].
    pub(crate) last_dial_error: Option<Arc<io::Error>>,
    /// The current (or last) link's peer, as its stream told.
    pub(crate) peer_addr: Option<crate::runtime::PeerAddr>,
    /// The current (or last) link's peer identity, as its link hook established it.
    pub(crate) peer_identity: Option<crate::link_hook::PeerIdentity>,
    /// The session's first link (set when it attached): an acceptor's resume binding
    /// compares resumes with it.
    pub(crate) first_link: Option<crate::link_hook::LinkInfo>,
    /// Initiator: the application asked for a fresh link now.
    pub(crate) reconnect: bool,
    /// Initiator: the first connect gave up on an error that retrying cannot fix.
    pub(crate) dial_permanent: bool,
    pub(crate) counters: Counters,
    /// `Ended` was queued: nothing follows it.
    ended_pushed: bool,
    /// When the current outage began (a link was lost and none has resumed yet).
    lost_at: Option<Instant>,
    /// Resume timings (on the core's clock), the latest last (its `first_delivery` may still
    /// be pending).
    pub(crate) timings: VecDeque<CoreTiming>,
    /// The latest timing waits for its first delivery.
    pub(crate) awaiting_first: bool,
    /// An acceptor's session: its share of the acceptor's buffer bytes, given back when the
    /// driver finishes.
    pub(crate) acceptor: Option<crate::summary::Share>,
}

impl Common {
    /// Wake the driver task, if it waits (checked inline: on the data path it mostly does
    /// not, having been woken by an earlier call).
    #[inline]
    pub(crate) fn wake_driver(&mut self) {
        if self.driver.is_some() {
            wake(&mut self.driver);
        }
    }

    /// The driver task polled with `waker` is the one to wake.
    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.driver = Some(waker.clone());
        }
    }

    /// The driver task is finishing: nobody is to be woken for it any more.
    pub(crate) fn driver_gone(&mut self) {
        self.driver_done = true;
        self.driver = None;
        self.acceptor = None;
    }

    pub(crate) fn push_event(&mut self, mut e: ConduitEvent) {
        // A failed dial replaces an unread one just before it (see `ConduitEvent::DialFailed`).
        if let (ConduitEvent::DialFailed(new), Some(ConduitEvent::DialFailed(old))) = (&mut e, self.events.back()) {
            new.failures = new.failures.saturating_add(old.failures);
            self.events.pop_back();
        }
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        // `Ended` stays last: the link dropped because the session ended goes down before it
        // (or, if `Ended` was read already, is not reported).
        if matches!(self.events.back(), Some(ConduitEvent::Ended(_))) {
            self.events.insert(self.events.len() - 1, e);
        } else if !self.ended_pushed {
            self.ended_pushed = matches!(e, ConduitEvent::Ended(_));
            self.events.push_back(e);
        }
        self.watchers.wake_all();
    }

    /// How the session ended, once it has (or `Evicted` if the driver is gone without an
    /// end, which only happens when its task was cancelled).
    pub(crate) fn end(&self, conduit: &Conduit) -> Option<SessionEnd> {
        conduit.ended().or(if self.driver_done { Some(SessionEnd::Evicted) } else { None })
    }

    /// A link was lost at `now` (the outage starts, unless one already had). The driver
    /// reads `now` from the session's clock at the loss, not at the start of its step.
    pub(crate) fn link_lost(&mut self, now: Instant) {
        self.lost_at.get_or_insert(now);
    }

    /// The driver's read and write buffers hold `io` bytes and the replay ring `ring`, now.
    #[inline]
    pub(crate) fn set_buffer_bytes(&mut self, io: u64, ring: u64) {
        self.counters.io_buffer_bytes = io;
        if let Some(m) = self.acceptor.as_mut() {
            m.set_buffer_bytes(io + ring);
        }
    }

    /// A link attached at `now`; for a resume, start a timing.
    pub(crate) fn link_attached(&mut self, resumed: bool, now: Instant) {
        let Some(lost) = self.lost_at.take() else { return };
        if resumed {
            if self.timings.len() == MAX_TIMINGS {
                self.timings.pop_front();
            }
            self.timings.push_back(CoreTiming { link_lost: lost, resumed: now.max(lost), first_delivery: None });
            self.awaiting_first = true;
        }
    }

    /// A message was delivered at `now`: complete the latest timing if it waits for one.
    #[inline]
    pub(crate) fn delivered(&mut self, now: Instant) {
        if self.awaiting_first {
            self.awaiting_first = false;
            if let Some(t) = self.timings.back_mut() {
                t.first_delivery = Some(now.max(t.resumed));
            }
        }
    }

    /// Take the finished timings (all but a latest one still waiting for its delivery), as
    /// `std` instants on `clock`.
    pub(crate) fn take_timings(&mut self, clock: &Clock) -> Vec<ResumeTiming> {
        let keep = usize::from(self.awaiting_first);
        let n = self.timings.len().saturating_sub(keep);
        let std = |t: Instant| clock.std_time(t).unwrap_or(clock.origin);
        self.timings
            .drain(..n)
            .map(|t| ResumeTiming {
                link_lost: std(t.link_lost),
                resumed: std(t.resumed),
                first_delivery: t.first_delivery.map(std),
            })
            .collect()
    }
}

/// The session's clock: the runtime's [`Runtime::now`](crate::Runtime::now) (so a simulated
/// runtime's virtual time drives every deadline), and the mapping of its `std` instants to
/// the core's [`Instant`] (nanoseconds since the clock was made) and back.
#[derive(Clone)]
pub(crate) struct Clock {
    origin: StdInstant,
    source: Arc<dyn Fn() -> StdInstant + Send + Sync>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl Clock {
    /// A clock reading `rt`'s time, starting now.
    pub(crate) fn new<R: crate::runtime::Runtime>(rt: &R) -> Self {
        let rt = rt.clone();
        Self { origin: rt.now(), source: Arc::new(move || rt.now()) }
    }

    /// A clock reading the system's monotonic time (for unit tests without a runtime).
    #[cfg(test)]
    pub(crate) fn system() -> Self {
        Self { origin: StdInstant::now(), source: Arc::new(StdInstant::now) }
    }

    /// The runtime's "now".
    #[inline]
    pub(crate) fn now_std(&self) -> StdInstant {
        (self.source)()
    }

    /// The core's instant for `t`.
    pub(crate) fn core_time(&self, t: StdInstant) -> Instant {
        Instant::from_nanos(u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX))
    }

    /// The core's "now".
    pub(crate) fn now(&self) -> Instant {
        self.core_time(self.now_std())
    }

    /// The `std` instant for a core instant (`None` for one too far to represent).
    pub(crate) fn std_time(&self, t: Instant) -> Option<StdInstant> {
        self.origin.checked_add(std::time::Duration::from_nanos(t.as_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: io::ErrorKind, ms: u64) -> ConduitEvent {
        ConduitEvent::DialFailed(DialFailure::new(Arc::new(io::Error::from(kind)), Some(Duration::from_millis(ms))))
    }

    #[test]
    fn an_unread_failed_dial_is_replaced_by_the_next_and_counted() {
        let mut c = Common::default();
        c.push_event(ConduitEvent::LinkDown { cause: LinkDownCause::Eof });
        for i in 0..1000 {
            c.push_event(failed(io::ErrorKind::ConnectionRefused, i));
        }
        assert_eq!(c.events.len(), 2);
        assert_eq!(c.counters.events_dropped, 0);
        let Some(ConduitEvent::DialFailed(f)) = c.events.back() else { panic!("{:?}", c.events) };
        assert_eq!((f.failures, f.next_in), (1000, Some(Duration::from_millis(999))), "the latest, counting all");
        // Once read, the next failure is an event of its own.
        c.events.pop_back();
        c.push_event(failed(io::ErrorKind::TimedOut, 5));
        let Some(ConduitEvent::DialFailed(f)) = c.events.back() else { panic!("{:?}", c.events) };
        assert_eq!((f.failures, f.error.kind()), (1, io::ErrorKind::TimedOut));
        // Another event in between keeps them apart.
        c.push_event(ConduitEvent::LinkUp { resumed: true, replaying: 0, ext: true });
        c.push_event(failed(io::ErrorKind::ConnectionRefused, 5));
        assert_eq!(c.events.len(), 4);
    }
}
