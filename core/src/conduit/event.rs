//! What a conduit reports: events for the driver, reasons for dropped links and ended
//! sessions, and the errors of its inputs and commands.

use crate::wire::WireError;

/// Names one link in the life of a conduit. Returned by `link_up`; inputs from any other link
/// are stale and ignored. Never reused within a conduit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct LinkId(pub u64);

/// Which side of the handshake a conduit plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
pub enum Role {
    /// Attaches links and sends the ClientHello; resumes by key.
    Initiator,
    /// Answers ClientHellos; issues keys.
    Acceptor,
}

/// A peer behaviour the protocol forbids. The link carrying it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum Violation {
    /// Bytes that do not decode as a frame (or a hello where one is due).
    Malformed(WireError),
    /// An ack for a frame never sent.
    AckBeyondSent,
    /// A duplicate older than `duplicate_window` behind the receive position.
    StaleBeyondWindow,
    /// A hello on an established link, or the wrong kind of hello.
    UnexpectedHello,
    /// A ServerHello for a fresh session that claims a receive position.
    FreshWithPosition,
}

/// Why the conduit asks the driver to drop a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum LinkDropReason {
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// The peer's hello was bad (H3, H4, H5, H6).
    HandshakeFailed(WireError),
    /// The acceptor refused the presented key or a fresh session; a REJECTED ServerHello
    /// was sent.
    Rejected,
    /// The peer broke the protocol on this link.
    Violation(Violation),
    /// A frame arrived past a hole; resume refills the hole.
    Gap,
    /// Nothing arrived for `pong_timeout` after a PING: the link is silent (half-open).
    KeepaliveTimeout,
    /// Base form only: a sender was blocked on a full replay ring and the peer sent no ack
    /// for `ack_starved_timeout`; a resume handshake carries the peer's position and trims
    /// the ring.
    AckStarved,
    /// A newer link replaced this one.
    Superseded,
    /// The session is over; its last frame (if any) has been handed out.
    SessionEnded,
    /// Initiator: the acceptor answered REJECTED to the resume of a session whose session
    /// handshake never finished (nothing of it reached either application), so the session
    /// starts afresh: a fresh ClientHello and session Hello on the next link.
    StartedAfresh,
}

/// Why a session ended. Reported once, through [`Event::Ended`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum SessionEnd {
    /// Detached for longer than `recovery_timeout` / `resume_window`.
    RecoveryTimeout,
    /// The acceptor answered REJECTED: unknown or expired key (the session is lost).
    Rejected,
    /// The peer's resume position contradicts ours (behind what we trimmed, or ahead of what
    /// we sent). Data is never skipped: the session is lost instead.
    ResumeInconsistent,
    /// The peer sent PINGs faster than `min_ping_interval` too often.
    TooManyPings,
    /// We closed it with [`close`](super::Conduit::close).
    LocalClose {
        /// The code we sent.
        code: u32,
    },
    /// The peer sent GOODBYE; its reason is in [`peer_goodbye`](super::Conduit::peer_goodbye).
    PeerGoodbye {
        /// The peer's code.
        code: u32,
    },
    /// The owner (an endpoint evicting detached sessions) ended it.
    Evicted,
    /// Initiator: a sotto acceptor answered the first ClientHello REJECTED because it is
    /// full (`max_sessions` sessions live, none detached). Nothing was established; another
    /// try later, or at another acceptor, may succeed. (A vox acceptor, or a resume, gets
    /// [`Rejected`](Self::Rejected).)
    Full,
    /// Initiator: redialing failed with an error the connector marked permanent (a TLS
    /// certificate error, say): no further dial could succeed. Its driver keeps the error.
    PermanentDialError,
    /// Acceptor: the session was handed off to another acceptor (a new process) that took it
    /// over; its peer resumes there. Not a loss: the session lives on elsewhere.
    HandedOff,
    /// Initiator: the acceptor answered a resume REJECTED because the run of the acceptor
    /// that issued the key is gone (it restarted): a sotto acceptor with issuer-tagged keys
    /// says so ([`ServerHello::rejected_issuer_gone`](crate::wire::ServerHello::rejected_issuer_gone));
    /// a vox acceptor, or one without tagged keys, answers plain REJECTED
    /// ([`Rejected`](Self::Rejected)). The session is lost either way.
    IssuerGone,
}

