//! Rate-limited logging of an acceptor's per-link refusals: a refusal of one kind from one
//! source is logged at most once per `acceptor.refusal_log_interval`; those not logged
//! meanwhile are counted and reported with that source's next line of that kind. A flood
//! of links from one source then makes one line per interval, not one per link. (Every
//! refusal is counted in the acceptor's stats regardless.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sources (with a kind of refusal) tracked at once, at most: past it, entries whose interval
/// has passed are forgotten (their unreported counts with them: the stats keep them), and if
/// none has, a refusal from a new source is not logged.
const MAX_TRACKED: usize = 4096;

/// One source's refusals of one kind.
#[derive(Debug)]
struct Entry {
    /// When its last line was logged.
    logged_at: Instant,
    /// Refusals since then that were not logged.
    suppressed: u64,
}

/// Which refusals to log (see the module docs); owned by an acceptor's listening task.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    entries: HashMap<(u64, &'static str), Entry>,
}

impl RefusalLog {
    /// A link from `source` was refused for `kind` at `now`; at most one line per source and
    /// kind per `interval`. `Some(n)`: log it, saying that `n` earlier refusals of this kind
    /// from this source were not logged; `None`: counted for the next line instead.
    pub(crate) fn refused(&mut self, now: Instant, interval: Duration, source: u64, kind: &'static str) -> Option<u64> {
        if interval.is_zero() {
            return Some(0);
        }
        if let Some(e) = self.entries.get_mut(&(source, kind)) {
            if now.saturating_duration_since(e.logged_at) < interval {
                e.suppressed += 1;
                return None;
            }
            e.logged_at = now;
            return Some(std::mem::take(&mut e.suppressed));
        }
        if self.entries.len() >= MAX_TRACKED {
            self.entries.retain(|_, e| now.saturating_duration_since(e.logged_at) < interval);
            if self.entries.len() >= MAX_TRACKED {
                return None;
            }
        }
        self.entries.insert((source, kind), Entry { logged_at: now, suppressed: 0 });
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_source_and_kind_per_interval_with_the_count_of_the_rest() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(t0, I, 7, "failure_budget"), Some(0));
        for _ in 0..5 {
            assert_eq!(log.refused(t0 + Duration::from_millis(10), I, 7, "failure_budget"), None);
        }
        // Another kind, another source: their own first lines.
        assert_eq!(log.refused(t0, I, 7, "accept_backlog"), Some(0));
        assert_eq!(log.refused(t0, I, 9, "failure_budget"), Some(0));
        // After the interval, the next line reports the five not logged.
        assert_eq!(log.refused(t0 + Duration::from_secs(1), I, 7, "failure_budget"), Some(5));
        assert_eq!(log.refused(t0 + Duration::from_millis(1500), I, 7, "failure_budget"), None);
        assert_eq!(log.refused(t0 + Duration::from_secs(3), I, 7, "failure_budget"), Some(1));
    }

    #[test]
    fn a_zero_interval_logs_every_refusal() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        for _ in 0..3 {
            assert_eq!(log.refused(t0, Duration::ZERO, 7, "failure_budget"), Some(0));
        }
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        for s in 0..MAX_TRACKED as u64 {
            assert_eq!(log.refused(t0, I, s, "k"), Some(0));
        }
        assert_eq!(log.refused(t0, I, u64::MAX, "k"), None, "full, nothing expired: not logged");
        assert_eq!(log.entries.len(), MAX_TRACKED);
        // Once their interval passed, old entries make room.
        assert_eq!(log.refused(t0 + Duration::from_secs(1), I, u64::MAX, "k"), Some(0));
        assert_eq!(log.entries.len(), 1);
    }
}
