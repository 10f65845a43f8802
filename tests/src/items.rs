//! Application items whose content is a pure function of (session, direction, seq), so the
//! receiver checks every delivery against what the sender must have sent at that position
//! without keeping a log (and without allocating).

use crate::rng::mix64;
use crate::Side;

/// Generates and checks the items of one direction of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemGen {
    /// Distinguishes sessions and directions: an item from another session never matches.
    pub salt: u64,
    /// Shortest item (at least 4 keeps the seq visible in every item).
    pub min_len: u32,
    /// Longest item.
    pub max_len: u32,
}

impl ItemGen {
    /// The generator for items sent by `from` in session number `session`.
    #[must_use]
    pub fn new(session: u32, from: Side, min_len: u32, max_len: u32) -> Self {
        let dir = match from {
            Side::A => 0xa,
            Side::B => 0xb,
        };
        Self { salt: mix64((u64::from(session) << 8) | dir), min_len, max_len: max_len.max(min_len) }
    }

    fn hash(&self, seq: u64) -> u64 {
        mix64(self.salt ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    /// Length of item `seq`: mostly short, one in eight up to `max_len`.
    #[must_use]
    pub fn len(&self, seq: u64) -> usize {
        let h = self.hash(seq);
        let hi = if h & 7 == 0 { self.max_len } else { self.max_len.min(self.min_len + 60) };
        let span = u64::from(hi - self.min_len) + 1;
        (u64::from(self.min_len) + (h >> 8) % span) as usize
    }

    fn byte(&self, seq: u64, h: u64, i: usize) -> u8 {
        if i < 8 {
            (seq ^ self.salt).to_le_bytes()[i]
        } else {
            (h >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8
        }
    }

    /// Write item `seq` at the start of `out` (which must hold [`len`](Self::len) bytes) and
    /// return its length.
    pub fn fill(&self, seq: u64, out: &mut [u8]) -> usize {
        let len = self.len(seq);
        let h = self.hash(seq);
        for (i, b) in out[..len].iter_mut().enumerate() {
            *b = self.byte(seq, h, i);
        }
        len
    }

    /// Whether `item` is exactly item `seq`.
    #[must_use]
    pub fn matches(&self, seq: u64, item: &[u8]) -> bool {
        if item.len() != self.len(seq) {
            return false;
        }
        let h = self.hash(seq);
        item.iter().enumerate().all(|(i, b)| *b == self.byte(seq, h, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_differ_by_seq_session_and_direction() {
        let g = ItemGen::new(1, Side::A, 4, 300);
        let mut buf = [0u8; 300];
        for seq in 0..200 {
            let n = g.fill(seq, &mut buf);
            assert!((4..=300).contains(&n));
            assert!(g.matches(seq, &buf[..n]));
            assert!(!g.matches(seq + 1, &buf[..n]));
            assert!(!ItemGen::new(2, Side::A, 4, 300).matches(seq, &buf[..n]));
            assert!(!ItemGen::new(1, Side::B, 4, 300).matches(seq, &buf[..n]));
        }
    }
}
