//! Malformed input scenarios (shared/SCENARIOS.md section 6).

use sotto_proto::conduit::{InputError, LinkDropReason, Violation};
use sotto_proto::wire::{ClientHello, Frame, FramingError, LinkDecoder, ServerHello, WireError, HELLO_LEN};
use sotto_tests::{secs, wire_util, Side, Sim, SimConfig, SimRng};

fn random_bytes(rng: &mut SimRng, max: u64) -> Vec<u8> {
    let len = rng.range(0, max) as usize;
    let mut v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    // Bias towards plausible frames: a known kind byte first, small varints.
    if !v.is_empty() && rng.chance(600) {
        v[0] = rng.below(6) as u8;
    }
    v
}

/// The violation a conduit must report for bytes that fail `Frame::decode`.
fn expected_violation(bytes: &[u8], e: WireError) -> InputError {
    let hello = bytes.len() == HELLO_LEN && (ClientHello::decode(bytes).is_ok() || ServerHello::decode(bytes).is_ok());
    let v = if hello { Violation::UnexpectedHello } else { Violation::Malformed(e) };
    InputError::LinkDropped(LinkDropReason::Violation(v))
}

/// M1: random bytes as a frame, on established links (extended and base form). Whatever does
/// not decode is a violation with the decoder's error; nothing panics; the session resumes and
/// delivers everything afterwards.
#[test]
fn m1_random_bytes_as_a_frame() {
    for ext in [true, false] {
        let cfg = SimConfig::small().with_conduit({
            let mut patched = SimConfig::small().a;
            patched.ext = ext;
            patched
        });
        let mut sim = Sim::connected(cfg);
        let mut rng = SimRng::new(0x3131 + u64::from(ext));
        let mut violations = 0;
        for i in 0..5000 {
            let to = if i % 2 == 0 { Side::B } else { Side::A };
            let bytes = random_bytes(&mut rng, 40);
            if !sim.peer(to).conduit.is_established() {
                assert!(sim.run_until(secs(30), Sim::established), "the session resumes");
            }
            let received = sim.peer(to).conduit.items_received() as u32;
            match Frame::decode(&bytes, ext) {
                Err(e) => {
                    assert_eq!(sim.inject(to, &bytes), Err(expected_violation(&bytes, e)), "{bytes:02x?}");
                    violations += 1;
                }
                // A random frame that is the next data item would hand garbage to the
                // application (the harness checks every item), and a GOODBYE would end the
                // session: the rest (acks, pings, pongs, stale or future data) goes in.
                Ok(Frame::Data { seq, .. }) if seq == received => {}
                Ok(Frame::Goodbye { .. }) => {}
                Ok(_) => {
                    let _ = sim.inject(to, &bytes);
                }
            }
        }
        assert!(violations > 1000);
        assert!(!sim.peer(Side::A).conduit.is_ended() && !sim.peer(Side::B).conduit.is_ended());
        sim.send(Side::A, 3);
        sim.send(Side::B, 3);
        assert!(sim.run_until(secs(30), Sim::all_delivered));
    }
}

/// M1 through the link: random garbage written into a link stream. The reader's framing or
/// the conduit rejects it, the link drops, and the session resumes and delivers everything.
#[test]
fn m1_random_bytes_on_the_wire() {
    for seed in 0..200u64 {
        let mut sim = Sim::connected(SimConfig { seed, ..SimConfig::small() });
        let mut rng = SimRng::new(seed);
        sim.send(Side::A, 3);
        sim.send(Side::B, 3);
        let from = if rng.chance(500) { Side::A } else { Side::B };
        let garbage = random_bytes(&mut rng, 64);
        sim.write_raw(from, &garbage);
        sim.send(Side::A, 3);
        sim.send(Side::B, 3);
        let ok = sim.run_until(secs(60), |s| {
            s.all_acked() || s.peer(Side::A).conduit.is_ended() || s.peer(Side::B).conduit.is_ended()
        });
        assert!(ok, "seed {seed}");
        if !sim.all_acked() {
            // Garbage that happens to be a GOODBYE ends the session; nothing else may.
            let end = sim.peer(from.other()).conduit.ended();
            assert!(matches!(end, Some(sotto_proto::SessionEnd::PeerGoodbye { .. })), "seed {seed}: {end:?}");
        }
    }
}

