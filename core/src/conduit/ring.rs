//! The replay ring: every frame sent and not yet acked, in seq order, bounded in bytes and in
//! frames. Items are stored (not encoded frames) because a replayed frame carries a fresh ack.
//!
//! Memory follows live data: the ring starts with no storage and grows by doubling (bytes and
//! entries separately, each up to its cap) when an item does not fit in what it has; the
//! caps bound it, never its allocation up front. Growth copies the held items once into the
//! larger storage, so it happens a few times while a session warms up (log2 of cap over
//! [`MIN_BYTES`] at most) and never in steady state. [`shrink`](ReplayRing::shrink) gives
//! memory back; the ring never shrinks on its own (that would allocate again on the next
//! burst): the driver calls it when the session has been idle for a while.

use alloc::vec;
use alloc::vec::Vec;

/// The smallest byte storage the ring allocates (a session's hello and a few small items).
const MIN_BYTES: usize = 1024;
/// The smallest entry table the ring allocates.
const MIN_ENTRIES: usize = 16;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    offset: u32,
    len: u32,
}

/// Why an item does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingFull;

/// Ring of items keyed by consecutive u64 sequence numbers, bounded by `max_bytes` and
/// `max_frames`, its storage grown on demand.
#[derive(Debug)]
pub(crate) struct ReplayRing {
    /// Storage; its length is the room allocated now (at most `max_bytes`).
    bytes: Vec<u8>,
    /// Entry slots; its length is the room allocated now (at most `max_frames`).
    entries: Vec<Entry>,
    max_bytes: usize,
    max_frames: usize,
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
    /// An empty ring holding at most `bytes` item bytes and `frames` items. Allocates nothing.
    pub(crate) fn new(bytes: u32, frames: u32) -> Self {
        Self {
            bytes: Vec::new(),
            entries: Vec::new(),
            max_bytes: bytes as usize,
            max_frames: frames as usize,
            byte_head: 0,
            byte_used: 0,
            entry_head: 0,
            entry_count: 0,
            first_seq: 0,
            epoch: 0,
        }
    }

    /// Bytes of storage allocated now (item bytes plus entry slots).
    pub(crate) fn allocated(&self) -> usize {
        self.bytes.len() + self.entries.len() * core::mem::size_of::<Entry>()
    }

    /// Grow the storage to both caps now (what a fixed-capacity ring would hold from the
    /// start), so that nothing is allocated later.
    pub(crate) fn reserve_full(&mut self) {
        if self.bytes.len() < self.max_bytes || self.entries.len() < self.max_frames {
            self.relocate(self.max_bytes, self.max_frames);
        }
    }

    /// Give back storage the held items do not need: all of it when the ring is empty, else
    /// down to twice the held items (bytes and entries separately, each only if that frees
    /// three quarters or more of it). Work is bounded by the bytes held. Allocates (the
    /// smaller storage) only when the ring holds items; returns the bytes freed.
    pub(crate) fn shrink(&mut self) -> usize {
        let before = self.allocated();
        if self.entry_count == 0 {
            self.bytes = Vec::new();
            self.entries = Vec::new();
            self.byte_head = 0;
            self.entry_head = 0;
            return before;
        }
        let want_bytes = (2 * self.byte_used).next_power_of_two().max(MIN_BYTES);
        let want_entries = (2 * self.entry_count).next_power_of_two().max(MIN_ENTRIES);
        let bytes = if want_bytes <= self.bytes.len() / 4 { want_bytes } else { self.bytes.len() };
        let entries = if want_entries <= self.entries.len() / 4 { want_entries } else { self.entries.len() };
        if bytes < self.bytes.len() || entries < self.entries.len() {
            self.relocate(bytes, entries);
        }
        before - self.allocated()
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
        self.entry_count == self.max_frames || self.max_bytes - self.byte_used < len
    }

    /// Whether the storage allocated now lacks room for a new item of `len` bytes.
    #[inline]
    fn must_grow_for(&self, len: usize) -> bool {
        self.entry_count == self.entries.len() || self.bytes.len() - self.byte_used < len
    }

