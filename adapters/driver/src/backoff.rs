//! Reconnect backoff: exponential ceilings with full jitter, the randomness injected so the
//! math is testable; and which I/O errors are worth retrying.

use std::io;
use std::time::Duration;

/// Exponential backoff with full jitter: the n-th delay after a reset is uniform in
/// `[0, min(max, initial * 2^n)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose first ceiling is `initial` and whose ceilings stop growing at `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// Start over (call when a link completed its handshake).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last reset.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay: `min(max, initial * 2^attempts)`.
    #[must_use]
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn from `random` (any uniformly random u64), and advance.
    #[must_use]
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = if ceiling == u64::MAX { random } else { random % (ceiling + 1) };
        Duration::from_nanos(nanos)
    }
}

/// Whether a dial error may go away by itself (the peer is restarting, the network is
/// flapping), so the initial connect retries it. Permission, address and "unsupported"
/// errors are permanent.
#[must_use]
pub fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::Unsupported
            | io::ErrorKind::AddrInUse
            | io::ErrorKind::OutOfMemory
    )
}

/// A small PRNG (xorshift64*) for jitter, seeded by the runtime once per session. Not for keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// Seeded with `seed` (the runtime's [`jitter_seed`](crate::Runtime::jitter_seed)).
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            let _ = b.next_delay(0);
        }
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        for _ in 0..100 {
            let _ = b.next_delay(0);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(5), "no overflow after many attempts");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(50));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let mut b = Backoff::new(Duration::from_nanos(10), Duration::from_nanos(10));
        assert_eq!(b.next_delay(0), Duration::ZERO);
        assert_eq!(b.next_delay(10), Duration::from_nanos(10));
        assert_eq!(b.next_delay(11), Duration::ZERO);
        let mut j = Jitter(7);
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        for _ in 0..1000 {
            let c = b.ceiling();
            assert!(b.next_delay(j.next()) <= c);
        }
    }

    #[test]
    fn transient_errors() {
        assert!(is_transient(&io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(is_transient(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(!is_transient(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }
}
