//! The session layer's public value types: what arrives, what is reported, what fails.

use crate::conduit::{ConduitStats, Event as ConduitEvent, InputError, SendError as ConduitSendError};
use crate::wire::WireError;

use super::message::DataBatch;

/// A virtual connection id. 0 is the root connection; the initiator opens odd ids, the
/// acceptor even ones; ids are never reused within a session.
pub type ConnId = u32;

/// The root connection, open from the handshake until the session ends.
pub const ROOT: ConnId = 0;

/// A peer message handed to the application by
/// [`Session::handle_message`](super::Session::handle_message). Borrowed fields point into
/// the bytes the driver passed in (no copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The peer's handshake metadata (from its Hello or HelloYourself).
    PeerHello {
        /// The peer's metadata.
        metadata: &'a [u8],
    },
    /// Data on a connection. Once the application has consumed it, call
    /// [`release`](super::Session::release) with
    /// [`credit_of`](super::Session::credit_of)`(payload.len())`, so the peer gets credit back.
    Data {
        /// The connection.
        conn: ConnId,
        /// The payload.
        payload: &'a [u8],
    },
    /// Several data messages on a connection, in order (the peer batched messages it sent in
    /// a burst). Each is a message of its own to the application, as if it had come as
    /// [`Incoming::Data`]; release [`credit_of`](super::Session::credit_of) each as it is
    /// consumed ([`DataBatch::credit`] for all of them).
    DataBatch {
        /// The connection.
        conn: ConnId,
        /// The payloads.
        batch: DataBatch<'a>,
    },
    /// The peer wants to open `conn`: answer with [`accept`](super::Session::accept) or
    /// [`reject`](super::Session::reject).
    Open {
        /// The connection.
        conn: ConnId,
        /// The peer's metadata.
        metadata: &'a [u8],
    },
    /// The peer accepted a connection we opened.
    Accepted {
        /// The connection.
        conn: ConnId,
        /// The peer's metadata.
        metadata: &'a [u8],
    },
    /// The peer rejected a connection we opened; the id is spent.
    Rejected {
        /// The connection.
        conn: ConnId,
        /// The peer's code.
        code: u32,
        /// The peer's metadata.
        metadata: &'a [u8],
    },
    /// The peer finished sending on `conn` (its end of stream, protocol version 3):
    /// everything it sent on it has been delivered and nothing more will come; we may still
    /// send until we [`finish`](super::Session::finish) or close it. When we had finished
    /// already (`both`), the connection is over and gone from the table.
    Finished {
        /// The connection.
        conn: ConnId,
        /// We had finished our side too: the connection is fully closed.
        both: bool,
    },
    /// The peer closed a connection; everything it sent on it has been delivered.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The peer's metadata.
        metadata: &'a [u8],
    },
}

/// A session-layer rule the peer broke. We send `ProtocolError` with this code, then end the
/// session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum SessionViolation {
    /// An item that does not decode as a session message.
    Malformed(WireError) = 1,
    /// A handshake message out of place (a second Hello: settings cannot change across a
    /// resume or ever), or a non-handshake message before the handshake finished.
    UnexpectedHandshake = 2,
    /// An Open for id 0, for one of our ids, or of the wrong parity.
    WrongParity = 3,
    /// An Open reusing an id that was already used and closed (ids are never reused).
    IdReused = 4,
    /// Data or a grant for an id never opened.
    UnknownConnection = 5,
    /// A Close (or Reject) of the root connection.
    RootClosed = 6,
    /// Data beyond the credit we granted.
    CreditExceeded = 7,
    /// Metadata above `max_metadata`.
    MetadataTooLarge = 8,
    /// Peer-opened connections ended faster than `churn_budget` per `churn_period`.
    TooManyResets = 9,
    /// Data on a connection that is not open yet (before Accept).
    NotOpen = 10,
    /// Data or a second Fin on a connection after the peer's Fin (its end of stream).
    AfterFin = 11,
}

impl SessionViolation {
    /// The code sent in `ProtocolError`.
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::Malformed(_) => 1,
            Self::UnexpectedHandshake => 2,
            Self::WrongParity => 3,
            Self::IdReused => 4,
            Self::UnknownConnection => 5,
            Self::RootClosed => 6,
            Self::CreditExceeded => 7,
            Self::MetadataTooLarge => 8,
            Self::TooManyResets => 9,
            Self::NotOpen => 10,
            Self::AfterFin => 11,
        }
    }
    /// A short human-readable reason, sent with the code.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed session message",
            Self::UnexpectedHandshake => "unexpected handshake message",
            Self::WrongParity => "connection id of the wrong parity",
            Self::IdReused => "connection id reused",
            Self::UnknownConnection => "unknown connection id",
            Self::RootClosed => "the root connection cannot be closed",
            Self::CreditExceeded => "data beyond granted credit",
            Self::MetadataTooLarge => "metadata too large",
            Self::TooManyResets => "too many resets",
            Self::NotOpen => "data on a connection not yet open",
            Self::AfterFin => "data after the end of stream",
        }
    }
}

/// Codes of `Sorry` (handshake refusal) and of automatic `Reject`s.
pub mod refusal {
    /// Unsupported protocol version.
    pub const VERSION: u32 = 1;
    /// Both sides claim the same id parity.
    pub const PARITY: u32 = 2;
    /// A setting we cannot work with (zero credit, zero connections).
    pub const SETTINGS: u32 = 3;
    /// Metadata too large.
    pub const METADATA: u32 = 4;
    /// Reject: `max_connections` reached.
    pub const TOO_MANY_CONNECTIONS: u32 = 5;
    /// Reject: `max_pending_opens` reached.
    pub const TOO_MANY_PENDING: u32 = 6;
    /// Reject: the id is in use.
    pub const ID_IN_USE: u32 = 7;
    /// Reject: zero initial credit offered.
    pub const ZERO_CREDIT: u32 = 8;
}

