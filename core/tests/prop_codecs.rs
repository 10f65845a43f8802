//! Property tests of every wire codec: encode then decode gives the value back, decode then
//! encode gives the bytes back (SCENARIOS M5), and link framing gives the same messages
//! however the byte stream is split.
//!
//! A failure prints the minimal failing input and is saved under `proptest-regressions/`
//! beside this file, so the next run replays it first; `PROPTEST_RNG_SEED=<n>` fixes the
//! generator, `PROPTEST_CASES=<n>` runs more cases.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sotto_proto::wire::varint::{decode_varint, encode_varint, varint_len, MAX_VARINT_LEN};
use sotto_proto::wire::{
    next_message_extent, ClientHello, DataHeader, Frame, FramingError, LinkDecoder, Message, ResumeKey, ServerHello,
    HELLO_LEN,
};

fn key() -> impl Strategy<Value = ResumeKey> {
    prop_oneof![Just(ResumeKey::ZERO), any::<[u8; 16]>().prop_map(ResumeKey)]
}

/// The parts of a frame: seq (or ack, or code), ack, item, kind, nonce, reason.
type FrameParts = (u32, Option<u32>, Vec<u8>, u8, u64, String);

/// Every frame kind; extended kinds only when `ext`.
fn frame(ext: bool) -> BoxedStrategy<FrameParts> {
    let kinds = if ext { 0u8..5 } else { 0u8..1 };
    (any::<u32>(), any::<Option<u32>>(), proptest::collection::vec(any::<u8>(), 0..200), kinds, any::<u64>(), ".{0,40}")
        .boxed()
}

fn build<'a>(seq: u32, ack: Option<u32>, item: &'a [u8], kind: u8, n: u64, reason: &'a str) -> Frame<'a> {
    match kind {
        0 => Frame::Data { seq, ack, item },
        1 => Frame::Ack(seq),
        2 => Frame::Ping(n),
        3 => Frame::Pong(n),
        _ => Frame::Goodbye { code: seq, reason },
    }
}

/// Decode `stream` with a fresh decoder, fed in pieces cut at `cuts`.
fn decode_split(max: u32, stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Option<FramingError>, bool) {
    let mut dec = LinkDecoder::new(max);
    let mut out = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(0);
    bounds.push(stream.len());
    bounds.sort_unstable();
    for w in bounds.windows(2) {
        let mut input = &stream[w[0]..w[1]];
        loop {
            match dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => out.push(m.to_vec()),
                Ok(Some(Message::Reassembled)) => out.push(dec.reassembled().to_vec()),
                Ok(None) => {
                    assert!(input.is_empty());
                    break;
                }
                Err(e) => return (out, Some(e), false),
            }
        }
    }
    let clean = dec.finish().is_ok();
    (out, None, clean)
}

