//! Sequencing, acks and replay scenarios (shared/SCENARIOS.md section 2).

use std::cell::Cell;
use std::rc::Rc;

use sotto_proto::conduit::{goodbye_code, InputError, LinkDropReason, SendError, SessionEnd, Violation};
use sotto_proto::wire::WireError;
use sotto_proto::{ConduitConfig, Event, Instant, LinkId};
use sotto_tests::taps::{drop_if, recorder, rewrite_first_on};
use sotto_tests::wire_util::{self, Kind};
use sotto_tests::{ms, secs, EndKind, Side, Sim, SimConfig};

fn item(sim: &Sim, from: Side, seq: u64) -> Vec<u8> {
    let gen = sim.peer(from).out_items();
    let mut buf = vec![0u8; gen.len(seq)];
    gen.fill(seq, &mut buf);
    buf
}

fn last_attached(sim: &Sim, side: Side) -> (LinkId, u64) {
    sim.peer(side)
        .log
        .iter()
        .rev()
        .find_map(|(_, e)| match *e {
            Event::Attached { link, replaying, .. } => Some((link, replaying)),
            _ => None,
        })
        .expect("attached")
}

fn data_seqs(frames: &[(u64, Vec<u8>)], serial: u64) -> Vec<u32> {
    frames
        .iter()
        .filter(|(s, _)| *s == serial)
        .filter_map(|(_, f)| match wire_util::kind(f, true) {
            Some(Kind::Data { seq, .. }) => Some(seq),
            _ => None,
        })
        .collect()
}

#[test]
fn s1_ack_lost_with_the_link() {
    let mut sim = Sim::connected(SimConfig::small());
    let (tap, from_b) = recorder();
    sim.set_tap(Side::B, tap);
    sim.stall(Side::B, Instant::FAR_FUTURE); // B's acks never reach A
    sim.send(Side::A, 8);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 8));
    sim.stall(Side::A, Instant::FAR_FUTURE);
    sim.send(Side::A, 2); // 8 and 9 go out and are lost with the link
    sim.run_for(ms(100));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 0);
    let replayed_before = sim.peer(Side::A).conduit.stats().frames_replayed;
    assert!(sim.kill());
    assert!(sim.run_until(secs(10), |s| s.peer(Side::A).counters.resumed == 1));
    let sh = from_b.borrow().iter().find(|(s, _)| *s == 2).map(|(_, f)| f.clone()).expect("SH on link 2");
    let sh = sotto_proto::wire::ServerHello::decode(&sh).expect("ServerHello");
    assert_eq!(sh.last_received, Some(7));
    assert_eq!(last_attached(&sim, Side::A).1, 2, "A replays 8 and 9 only");
    assert!(sim.run_until(secs(1), Sim::all_delivered));
    assert_eq!(sim.peer(Side::B).delivered(), 10);
    assert_eq!(sim.peer(Side::A).conduit.stats().frames_replayed - replayed_before, 2);
    assert!(sim.run_until(ms(100), |s| s.peer(Side::A).conduit.unacked() == 0), "B's next ack empties the ring");
}

#[test]
fn s2_partial_delivery_replays_before_new_data() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    let (tap, from_a) = recorder();
    sim.set_tap(Side::A, tap);
    // B gets 5 and 6 whole, then 3 bytes of 7, then the link dies.
    sim.cut_after_frames(Side::A, 2, 3, EndKind::Reset);
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::A).conduit.current_link().is_none()));
    assert_eq!(sim.peer(Side::B).delivered(), 7);
    assert_eq!(sim.send_one(Side::A), Ok(10), "a send during the resume gets the next seq");
    assert!(sim.run_until(secs(10), Sim::all_delivered));
    assert_eq!(data_seqs(&from_a.borrow(), 2), [7, 8, 9, 10], "replay first, then the new frame");
    assert_eq!(sim.peer(Side::B).delivered(), 11);
}

