//! Handshake scenarios against the acceptor endpoint (shared/SCENARIOS.md section 1: H2, H7,
//! H9, H12) and the lost first ServerHello, on the session/endpoint harness.

use sotto::endpoint::{EndpointConfig, LinkRefusal};
use sotto::session::ROOT;
use sotto::wire::{ClientHello, ResumeKey, ServerHello, LEN_PREFIX};
use sotto::{Duration, SessionEnd};
use sotto_tests::net::{Net, NetConfig, Who, Writer};
use sotto_tests::pipe::EndKind;
use sotto_tests::{ms, secs, wire_util};

fn ready(n: &Net, i: usize) -> bool {
    n.client(i).ready() && n.app(Who::Server(i)).is_some_and(|a| a.ready)
}

/// Root traffic both ways on client `i`'s session, then wait until it is all delivered.
fn exchange(net: &mut Net, i: usize, n: usize, limit: Duration) -> bool {
    assert_eq!(net.send(Who::Client(i), ROOT, n), n);
    assert_eq!(net.send(Who::Server(i), ROOT, n), n);
    net.run_until(limit, |x| x.pair_quiet(i))
}

#[test]
fn h2_bad_client_hello_magic() {
    let mut cfg = NetConfig::small(1);
    cfg.endpoint.failure_budget = 3;
    let mut net = Net::connected(cfg);
    let before = net.endpoint().stats();
    for attempt in 0..3 {
        let raw = net.open_raw(77, false).expect("pending");
        let mut hello = wire_util::client_hello(None, None, true);
        hello[0] = b'X';
        net.raw_send(raw, &hello);
        assert!(net.run_until(secs(1), |n| n.raw_eof(raw)), "attempt {attempt}: the link is closed");
        assert_eq!(net.raw_received(raw), b"", "closed without a reply, no key issued");
        net.raw_close(raw);
    }
    let after = net.endpoint().stats();
    assert_eq!(after.bad_hellos - before.bad_hellos, 3);
    assert_eq!(after.sessions_created, before.sessions_created, "no session state created");
    assert_eq!(after.sessions_live, before.sessions_live);
    // It counts toward the failed-handshake rate: the source is now refused unread.
    assert_eq!(net.open_raw(77, false), Err(LinkRefusal::RateLimited));
    assert!(net.open_raw(78, true).is_ok(), "other sources unaffected");
    assert!(exchange(&mut net, 0, 5, secs(1)), "the established session is unaffected");
}

#[test]
fn h7_silent_client_dropped_at_handshake_timeout() {
    let mut cfg = NetConfig::small(0);
    cfg.endpoint.max_pending_handshakes = 1;
    let mut net = Net::new(cfg);
    let t0 = net.now();
    let raw = net.open_raw(5, false).expect("pending");
    assert_eq!(net.open_raw(6, true), Err(LinkRefusal::TooManyPendingHandshakes), "the one slot is taken");
    let timeout = cfg.endpoint.handshake_timeout;
    assert!(!net.run_until(timeout.saturating_sub(ms(1)), |n| n.raw_eof(raw)), "not dropped early");
    assert!(net.run_until(secs(1), |n| n.raw_eof(raw)));
    let closed_at = net.now().saturating_duration_since(t0);
    assert_eq!(closed_at, timeout.saturating_add(cfg.latency), "dropped at handshake_timeout (plus the EOF's latency)");
    assert_eq!(net.raw_received(raw), b"");
    assert_eq!(net.server_counters.handshakes_expired, 1);
    assert_eq!(net.endpoint().stats().handshakes_expired, 1);
    assert_eq!(net.endpoint().stats().pending_links, 0, "the slot is freed");
    net.raw_close(raw);
    net.open_raw(6, true).expect("the freed slot takes a new link");
}

/// H9: 1000 connections that never finish. At most `max_pending_handshakes` are held, the rest
/// are refused before anything is read, memory stays flat (everything is sized up front: the
/// pending table never grows), and established sessions keep being served throughout.
#[test]
fn h9_pending_handshake_flood() {
    let mut cfg = NetConfig::small(2);
    cfg.endpoint.max_pending_handshakes = 8;
    cfg.endpoint.handshake_timeout = secs(2);
    let mut net = Net::connected(cfg);
    let mut held = 0;
    let mut refused = 0;
    for k in 0..1000u64 {
        // Distinct sources: the refusals are the pending cap's, not the per-source limiter's.
        match net.open_raw(1_000_000 + k, true) {
            Ok(_) => held += 1,
            Err(e) => {
                assert_eq!(e, LinkRefusal::TooManyPendingHandshakes);
                refused += 1;
            }
        }
        let pending = net.endpoint().stats().pending_links;
        assert!(pending <= 8, "{pending} pending at once");
        if k % 50 == 0 {
            // Established sessions are served while the flood goes on.
            for i in 0..2 {
                assert!(exchange(&mut net, i, 3, ms(50)), "client {i} served during the flood (k = {k})");
            }
        }
        net.run_for(ms(5));
    }
    assert_eq!(held + refused, 1000);
    assert!(refused > 0 && held >= 8, "held {held}, refused {refused}");
    let s = net.endpoint().stats();
    assert_eq!(s.links_refused, refused);
    assert_eq!(s.sessions_live, 2, "no session state for the flood");
    assert!(net.run_until(secs(3), |n| n.endpoint().stats().pending_links == 0), "every held one expired");
    assert_eq!(net.server_counters.handshakes_expired, held);
    assert!(exchange(&mut net, 0, 5, secs(1)));
    assert!(exchange(&mut net, 1, 5, secs(1)));
}

