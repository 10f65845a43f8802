//! Link framing for byte streams: every link message is `[len: u32 LE][len bytes]`.
//!
//! [`LinkDecoder`] reassembles messages from bytes that arrive split anywhere. It checks the
//! length prefix against `max_frame_len` before buffering anything, hands out a message that
//! lies whole in the input as a borrow of the input (no copy), and copies only the message
//! that straddles two reads into a buffer allocated once, at construction.

use alloc::vec;
use alloc::vec::Vec;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why a byte stream cannot be decoded into link messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum FramingError {
    /// A length prefix above the decoder's `max_frame_len`.
    TooLong {
        /// The length the prefix claimed.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The stream ended inside a prefix or a body.
    Truncated,
}

impl core::fmt::Display for FramingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLong { len, max } => write!(f, "link message of {len} bytes exceeds max_frame_len {max}"),
            Self::Truncated => f.write_str("link ended inside a message"),
        }
    }
}

impl core::error::Error for FramingError {}

/// Where the next complete link message lies in `buf`, for drivers that keep their own read
/// buffer (a `BytesMut`, say) and split messages off it without a copy.
///
/// Returns `Ok(Some(body))` with the body's byte range (prefix excluded) when a whole message
/// is present, `Ok(None)` when more bytes are needed, and an error when the prefix exceeds
/// `max_frame_len` (checked as soon as the four prefix bytes are present).
pub fn next_message_extent(buf: &[u8], max_frame_len: u32) -> Result<Option<core::ops::Range<usize>>, FramingError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else { return Ok(None) };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len > max_frame_len {
        return Err(FramingError::TooLong { len, max: max_frame_len });
    }
    let end = LEN_PREFIX + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(LEN_PREFIX..end))
}

/// Write the length prefix for a `len`-byte message into `out[..4]`.
///
/// Returns `None` if `out` is shorter than four bytes.
#[must_use]
pub fn encode_len_prefix(len: u32, out: &mut [u8]) -> Option<()> {
    out.get_mut(..LEN_PREFIX)?.copy_from_slice(&len.to_le_bytes());
    Some(())
}

/// A message produced by [`LinkDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'i> {
    /// The message lay whole in the input: a borrow of the input, no copy.
    Whole(&'i [u8]),
    /// The message straddled reads and was reassembled: read it with
    /// [`LinkDecoder::reassembled`] before the next `decode` call.
    Reassembled,
}

/// Incremental decoder of `[len: u32 LE][body]` link messages.
///
/// Call [`LinkDecoder::decode`] repeatedly with the unread part of the latest read until it
/// returns `Ok(None)` (it has consumed all of the input); each call yields at most one message.
/// Call [`LinkDecoder::finish`] at end of stream to tell a clean close from a truncated link.
#[derive(Debug)]
pub struct LinkDecoder {
    max_frame_len: u32,
    prefix: [u8; LEN_PREFIX],
    prefix_have: usize,
    /// Body bytes of a message that straddles reads. Capacity `max_frame_len`, never grown.
    body: Vec<u8>,
    body_len: usize,
    in_body: bool,
}

impl LinkDecoder {
    /// A decoder that refuses messages longer than `max_frame_len`. Allocates its reassembly
    /// buffer (`max_frame_len` bytes) now, once.
    #[must_use]
    pub fn new(max_frame_len: u32) -> Self {
        Self {
            max_frame_len,
            prefix: [0; LEN_PREFIX],
            prefix_have: 0,
            body: vec![0; max_frame_len as usize],
            body_len: 0,
            in_body: false,
        }
    }

    /// The limit on a message body.
    #[must_use]
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Forget any partial message (call when a new link replaces the old one).
    pub fn reset(&mut self) {
        self.prefix_have = 0;
        self.body_len = 0;
        self.in_body = false;
    }

