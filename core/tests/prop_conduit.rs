//! Property test of an initiator/acceptor pair against a reference model, driven by
//! operation scripts: sends both ways, partial delivery, the link killed (both ends, or one
//! end only: half-open), reconnects, time passing.
//!
//! The model is a pair of queues over a link that can be killed: whatever the faults, each
//! side's application must see exactly the other side's accepted sends, in order, once (a
//! prefix of them at every step, all of them once the faults stop and the pair is left to
//! settle). Timers are checked against `poll_timeout` at every deadline: one nanosecond
//! before it `handle_timeout` changes nothing observable, at it something happens (or the
//! deadline moves on), and afterwards no deadline is left at or before `now`. A conduit whose
//! deadline is later than another's is also called at the other's deadline and must not move.
//!
//! A failure prints the minimal failing script and is saved under `proptest-regressions/`
//! beside this file, so the next run replays it first; `PROPTEST_RNG_SEED=<n>` fixes the
//! generator, `PROPTEST_CASES=<n>` runs more cases.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sotto_proto::conduit::{ConduitStats, SendError};
use sotto_proto::{Conduit, ConduitConfig, Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// The application of this side sends an item of this length.
    Send(Side, u8),
    /// Deliver up to this many messages toward this side.
    Deliver(Side, u8),
    /// The link dies and both ends notice.
    Kill,
    /// The link dies and only this end notices (the other holds a half-open link).
    HalfOpen(Side),
    /// The initiator attaches a fresh link; the acceptor accepts it.
    Reconnect,
    /// Time passes (milliseconds), firing every deadline on the way.
    Advance(u32),
    /// Time passes to the earliest deadline exactly.
    FireNext,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (side(), 0u8..48).prop_map(|(s, l)| Op::Send(s, l)),
        4 => (side(), 1u8..6).prop_map(|(s, k)| Op::Deliver(s, k)),
        1 => Just(Op::Kill),
        1 => side().prop_map(Op::HalfOpen),
        2 => Just(Op::Reconnect),
        2 => (0u32..40_000).prop_map(Op::Advance),
        2 => Just(Op::FireNext),
    ]
}

/// What a driver can observe of a conduit without consuming an output.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    timeout: Option<Instant>,
    stats: ConduitStats,
    counts: (u64, u64, u64),
    established: bool,
    ended: Option<SessionEnd>,
    has_transmit: bool,
    link: Option<LinkId>,
}

fn fingerprint(c: &Conduit) -> Fingerprint {
    Fingerprint {
        timeout: c.poll_timeout(),
        stats: c.stats(),
        counts: (c.items_sent(), c.items_acked(), c.items_received()),
        established: c.is_established(),
        ended: c.ended(),
        has_transmit: c.has_transmit(),
        link: c.current_link(),
    }
}

struct End {
    c: Conduit,
    /// The link this end holds.
    link: Option<LinkId>,
    /// Model: every item this side's application had accepted by `send`.
    sent: Vec<Vec<u8>>,
    /// Items this side's application received.
    got: Vec<Vec<u8>>,
    /// Messages in flight toward this end on the current link.
    inbox: VecDeque<Vec<u8>>,
    /// The peer closed its end gracefully: EOF follows the inbox.
    fin: bool,
}

struct Pair {
    a: End,
    b: End,
    now: Instant,
    keys: u8,
    buf: Vec<u8>,
}

impl Pair {
    fn new(cfg_a: ConduitConfig, cfg_b: ConduitConfig) -> Self {
        let end = |role, cfg| End {
            c: Conduit::new(role, cfg).expect("valid config"),
            link: None,
            sent: Vec::new(),
            got: Vec::new(),
            inbox: VecDeque::new(),
            fin: false,
        };
        Self {
            a: end(Role::Initiator, cfg_a),
            b: end(Role::Acceptor, cfg_b),
            now: Instant::from_nanos(1_000_000_000),
            keys: 0,
            buf: vec![0u8; cfg_a.max_frame_len.max(cfg_b.max_frame_len) as usize],
        }
    }

