//! The items the peer never acknowledged, read back from the replay ring: what a lost
//! session leaves to its application.

use super::ring::ReplayRing;
use super::Conduit;

/// The items sent and not acknowledged by the peer, oldest first, each whole; see
/// [`Conduit::unacked_items`].
#[derive(Clone, Debug)]
pub struct UnackedItems<'a> {
    ring: &'a ReplayRing,
    next: u64,
    end: u64,
}

impl<'a> Iterator for UnackedItems<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.next < self.end {
            let seq = self.next;
            self.next += 1;
            // Contiguous: `unacked_items` made the ring so, and nothing has changed it since.
            if let Some((item, rest)) = self.ring.get(seq) {
                if rest.is_empty() {
                    return Some(item);
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next) as usize;
        (n, Some(n))
    }
}

impl Conduit {
    /// The items sent that the peer has not acknowledged (the [`unacked`](Self::unacked)
    /// ones, held in the replay ring), oldest first, each whole, in the order `send` took
    /// them. After the session is lost these are what may never have reached the peer's
    /// application; items it acknowledged did reach its session. An item the peer received
    /// but had not acknowledged yet is among them: across a loss, delivery is at least once.
    ///
    /// Moves the ring's bytes in place first so that no item is split at the ring's end (no
    /// allocation; work in proportion to the ring's storage): call it once the session is
    /// over, or rarely, not per message. Replay is unaffected.
    pub fn unacked_items(&mut self) -> UnackedItems<'_> {
        self.ring.make_contiguous();
        UnackedItems { ring: &self.ring, next: self.ring.first_seq(), end: self.ring.end_seq() }
    }
}
