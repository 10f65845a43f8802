//! Exported state (docs/state-format.md): a session pair runs scripted traffic over a link
//! that can lose messages in flight, and at random points one side is exported, dropped and
//! imported as a fresh object (possibly with its link still attached, frames in flight both
//! ways, unacked items in its ring, connections half-open and credit half-spent). The pair
//! then resumes and carries on; every data message sent either way must arrive exactly once,
//! in order. Every export of an imported state gives the same bytes.
//!
//! Hostile input: truncations at every byte, every single-byte corruption, a newer version,
//! and states over the importer's own limits.
//!
//! A failure prints the minimal failing script and is saved under `proptest-regressions/`;
//! `PROPTEST_RNG_SEED=<n>` fixes the generator, `PROPTEST_CASES=<n>` runs more cases.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sotto_proto::conduit::{ConduitConfig, Event};
use sotto_proto::session::{CommandError, ConnId, Incoming, Session, SessionConfig, SessionEvent, ROOT};
use sotto_proto::state::{ExportError, ImportError, VERSION};
use sotto_proto::{Conduit, Duration, Instant, LinkId, ResumeKey, Role};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
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

#[derive(Clone, Copy, Debug)]
enum Op {
    /// This side's application sends a message of this length on one of its open
    /// connections (picked by the byte).
    Send(Side, u8, u16),
    /// This side opens a connection.
    Open(Side),
    /// Deliver up to this many messages toward this side.
    Deliver(Side, u8),
    /// The link dies (both ends notice; what was in flight is lost).
    Kill,
    /// A fresh link, if none is up.
    Reconnect,
    /// Time passes (milliseconds), firing deadlines.
    Advance(u16),
    /// This side is exported and replaced by its import. `cut`: its link is taken down
    /// first (else it is exported attached). `flush`: frames it had written still reach
    /// the peer before the peer notices the link is gone.
    Export { side: Side, cut: bool, flush: bool, later_ms: u16 },
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (side(), any::<u8>(), prop_oneof![0u16..40, 0u16..3000]).prop_map(|(s, c, l)| Op::Send(s, c, l)),
        2 => side().prop_map(Op::Open),
        5 => (side(), 1u8..8).prop_map(|(s, n)| Op::Deliver(s, n)),
        1 => Just(Op::Kill),
        2 => Just(Op::Reconnect),
        2 => (0u16..300).prop_map(Op::Advance),
        2 => (side(), any::<bool>(), any::<bool>(), 0u16..2000)
            .prop_map(|(side, cut, flush, later_ms)| Op::Export { side, cut, flush, later_ms }),
    ]
}

/// One side: the session object (replaced on import) and its application's view, which
/// outlives it (the application moves with the state).
struct End {
    s: Session,
    link: Option<LinkId>,
    inbox: VecDeque<Vec<u8>>,
    /// Connections this application may send on.
    open: Vec<ConnId>,
    /// Peer Opens not accepted yet (the ring was full).
    to_accept: Vec<ConnId>,
    /// Every data message accepted by `send`, in order.
    sent: Vec<(ConnId, Vec<u8>)>,
    /// Every data message received, in order.
    got: Vec<(ConnId, Vec<u8>)>,
    /// Counter for unique payloads.
    counter: u32,
}

struct Pair {
    a: End,
    b: End,
    cfg: SessionConfig,
    now: Instant,
    keys: u8,
    exports: u32,
    /// A session may end (a test closing one on purpose).
    allow_end: bool,
}

fn config() -> SessionConfig {
    {
        let mut patched = SessionConfig::default();
        patched.conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 4096;
            patched.replay_bytes = 24 << 10;
            patched.replay_frames = 64;
            patched
        };
        patched.initial_credit = 8 << 10;
        patched.max_connections = 8;
        patched.max_pending_opens = 4;
        patched
    }
}

