//! Demux and virtual-connection scenarios (shared/SCENARIOS.md section 4: D1 to D7, D9 to
//! D12) between initiator sessions and endpoint sessions, on the session/endpoint harness.
//! Hostile messages are forged by a tap that replaces a marker payload on the root connection
//! (keeping the conduit's seq and ack), so the sender's own session state stays honest.
//! Choices are those of docs/protocol.md section 2.

use std::cell::RefCell;
use std::rc::Rc;

use sotto_proto::session::message::{HelloBody, Message, Parity, TAG_HELLO};
use sotto_proto::session::{refusal, CommandError, SessionFailure, SessionViolation, ROOT};
use sotto_tests::net::forge::{encode, replace_marker, rewrite_items};
use sotto_tests::net::{Net, NetConfig, Who, Writer};
use sotto_tests::pipe::EndKind;
use sotto_tests::{ms, secs};

const MARK: &[u8] = b"FORGE";

/// `from` sends `msg` (forged in place of a marker payload on the root connection).
fn forge(net: &mut Net, from: Who, msg: &Message<'_>) {
    let writer = match from {
        Who::Client(_) => Writer::Client,
        Who::Server(_) => Writer::Server,
    };
    let (tap, count) = replace_marker(MARK, encode(msg));
    net.set_tap(writer, tap);
    net.act(from, |s, _, _| s.send(ROOT, MARK)).expect("live").expect("marker sent");
    net.run_for(ms(5));
    net.clear_tap(writer);
    assert_eq!(count.get(), 1, "the marker was replaced");
}

fn opened(net: &mut Net, by: Who) -> u32 {
    let c = net.open_from(by).expect("open");
    assert!(net.run_until(secs(1), |n| n.app(by).is_some_and(|a| a.is_open(c))));
    c
}

fn exchange(net: &mut Net, conn: u32, n: usize) {
    assert_eq!(net.send(Who::Client(0), conn, n), n);
    assert_eq!(net.send(Who::Server(0), conn, n), n);
    assert!(net.run_until(secs(1), Net::quiet));
}

/// Both sessions end: the violator's peer sent `ProtocolError{code}`.
fn assert_violation(net: &mut Net, at_server: bool, v: SessionViolation) {
    assert!(net.run_until(secs(5), |n| n.client(0).session.is_ended() && n.server_handle(0).is_none()));
    let (victim, violator) = if at_server {
        (net.server_slot(0).and_then(|s| s.last_failure), net.client(0).session.failure())
    } else {
        (net.client(0).session.failure(), net.server_slot(0).and_then(|s| s.last_failure))
    };
    assert_eq!(victim, Some(SessionFailure::Violation(v)));
    assert_eq!(violator, Some(SessionFailure::PeerProtocolError { code: v.code() }));
}

/// D1: the endpoint's session opens an odd id (the initiator's parity): a violation at the
/// client (`WrongParity`), no slot created.
#[test]
fn d1_open_with_wrong_parity() {
    let mut net = Net::connected(NetConfig::small(1));
    forge(&mut net, Who::Server(0), &Message::Open { conn: 5, credit: 100, metadata: b"" });
    assert_violation(&mut net, false, SessionViolation::WrongParity);
    assert_eq!(net.client(0).session.connection_count(), 0, "no slot created");
    assert_eq!(net.client(0).session.stats().opens_received, 0);
}

/// D2: an Open for an id already in use is rejected (code 7); the existing connection is
/// untouched (its opener ignores the stray Reject, D4).
#[test]
fn d2_open_with_an_id_in_use() {
    let mut net = Net::connected(NetConfig::small(1));
    let c = opened(&mut net, Who::Client(0));
    exchange(&mut net, c, 3);
    forge(&mut net, Who::Client(0), &Message::Open { conn: c, credit: 100, metadata: b"again" });
    let srv = net.session(Who::Server(0)).expect("live").stats();
    assert_eq!(srv.opens_auto_rejected, 1);
    assert_eq!(net.client(0).session.stats().control_ignored, 1, "the Reject for an open connection is ignored");
    assert!(net.session(Who::Server(0)).is_some_and(|s| s.is_open(c)) && net.client(0).session.is_open(c));
    exchange(&mut net, c, 3);
}

