//! Reconnect and resume scenarios against the acceptor endpoint (shared/SCENARIOS.md section 3:
//! R7, R9, R10, R11, R13, R14, R15, R16), on the session/endpoint harness.

use sotto_proto::conduit::InputError;
use sotto_proto::endpoint::{Hosted, LinkRefusal};
use sotto_proto::session::{SessionInputError, ROOT};
use sotto_proto::wire::{ClientHello, ResumeKey, ServerHello, HELLO_LEN, LEN_PREFIX};
use sotto_proto::{Duration, Instant, SessionEnd};
use sotto_tests::net::forge::root_item;
use sotto_tests::net::{Net, NetConfig, Who, Writer};
use sotto_tests::{ms, secs, wire_util};

fn ready(n: &Net, i: usize) -> bool {
    n.client(i).ready() && n.app(Who::Server(i)).is_some_and(|a| a.ready)
}

fn exchange(net: &mut Net, i: usize, n: usize, limit: Duration) -> bool {
    assert_eq!(net.send(Who::Client(i), ROOT, n), n);
    assert_eq!(net.send(Who::Server(i), ROOT, n), n);
    net.run_until(limit, |x| x.pair_quiet(i))
}

/// A connected net with one connection opened by each side and traffic delivered.
fn busy(cfg: NetConfig) -> (Net, u32, u32) {
    let mut net = Net::connected(cfg);
    let c = net.open(0).expect("client opens");
    let s = net.open_from(Who::Server(0)).expect("endpoint session opens");
    assert!(
        net.run_until(secs(1), |n| n.quiet() && n.app(Who::Client(0)).is_some_and(|a| a.is_open(c) && a.is_open(s)))
    );
    for conn in [ROOT, c, s] {
        net.send(Who::Client(0), conn, 5);
        net.send(Who::Server(0), conn, 5);
    }
    assert!(net.run_until(secs(1), Net::quiet));
    (net, c, s)
}

/// The position a resuming client presents: the last seq it received.
fn position(net: &Net, i: usize) -> Option<u32> {
    let n = net.client(i).session.conduit().items_received();
    n.checked_sub(1).map(|x| x as u32)
}

/// R7: the client's resume arrives while the endpoint still holds the old link (half-open: it
/// never hears EOF; or its EOF is merely late). The resume supersedes the old link; frames
/// still arriving on the superseded link are ignored.
#[test]
fn r7_resume_supersedes_a_half_open_link() {
    for late_eof in [false, true] {
        let (mut net, c, s) = busy(NetConfig::small(1));
        let h = net.server_handle(0).expect("live");
        let old = net.session(Who::Server(0)).and_then(|x| x.conduit().current_link()).expect("attached");
        if late_eof {
            net.stall(0, Writer::Client, Instant::FAR_FUTURE);
            net.close_link(0, Writer::Client);
        } else {
            net.vanish(0);
        }
        net.send(Who::Client(0), c, 3);
        net.send(Who::Server(0), s, 3);
        assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1), "late EOF {late_eof}");
        let srv = net.session(Who::Server(0)).expect("same session");
        assert_eq!(net.server_handle(0), Some(h), "routed to the same session");
        assert_ne!(srv.conduit().current_link(), Some(old));
        assert_eq!(srv.conduit().stats().link_drops.superseded, 1, "superseded, not rejected");
        assert_eq!(net.endpoint().stats().rejected, 0);
        assert_eq!(net.endpoint().stats().resumes_routed, 1);
        // A frame from the superseded link: ignored, nothing delivered.
        let received = srv.conduit().items_received();
        let frame = wire_util::data(received as u32, None, &root_item(b"stale"), true);
        let r = net.inject_server(h, old, &frame).expect("live");
        assert_eq!(r, Err(SessionInputError::Conduit(InputError::StaleLink)));
        assert_eq!(net.session(Who::Server(0)).map(|x| x.conduit().items_received()), Some(received));
        net.heal_links();
        assert!(net.run_until(secs(1), Net::quiet));
        assert!(exchange(&mut net, 0, 5, secs(1)));
    }
}

