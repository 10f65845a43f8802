//! Randomized multi-connection runs: several clients against one endpoint, configuration,
//! workload and faults all drawn from one seed. During the fault phase each application opens,
//! accepts, rejects and closes connections, sends on them in both directions and reads slowly,
//! while links are killed or truncated at any byte, closed, blackholed (half-open), made to
//! vanish for the client only, stalled, and dials fail, drop or stall. Then faults stop and:
//! everything sent on every connection must be delivered exactly once, in order (checked per
//! payload on arrival), within a bounded simulated time; every connection must still carry a
//! payload both ways (credit never deadlocks); no session may have been lost. Credit, bounded
//! state and the endpoint's limits are checked after every input (see `check.rs`).
//!
//! Faults start once every client's first handshake is done (a lost first ServerHello is
//! covered by a named test; here it would leave orphan sessions occupying slots).
//!
//! After [`NetChaos::new`] nothing here allocates, so a run can be measured with a counting
//! allocator.

use sotto_proto::session::{ConnId, SessionConfig};
use sotto_proto::{ConduitConfig, Duration, Instant};

use super::app::{AppPolicy, ConnPhase};
use super::{Net, NetConfig, Who, Writer};
use crate::dialer::DialPolicy;
use crate::pipe::EndKind;
use crate::rng::SimRng;

/// The workload and fault schedule of one randomized run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetPlan {
    /// How long applications act and faults are injected, after the first handshakes.
    pub fault_phase: Duration,
    /// Longest pause between two faults.
    pub fault_gap_max: Duration,
    /// Longest pause between two application actions (over all applications).
    pub action_gap_max: Duration,
    /// Largest burst of payloads in one send action.
    pub burst_max: u64,
    /// How the applications answer and read.
    pub policy: AppPolicy,
    /// Dialing during the fault phase.
    pub faulty_dial: DialPolicy,
    /// Dialing once faults stop.
    pub clean_dial: DialPolicy,
    /// Half-open links may be injected (only when keepalive can find them: extensions on).
    pub half_open: bool,
    /// Longest stall.
    pub stall_max: Duration,
    /// Time allowed, once faults stop, for everything to be delivered.
    pub liveness_limit: Duration,
}

/// What a randomized run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetReport {
    /// The seed.
    pub seed: u64,
    /// Clients.
    pub clients: usize,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// Faults injected.
    pub faults: u64,
    /// Links opened.
    pub links: u64,
    /// Resumes over all clients.
    pub resumes: u64,
    /// Connections opened over all applications.
    pub opens: u64,
    /// Connections closed over all applications.
    pub closes: u64,
    /// Payloads delivered over all applications.
    pub payloads: u64,
}

