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
