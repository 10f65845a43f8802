//! The stable conduit: one session's sequenced, acked, replayed item stream over a succession
//! of links. See [`Conduit`] for the contract.

mod config;
mod event;
mod export;
mod receive;
mod ring;
pub(crate) mod serial;
mod stats;
mod transmit;
mod unacked;
pub use transmit::{LendingTransmit, LentItem, Transmit};
pub use unacked::UnackedItems;

pub use config::{ConduitConfig, ConfigError};
pub use event::{
    goodbye_code, Event, InputError, LinkDropReason, LinkId, Observed, Role, SendError, SessionEnd, Violation,
};
pub use stats::{ConduitStats, LinkDrops};

use crate::time::{Instant, MonotonicNow};
use crate::timer::{Timer, TimerTable};
use crate::wire::{ClientHello, ResumeKey};
use event::EventQueue;
use ring::ReplayRing;

/// Longest GOODBYE reason kept (ours or the peer's); longer ones are cut at a char boundary.
pub const MAX_GOODBYE_REASON: usize = 128;

/// Where the current link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// No link.
    None,
    /// Initiator: ClientHello queued or sent, waiting for the ServerHello.
    AwaitServerHello { id: LinkId, hello_sent: bool },
    /// Acceptor: waiting for the ClientHello; `key` goes in our ServerHello.
    AwaitClientHello { id: LinkId, key: ResumeKey },
    /// Frames flow.
    Established { id: LinkId, ext: bool },
    /// We asked the driver to drop it; inputs are ignored until `link_down` or `link_up`.
    Dropping { id: LinkId },
}

impl LinkState {
    pub(crate) fn id(&self) -> Option<LinkId> {
        match *self {
            Self::None => None,
            Self::AwaitServerHello { id, .. }
            | Self::AwaitClientHello { id, .. }
            | Self::Established { id, .. }
            | Self::Dropping { id } => Some(id),
        }
    }
}

/// The early frame of the current link: a fresh session's first frame (seq 0) in the base
/// form, right behind a ClientHello with `EARLY` (docs/protocol.md, "Early Hello").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EarlyFrame {
    /// None on this link.
    No,
    /// Initiator: announced in our ClientHello, not transmitted yet.
    ToSend,
    /// Initiator: transmitted on this link.
    Sent,
    /// Acceptor: announced in the peer's ClientHello, not received yet (the next frame is
    /// decoded in the base form).
    ToReceive,
    /// Acceptor: received and held back by `observe_message`; the next `handle_message`
    /// takes it (in the base form).
    Observed,
}

/// A frame the current link owes before anything else (hellos, the REJECTED reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owed {
    /// Nothing owed.
    Nothing,
    /// Our ClientHello.
    ClientHello,
    /// Our ServerHello (accepting), with the key and position in it.
    ServerHello,
    /// The REJECTED ServerHello, then the link is dropped.
    Rejected,
}

/// GOODBYE text kept without allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reason {
    pub(crate) code: u32,
    pub(crate) buf: [u8; MAX_GOODBYE_REASON],
    pub(crate) len: usize,
}

