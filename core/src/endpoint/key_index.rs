//! Resume-key index: from a key to the session slot that issued it, in O(1) without work
//! proportional to the number of sessions. Open addressing on the key's first eight bytes
//! (keys are random, so they hash themselves); the full key is then compared in constant
//! time. Sized at construction; removal is backward-shift (no tombstones).

use alloc::vec;
use alloc::vec::Vec;

use crate::wire::ResumeKey;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: ResumeKey,
    slot: u32,
}

/// Fixed-capacity map from resume key to slot number.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    entries: Vec<Option<Entry>>,
    mask: usize,
    len: usize,
    max_len: usize,
}

fn home(key: &ResumeKey) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key.0[..8]);
    // Mix anyway: a driver may supply low-entropy keys in tests.
    (u64::from_le_bytes(b).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) as usize
}

impl KeyIndex {
    /// An index holding up to `max_len` keys.
    pub(crate) fn new(max_len: usize) -> Self {
        let cap = (max_len * 2).next_power_of_two().max(4);
        Self { entries: vec![None; cap], mask: cap - 1, len: 0, max_len }
    }

    fn find(&self, key: &ResumeKey) -> Option<usize> {
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

    /// Map `key` to `slot` (replacing an existing mapping). `false` if full.
    pub(crate) fn insert(&mut self, key: ResumeKey, slot: u32) -> bool {
        if let Some(p) = self.find(&key) {
            self.entries[p] = Some(Entry { key, slot });
            return true;
        }
        if self.len >= self.max_len {
            return false;
        }
        let mut pos = home(&key) & self.mask;
        while self.entries[pos].is_some() {
            pos = (pos + 1) & self.mask;
        }
        self.entries[pos] = Some(Entry { key, slot });
        self.len += 1;
        true
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
        let mut idx = KeyIndex::new(100);
        for i in 0..100 {
            assert!(idx.insert(key(i), i));
        }
        assert!(!idx.insert(key(1000), 0), "full");
        for i in (0..100).step_by(2) {
            idx.remove(&key(i));
        }
        for i in 0..100 {
            assert_eq!(idx.get(&key(i)), (i % 2 == 1).then_some(i), "key {i}");
        }
        assert_eq!(idx.get(&key(5000)), None);
    }
}
