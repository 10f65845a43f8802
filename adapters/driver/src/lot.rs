//! Links an acceptor keeps waiting instead of closing, by source, each with a deadline.
//!
//! Two lots use it (see `routing`):
//!
//! - **Parked** links arrived while their source already held its whole share of pending
//!   handshakes (`acceptor.max_pending_per_source`): kept unread, their bytes waiting in the
//!   socket, and started, oldest first, as that source's pending handshakes finish. Many
//!   clients behind one address reconnecting at once (a NAT after a network blip) then wait
//!   their turn instead of having their links closed and redialing after a backoff. The lot
//!   holds at most `acceptor.max_pending_handshakes` links in all, plus one per detached
//!   session (each gave up its link's socket, and in a reconnect storm each one's client may
//!   be waiting here); one source parks at most that less a reserve for the others (see
//!   [`park_cap_per_source`]). A parked link waits at most `protocol.handshake_timeout`.
//! - **Held** links sent a fresh ClientHello while their source already held its share of
//!   the accept backlog (`acceptor.accept_backlog_per_source`): kept with their hello, and
//!   routed, oldest first, as the application accepts that source's sessions (or one of its
//!   sessions still in its session handshake ends). Each keeps its pending handshake in the
//!   endpoint until then and waits at most until that handshake's deadline.
//!
//! Each source's links wait in deadline order (ties in arrival order), which for both lots is
//! the order they were admitted in, and one index over every source gives the earliest
//! deadline: every operation is O(log n) in the links waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sotto_proto::Instant;

/// Why [`Lot::put`] gave a link back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The lot holds its cap of links in all.
    Lot,
    /// The lot holds its cap of links from this link's source.
    Source,
}

/// A link's place in a [`Lot`]: its deadline, then its arrival number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket {
    deadline: Instant,
    seq: u64,
}

/// Waiting links by source, with deadlines.
pub(crate) struct Lot<T> {
    by_source: HashMap<u64, BTreeMap<Ticket, T>>,
    /// Every link's ticket and source, earliest deadline first.
    deadlines: BTreeSet<(Ticket, u64)>,
    /// The next arrival number.
    seq: u64,
}

impl<T> Lot<T> {
    /// An empty lot.
    pub(crate) fn new() -> Self {
        Self { by_source: HashMap::new(), deadlines: BTreeSet::new(), seq: 0 }
    }

    /// Keep `item` from `source` until `deadline`, behind the others from it; gives it back
    /// if `cap` links wait already, or `source_cap` from `source`.
    pub(crate) fn put(
        &mut self,
        source: u64,
        deadline: Instant,
        item: T,
        cap: usize,
        source_cap: usize,
    ) -> Result<(), (T, Full)> {
        if self.len() >= cap {
            return Err((item, Full::Lot));
        }
        if self.count(source) >= source_cap {
            return Err((item, Full::Source));
        }
        let ticket = Ticket { deadline, seq: self.seq };
        self.seq += 1;
        self.insert(source, ticket, item);
        Ok(())
    }

    fn insert(&mut self, source: u64, ticket: Ticket, item: T) {
        self.by_source.entry(source).or_default().insert(ticket, item);
        self.deadlines.insert((ticket, source));
    }

    /// The link waiting longest for `source` (the earliest deadline), with its ticket.
    pub(crate) fn take(&mut self, source: u64) -> Option<(Ticket, T)> {
        let q = self.by_source.get_mut(&source)?;
        let taken = q.pop_first();
        if q.is_empty() {
            self.by_source.remove(&source);
        }
        let (ticket, item) = taken?;
        self.deadlines.remove(&(ticket, source));
        Some((ticket, item))
    }

    /// Put back a link just taken for `source` with its `ticket` (it could not start after
    /// all): first in line again, with its deadline unchanged.
    pub(crate) fn put_back(&mut self, source: u64, ticket: Ticket, item: T) {
        self.insert(source, ticket, item);
    }

    /// The link whose deadline is earliest, with its source, if that deadline is at or
    /// before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(u64, T)> {
        let &(ticket, source) = self.deadlines.first().filter(|(t, _)| t.deadline <= now)?;
        self.deadlines.pop_first();
        let q = self.by_source.get_mut(&source)?;
        let item = q.remove(&ticket);
        if q.is_empty() {
            self.by_source.remove(&source);
        }
        item.map(|item| (source, item))
    }

    /// Any waiting link, with its source (to close them all).
    pub(crate) fn pop_any(&mut self) -> Option<(u64, T)> {
        self.pop_expired(Instant::FAR_FUTURE)
    }

    /// The earliest deadline of a waiting link.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| t.deadline)
    }

    /// Links waiting from `source`.
    pub(crate) fn count(&self, source: u64) -> usize {
        self.by_source.get(&source).map_or(0, BTreeMap::len)
    }

    /// Links waiting now.
    pub(crate) fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// Drop every waiting link (closing it).
    pub(crate) fn clear(&mut self) {
        self.by_source.clear();
        self.deadlines.clear();
    }
}

