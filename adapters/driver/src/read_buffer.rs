//! The driver's reusable read buffer: a `BytesMut` from whose front whole messages are split
//! off as `Bytes` without a copy.
//!
//! Two ways to read into it, chosen by the stream type ([`Io::READS_UNINIT`](crate::Io)):
//! streams that can read into uninitialized capacity (tokio's) append to the buffer directly;
//! others (`futures::io` streams) read into room that was zero-filled once and is kept
//! between reads, so zeroing happens once per byte of buffer, not per read call.
//!
//! Memory follows the traffic: the buffer allocates nothing until the first read, and the
//! room reserved for a read (`chunk`) starts at [`FIRST_CHUNK`] and doubles, up to the
//! configured `read_chunk`, each time a read fills all the room it was given (more was
//! waiting). [`shrink`](ReadBuffer::shrink), called by the driver when the link has been
//! idle, releases the buffer and starts `chunk` small again.

use bytes::{Bytes, BytesMut};

/// Below this much spare room, grow before reading (tiny reads cost a syscall each).
const MIN_READ: usize = 512;
/// The room reserved for the first reads, and again after a [`ReadBuffer::shrink`]: a
/// session handshake's messages fit several times over, and a new session touches no more
/// memory than that before traffic asks for more (each read that fills its room doubles it).
pub(crate) const FIRST_CHUNK: usize = 512;

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    /// `buf[..filled]` is data read and not yet split off. Zero-filled mode: `buf[filled..]`
    /// is initialized room (zeroed once; bytes moved down by [`cut`](Self::cut) leave
    /// stale data there, which a read overwrites). Append mode: `buf.len() == filled`.
    buf: BytesMut,
    filled: usize,
    /// Room reserved for a read now: grows from [`FIRST_CHUNK`] to `max_chunk`.
    chunk: usize,
    max_chunk: usize,
    /// The room the last read was given.
    offered: usize,
    append: bool,
}

impl ReadBuffer {
    /// `append`: the stream reads into uninitialized capacity (see [`appendable`](Self::appendable)).
    /// `chunk`: the most room reserved for one read. Allocates nothing yet.
    pub(crate) fn new(chunk: usize, append: bool) -> Self {
        let max_chunk = chunk.max(MIN_READ);
        Self { buf: BytesMut::new(), filled: 0, chunk: FIRST_CHUNK.min(max_chunk), max_chunk, offered: 0, append }
    }

    /// Bytes allocated for reading now (the capacity of the current buffer).
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The link is idle: if no unread bytes are held, release the buffer (an earlier split
    /// off `Bytes` keeps its own part alive) and start the read size small again.
    pub(crate) fn shrink(&mut self) {
        if self.filled == 0 {
            self.buf = BytesMut::new();
            self.chunk = FIRST_CHUNK.min(self.max_chunk);
        }
    }

    /// The bytes read and not yet split off.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Zero-filled mode: room to read into, at least `wanted` bytes (and at least a useful
    /// read's worth).
    pub(crate) fn spare(&mut self, wanted: usize) -> &mut [u8] {
        let room = self.buf.len() - self.filled;
        if room < wanted.max(MIN_READ) {
            self.buf.truncate(self.filled);
            // Reclaims the front in place when no `Bytes` split off earlier is alive;
            // otherwise moves the unread tail to a new allocation.
            self.buf.reserve(wanted.max(self.chunk));
            let cap = self.buf.capacity();
            self.buf.resize(cap, 0);
        }
        self.offered = self.buf.len() - self.filled;
        &mut self.buf[self.filled..]
    }

    /// Append mode: the buffer to append at least `wanted` bytes to (capacity reserved).
    pub(crate) fn appendable(&mut self, wanted: usize) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < wanted.max(MIN_READ) {
            self.buf.reserve(wanted.max(self.chunk));
        }
        self.offered = self.buf.capacity() - self.buf.len();
        &mut self.buf
    }

    /// `n` bytes were read (into [`spare`](Self::spare), or appended). A read that filled
    /// all the room it was given doubles the room reserved for the next ones.
    pub(crate) fn advance(&mut self, n: usize) {
        self.filled = if self.append { self.buf.len() } else { (self.filled + n).min(self.buf.len()) };
        if n >= self.offered && self.chunk < self.max_chunk {
            self.chunk = (self.chunk * 2).min(self.max_chunk);
        }
    }

    /// Split the first `n` bytes of data off as an immutable, shareable chunk.
    pub(crate) fn split(&mut self, n: usize) -> Bytes {
        let n = n.min(self.filled);
        self.filled -= n;
        self.buf.split_to(n).freeze()
    }

