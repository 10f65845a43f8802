//! Half-close (`Fin`, protocol version 3): each direction ends on its own, the connection
//! is over once both have; data after the peer's end of stream is a violation; older peers
//! neither send nor accept `Fin`.

use super::*;

/// Put raw session message bytes into A's conduit, as a misbehaving A would send them.
fn inject(p: &mut Pair, item: &[u8]) {
    p.a.conduit.send(item).expect("send");
    p.pump();
}

#[test]
fn finishing_one_direction_leaves_the_other_open_until_it_finishes_too() {
    let mut p = Pair::ready();
    assert!(p.a.half_close_supported() && p.b.half_close_supported(), "both speak version 3");
    let c = open_accepted(&mut p);
    p.a.send(c, b"request").expect("send");
    p.a.finish(c).expect("finish");
    assert_eq!(p.a.send(c, b"more"), Err(CommandError::NotOpen), "A's write half is shut");
    assert_eq!(p.a.finish(c), Err(CommandError::NotOpen), "finished once");
    p.pump();
    assert!(p.got_b.ends_with(&[Got::Data(c, b"request".to_vec()), Got::Finished(c, false)]), "{:?}", p.got_b);
    assert!(!p.b.can_receive_on(c) && p.b.can_send_on(c));
    // B answers on the half that is still open; A still reads.
    p.b.send(c, b"response").expect("B may still send");
    p.pump();
    assert!(p.got_a.ends_with(&[Got::Data(c, b"response".to_vec())]), "{:?}", p.got_a);
    p.b.finish(c).expect("B finishes");
    assert_eq!(p.b.connection_count(), 0, "both done: gone at B");
    p.pump();
    assert_eq!(p.got_a.last(), Some(&Got::Finished(c, true)));
    assert_eq!(p.a.connection_count(), 0, "both done: gone at A");
    assert!(p.errs_b.is_empty() && !p.a.is_ended() && !p.b.is_ended());
}

#[test]
fn data_after_the_peers_end_of_stream_is_a_violation() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    p.a.finish(c).expect("finish");
    p.pump();
    // A lying A sends data on the half it shut.
    inject(&mut p, &[message::TAG_DATA, c as u8, 0xff]);
    assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::AfterFin)]);
    assert_eq!(p.b.failure(), Some(SessionFailure::Violation(SessionViolation::AfterFin)));
    assert!(p.b.is_ended());
}

#[test]
fn a_batch_or_a_second_fin_after_the_end_of_stream_is_a_violation() {
    for item in [vec![message::TAG_DATA_BATCH, 1, 1, 0xff], vec![message::TAG_FIN, 1]] {
        let mut p = Pair::ready();
        let c = open_accepted(&mut p);
        assert_eq!(c, 1);
        p.a.finish(c).expect("finish");
        p.pump();
        inject(&mut p, &item);
        assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::AfterFin)], "{item:?}");
    }
}

#[test]
fn fin_on_the_root_an_unknown_or_an_unanswered_connection_is_a_violation() {
    let mut p = Pair::ready();
    inject(&mut p, &[message::TAG_FIN, 0]);
    assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::RootClosed)]);
    let mut p = Pair::ready();
    inject(&mut p, &[message::TAG_FIN, 7]);
    assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::UnknownConnection)]);
    let mut p = Pair::ready();
    let c = p.a.open(b"").expect("open");
    p.pump();
    inject(&mut p, &[message::TAG_FIN, c as u8]);
    assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::NotOpen)]);
}

#[test]
fn a_fin_for_a_connection_we_closed_is_ignored() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    p.b.close_conn(p.now, c, b"").expect("close");
    // A's Fin crossed B's Close.
    p.a.finish(c).expect("finish");
    p.pump();
    assert!(p.errs_b.is_empty(), "{:?}", p.errs_b);
    assert!(!p.b.is_ended());
}

#[test]
fn close_after_finish_aborts_both_ways() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    p.a.finish(c).expect("finish");
    p.a.close_conn(p.now, c, b"abort").expect("close still works");
    p.pump();
    assert!(p.got_b.ends_with(&[Got::Finished(c, false), Got::Closed(c)]), "{:?}", p.got_b);
    assert_eq!((p.a.connection_count(), p.b.connection_count()), (0, 0));
}

