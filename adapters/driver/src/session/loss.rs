//! What an ended session leaves to the application: the messages the peer never
//! acknowledged, with their connections, in order, and the connections the application
//! held (to reopen on a new session). See [`SessionHandle::unacknowledged`].
//!
//! See [`Unacknowledged`] for the delivery guarantee across a loss.

use bytes::{Bytes, BytesMut};
use sotto_proto::session::{ConnId, Session, Unacked};
use sotto_proto::SessionEnd;

use super::state::{Owed, Phase, SessState};

/// What an ended session left unacknowledged; see [`SessionHandle::unacknowledged`].
///
/// # Delivery across a loss
///
/// Within a session every message is delivered exactly once, in order. When the session is
/// lost (the server restarted: its resume is REJECTED; the recovery timeout passed; a
/// permanent dial error), each message sent is in one of three states:
///
/// - **acknowledged**: the peer's session held it. It is not returned. (The peer's
///   application may not have read it before the peer itself died: that is the peer's loss,
///   as with any message handed to a process that then crashes.)
/// - **received, not yet acknowledged**: the peer's application may get it (its session
///   delivered it) *and* it is returned here. Acknowledgments are batched (`ack_delay`,
///   `ack_every`), so the last few messages before a loss are often in this state.
/// - **never received**: returned here.
///
/// So what the old peer's application received plus what is returned covers every message
/// sent: resending the returned ones over a new session gives **at-least-once** delivery
/// across the loss, in order per connection; an application that needs exactly-once across
/// a loss numbers its messages and lets the receiver drop repeats.
///
/// A session handed off to another process ([`SessionEnd::HandedOff`]) leaves nothing: it
/// lives on there, and that process replays what the peer never acknowledged.
///
/// Control messages: an `Open` the peer never acknowledged means the connection never existed
/// for the peer ([`LostConnection::unknown_to_peer`]); an unacknowledged answer to the peer's
/// Open, `Close` or end of stream is likewise something the peer may never have learned;
/// credit grants and the session handshake concern only the lost session and are left out.
///
/// [`SessionHandle::unacknowledged`]: super::SessionHandle::unacknowledged
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unacknowledged {
    /// How the session ended.
    pub end: SessionEnd,
    /// The connections the application held open (or was opening: until its `open` call
    /// returns the session's end) when the session ended, by id. Connections it had closed, or that the peer closed or rejected, are not
    /// listed (their unacknowledged messages are still in [`messages`](Self::messages)).
    pub connections: Vec<LostConnection>,
    /// Every message the peer never acknowledged, with its connection: in the order sent
    /// on each connection, and across connections in the order they entered the session.
    /// Includes what the driver held for a dropped sender, and what a connection's `Sink`
    /// had staged and could no longer send (once a flush, send or drop of that sender met
    /// the end).
    pub messages: Vec<UnackedMessage>,
}

/// A connection of an ended session; see [`Unacknowledged::connections`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostConnection {
    /// Its id in the ended session (a new session numbers its connections afresh).
    pub id: ConnId,
    /// We opened it (else the peer did, and only the peer can open it again).
    pub ours: bool,
    /// The metadata of its Open: ours for a connection we opened (open it again with it),
    /// the peer's for one it opened.
    pub open_metadata: Bytes,
    /// The peer never acknowledged our Open (ours) or our answer to its Open (the peer's):
    /// for the peer it never existed, or was never answered.
    pub unknown_to_peer: bool,
    /// We had finished sending on it (half-close): after resending its messages, finish
    /// it again.
    pub finished: bool,
}

/// One message the peer never acknowledged; see [`Unacknowledged::messages`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnackedMessage {
    /// Its connection's id in the ended session.
    pub conn: ConnId,
    /// The payload, as sent.
    pub payload: Bytes,
}

/// Collect what the ended session `s` left unacknowledged (`None` while it lives). Reads
/// the replay ring (made contiguous in place), then the driver's held sends, then what
/// senders staged and gave up; copies every payload into one buffer (one allocation).
pub(crate) fn unacknowledged(s: &mut Session, st: &SessState) -> Option<Unacknowledged> {
    let end = st.common.end(s.conduit())?;
    if end == SessionEnd::HandedOff {
        // The session lives on in the process that took it over, whose replay ring holds
        // these messages and replays them: sent again from here, they would arrive twice.
        return Some(Unacknowledged { end, connections: Vec::new(), messages: Vec::new() });
    }
    let mut opens_unacked: Vec<ConnId> = Vec::new();
    let mut finished_in_flight: Vec<ConnId> = Vec::new();
    let mut data: Vec<(ConnId, &[u8])> = Vec::new();
    for u in s.unacked_messages() {
        match u {
            Unacked::Data { conn, payload } => data.push((conn, payload)),
            Unacked::Open { conn, .. } | Unacked::Accept { conn, .. } => opens_unacked.push(conn),
            Unacked::Fin { conn } => finished_in_flight.push(conn),
            _ => {}
        }
    }
    let held = st.owed.iter().filter_map(|o| match o {
        Owed::Send(conn, item) => Some((*conn, &item[..])),
        _ => None,
    });
    let unsent = st.unsent.iter().map(|(conn, item)| (*conn, &item[..]));
    let all: Vec<(ConnId, &[u8])> = data.into_iter().chain(held).chain(unsent).collect();
    let mut buf = BytesMut::with_capacity(all.iter().map(|(_, p)| p.len()).sum());
    let messages = all
        .into_iter()
        .map(|(conn, payload)| {
            buf.extend_from_slice(payload);
            UnackedMessage { conn, payload: buf.split().freeze() }
        })
        .collect();
    let parity = s.parity();
    let mut connections: Vec<LostConnection> = st
        .conns
        .iter()
        .filter(|(_, slot)| {
            let over = matches!(slot.phase, Phase::Rejected { .. })
                || slot.local_closed
                || slot.peer_closed.is_some()
                || slot.abandoned
                || (slot.local_finished && slot.peer_finished);
            !over
        })
        .map(|(&id, slot)| {
            let ours = parity.owns(id);
            LostConnection {
                id,
                ours,
                open_metadata: if ours { slot.open_metadata.clone() } else { slot.metadata.clone() },
                unknown_to_peer: opens_unacked.contains(&id),
                finished: slot.local_finished || finished_in_flight.contains(&id),
            }
        })
        .collect();
    connections.sort_by_key(|c| c.id);
    Some(Unacknowledged { end, connections, messages })
}