#[test]
fn s3_duplicate_frame_on_the_same_link() {
    let mut sim = Sim::connected(SimConfig::small());
    let (tap, from_a) = recorder();
    sim.set_tap(Side::A, tap);
    sim.send(Side::A, 3);
    assert!(sim.run_until(secs(1), Sim::all_delivered));
    let copy = from_a
        .borrow()
        .iter()
        .map(|(_, f)| f.clone())
        .find(|f| matches!(wire_util::kind(f, true), Some(Kind::Data { seq: 1, .. })))
        .expect("frame 1");
    assert_eq!(sim.inject(Side::B, &copy), Ok(None), "dropped, not delivered");
    assert_eq!(sim.peer(Side::B).delivered(), 3);
    assert_eq!(sim.peer(Side::B).conduit.stats().duplicates_dropped, 1);
    assert!(sim.peer(Side::B).conduit.is_established(), "a duplicate is no violation");
}

#[test]
fn s4_gap_drops_the_link_and_resume_refills_it() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 9);
    assert!(sim.run_until(secs(1), Sim::all_delivered));
    let dropped = Rc::new(Cell::new(false));
    let d = Rc::clone(&dropped);
    sim.set_tap(
        Side::A,
        drop_if(move |_, f| {
            let hit = !d.get() && matches!(wire_util::kind(f, true), Some(Kind::Data { seq: 9, .. }));
            d.set(d.get() || hit);
            hit
        }),
    );
    sim.send(Side::A, 2);
    assert!(sim.run_until(secs(10), Sim::all_delivered));
    assert!(dropped.get());
    assert_eq!(sim.peer(Side::B).log.drops(LinkDropReason::Gap), 1);
    assert_eq!(sim.peer(Side::B).conduit.stats().link_drops.gap, 1);
    assert_eq!(sim.peer(Side::A).counters.resumed, 1);
    assert_eq!(sim.peer(Side::B).delivered(), 11, "9 then 10, each once");
}

/// S5 with `duplicate_window = 16`: a frame 5 behind is a duplicate (dropped); one 38 behind
/// is outside any possible replay window: a violation (the link drops, the session resumes).
#[test]
fn s5_seq_far_behind() {
    let cfg = SimConfig::small().with_conduit({
        let mut patched = SimConfig::small().a;
        patched.duplicate_window = 16;
        patched
    });
    let mut sim = Sim::connected(cfg);
    sim.send(Side::A, 40);
    assert!(sim.run_until(secs(1), Sim::all_delivered));
    let near = wire_util::data(35, None, &item(&sim, Side::A, 35), true);
    assert_eq!(sim.inject(Side::B, &near), Ok(None));
    assert_eq!(sim.peer(Side::B).conduit.stats().duplicates_dropped, 1);
    let far = wire_util::data(2, None, &item(&sim, Side::A, 2), true);
    let r = sim.inject(Side::B, &far);
    assert_eq!(r, Err(InputError::LinkDropped(LinkDropReason::Violation(Violation::StaleBeyondWindow))));
    sim.send(Side::A, 3);
    assert!(sim.run_until(secs(10), Sim::all_acked));
    assert!(!sim.peer(Side::B).conduit.is_ended());
}

#[test]
fn s6_ack_beyond_sent_and_regressing_ack() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.stall(Side::B, Instant::FAR_FUTURE);
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 5));
    let before = sim.peer(Side::A).conduit.stats();
    let r = sim.inject(Side::A, &wire_util::ack(9));
    assert_eq!(r, Err(InputError::LinkDropped(LinkDropReason::Violation(Violation::AckBeyondSent))));
    let after = sim.peer(Side::A).conduit.stats();
    assert_eq!((after.replay_frames, after.replay_bytes), (before.replay_frames, before.replay_bytes));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 0, "the ring is untouched");
    assert!(sim.run_until(secs(10), Sim::all_acked), "the session resumes");
    // A regressing ack is a no-op.
    sim.stall(Side::B, Instant::FAR_FUTURE);
    sim.send(Side::A, 10); // seqs 5..=14
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 15));
    assert_eq!(sim.inject(Side::A, &wire_util::ack(10)), Ok(None));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 11);
    assert_eq!(sim.inject(Side::A, &wire_util::ack(7)), Ok(None));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 11);
    assert!(sim.peer(Side::A).conduit.is_established());
}

