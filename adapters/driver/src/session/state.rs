//! The application-facing state of one session-layer session, kept next to the core
//! [`Session`] behind the same lock: per-connection inbound queues and wakers, peer Opens
//! waiting for the application, commands owed to the core, and the driver-managed
//! [`Common`] fields. The functions here are what the driver does to it for every input.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use sotto_proto::session::{
    CommandError, ConnId, DataBatch, Incoming, Session, SessionEvent as CoreEvent, SessionInputError,
    MIN_MESSAGE_CREDIT,
};
use sotto_proto::{Event, Instant, LinkId};

use super::inbox::Inbox;
use crate::shared::{wake, Common, WakerList};

/// Small payloads are copied into a per-connection arena of this many bytes (a new one when
/// full), then split off it as `Bytes`: no allocation per message, and queued small
/// messages keep only their own connection's arenas alive, never the shared read buffers.
const ARENA: usize = 8 << 10;

/// Reject code sent for a peer Open the application dropped without answering.
pub(crate) const DROPPED_OPEN_CODE: u32 = 0x100;

/// A hasher for connection ids (already unique small integers): one multiply and a fold,
/// so both hashbrown's bucket bits (low) and tag bits (high) vary. No DoS concern: ids are
/// bounded per session by `max_connections`.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

/// Connection id to value, hashed with [`IdHasher`].
pub(crate) type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<IdHasher>>;

/// Where a connection the application knows about is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// We sent Open; waiting for Accept or Reject.
    Opening,
    /// Open both ways.
    Open,
    /// The peer rejected our Open.
    Rejected { code: u32, metadata: Bytes },
}

/// One connection's application-facing state.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    pub(crate) phase: Phase,
    /// The peer's metadata: its Accept (our Opens) or its Open (its Opens).
    pub(crate) metadata: Bytes,
    /// Our Open's metadata (our Opens; empty for the peer's), for the connections a lost
    /// session reports ([`super::loss`]).
    pub(crate) open_metadata: Bytes,
    /// Delivered payloads waiting for the reader (bounded in bytes by credit).
    pub(crate) queue: Inbox,
    /// The queue reached `conn_inbound_items` (counted in `SessState::full_conns`).
    pub(crate) full: bool,
    /// Listed in `SessState::dirty` (its reader is woken after the current run).
    dirty: bool,
    /// The peer closed it, with this metadata.
    pub(crate) peer_closed: Option<Bytes>,
    /// We sent Close.
    pub(crate) local_closed: bool,
    /// The peer sent Fin (its end of stream): the reader ends once the queue is read.
    pub(crate) peer_finished: bool,
    /// We sent Fin: nothing more is sent.
    pub(crate) local_finished: bool,
    /// The application dropped every handle to it (only while `Opening`: resolved when the
    /// answer arrives).
    pub(crate) abandoned: bool,
    /// The application dropped the receiving half (the sending half lives on): data that
    /// arrives is released at once, so the peer's sender never waits for a reader that
    /// is gone.
    pub(crate) discard: bool,
    /// The reader (or the opener waiting for the answer).
    pub(crate) rx: Option<Waker>,
    /// The tasks waiting for credit: a [`ConnSender`](super::ConnSender) may be shared
    /// (`poll_send` takes `&self`), so every waiting task is listed and all are woken when
    /// credit arrives (the list holds each task once, and is emptied by every wake-up).
    pub(crate) tx: WakerList,
    /// Where small payloads are copied to (see [`ARENA`]).
    arena: BytesMut,
}

impl ConnSlot {
    pub(crate) fn new(phase: Phase, metadata: Bytes) -> Self {
        Self {
            phase,
            metadata,
            open_metadata: Bytes::new(),
            queue: Inbox::default(),
            full: false,
            dirty: false,
            peer_closed: None,
            local_closed: false,
            peer_finished: false,
            local_finished: false,
            abandoned: false,
            discard: false,
            rx: None,
            tx: WakerList::default(),
            arena: BytesMut::new(),
        }
    }
}

impl ConnSlot {
    /// The session has been idle: drop this connection's hold on its arena block (messages
    /// split off it keep their part alive; the next small payload starts a new block).
    pub(crate) fn release_arena(&mut self) {
        self.arena = BytesMut::new();
    }

