//! Forging session messages for scenario tests: taps that rewrite the session item inside
//! the data frames a side writes (keeping seq and ack, so the conduit accepts them), and
//! encoders for hand-made messages. A test typically sends a marker payload on the root
//! connection and has the tap replace it with the hostile message.

use std::cell::Cell;
use std::rc::Rc;

use sotto_proto::session::message::{Message, TAG_DATA, TAG_DATA_BATCH};
use sotto_proto::wire::Frame;

use crate::sim::Tap;
use crate::wire_util;

/// Encode a session message.
#[must_use]
pub fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut out).expect("buffer sized by encoded_len");
    out.truncate(n);
    out
}

/// A root-connection payload as a plain Data item (how a version-1 peer, or a payload above
/// a quarter of `batch_bytes`, travels).
#[must_use]
pub fn root_item(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![TAG_DATA, 0];
    v.extend_from_slice(payload);
    v
}

/// A root-connection payload (below 128 bytes) alone in a DataBatch item: how a small
/// payload sent to a version-2 peer travels when no earlier message shares its item.
#[must_use]
pub fn root_batch_item(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128, "one-byte length");
    let mut v = vec![TAG_DATA_BATCH, 0, payload.len() as u8];
    v.extend_from_slice(payload);
    v
}

/// A tap that rewrites the item of every data frame for which `f` returns a replacement
/// (extended frame form).
#[must_use]
pub fn rewrite_items(mut f: impl FnMut(&[u8]) -> Option<Vec<u8>> + 'static) -> Tap {
    Box::new(move |_serial, frame| {
        let new = match Frame::decode(frame, true) {
            Ok(Frame::Data { seq, ack, item }) => f(item).map(|new| wire_util::data(seq, ack, &new, true)),
            _ => None,
        };
        if let Some(new) = new {
            *frame = new;
        }
        true
    })
}

/// A tap that replaces each root payload equal to `marker` with `message` (every time), and
/// counts the replacements.
#[must_use]
pub fn replace_marker(marker: &'static [u8], message: Vec<u8>) -> (Tap, Rc<Cell<u32>>) {
    let count = Rc::new(Cell::new(0));
    let c = Rc::clone(&count);
    let want = [root_item(marker), root_batch_item(marker)];
    let tap = rewrite_items(move |item| {
        want.iter().any(|w| item == w.as_slice()).then(|| {
            c.set(c.get() + 1);
            message.clone()
        })
    });
    (tap, count)
}