impl SessionEnd {
    /// Whether this is a loss (the application did not ask for it) rather than a close.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        !matches!(self, Self::LocalClose { .. } | Self::PeerGoodbye { .. } | Self::HandedOff)
    }
}

/// GOODBYE codes sotto itself sends. Application codes should start at 0x100.
pub mod goodbye_code {
    /// Normal close.
    pub const NORMAL: u32 = 0;
    /// Resume positions contradict.
    pub const RESUME_INCONSISTENT: u32 = 1;
    /// Too many pings.
    pub const TOO_MANY_PINGS: u32 = 2;
    /// Session-layer protocol error.
    pub const PROTOCOL_ERROR: u32 = 3;
}

/// Something the driver must act on or may show. Drain with `poll_event` after every input.
///
/// Deliberately not `#[non_exhaustive]`: a driver must act on every event, so a new one is a
/// breaking change that the compiler points out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
pub enum Event {
    /// The handshake on `link` finished: frames flow.
    Attached {
        /// The link.
        link: LinkId,
        /// This is a resume of an existing session (not its first link).
        resumed: bool,
        /// Extensions are in force on this link.
        ext: bool,
        /// Frames that will be replayed before any new one.
        replaying: u64,
    },
    /// Close `link` now: every frame for it has already been handed out by `poll_transmit`.
    DropLink {
        /// The link.
        link: LinkId,
        /// Why.
        reason: LinkDropReason,
    },
    /// The replay ring has room again after `send` returned [`SendError::WouldBlock`].
    Writable,
    /// The session is over; no further link will be accepted.
    Ended(SessionEnd),
}

/// Why `send` refused an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum SendError {
    /// The replay ring is full; wait for [`Event::Writable`]. No seq was assigned.
    WouldBlock,
    /// The item exceeds `max_item_len`.
    TooLarge {
        /// The item's length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The session is closing or over.
    Ended,
}

/// What an input did besides (possibly) delivering an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum InputError {
    /// The input came from a link that is not current; it was ignored.
    StaleLink,
    /// The input made the conduit drop the link (an [`Event::DropLink`] follows).
    LinkDropped(LinkDropReason),
    /// The input ended the session (an [`Event::Ended`] follows).
    SessionEnded(SessionEnd),
    /// The session was already over; the input was ignored.
    AlreadyEnded,
}

/// What [`Conduit::observe_message`](super::Conduit::observe_message) did with a link
/// message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[must_use]
pub enum Observed {
    /// The message was handled in full, as `handle_message` handles it (a hello, a
    /// standalone ack, a PING, a PONG, or a malformed frame that dropped the link): do not
    /// feed it again.
    Handled,
    /// A data frame, held back: its acknowledgment (if any) was applied and it counted as
    /// traffic for the keepalive, but its item was not consumed. Feed it to
    /// `handle_message` later, in arrival order.
    Deferred,
    /// The peer's GOODBYE, held back behind the data before it (it counted as traffic).
    /// Feed it to `handle_message` later, in arrival order; it ends the session. The peer
    /// replays nothing after it, so the messages held back before it are its last words:
    /// a driver must not drop them when the link then ends.
    DeferredGoodbye,
}

impl core::fmt::Display for InputError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::StaleLink => f.write_str("input from a stale link"),
            Self::LinkDropped(r) => write!(f, "link dropped: {r}"),
            Self::SessionEnded(r) => write!(f, "session ended: {r}"),
            Self::AlreadyEnded => f.write_str("session already ended"),
        }
    }
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("replay ring full"),
            Self::TooLarge { len, max } => write!(f, "item of {len} bytes exceeds {max}"),
            Self::Ended => f.write_str("session closing or over"),
        }
    }
}

