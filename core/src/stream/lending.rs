//! [`LendingBatch`]: a write batch that leaves large items in the source's replay ring.
//!
//! [`WriteBatch`](super::WriteBatch) copies every frame into the driver's buffer, so a large
//! item is copied twice on its way out (into the replay ring by `send`, then into the write
//! buffer). A `LendingBatch` copies only the length prefix and the frame header of an item
//! of `lend_from` bytes or more, and records a [`LentItem`] handle in its place; the driver
//! asks [`chunks`](LendingBatch::chunks) for the pending bytes as a list of slices (its own
//! buffer and the ring's), writes them with one vectored call, and reports what was written
//! with [`consume`](LendingBatch::consume), exactly as with `WriteBatch`.
//!
//! A lent item's bytes stay in the ring until the peer acks its frame, which it cannot do
//! before it has read the whole frame: the handles stay good while the batch holds them,
//! across inputs, as long as the link lasts. [`clear`](LendingBatch::clear) the batch when
//! the link is gone (its frames are replayed on the next link by the source).

use alloc::vec::Vec;

use super::{Fill, FrameSource};
use crate::conduit::{Conduit, LendingTransmit, LentItem, LinkId};
use crate::session::Session;
use crate::time::Instant;
use crate::wire::framing::encode_len_prefix;
use crate::wire::LEN_PREFIX;

/// A [`FrameSource`] that can also lend items from its replay ring: a [`Conduit`] or a
/// [`Session`].
pub trait LendingSource: FrameSource {
    /// See [`Conduit::poll_transmit_lending`].
    fn poll_transmit_lending(&mut self, now: Instant, out: &mut [u8], lend_from: usize) -> Option<LendingTransmit>;

    /// See [`Conduit::lent_item`].
    fn lent_item(&self, item: LentItem) -> Option<(&[u8], &[u8])>;
}

impl LendingSource for Conduit {
    #[inline]
    fn poll_transmit_lending(&mut self, now: Instant, out: &mut [u8], lend_from: usize) -> Option<LendingTransmit> {
        Conduit::poll_transmit_lending(self, now, out, lend_from)
    }
    fn lent_item(&self, item: LentItem) -> Option<(&[u8], &[u8])> {
        Conduit::lent_item(self, item)
    }
}

impl LendingSource for Session {
    #[inline]
    fn poll_transmit_lending(&mut self, now: Instant, out: &mut [u8], lend_from: usize) -> Option<LendingTransmit> {
        Session::poll_transmit_lending(self, now, out, lend_from)
    }
    fn lent_item(&self, item: LentItem) -> Option<(&[u8], &[u8])> {
        Session::lent_item(self, item)
    }
}

/// A lent item no longer held by the source (the batch outlived its link, or the source was
/// reset): drop the link; its frames are replayed on the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleItem;

impl core::fmt::Display for StaleItem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a lent item is no longer held by its source")
    }
}

impl core::error::Error for StaleItem {}

/// Room for lent handles a [`LendingBatch::restore`]d batch starts with (it doubles up to
/// its `max_lent` as items are lent).
const FIRST_LENT: usize = 4;

/// One lent item in the batch: it follows the buffer's bytes up to `at`.
#[derive(Clone, Copy, Debug)]
struct Lent {
    at: usize,
    item: LentItem,
    /// Bytes of the item already written.
    done: usize,
}

