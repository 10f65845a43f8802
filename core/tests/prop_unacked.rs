//! Property test of [`Session::unacked_messages`] against a model: whatever the faults (frames
//! delivered a few at a time, links killed with frames in flight, resumes, time passing),
//! once the sender gives the session up, every message it sent and the peer did not
//! acknowledge comes back exactly once, in the order sent, with its connection; everything
//! else had reached the peer's application. Together: what the peer delivered plus what comes
//! back covers every message sent, the peer's share a prefix and the returned share a suffix
//! of the sent sequence (they may overlap: received but not yet acknowledged).
//!
//! The replay ring is small (6000 bytes), so that items wrap at its end and sends meet a full
//! ring. A failure prints the minimal failing script and is saved under
//! `proptest-regressions/`; `PROPTEST_RNG_SEED=<n>` fixes the generator.

use std::collections::VecDeque;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sotto_proto::conduit::ConduitConfig;
use sotto_proto::session::{ConnId, Incoming, Session, SessionConfig, SessionEvent, Unacked};
use sotto_proto::{Duration, Event, Instant, LinkId, ResumeKey, Role, SessionEnd};

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A sends a message of this length on its connection number `.0`.
    Send(usize, u16),
    /// Deliver up to this many frames toward B (`true`) or A.
    Deliver(bool, u8),
    /// The link dies with whatever is in flight.
    Kill,
    /// A fresh link (a resume once the first one is gone).
    Reconnect,
    /// Time passes (milliseconds), firing every deadline on the way.
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, prop_oneof![4u16..24, 24u16..700]).prop_map(|(c, l)| Op::Send(c, l)),
        4 => (any::<bool>(), 1u8..8).prop_map(|(to_b, k)| Op::Deliver(to_b, k)),
        1 => Just(Op::Kill),
        1 => Just(Op::Reconnect),
        1 => (0u16..60).prop_map(Op::Advance),
    ]
}

struct Pair {
    a: Session,
    b: Session,
    links: Option<(LinkId, LinkId)>,
    to_b: VecDeque<Vec<u8>>,
    to_a: VecDeque<Vec<u8>>,
    now: Instant,
    key: u8,
    /// What B's application received, in order.
    got: Vec<(ConnId, Vec<u8>)>,
}

impl Pair {
    fn new() -> Self {
        let mut conduit = ConduitConfig::default();
        conduit.max_frame_len = 2048;
        conduit.replay_bytes = 6000;
        let mut cfg = SessionConfig::default();
        cfg.conduit = conduit;
        Self {
            a: Session::new(Role::Initiator, cfg, b"a").expect("config"),
            b: Session::new(Role::Acceptor, cfg, b"b").expect("config"),
            links: None,
            to_b: VecDeque::new(),
            to_a: VecDeque::new(),
            now: Instant::ZERO,
            key: 0,
            got: Vec::new(),
        }
    }

    fn kill(&mut self) {
        if let Some((la, lb)) = self.links.take() {
            self.a.link_down(self.now, la);
            self.b.link_down(self.now, lb);
        }
        self.to_b.clear();
        self.to_a.clear();
    }

    fn reconnect(&mut self) {
        if self.links.is_none() && !self.a.is_ended() && !self.b.is_ended() {
            self.key += 1;
            let la = self.a.link_up(self.now, ResumeKey::ZERO);
            let lb = self.b.link_up(self.now, ResumeKey([self.key; 16]));
            self.links = Some((la, lb));
        }
    }

    /// Drain both sides' outputs into the link (or drop them without one).
    fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.links.is_some_and(|(la, _)| la == t.link) {
                    self.to_b.push_back(buf[..t.len].to_vec());
                }
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.links.is_some_and(|(_, lb)| lb == t.link) {
                    self.to_a.push_back(buf[..t.len].to_vec());
                }
            }
            let mut dropped = false;
            while let Some(e) = self.a.poll_event() {
                moved = true;
                dropped |= matches!(e, SessionEvent::Conduit(Event::DropLink { .. }));
            }
            while let Some(e) = self.b.poll_event() {
                moved = true;
                dropped |= matches!(e, SessionEvent::Conduit(Event::DropLink { .. }));
            }
            if dropped {
                self.kill();
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, to_b: bool, k: usize) {
        for _ in 0..k {
            let Some((la, lb)) = self.links else { return };
            if to_b {
                let Some(frame) = self.to_b.pop_front() else { return };
                match self.b.handle_message(self.now, lb, &frame) {
                    Ok(Some(Incoming::Data { conn, payload })) => {
                        self.got.push((conn, payload.to_vec()));
                        let credit = self.b.credit_of(payload.len());
                        let _ = self.b.release(conn, credit as usize);
                    }
                    Ok(Some(Incoming::DataBatch { conn, batch })) => {
                        self.got.extend(batch.iter().map(|p| (conn, p.to_vec())));
                        let _ = self.b.release(conn, batch.credit() as usize);
                    }
                    _ => {}
                }
            } else {
                let Some(frame) = self.to_a.pop_front() else { return };
                let _ = self.a.handle_message(self.now, la, &frame);
            }
            self.drain();
        }
    }

    fn advance(&mut self, ms: u16) {
        let target = self.now.saturating_add(Duration::from_millis(u64::from(ms)));
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = target;
    }

    /// Deliver everything both ways until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.to_a.is_empty() && self.to_b.is_empty() {
                return;
            }
            self.deliver(true, 64);
            self.deliver(false, 64);
        }
        panic!("did not settle");
    }
}