    /// Grow the storage (doubling, within the caps) so that `len` more bytes and `frames`
    /// more entries fit. The caller has checked the caps.
    #[cold]
    fn grow(&mut self, len: usize, frames: usize) {
        let need_bytes = self.byte_used + len;
        let mut bytes = self.bytes.len().max(MIN_BYTES);
        while bytes < need_bytes {
            bytes = bytes.saturating_mul(2);
        }
        let need_entries = self.entry_count + frames;
        let mut entries = self.entries.len().max(MIN_ENTRIES);
        while entries < need_entries {
            entries = entries.saturating_mul(2);
        }
        self.relocate(bytes.min(self.max_bytes), entries.min(self.max_frames));
    }

    /// Move the held items into new storage of `bytes` and `entries` slots (each at least
    /// what is held), oldest first at offset 0.
    fn relocate(&mut self, bytes: usize, entries: usize) {
        debug_assert!(bytes >= self.byte_used && entries >= self.entry_count);
        if bytes != self.bytes.len() {
            let mut new = vec![0u8; bytes];
            let cap = self.bytes.len();
            let first = (cap - self.byte_head).min(self.byte_used);
            new[..first].copy_from_slice(&self.bytes[self.byte_head..self.byte_head + first]);
            new[first..self.byte_used].copy_from_slice(&self.bytes[..self.byte_used - first]);
            // Every held item now starts `byte_head` earlier, modulo the old capacity.
            for i in 0..self.entry_count {
                let idx = (self.entry_head + i) % self.entries.len();
                let e = &mut self.entries[idx];
                let off = e.offset as usize;
                e.offset =
                    (if off >= self.byte_head { off - self.byte_head } else { off + cap - self.byte_head }) as u32;
            }
            self.bytes = new;
            self.byte_head = 0;
        }
        if entries != self.entries.len() {
            let mut new = vec![Entry::default(); entries];
            for (i, slot) in new.iter_mut().take(self.entry_count).enumerate() {
                *slot = self.entries[(self.entry_head + i) % self.entries.len()];
            }
            self.entries = new;
            self.entry_head = 0;
        }
    }