/// R9: the endpoint restarts while two clients are busy. Each client observes exactly one
/// SessionLost (REJECTED), and a fresh session works, connections included.
#[test]
fn r9_server_restart() {
    let mut net = Net::connected(NetConfig::small(2));
    for i in 0..2 {
        let c = net.open(i).expect("open");
        assert!(net.run_until(secs(1), |n| n.pair_quiet(i)));
        net.send(Who::Client(i), c, 4);
        net.send(Who::Server(i), c, 4);
    }
    net.run_for(ms(1));
    net.restart_endpoint();
    assert!(net.run_until(secs(30), |n| (0..2).all(|i| n.client(i).session.is_ended())));
    net.run_for(secs(30));
    for i in 0..2 {
        assert_eq!(net.client(i).session.conduit().ended(), Some(SessionEnd::Rejected));
        assert_eq!(net.client(i).counters.ended, 1, "client {i}: exactly one SessionLost");
        net.restart_client(i);
    }
    assert!(net.run_until(secs(5), Net::all_ready));
    for i in 0..2 {
        let c = net.open(i).expect("open");
        assert_eq!(c, 1, "a fresh session allocates ids from the start");
        assert!(net.run_until(secs(1), |n| n.pair_quiet(i)));
        assert_eq!(net.send(Who::Client(i), c, 4), 4);
        assert!(exchange(&mut net, i, 4, secs(1)));
    }
}

/// R10: a detached session whose client does not return within `resume_window` is ended and
/// freed (its application hears `Ended(RecoveryTimeout)`); a later resume is REJECTED; the
/// slot is reused by a later session under a new generation (memory back to its baseline).
#[test]
fn r10_detached_session_expires() {
    let mut cfg = NetConfig::small(1);
    cfg.endpoint.session.conduit.recovery_timeout = secs(30);
    cfg.client.conduit.recovery_timeout = secs(3600);
    let (mut net, _, _) = busy(cfg);
    let h = net.server_handle(0).expect("live");
    net.client_mut(0).dialer.auto = false;
    assert!(net.kill(0));
    let t0 = net.now();
    assert!(net.run_until(secs(31), |n| n.endpoint().stats().sessions_live == 0));
    assert_eq!(net.now().saturating_duration_since(t0), secs(30), "freed exactly at resume_window");
    let slot = &net.servers()[h.index as usize];
    assert_eq!(slot.last_end, Some(SessionEnd::RecoveryTimeout));
    assert_eq!(slot.app.counters.ended, 1, "the application got its end event");
    assert!(net.endpoint().session(h).is_none(), "the handle is stale");
    assert_eq!(net.server_counters.freed, 1);
    // The client comes back too late.
    net.client_mut(0).dialer.auto = true;
    assert!(net.run_until(secs(10), |n| n.client(0).session.is_ended()));
    assert_eq!(net.client(0).session.conduit().ended(), Some(SessionEnd::Rejected));
    // Baseline: a new session reuses the slot, under a new generation.
    net.restart_client(0);
    assert!(net.run_until(secs(5), |n| ready(n, 0)));
    let h2 = net.server_handle(0).expect("live");
    assert_eq!(h2.index, h.index);
    assert_ne!(h2.generation, h.generation);
    assert_eq!(net.endpoint().stats().sessions_live, 1);
}

/// R11: the client resumes against a different acceptor instance (one with live sessions of
/// its own): its key is unknown there, so REJECTED; the other instance's session is untouched.
#[test]
fn r11_resume_against_a_different_instance() {
    let cfg = NetConfig::small(1);
    let (mut net, _, _) = busy(cfg);
    let mut other = Net::connected(NetConfig { seed: 99, ..cfg });
    assert!(exchange(&mut other, 0, 3, secs(1)));
    let their_endpoint = other.swap_endpoint(Hosted::new(cfg.endpoint, b"spare").expect("config"));
    let theirs = their_endpoint.stats();
    let _mine = net.swap_endpoint(their_endpoint);
    assert!(net.run_until(secs(30), |n| n.client(0).session.is_ended()));
    assert_eq!(net.client(0).session.conduit().ended(), Some(SessionEnd::Rejected));
    let s = net.endpoint().stats();
    assert_eq!(s.rejected, theirs.rejected + 1);
    assert_eq!((s.sessions_live, s.resumes_routed), (theirs.sessions_live, theirs.resumes_routed), "theirs untouched");
}

