//! Sans-IO helpers for drivers that carry link messages over a byte stream (TCP, Unix
//! sockets, pipes), where every message is `[len: u32 LE][len bytes]`.
//!
//! - Writing: [`WriteBatch`] pulls as many frames as fit from a [`FrameSource`] (a
//!   [`Conduit`], or any layer with the same `poll_transmit`) into one caller-provided buffer,
//!   each behind its length prefix, so the driver does one write call for many frames.
//! - Writing large items without copying them: [`LendingBatch`] does what `WriteBatch` does
//!   but leaves items of a chosen size and up in the source's replay ring, for one vectored
//!   write of headers and ring slices.
//! - Reading: [`FrameSplitter`] finds the complete messages at the front of the driver's own
//!   read buffer (a `BytesMut`, say) without copying them, so the driver can split them off
//!   and hand delivered items on as slices of that buffer.
//!
//! Neither allocates: the write buffer is the caller's, and reading works on the caller's
//! bytes.
//!
//! A driver's loop, for one link:
//!
//! ```
//! use sotto_proto::stream::{FrameSplitter, WriteBatch};
//! use sotto_proto::{Conduit, ConduitConfig, Instant, ResumeKey, Role};
//!
//! let cfg = ConduitConfig::default();
//! let mut a = Conduit::new(Role::Initiator, cfg).expect("valid config");
//! let mut b = Conduit::new(Role::Acceptor, cfg).expect("valid config");
//! let now = Instant::ZERO;
//! let la = a.link_up(now, ResumeKey::ZERO);
//! let lb = b.link_up(now, ResumeKey([7; 16]));
//! a.send(b"hello").expect("room in the ring");
//!
//! // Both batches own a buffer allocated once, big enough for one largest frame.
//! let mut wa = WriteBatch::new(vec![0u8; a.max_transmit_len() + 4]);
//! let mut wb = WriteBatch::new(vec![0u8; b.max_transmit_len() + 4]);
//! let split = FrameSplitter::new(cfg.max_frame_len);
//! let mut a_to_b = Vec::new(); // stands in for the socket
//! let mut b_to_a = Vec::new();
//! let mut got = Vec::new();
//! for _ in 0..4 {
//!     // Drain outputs into the write buffer, then "write" it.
//!     let _ = wa.fill(&mut a, now);
//!     a_to_b.extend_from_slice(wa.pending());
//!     wa.consume(wa.pending().len());
//!     let _ = wb.fill(&mut b, now);
//!     b_to_a.extend_from_slice(wb.pending());
//!     wb.consume(wb.pending().len());
//!     // "Read": feed every complete message, then drop the consumed bytes.
//!     let run = split.complete(&a_to_b, usize::MAX).expect("well framed");
//!     for msg in split.messages(&a_to_b[..run.len]) {
//!         if let Ok(Some(item)) = b.handle_message(now, lb, msg) {
//!             got.push(item.to_vec());
//!         }
//!     }
//!     a_to_b.drain(..run.len);
//!     let run = split.complete(&b_to_a, usize::MAX).expect("well framed");
//!     for msg in split.messages(&b_to_a[..run.len]) {
//!         let _ = a.handle_message(now, la, msg);
//!     }
//!     b_to_a.drain(..run.len);
//! }
//! assert_eq!(got, [b"hello".to_vec()]);
//! ```

mod lending;

pub use lending::{LendingBatch, LendingSource, StaleItem};

use crate::conduit::{Conduit, LinkId, Transmit};
use crate::time::Instant;
use crate::wire::framing::{encode_len_prefix, next_message_extent};
use crate::wire::{FramingError, LEN_PREFIX};

/// Something that writes its next outgoing frame into caller memory: a [`Conduit`], or a
/// layer above it with the same output method. [`WriteBatch`] drains one of these.
pub trait FrameSource {
    /// Write the next frame (without a length prefix) into `out` and say which link it is
    /// for; `None` when nothing is owed now or `out` is too small for the next frame (nothing
    /// is lost in that case).
    fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit>;

    /// The largest frame `poll_transmit` can produce; a buffer of this size always fits the
    /// next frame.
    fn max_transmit_len(&self) -> usize;
}

impl FrameSource for Conduit {
    #[inline]
    fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        Conduit::poll_transmit(self, now, out)
    }
    fn max_transmit_len(&self) -> usize {
        Conduit::max_transmit_len(self)
    }
}

/// What one [`WriteBatch::fill`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Fill {
    /// Frames appended to the batch.
    pub frames: usize,
    /// Bytes appended (prefixes included).
    pub bytes: usize,
    /// Frames dropped because they were for another link than the bytes already pending
    /// (the old link's bytes are discarded in that case; see [`WriteBatch::fill`]).
    pub discarded: usize,
    /// The source may have more: the buffer ran out of room. Write the pending bytes and call
    /// `fill` again.
    pub more: bool,
}