    /// Where an item of `len` bytes would start, if it fits (growing the storage if needed).
    #[inline]
    fn tail_for(&mut self, len: usize) -> Result<usize, RingFull> {
        if self.is_full_for(len) {
            return Err(RingFull);
        }
        if self.must_grow_for(len) {
            self.grow(len, 1);
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
        copy_short(p, payload);
        self.record(offset, len);
        Ok(())
    }

    /// Append `header` + `payload` to the newest item (which keeps its seq), if the ring has
    /// the bytes. The item may come to wrap; [`get`](Self::get) returns it in two slices then.
    #[inline(always)]
    pub(crate) fn extend_last(&mut self, header: &[u8], payload: &[u8]) -> Result<(), RingFull> {
        let len = header.len() + payload.len();
        if self.entry_count == 0 || self.max_bytes - self.byte_used < len {
            return Err(RingFull);
        }
        if self.bytes.len() - self.byte_used < len {
            self.grow(len, 0);
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
                copy_short(p, payload);
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

    /// [`extend_last`](Self::extend_last) by a `prefix` of one or two bytes (a batched
    /// message's length) and a `payload`, when the ring holds an item, its storage has the
    /// bytes without growing and they lie contiguous after the tail: `true`, the ring holding
    /// exactly what `extend_last(prefix, payload)` would have made it hold.
    /// Otherwise `false` with nothing changed (the caller takes the general path, which grows,
    /// wraps or refuses). The session's per-message fast path.
    #[inline(always)]
    pub(crate) fn try_extend_last_contiguous<const N: usize>(&mut self, prefix: [u8; N], payload: &[u8]) -> bool {
        debug_assert!(self.bytes.len() <= self.max_bytes, "the storage never exceeds the cap");
        let len = N + payload.len();
        let cap = self.bytes.len();
        let tail = self.byte_head + self.byte_used;
        // Where the next byte goes and the free bytes from there without wrapping: up to the
        // end of the storage, or, once the tail has wrapped, up to the oldest item.
        let (at, room) = if tail < cap { (tail, cap - tail) } else { (tail - cap, cap - self.byte_used) };
        if len > room || self.entry_count == 0 {
            return false;
        }
        let mut idx = self.entry_head + self.entry_count - 1;
        if idx >= self.entries.len() {
            idx -= self.entries.len();
        }
        let Some(e) = self.entries.get_mut(idx) else { return false };
        let Some((d, rest)) = self.bytes.get_mut(at..at + len).and_then(|b| b.split_first_chunk_mut::<N>()) else {
            return false;
        };
        e.len += len as u32;
        self.byte_used += len;
        *d = prefix;
        copy_short(rest, payload);
        true
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
            // Items lie back to back from `byte_head`: the next one starts `len` further on.
            // (Not from the entry's offset: an empty item pushed when the tail stood exactly
            // at the end of the storage was recorded at offset 0, which a later growth keeps
            // at 0 while the items after it moved on; the head taken from it then pointed
            // before the live items, and the next pushes overwrote them.)
            let mut head = self.byte_head + e.len as usize;
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

    /// Move the held items to the front of the storage, in place (no allocation; work in
    /// proportion to the storage), so that every item lies contiguous: [`get`](Self::get)
    /// then returns each one whole in its first slice. For reading the unacked items at
    /// once (a lost session's leftovers), never on the data path.
    pub(crate) fn make_contiguous(&mut self) {
        if self.byte_head == 0 {
            return;
        }
        let cap = self.bytes.len();
        self.bytes.rotate_left(self.byte_head);
        for i in 0..self.entry_count {
            let idx = (self.entry_head + i) % self.entries.len();
            let e = &mut self.entries[idx];
            e.offset = ((e.offset as usize + cap - self.byte_head) % cap) as u32;
        }
        self.byte_head = 0;
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

/// Copy `src` into `dst` (of the same length): for up to 32 bytes with two overlapping
/// loads and stores of a fixed width (a few instructions, no call), else with
/// `copy_from_slice`. The loads are integers of distinct widths so that the compiler keeps
/// them apart instead of merging the branches back into one `memcpy` of a variable length.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n != dst.len() || n > 32 {
        dst.copy_from_slice(src);
    } else if n >= 16 {
        let (a, b) = (u128::from_ne_bytes(head(src)), u128::from_ne_bytes(head(&src[n - 16..])));
        dst[..16].copy_from_slice(&a.to_ne_bytes());
        dst[n - 16..].copy_from_slice(&b.to_ne_bytes());
    } else if n >= 8 {
        let (a, b) = (u64::from_ne_bytes(head(src)), u64::from_ne_bytes(head(&src[n - 8..])));
        dst[..8].copy_from_slice(&a.to_ne_bytes());
        dst[n - 8..].copy_from_slice(&b.to_ne_bytes());
    } else if n >= 4 {
        let (a, b) = (u32::from_ne_bytes(head(src)), u32::from_ne_bytes(head(&src[n - 4..])));
        dst[..4].copy_from_slice(&a.to_ne_bytes());
        dst[n - 4..].copy_from_slice(&b.to_ne_bytes());
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// The first `N` bytes of `s` (which has at least `N`).
#[inline(always)]
fn head<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(r: &ReplayRing, seq: u64) -> Vec<u8> {
        let (a, b) = r.get(seq).expect("held");
        [a, b].concat()
    }

    #[test]
    fn copy_short_copies_every_length() {
        let src: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37).wrapping_add(1)).collect();
        for n in 0..=src.len() {
            let mut dst = vec![0u8; n];
            copy_short(&mut dst, &src[..n]);
            assert_eq!(dst, &src[..n], "length {n}");
        }
    }

    /// The ring's held items, its byte count and its item count.
    fn contents(r: &ReplayRing) -> (Vec<Vec<u8>>, usize, usize) {
        ((r.first_seq()..r.end_seq()).map(|s| item(r, s)).collect(), r.bytes_used(), r.frames())
    }

    /// `try_extend_last_contiguous` against `extend_last` on a ring driven through the same
    /// random pushes, trims and extensions (small caps, so that it wraps, grows and fills):
    /// when it extends, the ring holds what `extend_last` made the other hold; when it
    /// declines, the ring is unchanged. Seeds are printed.
    #[test]
    fn the_contiguous_extension_matches_extend_last() {
        extern crate std;
        for seed in 1..=200u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let (bytes, frames) = ([40u32, 100, 3000][next(3) as usize], [3u32, 8, 64][next(3) as usize]);
            let (mut fast, mut general) = (ReplayRing::new(bytes, frames), ReplayRing::new(bytes, frames));
            let mut extended = 0;
            for step in 0..400 {
                let payload: Vec<u8> = (0..next(40)).map(|i| (i as u8) ^ (step as u8)).collect();
                // A one- or two-byte prefix, as the session's length varints.
                let prefix: Vec<u8> = (0..1 + next(2)).map(|_| next(256) as u8).collect();
                let fast_extend = |fast: &mut ReplayRing| match prefix[..] {
                    [a] => fast.try_extend_last_contiguous([a], &payload),
                    [a, b] => fast.try_extend_last_contiguous([a, b], &payload),
                    _ => unreachable!("one or two bytes"),
                };
                match next(10) {
                    0..=1 => {
                        let a = fast.push(&[&payload]);
                        assert_eq!(a, general.push(&[&payload]), "seed {seed} step {step}");
                    }
                    2 => {
                        let to = fast.first_seq() + next(3);
                        assert_eq!(fast.trim_to(to), general.trim_to(to), "seed {seed} step {step}");
                    }
                    _ => {
                        let before = contents(&fast);
                        let want = general.extend_last(&prefix, &payload);
                        if fast_extend(&mut fast) {
                            extended += 1;
                            assert_eq!(want, Ok(()), "seed {seed} step {step}: extended where extend_last refused");
                        } else {
                            assert_eq!(contents(&fast), before, "seed {seed} step {step}: declined but changed");
                            assert_eq!(fast.extend_last(&prefix, &payload), want, "seed {seed} step {step}");
                        }
                    }
                }
                assert_eq!(contents(&fast), contents(&general), "seed {seed} step {step}");
            }
            std::println!("the_contiguous_extension_matches_extend_last seed {seed}: {extended} fast extensions");
        }
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
    fn make_contiguous_unwraps_every_item_in_place() {
        for shift in 0..10 {
            let mut r = ReplayRing::new(10, 8);
            r.reserve_full();
            r.push(&[&vec![0u8; shift]]).expect("fits");
            r.trim_to(1);
            r.push(&[b"abcd"]).expect("fits");
            r.push(&[b"efg"]).expect("fits");
            r.extend_last(b"h", b"i").expect("fits");
            let allocated = r.allocated();
            r.make_contiguous();
            assert_eq!(r.allocated(), allocated, "no new storage");
            assert_eq!(r.get(1), Some((&b"abcd"[..], &b""[..])), "shift {shift}");
            assert_eq!(r.get(2), Some((&b"efghi"[..], &b""[..])), "shift {shift}");
            r.push(&[b"j"]).expect("fits after");
            assert_eq!(item(&r, 3), b"j");
        }
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

#[cfg(test)]
mod growth_tests {
    use super::*;

    fn item(r: &ReplayRing, seq: u64) -> Vec<u8> {
        let (a, b) = r.get(seq).expect("held");
        [a, b].concat()
    }

    #[test]
    fn allocates_nothing_until_the_first_push_and_grows_by_doubling_to_the_caps() {
        let mut r = ReplayRing::new(1 << 20, 4096);
        assert_eq!(r.allocated(), 0, "a new ring holds no storage");
        r.push(&[b"hello"]).expect("fits");
        assert_eq!(r.bytes.len(), MIN_BYTES);
        assert_eq!(r.entries.len(), MIN_ENTRIES);
        let big = vec![7u8; 3000];
        r.push(&[&big]).expect("fits after growing");
        assert_eq!(r.bytes.len(), 4096, "doubled until 3005 bytes fit");
        for i in 0..100u8 {
            r.push(&[&[i]]).expect("fits");
        }
        assert_eq!(r.entries.len(), 128, "entries doubled separately");
        assert_eq!(item(&r, 0), b"hello");
        assert_eq!(item(&r, 1), big);
        assert_eq!(item(&r, 101), [99]);
        // The caps bind, not the allocation.
        let mut small = ReplayRing::new(3000, 3);
        small.push(&[&[1u8; 1500]]).expect("fits");
        small.push(&[&[2u8; 1500]]).expect("fits: exactly the cap");
        assert_eq!(small.bytes.len(), 3000, "growth stops at the byte cap");
        assert_eq!(small.push(&[b""]), Ok(()));
        assert_eq!(small.entries.len(), 3, "growth stops at the frame cap");
        assert_eq!(small.push(&[b""]), Err(RingFull));
        assert_eq!(small.push_with_header(b"", b""), Err(RingFull));
    }

    /// Items that wrap in the old storage come out whole and in order from the new one, for
    /// every head position; extending the newest item grows the ring too.
    #[test]
    fn growth_keeps_wrapped_items_and_their_order() {
        for shift in 0..MIN_BYTES {
            let mut r = ReplayRing::new(1 << 16, 64);
            // Move the head to `shift` with a filler item, then trim it.
            r.push(&[&vec![0u8; shift]]).expect("fits");
            r.push(&[b"x"]).expect("keeps the ring non-empty");
            r.trim_to(1);
            let mut expect = vec![b"x".to_vec()];
            let mut i = 0u8;
            while r.bytes.len() == MIN_BYTES {
                let it = vec![i; 100 + usize::from(i) % 7];
                r.push(&[&it]).expect("fits");
                expect.push(it);
                i = i.wrapping_add(1);
            }
            r.extend_last(b"+", b"tail").expect("room");
            expect.last_mut().expect("items").extend_from_slice(b"+tail");
            for (k, want) in expect.iter().enumerate() {
                assert_eq!(&item(&r, 1 + k as u64), want, "shift {shift}, item {k}");
            }
        }
    }

    #[test]
    fn extend_last_grows_the_storage() {
        let mut r = ReplayRing::new(1 << 16, 4);
        r.push(&[b"a"]).expect("fits");
        let more = vec![3u8; 5000];
        r.extend_last(b"h", &more).expect("grows");
        assert!(r.bytes.len() >= 5002);
        assert_eq!(item(&r, 0).len(), 5002);
        assert_eq!(r.extend_last(b"", &vec![0u8; 1 << 16]), Err(RingFull), "past the cap");
    }

    #[test]
    fn shrink_frees_an_empty_ring_and_compacts_a_mostly_empty_one() {
        let mut r = ReplayRing::new(1 << 20, 4096);
        for i in 0..200u64 {
            r.push(&[&[i as u8; 1000]]).expect("fits");
        }
        assert_eq!(r.bytes.len(), 256 << 10);
        assert_eq!(r.entries.len(), 256);
        // Nothing to give back while the held items need most of it.
        assert_eq!(r.shrink(), 0);
        r.trim_to(198);
        let freed = r.shrink();
        assert!(freed > 0);
        assert_eq!(r.bytes.len(), 4096, "2 items of 1000 bytes: twice that, rounded up");
        assert_eq!(r.entries.len(), MIN_ENTRIES);
        assert_eq!(item(&r, 198), [198u8; 1000]);
        assert_eq!(item(&r, 199), [199u8; 1000]);
        r.push(&[b"after"]).expect("fits");
        assert_eq!(item(&r, 200), b"after");
        r.trim_to(201);
        assert!(r.shrink() > 0);
        assert_eq!(r.allocated(), 0, "an empty ring holds no storage after shrink");
        assert_eq!(r.first_seq(), 201, "numbering goes on");
        r.push(&[b"again"]).expect("grows again");
        assert_eq!(item(&r, 201), b"again");
    }

    /// Found by the `lending_batch` fuzz target: an empty item pushed when the tail stood at
    /// the end of the storage, then a growth, then a trim past it: the next pushes overwrote
    /// the live item after it (delivered with another item's bytes).
    #[test]
    fn a_trim_past_an_empty_item_at_the_end_of_the_storage_keeps_the_items_after_it() {
        let mut r = ReplayRing::new(4096, 4096);
        let mk = |len: usize, next: u8| -> Vec<u8> { (0..len).map(|i| (i as u8) ^ next).collect() };
        let items = [mk(512, 1), mk(256, 2), mk(1280, 3), mk(0, 4), mk(652, 5)];
        for it in &items {
            r.push(&[it]).expect("fits");
        }
        r.trim_to(4);
        assert_eq!(item(&r, 4), items[4]);
        r.push(&[&mk(777, 6)]).expect("fits");
        assert_eq!(item(&r, 4), items[4], "after 6");
        r.push(&[&mk(792, 7)]).expect("fits");
        assert_eq!(item(&r, 4), items[4], "after 7");
    }
}
