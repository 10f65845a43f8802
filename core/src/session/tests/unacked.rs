//! `Session::unacked_messages`: what a session sent and the peer never acknowledged, decoded
//! back into messages and connection commands; credit grants and the handshake left out.

use super::*;
use alloc::string::String;

/// The unacknowledged list, owned (its `Debug` form: the values borrow the session).
fn owned(s: &mut Session) -> Vec<String> {
    s.unacked_messages().map(|u| alloc::format!("{u:?}")).collect()
}

fn owned_list(list: &[Unacked<'_>]) -> Vec<String> {
    list.iter().map(|u| alloc::format!("{u:?}")).collect()
}

/// Time passes past the ack delay and both sides flush their acks.
fn settle_acks(p: &mut Pair) {
    p.now = p.now.saturating_add(Duration::from_millis(100));
    p.a.handle_timeout(p.now);
    p.b.handle_timeout(p.now);
    p.pump();
}

#[test]
fn unacknowledged_messages_and_commands_come_back_in_order_grants_and_handshake_do_not() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    let d = open_accepted(&mut p);
    p.a.send(c, b"delivered").expect("send");
    p.pump();
    settle_acks(&mut p);
    assert_eq!(p.a.unacked_messages().count(), 0, "everything was acknowledged");
    p.cut();
    p.a.send(c, b"one").expect("send");
    p.a.send(c, b"two").expect("send: starts a batch (a burst)");
    p.a.send(c, b"three").expect("send: joins it");
    p.a.send(d, &[7; 3000]).expect("send");
    let e = p.a.open(b"reopen me").expect("open while the link is down");
    p.a.finish(c).expect("finish");
    p.a.close_conn(p.now, d, b"bye").expect("close");
    let back = owned(&mut p.a);
    assert_eq!(
        back,
        owned_list(&[
            Unacked::Data { conn: c, payload: b"one" },
            Unacked::Data { conn: c, payload: b"two" },
            Unacked::Data { conn: c, payload: b"three" },
            Unacked::Data { conn: d, payload: &[7; 3000] },
            Unacked::Open { conn: e, metadata: b"reopen me" },
            Unacked::Fin { conn: c },
            Unacked::Close { conn: d, metadata: b"bye" },
        ])
    );
    assert!(p.a.conduit().unacked() < back.len() as u64, "fewer items than messages: a batch");
    // B's grant for what it read, queued without a link, is no message of the application.
    let _ = p.b.release(c, 1 << 20);
    assert_eq!(p.b.unacked_messages().count(), 0, "grants are left out");
    // The session is lost: the same list, as often as asked.
    p.a.conduit_end(p.now, crate::conduit::SessionEnd::RecoveryTimeout);
    assert_eq!(owned(&mut p.a), back);
}

#[test]
fn answers_to_the_peers_opens_come_back_and_the_initiators_hello_does_not() {
    let mut a = Session::new(Role::Initiator, SessionConfig::default(), b"hello").expect("config");
    assert_eq!(a.conduit().unacked(), 1, "the Hello waits for a link");
    assert_eq!(a.unacked_messages().count(), 0, "the handshake is left out");
    let mut p = Pair::ready();
    let x = p.b.open(b"").expect("B opens");
    let y = p.b.open(b"").expect("B opens");
    p.pump();
    settle_acks(&mut p);
    p.cut();
    p.a.accept(x, b"yes").expect("accept");
    p.a.reject(p.now, y, 5, b"no").expect("reject");
    assert_eq!(
        p.a.unacked_messages().collect::<Vec<_>>(),
        [Unacked::Accept { conn: x, metadata: b"yes" }, Unacked::Reject { conn: y, code: 5, metadata: b"no" }]
    );
    assert!(p.a.unacked_messages().all(|u| u.conn() == x || u.conn() == y));
}
