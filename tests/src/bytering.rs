//! A byte FIFO with a capacity fixed at construction: the in-flight bytes of one direction of
//! a simulated link. It never grows; overfilling it is reported, not absorbed.

/// Fixed-capacity byte FIFO.
#[derive(Debug)]
pub(crate) struct ByteRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl ByteRing {
    /// A ring holding up to `cap` bytes (allocated now, once).
    pub(crate) fn new(cap: usize) -> Self {
        Self { buf: vec![0; cap.max(1)], head: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Append `bytes`; `false` (and nothing appended) if they do not fit.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        let cap = self.buf.len();
        if cap - self.len < bytes.len() {
            return false;
        }
        let tail = (self.head + self.len) % cap;
        let first = (cap - tail).min(bytes.len());
        self.buf[tail..tail + first].copy_from_slice(&bytes[..first]);
        self.buf[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.len += bytes.len();
        true
    }

    /// Move up to `out.len()` bytes from the front into `out`; returns how many.
    pub(crate) fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let cap = self.buf.len();
        let n = out.len().min(self.len);
        let first = (cap - self.head).min(n);
        out[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        self.head = (self.head + n) % cap;
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_refuses_overflow() {
        let mut r = ByteRing::new(5);
        assert!(r.push(b"abc"));
        let mut out = [0u8; 2];
        assert_eq!(r.pop_into(&mut out), 2);
        assert_eq!(&out, b"ab");
        assert!(r.push(b"defg"));
        assert!(!r.push(b"h"));
        let mut out = [0u8; 8];
        assert_eq!(r.pop_into(&mut out), 5);
        assert_eq!(&out[..5], b"cdefg");
        assert_eq!(r.len(), 0);
    }
}
