//! Faults and test hooks on a [`Sim`]: kill or truncate the current link at any byte offset,
//! close it cleanly, blackhole or stall one direction, tap frames as they are written, inject
//! hand-crafted messages, write raw bytes, restart a side, interpose commands.

use sotto_proto::conduit::InputError;
use sotto_proto::wire::LEN_PREFIX;
use sotto_proto::{Instant, LinkId};

use crate::pipe::EndKind;
use crate::sim::{Interposer, Sim, Tap};
use crate::Side;

impl Sim {
    fn current_or_fail(&self) -> usize {
        match self.conn_of_current() {
            Some(c) => c,
            None => self.fail("no current link to apply the fault to"),
        }
    }

    /// Kill the current link now (a reset): both sides hear `link_down` at once and whatever
    /// was in flight is lost. Returns false if there was no link.
    pub fn kill(&mut self) -> bool {
        match self.conn_of_current() {
            Some(c) => {
                self.reset_conn(c);
                true
            }
            None => false,
        }
    }

    /// End the direction written by `from` on the current link after `frames` more whole link
    /// messages (in flight first, then future ones) and `extra` bytes of the next (`extra > 0`
    /// cuts mid-frame). `Reset` kills the link for both sides at that point; `Eof` makes the
    /// reader see EOF there (a truncated link when mid-frame).
    pub fn cut_after_frames(&mut self, from: Side, frames: u64, extra: u32, kind: EndKind) {
        let c = self.current_or_fail();
        self.conns[c].pipes[from.idx()].cut_after_frames(frames, extra, kind, self.now);
    }

    /// End the direction written by `from` on the current link once `bytes` more bytes have
    /// been delivered (counting from what is delivered now), whatever frame boundary that is.
    pub fn cut_after_bytes(&mut self, from: Side, bytes: u64, kind: EndKind) {
        let c = self.current_or_fail();
        let pipe = &mut self.conns[c].pipes[from.idx()];
        let delivered = pipe.delivered_offset();
        pipe.cut_at(delivered + bytes, kind, self.now);
    }

    /// `side` closes the current link cleanly (as if its driver closed the socket): EOF after
    /// what it wrote; its conduit hears `link_down`.
    pub fn close_link(&mut self, side: Side) {
        let c = self.current_or_fail();
        if let Some(link) = self.conns[c].end(side) {
            self.close_end(side, link);
            self.drain(side);
            self.check_invariants();
        }
    }

    /// From now on what `from` writes on the current link vanishes, EOF included: one
    /// direction of a half-open link. In-flight bytes are lost too.
    pub fn blackhole(&mut self, from: Side) {
        let c = self.current_or_fail();
        self.conns[c].pipes[from.idx()].blackhole();
    }

    /// Pause delivery of what `from` writes on the current link until `until`
    /// (`Instant::FAR_FUTURE` for "until [`unstall`](Self::unstall)").
    pub fn stall(&mut self, from: Side, until: Instant) {
        let c = self.current_or_fail();
        self.conns[c].pipes[from.idx()].stall(until);
    }

    /// Resume delivery of what `from` writes, on every link.
    pub fn unstall(&mut self, from: Side) {
        for c in self.conns.iter_mut().filter(|c| !c.is_free()) {
            c.pipes[from.idx()].unstall();
        }
    }

    /// Faults stop on every open link: stalls end and cuts not yet applied are forgotten.
    /// Blackholed directions stay blackholed (keepalive must find them).
    pub fn heal_links(&mut self) {
        for c in self.conns.iter_mut().filter(|c| !c.is_free()) {
            for p in &mut c.pipes {
                p.heal();
            }
        }
    }

    /// Stall every open link, both directions, until `until`.
    pub fn stall_all(&mut self, until: Instant) {
        for c in self.conns.iter_mut().filter(|c| !c.is_free()) {
            for p in &mut c.pipes {
                p.stall(until);
            }
        }
    }

    /// Whether `from`'s direction of the current link is blackholed.
    #[must_use]
    pub fn is_blackholed(&self, from: Side) -> bool {
        self.conn_of_current().is_some_and(|c| self.conns[c].pipes[from.idx()].is_blackholed())
    }

