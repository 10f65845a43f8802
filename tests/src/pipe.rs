//! One direction of a simulated byte-stream link: bytes written by one side arrive at the
//! other after a latency, in order, in chunks the reader chooses (so frames split anywhere).
//! Faults: the stream can end at any byte offset (EOF or reset, mid-frame included), be
//! blackholed (bytes and EOF vanish: a half-open link), or be stalled (delivery paused).

use std::collections::VecDeque;

use sotto_proto::{Duration, Instant};

use crate::bytering::ByteRing;

/// How a stream ends for its reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// End of stream: the reader sees EOF (clean on a frame boundary, truncated inside one).
    Eof,
    /// The connection is reset: both sides see the link die at once.
    Reset,
}

/// A link message in flight: its place in the stream and when it arrives.
#[derive(Clone, Copy, Debug)]
struct Seg {
    start: u64,
    len: u32,
    due: Instant,
}

#[derive(Clone, Copy, Debug)]
struct End {
    offset: u64,
    kind: EndKind,
    due: Instant,
}

/// A cut placed after frames not written yet.
#[derive(Clone, Copy, Debug)]
struct PendingCut {
    frames_left: u64,
    extra: u32,
    kind: EndKind,
}

/// The bytes would not fit: a queue fed by the peer grew past its bound (invariant I6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeOverflow;

/// One direction of a connection.
#[derive(Debug)]
pub(crate) struct Pipe {
    bytes: ByteRing,
    segs: VecDeque<Seg>,
    seg_cap: usize,
    written: u64,
    delivered: u64,
    end: Option<End>,
    pending_cut: Option<PendingCut>,
    blackhole: bool,
    reader_gone: bool,
    stall_until: Instant,
    /// Link messages accepted so far.
    pub(crate) frames_written: u64,
}

impl Pipe {
    /// A pipe holding up to `byte_cap` bytes and `seg_cap` messages in flight.
    pub(crate) fn new(byte_cap: usize, seg_cap: usize) -> Self {
        Self {
            bytes: ByteRing::new(byte_cap),
            segs: VecDeque::with_capacity(seg_cap),
            seg_cap,
            written: 0,
            delivered: 0,
            end: None,
            pending_cut: None,
            blackhole: false,
            reader_gone: false,
            stall_until: Instant::ZERO,
            frames_written: 0,
        }
    }

    /// Back to a fresh, empty stream (slot reuse); keeps the allocations.
    pub(crate) fn reset(&mut self) {
        self.bytes.clear();
        self.segs.clear();
        self.written = 0;
        self.delivered = 0;
        self.end = None;
        self.pending_cut = None;
        self.blackhole = false;
        self.reader_gone = false;
        self.stall_until = Instant::ZERO;
        self.frames_written = 0;
    }

    /// Bytes written and not yet delivered.
    pub(crate) fn in_flight(&self) -> usize {
        self.bytes.len()
    }

