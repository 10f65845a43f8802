//! The 25-byte hellos, first message on every fresh link: ClientHello from the initiator,
//! ServerHello from the acceptor. Layout (`repr(C)`, little-endian, no padding):
//!
//! ```text
//! off size field
//!  0   4   magic          "VOCH" (client) / "VOSH" (server)
//!  4   1   flags
//!  5  16   resume_key     zero-filled when absent
//! 21   4   last_received  u32 LE, 0 when the flag is clear
//! ```
//!
//! Decoding is strict: exact size, magic, no unknown flag bits, and flags consistent with the
//! fields (a cleared field must be zero; a fresh ClientHello cannot claim a position).

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::WireError;

/// Exact size of a hello.
pub const HELLO_LEN: usize = 25;
/// ClientHello magic.
pub const CLIENT_MAGIC: [u8; 4] = *b"VOCH";
/// ServerHello magic.
pub const SERVER_MAGIC: [u8; 4] = *b"VOSH";

/// ClientHello flag: a resume key follows.
pub const CH_HAS_RESUME_KEY: u8 = 1 << 0;
/// ClientHello flag: `last_received` is meaningful.
pub const CH_HAS_LAST_RECEIVED: u8 = 1 << 1;
/// Either hello: the sender speaks sotto's extended frames.
pub const HELLO_EXT: u8 = 1 << 2;
/// ClientHello flag (sotto): a fresh session's first frame (seq 0, base form) follows this
/// hello on the link at once, before any ServerHello. Only on a hello without a resume key.
pub const CH_EARLY: u8 = 1 << 3;
/// ServerHello flag: the presented key is unknown or expired; the session is lost.
pub const SH_REJECTED: u8 = 1 << 0;
/// ServerHello flag: `last_received` is meaningful.
pub const SH_HAS_LAST_RECEIVED: u8 = 1 << 1;

const CH_KNOWN: u8 = CH_HAS_RESUME_KEY | CH_HAS_LAST_RECEIVED | HELLO_EXT | CH_EARLY;
const SH_KNOWN: u8 = SH_REJECTED | SH_HAS_LAST_RECEIVED | HELLO_EXT;

/// A 16-byte bearer token naming a session. The acceptor issues a fresh one on every accepted
/// link; the driver supplies the randomness. Compared in constant time.
#[derive(Clone, Copy, Default)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct ResumeKey(pub [u8; 16]);

impl ResumeKey {
    /// The all-zero key, meaning "absent" on the wire; never a valid session key.
    pub const ZERO: Self = Self([0; 16]);

    /// Constant-time equality: the time taken does not depend on where the keys differ.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        core::hint::black_box(diff) == 0
    }

    /// Whether this is the all-zero (absent) key.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.ct_eq(&Self::ZERO)
    }
}

impl PartialEq for ResumeKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for ResumeKey {}

impl core::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Only a prefix: keys are bearer secrets and end up in logs.
        write!(f, "ResumeKey({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHello {
    magic: [u8; 4],
    flags: u8,
    resume_key: [u8; 16],
    last_received: U32,
}

const _: () = assert!(core::mem::size_of::<RawHello>() == HELLO_LEN);

/// What an initiator asks for: a fresh session, or a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// `Some` to resume the session this key names.
    pub resume_key: Option<ResumeKey>,
    /// The highest seq the initiator has delivered, if any (only with a key).
    pub last_received: Option<u32>,
    /// The initiator speaks extended frames.
    pub ext: bool,
    /// `EARLY` (sotto): the session's first frame, seq 0 in the base form, follows the hello
    /// at once. Only on a fresh hello (no resume key).
    pub early: bool,
}

/// The acceptor's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// The presented key is unknown or expired: the session is lost.
    pub rejected: bool,
    /// The key to present on the next resume (zero when rejected).
    pub resume_key: ResumeKey,
    /// The highest seq the acceptor has delivered, if any.
    pub last_received: Option<u32>,
    /// The acceptor speaks extended frames (in force only if the ClientHello said so too).
    pub ext: bool,
}

/// Reason code a sotto acceptor puts in the first byte of the key field of a REJECTED
/// ServerHello (with `EXT` set) answering a fresh ClientHello that set `EXT`: the acceptor is
/// full (`max_sessions` sessions live, none detached). A vox peer never sets `EXT` in its
/// ClientHello and so only ever gets the plain [`ServerHello::rejected`] bytes.
pub const REJECT_FULL: u8 = 1;

