//! Links that arrived at an acceptor while their source already held its whole share of
//! pending handshakes (`acceptor.max_pending_per_source`): kept unread, their bytes waiting
//! in the socket, and started, oldest first, as that source's pending handshakes finish. Many clients behind one
//! address reconnecting at once (a NAT after a network blip) then wait their turn instead of
//! having their links closed and redialing after a backoff. The lot holds at most
//! `acceptor.max_pending_handshakes` links in all, plus one per detached session (each gave
//! up its link's socket, and in a reconnect storm each one's client may be waiting here);
//! past it a link is closed as before, so a source flooding the lot delays only links that
//! are over their own source's quota.

use std::collections::{HashMap, VecDeque};

/// Parked links by source.
pub(crate) struct Parked<S> {
    by_source: HashMap<u64, VecDeque<S>>,
    len: usize,
}

impl<S> Parked<S> {
    /// An empty lot.
    pub(crate) fn new() -> Self {
        Self { by_source: HashMap::new(), len: 0 }
    }

    /// Park `io` from `source` behind the others from it; gives it back if `cap` links are
    /// parked already.
    pub(crate) fn park(&mut self, source: u64, io: S, cap: usize) -> Result<(), S> {
        if self.len >= cap {
            return Err(io);
        }
        self.by_source.entry(source).or_default().push_back(io);
        self.len += 1;
        Ok(())
    }

    /// The link parked longest for `source`.
    pub(crate) fn take(&mut self, source: u64) -> Option<S> {
        let q = self.by_source.get_mut(&source)?;
        let io = q.pop_front();
        if q.is_empty() {
            self.by_source.remove(&source);
        }
        if io.is_some() {
            self.len -= 1;
        }
        io
    }

    /// Put back a link just taken for `source` (it could not start after all): first in line.
    pub(crate) fn put_back(&mut self, source: u64, io: S) {
        self.by_source.entry(source).or_default().push_front(io);
        self.len += 1;
    }

    /// Links parked now.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Close every parked link (the acceptor stops listening).
    pub(crate) fn clear(&mut self) {
        self.by_source.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Parked;

    #[test]
    fn links_wait_in_arrival_order_per_source_up_to_the_cap() {
        let mut p = Parked::new();
        assert!(p.park(1, 'a', 3).is_ok());
        assert!(p.park(2, 'x', 3).is_ok());
        assert!(p.park(1, 'b', 3).is_ok());
        assert_eq!(p.park(1, 'c', 3), Err('c'), "the lot is full");
        assert_eq!(p.take(1), Some('a'));
        p.put_back(1, 'a');
        assert_eq!(p.take(1), Some('a'), "put back first in line");
        assert_eq!(p.take(1), Some('b'));
        assert_eq!(p.take(1), None);
        assert_eq!(p.len(), 1);
        p.clear();
        assert_eq!((p.len(), p.take(2)), (0, None));
    }
}
