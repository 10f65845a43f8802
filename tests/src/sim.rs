//! The simulation: two conduits (A initiator, B acceptor), a virtual clock, the links between
//! them, and the driver loop the contract asks for. After every input or command the harness
//! drains `poll_transmit`, then `poll_event` (closing the link on `DropLink`), until both are
//! dry; time then jumps to the earliest of both `poll_timeout`s, the next link delivery and
//! the dialer's next move. Invariants are checked after every input.

use sotto_proto::wire::{Message, LEN_PREFIX};
use sotto_proto::{Event, Instant, LinkId};

use crate::config::SimConfig;
use crate::conn::Conn;
use crate::dialer::{DialOutcome, DialState, Dialer};
use crate::peer::Peer;
use crate::pipe::EndKind;
use crate::rng::SimRng;
use crate::Side;

/// Rewrites or drops frames as a side writes them: gets the link's serial number and the frame
/// (without prefix); return `false` to drop it. Test hook; may allocate.
pub type Tap = Box<dyn FnMut(u64, &mut Vec<u8>) -> bool>;

/// Called before every call the harness makes into that side's conduit (test hook for
/// commands racing the driver, e.g. a `send` at every point of a resume). Returns whether it
/// issued a command; the harness then drains that side again, as a driver would.
pub type Interposer = Box<dyn FnMut(&mut Peer) -> bool>;

/// How many times the loop may find work at one instant before it calls it a livelock.
const MAX_ITERATIONS_PER_INSTANT: u64 = 100_000;

/// Counters about the simulation itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Distinct instants processed.
    pub instants: u64,
    /// Inputs fed to the conduits (messages, timeouts, link changes).
    pub inputs: u64,
    /// Links opened (dial successes and drops).
    pub links_opened: u64,
    /// Links reset (killed) by a fault.
    pub resets: u64,
    /// Most bytes ever in flight in one pipe.
    pub max_pipe_bytes: usize,
    /// Most frames written in one drain.
    pub max_frames_per_drain: u64,
}

/// A deterministic two-peer simulation.
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) now: Instant,
    pub(crate) rng: SimRng,
    pub(crate) peers: [Peer; 2],
    pub(crate) conns: Vec<Conn>,
    pub(crate) next_serial: u64,
    /// The initiator's link source.
    pub dialer: Dialer,
    pub(crate) chunk: Vec<u8>,
    pub(crate) frame_buf: Vec<u8>,
    pub(crate) taps: [Option<Tap>; 2],
    pub(crate) interposers: [Option<Interposer>; 2],
    /// An interposer issued a command that no drain has followed yet.
    commanded: [bool; 2],
    /// Counters about the run.
    pub stats: SimStats,
    last_instant: Instant,
    iterations_here: u64,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim").field("now", &self.now).field("seed", &self.cfg.seed).finish_non_exhaustive()
    }
}