impl Pair {
    fn new(cfg: SessionConfig) -> Self {
        let end = |role, meta: &[u8]| End {
            s: Session::new(role, cfg, meta).expect("config"),
            link: None,
            inbox: VecDeque::new(),
            open: Vec::new(),
            to_accept: Vec::new(),
            sent: Vec::new(),
            got: Vec::new(),
            counter: 0,
        };
        Self {
            a: end(Role::Initiator, b"client"),
            b: end(Role::Acceptor, b"server"),
            cfg,
            now: Instant::from_nanos(1_000_000_000),
            keys: 0,
            exports: 0,
            allow_end: false,
        }
    }

    fn end(&mut self, s: Side) -> &mut End {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn kill(&mut self) {
        let now = self.now;
        for s in [Side::A, Side::B] {
            let e = self.end(s);
            if let Some(l) = e.link.take() {
                e.s.link_down(now, l);
            }
            e.inbox.clear();
        }
    }

    fn reconnect(&mut self) {
        if self.a.link.is_some() || self.b.link.is_some() {
            return;
        }
        self.keys = self.keys.wrapping_add(1).max(1);
        let now = self.now;
        self.a.link = Some(self.a.s.link_up(now, ResumeKey::ZERO));
        self.b.link = Some(self.b.s.link_up(now, ResumeKey([self.keys; 16])));
        self.drain();
    }

    /// Move every output: frames into the peer's inbox, events handled as a driver would.
    fn drain(&mut self) {
        let mut buf = vec![0u8; self.cfg.conduit.max_frame_len as usize];
        for _ in 0..10_000 {
            let mut moved = false;
            for s in [Side::A, Side::B] {
                let now = self.now;
                while let Some(t) = self.end(s).s.poll_transmit(now, &mut buf) {
                    moved = true;
                    assert_eq!(Some(t.link), self.end(s).link);
                    if self.end(s.other()).link.is_some() {
                        self.end(s.other()).inbox.push_back(buf[..t.len].to_vec());
                    }
                }
                while let Some(e) = self.end(s).s.poll_event() {
                    moved = true;
                    if let SessionEvent::Conduit(Event::DropLink { link, .. }) = e {
                        if self.end(s).link == Some(link) {
                            self.kill();
                        }
                    }
                    if let (SessionEvent::Conduit(Event::Ended(r)), false) = (e, self.allow_end) {
                        panic!("session ended: {r:?}");
                    }
                }
                // Retry accepts refused for a full ring.
                let e = self.end(s);
                let pending = std::mem::take(&mut e.to_accept);
                for c in pending {
                    match e.s.accept(c, b"") {
                        Ok(()) => {
                            e.open.push(c);
                            moved = true;
                        }
                        Err(CommandError::WouldBlock) => e.to_accept.push(c),
                        Err(err) => panic!("accept {c}: {err}"),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("drain did not settle");
    }

    fn deliver(&mut self, to: Side, n: u8) {
        for _ in 0..n {
            let now = self.now;
            let e = self.end(to);
            let (Some(link), Some(msg)) = (e.link, e.inbox.pop_front()) else { break };
            match e.s.handle_message(now, link, &msg) {
                Ok(Some(i)) => receive(e, i),
                Ok(None) => {}
                Err(err) => {
                    // Only a link drop (e.g. a gap after a lost frame) is expected.
                    assert!(
                        matches!(err, sotto_proto::session::SessionInputError::Conduit(_)),
                        "session-level error {err:?}"
                    );
                }
            }
            self.drain();
        }
    }

    fn send(&mut self, side: Side, pick: u8, len: u16) {
        let e = self.end(side);
        if !e.s.is_ready() {
            return;
        }
        let mut conns = vec![ROOT];
        conns.extend(e.open.iter().copied());
        let conn = conns[usize::from(pick) % conns.len()];
        let mut payload = e.counter.to_le_bytes().to_vec();
        payload.resize(usize::from(len).max(4), (e.counter % 251) as u8);
        match e.s.send(conn, &payload) {
            Ok(()) => {
                e.counter += 1;
                e.sent.push((conn, payload));
            }
            Err(CommandError::NoCredit | CommandError::WouldBlock | CommandError::TooLarge { .. }) => {}
            Err(err) => panic!("send: {err}"),
        }
        self.drain();
    }

    fn open(&mut self, side: Side) {
        let e = self.end(side);
        if !e.s.is_ready() {
            return;
        }
        match e.s.open(b"m") {
            Ok(_) | Err(CommandError::WouldBlock | CommandError::TooManyConnections) => {}
            Err(err) => panic!("open: {err}"),
        }
        self.drain();
    }

    /// Export `side`, drop it, import a fresh one in its place.
    fn export(&mut self, side: Side, cut: bool, flush: bool, later_ms: u16) {
        let now = self.now;
        if cut {
            let e = self.end(side);
            if let Some(l) = e.link.take() {
                e.s.link_down(now, l);
                e.inbox.clear();
            }
            self.drain();
        }
        let cfg = self.cfg;
        let e = self.end(side);
        let mut bytes = Vec::new();
        e.s.export(now, &mut bytes).expect("export at rest");
        // The old object is gone; so is its link. Frames toward it are lost; frames it
        // wrote may still reach the peer.
        e.link = None;
        e.inbox.clear();
        if !flush {
            self.end(side.other()).inbox.clear();
        }
        let later = now.saturating_add(Duration::from_millis(u64::from(later_ms)));
        let imported = Session::import(&bytes, later, cfg).expect("import of a fresh export");
        let mut again = Vec::new();
        imported.export(later, &mut again).expect("re-export");
        assert_eq!(again, bytes, "export(import(x)) == x");
        self.end(side).s = imported;
        self.exports += 1;
        // Whatever it had written arrives, then the peer notices the link died.
        let other = side.other();
        while !self.end(other).inbox.is_empty() {
            self.deliver(other, 1);
        }
        let e = self.end(other);
        if let Some(l) = e.link.take() {
            e.s.link_down(now, l);
        }
        e.inbox.clear();
        self.now = later;
        self.drain();
    }

    fn advance(&mut self, ms: u16) {
        self.now = self.now.saturating_add(Duration::from_millis(u64::from(ms)));
        let now = self.now;
        self.a.s.handle_timeout(now);
        self.b.s.handle_timeout(now);
        self.drain();
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Send(s, c, l) => self.send(s, c, l),
            Op::Open(s) => self.open(s),
            Op::Deliver(s, n) => self.deliver(s, n),
            Op::Kill => {
                self.kill();
                self.drain();
            }
            Op::Reconnect => self.reconnect(),
            Op::Advance(ms) => self.advance(ms),
            Op::Export { side, cut, flush, later_ms } => self.export(side, cut, flush, later_ms),
        }
        self.check_prefix();
    }

    /// What arrived is a prefix of what was sent, both ways.
    fn check_prefix(&self) {
        for (from, to) in [(&self.a, &self.b), (&self.b, &self.a)] {
            assert!(to.got.len() <= from.sent.len(), "more received than sent");
            assert_eq!(to.got[..], from.sent[..to.got.len()], "delivery out of order or duplicated");
        }
    }

    /// Reconnect and run until everything sent has arrived.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.reconnect();
            while !(self.a.inbox.is_empty() && self.b.inbox.is_empty()) {
                self.deliver(Side::A, 8);
                self.deliver(Side::B, 8);
            }
            if self.b.got.len() == self.a.sent.len()
                && self.a.got.len() == self.b.sent.len()
                && self.a.s.conduit().unacked() == 0
                && self.b.s.conduit().unacked() == 0
            {
                return;
            }
            // On to the next deadline (at least 30 ms): an ack deferred to the keepalive
            // (the acceptor's ack of LetsGo) goes out with the first PING or PONG.
            let next = [self.a.s.poll_timeout(), self.b.s.poll_timeout()].into_iter().flatten().min();
            let ms = next.map_or(30, |t| t.saturating_duration_since(self.now).as_millis().clamp(30, 60_000) as u16);
            self.advance(ms);
        }
        panic!(
            "did not settle: a sent {} b got {}, b sent {} a got {}",
            self.a.sent.len(),
            self.b.got.len(),
            self.b.sent.len(),
            self.a.got.len()
        );
    }
}

/// The application's reaction to a peer message: record data and give the credit back,
/// accept every Open, note accepted connections.
fn receive(e: &mut End, i: Incoming<'_>) {
    match i {
        Incoming::Data { conn, payload } => {
            e.got.push((conn, payload.to_vec()));
            let credit = e.s.credit_of(payload.len());
            let _ = e.s.release(conn, credit as usize);
        }
        Incoming::DataBatch { conn, batch } => {
            for p in batch.iter() {
                e.got.push((conn, p.to_vec()));
            }
            let _ = e.s.release(conn, batch.credit() as usize);
        }
        Incoming::Open { conn, .. } => e.to_accept.push(conn),
        Incoming::Accepted { conn, .. } => e.open.push(conn),
        Incoming::PeerHello { .. }
        | Incoming::Rejected { .. }
        | Incoming::Closed { .. }
        | Incoming::Finished { .. } => {}
    }
}

fn config_with_persistence() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config_with_persistence())]
    #[test]
    fn exported_and_imported_sessions_deliver_everything_once_in_order(
        start_ready in proptest::bool::weighted(0.8),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        let mut p = if start_ready { busy_pair() } else { Pair::new(config()) };
        p.reconnect();
        for op in ops {
            p.step(op);
        }
        p.settle();
        // Traffic goes on after the settle (and after any import).
        p.send(Side::A, 0, 10);
        p.send(Side::B, 0, 10);
        p.settle();
        p.check_prefix();
        prop_assert_eq!(p.b.got.len(), p.a.sent.len());
        prop_assert_eq!(p.a.got.len(), p.b.sent.len());
    }
}

