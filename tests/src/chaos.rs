//! Randomized runs: a configuration, a two-way workload and a fault schedule all drawn from one
//! seed. Faults (kills and truncations at any byte, clean closes, half-open links, stalls,
//! failed/dropped/delayed dials) hit both directions during a fault phase; then they stop,
//! and everything sent must be delivered exactly once, in order, within a bounded simulated
//! time (I7), with the session never lost. Invariants I1 to I6 are checked after every input.
//!
//! Faults start once the first handshake has completed: a standalone acceptor conduit refuses a
//! second fresh ClientHello (it has no key to match), so losing the very first ServerHello
//! loses the session by design there (an endpoint would open a new session instead).
//!
//! After [`Chaos::new`] nothing here allocates, so the same run can be measured with a
//! counting allocator.

use sotto_proto::{ConduitConfig, Duration, Instant};

use crate::config::SimConfig;
use crate::dialer::DialPolicy;
use crate::pipe::EndKind;
use crate::rng::SimRng;
use crate::sim::Sim;
use crate::Side;

/// The workload and fault schedule of one randomized run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChaosPlan {
    /// Items each side's application sends (`[A, B]`).
    pub items: [u64; 2],
    /// Longest pause between two bursts of sends.
    pub send_gap_max: Duration,
    /// Largest burst.
    pub burst_max: u64,
    /// How long faults are injected after the first attach.
    pub fault_phase: Duration,
    /// Longest pause between two faults.
    pub fault_gap_max: Duration,
    /// Dialing during the fault phase (failures, drops, delays).
    pub faulty_dial: DialPolicy,
    /// Dialing once faults stop.
    pub clean_dial: DialPolicy,
    /// Half-open links may be injected (only when keepalive can find them: extensions on).
    pub half_open: bool,
    /// Longest stall.
    pub stall_max: Duration,
    /// Time allowed, once faults stop and everything is sent, for everything to be delivered.
    pub liveness_limit: Duration,
}

/// What a randomized run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// Faults injected.
    pub faults: u64,
    /// Links opened.
    pub links: u64,
    /// Resumes A completed.
    pub resumes: u64,
    /// Items delivered `[to A, to B]`.
    pub delivered: [u64; 2],
    /// Whether extensions were in force.
    pub ext: bool,
}

/// Draw a simulation configuration and a plan from `seed`.
#[must_use]
pub fn random_setup(seed: u64, repro: &'static str) -> (SimConfig, ChaosPlan) {
    let mut r = SimRng::new(seed ^ 0x5eed_c4a0_5000_0000);
    let max_frame_len = r.range(256, 4096) as u32;
    let replay_frames = r.range(2, 64) as u32;
    let replay_bytes = max_frame_len + r.range(0, 16 * 1024) as u32;
    let ping_interval = r.duration(Duration::from_secs(1), Duration::from_secs(10));
    let base = {
        let mut patched = ConduitConfig::default();
        patched.max_frame_len = max_frame_len;
        patched.replay_bytes = replay_bytes;
        patched.replay_frames = replay_frames;
        patched.ext = true;
        patched.ack_delay = r.duration(Duration::from_millis(1), Duration::from_millis(50));
        patched.ack_every = r.range(1, 32) as u32;
        patched.ping_interval = ping_interval;
        patched.pong_timeout = r.duration(Duration::from_secs(1), Duration::from_secs(20));
        patched.handshake_timeout = r.duration(Duration::from_millis(500), Duration::from_secs(10));
        patched.recovery_timeout = Duration::from_secs(24 * 3600);
        patched
    };
    let (ext_a, ext_b) = match r.below(20) {
        0 => (false, false),
        1 => (true, false),
        2 => (false, true),
        _ => (true, true),
    };
    let ext = ext_a && ext_b;
    let item_max = if r.chance(300) { base.max_item_len() } else { r.range(4, 300) as u32 };
    let cfg = SimConfig {
        a: {
            let mut patched = base;
            patched.ext = ext_a;
            patched
        },
        b: {
            let mut patched = base;
            patched.ext = ext_b;
            patched
        },
        latency: r.duration(Duration::ZERO, Duration::from_millis(30)),
        chunk_max: if r.chance(500) { 0 } else { r.range(1, 64) as usize },
        tiny_chunk_per_mille: r.range(0, 300) as u32,
        dial: DialPolicy {
            backoff_min: r.duration(Duration::from_millis(5), Duration::from_millis(100)),
            backoff_max: r.duration(Duration::from_millis(200), Duration::from_secs(3)),
            connect_latency: r.duration(Duration::ZERO, Duration::from_millis(20)),
            ..DialPolicy::default()
        },
        item_min: 4,
        item_max,
        conn_slots: 6,
        seed,
        repro,
    };
    let faulty_dial = DialPolicy {
        fail_per_mille: r.range(0, 500) as u32,
        drop_per_mille: r.range(0, 150) as u32,
        delay_per_mille: r.range(0, 200) as u32,
        delay_max: Duration::from_secs(3),
        ..cfg.dial
    };
    let plan = ChaosPlan {
        items: [r.range(0, 400), r.range(0, 400)],
        send_gap_max: r.duration(Duration::from_millis(1), Duration::from_millis(200)),
        burst_max: r.range(1, 12),
        fault_phase: r.duration(Duration::from_secs(1), Duration::from_secs(60)),
        fault_gap_max: r.duration(Duration::from_millis(20), Duration::from_secs(3)),
        faulty_dial,
        clean_dial: cfg.dial,
        half_open: ext,
        stall_max: r.duration(Duration::from_millis(10), Duration::from_secs(8)),
        liveness_limit: Duration::from_secs(600),
    };
    (cfg, plan)
}