/// A write buffer of length-prefixed frames for one link at a time, filled from a
/// [`FrameSource`] and drained by the driver's writes (which may be short).
///
/// The storage `B` is the caller's (a `Vec<u8>`, a boxed slice, an array), allocated once;
/// give it at least `max_transmit_len() + 4` bytes, or the largest frames never fit.
///
/// Call [`fill`](Self::fill) after every input or command (it is the "drain
/// `poll_transmit`" step), write [`pending`](Self::pending) to the link, report how much was
/// written with [`consume`](Self::consume), and [`clear`](Self::clear) it when the link is
/// gone.
#[derive(Debug)]
pub struct WriteBatch<B> {
    buf: B,
    start: usize,
    end: usize,
    link: Option<LinkId>,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> WriteBatch<B> {
    /// An empty batch over `buf`.
    #[must_use]
    pub fn new(buf: B) -> Self {
        Self { buf, start: 0, end: 0, link: None }
    }

    /// Total room of the buffer.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Bytes waiting to be written, as one contiguous slice.
    #[must_use]
    pub fn pending(&self) -> &[u8] {
        &self.buf.as_ref()[self.start..self.end]
    }

    /// Whether nothing waits to be written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The link the pending bytes are for (`None` when empty and never filled since the last
    /// [`clear`](Self::clear)).
    #[must_use]
    pub fn link(&self) -> Option<LinkId> {
        self.link
    }

    /// `n` bytes of [`pending`](Self::pending) were written. Call after every write, short
    /// ones included. `n` larger than what is pending is clamped.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Forget the pending bytes and the link (call when the link is gone: its frames are
    /// replayed on the next one by the source).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.link = None;
    }

    /// Append as many frames from `src` as fit, each behind its length prefix. Call after
    /// every input or command, and again after a write when the previous call said
    /// [`Fill::more`].
    ///
    /// Frames for a link other than the one the pending bytes are for mean the source moved
    /// to a new link: the old bytes are dropped (counted in [`Fill::discarded`]) and the batch
    /// now holds the new link's frames. Drivers that [`clear`](Self::clear) on every link
    /// change never see this.
    pub fn fill<S: FrameSource + ?Sized>(&mut self, src: &mut S, now: Instant) -> Fill {
        let mut fill = Fill { frames: 0, bytes: 0, discarded: 0, more: false };
        let need = src.max_transmit_len().saturating_add(LEN_PREFIX);
        let cap = self.capacity();
        if self.start > 0 && cap - self.end < need {
            // Move the unwritten tail to the front so one largest frame fits again.
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            let room = cap - self.end;
            if room <= LEN_PREFIX {
                fill.more = true;
                return fill;
            }
            let body = &mut self.buf.as_mut()[self.end + LEN_PREFIX..];
            let Some(t) = src.poll_transmit(now, body) else {
                // Either nothing is owed, or the next frame needs more room than is left.
                fill.more = room < need;
                return fill;
            };
            if self.link != Some(t.link) {
                if !self.is_empty() {
                    fill.discarded += 1;
                    let len = LEN_PREFIX + t.len;
                    // Keep only the new link's frame: move it to the front.
                    self.buf.as_mut().copy_within(self.end..self.end + len, 0);
                    self.start = 0;
                    self.end = 0;
                }
                self.link = Some(t.link);
            }
            let len = u32::try_from(t.len).unwrap_or(u32::MAX);
            let _ = encode_len_prefix(len, &mut self.buf.as_mut()[self.end..]);
            self.end += LEN_PREFIX + t.len;
            fill.frames += 1;
            fill.bytes += LEN_PREFIX + t.len;
        }
    }
}

/// How much of a read buffer holds complete messages, from [`FrameSplitter::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct CompleteRun {
    /// Bytes from the front of the buffer that hold whole messages (prefixes included).
    pub len: usize,
    /// How many messages those bytes hold.
    pub messages: usize,
}

/// Finds whole link messages at the front of a driver's read buffer, checking every length
/// prefix against `max_frame_len` before the body is buffered. Stateless: the driver keeps
/// its own bytes (so delivered items can be handed on as slices of them without a copy).
///
/// After every read: call [`complete`](Self::complete), split that many bytes off the front
/// of the buffer, feed each of [`messages`](Self::messages) to the conduit (draining its
/// outputs after each), and before the next read make sure the buffer has room for at least
/// [`wanted`](Self::wanted) more bytes. At end of stream, [`at_eof`](Self::at_eof) tells a
/// clean close from a truncated link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSplitter {
    max_frame_len: u32,
}