#[test]
fn s7_ack_at_the_exact_boundary() {
    let cfg = SimConfig::small().with_conduit({
        let mut patched = SimConfig::small().a;
        patched.replay_frames = 8;
        patched
    });
    let mut sim = Sim::connected(cfg);
    sim.stall(Side::B, Instant::FAR_FUTURE);
    assert_eq!(sim.send(Side::A, 9), 8, "the ring holds exactly 8");
    assert_eq!(sim.peer(Side::A).last_send_error, Some(SendError::WouldBlock));
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 8));
    assert_eq!(sim.inject(Side::A, &wire_util::ack(7)), Ok(None));
    let stats = sim.peer(Side::A).conduit.stats();
    assert_eq!((stats.replay_frames, stats.replay_bytes), (0, 0), "empty");
    assert_eq!(sim.peer(Side::A).counters.writable, 1);
    assert_eq!(sim.send_one(Side::A), Ok(8), "the next push works");
    sim.unstall(Side::B);
    assert!(sim.run_until(secs(1), Sim::all_acked));
}

#[test]
fn s8_stale_acks_inside_replayed_frames() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    let (tap, from_b) = recorder();
    sim.set_tap(Side::B, tap);
    sim.send(Side::B, 3); // B's position (ack 4) is already known to A: no ack rides
    assert!(sim.run_until(secs(1), Sim::all_acked));
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    sim.stall(Side::B, Instant::FAR_FUTURE);
    sim.send(Side::A, 3); // unacked
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 13));
    // B's three data frames as they would look had each carried ack 4 (a peer may always
    // repeat its ack), arriving again late: their acks are stale by now.
    let old: Vec<Vec<u8>> = from_b
        .borrow()
        .iter()
        .filter_map(|(_, f)| match sotto_proto::wire::Frame::decode(f, true) {
            Ok(sotto_proto::wire::Frame::Data { seq, ack: None, item }) => {
                Some(wire_util::data(seq, Some(4), item, true))
            }
            _ => None,
        })
        .collect();
    assert_eq!(old.len(), 3);
    assert!(old.iter().all(|f| matches!(wire_util::kind(f, true), Some(Kind::Data { ack: Some(4), .. }))));
    let before = sim.peer(Side::A).conduit.stats();
    for f in &old {
        assert_eq!(sim.inject(Side::A, f), Ok(None));
    }
    let a = sim.peer(Side::A);
    assert_eq!(a.conduit.items_acked(), 10, "max(), not overwritten");
    assert_eq!(a.conduit.unacked(), 3, "nothing re-buffered");
    assert_eq!(a.conduit.stats().replay_frames, before.replay_frames);
    assert_eq!(a.conduit.stats().duplicates_dropped, before.duplicates_dropped + 3);
    assert_eq!(a.delivered(), 3);
}

