//! The transmit path: one frame per `poll_transmit` call, in priority order.

use super::{Conduit, LinkState, Owed, SessionEnd};
use crate::time::Instant;
use crate::timer::Timer;
use crate::wire::{ClientHello, DataHeader, Frame, ServerHello};

/// One frame written by [`Conduit::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// The link to write it to.
    pub link: super::LinkId,
    /// Bytes written at the start of the caller's buffer (the frame, without a length prefix).
    pub len: usize,
}

impl Conduit {
    /// Write the next frame for the current link into `out` (which must hold at least
    /// [`max_transmit_len`](Self::max_transmit_len) bytes) and say where it goes. Call until
    /// `None` after every input. Order: hellos, then a PONG owed, then data (replay first,
    /// then new items, each carrying the latest ack if it moved), then a standalone ACK, then a PING,
    /// then GOODBYE. If `out` is too small for the next frame, returns `None` and loses
    /// nothing.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let now = self.clock.observe(now);
        let link = self.link.id()?;
        let len = match self.link {
            LinkState::None => return None,
            LinkState::AwaitServerHello { id, hello_sent: false } if self.owed == Owed::ClientHello => {
                let hello = ClientHello {
                    resume_key: self.key,
                    last_received: self.our_last_received().filter(|_| self.key.is_some()),
                    ext: self.config.ext,
                };
                let n = put(out, &hello.encode())?;
                self.owed = Owed::Nothing;
                self.link = LinkState::AwaitServerHello { id, hello_sent: true };
                n
            }
            LinkState::AwaitServerHello { .. } | LinkState::AwaitClientHello { .. } => return None,
            LinkState::Dropping { .. } => self.transmit_final(out)?,
            LinkState::Established { ext, .. } => {
                if self.owed == Owed::ServerHello {
                    let hello = ServerHello {
                        rejected: false,
                        resume_key: self.issuing_key,
                        last_received: self.our_last_received(),
                        ext,
                    };
                    let n = put(out, &hello.encode())?;
                    self.owed = Owed::Nothing;
                    n
                } else {
                    self.transmit_established(now, ext, out)?
                }
            }
        };
        Some(Transmit { link, len })
    }

    /// Whether `poll_transmit` would produce a frame now.
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        match self.link {
            LinkState::None | LinkState::AwaitClientHello { .. } => false,
            LinkState::AwaitServerHello { hello_sent, .. } => !hello_sent && self.owed == Owed::ClientHello,
            LinkState::Dropping { .. } => self.owes_final_frame(),
            LinkState::Established { ext, .. } => {
                self.owed == Owed::ServerHello
                    || (ext && (self.pong_owed.is_some() || self.ack_now || self.ping_due))
                    || self.tx_cursor < self.sent
                    || (ext && self.closing.is_some())
            }
        }
    }

    fn transmit_final(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.owed == Owed::Rejected {
            let n = put(out, &ServerHello::rejected().encode())?;
            self.owed = Owed::Nothing;
            return Some(n);
        }
        let goodbye = self.goodbye_owed?;
        let n = Frame::Goodbye { code: goodbye.code, reason: goodbye.text() }.encode(true, out)?;
        self.goodbye_owed = None;
        Some(n)
    }

    fn transmit_established(&mut self, now: Instant, ext: bool, out: &mut [u8]) -> Option<usize> {
        if ext {
            if let Some(nonce) = self.pong_owed {
                let n = Frame::Pong(nonce).encode(true, out)?;
                self.pong_owed = None;
                return Some(n);
            }
        }
        if self.tx_cursor < self.sent {
            return self.transmit_data(ext, out);
        }
        if ext && self.ack_now {
            let ack = self.our_last_received()?;
            let n = Frame::Ack(ack).encode(true, out)?;
            self.mark_acked();
            self.stats.acks_sent += 1;
            return Some(n);
        }
        if ext && self.ping_due {
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            let n = Frame::Ping(self.ping_nonce).encode(true, out)?;
            self.ping_due = false;
            self.ping_outstanding = Some((self.ping_nonce, now));
            self.stats.pings_sent += 1;
            self.timers.set(Timer::PongTimeout, now.saturating_add(self.config.pong_timeout));
            return Some(n);
        }
        if ext {
            if let Some(reason) = self.closing {
                let n = Frame::Goodbye { code: reason.code, reason: reason.text() }.encode(true, out)?;
                self.end_session(now, SessionEnd::LocalClose { code: reason.code }, None);
                return Some(n);
            }
        }
        None
    }

    fn transmit_data(&mut self, ext: bool, out: &mut [u8]) -> Option<usize> {
        let seq = self.tx_cursor;
        let (a, b) = self.ring.get(seq)?;
        let item_len = a.len() + b.len();
        // The ack rides only when it moved since the peer last heard our position on this link
        // (an earlier frame, a standalone ACK, or our hello): acks are cumulative and the link
        // is ordered, so an unchanged one tells the peer nothing (WIRE.md: the ack is optional).
        let ack = if self.received > self.ack_sent { self.our_last_received() } else { None };
        let header = DataHeader { seq: seq as u32, ack, item_len: item_len as u32 };
        if out.len() < header.encoded_len(ext) + item_len {
            return None;
        }
        let h = header.encode(ext, out)?;
        out[h..h + a.len()].copy_from_slice(a);
        if !b.is_empty() {
            out[h + a.len()..h + item_len].copy_from_slice(b);
        }
        self.tx_cursor += 1;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += item_len as u64;
        if seq < self.tx_high {
            self.stats.frames_replayed += 1;
        } else {
            self.tx_high = seq + 1;
        }
        self.mark_acked();
        Some(h + item_len)
    }

    /// The peer now knows our full receive position.
    fn mark_acked(&mut self) {
        self.ack_sent = self.received;
        self.ack_now = false;
        self.timers.clear(Timer::AckDelay);
    }
}

fn put(out: &mut [u8], bytes: &[u8]) -> Option<usize> {
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}
