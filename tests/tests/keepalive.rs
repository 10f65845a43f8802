//! Keepalive and timer scenarios (shared/SCENARIOS.md section 5).

use sotto_proto::conduit::{goodbye_code, LinkDropReason, SessionEnd};
use sotto_proto::{Event, Instant};
use sotto_tests::{ms, secs, wire_util, Side, Sim, SimConfig};

fn keepalive_drops(sim: &Sim, side: Side) -> Vec<Instant> {
    sim.peer(side)
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Event::DropLink { reason: LinkDropReason::KeepaliveTimeout, .. }))
        .map(|(t, _)| *t)
        .collect()
}

/// K1: pongs stop. The *link* is declared dead `pong_timeout` after the unanswered PING
/// (within `ping_interval + pong_timeout` of the silence) and a resume starts; the session
/// ends only `recovery_timeout` after it detached, when no new link can be had.
#[test]
fn k1_pongs_stop() {
    let mut sim = Sim::connected(SimConfig::small());
    let c = sim.config().a;
    let t0 = sim.now();
    sim.blackhole(Side::B);
    sim.dialer.policy.fail_per_mille = 1000; // every redial fails from now on
    assert!(sim.run_until(secs(60), |s| s.peer(Side::A).conduit.current_link().is_none()));
    let dropped = keepalive_drops(&sim, Side::A);
    assert_eq!(dropped.len(), 1);
    assert!(dropped[0] <= t0.saturating_add(c.ping_interval).saturating_add(c.pong_timeout));
    assert!(!sim.peer(Side::A).conduit.is_ended(), "the link died, not the session");
    let almost = dropped[0].saturating_add(c.recovery_timeout).as_nanos() - 1;
    sim.advance_to(Instant::from_nanos(almost));
    assert!(!sim.peer(Side::A).conduit.is_ended(), "still recovering just before the deadline");
    assert!(sim.dialer.attempts > 10, "A kept trying");
    sim.run_for(ms(1));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::RecoveryTimeout));
    assert_eq!(sim.peer(Side::A).counters.ended, 1);
}

/// K2: a PONG nobody asked for, or with the wrong nonce, is ignored: no RTT, no pong counted,
/// and the pong deadline keeps running (it is not even taken as a sign of life).
#[test]
fn k2_pong_with_wrong_nonce_or_none_outstanding() {
    let mut sim = Sim::connected(SimConfig::small());
    assert_eq!(sim.inject(Side::A, &wire_util::pong(77)), Ok(None));
    assert_eq!(sim.peer(Side::A).conduit.stats().pongs_received, 0);
    assert_eq!(sim.peer(Side::A).conduit.stats().rtt, None);
    // A's PING goes unanswered (B's direction is dead); a wrong-nonce PONG arrives meanwhile.
    sim.blackhole(Side::B);
    let c = sim.config().a;
    assert!(sim.run_until(secs(20), |s| s.peer(Side::A).conduit.stats().pings_sent == 1));
    let pinged = sim.now();
    sim.run_for(c.pong_timeout.saturating_sub(secs(1)));
    assert_eq!(sim.inject(Side::A, &wire_util::pong(0xdead_beef)), Ok(None));
    assert_eq!(sim.peer(Side::A).conduit.stats().pongs_received, 0);
    sim.run_for(secs(2));
    let dropped = keepalive_drops(&sim, Side::A);
    assert_eq!(dropped.len(), 1, "the deadline kept running");
    assert!(dropped[0] <= pinged.saturating_add(c.pong_timeout));
}

