//! What a session sent that the peer never acknowledged, decoded back into session-layer
//! messages: a lost session's leftovers, for the application to send again elsewhere.
//!
//! Read from the replay ring ([`Conduit::unacked_items`](crate::Conduit::unacked_items)), so
//! nothing is kept twice and nothing is allocated: each value borrows the ring.
//!
//! See [`Unacked`] for what each kind of item means once the session is lost.

use super::message::{DataBatchIter, Message};
use super::{ConnId, Session};
use crate::conduit::UnackedItems;

/// One thing a session sent that the peer never acknowledged; see
/// [`Session::unacked_messages`].
///
/// What each kind of item means once the session is lost:
///
/// - `Data` and each message of a `DataBatch`: [`Unacked::Data`], in the order they were
///   sent, with their connection. The peer may have received it and not acknowledged it
///   yet (at-least-once across a loss).
/// - `Open`: [`Unacked::Open`]. The peer never acknowledged it, so for the peer the
///   connection never existed (it cannot have answered: its answer would have carried the
///   acknowledgment).
/// - `Accept` / `Reject` of a peer's Open: [`Unacked::Accept`] / [`Unacked::Reject`]; the
///   peer may never have learned the answer.
/// - `Close`: [`Unacked::Close`]; `Fin` (end of stream): [`Unacked::Fin`]. The peer may
///   not have seen the end of the connection or of its stream.
/// - `Credit` grants, the session handshake (`Hello`, `LetsGo`, `Sorry`) and
///   `ProtocolError`: skipped. They concern only the session that was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unacked<'a> {
    /// A message on `conn` (one of a batch, or sent alone).
    Data {
        /// Its connection.
        conn: ConnId,
        /// The payload, as sent.
        payload: &'a [u8],
    },
    /// Our Open of `conn`: the connection never existed for the peer.
    Open {
        /// The connection's id (ours).
        conn: ConnId,
        /// The Open's metadata.
        metadata: &'a [u8],
    },
    /// Our acceptance of the peer's Open of `conn`.
    Accept {
        /// The connection's id (the peer's).
        conn: ConnId,
        /// The Accept's metadata.
        metadata: &'a [u8],
    },
    /// Our rejection of the peer's Open of `conn`.
    Reject {
        /// The connection's id (the peer's).
        conn: ConnId,
        /// Why.
        code: u32,
        /// The Reject's metadata.
        metadata: &'a [u8],
    },
    /// Our Close of `conn`.
    Close {
        /// The connection's id.
        conn: ConnId,
        /// The Close's metadata.
        metadata: &'a [u8],
    },
    /// Our end of stream on `conn` (half-close), after its data.
    Fin {
        /// The connection's id.
        conn: ConnId,
    },
}

impl Unacked<'_> {
    /// The connection it concerns.
    #[must_use]
    pub fn conn(&self) -> ConnId {
        match *self {
            Self::Data { conn, .. }
            | Self::Open { conn, .. }
            | Self::Accept { conn, .. }
            | Self::Reject { conn, .. }
            | Self::Close { conn, .. }
            | Self::Fin { conn } => conn,
        }
    }
}

/// The session-layer messages of the unacknowledged items, in the order they were sent;
/// see [`Session::unacked_messages`].
#[derive(Clone, Debug)]
pub struct UnackedMessages<'a> {
    items: UnackedItems<'a>,
    /// The rest of a batch being read, and its connection.
    batch: Option<(ConnId, DataBatchIter<'a>)>,
}

impl<'a> Iterator for UnackedMessages<'a> {
    type Item = Unacked<'a>;

    fn next(&mut self) -> Option<Unacked<'a>> {
        loop {
            if let Some((conn, rest)) = &mut self.batch {
                if let Some(payload) = rest.next() {
                    return Some(Unacked::Data { conn: *conn, payload });
                }
                self.batch = None;
            }
            // Every item is one this session encoded, so it decodes; anything else (a raw
            // item put in the conduit under the session) is no session message: skipped.
            let Ok(msg) = Message::decode(self.items.next()?) else { continue };
            return Some(match msg {
                Message::Data { conn, payload } => Unacked::Data { conn, payload },
                Message::DataBatch { conn, batch } => {
                    self.batch = Some((conn, batch.iter()));
                    continue;
                }
                Message::Open { conn, metadata, .. } => Unacked::Open { conn, metadata },
                Message::Accept { conn, metadata, .. } => Unacked::Accept { conn, metadata },
                Message::Reject { conn, code, metadata } => Unacked::Reject { conn, code, metadata },
                Message::Close { conn, metadata } => Unacked::Close { conn, metadata },
                Message::Fin { conn } => Unacked::Fin { conn },
                Message::Credit { .. }
                | Message::Hello(_)
                | Message::HelloYourself(_)
                | Message::LetsGo
                | Message::Sorry { .. }
                | Message::ProtocolError { .. } => continue,
            });
        }
    }
}

impl Session {
    /// What this session sent that the peer never acknowledged, decoded: every message
    /// (each one of a batch on its own) with its connection, and the connection commands
    /// (open, answer, close, end of stream), in the order they were sent; credit grants and
    /// the handshake are left out (see [`Unacked`] for what each means).
    ///
    /// Call it once the session is lost ([`is_ended`](Self::is_ended)) to get back what may
    /// never have reached the peer's application, and send it again over a new session.
    /// Messages the peer acknowledged are not among them: its session held them. A message
    /// the peer received but had not acknowledged yet is: across a loss, delivery is at
    /// least once (exactly once within the session). Works at any time (while the session
    /// lives, it lists what is still in flight). Allocates nothing; see
    /// [`Conduit::unacked_items`](crate::Conduit::unacked_items) for the cost.
    pub fn unacked_messages(&mut self) -> UnackedMessages<'_> {
        UnackedMessages { items: self.conduit.unacked_items(), batch: None }
    }
}
