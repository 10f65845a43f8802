//! Exported state: the byte format that carries a [`Conduit`](crate::Conduit) or a
//! [`Session`](crate::session::Session) at rest from one process to another, and its errors.
//! The layout is in docs/state-format.md.
//!
//! A state is a 12-byte header (magic `"SOTS"`, version, kind, body length) followed by
//! sections, each `tag:u8 len:u32 body`, in a fixed order. Integers are little-endian and of
//! fixed width; booleans are one byte, 0 or 1. Decoding is strict: every field is checked
//! against the importing side's own configuration, nothing is allocated by a length read
//! from the bytes beyond what those limits allow, and any mismatch is an [`ImportError`].

use alloc::vec::Vec;

use crate::conduit::ConfigError;

/// The first four bytes of every exported state.
pub const MAGIC: [u8; 4] = *b"SOTS";
/// The format version this crate writes, and the only one it reads.
pub const VERSION: u16 = 1;
/// Length of the header: magic, version (u16), kind (u8), reserved (u8, zero), body length
/// (u32).
pub const HEADER_LEN: usize = 12;

/// What an exported state holds (the header's kind byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum StateKind {
    /// A raw [`Conduit`](crate::Conduit).
    Conduit = 1,
    /// A [`Session`](crate::session::Session) (its conduit included).
    Session = 2,
}

/// Section tags, in the order they appear.
pub(crate) mod tag {
    /// The conduit's positions, keys and flags.
    pub(crate) const CONDUIT: u8 = 0x01;
    /// The replay ring's unacked items.
    pub(crate) const RING: u8 = 0x02;
    /// The session layer's scalars and hello metadata.
    pub(crate) const SESSION: u8 = 0x10;
    /// The connection table.
    pub(crate) const CONNS: u8 = 0x11;
    /// Owed rejects and the queue of `ConnWritable` events owed.
    pub(crate) const QUEUES: u8 = 0x12;
}

/// Why a state could not be exported. Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// The session is over, or failing at the session layer: there is nothing to continue.
    Ended,
    /// Events are waiting to be read (`poll_event`): export at rest, after draining every
    /// output. Link events (`Attached`, `DropLink`) do not count: the link is not exported.
    EventsPending,
}

impl core::fmt::Display for ExportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Ended => "the session is over or failing",
            Self::EventsPending => "events are waiting to be read; drain poll_event before exporting",
        })
    }
}

impl core::error::Error for ExportError {}

/// Why bytes could not be imported as a state. No state was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportError {
    /// The bytes end before the structure does.
    Truncated,
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// A format version this crate does not read (a newer exporter, or corruption).
    UnsupportedVersion {
        /// The version in the header.
        version: u16,
    },
    /// The header names another kind of state (a conduit's state given to
    /// `Session::import`, or an unknown kind).
    WrongKind {
        /// The kind byte in the header.
        kind: u8,
    },
    /// The header's body length does not match the bytes given, or a reserved byte is set.
    BadLength,
    /// A section is missing, out of order, or of an unknown kind.
    UnexpectedSection {
        /// The tag expected at this point.
        expected: u8,
        /// The tag found.
        found: u8,
    },
    /// A section's body is longer than its fields.
    TrailingBytes {
        /// The section's tag.
        section: u8,
    },
    /// A field holds a value no state can have, or contradicts another field.
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// The state exceeds a limit of the importing side's configuration.
    OverLimit {
        /// The limit.
        limit: &'static str,
        /// The state's value.
        value: u64,
        /// The importing side's maximum.
        max: u64,
    },
    /// The importing side's own configuration is invalid.
    Config(ConfigError),
}

impl core::fmt::Display for ImportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("state truncated"),
            Self::BadMagic => f.write_str("not a sotto state (bad magic)"),
            Self::UnsupportedVersion { version } => {
                write!(f, "state format version {version} is not supported (this build reads {VERSION})")
            }
            Self::WrongKind { kind } => write!(f, "state of kind {kind} where another kind was expected"),
            Self::BadLength => f.write_str("state length does not match its header"),
            Self::UnexpectedSection { expected, found } => {
                write!(f, "section {found:#04x} where {expected:#04x} was expected")
            }
            Self::TrailingBytes { section } => write!(f, "trailing bytes in section {section:#04x}"),
            Self::Invalid { field } => write!(f, "invalid state field: {field}"),
            Self::OverLimit { limit, value, max } => {
                write!(f, "state exceeds this side's {limit}: {value} > {max}")
            }
            Self::Config(e) => write!(f, "importing configuration invalid: {e}"),
        }
    }
}

