//! Target `handoff_frame`: the handoff protocol's frame decoder (`sotto_proto::handoff`,
//! docs/handoff.md) on arbitrary bytes, as a receiver or a sender reads them from the
//! handoff socket. The first byte picks the reader's body limit; the rest is the frame.
//! Checks: no panic; the header check and the whole-frame decode agree (a frame whose header
//! passes and whose body is exactly the announced length decodes or is refused by a body
//! check, never by a header one); a decoded frame encodes back to exactly the bytes read (the
//! format is canonical) and decodes again to the same frame; whatever decodes respects the
//! protocol's rules (non-zero token and deadline in an OFFER, a known refusal in a refusing
//! ACK, issuer and reason within their bounds).

use sotto_proto::handoff::{self, Frame, FrameError, HEADER_LEN, MAX_ISSUER, MAX_REASON};

/// The body limits a reader may have.
const LIMITS: [u32; 4] = [0, 64, 4096, u32::MAX];

/// Run the check on one input.
pub fn run(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else { return };
    let max = LIMITS[sel as usize % LIMITS.len()];
    let header = handoff::body_len(frame, max);
    let decoded = handoff::decode(frame, max);
    match (&header, &decoded) {
        (Err(h), Err(d)) => assert_eq!(h, d, "the whole-frame decode reports the header's error first"),
        (Err(h), Ok(f)) => panic!("header refused ({h}) but the frame decoded: {f:?}"),
        (Ok(_), Err(e)) => assert!(
            matches!(e, FrameError::Truncated | FrameError::TrailingBytes | FrameError::Invalid(_)),
            "a header error ({e}) after the header passed"
        ),
        (Ok(len), Ok(f)) => {
            assert_eq!(frame.len(), HEADER_LEN + len, "decoded with a body of another length");
            check_rules(f);
            let mut again = Vec::new();
            f.encode(&mut again);
            assert_eq!(again, frame, "the encoding of a decoded frame is the bytes read");
            assert_eq!(handoff::decode(&again, max).as_ref(), Ok(f), "decode(encode(frame)) == frame");
        }
    }
}

fn check_rules(f: &Frame<'_>) {
    match f {
        Frame::Offer(o) => {
            assert_ne!(o.token, [0; 16], "zero token accepted");
            assert_ne!(o.deadline_ms, 0, "zero deadline accepted");
            assert!(o.issuer.len() <= MAX_ISSUER);
            assert!(!o.state.is_empty(), "empty state accepted");
        }
        Frame::Ack(a) => assert!(a.reason.len() <= MAX_REASON),
        _ => {}
    }
}

/// Seeds: one frame of each kind (valid), under each limit selector.
#[must_use]
pub fn sample_frames() -> Vec<(String, Vec<u8>)> {
    use sotto_proto::handoff::{Ack, ListenerFamily, Offer, Refusal};
    let frames = [
        (
            "offer",
            Frame::Offer(Offer {
                corr: 1,
                token: [7; 16],
                deadline_ms: 2000,
                issuer: b"",
                app: b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                state: b"SOTS\x01\x00\x02\x00\x00\x00\x00\x00",
            }),
        ),
        ("ack-accepted", Frame::Ack(Ack { corr: 1, token: [7; 16], refusal: None, reason: "" })),
        ("ack-refused", Frame::Ack(Ack { corr: 2, token: [8; 16], refusal: Some(Refusal::OverLimit), reason: "ring" })),
        ("listener-tcp", Frame::Listener(ListenerFamily::Tcp)),
        ("listener-unix", Frame::Listener(ListenerFamily::Unix)),
        ("done", Frame::Done { offers: 1000 }),
        ("revoke", Frame::Revoke { corr: 3, token: [9; 16] }),
    ];
    let mut out = Vec::new();
    for (name, f) in frames {
        let mut bytes = vec![3u8];
        f.encode(&mut bytes);
        out.push((name.to_owned(), bytes));
    }
    out
}
