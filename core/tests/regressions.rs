//! Regression tests for bugs found by fuzzing (fuzz/, docs/fuzzing.md). Each names the target
//! that found it and the input that did, reduced to its essence.

use sotto::wire::{ResumeKey, ServerHello, WireError};

/// `hello_decode`: a REJECTED ServerHello that also carried EXT (or a position, or a key)
/// decoded as the canonical `ServerHello::rejected()`, dropping those fields, so
/// `encode(decode(b)) != b`. Decoding now keeps them; the conduit still only looks at
/// `rejected`.
#[test]
fn fuzz_hello_decode_rejected_server_hello_round_trips() {
    // 56 4f 53 48 | flags REJECTED|EXT | zero key | 00000000
    let mut bytes = [0u8; 25];
    bytes[..4].copy_from_slice(b"VOSH");
    bytes[4] = 0x01 | 0x04;
    let h = ServerHello::decode(&bytes).expect("a REJECTED hello with EXT is valid");
    assert!(h.rejected && h.ext);
    assert_eq!(h.encode(), bytes);

    // With a position and a (meaningless) key too.
    let with_all = ServerHello { rejected: true, resume_key: ResumeKey([7; 16]), last_received: Some(3), ext: true };
    let bytes = with_all.encode();
    let h = ServerHello::decode(&bytes).expect("valid");
    assert_eq!(h, with_all);
    assert_eq!(h.encode(), bytes);

    // The canonical reply is unchanged, and an accepted hello still needs a key.
    assert_eq!(ServerHello::decode(&ServerHello::rejected().encode()), Ok(ServerHello::rejected()));
    let zero_key = ServerHello { rejected: false, resume_key: ResumeKey::ZERO, last_received: None, ext: false };
    assert_eq!(ServerHello::decode(&zero_key.encode()), Err(WireError::InconsistentFlags));
}

/// Move every frame between `a` and `b` (one link each) until nothing moves; returns the
/// largest frame seen.
fn pump(a: &mut sotto::Conduit, b: &mut sotto::Conduit, la: sotto::LinkId, lb: sotto::LinkId) -> usize {
    let now = sotto::Instant::ZERO;
    let mut buf = vec![0u8; a.max_transmit_len().max(b.max_transmit_len())];
    let mut largest = 0;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf[..a.max_transmit_len()]) {
            moved = true;
            largest = largest.max(t.len);
            let _ = b.handle_message(now, lb, &buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf[..b.max_transmit_len()]) {
            moved = true;
            largest = largest.max(t.len);
            let _ = a.handle_message(now, la, &buf[..t.len]);
        }
        while let Some(e) = a.poll_event() {
            moved = true;
            if let sotto::Event::DropLink { link, .. } = e {
                a.link_down(now, link);
            }
        }
        while let Some(e) = b.poll_event() {
            moved = true;
            if let sotto::Event::DropLink { link, .. } = e {
                b.link_down(now, link);
            }
        }
        if !moved {
            return largest;
        }
    }
    panic!("pump did not settle");
}

/// `conduit_initiator`: `close` with a reason longer than fits in `max_frame_len` (a 128-byte
/// reason, 64-byte frames) queued a GOODBYE that `poll_transmit` could never write: it
/// returned `None` while `has_transmit()` stayed true, and the close never finished (with a
/// GOODBYE owed on a dropping link, the DropLink would be withheld forever too). The reason
/// is now cut to fit one frame.
#[test]
fn fuzz_conduit_close_reason_longer_than_a_frame() {
    let cfg = sotto::ConduitConfig { max_frame_len: 64, replay_bytes: 64, ..sotto::ConduitConfig::default() };
    let now = sotto::Instant::ZERO;
    let mut a = sotto::Conduit::new(sotto::Role::Initiator, cfg).expect("config");
    let mut b = sotto::Conduit::new(sotto::Role::Acceptor, cfg).expect("config");
    let la = a.link_up(now, ResumeKey::ZERO);
    let lb = b.link_up(now, ResumeKey([9; 16]));
    pump(&mut a, &mut b, la, lb);
    assert!(a.ext_in_force() && b.ext_in_force());
    let reason = "é".repeat(64); // 128 bytes, two per char
    a.close(now, 0x1234, &reason);
    let largest = pump(&mut a, &mut b, la, lb);
    assert!(!a.has_transmit());
    assert!(largest <= 64);
    assert_eq!(a.ended(), Some(sotto::SessionEnd::LocalClose { code: 0x1234 }));
    assert_eq!(b.ended(), Some(sotto::SessionEnd::PeerGoodbye { code: 0x1234 }));
    let (code, text) = b.peer_goodbye().expect("goodbye received");
    assert_eq!(code, 0x1234);
    // 64 - kind byte - 3-byte varint = 60 bytes: 30 whole chars.
    assert_eq!(text, "é".repeat(30));
}
