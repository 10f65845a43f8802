//! The core's own notion of time: a monotonic [`Instant`] and a [`Duration`], both plain
//! nanosecond counts from an origin the driver chooses. The core never reads a clock; every
//! input carries `now`. All arithmetic saturates, so no value of `now` can panic the core.

/// A span of time in nanoseconds. Arithmetic saturates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct Duration {
    nanos: u64,
}

impl Duration {
    /// Zero length.
    pub const ZERO: Self = Self { nanos: 0 };
    /// The longest representable span (about 584 years); used as "never".
    pub const MAX: Self = Self { nanos: u64::MAX };

    /// A duration of `nanos` nanoseconds.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self { nanos }
    }
    /// A duration of `micros` microseconds (saturating).
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self { nanos: micros.saturating_mul(1_000) }
    }
    /// A duration of `millis` milliseconds (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self { nanos: millis.saturating_mul(1_000_000) }
    }
    /// A duration of `secs` seconds (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self { nanos: secs.saturating_mul(1_000_000_000) }
    }
    /// The length in nanoseconds.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }
    /// The length in whole milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.nanos / 1_000_000
    }
    /// `self + rhs`, saturating at [`Duration::MAX`].
    #[must_use]
    pub const fn saturating_add(self, rhs: Self) -> Self {
        Self { nanos: self.nanos.saturating_add(rhs.nanos) }
    }
    /// `self - rhs`, saturating at zero.
    #[must_use]
    pub const fn saturating_sub(self, rhs: Self) -> Self {
        Self { nanos: self.nanos.saturating_sub(rhs.nanos) }
    }
}

impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Self { nanos: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX) }
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_nanos(d.nanos)
    }
}

/// A point in time: nanoseconds since an arbitrary origin fixed by the driver.
///
/// Drivers usually keep an origin from the standard library's monotonic clock and pass
/// `Instant::from_nanos(origin.elapsed().as_nanos() as u64)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self { nanos: 0 };
    /// The far future; a deadline that never fires.
    pub const FAR_FUTURE: Self = Self { nanos: u64::MAX };

    /// The instant `nanos` nanoseconds after the origin.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self { nanos }
    }
    /// Nanoseconds since the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }
    /// `self + d`, saturating at [`Instant::FAR_FUTURE`].
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self { nanos: self.nanos.saturating_add(d.as_nanos()) }
    }
    /// The time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }
}

/// Keeps `now` non-decreasing: an input whose `now` is earlier than the last one seen is
/// treated as the last one (clamped), never an error.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MonotonicNow {
    last: Instant,
}

impl MonotonicNow {
    /// Record `now` and return it clamped to be no earlier than any previous value.
    pub(crate) fn observe(&mut self, now: Instant) -> Instant {
        if now > self.last {
            self.last = now;
        }
        self.last
    }
    /// The latest instant observed.
    pub(crate) fn get(&self) -> Instant {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::FAR_FUTURE.saturating_add(Duration::from_secs(1)), Instant::FAR_FUTURE);
        assert_eq!(Instant::ZERO.saturating_duration_since(Instant::from_nanos(5)), Duration::ZERO);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(Duration::ZERO.saturating_sub(Duration::from_nanos(1)), Duration::ZERO);
    }

    #[test]
    fn now_is_clamped_non_decreasing() {
        let mut m = MonotonicNow::default();
        assert_eq!(m.observe(Instant::from_nanos(10)), Instant::from_nanos(10));
        assert_eq!(m.observe(Instant::from_nanos(3)), Instant::from_nanos(10));
        assert_eq!(m.observe(Instant::from_nanos(11)), Instant::from_nanos(11));
    }
}