impl FrameSplitter {
    /// A splitter that refuses messages longer than `max_frame_len`.
    #[must_use]
    pub const fn new(max_frame_len: u32) -> Self {
        Self { max_frame_len }
    }

    /// The limit on a message body.
    #[must_use]
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// The run of whole messages at the front of `buf`, at most `max_messages` of them (a
    /// driver whose inbound queue has room for `n` items passes `n`, so the queue stays
    /// bounded). An error means the stream is unusable: drop the link.
    pub fn complete(&self, buf: &[u8], max_messages: usize) -> Result<CompleteRun, FramingError> {
        let mut run = CompleteRun { len: 0, messages: 0 };
        while run.messages < max_messages {
            match next_message_extent(&buf[run.len..], self.max_frame_len) {
                Ok(Some(body)) => {
                    run.len += body.end;
                    run.messages += 1;
                }
                Ok(None) => break,
                // Messages before the bad prefix are still good: report them first.
                Err(e) if run.messages == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(run)
    }

    /// The message bodies in `run`, which must be whole messages (the first
    /// [`CompleteRun::len`] bytes of a buffer checked by [`complete`](Self::complete)). Each
    /// body borrows from `run`.
    pub fn messages<'a>(&self, run: &'a [u8]) -> Messages<'a> {
        Messages { rest: run }
    }

    /// How many more bytes `buf` needs before its first message is whole (at least 1): the
    /// size to reserve before the next read. Returns 1 past a bad prefix (the next
    /// [`complete`](Self::complete) reports it).
    #[must_use]
    pub fn wanted(&self, buf: &[u8]) -> usize {
        let Some(prefix) = buf.get(..LEN_PREFIX) else { return LEN_PREFIX - buf.len() };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > self.max_frame_len {
            return 1;
        }
        (LEN_PREFIX + len as usize).saturating_sub(buf.len()).max(1)
    }

    /// End of stream with `buf` left unconsumed: `Ok` when it is empty (a clean close on a
    /// message boundary), [`FramingError::Truncated`] otherwise.
    pub fn at_eof(&self, buf: &[u8]) -> Result<(), FramingError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(FramingError::Truncated)
        }
    }
}

