//! Reading a lost session's unacknowledged messages allocates nothing (DESIGN.md, contract
//! 4): `Session::unacked_messages` moves the replay ring's bytes in place so that no item
//! is split at its end, then lends every payload from the ring. A counting global allocator
//! (this file only) watches it over a ring whose items wrap.

use sotto_proto::session::{Incoming, Session, SessionConfig, Unacked};
use sotto_proto::{Instant, LinkId, ResumeKey, Role, SessionEnd};
use sotto_tests::counting_alloc::{allocations, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Move every frame both ways until nothing moves.
fn pump(a: &mut Session, b: &mut Session, la: LinkId, lb: LinkId, buf: &mut [u8]) {
    while to_b(a, b, lb, buf) | to_a(a, b, la, buf) {}
}

/// A's frames to B (B accepts Opens, releases the credit of what it got); whether any moved.
fn to_b(a: &mut Session, b: &mut Session, lb: LinkId, buf: &mut [u8]) -> bool {
    let mut moved = false;
    while let Some(t) = a.poll_transmit(Instant::ZERO, buf) {
        moved = true;
        match b.handle_message(Instant::ZERO, lb, &buf[..t.len]) {
            Ok(Some(Incoming::Data { conn, payload })) => {
                let credit = b.credit_of(payload.len()) as usize;
                let _ = b.release(conn, credit);
            }
            Ok(Some(Incoming::DataBatch { conn, batch })) => {
                let _ = b.release(conn, batch.credit() as usize);
            }
            Ok(Some(Incoming::Open { conn, .. })) => b.accept(conn, b"").expect("accept"),
            _ => {}
        }
    }
    while a.poll_event().is_some() || b.poll_event().is_some() {
        moved = true;
    }
    moved
}

/// B's frames to A; whether any moved.
fn to_a(a: &mut Session, b: &mut Session, la: LinkId, buf: &mut [u8]) -> bool {
    let mut moved = false;
    while let Some(t) = b.poll_transmit(Instant::ZERO, buf) {
        moved = true;
        let _ = a.handle_message(Instant::ZERO, la, &buf[..t.len]);
    }
    while a.poll_event().is_some() || b.poll_event().is_some() {
        moved = true;
    }
    moved
}

#[test]
fn reading_the_unacknowledged_messages_allocates_nothing() {
    let cfg = SessionConfig::default();
    let mut a = Session::new(Role::Initiator, cfg, b"").expect("config");
    let mut b = Session::new(Role::Acceptor, cfg, b"").expect("config");
    a.reserve_buffers();
    let mut buf = vec![0u8; 1 << 21];
    let la = a.link_up(Instant::ZERO, ResumeKey::ZERO);
    let lb = b.link_up(Instant::ZERO, ResumeKey([1; 16]));
    pump(&mut a, &mut b, la, lb, &mut buf);
    let conn = a.open(b"").expect("open");
    pump(&mut a, &mut b, la, lb, &mut buf);
    // Large items, delivered and acknowledged (B acks every 32 frames), move the ring's head
    // around its storage; then the link dies and more wait in the ring, some wrapping.
    let big = vec![7u8; 60_000];
    // Each round one item is still untransmitted when B's acknowledgments arrive, so the
    // ring never empties (an empty ring restarts at the front) and its head travels.
    a.send(conn, &big).expect("send");
    for _ in 0..200 {
        to_b(&mut a, &mut b, lb, &mut buf);
        a.send(conn, &big).expect("send");
        to_a(&mut a, &mut b, la, &mut buf);
    }
    let waiting = a.conduit().unacked();
    assert!(waiting > 0, "the ring is never empty");
    a.link_down(Instant::ZERO, la);
    b.link_down(Instant::ZERO, lb);
    let mut sent = 0;
    while a.send(conn, &big).is_ok() {
        sent += 1;
        for i in 0..10u8 {
            let _ = a.send(conn, &[i; 8]);
        }
    }
    a.conduit_end(Instant::ZERO, SessionEnd::RecoveryTimeout);
    let before = allocations();
    let (mut n, mut bytes) = (0usize, 0usize);
    for u in a.unacked_messages() {
        if let Unacked::Data { payload, .. } = u {
            n += 1;
            bytes += payload.len();
        }
    }
    assert_eq!(allocations() - before, 0, "no allocation");
    assert!(sent >= 1, "room for more without a link");
    assert!(
        n as u64 >= waiting + sent as u64,
        "{waiting} waiting, {sent} large messages sent without a link, {n} returned"
    );
    assert!(bytes >= sent * big.len());
}