/// A pair mid-stream: connections open both ways, one with credit half spent, unacked items
/// in both rings (frames sent and not delivered), a Writable owed, an Open pending.
fn busy_pair() -> Pair {
    busy_pair_with(config())
}

fn busy_pair_with(cfg: SessionConfig) -> Pair {
    let mut p = Pair::new(cfg);
    p.reconnect();
    for _ in 0..4 {
        p.deliver(Side::B, 8);
        p.deliver(Side::A, 8);
    }
    assert!(p.a.s.is_ready() && p.b.s.is_ready());
    p.open(Side::A);
    p.open(Side::B);
    for _ in 0..4 {
        p.deliver(Side::B, 8);
        p.deliver(Side::A, 8);
    }
    assert!(!p.a.open.is_empty() && !p.b.open.is_empty(), "connections open both ways");
    for i in 0..12u8 {
        p.send(Side::A, i, 700);
        p.send(Side::B, i, 300);
    }
    p.deliver(Side::B, 3);
    p
}

/// The exported state of `busy_pair`'s side `side`.
fn busy_state(side: Side) -> Vec<u8> {
    let p = busy_pair();
    let e = match side {
        Side::A => &p.a,
        Side::B => &p.b,
    };
    assert!(e.s.conduit().unacked() > 0, "unacked items in the ring");
    let mut bytes = Vec::new();
    e.s.export(p.now, &mut bytes).expect("export");
    bytes
}