    fn end(&mut self, s: Side) -> &mut End {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// `s` closes its end of the link (it dropped it, or read EOF): what was in flight toward
    /// it is lost; with `fin` the peer reads what `s` wrote, then EOF.
    fn close_end(&mut self, s: Side, fin: bool) {
        let now = self.now;
        let e = self.end(s);
        let Some(l) = e.link.take() else { return };
        e.c.link_down(now, l);
        e.inbox.clear();
        e.fin = false;
        let other = self.end(if s == Side::A { Side::B } else { Side::A });
        if other.link.is_some() {
            other.fin |= fin;
        }
    }

    fn drain(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for s in [Side::A, Side::B] {
                let other = if s == Side::A { Side::B } else { Side::A };
                loop {
                    let now = self.now;
                    let mut buf = std::mem::take(&mut self.buf);
                    let t = self.end(s).c.poll_transmit(now, &mut buf);
                    let Some(t) = t else {
                        self.buf = buf;
                        break;
                    };
                    moved = true;
                    assert_eq!(Some(t.link), self.end(s).link, "transmit for a link the driver does not hold");
                    if self.end(other).link.is_some() {
                        self.end(other).inbox.push_back(buf[..t.len].to_vec());
                    }
                    self.buf = buf;
                }
                while let Some(e) = self.end(s).c.poll_event() {
                    moved = true;
                    if let Event::DropLink { link, .. } = e {
                        if self.end(s).link == Some(link) {
                            self.close_end(s, true);
                        }
                    }
                }
            }
            // A peer whose partner closed gracefully reads EOF once its inbox is empty.
            for s in [Side::A, Side::B] {
                let e = self.end(s);
                if e.link.is_some() && e.fin && e.inbox.is_empty() {
                    self.close_end(s, true);
                    moved = true;
                }
            }
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never settle");
    }

    /// I1 (prefix, at every step), I2, I3, I4.
    fn check(&self) {
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            assert!(me.got.len() <= peer.sent.len(), "delivered more than was sent");
            assert_eq!(me.got[..], peer.sent[..me.got.len()], "delivered sequence is not a prefix of the sent one");
            let c = &me.c;
            assert_eq!(c.items_sent(), me.sent.len() as u64);
            assert_eq!(c.items_received(), me.got.len() as u64);
            assert!(c.items_acked() <= c.items_sent());
            assert!(c.items_acked() <= peer.c.items_received(), "acked what the peer never delivered");
            assert_eq!(c.stats().replay_frames, c.items_sent() - c.items_acked());
            assert!(c.stats().replay_bytes <= u64::from(c.config().replay_bytes));
            assert_eq!(c.stats().events_overflowed, 0);
        }
    }

    fn deliver(&mut self, to: Side, k: usize) {
        for _ in 0..k {
            let now = self.now;
            let e = self.end(to);
            let (Some(link), Some(msg)) = (e.link, e.inbox.pop_front()) else { break };
            if let Ok(Some(item)) = e.c.handle_message(now, link, &msg) {
                e.got.push(item.to_vec());
            }
            self.drain();
        }
    }

    fn reconnect(&mut self) {
        let now = self.now;
        // Whatever was in flight on the old link is gone; the new link supersedes it at both
        // ends (each conduit drops the old one itself).
        for s in [Side::A, Side::B] {
            let e = self.end(s);
            e.inbox.clear();
            e.fin = false;
        }
        // If A never got a ServerHello it dials fresh again; B's conduit takes that retry as
        // the same session starting over (its peer never confirmed the ServerHello).
        self.keys = self.keys.wrapping_add(1).max(1);
        self.a.link = Some(self.a.c.link_up(now, ResumeKey::ZERO));
        self.b.link = Some(self.b.c.link_up(now, ResumeKey([self.keys; 16])));
        self.drain();
    }

