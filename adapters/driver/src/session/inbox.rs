//! Delivered messages waiting for one connection's reader, in order.
//!
//! A `DataBatch` from the peer is queued whole, as its encoded body, and cut into messages
//! only when the reader takes them: the driver does one push per batch instead of one per
//! message, and each message's `Bytes` is made just before the application gets it (still
//! hot in the cache) instead of being stored and loaded again.

use std::collections::VecDeque;

use bytes::Bytes;
use sotto_proto::wire::varint::decode_varint;

/// One queued entry.
#[derive(Debug)]
enum Entry {
    /// A single message.
    One(Bytes),
    /// The `count` messages of a batch: `(varint(len) payload)+`, validated by the core on
    /// arrival.
    Batch { body: Bytes, count: u32 },
}

/// The batch being cut into messages: the next one's length prefix is at `at`, and `left`
/// remain.
#[derive(Debug)]
struct Cursor {
    body: Bytes,
    at: usize,
    left: u32,
}

impl Cursor {
    /// The next message, or `None` at the end (or, which the core's validation rules out,
    /// where the body is malformed).
    #[inline(always)]
    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let (start, end) = next_in(&self.body, self.at)?;
        self.at = end;
        self.left -= 1;
        Some(self.body.slice(start..end))
    }
}

/// A connection's delivered messages, in order.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// The batch being cut, ahead of `entries`.
    current: Option<Cursor>,
    entries: VecDeque<Entry>,
    /// How many messages the cursor and the entries hold.
    messages: usize,
}

impl Inbox {
    /// Queue one message.
    pub(crate) fn push_one(&mut self, message: Bytes) {
        self.entries.push_back(Entry::One(message));
        self.messages += 1;
    }

    /// Queue the `count` messages of a batch whose body (as the core validated it) is
    /// `body`.
    pub(crate) fn push_batch(&mut self, body: Bytes, count: u32) {
        if count > 0 {
            self.entries.push_back(Entry::Batch { body, count });
            self.messages += count as usize;
        }
    }

    /// No message is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// How many messages are queued.
    pub(crate) fn messages(&self) -> usize {
        self.messages
    }

    /// How many entries are queued (a batch is one): what the driver's count limit bounds.
    pub(crate) fn entries(&self) -> usize {
        self.entries.len() + usize::from(self.current.is_some())
    }

    /// Take the next message.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        loop {
            if let Some(c) = &mut self.current {
                if let Some(m) = c.next() {
                    self.messages -= 1;
                    if c.left == 0 {
                        self.current = None;
                    }
                    return Some(m);
                }
                // Malformed (the core validated the body, so this does not happen): the rest
                // of the batch goes, counted, rather than loop.
                self.messages -= c.left as usize;
                self.current = None;
            }
            match self.entries.pop_front()? {
                Entry::One(m) => {
                    self.messages -= 1;
                    return Some(m);
                }
                Entry::Batch { body, count } => self.current = Some(Cursor { body, at: 0, left: count }),
            }
        }
    }

    /// Every queued message's length, in order.
    pub(crate) fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        let current = self.current.iter().flat_map(|c| BatchLens { body: &c.body, at: c.at, left: c.left });
        current.chain(self.entries.iter().flat_map(|e| {
            let (one, batch) = match e {
                Entry::One(m) => (Some(m.len()), None),
                Entry::Batch { body, count } => (None, Some(BatchLens { body, at: 0, left: *count })),
            };
            one.into_iter().chain(batch.into_iter().flatten())
        }))
    }

    /// Drop every queued message.
    pub(crate) fn clear(&mut self) {
        self.current = None;
        self.entries.clear();
        self.messages = 0;
    }
}

/// The extent `(start, end)` in `body` of the message whose length prefix is at `at`.
#[inline(always)]
fn next_in(body: &[u8], at: usize) -> Option<(usize, usize)> {
    let (len, n) = decode_varint(body.get(at..)?).ok()?;
    let start = at + n;
    let end = start.checked_add(len as usize)?;
    (end <= body.len()).then_some((start, end))
}