/// Iterator over the message bodies of a run of whole messages; see
/// [`FrameSplitter::messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let body = next_message_extent(self.rest, u32::MAX).ok().flatten()?;
        let (msg, rest) = self.rest.split_at(body.end);
        self.rest = rest;
        Some(&msg[body])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Hands out queued frames, optionally switching link partway.
    struct Frames {
        queue: Vec<(u64, Vec<u8>)>,
        max: usize,
    }

    impl FrameSource for Frames {
        fn poll_transmit(&mut self, _now: Instant, out: &mut [u8]) -> Option<Transmit> {
            let (link, frame) = self.queue.first()?;
            let dst = out.get_mut(..frame.len())?;
            dst.copy_from_slice(frame);
            let t = Transmit { link: LinkId(*link), len: frame.len() };
            self.queue.remove(0);
            Some(t)
        }
        fn max_transmit_len(&self) -> usize {
            self.max
        }
    }

    fn frames(n: u8, len: usize) -> Frames {
        Frames { queue: (0..n).map(|i| (1, vec![i; len])).collect(), max: 16 }
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<u8>> {
        let s = FrameSplitter::new(1 << 20);
        let run = s.complete(bytes, usize::MAX).expect("framed");
        assert_eq!(run.len, bytes.len());
        s.messages(bytes).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn fill_batches_many_frames_with_prefixes() {
        let mut src = frames(3, 5);
        let mut w = WriteBatch::new([0u8; 64]);
        let f = w.fill(&mut src, Instant::ZERO);
        assert_eq!(f, Fill { frames: 3, bytes: 27, discarded: 0, more: false });
        assert_eq!(&w.pending()[..4], &[5, 0, 0, 0]);
        assert_eq!(decode_all(w.pending()), [vec![0; 5], vec![1; 5], vec![2; 5]]);
        assert_eq!(w.link(), Some(LinkId(1)));
        w.consume(27);
        assert!(w.is_empty());
    }

    #[test]
    fn fill_stops_when_full_and_resumes_after_short_writes() {
        let mut src = frames(10, 10);
        let mut w = WriteBatch::new(vec![0u8; 20 + 14 + 4]); // one max frame + prefix + a bit
        let mut out = Vec::new();
        let mut rounds = 0;
        loop {
            let f = w.fill(&mut src, Instant::ZERO);
            if w.is_empty() && !f.more {
                break;
            }
            // Short writes: three bytes at a time.
            let n = w.pending().len().min(3);
            out.extend_from_slice(&w.pending()[..n]);
            w.consume(n);
            rounds += 1;
            assert!(rounds < 1000);
        }
        let got = decode_all(&out);
        assert_eq!(got, (0..10u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    }

    #[test]
    fn a_buffer_that_never_fits_reports_more() {
        let mut src = frames(1, 10);
        let mut w = WriteBatch::new([0u8; 12]);
        let f = w.fill(&mut src, Instant::ZERO);
        assert_eq!((f.frames, f.more), (0, true));
        assert_eq!(src.queue.len(), 1, "nothing lost");
    }

    #[test]
    fn link_change_discards_old_bytes() {
        let mut src = Frames { queue: vec![(1, vec![1; 3]), (2, vec![2; 3])], max: 16 };
        let mut w = WriteBatch::new([0u8; 64]);
        let f = w.fill(&mut src, Instant::ZERO);
        assert_eq!((f.frames, f.discarded), (2, 1));
        assert_eq!(w.link(), Some(LinkId(2)));
        assert_eq!(decode_all(w.pending()), [vec![2; 3]]);
        w.clear();
        assert_eq!(w.link(), None);
    }

    #[test]
    fn conduit_frames_round_trip_through_batch_and_splitter() {
        let cfg = crate::ConduitConfig::default();
        let mut a = Conduit::new(crate::Role::Initiator, cfg).expect("config");
        let mut b = Conduit::new(crate::Role::Acceptor, cfg).expect("config");
        let now = Instant::ZERO;
        let la = a.link_up(now, crate::ResumeKey::ZERO);
        let lb = b.link_up(now, crate::ResumeKey([3; 16]));
        for i in 0..100u8 {
            a.send(&[i; 7]).expect("room");
        }
        let mut wa = WriteBatch::new(vec![0u8; a.max_transmit_len() + 4]);
        let mut wb = WriteBatch::new(vec![0u8; b.max_transmit_len() + 4]);
        let split = FrameSplitter::new(cfg.max_frame_len);
        let mut got = Vec::new();
        for _ in 0..4 {
            let _ = wa.fill(&mut a, now);
            let bytes = wa.pending().to_vec();
            wa.consume(bytes.len());
            // Feed in two pieces cut mid-frame, as a socket might.
            let mut buf = Vec::new();
            let cut = bytes.len() / 2 + 1;
            for piece in [&bytes[..cut.min(bytes.len())], &bytes[cut.min(bytes.len())..]] {
                buf.extend_from_slice(piece);
                let run = split.complete(&buf, usize::MAX).expect("framed");
                for m in split.messages(&buf[..run.len]) {
                    if let Ok(Some(item)) = b.handle_message(now, lb, m) {
                        got.push(item.to_vec());
                    }
                }
                buf.drain(..run.len);
            }
            assert!(buf.is_empty());
            let _ = wb.fill(&mut b, now);
            let back = wb.pending().to_vec();
            wb.consume(back.len());
            for m in split.messages(&back) {
                let _ = a.handle_message(now, la, m);
            }
        }
        assert_eq!(got.len(), 100);
        assert!(got.iter().enumerate().all(|(i, g)| g == &vec![i as u8; 7]));
    }

    #[test]
    fn splitter_limits_checks_and_eof() {
        let s = FrameSplitter::new(8);
        let buf = [1u8, 0, 0, 0, 9, 2, 0, 0, 0, 7, 7, 3, 0];
        assert_eq!(s.complete(&buf, usize::MAX), Ok(CompleteRun { len: 11, messages: 2 }));
        assert_eq!(s.complete(&buf, 1), Ok(CompleteRun { len: 5, messages: 1 }));
        assert_eq!(s.wanted(&buf[11..]), 2);
        assert_eq!(s.wanted(&buf[..6]), 1);
        assert_eq!(s.wanted(&[3, 0, 0, 0]), 3);
        assert_eq!(s.at_eof(&[]), Ok(()));
        assert_eq!(s.at_eof(&buf[11..]), Err(FramingError::Truncated));
        let long = [9u8, 0, 0, 0];
        assert_eq!(s.complete(&long, 4), Err(FramingError::TooLong { len: 9, max: 8 }));
        assert_eq!(s.wanted(&long), 1);
        // Good messages before a bad prefix come out first; the error follows.
        let mixed = [0u8, 0, 0, 0, 9, 0, 0, 0];
        assert_eq!(s.complete(&mixed, 4), Ok(CompleteRun { len: 4, messages: 1 }));
        assert!(s.complete(&mixed[4..], 4).is_err());
        assert_eq!(s.messages(&mixed[..4]).collect::<Vec<_>>(), [&[][..]]);
    }
}