/// Why a session failed at the session layer (the conduit's [`SessionEnd`](crate::SessionEnd)
/// says how the transport ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum SessionFailure {
    /// The peer broke a rule; we sent `ProtocolError`.
    Violation(SessionViolation),
    /// The peer reported a protocol error with this code.
    PeerProtocolError {
        /// The peer's code.
        code: u32,
    },
    /// We refused the handshake (`Sorry` sent) with this code.
    WeRefused {
        /// Our code.
        code: u32,
    },
    /// The peer refused the handshake with this code.
    PeerRefused {
        /// The peer's code.
        code: u32,
    },
}

/// Something the driver or application must know. Drain with
/// [`Session::poll_event`](super::Session::poll_event).
///
/// Deliberately not `#[non_exhaustive]`: a driver must act on every event, so a new one is a
/// breaking change that the compiler points out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionEvent {
    /// A conduit event (link attached or to drop, ring writable, session ended).
    Conduit(ConduitEvent),
    /// The session handshake finished: connections can be opened and data sent.
    Ready,
    /// `conn` has credit again after a send failed for lack of it.
    ConnWritable(ConnId),
}

/// Why a session command failed. No state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum CommandError {
    /// The session handshake has not finished.
    NotReady,
    /// The session is over or failing.
    Ended,
    /// The replay ring is full; retry after `Writable`.
    WouldBlock,
    /// The connection has no credit for this payload; retry after `ConnWritable`.
    NoCredit,
    /// The payload can never fit the peer's window on this connection.
    TooLarge {
        /// The payload's length.
        len: u32,
        /// The most it could be.
        max: u32,
    },
    /// No such connection in a state that allows this command.
    UnknownConnection,
    /// The connection exists but is not open (an Open awaits an answer).
    NotOpen,
    /// `max_connections` connections are open.
    TooManyConnections,
    /// Our connection ids are used up (`max_conn_id`); ids are never reused.
    IdsExhausted,
    /// Metadata above `max_metadata`.
    MetadataTooLarge,
    /// The peer speaks a protocol version without this command (half-close needs version
    /// 3; see [`HALF_CLOSE_VERSION`](super::message::HALF_CLOSE_VERSION)).
    Unsupported,
}

impl From<ConduitSendError> for CommandError {
    fn from(e: ConduitSendError) -> Self {
        match e {
            ConduitSendError::WouldBlock => Self::WouldBlock,
            ConduitSendError::TooLarge { len, max } => Self::TooLarge { len, max },
            ConduitSendError::Ended => Self::Ended,
        }
    }
}

impl core::fmt::Display for CommandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotReady => f.write_str("session handshake not finished"),
            Self::Ended => f.write_str("session over or failing"),
            Self::WouldBlock => f.write_str("replay ring full"),
            Self::NoCredit => f.write_str("no credit on this connection"),
            Self::TooLarge { len, max } => write!(f, "payload of {len} bytes exceeds {max}"),
            Self::UnknownConnection => f.write_str("no such connection in a state allowing this"),
            Self::NotOpen => f.write_str("connection not open (for this) yet or any more"),
            Self::TooManyConnections => f.write_str("max_connections reached"),
            Self::IdsExhausted => f.write_str("connection ids used up"),
            Self::MetadataTooLarge => f.write_str("metadata above max_metadata"),
            Self::Unsupported => f.write_str("the peer's protocol version lacks this (half-close needs version 3)"),
        }
    }
}

impl core::error::Error for CommandError {}

impl core::fmt::Display for SessionViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed session message: {e}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl core::error::Error for SessionViolation {}

impl core::fmt::Display for SessionFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Violation(v) => write!(f, "the peer broke a session rule: {v}"),
            Self::PeerProtocolError { code } => write!(f, "the peer reported protocol error {code}"),
            Self::WeRefused { code } => write!(f, "we refused the session handshake (code {code})"),
            Self::PeerRefused { code } => write!(f, "the peer refused the session handshake (code {code})"),
        }
    }
}

impl core::error::Error for SessionFailure {}

/// What an input did besides (possibly) handing over a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum SessionInputError {
    /// The conduit's verdict (stale link, link dropped, session ended).
    Conduit(InputError),
    /// The peer broke a session rule; `ProtocolError` was sent and the session is ending.
    Violation(SessionViolation),
    /// The handshake was refused (by us or the peer); the session is ending.
    Refused(SessionFailure),
}

impl core::fmt::Display for SessionInputError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Conduit(e) => e.fmt(f),
            Self::Violation(v) => write!(f, "the peer broke a session rule: {v}"),
            Self::Refused(r) => r.fmt(f),
        }
    }
}

impl core::error::Error for SessionInputError {}

/// Counters of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct SessionStats {
    /// The conduit's counters.
    pub conduit: ConduitStats,
    /// Connections in the table now (root excluded).
    pub connections_open: u64,
    /// Opens we sent.
    pub opens_sent: u64,
    /// Opens the peer sent.
    pub opens_received: u64,
    /// Opens we rejected automatically (limits).
    pub opens_auto_rejected: u64,
    /// Data messages dropped because their connection was recently closed (each message of
    /// a batch counts).
    pub data_dropped_closed: u64,
    /// Data messages we sent that joined an earlier message's item (a `DataBatch`) instead of
    /// taking an item of their own.
    pub messages_batched: u64,
    /// Accept/Reject/Close for ids not in a matching state, ignored.
    pub control_ignored: u64,
    /// Credit grants sent.
    pub grants_sent: u64,
}