    /// Fire the earliest deadline at exactly its instant, checking both conduits around it.
    /// Returns false when there is none up to `limit`.
    fn fire_next(&mut self, limit: Instant) -> bool {
        let next = [self.a.c.poll_timeout(), self.b.c.poll_timeout()].into_iter().flatten().min();
        let Some(t) = next.filter(|t| *t <= limit) else { return false };
        assert!(t > self.now, "a deadline {t:?} at or before now {:?} was left unfired", self.now);
        let before: Vec<Fingerprint> = [&mut self.a, &mut self.b]
            .into_iter()
            .map(|e| {
                // One nanosecond early: nothing observable happens.
                let fp = fingerprint(&e.c);
                e.c.handle_timeout(Instant::from_nanos(t.as_nanos() - 1));
                assert_eq!(fp, fingerprint(&e.c), "handle_timeout fired before poll_timeout");
                assert_eq!(e.c.poll_event(), None, "handle_timeout fired before poll_timeout");
                fp
            })
            .collect();
        self.now = t;
        for (e, fp) in [&mut self.a, &mut self.b].into_iter().zip(&before) {
            e.c.handle_timeout(t);
            if fp.timeout == Some(t) {
                assert_ne!(*fp, fingerprint(&e.c), "handle_timeout at poll_timeout did nothing");
            } else {
                assert_eq!(*fp, fingerprint(&e.c), "handle_timeout before its deadline did something");
            }
        }
        self.drain();
        for c in [&self.a.c, &self.b.c] {
            if let Some(n) = c.poll_timeout() {
                assert!(n > t, "poll_timeout {n:?} not after handle_timeout({t:?})");
            }
        }
        true
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now.saturating_add(d);
        for _ in 0..10_000 {
            if !self.fire_next(target) {
                self.now = target;
                return;
            }
        }
        panic!("timers fire forever");
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Send(s, len) => {
                let e = self.end(s);
                let n = e.sent.len();
                let item: Vec<u8> = (0..len).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i)).collect();
                match e.c.send(&item) {
                    Ok(seq) => {
                        assert_eq!(seq, n as u64);
                        e.sent.push(item);
                    }
                    Err(SendError::WouldBlock) => {}
                    Err(SendError::Ended) => assert!(e.c.is_ended(), "send refused, session alive"),
                    Err(err) => panic!("send failed: {err}"),
                }
            }
            Op::Deliver(s, k) => self.deliver(s, usize::from(k)),
            Op::Kill => {
                self.close_end(Side::A, false);
                self.close_end(Side::B, false);
            }
            Op::HalfOpen(s) => {
                // `s` notices; the other end keeps a link on which nothing more arrives (its
                // writes vanish: `s` holds no link) until keepalive or a reconnect frees it.
                let other = if s == Side::A { Side::B } else { Side::A };
                self.end(other).inbox.clear();
                self.close_end(s, false);
            }
            Op::Reconnect => self.reconnect(),
            Op::Advance(ms) => self.advance(Duration::from_millis(u64::from(ms))),
            Op::FireNext => {
                self.fire_next(Instant::FAR_FUTURE);
            }
        }
        self.drain();
    }

    /// Faults stop: reconnect if needed, deliver everything, let timers run (acks, pings)
    /// until both directions are fully delivered.
    fn settle(&mut self) {
        for _ in 0..200 {
            if self.a.c.is_ended() || self.b.c.is_ended() {
                return;
            }
            if !(self.a.c.is_established() && self.b.c.is_established() && self.a.link.is_some()) {
                self.reconnect();
            }
            while !self.a.inbox.is_empty() || !self.b.inbox.is_empty() {
                self.deliver(Side::A, usize::MAX);
                self.deliver(Side::B, usize::MAX);
            }
            let done = self.b.got.len() == self.a.sent.len() && self.a.got.len() == self.b.sent.len();
            if done && !self.a.c.has_transmit() && !self.b.c.has_transmit() {
                return;
            }
            let next = [self.a.c.poll_timeout(), self.b.c.poll_timeout()].into_iter().flatten().min();
            if let Some(t) = next {
                self.fire_next(t);
            }
        }
    }
}

/// Small rings (so `send` blocks sometimes), either form on either side, default timers.
fn configs() -> impl Strategy<Value = (ConduitConfig, ConduitConfig)> {
    (any::<bool>(), any::<bool>(), 1u32..12, 0u32..4, 1u32..5).prop_map(|(ext_a, ext_b, frames, extra, ack_every)| {
        let base = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 128;
            patched.replay_frames = frames;
            patched.replay_bytes = 112 + 64 * extra;
            patched.ack_every = ack_every;
            patched
        };
        (
            {
                let mut patched = base;
                patched.ext = ext_a;
                patched
            },
            {
                let mut patched = base;
                patched.ext = ext_b;
                patched
            },
        )
    })
}

proptest! {
    #![proptest_config(config_with_persistence())]
    #[test]
    fn pair_matches_the_reference_model(
        (cfg_a, cfg_b) in configs(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut p = Pair::new(cfg_a, cfg_b);
        p.drain();
        for op in ops {
            p.step(op);
        }
        p.settle();
        if p.a.c.is_ended() || p.b.c.is_ended() {
            // Only a long detachment may end an honest session.
            for c in [&p.a.c, &p.b.c] {
                prop_assert!(matches!(c.ended(), None | Some(SessionEnd::RecoveryTimeout | SessionEnd::Rejected)),
                    "ended with {:?}", c.ended());
            }
        } else {
            // Identical delivered sequences: the model delivers everything sent, in order, once.
            prop_assert_eq!(&p.b.got, &p.a.sent);
            prop_assert_eq!(&p.a.got, &p.b.sent);
        }
    }
}

/// The default config (and its `PROPTEST_*` environment overrides), with failures saved
/// beside this file as `<name>.proptest-regressions` (commit those files).
fn config_with_persistence() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}