/// R13: the endpoint's application keeps sending while the client is away: the session buffers
/// up to its replay cap, then backpressures (`WouldBlock`), and replays after the client
/// resumes. The endpoint never dials.
#[test]
fn r13_acceptor_buffers_while_detached() {
    let mut cfg = NetConfig::small(1);
    let mut s = cfg.client;
    s.conduit.replay_bytes = 8 * 1024;
    s.initial_credit = 1 << 20;
    cfg = cfg.with_session(s);
    let mut net = Net::connected(cfg);
    net.client_mut(0).dialer.auto = false;
    assert!(net.kill(0));
    let links = net.stats.links_opened;
    let n = net.send(Who::Server(0), ROOT, 10_000);
    assert!(n > 10 && n < 10_000, "buffered {n} payloads, then refused");
    let app = net.app(Who::Server(0)).expect("live");
    assert!(app.blocked && app.counters.would_block == 1, "backpressure: WouldBlock");
    let st = net.session(Who::Server(0)).expect("live").conduit().stats();
    assert!(st.replay_bytes <= 8 * 1024 && st.replay_frames <= 256, "within the cap: {st:?}");
    net.run_for(secs(60));
    assert_eq!(net.stats.links_opened, links, "the endpoint never dials");
    net.client_mut(0).dialer.auto = true;
    assert!(net.run_until(secs(10), |n| n.quiet() && n.app(Who::Server(0)).is_some_and(|a| !a.blocked)));
    assert_eq!(net.app(Who::Client(0)).and_then(|a| a.conn(ROOT)).map(|c| c.received), Some(n as u64));
    // The last replayed items are acked within `ack_delay`; until then the small ring may
    // have no room for the exchange below.
    assert!(net.run_until(secs(1), |n| n.session(Who::Server(0)).is_some_and(|s| s.conduit().unacked() == 0)));
    assert!(exchange(&mut net, 0, 10, secs(1)));
}

/// Send a resume ClientHello on a raw link from `source`; returns the reply and how long after
/// the send the endpoint's end of stream arrived.
fn raw_resume(net: &mut Net, source: u64, key: ResumeKey, last: Option<u32>) -> (Vec<u8>, Duration) {
    let raw = net.open_raw(source, false).expect("pending");
    let t0 = net.now();
    net.raw_send(raw, &ClientHello { resume_key: Some(key), last_received: last, ext: true, early: false }.encode());
    assert!(net.run_until(secs(1), |n| n.raw_eof(raw)));
    let reply = net.raw_received(raw).to_vec();
    net.raw_close(raw);
    (reply, net.now().saturating_duration_since(t0))
}

