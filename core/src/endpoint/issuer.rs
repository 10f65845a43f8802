//! Issuer-tagged resume keys: which worker of which run of an acceptor group issued a key,
//! readable only with the group's secret.
//!
//! A tagged key is one AES-128 block, the encryption under the group's secret of
//!
//! ```text
//! worker: u16 LE | epoch: u32 LE | check: u16 (zero) | random: 8 bytes
//! ```
//!
//! The acceptor chooses its keys (the initiator only echoes them, WIRE.md §2), so a vox
//! initiator resumes with a tagged key like with any other. Decrypting a presented key tells
//! the acceptor, without a lookup, which worker holds the session ([`KeyOrigin::Worker`]),
//! whether it belongs to an earlier run of the group that is gone
//! ([`KeyOrigin::IssuerGone`]: the session is lost, and the client is not guessing), or
//! whether the group never issued it ([`KeyOrigin::Foreign`]: a guess, or a key of another
//! secret).
//!
//! Why a block cipher rather than a MAC'd plaintext tag: the key stays 16 bytes and stays
//! unpredictable as a whole (a blind guess matches a live key with odds `live / 2^128`, as
//! with random keys: the cipher is a permutation), yet carries 64 bits of structure. A
//! client cannot choose where its link goes: without the secret, a forged block decrypts to
//! a random plaintext, which fails the 16-bit check with odds `1 - 2^-16` (charged as a
//! guess where it landed). Otherwise it names a random epoch, almost never one the group
//! serves: it is answered as [`KeyOrigin::IssuerGone`], uncharged (so one forged key in
//! 2^16 escapes the failure budget, and learns nothing: no live session has it); with odds
//! `2^-32` per served epoch it names a worker, whose key index then charges it. The secret must be kept like a TLS session-ticket key: whoever holds it can mint keys
//! that route to any worker (though not keys that match a live session, whose random part
//! they do not know).
//!
//! The epoch is new on every start of the group (random, or the operator's counter): after a
//! restart, a key of the previous run decrypts to an epoch the group no longer serves and is
//! answered REJECTED at once, uncharged. A successor process that took the previous run's
//! sessions over [`adopt`](Issuer::adopt)s its epochs (see [`IssuerIdentity`]).

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use alloc::vec::Vec;

use crate::wire::ResumeKey;

/// Epochs an issuer may have adopted from predecessors at once.
pub const MAX_ADOPTED_EPOCHS: usize = 16;

/// The version byte of an exported [`IssuerIdentity`].
pub const IDENTITY_VERSION: u8 = 1;

/// What a decrypted key says about its issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct KeyTag {
    /// The worker (of its run of the group) that issued it.
    pub worker: u16,
    /// The run of the group that issued it.
    pub epoch: u32,
}

/// Where a presented key belongs, as far as the issuer can tell without a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Issued by this worker (this run, or an adopted one): look it up in the key index.
    Here,
    /// Issued by another worker of the group that serves it now: pass the link there.
    Worker(u16),
    /// Issued by the group in a run it no longer serves (the acceptor restarted): the
    /// session is gone. Answer REJECTED at once; not a guess (only the secret's holder can
    /// make such a key), so not charged.
    IssuerGone(KeyTag),
    /// Not issued by the group (fails the check, or names a worker the group does not
    /// have): a guess, charged as one.
    Foreign,
}

/// Why an issuer or an identity was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum IssuerError {
    /// `workers` was 0, or `worker` was not below it.
    BadWorker,
    /// More than [`MAX_ADOPTED_EPOCHS`] epochs adopted.
    TooManyEpochs,
    /// An exported identity of another length than its count says, or with no epoch.
    BadLength,
    /// An exported identity of a version this build does not read.
    BadVersion,
}

impl core::fmt::Display for IssuerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadWorker => f.write_str("worker index not below the worker count (or no workers)"),
            Self::TooManyEpochs => f.write_str("too many adopted epochs"),
            Self::BadLength => f.write_str("exported issuer identity has a bad length"),
            Self::BadVersion => f.write_str("exported issuer identity of an unknown version"),
        }
    }
}

impl core::error::Error for IssuerError {}