/// The most links one source may park when the lot holds `cap`: all but a reserve for the
/// other sources of one pending share (`max_pending_per_source`), at most half the lot. One
/// source flooding the lot then still leaves room for another source's over-quota links.
pub(crate) fn park_cap_per_source(cap: usize, max_pending_per_source: usize) -> usize {
    cap - max_pending_per_source.min(cap / 2)
}

#[cfg(test)]
mod tests {
    use super::{park_cap_per_source, Full, Lot};
    use sotto_proto::Instant;

    fn at(n: u64) -> Instant {
        Instant::from_nanos(n)
    }

    #[test]
    fn links_wait_in_admission_order_per_source_up_to_the_caps() {
        let mut p = Lot::new();
        assert!(p.put(1, at(10), 'a', 4, 2).is_ok());
        assert!(p.put(2, at(11), 'x', 4, 2).is_ok());
        assert!(p.put(1, at(12), 'b', 4, 2).is_ok());
        assert_eq!(p.put(1, at(13), 'c', 4, 2), Err(('c', Full::Source)), "source 1 holds its cap");
        assert!(p.put(3, at(13), 'y', 4, 2).is_ok());
        assert_eq!(p.put(3, at(14), 'z', 4, 2), Err(('z', Full::Lot)), "the lot is full");
        assert_eq!(p.next_deadline(), Some(at(10)));
        let (ticket, a) = p.take(1).expect("a");
        assert_eq!(a, 'a');
        p.put_back(1, ticket, 'a');
        assert_eq!(p.take(1).map(|(_, i)| i), Some('a'), "put back first in line");
        assert_eq!(p.take(1).map(|(_, i)| i), Some('b'));
        assert_eq!(p.take(1).map(|(_, i)| i), None);
        assert_eq!((p.len(), p.count(1), p.count(2)), (2, 0, 1));
        p.clear();
        assert_eq!((p.len(), p.next_deadline()), (0, None));
        assert!(p.take(2).is_none());
    }

    #[test]
    fn a_source_takes_its_earliest_deadline_first_even_if_it_arrived_later() {
        // A held link admitted earlier may send its hello later: it goes first.
        let mut p = Lot::new();
        assert!(p.put(1, at(20), "late", 8, 8).is_ok());
        assert!(p.put(1, at(10), "early", 8, 8).is_ok());
        assert!(p.put(1, at(20), "tie", 8, 8).is_ok());
        assert_eq!(p.take(1).map(|(_, i)| i), Some("early"));
        assert_eq!(p.take(1).map(|(_, i)| i), Some("late"), "ties in arrival order");
        assert_eq!(p.take(1).map(|(_, i)| i), Some("tie"));
    }

    #[test]
    fn links_expire_earliest_deadline_first_across_sources_and_not_before() {
        let mut p = Lot::new();
        assert!(p.put(1, at(30), 'a', 8, 8).is_ok());
        assert!(p.put(2, at(10), 'x', 8, 8).is_ok());
        assert!(p.put(1, at(40), 'b', 8, 8).is_ok());
        assert_eq!(p.next_deadline(), Some(at(10)));
        assert_eq!(p.pop_expired(at(9)), None, "nothing before its deadline");
        assert_eq!(p.pop_expired(at(30)), Some((2, 'x')));
        assert_eq!(p.pop_expired(at(30)), Some((1, 'a')));
        assert_eq!(p.pop_expired(at(30)), None);
        assert_eq!((p.next_deadline(), p.count(1), p.count(2)), (Some(at(40)), 1, 0));
        assert_eq!(p.pop_any(), Some((1, 'b')));
        assert_eq!((p.len(), p.pop_any()), (0, None));
        // A taken link leaves the deadline index too.
        assert!(p.put(3, at(5), 'c', 8, 8).is_ok());
        assert!(p.take(3).is_some());
        assert_eq!((p.next_deadline(), p.pop_expired(at(100))), (None, None));
    }

    #[test]
    fn one_source_parks_all_but_a_reserve_for_the_others() {
        // The defaults: 1024 pending handshakes, 256 per source.
        assert_eq!(park_cap_per_source(1024, 256), 768);
        // Plus 10,000 detached sessions: the reserve stays one share.
        assert_eq!(park_cap_per_source(11_024, 256), 10_768);
        // A share as large as the lot: the reserve is half the lot.
        assert_eq!(park_cap_per_source(4, 4), 2);
        assert_eq!(park_cap_per_source(1, 4), 1);
        assert_eq!(park_cap_per_source(0, 4), 0);
    }
}
