//! Session messages: the items the session layer puts in conduit frames. Byte layouts are in
//! docs/protocol.md; every message starts with a one-byte tag.
//!
//! Integers are LEB128 varints (canonical, at most five bytes) unless stated; strings and
//! metadata are `varint(len)` + bytes, except the *last* field of a message, which runs to the
//! end of the item (payloads, reasons), so no length is repeated. Decoding is strict: unknown
//! tags, trailing bytes, over-long fields and bad UTF-8 are errors, and
//! `encode(decode(b)) == b`.

use crate::wire::varint::{decode_varint, encode_varint, varint_len};
use crate::wire::WireError;

/// Tag: Hello (initiator's session handshake).
pub const TAG_HELLO: u8 = 0x01;
/// Tag: HelloYourself (acceptor accepts the handshake).
pub const TAG_HELLO_YOURSELF: u8 = 0x02;
/// Tag: LetsGo (initiator confirms).
pub const TAG_LETS_GO: u8 = 0x03;
/// Tag: Sorry (handshake refused).
pub const TAG_SORRY: u8 = 0x04;
/// Tag: Data on a connection.
pub const TAG_DATA: u8 = 0x10;
/// Tag: Open a virtual connection.
pub const TAG_OPEN: u8 = 0x11;
/// Tag: Accept an Open.
pub const TAG_ACCEPT: u8 = 0x12;
/// Tag: Reject an Open.
pub const TAG_REJECT: u8 = 0x13;
/// Tag: Close a connection.
pub const TAG_CLOSE: u8 = 0x14;
/// Tag: grant send credit.
pub const TAG_CREDIT: u8 = 0x15;
/// Tag: protocol error, sent before the session ends.
pub const TAG_PROTOCOL_ERROR: u8 = 0x16;
/// Tag: several data messages on one connection in one item (protocol version 2).
pub const TAG_DATA_BATCH: u8 = 0x17;
/// Tag: end of stream on a connection from its sender (half-close, protocol version 3).
pub const TAG_FIN: u8 = 0x18;

/// The session protocol version this crate speaks: 4, in which the acceptor is ready once it
/// answers the Hello and the initiator sends no [`Message::LetsGo`]; version 3 added
/// [`Message::Fin`] (half-close), version 2 [`Message::DataBatch`].
pub const PROTOCOL_VERSION: u32 = 4;
/// The oldest version this crate still speaks (1: no `DataBatch`, which is never sent to a
/// version-1 peer).
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The first version with [`Message::DataBatch`] and [`MIN_MESSAGE_CREDIT`].
pub const BATCH_VERSION: u32 = 2;
/// The first version with [`Message::Fin`] (half-close). With an older peer a connection's
/// write half cannot be closed alone: [`Session::finish`](super::Session::finish) is
/// refused and the driver closes the connection both ways instead.
pub const HALF_CLOSE_VERSION: u32 = 3;
/// The first version without [`Message::LetsGo`]: the acceptor is ready as soon as it has
/// queued its HelloYourself, and the initiator as soon as it has read it (it acks it with
/// its next frame or keepalive). With an older peer the handshake ends with LetsGo as
/// before.
pub const READY_ON_HELLO_VERSION: u32 = 4;

/// From protocol version 2 on, a data message spends at least this much of its connection's
/// credit (its length if larger): credit then bounds how many messages a receiver can be
/// made to queue, not only their bytes, so a flood of tiny or empty messages toward a slow
/// reader is held back by credit like any other (version 1 charged the length alone, and
/// an empty message nothing).
pub const MIN_MESSAGE_CREDIT: u64 = 16;

/// The credit a message of `len` bytes spends: `len`, at least [`MIN_MESSAGE_CREDIT`] when
/// `min_charge` (the peer speaks version 2 or later).
#[inline(always)]
#[must_use]
pub const fn message_credit(len: u64, min_charge: bool) -> u64 {
    if min_charge && len < MIN_MESSAGE_CREDIT {
        MIN_MESSAGE_CREDIT
    } else {
        len
    }
}

/// Which connection ids a side allocates. The initiator takes odd ids, the acceptor even
/// (id 0 is the root connection, which exists from the handshake on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
pub enum Parity {
    /// Ids 1, 3, 5, ...
    Odd = 1,
    /// Ids 2, 4, 6, ...
    Even = 2,
}