/// H12: the endpoint restarted (every key forgotten). The resume gets REJECTED; the client's
/// session ends with `SessionEnd::Rejected`, reported exactly once, and it stops dialing. The
/// application then starts a fresh session, which works and carries nothing of the old one.
#[test]
fn h12_unknown_key_after_endpoint_restart() {
    let mut net = Net::connected(NetConfig::small(1));
    let c = net.open(0).expect("open");
    assert!(net.run_until(secs(1), |n| n.app(Who::Client(0)).is_some_and(|a| a.is_open(c))));
    assert!(exchange(&mut net, 0, 4, secs(1)));
    // Data queued while the old session still lives: it must never reach the new session.
    net.send(Who::Client(0), c, 3);
    net.restart_endpoint();
    assert!(net.run_until(secs(30), |n| n.client(0).session.is_ended()));
    assert_eq!(net.client(0).session.conduit().ended(), Some(SessionEnd::Rejected));
    let attempts = net.client(0).dialer.attempts;
    net.run_for(secs(60));
    assert_eq!(net.client(0).counters.ended, 1, "SessionLost exactly once");
    assert_eq!(net.client(0).app.counters.ended, 1);
    assert_eq!(net.client(0).dialer.attempts, attempts, "no reconnecting on its own");
    assert_eq!(net.server_counters.rejects_written, 1);
    // A fresh session works.
    net.restart_client(0);
    assert!(net.run_until(secs(5), |n| ready(n, 0)));
    assert!(exchange(&mut net, 0, 5, secs(1)));
    let s = net.app(Who::Server(0)).expect("live");
    assert_eq!(s.conn(ROOT).map(|r| r.received), Some(5), "only the new session's payloads");
    assert_eq!(s.counters.opens_in, 0, "nothing of the old replay buffer");
    assert_eq!(net.endpoint().stats().sessions_created, 1);
}

/// The first ServerHello is lost with its link. The client, holding no key, retries with a
/// fresh ClientHello; the endpoint gives it a new session, which works. The orphan (whose
/// ServerHello never arrived) waits detached and is freed after `resume_window`.
#[test]
fn lost_first_server_hello_retry_gets_a_working_session() {
    let mut cfg = NetConfig::small(1);
    cfg.dial.connect_latency = ms(1);
    let mut net = Net::new(cfg);
    // The dial connects at 1 ms; the ClientHello reaches the endpoint 1 ms later. Cut what the
    // endpoint writes on that first link at the first byte of its first frame (the ServerHello):
    // both ends see a reset.
    assert!(net.run_until(secs(1), |n| n.client(0).link().is_some()));
    net.cut_after_frames(0, Writer::Server, 0, 0, EndKind::Reset);
    assert!(net.run_until(secs(10), |n| ready(n, 0)));
    assert_eq!(net.client(0).counters.attached, 1, "attached once, on the retry");
    assert_eq!(net.client(0).counters.resumed, 0, "the retry is a fresh session");
    let st = net.endpoint().stats();
    assert_eq!((st.sessions_created, st.sessions_live), (2, 2), "the orphan and the working session");
    assert!(exchange(&mut net, 0, 10, secs(1)));
    let c = net.open(0).expect("open");
    assert!(net.run_until(secs(1), |n| n.app(Who::Server(0)).is_some_and(|a| a.is_open(c))));
    // The orphan expires after resume_window; the working session is untouched.
    let window = cfg.endpoint.session.conduit.recovery_timeout;
    assert!(net.run_until(window.saturating_add(secs(1)), |n| n.endpoint().stats().sessions_live == 1));
    assert_eq!(net.server_counters.freed, 1);
    assert!(exchange(&mut net, 0, 10, secs(1)));
    assert!(!net.client(0).session.is_ended());
}

/// A REJECTED reply is the fixed 25-byte ServerHello, never larger than the ClientHello.
#[test]
fn rejected_reply_bytes_are_fixed() {
    let mut net = Net::new(NetConfig::small(0));
    let raw = net.open_raw(9, false).expect("pending");
    let hello = ClientHello { resume_key: Some(ResumeKey([7; 16])), last_received: Some(3), ext: true };
    net.raw_send(raw, &hello.encode());
    assert!(net.run_until(secs(1), |n| n.raw_eof(raw)));
    let got = net.raw_received(raw);
    assert_eq!(&got[LEN_PREFIX..], &ServerHello::rejected().encode());
    assert_eq!(got.len(), LEN_PREFIX + hello.encode().len());
    let _ = EndpointConfig::default();
}