/// One randomized run in progress.
#[derive(Debug)]
pub struct Chaos {
    /// The simulation.
    pub sim: Sim,
    plan: ChaosPlan,
    rng: SimRng,
    next_send: [Instant; 2],
    next_fault: Instant,
    faults: u64,
}

impl Chaos {
    /// Set up the run for `seed` (this allocates; running does not).
    #[must_use]
    pub fn new(seed: u64, repro: &'static str) -> Self {
        let (cfg, plan) = random_setup(seed, repro);
        Self::with(cfg, plan)
    }

    /// Set up a run from an explicit configuration and plan.
    #[must_use]
    pub fn with(cfg: SimConfig, plan: ChaosPlan) -> Self {
        let rng = SimRng::new(cfg.seed ^ 0xfa17_5000_0000_0001);
        Self { sim: Sim::new(cfg), plan, rng, next_send: [Instant::ZERO; 2], next_fault: Instant::ZERO, faults: 0 }
    }

    /// Run to the end: fault phase, healing, liveness check. Fails the test (with the seed)
    /// on any broken invariant.
    pub fn run(&mut self) -> ChaosReport {
        if !self.sim.run_until(Duration::from_secs(60), |s| s.peer(Side::A).counters.attached > 0) {
            self.sim.fail("the first handshake did not finish");
        }
        self.sim.dialer.policy = self.plan.faulty_dial;
        let fault_end = self.sim.now().saturating_add(self.plan.fault_phase);
        let give_up = fault_end.saturating_add(Duration::from_secs(4 * 3600));
        self.next_fault = self.sim.now();
        let mut healed = false;
        loop {
            let now = self.sim.now();
            if !healed && now >= fault_end {
                self.heal();
                healed = true;
            }
            if healed && self.remaining(Side::A) == 0 && self.remaining(Side::B) == 0 {
                break;
            }
            if now > give_up {
                self.sim.fail("I7: the applications could not send everything (blocked for hours)");
            }
            if !healed && now >= self.next_fault {
                self.fault();
                self.faults += 1;
                self.next_fault = now.saturating_add(self.rng.duration(Duration::ZERO, self.plan.fault_gap_max));
            }
            for side in [Side::A, Side::B] {
                if now >= self.next_send[side.idx()] && self.remaining(side) > 0 {
                    self.send_burst(side);
                }
            }
            let mut t = now.saturating_add(Duration::from_millis(100));
            for side in [Side::A, Side::B] {
                if self.remaining(side) > 0 && !self.sim.peer(side).is_blocked() {
                    t = t.min(self.next_send[side.idx()]);
                }
            }
            if !healed {
                t = t.min(self.next_fault).min(fault_end);
            }
            self.sim.advance_to(t.max(now));
        }
        let ext = self.sim.config().a.ext && self.sim.config().b.ext;
        let done =
            self.sim.run_until(self.plan.liveness_limit, |s| if ext { s.all_acked() } else { s.all_delivered() });
        if !done {
            self.sim.fail("I7: faults stopped but not everything was delivered (and acked) in time");
        }
        for side in [Side::A, Side::B] {
            if self.sim.peer(side).conduit.is_ended() {
                self.sim.fail("the session ended during a randomized run");
            }
        }
        ChaosReport {
            seed: self.sim.config().seed,
            sim_time: self.sim.now().saturating_duration_since(Instant::ZERO),
            faults: self.faults,
            links: self.sim.stats.links_opened,
            resumes: self.sim.peer(Side::A).counters.resumed,
            delivered: [self.sim.peer(Side::A).delivered(), self.sim.peer(Side::B).delivered()],
            ext,
        }
    }

    fn remaining(&self, side: Side) -> u64 {
        self.plan.items[side.idx()] - self.sim.peer(side).sent()
    }

    fn send_burst(&mut self, side: Side) {
        if !self.sim.peer(side).is_blocked() {
            let n = self.rng.range(1, self.plan.burst_max).min(self.remaining(side));
            self.sim.send(side, n as usize);
        }
        let gap = self.rng.duration(Duration::ZERO, self.plan.send_gap_max);
        self.next_send[side.idx()] = self.sim.now().saturating_add(gap);
    }

    fn heal(&mut self) {
        self.sim.dialer.policy = self.plan.clean_dial;
        self.sim.heal_links();
    }

    fn fault(&mut self) {
        if self.sim.current_serial().is_none() {
            return;
        }
        let side = if self.rng.chance(500) { Side::A } else { Side::B };
        let kind = if self.rng.chance(500) { EndKind::Reset } else { EndKind::Eof };
        match self.rng.below(100) {
            0..=19 => {
                self.sim.kill();
            }
            20..=39 => {
                let bytes = self.rng.range(0, 3000);
                self.sim.cut_after_bytes(side, bytes, kind);
            }
            40..=54 => {
                let frames = self.rng.range(0, 20);
                let extra = self.rng.range(0, 40) as u32;
                self.sim.cut_after_frames(side, frames, extra, kind);
            }
            55..=62 => self.sim.close_link(side),
            63..=72 if self.plan.half_open => self.sim.blackhole(side),
            63..=72 => {
                self.sim.kill();
            }
            73..=89 => {
                let until = self.sim.now().saturating_add(self.rng.duration(Duration::ZERO, self.plan.stall_max));
                if self.rng.chance(300) {
                    self.sim.stall_all(until);
                } else {
                    self.sim.stall(side, until);
                }
            }
            _ => {
                // A dial storm: the current link dies and the next attempts face faulty dialing.
                self.sim.kill();
            }
        }
    }
}
