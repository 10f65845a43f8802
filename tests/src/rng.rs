//! The harness's own seeded PRNG (SplitMix64): small, fast, deterministic on every platform,
//! and free of dependencies, so a seed printed by a failing run reproduces it exactly.

use sotto_proto::{Duration, ResumeKey};

/// SplitMix64 (Steele, Lea, Flood 2014). Every random choice of a simulation comes from one of
/// these, seeded from the run's seed.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

/// One SplitMix64 output step applied to `x` (also used as a stateless hash).
#[must_use]
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimRng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent generator derived from this one's seed and a `stream` label.
    #[must_use]
    pub fn fork(&mut self, stream: u64) -> Self {
        Self { state: mix64(self.next_u64() ^ mix64(stream)) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0). Multiply-shift, bias below 2^-32 for our ranges.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// A duration uniformly drawn from `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_nanos(self.range(lo.as_nanos(), hi.as_nanos()))
    }

    /// A fresh 16-byte resume key, never all zeros.
    pub fn key(&mut self) -> ResumeKey {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        k[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        if k == [0; 16] {
            k[0] = 1;
        }
        ResumeKey(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let v = a.range(3, 9);
            assert!((3..=9).contains(&v));
            b.range(3, 9);
        }
        assert_eq!(a.below(0), 0);
        assert_ne!(a.key(), a.key());
    }
}
