//! One simulated endpoint: a conduit, the application on top of it (items sent and delivered,
//! checked against [`ItemGen`]), its transmit buffer, and what it reported.

use sotto_proto::conduit::{InputError, LinkDropReason, SendError};
use sotto_proto::wire::LEN_PREFIX;
use sotto_proto::{Conduit, ConduitConfig, Event, Instant, Role};

use crate::items::ItemGen;
use crate::Side;

/// Events kept per peer for tests to inspect (older ones are overwritten).
pub const EVENT_LOG_LEN: usize = 256;

/// A fixed-size log of the latest events, with their time.
#[derive(Debug)]
pub struct EventLog {
    slots: [Option<(Instant, Event)>; EVENT_LOG_LEN],
    next: usize,
    total: u64,
}

impl EventLog {
    fn new() -> Self {
        Self { slots: [None; EVENT_LOG_LEN], next: 0, total: 0 }
    }
    fn push(&mut self, at: Instant, e: Event) {
        self.slots[self.next] = Some((at, e));
        self.next = (self.next + 1) % EVENT_LOG_LEN;
        self.total += 1;
    }
    /// Events ever logged (including overwritten ones).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }
    /// The kept events, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &(Instant, Event)> + '_ {
        let (a, b) = self.slots.split_at(self.next);
        b.iter().chain(a.iter()).flatten()
    }
    /// How many kept events match `f`.
    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.iter().filter(|(_, e)| f(e)).count()
    }
    /// Kept `DropLink` events with this reason.
    #[must_use]
    pub fn drops(&self, reason: LinkDropReason) -> usize {
        self.count(|e| matches!(e, Event::DropLink { reason: r, .. } if *r == reason))
    }
}

/// Counters the harness keeps about one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// `Attached` events.
    pub attached: u64,
    /// `Attached { resumed: true }` events.
    pub resumed: u64,
    /// `DropLink` events.
    pub drop_links: u64,
    /// `Ended` events.
    pub ended: u64,
    /// `Writable` events.
    pub writable: u64,
    /// `send` calls refused with `WouldBlock`.
    pub would_block: u64,
    /// `handle_message` calls that returned an error.
    pub input_errors: u64,
    /// Frames written by this peer.
    pub frames_out: u64,
    /// Link framing errors this peer's reader hit (prefix over `max_frame_len`).
    pub framing_errors: u64,
    /// EOFs seen on a frame boundary.
    pub clean_eofs: u64,
    /// EOFs seen inside a frame.
    pub truncated_eofs: u64,
}

/// One side of the simulation.
#[derive(Debug)]
pub struct Peer {
    /// The state machine under test.
    pub conduit: Conduit,
    pub(crate) side: Side,
    /// Session number: items are generated and checked per session.
    pub(crate) session: u32,
    pub(crate) out_items: ItemGen,
    pub(crate) in_items: ItemGen,
    /// Items `send` accepted.
    pub(crate) sent: u64,
    /// Items delivered (each checked).
    pub(crate) delivered: u64,
    /// `send` returned WouldBlock and no `Writable` came since.
    pub(crate) blocked: bool,
    /// Item bytes of the sent-but-unacked items (what the replay ring must hold).
    pub(crate) unacked_bytes: u64,
    pub(crate) prev_received: u64,
    pub(crate) prev_acked: u64,
    /// Frame buffer for `poll_transmit`, with room for the link prefix in front.
    pub(crate) tx: Vec<u8>,
    item_buf: Vec<u8>,
    /// The latest events.
    pub log: EventLog,
    /// What happened, counted.
    pub counters: PeerCounters,
    /// The last error an input returned.
    pub last_input_error: Option<InputError>,
    /// The last error `send` returned.
    pub last_send_error: Option<SendError>,
}

impl Peer {
    pub(crate) fn new(side: Side, config: ConduitConfig, session: u32, item_min: u32, item_max: u32) -> Self {
        let role = match side {
            Side::A => Role::Initiator,
            Side::B => Role::Acceptor,
        };
        let conduit = Conduit::new(role, config).expect("valid conduit config");
        assert!(item_max <= conduit.max_item_len(), "item_max above the conduit's max_item_len");
        Self {
            tx: vec![0; LEN_PREFIX + conduit.max_transmit_len()],
            item_buf: vec![0; item_max as usize],
            conduit,
            side,
            session,
            out_items: ItemGen::new(session, side, item_min, item_max),
            in_items: ItemGen::new(session, side.other(), item_min, item_max),
            sent: 0,
            delivered: 0,
            blocked: false,
            unacked_bytes: 0,
            prev_received: 0,
            prev_acked: 0,
            log: EventLog::new(),
            counters: PeerCounters::default(),
            last_input_error: None,
            last_send_error: None,
        }
    }

    /// Which side this is.
    #[must_use]
    pub fn side(&self) -> Side {
        self.side
    }
    /// Items the application sent (accepted by `send`).
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }
    /// Items delivered to the application, each checked against the sender's generator.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
    /// Whether the application waits for `Writable`.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }
    /// The session number this peer's application belongs to.
    #[must_use]
    pub fn session(&self) -> u32 {
        self.session
    }
    /// The generator of the items this peer sends.
    #[must_use]
    pub fn out_items(&self) -> ItemGen {
        self.out_items
    }

    /// Send the application's next item: `Ok(seq)` or the conduit's refusal. The harness
    /// drains after its own calls; from an interposer the surrounding drain picks it up.
    pub fn send_next(&mut self) -> Result<u64, SendError> {
        let len = self.out_items.fill(self.sent, &mut self.item_buf);
        match self.conduit.send(&self.item_buf[..len]) {
            Ok(seq) => {
                self.sent += 1;
                self.unacked_bytes += len as u64;
                Ok(seq)
            }
            Err(e) => {
                if e == SendError::WouldBlock {
                    self.blocked = true;
                    self.counters.would_block += 1;
                }
                self.last_send_error = Some(e);
                Err(e)
            }
        }
    }

    /// An item arrived; `false` if it is not the next one the sender sent.
    pub(crate) fn on_item(&mut self, item: &[u8]) -> bool {
        let ok = self.in_items.matches(self.delivered, item);
        self.delivered += 1;
        ok
    }

    pub(crate) fn on_event(&mut self, now: Instant, e: Event) {
        self.log.push(now, e);
        match e {
            Event::Attached { resumed, .. } => {
                self.counters.attached += 1;
                self.counters.resumed += u64::from(resumed);
            }
            Event::DropLink { .. } => self.counters.drop_links += 1,
            Event::Writable => {
                self.counters.writable += 1;
                self.blocked = false;
            }
            Event::Ended(_) => {
                self.counters.ended += 1;
                self.blocked = false;
            }
        }
    }

    /// Replace the conduit by a fresh one (a restart) in session number `session`.
    pub(crate) fn restart(&mut self, config: ConduitConfig, session: u32) {
        let item_min = self.out_items.min_len;
        let item_max = self.in_items.max_len;
        *self = Self::new(self.side, config, session, item_min, item_max);
    }
}