    /// Queue one delivered payload for the reader: small ones copied into the arena, larger
    /// ones sliced from the read chunk they arrived in.
    #[inline]
    fn push(&mut self, payload: &[u8], chunk: &Bytes, copy_below: usize) {
        let item = if payload.len() < copy_below {
            if self.arena.capacity() - self.arena.len() < payload.len() {
                // The full arena lives on as long as messages split off it do.
                self.arena = BytesMut::with_capacity(ARENA.max(payload.len()));
            }
            self.arena.extend_from_slice(payload);
            self.arena.split().freeze()
        } else {
            chunk.slice_ref(payload)
        };
        self.queue.push_one(item);
    }

    /// Queue a batch whole (the reader cuts it into messages). Small messages on average:
    /// the body is copied into the arena in one piece; else it is sliced from the read chunk.
    fn push_batch(&mut self, batch: DataBatch<'_>, chunk: &Bytes, copy_below: usize) {
        let body = batch.as_bytes();
        let block = if (batch.payload_len() as usize) >= copy_below.saturating_mul(batch.count() as usize) {
            chunk.slice_ref(body)
        } else {
            if self.arena.capacity() - self.arena.len() < body.len() {
                self.arena = BytesMut::with_capacity(ARENA.max(body.len()));
            }
            self.arena.extend_from_slice(body);
            self.arena.split().freeze()
        };
        self.queue.push_batch(block, batch.count());
    }
}

/// A command the application issued from a `Drop` (which cannot wait) while it could not be
/// carried out: retried by the driver whenever it drains, in order per connection.
#[derive(Clone, Debug)]
pub(crate) enum Owed {
    /// Close the connection (the ring was full).
    Close(ConnId),
    /// Reject the peer's Open (the ring was full).
    Reject(ConnId, u32),
    /// Send a message the connection's `Sink` had accepted when its sender was dropped
    /// (no credit or no room in the ring then). At most one sink's staging per connection.
    Send(ConnId, Bytes),
}

impl Owed {
    fn conn(&self) -> ConnId {
        match self {
            Self::Close(c) | Self::Reject(c, _) | Self::Send(c, _) => *c,
        }
    }
}

/// A graceful close the application asked for, waiting (up to `deadline`) for the peer to
/// acknowledge the first `target` items over an established link; see
/// [`SessionHandle::close_within`](super::SessionHandle::close_within).
#[derive(Clone, Debug)]
pub(crate) struct PendingClose {
    pub(crate) code: u32,
    pub(crate) reason: String,
    pub(crate) target: u64,
    pub(crate) deadline: Instant,
}

/// Close the session now if its pending close is due: everything it waited for was
/// acknowledged and a link is up to carry the GOODBYE, or its deadline passed, or the
/// session ended. The driver calls this at the start of every step.
pub(crate) fn settle_close(s: &mut Session, st: &mut SessState, now: Instant) {
    let Some(pc) = &st.pending_close else { return };
    let c = s.conduit();
    if c.is_ended() || now >= pc.deadline || (c.is_established() && c.items_acked() >= pc.target) {
        if let Some(pc) = st.pending_close.take() {
            s.close(now, pc.code, &pc.reason);
        }
    }
}

/// Driver knobs that apply to the application queues.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    pub(crate) conn_items: usize,
    pub(crate) copy_below: usize,
    /// Messages fed per run (the read buffer is split off in runs of at most this many).
    pub(crate) feed_batch: usize,
}

