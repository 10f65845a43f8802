//! `pair`: a structure-aware run of an initiator and an acceptor over simulated byte-stream
//! links with faults: sends both ways, partial delivery (bytes or whole frames), links killed
//! or truncated at a byte offset with either side noticing or not, one direction
//! blackholed, reconnects, time advancing through every deadline. The SCENARIOS.md
//! invariants I1-I6 are checked after every step (I1 at every delivered item); at the end
//! faults stop, the link is healed, and I7 (everything sent is delivered, once, in order)
//! is checked after the run reaches quiescence.
//!
//! Both peers are honest and links are FIFO byte streams, so some outcomes are bugs here even
//! though they are legal against a hostile peer: a violation, a gap or a failed handshake
//! on a link, an inconsistent resume, "too many pings".

use crate::shared::Pipe;
use arbitrary::{Arbitrary, Unstructured};
use sotto_proto::conduit::LinkDropReason;
use sotto_proto::wire::Message;
use sotto_proto::{Conduit, ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};

/// Most operations run per input (keeps each execution short).
const MAX_OPS: usize = 400;

/// One of the two peers.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The initiator.
    A,
    /// The acceptor.
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// Which ends of a killed link learn of it (EOF or reset); the others see a half-open link.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Notify {
    /// Both ends see EOF after the bytes that survived.
    Both,
    /// Only the initiator notices.
    AOnly,
    /// Only the acceptor notices.
    BOnly,
    /// Nobody notices: a full blackhole.
    Neither,
}

/// Unit of a time step.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Unit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds (the amount is taken modulo 256).
    Secs,
}

/// Configuration knobs of a run (both peers share limits and timers; `ext` is per peer).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct PairConfig {
    /// Initiator advertises extensions.
    pub ext_a: bool,
    /// Acceptor advertises extensions.
    pub ext_b: bool,
    /// `max_frame_len = 64 + 4 * frame_len`.
    pub frame_len: u8,
    /// `replay_frames = 1 + frames % 32`.
    pub frames: u8,
    /// `replay_bytes = max_item_len + 8 * bytes`.
    pub bytes: u8,
    /// `ack_every = 1 + ack_every % 40`.
    pub ack_every: u8,
    /// Timer profile (see [`PairConfig::build`]); the top bit lets the initiator send its
    /// first item early (`Conduit::set_early_first_frame`).
    pub timers: u8,
}

impl PairConfig {
    /// The conduit configuration of peer `side`.
    #[must_use]
    pub fn build(&self, side: Side) -> ConduitConfig {
        let max_frame_len = 64 + 4 * u32::from(self.frame_len);
        let max_item = max_frame_len - sotto_proto::wire::MAX_DATA_HEADER_LEN as u32;
        let [ack_delay, ping, pong, min_ping, handshake, recovery] = timer_profile(self.timers);
        let cfg = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = max_frame_len;
            patched.replay_frames = 1 + u32::from(self.frames % 32);
            patched.replay_bytes = max_item + 8 * u32::from(self.bytes);
            patched.ext = if side == Side::A { self.ext_a } else { self.ext_b };
            patched.ack_delay = ack_delay;
            patched.ack_every = 1 + u32::from(self.ack_every % 40);
            patched.ping_interval = ping;
            patched.pong_timeout = pong;
            patched.min_ping_interval = min_ping;
            patched.max_ping_strikes = 2;
            patched.handshake_timeout = handshake;
            patched.recovery_timeout = recovery;
            patched.ack_starved_timeout = min_ping;
            patched.duplicate_window = 1 << 24;
            patched
        };
        assert_eq!(cfg.validate(), Ok(()), "pair config must be valid: {cfg:?}");
        cfg
    }
}

