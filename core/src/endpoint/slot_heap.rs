//! A min-heap of (time, slot) with each slot's position tracked, so an entry is removed or
//! moved in O(log n) the moment its slot changes: no stale entries pile up (a peer opening
//! and closing links fast cannot grow it), and once it has grown to the most slots live at
//! once it never allocates again.

use alloc::vec::Vec;

use crate::time::Instant;

/// No entry for this slot.
const ABSENT: u32 = u32::MAX;

/// Deadlines (or start times) keyed by slot number; the earliest first.
#[derive(Debug, Default)]
pub(crate) struct SlotHeap {
    heap: Vec<(Instant, u32)>,
    /// Position in `heap` of each slot's entry, or `ABSENT`.
    pos: Vec<u32>,
}

impl SlotHeap {
    /// An empty heap (allocates nothing until the first entry).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Room allocated (for tests of what construction allocates).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.heap.capacity() + self.pos.capacity()
    }

    /// The earliest entry.
    pub(crate) fn peek(&self) -> Option<(Instant, u32)> {
        self.heap.first().copied()
    }

    /// Set `slot`'s time to `at` (inserting or moving its entry).
    pub(crate) fn set(&mut self, slot: u32, at: Instant) {
        let s = slot as usize;
        if s >= self.pos.len() {
            self.pos.resize(s + 1, ABSENT);
        }
        let p = self.pos[s];
        if p == ABSENT {
            self.heap.push((at, slot));
            let i = self.heap.len() - 1;
            self.pos[s] = i as u32;
            self.sift_up(i);
        } else {
            let i = p as usize;
            self.heap[i].0 = at;
            self.sift_up(i);
            self.sift_down(self.pos[s] as usize);
        }
    }

    /// Remove `slot`'s entry, if any; returns its time.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<Instant> {
        let p = *self.pos.get(slot as usize)?;
        if p == ABSENT {
            return None;
        }
        let i = p as usize;
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let (at, _) = self.heap.pop()?;
        self.pos[slot as usize] = ABSENT;
        if i < self.heap.len() {
            self.sift_up(i);
            let moved = self.heap[i].1 as usize;
            self.sift_down(self.pos[moved] as usize);
        }
        Some(at)
    }

    fn key(&self, i: usize) -> (Instant, u32) {
        self.heap[i]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(i) >= self.key(parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.key(l) < self.key(least) {
                least = l;
            }
            if r < self.heap.len() && self.key(r) < self.key(least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_with_moves_and_removals() {
        let mut h = SlotHeap::new();
        assert_eq!(h.capacity(), 0);
        let t = Instant::from_nanos;
        for (slot, at) in [(3u32, 30u64), (1, 10), (7, 70), (2, 20), (5, 50)] {
            h.set(slot, t(at));
        }
        assert_eq!(h.peek(), Some((t(10), 1)));
        h.set(1, t(60)); // moved later
        assert_eq!(h.peek(), Some((t(20), 2)));
        assert_eq!(h.remove(2), Some(t(20)));
        assert_eq!(h.remove(2), None);
        h.set(7, t(5)); // moved earlier
        let mut order = alloc::vec![];
        while let Some((at, slot)) = h.peek() {
            order.push((at.as_nanos(), slot));
            h.remove(slot);
        }
        assert_eq!(order, [(5, 7), (30, 3), (50, 5), (60, 1)]);
        assert_eq!(h.len(), 0);
    }
}