/// Everything of a session the application's handles and the driver share, besides the core.
#[derive(Debug)]
pub(crate) struct SessState {
    pub(crate) common: Common,
    pub(crate) conns: ConnMap<ConnSlot>,
    /// Connections that got data in the current run.
    dirty: Vec<ConnId>,
    /// Connections whose queue is at `conn_items`: the driver holds the link's data back while
    /// any is (it keeps reading acks and keepalive).
    pub(crate) full_conns: usize,
    /// Peer Opens not yet taken by `accept`.
    pub(crate) incoming: VecDeque<(ConnId, Bytes)>,
    /// Tasks in `accept`.
    pub(crate) acceptors: WakerList,
    /// Tasks waiting for room in the replay ring.
    pub(crate) ring: WakerList,
    /// Tasks waiting for the peer's acknowledgment ([`poll_acked`]).
    pub(crate) acked: WakerList,
    /// The conduit's acknowledged count when `acked` was last woken.
    acked_seen: u64,
    /// The session handshake finished.
    pub(crate) ready: bool,
    pub(crate) peer_metadata: Option<Bytes>,
    pub(crate) owed: VecDeque<Owed>,
    /// Messages connection senders had staged and could not send because the session
    /// ended: returned by [`super::loss`], never sent.
    pub(crate) unsent: Vec<(ConnId, Bytes)>,
    pub(crate) tuning: Tuning,
    /// Payload bytes handed to readers (taken from the queues).
    pub(crate) delivered_bytes: u64,
    /// A close waiting for acknowledgments or a link ([`settle_close`]).
    pub(crate) pending_close: Option<PendingClose>,
    /// [`ProtocolConfig::close_timeout`](crate::ProtocolConfig::close_timeout).
    pub(crate) close_timeout: std::time::Duration,
    /// Connections of a session adopted from another process that the application has no
    /// handle on yet (`SessionHandle::adopted_connections`).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) adopted: Vec<ConnId>,
}

impl SessState {
    pub(crate) fn new(config: &crate::config::Config) -> Self {
        Self {
            common: Common::default(),
            conns: ConnMap::default(),
            dirty: Vec::new(),
            full_conns: 0,
            incoming: VecDeque::new(),
            acceptors: WakerList::default(),
            ring: WakerList::default(),
            acked: WakerList::default(),
            acked_seen: 0,
            ready: false,
            peer_metadata: None,
            owed: VecDeque::new(),
            unsent: Vec::new(),
            tuning: Tuning {
                // With a version-2 peer credit bounds a queue's messages too (at least
                // MIN_MESSAGE_CREDIT each): the count limit must never bind before it, or a
                // slow reader of tiny messages would stop the whole link.
                conn_items: config
                    .buffers
                    .conn_inbound_items
                    .max(1)
                    .max((config.protocol.initial_credit as u64 / MIN_MESSAGE_CREDIT) as usize + 1),
                copy_below: config.buffers.copy_below,
                feed_batch: config.buffers.inbound_items.max(1),
            },
            delivered_bytes: 0,
            pending_close: None,
            close_timeout: config.protocol.close_timeout,
            adopted: Vec::new(),
        }
    }

    /// Wake every application task waiting on this session.
    pub(crate) fn wake_all(&mut self) {
        self.common.watchers.wake_all();
        self.acceptors.wake_all();
        self.ring.wake_all();
        self.acked.wake_all();
        for slot in self.conns.values_mut() {
            wake(&mut slot.rx);
            slot.tx.wake_all();
        }
    }

    /// A reader took its queue: it is no longer full.
    pub(crate) fn unfull(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(&conn) {
            if slot.full {
                slot.full = false;
                self.full_conns -= 1;
                if self.full_conns == 0 {
                    self.common.wake_driver();
                }
            }
        }
    }
}

/// Wake the tasks waiting for acknowledgments if the peer acknowledged more since the
/// last call (the driver calls this after every input).
#[inline]
pub(crate) fn note_acks(s: &Session, st: &mut SessState) {
    let acked = s.conduit().items_acked();
    if acked != st.acked_seen {
        st.acked_seen = acked;
        st.acked.wake_all();
    }
}

/// `Ready(Ok)` once the peer acknowledged the first `target` items of the session,
/// `Ready(Err)` if the session ended before that; else registers `cx` for the next
/// acknowledgment.
pub(crate) fn poll_acked(
    s: &Session,
    st: &mut SessState,
    cx: &std::task::Context<'_>,
    target: u64,
) -> std::task::Poll<Result<(), sotto_proto::SessionEnd>> {
    use std::task::Poll;
    if s.conduit().items_acked() >= target {
        return Poll::Ready(Ok(()));
    }
    if let Some(end) = st.common.end(s.conduit()) {
        return Poll::Ready(Err(end));
    }
    st.acked.register(cx);
    Poll::Pending
}

