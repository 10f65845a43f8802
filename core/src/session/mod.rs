//! The session layer: virtual connections with credit flow control, riding inside conduit
//! items. See [`Session`] for the contract and docs/protocol.md for the encoding.

mod config;
mod conn_table;
mod export;
pub mod message;
mod receive;
mod types;
mod unacked;

pub use config::SessionConfig;
pub use message::{
    message_credit, DataBatch, DataBatchIter, Message, Parity, HALF_CLOSE_VERSION, MIN_MESSAGE_CREDIT,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, READY_ON_HELLO_VERSION,
};
pub use types::{
    refusal, CommandError, ConnId, Incoming, SessionEvent, SessionFailure, SessionInputError, SessionStats,
    SessionViolation, ROOT,
};
pub use unacked::{Unacked, UnackedMessages};

use alloc::vec;
use alloc::vec::Vec;

use crate::conduit::{
    goodbye_code, Conduit, ConfigError, Event as ConduitEvent, LendingTransmit, LentItem, LinkId, Role, Transmit,
};
use crate::time::Instant;
use crate::wire::{ClientHello, ResumeKey};
use conn_table::{Conn, ConnState, ConnTable};
use message::HelloBody;

/// Where the session handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Initiator: Hello sent, waiting for HelloYourself or Sorry.
    AwaitHelloYourself,
    /// Acceptor: waiting for Hello.
    AwaitHello,
    /// Acceptor: HelloYourself sent, waiting for LetsGo or Sorry.
    AwaitLetsGo,
    /// Connections and data flow.
    Ready,
    /// Failed; the conduit is closing. Inputs are ignored.
    Failed,
}

/// The newest small data item we queued: a `DataBatch` that more messages may join, or a
/// plain `Data` whose successor on the same connection, if it comes while this one is still
/// unsent (a burst), starts a batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenBatch {
    conn: ConnId,
    seq: u64,
    len: usize,
    /// A `DataBatch` (else a plain `Data`).
    batch: bool,
}

/// A session endpoint: a [`Conduit`] plus virtual connections multiplexed inside its items,
/// each with per-direction credit flow control in bytes.
///
/// # Contract
///
/// The same as [`Conduit`]'s, with the session's own commands: link lifecycle
/// ([`link_up`](Self::link_up), [`link_down`](Self::link_down)), inputs
/// ([`handle_message`](Self::handle_message), [`handle_timeout`](Self::handle_timeout)),
/// commands ([`open`](Self::open), [`accept`](Self::accept), [`reject`](Self::reject),
/// [`send`](Self::send), [`release`](Self::release), [`close_conn`](Self::close_conn),
/// [`close`](Self::close)), and outputs ([`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout)). Drain every output
/// after every input or command.
///
/// Peer messages are returned by `handle_message` as [`Incoming`] values borrowing the input.
/// The application calls [`release`](Self::release) for consumed data so the peer gets
/// credit back; a connection whose reader is slow runs out of credit without stalling the
/// others. Connections and their state survive link changes untouched: the conduit replays
/// underneath. Every table is sized in [`new`](Self::new); nothing is allocated afterwards.
#[derive(Debug)]
pub struct Session {
    pub(crate) conduit: Conduit,
    pub(crate) config: SessionConfig,
    pub(crate) parity: Parity,
    /// The newest protocol version we speak in this session (announced in our Hello; the
    /// most we answer a Hello with).
    pub(crate) version: u32,
    pub(crate) phase: Phase,
    pub(crate) conns: ConnTable,
    /// Next id we allocate (u64 so exhaustion is detectable).
    pub(crate) next_local_id: u64,
    /// Highest id the peer has opened (0 if none).
    pub(crate) highest_peer_id: u32,
    pub(crate) pending_in: u32,
    /// Our HelloYourself metadata (acceptor), copied at construction.
    pub(crate) hello_metadata: Vec<u8>,
    pub(crate) churn_window_start: Instant,
    pub(crate) churn_count: u32,
    /// Connections owed a `ConnWritable` (ring of ids; each present at most once).
    pub(crate) writable: Vec<ConnId>,
    pub(crate) writable_head: usize,
    pub(crate) writable_len: usize,
    /// Reject codes owed for peer Opens refused while the ring was full.
    pub(crate) owed_rejects: Vec<(ConnId, u32)>,
    pub(crate) grants_owed: bool,
    pub(crate) ready_event: bool,
    /// The peer speaks protocol version 2 or later: `DataBatch` goes both ways.
    pub(crate) peer_batches: bool,
    /// The peer speaks protocol version 3 or later: `Fin` (half-close) goes both ways.
    pub(crate) peer_half_close: bool,
    pub(crate) open_batch: Option<OpenBatch>,
    /// `batch_bytes` capped at the largest item.
    pub(crate) batch_limit: usize,
    /// The largest payload the send fast path batches: a quarter of `batch_limit` (what
    /// joins a batch at all), below 16 KiB (a length prefix of at most two bytes).
    pub(crate) fast_max: usize,
    pub(crate) failure: Option<SessionFailure>,
    pub(crate) stats: SessionStats,
}

