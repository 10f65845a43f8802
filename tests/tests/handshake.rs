//! Handshake scenarios (shared/SCENARIOS.md section 1) on the simulation harness.

use sotto_proto::conduit::{InputError, LinkDropReason, SessionEnd, Violation};
use sotto_proto::wire::{ClientHello, ResumeKey, ServerHello, WireError, HELLO_LEN};
use sotto_proto::{Conduit, ConduitConfig, Duration, Event, Instant, Role};
use sotto_tests::taps::{drop_if, recorder, rewrite_first_on};
use sotto_tests::{secs, wire_util, DialOutcome, Side, Sim, SimConfig};

fn drops(sim: &Sim, side: Side, reason: LinkDropReason) -> usize {
    sim.peer(side).log.drops(reason)
}

/// An established session with `n` items sent each way and delivered, then the link killed:
/// the next attach is a resume (link serial 2).
fn resumable(n: usize) -> Sim {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, n);
    sim.send(Side::B, n);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert!(sim.kill());
    sim
}

#[test]
fn h1_fresh_session() {
    let mut sim = Sim::new(SimConfig::small());
    let (tap_a, from_a) = recorder();
    let (tap_b, from_b) = recorder();
    sim.set_tap(Side::A, tap_a);
    sim.set_tap(Side::B, tap_b);
    assert!(sim.run_until(secs(1), Sim::established));
    let ch = ClientHello::decode(&from_a.borrow()[0].1).expect("A's first message is a ClientHello");
    assert_eq!(ch, ClientHello { resume_key: None, last_received: None, ext: true, early: false });
    let sh = ServerHello::decode(&from_b.borrow()[0].1).expect("B's first message is a ServerHello");
    assert!(!sh.rejected);
    assert_eq!(sh.last_received, None);
    assert!(!sh.resume_key.is_zero(), "a fresh 16-byte key");
    assert_eq!(sim.peer(Side::A).conduit.resume_key(), Some(sh.resume_key));
    assert_eq!(sim.peer(Side::B).conduit.resume_key(), Some(sh.resume_key));
    for side in [Side::A, Side::B] {
        let c = &sim.peer(side).conduit;
        assert_eq!((c.items_sent(), c.items_acked(), c.items_received(), c.unacked()), (0, 0, 0, 0));
        assert_eq!(c.stats().replay_frames, 0);
        assert!(matches!(sim.peer(side).log.iter().last(), Some((_, Event::Attached { resumed: false, .. }))));
    }
    // Both directions start at seq 0.
    assert_eq!(sim.send_one(Side::A), Ok(0));
    assert_eq!(sim.send_one(Side::B), Ok(0));
    // A second fresh session gets a different key.
    let first_key = sh.resume_key;
    sim.restart(Side::A);
    assert!(sim.run_until(secs(1), Sim::established));
    let second_key = sim.peer(Side::A).conduit.resume_key().expect("issued");
    assert_ne!(first_key, second_key);
    assert_eq!(sim.peer(Side::B).conduit.resume_key(), Some(second_key));
}

#[test]
fn h3_bad_server_hello_magic_fails_the_attempt_not_the_session() {
    let mut sim = resumable(3);
    sim.set_tap(Side::B, rewrite_first_on(2, |f| f[0] = b'X'));
    sim.send(Side::A, 2);
    assert!(sim.run_until(secs(60), |s| s.peer(Side::A).counters.resumed >= 1));
    assert_eq!(drops(&sim, Side::A, LinkDropReason::HandshakeFailed(WireError::BadMagic)), 1);
    assert!(!sim.peer(Side::A).conduit.is_ended(), "not SessionLost");
    // The failed attempt, then the next one after a backoff.
    assert!(sim.dialer.attempts >= 3);
    let t_fail = drop_time(&sim, Side::A, LinkDropReason::HandshakeFailed(WireError::BadMagic));
    let t_next = attach_time_after(&sim, Side::A, t_fail);
    assert!(t_next.saturating_duration_since(t_fail) >= sim.config().dial.backoff_min);
    assert!(sim.run_until(secs(1), Sim::all_acked));
}