/// The identity of an acceptor group, to hand to a successor process: the secret and every
/// epoch whose sessions were served. Export it with [`Issuer::identity`], send it over a
/// trusted channel (it holds the secret), and build the successor's issuer with
/// [`Issuer::successor`].
///
/// Byte form ([`encode`](Self::encode)): `version (1) | secret (16) | count (1) | epochs (4 LE each)`,
/// the current epoch first.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerIdentity {
    /// The group's secret.
    pub secret: [u8; 16],
    /// Epochs served: the exporting run's own first, then those it had adopted.
    pub epochs: Vec<u32>,
}

impl core::fmt::Debug for IssuerIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IssuerIdentity").field("secret", &"<secret>").field("epochs", &self.epochs).finish()
    }
}

impl IssuerIdentity {
    /// The byte form (see the type's docs).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + 4 * self.epochs.len());
        out.push(IDENTITY_VERSION);
        out.extend_from_slice(&self.secret);
        out.push(self.epochs.len() as u8);
        for e in &self.epochs {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out
    }

    /// Read the byte form; every field checked (a typed error, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, IssuerError> {
        let (&version, rest) = bytes.split_first().ok_or(IssuerError::BadLength)?;
        if version != IDENTITY_VERSION {
            return Err(IssuerError::BadVersion);
        }
        if rest.len() < 17 {
            return Err(IssuerError::BadLength);
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&rest[..16]);
        let count = rest[16] as usize;
        let body = &rest[17..];
        if count == 0 || body.len() != 4 * count {
            return Err(IssuerError::BadLength);
        }
        if count > MAX_ADOPTED_EPOCHS + 1 {
            return Err(IssuerError::TooManyEpochs);
        }
        let epochs = body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Self { secret, epochs })
    }
}

/// Mints and reads one worker's tagged keys (see the module docs). Cloned into every worker
/// with [`for_worker`](Self::for_worker). Sans-IO: the caller supplies the randomness.
#[derive(Clone)]
pub struct Issuer {
    cipher: Aes128,
    secret: [u8; 16],
    worker: u16,
    workers: u16,
    epoch: u32,
    adopted: Vec<u32>,
}