impl Session {
    /// Build a session endpoint. `hello_metadata` (at most `max_metadata` bytes) goes in our
    /// Hello (initiator) or HelloYourself (acceptor). The initiator queues its Hello now, so
    /// it leaves on the first link. Allocates every table now; the conduit's replay ring grows
    /// as items need room (see [`Conduit::new`]).
    pub fn new(role: Role, config: SessionConfig, hello_metadata: &[u8]) -> Result<Self, ConfigError> {
        Self::speaking(role, config, hello_metadata, PROTOCOL_VERSION)
    }

    /// [`new`](Self::new), speaking protocol `version` at most (from
    /// [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`], else
    /// [`ConfigError::SessionLimits`]): an initiator announces it in its Hello, an acceptor
    /// answers with it at most. For an initiator whose Hello an acceptor of an older version
    /// refused ([`SessionFailure::PeerRefused`] with [`refusal::VERSION`]: acceptors of
    /// version 2 and older refuse newer Hellos): a new session speaking the older version
    /// (2: without half-close) works with it.
    pub fn speaking(
        role: Role,
        config: SessionConfig,
        hello_metadata: &[u8],
        version: u32,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(ConfigError::SessionLimits);
        }
        if hello_metadata.len() > config.max_metadata as usize
            || hello_metadata.len() + 32 > config.conduit.max_item_len() as usize
        {
            return Err(ConfigError::SessionLimits);
        }
        let capacity = config.connection_cap().unwrap_or(1) as usize + 1;
        let parity = match role {
            Role::Initiator => Parity::Odd,
            Role::Acceptor => Parity::Even,
        };
        let hello = hello_metadata.to_vec();
        let mut s = Self {
            conduit: Conduit::new(role, config.conduit)?,
            config,
            parity,
            version,
            phase: if role == Role::Initiator { Phase::AwaitHelloYourself } else { Phase::AwaitHello },
            conns: ConnTable::new(capacity),
            next_local_id: if parity == Parity::Odd { 1 } else { 2 },
            highest_peer_id: 0,
            pending_in: 0,
            hello_metadata: hello,
            churn_window_start: Instant::ZERO,
            churn_count: 0,
            writable: Vec::new(),
            writable_head: 0,
            writable_len: 0,
            owed_rejects: Vec::new(),
            grants_owed: false,
            ready_event: false,
            peer_batches: false,
            peer_half_close: false,
            open_batch: None,
            batch_limit: config.batch_bytes.min(config.conduit.max_item_len()) as usize,
            fast_max: (config.batch_bytes.min(config.conduit.max_item_len()) as usize / 4).min(0x3fff),
            failure: None,
            stats: SessionStats::default(),
        };
        s.start();
        Ok(s)
    }

    /// Forget the session and start afresh as a new one with the same role, configuration and
    /// hello metadata, keeping every allocation (endpoints reuse session slots this way).
    pub fn reset(&mut self) {
        self.conduit.reset();
        self.phase = if self.conduit.role() == Role::Initiator { Phase::AwaitHelloYourself } else { Phase::AwaitHello };
        self.conns.clear();
        self.next_local_id = if self.parity == Parity::Odd { 1 } else { 2 };
        self.highest_peer_id = 0;
        self.pending_in = 0;
        self.churn_window_start = Instant::ZERO;
        self.churn_count = 0;
        self.writable_head = 0;
        self.writable_len = 0;
        self.owed_rejects.clear();
        self.grants_owed = false;
        self.ready_event = false;
        self.peer_batches = false;
        self.peer_half_close = false;
        self.open_batch = None;
        self.failure = None;
        self.stats = SessionStats::default();
        self.start();
    }

    /// Insert the root connection and, as initiator, queue the Hello (early, if configured).
    fn start(&mut self) {
        self.conduit.set_early_first_frame(self.config.early_hello);
        self.conns.insert(Conn {
            id: ROOT,
            state: ConnState::Open,
            send_credit: 0,
            recv_window: u64::from(self.config.initial_credit),
            pending_grant: 0,
            want_writable: false,
            peer_window: 0,
        });
        if self.conduit.role() == Role::Initiator {
            let body = HelloBody {
                version: self.version,
                parity: self.parity,
                root_credit: self.config.initial_credit,
                max_connections: self.config.connection_cap().unwrap_or(1),
                metadata: &self.hello_metadata,
            };
            let mut h = [0u8; message::MAX_HEADER_LEN];
            let (head, tail) = Message::Hello(body).encode_parts(&mut h);
            // The ring is empty and the metadata fits an item (checked in `new`).
            let queued = self.conduit.send_vectored(&[head, tail]);
            debug_assert!(queued.is_ok(), "the Hello fits an empty ring");
        }
    }

    // ---- getters ----

    /// The conduit underneath (read-only: its stats, key, link state).
    #[must_use]
    pub fn conduit(&self) -> &Conduit {
        &self.conduit
    }
    /// Grow the replay ring to its caps now (see [`Conduit::reserve_buffers`]), and the
    /// connection tables to `max_connections`: nothing is allocated later, not even while the
    /// session warms up (they otherwise grow by doubling as connections open).
    pub fn reserve_buffers(&mut self) {
        self.conduit.reserve_buffers();
        self.conns.reserve_full();
        if self.writable.len() < self.conns.capacity() {
            self.resize_writable(self.conns.capacity());
        }
        let owed = self.config.max_pending_opens as usize + 1;
        self.owed_rejects.reserve(owed.saturating_sub(self.owed_rejects.len()));
    }
    /// Give back replay-ring memory the unacked items do not need; see
    /// [`Conduit::shrink_buffers`] (call when the session has been idle for a while).
    /// Returns the bytes freed.
    pub fn shrink_buffers(&mut self) -> usize {
        self.conduit.shrink_buffers()
    }
    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// Whether the session handshake has finished.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }
    /// Whether the session is over (see the conduit's [`ended`](Conduit::ended) for how, and
    /// [`failure`](Self::failure) for a session-layer cause).
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.conduit.is_ended()
    }
    /// The session-layer failure, if any.
    #[must_use]
    pub fn failure(&self) -> Option<SessionFailure> {
        self.failure
    }
    /// Our id parity.
    #[must_use]
    pub fn parity(&self) -> Parity {
        self.parity
    }
    /// Whether `conn` is open both ways.
    #[must_use]
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|c| c.state == ConnState::Open)
    }
    /// Whether we may still send on `conn`: open, and we have not
    /// [`finish`](Self::finish)ed it (the peer may have finished its side).
    #[must_use]
    pub fn can_send_on(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|c| c.state.we_send())
    }
    /// Whether the peer may still send on `conn`: open, and it has not finished its side
    /// (we may have finished ours).
    #[must_use]
    pub fn can_receive_on(&self, conn: ConnId) -> bool {
        self.conns.get(conn).is_some_and(|c| c.state.peer_sends())
    }
    /// Whether half-close ([`finish`](Self::finish)) works in this session: the handshake
    /// found a peer of protocol version 3 or later ([`HALF_CLOSE_VERSION`]).
    #[must_use]
    pub fn half_close_supported(&self) -> bool {
        self.peer_half_close
    }
    /// The credit a data message of `len` bytes spends, both ways, in this session: `len`,
    /// but at least [`MIN_MESSAGE_CREDIT`] once the handshake found a version-2 peer. The
    /// application [`release`](Self::release)s this much for each message it consumed.
    #[inline]
    #[must_use]
    pub fn credit_of(&self, len: usize) -> u64 {
        message_credit(len as u64, self.peer_batches)
    }
    /// Credit we may spend on `conn` now (the peer's grants, capped by our `max_credit`):
    /// [`credit_of`](Self::credit_of) per message.
    #[must_use]
    pub fn send_credit(&self, conn: ConnId) -> u64 {
        let max = u64::from(self.config.max_credit);
        self.conns.get(conn).map_or(0, |c| c.send_credit.min(max))
    }
    /// Connections in the table (root excluded).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len() - 1
    }
    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats;
        s.conduit = self.conduit.stats();
        s.connections_open = self.connection_count() as u64;
        s
    }

    // ---- link lifecycle (forwarded) ----

    /// A fresh link is up; see [`Conduit::link_up`].
    pub fn link_up(&mut self, now: Instant, fresh_key: ResumeKey) -> LinkId {
        self.conduit.link_up(now, fresh_key)
    }
    /// A fresh link whose ClientHello an endpoint already read; see
    /// [`Conduit::link_up_with_hello`].
    pub fn link_up_with_hello(
        &mut self,
        now: Instant,
        fresh_key: ResumeKey,
        hello: &ClientHello,
    ) -> (LinkId, Result<(), crate::conduit::InputError>) {
        self.conduit.link_up_with_hello(now, fresh_key, hello)
    }
    /// The link is gone; see [`Conduit::link_down`].
    pub fn link_down(&mut self, now: Instant, link: LinkId) {
        self.conduit.link_down(now, link);
    }

    // ---- outputs ----

    /// Write the next frame; see [`Conduit::poll_transmit`]. Owed control messages (grants,
    /// rejects) enter the conduit first when it has room.
    #[inline]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.grants_owed || !self.owed_rejects.is_empty() {
            self.flush_owed();
        }
        self.conduit.poll_transmit(now, out)
    }
    /// [`poll_transmit`](Self::poll_transmit) lending items of `lend_from` bytes or more from
    /// the replay ring; see [`Conduit::poll_transmit_lending`].
    #[inline]
    pub fn poll_transmit_lending(&mut self, now: Instant, out: &mut [u8], lend_from: usize) -> Option<LendingTransmit> {
        if self.grants_owed || !self.owed_rejects.is_empty() {
            self.flush_owed();
        }
        self.conduit.poll_transmit_lending(now, out, lend_from)
    }
    /// Whether [`poll_transmit`](Self::poll_transmit) may produce a frame now: owed grants
    /// or rejects, or a frame the conduit has (see [`Conduit::has_transmit`]). When it is
    /// `false`, a driver may skip `poll_transmit` and call
    /// [`observe_time`](Self::observe_time) instead.
    #[inline]
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        self.grants_owed || !self.owed_rejects.is_empty() || self.conduit.has_transmit()
    }
    /// Tell the session the time without any other input; see [`Conduit::observe_time`].
    #[inline]
    pub fn observe_time(&mut self, now: Instant) {
        self.conduit.observe_time(now);
    }
    /// Bytes of a link message that is not complete yet arrived on `link`; see
    /// [`Conduit::handle_progress`].
    pub fn handle_progress(&mut self, now: Instant, link: LinkId) {
        self.conduit.handle_progress(now, link);
    }
    /// The bytes of a lent item; see [`Conduit::lent_item`].
    #[must_use]
    pub fn lent_item(&self, item: LentItem) -> Option<(&[u8], &[u8])> {
        self.conduit.lent_item(item)
    }
    /// The earliest deadline; see [`Conduit::poll_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conduit.poll_timeout()
    }
    /// Fire due timers; see [`Conduit::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conduit.handle_timeout(now);
    }
    /// The next event. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        if self.ready_event {
            self.ready_event = false;
            return Some(SessionEvent::Ready);
        }
        if self.writable_len > 0 {
            let id = self.writable[self.writable_head];
            self.writable_head = (self.writable_head + 1) % self.writable.len();
            self.writable_len -= 1;
            if let Some(c) = self.conns.get_mut(id) {
                c.want_writable = false;
                return Some(SessionEvent::ConnWritable(id));
            }
            return self.poll_event();
        }
        let e = self.conduit.poll_event()?;
        if matches!(e, ConduitEvent::Writable) {
            self.flush_owed();
        }
        Some(SessionEvent::Conduit(e))
    }

    // ---- commands ----

    /// Open a virtual connection with `metadata`. Returns its id (our parity, never reused);
    /// wait for [`Incoming::Accepted`] or [`Incoming::Rejected`] before sending on it.
    pub fn open(&mut self, metadata: &[u8]) -> Result<ConnId, CommandError> {
        self.check_ready()?;
        self.check_metadata(metadata)?;
        if self.conns.len() >= self.conns.capacity() {
            return Err(CommandError::TooManyConnections);
        }
        if self.next_local_id > u64::from(self.config.max_conn_id) {
            return Err(CommandError::IdsExhausted);
        }
        let id = self.next_local_id as u32;
        self.send_msg(&Message::Open { conn: id, credit: self.config.initial_credit, metadata })?;
        self.next_local_id += 2;
        self.conns.insert(Conn {
            id,
            state: ConnState::OpeningOut,
            send_credit: 0,
            recv_window: u64::from(self.config.initial_credit),
            pending_grant: 0,
            want_writable: false,
            peer_window: 0,
        });
        self.stats.opens_sent += 1;
        Ok(id)
    }

    /// Accept the peer's Open of `conn` with `metadata`.
    pub fn accept(&mut self, conn: ConnId, metadata: &[u8]) -> Result<(), CommandError> {
        self.check_live()?;
        self.check_metadata(metadata)?;
        match self.conns.get(conn) {
            Some(c) if c.state == ConnState::PendingIn => {}
            Some(_) => return Err(CommandError::NotOpen),
            None => return Err(CommandError::UnknownConnection),
        }
        self.send_msg(&Message::Accept { conn, credit: self.config.initial_credit, metadata })?;
        if let Some(c) = self.conns.get_mut(conn) {
            c.state = ConnState::Open;
        }
        self.pending_in -= 1;
        Ok(())
    }

    /// Reject the peer's Open of `conn` with `code` and `metadata`; the id is spent.
    pub fn reject(&mut self, now: Instant, conn: ConnId, code: u32, metadata: &[u8]) -> Result<(), CommandError> {
        self.check_live()?;
        self.check_metadata(metadata)?;
        match self.conns.get(conn) {
            Some(c) if c.state == ConnState::PendingIn => {}
            Some(_) => return Err(CommandError::NotOpen),
            None => return Err(CommandError::UnknownConnection),
        }
        self.send_msg(&Message::Reject { conn, code, metadata })?;
        self.conns.remove(conn);
        self.pending_in -= 1;
        // The application's own decision: not peer churn.
        let _ = now;
        Ok(())
    }

    /// Send `payload` on `conn`. Needs [`credit_of`](Self::credit_of)`(payload.len())` of
    /// credit (else [`CommandError::NoCredit`] and a [`SessionEvent::ConnWritable`] later) and
    /// room in the replay ring (else [`CommandError::WouldBlock`] and a `Writable` later). A
    /// payload whose credit is above half the peer's window on `conn` (or above the largest
    /// item) is [`CommandError::TooLarge`]: the peer grants credit back once half its window is
    /// owed, so a larger payload could wait for credit forever. Nothing is queued on failure.
    ///
    /// A small payload (up to a quarter of [`SessionConfig::batch_bytes`]) sent to a version-2
    /// peer joins the previous message's item when that item is a batch on the same
    /// connection, not yet transmitted and with room; it starts a new batch item when the
    /// previous message went to the same connection and is still unsent (a burst); otherwise
    /// it travels as plain Data. Either way it is delivered once, in order, as a message of
    /// its own.
    #[inline]
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), CommandError> {
        if self.extend_open_batch(conn, payload) {
            return Ok(());
        }
        self.send_general(conn, payload)
    }

    /// The common case of [`send`](Self::send) in a burst, checked with the fewest steps: a
    /// payload small enough to be batched (a length prefix of one or two bytes) joining the
    /// open batch of the same connection, with credit, and room for it in the replay ring
    /// right after the tail.
    /// `true` once it has joined, with exactly the outcome `send_general` would have had;
    /// `false` with nothing changed in every other case (including every refusal), which
    /// `send_general` then handles.
    #[inline(always)]
    fn extend_open_batch(&mut self, conn: ConnId, payload: &[u8]) -> bool {
        let Some(b) = &mut self.open_batch else { return false };
        let len = payload.len();
        // `b.len` counts the batch's header, so within `batch_limit` (at most the largest
        // item) the message is also within the largest payload `send_general` allows.
        // The length prefix: a varint of one byte below 128, else of two (`fast_max`).
        let n = if len < 0x80 { 1 } else { 2 };
        if b.conn != conn
            || !b.batch
            || len > self.fast_max
            || b.len + n + len > self.batch_limit
            || self.phase != Phase::Ready
            || !self.peer_batches
        {
            return false;
        }
        let Some(c) = self.conns.get_hot_mut(conn) else { return false };
        let cost = message_credit(len as u64, true);
        // `cost` is at least `len`: within half the peer's window, the payload is too.
        if !c.state.we_send()
            || cost > c.peer_window.div_ceil(2)
            || cost > c.send_credit.min(u64::from(self.config.max_credit))
            || !if n == 1 {
                self.conduit.try_extend_newest(b.seq, [len as u8], payload)
            } else {
                self.conduit.try_extend_newest(b.seq, [len as u8 | 0x80, (len >> 7) as u8], payload)
            }
        {
            return false;
        }
        b.len += n + len;
        c.send_credit -= cost;
        self.stats.messages_batched += 1;
        true
    }

    /// [`send`](Self::send) in every case: checks in the order of its contract, then joins
    /// the open batch, starts one, or queues plain Data.
    fn send_general(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), CommandError> {
        if self.phase != Phase::Ready {
            self.check_ready()?;
        }
        let max_item = self.conduit.max_item_len() as usize - message::data_header_len(conn);
        let max_credit = u64::from(self.config.max_credit);
        let Some(c) = self.conns.get_mut(conn) else { return Err(CommandError::UnknownConnection) };
        if !c.state.we_send() {
            return Err(CommandError::NotOpen);
        }
        let len = payload.len() as u64;
        let cost = message_credit(len, self.peer_batches);
        let half_window = c.peer_window.div_ceil(2);
        let max = (half_window as usize).min(max_item);
        if payload.len() > max || cost > half_window {
            return Err(CommandError::TooLarge {
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                max: if half_window < MIN_MESSAGE_CREDIT && self.peer_batches { 0 } else { max as u32 },
            });
        }
        if cost > c.send_credit.min(max_credit) {
            // An ended session says so (no credit will ever come); checked here, off the
            // path of a send that has credit (the conduit refuses that one as `Ended`).
            if self.conduit.is_ended() || self.phase == Phase::Failed {
                return Err(CommandError::Ended);
            }
            c.want_writable = true;
            return Err(CommandError::NoCredit);
        }
        let batch_bytes = self.batch_limit;
        let mut h = [0u8; 11];
        // `Some(batch)`: a small message, remembered as the newest small item (a batch or not).
        let mut small = None;
        if self.peer_batches && batch_bytes > 0 && payload.len() <= batch_bytes / 4 {
            // A message starts a batch only in a burst: when the previous one went to the same
            // connection and is still unsent. Otherwise (connections taking turns, a trickle)
            // it travels as plain Data, which costs less than a batch of one.
            let mut burst = false;
            // Disjoint fields: the connection entry stays borrowed across the conduit calls.
            if let Some(b) = &mut self.open_batch {
                if b.conn == conn {
                    if b.batch {
                        let n = crate::wire::varint::encode_varint(len as u32, &mut h).unwrap_or(0);
                        if b.len + n + payload.len() <= batch_bytes
                            && self.conduit.extend_item(b.seq, b.len, &h[..n], payload)?
                        {
                            b.len += n + payload.len();
                            c.send_credit -= cost;
                            self.stats.messages_batched += 1;
                            return Ok(());
                        }
                    }
                    burst = self.conduit.is_unsent_newest(b.seq);
                }
            }
            small = Some(burst);
        }
        // One call site for the conduit's send, so that it stays inlined here.
        let n = if small == Some(true) {
            h[0] = message::TAG_DATA_BATCH;
            let n = 1 + crate::wire::varint::encode_varint(conn, &mut h[1..]).unwrap_or(0);
            n + crate::wire::varint::encode_varint(len as u32, &mut h[n..]).unwrap_or(0)
        } else {
            h[0] = message::TAG_DATA;
            1 + crate::wire::varint::encode_varint(conn, &mut h[1..]).unwrap_or(0)
        };
        let seq = self.conduit.send_with_header(&h[..n], payload)?;
        if let Some(batch) = small {
            self.open_batch = Some(OpenBatch { conn, seq, len: n + payload.len(), batch });
        }
        c.send_credit -= cost;
        Ok(())
    }

    /// The application consumed data received on `conn` worth `credit`: the
    /// [`credit_of`](Self::credit_of) each message's length (the length itself with a
    /// version-1 peer), added up; for a batch, [`DataBatch::credit`]. Gives the peer that
    /// much credit back (batched: a grant is sent once half the window is owed). Releasing
    /// only payload bytes would leak the difference for messages under
    /// [`MIN_MESSAGE_CREDIT`] bytes, and the connection would stall.
    ///
    /// Returns how many credit grants this call queued (usually 0): a driver that wakes its
    /// transmit loop only when there is something to send wakes it when this is not 0. (A
    /// grant that cannot be queued now, with the replay ring full, stays owed and goes out
    /// with a later call that drains.)
    #[inline]
    #[must_use = "a grant queued here waits for the driver's next drain of poll_transmit"]
    pub fn release(&mut self, conn: ConnId, credit: usize) -> u64 {
        let initial = u64::from(self.config.initial_credit);
        let Some(c) = self.conns.get_mut(conn) else { return 0 };
        let room = initial.saturating_sub(c.recv_window);
        c.pending_grant = (c.pending_grant + credit as u64).min(room);
        if c.pending_grant * 2 >= initial {
            self.grants_owed = true;
            let before = self.stats.grants_sent;
            self.flush_owed();
            return self.stats.grants_sent - before;
        }
        0
    }

    /// Close `conn` (ours or the peer's, open or still opening) with `metadata`. Data the peer
    /// sent before seeing the Close is dropped on arrival. The root connection cannot be closed.
    pub fn close_conn(&mut self, now: Instant, conn: ConnId, metadata: &[u8]) -> Result<(), CommandError> {
        self.check_live()?;
        self.check_metadata(metadata)?;
        if conn == ROOT {
            return Err(CommandError::NotOpen);
        }
        let state = match self.conns.get(conn) {
            Some(c) if c.state != ConnState::PendingIn => c.state,
            Some(_) => return Err(CommandError::NotOpen),
            None => return Err(CommandError::UnknownConnection),
        };
        self.send_msg(&Message::Close { conn, metadata })?;
        self.conns.remove(conn);
        // Our own close is not peer churn (request/response servers close every connection).
        let _ = (state, now);
        Ok(())
    }

    /// Finish sending on `conn` (half-close): queue a `Fin` after everything sent on it, so
    /// the peer reads the end of its stream once it has read all of that; the other
    /// direction stays open. Once both sides have finished, the connection is over (gone
    /// from the table, its id spent), as after a Close. After this, [`send`](Self::send) on
    /// `conn` fails with [`CommandError::NotOpen`]; [`close_conn`](Self::close_conn) still
    /// aborts it both ways.
    ///
    /// Errors: [`CommandError::Unsupported`] with a peer of protocol version 2 or older (no
    /// `Fin`: close the connection instead), `NotOpen` if it is not open for sending (not
    /// answered yet, already finished, the root connection), `UnknownConnection`,
    /// `WouldBlock` (retry after `Writable`), `Ended`. Nothing changed on failure.
    pub fn finish(&mut self, conn: ConnId) -> Result<(), CommandError> {
        self.check_ready()?;
        if !self.peer_half_close {
            return Err(CommandError::Unsupported);
        }
        if conn == ROOT {
            return Err(CommandError::NotOpen);
        }
        let state = match self.conns.get(conn) {
            Some(c) if c.state.we_send() => c.state,
            Some(_) => return Err(CommandError::NotOpen),
            None => return Err(CommandError::UnknownConnection),
        };
        self.send_msg(&Message::Fin { conn })?;
        if state == ConnState::GotFin {
            // Both sides are done.
            self.conns.remove(conn);
        } else if let Some(c) = self.conns.get_mut(conn) {
            c.state = ConnState::SentFin;
            c.want_writable = false;
        }
        Ok(())
    }

    /// End the session at once for an owner's reason (an endpoint evicting it); see
    /// [`Conduit::end`].
    pub fn conduit_end(&mut self, now: Instant, reason: crate::conduit::SessionEnd) {
        self.conduit.end(now, reason);
    }

    /// End the session gracefully (GOODBYE after queued data); see [`Conduit::close`].
    pub fn close(&mut self, now: Instant, code: u32, reason: &str) {
        self.conduit.close(now, code, reason);
    }

    // ---- internals ----

    fn check_live(&self) -> Result<(), CommandError> {
        if self.conduit.is_ended() || self.phase == Phase::Failed {
            return Err(CommandError::Ended);
        }
        Ok(())
    }

    fn check_ready(&self) -> Result<(), CommandError> {
        self.check_live()?;
        if self.phase != Phase::Ready {
            return Err(CommandError::NotReady);
        }
        Ok(())
    }

    fn check_metadata(&self, metadata: &[u8]) -> Result<(), CommandError> {
        if metadata.len() > self.config.max_metadata as usize {
            return Err(CommandError::MetadataTooLarge);
        }
        Ok(())
    }

    pub(crate) fn send_msg(&mut self, m: &Message<'_>) -> Result<(), CommandError> {
        let mut h = [0u8; message::MAX_HEADER_LEN];
        let (head, tail) = m.encode_parts(&mut h);
        self.conduit.send_vectored(&[head, tail]).map(|_| ()).map_err(CommandError::from)
    }

    /// Move the queue of connections owed a `ConnWritable` into `len` entries (at least
    /// those queued), oldest first.
    fn resize_writable(&mut self, len: usize) {
        let mut grown = vec![0; len.max(self.writable_len)];
        for (i, slot) in grown.iter_mut().take(self.writable_len).enumerate() {
            *slot = self.writable[(self.writable_head + i) % self.writable.len()];
        }
        self.writable = grown;
        self.writable_head = 0;
    }

    pub(crate) fn queue_writable(&mut self, conn: ConnId) {
        if self.writable_len == self.writable.len() && self.writable.len() < self.conns.capacity() {
            // Grow (doubling, up to one entry per connection).
            self.resize_writable((self.writable.len() * 2).max(4).min(self.conns.capacity()));
        }
        if self.writable_len < self.writable.len() {
            let idx = (self.writable_head + self.writable_len) % self.writable.len();
            self.writable[idx] = conn;
            self.writable_len += 1;
        }
    }

    /// Count a peer-opened connection ending; past the budget the session fails.
    pub(crate) fn count_churn(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.churn_window_start) >= self.config.churn_period {
            self.churn_window_start = now;
            self.churn_count = 0;
        }
        self.churn_count += 1;
        if self.churn_count > self.config.churn_budget {
            self.fail(now, SessionFailure::Violation(SessionViolation::TooManyResets));
            return false;
        }
        true
    }

    /// Move owed grants and rejects into the conduit while it has room.
    pub(crate) fn flush_owed(&mut self) {
        if self.phase == Phase::Failed || self.conduit.is_ended() {
            return;
        }
        while let Some(&(conn, code)) = self.owed_rejects.first() {
            if self.send_msg(&Message::Reject { conn, code, metadata: &[] }).is_err() {
                return;
            }
            self.owed_rejects.remove(0);
        }
        if !self.grants_owed {
            return;
        }
        let initial = u64::from(self.config.initial_credit);
        let mut ids = [0u32; 16];
        loop {
            let mut n = 0;
            for c in self.conns.iter() {
                if c.pending_grant * 2 >= initial && c.pending_grant > 0 && n < ids.len() {
                    ids[n] = c.id;
                    n += 1;
                }
            }
            if n == 0 {
                self.grants_owed = false;
                return;
            }
            for &id in &ids[..n] {
                let grant = self.conns.get(id).map_or(0, |c| c.pending_grant) as u32;
                if self.send_msg(&Message::Credit { conn: id, grant }).is_err() {
                    return;
                }
                if let Some(c) = self.conns.get_mut(id) {
                    c.recv_window += u64::from(grant);
                    c.pending_grant = 0;
                }
                self.stats.grants_sent += 1;
            }
        }
    }

    /// Fail the session: send `ProtocolError` or `Sorry` (best effort), then close the conduit.
    pub(crate) fn fail(&mut self, now: Instant, failure: SessionFailure) {
        if self.phase == Phase::Failed {
            return;
        }
        match failure {
            SessionFailure::Violation(v) => {
                let _ = self.send_msg(&Message::ProtocolError { code: v.code(), reason: v.reason() });
            }
            SessionFailure::WeRefused { code } => {
                let _ = self.send_msg(&Message::Sorry { code, reason: "refused" });
            }
            SessionFailure::PeerProtocolError { .. } | SessionFailure::PeerRefused { .. } => {}
        }
        self.phase = Phase::Failed;
        self.failure = Some(failure);
        self.conduit.close(now, goodbye_code::PROTOCOL_ERROR, "session protocol error");
    }
}

impl crate::stream::FrameSource for Session {
    #[inline]
    fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        Session::poll_transmit(self, now, out)
    }
    fn max_transmit_len(&self) -> usize {
        self.conduit.max_transmit_len()
    }
}

#[cfg(test)]
mod tests;
