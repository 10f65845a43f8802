//! LEB128 varints for `u32` values: 7 bits a byte, low group first, `0x80` = continuation.
//!
//! Decoding is strict: more than five bytes, or a value above `u32::MAX`, is an error.
//! Non-canonical encodings (a trailing `0x80 0x00`, say) are rejected too: vox 0.3.0 encodes
//! canonically (postcard), so accepting them would only break the encode/decode round trip
//! that fuzzing checks (see docs/protocol.md, "Strictness").

use super::WireError;

/// The longest encoding of a `u32`.
pub const MAX_VARINT_LEN: usize = 5;

/// Number of bytes `value` takes when encoded.
#[must_use]
pub const fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

/// Encode `value` at the start of `out`; returns the bytes written, or `None` if `out` is too
/// short (it never writes past `out`).
#[must_use]
#[inline]
pub fn encode_varint(mut value: u32, out: &mut [u8]) -> Option<usize> {
    if value < 0x80 {
        // One byte: the common case for seqs of a fresh link, acks, connection ids, lengths.
        *out.first_mut()? = value as u8;
        return Some(1);
    }
    let len = varint_len(value);
    let (last, groups) = out.get_mut(..len)?.split_last_mut()?;
    for byte in groups {
        *byte = value as u8 | 0x80;
        value >>= 7;
    }
    *last = value as u8;
    Some(len)
}

/// Decode a varint at the start of `input`; returns the value and the bytes consumed.
#[inline]
pub fn decode_varint(input: &[u8]) -> Result<(u32, usize), WireError> {
    match input.first() {
        Some(&b) if b < 0x80 => return Ok((u32::from(b), 1)),
        Some(_) => {}
        None => return Err(WireError::Truncated),
    }
    let mut value: u32 = 0;
    for i in 0..MAX_VARINT_LEN {
        let byte = *input.get(i).ok_or(WireError::Truncated)?;
        let group = u32::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && group > 0x0f {
            return Err(WireError::VarintOverflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(WireError::NonCanonicalVarint);
            }
            return Ok((value, i + 1));
        }
    }
    Err(WireError::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_boundaries() {
        for v in [0u32, 1, 0x7f, 0x80, 0x3fff, 0x4000, 0x1f_ffff, 0x20_0000, 0x0fff_ffff, 0x1000_0000, u32::MAX] {
            let mut buf = [0u8; 5];
            let n = encode_varint(v, &mut buf).expect("fits");
            assert_eq!(n, varint_len(v));
            assert_eq!(decode_varint(&buf[..n]), Ok((v, n)));
        }
    }

    #[test]
    fn rejects_bad_encodings() {
        assert_eq!(decode_varint(&[]), Err(WireError::Truncated));
        assert_eq!(decode_varint(&[0x80]), Err(WireError::Truncated));
        assert_eq!(decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]), Err(WireError::VarintOverflow));
        assert_eq!(decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), Err(WireError::VarintOverflow));
        assert_eq!(decode_varint(&[0x81, 0x00]), Err(WireError::NonCanonicalVarint));
        assert_eq!(decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok((u32::MAX, 5)));
    }

    #[test]
    fn encode_never_writes_past_out() {
        let mut buf = [0u8; 1];
        assert_eq!(encode_varint(300, &mut buf), None);
    }
}
