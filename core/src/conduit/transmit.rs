//! The transmit path: one frame per `poll_transmit` call, in priority order.

use super::serial::last_of;
use super::{Conduit, EarlyFrame, LinkState, Owed, SessionEnd};
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

/// One frame from [`Conduit::poll_transmit_lending`]: `len` bytes written at the start of the
/// caller's buffer, then, when `lent` is set, the bytes of that item, which stay in the
/// replay ring (get them with [`Conduit::lent_item`]) and complete the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct LendingTransmit {
    /// The link to write it to.
    pub link: super::LinkId,
    /// Bytes written at the start of the caller's buffer (the whole frame, or its header when
    /// the item is lent).
    pub len: usize,
    /// The item that follows the header, lent from the replay ring.
    pub lent: Option<LentItem>,
}

/// An item lent from the replay ring by [`Conduit::poll_transmit_lending`]: a handle, not a
/// borrow, so a driver can collect many frames and write them in one vectored call.
///
/// Its bytes stay in the ring until the peer acks the frame, which it cannot do before it
/// has read the whole frame: a handle stays good while its frame is unwritten, across other
/// calls, as long as the link lasts. [`Conduit::lent_item`] checks it anyway (a reset, or a
/// handle kept past its frame, gives `None`, never another item's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LentItem {
    seq: u64,
    len: u32,
    epoch: u32,
}

impl LentItem {
    /// The item's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the item is empty (an empty item is never lent).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Conduit {
    /// The bytes of a lent item, as one or two slices (the ring may wrap), or `None` if the
    /// handle is stale (the item was acked, or the conduit reset since).
    #[must_use]
    pub fn lent_item(&self, item: LentItem) -> Option<(&[u8], &[u8])> {
        if item.epoch != self.ring.epoch() {
            return None;
        }
        let (a, b) = self.ring.get(item.seq)?;
        (a.len() + b.len() == item.len()).then_some((a, b))
    }

    /// [`poll_transmit`](Self::poll_transmit), except that a data frame whose item is at
    /// least `lend_from` bytes long is written as its header only, and the item is lent from
    /// the replay ring: the driver writes the header, then [`lent_item`](Self::lent_item)'s
    /// bytes, saving the copy into its buffer (a vectored write, for large items). `out` must
    /// hold [`max_transmit_len`](Self::max_transmit_len) bytes for frames that are not lent.
    pub fn poll_transmit_lending(&mut self, now: Instant, out: &mut [u8], lend_from: usize) -> Option<LendingTransmit> {
        self.poll_frame::<true>(now, out, lend_from.max(1))
    }