/// The lengths of a batch's remaining messages.
struct BatchLens<'a> {
    body: &'a [u8],
    at: usize,
    left: u32,
}

impl Iterator for BatchLens<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (start, end) = next_in(self.body, self.at)?;
        self.at = end;
        Some(end - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch body of `payloads`.
    fn body(payloads: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for p in payloads {
            let mut h = [0u8; 5];
            let n = sotto_proto::wire::varint::encode_varint(p.len() as u32, &mut h).expect("varint");
            v.extend_from_slice(&h[..n]);
            v.extend_from_slice(p);
        }
        Bytes::from(v)
    }

    #[test]
    fn hands_out_single_and_batched_messages_in_order() {
        let mut q = Inbox::default();
        let long = vec![5u8; 300];
        q.push_one(Bytes::from_static(b"first"));
        q.push_batch(body(&[b"a", b"", &long]), 3);
        q.push_batch(body(&[]), 0);
        q.push_one(Bytes::new());
        assert_eq!((q.messages(), q.entries()), (5, 3), "an empty batch is not queued");
        assert_eq!(q.lens().collect::<Vec<_>>(), [5, 1, 0, 300, 0]);
        let mut got = Vec::new();
        while let Some(m) = q.pop() {
            got.push(m.to_vec());
            assert_eq!(q.lens().count(), q.messages(), "the count follows the pops");
        }
        assert_eq!(got, [b"first".to_vec(), b"a".to_vec(), vec![], long, vec![]]);
        assert!(q.is_empty());
        assert_eq!(q.entries(), 0);
    }

    #[test]
    fn a_malformed_batch_is_dropped_and_counted_not_looped_on() {
        let mut q = Inbox::default();
        // Claims three messages, holds one, then a length running past the end.
        let mut v = body(&[b"ok"]).to_vec();
        v.extend_from_slice(&[9, 1]);
        q.push_batch(Bytes::from(v), 3);
        q.push_one(Bytes::from_static(b"after"));
        assert_eq!(&q.pop().expect("the good message")[..], b"ok");
        assert_eq!(&q.pop().expect("the next entry")[..], b"after");
        assert!(q.pop().is_none());
        assert_eq!(q.messages(), 0);
    }

    /// One step of the model test: queue one message, queue a batch, or take one.
    #[derive(Clone, Debug)]
    enum Op {
        One(Vec<u8>),
        Batch(Vec<Vec<u8>>),
        Pop,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let payload = || proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            payload().prop_map(Op::One),
            proptest::collection::vec(payload(), 0..6).prop_map(Op::Batch),
            Just(Op::Pop),
            Just(Op::Pop),
        ]
    }

    proptest::proptest! {
        /// Against a plain queue of messages: the same messages come out in the same order,
        /// and the counts and lengths agree after every step.
        #[test]
        fn matches_a_queue_of_messages(ops in proptest::collection::vec(op(), 0..80)) {
            let mut q = Inbox::default();
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            for op in ops {
                match op {
                    Op::One(m) => {
                        q.push_one(Bytes::from(m.clone()));
                        model.push_back(m);
                    }
                    Op::Batch(ms) => {
                        let refs: Vec<&[u8]> = ms.iter().map(Vec::as_slice).collect();
                        q.push_batch(body(&refs), ms.len() as u32);
                        model.extend(ms);
                    }
                    Op::Pop => {
                        proptest::prop_assert_eq!(q.pop().map(|b| b.to_vec()), model.pop_front());
                    }
                }
                proptest::prop_assert_eq!(q.messages(), model.len());
                proptest::prop_assert_eq!(q.is_empty(), model.is_empty());
                let lens: Vec<usize> = q.lens().collect();
                let model_lens: Vec<usize> = model.iter().map(Vec::len).collect();
                proptest::prop_assert_eq!(lens, model_lens);
            }
        }
    }

    #[test]
    fn clear_empties_it() {
        let mut q = Inbox::default();
        q.push_batch(body(&[b"x", b"y"]), 2);
        q.clear();
        assert!(q.is_empty() && q.pop().is_none() && q.lens().next().is_none());
    }
}
