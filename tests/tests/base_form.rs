//! Base-form liveness (no extensions: a vox 0.3.0 peer, or a sotto peer with `ext` off). A
//! base-form peer acks only on its own data frames and in resume handshakes, so a sender whose
//! replay ring is full learns the peer's position either from the peer's next data frame or
//! by cycling the link (`LinkDropReason::AckStarved`). Issue 14 defects 6 and 8: a full ring
//! toward a peer that only reads must never stall, and one toward a peer that keeps acking on
//! its own data must never cycle.
//!
//! The applications are interposers: A sends as fast as the ring allows (it fills the whole
//! ring before the harness polls a single frame, as a sender on another thread does, and
//! after a refusal it waits for `Writable`); B either only reads, or sends one item for each
//! item it receives (an echo).

use sotto_proto::ConduitConfig;
use sotto_tests::peer::Peer;
use sotto_tests::{ms, secs, Side, Sim, SimConfig};

/// The base form on both sides, a `frames`-frame ring, and the default ack-starvation timers.
fn base_form(frames: u32) -> ConduitConfig {
    {
        let mut patched = SimConfig::small().a;
        patched.ext = false;
        patched.replay_frames = frames;
        patched
    }
}

/// A's application: sends its next items until the ring refuses one or `total` are sent,
/// then waits for `Writable` (the harness clears `is_blocked` on it).
fn full_speed_sender(total: u64) -> Box<dyn FnMut(&mut Peer) -> bool> {
    Box::new(move |p: &mut Peer| {
        let mut sent_any = false;
        while !p.is_blocked() && p.sent() < total && p.conduit.is_established() {
            if p.send_next().is_err() {
                break;
            }
            sent_any = true;
        }
        sent_any
    })
}

/// B's application: one item sent for each item received (its data frames carry its acks).
fn echo() -> Box<dyn FnMut(&mut Peer) -> bool> {
    Box::new(|p: &mut Peer| {
        let mut sent_any = false;
        while !p.is_blocked() && p.sent() < p.delivered() {
            if p.send_next().is_err() {
                break;
            }
            sent_any = true;
        }
        sent_any
    })
}

fn ack_starved(sim: &Sim, side: Side) -> u64 {
    sim.peer(side).conduit.stats().link_drops.ack_starved
}

/// Defect 6: A fills its 64-frame ring before a single frame goes out, toward a peer that
/// only reads. Nothing ever acks on that link, and no later `send` comes to check (A waits
/// for `Writable`): the ack-starvation deadline, armed by the refused send and pushed back by
/// each frame transmitted, cycles the link, and the resume hello's position trims the ring.
/// All 1000 items arrive, with about one cycle per ring's worth.
#[test]
fn burst_to_a_read_only_base_form_peer_completes() {
    const TOTAL: u64 = 1000;
    const RING: u32 = 64;
    let mut sim = Sim::connected(SimConfig::small().with_conduit(base_form(RING)));
    sim.set_interposer(Side::A, full_speed_sender(TOTAL));
    sim.drain(Side::A); // A's application starts
    assert!(sim.peer(Side::A).is_blocked(), "the ring filled at once");
    let done = sim.run_until(secs(120), |s| s.peer(Side::B).delivered() == TOTAL);
    let cycles = ack_starved(&sim, Side::A);
    println!("{} delivered, {cycles} ack-starved cycles, {:?} simulated", sim.peer(Side::B).delivered(), sim.now());
    assert!(done, "stalled at {} of {TOTAL} delivered, {cycles} cycles", sim.peer(Side::B).delivered());
    let rings = TOTAL.div_ceil(u64::from(RING));
    assert!((1..=2 * rings).contains(&cycles), "expected 1..={} ack-starved cycles, got {cycles}", 2 * rings);
    assert_eq!(ack_starved(&sim, Side::B), 0, "B sends nothing: it never waits for acks");
}

/// Defect 6 at the edge: the first cycle's resume must trim the ring, and a sender still
/// blocked on the new link (the peer received only part of the ring before the cycle) gets
/// the next cycle `ack_starved_timeout` later, not never. Here the link is slow (50 ms one
/// way) and the timeout short (20 ms), so some cycles land while frames are in flight.
#[test]
fn burst_to_a_read_only_base_form_peer_completes_when_cycles_cut_frames_in_flight() {
    const TOTAL: u64 = 500;
    let conduit = {
        let mut patched = base_form(32);
        patched.ack_starved_timeout = ms(20);
        patched
    };
    let cfg = SimConfig { latency: ms(50), ..SimConfig::small().with_conduit(conduit) };
    let mut sim = Sim::connected(cfg);
    sim.set_interposer(Side::A, full_speed_sender(TOTAL));
    sim.drain(Side::A); // A's application starts
    let done = sim.run_until(secs(300), |s| s.peer(Side::B).delivered() == TOTAL);
    println!(
        "{} delivered, {} cycles, {:?} simulated",
        sim.peer(Side::B).delivered(),
        ack_starved(&sim, Side::A),
        sim.now()
    );
    assert!(done, "stalled");
    assert!(ack_starved(&sim, Side::A) >= 1);
}