/// D3: an Open for the root id, or for an id of the receiver's own parity: a violation.
#[test]
fn d3_open_for_root_or_our_own_id() {
    for conn in [0u32, 2] {
        let mut net = Net::connected(NetConfig::small(1));
        forge(&mut net, Who::Client(0), &Message::Open { conn, credit: 100, metadata: b"" });
        assert_violation(&mut net, true, SessionViolation::WrongParity);
        assert_eq!(net.server_slot(0).and_then(|s| s.last_stats).map(|s| s.connections_open), Some(0));
    }
}

/// D4: Accept or Reject for an id never opened, or already resolved: ignored and counted; an
/// accepted connection is never torn down by a late Reject.
#[test]
fn d4_accept_or_reject_for_unknown_or_resolved_ids() {
    let mut net = Net::connected(NetConfig::small(1));
    let s = opened(&mut net, Who::Server(0));
    forge(&mut net, Who::Client(0), &Message::Accept { conn: s + 2, credit: 100, metadata: b"" });
    forge(&mut net, Who::Client(0), &Message::Accept { conn: s, credit: 100, metadata: b"" });
    forge(&mut net, Who::Client(0), &Message::Reject { conn: s, code: 1, metadata: b"" });
    assert_eq!(net.session(Who::Server(0)).expect("live").stats().control_ignored, 3);
    assert!(net.session(Who::Server(0)).is_some_and(|x| x.is_open(s)), "not torn down by a late Reject");
    exchange(&mut net, s, 4);
}

/// D5: a Close for an unknown id is ignored and counted; a Close of the root is a violation.
#[test]
fn d5_close_for_unknown_id() {
    let mut net = Net::connected(NetConfig::small(1));
    forge(&mut net, Who::Client(0), &Message::Close { conn: 7, metadata: b"" });
    assert_eq!(net.session(Who::Server(0)).expect("live").stats().control_ignored, 1);
    exchange(&mut net, ROOT, 2);
    forge(&mut net, Who::Client(0), &Message::Close { conn: ROOT, metadata: b"" });
    assert_violation(&mut net, true, SessionViolation::RootClosed);
}

/// D6: data for a connection closed while it was in flight is dropped and counted; data for
/// an id never opened is a violation (`UnknownConnection`).
#[test]
fn d6_data_for_closed_versus_never_opened_id() {
    let cfg = NetConfig { latency: ms(5), ..NetConfig::small(1) };
    let mut net = Net::connected(cfg);
    let c = opened(&mut net, Who::Client(0));
    assert_eq!(net.send(Who::Client(0), c, 3), 3);
    assert!(net.close(Who::Server(0), c), "closed while the client's data is in flight");
    assert!(net.run_until(secs(1), Net::quiet));
    assert_eq!(net.session(Who::Server(0)).expect("live").stats().data_dropped_closed, 3);
    assert_eq!(net.app(Who::Client(0)).expect("live").counters.closed_by_peer, 1);
    exchange(&mut net, ROOT, 2);
    forge(&mut net, Who::Client(0), &Message::Data { conn: 99, payload: b"hi" });
    assert_violation(&mut net, true, SessionViolation::UnknownConnection);
}

/// D7: an Open flood. The endpoint's session accepts up to its own `max_connections` (the
/// client's limit is higher), rejects the rest (code 5), and the number of Rejects it sends is
/// bounded by the churn budget: past it, "too many resets" ends the session. State stays
/// bounded throughout (checked after every input).
#[test]
fn d7_open_flood() {
    let mut cfg = NetConfig::small(1);
    cfg.client.max_connections = 64;
    cfg.client.max_pending_opens = 64;
    cfg.endpoint.session.max_connections = 4;
    cfg.endpoint.session.max_pending_opens = 4;
    let mut net = Net::connected(cfg);
    let mut opens = 0;
    while opens < 10_000 && !net.client(0).session.is_ended() {
        while net.open(0).is_some() {
            opens += 1;
        }
        net.run_for(ms(2));
        if let Some(s) = net.session(Who::Server(0)) {
            assert!(s.connection_count() <= 4, "bounded: {}", s.connection_count());
        }
    }
    assert!(net.run_until(secs(5), |n| n.server_handle(0).is_none()));
    assert!(opens < 10_000, "the flood was stopped ({opens} opens)");
    let slot = net.server_slot(0).expect("slot");
    let st = slot.last_stats.expect("recorded");
    assert_eq!(st.opens_auto_rejected, u64::from(cfg.endpoint.session.churn_budget) + 1, "Rejects bounded");
    assert_eq!(slot.last_failure, Some(SessionFailure::Violation(SessionViolation::TooManyResets)));
    assert_eq!(net.client(0).session.failure(), Some(SessionFailure::PeerProtocolError { code: 9 }));
    let app = net.app(Who::Client(0)).expect("client");
    assert!(app.counters.rejected_by_peer >= 4, "the client saw rejections");
}