/// Draw a configuration and a plan from `seed`.
#[must_use]
pub fn random_setup(seed: u64, repro: &'static str) -> (NetConfig, NetPlan) {
    let mut r = SimRng::new(seed ^ 0x5e55_10a5_0000_0000);
    let clients = r.range(1, 4) as usize;
    let max_frame_len = r.range(256, 4096) as u32;
    // The largest item less the session's data header (tag and a varint of up to 5 bytes).
    let item_max = u64::from(max_frame_len.min(1024)) - sotto_proto::wire::MAX_DATA_HEADER_LEN as u64 - 6;
    let payload_max = r.range(8, item_max) as u32;
    let ext = r.below(20) != 0;
    let conduit = |r: &mut SimRng| {
        let mut c = ConduitConfig::default();
        c.max_frame_len = max_frame_len;
        c.replay_frames = r.range(4, 64) as u32;
        c.replay_bytes = max_frame_len + r.range(0, 16 * 1024) as u32;
        c.ext = ext;
        c.ack_delay = r.duration(Duration::from_millis(1), Duration::from_millis(50));
        c.ack_every = r.range(1, 32) as u32;
        c.ping_interval = r.duration(Duration::from_secs(1), Duration::from_secs(10));
        c.pong_timeout = r.duration(Duration::from_secs(1), Duration::from_secs(20));
        c.handshake_timeout = r.duration(Duration::from_millis(500), Duration::from_secs(10));
        c.recovery_timeout = Duration::from_secs(24 * 3600);
        c
    };
    // Payloads stay within half of every window (initial credit, and `max_credit` which caps
    // the credit a side uses): `send` refuses larger ones as `TooLarge`. A message spends at
    // least `MIN_MESSAGE_CREDIT`, so a window below twice that carries nothing at all.
    let session = |r: &mut SimRng, c: ConduitConfig| {
        let max_connections = r.range(2, 8) as u32;
        let p = u64::from(payload_max).max(sotto_proto::session::MIN_MESSAGE_CREDIT);
        let mut s = SessionConfig::default();
        s.conduit = c;
        s.max_connections = max_connections;
        // Rejects owed while the ring is full queue up to `max_pending_opens + 1`, past which
        // the session ends ("too many resets"); a peer can have at most its own
        // `max_connections` (<= 8 here) Opens in flight, so 16 covers any burst.
        s.max_pending_opens = 16;
        s.initial_credit = r.range(2 * p, 8 * p) as u32;
        if r.chance(500) {
            s.max_credit = r.range(2 * p, 8 * p) as u32;
        }
        s
    };
    let c = conduit(&mut r);
    let client = session(&mut r, c);
    let c = conduit(&mut r);
    let server = session(&mut r, c);
    let max_sessions = clients as u32 + 2;
    let dial = DialPolicy {
        backoff_min: r.duration(Duration::from_millis(5), Duration::from_millis(100)),
        backoff_max: r.duration(Duration::from_millis(200), Duration::from_secs(3)),
        connect_latency: r.duration(Duration::ZERO, Duration::from_millis(20)),
        ..DialPolicy::default()
    };
    let mut endpoint = sotto_proto::endpoint::EndpointConfig::default();
    endpoint.session = server;
    endpoint.max_sessions = max_sessions;
    endpoint.max_pending_handshakes = clients as u32 + 1;
    endpoint.max_detached_sessions = max_sessions;
    let cfg = NetConfig {
        clients,
        client,
        endpoint,
        latency: r.duration(Duration::ZERO, Duration::from_millis(30)),
        chunk_max: if r.chance(500) { 0 } else { r.range(1, 64) as usize },
        tiny_chunk_per_mille: r.range(0, 300) as u32,
        dial,
        payload_min: 1,
        payload_max,
        link_slots: 4 * clients + 8,
        seed,
        repro,
    };
    let plan = NetPlan {
        fault_phase: r.duration(Duration::from_secs(1), Duration::from_secs(20)),
        fault_gap_max: r.duration(Duration::from_millis(20), Duration::from_secs(3)),
        action_gap_max: r.duration(Duration::from_millis(1), Duration::from_millis(40)),
        burst_max: r.range(1, 8),
        policy: AppPolicy { accept_per_mille: r.range(800, 1000) as u32, release_per_mille: r.range(0, 1000) as u32 },
        faulty_dial: DialPolicy {
            fail_per_mille: r.range(0, 500) as u32,
            drop_per_mille: r.range(0, 150) as u32,
            delay_per_mille: r.range(0, 200) as u32,
            delay_max: Duration::from_secs(3),
            ..dial
        },
        clean_dial: dial,
        half_open: ext,
        stall_max: r.duration(Duration::from_millis(10), Duration::from_secs(8)),
        liveness_limit: Duration::from_secs(600),
    };
    (cfg, plan)
}

/// One randomized run in progress.
#[derive(Debug)]
pub struct NetChaos {
    /// The simulation.
    pub net: Net,
    plan: NetPlan,
    rng: SimRng,
    faults: u64,
    /// Per client pair: start of the current churn period and the closes in it (the workload
    /// stays within a quarter of the churn budget: past the budget a session ends, D7).
    churn: Vec<(Instant, u32)>,
}

impl NetChaos {
    /// Set up the run for `seed` (this allocates; running does not).
    #[must_use]
    pub fn new(seed: u64, repro: &'static str) -> Self {
        let (cfg, plan) = random_setup(seed, repro);
        Self::with(cfg, plan)
    }