/// Defect 8: B echoes every item, so each of its data frames carries its ack, but those acks
/// lag A by what is in flight (10 ms each way): A's ring fills again and again. That is
/// backpressure: A waits for `Writable`, and the link is never cycled. B's ring is large, as
/// vox's replay buffer is unbounded, so that B never blocks in turn.
#[test]
fn full_ring_toward_an_echoing_base_form_peer_never_cycles() {
    const TOTAL: u64 = 3000;
    let mut cfg = SimConfig { latency: ms(10), ..SimConfig::small().with_conduit(base_form(64)) };
    cfg.b.replay_frames = 4096;
    cfg.b.replay_bytes = 1 << 20;
    let mut sim = Sim::connected(cfg);
    sim.set_interposer(Side::A, full_speed_sender(TOTAL));
    sim.set_interposer(Side::B, echo());
    sim.drain(Side::A); // A's application starts
    let done = sim.run_until(secs(60), |s| s.peer(Side::B).delivered() == TOTAL && s.all_delivered());
    assert!(done, "A delivered {} of {TOTAL}, B {}", sim.peer(Side::A).delivered(), sim.peer(Side::B).delivered());
    let a = sim.peer(Side::A);
    println!(
        "A: {} Writable, {} cycles, {} links; {:?} simulated",
        a.counters.writable,
        ack_starved(&sim, Side::A),
        a.counters.attached,
        sim.now()
    );
    assert!(a.counters.writable >= 10, "A's ring filled again and again ({} Writable)", a.counters.writable);
    assert_eq!(ack_starved(&sim, Side::A), 0, "a peer that keeps acking is never starved");
    assert_eq!(a.counters.attached, 1, "one link, never cycled");
    assert_eq!(a.counters.drop_links, 0);
}

/// Defect 8 with a slow echo: B answers each item only after a pause shorter than
/// `ack_starved_timeout` (its acks arrive late, but they arrive). Still no cycle.
#[test]
fn full_ring_toward_a_slowly_echoing_base_form_peer_never_cycles() {
    const TOTAL: u64 = 300;
    let mut cfg = SimConfig { latency: ms(300), ..SimConfig::small().with_conduit(base_form(16)) };
    cfg.b.replay_frames = 4096;
    cfg.b.replay_bytes = 1 << 20;
    let mut sim = Sim::connected(cfg);
    sim.set_interposer(Side::A, full_speed_sender(TOTAL));
    sim.set_interposer(Side::B, echo());
    sim.drain(Side::A); // A's application starts
    let done = sim.run_until(secs(120), |s| s.all_delivered() && s.peer(Side::B).delivered() == TOTAL);
    let a = sim.peer(Side::A);
    println!(
        "A: {} Writable, {} cycles, {} links; {:?} simulated",
        a.counters.writable,
        ack_starved(&sim, Side::A),
        a.counters.attached,
        sim.now()
    );
    assert!(done, "A delivered {}, B {}", a.delivered(), sim.peer(Side::B).delivered());
    assert!(sim.peer(Side::A).counters.writable >= 10);
    assert_eq!(ack_starved(&sim, Side::A), 0);
    assert_eq!(sim.peer(Side::A).counters.attached, 1);
}

/// Both sides blocked on full rings, each holding the other's acks: every frame arrived, but
/// the acks on them are stale and neither side has anything more it may send. Silence for
/// `ack_starved_timeout` cycles the link and the hellos trim both rings.
#[test]
fn both_sides_blocked_on_stale_acks_recover_after_the_timeout() {
    let cfg = SimConfig { latency: ms(10), ..SimConfig::small().with_conduit(base_form(4)) };
    let mut sim = Sim::connected(cfg);
    assert_eq!(sim.send(Side::A, 5), 4);
    assert_eq!(sim.send(Side::B, 5), 4);
    let unblocked = |s: &Sim| !s.peer(Side::A).is_blocked() && !s.peer(Side::B).is_blocked();
    assert!(!sim.run_until(ms(900), unblocked), "nothing acks before the timeout");
    assert!(sim.run_until(secs(5), unblocked), "both rings drain");
    let cycles = ack_starved(&sim, Side::A) + ack_starved(&sim, Side::B);
    println!("{cycles} cycles, unblocked at {:?}", sim.now());
    assert!((1..=2).contains(&cycles), "{cycles} cycles");
    sim.send(Side::A, 4);
    sim.send(Side::B, 4);
    assert!(sim.run_until(secs(60), |s| s.all_delivered() && unblocked(s)));
    assert_eq!(sim.peer(Side::A).delivered(), 8);
}
