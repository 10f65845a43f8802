//! Frames: everything after the hellos. The base form (vox 0.3.0) is a sequenced data frame:
//!
//! ```text
//! varint(seq) | option tag 00/01 | [varint(ack)] | item_len: u32 LE | item
//! ```
//!
//! With extensions in force (both hellos carried `EXT`) every frame starts with a kind byte:
//! `00` DATA (a base frame follows), `01` ACK `varint(ack)`, `02` PING `u64 LE`, `03` PONG
//! `u64 LE`, `04` GOODBYE `varint(code)` + UTF-8 reason. Decoding is strict (no trailing
//! bytes, tags 0/1 only, canonical varints), so `encode(decode(b)) == b` for every accepted `b`.

use super::varint::{decode_varint, encode_varint, varint_len, MAX_VARINT_LEN};
use super::WireError;

/// Extended kind byte: DATA.
pub const KIND_DATA: u8 = 0;
/// Extended kind byte: standalone ACK.
pub const KIND_ACK: u8 = 1;
/// Extended kind byte: PING.
pub const KIND_PING: u8 = 2;
/// Extended kind byte: PONG.
pub const KIND_PONG: u8 = 3;
/// Extended kind byte: GOODBYE.
pub const KIND_GOODBYE: u8 = 4;

/// The longest data-frame header: kind + seq + tag + ack + item_len.
pub const MAX_DATA_HEADER_LEN: usize = 1 + MAX_VARINT_LEN + 1 + MAX_VARINT_LEN + 4;

/// The fixed part of a data frame, everything before the item bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// Sequence number of this frame in its direction.
    pub seq: u32,
    /// Cumulative ack: highest seq delivered in the other direction.
    pub ack: Option<u32>,
    /// Length of the item that follows.
    pub item_len: u32,
}

impl DataHeader {
    /// Encoded length of this header (with the kind byte when `ext`).
    #[must_use]
    pub fn encoded_len(&self, ext: bool) -> usize {
        usize::from(ext) + varint_len(self.seq) + 1 + self.ack.map_or(0, varint_len) + 4
    }

    /// Write the header (kind byte first when `ext`); `None` if `out` is too short.
    #[must_use]
    pub fn encode(&self, ext: bool, out: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        if ext {
            *out.get_mut(at)? = KIND_DATA;
            at += 1;
        }
        at += encode_varint(self.seq, out.get_mut(at..)?)?;
        match self.ack {
            None => {
                *out.get_mut(at)? = 0;
                at += 1;
            }
            Some(ack) => {
                *out.get_mut(at)? = 1;
                at += 1;
                at += encode_varint(ack, out.get_mut(at..)?)?;
            }
        }
        out.get_mut(at..at + 4)?.copy_from_slice(&self.item_len.to_le_bytes());
        Some(at + 4)
    }
}

/// A decoded frame. `Data::item` and `Goodbye::reason` borrow from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A sequenced item (the only kind in the base form).
    Data {
        /// Sequence number.
        seq: u32,
        /// Piggybacked cumulative ack.
        ack: Option<u32>,
        /// The opaque item.
        item: &'a [u8],
    },
    /// Standalone cumulative ack (extensions).
    Ack(u32),
    /// Liveness probe (extensions).
    Ping(u64),
    /// Answer to a probe, echoing its nonce (extensions).
    Pong(u64),
    /// The session is over; do not reconnect (extensions).
    Goodbye {
        /// Application- or sotto-defined reason code.
        code: u32,
        /// Human-readable reason.
        reason: &'a str,
    },
}