    /// Set up a run from an explicit configuration and plan.
    #[must_use]
    pub fn with(cfg: NetConfig, plan: NetPlan) -> Self {
        let mut net = Net::new(cfg);
        for i in 0..cfg.clients {
            net.client_mut(i).app.policy = plan.policy;
        }
        for s in &mut net.servers {
            s.app.policy = plan.policy;
        }
        let churn = vec![(Instant::ZERO, 0); cfg.clients];
        Self { net, plan, rng: SimRng::new(cfg.seed ^ 0xc4a0_5000_0000_0002), faults: 0, churn }
    }

    /// Run to the end. Fails the test (with the seed) on any broken invariant.
    pub fn run(&mut self) -> NetReport {
        if !self.net.run_until(Duration::from_secs(60), Net::all_ready) {
            self.net.fail("the first handshakes did not finish");
        }
        for i in 0..self.net.client_count() {
            self.net.client_mut(i).dialer.policy = self.plan.faulty_dial;
        }
        let fault_end = self.net.now().saturating_add(self.plan.fault_phase);
        let (mut next_fault, mut next_action) = (self.net.now(), self.net.now());
        while self.net.now() < fault_end {
            let now = self.net.now();
            if now >= next_fault {
                self.fault();
                self.faults += 1;
                next_fault = now.saturating_add(self.rng.duration(Duration::ZERO, self.plan.fault_gap_max));
            }
            if now >= next_action {
                self.action();
                next_action = now.saturating_add(self.rng.duration(Duration::ZERO, self.plan.action_gap_max));
            }
            self.net.advance_to(next_fault.min(next_action).min(fault_end).max(now));
        }
        self.heal();
        self.settle("I7: faults stopped but not everything was delivered in time");
        self.every_connection_still_flows();
        self.settle("I7: the last round was not delivered in time");
        let live = self.net.endpoint().stats().sessions_live;
        if live != self.net.client_count() as u64 {
            self.net.fail_fmt(format_args!("{live} endpoint sessions live at the end"));
        }
        self.report()
    }

    fn report(&self) -> NetReport {
        let net = &self.net;
        let mut r = NetReport {
            seed: net.config().seed,
            clients: net.client_count(),
            sim_time: net.now().saturating_duration_since(Instant::ZERO),
            faults: self.faults,
            links: net.stats.links_opened,
            ..NetReport::default()
        };
        for i in 0..net.client_count() {
            r.resumes += net.client(i).counters.resumed;
            for who in [Who::Client(i), Who::Server(i)] {
                if let Some(a) = net.app(who) {
                    r.opens += a.counters.opens_sent;
                    r.closes += a.counters.closed_by_us;
                    r.payloads += a.counters.payloads_in;
                }
            }
        }
        r
    }

    /// Run until every pair is quiet (everything delivered, every Open answered), catching the
    /// applications up as it goes.
    fn settle(&mut self, what: &str) {
        let deadline = self.net.now().saturating_add(self.plan.liveness_limit);
        loop {
            self.net.service_all();
            if self.net.run_until(Duration::from_millis(500), Net::quiet) {
                break;
            }
            if self.net.now() >= deadline {
                self.net.fail(what);
            }
        }
        for i in 0..self.net.client_count() {
            if self.net.client(i).session.is_ended() || self.net.server_handle(i).is_none() {
                self.net.fail_fmt(format_args!("client {i}'s session was lost during a randomized run"));
            }
        }
    }

    /// Liveness of credit: every connection open on both ends carries one more payload in each
    /// direction once the applications have read everything.
    fn every_connection_still_flows(&mut self) {
        for i in 0..self.net.client_count() {
            for who in [Who::Client(i), Who::Server(i)] {
                let mut k = 0;
                while let Some(conn) = self.net.app(who).and_then(|a| a.nth_open(k)) {
                    k += 1;
                    self.push_one(who, conn);
                }
            }
        }
    }