    /// Write the next frame for the current link into `out` (which must hold at least
    /// [`max_transmit_len`](Self::max_transmit_len) bytes) and say where it goes. Call until
    /// `None` after every input. Order: hellos, then a PONG owed, then data (replay first,
    /// then new items, each carrying the latest ack if it moved), then a standalone ACK, then a PING,
    /// then GOODBYE. If `out` is too small for the next frame, returns `None` and loses
    /// nothing.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let t = self.poll_frame::<false>(now, out, usize::MAX)?;
        Some(Transmit { link: t.link, len: t.len })
    }

    /// The next frame; with `LEND`, items of `lend_from` bytes or more are lent (a constant,
    /// so `poll_transmit` compiles without the lending branches).
    #[inline(always)]
    fn poll_frame<const LEND: bool>(
        &mut self,
        now: Instant,
        out: &mut [u8],
        lend_from: usize,
    ) -> Option<LendingTransmit> {
        let now = self.clock.observe(now);
        let mut lent = None;
        let link = self.link.id()?;
        let len = match self.link {
            LinkState::None => return None,
            LinkState::AwaitServerHello { id, hello_sent: false } if self.owed == Owed::ClientHello => {
                // A fresh session's first frame may ride right behind the hello, once.
                let early = self.early_ok && self.key.is_none() && self.acked == 0 && self.sent > 0;
                let hello = ClientHello {
                    resume_key: self.key,
                    last_received: self.our_last_received().filter(|_| self.key.is_some()),
                    ext: self.config.ext,
                    early,
                };
                let n = put(out, &hello.encode())?;
                self.owed = Owed::Nothing;
                self.link = LinkState::AwaitServerHello { id, hello_sent: true };
                if early {
                    self.early_ok = false;
                    self.early = EarlyFrame::ToSend;
                    self.tx_cursor = 0;
                }
                n
            }
            LinkState::AwaitServerHello { hello_sent: true, .. } if self.early == EarlyFrame::ToSend => {
                let (len, item) = self.transmit_early::<LEND>(now, out, lend_from)?;
                lent = item;
                len
            }
            LinkState::AwaitServerHello { .. } | LinkState::AwaitClientHello { .. } => return None,
            LinkState::Dropping { .. } => self.transmit_final(out)?,
            LinkState::Established { ext, .. } => {
                if self.owed == Owed::ServerHello {
                    // The position the link started from (a fresh session's hello has none, even
                    // if its early frame was already delivered).
                    let hello = ServerHello {
                        rejected: false,
                        resume_key: self.issuing_key,
                        last_received: last_of(self.ack_sent),
                        ext,
                    };
                    let n = put(out, &hello.encode())?;
                    self.owed = Owed::Nothing;
                    n
                } else if self.early == EarlyFrame::ToSend {
                    // The ServerHello came before the early frame went out (the driver's
                    // buffer was full): the acceptor still reads it in the base form first.
                    let (len, item) = self.transmit_early::<LEND>(now, out, lend_from)?;
                    lent = item;
                    len
                } else {
                    let (len, item) = self.transmit_established::<LEND>(now, ext, out, lend_from)?;
                    lent = item;
                    len
                }
            }
        };
        Some(LendingTransmit { link, len, lent })
    }

    /// Whether `poll_transmit` would produce a frame now.
    #[inline]
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        match self.link {
            LinkState::None | LinkState::AwaitClientHello { .. } => false,
            LinkState::AwaitServerHello { hello_sent, .. } => {
                (!hello_sent && self.owed == Owed::ClientHello) || self.early == EarlyFrame::ToSend
            }
            LinkState::Dropping { .. } => self.owes_final_frame(),
            LinkState::Established { ext, .. } => {
                self.owed == Owed::ServerHello
                    || (ext && (self.pong_owed.is_some() || self.ack_now || self.ping_due))
                    || self.tx_cursor < self.sent
                    || (ext && self.closing.is_some())
            }
        }
    }

    /// Tell the conduit the time without any other input: what a call to
    /// [`poll_transmit`](Self::poll_transmit) that returns `None` does besides. A driver
    /// that skips `poll_transmit` because [`has_transmit`](Self::has_transmit) is `false`
    /// calls this instead, so that a later [`send`](Self::send) that finds the ring full arms
    /// its deadline from a current time.
    #[inline]
    pub fn observe_time(&mut self, now: Instant) {
        let _ = self.clock.observe(now);
    }

    /// The early frame: seq 0 in the base form (no kind byte; a fresh initiator has nothing
    /// to ack), whatever the link's form turns out to be.
    fn transmit_early<const LEND: bool>(
        &mut self,
        now: Instant,
        out: &mut [u8],
        lend_from: usize,
    ) -> Option<(usize, Option<LentItem>)> {
        let r = self.transmit_data::<LEND>(now, false, out, lend_from)?;
        self.early = EarlyFrame::Sent;
        self.stats.early_frames_sent += 1;
        Some(r)
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

    /// The next frame on an established link: its length in `out`, and the item lent.
    #[inline(always)]
    fn transmit_established<const LEND: bool>(
        &mut self,
        now: Instant,
        ext: bool,
        out: &mut [u8],
        lend_from: usize,
    ) -> Option<(usize, Option<LentItem>)> {
        if self.tx_cursor < self.sent && !(ext && self.pong_owed.is_some()) {
            return self.transmit_data::<LEND>(now, ext, out, lend_from);
        }
        self.transmit_control(now, ext, out).map(|n| (n, None))
    }

    fn transmit_control(&mut self, now: Instant, ext: bool, out: &mut [u8]) -> Option<usize> {
        if ext {
            if let Some(nonce) = self.pong_owed {
                let n = Frame::Pong(nonce).encode(true, out)?;
                self.pong_owed = None;
                self.ack_with_keepalive();
                return Some(n);
            }
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
            self.timers.set_if_unset(Timer::PongTimeout, now.saturating_add(self.config.pong_timeout));
            self.ack_with_keepalive();
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

    #[inline(always)]
    fn transmit_data<const LEND: bool>(
        &mut self,
        now: Instant,
        ext: bool,
        out: &mut [u8],
        lend_from: usize,
    ) -> Option<(usize, Option<LentItem>)> {
        let seq = self.tx_cursor;
        let (a, b) = self.ring.get(seq)?;
        let item_len = a.len() + b.len();
        let lend = LEND && item_len >= lend_from;
        // With extensions the ack rides only when it moved since the peer last heard our
        // position on this link (an earlier frame, a standalone ACK, or our hello): acks are
        // cumulative and the link is ordered, so an unchanged one tells a sotto peer nothing
        // (WIRE.md: the ack is optional). In the base form every data frame carries it: a vox
        // 0.3.0 peer trims its replay buffer only on the acks riding on our data frames, so a
        // resume's position alone leaves it replaying (and its link budget spent) again.
        let ack = if !ext || self.received > self.ack_sent { self.our_last_received() } else { None };
        let header = DataHeader { seq: seq as u32, ack, item_len: item_len as u32 };
        let copied = if lend { 0 } else { item_len };
        if out.len() < header.encoded_len(ext) + copied {
            return None;
        }
        let h = header.encode(ext, out)?;
        let lent = if lend {
            Some(LentItem { seq, len: item_len as u32, epoch: self.ring.epoch() })
        } else {
            out[h..h + a.len()].copy_from_slice(a);
            if !b.is_empty() {
                out[h + a.len()..h + item_len].copy_from_slice(b);
            }
            None
        };
        self.tx_cursor += 1;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += item_len as u64;
        if seq < self.tx_high {
            self.stats.frames_replayed += 1;
        } else {
            self.tx_high = seq + 1;
        }
        self.mark_acked();
        if !ext && self.want_writable && matches!(self.link, LinkState::Established { .. }) {
            // The peer cannot have acked what it has not been sent yet.
            self.arm_ack_starved(now, true);
        }
        Some((h + copied, lent))
    }

    /// A keepalive frame (PING or PONG) went out: an ack still owed follows it at once, so
    /// that both leave in the same write (an ack deferred with `defer_ack` waits for this).
    fn ack_with_keepalive(&mut self) {
        if self.received > self.ack_sent {
            self.ack_now = true;
        }
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