/// A write buffer of length-prefixed frames for one link at a time, like
/// [`WriteBatch`](super::WriteBatch), in which items of `lend_from` bytes or more are not
/// copied but lent from the source's replay ring.
///
/// Storage is allocated in [`new`](Self::new): the buffer and room for `max_lent` handles (a
/// batch [`release`](LendingBatch::release)d while its link is idle allocates again in
/// [`restore`](LendingBatch::restore)).
/// The buffer must hold the largest frame the source writes into it whole, with its 4-byte
/// prefix: `max_transmit_len() + 4` in general; with lending, frames of items of
/// `lend_from` bytes or more hold only their header, so the largest copied item's frame (or
/// a control frame, under 1 KiB) suffices. A driver may grow and shrink it later with
/// [`resize_buffer`](Self::resize_buffer).
///
/// Call [`fill`](Self::fill) after every input or command, write [`chunks`](Self::chunks)
/// to the link (one vectored write), report how much was written with
/// [`consume`](Self::consume), and [`clear`](Self::clear) when the link is gone.
#[derive(Debug)]
pub struct LendingBatch<B> {
    buf: B,
    start: usize,
    end: usize,
    link: Option<LinkId>,
    lent: Vec<Lent>,
    /// Index of the first lent item not fully written.
    lent_head: usize,
    lend_from: usize,
    /// Room for lent handles the batch keeps (`lent`'s capacity unless released).
    max_lent: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> LendingBatch<B> {
    /// An empty batch over `buf` that lends items of `lend_from` bytes or more (at least 1),
    /// at most `max_lent` at a time (at least 1).
    #[must_use]
    pub fn new(buf: B, lend_from: usize, max_lent: usize) -> Self {
        Self {
            buf,
            start: 0,
            end: 0,
            link: None,
            lent: Vec::with_capacity(max_lent.max(1)),
            lent_head: 0,
            lend_from: lend_from.max(1),
            max_lent: max_lent.max(1),
        }
    }

    /// Total room of the buffer.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Whether nothing waits to be written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.end && self.lent_head == self.lent.len()
    }

