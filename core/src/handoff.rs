//! The frames of the handoff protocol (issue 17, docs/handoff.md): an acceptor hands its
//! sessions, and its listening socket, to another process over a Unix socket. This module is
//! the codec only (sans-IO, `no_std`): what travels, byte by byte, and the strict checks on
//! what is read. The driver moves the bytes (and the descriptor, with `SCM_RIGHTS`).
//!
//! Every frame is a 12-byte header and a body:
//!
//! ```text
//! off size
//!  0   4   magic     "SOHF"
//!  4   1   version   1
//!  5   1   kind      1 OFFER, 2 ACK, 3 LISTENER, 4 DONE, 5 REVOKE
//!  6   2   reserved  0
//!  8   4   body_len  u32, little-endian: bytes after the header (at most the reader's limit)
//! ```
//!
//! Bodies (little-endian integers):
//!
//! ```text
//! OFFER     corr u64, token [16] (never all zero), deadline_ms u32 (> 0),
//!           issuer_len u16 (at most MAX_ISSUER), issuer [issuer_len],
//!           app_len u32, app [app_len], state_len u32 (> 0), state [state_len]
//! ACK       corr u64, token [16], verdict u8 (0 accepted, 1 refused), refusal u16
//!           (0 when accepted, a known code when refused), reason_len u8, reason [reason_len] (UTF-8)
//! LISTENER  family u8 (1 TCP, 2 Unix); its file descriptor travels with the frame's bytes
//! DONE      offers u32: how many OFFERs the sender made
//! REVOKE    corr u64, token [16]: the sender gave up on that offer (its ACK came late, or
//!           was wrong): a receiver that adopted it must give it up again
//! ```
//!
//! A frame's body must be exactly its fields: bytes left over are refused
//! ([`FrameError::TrailingBytes`]), as is every unknown value. Decoding never panics and
//! never allocates; an [`Offer`]'s and an [`Ack`]'s byte fields borrow from the frame.

use alloc::vec::Vec;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SOHF";
/// The protocol version this codec reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 12;
/// Longest issuer identity an OFFER may carry (reserved for issuer-tagged resume keys: the
/// worker and epoch that issued the session's keys; empty until those exist).
pub const MAX_ISSUER: usize = 64;
/// Longest reason an ACK may carry, in bytes.
pub const MAX_REASON: usize = 255;
/// Bytes of a handoff token.
pub const TOKEN_LEN: usize = 16;

/// A one-time token naming one offer; the ACK must echo it.
pub type Token = [u8; TOKEN_LEN];

const KIND_OFFER: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_LISTENER: u8 = 3;
const KIND_DONE: u8 = 4;
const KIND_REVOKE: u8 = 5;

/// What is wrong with a frame read from the handoff socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// A version this codec does not speak (a newer sender): refused, never guessed at.
    UnsupportedVersion(u8),
    /// An unknown frame kind.
    UnknownKind(u8),
    /// The reserved header bytes are not zero.
    Reserved,
    /// The body is longer than the reader accepts.
    TooLong {
        /// The body length the header announced.
        len: u32,
        /// The most the reader takes.
        max: u32,
    },
    /// The frame ends before its fields do.
    Truncated,
    /// The body is longer than its fields.
    TrailingBytes,
    /// A field holds a value the protocol does not allow.
    Invalid(&'static str),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a handoff frame (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported handoff protocol version {v}"),
            Self::UnknownKind(k) => write!(f, "unknown handoff frame kind {k}"),
            Self::Reserved => f.write_str("reserved header bytes set"),
            Self::TooLong { len, max } => write!(f, "handoff frame body of {len} bytes exceeds {max}"),
            Self::Truncated => f.write_str("handoff frame truncated"),
            Self::TrailingBytes => f.write_str("bytes after the handoff frame's fields"),
            Self::Invalid(field) => write!(f, "invalid handoff frame field: {field}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a receiver refused an offer (the ACK's `refusal` code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u16)]
pub enum Refusal {
    /// The offer's state or application section did not import (corrupt, truncated).
    BadState = 1,
    /// The state is from a format version the receiver does not read (a newer sender).
    UnsupportedState = 2,
    /// The state exceeds the receiver's own limits.
    OverLimit = 3,
    /// The receiver has no room for another session.
    Full = 4,
    /// One of the session's resume keys already routes to a session at the receiver.
    KeyInUse = 5,
    /// The offer's deadline passed before the receiver could take it.
    Expired = 6,
    /// The receiver is not taking sessions (shutting down, or not an acceptor).
    NotAccepting = 7,
    /// The issuer identity is not one the receiver can take over.
    Issuer = 8,
}

impl Refusal {
    /// The refusal with wire code `code`, if known.
    #[must_use]
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::BadState,
            2 => Self::UnsupportedState,
            3 => Self::OverLimit,
            4 => Self::Full,
            5 => Self::KeyInUse,
            6 => Self::Expired,
            7 => Self::NotAccepting,
            8 => Self::Issuer,
            _ => return None,
        })
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadState => "the session state did not import",
            Self::UnsupportedState => "the session state's format version is not supported",
            Self::OverLimit => "the session state exceeds the receiver's limits",
            Self::Full => "the receiver has no room for another session",
            Self::KeyInUse => "a resume key of the session is in use at the receiver",
            Self::Expired => "the offer's deadline passed",
            Self::NotAccepting => "the receiver is not taking sessions",
            Self::Issuer => "the issuer identity cannot be taken over",
        })
    }
}