/// R14: a random or garbled key gets exactly the bytes (and timing) an expired key gets, and
/// a key the session held before (rotated away and retired) too. Each counts as a failed
/// resume for its source, which is refused once past its budget.
#[test]
fn r14_garbled_key_gets_the_expired_key_reply() {
    let mut cfg = NetConfig::small(2);
    cfg.endpoint.session.conduit.recovery_timeout = secs(10);
    cfg.client.conduit.recovery_timeout = secs(3600);
    cfg.endpoint.failure_budget = 4;
    let mut net = Net::connected(cfg);
    // An expired key: client 0 leaves and its session expires.
    let expired = net.client(0).session.conduit().resume_key().expect("key");
    let pos = position(&net, 0);
    net.client_mut(0).dialer.auto = false;
    assert!(net.kill(0));
    assert!(net.run_until(secs(11), |n| n.endpoint().stats().sessions_live == 1));
    // A retired key: client 1 resumes (new key) and uses the new key; its first key is retired.
    let retired = net.client(1).session.conduit().resume_key().expect("key");
    assert!(net.kill(1));
    assert!(net.run_until(secs(10), |n| n.client(1).counters.resumed == 1));
    assert!(exchange(&mut net, 1, 2, secs(1)));
    let pos1 = position(&net, 1);
    let rejected_before = net.endpoint().stats().rejected;
    let (r_expired, t_expired) = raw_resume(&mut net, 50, expired, pos);
    let mut garbled = expired;
    garbled.0[3] ^= 0x40;
    let (r_garbled, t_garbled) = raw_resume(&mut net, 50, garbled, pos);
    let (r_random, t_random) = raw_resume(&mut net, 50, ResumeKey([0x5a; 16]), None);
    let (r_retired, t_retired) = raw_resume(&mut net, 50, retired, pos1);
    let mut want = (HELLO_LEN as u32).to_le_bytes().to_vec();
    want.extend_from_slice(&ServerHello::rejected().encode());
    for (what, r, t) in
        [("garbled", &r_garbled, t_garbled), ("random", &r_random, t_random), ("retired", &r_retired, t_retired)]
    {
        assert_eq!(r, &want, "{what}: the fixed REJECTED reply");
        assert_eq!(r, &r_expired, "{what}: the same bytes as an expired key");
        assert_eq!(t, t_expired, "{what}: the same timing as an expired key");
    }
    assert_eq!(r_expired.len(), LEN_PREFIX + HELLO_LEN, "never larger than the request");
    assert_eq!(net.endpoint().stats().rejected, rejected_before + 4, "each failed resume counted");
    assert_eq!(net.open_raw(50, false), Err(LinkRefusal::RateLimited), "the source is over its budget");
    assert!(exchange(&mut net, 1, 3, secs(1)), "the live session is not disturbed");
}

/// R15: the old key replayed after a successful resume (and data on the new link) is
/// REJECTED, and the live session is not disturbed: its link stays up.
#[test]
fn r15_old_key_replayed_after_resume() {
    let (mut net, c, _) = busy(NetConfig::small(1));
    let k1 = net.client(0).session.conduit().resume_key().expect("key");
    assert!(net.kill(0));
    assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1));
    assert_ne!(net.client(0).session.conduit().resume_key(), Some(k1), "rotated");
    assert!(exchange(&mut net, 0, 3, secs(1)));
    let link = net.client(0).link();
    let srv_link = net.session(Who::Server(0)).and_then(|s| s.conduit().current_link());
    let drops = net.client(0).counters.drop_links;
    let pos = position(&net, 0);
    let (reply, _) = raw_resume(&mut net, 66, k1, pos);
    assert_eq!(&reply[LEN_PREFIX..], &ServerHello::rejected().encode());
    assert_eq!(net.client(0).link(), link, "the client's link is untouched");
    assert_eq!(net.session(Who::Server(0)).and_then(|s| s.conduit().current_link()), srv_link);
    assert_eq!(net.client(0).counters.drop_links, drops);
    assert_eq!(net.session(Who::Server(0)).map(|s| s.conduit().stats().link_drops.superseded), Some(0));
    net.send(Who::Client(0), c, 3);
    assert!(exchange(&mut net, 0, 3, secs(1)));
    assert_eq!(net.client(0).counters.resumed, 1, "no further resume was needed");
}