    /// Bytes waiting to be written, lent ones included.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        let lent: usize = self.lent[self.lent_head..].iter().map(|l| l.item.len() - l.done).sum();
        self.end - self.start + lent
    }

    /// The pending bytes when none are lent (one slice of the buffer, written without the
    /// source), else `None`: use [`chunks`](Self::chunks).
    #[must_use]
    pub fn owned_only(&self) -> Option<&[u8]> {
        (self.lent_head == self.lent.len()).then(|| &self.buf.as_ref()[self.start..self.end])
    }

    /// The most slices [`chunks`](Self::chunks) can return: an array this long always takes
    /// every pending byte.
    #[must_use]
    pub fn max_chunks(&self) -> usize {
        3 * self.max_lent + 1
    }

    /// The link the pending bytes are for (`None` when empty and never filled since the last
    /// [`clear`](Self::clear)).
    #[must_use]
    pub fn link(&self) -> Option<LinkId> {
        self.link
    }

    /// Forget the pending bytes, the lent handles and the link (call when the link is gone).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.lent.clear();
        self.lent_head = 0;
        self.link = None;
    }

    /// The pending bytes, in order, as slices of the buffer and of `src`'s replay ring, put
    /// in `out` (as many as fit); returns how many. `src` must be the source the batch was
    /// filled from. Write them with one vectored call, then [`consume`](Self::consume).
    pub fn chunks<'a, S: LendingSource + ?Sized>(
        &'a self,
        src: &'a S,
        out: &mut [&'a [u8]],
    ) -> Result<usize, StaleItem> {
        let buf = self.buf.as_ref();
        let mut n = 0;
        let mut push = |s: &'a [u8]| {
            if s.is_empty() {
                return true;
            }
            match out.get_mut(n) {
                Some(slot) => {
                    *slot = s;
                    n += 1;
                    true
                }
                None => false,
            }
        };
        let mut pos = self.start;
        for l in &self.lent[self.lent_head..] {
            if !push(&buf[pos..l.at]) {
                return Ok(n);
            }
            pos = l.at;
            let (a, b) = src.lent_item(l.item).ok_or(StaleItem)?;
            let (a, b) = if l.done < a.len() { (&a[l.done..], b) } else { (&[][..], &b[l.done - a.len()..]) };
            if !push(a) || !push(b) {
                return Ok(n);
            }
        }
        push(&buf[pos..self.end]);
        Ok(n)
    }

    /// `n` bytes of [`chunks`](Self::chunks) were written. Call after every write, short
    /// ones included. `n` larger than what is pending is clamped.
    pub fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let owned_end = self.lent.get(self.lent_head).map_or(self.end, |l| l.at);
            if self.start < owned_end {
                let take = n.min(owned_end - self.start);
                self.start += take;
                n -= take;
                continue;
            }
            let Some(l) = self.lent.get_mut(self.lent_head) else { break };
            let take = n.min(l.item.len() - l.done);
            l.done += take;
            n -= take;
            if l.done == l.item.len() {
                self.lent_head += 1;
            }
        }
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
            self.lent.clear();
            self.lent_head = 0;
        }
    }

    /// Append as many frames from `src` as fit (in the buffer, and in the room for lent
    /// handles), each behind its length prefix; see [`WriteBatch::fill`](super::WriteBatch::fill),
    /// whose rules (and [`Fill`] report) this follows.
    pub fn fill<S: LendingSource + ?Sized>(&mut self, src: &mut S, now: Instant) -> Fill {
        let mut fill = Fill { frames: 0, bytes: 0, discarded: 0, more: false };
        let need = src.max_transmit_len().saturating_add(LEN_PREFIX);
        let cap = self.capacity();
        if self.start > 0 && cap - self.end < need {
            self.compact();
        }
        if self.lent.len() == self.max_lent && self.lent_head > 0 {
            self.lent.drain(..self.lent_head);
            self.lent_head = 0;
        }
        loop {
            let room = cap - self.end;
            if room <= LEN_PREFIX || self.lent.len() == self.max_lent {
                fill.more = true;
                return fill;
            }
            let body = &mut self.buf.as_mut()[self.end + LEN_PREFIX..];
            let Some(t) = src.poll_transmit_lending(now, body, self.lend_from) else {
                fill.more = room < need;
                return fill;
            };
            if self.link != Some(t.link) {
                if !self.is_empty() {
                    fill.discarded += 1;
                    self.buf.as_mut().copy_within(self.end..self.end + LEN_PREFIX + t.len, 0);
                    self.start = 0;
                    self.end = 0;
                    self.lent.clear();
                    self.lent_head = 0;
                }
                self.link = Some(t.link);
            }
            let lent_len = t.lent.map_or(0, |l| l.len());
            let frame_len = t.len + lent_len;
            let _ = encode_len_prefix(u32::try_from(frame_len).unwrap_or(u32::MAX), &mut self.buf.as_mut()[self.end..]);
            self.end += LEN_PREFIX + t.len;
            if let Some(item) = t.lent {
                // Room was checked above; the handle follows the header just written.
                if self.lent.len() == self.lent.capacity() {
                    // Restored with a little room: double it, up to `max_lent`.
                    let more = self.lent.len().max(1).min(self.max_lent - self.lent.len());
                    self.lent.reserve_exact(more);
                }
                self.lent.push(Lent { at: self.end, item, done: 0 });
            }
            fill.frames += 1;
            fill.bytes += LEN_PREFIX + frame_len;
        }
    }

    /// Move the unwritten bytes to the front of the buffer.
    fn compact(&mut self) {
        let start = self.start;
        self.buf.as_mut().copy_within(start..self.end, 0);
        self.end -= start;
        self.start = 0;
        for l in &mut self.lent[self.lent_head..] {
            l.at -= start;
        }
    }
}

impl LendingBatch<Vec<u8>> {
    /// Give the batch a buffer of `len` bytes (at least the pending owned bytes; less is
    /// raised to that), keeping what is pending, moved to the front: a driver grows the
    /// buffer when batches fill it and shrinks it back when the link goes idle. Allocates
    /// the new buffer (unless `len` is its length already). The buffer must still hold the
    /// largest frame the source may write unlent; see [`new`](Self::new).
    pub fn resize_buffer(&mut self, len: usize) {
        let len = len.max(self.end - self.start);
        if len == self.buf.len() {
            return;
        }
        self.compact();
        let mut buf = alloc::vec![0u8; len];
        buf[..self.end].copy_from_slice(&self.buf[..self.end]);
        self.buf = buf;
    }