impl core::error::Error for InputError {}
impl core::error::Error for SendError {}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed frame: {e}"),
            Self::AckBeyondSent => f.write_str("ack for a frame never sent"),
            Self::StaleBeyondWindow => f.write_str("duplicate frame older than the duplicate window"),
            Self::UnexpectedHello => f.write_str("unexpected hello"),
            Self::FreshWithPosition => f.write_str("fresh ServerHello claiming a receive position"),
        }
    }
}

impl core::error::Error for Violation {}

impl core::fmt::Display for LinkDropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::HandshakeTimeout => f.write_str("handshake timed out"),
            Self::HandshakeFailed(e) => write!(f, "bad hello: {e}"),
            Self::Rejected => f.write_str("rejected by the acceptor"),
            Self::Violation(v) => write!(f, "protocol violation: {v}"),
            Self::Gap => f.write_str("frame past a gap (a resume refills it)"),
            Self::KeepaliveTimeout => f.write_str("keepalive timed out (link silent)"),
            Self::AckStarved => f.write_str("replay ring full with no ack in sight"),
            Self::Superseded => f.write_str("replaced by a newer link"),
            Self::SessionEnded => f.write_str("session ended"),
            Self::StartedAfresh => f.write_str("resume refused before the session handshake finished: starting afresh"),
        }
    }
}

impl core::error::Error for LinkDropReason {}

impl core::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::RecoveryTimeout => f.write_str("no link within the recovery timeout"),
            Self::Rejected => f.write_str("the acceptor rejected the session"),
            Self::ResumeInconsistent => f.write_str("the peer's resume position contradicts ours"),
            Self::TooManyPings => f.write_str("the peer sent too many pings"),
            Self::LocalClose { code } => write!(f, "closed locally (code {code})"),
            Self::PeerGoodbye { code } => write!(f, "closed by the peer (code {code})"),
            Self::Evicted => f.write_str("evicted by the acceptor"),
            Self::Full => f.write_str("the acceptor is full"),
            Self::PermanentDialError => f.write_str("a redial failed with an error marked permanent"),
            Self::HandedOff => f.write_str("handed off to another acceptor"),
            Self::IssuerGone => f.write_str("the acceptor run that held the session is gone (it restarted)"),
        }
    }
}

impl core::error::Error for SessionEnd {}

/// Fixed-capacity FIFO of events. Overflow (only possible if the driver ignores the
/// drain-after-every-input contract) drops the oldest and is counted.
#[derive(Debug)]
pub(crate) struct EventQueue {
    slots: [Option<Event>; 8],
    head: usize,
    len: usize,
    pub(crate) overflowed: u64,
}

impl EventQueue {
    pub(crate) const fn new() -> Self {
        Self { slots: [None; 8], head: 0, len: 0, overflowed: 0 }
    }
    pub(crate) fn push(&mut self, e: Event) {
        if self.len == self.slots.len() {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
            self.overflowed += 1;
        }
        let idx = (self.head + self.len) % self.slots.len();
        self.slots[idx] = Some(e);
        self.len += 1;
    }
    pub(crate) fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let e = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        e
    }
    /// The queued events, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        (0..self.len).filter_map(move |i| self.slots[(self.head + i) % self.slots.len()].as_ref())
    }
    pub(crate) fn peek(&self) -> Option<&Event> {
        if self.len == 0 {
            None
        } else {
            self.slots[self.head].as_ref()
        }
    }
    /// Remove queued events matching `f` (used when a link goes away before its DropLink
    /// was read).
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&Event) -> bool) {
        let n = self.len;
        for _ in 0..n {
            if let Some(e) = self.pop() {
                if f(&e) {
                    self.push(e);
                }
            }
        }
    }
}
