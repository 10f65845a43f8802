//! Decoder targets: link framing split anywhere, hellos, frames. Each checks that decoding
//! never panics and that encode and decode are exact inverses (WIRE.md; SCENARIOS M5).

use crate::script::Script;
use sotto_proto::wire::frame::KIND_DATA;
use sotto_proto::wire::{
    next_message_extent, ClientHello, DataHeader, Frame, FramingError, LinkDecoder, Message, ResumeKey, ServerHello,
    HELLO_LEN, LEN_PREFIX,
};

/// What decoding a whole byte stream gives: the messages, then the error that stopped it (if
/// any), else whether the stream ended on a message boundary.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    messages: Vec<Vec<u8>>,
    error: Option<FramingError>,
    clean_end: bool,
}

/// Feed `stream` to a fresh [`LinkDecoder`] in chunks of the sizes in `chunks` (cycled; a 0
/// is an empty read).
fn decode_chunked(max: u32, stream: &[u8], chunks: &[usize]) -> Decoded {
    let mut dec = LinkDecoder::new(max);
    let mut out = Decoded { messages: Vec::new(), error: None, clean_end: false };
    let mut rest = stream;
    let mut i = 0;
    let progress = chunks.iter().any(|&c| c > 0);
    while !rest.is_empty() || i == 0 {
        let n = if progress { chunks[i % chunks.len()].min(rest.len()) } else { rest.len() };
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut input = chunk;
        loop {
            match dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => {
                    assert!(m.len() <= max as usize, "message longer than max_frame_len");
                    out.messages.push(m.to_vec());
                }
                Ok(Some(Message::Reassembled)) => {
                    let m = dec.reassembled();
                    assert!(m.len() <= max as usize, "message longer than max_frame_len");
                    out.messages.push(m.to_vec());
                }
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) must mean the whole input was consumed");
                    break;
                }
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    out.clean_end = dec.finish().is_ok();
    assert_eq!(dec.is_at_boundary(), out.clean_end);
    // After a reset the decoder is as good as new.
    dec.reset();
    assert!(dec.finish().is_ok());
    let mut probe: &[u8] = &[0, 0, 0, 0];
    assert_eq!(dec.decode(&mut probe), Ok(Some(Message::Whole(&[]))));
    out
}