/// The payload of message `i`: its number, then filler, `len` bytes in all (at least 4).
fn payload(i: u32, len: u16) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(usize::from(len).max(4), (i % 251) as u8);
    v
}

/// Run `script`, check the model; returns (sent, returned, delivered by B).
fn run(script: &[Op]) -> Result<(usize, usize, usize), TestCaseError> {
    let mut p = Pair::new();
    p.reconnect();
    p.drain();
    p.settle();
    prop_assert!(p.a.is_ready() && p.b.is_ready());
    let mut conns = Vec::new();
    for _ in 0..3 {
        let c = p.a.open(b"").expect("open");
        p.drain();
        p.settle();
        p.b.accept(c, b"").expect("accept");
        p.drain();
        p.settle();
        conns.push(c);
    }
    let mut sent: Vec<(ConnId, Vec<u8>)> = Vec::new();
    for &op in script {
        match op {
            Op::Send(c, len) => {
                let m = payload(sent.len() as u32, len);
                if p.a.send(conns[c], &m).is_ok() {
                    sent.push((conns[c], m));
                }
            }
            Op::Deliver(to_b, k) => p.deliver(to_b, usize::from(k)),
            Op::Kill => p.kill(),
            Op::Reconnect => p.reconnect(),
            Op::Advance(ms) => p.advance(ms),
        }
        p.drain();
    }
    // A gives the session up (its recovery deadline passed, say).
    p.kill();
    p.a.conduit_end(p.now, SessionEnd::RecoveryTimeout);
    prop_assert!(p.a.is_ended());
    let mut back = Vec::new();
    for u in p.a.unacked_messages() {
        match u {
            Unacked::Data { conn, payload } => back.push((conn, payload.to_vec())),
            other => prop_assert!(false, "only data was left unacknowledged: {other:?}"),
        }
    }
    let k = sent.len() - back.len().min(sent.len());
    prop_assert_eq!(&back[..], &sent[k..], "the unacknowledged messages are the suffix of what was sent");
    prop_assert!(p.got.len() <= sent.len());
    prop_assert_eq!(&p.got[..], &sent[..p.got.len()], "B delivered a prefix, once each, in order");
    prop_assert!(
        p.got.len() >= k,
        "everything not returned reached B: {} of {} returned, B got {}",
        back.len(),
        sent.len(),
        p.got.len()
    );
    // A second reading gives the same (nothing is consumed).
    prop_assert_eq!(p.a.unacked_messages().count(), back.len());
    Ok((sent.len(), back.len(), p.got.len()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn every_unacknowledged_message_comes_back_once_in_order_with_its_connection(
        script in proptest::collection::vec(op(), 0..300),
    ) {
        run(&script)?;
    }
}

/// A fixed script, deterministic: a burst of small messages (batched), large ones, part of
/// it delivered and acknowledged, the link killed with the rest in flight, more sent
/// without a link (wrapping the ring): the returned messages are exactly the unacknowledged
/// suffix, and some come back although B received them (at least once across a loss).
#[test]
fn a_burst_cut_mid_flight_returns_the_unacknowledged_suffix() {
    let mut script = Vec::new();
    script.extend((0..30).map(|i| Op::Send(i % 3, 8)));
    script.extend((0..4).map(|i| Op::Send(i % 2, 600)));
    script.push(Op::Deliver(true, 3));
    script.push(Op::Advance(30));
    script.push(Op::Deliver(false, 8));
    script.push(Op::Deliver(true, 1));
    script.push(Op::Kill);
    script.extend((0..12).map(|i| Op::Send(i % 3, 500)));
    let (sent, back, got) = run(&script).expect("model holds");
    assert!(sent > 34, "the ring took most of it: {sent}");
    assert!(back > sent - 34, "more than what was sent without a link came back: {back}");
    assert!(got + back > sent, "B received some that come back too: {got} + {back} of {sent}");
}