/// M2: a length prefix claiming 4 GiB (or just over `max_frame_len`) is refused as soon as the
/// four prefix bytes are in, before anything is buffered; an `item_len` claiming 4 GiB inside a
/// small frame is a decode error, never an allocation. Either way the session resumes.
#[test]
fn m2_huge_length_claims() {
    let mut dec = LinkDecoder::new(4096);
    let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    assert_eq!(dec.decode(&mut input), Err(FramingError::TooLong { len: u32::MAX, max: 4096 }));
    let mut input: &[u8] = &4097u32.to_le_bytes();
    assert_eq!(LinkDecoder::new(4096).decode(&mut input), Err(FramingError::TooLong { len: 4097, max: 4096 }));

    for prefix in [u32::MAX, 4097] {
        let mut sim = Sim::connected(SimConfig::small());
        sim.send(Side::A, 2);
        sim.write_raw(Side::A, &prefix.to_le_bytes());
        sim.send(Side::A, 2);
        assert!(sim.run_until(secs(30), Sim::all_acked));
        assert_eq!(sim.peer(Side::B).counters.framing_errors, 1);
        assert_eq!(sim.peer(Side::A).counters.resumed, 1);
        assert_eq!(sim.peer(Side::B).delivered(), 4);
    }

    let mut sim = Sim::connected(SimConfig::small());
    let mut frame = wire_util::data(0, None, b"x", true);
    let n = frame.len();
    frame[n - 5..n - 1].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = WireError::ItemLength { claimed: u32::MAX, available: 1 };
    assert_eq!(Frame::decode(&frame, true), Err(e));
    assert_eq!(
        sim.inject(Side::B, &frame),
        Err(InputError::LinkDropped(LinkDropReason::Violation(Violation::Malformed(e))))
    );
    sim.send(Side::A, 2);
    assert!(sim.run_until(secs(30), Sim::all_acked));
}

/// M3: trailing bytes after a valid frame, an unknown kind byte, a bad option tag: violations.
#[test]
fn m3_trailing_bytes_and_unknown_discriminants() {
    let cases: Vec<(bool, Vec<u8>, WireError)> = vec![
        (true, [wire_util::data(0, None, b"ab", true), vec![0]].concat(), WireError::TrailingBytes),
        (false, [wire_util::data(0, None, b"ab", false), vec![9]].concat(), WireError::TrailingBytes),
        (true, [wire_util::ack(0), vec![0]].concat(), WireError::TrailingBytes),
        (true, [wire_util::ping(1), vec![0]].concat(), WireError::TrailingBytes),
        (true, vec![0x05, 0, 0], WireError::UnknownKind { kind: 0x05 }),
        (true, vec![0xff], WireError::UnknownKind { kind: 0xff }),
        (true, vec![0x00, 0x00, 0x02, 0, 0, 0, 0], WireError::BadOptionTag { tag: 2 }),
        (false, vec![0x00, 0x07, 0, 0, 0, 0], WireError::BadOptionTag { tag: 7 }),
    ];
    for (ext, bytes, e) in cases {
        let cfg = SimConfig::small().with_conduit({
            let mut patched = SimConfig::small().a;
            patched.ext = ext;
            patched
        });
        let mut sim = Sim::connected(cfg);
        assert_eq!(Frame::decode(&bytes, ext), Err(e));
        assert_eq!(
            sim.inject(Side::B, &bytes),
            Err(InputError::LinkDropped(LinkDropReason::Violation(Violation::Malformed(e)))),
            "{bytes:02x?}"
        );
        assert!(!sim.peer(Side::B).conduit.is_ended(), "the link drops, the session stays");
        sim.send(Side::A, 1);
        assert!(sim.run_until(secs(30), Sim::all_delivered));
    }
}

/// M5: for every frame and hello that decodes, encoding the decoded value gives back exactly
/// the input (random bytes and mutations of valid messages, both frame forms).
#[test]
fn m5_round_trip() {
    let mut rng = SimRng::new(0x4d35);
    let valid: Vec<Vec<u8>> = vec![
        wire_util::data(0, None, b"abc", true),
        wire_util::data(300, Some(70_000), &[7; 40], true),
        wire_util::data(5, Some(3), b"", false),
        wire_util::ack(u32::MAX),
        wire_util::ping(42),
        wire_util::pong(u64::MAX),
        wire_util::encode(Frame::Goodbye { code: 300, reason: "bye" }, true),
        wire_util::client_hello(Some(sotto_proto::ResumeKey([3; 16])), Some(9), true),
        wire_util::server_hello(sotto_proto::ResumeKey([4; 16]), None, false),
        ServerHello::rejected().encode().to_vec(),
    ];
    let (mut frames, mut hellos) = (0, 0);
    for i in 0..200_000 {
        let bytes = if i % 2 == 0 {
            random_bytes(&mut rng, 32)
        } else {
            let mut b = valid[rng.below(valid.len() as u64) as usize].clone();
            for _ in 0..rng.range(1, 3) {
                if !b.is_empty() {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
            }
            b
        };
        for ext in [true, false] {
            if let Ok(f) = Frame::decode(&bytes, ext) {
                assert_eq!(wire_util::encode(f, ext), bytes, "frame {f:?} (ext {ext})");
                frames += 1;
            }
        }
        if let Ok(h) = ClientHello::decode(&bytes) {
            assert_eq!(h.encode().as_slice(), bytes.as_slice(), "{h:?}");
            hellos += 1;
        }
        if let Ok(h) = ServerHello::decode(&bytes) {
            assert_eq!(h.encode().as_slice(), bytes.as_slice(), "{h:?}");
            hellos += 1;
        }
    }
    assert!(frames > 10_000 && hellos > 1_000, "{frames} frames, {hellos} hellos");
}
