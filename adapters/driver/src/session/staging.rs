//! The messages a connection's [`Sink`](futures::sink::Sink) holds between `start_send` and
//! the flush that queues them in the session together, under one lock.
//!
//! Small messages are copied into one buffer (a copy of a few bytes costs less than the two
//! reference-count updates of keeping the `Bytes`); a large one is kept as it came, and is
//! always the last staged message. Bounded: at most [`MAX_ITEMS`] messages and about
//! [`MAX_BYTES`] bytes (plus the one large message).

use bytes::Bytes;

/// The most messages staged at once.
pub(crate) const MAX_ITEMS: usize = 256;
/// The most bytes copied into the buffer.
pub(crate) const MAX_BYTES: usize = 16 << 10;
/// Messages up to this size are copied; larger ones are kept as `Bytes`.
const COPY_MAX: usize = 1 << 10;

/// Staged messages, in order: the copied ones, then at most one large one.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    /// The copied messages' bytes, back to back.
    buf: Vec<u8>,
    /// Their lengths.
    lens: Vec<u32>,
    /// How many of the copied messages were queued already.
    done: usize,
    /// Where the first one not queued starts in `buf`.
    done_bytes: usize,
    /// A large message, after the copied ones.
    large: Option<Bytes>,
}

impl Staging {
    /// Nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.done == self.lens.len() && self.large.is_none()
    }

    /// How many messages are staged.
    pub(crate) fn len(&self) -> usize {
        self.lens.len() - self.done + usize::from(self.large.is_some())
    }

    /// Another message may not fit: the sink is not ready until some are queued.
    pub(crate) fn is_full(&self) -> bool {
        self.large.is_some() || self.lens.len() == MAX_ITEMS || self.buf.len() + COPY_MAX > MAX_BYTES
    }

    /// Stage `item` (the caller checked [`is_full`](Self::is_full)).
    pub(crate) fn push(&mut self, item: Bytes) {
        if self.lens.capacity() == 0 {
            self.lens.reserve_exact(MAX_ITEMS);
            self.buf.reserve_exact(MAX_BYTES);
        }
        if item.len() <= COPY_MAX && self.lens.len() < MAX_ITEMS && self.large.is_none() {
            self.buf.extend_from_slice(&item);
            self.lens.push(item.len() as u32);
        } else {
            // Only when the caller ignored `is_full`: a large message is last in any case.
            debug_assert!(self.large.is_none(), "start_send on a full sink");
            self.large = Some(item);
        }
    }

    /// The staged messages not queued yet, in order.
    pub(crate) fn items(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = self.done_bytes;
        self.lens[self.done..]
            .iter()
            .map(move |&len| {
                let item = &self.buf[at..at + len as usize];
                at += len as usize;
                item
            })
            .chain(self.large.as_deref())
    }

    /// The first `n` staged messages were queued (or dropped).
    pub(crate) fn consume(&mut self, n: usize) {
        let copied = n.min(self.lens.len() - self.done);
        for &len in &self.lens[self.done..self.done + copied] {
            self.done_bytes += len as usize;
        }
        self.done += copied;
        if n > copied {
            self.large = None;
        }
        if self.done == self.lens.len() {
            self.buf.clear();
            self.lens.clear();
            self.done = 0;
            self.done_bytes = 0;
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
    fn keeps_order_across_copied_and_large_messages() {
        let mut s = Staging::default();
        assert!(s.is_empty());
        s.push(Bytes::from_static(b"a"));
        s.push(Bytes::new());
        s.push(Bytes::from_static(b"bcd"));
        let large = Bytes::from(vec![9u8; COPY_MAX + 1]);
        s.push(large.clone());
        assert!(s.is_full(), "a large message is last");
        assert_eq!(s.len(), 4);
        assert_eq!(staged(&s), vec![b"a".to_vec(), vec![], b"bcd".to_vec(), large.to_vec()]);
        s.consume(2);
        assert_eq!(staged(&s), vec![b"bcd".to_vec(), large.to_vec()]);
        s.consume(1);
        assert_eq!(staged(&s), vec![large.to_vec()]);
        assert!(!s.is_empty());
        s.consume(1);
        assert!(s.is_empty() && !s.is_full());
        assert_eq!(s.len(), 0);
    }

    proptest::proptest! {
        /// Against a plain queue: staging respects `is_full`, hands the messages back in
        /// order, and consuming any prefix leaves the rest.
        #[test]
        fn matches_a_queue_of_messages(
            steps in proptest::collection::vec((0usize..3000, 0usize..4), 0..300),
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
                proptest::prop_assert!(s.len() <= MAX_ITEMS + 1);
                proptest::prop_assert!(s.buf.len() <= MAX_BYTES);
            }
        }
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
        let mut pushed = 0;
        while !s.is_full() {
            s.push(Bytes::from(vec![1u8; COPY_MAX]));
            pushed += 1;
        }
        assert_eq!(pushed, MAX_BYTES / COPY_MAX);
        assert!(s.buf.len() <= MAX_BYTES, "the buffer never grows past its bound");
    }
}