impl Parity {
    /// Whether `id` belongs to this parity (0 belongs to neither).
    #[must_use]
    pub fn owns(self, id: u32) -> bool {
        id != 0 && (id % 2 == 1) == (self == Self::Odd)
    }
    /// The other side's parity.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Odd => Self::Even,
            Self::Even => Self::Odd,
        }
    }
}

/// What a side announces in Hello / HelloYourself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloBody<'a> {
    /// Protocol version.
    pub version: u32,
    /// The sender's id parity.
    pub parity: Parity,
    /// Bytes the sender lets the peer send on the root connection before a grant.
    pub root_credit: u32,
    /// Most connections the sender will hold open at once.
    pub max_connections: u32,
    /// Application metadata (capped by `max_metadata`).
    pub metadata: &'a [u8],
}

/// A session message. Borrowed fields point into the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `01 varint(version) parity:u8 varint(root_credit) varint(max_connections) metadata..`
    Hello(HelloBody<'a>),
    /// `02` + the same body as Hello.
    HelloYourself(HelloBody<'a>),
    /// `03`
    LetsGo,
    /// `04 varint(code) reason..` (UTF-8)
    Sorry {
        /// Why.
        code: u32,
        /// Human-readable reason.
        reason: &'a str,
    },
    /// `10 varint(conn) payload..`
    Data {
        /// Connection id.
        conn: u32,
        /// The payload.
        payload: &'a [u8],
    },
    /// `11 varint(conn) varint(credit) metadata..`
    Open {
        /// The new connection's id (opener's parity).
        conn: u32,
        /// Bytes the opener lets the peer send on it before a grant.
        credit: u32,
        /// Application metadata.
        metadata: &'a [u8],
    },
    /// `12 varint(conn) varint(credit) metadata..`
    Accept {
        /// Connection id.
        conn: u32,
        /// Bytes the accepter lets the opener send before a grant.
        credit: u32,
        /// Application metadata.
        metadata: &'a [u8],
    },
    /// `13 varint(conn) varint(code) metadata..`
    Reject {
        /// Connection id.
        conn: u32,
        /// Why.
        code: u32,
        /// Application metadata.
        metadata: &'a [u8],
    },
    /// `14 varint(conn) metadata..`
    Close {
        /// Connection id.
        conn: u32,
        /// Application metadata.
        metadata: &'a [u8],
    },
    /// `15 varint(conn) varint(grant)`
    Credit {
        /// Connection id.
        conn: u32,
        /// Additional bytes the peer may send.
        grant: u32,
    },
    /// `16 varint(code) reason..` (UTF-8)
    ProtocolError {
        /// Which violation.
        code: u32,
        /// Human-readable reason.
        reason: &'a str,
    },
    /// `17 varint(conn) (varint(len) payload)+`: one or more data messages on one connection,
    /// in order (protocol version 2).
    DataBatch {
        /// Connection id.
        conn: u32,
        /// The messages.
        batch: DataBatch<'a>,
    },
    /// `18 varint(conn)`: the sender sends nothing more on `conn` (end of stream); the other
    /// direction stays open (protocol version 3).
    Fin {
        /// Connection id.
        conn: u32,
    },
}

/// The messages of a [`Message::DataBatch`]: validated on decode (at least one message, every
/// length within the item, nothing after the last), so iterating cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataBatch<'a> {
    bytes: &'a [u8],
    count: u32,
    payload_len: u64,
    credit: u64,
}

impl<'a> DataBatch<'a> {
    /// Check `bytes` (the batch body: `(varint(len) payload)+`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (mut at, mut count, mut payload_len, mut credit) = (0usize, 0u32, 0u64, 0u64);
        while let Some(&first) = bytes.get(at) {
            // A length below 128 (one byte) is the common case: small messages are batched.
            let len = if first < 0x80 {
                at += 1;
                usize::from(first)
            } else {
                varint(bytes, &mut at)? as usize
            };
            if bytes.len() - at < len {
                return Err(WireError::Truncated);
            }
            at += len;
            count += 1;
            payload_len += len as u64;
            credit += message_credit(len as u64, true);
        }
        if count == 0 {
            return Err(WireError::Truncated);
        }
        Ok(Self { bytes, count, payload_len, credit })
    }

    /// How many messages.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The payloads' lengths added up.
    #[must_use]
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// What the batch spends of the connection's credit: each message's
    /// [`message_credit`] (batches exist from version 2 on, so at least
    /// [`MIN_MESSAGE_CREDIT`] each).
    #[must_use]
    pub fn credit(&self) -> u64 {
        self.credit
    }

    /// The encoded body (`(varint(len) payload)+`), as sent.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The payloads, in order.
    #[must_use]
    pub fn iter(&self) -> DataBatchIter<'a> {
        DataBatchIter { rest: self.bytes }
    }
}

