//! Reconnect and resume scenarios (shared/SCENARIOS.md section 3).

use sotto_proto::conduit::LinkDropReason;
use sotto_proto::wire::ClientHello;
use sotto_proto::{Duration, Event, Instant};
use sotto_tests::taps::recorder;
use sotto_tests::{ms, secs, DialPolicy, EndKind, Side, Sim, SimConfig, SimRng};

fn traffic(sim: &mut Sim, n: usize) {
    sim.send(Side::A, n);
    sim.send(Side::B, n);
}

/// A session with traffic in flight both ways (nothing delivered yet).
fn busy() -> Sim {
    let mut sim = Sim::connected(SimConfig { latency: ms(5), ..SimConfig::small() });
    traffic(&mut sim, 4);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    traffic(&mut sim, 6);
    sim.run_for(ms(2));
    sim
}

#[test]
fn r1_eof_versus_error_both_resume() {
    // A clean EOF from B (its driver closed the socket on a frame boundary).
    let mut sim = busy();
    sim.close_link(Side::B);
    assert!(sim.run_until(secs(10), Sim::all_acked));
    assert_eq!(sim.peer(Side::A).counters.clean_eofs, 1);
    assert_eq!(sim.peer(Side::A).counters.resumed, 1);
    // A reset (ECONNRESET): both sides lose the link at once, in-flight bytes are gone.
    let mut sim = busy();
    assert!(sim.kill());
    assert!(sim.run_until(secs(10), Sim::all_acked));
    assert_eq!(sim.stats.resets, 1);
    assert_eq!(sim.peer(Side::A).counters.resumed, 1);
    // EOF inside a frame (a truncated link).
    let mut sim = busy();
    sim.cut_after_frames(Side::B, 1, 3, EndKind::Eof);
    assert!(sim.run_until(secs(10), Sim::all_acked));
    assert_eq!(sim.peer(Side::A).counters.truncated_eofs, 1);
    assert!(!sim.peer(Side::A).conduit.is_ended() && !sim.peer(Side::B).conduit.is_ended());
    assert_eq!((sim.peer(Side::A).delivered(), sim.peer(Side::B).delivered()), (10, 10));
}

/// R2: one direction blackholed, no EOF, either way round. Keepalive finds it within
/// `ping_interval + pong_timeout` (plus one latency for the EOF of the side that found it to
/// reach the other), A resumes, and everything sent arrives once.
#[test]
fn r2_half_open_link() {
    for dead in [Side::B, Side::A] {
        let mut sim = Sim::connected(SimConfig::small());
        traffic(&mut sim, 3);
        assert!(sim.run_until(secs(1), Sim::all_acked));
        let t0 = sim.now();
        sim.blackhole(dead);
        traffic(&mut sim, 3);
        assert!(sim.run_until(secs(120), |s| s.peer(Side::A).counters.resumed == 1), "{dead:?} blackholed");
        let c = sim.config().a;
        let bound = t0.saturating_add(c.ping_interval).saturating_add(c.pong_timeout).saturating_add(ms(2));
        let found = [Side::A, Side::B]
            .iter()
            .flat_map(|s| sim.peer(*s).log.iter())
            .find(|(_, e)| matches!(e, Event::DropLink { reason: LinkDropReason::KeepaliveTimeout, .. }))
            .map(|(t, _)| *t)
            .expect("keepalive found the dead direction");
        assert!(found <= bound, "found at {found:?}, bound {bound:?}");
        assert!(sim.run_until(secs(5), Sim::all_acked));
        assert_eq!((sim.peer(Side::A).delivered(), sim.peer(Side::B).delivered()), (6, 6));
    }
}