    /// Install a tap on the frames `from` writes (any link).
    pub fn set_tap(&mut self, from: Side, tap: Tap) {
        self.taps[from.idx()] = Some(tap);
    }

    /// Remove `from`'s tap.
    pub fn clear_tap(&mut self, from: Side) {
        self.taps[from.idx()] = None;
    }

    /// Install a hook called before every call into `side`'s conduit.
    pub fn set_interposer(&mut self, side: Side, f: Interposer) {
        self.interposers[side.idx()] = Some(f);
    }

    /// Remove `side`'s interposer.
    pub fn clear_interposer(&mut self, side: Side) {
        self.interposers[side.idx()] = None;
    }

    /// Hand `msg` to `to`'s conduit as if it had arrived whole on its current link; drains and
    /// checks. Returns what `handle_message` said (the item's length when one was delivered).
    pub fn inject(&mut self, to: Side, msg: &[u8]) -> Result<Option<usize>, InputError> {
        match self.peers[to.idx()].conduit.current_link() {
            Some(link) => self.inject_on(to, link, msg),
            None => Err(InputError::StaleLink),
        }
    }

    /// Like [`inject`](Self::inject), on a given (possibly stale) link id.
    pub fn inject_on(&mut self, to: Side, link: LinkId, msg: &[u8]) -> Result<Option<usize>, InputError> {
        let before_errors = self.peers[to.idx()].counters.input_errors;
        let before_delivered = self.peers[to.idx()].delivered;
        self.deliver(to, link, msg);
        let p = &self.peers[to.idx()];
        if p.counters.input_errors > before_errors {
            return Err(p.last_input_error.unwrap_or(InputError::StaleLink));
        }
        Ok((p.delivered > before_delivered).then_some(msg.len()))
    }

    /// Hand `msg` to `to`'s conduit without draining outputs afterwards (to test what piles up
    /// when the driver does not read). Returns what `handle_message` said.
    pub fn inject_undrained(&mut self, to: Side, msg: &[u8]) -> Result<bool, InputError> {
        let now = self.now;
        let p = &mut self.peers[to.idx()];
        let link = p.conduit.current_link().ok_or(InputError::StaleLink)?;
        match p.conduit.handle_message(now, link, msg) {
            Ok(Some(item)) => {
                let ok = p.on_item(item);
                assert!(ok, "I1: injected item did not match");
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write raw bytes (no prefix added) into the current link as if `from` had written them.
    pub fn write_raw(&mut self, from: Side, bytes: &[u8]) {
        let c = self.current_or_fail();
        let latency = self.cfg.latency;
        if self.conns[c].pipes[from.idx()].write(self.now, latency, bytes).is_err() {
            self.fail("I6: raw write overflowed the pipe");
        }
    }

    /// Write one whole link message (prefix added) into the current link as if `from` had
    /// written it.
    pub fn write_message(&mut self, from: Side, msg: &[u8]) {
        let mut buf = Vec::with_capacity(LEN_PREFIX + msg.len());
        buf.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        buf.extend_from_slice(msg);
        self.write_raw(from, &buf);
    }

    /// Restart `side` with a fresh conduit (its links reset). B: a server restart, a new
    /// session number (A's items no longer match). A: a new application session that joins
    /// B's session number; if B has already attached, B is restarted too.
    pub fn restart(&mut self, side: Side) {
        for c in 0..self.conns.len() {
            if !self.conns[c].is_free() && self.conns[c].end(side).is_some() {
                self.reset_conn(c);
            }
        }
        let session = match side {
            Side::B => self.peers[0].session.max(self.peers[1].session) + 1,
            Side::A => {
                if self.peers[1].conduit.has_attached() {
                    self.restart(Side::B);
                }
                self.peers[1].session
            }
        };
        let cfg = if side == Side::A { self.cfg.a } else { self.cfg.b };
        self.peers[side.idx()].restart(cfg, session);
        if side == Side::A {
            self.dialer.cancel();
            self.dialer.attached();
            self.dialer.dial_now();
        }
        self.check_invariants();
    }
}