impl Reason {
    pub(crate) fn new(code: u32, text: &str) -> Self {
        let mut len = text.len().min(MAX_GOODBYE_REASON);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; MAX_GOODBYE_REASON];
        buf[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self { code, buf, len }
    }
    /// Like [`new`](Self::new), with the text cut further so that the GOODBYE frame (kind
    /// byte, varint code, text) fits in `max_frame_len`: a longer one could never be
    /// transmitted, and the close would never finish.
    pub(crate) fn fitting(code: u32, text: &str, max_frame_len: u32) -> Self {
        let room = (max_frame_len as usize).saturating_sub(1 + crate::wire::varint::varint_len(code));
        let mut len = text.len().min(room);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        Self::new(code, &text[..len])
    }
    pub(crate) fn text(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// A stable conduit endpoint (initiator or acceptor): the sans-IO state machine that keeps an
/// ordered, exactly-once item stream alive across links that die.
///
/// # Contract
///
/// - **Getters** take `&self`: [`stats`](Self::stats), [`role`](Self::role),
///   [`is_ended`](Self::is_ended), ...
/// - **Inputs** `handle_*(now, ..)`: [`handle_message`](Self::handle_message) for every link
///   message (one whole frame or hello, without the byte-stream length prefix) and
///   [`handle_timeout`](Self::handle_timeout) when the clock passes
///   [`poll_timeout`](Self::poll_timeout).
/// - **Commands**: [`link_up`](Self::link_up) when a fresh link is connected,
///   [`link_down`](Self::link_down) when it is gone, [`send`](Self::send),
///   [`close`](Self::close).
/// - **Outputs**: [`poll_transmit`](Self::poll_transmit) (one frame per call, into caller
///   memory), [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// After every input or command, drain the outputs before the next input: call
/// `poll_transmit` until `None`, then `poll_event` until `None`, then read `poll_timeout`.
/// An [`Event::DropLink`] is only handed out once every frame for that link has been, so a
/// driver that writes what it got from `poll_transmit` and then closes the link loses nothing.
///
/// Time is a parameter; a `now` earlier than a previous one is treated as the previous one.
/// Randomness (the keys an acceptor issues) comes from the driver through `link_up`. The
/// conduit allocates its buffers in [`new`](Self::new) and never again. No input can panic
/// it: bad bytes drop the link (the session resumes on the next one) or end the session,
/// always with a typed reason.
///
/// Delivered items borrow from the bytes passed to `handle_message`: nothing is copied on
/// the way in.
///
/// See the crate docs for a runnable run loop.
#[derive(Debug)]
pub struct Conduit {
    pub(crate) role: Role,
    pub(crate) config: ConduitConfig,
    pub(crate) clock: MonotonicNow,
    pub(crate) timers: TimerTable,
    pub(crate) events: EventQueue,
    pub(crate) ring: ReplayRing,
    pub(crate) link: LinkState,
    pub(crate) next_link_id: u64,
    pub(crate) owed: Owed,
    /// Initiator: the key to present. Acceptor: the key issued on the latest accepted link.
    pub(crate) key: Option<ResumeKey>,
    /// Acceptor: the key the peer held when it last resumed, still valid until the newer one
    /// is seen in use.
    pub(crate) previous_key: Option<ResumeKey>,
    /// Acceptor: the fresh key for the ServerHello being sent.
    pub(crate) issuing_key: ResumeKey,
    pub(crate) ever_attached: bool,
    /// Acceptor: a frame has arrived after one of our ServerHellos (the peer holds a key).
    pub(crate) peer_confirmed: bool,
    /// Count of items sent (the next seq to assign).
    pub(crate) sent: u64,
    /// Count of our frames the peer has acked.
    pub(crate) acked: u64,
    /// Next seq to transmit on the current link.
    pub(crate) tx_cursor: u64,
    /// One past the highest seq ever transmitted (frames below it are replays).
    pub(crate) tx_high: u64,
    /// Count of items delivered.
    pub(crate) received: u64,
    /// The receive count the peer last heard from us (in an ack or a hello).
    pub(crate) ack_sent: u64,
    pub(crate) ack_now: bool,
    pub(crate) want_writable: bool,
    /// Ping nonce counter (deterministic) and the outstanding ping.
    pub(crate) ping_nonce: u64,
    pub(crate) ping_outstanding: Option<(u64, Instant)>,
    /// While a PING is awaited and bytes arrive: when the next sign of life (a standalone
    /// ACK) may go ([`Conduit::handle_progress`]).
    pub(crate) heartbeat_at: Option<Instant>,
    pub(crate) ping_due: bool,
    pub(crate) pong_owed: Option<u64>,
    pub(crate) last_ping_rx: Option<Instant>,
    pub(crate) ping_strikes: u32,
    /// A link was cycled for ack starvation and nothing has been acked since: the next cycle
    /// waits `ping_interval` rather than `ack_starved_timeout`.
    pub(crate) starved_cycle: bool,
    /// `close` was called: drain data, then GOODBYE.
    pub(crate) closing: Option<Reason>,
    /// GOODBYE owed on the current link before it is dropped (session already ended).
    pub(crate) goodbye_owed: Option<Reason>,
    pub(crate) peer_goodbye: Option<Reason>,
    pub(crate) ended: Option<SessionEnd>,
    pub(crate) stats: ConduitStats,
    pub(crate) detached_since: Option<Instant>,
    /// Frozen for a handoff ([`freeze`](Self::freeze)): sends fail with `WouldBlock`.
    pub(crate) frozen: bool,
    /// Initiator: may announce `EARLY` on the next fresh hello
    /// ([`set_early_first_frame`](Self::set_early_first_frame)); cleared once announced, so a
    /// later fresh hello goes without it.
    pub(crate) early_ok: bool,
    /// The early frame of the current link.
    pub(crate) early: EarlyFrame,
}

impl Conduit {
    /// Build a conduit. Allocates nothing for the replay ring yet: it grows by doubling, up
    /// to `replay_bytes` and `replay_frames` entries, as items need room (a few times while a
    /// session warms up, never in steady state), and gives memory back on
    /// [`shrink_buffers`](Self::shrink_buffers). Nothing else is ever allocated.
    pub fn new(role: Role, config: ConduitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::with_ring(role, config, ReplayRing::new(config.replay_bytes, config.replay_frames)))
    }

    fn with_ring(role: Role, config: ConduitConfig, ring: ReplayRing) -> Self {
        Self {
            role,
            config,
            clock: MonotonicNow::default(),
            timers: TimerTable::default(),
            events: EventQueue::new(),
            ring,
            link: LinkState::None,
            next_link_id: 1,
            owed: Owed::Nothing,
            key: None,
            previous_key: None,
            issuing_key: ResumeKey::ZERO,
            ever_attached: false,
            peer_confirmed: false,
            sent: 0,
            acked: 0,
            tx_cursor: 0,
            tx_high: 0,
            received: 0,
            ack_sent: 0,
            ack_now: false,
            want_writable: false,
            ping_nonce: 0,
            ping_outstanding: None,
            heartbeat_at: None,
            ping_due: false,
            pong_owed: None,
            last_ping_rx: None,
            ping_strikes: 0,
            starved_cycle: false,
            closing: None,
            goodbye_owed: None,
            peer_goodbye: None,
            ended: None,
            stats: ConduitStats::default(),
            detached_since: None,
            frozen: false,
            early_ok: false,
            early: EarlyFrame::No,
        }
    }

    /// Forget the session and start afresh as a new, never-attached conduit with the same role
    /// and configuration, keeping the allocated buffers (an endpoint reuses session slots this
    /// way). Link ids keep increasing, so an id from before the reset is never current again.
    pub fn reset(&mut self) {
        let ring = core::mem::replace(&mut self.ring, ReplayRing::new(0, 0));
        let next_link_id = self.next_link_id;
        *self = Self::with_ring(self.role, self.config, ring);
        self.next_link_id = next_link_id;
        self.ring.clear();
    }

    /// Since when the session has had no working link (`None` while attached, before the first
    /// attach, and after it ended).
    #[must_use]
    pub fn detached_since(&self) -> Option<Instant> {
        if self.ended.is_some() {
            None
        } else {
            self.detached_since
        }
    }

    /// Freeze the conduit for a handoff: from now on every send (and every session command
    /// that queues an item) fails with [`SendError::WouldBlock`] without side effects (no
    /// `Writable` is owed), so that nothing changes what an export taken now says about the
    /// items sent. Call just before exporting a session to hand it off; then either drop the
    /// conduit (the importer took it) or [`thaw`](Self::thaw) it and wake the senders that got
    /// `WouldBlock` (the handoff failed). The owner must also stop feeding it input meanwhile.
    /// Not exported: an imported conduit is never frozen.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Undo [`freeze`](Self::freeze): sends work again. Senders that got `WouldBlock` while
    /// frozen are owed no `Writable`: their owner wakes them.
    pub fn thaw(&mut self) {
        self.frozen = false;
    }

    /// Initiator: let the first link of a fresh session carry the first queued item (seq 0)
    /// right behind the ClientHello, in the base form, announced by the hello's `EARLY` flag
    /// (docs/protocol.md, "Early Hello"). It saves a round trip when the item is the one the
    /// acceptor must answer first. Off by default: a raw conduit speaks vox's bytes exactly.
    ///
    /// Tried once per session, on the first link whose hello is fresh and finds an item
    /// queued; if that link ends before a ServerHello (an acceptor that does not know the
    /// flag fails the link), later hellos go without it and the item follows the handshake
    /// as usual. Acceptors need no setting: they always read an early frame. Call before
    /// the first [`link_up`](Self::link_up); [`reset`](Self::reset) turns it off.
    pub fn set_early_first_frame(&mut self, on: bool) {
        self.early_ok = on;
    }

    /// Whether the conduit is [`freeze`](Self::freeze)n.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The resume keys that route to this conduit: the current one and (an acceptor's) the
    /// previous one the peer may still present. What an endpoint adopting an imported
    /// session indexes ([`Endpoint::adopt`](crate::endpoint::Endpoint::adopt)).
    #[must_use]
    pub fn resume_keys(&self) -> [Option<ResumeKey>; 2] {
        [self.key, self.previous_key]
    }

    /// Which side this conduit plays.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }
    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ConduitConfig {
        &self.config
    }
    /// The largest item [`send`](Self::send) accepts.
    #[must_use]
    pub fn max_item_len(&self) -> u32 {
        self.config.max_item_len()
    }
    /// The buffer size [`poll_transmit`](Self::poll_transmit) needs: `max_frame_len`.
    #[must_use]
    pub fn max_transmit_len(&self) -> usize {
        self.config.max_frame_len as usize
    }
    /// The current link, if any (handshaking, established or being dropped).
    #[must_use]
    pub fn current_link(&self) -> Option<LinkId> {
        self.link.id()
    }
    /// Whether frames flow on a link now.
    #[must_use]
    pub fn is_established(&self) -> bool {
        matches!(self.link, LinkState::Established { .. })
    }
    /// Whether extensions are in force on the current link.
    #[must_use]
    pub fn ext_in_force(&self) -> bool {
        matches!(self.link, LinkState::Established { ext: true, .. })
    }
    /// How the session ended, if it has.
    #[must_use]
    pub fn ended(&self) -> Option<SessionEnd> {
        self.ended
    }
    /// Whether the session is over.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }
    /// Whether a link has ever completed its handshake.
    #[must_use]
    pub fn has_attached(&self) -> bool {
        self.ever_attached
    }
    /// The key the initiator will present (initiator), or the latest issued (acceptor).
    #[must_use]
    pub fn resume_key(&self) -> Option<ResumeKey> {
        self.key
    }
    /// The peer's GOODBYE code and reason, once received.
    #[must_use]
    pub fn peer_goodbye(&self) -> Option<(u32, &str)> {
        self.peer_goodbye.as_ref().map(|r| (r.code, r.text()))
    }
    /// Items accepted by `send` so far (the next item's seq).
    #[must_use]
    pub fn items_sent(&self) -> u64 {
        self.sent
    }
    /// Items the peer has acknowledged.
    #[must_use]
    pub fn items_acked(&self) -> u64 {
        self.acked
    }
    /// Items delivered to the application so far.
    #[must_use]
    pub fn items_received(&self) -> u64 {
        self.received
    }
    /// Frames sent and not yet acked (held in the replay ring).
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.sent - self.acked
    }
    /// Whether `send` would accept an item of `len` bytes now.
    #[must_use]
    pub fn can_send(&self, len: usize) -> bool {
        self.ended.is_none() && self.closing.is_none() && !self.ring.is_full_for(len)
    }
    /// Bytes the replay ring has allocated now (item storage and entry slots): at most
    /// `replay_bytes` plus 8 bytes per `replay_frames`, and 0 before the first item and after
    /// [`shrink_buffers`](Self::shrink_buffers) of an empty ring.
    #[must_use]
    pub fn buffer_bytes(&self) -> usize {
        self.ring.allocated()
    }