#[test]
fn a_busy_session_moves_mid_stream_and_nothing_is_lost_or_duplicated() {
    for side in [Side::A, Side::B] {
        for cut in [false, true] {
            let mut p = busy_pair();
            let before = (p.a.sent.len(), p.b.sent.len());
            p.export(side, cut, false, 500);
            p.reconnect();
            for i in 0..10u8 {
                p.send(Side::A, i, 100);
                p.send(Side::B, i, 100);
            }
            p.settle();
            assert!(p.a.sent.len() > before.0 && p.b.sent.len() > before.1);
            assert_eq!(p.b.got, p.a.sent, "{side:?} cut {cut}: A to B exactly once, in order");
            assert_eq!(p.a.got, p.b.sent, "{side:?} cut {cut}: B to A exactly once, in order");
            assert!(p.a.s.conduit().stats().resumes + p.b.s.conduit().stats().resumes >= 1);
        }
    }
}

#[test]
fn truncated_states_are_refused_at_every_byte() {
    for side in [Side::A, Side::B] {
        let bytes = busy_state(side);
        for len in 0..bytes.len() {
            let r = Session::import(&bytes[..len], Instant::from_nanos(5), config());
            assert!(r.is_err(), "{side:?}: a state cut at {len} of {} bytes was accepted", bytes.len());
        }
        Session::import(&bytes, Instant::from_nanos(5), config()).expect("the whole state imports");
    }
}

