//! The wire layer: link framing, hellos, frames and varints. Pure functions and small
//! decoders; every decoder returns a [`WireError`] for bad bytes and never allocates by a
//! length the peer chose.

pub mod frame;
pub mod framing;
pub mod hello;
pub mod varint;

pub use frame::{DataHeader, Frame, MAX_DATA_HEADER_LEN};
pub use framing::{next_message_extent, FramingError, LinkDecoder, Message, LEN_PREFIX};
pub use hello::{ClientHello, ResumeKey, ServerHello, HELLO_LEN};

/// Why bytes failed to decode as a hello or a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure did.
    Truncated,
    /// A varint longer than five bytes or above `u32::MAX`.
    VarintOverflow,
    /// A varint with a redundant trailing zero group.
    NonCanonicalVarint,
    /// An option tag other than 0 or 1.
    BadOptionTag {
        /// The tag seen.
        tag: u8,
    },
    /// `item_len` runs past the end of the message.
    ItemLength {
        /// Length the frame claimed.
        claimed: u32,
        /// Bytes actually left.
        available: u32,
    },
    /// Bytes left over after a complete frame.
    TrailingBytes,
    /// An extended kind byte this version does not know.
    UnknownKind {
        /// The kind seen.
        kind: u8,
    },
    /// A GOODBYE reason that is not UTF-8.
    BadUtf8,
    /// A hello that is not exactly 25 bytes.
    HelloLength {
        /// The length seen.
        len: u32,
    },
    /// A hello with the wrong magic.
    BadMagic,
    /// A hello with flag bits this version does not know (an unknown version).
    UnknownFlags {
        /// The flags byte seen.
        flags: u8,
    },
    /// A hello whose flags contradict its fields.
    InconsistentFlags,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::VarintOverflow => f.write_str("varint overflows u32"),
            Self::NonCanonicalVarint => f.write_str("non-canonical varint"),
            Self::BadOptionTag { tag } => write!(f, "bad option tag {tag:#04x}"),
            Self::ItemLength { claimed, available } => {
                write!(f, "item_len {claimed} exceeds the {available} bytes left")
            }
            Self::TrailingBytes => f.write_str("trailing bytes after frame"),
            Self::UnknownKind { kind } => write!(f, "unknown frame kind {kind:#04x}"),
            Self::BadUtf8 => f.write_str("goodbye reason is not UTF-8"),
            Self::HelloLength { len } => write!(f, "hello of {len} bytes (want 25)"),
            Self::BadMagic => f.write_str("bad hello magic"),
            Self::UnknownFlags { flags } => write!(f, "unknown hello flags/version {flags:#04x}"),
            Self::InconsistentFlags => f.write_str("hello flags contradict its fields"),
        }
    }
}

impl core::error::Error for WireError {}

#[cfg(test)]
pub(crate) mod test_hex {
    use alloc::vec::Vec;

    /// Parse hex digits, ignoring spaces and `|`.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| {
                let d = |c: u8| (c as char).to_digit(16).map_or(0, |v| v as u8);
                (d(p[0]) << 4) | d(p[1])
            })
            .collect()
    }
}