impl<'a> IntoIterator for DataBatch<'a> {
    type Item = &'a [u8];
    type IntoIter = DataBatchIter<'a>;
    fn into_iter(self) -> DataBatchIter<'a> {
        self.iter()
    }
}

/// The payloads of a [`DataBatch`], in order.
#[derive(Clone, Debug)]
pub struct DataBatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for DataBatchIter<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, n) = decode_varint(self.rest).ok()?;
        let payload = self.rest.get(n..n + len as usize)?;
        self.rest = &self.rest[n + len as usize..];
        Some(payload)
    }
}

fn varint(input: &[u8], at: &mut usize) -> Result<u32, WireError> {
    let (v, n) = decode_varint(input.get(*at..).ok_or(WireError::Truncated)?)?;
    *at += n;
    Ok(v)
}

fn hello_body(b: &[u8]) -> Result<HelloBody<'_>, WireError> {
    let mut at = 0;
    let version = varint(b, &mut at)?;
    let parity = match *b.get(at).ok_or(WireError::Truncated)? {
        1 => Parity::Odd,
        2 => Parity::Even,
        tag => return Err(WireError::BadOptionTag { tag }),
    };
    at += 1;
    let root_credit = varint(b, &mut at)?;
    let max_connections = varint(b, &mut at)?;
    Ok(HelloBody { version, parity, root_credit, max_connections, metadata: &b[at..] })
}

fn text(b: &[u8]) -> Result<&str, WireError> {
    core::str::from_utf8(b).map_err(|_| WireError::BadUtf8)
}

impl<'a> Message<'a> {
    /// Decode one item as a session message.
    pub fn decode(item: &'a [u8]) -> Result<Self, WireError> {
        let (&tag, b) = item.split_first().ok_or(WireError::Truncated)?;
        let mut at = 0;
        Ok(match tag {
            TAG_HELLO => Self::Hello(hello_body(b)?),
            TAG_HELLO_YOURSELF => Self::HelloYourself(hello_body(b)?),
            TAG_LETS_GO if b.is_empty() => Self::LetsGo,
            TAG_LETS_GO => return Err(WireError::TrailingBytes),
            TAG_SORRY => {
                let code = varint(b, &mut at)?;
                Self::Sorry { code, reason: text(&b[at..])? }
            }
            TAG_DATA => {
                let conn = varint(b, &mut at)?;
                Self::Data { conn, payload: &b[at..] }
            }
            TAG_OPEN | TAG_ACCEPT => {
                let conn = varint(b, &mut at)?;
                let credit = varint(b, &mut at)?;
                let metadata = &b[at..];
                if tag == TAG_OPEN {
                    Self::Open { conn, credit, metadata }
                } else {
                    Self::Accept { conn, credit, metadata }
                }
            }
            TAG_REJECT => {
                let conn = varint(b, &mut at)?;
                let code = varint(b, &mut at)?;
                Self::Reject { conn, code, metadata: &b[at..] }
            }
            TAG_CLOSE => {
                let conn = varint(b, &mut at)?;
                Self::Close { conn, metadata: &b[at..] }
            }
            TAG_CREDIT => {
                let conn = varint(b, &mut at)?;
                let grant = varint(b, &mut at)?;
                if at != b.len() {
                    return Err(WireError::TrailingBytes);
                }
                Self::Credit { conn, grant }
            }
            TAG_PROTOCOL_ERROR => {
                let code = varint(b, &mut at)?;
                Self::ProtocolError { code, reason: text(&b[at..])? }
            }
            TAG_DATA_BATCH => {
                let conn = varint(b, &mut at)?;
                Self::DataBatch { conn, batch: DataBatch::parse(&b[at..])? }
            }
            TAG_FIN => {
                let conn = varint(b, &mut at)?;
                if at != b.len() {
                    return Err(WireError::TrailingBytes);
                }
                Self::Fin { conn }
            }
            kind => return Err(WireError::UnknownKind { kind }),
        })
    }