/// One of four timer profiles: `[ack_delay, ping_interval, pong_timeout, min_ping_interval,
/// handshake_timeout, recovery_timeout]` (slow defaults, fast, zero ack delay, long recovery).
#[must_use]
pub fn timer_profile(t: u8) -> [Duration; 6] {
    let ms = Duration::from_millis;
    match t % 4 {
        0 => [ms(25), ms(10_000), ms(20_000), ms(1_000), ms(10_000), ms(120_000)],
        1 => [ms(1), ms(100), ms(200), ms(10), ms(500), ms(2_000)],
        2 => [Duration::ZERO, ms(50), ms(50), ms(50), ms(100), ms(1_000)],
        _ => [ms(5), ms(1_000), ms(3_000), Duration::ZERO, ms(2_000), ms(600_000)],
    }
}

/// One step of a run.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// The application of `from` sends an item of `len` bytes (beyond the limit if large).
    Send {
        /// Sender.
        from: Side,
        /// Item length.
        len: u8,
    },
    /// Deliver bytes of the stream toward `to`: `amount & 0x7fff` bytes, or with the top
    /// bit set `amount & 0xff` whole link messages.
    Deliver {
        /// Receiver.
        to: Side,
        /// How much.
        amount: u16,
    },
    /// Deliver everything in flight, both ways, until nothing moves.
    DeliverAll,
    /// Kill the live link: the stream toward B keeps its first `at_to_b` bytes, the one
    /// toward A its first `at_to_a`; later writes vanish; the notified ends see EOF.
    Kill {
        /// Surviving bytes toward B.
        at_to_b: u16,
        /// Surviving bytes toward A.
        at_to_a: u16,
        /// Who notices.
        notify: Notify,
    },
    /// From now on bytes toward `toward` on the live link vanish, without EOF.
    Blackhole {
        /// The deaf end.
        toward: Side,
    },
    /// The initiator dials a fresh link and the acceptor accepts it (superseding whatever
    /// either held).
    Reconnect,
    /// Let time pass, firing every deadline on the way at its instant.
    Advance {
        /// How much.
        amount: u16,
        /// In which unit.
        unit: Unit,
    },
    /// `side` closes the session gracefully (only when `gate < 8`, so that closes are rare).
    Close {
        /// Who closes.
        side: Side,
        /// Gate.
        gate: u8,
    },
}

/// A whole run: the configuration and the operations.
#[derive(Arbitrary, Debug)]
pub struct PairInput {
    /// Configuration.
    pub config: PairConfig,
    /// Operations, run in order (at most 400).
    pub ops: Vec<Op>,
}

/// A link between the two peers: each end's id while that end holds it, and both directions.
#[derive(Debug)]
struct Link {
    a: Option<LinkId>,
    b: Option<LinkId>,
    to_a: Pipe,
    to_b: Pipe,
}