/// R3: dials fail half the time and every link dies after 0..50 frames (drawn from the seed).
/// Everything arrives exactly once, in order; the backoff stays within its cap and there is no
/// hot loop (dial attempts stay proportional to simulated time over the backoff floor).
#[test]
fn r3_reconnect_storm() {
    for seed in 0..20u64 {
        let dial =
            DialPolicy { fail_per_mille: 500, backoff_min: ms(10), backoff_max: ms(500), ..DialPolicy::default() };
        let cfg = SimConfig { seed, latency: ms(3), dial, ..SimConfig::small() };
        let mut sim = Sim::connected(cfg);
        let mut rng = SimRng::new(seed);
        let mut cut_serial = 0;
        let start = sim.now();
        for _ in 0..400 {
            traffic(&mut sim, 2);
            if let Some(serial) = sim.current_serial() {
                if serial != cut_serial && serial < 150 {
                    cut_serial = serial;
                    let side = if rng.chance(500) { Side::A } else { Side::B };
                    sim.cut_after_frames(side, rng.below(50), rng.below(30) as u32, EndKind::Reset);
                }
            }
            sim.run_for(ms(20));
        }
        sim.dialer.policy.fail_per_mille = 0;
        sim.heal_links();
        // Senders blocked by a full ring resume on Writable; send the rest of the 800.
        while sim.peer(Side::A).sent() < 800 || sim.peer(Side::B).sent() < 800 {
            for side in [Side::A, Side::B] {
                let n = (800 - sim.peer(side).sent()).min(10) as usize;
                sim.send(side, n);
            }
            sim.run_for(ms(50));
        }
        assert!(sim.run_until(secs(60), Sim::all_acked), "seed {seed}");
        assert_eq!(sim.peer(Side::B).delivered(), sim.peer(Side::A).sent());
        let d = sim.dialer.policy;
        assert!(sim.dialer.longest_backoff <= d.backoff_max);
        let elapsed = sim.now().saturating_duration_since(start).as_nanos();
        let floor = d.backoff_min.as_nanos();
        assert!(sim.dialer.attempts <= elapsed / floor + 2 * sim.stats.links_opened + 10, "seed {seed}: hot loop");
        assert!(sim.stats.links_opened > 20, "seed {seed}: the storm happened ({} links)", sim.stats.links_opened);
        assert!(!sim.peer(Side::A).conduit.is_ended());
    }
}

#[test]
fn r4_link_dies_during_replay() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.stall(Side::A, Instant::FAR_FUTURE);
    sim.send(Side::A, 20);
    assert!(sim.kill());
    assert!(sim.run_until(secs(5), |s| s.current_serial() == Some(2)));
    // The ClientHello, 10 replayed frames and 5 bytes of the 11th get through.
    sim.cut_after_frames(Side::A, 11, 5, EndKind::Reset);
    assert!(sim.run_until(secs(10), |s| s.peer(Side::A).counters.resumed == 2));
    assert_eq!(sim.peer(Side::B).delivered(), 10);
    let replaying: Vec<u64> = sim
        .peer(Side::A)
        .log
        .iter()
        .filter_map(|(_, e)| match *e {
            Event::Attached { replaying, .. } => Some(replaying),
            _ => None,
        })
        .collect();
    assert_eq!(replaying, [0, 20, 10], "the second resume replays from B's new position");
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert_eq!(sim.peer(Side::B).delivered(), 20);
    assert_eq!(sim.peer(Side::A).conduit.stats().frames_replayed, 20 + 10);
    assert_eq!(sim.peer(Side::B).conduit.stats().duplicates_dropped, 0);
}

fn presented_key(frames: &[(u64, Vec<u8>)], serial: u64) -> Option<sotto_proto::ResumeKey> {
    let (_, f) = frames.iter().find(|(s, _)| *s == serial)?;
    ClientHello::decode(f).ok()?.resume_key
}