    /// The header bytes (everything but the trailing variable field) and the trailing field,
    /// so the message can be sent as two parts without copying the payload.
    /// Returns `(header_len, tail)`; the header is written to `header`.
    #[must_use]
    pub fn encode_parts<'h>(&self, header: &'h mut [u8; MAX_HEADER_LEN]) -> (&'h [u8], &'a [u8]) {
        let mut w = HeaderWriter { buf: header, at: 0 };
        let tail: &'a [u8] = match *self {
            Self::Hello(h) | Self::HelloYourself(h) => {
                w.byte(if matches!(self, Self::Hello(_)) { TAG_HELLO } else { TAG_HELLO_YOURSELF });
                w.varint(h.version);
                w.byte(h.parity as u8);
                w.varint(h.root_credit);
                w.varint(h.max_connections);
                h.metadata
            }
            Self::LetsGo => {
                w.byte(TAG_LETS_GO);
                &[]
            }
            Self::Sorry { code, reason } | Self::ProtocolError { code, reason } => {
                w.byte(if matches!(self, Self::Sorry { .. }) { TAG_SORRY } else { TAG_PROTOCOL_ERROR });
                w.varint(code);
                reason.as_bytes()
            }
            Self::Data { conn, payload } => {
                w.byte(TAG_DATA);
                w.varint(conn);
                payload
            }
            Self::Open { conn, credit, metadata } | Self::Accept { conn, credit, metadata } => {
                w.byte(if matches!(self, Self::Open { .. }) { TAG_OPEN } else { TAG_ACCEPT });
                w.varint(conn);
                w.varint(credit);
                metadata
            }
            Self::Reject { conn, code, metadata } => {
                w.byte(TAG_REJECT);
                w.varint(conn);
                w.varint(code);
                metadata
            }
            Self::Close { conn, metadata } => {
                w.byte(TAG_CLOSE);
                w.varint(conn);
                metadata
            }
            Self::Credit { conn, grant } => {
                w.byte(TAG_CREDIT);
                w.varint(conn);
                w.varint(grant);
                &[]
            }
            Self::DataBatch { conn, batch } => {
                w.byte(TAG_DATA_BATCH);
                w.varint(conn);
                batch.bytes
            }
            Self::Fin { conn } => {
                w.byte(TAG_FIN);
                w.varint(conn);
                &[]
            }
        };
        let at = w.at;
        (&header[..at], tail)
    }

    /// Encoded length.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let mut h = [0u8; MAX_HEADER_LEN];
        let (head, tail) = self.encode_parts(&mut h);
        head.len() + tail.len()
    }

    /// Encode into `out`; `None` if it does not fit.
    #[must_use]
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut h = [0u8; MAX_HEADER_LEN];
        let (head, tail) = self.encode_parts(&mut h);
        let n = head.len() + tail.len();
        let dst = out.get_mut(..n)?;
        dst[..head.len()].copy_from_slice(head);
        dst[head.len()..].copy_from_slice(tail);
        Some(n)
    }
}

struct HeaderWriter<'h> {
    buf: &'h mut [u8; MAX_HEADER_LEN],
    at: usize,
}

impl HeaderWriter<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }
    fn varint(&mut self, v: u32) {
        self.at += encode_varint(v, &mut self.buf[self.at..]).unwrap_or(0);
    }
}

/// The longest header [`Message::encode_parts`] writes: a tag, a parity byte and up to three
/// varints.
pub const MAX_HEADER_LEN: usize = 1 + 1 + 3 * 5;

/// Length of a DataBatch header for `conn` and a first message of `len` bytes (tag + two
/// varints).
#[must_use]
pub const fn batch_header_len(conn: u32, len: u32) -> usize {
    1 + varint_len(conn) + varint_len(len)
}