impl Link {
    fn end(&self, side: Side) -> Option<LinkId> {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
    fn toward(&mut self, side: Side) -> &mut Pipe {
        match side {
            Side::A => &mut self.to_a,
            Side::B => &mut self.to_b,
        }
    }
}

/// One peer and its application's view.
#[derive(Debug)]
struct Peer {
    c: Conduit,
    /// Items accepted by `send`, in order.
    sent: Vec<Vec<u8>>,
    /// Items delivered to the application, in order.
    got: usize,
    counts: (u64, u64, u64),
    /// `items_acked` when `send` last returned WouldBlock with no Writable since.
    writable_pending: Option<u64>,
    ended: Option<SessionEnd>,
    close_called: bool,
    attached_before: bool,
    /// The link whose ClientHello announced an early frame.
    early_link: Option<LinkId>,
}

impl Peer {
    fn new(role: Role, cfg: ConduitConfig) -> Self {
        Self {
            c: Conduit::new(role, cfg).expect("valid config"),
            sent: Vec::new(),
            got: 0,
            counts: (0, 0, 0),
            writable_pending: None,
            ended: None,
            close_called: false,
            attached_before: false,
            early_link: None,
        }
    }
}

/// The simulation: two peers, the links between them, a shared virtual clock.
#[derive(Debug)]
pub struct Pair {
    a: Peer,
    b: Peer,
    links: Vec<Link>,
    now: Instant,
    keys: u64,
    buf: Vec<u8>,
    max_frame_len: u32,
    pipe_bound: usize,
    ext_both: bool,
    /// Print every step and event (set `SOTTO_FUZZ_TRACE` to reproduce a failure verbosely).
    trace: bool,
}

impl Pair {
    /// Two fresh peers with `config`, no link yet.
    #[must_use]
    pub fn new(config: &PairConfig) -> Self {
        let ca = config.build(Side::A);
        let cb = config.build(Side::B);
        let per_frame = sotto_proto::wire::MAX_DATA_HEADER_LEN + 4;
        let mut a = Peer::new(Role::Initiator, ca);
        // The timer profile's top bit: the initiator's first item may ride early, behind
        // its first fresh ClientHello.
        a.c.set_early_first_frame(config.timers & 0x80 != 0);
        Self {
            a,
            b: Peer::new(Role::Acceptor, cb),
            links: Vec::new(),
            now: Instant::from_nanos(1_000_000_000),
            keys: 0,
            buf: vec![0u8; ca.max_frame_len as usize],
            max_frame_len: ca.max_frame_len,
            // Data at most a ring's worth per link and direction (twice: a replay after a
            // resume, then the rest), plus a few control frames per delivered data frame.
            pipe_bound: 2 * (ca.replay_bytes as usize + ca.replay_frames as usize * per_frame) + 4096,
            ext_both: ca.ext && cb.ext,
            trace: std::env::var_os("SOTTO_FUZZ_TRACE").is_some(),
        }
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn link_of(&self, side: Side, id: LinkId) -> Option<usize> {
        self.links.iter().position(|l| l.end(side) == Some(id))
    }

    /// The link `side` currently holds, if any.
    fn held(&self, side: Side) -> Option<usize> {
        let mut held = self.links.iter().enumerate().filter(|(_, l)| l.end(side).is_some());
        let first = held.next().map(|(i, _)| i);
        assert!(held.next().is_none(), "I5: {side:?} holds two links");
        first
    }

    /// `side` closes its end of link `idx` (after DropLink or EOF) and tells its conduit.
    fn close_end(&mut self, side: Side, idx: usize) {
        let link = &mut self.links[idx];
        let Some(id) = (match side {
            Side::A => link.a.take(),
            Side::B => link.b.take(),
        }) else {
            return;
        };
        link.toward(side).discard();
        let out = link.toward(side.other());
        if out.open {
            // Our FIN travels only on a path that still works.
            out.open = false;
            out.eof = true;
        }
        let now = self.now;
        self.peer(side).c.link_down(now, id);
        self.links.retain(|l| l.a.is_some() || l.b.is_some());
    }

    /// Drain both conduits' outputs until nothing moves, checking each.
    fn drain(&mut self) {
        for _ in 0..256 {
            let mut moved = false;
            for side in [Side::A, Side::B] {
                let mut n = 0;
                loop {
                    let now = self.now;
                    let current = self.peer(side).c.current_link();
                    let mut buf = std::mem::take(&mut self.buf);
                    // A lends items of 32 bytes and more from its ring (the vectored-write
                    // path), B copies every frame: both paths carry the same frames.
                    let t =
                        match side {
                            Side::A => self.peer(side).c.poll_transmit_lending(now, &mut buf, 32),
                            Side::B => self.peer(side).c.poll_transmit(now, &mut buf).map(|t| {
                                sotto_proto::conduit::LendingTransmit { link: t.link, len: t.len, lent: None }
                            }),
                        };
                    let Some(t) = t else {
                        self.buf = buf;
                        break;
                    };
                    moved = true;
                    n += 1;
                    assert!(n < 100_000, "poll_transmit does not run dry");
                    assert_eq!(Some(t.link), current, "transmit for a link that is not current");
                    let idx = self.link_of(side, t.link).expect("transmit for a link the driver closed");
                    let mut frame = buf[..t.len].to_vec();
                    if let Some(item) = t.lent {
                        assert!(item.len() >= 32, "lent below the threshold");
                        let (x, y) = self.peer(side).c.lent_item(item).expect("a lent item is held");
                        frame.extend_from_slice(x);
                        frame.extend_from_slice(y);
                    }
                    if side == Side::A && frame.len() == sotto_proto::wire::HELLO_LEN {
                        if let Ok(h) = sotto_proto::wire::ClientHello::decode(&frame) {
                            // Its early frame follows on this link, not replayed after the
                            // ServerHello.
                            self.a.early_link = h.early.then_some(t.link);
                        }
                    }
                    self.links[idx].toward(side.other()).write(&frame);
                    self.buf = buf;
                }
                while let Some(e) = self.peer(side).c.poll_event() {
                    moved = true;
                    self.on_event(side, e);
                }
            }
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    fn on_event(&mut self, side: Side, e: Event) {
        if self.trace {
            eprintln!("  [{:?}] {side:?} event {e:?}", self.now);
        }
        match e {
            Event::Attached { link, replaying, resumed, .. } => {
                let p = self.peer(side);
                // An early frame already went out on this link: not part of the replay.
                let acked = p.c.items_acked();
                let from = if p.early_link == Some(link) { acked.max(1) } else { acked };
                assert_eq!(replaying, p.c.items_sent() - from);
                assert!(!resumed || p.attached_before, "resumed before any attach");
                if side == Side::A {
                    assert_eq!(resumed, p.attached_before, "initiator resumed flag");
                }
                p.attached_before = true;
            }
            Event::DropLink { link, reason } => {
                assert!(
                    !matches!(
                        reason,
                        LinkDropReason::Violation(_) | LinkDropReason::Gap | LinkDropReason::HandshakeFailed(_)
                    ),
                    "honest peers over FIFO links: {side:?} dropped a link for {reason:?}"
                );
                if reason == LinkDropReason::Rejected {
                    assert!(self.b.c.is_ended(), "B rejected A while the session lives");
                }
                if let Some(idx) = self.link_of(side, link) {
                    self.close_end(side, idx);
                }
            }
            Event::Writable => {
                let p = self.peer(side);
                assert!(p.writable_pending.is_some(), "Writable without WouldBlock");
                p.writable_pending = None;
            }
            Event::Ended(r) => {
                let other_closed = self.peer(side.other()).close_called;
                let other_ended = self.peer(side.other()).c.is_ended();
                let p = self.peer(side);
                assert!(p.ended.is_none(), "Ended twice");
                p.ended = Some(r);
                match r {
                    SessionEnd::RecoveryTimeout => {}
                    SessionEnd::Rejected => assert!(other_ended, "A rejected while B lives"),
                    SessionEnd::LocalClose { .. } => assert!(p.close_called),
                    SessionEnd::PeerGoodbye { .. } => assert!(other_closed || other_ended),
                    other => panic!("honest pair ended with {other:?}"),
                }
            }
        }
    }

    /// I1-I6 (I1 is also checked at every delivery).
    fn check(&mut self) {
        for side in [Side::A, Side::B] {
            let held = self.held(side).and_then(|i| self.links[i].end(side));
            let (ra, rs) = (self.peer(side.other()).c.items_received(), self.peer(side.other()).sent.len());
            let p = self.peer(side);
            let c = &p.c;
            let counts = (c.items_sent(), c.items_acked(), c.items_received());
            assert!(
                counts.0 >= p.counts.0 && counts.1 >= p.counts.1 && counts.2 >= p.counts.2,
                "I2: a count went backwards"
            );
            assert!(counts.1 <= counts.0, "I2: acked beyond sent");
            assert_eq!(counts.0, p.sent.len() as u64);
            assert_eq!(counts.2, p.got as u64, "I1: delivered count");
            assert!(counts.2 <= rs as u64, "I1: delivered more than sent");
            assert!(counts.1 <= ra, "I4: acked {} but the peer delivered {ra}", counts.1);
            p.counts = counts;
            let s = c.stats();
            assert_eq!(s.replay_frames, counts.0 - counts.1, "I3: ring frames");
            let bytes: usize = p.sent[counts.1 as usize..].iter().map(Vec::len).sum();
            assert_eq!(s.replay_bytes, bytes as u64, "I3: ring bytes");
            assert!(s.replay_frames <= u64::from(c.config().replay_frames), "I3: frame cap");
            assert!(s.replay_bytes <= u64::from(c.config().replay_bytes), "I3: byte cap");
            assert_eq!(s.events_overflowed, 0, "I6: events");
            assert_eq!(c.current_link(), held, "I5: the conduit's link is the one its driver holds");
            assert_eq!(c.ended(), p.ended);
            if let Some(at) = p.writable_pending {
                assert!(counts.1 == at, "acks freed ring space but no Writable came");
            }
        }
        if self.a.c.is_established() && self.b.c.is_established() {
            assert_eq!(self.held(Side::A), self.held(Side::B), "I5: established on different links");
        }
        for l in &self.links {
            assert!(l.to_a.data.len() <= self.pipe_bound && l.to_b.data.len() <= self.pipe_bound, "I6: pipe bound");
        }
    }

    fn send(&mut self, from: Side, len: u8) {
        let p = self.peer(from);
        let max = p.c.max_item_len() as usize;
        let len = if len >= 250 { max + usize::from(len - 250) } else { usize::from(len) };
        let n = p.sent.len() as u64;
        // Unique contents: the item number, then a pattern.
        let item: Vec<u8> =
            n.to_le_bytes().iter().copied().chain((0..).map(|i: u32| (i as u8) ^ (n as u8))).take(len).collect();
        match p.c.send(&item) {
            Ok(seq) => {
                assert_eq!(seq, n);
                p.sent.push(item);
            }
            Err(sotto_proto::conduit::SendError::WouldBlock) => {
                p.writable_pending = Some(p.c.items_acked());
            }
            Err(sotto_proto::conduit::SendError::TooLarge { .. }) => assert!(len > max),
            Err(sotto_proto::conduit::SendError::Ended) => assert!(p.c.is_ended() || p.close_called),
            Err(e) => panic!("send: unexpected {e}"),
        }
        self.drain();
    }

    /// Deliver up to `n` bytes toward `to`; returns whether anything happened.
    fn deliver(&mut self, to: Side, n: usize) -> bool {
        let Some(idx) = self.held(to) else { return false };
        let pipe = self.links[idx].toward(to);
        let chunk = pipe.take(n);
        let at_eof = pipe.data.is_empty() && pipe.eof;
        let mut input: &[u8] = &chunk;
        let mut messages = Vec::new();
        loop {
            match pipe.dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => messages.push(m.to_vec()),
                Ok(Some(Message::Reassembled)) => messages.push(pipe.dec.reassembled().to_vec()),
                Ok(None) => break,
                Err(e) => panic!("honest peer wrote a bad link message: {e}"),
            }
        }
        let moved = !chunk.is_empty() || at_eof;
        if !chunk.is_empty() && messages.is_empty() {
            // Bytes of an unfinished message, as a driver reports them.
            if let Some(id) = self.links.get(idx).and_then(|l| l.end(to)) {
                let now = self.now;
                self.peer(to).c.handle_progress(now, id);
                self.drain();
            }
        }
        for m in messages {
            let Some(id) = self.links.get(idx).and_then(|l| l.end(to)) else { return true };
            let now = self.now;
            let got_before = self.peer(to).got;
            let r = self.peer(to).c.handle_message(now, id, &m);
            if self.trace {
                eprintln!("  {to:?} <- {:02x?} : {r:?}", &m[..m.len().min(32)]);
            }
            if let Ok(Some(item)) = r {
                let item = item.to_vec();
                let i = got_before;
                let sender = self.peer(to.other());
                assert!(i < sender.sent.len(), "I1: delivered item {i} never sent");
                assert!(item == sender.sent[i], "I1: item {i} differs from the one sent (dup, gap or reorder)");
                self.peer(to).got += 1;
            }
            self.drain();
        }
        if at_eof {
            if let Some(idx) = self.held(to) {
                if self.links[idx].toward(to).data.is_empty() && self.links[idx].toward(to).eof {
                    self.close_end(to, idx);
                    self.drain();
                }
            }
        }
        moved
    }

    fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            let a = self.deliver(Side::A, usize::MAX);
            let b = self.deliver(Side::B, usize::MAX);
            if !a && !b {
                return;
            }
        }
        panic!("deliveries never settle");
    }