/// The next conduit event for the driver; session-level events are handled here.
pub(crate) fn poll_event(s: &mut Session, st: &mut SessState) -> Option<Event> {
    loop {
        match s.poll_event()? {
            CoreEvent::Ready => {
                st.ready = true;
                st.common.watchers.wake_all();
            }
            CoreEvent::ConnWritable(conn) => {
                if let Some(slot) = st.conns.get_mut(&conn) {
                    slot.tx.wake_all();
                }
            }
            CoreEvent::Conduit(e) => return Some(e),
        }
    }
}

/// Feed one link message to the session and file what it delivered.
pub(crate) fn feed(s: &mut Session, st: &mut SessState, now: Instant, link: LinkId, msg: &[u8], chunk: &Bytes) {
    let incoming = match s.handle_message(now, link, msg) {
        Ok(Some(incoming)) => incoming,
        Ok(None) => return,
        Err(SessionInputError::Violation(v)) => return crate::trace::session_violation(v),
        Err(_) => return,
    };
    match incoming {
        Incoming::Data { conn, payload } => {
            let Some(slot) = st.conns.get_mut(&conn).filter(|c| !c.abandoned && !c.discard) else {
                // The root connection (unused by this API), one being torn down or one whose
                // reader is gone: give the credit straight back (a grant it queues goes out
                // with the drain that follows every feed).
                let _ = s.release(conn, s.credit_of(payload.len()) as usize);
                return;
            };
            slot.push(payload, chunk, st.tuning.copy_below);
            queued(st, now, conn);
        }
        Incoming::DataBatch { conn, batch } => {
            let Some(slot) = st.conns.get_mut(&conn).filter(|c| !c.abandoned && !c.discard) else {
                let _ = s.release(conn, batch.credit() as usize);
                return;
            };
            slot.push_batch(batch, chunk, st.tuning.copy_below);
            queued(st, now, conn);
        }
        Incoming::Open { conn, metadata } => {
            st.incoming.push_back((conn, Bytes::copy_from_slice(metadata)));
            st.acceptors.wake_all();
        }
        Incoming::Accepted { conn, metadata } => {
            let Some(slot) = st.conns.get_mut(&conn) else { return };
            if slot.abandoned {
                st.conns.remove(&conn);
                owe(s, st, now, Owed::Close(conn));
            } else {
                slot.phase = Phase::Open;
                slot.metadata = Bytes::copy_from_slice(metadata);
                wake(&mut slot.rx);
                slot.tx.wake_all();
            }
        }
        Incoming::Rejected { conn, code, metadata } => {
            let Some(slot) = st.conns.get_mut(&conn) else { return };
            if slot.abandoned {
                st.conns.remove(&conn);
            } else {
                slot.phase = Phase::Rejected { code, metadata: Bytes::copy_from_slice(metadata) };
                wake(&mut slot.rx);
                slot.tx.wake_all();
            }
        }
        Incoming::Finished { conn, .. } => {
            if let Some(slot) = st.conns.get_mut(&conn) {
                slot.peer_finished = true;
                wake(&mut slot.rx);
            }
        }
        Incoming::Closed { conn, metadata } => {
            if let Some(slot) = st.conns.get_mut(&conn) {
                slot.peer_closed = Some(Bytes::copy_from_slice(metadata));
                wake(&mut slot.rx);
                slot.tx.wake_all();
            } else {
                // Closed before the application took its Open.
                st.incoming.retain(|(c, _)| *c != conn);
            }
        }
        Incoming::PeerHello { metadata } => st.peer_metadata = Some(Bytes::copy_from_slice(metadata)),
    }
}

/// Data was queued on `conn`: note its reader for waking after the run, and whether its
/// queue is full now.
fn queued(st: &mut SessState, now: Instant, conn: ConnId) {
    st.common.delivered(now);
    let Some(slot) = st.conns.get_mut(&conn) else { return };
    if !slot.dirty {
        slot.dirty = true;
        st.dirty.push(conn);
    }
    if !slot.full && slot.queue.entries() >= st.tuning.conn_items {
        slot.full = true;
        st.full_conns += 1;
    }
}

/// A run of messages was fed: wake each reader that got data, once.
pub(crate) fn fed(st: &mut SessState) {
    let SessState { dirty, conns, .. } = st;
    for conn in dirty.drain(..) {
        if let Some(slot) = conns.get_mut(&conn) {
            slot.dirty = false;
            wake(&mut slot.rx);
        }
    }
}