impl core::error::Error for ImportError {}

impl From<ConfigError> for ImportError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// An `Invalid` error for `field`.
pub(crate) fn invalid(field: &'static str) -> ImportError {
    ImportError::Invalid { field }
}

/// Refuse `value` above `max`.
pub(crate) fn check_limit(limit: &'static str, value: u64, max: u64) -> Result<(), ImportError> {
    if value > max {
        return Err(ImportError::OverLimit { limit, value, max });
    }
    Ok(())
}

/// Appends fields to an output buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Write the header of a state of `kind` at the end of `out`; [`finish`](Self::finish)
    /// fills in the body length.
    pub(crate) fn begin(out: &'a mut Vec<u8>, kind: StateKind) -> (Self, usize) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(kind as u8);
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        (Self { out }, start)
    }
    /// Patch the body length of the state begun at `start`.
    pub(crate) fn finish(self, start: usize) {
        let body = self.out.len() - start - HEADER_LEN;
        let len = u32::try_from(body).unwrap_or(u32::MAX).to_le_bytes();
        self.out[start + 8..start + 12].copy_from_slice(&len);
    }
    /// Write a section: its tag, its length, then what `body` writes.
    pub(crate) fn section(&mut self, tag: u8, body: impl FnOnce(&mut Self)) {
        self.out.push(tag);
        let at = self.out.len();
        self.out.extend_from_slice(&0u32.to_le_bytes());
        body(self);
        let len = u32::try_from(self.out.len() - at - 4).unwrap_or(u32::MAX).to_le_bytes();
        self.out[at..at + 4].copy_from_slice(&len);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
}

/// Reads fields from a state, every read checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Check the header of `bytes` (magic, version, `kind`, exact length) and return a reader
    /// over the body.
    pub(crate) fn open(bytes: &'a [u8], kind: StateKind) -> Result<Self, ImportError> {
        let mut r = Self { buf: bytes };
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(ImportError::BadMagic);
        }
        let version = u16::from_le_bytes([r.u8()?, r.u8()?]);
        if version != VERSION {
            return Err(ImportError::UnsupportedVersion { version });
        }
        let k = r.u8()?;
        if k != kind as u8 {
            return Err(ImportError::WrongKind { kind: k });
        }
        let reserved = r.u8()?;
        let len = r.u32()?;
        if reserved != 0 || u64::from(len) != r.buf.len() as u64 {
            return Err(ImportError::BadLength);
        }
        Ok(r)
    }
    /// The next section, which must carry `tag`: a reader over its body.
    pub(crate) fn section(&mut self, tag: u8) -> Result<Reader<'a>, ImportError> {
        let found = self.u8()?;
        if found != tag {
            return Err(ImportError::UnexpectedSection { expected: tag, found });
        }
        let len = self.u32()? as usize;
        Ok(Reader { buf: self.take(len)? })
    }
    /// Check that the section (tagged `tag`) was read to its end.
    pub(crate) fn end(&self, tag: u8) -> Result<(), ImportError> {
        if !self.buf.is_empty() {
            return Err(ImportError::TrailingBytes { section: tag });
        }
        Ok(())
    }
    /// Check that the whole state was read (after its last section).
    pub(crate) fn end_of_state(&self) -> Result<(), ImportError> {
        match self.buf.first() {
            None => Ok(()),
            Some(&found) => Err(ImportError::UnexpectedSection { expected: 0, found }),
        }
    }
    /// Bytes left unread.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        if n > self.buf.len() {
            return Err(ImportError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, ImportError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(invalid(field)),
        }
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ImportError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ImportError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn array16(&mut self) -> Result<[u8; 16], ImportError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(a)
    }
}

/// Counters (sequence positions, ids) above this are refused: they could overflow on the
/// next increment, and no real session gets near (2^62 items at a billion a second take
/// over a century).
pub(crate) const MAX_COUNTER: u64 = 1 << 62;
