//! The connection table: slots plus an open-addressing index from connection id to slot.
//! Lookups are O(1) on average; removal uses backward-shift deletion, so there are no
//! tombstones to accumulate. The slots start few and double (the index with them) when a
//! connection finds none free, up to the capacity given at construction: memory follows the
//! connections a session has had open at once, and growth stops once it has seen its peak.

use alloc::vec;
use alloc::vec::Vec;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// We sent Open; waiting for Accept or Reject.
    OpeningOut,
    /// The peer sent Open; the application has not answered.
    PendingIn,
    /// Open both ways.
    Open,
    /// We sent Fin: we send nothing more, the peer still may (protocol version 3).
    SentFin,
    /// The peer sent Fin: it sends nothing more, we still may (protocol version 3).
    GotFin,
}

impl ConnState {
    /// Whether the peer may send data in this state.
    #[inline(always)]
    pub(crate) fn peer_sends(self) -> bool {
        matches!(self, Self::Open | Self::SentFin)
    }
    /// Whether we may send data in this state.
    #[inline(always)]
    pub(crate) fn we_send(self) -> bool {
        matches!(self, Self::Open | Self::GotFin)
    }
}

/// One connection's state. Credits are in bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conn {
    pub(crate) id: u32,
    pub(crate) state: ConnState,
    /// Bytes the peer let us send that we have not sent: counted exactly (saturating), so it
    /// matches the peer's own count; we use at most our `max_credit` of it.
    pub(crate) send_credit: u64,
    /// Bytes the peer may still send us.
    pub(crate) recv_window: u64,
    /// Bytes the application consumed that we have not granted back yet.
    pub(crate) pending_grant: u64,
    /// A send failed for lack of credit; report when a grant arrives.
    pub(crate) want_writable: bool,
    /// The peer's window on this connection (its initial credit, clamped to our
    /// `max_credit`): it grants once half of it is owed, so a payload above half of it could
    /// wait for a grant forever and is refused (`TooLarge`).
    pub(crate) peer_window: u64,
}

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct IndexEntry {
    id: u32,
    slot: u32,
}

const FREE: IndexEntry = IndexEntry { id: 0, slot: EMPTY };

/// Slots a new table starts with.
const FIRST_SLOTS: usize = 4;

/// Table of connections keyed by id, holding at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct ConnTable {
    /// The slots allocated now (at most `cap`).
    slots: Vec<Option<Conn>>,
    cap: usize,
    free: Vec<u32>,
    /// Open-addressing index: (id, slot), slot `EMPTY` for a free position. The id sits
    /// beside the slot so a probe compares ids without touching the slots.
    index: Vec<IndexEntry>,
    mask: usize,
    len: usize,
    /// The slot of the last connection looked up mutably (hot-path cache; always checked
    /// against the slot's id, so a stale value only costs a probe).
    hot: u32,
}