/// Drive an imported session a little: attach, fire timers, drain outputs. Must not panic;
/// what it holds stays within the importer's limits.
fn drive(mut s: Session, cfg: SessionConfig) {
    let mut now = Instant::from_nanos(10_000_000_000);
    let mut buf = vec![0u8; cfg.conduit.max_frame_len as usize];
    let _link = s.link_up(now, ResumeKey([9; 16]));
    for _ in 0..3 {
        while s.poll_transmit(now, &mut buf).is_some() {}
        while s.poll_event().is_some() {}
        let _ = s.send(ROOT, b"x");
        let _ = s.open(b"");
        now = s.poll_timeout().unwrap_or(now).max(now);
        s.handle_timeout(now);
    }
    let stats = s.stats();
    assert!(stats.conduit.replay_frames <= u64::from(cfg.conduit.replay_frames));
    assert!(stats.conduit.replay_bytes <= u64::from(cfg.conduit.replay_bytes));
    assert!(s.connection_count() <= cfg.max_connections as usize);
}

#[test]
fn every_single_byte_corruption_is_refused_or_stays_within_limits() {
    let cfg = config();
    let mut accepted = 0;
    let mut refused = 0;
    for side in [Side::A, Side::B] {
        let bytes = busy_state(side);
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                match Session::import(&bad, Instant::from_nanos(5), cfg) {
                    Ok(s) => {
                        accepted += 1;
                        drive(s, cfg);
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(!e.to_string().is_empty());
                    }
                }
                // The same bytes as a raw conduit state: refused by kind, never a panic.
                assert!(Conduit::import(&bad, Instant::from_nanos(5), cfg.conduit).is_err());
            }
        }
    }
    // Item bytes and credit counters are free-form, so many corruptions stay valid (and
    // were driven above); positions, keys, flags, ids and lengths are checked.
    assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
}