/// Reason code a sotto acceptor with issuer-tagged keys puts in the first byte of the key
/// field of a REJECTED ServerHello (with `EXT` set) answering a resume that set `EXT`: the
/// key was issued by an earlier run of the acceptor, which is gone (it restarted), so the
/// session is lost. A vox peer only ever gets the plain [`ServerHello::rejected`] bytes.
pub const REJECT_ISSUER_GONE: u8 = 2;

impl ServerHello {
    /// The REJECTED reply: identical bytes for every rejected key, whatever the reason.
    #[must_use]
    pub const fn rejected() -> Self {
        Self { rejected: true, resume_key: ResumeKey::ZERO, last_received: None, ext: false }
    }

    /// The REJECTED reply to a fresh ClientHello with `EXT` when the acceptor is full:
    /// `REJECTED | EXT`, [`REJECT_FULL`] in the first byte of the key field, the rest zero.
    /// Answer a ClientHello without `EXT` (a vox peer) with [`rejected`](Self::rejected).
    #[must_use]
    pub const fn rejected_full() -> Self {
        let mut key = [0u8; 16];
        key[0] = REJECT_FULL;
        Self { rejected: true, resume_key: ResumeKey(key), last_received: None, ext: true }
    }

    /// The REJECTED reply to a resume with `EXT` presenting a key of an earlier run of the
    /// acceptor: `REJECTED | EXT`, [`REJECT_ISSUER_GONE`] in the first byte of the key field,
    /// the rest zero. Answer a ClientHello without `EXT` with [`rejected`](Self::rejected).
    #[must_use]
    pub const fn rejected_issuer_gone() -> Self {
        let mut key = [0u8; 16];
        key[0] = REJECT_ISSUER_GONE;
        Self { rejected: true, resume_key: ResumeKey(key), last_received: None, ext: true }
    }

    /// Whether this is a REJECTED reply saying the key's issuer is gone
    /// ([`rejected_issuer_gone`](Self::rejected_issuer_gone)).
    #[must_use]
    pub fn is_issuer_gone(&self) -> bool {
        self.rejected && self.ext && self.resume_key.0[0] == REJECT_ISSUER_GONE
    }

    /// Whether this is a REJECTED reply saying the acceptor is full
    /// ([`rejected_full`](Self::rejected_full)), rather than a refused key.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.rejected && self.ext && self.resume_key.0[0] == REJECT_FULL
    }
}

fn parse(bytes: &[u8], magic: [u8; 4], known: u8) -> Result<&RawHello, WireError> {
    let raw = RawHello::ref_from_bytes(bytes).map_err(|_| WireError::HelloLength { len: bytes.len() as u32 })?;
    if raw.magic != magic {
        return Err(WireError::BadMagic);
    }
    if raw.flags & !known != 0 {
        return Err(WireError::UnknownFlags { flags: raw.flags });
    }
    Ok(raw)
}

impl ClientHello {
    /// Decode a ClientHello (exactly [`HELLO_LEN`] bytes, no link prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let raw = parse(bytes, CLIENT_MAGIC, CH_KNOWN)?;
        let has_key = raw.flags & CH_HAS_RESUME_KEY != 0;
        let has_lr = raw.flags & CH_HAS_LAST_RECEIVED != 0;
        let key = ResumeKey(raw.resume_key);
        let lr = raw.last_received.get();
        if has_lr && (!has_key || key.is_zero()) {
            // A fresh session cannot claim to have received anything.
            return Err(WireError::InconsistentFlags);
        }
        if (!has_key && !key.is_zero()) || (!has_lr && lr != 0) {
            return Err(WireError::InconsistentFlags);
        }
        let early = raw.flags & CH_EARLY != 0;
        if early && has_key {
            // A resume's frames start from the acceptor's position, which it has not told yet.
            return Err(WireError::InconsistentFlags);
        }
        Ok(Self {
            resume_key: has_key.then_some(key),
            last_received: has_lr.then_some(lr),
            ext: raw.flags & HELLO_EXT != 0,
            early,
        })
    }

    /// Encode into exactly [`HELLO_LEN`] bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut flags = 0;
        if self.resume_key.is_some() {
            flags |= CH_HAS_RESUME_KEY;
        }
        if self.last_received.is_some() {
            flags |= CH_HAS_LAST_RECEIVED;
        }
        if self.ext {
            flags |= HELLO_EXT;
        }
        if self.early {
            flags |= CH_EARLY;
        }
        let raw = RawHello {
            magic: CLIENT_MAGIC,
            flags,
            resume_key: self.resume_key.unwrap_or(ResumeKey::ZERO).0,
            last_received: U32::new(self.last_received.unwrap_or(0)),
        };
        let mut out = [0u8; HELLO_LEN];
        out.copy_from_slice(raw.as_bytes());
        out
    }
}

