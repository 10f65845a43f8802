//! Faults and hooks on a [`Net`]: kill or truncate a client's link at any byte offset, close
//! one end cleanly, blackhole or stall a direction, make a link vanish for the client only
//! (half-open towards the endpoint), tap frames, restart or swap the endpoint.

use sotto_proto::endpoint::Hosted;
use sotto_proto::Instant;

use super::link::{CLIENT, SERVER};
use super::Net;
use crate::pipe::EndKind;
use crate::sim::Tap;

/// A direction of a link, named by its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// What the client writes.
    Client,
    /// What the endpoint writes.
    Server,
}

impl Writer {
    fn idx(self) -> usize {
        match self {
            Self::Client => CLIENT,
            Self::Server => SERVER,
        }
    }
}

impl Net {
    fn link_of(&self, i: usize) -> usize {
        match self.clients[i].link {
            Some((slot, _)) => slot,
            None => self.fail_fmt(format_args!("client {i} has no link to apply the fault to")),
        }
    }

    /// Reset client `i`'s link now: both ends hear it at once, what was in flight is lost.
    /// Returns false if it had no link.
    pub fn kill(&mut self, i: usize) -> bool {
        match self.clients[i].link {
            Some((slot, _)) => {
                self.reset_link(slot);
                true
            }
            None => false,
        }
    }

    /// End the direction `from` of client `i`'s link once `bytes` more bytes have been
    /// delivered, whatever frame boundary that is (`Reset`: both ends hear it; `Eof`: the
    /// reader sees end of stream there).
    pub fn cut_after_bytes(&mut self, i: usize, from: Writer, bytes: u64, kind: EndKind) {
        let slot = self.link_of(i);
        let now = self.now;
        let pipe = &mut self.links[slot].pipes[from.idx()];
        let delivered = pipe.delivered_offset();
        pipe.cut_at(delivered + bytes, kind, now);
    }

    /// End the direction `from` of client `i`'s link after `frames` more whole link messages
    /// and `extra` bytes of the next (`extra > 0` cuts mid-frame).
    pub fn cut_after_frames(&mut self, i: usize, from: Writer, frames: u64, extra: u32, kind: EndKind) {
        let slot = self.link_of(i);
        let now = self.now;
        self.links[slot].pipes[from.idx()].cut_after_frames(frames, extra, kind, now);
    }

    /// The writer of `from` closes client `i`'s link cleanly (EOF after what it wrote).
    pub fn close_link(&mut self, i: usize, from: Writer) {
        let slot = self.link_of(i);
        self.close_and_drain(slot, from.idx());
    }

    /// Writer now on what `from` writes on client `i`'s link vanishes, EOF included.
    pub fn blackhole(&mut self, i: usize, from: Writer) {
        let slot = self.link_of(i);
        self.links[slot].pipes[from.idx()].blackhole();
    }

    /// Pause delivery of what `from` writes on client `i`'s link until `until`.
    pub fn stall(&mut self, i: usize, from: Writer, until: Instant) {
        let slot = self.link_of(i);
        self.links[slot].pipes[from.idx()].stall(until);
    }

    /// Stall every open link, both directions, until `until`.
    pub fn stall_all(&mut self, until: Instant) {
        for l in self.links.iter_mut().filter(|l| !l.is_free()) {
            for p in &mut l.pipes {
                p.stall(until);
            }
        }
    }

    /// Faults stop on every open link: stalls end, cuts not yet applied are forgotten
    /// (blackholed directions stay: keepalive must find them).
    pub fn heal_links(&mut self) {
        for l in self.links.iter_mut().filter(|l| !l.is_free()) {
            for p in &mut l.pipes {
                p.heal();
            }
        }
    }

    /// Client `i` loses its link without the endpoint noticing (half-open: both directions
    /// blackholed, the endpoint's end stays open and never hears EOF). The client hears
    /// `link_down` and will redial.
    pub fn vanish(&mut self, i: usize) {
        let slot = self.link_of(i);
        for p in &mut self.links[slot].pipes {
            p.blackhole();
        }
        self.close_and_drain(slot, CLIENT);
    }

    /// Write raw bytes (no prefix added) into client `i`'s link as if `from` had written them.
    pub fn write_raw(&mut self, i: usize, from: Writer, bytes: &[u8]) {
        let slot = self.link_of(i);
        let (now, latency) = (self.now, self.cfg.latency);
        if self.links[slot].pipes[from.idx()].write(now, latency, bytes).is_err() {
            self.fail("I6: raw write overflowed the pipe");
        }
    }

    /// Bytes in flight in direction `from` of client `i`'s link (0 without a link).
    #[must_use]
    pub fn in_flight(&self, i: usize, from: Writer) -> usize {
        self.clients[i].link.map_or(0, |(slot, _)| self.links[slot].pipes[from.idx()].in_flight())
    }

    /// Install a tap on the frames written from `from` (every link).
    pub fn set_tap(&mut self, from: Writer, tap: Tap) {
        self.taps[from.idx()] = Some(tap);
    }

    /// Remove the tap on `from`.
    pub fn clear_tap(&mut self, from: Writer) {
        self.taps[from.idx()] = None;
    }

    /// Replace the endpoint with `other` (a different acceptor instance: a restart, or another
    /// server behind the same address; same `max_sessions`). Every link to the old one is
    /// reset first; the old one is returned with its sessions as they were. The other's live
    /// sessions are adopted, bound to no client.
    pub fn swap_endpoint(&mut self, other: Hosted) -> Hosted {
        for slot in 0..self.links.len() {
            if !self.links[slot].is_free() {
                self.reset_link(slot);
            }
        }
        for s in &mut self.servers {
            s.handle = None;
            s.client = None;
        }
        for c in &mut self.clients {
            c.server = None;
        }
        let old = core::mem::replace(&mut self.endpoint, other);
        // The other instance's own sessions: known to the harness, bound to no client.
        let live: Vec<_> = self.endpoint.handles().collect();
        for h in live {
            let s = &mut self.servers[h.index as usize];
            s.handle = Some(h);
            s.announced = false;
            s.app.reset(u64::MAX - u64::from(h.index));
        }
        self.check_invariants();
        old
    }

    /// Restart the endpoint: a fresh instance with the same configuration (every session and
    /// key forgotten).
    pub fn restart_endpoint(&mut self) {
        let fresh = Hosted::new(self.cfg.endpoint, b"server").expect("valid endpoint config");
        drop(self.swap_endpoint(fresh));
    }
}