/// S9 with the default timers (ack_every 32, ack_delay 25 ms) and ring (4096 frames): one
/// way, 1 ms latency, one frame every 10 µs. The ring never holds more than the frames of
/// one ack period plus a round trip, far below its cap. 1 000 000 frames (`SOTTO_S9_FRAMES`
/// to choose another count).
#[test]
fn s9_one_way_traffic_is_acked_standalone() {
    let n: u64 = std::env::var("SOTTO_S9_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let cfg = SimConfig { item_max: 16, ..SimConfig::small() }.with_conduit(ConduitConfig::default());
    let mut sim = Sim::connected(cfg);
    let mut max_unacked = 0;
    for _ in 0..n {
        assert_eq!(sim.send(Side::A, 1), 1, "never backpressured");
        sim.run_for(sotto_proto::Duration::from_micros(10));
        max_unacked = max_unacked.max(sim.peer(Side::A).conduit.unacked());
    }
    assert!(sim.run_until(ms(100), Sim::all_acked));
    // 32 per ack, plus what is in flight during a 2 ms round trip at 100 frames/ms.
    assert!(max_unacked <= 32 + 2 * 100 + 8, "max unacked {max_unacked}");
    assert!(max_unacked < 4096);
    let b = sim.peer(Side::B).conduit.stats();
    assert!(b.acks_sent >= n / 32 && b.acks_sent <= n / 32 + 64, "standalone acks: {}", b.acks_sent);
    assert_eq!(sim.peer(Side::A).counters.would_block, 0);
}

/// S10 in sans-IO form: there is no permit to hold, so the race is a `send` issued between any
/// two driver calls. A sends one item at the k-th call into its conduit after the link dies
/// (link_down, the dial, link_up, the ClientHello, the ServerHello, each replayed frame...),
/// for every k. The send always gets a seq and the item is delivered exactly once, in order,
/// with no gap seen by B.
#[test]
fn s10_send_racing_the_reconnect() {
    for k in 0..1000u32 {
        let mut sim = Sim::connected(SimConfig::small());
        sim.send(Side::A, 3);
        assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 3));
        sim.stall(Side::A, Instant::FAR_FUTURE);
        sim.send(Side::A, 2); // in flight, lost with the link
        let calls = Rc::new(Cell::new(0u32));
        let result = Rc::new(Cell::new(None));
        let (c, r) = (Rc::clone(&calls), Rc::clone(&result));
        sim.set_interposer(
            Side::A,
            Box::new(move |peer| {
                let now = c.get() == k;
                if now {
                    r.set(Some(peer.send_next()));
                }
                c.set(c.get() + 1);
                now
            }),
        );
        assert!(sim.kill());
        let done = sim.run_until(secs(30), |s| s.all_delivered() && s.peer(Side::A).sent() == 6);
        if result.get().is_none() {
            // k is past the last driver call of the resume: every point has been covered.
            assert!(k > 30, "the resume took only {k} calls");
            return;
        }
        assert!(done, "k = {k}: not delivered; racing send {:?}", result.get());
        assert_eq!(result.get(), Some(Ok(5)), "k = {k}: the racing send got the next seq");
        assert!(sim.run_until(secs(30), Sim::all_acked), "k = {k}");
        assert_eq!(sim.peer(Side::B).delivered(), 6);
        assert_eq!(sim.peer(Side::B).log.drops(LinkDropReason::Gap), 0, "k = {k}: B never saw a gap");
    }
}

/// S11: B receives but none of its acks reach A (B's direction stalled, link alive). A's ring
/// fills to its cap, then `send` refuses with WouldBlock: no drop, no growth. Once acks flow,
/// `Writable` fires and the pending sends finish in order.
#[test]
fn s11_never_acked_while_the_link_is_alive() {
    let cfg = SimConfig::small().with_conduit({
        let mut patched = SimConfig::small().a;
        patched.replay_frames = 16;
        patched
    });
    let mut sim = Sim::connected(cfg);
    sim.stall(Side::B, Instant::FAR_FUTURE);
    assert_eq!(sim.send(Side::A, 40), 16);
    assert_eq!(sim.peer(Side::A).last_send_error, Some(SendError::WouldBlock));
    sim.run_for(secs(5));
    assert_eq!(sim.send(Side::A, 1), 0, "still full");
    let a = sim.peer(Side::A);
    assert_eq!(a.conduit.stats().replay_frames, 16, "at the cap, not beyond");
    assert!(a.conduit.is_established());
    assert_eq!(a.counters.drop_links, 0);
    assert_eq!(sim.peer(Side::B).delivered(), 16);
    sim.unstall(Side::B);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::A).counters.writable == 1));
    assert_eq!(sim.send(Side::A, 24), 16);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::A).counters.writable == 2));
    assert_eq!(sim.send(Side::A, 8), 8);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert_eq!(sim.peer(Side::B).delivered(), 40);
}

/// Regression (found by the randomized runs, seed 242): base form, both sides blocked on full
/// rings at once. Both cycle the link at the same instant (their frames in flight die with it;
/// a zero `ack_starved_timeout` cycles as soon as a send is refused, as the conduit once did
/// always), then both replay on the next link with acks that are stale by the time they
/// arrive, and nobody has anything more to send. The conduit cycles the link again after
/// `ping_interval` while a sender stays blocked, and the hellos of the next link trim both
/// rings.
#[test]
fn s11_base_form_both_sides_blocked_recover() {
    let base = {
        let mut patched = SimConfig::small().a;
        patched.ext = false;
        patched.replay_frames = 4;
        patched.ping_interval = secs(2);
        patched.ack_starved_timeout = ms(0);
        patched
    };
    let cfg = SimConfig { latency: ms(10), ..SimConfig::small().with_conduit(base) };
    let mut sim = Sim::connected(cfg);
    assert_eq!(sim.send(Side::A, 4), 4);
    assert_eq!(sim.send(Side::B, 4), 4);
    assert_eq!(sim.send(Side::A, 1), 0);
    assert_eq!(sim.send(Side::B, 1), 0);
    let unblocked = |s: &Sim| !s.peer(Side::A).is_blocked() && !s.peer(Side::B).is_blocked();
    assert!(sim.run_until(secs(30), unblocked), "both rings drain");
    assert!(
        sim.peer(Side::A).conduit.stats().link_drops.ack_starved
            + sim.peer(Side::B).conduit.stats().link_drops.ack_starved
            >= 3
    );
    sim.send(Side::A, 4);
    sim.send(Side::B, 4);
    assert!(sim.run_until(secs(60), |s| s.all_delivered() && unblocked(s)));
    assert_eq!(sim.peer(Side::A).delivered(), 8);
}