    /// A released batch (see [`release`](Self::release)) that lends items of `lend_from`
    /// bytes or more, at most `max_lent` at a time: allocates nothing. Call
    /// [`restore`](Self::restore) before the first [`fill`](Self::fill).
    #[must_use]
    pub fn new_released(lend_from: usize, max_lent: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            link: None,
            lent: Vec::new(),
            lent_head: 0,
            lend_from: lend_from.max(1),
            max_lent: max_lent.max(1),
        }
    }

    /// Free the buffer and the room for lent handles if nothing is pending (returns whether
    /// it did): for a link gone idle. A released batch has [`capacity`](Self::capacity) 0
    /// and takes no frame; [`restore`](Self::restore) it before the next
    /// [`fill`](Self::fill).
    pub fn release(&mut self) -> bool {
        if !self.is_empty() {
            return false;
        }
        self.start = 0;
        self.end = 0;
        self.lent_head = 0;
        self.buf = Vec::new();
        self.lent = Vec::new();
        true
    }

    /// Whether the batch holds no storage (new with [`new_released`](Self::new_released),
    /// or [`release`](Self::release)d since).
    #[must_use]
    pub fn is_released(&self) -> bool {
        self.buf.is_empty()
    }

    /// Give a released batch storage again: a buffer of `len` bytes (see
    /// [`new`](Self::new) for what it must hold) and room for a few lent handles (it grows
    /// to `max_lent` as items are lent: a warm-up cost, like the buffer's). Does nothing if
    /// the batch holds storage.
    pub fn restore(&mut self, len: usize) {
        if self.is_released() {
            self.buf = alloc::vec![0u8; len];
            self.lent = Vec::with_capacity(self.max_lent.min(FIRST_LENT));
        }
    }

    /// Bytes of the buffer in use by pending owned bytes, counted from the buffer's start
    /// (what is left of it is the room [`fill`](Self::fill) has before it compacts).
    #[must_use]
    pub fn owned_end(&self) -> usize {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conduit::{ConduitConfig, Role};
    use crate::stream::FrameSplitter;
    use crate::ResumeKey;
    use alloc::vec;

    /// A pseudo-random sequence (xorshift) for write sizes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Bring up a new link on both and exchange the hellos (a resume after the first).
    fn handshake(a: &mut Conduit, b: &mut Conduit, key: u8) -> (LinkId, LinkId) {
        let now = Instant::ZERO;
        let la = a.link_up(now, ResumeKey::ZERO);
        let lb = b.link_up(now, ResumeKey([key; 16]));
        let mut out = vec![0u8; a.max_transmit_len()];
        let t = a.poll_transmit(now, &mut out).expect("client hello");
        assert_eq!(b.handle_message(now, lb, &out[..t.len]), Ok(None));
        let t = b.poll_transmit(now, &mut out).expect("server hello");
        assert_eq!(a.handle_message(now, la, &out[..t.len]), Ok(None));
        assert!(a.is_established() && b.is_established());
        (la, lb)
    }

    fn pair(cfg: ConduitConfig) -> (Conduit, Conduit, LinkId, LinkId) {
        let mut a = Conduit::new(Role::Initiator, cfg).expect("valid");
        let mut b = Conduit::new(Role::Acceptor, cfg).expect("valid");
        let (la, lb) = handshake(&mut a, &mut b, 1);
        (a, b, la, lb)
    }

    /// Items of every size (some lent, some copied, some wrapping in the ring) go through
    /// short writes of random sizes, one to eight slices at a time, with the link killed now
    /// and then (mid-frame included: the batch is cleared and the conduits resume, replaying
    /// through the batch), and arrive whole, once and in order.
    #[test]
    fn short_vectored_writes_and_link_kills_deliver_everything_in_order() {
        for seed in 1..60u64 {
            // ack_every 1: the receiver acks every frame at once, so the ring turns over
            // without timers.
            let cfg =
                ConduitConfig { replay_bytes: 3000, max_frame_len: 1024, ack_every: 1, ..ConduitConfig::default() };
            let (mut a, mut b, mut la, mut lb) = pair(cfg);
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let buf_len = a.max_transmit_len() + 4 + rng.next(600);
            let mut batch = LendingBatch::new(vec![0u8; buf_len], 100, 1 + rng.next(6));
            let split = FrameSplitter::new(cfg.max_frame_len);
            let now = Instant::ZERO;
            let (mut wire, mut sent, mut got) = (Vec::new(), Vec::new(), Vec::new());
            let mut next = 0u32;
            let (mut lent_seen, mut kills) = (0, 0);
            let mut out = vec![0u8; b.max_transmit_len()];
            for round in 0..500 {
                // Queue a few items of random sizes (0..=900 bytes), none in the last rounds.
                for _ in 0..if round < 400 { rng.next(4) } else { 0 } {
                    let len = rng.next(901);
                    let item: Vec<u8> = (0..len).map(|i| (i as u32 ^ next) as u8).collect();
                    if a.send(&item).is_ok() {
                        sent.push(item);
                        next += 1;
                    }
                }
                // A batch released while idle takes frames again once restored.
                batch.restore(buf_len);
                let _ = batch.fill(&mut a, now);
                lent_seen += batch.lent.len() - batch.lent_head;
                let mut slices: [&[u8]; 8] = [&[]; 8];
                let k = 1 + rng.next(8);
                let n = batch.chunks(&a, &mut slices[..k]).expect("held");
                let mut budget = rng.next(2000);
                let mut written = 0;
                for s in &slices[..n] {
                    let take = s.len().min(budget);
                    wire.extend_from_slice(&s[..take]);
                    budget -= take;
                    written += take;
                }
                batch.consume(written);
                if rng.next(8) == 0 {
                    let pending = !batch.is_empty();
                    assert_eq!(batch.release(), !pending, "released only when nothing is pending");
                    assert_eq!(batch.is_released(), !pending);
                }
                // The receiver reads every whole message and acks.
                let run = split.complete(&wire, usize::MAX).expect("well framed");
                for msg in split.messages(&wire[..run.len]) {
                    if let Ok(Some(item)) = b.handle_message(now, lb, msg) {
                        got.push(item.to_vec());
                    }
                }
                wire.drain(..run.len);
                while let Some(t) = b.poll_transmit(now, &mut out) {
                    let _ = a.handle_message(now, la, &out[..t.len]);
                }
                if round < 400 && rng.next(40) == 0 {
                    // Kill the link, wherever the writes stand.
                    kills += 1;
                    a.link_down(now, la);
                    b.link_down(now, lb);
                    while a.poll_event().is_some() || b.poll_event().is_some() {}
                    batch.clear();
                    wire.clear();
                    (la, lb) = handshake(&mut a, &mut b, 2 + (kills % 200) as u8);
                }
                while a.poll_event().is_some() || b.poll_event().is_some() {}
            }
            assert!(kills > 0 && lent_seen > 0, "seed {seed}: kills {kills}, lent {lent_seen}");
            assert_eq!(got, sent, "seed {seed}: everything delivered once, in order ({kills} kills)");
        }
    }

    #[test]
    fn stale_handles_are_refused_not_aliased() {
        let cfg = ConduitConfig::default();
        let (mut a, _b, _la, _lb) = pair(cfg);
        a.send(&[5u8; 200]).expect("room");
        let mut batch = LendingBatch::new(vec![0u8; a.max_transmit_len() + 4], 100, 4);
        let f = batch.fill(&mut a, Instant::ZERO);
        assert_eq!(f.frames, 1);
        assert_eq!(f.bytes, batch.pending_len());
        assert_eq!(batch.owned_only(), None, "an item is lent");
        assert_eq!(batch.max_chunks(), 13);
        {
            let mut out: [&[u8]; 4] = [&[]; 4];
            assert_eq!(batch.chunks(&a, &mut out), Ok(2), "owned bytes, then the lent item");
            assert_eq!(out[1], &[5u8; 200][..]);
        }
        // The owner resets the conduit: the ring restarts at seq 0 with other bytes.
        a.reset();
        let _ = a.link_up(Instant::ZERO, ResumeKey::ZERO);
        a.send(&[6u8; 200]).expect("room");
        let mut out: [&[u8]; 4] = [&[]; 4];
        assert_eq!(batch.chunks(&a, &mut out), Err(StaleItem));
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.owned_only(), Some(&[][..]));
    }
}