    fn kill(&mut self, at_to_b: u16, at_to_a: u16, notify: Notify) {
        let (na, nb) = match notify {
            Notify::Both => (true, true),
            Notify::AOnly => (true, false),
            Notify::BOnly => (false, true),
            Notify::Neither => (false, false),
        };
        for l in &mut self.links {
            l.to_b.truncate(usize::from(at_to_b));
            l.to_a.truncate(usize::from(at_to_a));
            l.to_b.open = false;
            l.to_a.open = false;
            l.to_b.eof |= nb;
            l.to_a.eof |= na;
        }
    }

    fn reconnect(&mut self) {
        let now = self.now;
        let la = self.a.c.link_up(now, ResumeKey::ZERO);
        self.keys += 1;
        let mut key = [0xa5u8; 16];
        key[..8].copy_from_slice(&self.keys.to_le_bytes());
        // A superseded link is closed by the DropLink that link_up queued.
        self.links.push(Link {
            a: Some(la),
            b: None,
            to_a: Pipe::new(self.max_frame_len),
            to_b: Pipe::new(self.max_frame_len),
        });
        self.drain();
        // A that never got a ServerHello dials fresh again; B's conduit takes that retry as
        // the same session starting over (its peer never confirmed the ServerHello), so
        // nothing is lost. Anything else here is a rejection (checked in on_event).
        let lb = self.b.c.link_up(now, ResumeKey(key));
        let idx = self.links.iter().position(|l| l.a == Some(la));
        match idx {
            Some(i) => self.links[i].b = Some(lb),
            None => {
                // A dropped it at once (its session is over): B sees the link closed.
                self.links.push(Link {
                    a: None,
                    b: Some(lb),
                    to_a: Pipe::new(self.max_frame_len),
                    to_b: Pipe::closed(self.max_frame_len),
                });
            }
        }
        self.drain();
    }