/// S14 on both sides. A: B's ServerHello claims a position behind what A already trimmed; A
/// ends the session (ResumeInconsistent, GOODBYE to B), skipping nothing. B: A's ClientHello
/// claims the same; B answers REJECTED and ends; A surfaces the loss.
#[test]
fn s14_peer_says_it_is_behind_what_we_still_hold() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 50);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    sim.stall(Side::A, Instant::FAR_FUTURE);
    sim.send(Side::A, 5);
    assert!(sim.kill());
    sim.set_tap(Side::B, rewrite_first_on(2, |f| f[21..25].copy_from_slice(&40u32.to_le_bytes())));
    sim.run_for(secs(10));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::ResumeInconsistent));
    assert_eq!(
        sim.peer(Side::B).conduit.ended(),
        Some(SessionEnd::PeerGoodbye { code: goodbye_code::RESUME_INCONSISTENT })
    );
    assert_eq!(sim.peer(Side::B).delivered(), 50, "41..49 never skipped or redelivered");

    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::B, 50);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert!(sim.kill());
    sim.set_tap(Side::A, rewrite_first_on(2, |f| f[21..25].copy_from_slice(&40u32.to_le_bytes())));
    sim.run_for(secs(10));
    assert_eq!(sim.peer(Side::B).conduit.ended(), Some(SessionEnd::ResumeInconsistent));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::Rejected));
    assert_eq!(sim.peer(Side::A).delivered(), 50);
}

/// S15: a position ahead of anything sent. The conduit treats it like S14 (WIRE.md section 6:
/// the session is lost, never skipped): the resume is refused and nothing panics.
#[test]
fn s15_peer_says_it_is_ahead_of_what_we_sent() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::A, 61);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert!(sim.kill());
    sim.set_tap(Side::B, rewrite_first_on(2, |f| f[21..25].copy_from_slice(&100u32.to_le_bytes())));
    sim.run_for(secs(10));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::ResumeInconsistent));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 61);

    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::B, 61);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    assert!(sim.kill());
    sim.set_tap(Side::A, rewrite_first_on(2, |f| f[21..25].copy_from_slice(&100u32.to_le_bytes())));
    sim.run_for(secs(10));
    assert_eq!(sim.peer(Side::B).conduit.ended(), Some(SessionEnd::ResumeInconsistent));
    assert_eq!(sim.peer(Side::A).conduit.ended(), Some(SessionEnd::Rejected));
}

/// S16 at the conduit layer: items are opaque, so "payload decode" is the layer above (the
/// session turns it into a protocol error). What the conduit guarantees is the same rule for
/// a frame that fails to decode: it is not counted, not acked, the link drops, and the intact
/// copy from the replay ring is delivered after the resume. Nothing acked is ever lost (I4).
#[test]
fn s16_frame_that_fails_to_decode_is_not_counted_nor_acked() {
    let mut sim = Sim::connected(SimConfig::small());
    let hit = Rc::new(Cell::new(false));
    let h = Rc::clone(&hit);
    sim.set_tap(
        Side::A,
        Box::new(move |_, f: &mut Vec<u8>| {
            if !h.get() && matches!(wire_util::kind(f, true), Some(Kind::Data { seq: 3, .. })) {
                h.set(true);
                f.push(0xee); // trailing byte: a decode error
            }
            true
        }),
    );
    sim.send(Side::A, 6);
    assert!(sim.run_until(secs(10), Sim::all_acked));
    assert!(hit.get());
    let reason = LinkDropReason::Violation(Violation::Malformed(WireError::TrailingBytes));
    assert_eq!(sim.peer(Side::B).log.drops(reason), 1);
    assert_eq!(sim.peer(Side::B).delivered(), 6);
}