/// K3: a ping flood. Undrained (the driver is not reading), any number of PINGs leave at most
/// one PONG pending; back to back, the third strike below `min_ping_interval` ends the session
/// with GOODBYE "too many pings"; a peer pinging at the configured interval is never struck.
#[test]
fn k3_ping_flood() {
    // Spaced legally (min_ping_interval 1 ms here) but never read: one pending PONG, carrying
    // the latest nonce.
    let cfg = SimConfig::small();
    let cfg = cfg.with_conduit({
        let mut patched = cfg.a;
        patched.min_ping_interval = ms(1);
        patched
    });
    let mut sim = Sim::connected(cfg);
    let frames_before = sim.peer(Side::B).counters.frames_out;
    for i in 0..1000u64 {
        sim.advance_to(sim.now().saturating_add(ms(1)));
        assert_eq!(sim.inject_undrained(Side::B, &wire_util::ping(i)), Ok(false));
        assert!(sim.peer(Side::B).conduit.stats().events_overflowed == 0);
    }
    let (tap, from_b) = sotto_tests::taps::recorder();
    sim.set_tap(Side::B, tap);
    sim.drain(Side::B);
    let pongs: Vec<_> = from_b
        .borrow()
        .iter()
        .filter_map(|(_, f)| match wire_util::kind(f, true) {
            Some(wire_util::Kind::Pong(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(pongs, [999], "one pending PONG, the latest");
    assert!(sim.peer(Side::B).counters.frames_out - frames_before <= 3);
    assert!(!sim.peer(Side::B).conduit.is_ended());

    // 100 000 back to back: the session ends at the third strike; the rest is ignored.
    let mut sim = Sim::connected(SimConfig::small());
    let mut ended_at = None;
    for i in 0..100_000u64 {
        let r = sim.inject_undrained(Side::B, &wire_util::ping(i));
        if ended_at.is_none() && sim.peer(Side::B).conduit.is_ended() {
            ended_at = Some(i);
        }
        if ended_at.is_some() {
            assert!(r.is_err());
        }
    }
    assert_eq!(ended_at, Some(3), "pings 1, 2, 3 are strikes; more than max_ping_strikes (2) ends it");
    let (tap, from_b) = sotto_tests::taps::recorder();
    sim.set_tap(Side::B, tap);
    sim.drain(Side::B);
    assert!(from_b.borrow().len() <= 2, "bounded output: {} frames", from_b.borrow().len());
    assert_eq!(sim.peer(Side::B).conduit.ended(), Some(SessionEnd::TooManyPings));
    sim.run_for(ms(10));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::PeerGoodbye { code: goodbye_code::TOO_MANY_PINGS }));
    assert_eq!(sim.peer(Side::A).conduit.peer_goodbye(), Some((goodbye_code::TOO_MANY_PINGS, "too many pings")));

    // Legitimate peers pinging at the configured interval for an hour: never struck.
    let mut sim = Sim::connected(SimConfig::small());
    sim.run_for(secs(3600));
    for side in [Side::A, Side::B] {
        let s = sim.peer(side).conduit.stats();
        assert!(s.pings_sent >= 350 && s.pongs_received == s.pings_sent, "{side:?}: {s:?}");
        assert!(!sim.peer(side).conduit.is_ended());
    }
}

/// K5: after a close no timer is left and nothing more is produced: over an hour of simulated
/// time the driver is woken O(1) times (here: not at all), and polling yields nothing.
#[test]
fn k5_no_spinning_after_close() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 3);
    let now = sim.now();
    sim.peer_mut(Side::A).conduit.close(now, goodbye_code::NORMAL, "bye");
    sim.drain(Side::A);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).conduit.is_ended()));
    sim.run_for(ms(10));
    let instants = sim.stats.instants;
    sim.run_for(secs(3600));
    assert!(sim.stats.instants - instants <= 2, "woken {} times after close", sim.stats.instants - instants);
    assert_eq!(sim.next_time(), None);
    let mut buf = vec![0u8; 4096];
    for side in [Side::A, Side::B] {
        let now = sim.now();
        let c = &mut sim.peer_mut(side).conduit;
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(now);
        assert_eq!(c.poll_transmit(now, &mut buf), None);
        assert_eq!(c.poll_event(), None);
    }
    assert_eq!(sim.peer(Side::B).delivered(), 3);

    // The same after a session lost to the recovery deadline.
    let mut sim = Sim::connected(SimConfig::small());
    sim.dialer.policy.fail_per_mille = 1000;
    assert!(sim.kill());
    assert!(sim.run_until(secs(200), |s| s.peer(Side::A).conduit.is_ended() && s.peer(Side::B).conduit.is_ended()));
    sim.dialer.auto = false;
    sim.run_for(secs(10));
    let instants = sim.stats.instants;
    sim.run_for(secs(3600));
    assert!(sim.stats.instants - instants <= 2);
}

/// K7: keepalive state resets on resume. A PING left unanswered on the old link does not
/// kill the new link at the old deadline.
#[test]
fn k7_keepalive_state_resets_on_resume() {
    let mut sim = Sim::connected(SimConfig::small());
    let c = sim.config().a;
    sim.blackhole(Side::B);
    assert!(sim.run_until(secs(20), |s| s.peer(Side::A).conduit.stats().pings_sent == 1));
    let old_deadline = sim.now().saturating_add(c.pong_timeout);
    sim.run_for(secs(1));
    assert!(sim.kill());
    assert!(sim.run_until(secs(5), |s| s.peer(Side::A).counters.resumed == 1));
    let link = sim.peer(Side::A).conduit.current_link();
    sim.advance_to(old_deadline.saturating_add(secs(30)));
    assert!(keepalive_drops(&sim, Side::A).is_empty(), "no stale deadline fired");
    assert_eq!(sim.peer(Side::A).conduit.current_link(), link);
    assert!(sim.peer(Side::A).conduit.stats().pongs_received >= 1);
}
