//! Time in a [`Net`]: the next instant anything is due (session and endpoint timers, link
//! deliveries, dialers), processing an instant (timers, then links, then dialers), reading
//! links into their decoders, and the clients' dialers opening links.

use sotto_proto::endpoint::LinkRefusal;
use sotto_proto::wire::Message;
use sotto_proto::{Duration, Instant, ResumeKey};

use super::link::{ClientEnd, ServerEnd, CLIENT, SERVER};
use super::Net;
use crate::dialer::{DialOutcome, DialState};
use crate::pipe::EndKind;

/// How many times the loop may find work at one instant before it calls it a livelock.
const MAX_ITERATIONS_PER_INSTANT: u64 = 200_000;

impl Net {
    /// The next instant anything is due, if anything is.
    #[must_use]
    pub fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for c in &self.clients {
            take(c.session.poll_timeout());
            take(c.dialer.next_due());
        }
        take(self.endpoint.poll_timeout());
        for s in &self.servers {
            if let Some(h) = s.handle {
                take(self.endpoint.session(h).and_then(sotto_proto::session::Session::poll_timeout));
            }
        }
        for l in self.links.iter().filter(|l| !l.is_free()) {
            for p in &l.pipes {
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
    pub fn run_for(&mut self, d: Duration) {
        self.advance_to(self.now.saturating_add(d));
    }

    /// Run event by event until `pred` holds (true) or `limit` of simulated time has passed
    /// (false; the clock is then at the limit).
    pub fn run_until(&mut self, limit: Duration, pred: impl FnMut(&Self) -> bool) -> bool {
        crate::clock::run_until(self, limit, pred)
    }

    /// One instant's work: timers, deliveries, dialers.
    pub(crate) fn process_due(&mut self) {
        if self.now == self.last_instant {
            self.iterations_here += 1;
            if self.iterations_here > MAX_ITERATIONS_PER_INSTANT {
                self.fail("livelock: work keeps being due at the same instant");
            }
        } else {
            self.last_instant = self.now;
            self.iterations_here = 0;
        }
        let now = self.now;
        for i in 0..self.clients.len() {
            if self.clients[i].session.poll_timeout().is_some_and(|t| t <= now) {
                self.clients[i].session.handle_timeout(now);
                self.stats.inputs += 1;
                self.drain_client(i);
                self.check_invariants();
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
            self.stats.inputs += 1;
            self.drain_endpoint();
            self.check_invariants();
        }
        for idx in 0..self.servers.len() {
            let Some(h) = self.servers[idx].handle else { continue };
            let Some(s) = self.endpoint.session_mut(h) else { continue };
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
                self.stats.inputs += 1;
                self.drain_server(h);
                self.check_invariants();
            }
        }
        for slot in 0..self.links.len() {
            if !self.links[slot].is_free() {
                self.pump_link(slot);
            }
        }
        for i in 0..self.clients.len() {
            self.step_dialer(i);
        }
    }

    fn pump_link(&mut self, slot: usize) {
        let serial = self.links[slot].serial;
        for reader in [SERVER, CLIENT] {
            let w = 1 - reader;
            loop {
                if self.links[slot].serial != serial {
                    return;
                }
                let max = self.pick_chunk();
                let n = self.links[slot].pipes[w].take(self.now, &mut self.chunk[..max]);
                if n == 0 {
                    break;
                }
                if self.links[slot].end_open(reader) {
                    self.feed(slot, reader, n);
                }
            }
            if self.links[slot].serial != serial {
                return;
            }
            match self.links[slot].pipes[w].end_reached(self.now) {
                None => {}
                Some(EndKind::Reset) => {
                    self.reset_link(slot);
                    return;
                }
                Some(EndKind::Eof) => {
                    let l = &mut self.links[slot];
                    if reader == CLIENT && l.client == ClientEnd::Raw {
                        l.raw_eof = true;
                        l.pipes[w].reader_gone();
                        if l.raw_auto_close {
                            self.close_end(slot, CLIENT);
                        }
                    } else if l.end_open(reader) {
                        self.close_and_drain(slot, reader);
                    } else {
                        l.pipes[w].reader_gone();
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

    /// Feed `n` bytes of `self.chunk` to the reader at end `reader` of `slot`.
    fn feed(&mut self, slot: usize, reader: usize, n: usize) {
        let serial = self.links[slot].serial;
        if reader == CLIENT && self.links[slot].client == ClientEnd::Raw {
            let chunk = core::mem::take(&mut self.chunk);
            self.links[slot].record_raw(&chunk[..n]);
            self.chunk = chunk;
            return;
        }
        let Some(mut dec) = self.links[slot].decoders[reader].take() else {
            self.fail("decoder in use re-entrantly");
        };
        let chunk = core::mem::take(&mut self.chunk);
        let mut input = &chunk[..n];
        while !input.is_empty() {
            let l = &self.links[slot];
            if l.serial != serial || !l.end_open(reader) {
                break;
            }
            let client = l.client;
            let msg = match dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => m,
                Ok(Some(Message::Reassembled)) => dec.reassembled(),
                Ok(None) => break,
                Err(_) => {
                    // The driver's answer to a bad length prefix: the link is unusable.
                    if reader == SERVER {
                        self.server_counters.framing_errors += 1;
                    } else if let ClientEnd::Session(i, _) = client {
                        self.clients[i].counters.framing_errors += 1;
                    }
                    self.close_and_drain(slot, reader);
                    break;
                }
            };
            if reader == SERVER {
                self.deliver_server(slot, msg);
            } else if let ClientEnd::Session(i, link) = client {
                self.deliver_client(i, link, msg);
            }
        }
        self.chunk = chunk;
        let l = &mut self.links[slot];
        if l.serial != serial || !l.end_open(reader) {
            dec.reset();
        }
        l.decoders[reader] = Some(dec);
    }

    /// Start a backoff for every client that needs a link.
    pub(crate) fn poke_dialers(&mut self) {
        for i in 0..self.clients.len() {
            self.poke_dialer(i);
        }
    }

    fn poke_dialer(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if !c.session.is_ended() && c.link.is_none() {
            c.dialer.need_link(self.now, &mut self.rng);
        }
    }

    fn step_dialer(&mut self, i: usize) {
        self.poke_dialer(i);
        let now = self.now;
        match self.clients[i].dialer.state {
            DialState::Waiting(at) if at <= now => {
                self.clients[i].dialer.start(now, &mut self.rng);
            }
            DialState::Connecting(at, outcome) if at <= now => {
                let c = &mut self.clients[i];
                c.dialer.state = DialState::Idle;
                if c.session.is_ended() || c.link.is_some() {
                    return;
                }
                match outcome {
                    DialOutcome::Connect | DialOutcome::Delay(_) => self.open_link(i, true),
                    DialOutcome::Drop => self.open_link(i, false),
                    DialOutcome::Fail => {}
                }
                self.poke_dialer(i);
            }
            _ => {}
        }
    }

    pub(crate) fn free_slot(&self) -> usize {
        match self.links.iter().position(super::link::NetLink::is_free) {
            Some(s) => s,
            None => self.fail("harness: out of link slots (links are not being closed)"),
        }
    }

    /// A new link from client `i`: the endpoint takes it (unless `accept` is false: a link to
    /// nowhere, or the endpoint refuses it: closed unread) and the client attaches.
    pub(crate) fn open_link(&mut self, i: usize, accept: bool) {
        let slot = self.free_slot();
        let serial = self.next_serial;
        self.next_serial += 1;
        self.stats.links_opened += 1;
        let source = self.clients[i].source;
        self.links[slot].open(serial, source);
        if accept {
            match self.endpoint.accept_link(self.now, source) {
                Ok(p) => self.links[slot].server = ServerEnd::Pending(p),
                Err(_) => self.refuse_unread(slot),
            }
        } else {
            for p in &mut self.links[slot].pipes {
                p.blackhole();
            }
        }
        let link = self.clients[i].session.link_up(self.now, ResumeKey::ZERO);
        self.stats.inputs += 1;
        self.links[slot].client = ClientEnd::Session(i, link);
        self.clients[i].link = Some((slot, link));
        self.drain_client(i);
        self.check_invariants();
    }

    /// The endpoint refused the link in `slot` before reading it: it closes its end at once.
    pub(crate) fn refuse_unread(&mut self, slot: usize) {
        self.server_counters.refused += 1;
        let (now, latency) = (self.now, self.cfg.latency);
        let l = &mut self.links[slot];
        l.pipes[SERVER].close_write(now, latency);
        l.pipes[CLIENT].reader_gone();
    }

    /// Why the endpoint would refuse a link from `source` now, if it would (consumes a
    /// pending slot when it would not: used by raw links).
    pub(crate) fn accept_raw(&mut self, slot: usize, source: u64) -> Result<(), LinkRefusal> {
        let p = self.endpoint.accept_link(self.now, source)?;
        self.links[slot].server = ServerEnd::Pending(p);
        Ok(())
    }
}

impl crate::clock::VirtualClock for Net {
    fn now(&self) -> Instant {
        self.now
    }
    fn set_now(&mut self, t: Instant) {
        self.now = t;
    }
    fn next_time(&self) -> Option<Instant> {
        Net::next_time(self)
    }
    fn process_due(&mut self) {
        Net::process_due(self);
    }
    fn poke(&mut self) {
        self.poke_dialers();
    }
}
