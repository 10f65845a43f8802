//! Hand-crafted link messages for injection: frames and hellos encoded with the core's own
//! encoders, and a few decoders to look at what a tap sees.

use sotto_proto::wire::{ClientHello, Frame, ResumeKey, ServerHello};

/// Encode `frame` (`ext`: with the kind byte) into a fresh vector.
#[must_use]
pub fn encode(frame: Frame<'_>, ext: bool) -> Vec<u8> {
    let mut out = vec![0u8; frame.encoded_len(ext)];
    let n = frame.encode(ext, &mut out).expect("frame encodes in the extended form or is data");
    out.truncate(n);
    out
}

/// A data frame.
#[must_use]
pub fn data(seq: u32, ack: Option<u32>, item: &[u8], ext: bool) -> Vec<u8> {
    encode(Frame::Data { seq, ack, item }, ext)
}

/// A standalone ACK (extended form).
#[must_use]
pub fn ack(last_received: u32) -> Vec<u8> {
    encode(Frame::Ack(last_received), true)
}

/// A PING (extended form).
#[must_use]
pub fn ping(nonce: u64) -> Vec<u8> {
    encode(Frame::Ping(nonce), true)
}

/// A PONG (extended form).
#[must_use]
pub fn pong(nonce: u64) -> Vec<u8> {
    encode(Frame::Pong(nonce), true)
}

/// A ClientHello.
#[must_use]
pub fn client_hello(resume_key: Option<ResumeKey>, last_received: Option<u32>, ext: bool) -> Vec<u8> {
    ClientHello { resume_key, last_received, ext, early: false }.encode().to_vec()
}

/// An accepting ServerHello.
#[must_use]
pub fn server_hello(resume_key: ResumeKey, last_received: Option<u32>, ext: bool) -> Vec<u8> {
    ServerHello { rejected: false, resume_key, last_received, ext }.encode().to_vec()
}

/// What kind of frame `bytes` is, for taps (`None` if it does not decode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A data frame with this seq and ack.
    Data {
        /// Its seq.
        seq: u32,
        /// Its ack.
        ack: Option<u32>,
    },
    /// A standalone ACK.
    Ack(u32),
    /// A PING.
    Ping(u64),
    /// A PONG.
    Pong(u64),
    /// A GOODBYE with this code.
    Goodbye(u32),
    /// A hello (25 bytes that decode as one).
    Hello,
}

/// Classify a link message as written on a link with extensions `ext`.
#[must_use]
pub fn kind(bytes: &[u8], ext: bool) -> Option<Kind> {
    if bytes.len() == sotto_proto::wire::HELLO_LEN
        && (ClientHello::decode(bytes).is_ok() || ServerHello::decode(bytes).is_ok())
    {
        return Some(Kind::Hello);
    }
    Some(match Frame::decode(bytes, ext).ok()? {
        Frame::Data { seq, ack, .. } => Kind::Data { seq, ack },
        Frame::Ack(a) => Kind::Ack(a),
        Frame::Ping(n) => Kind::Ping(n),
        Frame::Pong(n) => Kind::Pong(n),
        Frame::Goodbye { code, .. } => Kind::Goodbye(code),
    })
}