fn hash(id: u32) -> usize {
    (u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

impl ConnTable {
    pub(crate) fn new(capacity: usize) -> Self {
        let mut t =
            Self { slots: Vec::new(), cap: capacity, free: Vec::new(), index: Vec::new(), mask: 0, len: 0, hot: 0 };
        t.resize(FIRST_SLOTS.min(capacity));
        t
    }

    /// Allocate `slots` slots (at least those in use) and an index to match, re-indexing
    /// every connection.
    fn resize(&mut self, slots: usize) {
        let index_len = (slots * 2).next_power_of_two().max(4);
        let old = core::mem::take(&mut self.slots);
        self.slots = vec![None; slots];
        self.index = vec![FREE; index_len];
        self.mask = index_len - 1;
        self.free.clear();
        // Room for every slot: `clear` refills the list without allocating.
        self.free.reserve(slots);
        self.len = 0;
        self.hot = 0;
        for conn in old.into_iter().flatten() {
            self.slots[self.len] = Some(conn);
            self.index_insert(conn.id, self.len as u32);
            self.len += 1;
        }
        self.free.extend((self.len as u32..slots as u32).rev());
    }

    /// Grow every table to the capacity now, so that no insert allocates.
    pub(crate) fn reserve_full(&mut self) {
        if self.slots.len() < self.cap {
            self.resize(self.cap);
        }
    }

    fn index_insert(&mut self, id: u32, slot: u32) {
        let mut pos = hash(id) & self.mask;
        while self.index[pos].slot != EMPTY {
            pos = (pos + 1) & self.mask;
        }
        self.index[pos] = IndexEntry { id, slot };
    }

    /// Remove every connection, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = None;
        }
        for i in &mut self.index {
            *i = FREE;
        }
        self.free.clear();
        self.free.extend((0..self.slots.len() as u32).rev());
        self.len = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// The most connections the table holds (not what it has allocated).
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// The index position holding `id`, probing from its home position.
    fn find_pos(&self, id: u32) -> Option<usize> {
        let mut pos = hash(id) & self.mask;
        loop {
            let e = self.index[pos];
            if e.slot == EMPTY {
                return None;
            }
            if e.id == id {
                return Some(pos);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// The slot holding `id`: the last one looked up first (the data path touches the same
    /// connection over and over), then the index.
    #[inline]
    fn find_slot(&self, id: u32) -> Option<usize> {
        let hot = self.hot as usize;
        if matches!(self.slots.get(hot), Some(Some(c)) if c.id == id) {
            return Some(hot);
        }
        self.find_pos(id).map(|pos| self.index[pos].slot as usize)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Conn> {
        self.slots.get(self.find_slot(id)?)?.as_ref()
    }

    /// `id`'s connection if it is the one last looked up mutably (no probe): the data
    /// path's fast path, which takes the general path on `None`.
    #[inline(always)]
    pub(crate) fn get_hot_mut(&mut self, id: u32) -> Option<&mut Conn> {
        match self.slots.get_mut(self.hot as usize) {
            Some(Some(c)) if c.id == id => Some(c),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Conn> {
        let slot = self.find_slot(id)?;
        self.hot = slot as u32;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Insert a new connection; `false` if the table is full or the id is present.
    pub(crate) fn insert(&mut self, conn: Conn) -> bool {
        if self.find_pos(conn.id).is_some() {
            return false;
        }
        if self.free.is_empty() && self.slots.len() < self.cap {
            self.resize((self.slots.len() * 2).max(FIRST_SLOTS).min(self.cap));
        }
        let Some(slot) = self.free.pop() else { return false };
        self.slots[slot as usize] = Some(conn);
        self.index_insert(conn.id, slot);
        self.len += 1;
        true
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<Conn> {
        let mut pos = self.find_pos(id)?;
        let slot = self.index[pos].slot;
        let conn = self.slots[slot as usize].take();
        self.free.push(slot);
        self.len -= 1;
        // Backward-shift deletion.
        let mut next = (pos + 1) & self.mask;
        loop {
            let s = self.index[next];
            if s.slot == EMPTY {
                break;
            }
            let home = hash(s.id) & self.mask;
            // Move `s` into the hole if its home is not in (pos, next].
            let dist_home = next.wrapping_sub(home) & self.mask;
            let dist_hole = next.wrapping_sub(pos) & self.mask;
            if dist_home >= dist_hole {
                self.index[pos] = s;
                pos = next;
            }
            next = (next + 1) & self.mask;
        }
        self.index[pos] = FREE;
        conn
    }

    /// Every connection, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.slots.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u32) -> Conn {
        Conn {
            id,
            state: ConnState::Open,
            send_credit: 0,
            recv_window: 0,
            pending_grant: 0,
            want_writable: false,
            peer_window: 0,
        }
    }

    #[test]
    fn insert_get_remove_many() {
        let mut t = ConnTable::new(64);
        for round in 0..20u32 {
            for i in 0..64 {
                assert!(t.insert(conn(round * 1000 + i * 2 + 1)));
            }
            assert!(!t.insert(conn(999_999)), "full");
            for i in (0..64).step_by(3) {
                assert!(t.remove(round * 1000 + i * 2 + 1).is_some());
            }
            for i in 0..64 {
                let id = round * 1000 + i * 2 + 1;
                assert_eq!(t.get(id).is_some(), i % 3 != 0, "id {id}");
            }
            for i in 0..64 {
                t.remove(round * 1000 + i * 2 + 1);
            }
            assert_eq!(t.len(), 0);
        }
    }

    #[test]
    fn grows_by_doubling_to_the_capacity_keeping_every_connection() {
        let mut t = ConnTable::new(100);
        assert_eq!(t.slots.len(), FIRST_SLOTS, "starts small");
        for id in 1..=100u32 {
            assert!(t.insert(conn(id * 2 + 1)), "id {id}");
        }
        assert_eq!(t.slots.len(), 100, "grew to the capacity, not past it");
        assert!(!t.insert(conn(1001)), "full at the capacity");
        for id in 1..=100u32 {
            assert_eq!(t.get(id * 2 + 1).map(|c| c.id), Some(id * 2 + 1));
        }
        assert_eq!(t.remove(7).map(|c| c.id), Some(7));
        assert!(t.insert(conn(1001)), "a freed slot is reused");
        assert_eq!(t.len(), 100);
        let mut r = ConnTable::new(10);
        r.reserve_full();
        assert_eq!(r.slots.len(), 10);
    }

    #[test]
    fn duplicate_id_refused() {
        let mut t = ConnTable::new(4);
        assert!(t.insert(conn(3)));
        assert!(!t.insert(conn(3)));
        assert_eq!(t.iter().count(), 1);
        assert_eq!(t.capacity(), 4);
    }
}