/// D9: the id allocator runs out at `max_conn_id`: `open` fails with `IdsExhausted`, and ids
/// are never reused, even after closing everything and a resume.
#[test]
fn d9_id_allocator_exhaustion() {
    let mut cfg = NetConfig::small(1);
    cfg.client.max_conn_id = 9;
    cfg.endpoint.session.max_conn_id = 10;
    let mut net = Net::connected(cfg);
    let mine: Vec<u32> = (0..5).map(|_| opened(&mut net, Who::Client(0))).collect();
    assert_eq!(mine, [1, 3, 5, 7, 9]);
    let theirs: Vec<u32> = (0..5).map(|_| opened(&mut net, Who::Server(0))).collect();
    assert_eq!(theirs, [2, 4, 6, 8, 10]);
    let open = |net: &mut Net, who| net.act(who, |s, _, _| s.open(b"")).expect("live");
    assert_eq!(open(&mut net, Who::Client(0)), Err(CommandError::IdsExhausted));
    assert_eq!(open(&mut net, Who::Server(0)), Err(CommandError::IdsExhausted));
    for c in mine {
        assert!(net.close(Who::Client(0), c));
    }
    assert!(net.kill(0));
    assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1 && n.quiet()));
    assert_eq!(open(&mut net, Who::Client(0)), Err(CommandError::IdsExhausted), "never reused");
    exchange(&mut net, 2, 3);
}

/// D10: connections opened before a link drop are there afterwards under the same ids, with
/// everything in flight delivered exactly once.
#[test]
fn d10_resume_keeps_connections() {
    let mut net = Net::connected(NetConfig { latency: ms(3), ..NetConfig::small(1) });
    let conns = [opened(&mut net, Who::Client(0)), opened(&mut net, Who::Server(0)), opened(&mut net, Who::Client(0))];
    for c in conns {
        net.send(Who::Client(0), c, 6);
        net.send(Who::Server(0), c, 6);
    }
    net.cut_after_frames(0, Writer::Client, 4, 3, EndKind::Reset);
    net.run_for(ms(1));
    for c in conns {
        net.send(Who::Client(0), c, 2);
    }
    assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1 && n.quiet()));
    for c in conns {
        assert!(net.client(0).session.is_open(c) && net.session(Who::Server(0)).is_some_and(|s| s.is_open(c)));
        let (a, b) = (net.app(Who::Client(0)).expect("a"), net.app(Who::Server(0)).expect("b"));
        assert_eq!((a.conn(c).map(|x| x.received), b.conn(c).map(|x| x.received)), (Some(6), Some(8)));
        exchange(&mut net, c, 2);
    }
}

