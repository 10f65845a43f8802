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

/// A connector's error marked permanent with [`permanent`]: retrying cannot fix it (a TLS
/// certificate the peer will never accept, a host name that does not resolve by policy).
/// Find it behind an `io::Error` with [`Permanent::is_marked`].
#[derive(Debug)]
pub struct Permanent(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Permanent {
    /// Whether `e` was made by [`permanent`].
    #[must_use]
    pub fn is_marked(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }

    /// The error that was marked.
    #[must_use]
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Permanent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Mark a connector's error permanent: call it in the connector (`.map_err(permanent)`) for
/// an error that no retry can fix, typically a TLS certificate error. The driver then does
/// not retry it: the first connect fails at once with it ([`ConnectError::Io`](crate::ConnectError::Io)),
/// and a redial ends the session as lost ([`SessionEnd::PermanentDialError`](sotto_proto::SessionEnd::PermanentDialError)),
/// the error in the `DialFailed` event and in `last_dial_error`. The result keeps the
/// kind of an `io::Error` passed in (else `Other`); its message is the original's.
#[must_use]
pub fn permanent<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>>(e: E) -> io::Error {
    let inner: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
    let kind = inner.downcast_ref::<io::Error>().map_or(io::ErrorKind::Other, io::Error::kind);
    io::Error::new(kind, Permanent(inner))
}

/// Whether a dial error may go away by itself (the peer is restarting, the network is
/// flapping), so the initial connect retries it. Errors marked with [`permanent`], and
/// permission, address and "unsupported" errors, are permanent.
#[must_use]
pub fn is_transient(e: &io::Error) -> bool {
    !Permanent::is_marked(e)
        && !matches!(
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

    #[test]
    fn a_marked_error_is_permanent_and_keeps_its_kind_and_message() {
        let e = permanent(io::Error::new(io::ErrorKind::InvalidData, "bad certificate"));
        assert!(!is_transient(&e));
        assert!(Permanent::is_marked(&e));
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "bad certificate");
        assert!(Permanent::is_marked(&permanent("no such host")));
        assert!(!Permanent::is_marked(&io::Error::new(io::ErrorKind::InvalidData, "bad certificate")));
    }
}
