//! Unit tests of the conduit through its public contract, with a tiny in-memory pump.

use super::*;
use crate::time::{Duration, Instant};
use crate::wire::{Frame, ServerHello};
use alloc::vec;
use alloc::vec::Vec;

struct Pair {
    a: Conduit,
    b: Conduit,
    la: Option<LinkId>,
    lb: Option<LinkId>,
    now: Instant,
    got_a: Vec<Vec<u8>>,
    got_b: Vec<Vec<u8>>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    key: u8,
}

impl Pair {
    fn new(cfg: ConduitConfig) -> Self {
        Self {
            a: Conduit::new(Role::Initiator, cfg).expect("config"),
            b: Conduit::new(Role::Acceptor, cfg).expect("config"),
            la: None,
            lb: None,
            now: Instant::ZERO,
            got_a: Vec::new(),
            got_b: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            key: 0,
        }
    }
    fn connect(&mut self) {
        self.key += 1;
        self.la = Some(self.a.link_up(self.now, ResumeKey::ZERO));
        self.lb = Some(self.b.link_up(self.now, ResumeKey([self.key; 16])));
        self.pump();
    }
    fn cut(&mut self) {
        if let Some(l) = self.la.take() {
            self.a.link_down(self.now, l);
        }
        if let Some(l) = self.lb.take() {
            self.b.link_down(self.now, l);
        }
        self.pump();
    }
    fn pump(&mut self) {
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.la == Some(t.link) {
                    if let Some(lb) = self.lb {
                        if let Ok(Some(item)) = self.b.handle_message(self.now, lb, &buf[..t.len]) {
                            self.got_b.push(item.to_vec());
                        }
                    }
                }
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                moved = true;
                if self.lb == Some(t.link) {
                    if let Some(la) = self.la {
                        if let Ok(Some(item)) = self.a.handle_message(self.now, la, &buf[..t.len]) {
                            self.got_a.push(item.to_vec());
                        }
                    }
                }
            }
            while let Some(e) = self.a.poll_event() {
                moved = true;
                if let Event::DropLink { link, .. } = e {
                    if self.la == Some(link) {
                        self.la = None;
                        self.a.link_down(self.now, link);
                        if let Some(lb) = self.lb.take() {
                            self.b.link_down(self.now, lb);
                        }
                    }
                }
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                moved = true;
                if let Event::DropLink { link, .. } = e {
                    if self.lb == Some(link) {
                        self.lb = None;
                        self.b.link_down(self.now, link);
                        if let Some(la) = self.la.take() {
                            self.a.link_down(self.now, la);
                        }
                    }
                }
                self.events_b.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }
    fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.pump();
    }
}

#[test]
fn fresh_handshake_and_exchange() {
    let mut p = Pair::new(ConduitConfig::default());
    p.a.send(b"before link").expect("queued");
    p.connect();
    assert!(p.a.is_established() && p.b.is_established());
    p.b.send(b"hi a").expect("sent");
    p.pump();
    assert_eq!(p.got_b, [b"before link".to_vec()]);
    assert_eq!(p.got_a, [b"hi a".to_vec()]);
    assert_eq!(p.a.resume_key(), Some(ResumeKey([1; 16])));
    assert!(matches!(p.events_a[0], Event::Attached { resumed: false, ext: true, .. }));
}