/// R5: the link dies during the resume handshake: before B has the ClientHello, after it (so
/// B issued a new key that A never got), just after the ServerHello, and the ServerHello lost
/// twice in a row. Every retry resumes; a lost ServerHello never loses the session (B keeps
/// accepting the previous key until the new one has been used).
#[test]
fn r5_link_dies_during_the_resume_handshake() {
    #[derive(Clone, Copy, Debug)]
    enum When {
        BeforeClientHelloArrives,
        AfterClientHello,
        JustAfterServerHello,
        ServerHelloLostTwice,
    }
    for when in
        [When::BeforeClientHelloArrives, When::AfterClientHello, When::JustAfterServerHello, When::ServerHelloLostTwice]
    {
        let mut sim = Sim::connected(SimConfig::small());
        let k1 = sim.peer(Side::A).conduit.resume_key().expect("key");
        let (tap, from_a) = recorder();
        sim.set_tap(Side::A, tap);
        traffic(&mut sim, 3);
        assert!(sim.run_until(secs(1), Sim::all_acked));
        traffic(&mut sim, 3);
        assert!(sim.kill());
        let losses = if matches!(when, When::ServerHelloLostTwice) { 2 } else { 1 };
        for serial in 2..2 + losses {
            assert!(sim.run_until(secs(10), |s| s.current_serial() == Some(serial)));
            match when {
                When::BeforeClientHelloArrives => sim.cut_after_bytes(Side::A, 10, EndKind::Reset),
                When::AfterClientHello | When::ServerHelloLostTwice => {
                    sim.cut_after_frames(Side::B, 0, 5, EndKind::Reset);
                }
                When::JustAfterServerHello => sim.cut_after_frames(Side::B, 1, 0, EndKind::Reset),
            }
            assert!(sim.run_until(secs(10), |s| s.current_serial() != Some(serial)), "{when:?}");
        }
        assert!(sim.run_until(secs(30), Sim::all_acked), "{when:?}");
        assert!(!sim.peer(Side::A).conduit.is_ended() && !sim.peer(Side::B).conduit.is_ended());
        assert_eq!((sim.peer(Side::A).delivered(), sim.peer(Side::B).delivered()), (6, 6));
        let frames = from_a.borrow();
        let retry = presented_key(&frames, 2 + losses).expect("resume hello");
        match when {
            When::JustAfterServerHello => assert_ne!(retry, k1, "A got the new key and uses it"),
            _ => assert_eq!(retry, k1, "{when:?}: A still holds the previous key, and it still works"),
        }
        let attaches_on_dying_links = if matches!(when, When::JustAfterServerHello) { 1 } else { 0 };
        assert_eq!(sim.peer(Side::A).counters.resumed, 1 + attaches_on_dying_links, "{when:?}");
    }
}

/// R6: both sides send while the link flaps every k frames (k from the seed, cut in either
/// direction); I1 holds both ways and everything arrives once the flapping stops.
#[test]
fn r6_both_sides_send_while_the_link_flaps() {
    for seed in 0..30u64 {
        let mut rng = SimRng::new(seed ^ 0x0f1a);
        let k = rng.range(1, 12);
        let dial = DialPolicy { backoff_min: ms(5), backoff_max: ms(100), ..DialPolicy::default() };
        let cfg = SimConfig {
            seed,
            latency: rng.duration(Duration::ZERO, ms(10)),
            chunk_max: 17,
            dial,
            ..SimConfig::small()
        };
        let mut sim = Sim::connected(cfg);
        let mut cut_serial = 0;
        for _ in 0..200 {
            traffic(&mut sim, 1);
            if let Some(serial) = sim.current_serial() {
                if serial != cut_serial && serial < 40 {
                    cut_serial = serial;
                    let side = if rng.chance(500) { Side::A } else { Side::B };
                    sim.cut_after_frames(side, k, rng.below(8) as u32, EndKind::Reset);
                }
            }
            sim.run_for(ms(5));
        }
        sim.heal_links();
        assert!(sim.run_until(secs(60), Sim::all_acked), "seed {seed} k {k}");
        assert_eq!((sim.peer(Side::A).delivered(), sim.peer(Side::B).delivered()), (200, 200));
        assert!(sim.stats.links_opened > 10, "seed {seed}: it flapped ({} links)", sim.stats.links_opened);
    }
}