impl Sim {
    /// Build a simulation; allocates everything it will ever use. A dials at once.
    #[must_use]
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SimRng::new(cfg.seed);
        let harness_rng = rng.fork(1);
        let max_frame = cfg.a.max_frame_len.max(cfg.b.max_frame_len) as usize;
        let conns = (0..cfg.conn_slots)
            .map(|_| Conn::new(cfg.pipe_bytes(), cfg.pipe_frames(), cfg.a.max_frame_len, cfg.b.max_frame_len))
            .collect();
        // Both generators of a direction must agree: clamp to what both conduits carry.
        let item_max = cfg.item_max.min(cfg.a.max_item_len()).min(cfg.b.max_item_len());
        Self {
            peers: [
                Peer::new(Side::A, cfg.a, 1, cfg.item_min, item_max),
                Peer::new(Side::B, cfg.b, 1, cfg.item_min, item_max),
            ],
            conns,
            next_serial: 1,
            dialer: Dialer::new(cfg.dial),
            chunk: vec![0; cfg.pipe_bytes().max(8)],
            frame_buf: Vec::with_capacity(max_frame + LEN_PREFIX),
            taps: [None, None],
            interposers: [None, None],
            commanded: [false, false],
            stats: SimStats::default(),
            now: Instant::ZERO,
            rng: harness_rng,
            cfg,
            last_instant: Instant::ZERO,
            iterations_here: 0,
        }
    }

    /// A simulation run until both sides are attached (panics if they do not within 60 s).
    #[must_use]
    pub fn connected(cfg: SimConfig) -> Self {
        let mut sim = Self::new(cfg);
        let ok = sim.run_until(sotto_proto::Duration::from_secs(60), Self::established);
        assert!(ok, "the first handshake did not finish");
        sim
    }

    // ---- getters ----

    /// The virtual clock.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }
    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    /// One side.
    #[must_use]
    pub fn peer(&self, side: Side) -> &Peer {
        &self.peers[side.idx()]
    }
    /// One side, mutably. After a command on its conduit call [`drain`](Self::drain).
    pub fn peer_mut(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.idx()]
    }
    /// The harness's random source (keys, chunking, dial outcomes).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }
    /// Whether both sides have an established link.
    #[must_use]
    pub fn established(&self) -> bool {
        self.peers.iter().all(|p| p.conduit.is_established())
    }
    /// Whether everything each side sent has been delivered to the other.
    #[must_use]
    pub fn all_delivered(&self) -> bool {
        let [a, b] = &self.peers;
        a.delivered == b.sent && b.delivered == a.sent
    }
    /// Whether everything each side sent has also been acked (the replay rings are empty).
    #[must_use]
    pub fn all_acked(&self) -> bool {
        self.all_delivered() && self.peers.iter().all(|p| p.conduit.unacked() == 0)
    }
    /// The serial number of the link A's current link id belongs to, if any.
    #[must_use]
    pub fn current_serial(&self) -> Option<u64> {
        self.conn_of_current().map(|c| self.conns[c].serial)
    }
    /// Bytes in flight from `from` on the current link.
    #[must_use]
    pub fn in_flight(&self, from: Side) -> usize {
        self.conn_of_current().map_or(0, |c| self.conns[c].pipes[from.idx()].in_flight())
    }

    // ---- application commands ----

    /// `from`'s application sends up to `n` items (stopping at the first refusal), draining
    /// after each. Returns how many were accepted.
    pub fn send(&mut self, from: Side, n: usize) -> usize {
        let mut accepted = 0;
        for _ in 0..n {
            self.interpose(from);
            let r = self.peers[from.idx()].send_next();
            self.stats.inputs += 1;
            self.drain(from);
            self.check_invariants();
            if r.is_err() {
                break;
            }
            accepted += 1;
        }
        accepted
    }

    /// `from`'s application sends one item (drained and checked). Returns its seq or the refusal.
    pub fn send_one(&mut self, from: Side) -> Result<u64, sotto_proto::conduit::SendError> {
        self.interpose(from);
        let r = self.peers[from.idx()].send_next();
        self.stats.inputs += 1;
        self.drain(from);
        self.check_invariants();
        r
    }

    // ---- running ----

    /// The next instant anything is due, if anything is.
    #[must_use]
    pub fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for p in &self.peers {
            take(p.conduit.poll_timeout());
        }
        take(self.dialer.next_due());
        for c in self.conns.iter().filter(|c| !c.is_free()) {
            for p in &c.pipes {
                take(p.next_due());
            }
        }
        t
    }

    /// Process everything due up to `t`, in time order, then set the clock to `t`.
    pub fn advance_to(&mut self, t: Instant) {
        crate::clock::advance_to(self, t);
    }

    /// [`advance_to`](Self::advance_to) `now + d`.
    pub fn run_for(&mut self, d: sotto_proto::Duration) {
        self.advance_to(self.now.saturating_add(d));
    }

    /// Run event by event until `pred` holds (returns true) or `limit` of simulated time has
    /// passed (returns false; the clock is then at the limit).
    pub fn run_until(&mut self, limit: sotto_proto::Duration, pred: impl FnMut(&Self) -> bool) -> bool {
        crate::clock::run_until(self, limit, pred)
    }

    /// One instant's work: timers, deliveries, the dialer.
    pub(crate) fn process_due(&mut self) {
        if self.now == self.last_instant {
            self.iterations_here += 1;
            if self.iterations_here > MAX_ITERATIONS_PER_INSTANT {
                let [a, b] = &self.peers;
                self.fail_fmt(format_args!(
                    "livelock: work keeps being due at the same instant: timers A {:?} B {:?}, dialer {:?}, pipes {:?}",
                    a.conduit.poll_timeout(),
                    b.conduit.poll_timeout(),
                    self.dialer.state(),
                    self.conns
                        .iter()
                        .filter(|c| !c.is_free())
                        .map(|c| format!("{:?} {} {}", c.ends, c.pipes[0].describe(), c.pipes[1].describe()))
                        .collect::<Vec<_>>()
                ));
            }
        } else {
            self.last_instant = self.now;
            self.iterations_here = 0;
            self.stats.instants += 1;
        }
        for side in [Side::A, Side::B] {
            let i = side.idx();
            if self.peers[i].conduit.poll_timeout().is_some_and(|t| t <= self.now) {
                self.interpose(side);
                self.peers[i].conduit.handle_timeout(self.now);
                self.stats.inputs += 1;
                self.drain(side);
                self.check_invariants();
            }
        }
        for c in 0..self.conns.len() {
            if !self.conns[c].is_free() {
                self.pump_conn(c);
            }
        }
        self.step_dialer();
    }

    fn pump_conn(&mut self, c: usize) {
        let serial = self.conns[c].serial;
        for reader in [Side::B, Side::A] {
            let w = reader.other().idx();
            loop {
                if self.conns[c].serial != serial {
                    return;
                }
                let max = self.pick_chunk();
                let n = self.conns[c].pipes[w].take(self.now, &mut self.chunk[..max]);
                if n == 0 {
                    break;
                }
                if self.conns[c].ends[reader.idx()].is_some() {
                    self.feed(c, reader, n);
                }
            }
            if self.conns[c].serial != serial {
                return;
            }
            match self.conns[c].pipes[w].end_reached(self.now) {
                None => {}
                Some(EndKind::Reset) => {
                    self.reset_conn(c);
                    return;
                }
                Some(EndKind::Eof) => {
                    if let Some(link) = self.conns[c].ends[reader.idx()] {
                        let clean = self.conns[c].decoders[reader.idx()].as_ref().is_none_or(|d| d.finish().is_ok());
                        let counters = &mut self.peers[reader.idx()].counters;
                        if clean {
                            counters.clean_eofs += 1;
                        } else {
                            counters.truncated_eofs += 1;
                        }
                        self.close_end(reader, link);
                        self.drain(reader);
                        self.check_invariants();
                    } else {
                        self.conns[c].pipes[w].reader_gone();
                    }
                }
            }
        }
    }

    fn pick_chunk(&mut self) -> usize {
        let all = self.chunk.len();
        if self.cfg.tiny_chunk_per_mille > 0 && self.rng.chance(self.cfg.tiny_chunk_per_mille) {
            return self.rng.range(1, 7) as usize;
        }
        if self.cfg.chunk_max == 0 {
            all
        } else {
            self.rng.range(1, self.cfg.chunk_max as u64) as usize
        }
    }

    /// Feed `n` bytes of `self.chunk` to `reader`'s decoder on connection `c`.
    fn feed(&mut self, c: usize, reader: Side, n: usize) {
        let r = reader.idx();
        let serial = self.conns[c].serial;
        let Some(mut dec) = self.conns[c].decoders[r].take() else {
            self.fail("decoder in use re-entrantly");
        };
        let chunk = core::mem::take(&mut self.chunk);
        let mut input = &chunk[..n];
        while !input.is_empty() {
            let Some(link) = self.conns[c].ends[r].filter(|_| self.conns[c].serial == serial) else { break };
            match dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => self.deliver(reader, link, m),
                Ok(Some(Message::Reassembled)) => self.deliver(reader, link, dec.reassembled()),
                Ok(None) => break,
                Err(_) => {
                    // The driver's answer to a bad length prefix: the link is unusable.
                    self.peers[r].counters.framing_errors += 1;
                    self.close_end(reader, link);
                    self.drain(reader);
                    self.check_invariants();
                    break;
                }
            }
        }
        self.chunk = chunk;
        if self.conns[c].serial != serial || self.conns[c].ends[r].is_none() {
            dec.reset();
        }
        self.conns[c].decoders[r] = Some(dec);
    }

    /// Hand one link message to `to`'s conduit, then drain and check.
    pub(crate) fn deliver(&mut self, to: Side, link: LinkId, msg: &[u8]) {
        self.interpose(to);
        let now = self.now;
        let peer = &mut self.peers[to.idx()];
        self.stats.inputs += 1;
        match peer.conduit.handle_message(now, link, msg) {
            Ok(Some(item)) => {
                if !peer.on_item(item) {
                    let seq = peer.delivered - 1;
                    let gen = peer.in_items;
                    let looks_like = item
                        .get(..8)
                        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) ^ gen.salt);
                    self.fail_fmt(format_args!(
                        "I1: {to:?} was delivered a wrong item at position {seq}: {} bytes (want {}), \
                         looks like seq {looks_like:?} of this direction\n  got  {item:?}\n  want {:?}",
                        item.len(),
                        gen.len(seq),
                        {
                            let mut want = vec![0u8; gen.len(seq)];
                            gen.fill(seq, &mut want);
                            want
                        }
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => {
                peer.counters.input_errors += 1;
                peer.last_input_error = Some(e);
            }
        }
        self.drain(to);
        self.check_invariants();
    }

    /// Drain `side`'s outputs: every frame, then every event, until both are dry.
    pub fn drain(&mut self, side: Side) {
        let i = side.idx();
        let mut frames: u64 = 0;
        let bound = u64::from(self.peers[i].conduit.config().replay_frames) + 64;
        loop {
            let mut progressed = false;
            loop {
                self.interpose(side);
                let now = self.now;
                let peer = &mut self.peers[i];
                let Some(t) = peer.conduit.poll_transmit(now, &mut peer.tx[LEN_PREFIX..]) else { break };
                progressed = true;
                frames += 1;
                peer.counters.frames_out += 1;
                if frames > bound {
                    self.fail("I6: one drain produced more frames than the replay ring holds (unbounded output)");
                }
                self.write_frame(side, t.link, t.len);
            }
            loop {
                self.interpose(side);
                let Some(e) = self.peers[i].conduit.poll_event() else { break };
                progressed = true;
                self.on_event(side, e);
            }
            if !progressed && !core::mem::take(&mut self.commanded[i]) {
                break;
            }
        }
        self.stats.max_frames_per_drain = self.stats.max_frames_per_drain.max(frames);
    }

    fn conn_of(&self, side: Side, link: LinkId) -> Option<usize> {
        self.conns.iter().position(|c| !c.is_free() && c.end(side) == Some(link))
    }

    /// The slot of A's current link (falling back to B's).
    pub(crate) fn conn_of_current(&self) -> Option<usize> {
        for side in [Side::A, Side::B] {
            if let Some(link) = self.peers[side.idx()].conduit.current_link() {
                if let Some(c) = self.conn_of(side, link) {
                    return Some(c);
                }
            }
        }
        None
    }

    fn write_frame(&mut self, from: Side, link: LinkId, len: usize) {
        let i = from.idx();
        let Some(c) = self.conn_of(from, link) else {
            self.fail_fmt(format_args!("I5: {from:?} transmitted on {link:?}, which is not an open link"));
        };
        let latency = self.cfg.latency;
        let now = self.now;
        let r = if let Some(tap) = self.taps[i].as_mut() {
            self.frame_buf.clear();
            self.frame_buf.extend_from_slice(&self.peers[i].tx[LEN_PREFIX..LEN_PREFIX + len]);
            if !tap(self.conns[c].serial, &mut self.frame_buf) {
                return;
            }
            let n = self.frame_buf.len() as u32;
            self.frame_buf.splice(0..0, n.to_le_bytes());
            self.conns[c].pipes[i].write(now, latency, &self.frame_buf)
        } else {
            let tx = &mut self.peers[i].tx;
            tx[..LEN_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
            self.conns[c].pipes[i].write(now, latency, &tx[..LEN_PREFIX + len])
        };
        if r.is_err() {
            self.fail("I6: a link pipe overflowed (more in flight than a conduit may have)");
        }
        let inflight = self.conns[c].pipes[i].in_flight();
        self.stats.max_pipe_bytes = self.stats.max_pipe_bytes.max(inflight);
    }

    fn on_event(&mut self, side: Side, e: Event) {
        let now = self.now;
        self.peers[side.idx()].on_event(now, e);
        match e {
            Event::DropLink { link, .. } => self.close_end(side, link),
            Event::Attached { .. } if side == Side::A => self.dialer.attached(),
            Event::Ended(_) if side == Side::A => self.dialer.cancel(),
            _ => {}
        }
    }

    /// `side` closes its end of `link` (after writing everything): FIN to the peer, and the
    /// conduit hears `link_down`. The caller drains.
    pub(crate) fn close_end(&mut self, side: Side, link: LinkId) {
        let i = side.idx();
        if let Some(c) = self.conn_of(side, link) {
            let latency = self.cfg.latency;
            let conn = &mut self.conns[c];
            conn.ends[i] = None;
            conn.pipes[i].close_write(self.now, latency);
            conn.pipes[side.other().idx()].reader_gone();
            if let Some(d) = conn.decoders[i].as_mut() {
                d.reset();
            }
            conn.free_if_closed();
        }
        self.interpose(side);
        self.peers[i].conduit.link_down(self.now, link);
        self.stats.inputs += 1;
    }

    /// The connection dies at once for both sides (a reset): both conduits hear `link_down`.
    pub(crate) fn reset_conn(&mut self, c: usize) {
        self.stats.resets += 1;
        let ends = self.conns[c].ends;
        self.conns[c].ends = [None, None];
        self.conns[c].free_if_closed();
        for side in [Side::A, Side::B] {
            if let Some(link) = ends[side.idx()] {
                self.interpose(side);
                self.peers[side.idx()].conduit.link_down(self.now, link);
                self.stats.inputs += 1;
            }
        }
        for side in [Side::A, Side::B] {
            if ends[side.idx()].is_some() {
                self.drain(side);
            }
        }
        self.check_invariants();
    }

    /// Open a new link: B accepts (unless `accept` is false: a link to nowhere) and A
    /// attaches.
    pub(crate) fn open_conn(&mut self, accept: bool) {
        let Some(c) = self.conns.iter().position(Conn::is_free) else {
            self.fail("harness: out of connection slots (links are not being closed)");
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        self.stats.links_opened += 1;
        self.conns[c].open(serial, self.now);
        if accept {
            let key = self.rng.key();
            self.interpose(Side::B);
            let lb = self.peers[1].conduit.link_up(self.now, key);
            self.stats.inputs += 1;
            self.conns[c].ends[1] = Some(lb);
            self.drain(Side::B);
        } else {
            for p in &mut self.conns[c].pipes {
                p.blackhole();
            }
        }
        if self.conns[c].serial == serial {
            self.interpose(Side::A);
            let la = self.peers[0].conduit.link_up(self.now, sotto_proto::ResumeKey::ZERO);
            self.stats.inputs += 1;
            self.conns[c].ends[0] = Some(la);
            self.drain(Side::A);
        }
        self.check_invariants();
    }

    /// Start a backoff if A needs a link.
    fn poke_dialer(&mut self) {
        let a = &self.peers[0].conduit;
        if !a.is_ended() && a.current_link().is_none() {
            self.dialer.need_link(self.now, &mut self.rng);
        }
    }

    fn step_dialer(&mut self) {
        self.poke_dialer();
        match self.dialer.state {
            DialState::Waiting(at) if at <= self.now => {
                self.dialer.start(self.now, &mut self.rng);
            }
            DialState::Connecting(at, outcome) if at <= self.now => {
                self.dialer.state = DialState::Idle;
                if self.peers[0].conduit.is_ended() || self.peers[0].conduit.current_link().is_some() {
                    return;
                }
                match outcome {
                    DialOutcome::Connect | DialOutcome::Delay(_) => self.open_conn(true),
                    DialOutcome::Drop => self.open_conn(false),
                    DialOutcome::Fail => {}
                }
                self.poke_dialer();
            }
            _ => {}
        }
    }

    pub(crate) fn interpose(&mut self, side: Side) {
        if let Some(f) = self.interposers[side.idx()].as_mut() {
            self.commanded[side.idx()] |= f(&mut self.peers[side.idx()]);
        }
    }

    /// Fail the run with `msg`, the time, the seed and how to reproduce it.
    pub fn fail(&self, msg: &str) -> ! {
        self.fail_fmt(format_args!("{msg}"))
    }

    /// [`fail`](Self::fail) with a formatted message.
    pub fn fail_fmt(&self, msg: core::fmt::Arguments<'_>) -> ! {
        let [a, b] = &self.peers;
        panic!(
            "{msg}\n  at t={} ns; seed {}; reproduce: {}\n  A: sent {} delivered {} acked {} ended {:?}\n  B: sent {} delivered {} acked {} ended {:?}",
            self.now.as_nanos(),
            self.cfg.seed,
            self.cfg.repro,
            a.sent,
            a.delivered,
            a.conduit.items_acked(),
            a.conduit.ended(),
            b.sent,
            b.delivered,
            b.conduit.items_acked(),
            b.conduit.ended(),
        )
    }
}

impl crate::clock::VirtualClock for Sim {
    fn now(&self) -> Instant {
        self.now
    }
    fn set_now(&mut self, t: Instant) {
        self.now = t;
    }
    fn next_time(&self) -> Option<Instant> {
        Sim::next_time(self)
    }
    fn process_due(&mut self) {
        Sim::process_due(self);
    }
    fn poke(&mut self) {
        self.poke_dialer();
    }
}