/// The same stream through [`next_message_extent`], the helper for drivers with their own
/// buffer.
fn decode_by_extent(max: u32, stream: &[u8]) -> Decoded {
    let mut out = Decoded { messages: Vec::new(), error: None, clean_end: false };
    let mut rest = stream;
    loop {
        match next_message_extent(rest, max) {
            Ok(Some(range)) => {
                assert_eq!(range.start, LEN_PREFIX);
                out.messages.push(rest[range.clone()].to_vec());
                rest = &rest[range.end..];
            }
            Ok(None) => {
                out.clean_end = rest.is_empty();
                return out;
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

/// `framing_chunks`: input = `max_frame_len: u16 LE`, `n: u8`, `n % 32` chunk sizes (one
/// byte each), then the byte stream. The stream fed in those chunks gives the same messages
/// and the same error as fed whole, and as [`next_message_extent`] finds.
pub fn framing_chunks(data: &[u8]) {
    let mut s = Script::new(data);
    let max = u32::from(s.u16());
    let n = usize::from(s.u8() % 32);
    let chunks: Vec<usize> = (0..n).map(|_| usize::from(s.u8())).collect();
    let stream = s.bytes(usize::MAX);
    let whole = decode_chunked(max, stream, &[stream.len()]);
    let chunked = decode_chunked(max, stream, if chunks.is_empty() { &[1] } else { &chunks });
    assert_eq!(whole, chunked, "chunked decoding differs from whole (chunks {chunks:?})");
    let by_extent = decode_by_extent(max, stream);
    assert_eq!(whole, by_extent, "next_message_extent differs from LinkDecoder");
    // Re-encoding the messages gives back the consumed part of the stream.
    let encoded: Vec<u8> = whole
        .messages
        .iter()
        .flat_map(|m| (m.len() as u32).to_le_bytes().into_iter().chain(m.iter().copied()))
        .collect();
    assert_eq!(&stream[..encoded.len()], encoded.as_slice());
    if whole.error.is_none() && whole.clean_end {
        assert_eq!(encoded.len(), stream.len());
    }
}

/// `hello_decode`: the input as a ClientHello and as a ServerHello. On success, encoding
/// gives back the input exactly; and hellos built from the input's bytes round trip.
pub fn hello_decode(data: &[u8]) {
    let ch = ClientHello::decode(data);
    let sh = ServerHello::decode(data);
    assert!(!(ch.is_ok() && sh.is_ok()), "bytes decode as both hellos");
    if let Ok(h) = ch {
        assert_eq!(data.len(), HELLO_LEN);
        assert_eq!(h.encode().as_slice(), data, "ClientHello encode(decode(b)) != b: {h:?}");
        if h.last_received.is_some() {
            assert!(h.resume_key.is_some_and(|k| !k.is_zero()), "position without a key: {h:?}");
        }
    }
    if let Ok(h) = sh {
        assert_eq!(data.len(), HELLO_LEN);
        assert_eq!(h.encode().as_slice(), data, "ServerHello encode(decode(b)) != b: {h:?}");
        if !h.rejected {
            assert!(!h.resume_key.is_zero(), "accepted without a key");
        }
    }
    // Structured direction: values built from the input encode and decode back to themselves.
    let mut s = Script::new(data);
    let flags = s.u8();
    let mut key = [0u8; 16];
    for b in &mut key {
        *b = s.u8();
    }
    let key = ResumeKey(key);
    let lr = s.u32();
    let has_key = flags & 1 != 0;
    let client = ClientHello {
        resume_key: has_key.then_some(key),
        last_received: (has_key && !key.is_zero() && flags & 2 != 0).then_some(lr),
        ext: flags & 4 != 0,
        early: !has_key && flags & 64 != 0,
    };
    assert_eq!(ClientHello::decode(&client.encode()), Ok(client));
    let server = ServerHello {
        rejected: flags & 8 != 0,
        resume_key: if flags & 8 != 0 { ResumeKey::ZERO } else { key },
        last_received: (flags & 16 != 0).then_some(lr),
        ext: flags & 32 != 0,
    };
    if server.rejected || !server.resume_key.is_zero() {
        let rt = ServerHello::decode(&server.encode());
        assert_eq!(rt.map(|h| h.encode()), Ok(server.encode()), "{server:?}");
    }
}

/// `frame_decode`: the input as a base frame and as an extended frame. On success,
/// `encode(decode(b)) == b`, `encoded_len` agrees, a buffer one byte short is refused without
/// a panic, and a base frame is the body of an extended DATA frame.
pub fn frame_decode(data: &[u8]) {
    for ext in [false, true] {
        let Ok(frame) = Frame::decode(data, ext) else { continue };
        assert_eq!(frame.encoded_len(ext), data.len(), "encoded_len of {frame:?}");
        let mut buf = vec![0u8; data.len()];
        assert_eq!(frame.encode(ext, &mut buf), Some(data.len()), "encode of {frame:?}");
        assert_eq!(buf.as_slice(), data, "encode(decode(b)) != b for {frame:?} (ext {ext})");
        if !data.is_empty() {
            let mut short = vec![0u8; data.len() - 1];
            assert_eq!(frame.encode(ext, &mut short), None);
        }
        match frame {
            Frame::Data { seq, ack, item } => {
                let header = DataHeader { seq, ack, item_len: item.len() as u32 };
                assert_eq!(header.encoded_len(ext) + item.len(), data.len());
                if !ext {
                    let mut wrapped = vec![KIND_DATA];
                    wrapped.extend_from_slice(data);
                    assert_eq!(Frame::decode(&wrapped, true), Ok(frame));
                }
            }
            _ => assert!(ext, "extended kind decoded in base form: {frame:?}"),
        }
    }
    // Every prefix of a short input decodes or fails without a panic.
    if data.len() <= 48 {
        for n in 0..data.len() {
            let _ = Frame::decode(&data[..n], false);
            let _ = Frame::decode(&data[..n], true);
        }
    }
}

/// `session_message`: the input as a session message (docs/protocol.md section 2). On
/// success, `encode(decode(b)) == b` (also through `encode_parts`), `encoded_len` agrees, a
/// buffer one byte short is refused; a message whose last field runs to the end of the item
/// takes one more byte into that field, the others refuse it (strict decoding); every prefix
/// of a short input decodes or fails without a panic. Messages built from the input's bytes
/// round trip too.
pub fn session_message(data: &[u8]) {
    use sotto_proto::session::message::MAX_HEADER_LEN;
    use sotto_proto::session::Message as SMsg;
    if let Ok(m) = SMsg::decode(data) {
        assert_eq!(m.encoded_len(), data.len(), "encoded_len of {m:?}");
        let mut buf = vec![0u8; data.len()];
        assert_eq!(m.encode(&mut buf), Some(data.len()), "encode of {m:?}");
        assert_eq!(buf.as_slice(), data, "encode(decode(b)) != b for {m:?}");
        if !data.is_empty() {
            assert_eq!(m.encode(&mut buf[..data.len() - 1]), None, "encode into a short buffer");
        }
        let mut h = [0u8; MAX_HEADER_LEN];
        let (head, tail) = m.encode_parts(&mut h);
        assert_eq!([head, tail].concat(), data, "encode_parts of {m:?}");
        assert_eq!(SMsg::decode(&buf), Ok(m));
        // One more byte: the open-ended last field takes it, fixed layouts refuse it. A batch
        // body is a list of length-prefixed payloads: `z` starts a 122-byte payload that is
        // not there, so it is refused too.
        let mut longer = data.to_vec();
        longer.push(b'z');
        match (m, SMsg::decode(&longer)) {
            (SMsg::LetsGo | SMsg::Credit { .. } | SMsg::DataBatch { .. } | SMsg::Fin { .. }, r) => {
                assert!(r.is_err(), "trailing byte accepted after {m:?}")
            }
            (_, Ok(n)) => {
                let mut h2 = [0u8; MAX_HEADER_LEN];
                let (head2, tail2) = n.encode_parts(&mut h2);
                assert_eq!(head2, head, "header changed by a trailing byte: {m:?} -> {n:?}");
                assert_eq!(tail2.len(), tail.len() + 1);
            }
            (_, Err(e)) => panic!("{m:?} plus one byte of its last field: {e:?}"),
        }
    }
    if data.len() <= 48 {
        for n in 0..data.len() {
            let _ = SMsg::decode(&data[..n]);
        }
    }
    // Structured direction.
    let mut s = Script::new(data);
    let kind = s.u8();
    let (a, b, c) = (s.u32(), s.u32(), s.u32());
    let parity = if kind & 0x80 == 0 { sotto_proto::session::Parity::Odd } else { sotto_proto::session::Parity::Even };
    let tail_len = usize::from(s.u8() % 64);
    let tail = s.bytes(tail_len).to_vec();
    let text = String::from_utf8_lossy(&tail).into_owned();
    let body = sotto_proto::session::message::HelloBody {
        version: a,
        parity,
        root_credit: b,
        max_connections: c,
        metadata: &tail,
    };
    let m = match kind % 13 {
        0 => SMsg::Hello(body),
        1 => SMsg::HelloYourself(body),
        2 => SMsg::LetsGo,
        3 => SMsg::Sorry { code: a, reason: &text },
        4 => SMsg::Data { conn: a, payload: &tail },
        5 => SMsg::Open { conn: a, credit: b, metadata: &tail },
        6 => SMsg::Accept { conn: a, credit: b, metadata: &tail },
        7 => SMsg::Reject { conn: a, code: b, metadata: &tail },
        8 => SMsg::Close { conn: a, metadata: &tail },
        9 => SMsg::Credit { conn: a, grant: b },
        10 => SMsg::ProtocolError { code: a, reason: &text },
        11 => SMsg::Fin { conn: a },
        // The tail as a batch body, when it is one (else nothing to round trip).
        _ => match sotto_proto::session::DataBatch::parse(&tail) {
            Ok(batch) => {
                let credit: u64 =
                    batch.iter().map(|p| sotto_proto::session::message_credit(p.len() as u64, true)).sum();
                assert_eq!(batch.credit(), credit, "a batch's credit is its messages' credit");
                assert_eq!(batch.payload_len(), batch.iter().map(|p| p.len() as u64).sum::<u64>());
                SMsg::DataBatch { conn: a, batch }
            }
            Err(_) => return,
        },
    };
    let mut buf = vec![0u8; m.encoded_len()];
    assert_eq!(m.encode(&mut buf), Some(buf.len()));
    assert_eq!(SMsg::decode(&buf), Ok(m), "decode(encode(m)) != m");
}