    /// Move the `len` bytes of data at `from` down to `to` (`to <= from`).
    pub(crate) fn move_within(&mut self, from: usize, len: usize, to: usize) {
        if from != to {
            self.buf[..self.filled].copy_within(from..from + len, to);
        }
    }

    /// Cut the `len` bytes of data at `at` out, moving the data after them down.
    pub(crate) fn cut(&mut self, at: usize, len: usize) {
        if len == 0 {
            return;
        }
        self.buf[..self.filled].copy_within(at + len.., at);
        self.filled -= len;
        if self.append {
            self.buf.truncate(self.filled);
        }
    }

    /// Forget unread bytes (the link they came from is gone).
    pub(crate) fn clear(&mut self) {
        let n = self.filled;
        let _ = self.split(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_when_they_fill_the_room_and_shrink_releases_it() {
        for append in [false, true] {
            let mut r = ReadBuffer::new(64 << 10, append);
            assert_eq!(r.allocated(), 0, "nothing before the first read");
            let mut rooms = Vec::new();
            for _ in 0..8 {
                // A read that fills all the room it was given.
                let room = if append {
                    let b = r.appendable(1);
                    let room = b.capacity() - b.len();
                    b.resize(b.capacity(), 7);
                    room
                } else {
                    r.spare(1).len()
                };
                rooms.push(room);
                r.advance(room);
                let n = r.data().len();
                let _ = r.split(n);
            }
            assert!(rooms[0] < 2 * FIRST_CHUNK, "starts small: {rooms:?}");
            assert!(*rooms.last().expect("reads") >= 64 << 10, "grows to the cap: {rooms:?}");
            assert!(rooms.iter().all(|&x| x < 2 * (64 << 10)), "never past it: {rooms:?}");
            // Idle with nothing unread: released, and small again.
            r.shrink();
            assert_eq!(r.allocated(), 0);
            let room = if append { r.appendable(1).capacity() } else { r.spare(1).len() };
            assert!(room < 2 * FIRST_CHUNK, "append {append}: {room}");
            // Unread bytes are kept.
            if append {
                r.appendable(1).extend_from_slice(b"abc");
            } else {
                r.spare(1)[..3].copy_from_slice(b"abc");
            }
            r.advance(3);
            r.shrink();
            assert_eq!(r.data(), b"abc", "unread data survives a shrink");
        }
    }

    #[test]
    fn reads_split_and_refill() {
        let mut r = ReadBuffer::new(2048, false);
        let s = r.spare(1);
        assert!(s.len() >= MIN_READ);
        s[..5].copy_from_slice(b"hello");
        r.advance(5);
        assert_eq!(r.data(), b"hello");
        let held = r.split(2);
        assert_eq!(&held[..], b"he");
        assert_eq!(r.data(), b"llo");
        // Ask for more than is left: grows, keeps data, spare is zeroed.
        let s = r.spare(1 << 16);
        assert!(s.len() >= 1 << 16);
        assert!(s.iter().all(|b| *b == 0));
        assert_eq!(r.data(), b"llo");
        assert_eq!(&held[..], b"he", "split chunk unaffected");
        r.clear();
        assert!(r.data().is_empty());
    }

    #[test]
    fn cut_and_move_within_keep_the_rest_in_order() {
        for append in [false, true] {
            let mut r = ReadBuffer::new(2048, append);
            if append {
                r.appendable(16).extend_from_slice(b"aaBBccDDe");
            } else {
                r.spare(16)[..9].copy_from_slice(b"aaBBccDDe");
            }
            r.advance(9);
            // Keep "aa", drop "BB", keep "cc" (moved down), drop "DD", keep the tail "e".
            r.move_within(4, 2, 2);
            r.cut(4, 4);
            assert_eq!(r.data(), b"aacce", "append {append}");
            r.cut(0, 0);
            assert_eq!(r.data(), b"aacce");
            if append {
                r.appendable(4).extend_from_slice(b"f");
            } else {
                r.spare(4)[0] = b'f';
            }
            r.advance(1);
            assert_eq!(r.data(), b"aaccef", "append {append}: reads continue after a cut");
        }
    }

    #[test]
    fn append_mode() {
        let mut r = ReadBuffer::new(2048, true);
        let b = r.appendable(1);
        assert!(b.capacity() - b.len() >= MIN_READ);
        b.extend_from_slice(b"hello");
        r.advance(5);
        let held = r.split(2);
        assert_eq!(r.data(), b"llo");
        let b = r.appendable(1 << 16);
        assert!(b.capacity() - b.len() >= 1 << 16);
        b.extend_from_slice(b"!");
        r.advance(1);
        assert_eq!(r.data(), b"llo!");
        assert_eq!(&held[..], b"he");
    }
}
