//! The invariants of shared/SCENARIOS.md, checked after every input the harness feeds:
//!
//! - I1: each side's deliveries are a prefix of what the other sent (every delivered item is
//!   checked against the sender's generator at its position as it arrives; here the counts).
//! - I2: the receive count never decreases; acked never decreases and never passes sent.
//! - I3: the replay ring holds exactly the unacked items (frames and bytes), within its caps.
//! - I4: nothing is acked that the peer's application has not been handed.
//! - I5: at most one open link per side, and it is the conduit's current link.
//! - I6: no event was lost to overflow (pipes and per-drain output are bounded where written).
//! - plus: `Ended` is reported exactly once, when and only when the session is over.
//!
//! I7 (liveness) is a property of a whole run: see [`Sim::run_until`](crate::Sim::run_until)
//! with [`Sim::all_acked`](crate::Sim::all_acked).

use crate::sim::Sim;
use crate::Side;

impl Sim {
    /// Check every invariant now; fail the run (with seed and repro) on the first broken one.
    pub fn check_invariants(&mut self) {
        for side in [Side::A, Side::B] {
            self.check_side(side);
        }
        let [a, b] = &self.peers;
        if a.session == b.session {
            for (p, q) in [(a, b), (b, a)] {
                if p.delivered > q.sent {
                    self.fail_fmt(format_args!(
                        "I1: {:?} delivered {} items but {:?} sent only {}",
                        p.side, p.delivered, q.side, q.sent
                    ));
                }
                if p.conduit.items_acked() > q.delivered {
                    self.fail_fmt(format_args!(
                        "I4: {:?} has {} items acked but {:?} delivered only {}",
                        p.side,
                        p.conduit.items_acked(),
                        q.side,
                        q.delivered
                    ));
                }
            }
        }
    }

    fn check_side(&mut self, side: Side) {
        let i = side.idx();
        let p = &self.peers[i];
        let c = &p.conduit;
        let (sent, acked, received) = (c.items_sent(), c.items_acked(), c.items_received());
        if sent != p.sent {
            self.fail_fmt(format_args!("I1: {side:?} conduit counts {sent} items sent, the app {}", p.sent));
        }
        if received != p.delivered {
            self.fail_fmt(format_args!("I1: {side:?} conduit counts {received} received, the app got {}", p.delivered));
        }
        if received < p.prev_received {
            self.fail_fmt(format_args!("I2: {side:?} receive count went back from {} to {received}", p.prev_received));
        }
        if acked < p.prev_acked || acked > sent {
            self.fail_fmt(format_args!("I2: {side:?} acked {acked} (was {}), sent {sent}", p.prev_acked));
        }
        // Retire the bytes of newly acked items from the expected ring content.
        let gen = p.out_items;
        let mut unacked_bytes = p.unacked_bytes;
        for seq in p.prev_acked..acked {
            unacked_bytes -= gen.len(seq) as u64;
        }
        let stats = c.stats();
        let cfg = c.config();
        if stats.replay_frames != sent - acked || stats.replay_bytes != unacked_bytes {
            self.fail_fmt(format_args!(
                "I3: {side:?} ring holds {} frames / {} bytes, expected {} / {unacked_bytes}",
                stats.replay_frames,
                stats.replay_bytes,
                sent - acked
            ));
        }
        if stats.replay_frames > u64::from(cfg.replay_frames) || stats.replay_bytes > u64::from(cfg.replay_bytes) {
            self.fail_fmt(format_args!("I3: {side:?} ring over its caps: {stats:?}"));
        }
        if stats.events_overflowed != 0 {
            self.fail_fmt(format_args!("I6: {side:?} lost {} events to overflow", stats.events_overflowed));
        }
        let ended_events = p.counters.ended;
        if ended_events > 1 || (ended_events == 1) != c.is_ended() {
            self.fail_fmt(format_args!("Ended reported {ended_events} times; conduit ended: {:?}", c.ended()));
        }
        let mut open = 0;
        let mut matches_current = true;
        for conn in self.conns.iter().filter(|c| !c.is_free()) {
            if let Some(link) = conn.end(side) {
                open += 1;
                matches_current &= c.current_link() == Some(link);
            }
        }
        if open > 1 || !matches_current || (open == 0 && c.current_link().is_some()) {
            self.fail_fmt(format_args!(
                "I5: {side:?} has {open} open links; conduit's current link {:?}",
                c.current_link()
            ));
        }
        let p = &mut self.peers[i];
        p.prev_received = received;
        p.prev_acked = acked;
        p.unacked_bytes = unacked_bytes;
    }
}