fn drop_time(sim: &Sim, side: Side, reason: LinkDropReason) -> Instant {
    sim.peer(side)
        .log
        .iter()
        .find(|(_, e)| matches!(e, Event::DropLink { reason: r, .. } if *r == reason))
        .map(|(t, _)| *t)
        .expect("the drop is logged")
}

fn attach_time_after(sim: &Sim, side: Side, t: Instant) -> Instant {
    sim.peer(side)
        .log
        .iter()
        .find(|(at, e)| *at >= t && matches!(e, Event::Attached { .. }))
        .map(|(t, _)| *t)
        .expect("attached again")
}

/// Replace the hello `from` writes on link `serial` by `bad`.
fn swap_hello(sim: &mut Sim, from: Side, serial: u64, bad: Vec<u8>) {
    sim.set_tap(from, rewrite_first_on(serial, move |f| *f = bad));
}

#[test]
fn h4_wrong_handshake_size_client_hello() {
    let good = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
    let mut long = good.to_vec();
    long.push(0);
    for bad in [good[..24].to_vec(), long, Vec::new(), good[..12].to_vec()] {
        let len = bad.len() as u32;
        let mut sim = Sim::new(SimConfig::small());
        swap_hello(&mut sim, Side::A, 1, bad);
        if len == 12 {
            // The rest of a hello split across two link messages follows as a second message.
            assert!(sim.run_until(secs(1), |s| s.current_serial().is_some()));
            sim.write_message(Side::A, &good[12..]);
        }
        assert!(sim.run_until(secs(60), Sim::established), "a later attempt works");
        assert_eq!(drops(&sim, Side::B, LinkDropReason::HandshakeFailed(WireError::HelloLength { len })), 1);
        assert_eq!(sim.peer(Side::B).counters.attached, 1, "no session state from the bad hello");
    }
}

#[test]
fn h4_wrong_handshake_size_server_hello_on_resume() {
    for len in [24usize, 26, 0] {
        let mut sim = resumable(2);
        sim.set_tap(
            Side::B,
            rewrite_first_on(2, move |f| {
                f.resize(len, 0);
            }),
        );
        assert!(sim.run_until(secs(60), |s| s.peer(Side::A).counters.resumed >= 1));
        let reason = LinkDropReason::HandshakeFailed(WireError::HelloLength { len: len as u32 });
        assert_eq!(drops(&sim, Side::A, reason), 1);
        assert!(!sim.peer(Side::A).conduit.is_ended());
    }
}

#[test]
fn h5_unknown_flag_bits_are_rejected() {
    // In a ClientHello: B refuses with the flags reason and creates nothing.
    let mut ch = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode().to_vec();
    ch[4] |= 0x80;
    let mut sim = Sim::new(SimConfig::small());
    swap_hello(&mut sim, Side::A, 1, ch);
    assert!(sim.run_until(secs(60), Sim::established));
    assert_eq!(drops(&sim, Side::B, LinkDropReason::HandshakeFailed(WireError::UnknownFlags { flags: 0x84 })), 1);
    assert_eq!(sim.peer(Side::B).counters.attached, 1);
    // In a ServerHello (on a resume): A refuses the attempt and retries.
    let mut sim = resumable(1);
    sim.set_tap(Side::B, rewrite_first_on(2, |f| f[4] |= 0x10));
    assert!(sim.run_until(secs(60), |s| s.peer(Side::A).counters.resumed >= 1));
    let flags = HELLO_EXT | 0x02 | 0x10;
    assert_eq!(drops(&sim, Side::A, LinkDropReason::HandshakeFailed(WireError::UnknownFlags { flags })), 1);
}

const HELLO_EXT: u8 = 1 << 2;

#[test]
fn h6_position_without_key_is_a_violation() {
    // HAS_LAST_RECEIVED without HAS_RESUME_KEY, then with the key flag but an all-zero key.
    for flags in [0x02u8 | HELLO_EXT, 0x03 | HELLO_EXT] {
        let mut ch = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode().to_vec();
        ch[4] = flags;
        ch[21] = 5;
        let mut sim = Sim::new(SimConfig::small());
        swap_hello(&mut sim, Side::A, 1, ch);
        assert!(sim.run_until(secs(60), Sim::established));
        assert_eq!(drops(&sim, Side::B, LinkDropReason::HandshakeFailed(WireError::InconsistentFlags)), 1);
        assert_eq!(sim.peer(Side::B).counters.attached, 1, "no session from the bad hello");
    }
}