/// One session offered to the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer<'a> {
    /// Correlation id: names this offer in the sender's bookkeeping; the ACK echoes it.
    pub corr: u64,
    /// One-time token; the ACK echoes it. Never all zero.
    pub token: Token,
    /// How long the sender waits for the ACK, in milliseconds, from sending the offer (a
    /// duration, since the two processes' clocks need not agree). Never zero.
    pub deadline_ms: u32,
    /// The identity that issued the session's resume keys (reserved: empty for now).
    pub issuer: &'a [u8],
    /// The driver's application-facing state of the session (queued deliveries, peer opens);
    /// opaque to this codec.
    pub app: &'a [u8],
    /// The session's exported state ([`Session::export`](crate::session::Session::export)).
    pub state: &'a [u8],
}

/// The receiver's answer to one offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The offer's correlation id.
    pub corr: u64,
    /// The offer's token.
    pub token: Token,
    /// `None`: accepted (the receiver owns the session now). `Some`: refused, why.
    pub refusal: Option<Refusal>,
    /// A human-readable reason (UTF-8, at most [`MAX_REASON`] bytes; may be empty).
    pub reason: &'a str,
}

/// Which kind of listening socket a LISTENER frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerFamily {
    /// A TCP listener.
    Tcp,
    /// A Unix stream listener.
    Unix,
}

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// A session offered.
    Offer(Offer<'a>),
    /// An answer to an offer.
    Ack(Ack<'a>),
    /// The listening socket (its descriptor travels alongside).
    Listener(ListenerFamily),
    /// The sender has made all its offers.
    Done {
        /// How many.
        offers: u32,
    },
    /// The sender gave up on an offer (no valid ACK in time): if the receiver adopted it, it
    /// must end it again (it never served it: the peer's link stayed with the sender).
    Revoke {
        /// The offer's correlation id.
        corr: u64,
        /// The offer's token.
        token: Token,
    },
}

/// Check a frame header; returns the body length that follows. `max_body` is the longest
/// body the reader accepts (its own limit: see the driver's receiver).
pub fn body_len(header: &[u8], max_body: u32) -> Result<usize, FrameError> {
    if header.len() < HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    if header[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if header[4] != VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    if !(KIND_OFFER..=KIND_REVOKE).contains(&header[5]) {
        return Err(FrameError::UnknownKind(header[5]));
    }
    if header[6] != 0 || header[7] != 0 {
        return Err(FrameError::Reserved);
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len > max_body {
        return Err(FrameError::TooLong { len, max: max_body });
    }
    Ok(len as usize)
}

/// Decode one whole frame (header and body, exactly: nothing before or after it).
pub fn decode(frame: &[u8], max_body: u32) -> Result<Frame<'_>, FrameError> {
    let len = body_len(frame, max_body)?;
    let body = &frame[HEADER_LEN..];
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    if body.len() > len {
        return Err(FrameError::TrailingBytes);
    }
    let mut r = Reader(body);
    let f = match frame[5] {
        KIND_OFFER => {
            let corr = r.u64()?;
            let token = r.token()?;
            if token == [0; TOKEN_LEN] {
                return Err(FrameError::Invalid("zero token"));
            }
            let deadline_ms = r.u32()?;
            if deadline_ms == 0 {
                return Err(FrameError::Invalid("zero deadline"));
            }
            let issuer_len = r.u16()? as usize;
            if issuer_len > MAX_ISSUER {
                return Err(FrameError::Invalid("issuer too long"));
            }
            let issuer = r.take(issuer_len)?;
            let app_len = r.u32()? as usize;
            let app = r.take(app_len)?;
            let state_len = r.u32()? as usize;
            if state_len == 0 {
                return Err(FrameError::Invalid("empty state"));
            }
            let state = r.take(state_len)?;
            Frame::Offer(Offer { corr, token, deadline_ms, issuer, app, state })
        }
        KIND_ACK => {
            let corr = r.u64()?;
            let token = r.token()?;
            let verdict = r.u8()?;
            let code = r.u16()?;
            let refusal = match (verdict, code) {
                (0, 0) => None,
                (0, _) => return Err(FrameError::Invalid("refusal code on an accepting ACK")),
                (1, c) => Some(Refusal::from_code(c).ok_or(FrameError::Invalid("unknown refusal code"))?),
                _ => return Err(FrameError::Invalid("verdict")),
            };
            let reason_len = r.u8()? as usize;
            let reason =
                core::str::from_utf8(r.take(reason_len)?).map_err(|_| FrameError::Invalid("reason not UTF-8"))?;
            Frame::Ack(Ack { corr, token, refusal, reason })
        }
        KIND_LISTENER => Frame::Listener(match r.u8()? {
            1 => ListenerFamily::Tcp,
            2 => ListenerFamily::Unix,
            _ => return Err(FrameError::Invalid("listener family")),
        }),
        KIND_DONE => Frame::Done { offers: r.u32()? },
        _ => Frame::Revoke { corr: r.u64()?, token: r.token()? },
    };
    if !r.0.is_empty() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(f)
}

/// Bytes the frame for `offer` takes.
#[must_use]
pub fn offer_len(offer: &Offer<'_>) -> usize {
    HEADER_LEN + 8 + TOKEN_LEN + 4 + 2 + offer.issuer.len() + 4 + offer.app.len() + 4 + offer.state.len()
}

impl Frame<'_> {
    /// Append this frame's bytes to `out`. A field too long for its length prefix (an
    /// issuer over [`MAX_ISSUER`], a reason over [`MAX_REASON`]) is cut, as is a reason at a
    /// char boundary; a body over `u32::MAX` bytes is the caller's error (its length is cut).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let kind = match self {
            Self::Offer(_) => KIND_OFFER,
            Self::Ack(_) => KIND_ACK,
            Self::Listener(_) => KIND_LISTENER,
            Self::Done { .. } => KIND_DONE,
            Self::Revoke { .. } => KIND_REVOKE,
        };
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, kind, 0, 0, 0, 0, 0, 0]);
        match self {
            Self::Offer(o) => {
                out.reserve(offer_len(o));
                out.extend_from_slice(&o.corr.to_le_bytes());
                out.extend_from_slice(&o.token);
                out.extend_from_slice(&o.deadline_ms.to_le_bytes());
                let issuer = &o.issuer[..o.issuer.len().min(MAX_ISSUER)];
                out.extend_from_slice(&(issuer.len() as u16).to_le_bytes());
                out.extend_from_slice(issuer);
                out.extend_from_slice(&(o.app.len() as u32).to_le_bytes());
                out.extend_from_slice(o.app);
                out.extend_from_slice(&(o.state.len() as u32).to_le_bytes());
                out.extend_from_slice(o.state);
            }
            Self::Ack(a) => {
                out.extend_from_slice(&a.corr.to_le_bytes());
                out.extend_from_slice(&a.token);
                match a.refusal {
                    None => out.extend_from_slice(&[0, 0, 0]),
                    Some(r) => {
                        out.push(1);
                        out.extend_from_slice(&(r as u16).to_le_bytes());
                    }
                }
                let mut end = a.reason.len().min(MAX_REASON);
                while !a.reason.is_char_boundary(end) {
                    end -= 1;
                }
                out.push(end as u8);
                out.extend_from_slice(&a.reason.as_bytes()[..end]);
            }
            Self::Listener(family) => out.push(match family {
                ListenerFamily::Tcp => 1,
                ListenerFamily::Unix => 2,
            }),
            Self::Done { offers } => out.extend_from_slice(&offers.to_le_bytes()),
            Self::Revoke { corr, token } => {
                out.extend_from_slice(&corr.to_le_bytes());
                out.extend_from_slice(token);
            }
        }
        let body = (out.len() - start - HEADER_LEN) as u32;
        out[start + 8..start + 12].copy_from_slice(&body.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn token(&mut self) -> Result<Token, FrameError> {
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(self.take(TOKEN_LEN)?);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame<'_>) {
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(decode(&out, u32::MAX), Ok(f));
        assert_eq!(body_len(&out, u32::MAX), Ok(out.len() - HEADER_LEN));
        // Every truncation is refused, and so is every extra byte.
        for n in 0..out.len() {
            assert!(decode(&out[..n], u32::MAX).is_err(), "truncated to {n} bytes");
        }
        out.push(0);
        assert!(decode(&out, u32::MAX).is_err(), "a byte after the frame");
    }

    #[test]
    fn every_frame_kind_round_trips_and_every_truncation_is_refused() {
        round_trip(Frame::Offer(Offer {
            corr: 7,
            token: [3; 16],
            deadline_ms: 500,
            issuer: b"",
            app: b"app",
            state: b"state",
        }));
        round_trip(Frame::Offer(Offer {
            corr: u64::MAX,
            token: [9; 16],
            deadline_ms: 1,
            issuer: &[1; MAX_ISSUER],
            app: b"",
            state: b"s",
        }));
        round_trip(Frame::Ack(Ack { corr: 7, token: [3; 16], refusal: None, reason: "" }));
        round_trip(Frame::Ack(Ack { corr: 1, token: [3; 16], refusal: Some(Refusal::OverLimit), reason: "ring" }));
        round_trip(Frame::Listener(ListenerFamily::Tcp));
        round_trip(Frame::Listener(ListenerFamily::Unix));
        round_trip(Frame::Done { offers: 1000 });
        round_trip(Frame::Revoke { corr: 3, token: [4; 16] });
    }

    #[test]
    fn header_checks_give_typed_errors() {
        let mut out = Vec::new();
        Frame::Done { offers: 1 }.encode(&mut out);
        let mut bad = out.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad, 100), Err(FrameError::BadMagic));
        let mut bad = out.clone();
        bad[4] = 2;
        assert_eq!(decode(&bad, 100), Err(FrameError::UnsupportedVersion(2)));
        let mut bad = out.clone();
        bad[5] = 6;
        assert_eq!(decode(&bad, 100), Err(FrameError::UnknownKind(6)));
        let mut bad = out.clone();
        bad[7] = 1;
        assert_eq!(decode(&bad, 100), Err(FrameError::Reserved));
        assert_eq!(decode(&out, 3), Err(FrameError::TooLong { len: 4, max: 3 }));
    }

    #[test]
    fn field_checks_give_typed_errors() {
        let offer = |token, deadline_ms, state: &'static [u8]| {
            let mut out = Vec::new();
            Frame::Offer(Offer { corr: 1, token, deadline_ms, issuer: b"", app: b"", state }).encode(&mut out);
            decode(&out, u32::MAX).map(|_| ())
        };
        assert_eq!(offer([0; 16], 1, b"s"), Err(FrameError::Invalid("zero token")));
        assert_eq!(offer([1; 16], 0, b"s"), Err(FrameError::Invalid("zero deadline")));
        assert_eq!(offer([1; 16], 1, b""), Err(FrameError::Invalid("empty state")));
        let mut ack = Vec::new();
        Frame::Ack(Ack { corr: 1, token: [1; 16], refusal: Some(Refusal::Full), reason: "x" }).encode(&mut ack);
        let verdict_at = HEADER_LEN + 8 + 16;
        let mut bad = ack.clone();
        bad[verdict_at] = 2;
        assert_eq!(decode(&bad, u32::MAX), Err(FrameError::Invalid("verdict")));
        let mut bad = ack.clone();
        bad[verdict_at + 1] = 99;
        assert_eq!(decode(&bad, u32::MAX), Err(FrameError::Invalid("unknown refusal code")));
        let mut bad = ack.clone();
        bad[verdict_at] = 0;
        assert_eq!(decode(&bad, u32::MAX), Err(FrameError::Invalid("refusal code on an accepting ACK")));
        let mut bad = ack;
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(decode(&bad, u32::MAX), Err(FrameError::Invalid("reason not UTF-8")));
    }
}
