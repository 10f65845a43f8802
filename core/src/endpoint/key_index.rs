//! Resume-key index: from a key to the session slot that issued it, in O(1) without work
//! proportional to the number of sessions. Open addressing on the key's first eight bytes
//! (keys are random, so they hash themselves); the full key is then compared in constant
//! time. Grows with the keys it holds (it starts empty); removal is backward-shift (no
//! tombstones).

use alloc::vec;
use alloc::vec::Vec;

use crate::wire::ResumeKey;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: ResumeKey,
    slot: u32,
}

/// Map from resume key to slot number, at most half full.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    entries: Vec<Option<Entry>>,
    mask: usize,
    len: usize,
}

fn home(key: &ResumeKey) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key.0[..8]);
    // Mix anyway: a driver may supply low-entropy keys in tests.
    (u64::from_le_bytes(b).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) as usize
}

impl KeyIndex {
    /// An empty index (allocates nothing until the first key).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Table entries allocated (for tests of what construction allocates).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, key: &ResumeKey) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mut pos = home(key) & self.mask;
        loop {
            let e = self.entries[pos]?;
            if e.key.ct_eq(key) {
                return Some(pos);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// The slot that holds `key`.
    pub(crate) fn get(&self, key: &ResumeKey) -> Option<u32> {
        self.find(key).and_then(|p| self.entries[p].map(|e| e.slot))
    }

    /// Map `key` to `slot` (replacing an existing mapping). Doubles the table when it would
    /// be more than half full (amortized O(1)).
    pub(crate) fn insert(&mut self, key: ResumeKey, slot: u32) {
        if let Some(p) = self.find(&key) {
            self.entries[p] = Some(Entry { key, slot });
            return;
        }
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(Entry { key, slot });
        self.len += 1;
    }

    fn place(&mut self, e: Entry) {
        let mut pos = home(&e.key) & self.mask;
        while self.entries[pos].is_some() {
            pos = (pos + 1) & self.mask;
        }
        self.entries[pos] = Some(e);
    }

    fn grow(&mut self) {
        let cap = (self.entries.len() * 2).max(16);
        let old = core::mem::replace(&mut self.entries, vec![None; cap]);
        self.mask = cap - 1;
        for e in old.into_iter().flatten() {
            self.place(e);
        }
    }

    /// Remove `key` if present.
    pub(crate) fn remove(&mut self, key: &ResumeKey) {
        let Some(mut hole) = self.find(key) else { return };
        self.entries[hole] = None;
        self.len -= 1;
        let mut next = (hole + 1) & self.mask;
        while let Some(e) = self.entries[next] {
            let h = home(&e.key) & self.mask;
            if (next.wrapping_sub(h) & self.mask) >= (next.wrapping_sub(hole) & self.mask) {
                self.entries[hole] = Some(e);
                self.entries[next] = None;
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> ResumeKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&(i % 7).to_le_bytes()); // force collisions on the prefix
        k[12..].copy_from_slice(&i.to_le_bytes());
        ResumeKey(k)
    }

    #[test]
    fn insert_get_remove_with_collisions() {
        let mut idx = KeyIndex::new();
        assert_eq!(idx.capacity(), 0, "nothing allocated before the first key");
        assert_eq!(idx.get(&key(1)), None);
        for i in 0..100 {
            idx.insert(key(i), i);
        }
        assert!(idx.capacity() >= 200, "grown to stay at most half full");
        for i in (0..100).step_by(2) {
            idx.remove(&key(i));
        }
        for i in 0..100 {
            assert_eq!(idx.get(&key(i)), (i % 2 == 1).then_some(i), "key {i}");
        }
        assert_eq!(idx.get(&key(5000)), None);
    }
}