/// R16, bearer semantics (documented in docs/protocol.md, "Keys"): a thief holding the current
/// key resumes first. The endpoint binds the thief's link, superseding the owner's (the driver
/// sees `DropLink { reason: Superseded }` for the owner's link and knows its remote address);
/// once the thief has used the key it was issued, the owner's next resume is REJECTED and the
/// owner observes SessionLost exactly once. (Before the thief sends anything, the owner's key
/// is still the session's previous key, and the owner takes the session back.)
#[test]
fn r16_hijack_with_a_stolen_current_key() {
    for thief_confirms in [true, false] {
        let (mut net, _, _) = busy(NetConfig::small(1));
        let h = net.server_handle(0).expect("live");
        let key = net.client(0).session.conduit().resume_key().expect("key");
        let pos = position(&net, 0);
        let thief = net.open_raw(666, false).expect("pending");
        net.raw_send(
            thief,
            &ClientHello { resume_key: Some(key), last_received: pos, ext: true, early: false }.encode(),
        );
        assert!(net.run_until(secs(1), |n| n.raw_received(thief).len() >= LEN_PREFIX + HELLO_LEN));
        let sh = ServerHello::decode(&net.raw_received(thief)[LEN_PREFIX..LEN_PREFIX + HELLO_LEN]).expect("hello");
        assert!(!sh.rejected, "the thief is accepted");
        assert_eq!(net.raw_session(thief).map(|(x, _)| x), Some(h), "bound to the owner's session");
        let srv = net.endpoint().session(h).expect("live");
        assert_eq!(srv.conduit().stats().link_drops.superseded, 1, "the owner's link was superseded");
        if thief_confirms {
            net.raw_send(thief, &wire_util::ack(pos.unwrap_or(0)));
            net.run_for(ms(2));
        }
        // The owner hears EOF, redials and presents its key.
        assert!(net.run_until(secs(10), |n| n.client(0).session.is_ended() || n.client(0).counters.resumed == 1));
        if thief_confirms {
            assert_eq!(net.client(0).session.conduit().ended(), Some(SessionEnd::Rejected));
            assert_eq!(net.raw_session(thief).map(|(x, _)| x), Some(h), "the thief keeps the session");
            net.run_for(secs(30));
            assert_eq!(net.client(0).counters.ended, 1, "SessionLost exactly once");
        } else {
            assert!(!net.client(0).session.is_ended(), "the owner took the session back");
            assert_eq!(net.raw_session(thief), None, "the thief's link was superseded in turn");
            assert!(exchange(&mut net, 0, 3, secs(1)));
        }
    }
}

/// R5 through the endpoint (regression): a resume ClientHello from a dial the client gave up
/// on (stalled in the network past the client's handshake deadline, not the endpoint's)
/// arrives after the client resumed on a newer link. It presents the key the client held
/// before that resume, still valid as the session's previous key, so it is accepted and
/// supersedes the live link. The endpoint issues the current key again rather than a new
/// one: the client, holding the current key, resumes once more and the session survives
/// (a new key there used to leave the client REJECTED).
#[test]
fn r5_stale_resume_hello_after_a_newer_resume() {
    let mut cfg = NetConfig::small(1);
    cfg.client.conduit.handshake_timeout = secs(2);
    cfg.endpoint.handshake_timeout = secs(10);
    let mut net = Net::connected(cfg);
    assert!(exchange(&mut net, 0, 3, secs(1)));
    let k1 = net.client(0).session.conduit().resume_key();
    assert!(net.kill(0));
    // The next dial's ClientHello (presenting k1) is stuck in the network.
    assert!(net.run_until(secs(10), |n| n.client(0).link().is_some()));
    net.stall(0, Writer::Client, Instant::FAR_FUTURE);
    // The client gives up on it and resumes on a newer link: issued k2.
    assert!(net.run_until(secs(30), |n| n.client(0).counters.resumed == 1));
    let k2 = net.client(0).session.conduit().resume_key();
    assert_ne!(k1, k2);
    // The stale hello arrives now.
    net.heal_links();
    assert!(net.run_until(secs(30), |n| n.client(0).counters.resumed >= 2 || n.client(0).session.is_ended()));
    assert!(!net.client(0).session.is_ended(), "the session survives: {:?}", net.client(0).session.conduit().ended());
    assert_eq!(net.endpoint().stats().resumes_routed, 3, "the stale hello was routed, then the client resumed");
    assert!(exchange(&mut net, 0, 3, secs(2)));
}
