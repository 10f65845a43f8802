//! The model: what each application has sent, received, opened and closed, against which
//! the deliveries are checked.

use sotto_proto::session::ConnId;
use sotto_proto::SessionEnd;
use std::collections::{BTreeMap, BTreeSet};

/// One application's view of its session.
#[derive(Debug, Default)]
pub(super) struct App {
    /// Payloads accepted by `send`, per connection.
    pub(super) sent: BTreeMap<ConnId, Vec<Vec<u8>>>,
    /// Payloads delivered from the peer, per connection.
    pub(super) got: BTreeMap<ConnId, usize>,
    /// Bytes delivered and not released yet.
    pub(super) unreleased: BTreeMap<ConnId, usize>,
    pub(super) slow: BTreeSet<ConnId>,
    /// NoCredit seen; waiting for ConnWritable.
    pub(super) blocked: BTreeSet<ConnId>,
    pub(super) pending_accept: Vec<ConnId>,
    pub(super) opening: BTreeSet<ConnId>,
    pub(super) open: BTreeSet<ConnId>,
    pub(super) closed_by_me: BTreeSet<ConnId>,
    /// Connections we finished sending on.
    pub(super) finished_by_me: BTreeSet<ConnId>,
    /// Connections whose peer finished sending.
    pub(super) peer_finished: BTreeSet<ConnId>,
    pub(super) ready: bool,
    pub(super) ended: Option<SessionEnd>,
}

/// A payload: direction tag, connection, index, then a pattern.
pub(super) fn payload(server: bool, conn: ConnId, n: usize, extra: u8) -> Vec<u8> {
    let mut p = vec![if server { b'S' } else { b'C' }];
    p.extend_from_slice(&conn.to_le_bytes());
    p.extend_from_slice(&(n as u32).to_le_bytes());
    p.extend((0..extra).map(|i| i ^ n as u8));
    p
}