    /// Grow the replay ring to its caps now (`replay_bytes` and `replay_frames`), so that no
    /// later call allocates, not even while the session warms up: for a deployment that
    /// wants every allocation made up front, and for tests that count allocations from the
    /// start. [`shrink_buffers`](Self::shrink_buffers) undoes it.
    pub fn reserve_buffers(&mut self) {
        self.ring.reserve_full();
    }

    /// Give back replay-ring memory that the unacked items do not need: all of it when
    /// every item was acked, else down to twice what is held (only when that frees three
    /// quarters or more). Call when the session has been idle for a while (the driver does,
    /// once no item has moved for a second), not after every ack: the next burst grows the ring
    /// again, which allocates. Bounded work (a copy of the held bytes at most). Returns the
    /// bytes freed.
    pub fn shrink_buffers(&mut self) -> usize {
        self.ring.shrink()
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> ConduitStats {
        let mut s = self.stats;
        s.replay_frames = self.ring.frames() as u64;
        s.replay_bytes = self.ring.bytes_used() as u64;
        s.events_overflowed = self.events.overflowed;
        s
    }

    // ---- commands ----

    /// A fresh link is connected. Returns its id; pass it with every input from this link.
    ///
    /// An initiator queues its ClientHello (a resume if it holds a key). An acceptor waits
    /// for the ClientHello and will issue `fresh_key` in its ServerHello (initiators ignore
    /// `fresh_key`; pass [`ResumeKey::ZERO`]). A link that is still current is superseded
    /// (an [`Event::DropLink`] with [`LinkDropReason::Superseded`] follows).
    /// After the session ended the link is dropped at once.
    pub fn link_up(&mut self, now: Instant, fresh_key: ResumeKey) -> LinkId {
        let now = self.clock.observe(now);
        self.supersede_current();
        let id = LinkId(self.next_link_id);
        self.next_link_id += 1;
        self.reset_link_state();
        if self.ended.is_some() {
            self.link = LinkState::Dropping { id };
            if self.role == Role::Acceptor {
                self.owed = Owed::Rejected;
            }
            self.queue_drop(
                id,
                if self.role == Role::Acceptor { LinkDropReason::Rejected } else { LinkDropReason::SessionEnded },
            );
            return id;
        }
        self.timers.set(Timer::Handshake, now.saturating_add(self.config.handshake_timeout));
        match self.role {
            Role::Initiator => {
                self.link = LinkState::AwaitServerHello { id, hello_sent: false };
                self.owed = Owed::ClientHello;
            }
            Role::Acceptor => self.link = LinkState::AwaitClientHello { id, key: fresh_key },
        }
        id
    }

    /// Acceptor: a fresh link whose ClientHello was already read and decoded (by an endpoint
    /// routing links to sessions). Same as [`link_up`](Self::link_up) followed by
    /// `handle_message` with the hello.
    pub fn link_up_with_hello(
        &mut self,
        now: Instant,
        fresh_key: ResumeKey,
        hello: &ClientHello,
    ) -> (LinkId, Result<(), InputError>) {
        let id = self.link_up(now, fresh_key);
        if self.role != Role::Acceptor || self.ended.is_some() {
            return (id, Err(InputError::AlreadyEnded));
        }
        let r = self.accept_client_hello(self.clock.get(), id, fresh_key, hello);
        (id, r)
    }

    /// The link is gone (EOF, reset, write error, or the driver closed it after
    /// [`Event::DropLink`]). Stale ids are ignored. The session stays; an initiator should
    /// attach a new link (after backoff), an acceptor waits for one.
    pub fn link_down(&mut self, now: Instant, link: LinkId) {
        let now = self.clock.observe(now);
        if self.link.id() != Some(link) {
            return;
        }
        if !matches!(self.link, LinkState::Dropping { .. }) {
            self.stats.link_drops.driver_reported += 1;
        }
        // A DropLink the driver has not read yet is moot now.
        self.events.retain(|e| !matches!(e, Event::DropLink { link: l, .. } if *l == link));
        self.link = LinkState::None;
        self.owed = Owed::Nothing;
        self.goodbye_owed = None;
        self.early = EarlyFrame::No;
        self.detached(now);
    }

    /// Queue an item for delivery to the peer. Returns its sequence number (a count from 0,
    /// never wrapping). The seq is assigned here, as the item enters the replay ring, so an
    /// item accepted by `send` is delivered exactly once whatever happens to links.
    ///
    /// Fails without side effects when the ring is full ([`SendError::WouldBlock`]; an
    /// [`Event::Writable`] follows when acks free space), when the item is too large, or when
    /// the session is closing or over. Items sent while no link is up queue behind the
    /// replay.
    pub fn send(&mut self, item: &[u8]) -> Result<u64, SendError> {
        self.send_vectored(&[item])
    }

    /// [`send`](Self::send) an item made of several parts, concatenated (no copy beyond the
    /// one into the replay ring). Used by layers that add a header to a payload.
    pub fn send_vectored(&mut self, parts: &[&[u8]]) -> Result<u64, SendError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_send(len)?;
        let pushed = self.ring.push(parts);
        self.after_push(pushed)
    }

