//! State shared by a session's driver task and its handle: the core state machine itself
//! (the handle calls `send`/`close` on it directly, so an item is copied once, into the
//! replay ring), the bounded inbound queue, the bounded event queue, and the wakers.

use std::collections::VecDeque;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::Instant as StdInstant;

use bytes::Bytes;
use sotto::conduit::{ConduitStats, LinkDropReason};
use sotto::wire::FramingError;
use sotto::{Conduit, Instant, SessionEnd};

/// Events kept for [`next_event`](crate::StableConduit::next_event) at most; older ones are
/// dropped (and counted) when nobody reads them.
const MAX_EVENTS: usize = 64;

/// What happened to a session, for the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The session is over: lost ([`SessionEnd::is_lost`]) or closed. Always the last event.
    Ended(SessionEnd),
}

/// Why a link went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// A snapshot of a session's counters: the core's, and the driver's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The stable conduit's counters.
    pub conduit: ConduitStats,
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

/// Everything behind the session's lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) conduit: Conduit,
    pub(crate) inbound: VecDeque<Bytes>,
    pub(crate) inbound_bytes: usize,
    pub(crate) events: VecDeque<ConduitEvent>,
    pub(crate) driver: Option<Waker>,
    /// The driver stopped reading because the inbound queue was full.
    pub(crate) reader_blocked: bool,
    /// A blocked reader is woken once the queue is down to this many items and bytes.
    pub(crate) resume_reading_at: (usize, usize),
    pub(crate) senders: WakerList,
    pub(crate) receivers: WakerList,
    /// Waiting for events, the end, or the first attach.
    pub(crate) watchers: WakerList,
    /// The driver task has finished (or was cancelled).
    pub(crate) driver_done: bool,
    pub(crate) handle_dropped: bool,
    /// Initiator: the last dial error, reported if the first connect gives up.
    pub(crate) last_dial_error: Option<io::Error>,
    /// Initiator: the first connect gave up on an error that retrying cannot fix.
    pub(crate) dial_permanent: bool,
    pub(crate) stats: Stats,
}

impl Inner {
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    pub(crate) fn push_event(&mut self, e: ConduitEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
        self.watchers.wake_all();
    }

    /// How the session ended, once it has (or `Evicted` if the driver is gone without an
    /// end, which only happens when its task was cancelled).
    pub(crate) fn end(&self) -> Option<SessionEnd> {
        self.conduit.ended().or(if self.driver_done { Some(SessionEnd::Evicted) } else { None })
    }

    pub(crate) fn wake_all(&mut self) {
        self.senders.wake_all();
        self.receivers.wake_all();
        self.watchers.wake_all();
    }
}

/// The lock plus the clock origin that maps `std` instants to the core's.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    origin: StdInstant,
}

impl Shared {
    pub(crate) fn new(conduit: Conduit, config: &crate::Config) -> Self {
        Self {
            inner: Mutex::new(Inner {
                conduit,
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                events: VecDeque::with_capacity(MAX_EVENTS),
                driver: None,
                reader_blocked: false,
                resume_reading_at: (config.inbound_items / 2, config.inbound_bytes / 2),
                senders: WakerList::default(),
                receivers: WakerList::default(),
                watchers: WakerList::default(),
                driver_done: false,
                handle_dropped: false,
                last_dial_error: None,
                dial_permanent: false,
                stats: Stats::default(),
            }),
            origin: StdInstant::now(),
        }
    }

    /// Lock the state. A panic elsewhere while it was held does not make it unusable: the
    /// state machine never panics on input, so its state is consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The core's instant for `t`.
    pub(crate) fn core_time(&self, t: StdInstant) -> Instant {
        Instant::from_nanos(u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX))
    }

    /// The core's "now".
    pub(crate) fn now(&self) -> Instant {
        self.core_time(StdInstant::now())
    }

    /// The `std` instant for a core instant (`None` for one too far to represent).
    pub(crate) fn std_time(&self, t: Instant) -> Option<StdInstant> {
        self.origin.checked_add(std::time::Duration::from_nanos(t.as_nanos()))
    }
}