    /// A one-line state summary for failure messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "[written {} delivered {} in_flight {} segs {:?} end {:?} cut {:?} blackhole {} reader_gone {} stall {:?}]",
            self.written,
            self.delivered,
            self.bytes.len(),
            self.segs.iter().take(3).collect::<Vec<_>>(),
            self.end,
            self.pending_cut,
            self.blackhole,
            self.reader_gone,
            self.stall_until
        )
    }

    /// Stream offset of the next byte to deliver.
    pub(crate) fn delivered_offset(&self) -> u64 {
        self.delivered
    }

    fn last_due(&self) -> Instant {
        self.segs.back().map_or(Instant::ZERO, |s| s.due)
    }

    /// Write one link message (prefix included) at `now`; it arrives `latency` later, never
    /// before anything written earlier.
    pub(crate) fn write(&mut self, now: Instant, latency: Duration, msg: &[u8]) -> Result<(), PipeOverflow> {
        if self.blackhole || self.reader_gone {
            return Ok(());
        }
        let start = self.written;
        if let Some(cut) = self.pending_cut {
            if cut.frames_left == 0 {
                let offset = start + u64::from(cut.extra).min(msg.len() as u64);
                if self.end.is_none_or(|e| e.offset > offset) {
                    self.end = Some(End { offset, kind: cut.kind, due: now });
                }
                self.pending_cut = None;
            } else {
                self.pending_cut = Some(PendingCut { frames_left: cut.frames_left - 1, ..cut });
            }
        }
        let mut take = msg.len();
        if let Some(end) = self.end {
            take = take.min(end.offset.saturating_sub(start) as usize);
        }
        self.frames_written += 1;
        if take == 0 {
            return Ok(());
        }
        if self.segs.len() >= self.seg_cap || !self.bytes.push(&msg[..take]) {
            return Err(PipeOverflow);
        }
        let due = now.saturating_add(latency).max(self.last_due());
        self.segs.push_back(Seg { start, len: take as u32, due });
        self.written += take as u64;
        Ok(())
    }

    /// The writer closed its end: EOF after the bytes already written.
    pub(crate) fn close_write(&mut self, now: Instant, latency: Duration) {
        if self.blackhole || self.reader_gone {
            return;
        }
        if self.end.is_none_or(|e| e.offset > self.written) {
            let due = now.saturating_add(latency).max(self.last_due());
            self.end = Some(End { offset: self.written, kind: EndKind::Eof, due });
            self.pending_cut = None;
        }
    }

    /// The reader closed its end: everything in flight and everything written later is lost.
    pub(crate) fn reader_gone(&mut self) {
        self.reader_gone = true;
        self.delivered = self.written;
        self.bytes.clear();
        self.segs.clear();
        self.end = None;
    }

    /// From now on bytes and EOF vanish (one direction of a half-open link). What is in
    /// flight is lost too.
    pub(crate) fn blackhole(&mut self) {
        self.blackhole = true;
        self.delivered = self.written;
        self.bytes.clear();
        self.segs.clear();
        self.end = None;
        self.pending_cut = None;
    }

    /// Whether the pipe is blackholed.
    pub(crate) fn is_blackholed(&self) -> bool {
        self.blackhole
    }

    /// Pause delivery until `until` (`Instant::FAR_FUTURE`: until [`unstall`](Self::unstall)).
    pub(crate) fn stall(&mut self, until: Instant) {
        self.stall_until = until;
    }

    /// Resume delivery.
    pub(crate) fn unstall(&mut self) {
        self.stall_until = Instant::ZERO;
    }

    /// End the stream for the reader at `offset` bytes from its start (clamped to what was
    /// already delivered), once `due` has passed.
    pub(crate) fn cut_at(&mut self, offset: u64, kind: EndKind, due: Instant) {
        let offset = offset.max(self.delivered);
        if self.blackhole || self.reader_gone || self.end.is_some_and(|e| e.offset <= offset) {
            // A stream ends once: an earlier end stays (bytes past it may already be gone).
            return;
        }
        self.end = Some(End { offset, kind, due });
        self.pending_cut = None;
        while let Some(back) = self.segs.back_mut() {
            if back.start >= offset {
                self.segs.pop_back();
            } else {
                back.len = back.len.min((offset - back.start) as u32);
                break;
            }
        }
        if self.written > offset {
            // Drop the bytes past the cut from the tail of the ring: rebuild by draining.
            let keep = (offset - self.delivered) as usize;
            let mut drop_n = self.bytes.len() - keep;
            let mut scratch = [0u8; 256];
            // Rotate: pop the kept bytes and push them back, then drop the rest.
            let mut kept = keep;
            while kept > 0 {
                let n = kept.min(scratch.len());
                self.bytes.pop_into(&mut scratch[..n]);
                let _ = self.bytes.push(&scratch[..n]);
                kept -= n;
            }
            while drop_n > 0 {
                let n = drop_n.min(scratch.len());
                self.bytes.pop_into(&mut scratch[..n]);
                drop_n -= n;
            }
            self.written = offset;
        }
    }

    /// End the stream after `frames` more whole link messages (counting those in flight, then
    /// future ones) and `extra` bytes of the next: `extra > 0` cuts mid-frame.
    pub(crate) fn cut_after_frames(&mut self, frames: u64, extra: u32, kind: EndKind, now: Instant) {
        if self.blackhole || self.reader_gone || self.end.is_some() {
            return;
        }
        let queued = self.segs.len() as u64;
        if frames < queued {
            let seg = self.segs[frames as usize];
            let offset = seg.start + u64::from(extra).min(u64::from(seg.len));
            self.cut_at(offset, kind, now);
        } else {
            self.pending_cut = Some(PendingCut { frames_left: frames - queued, extra, kind });
        }
    }

    /// Faults stop: resume delivery and forget cuts that have not taken effect yet (a cut
    /// already applied stays: bytes past it are gone, so the stream must still end there).
    pub(crate) fn heal(&mut self) {
        self.stall_until = Instant::ZERO;
        self.pending_cut = None;
        if self.end.is_some_and(|e| e.offset > self.written) {
            self.end = None;
        }
    }

    /// When the next delivery or end of stream is due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.blackhole || self.reader_gone {
            return None;
        }
        let t = if let Some(seg) = self.segs.front() {
            seg.due
        } else {
            match self.end {
                Some(end) if end.offset == self.delivered => end.due,
                _ => return None,
            }
        };
        Some(t.max(self.stall_until))
    }

    /// Deliver up to `out.len()` bytes due at `now` into `out`; returns how many.
    pub(crate) fn take(&mut self, now: Instant, out: &mut [u8]) -> usize {
        if now < self.stall_until {
            return 0;
        }
        let mut n = 0;
        while n < out.len() {
            let Some(seg) = self.segs.front().copied() else { break };
            if seg.due > now {
                break;
            }
            let seg_end = seg.start + u64::from(seg.len);
            let want = ((seg_end - self.delivered) as usize).min(out.len() - n);
            let got = self.bytes.pop_into(&mut out[n..n + want]);
            debug_assert_eq!(got, want);
            n += got;
            self.delivered += got as u64;
            if self.delivered == seg_end {
                self.segs.pop_front();
            }
        }
        n
    }

    /// The end of stream, if the reader has reached it at `now`.
    pub(crate) fn end_reached(&self, now: Instant) -> Option<EndKind> {
        if self.blackhole || self.reader_gone || now < self.stall_until {
            return None;
        }
        match self.end {
            Some(end) if end.offset == self.delivered && self.segs.is_empty() && end.due <= now => Some(end.kind),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn latency_order_and_chunks() {
        let mut p = Pipe::new(64, 8);
        let lat = Duration::from_millis(5);
        p.write(at(0), lat, b"abcd").expect("fits");
        p.write(at(1), lat, b"ef").expect("fits");
        assert_eq!(p.next_due(), Some(at(5)));
        let mut out = [0u8; 3];
        assert_eq!(p.take(at(4), &mut out), 0);
        assert_eq!(p.take(at(5), &mut out), 3);
        assert_eq!(p.take(at(5), &mut out), 1);
        assert_eq!(p.next_due(), Some(at(6)));
        assert_eq!(p.take(at(6), &mut out), 2);
        p.close_write(at(6), lat);
        assert_eq!(p.end_reached(at(7)), None);
        assert_eq!(p.end_reached(at(11)), Some(EndKind::Eof));
    }

    #[test]
    fn cut_mid_frame_and_future_cut() {
        let mut p = Pipe::new(64, 8);
        p.write(at(0), Duration::ZERO, b"abcd").expect("fits");
        p.write(at(0), Duration::ZERO, b"efgh").expect("fits");
        p.cut_after_frames(1, 2, EndKind::Reset, at(0));
        let mut out = [0u8; 16];
        assert_eq!(p.take(at(0), &mut out), 6);
        assert_eq!(&out[..6], b"abcdef");
        assert_eq!(p.end_reached(at(0)), Some(EndKind::Reset));

        let mut p = Pipe::new(64, 8);
        p.cut_after_frames(1, 1, EndKind::Eof, at(0));
        p.write(at(0), Duration::ZERO, b"abcd").expect("fits");
        p.write(at(0), Duration::ZERO, b"efgh").expect("fits");
        p.write(at(0), Duration::ZERO, b"ijkl").expect("fits");
        assert_eq!(p.take(at(0), &mut out), 5);
        assert_eq!(p.end_reached(at(0)), Some(EndKind::Eof));
    }

    #[test]
    fn blackhole_and_stall() {
        let mut p = Pipe::new(64, 8);
        p.write(at(0), Duration::ZERO, b"ab").expect("fits");
        p.stall(at(10));
        assert_eq!(p.next_due(), Some(at(10)));
        p.blackhole();
        p.write(at(0), Duration::ZERO, b"cd").expect("vanishes");
        p.close_write(at(0), Duration::ZERO);
        assert_eq!(p.next_due(), None);
        assert_eq!(p.end_reached(at(20)), None);
    }
}