/// Issue `owed` now, or keep it for the driver to retry when the ring has room.
pub(crate) fn owe(s: &mut Session, st: &mut SessState, now: Instant, owed: Owed) {
    if st.owed.is_empty() && !matches!(issue(s, now, &owed), Err(CommandError::WouldBlock)) {
        st.common.wake_driver();
        return;
    }
    st.owed.push_back(owed);
    st.common.wake_driver();
}

fn issue(s: &mut Session, now: Instant, owed: &Owed) -> Result<(), CommandError> {
    match owed {
        Owed::Close(conn) => s.close_conn(now, *conn, &[]),
        Owed::Reject(conn, code) => s.reject(now, *conn, *code, &[]),
        Owed::Send(conn, item) => s.send(*conn, item),
    }
}

/// Retry owed commands in order while the ring has room. A send without credit waits, and
/// what follows it on its connection (more sends, the close) waits behind it; other
/// connections' commands go on.
pub(crate) fn flush_owed(s: &mut Session, st: &mut SessState, now: Instant) {
    if s.is_ended() {
        // Kept: a dropped sender's messages are returned with the session's unacknowledged
        // ones ([`super::loss`]).
        return;
    }
    let mut blocked: Vec<ConnId> = Vec::new();
    let mut i = 0;
    while let Some(owed) = st.owed.get(i) {
        let conn = owed.conn();
        if blocked.contains(&conn) {
            i += 1;
            continue;
        }
        match issue(s, now, owed) {
            Err(CommandError::WouldBlock) => return,
            Err(CommandError::NoCredit) => {
                blocked.push(conn);
                i += 1;
            }
            result => {
                if let (Err(e), Owed::Send(..)) = (result, owed) {
                    // The connection or the session is over: like every unsent message then.
                    tracing::debug!(conn, error = ?e, "sotto: a dropped sink's message cannot be sent");
                }
                st.owed.remove(i);
            }
        }
    }
}

/// A dropped [`ConnSender`](super::ConnSender)'s `Sink` held `items` that could not be
/// queued then: the driver sends them (in order, before the connection's close) once
/// credit and the ring allow.
pub(crate) fn owe_sends(st: &mut SessState, conn: ConnId, items: impl IntoIterator<Item = Bytes>) {
    st.owed.extend(items.into_iter().map(|item| Owed::Send(conn, item)));
    st.common.wake_driver();
}

/// The application dropped `conn`'s receiving half and keeps the sending half: release the
/// credit of what is queued, and of whatever arrives from now on.
pub(crate) fn discard_incoming(s: &mut Session, st: &mut SessState, conn: ConnId) {
    let Some(slot) = st.conns.get_mut(&conn) else { return };
    slot.discard = true;
    let credit: u64 = slot.queue.lens().map(|len| s.credit_of(len)).sum();
    slot.queue.clear();
    if credit > 0 && s.release(conn, credit as usize) > 0 {
        st.common.wake_driver();
    }
    st.unfull(conn);
}

/// The application dropped every handle to `conn`: close it (or, while our Open is
/// unanswered, remember to close it when the answer comes).
pub(crate) fn abandon(s: &mut Session, st: &mut SessState, now: Instant, conn: ConnId) {
    let Some(slot) = st.conns.get_mut(&conn) else { return };
    if slot.phase == Phase::Opening && !s.is_ended() {
        slot.abandoned = true;
        slot.queue.clear();
        return;
    }
    st.unfull(conn);
    let Some(slot) = st.conns.remove(&conn) else { return };
    if slot.phase == Phase::Open
        && !slot.local_closed
        && slot.peer_closed.is_none()
        && !(slot.local_finished && slot.peer_finished)
    {
        owe(s, st, now, Owed::Close(conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_gives_its_arena_block_back_and_messages_survive() {
        let mut c = ConnSlot::new(Phase::Open, Bytes::new());
        let chunk = Bytes::from_static(b"unused");
        c.push(b"small", &chunk, 4096);
        assert!(c.arena.capacity() >= ARENA - 5, "the rest of the block is held");
        c.release_arena();
        assert_eq!(c.arena.capacity(), 0);
        assert_eq!(c.queue.messages(), 1);
        c.push(b"again", &chunk, 4096);
        assert_eq!(c.queue.messages(), 2);
    }
}
