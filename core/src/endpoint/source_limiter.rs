//! Per-source rate limit of failed handshakes and failed resumes: a fixed table of recent
//! sources (the driver names a source by a 64-bit hash of its address), each with a count in
//! a fixed window. When the table is full the oldest entry is recycled, so memory is flat
//! whatever the number of sources.

use alloc::vec;
use alloc::vec::Vec;

use crate::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    source: u64,
    window_start: Instant,
    failures: u32,
    used: bool,
}

/// Counts failures per source and says when a source is over its budget.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    entries: Vec<Entry>,
    budget: u32,
    period: Duration,
}

impl SourceLimiter {
    pub(crate) fn new(slots: usize, budget: u32, period: Duration) -> Self {
        Self { entries: vec![Entry::default(); slots.max(1)], budget, period }
    }

    fn entry(&mut self, now: Instant, source: u64) -> &mut Entry {
        let idx = match self.entries.iter().position(|e| e.used && e.source == source) {
            Some(i) => i,
            None => {
                // Recycle a free or the oldest entry.
                let i =
                    self.entries.iter().enumerate().min_by_key(|(_, e)| (e.used, e.window_start)).map_or(0, |(i, _)| i);
                self.entries[i] = Entry { source, window_start: now, failures: 0, used: true };
                i
            }
        };
        let e = &mut self.entries[idx];
        if now.saturating_duration_since(e.window_start) >= self.period {
            e.window_start = now;
            e.failures = 0;
        }
        e
    }

    /// Whether `source` may try now.
    pub(crate) fn allowed(&mut self, now: Instant, source: u64) -> bool {
        let budget = self.budget;
        self.entry(now, source).failures < budget
    }

    /// Count a failure for `source`.
    pub(crate) fn fail(&mut self, now: Instant, source: u64) {
        let e = self.entry(now, source);
        e.failures = e.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_source_and_window() {
        let mut l = SourceLimiter::new(2, 3, Duration::from_secs(10));
        let t0 = Instant::ZERO;
        for _ in 0..3 {
            assert!(l.allowed(t0, 1));
            l.fail(t0, 1);
        }
        assert!(!l.allowed(t0, 1));
        assert!(l.allowed(t0, 2), "other sources unaffected");
        assert!(l.allowed(t0.saturating_add(Duration::from_secs(10)), 1), "window rolls over");
    }
}