impl<'a> Frame<'a> {
    /// Decode one whole link message as a frame. `ext` says whether extensions are in force on
    /// the link the message came from.
    pub fn decode(bytes: &'a [u8], ext: bool) -> Result<Self, WireError> {
        if !ext {
            return decode_data(bytes);
        }
        let (&kind, rest) = bytes.split_first().ok_or(WireError::Truncated)?;
        match kind {
            KIND_DATA => decode_data(rest),
            KIND_ACK => {
                let (ack, n) = decode_varint(rest)?;
                no_trailing(rest, n)?;
                Ok(Self::Ack(ack))
            }
            KIND_PING | KIND_PONG => {
                let nonce: [u8; 8] = rest.try_into().map_err(|_| {
                    if rest.len() < 8 {
                        WireError::Truncated
                    } else {
                        WireError::TrailingBytes
                    }
                })?;
                let nonce = u64::from_le_bytes(nonce);
                Ok(if kind == KIND_PING { Self::Ping(nonce) } else { Self::Pong(nonce) })
            }
            KIND_GOODBYE => {
                let (code, n) = decode_varint(rest)?;
                let reason = core::str::from_utf8(&rest[n..]).map_err(|_| WireError::BadUtf8)?;
                Ok(Self::Goodbye { code, reason })
            }
            kind => Err(WireError::UnknownKind { kind }),
        }
    }

    /// Encoded length of this frame.
    #[must_use]
    pub fn encoded_len(&self, ext: bool) -> usize {
        match *self {
            Self::Data { seq, ack, item } => {
                DataHeader { seq, ack, item_len: item.len() as u32 }.encoded_len(ext) + item.len()
            }
            Self::Ack(ack) => 1 + varint_len(ack),
            Self::Ping(_) | Self::Pong(_) => 9,
            Self::Goodbye { code, reason } => 1 + varint_len(code) + reason.len(),
        }
    }

    /// Encode into `out`; returns the length written. `None` if `out` is too short, or if the
    /// frame is an extended kind and `ext` is false (the base form has only data frames).
    #[must_use]
    pub fn encode(&self, ext: bool, out: &mut [u8]) -> Option<usize> {
        match *self {
            Self::Data { seq, ack, item } => {
                let item_len = u32::try_from(item.len()).ok()?;
                let n = DataHeader { seq, ack, item_len }.encode(ext, out)?;
                out.get_mut(n..n + item.len())?.copy_from_slice(item);
                Some(n + item.len())
            }
            _ if !ext => None,
            Self::Ack(ack) => {
                *out.get_mut(0)? = KIND_ACK;
                Some(1 + encode_varint(ack, out.get_mut(1..)?)?)
            }
            Self::Ping(nonce) | Self::Pong(nonce) => {
                *out.get_mut(0)? = if matches!(self, Self::Ping(_)) { KIND_PING } else { KIND_PONG };
                out.get_mut(1..9)?.copy_from_slice(&nonce.to_le_bytes());
                Some(9)
            }
            Self::Goodbye { code, reason } => {
                *out.get_mut(0)? = KIND_GOODBYE;
                let n = 1 + encode_varint(code, out.get_mut(1..)?)?;
                out.get_mut(n..n + reason.len())?.copy_from_slice(reason.as_bytes());
                Some(n + reason.len())
            }
        }
    }
}

fn no_trailing(bytes: &[u8], used: usize) -> Result<(), WireError> {
    if bytes.len() == used {
        Ok(())
    } else {
        Err(WireError::TrailingBytes)
    }
}