/// D11: hostile settings. Credit 0 in an Open: Reject code 8. Credit `u32::MAX` (in an Open, in
/// the Hello, in grants) and `max_connections = u32::MAX` in the Hello: clamped to our own
/// `max_credit` and limits, never adopted; credit arithmetic never overflows.
#[test]
fn d11_hostile_settings() {
    let mut cfg = NetConfig::small(1);
    cfg.endpoint.session.max_credit = cfg.client.initial_credit;
    cfg.endpoint.session.max_connections = 2;
    let mut net = Net::new(cfg);
    // The peer windows are lies on purpose here: the harness's credit cross-check would flag them.
    net.cross_credit_check = false;
    let hello = encode(&Message::Hello(HelloBody {
        version: 1,
        parity: Parity::Odd,
        root_credit: u32::MAX,
        max_connections: u32::MAX,
        metadata: b"client",
    }));
    net.set_tap(Writer::Client, rewrite_items(move |item| (item.first() == Some(&TAG_HELLO)).then(|| hello.clone())));
    assert!(net.run_until(secs(5), Net::all_ready));
    net.clear_tap(Writer::Client);
    let max = u64::from(cfg.endpoint.session.max_credit);
    assert_eq!(net.session(Who::Server(0)).expect("live").send_credit(ROOT), max, "root credit clamped");
    // Our own connection limit holds whatever the peer announced.
    let a = opened(&mut net, Who::Client(0));
    let b = opened(&mut net, Who::Client(0));
    let c = net.open(0).expect("the client's own limit allows it");
    assert!(net.run_until(secs(1), |n| n.app(Who::Client(0)).is_some_and(|x| x.conn(c).is_none())), "rejected");
    assert_eq!(net.app(Who::Client(0)).expect("a").counters.rejected_by_peer, 1);
    // Grants of u32::MAX: saturating, clamped.
    for _ in 0..3 {
        forge(&mut net, Who::Client(0), &Message::Credit { conn: a, grant: u32::MAX });
    }
    assert_eq!(net.session(Who::Server(0)).expect("live").send_credit(a), max);
    assert!(net.close(Who::Client(0), b));
    assert!(net.run_until(secs(1), Net::quiet));
    // Opens with credit u32::MAX (clamped) and 0 (rejected, code 8).
    let seen: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let log = Rc::clone(&seen);
    net.set_tap(
        Writer::Server,
        rewrite_items(move |item| {
            log.borrow_mut().push(item.to_vec());
            None
        }),
    );
    forge(&mut net, Who::Client(0), &Message::Open { conn: 101, credit: u32::MAX, metadata: b"" });
    assert_eq!(net.session(Who::Server(0)).expect("live").send_credit(101), max, "open credit clamped");
    forge(&mut net, Who::Client(0), &Message::Open { conn: 103, credit: 0, metadata: b"" });
    let rejects: Vec<u32> = seen
        .borrow()
        .iter()
        .filter_map(|i| match Message::decode(i) {
            Ok(Message::Reject { conn: 103, code, .. }) => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(rejects, [refusal::ZERO_CREDIT]);
    assert!(!net.session(Who::Server(0)).expect("live").is_open(103), "no slot for a zero-credit Open");
    assert!(!net.client(0).session.is_ended());
}

/// D12: huge metadata. Our own `open` refuses it locally; a peer's Open above `max_metadata`
/// (within the frame cap) is a violation; a link message claiming 16 MiB is refused by the
/// link decoder before anything is buffered (the link drops, the session resumes). Metadata
/// is one opaque byte string, so "1M entries" cannot occur: its size is all that is bounded.
#[test]
fn d12_huge_metadata() {
    let mut cfg = NetConfig::small(1);
    cfg.client.max_metadata = 1024;
    cfg.endpoint.session.max_metadata = 1024;
    let mut net = Net::connected(cfg);
    let big = vec![b'm'; 2000];
    let r = net.act(Who::Client(0), |s, _, _| s.open(&big)).expect("live");
    assert_eq!(r, Err(CommandError::MetadataTooLarge));
    // 16 MiB claimed by a length prefix: refused before buffering.
    let mut raw = (16u32 << 20).to_le_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 64]);
    net.write_raw(0, Writer::Client, &raw);
    assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1));
    assert_eq!(net.server_counters.framing_errors, 1);
    exchange(&mut net, ROOT, 3);
    // Within the frame cap, above max_metadata: a violation.
    forge(&mut net, Who::Client(0), &Message::Open { conn: 1, credit: 100, metadata: &big });
    assert_violation(&mut net, true, SessionViolation::MetadataTooLarge);
}

/// D12, the other messages that carry metadata: a Close or Reject above `max_metadata` is a
/// violation too, even one that would otherwise be ignored (for a connection never opened).
#[test]
fn d12_huge_metadata_on_close_and_reject() {
    let big = vec![b'm'; 2000];
    for msg in [Message::Close { conn: 5, metadata: &big }, Message::Reject { conn: 6, code: 1, metadata: &big }] {
        let mut cfg = NetConfig::small(1);
        cfg.client.max_metadata = 1024;
        cfg.endpoint.session.max_metadata = 1024;
        let mut net = Net::connected(cfg);
        exchange(&mut net, ROOT, 3);
        forge(&mut net, Who::Client(0), &msg);
        assert_violation(&mut net, true, SessionViolation::MetadataTooLarge);
    }
}