    /// Let `d` pass, firing deadlines at their instants.
    fn advance(&mut self, d: Duration) {
        let target = self.now.saturating_add(d);
        for _ in 0..100_000 {
            let next = [self.a.c.poll_timeout(), self.b.c.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= target => {
                    assert!(t >= self.now, "deadline in the past");
                    self.now = t;
                    self.a.c.handle_timeout(t);
                    self.b.c.handle_timeout(t);
                    self.drain();
                    for c in [&self.a.c, &self.b.c] {
                        if let Some(n) = c.poll_timeout() {
                            assert!(n > t, "poll_timeout {n:?} not after handle_timeout({t:?})");
                        }
                    }
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timers fire forever");
    }

    /// Run one operation.
    pub fn step(&mut self, op: Op) {
        if self.trace {
            eprintln!("[{:?}] op {op:?}", self.now);
        }
        match op {
            Op::Send { from, len } => self.send(from, len),
            Op::Deliver { to, amount } => {
                let n = if amount & 0x8000 != 0 {
                    let k = usize::from(amount & 0xff);
                    self.held(to).map_or(0, |i| self.links[i].toward(to).bytes_for_messages(k))
                } else {
                    usize::from(amount & 0x7fff)
                };
                self.deliver(to, n);
            }
            Op::DeliverAll => self.deliver_all(),
            Op::Kill { at_to_b, at_to_a, notify } => self.kill(at_to_b, at_to_a, notify),
            Op::Blackhole { toward } => {
                if let Some(i) = self.held(toward.other()) {
                    self.links[i].toward(toward).open = false;
                }
            }
            Op::Reconnect => self.reconnect(),
            Op::Advance { amount, unit } => {
                let d = match unit {
                    Unit::Micros => Duration::from_micros(u64::from(amount)),
                    Unit::Millis => Duration::from_millis(u64::from(amount)),
                    Unit::Secs => Duration::from_secs(u64::from(amount % 256)),
                };
                self.advance(d);
            }
            Op::Close { side, gate } => {
                if gate < 8 {
                    let now = self.now;
                    let p = self.peer(side);
                    p.close_called = true;
                    p.c.close(now, 0x100, "fuzz close");
                }
            }
        }
        self.drain();
    }

    fn settled(&self) -> bool {
        let delivered = self.b.got == self.a.sent.len() && self.a.got == self.b.sent.len();
        let acked = !self.ext_both
            || (self.a.c.items_acked() == self.a.c.items_sent() && self.b.c.items_acked() == self.b.c.items_sent());
        // A sender blocked on a full ring must hear Writable eventually, base form included
        // (there a link cycle's resume handshake carries the acks; WIRE.md section 5).
        let unblocked = self.a.writable_pending.is_none() && self.b.writable_pending.is_none();
        delivered && acked && unblocked
    }

    /// Stop faults, heal the link, run to quiescence, and check I7: with the session alive,
    /// everything sent was delivered once, in order (and, with extensions, acked).
    pub fn finish(&mut self) {
        if self.trace {
            eprintln!("[{:?}] finish", self.now);
        }
        if self.a.c.is_ended() || self.b.c.is_ended() {
            return;
        }
        self.reconnect();
        for _ in 0..1_000 {
            self.deliver_all();
            if self.a.c.is_ended() || self.b.c.is_ended() || self.settled() {
                break;
            }
            if !(self.a.c.is_established() && self.b.c.is_established()) {
                self.reconnect();
                continue;
            }
            let next = [self.a.c.poll_timeout(), self.b.c.poll_timeout()].into_iter().flatten().min();
            let Some(t) = next else { break };
            self.advance(t.saturating_duration_since(self.now));
        }
        let closing = self.a.close_called || self.b.close_called;
        if closing {
            return;
        }
        assert!(
            !self.a.c.is_ended() && !self.b.c.is_ended(),
            "I7: the session ended while healing: A {:?}, B {:?}",
            self.a.c.ended(),
            self.b.c.ended()
        );
        assert_eq!(self.b.got, self.a.sent.len(), "I7: A->B not all delivered after healing");
        assert_eq!(self.a.got, self.b.sent.len(), "I7: B->A not all delivered after healing");
        assert!(self.a.writable_pending.is_none(), "I7: A blocked on WouldBlock, no Writable after healing");
        assert!(self.b.writable_pending.is_none(), "I7: B blocked on WouldBlock, no Writable after healing");
        assert!(self.settled(), "I7: not all acked after healing (extensions in force)");
    }
}

/// Run a structured input.
pub fn run(input: &PairInput) {
    if std::env::var_os("SOTTO_FUZZ_TRACE").is_some() {
        eprintln!("{:?}", input.config);
    }
    let mut pair = Pair::new(&input.config);
    for op in input.ops.iter().take(MAX_OPS) {
        pair.step(*op);
    }
    pair.finish();
}

/// Decode `data` as libfuzzer-sys does for `fuzz_target!(|input: PairInput| ..)`, then run.
pub fn run_bytes(data: &[u8]) {
    if let Ok(input) = PairInput::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input);
    }
}

fn op_kind(op: &Op) -> u32 {
    match op {
        Op::Send { .. } => 0,
        Op::Deliver { .. } => 1,
        Op::DeliverAll => 2,
        Op::Kill { .. } => 3,
        Op::Blackhole { .. } => 4,
        Op::Reconnect => 5,
        Op::Advance { .. } => 6,
        Op::Close { .. } => 7,
    }
}

/// How eventful the run of `data` is, for picking seeds: distinct operations, resumes,
/// replays and deliveries.
#[must_use]
pub fn score(data: &[u8]) -> u64 {
    let Ok(input) = PairInput::arbitrary_take_rest(Unstructured::new(data)) else { return 0 };
    let mut pair = Pair::new(&input.config);
    let mut kinds = 0u32;
    for op in input.ops.iter().take(MAX_OPS) {
        kinds |= 1 << op_kind(op);
        pair.step(*op);
    }
    pair.finish();
    let (sa, sb) = (pair.a.c.stats(), pair.b.c.stats());
    u64::from(kinds.count_ones()) * 10
        + 5 * (sa.resumes + sb.resumes)
        + sa.frames_replayed
        + sb.frames_replayed
        + (pair.a.got + pair.b.got) as u64
}