/// H7 on a standalone acceptor conduit: a link that never sends its ClientHello is dropped at
/// exactly `handshake_timeout`, and the slot is free afterwards (no link, no timer left).
#[test]
fn h7_silent_client_dropped_at_handshake_timeout() {
    let cfg = ConduitConfig::default();
    let mut b = Conduit::new(Role::Acceptor, cfg).expect("config");
    let t0 = Instant::from_nanos(5_000);
    let link = b.link_up(t0, ResumeKey([7; 16]));
    let deadline = t0.saturating_add(cfg.handshake_timeout);
    assert_eq!(b.poll_timeout(), Some(deadline));
    b.handle_timeout(Instant::from_nanos(deadline.as_nanos() - 1));
    assert_eq!(b.poll_event(), None, "not before the deadline");
    b.handle_timeout(deadline);
    let mut buf = vec![0u8; b.max_transmit_len()];
    assert_eq!(b.poll_transmit(deadline, &mut buf), None, "nothing is sent to a silent client");
    assert_eq!(b.poll_event(), Some(Event::DropLink { link, reason: LinkDropReason::HandshakeTimeout }));
    b.link_down(deadline, link);
    assert_eq!(b.current_link(), None);
    assert_eq!(b.poll_timeout(), None, "no timer left behind");
    assert!(!b.has_attached() && !b.is_ended());
    assert_eq!(b.stats().link_drops.handshake_timeout, 1);
    // The freed acceptor still serves a real client.
    let link2 = b.link_up(deadline, ResumeKey([8; 16]));
    let ch = wire_util::client_hello(None, None, true);
    assert_eq!(b.handle_message(deadline, link2, &ch), Ok(None));
    assert!(b.is_established());
}

/// H9 as far as a conduit goes: the handshake deadline covers the whole handshake, it is not an
/// inactivity timer (a hello trickled in byte by byte is still cut off), and a flood of links
/// that never finish leaves at most one pending handshake (each `link_up` supersedes the
/// last). Capping pending handshakes across sessions is the endpoint's job.
#[test]
fn h9_handshake_deadline_is_not_an_inactivity_timer() {
    let mut sim = Sim::new(SimConfig::small());
    sim.dialer.script(&[DialOutcome::Connect]);
    sim.set_tap(Side::A, drop_if(|serial, _| serial == 1));
    sim.run_for(Duration::from_millis(2));
    let t0 = sim.now();
    let ch = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
    let mut msg = (HELLO_LEN as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&ch[..]);
    // 29 bytes, one every 500 ms: the last would land after 14 s.
    for byte in &msg[..msg.len() - 1] {
        if sim.current_serial() != Some(1) {
            break;
        }
        sim.write_raw(Side::A, std::slice::from_ref(byte));
        sim.run_for(Duration::from_millis(500));
    }
    let t_drop = drop_time(&sim, Side::B, LinkDropReason::HandshakeTimeout);
    assert!(t_drop.saturating_duration_since(t0) <= sim.config().b.handshake_timeout);
    assert_eq!(sim.peer(Side::B).counters.attached, 0);
    // The initiator's side of the same rule: no ServerHello within the deadline.
    let mut sim = Sim::new(SimConfig::small());
    sim.set_tap(Side::B, drop_if(|serial, _| serial == 1));
    sim.run_for(secs(11));
    assert_eq!(drops(&sim, Side::A, LinkDropReason::HandshakeTimeout), 1);
    // A flood of never-finishing links on one acceptor conduit.
    let mut b = Conduit::new(Role::Acceptor, ConduitConfig::default()).expect("config");
    let mut live = 0;
    for i in 0..1000u64 {
        let now = Instant::from_nanos(i * 1_000_000);
        let link = b.link_up(now, ResumeKey([1; 16]));
        while let Some(e) = b.poll_event() {
            if let Event::DropLink { link: old, reason } = e {
                assert_eq!(reason, LinkDropReason::Superseded);
                b.link_down(now, old);
                live -= 1;
            }
        }
        live += 1;
        assert_eq!(live, 1, "at most one pending handshake");
        assert_eq!(b.current_link(), Some(link));
    }
    assert_eq!(b.stats().events_overflowed, 0);
    assert_eq!(b.stats().link_drops.superseded, 999);
}

