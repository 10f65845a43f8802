//! The replay ring: every frame sent and not yet acked, in seq order, bounded in bytes and in
//! frames, allocated once. Items are stored (not encoded frames) because a replayed frame
//! carries a fresh ack.

use alloc::vec;
use alloc::vec::Vec;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    offset: u32,
    len: u32,
}

/// Why an item does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingFull;

/// Fixed-capacity ring of items keyed by consecutive u64 sequence numbers.
#[derive(Debug)]
pub(crate) struct ReplayRing {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Offset of the oldest item's first byte.
    byte_head: usize,
    byte_used: usize,
    /// Index of the oldest entry.
    entry_head: usize,
    entry_count: usize,
    /// Seq of the oldest entry (or of the next push when empty).
    first_seq: u64,
    /// Bumped by [`clear`](Self::clear): seqs restart, so a lent handle from before must not
    /// find the new item with its number.
    epoch: u32,
}

impl ReplayRing {
    pub(crate) fn new(bytes: u32, frames: u32) -> Self {
        Self {
            bytes: vec![0; bytes as usize],
            entries: vec![Entry::default(); frames as usize],
            byte_head: 0,
            byte_used: 0,
            entry_head: 0,
            entry_count: 0,
            first_seq: 0,
            epoch: 0,
        }
    }