#[test]
fn a_newer_version_is_refused_with_a_typed_error() {
    let mut bytes = busy_state(Side::B);
    bytes[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let err = Session::import(&bytes, Instant::ZERO, config()).expect_err("newer version");
    assert_eq!(err, ImportError::UnsupportedVersion { version: VERSION + 1 });
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn a_state_over_the_importers_limits_is_refused() {
    let bytes = busy_state(Side::A);
    let base = config();
    let over = |cfg: SessionConfig| match Session::import(&bytes, Instant::ZERO, cfg) {
        Err(ImportError::OverLimit { limit, value, max }) => {
            assert!(value > max, "{limit}: {value} <= {max}");
            limit
        }
        other => panic!("expected OverLimit, got {other:?}"),
    };
    let ring = |f: fn(&mut ConduitConfig)| {
        let mut c = base;
        f(&mut c.conduit);
        c
    };
    assert_eq!(over(ring(|c| c.replay_frames = 2)), "replay_frames");
    assert_eq!(over(ring(|c| c.replay_bytes = 4096)), "replay_bytes");
    assert_eq!(over(ring(|c| c.recovery_timeout = Duration::from_secs(1))), "recovery_timeout");
    assert_eq!(
        over({
            let mut patched = base;
            patched.max_connections = 1;
            patched
        }),
        "max_connections"
    );
    assert_eq!(
        over({
            let mut patched = base;
            patched.max_metadata = 2;
            patched
        }),
        "max_metadata"
    );
    assert_eq!(
        over({
            let mut patched = base;
            patched.initial_credit = 1024;
            patched
        }),
        "initial_credit (receive window)"
    );
    let frame = ring(|c| {
        c.max_frame_len = 256;
        c.replay_bytes = 24 << 10;
    });
    assert_eq!(over(frame), "max_item_len");
    // Within every limit: accepted.
    Session::import(&bytes, Instant::ZERO, base).expect("same limits");
    let roomier = {
        let mut patched = ring(|c| c.replay_bytes = 1 << 20);
        patched.max_connections = 100;
        patched
    };
    Session::import(&bytes, Instant::ZERO, roomier).expect("larger limits");
}

#[test]
fn export_refuses_pending_events_and_an_ended_session() {
    // Credit windows larger than the ring, so that the ring fills first.
    let mut p = busy_pair_with({
        let mut patched = config();
        patched.initial_credit = 256 << 10;
        patched
    });
    p.allow_end = true;
    // A fills its ring; B's acks come back and free it: a Writable is queued.
    while p.a.s.send(ROOT, &[7; 1000]).is_ok() {}
    assert_eq!(p.a.s.send(ROOT, &[7; 1000]), Err(CommandError::WouldBlock));
    p.drain();
    p.deliver(Side::B, 100);
    p.advance(100);
    let (now, link) = (p.now, p.a.link.expect("link up"));
    let mut writable = false;
    while let Some(m) = p.a.inbox.pop_front() {
        let _ = p.a.s.handle_message(now, link, &m);
        writable |= p.a.s.conduit().can_send(1000);
    }
    assert!(writable, "the acks freed the ring");
    let mut out = Vec::new();
    assert_eq!(p.a.s.export(now, &mut out), Err(ExportError::EventsPending));
    assert!(out.is_empty(), "nothing written on error");
    while p.a.s.poll_event().is_some() {}
    p.a.s.export(now, &mut out).expect("at rest once the events are read");
    out.clear();
    p.a.s.close(now, 0, "bye");
    p.drain();
    p.settle_close();
    assert!(p.a.s.is_ended());
    assert_eq!(p.a.s.export(p.now, &mut out), Err(ExportError::Ended));
    assert!(out.is_empty(), "nothing written on error");
    assert!(!ExportError::Ended.to_string().is_empty());
}

impl Pair {
    /// Deliver until the close has gone through.
    fn settle_close(&mut self) {
        for _ in 0..100 {
            if self.a.s.is_ended() {
                return;
            }
            self.deliver(Side::B, 8);
            self.deliver(Side::A, 8);
        }
    }
}

#[test]
fn a_conduit_moves_with_its_ring_and_keys() {
    let cfg = {
        let mut patched = ConduitConfig::default();
        patched.max_frame_len = 1024;
        patched.replay_bytes = 8192;
        patched.replay_frames = 32;
        patched
    };
    let mut a = Conduit::new(Role::Initiator, cfg).expect("config");
    let mut b = Conduit::new(Role::Acceptor, cfg).expect("config");
    let mut now = Instant::from_nanos(1_000);
    let mut buf = vec![0u8; 1024];
    let mut got_b = Vec::new();
    let mut got_a = Vec::new();
    let pump = |now,
                a: &mut Conduit,
                b: &mut Conduit,
                la,
                lb,
                got_a: &mut Vec<Vec<u8>>,
                got_b: &mut Vec<Vec<u8>>,
                buf: &mut [u8],
                drop_to_a: bool| {
        for _ in 0..20 {
            while let Some(t) = a.poll_transmit(now, buf) {
                if let Ok(Some(i)) = b.handle_message(now, lb, &buf[..t.len]) {
                    got_b.push(i.to_vec());
                }
            }
            while let Some(t) = b.poll_transmit(now, buf) {
                if !drop_to_a {
                    if let Ok(Some(i)) = a.handle_message(now, la, &buf[..t.len]) {
                        got_a.push(i.to_vec());
                    }
                }
            }
            while a.poll_event().is_some() {}
            while b.poll_event().is_some() {}
        }
    };
    let la = a.link_up(now, ResumeKey::ZERO);
    let lb = b.link_up(now, ResumeKey([1; 16]));
    pump(now, &mut a, &mut b, la, lb, &mut got_a, &mut got_b, &mut buf, false);
    for i in 0..5u8 {
        a.send(&[i; 50]).expect("send");
        b.send(&[i + 100; 20]).expect("send");
    }
    // B's frames and acks never reach A: A holds 5 unacked items, B 5 undelivered to A.
    pump(now, &mut a, &mut b, la, lb, &mut got_a, &mut got_b, &mut buf, true);
    assert_eq!(a.unacked(), 5);
    let mut bytes = Vec::new();
    a.export(now, &mut bytes).expect("export attached");
    assert_eq!(
        Session::import(&bytes, now, SessionConfig::default()).err(),
        Some(ImportError::WrongKind { kind: 1 }),
        "a conduit state is not a session state"
    );
    b.link_down(now, lb);
    now = now.saturating_add(Duration::from_secs(3));
    let mut a2 = Conduit::import(&bytes, now, cfg).expect("import");
    let mut again = Vec::new();
    a2.export(now, &mut again).expect("re-export");
    assert_eq!(again, bytes);
    assert_eq!(a2.detached_since(), Some(now), "exported attached: detached from the import on");
    assert_eq!(a2.resume_key(), a.resume_key());
    drop(a);
    let la = a2.link_up(now, ResumeKey::ZERO);
    let lb = b.link_up(now, ResumeKey([2; 16]));
    pump(now, &mut a2, &mut b, la, lb, &mut got_a, &mut got_b, &mut buf, false);
    assert_eq!(got_b, (0..5u8).map(|i| vec![i; 50]).collect::<Vec<_>>(), "each item once, in order");
    assert_eq!(got_a, (0..5u8).map(|i| vec![i + 100; 20]).collect::<Vec<_>>(), "replayed to the import");
    assert_eq!(a2.stats().resumes, 1);
    // A truncated conduit state is refused at every byte.
    for len in 0..bytes.len() {
        assert!(Conduit::import(&bytes[..len], now, cfg).is_err());
    }
}

#[test]
fn contradictory_positions_are_refused_by_name() {
    let bytes = busy_state(Side::A);
    // The CONDUIT section's body starts after the header (12) and the section head (5):
    // role, flags, then `sent` and `acked` (u64 each).
    let sent = u64::from_le_bytes(bytes[19..27].try_into().expect("8 bytes"));
    let mut bad = bytes.clone();
    bad[27..35].copy_from_slice(&(sent + 1).to_le_bytes());
    assert_eq!(
        Session::import(&bad, Instant::ZERO, config()).err(),
        Some(ImportError::Invalid { field: "acked or transmitted beyond sent" })
    );
    // A ring that does not start at the acked position.
    let mut bad = bytes.clone();
    let acked = u64::from_le_bytes(bytes[27..35].try_into().expect("8 bytes"));
    bad[27..35].copy_from_slice(&(acked - 1).to_le_bytes());
    assert_eq!(
        Session::import(&bad, Instant::ZERO, config()).err(),
        Some(ImportError::Invalid { field: "ring first seq" })
    );
    // Bytes after the last section.
    let mut long = bytes.clone();
    long.push(0x13);
    let body = (long.len() - 12) as u32;
    long[8..12].copy_from_slice(&body.to_le_bytes());
    assert_eq!(
        Session::import(&long, Instant::ZERO, config()).err(),
        Some(ImportError::UnexpectedSection { expected: 0, found: 0x13 })
    );
}