fn decode_data(bytes: &[u8]) -> Result<Frame<'_>, WireError> {
    let (seq, mut at) = decode_varint(bytes)?;
    let tag = *bytes.get(at).ok_or(WireError::Truncated)?;
    at += 1;
    let ack = match tag {
        0 => None,
        1 => {
            let (ack, n) = decode_varint(&bytes[at..])?;
            at += n;
            Some(ack)
        }
        tag => return Err(WireError::BadOptionTag { tag }),
    };
    let len_bytes: [u8; 4] =
        bytes.get(at..at + 4).ok_or(WireError::Truncated)?.try_into().map_err(|_| WireError::Truncated)?;
    at += 4;
    let item_len = u32::from_le_bytes(len_bytes) as usize;
    let rest = &bytes[at..];
    if item_len > rest.len() {
        return Err(WireError::ItemLength { claimed: item_len as u32, available: rest.len() as u32 });
    }
    no_trailing(rest, item_len)?;
    Ok(Frame::Data { seq, ack, item: rest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_hex::hex;
    use alloc::vec;

    fn round_trip(hexstr: &str, ext: bool, expect: Frame<'_>) {
        let bytes = hex(hexstr);
        let frame = Frame::decode(&bytes, ext).expect("decodes");
        assert_eq!(frame, expect);
        let mut out = vec![0u8; bytes.len()];
        assert_eq!(frame.encode(ext, &mut out), Some(bytes.len()));
        assert_eq!(out, bytes);
        assert_eq!(frame.encoded_len(ext), bytes.len());
    }

    #[test]
    fn wire_md_base_frames() {
        round_trip("00 00 03000000 026162", false, Frame::Data { seq: 0, ack: None, item: &[2, 0x61, 0x62] });
        round_trip("05 0103 00000000", false, Frame::Data { seq: 5, ack: Some(3), item: &[] });
        round_trip("01 0101 07000000 066563686f3a79", false, Frame::Data { seq: 1, ack: Some(1), item: b"\x06echo:y" });
    }

    #[test]
    fn wire_md_prefixed_lengths_match() {
        // The link prefixes in WIRE.md: 09, 07 and 0e.
        for (len, body) in
            [(9, "00 00 03000000 026162"), (7, "05 0103 00000000"), (14, "01 0101 07000000 066563686f3a79")]
        {
            assert_eq!(hex(body).len(), len);
        }
    }

    #[test]
    fn extended_frames() {
        round_trip("00 05 0103 00000000", true, Frame::Data { seq: 5, ack: Some(3), item: &[] });
        round_trip("01 ff01", true, Frame::Ack(255));
        round_trip("02 0807060504030201", true, Frame::Ping(0x0102_0304_0506_0708));
        round_trip("03 0100000000000000", true, Frame::Pong(1));
        round_trip("04 07 627965", true, Frame::Goodbye { code: 7, reason: "bye" });
        round_trip("04 00", true, Frame::Goodbye { code: 0, reason: "" });
    }

    #[test]
    fn m3_strictness() {
        assert_eq!(Frame::decode(&hex("00 00 03000000 02616263"), false), Err(WireError::TrailingBytes));
        assert_eq!(Frame::decode(&hex("00 02 00000000"), false), Err(WireError::BadOptionTag { tag: 2 }));
        assert_eq!(
            Frame::decode(&hex("00 00 05000000 0261"), false),
            Err(WireError::ItemLength { claimed: 5, available: 2 })
        );
        assert_eq!(Frame::decode(&hex("05 00 000000"), false), Err(WireError::Truncated));
        assert_eq!(Frame::decode(&hex("09"), true), Err(WireError::UnknownKind { kind: 9 }));
        assert_eq!(Frame::decode(&[], true), Err(WireError::Truncated));
        assert_eq!(Frame::decode(&[], false), Err(WireError::Truncated));
        assert_eq!(Frame::decode(&hex("01 05 00"), true), Err(WireError::TrailingBytes));
        assert_eq!(Frame::decode(&hex("02 01"), true), Err(WireError::Truncated));
        assert_eq!(Frame::decode(&hex("03 010203040506070809"), true), Err(WireError::TrailingBytes));
        assert_eq!(Frame::decode(&hex("04 00 ff"), true), Err(WireError::BadUtf8));
        assert_eq!(Frame::decode(&hex("ffffffff7f 00 00000000"), false), Err(WireError::VarintOverflow));
    }

    #[test]
    fn m2_item_length_never_trusted() {
        // A 4 GiB item_len in a tiny message is an error, not an allocation.
        assert!(matches!(Frame::decode(&hex("00 00 ffffffff 00"), false), Err(WireError::ItemLength { .. })));
    }

    #[test]
    fn extended_kinds_not_encodable_in_base_form() {
        let mut out = [0u8; 16];
        assert_eq!(Frame::Ack(1).encode(false, &mut out), None);
        assert_eq!(Frame::Ping(1).encode(true, &mut out[..4]), None);
    }

    #[test]
    fn header_len_bound() {
        let h = DataHeader { seq: u32::MAX, ack: Some(u32::MAX), item_len: u32::MAX };
        assert_eq!(h.encoded_len(true), MAX_DATA_HEADER_LEN);
        let mut out = [0u8; MAX_DATA_HEADER_LEN];
        assert_eq!(h.encode(true, &mut out), Some(MAX_DATA_HEADER_LEN));
    }
}