impl core::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Issuer")
            .field("worker", &self.worker)
            .field("workers", &self.workers)
            .field("epoch", &self.epoch)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Worker `worker` of `workers` in the run `epoch` of the group keyed by `secret`. Choose
    /// a new epoch on every start of the group (e.g. 32 random bits, or a persisted counter):
    /// keys of other epochs are answered as [`KeyOrigin::IssuerGone`].
    pub fn new(secret: [u8; 16], epoch: u32, worker: u16, workers: u16) -> Result<Self, IssuerError> {
        if worker >= workers {
            return Err(IssuerError::BadWorker);
        }
        let cipher = Aes128::new(&GenericArray::from(secret));
        Ok(Self { cipher, secret, worker, workers, epoch, adopted: Vec::new() })
    }

    /// A successor run of an exported group: a new `epoch`, adopting every epoch `identity`
    /// served (their sessions were handed over). A key of an adopted epoch issued by its
    /// worker `w` routes to worker `w % workers` of the successor, so the successor places
    /// the sessions it takes over from worker `w` there.
    pub fn successor(identity: &IssuerIdentity, epoch: u32, worker: u16, workers: u16) -> Result<Self, IssuerError> {
        let mut issuer = Self::new(identity.secret, epoch, worker, workers)?;
        for &e in &identity.epochs {
            issuer.adopt(e)?;
        }
        Ok(issuer)
    }

    /// The same group and run, as worker `worker`.
    pub fn for_worker(&self, worker: u16) -> Result<Self, IssuerError> {
        if worker >= self.workers {
            return Err(IssuerError::BadWorker);
        }
        Ok(Self { worker, ..self.clone() })
    }

    /// This worker's index.
    #[must_use]
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// Workers in the group.
    #[must_use]
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// This run's epoch.
    #[must_use]
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Epochs adopted from predecessors.
    #[must_use]
    pub fn adopted(&self) -> &[u32] {
        &self.adopted
    }

    /// Serve the keys of a predecessor's `epoch` too (its sessions were handed over). Call
    /// before routing the first resume of an adopted session. Idempotent.
    pub fn adopt(&mut self, epoch: u32) -> Result<(), IssuerError> {
        if epoch == self.epoch || self.adopted.contains(&epoch) {
            return Ok(());
        }
        if self.adopted.len() >= MAX_ADOPTED_EPOCHS {
            return Err(IssuerError::TooManyEpochs);
        }
        self.adopted.push(epoch);
        Ok(())
    }

    /// Stop serving an adopted `epoch` (its last session ended): its keys are
    /// [`KeyOrigin::IssuerGone`] from now on.
    pub fn retire(&mut self, epoch: u32) {
        self.adopted.retain(|&e| e != epoch);
    }

    /// The identity to hand to a successor: the secret, this epoch and the adopted ones.
    #[must_use]
    pub fn identity(&self) -> IssuerIdentity {
        let mut epochs = Vec::with_capacity(1 + self.adopted.len());
        epochs.push(self.epoch);
        epochs.extend_from_slice(&self.adopted);
        IssuerIdentity { secret: self.secret, epochs }
    }

    /// A key of this worker and epoch from 8 bytes of `random` (the rest of it is unused;
    /// 16 are taken so that a caller can pass the same randomness as for an untagged key).
    /// Never the all-zero key.
    #[must_use]
    pub fn mint(&self, random: &[u8; 16]) -> ResumeKey {
        let mut block = [0u8; 16];
        block[..2].copy_from_slice(&self.worker.to_le_bytes());
        block[2..6].copy_from_slice(&self.epoch.to_le_bytes());
        block[8..].copy_from_slice(&random[..8]);
        loop {
            let mut b = GenericArray::from(block);
            self.cipher.encrypt_block(&mut b);
            let key = ResumeKey(b.into());
            if !key.is_zero() {
                return key;
            }
            // One plaintext in 2^64 of this worker and epoch encrypts to zero: take the next.
            block[15] = block[15].wrapping_add(1);
        }
    }

    /// Decrypt `key`: its issuer, if the group issued it (the check holds).
    #[must_use]
    pub fn open(&self, key: &ResumeKey) -> Option<KeyTag> {
        let mut b = GenericArray::from(key.0);
        self.cipher.decrypt_block(&mut b);
        let p: [u8; 16] = b.into();
        if p[6] | p[7] != 0 {
            return None;
        }
        Some(KeyTag { worker: u16::from_le_bytes([p[0], p[1]]), epoch: u32::from_le_bytes([p[2], p[3], p[4], p[5]]) })
    }

    /// Where `key` belongs (see [`KeyOrigin`]).
    #[must_use]
    pub fn classify(&self, key: &ResumeKey) -> KeyOrigin {
        let Some(tag) = self.open(key) else { return KeyOrigin::Foreign };
        let worker = if tag.epoch == self.epoch {
            if tag.worker >= self.workers {
                return KeyOrigin::Foreign;
            }
            tag.worker
        } else if self.adopted.contains(&tag.epoch) {
            tag.worker % self.workers
        } else {
            return KeyOrigin::IssuerGone(tag);
        };
        if worker == self.worker {
            KeyOrigin::Here
        } else {
            KeyOrigin::Worker(worker)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 16] = [7; 16];

    fn rnd(i: u64) -> [u8; 16] {
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        r
    }

    #[test]
    fn a_minted_key_opens_to_its_worker_and_epoch_and_routes_there() {
        let w0 = Issuer::new(SECRET, 42, 0, 4).expect("issuer");
        let w3 = w0.for_worker(3).expect("worker 3");
        let k = w3.mint(&rnd(1));
        assert_eq!(w0.open(&k), Some(KeyTag { worker: 3, epoch: 42 }));
        assert_eq!(w0.classify(&k), KeyOrigin::Worker(3));
        assert_eq!(w3.classify(&k), KeyOrigin::Here);
        assert_ne!(w3.mint(&rnd(1)), w3.mint(&rnd(2)), "different randomness, different keys");
        assert_ne!(w0.mint(&rnd(1)), w3.mint(&rnd(1)), "different workers, different keys");
    }

    #[test]
    fn a_key_of_an_earlier_run_is_issuer_gone_until_adopted() {
        let old = Issuer::new(SECRET, 1, 2, 4).expect("old run");
        let k = old.mint(&rnd(9));
        let mut new = Issuer::new(SECRET, 2, 0, 2).expect("new run");
        assert_eq!(new.classify(&k), KeyOrigin::IssuerGone(KeyTag { worker: 2, epoch: 1 }));
        new.adopt(1).expect("adopt");
        // Worker 2 of the old run maps to worker 2 % 2 = 0 of the new one.
        assert_eq!(new.classify(&k), KeyOrigin::Here);
        new.retire(1);
        assert!(matches!(new.classify(&k), KeyOrigin::IssuerGone(_)));
    }

    #[test]
    fn random_and_other_secret_keys_are_foreign_nearly_always() {
        let w = Issuer::new(SECRET, 5, 0, 4).expect("issuer");
        let other = Issuer::new([8; 16], 5, 0, 4).expect("other secret");
        let mut foreign = 0;
        for i in 0..2000u64 {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.to_le_bytes());
            k[8..].copy_from_slice(&(!i).to_le_bytes());
            foreign += u32::from(w.classify(&ResumeKey(k)) == KeyOrigin::Foreign);
            foreign += u32::from(w.classify(&other.mint(&rnd(i))) == KeyOrigin::Foreign);
        }
        // Each passes the 16-bit check with odds 2^-16.
        assert!(foreign >= 3998, "{foreign} of 4000 forged keys classified foreign");
    }

    #[test]
    fn a_worker_beyond_the_group_is_foreign() {
        let big = Issuer::new(SECRET, 5, 6, 8).expect("issuer");
        let small = Issuer::new(SECRET, 5, 0, 4).expect("issuer");
        assert_eq!(small.classify(&big.mint(&rnd(3))), KeyOrigin::Foreign);
    }

    #[test]
    fn identity_round_trips_and_bad_bytes_are_typed_errors() {
        let mut w = Issuer::new(SECRET, 10, 1, 2).expect("issuer");
        w.adopt(9).expect("adopt");
        let id = w.identity();
        assert_eq!(id.epochs, [10, 9]);
        let bytes = id.encode();
        assert_eq!(IssuerIdentity::decode(&bytes), Ok(id.clone()));
        for n in 0..bytes.len() {
            assert!(IssuerIdentity::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(IssuerIdentity::decode(&v), Err(IssuerError::BadVersion));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(IssuerIdentity::decode(&long), Err(IssuerError::BadLength));
        let succ = Issuer::successor(&id, 11, 0, 2).expect("successor");
        assert_eq!(succ.adopted(), [10, 9]);
        let k = w.mint(&rnd(4));
        assert_eq!(succ.classify(&k), KeyOrigin::Worker(1));
        assert!(Issuer::new(SECRET, 1, 2, 2).is_err());
        assert!(Issuer::new(SECRET, 1, 0, 0).is_err());
    }

    #[test]
    fn adopting_is_bounded() {
        let mut w = Issuer::new(SECRET, 100, 0, 1).expect("issuer");
        for e in 0..MAX_ADOPTED_EPOCHS as u32 {
            w.adopt(e).expect("adopt");
        }
        assert_eq!(w.adopt(99), Err(IssuerError::TooManyEpochs));
        assert_eq!(w.adopt(3), Ok(()), "adopting again is a no-op");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_minted_key_opens_to_its_tag(secret: [u8; 16], epoch: u32, workers in 1u16..=u16::MAX, w: u16, random: [u8; 16]) {
            let worker = w % workers;
            let issuer = Issuer::new(secret, epoch, worker, workers).expect("issuer");
            let key = issuer.mint(&random);
            prop_assert!(!key.is_zero());
            prop_assert_eq!(issuer.open(&key), Some(KeyTag { worker, epoch }));
            prop_assert_eq!(issuer.classify(&key), KeyOrigin::Here);
        }

        #[test]
        fn any_key_classifies_without_panic_and_any_bytes_decode_to_an_identity_or_an_error(
            key: [u8; 16],
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let issuer = Issuer::new([3; 16], 1, 0, 3).expect("issuer");
            let _ = issuer.classify(&ResumeKey(key));
            if let Ok(id) = IssuerIdentity::decode(&bytes) {
                prop_assert_eq!(id.encode(), bytes);
            }
        }
    }
}