proptest! {
    #![proptest_config(config_with_persistence())]
    #[test]
    fn varint_round_trips(v in any::<u32>(), junk in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut buf = [0u8; MAX_VARINT_LEN + 4];
        let n = encode_varint(v, &mut buf).expect("fits");
        prop_assert_eq!(n, varint_len(v));
        // Bytes after the varint are not its business.
        buf[n..n + junk.len()].copy_from_slice(&junk);
        prop_assert_eq!(decode_varint(&buf[..n + junk.len()]), Ok((v, n)));
        // Too short a buffer is refused, never written past.
        if n > 1 {
            prop_assert_eq!(encode_varint(v, &mut [0u8; 1]), None);
        }
    }

    #[test]
    fn varint_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
        if let Ok((v, n)) = decode_varint(&bytes) {
            let mut buf = [0u8; MAX_VARINT_LEN];
            prop_assert_eq!(encode_varint(v, &mut buf), Some(n));
            prop_assert_eq!(&buf[..n], &bytes[..n]);
        }
    }

    #[test]
    fn client_hello_round_trips(k in key(), has_key: bool, lr: Option<u32>, ext: bool) {
        let resume_key = has_key.then_some(k);
        // A position needs a real key (H6).
        let last_received = lr.filter(|_| has_key && !k.is_zero());
        let h = ClientHello { resume_key, last_received, ext, early: false };
        let bytes = h.encode();
        prop_assert_eq!(ClientHello::decode(&bytes), Ok(h));
        prop_assert!(ServerHello::decode(&bytes).is_err());
    }

    #[test]
    fn server_hello_round_trips(rejected: bool, k in key(), lr: Option<u32>, ext: bool) {
        prop_assume!(rejected || !k.is_zero());
        let h = ServerHello { rejected, resume_key: k, last_received: lr, ext };
        let bytes = h.encode();
        prop_assert_eq!(ServerHello::decode(&bytes), Ok(h));
        prop_assert!(ClientHello::decode(&bytes).is_err());
    }

    #[test]
    fn hello_bytes_round_trip(server: bool, flags in 0u8..16, rest in any::<[u8; 20]>(), zero_key: bool, zero_lr: bool) {
        let mut bytes = [0u8; HELLO_LEN];
        bytes[..4].copy_from_slice(if server { b"VOSH" } else { b"VOCH" });
        bytes[4] = flags;
        bytes[5..].copy_from_slice(&rest);
        if zero_key {
            bytes[5..21].fill(0);
        }
        if zero_lr {
            bytes[21..].fill(0);
        }
        if let Ok(h) = ClientHello::decode(&bytes) {
            prop_assert_eq!(h.encode(), bytes);
        }
        if let Ok(h) = ServerHello::decode(&bytes) {
            prop_assert_eq!(h.encode(), bytes);
        }
    }

    #[test]
    fn base_frames_round_trip(f in frame(false)) {
        let (seq, ack, item, kind, n, reason) = &f;
        check_frame(build(*seq, *ack, item, *kind, *n, reason), false)?;
    }

    #[test]
    fn extended_frames_round_trip(f in frame(true)) {
        let (seq, ack, item, kind, n, reason) = &f;
        check_frame(build(*seq, *ack, item, *kind, *n, reason), true)?;
    }

    #[test]
    fn frame_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..48), ext: bool) {
        if let Ok(f) = Frame::decode(&bytes, ext) {
            let mut out = vec![0u8; bytes.len()];
            prop_assert_eq!(f.encode(ext, &mut out), Some(bytes.len()));
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn framing_splits_anywhere(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        max in 0u32..100,
        cut_tail in 0usize..6,
    ) {
        let mut stream: Vec<u8> =
            msgs.iter().flat_map(|m| (m.len() as u32).to_le_bytes().into_iter().chain(m.iter().copied())).collect();
        stream.truncate(stream.len().saturating_sub(cut_tail));
        let whole = decode_split(max, &stream, &[]);
        let split = decode_split(max, &stream, &cuts);
        prop_assert_eq!(&whole, &split);
        // What a reference parser expects: every message up to the first one over `max`,
        // then TooLong; a cut tail leaves an unclean end.
        let mut expect = Vec::new();
        let mut error = None;
        let mut at = 0;
        for m in &msgs {
            if at + 4 > stream.len() {
                break;
            }
            if m.len() > max as usize {
                error = Some(FramingError::TooLong { len: m.len() as u32, max });
                break;
            }
            if at + 4 + m.len() > stream.len() {
                break;
            }
            expect.push(m.clone());
            at += 4 + m.len();
        }
        prop_assert_eq!(&whole.0, &expect);
        prop_assert_eq!(whole.1, error);
        if error.is_none() {
            prop_assert_eq!(whole.2, at == stream.len(), "a clean end is a message boundary");
        }
        // next_message_extent agrees.
        let mut rest = &stream[..];
        let mut by_extent = Vec::new();
        while let Ok(Some(r)) = next_message_extent(rest, max) {
            by_extent.push(rest[r.clone()].to_vec());
            rest = &rest[r.end..];
        }
        prop_assert_eq!(&by_extent, &expect);
    }
}

fn check_frame(f: Frame<'_>, ext: bool) -> Result<(), TestCaseError> {
    let len = f.encoded_len(ext);
    let mut out = vec![0u8; len];
    prop_assert_eq!(f.encode(ext, &mut out), Some(len));
    prop_assert_eq!(Frame::decode(&out, ext), Ok(f));
    if len > 0 {
        prop_assert_eq!(f.encode(ext, &mut out[..len - 1]), None);
    }
    if let Frame::Data { seq, ack, item } = f {
        let h = DataHeader { seq, ack, item_len: item.len() as u32 };
        prop_assert_eq!(h.encoded_len(ext) + item.len(), len);
        let mut hb = vec![0u8; h.encoded_len(ext)];
        prop_assert_eq!(h.encode(ext, &mut hb), Some(hb.len()));
        prop_assert_eq!(&hb[..], &out[..hb.len()]);
    }
    Ok(())
}

/// The default config (and its `PROPTEST_*` environment overrides), with failures saved
/// beside this file as `<name>.proptest-regressions` (commit those files).
fn config_with_persistence() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}