#[test]
fn h10_data_before_handshake() {
    for item_len in [3usize, 25 - 7] {
        let frame = wire_util::data(0, None, &vec![1u8; item_len], true);
        let mut sim = Sim::new(SimConfig::small());
        let expect = if frame.len() == HELLO_LEN {
            WireError::BadMagic
        } else {
            WireError::HelloLength { len: frame.len() as u32 }
        };
        swap_hello(&mut sim, Side::A, 1, frame);
        sim.run_for(Duration::from_millis(5));
        assert_eq!(drops(&sim, Side::B, LinkDropReason::HandshakeFailed(expect)), 1);
        assert!(!sim.peer(Side::B).conduit.has_attached(), "no session");
        assert_eq!(sim.peer(Side::B).conduit.resume_key(), None, "no key issued");
        assert!(sim.run_until(secs(60), Sim::established), "a proper handshake still works");
    }
}

#[test]
fn h11_second_client_hello_on_an_established_link() {
    for ext in [true, false] {
        let cfg = SimConfig::small().with_conduit({
            let mut patched = SimConfig::small().a;
            patched.ext = ext;
            patched
        });
        let mut sim = Sim::connected(cfg);
        sim.send(Side::A, 3);
        assert!(sim.run_until(secs(1), Sim::all_delivered));
        let key = sim.peer(Side::B).conduit.resume_key();
        let attaches = sim.peer(Side::B).conduit.stats().attaches;
        let ch = wire_util::client_hello(None, None, ext);
        let r = sim.inject(Side::B, &ch);
        assert_eq!(r, Err(InputError::LinkDropped(LinkDropReason::Violation(Violation::UnexpectedHello))));
        assert_eq!(sim.peer(Side::B).conduit.resume_key(), key, "the key is not rotated");
        assert_eq!(sim.peer(Side::B).conduit.stats().attaches, attaches, "no new session");
        assert!(!sim.peer(Side::B).conduit.is_ended());
        // A resumes with the key it holds and the session goes on.
        sim.send(Side::A, 2);
        assert!(sim.run_until(secs(60), Sim::all_delivered));
        assert_eq!(sim.peer(Side::A).counters.resumed, 1);
    }
}

#[test]
fn h12_unknown_key_is_rejected_and_the_session_lost_once() {
    let mut sim = resumable(4);
    sim.send(Side::A, 3); // in A's ring, never delivered to the old B
    sim.restart(Side::B); // B restarted: the key is unknown
    let frames_before = sim.peer(Side::A).conduit.stats().frames_sent;
    sim.run_for(secs(30));
    let a = sim.peer(Side::A);
    assert_eq!(a.conduit.ended(), Some(SessionEnd::Rejected));
    assert!(SessionEnd::Rejected.is_lost());
    assert_eq!(a.counters.ended, 1, "SessionLost surfaces exactly once");
    assert_eq!(a.conduit.stats().frames_sent, frames_before, "nothing from the old ring is sent");
    assert_eq!(sim.peer(Side::B).delivered(), 0);
    assert!(!sim.peer(Side::B).conduit.has_attached());
    // A does not reconnect on its own.
    let links = sim.stats.links_opened;
    sim.run_for(secs(600));
    assert_eq!(sim.stats.links_opened, links, "no reconnect after SessionLost");
    // The application starts a fresh session.
    sim.restart(Side::A);
    sim.send(Side::A, 5);
    sim.send(Side::B, 5);
    assert!(sim.run_until(secs(60), Sim::all_acked));
    assert_eq!(sim.peer(Side::B).delivered(), 5);
}