    /// [`send_vectored`](Self::send_vectored) of a short `header` (a few bytes: copied
    /// without a `memcpy` call) and a `payload`: the session layer's data path.
    #[inline]
    pub(crate) fn send_with_header(&mut self, header: &[u8], payload: &[u8]) -> Result<u64, SendError> {
        self.check_send(header.len() + payload.len())?;
        let pushed = self.ring.push_with_header(header, payload);
        self.after_push(pushed)
    }

    /// The item just delivered needs no prompt ack (the session layer's LetsGo, after which
    /// the peer waits for nothing from us): the ack owed for it waits for the next frame that
    /// carries one (data, or the ACK sent along with the next PING or PONG), at the latest
    /// `ping_interval` from now, instead of leaving as a frame of its own after `ack_delay`.
    /// A frame delivered after it makes the ack due within `ack_delay` again. Saves a segment
    /// (and the peer's wake-up) per new session. No-op without extensions or with an ack
    /// already due.
    pub(crate) fn defer_ack(&mut self, now: Instant) {
        if self.ext_in_force() && !self.ack_now && self.received > self.ack_sent {
            let later = self.config.ping_interval.max(self.config.ack_delay);
            self.timers.set(Timer::AckDelay, now.saturating_add(later));
        }
    }

    /// Whether item `seq` is the newest we queued and has never been transmitted on any link
    /// (nor acked by a lying peer): what [`extend_item`](Self::extend_item) can grow.
    #[inline(always)]
    pub(crate) fn is_unsent_newest(&self, seq: u64) -> bool {
        seq + 1 == self.sent && seq >= self.tx_high && seq >= self.acked
    }

