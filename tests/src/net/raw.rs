//! Raw test connections to the endpoint of a [`Net`]: no session behind them; the test writes
//! bytes (silent floods, hand-written or stolen hellos, hostile frames) and reads what came
//! back. They go through the same `accept_link` / `route` path as the clients' links.

use sotto_proto::endpoint::{LinkRefusal, SessionHandle};
use sotto_proto::wire::LEN_PREFIX;
use sotto_proto::LinkId;

use super::link::{ClientEnd, ServerEnd, CLIENT};
use super::Net;

/// A raw test connection (its link serial).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLink {
    serial: u64,
}

impl Net {
    fn raw_slot(&self, raw: RawLink) -> Option<usize> {
        self.links.iter().position(|l| l.serial == raw.serial && l.client == ClientEnd::Raw)
    }

    /// Open a raw connection from `source`. The endpoint takes it as a pending link, or refuses
    /// it at once (then no link is created). With `auto_close` the raw end closes when the
    /// endpoint's end of stream arrives (floods), else it stays for the test to read.
    pub fn open_raw(&mut self, source: u64, auto_close: bool) -> Result<RawLink, LinkRefusal> {
        let slot = self.free_slot();
        let serial = self.next_serial;
        self.links[slot].open(serial, source);
        if let Err(e) = self.accept_raw(slot, source) {
            self.server_counters.refused += 1;
            self.links[slot].free_if_closed();
            return Err(e);
        }
        self.next_serial += 1;
        self.stats.links_opened += 1;
        self.links[slot].client = ClientEnd::Raw;
        self.links[slot].raw_auto_close = auto_close;
        self.check_invariants();
        Ok(RawLink { serial })
    }

    /// Write `bytes` (no prefix added) into the raw connection, as its client would.
    pub fn raw_write(&mut self, raw: RawLink, bytes: &[u8]) {
        let Some(slot) = self.raw_slot(raw) else { self.fail("raw link is closed") };
        let (now, latency) = (self.now, self.cfg.latency);
        if self.links[slot].pipes[CLIENT].write(now, latency, bytes).is_err() {
            self.fail("I6: raw write overflowed the pipe");
        }
    }

    /// Write one whole link message (prefix added) into the raw connection.
    pub fn raw_send(&mut self, raw: RawLink, msg: &[u8]) {
        let mut buf = Vec::with_capacity(LEN_PREFIX + msg.len());
        buf.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        buf.extend_from_slice(msg);
        self.raw_write(raw, &buf);
    }

    /// Every byte the endpoint wrote to the raw connection so far (prefixes included).
    #[must_use]
    pub fn raw_received(&self, raw: RawLink) -> &[u8] {
        self.raw_slot(raw).map_or(&[], |s| self.links[s].raw_rx.as_slice())
    }

    /// Whether the endpoint's end of stream reached the raw connection.
    #[must_use]
    pub fn raw_eof(&self, raw: RawLink) -> bool {
        self.raw_slot(raw).is_some_and(|s| self.links[s].raw_eof)
    }

    /// Where the endpoint's end of the raw connection is bound: `None` while pending or
    /// closed, else the session and its link id.
    #[must_use]
    pub fn raw_session(&self, raw: RawLink) -> Option<(SessionHandle, LinkId)> {
        match self.links[self.raw_slot(raw)?].server {
            ServerEnd::Session(h, l) => Some((h, l)),
            _ => None,
        }
    }

    /// Whether the endpoint still holds the raw connection as pending.
    #[must_use]
    pub fn raw_pending(&self, raw: RawLink) -> bool {
        self.raw_slot(raw).is_some_and(|s| matches!(self.links[s].server, ServerEnd::Pending(_)))
    }

    /// The raw connection's client closes it (EOF to the endpoint).
    pub fn raw_close(&mut self, raw: RawLink) {
        if let Some(slot) = self.raw_slot(raw) {
            self.close_and_drain(slot, CLIENT);
        }
    }

    /// Hand `msg` to the endpoint session `h` as if it had arrived on its link `link` (a stale
    /// one, say), bypassing the pipes; drains and checks. Returns what `handle_message` said
    /// (whether it delivered something).
    pub fn inject_server(
        &mut self,
        h: SessionHandle,
        link: LinkId,
        msg: &[u8],
    ) -> Option<Result<bool, sotto_proto::session::SessionInputError>> {
        let now = self.now;
        let s = self.endpoint.session_mut(h)?;
        let r = s.handle_message(now, link, msg).map(|i| i.is_some());
        self.drain_server(h);
        self.check_invariants();
        Some(r)
    }
}
