//! The messages a connection's [`Sink`](futures::sink::Sink) holds between `start_send` and
//! the flush that queues them in the session together, under one lock.
//!
//! The `Bytes` are kept as they came (no copy: `start_send` takes ownership, and dropping a
//! `Bytes` costs the same here as in the application). Bounded: at most [`MAX_ITEMS`]
//! messages, and no message is staged behind [`MAX_BYTES`] bytes.

use bytes::Bytes;

/// The most messages staged at once.
pub(crate) const MAX_ITEMS: usize = 256;
/// Staged bytes past which the sink is full (the message that crosses it is staged).
pub(crate) const MAX_BYTES: usize = 64 << 10;

/// Staged messages, in order: `items[done..]`.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    items: Vec<Bytes>,
    /// How many of `items` were queued already.
    done: usize,
    /// The bytes of `items[done..]`.
    bytes: usize,
}

impl Staging {
    /// Nothing is staged.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.done == self.items.len()
    }

    /// How many messages are staged.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.items.len() - self.done
    }

    /// The sink is not ready for another message until some are queued.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= MAX_ITEMS || self.bytes >= MAX_BYTES
    }

    /// Stage `item` (the caller checked [`is_full`](Self::is_full)).
    #[inline]
    pub(crate) fn push(&mut self, item: Bytes) {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(MAX_ITEMS);
        }
        self.bytes += item.len();
        self.items.push(item);
    }

    /// The staged messages not queued yet, in order.
    pub(crate) fn items(&self) -> impl Iterator<Item = &[u8]> {
        self.items[self.done..].iter().map(|b| &b[..])
    }

    /// Take the staged messages not queued yet, in order, leaving none.
    pub(crate) fn take_rest(&mut self) -> Vec<Bytes> {
        let rest = self.items.split_off(self.done);
        self.items.clear();
        self.done = 0;
        self.bytes = 0;
        rest
    }

    /// The first `n` staged messages were queued (or dropped).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        for item in &self.items[self.done..self.done + n] {
            self.bytes -= item.len();
        }
        self.done += n;
        if self.done == self.items.len() {
            // Drops the queued `Bytes`; the vector keeps its capacity.
            self.items.clear();
            self.done = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(s: &Staging) -> Vec<Vec<u8>> {
        s.items().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn keeps_order_and_consumes_prefixes() {
        let mut s = Staging::default();
        assert!(s.is_empty());
        s.push(Bytes::from_static(b"a"));
        s.push(Bytes::new());
        s.push(Bytes::from_static(b"bcd"));
        let large = Bytes::from(vec![9u8; 5000]);
        s.push(large.clone());
        assert_eq!(s.len(), 4);
        assert_eq!(staged(&s), vec![b"a".to_vec(), vec![], b"bcd".to_vec(), large.to_vec()]);
        s.consume(2);
        assert_eq!(staged(&s), vec![b"bcd".to_vec(), large.to_vec()]);
        s.consume(1);
        assert_eq!(staged(&s), vec![large.to_vec()]);
        assert!(!s.is_empty());
        s.consume(1);
        assert!(s.is_empty() && !s.is_full());
        assert_eq!((s.len(), s.bytes), (0, 0));
    }

    #[test]
    fn take_rest_hands_over_what_was_not_queued() {
        let mut s = Staging::default();
        for m in [&b"a"[..], b"bc", b"def"] {
            s.push(Bytes::copy_from_slice(m));
        }
        s.consume(1);
        assert_eq!(s.take_rest(), vec![Bytes::from_static(b"bc"), Bytes::from_static(b"def")]);
        assert!(s.is_empty() && !s.is_full());
        assert_eq!((s.len(), s.bytes), (0, 0));
        s.push(Bytes::from_static(b"g"));
        assert_eq!(staged(&s), vec![b"g".to_vec()]);
    }

    #[test]
    fn is_full_by_count_and_by_bytes() {
        let mut s = Staging::default();
        for i in 0..MAX_ITEMS {
            assert!(!s.is_full(), "full after {i} empty messages");
            s.push(Bytes::new());
        }
        assert!(s.is_full());
        s.consume(MAX_ITEMS);
        assert!(s.is_empty() && !s.is_full());
        s.push(Bytes::from(vec![1u8; MAX_BYTES - 1]));
        assert!(!s.is_full());
        s.push(Bytes::from_static(b"x"));
        assert!(s.is_full(), "full at MAX_BYTES");
    }

    proptest::proptest! {
        /// Against a plain queue: staging respects `is_full`, hands the messages back in
        /// order, and consuming any prefix leaves the rest.
        #[test]
        fn matches_a_queue_of_messages(
            steps in proptest::collection::vec((0usize..30_000, 0usize..4), 0..300),
        ) {
            let mut s = Staging::default();
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            for (i, (len, consume)) in steps.into_iter().enumerate() {
                if s.is_full() {
                    let n = consume.min(model.len()).max(1);
                    s.consume(n);
                    model.drain(..n);
                } else {
                    let m = vec![i as u8; len];
                    s.push(Bytes::from(m.clone()));
                    model.push_back(m);
                }
                proptest::prop_assert_eq!(staged(&s), Vec::from(model.clone()));
                proptest::prop_assert_eq!(s.len(), model.len());
                proptest::prop_assert!(s.items.len() <= MAX_ITEMS);
                proptest::prop_assert!(s.bytes < MAX_BYTES + 30_000);
            }
        }
    }
}