    /// Append `header` + `payload` to item `seq` (now `item_len` bytes long) if it is the
    /// newest item and has never been transmitted on any link (so no peer can have seen it
    /// shorter), and it stays within `max_item_len`: `Ok(true)`. `Ok(false)` when it is not
    /// extendable (queue a new item instead); `Err(WouldBlock)` when the ring lacks the bytes
    /// (a `Writable` follows, as for `send`). The session layer batches small messages this
    /// way.
    #[inline(always)]
    pub(crate) fn extend_item(
        &mut self,
        seq: u64,
        item_len: usize,
        header: &[u8],
        payload: &[u8],
    ) -> Result<bool, SendError> {
        if self.ended.is_some() || self.closing.is_some() {
            return Err(SendError::Ended);
        }
        if self.frozen {
            return Err(SendError::WouldBlock);
        }
        // An item at or past `tx_high` was never transmitted. One below `acked` is gone (a
        // lying peer may ack items it was never sent).
        if !self.is_unsent_newest(seq) || item_len + header.len() + payload.len() > self.config.max_item_len() as usize
        {
            return Ok(false);
        }
        debug_assert_eq!(self.ring.get(seq).map(|(a, b)| a.len() + b.len()), Some(item_len));
        match self.ring.extend_last(header, payload) {
            Ok(()) => Ok(true),
            Err(_) => Err(self.ring_full()),
        }
    }