    fn push_one(&mut self, who: Who, conn: ConnId) {
        let deadline = self.net.now().saturating_add(self.plan.liveness_limit);
        while self.net.send(who, conn, 1) == 0 {
            if self.net.now() >= deadline {
                let c = self.net.app(who).and_then(|a| a.conn(conn)).copied();
                let credit = self.net.session(who).map(|s| s.send_credit(conn));
                self.net.fail_fmt(format_args!(
                    "I7: {who:?} can no longer send on connection {conn} (credit {credit:?}): {c:?}"
                ));
            }
            self.net.service_all();
            self.net.run_for(Duration::from_millis(100));
        }
    }

    fn heal(&mut self) {
        for i in 0..self.net.client_count() {
            self.net.client_mut(i).dialer.policy = self.plan.clean_dial;
        }
        self.net.heal_links();
    }

    fn action(&mut self) {
        let i = self.rng.below(self.net.client_count() as u64) as usize;
        let who = if self.rng.chance(500) { Who::Client(i) } else { Who::Server(i) };
        let Some(app) = self.net.app(who) else { return };
        if !app.ready || app.ended.is_some() {
            return;
        }
        let (open, all) = (app.open_count() as u64, app.conns().len() as u64);
        match self.rng.below(100) {
            0..=59 => {
                let k = self.rng.below(open) as usize;
                if let Some(conn) = self.net.app(who).and_then(|a| a.nth_open(k)) {
                    let n = self.rng.range(1, self.plan.burst_max) as usize;
                    self.net.send(who, conn, n);
                }
            }
            60..=71 => {
                // Within both ends' `max_connections`: beyond, the peer rejects, and a peer
                // that keeps opening past its Rejects ends the session ("too many resets", D7).
                let cfg = self.net.config();
                let limit = cfg.client.max_connections.min(cfg.endpoint.session.max_connections) as u64;
                if all <= limit {
                    self.net.open_from(who);
                }
            }
            72..=77 => {
                let cfg = self.net.config();
                let (period, budget) =
                    (cfg.client.churn_period, cfg.client.churn_budget.min(cfg.endpoint.session.churn_budget));
                let now = self.net.now();
                let (start, n) = &mut self.churn[i];
                if now.saturating_duration_since(*start) >= period {
                    (*start, *n) = (now, 0);
                }
                if *n >= budget / 4 {
                    return;
                }
                let k = self.rng.below(all) as usize;
                let pick = self.net.app(who).and_then(|a| a.conns().get(k).copied());
                if let Some(c) = pick.filter(|c| c.id != 0 && c.phase != ConnPhase::PendingIn) {
                    if self.net.close(who, c.id) {
                        self.churn[i].1 += 1;
                    }
                }
            }
            _ => self.net.service(who, false),
        }
    }

    fn fault(&mut self) {
        let i = self.rng.below(self.net.client_count() as u64) as usize;
        if self.net.client(i).link().is_none() {
            return;
        }
        let from = if self.rng.chance(500) { Writer::Client } else { Writer::Server };
        let kind = if self.rng.chance(500) { EndKind::Reset } else { EndKind::Eof };
        match self.rng.below(100) {
            0..=19 => {
                self.net.kill(i);
            }
            20..=34 => {
                let bytes = self.rng.range(0, 3000);
                self.net.cut_after_bytes(i, from, bytes, kind);
            }
            35..=49 => {
                let (frames, extra) = (self.rng.range(0, 20), self.rng.range(0, 40) as u32);
                self.net.cut_after_frames(i, from, frames, extra, kind);
            }
            50..=57 => self.net.close_link(i, from),
            58..=65 if self.plan.half_open => self.net.blackhole(i, from),
            66..=71 if self.plan.half_open => self.net.vanish(i),
            72..=89 => {
                let until = self.net.now().saturating_add(self.rng.duration(Duration::ZERO, self.plan.stall_max));
                if self.rng.chance(300) {
                    self.net.stall_all(until);
                } else {
                    self.net.stall(i, from, until);
                }
            }
            _ => {
                self.net.kill(i);
            }
        }
    }
}