/// Length of a Data header for `conn` (tag + varint).
#[must_use]
#[inline]
pub const fn data_header_len(conn: u32) -> usize {
    1 + varint_len(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_hex::hex;
    use alloc::vec;
    use alloc::vec::Vec;

    fn check(hexstr: &str, expect: Message<'_>) {
        let bytes = hex(hexstr);
        let m = Message::decode(&bytes).expect("decodes");
        assert_eq!(m, expect);
        let mut out = vec![0u8; bytes.len()];
        assert_eq!(m.encode(&mut out), Some(bytes.len()));
        assert_eq!(out, bytes, "round trip");
        assert_eq!(m.encoded_len(), bytes.len());
    }

    // Every example here is also in docs/protocol.md.
    #[test]
    fn protocol_md_examples() {
        let body =
            HelloBody { version: 1, parity: Parity::Odd, root_credit: 262_144, max_connections: 256, metadata: b"hi" };
        check("01 01 01 808010 8002 6869", Message::Hello(body));
        let body =
            HelloBody { version: 1, parity: Parity::Even, root_credit: 65_536, max_connections: 16, metadata: b"" };
        check("02 01 02 808004 10", Message::HelloYourself(body));
        check("03", Message::LetsGo);
        check("04 01 76657273696f6e", Message::Sorry { code: 1, reason: "version" });
        check("10 00 616263", Message::Data { conn: 0, payload: b"abc" });
        check("10 83 01 ff", Message::Data { conn: 131, payload: &[0xff] });
        check("11 03 808010 6b", Message::Open { conn: 3, credit: 262_144, metadata: b"k" });
        check("12 03 8040", Message::Accept { conn: 3, credit: 8192, metadata: b"" });
        check("13 05 02 6e6f", Message::Reject { conn: 5, code: 2, metadata: b"no" });
        check("14 04", Message::Close { conn: 4, metadata: b"" });
        check("15 03 8080 01", Message::Credit { conn: 3, grant: 16_384 });
        check("16 07 6261642069640a", Message::ProtocolError { code: 7, reason: "bad id\n" });
        let body = hex("03 616263 00 01 ff");
        let batch = DataBatch::parse(&body).expect("valid");
        check("17 05 03616263 00 01ff", Message::DataBatch { conn: 5, batch });
        assert_eq!((batch.count(), batch.payload_len()), (3, 4));
        assert_eq!(batch.iter().collect::<Vec<_>>(), [&b"abc"[..], b"", &[0xff]]);
        check("18 03", Message::Fin { conn: 3 });
        check("18 8301", Message::Fin { conn: 131 });
    }

    #[test]
    fn fin_decoding_is_strict() {
        assert_eq!(Message::decode(&hex("18")), Err(WireError::Truncated));
        assert_eq!(Message::decode(&hex("18 03 00")), Err(WireError::TrailingBytes));
        assert_eq!(Message::decode(&hex("18 8000")), Err(WireError::NonCanonicalVarint));
    }

    #[test]
    fn data_batch_decoding_is_strict() {
        assert_eq!(Message::decode(&hex("17 01")), Err(WireError::Truncated), "no message");
        assert_eq!(Message::decode(&hex("17 01 03 6162")), Err(WireError::Truncated), "short payload");
        assert_eq!(Message::decode(&hex("17 01 01 61 05")), Err(WireError::Truncated), "trailing length");
        assert_eq!(Message::decode(&hex("17 01 8000")), Err(WireError::NonCanonicalVarint));
        assert_eq!(Message::decode(&hex("17 01 80")), Err(WireError::Truncated));
    }

    #[test]
    fn strict_decoding() {
        assert_eq!(Message::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Message::decode(&[0x7f]), Err(WireError::UnknownKind { kind: 0x7f }));
        assert_eq!(Message::decode(&hex("03 00")), Err(WireError::TrailingBytes));
        assert_eq!(Message::decode(&hex("15 03 01 00")), Err(WireError::TrailingBytes));
        assert_eq!(Message::decode(&hex("01 01 03 00 00")), Err(WireError::BadOptionTag { tag: 3 }));
        assert_eq!(Message::decode(&hex("04 01 ff")), Err(WireError::BadUtf8));
        assert_eq!(Message::decode(&hex("10")), Err(WireError::Truncated));
        assert_eq!(Message::decode(&hex("10 80 00")), Err(WireError::NonCanonicalVarint));
    }

    #[test]
    fn parity() {
        assert!(Parity::Odd.owns(1) && !Parity::Odd.owns(2) && !Parity::Odd.owns(0));
        assert!(Parity::Even.owns(2) && !Parity::Even.owns(0));
        assert_eq!(Parity::Odd.other(), Parity::Even);
    }
}