#[test]
fn the_end_of_stream_survives_a_link_loss_after_the_data() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    p.cut();
    p.a.send(c, b"last").expect("send");
    p.a.finish(c).expect("finish while the link is down");
    p.b.send(c, b"reply").expect("send");
    p.connect();
    assert!(p.got_b.ends_with(&[Got::Data(c, b"last".to_vec()), Got::Finished(c, false)]), "{:?}", p.got_b);
    assert!(p.got_a.ends_with(&[Got::Data(c, b"reply".to_vec())]), "{:?}", p.got_a);
    p.cut();
    p.b.finish(c).expect("finish");
    p.connect();
    assert_eq!(p.got_a.last(), Some(&Got::Finished(c, true)));
    assert_eq!((p.a.connection_count(), p.b.connection_count()), (0, 0));
}

#[test]
fn a_version_2_peer_gets_no_fin_and_may_not_send_one() {
    let mut p = version_n_pair(2);
    assert!(p.a.is_ready() && p.b.is_ready());
    assert!(p.b.peer_batches && !p.b.half_close_supported(), "B answered with version 2");
    // B's own finish is refused: the driver falls back to a close.
    let c = p.b.open(b"").expect("open");
    p.pump();
    p.a.accept(c, b"").expect("accept");
    p.pump();
    assert_eq!(p.b.finish(c), Err(CommandError::Unsupported));
    assert!(p.b.can_send_on(c), "nothing changed");
    // A Fin from the version-2 peer is not a message it has.
    inject(&mut p, &[message::TAG_FIN, c as u8]);
    let e = crate::wire::WireError::UnknownKind { kind: message::TAG_FIN };
    assert_eq!(p.errs_b, [SessionInputError::Violation(SessionViolation::Malformed(e))]);
}

#[test]
fn a_newer_initiator_is_answered_with_our_version() {
    let p = version_n_pair(7);
    assert!(p.b.is_ready(), "B took a version-7 Hello");
    assert!(p.b.half_close_supported() && p.b.peer_batches);
    // B answered with its own version, which A (a version-3 session reading the answer)
    // took: a newer peer and an older one meet at the older's version.
    assert!(p.a.is_ready() && p.a.half_close_supported());
}

#[test]
fn finish_exports_and_imports_with_the_half_closed_states() {
    let mut p = Pair::ready();
    let c = open_accepted(&mut p);
    p.a.finish(c).expect("finish");
    p.pump();
    for s in [&p.a, &p.b] {
        let mut out = Vec::new();
        s.export(p.now, &mut out).expect("export");
        let back = Session::import(&out, p.now, SessionConfig::default()).expect("import");
        assert_eq!(back.can_send_on(c), s.can_send_on(c));
        assert_eq!(back.can_receive_on(c), s.can_receive_on(c));
        assert!(back.half_close_supported());
    }
}

/// What a version-2 acceptor does with our version-3 Hello (it refuses newer versions):
/// the initiator's session fails with `PeerRefused { VERSION }`, the cue to start a new
/// session speaking version 2 (`Session::speaking`), which works and has no half-close.
#[test]
fn an_old_acceptors_version_refusal_is_recognisable_and_version_2_works() {
    let mut p = Pair::new(SessionConfig::default());
    let mut raw = Conduit::new(Role::Acceptor, ConduitConfig::default()).expect("config");
    let sorry = Message::Sorry { code: refusal::VERSION, reason: "version" };
    let mut h = [0u8; message::MAX_HEADER_LEN];
    let (head, tail) = sorry.encode_parts(&mut h);
    raw.send_vectored(&[head, tail]).expect("send");
    p.b.conduit = raw;
    p.connect();
    assert_eq!(p.a.failure(), Some(SessionFailure::PeerRefused { code: refusal::VERSION }));

    let cfg = SessionConfig::default();
    let mut p = Pair::new(cfg);
    p.a = Session::speaking(Role::Initiator, cfg, b"client", 2).expect("version 2");
    p.connect();
    assert!(p.a.is_ready() && p.b.is_ready());
    assert!(p.a.peer_batches && p.b.peer_batches, "version 2: batches");
    assert!(!p.a.half_close_supported() && !p.b.half_close_supported(), "version 2: no Fin");
    assert_eq!(
        Session::speaking(Role::Initiator, cfg, b"", PROTOCOL_VERSION + 1).err(),
        Some(ConfigError::SessionLimits)
    );
    assert_eq!(Session::speaking(Role::Initiator, cfg, b"", 0).err(), Some(ConfigError::SessionLimits));
}

/// An acceptor speaking version 2 answers a version-3 Hello with version 2.
#[test]
fn an_acceptor_speaking_version_2_answers_with_it() {
    let cfg = SessionConfig::default();
    let mut p = Pair::new(cfg);
    p.b = Session::speaking(Role::Acceptor, cfg, b"server", 2).expect("version 2");
    p.connect();
    assert!(p.a.is_ready() && p.b.is_ready());
    assert!(!p.a.half_close_supported() && !p.b.half_close_supported());
    assert!(p.a.peer_batches);
}