    /// [`extend_item`](Self::extend_item) of item `seq` by a short `prefix` and a `payload`
    /// when that succeeds without growing or wrapping the ring: `true`, with the same outcome
    /// as `extend_item(seq, _, prefix, payload) == Ok(true)`. `false` with
    /// nothing changed otherwise (the session is over or closing, sends are frozen, the item
    /// is not the unsent newest, or the ring would have to grow, wrap or refuse): the caller
    /// then takes the general path, which sorts those out. The caller has checked that the
    /// item stays within `max_item_len`.
    #[inline(always)]
    pub(crate) fn try_extend_newest<const N: usize>(&mut self, seq: u64, prefix: [u8; N], payload: &[u8]) -> bool {
        self.ended.is_none()
            && self.closing.is_none()
            && !self.frozen
            && self.is_unsent_newest(seq)
            && self.ring.try_extend_last_contiguous(prefix, payload)
    }

    /// The ring had no room for a send: a `Writable` is owed.
    #[cold]
    fn ring_full(&mut self) -> SendError {
        self.want_writable = true;
        // A sender retrying on a full ring must not push the deadline back.
        self.arm_ack_starved(self.clock.get(), false);
        SendError::WouldBlock
    }

    #[inline]
    fn check_send(&self, len: usize) -> Result<(), SendError> {
        if self.ended.is_some() || self.closing.is_some() {
            return Err(SendError::Ended);
        }
        if self.frozen {
            return Err(SendError::WouldBlock);
        }
        let max = self.config.max_item_len();
        if len > max as usize {
            return Err(SendError::TooLarge { len: u32::try_from(len).unwrap_or(u32::MAX), max });
        }
        Ok(())
    }

    #[inline]
    fn after_push(&mut self, pushed: Result<(), ring::RingFull>) -> Result<u64, SendError> {
        if pushed.is_err() {
            return Err(self.ring_full());
        }
        let seq = self.sent;
        self.sent += 1;
        self.stats.items_queued += 1;
        Ok(seq)
    }