    /// Whether the decoder sits on a message boundary (no partial prefix or body held).
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        self.prefix_have == 0 && !self.in_body
    }

    /// Consume bytes from the front of `input` and return the next complete message, if any.
    ///
    /// `input` is advanced past what was consumed; `Ok(None)` means all of `input` was
    /// consumed without completing a message. A message lying whole in `input` is returned as
    /// [`Message::Whole`], a borrow of `input`; one that straddled calls is
    /// [`Message::Reassembled`], readable through [`reassembled`](Self::reassembled).
    /// After an error the stream is unusable: drop the link and [`reset`](Self::reset).
    pub fn decode<'i>(&mut self, input: &mut &'i [u8]) -> Result<Option<Message<'i>>, FramingError> {
        if !self.in_body {
            if self.prefix_have == 0 && input.len() >= LEN_PREFIX {
                // Fast path: a whole message may lie in the input; borrow it.
                let len = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
                if len > self.max_frame_len {
                    return Err(FramingError::TooLong { len, max: self.max_frame_len });
                }
                let end = LEN_PREFIX + len as usize;
                if input.len() >= end {
                    let (msg, rest) = input.split_at(end);
                    *input = rest;
                    return Ok(Some(Message::Whole(&msg[LEN_PREFIX..])));
                }
            }
            let take = (LEN_PREFIX - self.prefix_have).min(input.len());
            self.prefix[self.prefix_have..self.prefix_have + take].copy_from_slice(&input[..take]);
            self.prefix_have += take;
            *input = &input[take..];
            if self.prefix_have < LEN_PREFIX {
                return Ok(None);
            }
            let len = u32::from_le_bytes(self.prefix);
            if len > self.max_frame_len {
                return Err(FramingError::TooLong { len, max: self.max_frame_len });
            }
            self.prefix_have = 0;
            self.in_body = true;
            self.body_len = 0;
            self.prefix = len.to_le_bytes();
        }
        let want = u32::from_le_bytes(self.prefix) as usize;
        let take = (want - self.body_len).min(input.len());
        self.body[self.body_len..self.body_len + take].copy_from_slice(&input[..take]);
        self.body_len += take;
        *input = &input[take..];
        if self.body_len < want {
            return Ok(None);
        }
        self.in_body = false;
        self.body_len = want;
        Ok(Some(Message::Reassembled))
    }

    /// The body of the message last returned as [`Message::Reassembled`].
    #[must_use]
    pub fn reassembled(&self) -> &[u8] {
        if self.in_body {
            &[]
        } else {
            &self.body[..self.body_len]
        }
    }

    /// End of stream: `Ok(())` on a message boundary (a clean close), `Err(Truncated)` inside a
    /// prefix or a body.
    pub fn finish(&self) -> Result<(), FramingError> {
        if self.is_at_boundary() {
            Ok(())
        } else {
            Err(FramingError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn decode_all(dec: &mut LinkDecoder, mut input: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), FramingError> {
        loop {
            let before = input.len();
            match dec.decode(&mut input)? {
                Some(Message::Whole(m)) => out.push(m.to_vec()),
                Some(Message::Reassembled) => out.push(dec.reassembled().to_vec()),
                None if input.is_empty() || input.len() == before => return Ok(()),
                None => {}
            }
        }
    }

    #[test]
    fn split_anywhere_gives_same_messages() {
        let stream: Vec<u8> = [&[3u8, 0, 0, 0, 1, 2, 3][..], &[0, 0, 0, 0], &[1, 0, 0, 0, 9]].concat();
        for cut in 0..=stream.len() {
            let mut dec = LinkDecoder::new(16);
            let mut got = Vec::new();
            decode_all(&mut dec, &stream[..cut], &mut got).expect("ok");
            decode_all(&mut dec, &stream[cut..], &mut got).expect("ok");
            assert_eq!(got, [vec![1, 2, 3], vec![], vec![9]], "cut at {cut}");
            assert_eq!(dec.finish(), Ok(()));
        }
    }

    #[test]
    fn byte_by_byte() {
        let stream = [2u8, 0, 0, 0, 7, 8];
        let mut dec = LinkDecoder::new(16);
        let mut got = Vec::new();
        for b in stream {
            decode_all(&mut dec, &[b], &mut got).expect("ok");
        }
        assert_eq!(got, [vec![7, 8]]);
    }

    #[test]
    fn refuses_long_prefix_before_buffering() {
        let mut dec = LinkDecoder::new(16);
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert_eq!(dec.decode(&mut input), Err(FramingError::TooLong { len: u32::MAX, max: 16 }));
        let mut dec = LinkDecoder::new(16);
        let mut input: &[u8] = &[17, 0];
        assert_eq!(dec.decode(&mut input), Ok(None));
        let mut input: &[u8] = &[0, 0];
        assert_eq!(dec.decode(&mut input), Err(FramingError::TooLong { len: 17, max: 16 }));
        assert_eq!(next_message_extent(&[17, 0, 0, 0], 16), Err(FramingError::TooLong { len: 17, max: 16 }));
    }

    #[test]
    fn truncation_is_reported() {
        let mut dec = LinkDecoder::new(16);
        let mut input: &[u8] = &[2, 0, 0, 0, 1];
        assert_eq!(dec.decode(&mut input), Ok(None));
        assert_eq!(dec.finish(), Err(FramingError::Truncated));
        dec.reset();
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn extent_helper() {
        assert_eq!(next_message_extent(&[1, 0, 0], 16), Ok(None));
        assert_eq!(next_message_extent(&[1, 0, 0, 0], 16), Ok(None));
        assert_eq!(next_message_extent(&[1, 0, 0, 0, 5, 6], 16), Ok(Some(4..5)));
    }
}