#[test]
fn s17_ack_only_on_a_duplicate() {
    let mut sim = Sim::connected(SimConfig::small());
    sim.send(Side::B, 2);
    assert!(sim.run_until(secs(1), Sim::all_acked));
    sim.stall(Side::B, Instant::FAR_FUTURE);
    sim.send(Side::A, 4);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 4));
    assert_eq!(sim.peer(Side::A).conduit.unacked(), 4);
    let dup = wire_util::data(1, Some(3), &item(&sim, Side::B, 1), true);
    assert_eq!(sim.inject(Side::A, &dup), Ok(None), "payload dropped");
    let a = sim.peer(Side::A);
    assert_eq!(a.conduit.unacked(), 0, "ack applied");
    assert_eq!(a.delivered(), 2);
    assert_eq!(a.conduit.stats().duplicates_dropped, 1);
}

#[test]
fn s18_out_of_order_acks_across_links() {
    let mut sim = Sim::connected(SimConfig::small());
    let (old_link, _) = last_attached(&sim, Side::A);
    sim.stall(Side::B, Instant::FAR_FUTURE);
    sim.send(Side::A, 5);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 5));
    assert!(sim.kill());
    assert!(sim.run_until(secs(10), |s| s.peer(Side::A).counters.resumed == 1));
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 5, "the resume hello acked everything");
    assert_eq!(sim.inject_on(Side::A, old_link, &wire_util::ack(2)), Err(InputError::StaleLink));
    assert_eq!(sim.inject(Side::A, &wire_util::ack(2)), Ok(None), "a regressing ack on the new link");
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 5);
    assert!(sim.peer(Side::A).conduit.is_established());
}

/// A sends 3 items, B delivers them, then B sends 2: the ack field of each of B's data frames
/// (frames decoded with extensions `ext`), and the simulation to go on with.
fn acks_on_b_replies(conduit: ConduitConfig, ext: bool) -> (Sim, Vec<Option<u32>>) {
    let mut sim = Sim::connected(SimConfig::small().with_conduit(conduit));
    assert_eq!(sim.peer(Side::B).conduit.ext_in_force(), ext);
    let (tap, from_b) = recorder();
    sim.set_tap(Side::B, tap);
    sim.send(Side::A, 3);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::B).delivered() == 3));
    sim.send(Side::B, 2);
    assert!(sim.run_until(secs(1), |s| s.peer(Side::A).delivered() == 2));
    let acks = from_b
        .borrow()
        .iter()
        .filter_map(|(_, f)| match wire_util::kind(f, ext) {
            Some(Kind::Data { ack, .. }) => Some(ack),
            _ => None,
        })
        .collect();
    (sim, acks)
}

/// A data frame carries an ack only when the receive position moved since the peer last
/// heard it on this link: B's first reply carries "delivered up to 2", its second none (A
/// already knows), and A still ends with everything acked.
#[test]
fn acks_ride_on_data_only_when_they_moved() {
    let conduit = {
        let mut patched = SimConfig::small().a;
        patched.ack_every = 1000;
        patched.ack_delay = ms(500);
        patched
    };
    let (mut sim, acks) = acks_on_b_replies(conduit, true);
    assert_eq!(acks, vec![Some(2), None]);
    assert_eq!(sim.peer(Side::A).conduit.items_acked(), 3);
    assert!(sim.run_until(secs(2), Sim::all_acked));
}

/// In the base form (a vox peer, no extensions) every data frame carries the ack, as vox's own
/// frames do: vox trims its replay buffer on the acks riding on our data frames.
#[test]
fn base_form_data_frames_always_carry_the_ack() {
    let (_, acks) = acks_on_b_replies(
        {
            let mut patched = SimConfig::small().a;
            patched.ext = false;
            patched
        },
        false,
    );
    assert_eq!(acks, vec![Some(2), Some(2)]);
}