#[test]
fn resume_replays_unacked_in_order() {
    let mut p = Pair::new(ConduitConfig::default());
    p.connect();
    for i in 0..5u8 {
        p.a.send(&[i]).expect("sent");
    }
    // Cut before anything is pumped: all five sit in the ring, transmitted nowhere.
    let la = p.la.take().expect("link");
    p.a.link_down(p.now, la);
    let lb = p.lb.take().expect("link");
    p.b.link_down(p.now, lb);
    p.a.send(&[5]).expect("queued while detached");
    p.connect();
    assert_eq!(p.got_b, (0..6u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert_eq!(p.b.resume_key(), Some(ResumeKey([2; 16])));
    assert_eq!(p.a.stats().resumes, 1);
    // Standalone ack after ack_delay empties A's ring.
    p.advance(Duration::from_millis(30));
    assert_eq!(p.a.unacked(), 0);
}

#[test]
fn keepalive_kills_silent_link_not_session() {
    let mut p = Pair::new(ConduitConfig::default());
    p.connect();
    // Make B deaf: its link id no longer matches anything A sends (blackhole).
    p.lb = None;
    p.advance(Duration::from_secs(10));
    assert!(p.a.stats().pings_sent >= 1);
    p.advance(Duration::from_secs(21));
    assert!(p.events_a.iter().any(|e| matches!(e, Event::DropLink { reason: LinkDropReason::KeepaliveTimeout, .. })));
    assert!(!p.a.is_ended());
    p.advance(Duration::from_secs(120));
    assert_eq!(p.a.ended(), Some(SessionEnd::RecoveryTimeout));
}

#[test]
fn goodbye_ends_both() {
    let mut p = Pair::new(ConduitConfig::default());
    p.connect();
    p.a.send(b"last").expect("sent");
    p.a.close(p.now, 7, "done");
    p.pump();
    assert_eq!(p.got_b, [b"last".to_vec()]);
    assert_eq!(p.a.ended(), Some(SessionEnd::LocalClose { code: 7 }));
    assert_eq!(p.b.ended(), Some(SessionEnd::PeerGoodbye { code: 7 }));
    assert_eq!(p.b.peer_goodbye(), Some((7, "done")));
}

#[test]
fn base_form_works_without_ext() {
    let cfg = ConduitConfig { ext: false, ..ConduitConfig::default() };
    let mut p = Pair::new(cfg);
    p.connect();
    assert!(!p.a.ext_in_force());
    p.a.send(b"x").expect("sent");
    p.b.send(b"y").expect("sent");
    p.pump();
    assert_eq!(p.got_b, [b"x".to_vec()]);
    assert_eq!(p.got_a, [b"y".to_vec()]);
    p.cut();
    p.connect();
    assert_eq!(p.a.stats().resumes, 1);
}

/// The last `DropLink` among `c`'s pending events (the others are drained too).
fn last_drop(c: &mut Conduit) -> Option<(LinkId, LinkDropReason)> {
    let mut dropped = None;
    while let Some(e) = c.poll_event() {
        if let Event::DropLink { link, reason } = e {
            dropped = Some((link, reason));
        }
    }
    dropped
}

/// Start both directions `base` frames in, as if that many had been exchanged and acked.
fn jump_to(p: &mut Pair, base: u64) {
    for c in [&mut p.a, &mut p.b] {
        c.sent = base;
        c.acked = base;
        c.tx_cursor = base;
        c.tx_high = base;
        c.received = base;
        c.ack_sent = base;
        c.ring.restart_at(base);
    }
}

#[test]
fn seq_wraparound_is_seamless_across_resumes() {
    let mut p = Pair::new(ConduitConfig::default());
    p.connect();
    jump_to(&mut p, (1u64 << 32) - 3);
    let mut expect = Vec::new();
    for i in 0..8u8 {
        p.a.send(&[i]).expect("room");
        p.b.send(&[i]).expect("room");
        expect.push(vec![i]);
        if i == 2 {
            // Die with frames unacked right at the wrap: the resume hello carries
            // last_received = 0xffff_ffff.
            p.cut();
            p.connect();
        }
    }
    p.pump();
    p.advance(Duration::from_millis(30));
    assert_eq!(p.got_b, expect);
    assert_eq!(p.got_a, expect);
    assert_eq!(p.a.items_sent(), (1u64 << 32) + 5);
    assert_eq!(p.a.unacked(), 0, "acks across the wrap trim the ring");
    assert_eq!(p.b.unacked(), 0);
}

#[test]
fn lost_first_server_hello_restarts_fresh_on_standalone_acceptor() {
    let mut p = Pair::new(ConduitConfig::default());
    p.b.send(b"from b").expect("queued");
    p.a.send(b"from a").expect("queued");
    // A's hello reaches B, B answers, but the answer is lost with the link.
    let la = p.a.link_up(p.now, ResumeKey::ZERO);
    let lb = p.b.link_up(p.now, ResumeKey([1; 16]));
    let mut buf = vec![0u8; 1 << 16];
    let t = p.a.poll_transmit(p.now, &mut buf).expect("client hello");
    assert_eq!(p.b.handle_message(p.now, lb, &buf[..t.len]), Ok(None));
    while p.b.poll_transmit(p.now, &mut buf).is_some() {}
    p.a.link_down(p.now, la);
    p.b.link_down(p.now, lb);
    // A never got a key, so it asks for a fresh session again; B carries on.
    p.connect();
    assert!(p.a.is_established() && !p.a.is_ended());
    assert_eq!(p.got_b, [b"from a".to_vec()]);
    assert_eq!(p.got_a, [b"from b".to_vec()], "B's item replayed from seq 0");
    // Once A has spoken on a link, a fresh hello is no longer accepted.
    p.cut();
    let mut intruder = Conduit::new(Role::Initiator, ConduitConfig::default()).expect("config");
    let li = intruder.link_up(p.now, ResumeKey::ZERO);
    let lb = p.b.link_up(p.now, ResumeKey([3; 16]));
    let t = intruder.poll_transmit(p.now, &mut buf).expect("client hello");
    assert_eq!(p.b.handle_message(p.now, lb, &buf[..t.len]), Err(InputError::LinkDropped(LinkDropReason::Rejected)));
    let _ = li;
}

#[test]
fn handle_timeout_is_idempotent_even_with_zero_recovery_timeout() {
    let cfg = ConduitConfig { recovery_timeout: Duration::ZERO, ..ConduitConfig::default() };
    let mut p = Pair::new(cfg);
    p.connect();
    p.lb = None; // blackhole: A's pings go unanswered
    p.advance(Duration::from_secs(10));
    p.now = p.now.saturating_add(Duration::from_secs(21));
    p.a.handle_timeout(p.now);
    let first = p.a.ended();
    p.a.handle_timeout(p.now);
    assert_eq!(p.a.ended(), first, "a second call at the same now changes nothing");
    assert_eq!(first, Some(SessionEnd::RecoveryTimeout));
}

/// Keepalive while the link's writes are stuck (the PING queued behind data the peer never
/// reads, so `poll_transmit` is not drained) and nothing comes in: the pong is awaited from
/// when the PING fell due, so the link is dropped at ping_interval + pong_timeout even
/// though the PING never left.
#[test]
fn keepalive_drops_a_link_whose_writes_are_stuck() {
    let cfg = ConduitConfig::default();
    let mut p = Pair::new(cfg);
    p.connect();
    let la = p.la.expect("up");
    p.a.send(b"queued, never written").expect("room");
    let due = p.now.saturating_add(cfg.ping_interval);
    p.a.handle_timeout(due);
    let dead = due.saturating_add(cfg.pong_timeout);
    let early = Instant::from_nanos(dead.as_nanos() - 1);
    p.a.handle_timeout(early);
    assert!(p.a.is_established(), "alive until the pong deadline");
    p.a.handle_timeout(dead);
    assert_eq!(last_drop(&mut p.a), Some((la, LinkDropReason::KeepaliveTimeout)));
    assert!(!p.a.is_ended(), "the link died, not the session");
}

/// A slow link: the PING's answer waits behind a large frame the peer is still writing, and
/// the frame's bytes keep arriving. Each arrival keeps the deadline one `pong_timeout` ahead;
/// once they stop, the link is dropped `pong_timeout` after the last. A progress report for a
/// link that is not the current one changes nothing.
#[test]
fn bytes_of_an_unfinished_frame_keep_a_slow_link_alive_until_they_stop() {
    let cfg = ConduitConfig::default();
    let mut p = Pair::new(cfg);
    p.connect();
    let la = p.la.expect("up");
    let due = p.now.saturating_add(cfg.ping_interval);
    p.a.handle_timeout(due);
    let mut at = due;
    let step = Duration::from_nanos(cfg.pong_timeout.as_nanos() / 2);
    for _ in 0..10 {
        at = at.saturating_add(step);
        p.a.handle_progress(at, la);
        p.a.handle_timeout(at);
        assert!(p.a.is_established(), "alive while bytes arrive");
    }
    let stale = LinkId(la.0 + 1);
    let dead = at.saturating_add(cfg.pong_timeout);
    p.a.handle_progress(Instant::from_nanos(dead.as_nanos() - 1), stale);
    p.a.handle_timeout(Instant::from_nanos(dead.as_nanos() - 1));
    assert!(p.a.is_established(), "alive until pong_timeout after the last bytes");
    p.a.handle_timeout(dead);
    assert_eq!(
        last_drop(&mut p.a),
        Some((la, LinkDropReason::KeepaliveTimeout)),
        "not kept alive by another link's bytes"
    );
}

/// While our PING has been awaited for `ping_interval` and bytes keep arriving, a standalone
/// ACK goes out once per interval: the peer, whose own PING may wait behind the same large
/// frame, hears from us. Not before the interval, and not twice within one.
#[test]
fn bytes_heard_while_a_ping_is_awaited_send_a_sign_of_life_once_per_interval() {
    let cfg = ConduitConfig::default();
    let mut p = Pair::new(cfg);
    p.connect();
    p.b.send(b"so that A has a position to report").expect("room");
    p.pump();
    let la = p.la.expect("up");
    let acks = p.a.stats().acks_sent;
    let mut buf = vec![0u8; p.a.max_transmit_len()];
    let due = p.now.saturating_add(cfg.ping_interval);
    p.a.handle_timeout(due);
    while p.a.poll_transmit(due, &mut buf).is_some() {}
    assert_eq!(p.a.stats().pings_sent, 1, "a PING, never answered");
    let acks = p.a.stats().acks_sent.max(acks);
    let early = Instant::from_nanos(due.saturating_add(cfg.ping_interval).as_nanos() - 1);
    p.a.handle_progress(early, la);
    assert!(!p.a.has_transmit(), "nothing before an interval");
    let later = due.saturating_add(cfg.ping_interval);
    p.a.handle_progress(later, la);
    assert!(p.a.has_transmit(), "announced");
    while p.a.poll_transmit(later, &mut buf).is_some() {}
    assert_eq!(p.a.stats().acks_sent, acks + 1, "one standalone ACK");
    assert_eq!(p.a.stats().pings_sent, 1, "no second PING in flight");
    let soon = later.saturating_add(Duration::from_nanos(cfg.ping_interval.as_nanos() / 2));
    p.a.handle_progress(soon, la);
    assert!(!p.a.has_transmit(), "not twice within an interval");
    assert!(p.a.is_established());
}

/// The base form's counterpart: a blocked sender's ack-starvation deadline is pushed back by
/// the bytes of a peer frame still arriving (a base-form peer's every data frame carries its
/// ack), and the link is cycled `ack_starved_timeout` after they stop.
#[test]
fn bytes_of_an_unfinished_frame_put_off_a_base_form_ack_starvation_cycle() {
    let cfg = ConduitConfig { ext: false, replay_frames: 4, ..ConduitConfig::default() };
    let timeout = cfg.ack_starved_timeout;
    let mut p = Pair::new(cfg);
    p.connect();
    let la = p.la.expect("up");
    for i in 0..4u8 {
        p.a.send(&[i]).expect("room");
    }
    assert_eq!(p.a.send(&[4]), Err(SendError::WouldBlock));
    // Transmitted, so that frames are unacked; B's acks never come back (B sends nothing).
    p.pump();
    let half = Duration::from_nanos(timeout.as_nanos() / 2);
    for _ in 0..10 {
        p.now = p.now.saturating_add(half);
        p.a.handle_progress(p.now, la);
        p.a.handle_timeout(p.now);
        assert_eq!(p.a.stats().link_drops.ack_starved, 0, "not while a frame arrives");
    }
    let last = p.now;
    p.a.handle_timeout(Instant::from_nanos(last.saturating_add(timeout).as_nanos() - 1));
    assert_eq!(p.a.stats().link_drops.ack_starved, 0, "not before the timeout after the last bytes");
    p.a.handle_timeout(last.saturating_add(timeout));
    assert_eq!(p.a.stats().link_drops.ack_starved, 1, "cycled once they stop");
}

/// Issue 14 defect 6 at the core: a base-form sender fills its ring before a single frame is
/// transmitted toward a peer that only reads. The refused `send` arms the starvation timer
/// (it shows in `poll_timeout`), each frame transmitted pushes it back, and when it fires the
/// link is cycled; the resume hello's position trims the ring and `Writable` follows.
#[test]
fn base_form_full_ring_before_any_transmit_still_cycles_on_time() {
    let cfg = ConduitConfig { ext: false, replay_frames: 4, ..ConduitConfig::default() };
    let timeout = cfg.ack_starved_timeout;
    let mut p = Pair::new(cfg);
    p.connect();
    for i in 0..4u8 {
        p.a.send(&[i]).expect("room");
    }
    assert_eq!(p.a.send(&[4]), Err(SendError::WouldBlock));
    assert_eq!(p.a.poll_timeout(), Some(p.now.saturating_add(timeout)), "armed by the refused send");
    p.advance(Duration::from_millis(300));
    assert_eq!(p.got_b.len(), 4, "transmitted and delivered, never acked");
    assert_eq!(p.a.poll_timeout(), Some(p.now.saturating_add(timeout)), "pushed back by the transmits");
    p.advance(timeout.saturating_sub(Duration::from_millis(1)));
    assert_eq!(p.a.stats().link_drops.ack_starved, 0, "not before the timeout");
    p.advance(Duration::from_millis(1));
    assert_eq!(p.a.stats().link_drops.ack_starved, 1);
    assert!(p.la.is_none(), "the link was cycled");
    p.connect();
    assert_eq!(p.a.unacked(), 0, "the resume hello carried B's position");
    assert!(p.events_a.contains(&Event::Writable));
}

/// `observe_time` is the clock that a refused `send` arms its deadline from (what a driver
/// calls instead of `poll_transmit` when `has_transmit` is `false`).
#[test]
fn a_refused_send_arms_its_deadline_from_the_time_observed() {
    let cfg = ConduitConfig { ext: false, replay_frames: 4, ..ConduitConfig::default() };
    let timeout = cfg.ack_starved_timeout;
    let mut p = Pair::new(cfg);
    p.connect();
    assert!(!p.a.has_transmit());
    let later = p.now.saturating_add(Duration::from_millis(1));
    p.a.observe_time(later);
    for i in 0..4u8 {
        p.a.send(&[i]).expect("room");
    }
    assert_eq!(p.a.send(&[4]), Err(SendError::WouldBlock));
    assert_eq!(p.a.poll_timeout(), Some(later.saturating_add(timeout)), "from the time observed");
}

/// Every frame `c` has due now, each as its own message.
fn transmit_all(c: &mut Conduit, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        out.push(buf[..t.len].to_vec());
    }
    out
}

/// A reader that cannot take delivery (its application's queue is full) observes what
/// arrives: data frames give up their acks (the ring frees room, `Writable` follows) and
/// their liveness but are delivered later, in order, exactly once; PINGs are answered at
/// once and never counted twice; the held-back link outlives its pong timeout.
#[test]
fn observed_frames_apply_acks_and_liveness_and_deliver_later() {
    let cfg = ConduitConfig { replay_frames: 2, ..ConduitConfig::default() };
    let mut p = Pair::new(cfg);
    p.b = Conduit::new(Role::Acceptor, ConduitConfig { replay_frames: 8, ..cfg }).expect("config");
    p.connect();
    let (la, lb) = (p.la.expect("link"), p.lb.expect("link"));
    // A fills its ring; B takes both and answers with data (carrying the ack).
    p.a.send(b"a0").expect("sent");
    p.a.send(b"a1").expect("sent");
    assert_eq!(p.a.send(b"a2"), Err(SendError::WouldBlock));
    for m in transmit_all(&mut p.a, p.now) {
        p.b.handle_message(p.now, lb, &m).expect("delivered");
    }
    p.b.send(b"b0").expect("sent");
    p.b.send(b"b1").expect("sent");
    // B pings A as well (its ping timer is due).
    p.now = p.now.saturating_add(cfg.ping_interval);
    p.b.handle_timeout(p.now);
    p.a.handle_timeout(p.now);
    let to_a = transmit_all(&mut p.b, p.now);
    assert!(to_a.len() >= 3, "two data frames and a ping: {}", to_a.len());
    let _ = transmit_all(&mut p.a, p.now); // A's own ping; its pong stays unread
    assert!(p.a.stats().pings_sent >= 1);

    // A observes everything: nothing delivered, the acks applied, the ping answered.
    let mut deferred = Vec::new();
    for m in &to_a {
        match p.a.observe_message(p.now, la, m).expect("observed") {
            Observed::Deferred | Observed::DeferredGoodbye => deferred.push(m.clone()),
            Observed::Handled => {}
        }
    }
    assert_eq!(deferred.len(), 2, "the data frames are held back");
    assert_eq!(p.a.items_received(), 0, "nothing was consumed");
    assert_eq!(p.a.unacked(), 0, "the acks riding on held-back data were applied");
    assert!(core::iter::from_fn(|| p.a.poll_event()).any(|e| e == Event::Writable));
    p.a.send(b"a2").expect("room again");
    assert!(p.a.pong_owed.is_some(), "the ping is answered before the data is delivered");
    for m in transmit_all(&mut p.a, p.now) {
        p.b.handle_message(p.now, lb, &m).expect("B reads A's answer");
    }
    assert_eq!(p.b.stats().pongs_received, 1);

    // Held back past A's pong timeout, measured from its ping: the observed frames kept
    // the link alive until then, and more traffic observed keeps it alive after.
    p.now = p.now.saturating_add(Duration::from_millis(cfg.pong_timeout.as_millis() - 1));
    p.a.handle_timeout(p.now);
    p.b.send(b"b2").expect("sent");
    let more = transmit_all(&mut p.b, p.now);
    for m in &more {
        if p.a.observe_message(p.now, la, m).expect("observed") == Observed::Deferred {
            deferred.push(m.clone());
        }
    }
    p.now = p.now.saturating_add(Duration::from_millis(2));
    p.a.handle_timeout(p.now);
    assert!(
        !core::iter::from_fn(|| p.a.poll_event()).any(|e| matches!(e, Event::DropLink { .. })),
        "a link that keeps delivering bytes is not declared dead"
    );
    assert_eq!(p.a.current_link(), Some(la));

    // Delivered later, in order, exactly once; the pings are not counted again.
    let strikes_before = p.a.ping_strikes;
    let got: Vec<Vec<u8>> = deferred
        .iter()
        .filter_map(|m| p.a.handle_message(p.now, la, m).expect("delivered").map(<[u8]>::to_vec))
        .collect();
    assert_eq!(got, [b"b0".to_vec(), b"b1".to_vec(), b"b2".to_vec()]);
    assert_eq!(p.a.items_received(), 3);
    assert_eq!(p.a.ping_strikes, strikes_before);
}

/// A GOODBYE is held back behind the data before it, and a stale link's message is refused.
#[test]
fn observed_goodbye_is_deferred_and_stale_links_refused() {
    let mut p = Pair::new(ConduitConfig::default());
    p.connect();
    let la = p.la.expect("link");
    p.b.send(b"last").expect("sent");
    p.b.close(p.now, 0, "done");
    let to_a = transmit_all(&mut p.b, p.now);
    assert_eq!(to_a.len(), 2, "the data, then GOODBYE");
    assert_eq!(p.a.observe_message(p.now, la, &to_a[0]), Ok(Observed::Deferred));
    assert_eq!(p.a.observe_message(p.now, la, &to_a[1]), Ok(Observed::DeferredGoodbye));
    assert!(!p.a.is_ended(), "the GOODBYE waits behind the data");
    assert_eq!(p.a.observe_message(p.now, LinkId(la.0 + 100), &to_a[0]), Err(InputError::StaleLink));
    assert_eq!(p.a.handle_message(p.now, la, &to_a[0]), Ok(Some(&b"last"[..])));
    assert!(p.a.handle_message(p.now, la, &to_a[1]).is_err());
    assert_eq!(p.a.ended(), Some(SessionEnd::PeerGoodbye { code: 0 }));
}

#[test]
fn a_frozen_conduit_refuses_sends_without_owing_writable_until_thawed() {
    let mut c = Conduit::new(Role::Initiator, ConduitConfig::default()).expect("config");
    c.freeze();
    assert!(c.is_frozen());
    assert_eq!(c.send(b"x"), Err(SendError::WouldBlock));
    assert_eq!(c.items_sent(), 0, "nothing queued");
    assert!(!c.want_writable, "no Writable owed for a freeze");
    c.thaw();
    assert_eq!(c.send(b"x"), Ok(0));
}

// ---- early first frame (EARLY) ----

fn take(c: &mut Conduit, now: Instant, buf: &mut [u8]) -> Vec<u8> {
    let t = c.poll_transmit(now, buf).expect("a frame");
    buf[..t.len].to_vec()
}

/// An initiator that may send early, with `items` queued, and an acceptor, each with its
/// first link up (the acceptor's issuing `key`).
struct Early {
    a: Conduit,
    b: Conduit,
    la: LinkId,
    lb: LinkId,
    now: Instant,
    buf: Vec<u8>,
}

impl Early {
    fn new(items: &[&[u8]], key: u8) -> Self {
        let cfg = ConduitConfig::default();
        let mut a = Conduit::new(Role::Initiator, cfg).expect("config");
        let mut b = Conduit::new(Role::Acceptor, cfg).expect("config");
        a.set_early_first_frame(true);
        for item in items {
            a.send(item).expect("send");
        }
        let now = Instant::ZERO;
        let la = a.link_up(now, ResumeKey::ZERO);
        let lb = b.link_up(now, ResumeKey([key; 16]));
        Self { a, b, la, lb, now, buf: vec![0u8; 1 << 16] }
    }
}

/// The initiator's first item rides right behind its ClientHello, in the base form; the
/// acceptor reads it before its ServerHello has gone out, answers with no position, and
/// the initiator goes on from seq 1 (nothing is sent twice on the link).
#[test]
fn an_early_first_frame_rides_behind_the_client_hello_in_the_base_form() {
    let cfg = ConduitConfig::default();
    let Early { mut a, mut b, la, lb, now, mut buf } = Early::new(&[b"first", b"second"], 9);
    let hello = take(&mut a, now, &mut buf);
    let ch = ClientHello::decode(&hello).expect("a ClientHello");
    assert!(ch.early && ch.ext && ch.resume_key.is_none());
    let early = take(&mut a, now, &mut buf);
    assert_eq!(
        Frame::decode(&early, false),
        Ok(Frame::Data { seq: 0, ack: None, item: b"first" }),
        "seq 0 in the base form (no kind byte)"
    );
    assert!(a.poll_transmit(now, &mut buf).is_none(), "nothing more before the ServerHello");
    assert_eq!(b.handle_message(now, lb, &hello), Ok(None));
    assert_eq!(b.handle_message(now, lb, &early), Ok(Some(&b"first"[..])));
    assert!(!b.peer_confirmed, "the early frame proves nothing of the key");
    let sh_bytes = take(&mut b, now, &mut buf);
    let sh = ServerHello::decode(&sh_bytes).expect("a ServerHello");
    assert!(sh.ext && !sh.rejected);
    assert_eq!(sh.last_received, None, "a fresh session's ServerHello carries no position");
    assert_eq!(a.handle_message(now, la, &sh_bytes), Ok(None));
    assert!(a.is_established() && a.ext_in_force());
    let next = take(&mut a, now, &mut buf);
    assert_eq!(Frame::decode(&next, true), Ok(Frame::Data { seq: 1, ack: None, item: b"second" }));
    assert_eq!(b.handle_message(now, lb, &next), Ok(Some(&b"second"[..])));
    assert_eq!((a.stats().early_frames_sent, b.stats().early_frames_received), (1, 1));
    assert_eq!(a.stats().frames_replayed, 0);
    assert!(b.peer_confirmed, "a frame after the ServerHello shows the peer holds the key");
    // The acceptor acks the early frame as any other: within `ack_delay`.
    let later = now.saturating_add(cfg.ack_delay);
    b.handle_timeout(later);
    while let Some(t) = b.poll_transmit(later, &mut buf) {
        let _ = a.handle_message(later, la, &buf[..t.len]);
    }
    assert_eq!(a.unacked(), 0, "both items acked");
}

/// A link that carried an early frame and ended before any ServerHello (an acceptor that
/// does not know the flag fails the hello) is not tried early again: the next fresh hello
/// goes without it and the item follows the handshake in the link's form.
#[test]
fn an_early_link_lost_before_the_server_hello_is_retried_without_early() {
    let cfg = ConduitConfig::default();
    let mut a = Conduit::new(Role::Initiator, cfg).expect("config");
    a.set_early_first_frame(true);
    a.send(b"hello").expect("send");
    let now = Instant::ZERO;
    let mut buf = vec![0u8; 1 << 16];
    let first = a.link_up(now, ResumeKey::ZERO);
    assert!(ClientHello::decode(&take(&mut a, now, &mut buf)).expect("hello").early);
    let _ = take(&mut a, now, &mut buf);
    a.link_down(now, first);
    let second = a.link_up(now, ResumeKey::ZERO);
    let ch = ClientHello::decode(&take(&mut a, now, &mut buf)).expect("hello");
    assert!(!ch.early, "tried once per session");
    assert!(a.poll_transmit(now, &mut buf).is_none(), "the item waits for the ServerHello");
    let mut b = Conduit::new(Role::Acceptor, cfg).expect("config");
    let lb = b.link_up(now, ResumeKey([3; 16]));
    assert_eq!(b.handle_message(now, lb, &ch.encode()), Ok(None));
    let sh = take(&mut b, now, &mut buf);
    assert_eq!(a.handle_message(now, second, &sh), Ok(None));
    let frame = take(&mut a, now, &mut buf);
    assert_eq!(Frame::decode(&frame, true), Ok(Frame::Data { seq: 0, ack: None, item: b"hello" }));
    assert_eq!(b.handle_message(now, lb, &frame), Ok(Some(&b"hello"[..])));
    assert_eq!(a.stats().early_frames_sent, 1);
}

/// A ServerHello read before the early frame went out (the driver's buffer was full) does
/// not change its form: the acceptor reads the link's first frame in the base form, so it
/// still goes first, in the base form, and the rest in the extended form.
#[test]
fn an_early_frame_not_yet_written_when_the_server_hello_arrives_still_goes_first_in_the_base_form() {
    let Early { mut a, mut b, la, lb, now, mut buf } = Early::new(&[&[7u8; 100], b"next"], 5);
    let hello = take(&mut a, now, &mut buf);
    let mut small = [0u8; 32];
    assert!(a.poll_transmit(now, &mut small).is_none(), "no room for the early frame: nothing lost");
    assert!(a.has_transmit());
    assert_eq!(b.handle_message(now, lb, &hello), Ok(None));
    let sh = take(&mut b, now, &mut buf);
    assert_eq!(a.handle_message(now, la, &sh), Ok(None));
    let early = take(&mut a, now, &mut buf);
    assert!(matches!(Frame::decode(&early, false), Ok(Frame::Data { seq: 0, ack: None, .. })), "base form");
    let next = take(&mut a, now, &mut buf);
    assert_eq!(Frame::decode(&next, true), Ok(Frame::Data { seq: 1, ack: None, item: b"next" }));
    assert_eq!(b.handle_message(now, lb, &early).map(|i| i.map(<[u8]>::len)), Ok(Some(100)));
    assert_eq!(b.handle_message(now, lb, &next), Ok(Some(&b"next"[..])));
}

/// An acceptor that cannot take delivery yet observes the early frame (held back, in the
/// base form), then the frames after it in the link's form; fed later in order, each is
/// delivered once.
#[test]
fn an_observed_early_frame_is_held_back_and_the_frames_after_it_keep_the_links_form() {
    let Early { mut a, mut b, la, lb, now, mut buf } = Early::new(&[b"one", b"two"], 6);
    let hello = take(&mut a, now, &mut buf);
    let early = take(&mut a, now, &mut buf);
    assert_eq!(b.handle_message(now, lb, &hello), Ok(None));
    assert_eq!(b.observe_message(now, lb, &early), Ok(Observed::Deferred));
    let sh = take(&mut b, now, &mut buf);
    assert_eq!(a.handle_message(now, la, &sh), Ok(None));
    let two = take(&mut a, now, &mut buf);
    assert_eq!(b.observe_message(now, lb, &two), Ok(Observed::Deferred), "an extended-form data frame");
    assert_eq!(b.handle_message(now, lb, &early), Ok(Some(&b"one"[..])));
    assert_eq!(b.handle_message(now, lb, &two), Ok(Some(&b"two"[..])));
    assert_eq!(b.stats().link_drops.violation, 0);
}