impl ServerHello {
    /// Decode a ServerHello (exactly [`HELLO_LEN`] bytes, no link prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let raw = parse(bytes, SERVER_MAGIC, SH_KNOWN)?;
        let has_lr = raw.flags & SH_HAS_LAST_RECEIVED != 0;
        let lr = raw.last_received.get();
        let rejected = raw.flags & SH_REJECTED != 0;
        if !has_lr && lr != 0 {
            return Err(WireError::InconsistentFlags);
        }
        let key = ResumeKey(raw.resume_key);
        if !rejected && key.is_zero() {
            // An accepted hello must issue a key to resume with.
            return Err(WireError::InconsistentFlags);
        }
        // A REJECTED hello keeps whatever else it carries (a peer may set EXT or a position on
        // it): the conduit only looks at `rejected`, and decode stays the exact inverse of
        // encode.
        Ok(Self { rejected, resume_key: key, last_received: has_lr.then_some(lr), ext: raw.flags & HELLO_EXT != 0 })
    }

    /// Encode into exactly [`HELLO_LEN`] bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut flags = 0;
        if self.rejected {
            flags |= SH_REJECTED;
        }
        if self.last_received.is_some() {
            flags |= SH_HAS_LAST_RECEIVED;
        }
        if self.ext {
            flags |= HELLO_EXT;
        }
        let raw = RawHello {
            magic: SERVER_MAGIC,
            flags,
            resume_key: self.resume_key.0,
            last_received: U32::new(self.last_received.unwrap_or(0)),
        };
        let mut out = [0u8; HELLO_LEN];
        out.copy_from_slice(raw.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_hex::hex;

    #[test]
    fn wire_md_client_hello_fresh() {
        let bytes = hex("56 4f 43 48 00 00000000000000000000000000000000 00 00 00 00");
        let ch = ClientHello::decode(&bytes).expect("valid");
        assert_eq!(ch, ClientHello { resume_key: None, last_received: None, ext: false, early: false });
        assert_eq!(ch.encode().as_slice(), bytes.as_slice());
    }

    #[test]
    fn wire_md_client_hello_resume() {
        let bytes = hex("56 4f 43 48 03 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 03 00 00 00");
        let ch = ClientHello::decode(&bytes).expect("valid");
        let key = ResumeKey([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(ch, ClientHello { resume_key: Some(key), last_received: Some(3), ext: false, early: false });
        assert_eq!(ch.encode().as_slice(), bytes.as_slice());
    }

    #[test]
    fn issuer_gone_rejection_is_rejected_with_ext_and_reason_2() {
        let bytes = hex("56 4f 53 48 05 02000000000000000000000000000000 00 00 00 00");
        assert_eq!(bytes[5], REJECT_ISSUER_GONE);
        assert_eq!(ServerHello::rejected_issuer_gone().encode().as_slice(), bytes.as_slice());
        let sh = ServerHello::decode(&bytes).expect("decodes");
        assert!(sh.rejected && sh.is_issuer_gone() && !sh.is_full());
        assert!(!ServerHello::rejected().is_issuer_gone());
    }

    #[test]
    fn full_rejection_is_rejected_with_ext_and_a_reason_and_decodes_as_full() {
        let bytes = hex("56 4f 53 48 05 01000000000000000000000000000000 00 00 00 00");
        assert_eq!(ServerHello::rejected_full().encode().as_slice(), bytes.as_slice());
        let sh = ServerHello::decode(&bytes).expect("valid");
        assert!(sh.rejected && sh.is_full());
        assert!(!ServerHello::rejected().is_full(), "the plain REJECTED says nothing of the reason");
        assert_eq!(
            hex("56 4f 53 48 01 00000000000000000000000000000000 00 00 00 00"),
            ServerHello::rejected().encode()
        );
    }

    #[test]
    fn wire_md_server_hello_fresh_and_resume() {
        let fresh = hex("56 4f 53 48 00 a1a2a3a4a5a6a7a8a9aaabacadaeafb0 00 00 00 00");
        let sh = ServerHello::decode(&fresh).expect("valid");
        assert!(!sh.rejected && sh.last_received.is_none() && !sh.ext);
        assert_eq!(sh.encode().as_slice(), fresh.as_slice());
        let resume = hex("56 4f 53 48 02 a1a2a3a4a5a6a7a8a9aaabacadaeafb0 01 00 00 00");
        let sh = ServerHello::decode(&resume).expect("valid");
        assert_eq!(sh.last_received, Some(1));
        assert_eq!(sh.encode().as_slice(), resume.as_slice());
    }

    #[test]
    fn h4_wrong_sizes_rejected() {
        let good = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
        for len in [0usize, 1, 24] {
            assert_eq!(ClientHello::decode(&good[..len]), Err(WireError::HelloLength { len: len as u32 }));
        }
        let mut long = [0u8; 26];
        long[..25].copy_from_slice(&good);
        assert_eq!(ClientHello::decode(&long), Err(WireError::HelloLength { len: 26 }));
    }

    #[test]
    fn h5_unknown_flags_and_bad_magic_rejected() {
        let mut b = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
        b[4] |= 0x10;
        assert_eq!(ClientHello::decode(&b), Err(WireError::UnknownFlags { flags: 0x14 }));
        let mut b = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
        b[0] = b'X';
        assert_eq!(ClientHello::decode(&b), Err(WireError::BadMagic));
        let sh = ServerHello { rejected: false, resume_key: ResumeKey([1; 16]), last_received: None, ext: true };
        assert_eq!(ClientHello::decode(&sh.encode()), Err(WireError::BadMagic));
        let mut b = sh.encode();
        b[4] = 0x80;
        assert_eq!(ServerHello::decode(&b), Err(WireError::UnknownFlags { flags: 0x80 }));
    }

    #[test]
    fn early_is_bit_3_and_only_on_a_fresh_hello() {
        let bytes = hex("56 4f 43 48 0c 00000000000000000000000000000000 00 00 00 00");
        let ch = ClientHello::decode(&bytes).expect("valid");
        assert_eq!(ch, ClientHello { resume_key: None, last_received: None, ext: true, early: true });
        assert_eq!(ch.encode().as_slice(), bytes.as_slice());
        let key = ResumeKey([3; 16]);
        let mut resume = ClientHello { resume_key: Some(key), last_received: None, ext: true, early: false }.encode();
        resume[4] |= CH_EARLY;
        assert_eq!(ClientHello::decode(&resume), Err(WireError::InconsistentFlags));
    }

    #[test]
    fn h6_position_without_key_rejected() {
        let mut b = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
        b[4] = CH_HAS_LAST_RECEIVED;
        assert_eq!(ClientHello::decode(&b), Err(WireError::InconsistentFlags));
        b[4] = CH_HAS_LAST_RECEIVED | CH_HAS_RESUME_KEY; // key all zeros
        assert_eq!(ClientHello::decode(&b), Err(WireError::InconsistentFlags));
    }

    #[test]
    fn cleared_fields_must_be_zero() {
        let mut b = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
        b[21] = 1;
        assert_eq!(ClientHello::decode(&b), Err(WireError::InconsistentFlags));
        let mut b = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
        b[5] = 1;
        assert_eq!(ClientHello::decode(&b), Err(WireError::InconsistentFlags));
        let b = ServerHello { rejected: false, resume_key: ResumeKey::ZERO, last_received: None, ext: false }.encode();
        assert_eq!(ServerHello::decode(&b), Err(WireError::InconsistentFlags));
    }

    #[test]
    fn rejected_reply_is_fixed() {
        let r = ServerHello::rejected().encode();
        assert_eq!(r.as_slice(), hex("56 4f 53 48 01 00000000000000000000000000000000 00000000").as_slice());
        assert!(ServerHello::decode(&r).expect("valid").rejected);
    }
}