    /// Drop everything and restart at seq 0, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.byte_head = 0;
        self.byte_used = 0;
        self.entry_head = 0;
        self.entry_count = 0;
        self.first_seq = 0;
    }

    /// Empty the ring and number the next item `seq` (tests start near u32 wraparound).
    #[cfg(test)]
    pub(crate) fn restart_at(&mut self, seq: u64) {
        self.clear();
        self.first_seq = seq;
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + self.entry_count as u64
    }
    pub(crate) fn frames(&self) -> usize {
        self.entry_count
    }
    pub(crate) fn bytes_used(&self) -> usize {
        self.byte_used
    }
    pub(crate) fn is_full_for(&self, len: usize) -> bool {
        self.entry_count == self.entries.len() || self.bytes.len() - self.byte_used < len
    }

    /// Where an item of `len` bytes would start, if it fits.
    #[inline]
    fn tail_for(&self, len: usize) -> Result<usize, RingFull> {
        if self.is_full_for(len) {
            return Err(RingFull);
        }
        let offset = self.byte_head + self.byte_used;
        Ok(if offset >= self.bytes.len() { offset - self.bytes.len() } else { offset })
    }

    /// Append an item made of `parts`, concatenated. Its seq is [`end_seq`](Self::end_seq).
    pub(crate) fn push(&mut self, parts: &[&[u8]]) -> Result<(), RingFull> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let offset = self.tail_for(len)?;
        let cap = self.bytes.len();
        if offset + len <= cap {
            // Fast path: the item lies contiguous.
            let mut at = offset;
            for part in parts {
                self.bytes[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        } else {
            let mut at = offset;
            for part in parts {
                let mut part: &[u8] = part;
                while !part.is_empty() {
                    let run = (cap - at).min(part.len());
                    self.bytes[at..at + run].copy_from_slice(&part[..run]);
                    part = &part[run..];
                    at += run;
                    if at == cap {
                        at = 0;
                    }
                }
            }
        }
        self.record(offset, len);
        Ok(())
    }

    /// [`push`](Self::push) of `[header, payload]`, with the header (a few bytes) copied
    /// byte by byte when the item lies contiguous.
    #[inline]
    pub(crate) fn push_with_header(&mut self, header: &[u8], payload: &[u8]) -> Result<(), RingFull> {
        let len = header.len() + payload.len();
        let offset = self.tail_for(len)?;
        let Some(dest) = self.bytes.get_mut(offset..offset + len) else {
            return self.push(&[header, payload]);
        };
        let (h, p) = dest.split_at_mut(header.len());
        for (d, s) in h.iter_mut().zip(header) {
            *d = *s;
        }
        p.copy_from_slice(payload);
        self.record(offset, len);
        Ok(())
    }

    /// Append `header` + `payload` to the newest item (which keeps its seq), if the ring has
    /// the bytes. The item may come to wrap; [`get`](Self::get) returns it in two slices then.
    #[inline(always)]
    pub(crate) fn extend_last(&mut self, header: &[u8], payload: &[u8]) -> Result<(), RingFull> {
        let len = header.len() + payload.len();
        if self.entry_count == 0 || self.bytes.len() - self.byte_used < len {
            return Err(RingFull);
        }
        let cap = self.bytes.len();
        let mut at = self.byte_head + self.byte_used;
        if at >= cap {
            at -= cap;
        }
        match self.bytes.get_mut(at..at + len) {
            Some(dest) => {
                let (h, p) = dest.split_at_mut(header.len());
                if let ([d], [s]) = (&mut *h, header) {
                    // A batched message's length prefix: one byte below 128.
                    *d = *s;
                } else {
                    for (d, s) in h.iter_mut().zip(header) {
                        *d = *s;
                    }
                }
                p.copy_from_slice(payload);
            }
            None => self.write_wrapping(at, header, payload),
        }
        let mut idx = self.entry_head + self.entry_count - 1;
        if idx >= self.entries.len() {
            idx -= self.entries.len();
        }
        self.entries[idx].len += len as u32;
        self.byte_used += len;
        Ok(())
    }

    /// Copy `header` then `payload` to `at`, wrapping at the end of the ring.
    #[cold]
    fn write_wrapping(&mut self, mut at: usize, header: &[u8], payload: &[u8]) {
        let cap = self.bytes.len();
        for part in [header, payload] {
            let mut part: &[u8] = part;
            while !part.is_empty() {
                let run = (cap - at).min(part.len());
                self.bytes[at..at + run].copy_from_slice(&part[..run]);
                part = &part[run..];
                at += run;
                if at == cap {
                    at = 0;
                }
            }
        }
    }

    fn record(&mut self, offset: usize, len: usize) {
        let mut idx = self.entry_head + self.entry_count;
        if idx >= self.entries.len() {
            idx -= self.entries.len();
        }
        self.entries[idx] = Entry { offset: offset as u32, len: len as u32 };
        self.entry_count += 1;
        self.byte_used += len;
    }

    /// Drop every item with seq below `seq`. Returns how many were dropped.
    pub(crate) fn trim_to(&mut self, seq: u64) -> usize {
        let mut dropped = 0;
        while self.entry_count > 0 && self.first_seq < seq {
            let e = self.entries[self.entry_head];
            self.byte_used -= e.len as usize;
            let mut head = e.offset as usize + e.len as usize;
            if head >= self.bytes.len() {
                head -= self.bytes.len();
            }
            self.byte_head = head;
            self.entry_head += 1;
            if self.entry_head == self.entries.len() {
                self.entry_head = 0;
            }
            self.entry_count -= 1;
            self.first_seq += 1;
            dropped += 1;
        }
        if self.entry_count == 0 {
            // Empty: restart at the front so items are contiguous more often.
            self.byte_head = 0;
            self.first_seq = self.first_seq.max(seq);
        }
        dropped
    }

    /// The item with sequence `seq` as one or two slices (it may wrap), if held.
    #[inline(always)]
    pub(crate) fn get(&self, seq: u64) -> Option<(&[u8], &[u8])> {
        if seq < self.first_seq || seq >= self.end_seq() {
            return None;
        }
        let mut idx = self.entry_head + (seq - self.first_seq) as usize;
        if idx >= self.entries.len() {
            idx -= self.entries.len();
        }
        let e = self.entries[idx];
        let (start, len) = (e.offset as usize, e.len as usize);
        let first = (self.bytes.len() - start).min(len);
        Some((&self.bytes[start..start + first], &self.bytes[..len - first]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(r: &ReplayRing, seq: u64) -> Vec<u8> {
        let (a, b) = r.get(seq).expect("held");
        [a, b].concat()
    }

    #[test]
    fn push_trim_wrap() {
        let mut r = ReplayRing::new(10, 3);
        r.push(&[b"abcd"]).expect("fits");
        r.push(&[b"ef", b"gh"]).expect("fits");
        assert_eq!(r.push(&[b"xyz"]), Err(RingFull)); // 8 + 3 > 10
        assert_eq!(r.trim_to(1), 1);
        r.push(&[b"ijklm"]).expect("fits, wrapping");
        assert_eq!(item(&r, 1), b"efgh");
        assert_eq!(item(&r, 2), b"ijklm");
        assert_eq!(r.push(&[b""]), Ok(()));
        assert_eq!(r.push(&[b""]), Err(RingFull)); // frame cap
        assert_eq!(r.trim_to(4), 3);
        assert_eq!(r.frames(), 0);
        assert_eq!(r.bytes_used(), 0);
        assert_eq!(r.first_seq(), 4);
        assert_eq!(r.get(4), None);
    }

    #[test]
    fn push_with_header_contiguous_and_wrapping() {
        let mut r = ReplayRing::new(10, 4);
        r.push_with_header(b"\x01\x02", b"abc").expect("fits");
        assert_eq!(item(&r, 0), b"\x01\x02abc");
        r.trim_to(1);
        // Tail at 5, 5 bytes free before the end: 3 + 4 = 7 wraps.
        r.push_with_header(b"xyz", b"1234").expect("fits, wrapping");
        assert_eq!(item(&r, 1), b"xyz1234");
        assert_eq!(r.push_with_header(b"h", b"1234"), Err(RingFull), "3 bytes left");
        r.push_with_header(b"h", b"12").expect("exactly fills");
        assert_eq!(item(&r, 2), b"h12");
        assert_eq!(r.bytes_used(), 10);
    }

    #[test]
    fn extend_last_grows_the_newest_item_across_the_wrap() {
        let mut r = ReplayRing::new(10, 4);
        assert_eq!(r.extend_last(b"x", b""), Err(RingFull), "no item to extend");
        r.push(&[b"abcdef"]).expect("fits");
        r.push(&[b"gh"]).expect("fits at 6..8");
        r.trim_to(1);
        r.extend_last(b"i", b"j").expect("contiguous: 8..10");
        assert_eq!(item(&r, 1), b"ghij");
        r.extend_last(b"k", b"lm").expect("wraps to 0..3");
        assert_eq!(item(&r, 1), b"ghijklm");
        assert_eq!(r.get(1).map(|(a, b)| (a.len(), b.len())), Some((4, 3)));
        assert_eq!(r.bytes_used(), 7);
        assert_eq!(r.extend_last(b"1234", b""), Err(RingFull), "3 bytes left");
        assert_eq!(item(&r, 1), b"ghijklm", "untouched by the refused extension");
        r.push(&[b"no"]).expect("a new item after the extended one");
        assert_eq!(r.frames(), 2);
        assert_eq!(r.trim_to(2), 1);
        assert_eq!(item(&r, 2), b"no");
        assert_eq!(r.bytes_used(), 2);
    }

    #[test]
    fn exact_boundary_trim_then_push() {
        let mut r = ReplayRing::new(4, 2);
        r.push(&[b"abcd"]).expect("fits");
        r.trim_to(1);
        r.push(&[b"wxyz"]).expect("fits after trim");
        assert_eq!(item(&r, 1), b"wxyz");
    }
}