    /// End the session gracefully. With extensions in force on an established link, queued
    /// items are transmitted first, then GOODBYE (`code`, `reason`), then the link is dropped;
    /// the peer does not reconnect. Items still unacked at that point are not guaranteed to
    /// arrive: see [`unacked`](Self::unacked). Without a link or without extensions the
    /// session ends at once. `send` fails from now on. The reason is cut (at a char boundary)
    /// to [`MAX_GOODBYE_REASON`] bytes and to what fits in one frame of `max_frame_len`.
    pub fn close(&mut self, now: Instant, code: u32, reason: &str) {
        let now = self.clock.observe(now);
        if self.ended.is_some() || self.closing.is_some() {
            return;
        }
        if self.ext_in_force() {
            self.closing = Some(Reason::fitting(code, reason, self.config.max_frame_len));
        } else {
            self.end_session(now, SessionEnd::LocalClose { code }, None);
        }
    }

    /// Owner-initiated end (an endpoint evicting a detached session): ends the session with
    /// `reason` and drops any link.
    pub fn end(&mut self, now: Instant, reason: SessionEnd) {
        let now = self.clock.observe(now);
        if self.ended.is_none() {
            self.end_session(now, reason, None);
        }
    }

    // ---- outputs ----

    /// The next event, if any. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(Event::DropLink { link, .. }) = self.events.peek() {
            // Withhold the drop until every frame the link owes has been handed out.
            if self.link.id() == Some(*link) && self.owes_final_frame() {
                return None;
            }
        }
        self.events.pop()
    }

    /// The earliest deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// Fire every timer due at `now`. Idempotent and safe to call early (it then does
    /// nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if self.timers.is_due(Timer::Handshake, now) {
            self.timers.clear(Timer::Handshake);
            if let LinkState::AwaitServerHello { id, .. } | LinkState::AwaitClientHello { id, .. } = self.link {
                self.stats.link_drops.handshake_timeout += 1;
                self.drop_link(now, id, LinkDropReason::HandshakeTimeout);
            }
        }
        if self.timers.is_due(Timer::PongTimeout, now) {
            self.timers.clear(Timer::PongTimeout);
            if let LinkState::Established { id, .. } = self.link {
                self.stats.link_drops.keepalive += 1;
                self.drop_link(now, id, LinkDropReason::KeepaliveTimeout);
            }
        }
        if self.timers.is_due(Timer::Ping, now) {
            self.timers.clear(Timer::Ping);
            if self.ext_in_force() && self.ping_outstanding.is_none() {
                self.ping_due = true;
                // The pong is awaited from now, not from when the PING leaves: a link whose
                // writes are stuck (the PING queued behind data the peer never reads) and
                // that brings nothing in is as dead as one that loses the PING.
                self.timers.set_if_unset(Timer::PongTimeout, now.saturating_add(self.config.pong_timeout));
            }
        }
        if self.timers.is_due(Timer::AckDelay, now) {
            self.timers.clear(Timer::AckDelay);
            if self.ext_in_force() && self.received > self.ack_sent {
                self.ack_now = true;
            }
        }
        if self.timers.is_due(Timer::AckStarved, now) {
            self.timers.clear(Timer::AckStarved);
            // Nothing transmitted is unacked: nothing to learn from the peer. The next data
            // frame transmitted re-arms the timer.
            if let LinkState::Established { id, ext: false } = self.link {
                if self.want_writable && self.tx_cursor > self.acked {
                    self.starved_cycle = true;
                    self.stats.link_drops.ack_starved += 1;
                    self.drop_link(now, id, LinkDropReason::AckStarved);
                }
            }
        }
        // Last: a link dropped above may have just started the recovery deadline, and with a
        // zero `recovery_timeout` it is due now. Checking it last keeps this call idempotent.
        if self.timers.is_due(Timer::Recovery, now) {
            self.timers.clear(Timer::Recovery);
            if self.ended.is_none() {
                self.end_session(now, SessionEnd::RecoveryTimeout, None);
            }
        }
    }

    // ---- internal state changes ----

    pub(crate) fn reset_link_state(&mut self) {
        self.owed = Owed::Nothing;
        self.ack_now = false;
        self.ping_due = false;
        self.ping_outstanding = None;
        self.heartbeat_at = None;
        self.pong_owed = None;
        self.last_ping_rx = None;
        self.ping_strikes = 0;
        self.goodbye_owed = None;
        self.early = EarlyFrame::No;
        self.timers.clear(Timer::Handshake);
        self.timers.clear(Timer::AckDelay);
        self.timers.clear(Timer::Ping);
        self.timers.clear(Timer::PongTimeout);
        self.timers.clear(Timer::AckStarved);
    }

    fn supersede_current(&mut self) {
        if let Some(old) = self.link.id() {
            self.events.retain(|e| !matches!(e, Event::DropLink { link, .. } if *link == old));
            self.stats.link_drops.superseded += 1;
            self.events.push(Event::DropLink { link: old, reason: LinkDropReason::Superseded });
            self.link = LinkState::None;
        }
    }

    /// Whether the current link still owes a frame that must go out before it is dropped.
    pub(crate) fn owes_final_frame(&self) -> bool {
        self.owed == Owed::Rejected || self.goodbye_owed.is_some()
    }

    pub(crate) fn queue_drop(&mut self, link: LinkId, reason: LinkDropReason) {
        self.events.push(Event::DropLink { link, reason });
    }

    /// Ask the driver to drop `link`; the session detaches.
    pub(crate) fn drop_link(&mut self, now: Instant, link: LinkId, reason: LinkDropReason) {
        if self.link.id() != Some(link) || matches!(self.link, LinkState::Dropping { .. }) {
            return;
        }
        let keep_owed = self.owed == Owed::Rejected;
        let goodbye = self.goodbye_owed.take();
        self.reset_link_state();
        if keep_owed {
            self.owed = Owed::Rejected;
        }
        self.goodbye_owed = goodbye;
        self.link = LinkState::Dropping { id: link };
        self.queue_drop(link, reason);
        self.detached(now);
    }

    /// The session has no working link from now: start the recovery deadline.
    pub(crate) fn detached(&mut self, now: Instant) {
        if self.ended.is_none() && self.ever_attached {
            if self.detached_since.is_none() {
                self.detached_since = Some(now);
            }
            self.timers.set_if_unset(Timer::Recovery, now.saturating_add(self.config.recovery_timeout));
        }
    }

    /// End the session once. `goodbye`: a GOODBYE to send first, if extensions allow.
    pub(crate) fn end_session(&mut self, now: Instant, reason: SessionEnd, goodbye: Option<Reason>) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(reason);
        self.closing = None;
        self.want_writable = false;
        self.timers.clear(Timer::Recovery);
        self.events.push(Event::Ended(reason));
        if let Some(id) = self.link.id() {
            if !matches!(self.link, LinkState::Dropping { .. }) {
                let ext = self.ext_in_force();
                self.drop_link(now, id, LinkDropReason::SessionEnded);
                if ext {
                    self.goodbye_owed = goodbye;
                }
            }
        }
        self.timers.clear(Timer::Recovery);
    }

    /// Base form only (WIRE.md section 5): a peer without extensions acks only on its own
    /// data frames and in resume handshakes, so a sender blocked on a full ring toward a peer
    /// that sends nothing (or toward one blocked in turn, holding our acks) would wait
    /// forever. While a sender is blocked, the [`Timer::AckStarved`] deadline runs; when it
    /// passes with transmitted frames unacked, the link is cycled so that the resume handshake
    /// carries the peer's position. The deadline is `ack_starved_timeout` after the latest of:
    /// the send that found the ring full, the latest ack-bearing frame from the peer (`reset`
    /// from the receive path) and the latest data frame we transmitted (`reset` from the
    /// transmit path): a peer that keeps acking, however late, is never cycled. After a cycle
    /// that brought no ack, the next one waits `ping_interval` instead (at least as long):
    /// a peer that does not read gets a cycle now and then, not one a second. Called only
    /// off the fast path (a full ring, or a sender already blocked).
    pub(crate) fn arm_ack_starved(&mut self, now: Instant, reset: bool) {
        if !self.want_writable || !matches!(self.link, LinkState::Established { ext: false, .. }) {
            return;
        }
        let mut delay = self.config.ack_starved_timeout;
        if self.starved_cycle && self.config.ping_interval > delay {
            delay = self.config.ping_interval;
        }
        let at = now.saturating_add(delay);
        if reset {
            self.timers.set(Timer::AckStarved, at);
        } else {
            self.timers.set_if_unset(Timer::AckStarved, at);
        }
    }

    /// Apply a cumulative ack in count form (`count` frames acked).
    pub(crate) fn apply_ack_count(&mut self, count: u64) {
        if count <= self.acked {
            return;
        }
        self.ring.trim_to(count);
        self.acked = count;
        debug_assert_eq!(self.ring.first_seq(), self.acked, "the ring holds exactly the unacked frames");
        self.starved_cycle = false;
        self.timers.clear(Timer::AckStarved);
        if self.tx_cursor < count {
            self.tx_cursor = count;
        }
        if self.want_writable {
            self.want_writable = false;
            self.events.push(Event::Writable);
        }
    }
}

#[cfg(test)]
mod tests;
