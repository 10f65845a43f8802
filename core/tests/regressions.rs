//! Regression tests for bugs found by fuzzing (fuzz/, docs/fuzzing.md) or by the vox 0.3.0
//! interop tests (interop/). Each names what found it and the input that did, reduced to its
//! essence.

use sotto_proto::wire::{ResumeKey, ServerHello, WireError};

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
fn pump(
    a: &mut sotto_proto::Conduit,
    b: &mut sotto_proto::Conduit,
    la: sotto_proto::LinkId,
    lb: sotto_proto::LinkId,
) -> usize {
    let now = sotto_proto::Instant::ZERO;
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
            if let sotto_proto::Event::DropLink { link, .. } = e {
                a.link_down(now, link);
            }
        }
        while let Some(e) = b.poll_event() {
            moved = true;
            if let sotto_proto::Event::DropLink { link, .. } = e {
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
    let cfg = {
        let mut patched = sotto_proto::ConduitConfig::default();
        patched.max_frame_len = 64;
        patched.replay_bytes = 64;
        patched
    };
    let now = sotto_proto::Instant::ZERO;
    let mut a = sotto_proto::Conduit::new(sotto_proto::Role::Initiator, cfg).expect("config");
    let mut b = sotto_proto::Conduit::new(sotto_proto::Role::Acceptor, cfg).expect("config");
    let la = a.link_up(now, ResumeKey::ZERO);
    let lb = b.link_up(now, ResumeKey([9; 16]));
    pump(&mut a, &mut b, la, lb);
    assert!(a.ext_in_force() && b.ext_in_force());
    let reason = "é".repeat(64); // 128 bytes, two per char
    a.close(now, 0x1234, &reason);
    let largest = pump(&mut a, &mut b, la, lb);
    assert!(!a.has_transmit());
    assert!(largest <= 64);
    assert_eq!(a.ended(), Some(sotto_proto::SessionEnd::LocalClose { code: 0x1234 }));
    assert_eq!(b.ended(), Some(sotto_proto::SessionEnd::PeerGoodbye { code: 0x1234 }));
    let (code, text) = b.peer_goodbye().expect("goodbye received");
    assert_eq!(code, 0x1234);
    // 64 - kind byte - 3-byte varint = 60 bytes: 30 whole chars.
    assert_eq!(text, "é".repeat(30));
}

/// A peer's ClientHello, as a vox initiator (`ext: false`) or a sotto one sends it.
fn client_hello(key: Option<ResumeKey>, ext: bool) -> [u8; 25] {
    sotto_proto::wire::ClientHello { resume_key: key, last_received: None, ext, early: false }.encode()
}

/// A data frame from the peer, base form or extended.
fn data_frame(seq: u32, ext: bool) -> Vec<u8> {
    let f = sotto_proto::wire::Frame::Data { seq, ack: None, item: b"\x01x" };
    let mut out = vec![0; f.encoded_len(ext)];
    let n = f.encode(ext, &mut out).expect("room");
    out.truncate(n);
    out
}

/// Run the acceptor's outputs dry (the frames go nowhere); returns its events.
fn drain(a: &mut sotto_proto::Conduit) -> Vec<sotto_proto::Event> {
    let mut buf = vec![0; a.max_transmit_len()];
    while a.poll_transmit(sotto_proto::Instant::ZERO, &mut buf).is_some() {}
    std::iter::from_fn(|| a.poll_event()).collect()
}

/// interop (`interop/interop-tests`, vox initiator through chaos-proxy, sotto acceptor): the
/// acceptor retired the previous key as soon as any frame arrived on the link where it issued
/// the new one. A vox 0.3.0 initiator adopts the new key only after it has written its whole
/// replay: when the link died mid-replay, the acceptor had already seen replayed frames (and
/// retired K1), vox resumed with K1 again, got REJECTED and lost the session
/// (`SessionLost`). In the base form the previous key now stays valid until the newer one is
/// presented; with extensions (a sotto initiator adopts the key on reading the ServerHello) a
/// frame still retires it (R15).
#[test]
fn interop_vox_resumes_with_the_old_key_after_a_replay_cut_short() {
    let now = sotto_proto::Instant::ZERO;
    let k = |b: u8| ResumeKey([b; 16]);
    for ext in [false, true] {
        let mut a = sotto_proto::Conduit::new(sotto_proto::Role::Acceptor, sotto_proto::ConduitConfig::default())
            .expect("config");
        // Link 1: fresh session, key K1 issued, one item delivered.
        let l1 = a.link_up(now, k(1));
        assert_eq!(a.handle_message(now, l1, &client_hello(None, ext)), Ok(None));
        drain(&mut a);
        assert!(a.handle_message(now, l1, &data_frame(0, ext)).expect("frame").is_some());
        a.link_down(now, l1);
        drain(&mut a);
        // Link 2: resume with K1, K2 issued; a replayed frame arrives, then the link dies
        // before the peer finished its replay (a vox peer still holds K1).
        let l2 = a.link_up(now, k(2));
        assert_eq!(a.handle_message(now, l2, &client_hello(Some(k(1)), ext)), Ok(None));
        drain(&mut a);
        assert!(a.handle_message(now, l2, &data_frame(1, ext)).expect("frame").is_some());
        a.link_down(now, l2);
        drain(&mut a);
        // Link 3: resume with K1 again.
        let l3 = a.link_up(now, k(3));
        let r = a.handle_message(now, l3, &client_hello(Some(k(1)), ext)).map(|item| item.is_some());
        let events = drain(&mut a);
        if ext {
            // R15: a sotto peer held K2 once it sent a frame on link 2; K1 is retired.
            assert!(r.is_err(), "ext: K1 must be retired by the frame on link 2");
            continue;
        }
        assert_eq!(r, Ok(false), "base form: K1 must stay valid until K2 (or a newer key) is presented");
        assert!(events.iter().any(|e| matches!(e, sotto_proto::Event::Attached { resumed: true, .. })), "{events:?}");
        assert!(a.handle_message(now, l3, &data_frame(2, ext)).expect("frame").is_some());
        a.link_down(now, l3);
        drain(&mut a);
        // Link 4: the peer presents K3 (it adopted it): from now on K1 is refused.
        let l4 = a.link_up(now, k(4));
        assert_eq!(a.handle_message(now, l4, &client_hello(Some(k(3)), ext)), Ok(None));
        a.link_down(now, l4);
        drain(&mut a);
        let l5 = a.link_up(now, k(5));
        assert!(
            a.handle_message(now, l5, &client_hello(Some(k(1)), ext)).is_err(),
            "K1 is retired once K3 was presented"
        );
        assert!(a.ended().is_none(), "a refused key does not end the session");
    }
}
