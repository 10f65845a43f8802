//! Handshake scenarios against the acceptor endpoint (shared/SCENARIOS.md section 1: H2, H7,
//! H9, H12), the lost first ServerHello, and new sessions that never finish their session
//! handshake, on the session/endpoint harness.

use sotto_proto::endpoint::{EndpointConfig, LinkRefusal};
use sotto_proto::session::message::HelloBody;
use sotto_proto::session::{Message, Parity, READY_ON_HELLO_VERSION, ROOT};
use sotto_proto::wire::{ClientHello, ResumeKey, ServerHello, LEN_PREFIX};
use sotto_proto::{Duration, Instant, SessionEnd};
use sotto_tests::net::{forge, Net, NetConfig, Who, Writer};
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

/// One client (`early_hello` as given) whose first ServerHello is lost with its link: the
/// dial connects at 1 ms and the ClientHello reaches the endpoint 1 ms later; what the
/// endpoint writes on that link is cut at the first byte of its first frame (the
/// ServerHello), both ends see a reset, and the client, holding no key, retries fresh until
/// ready. Returns the net, its configuration and the start time.
fn first_server_hello_lost(early_hello: bool) -> (Net, NetConfig, Instant) {
    let mut cfg = NetConfig::small(1);
    cfg.client.early_hello = early_hello;
    cfg.dial.connect_latency = ms(1);
    let mut net = Net::new(cfg);
    let t0 = net.now();
    assert!(net.run_until(secs(1), |n| n.client(0).link().is_some()));
    net.cut_after_frames(0, Writer::Server, 0, 0, EndKind::Reset);
    assert!(net.run_until(secs(10), |n| ready(n, 0)));
    (net, cfg, t0)
}

/// The first ServerHello is lost with its link. The client, holding no key, retries with a
/// fresh ClientHello; the endpoint gives it a new session, which works. The orphan (whose
/// ServerHello never arrived) never finishes its session handshake: it is never announced and
/// the endpoint frees it at its first link's handshake deadline (well before
/// `resume_window`).
///
/// Without an early Hello: with one, the orphan received a frame (the early Hello) and is
/// held longer (`lost_first_server_hello_after_an_early_hello_holds_the_orphan_for_its_resume_window`).
#[test]
fn lost_first_server_hello_retry_gets_a_working_session() {
    let (mut net, cfg, t0) = first_server_hello_lost(false);
    assert_eq!(net.client(0).counters.attached, 1, "attached once, on the retry");
    assert_eq!(net.client(0).counters.resumed, 0, "the retry is a fresh session");
    let st = net.endpoint().stats();
    assert_eq!((st.sessions_created, st.sessions_live), (2, 2), "the orphan and the working session");
    assert!(exchange(&mut net, 0, 10, secs(1)));
    let c = net.open(0).expect("open");
    assert!(net.run_until(secs(1), |n| n.app(Who::Server(0)).is_some_and(|a| a.is_open(c))));
    assert_eq!(net.server_counters.sessions_ready, 1, "only the working session is announced");
    // The orphan expires at its link's handshake deadline; the working session is untouched.
    let first_link = ms(1);
    let deadline = first_link.saturating_add(cfg.endpoint.handshake_timeout);
    assert!(net.run_until(secs(30), |n| n.endpoint().stats().sessions_live == 1));
    assert_eq!(net.now().saturating_duration_since(t0), deadline, "freed at the first link's deadline");
    assert!(deadline < cfg.endpoint.session.conduit.recovery_timeout);
    assert_eq!(net.server_counters.session_handshakes_expired, 1);
    assert_eq!(net.server_counters.freed, 0, "freed by the endpoint, not after an end");
    assert_eq!(net.endpoint().stats().session_handshakes_expired, 1);
    assert!(exchange(&mut net, 0, 10, secs(1)));
    assert!(!net.client(0).session.is_ended());
}

/// The same loss with an early Hello (the default): the orphan's session Hello arrived with
/// its ClientHello, before the ServerHello was lost. A version-4 acceptor is ready as it
/// answers the Hello, so the orphan is announced, like a session whose client vanished right
/// after connecting: the endpoint cannot tell it from a session whose initiator got the
/// ServerHello and HelloYourself (ready) and lost its link, so it holds it as a detached
/// session for its resume window, then ends it. The retry gets a working session at once.
#[test]
fn lost_first_server_hello_after_an_early_hello_holds_the_orphan_for_its_resume_window() {
    let (mut net, cfg, t0) = first_server_hello_lost(true);
    assert_eq!(net.client(0).session.conduit().stats().early_frames_sent, 1, "one early Hello, on the first link");
    assert_eq!(net.client(0).counters.attached, 1, "attached once, on the retry");
    assert_eq!(net.client(0).counters.resumed, 0, "the retry is a fresh session");
    let st = net.endpoint().stats();
    assert_eq!((st.sessions_created, st.sessions_live), (2, 2), "the orphan and the working session");
    assert!(exchange(&mut net, 0, 10, secs(1)));
    assert_eq!(net.server_counters.sessions_ready, 2, "both announced: the orphan answered its Hello");
    let handshake_deadline = ms(1).saturating_add(cfg.endpoint.handshake_timeout);
    assert!(!net.run_until(handshake_deadline.saturating_add(secs(1)), |n| n.endpoint().stats().sessions_live == 1));
    assert!(net.run_until(secs(600), |n| n.endpoint().stats().sessions_live == 1));
    let held = net.now().saturating_duration_since(t0);
    let window = cfg.endpoint.session.conduit.recovery_timeout;
    assert!(held >= window && held < window.saturating_add(secs(1)), "held for its resume window: {held:?}");
    assert_eq!(net.server_counters.session_handshakes_expired, 0, "ended as a ready session, not expired");
    assert!(exchange(&mut net, 0, 10, secs(1)));
    assert!(!net.client(0).session.is_ended());
}

/// A REJECTED reply is the fixed 25-byte ServerHello, never larger than the ClientHello.
#[test]
fn rejected_reply_bytes_are_fixed() {
    let mut net = Net::new(NetConfig::small(0));
    let raw = net.open_raw(9, false).expect("pending");
    let hello = ClientHello { resume_key: Some(ResumeKey([7; 16])), last_received: Some(3), ext: true, early: false };
    net.raw_send(raw, &hello.encode());
    assert!(net.run_until(secs(1), |n| n.raw_eof(raw)));
    let got = net.raw_received(raw);
    assert_eq!(&got[LEN_PREFIX..], &ServerHello::rejected().encode());
    assert_eq!(got.len(), LEN_PREFIX + hello.encode().len());
    let _ = EndpointConfig::default();
}

/// A raw link from `source` that sends a fresh ClientHello and, if `session_hello`, the
/// session Hello as the conduit's first item (then nothing more: no LetsGo). The Hello is
/// version 3: a version-4 acceptor is ready as it answers a version-4 Hello (there is no
/// LetsGo to stop short of), and waits for LetsGo from an older initiator.
fn unfinished_session(net: &mut Net, source: u64, session_hello: bool) -> sotto_tests::net::RawLink {
    let raw = net.open_raw(source, false).expect("pending");
    net.raw_send(raw, &wire_util::client_hello(None, None, true));
    if session_hello {
        let body = HelloBody {
            version: READY_ON_HELLO_VERSION - 1,
            parity: Parity::Odd,
            root_credit: 8192,
            max_connections: 16,
            metadata: b"",
        };
        let item = forge::encode(&Message::Hello(body));
        net.raw_send(raw, &wire_util::data(0, None, &item, true));
    }
    raw
}

/// A client that completes the conduit handshake (ClientHello, ServerHello) but never sends
/// the session Hello: its session is created, never announced, and ended and freed by the
/// endpoint at its link's handshake deadline, its link closed. Each such session is charged to
/// the source's failure budget, so a source doing it repeatedly is refused unread, like one
/// whose resumes fail; other sources are unaffected.
#[test]
fn silent_after_client_hello_session_freed_at_deadline_and_source_charged() {
    let mut cfg = NetConfig::small(1);
    cfg.endpoint.handshake_timeout = secs(2);
    cfg.endpoint.failure_budget = 3;
    cfg.endpoint.failure_period = secs(60);
    let mut net = Net::connected(cfg);
    let base = net.endpoint().stats();
    for attempt in 0..3u64 {
        let t0 = net.now();
        let raw = unfinished_session(&mut net, 77, false);
        assert!(net.run_until(ms(10), |n| n.raw_session(raw).is_some()), "attempt {attempt}: a session is created");
        net.run_for(ms(10));
        let got = net.raw_received(raw).len();
        assert_eq!(got, LEN_PREFIX + ServerHello::rejected().encode().len(), "the ServerHello, nothing else");
        assert_eq!(net.endpoint().stats().sessions_live, base.sessions_live + 1);
        let deadline = cfg.endpoint.handshake_timeout;
        let early = deadline.saturating_sub(net.now().saturating_duration_since(t0)).saturating_sub(ms(1));
        assert!(!net.run_until(early, |n| n.raw_eof(raw)), "not freed early");
        assert_eq!(net.endpoint().stats().sessions_live, base.sessions_live + 1);
        assert!(net.run_until(secs(1), |n| n.raw_eof(raw)), "attempt {attempt}: the link is closed");
        assert_eq!(net.now().saturating_duration_since(t0), deadline.saturating_add(cfg.latency));
        let st = net.endpoint().stats();
        assert_eq!(st.sessions_live, base.sessions_live, "the slot is freed");
        assert_eq!(st.session_handshakes_expired, attempt + 1);
        assert_eq!(net.server_counters.session_handshakes_expired, attempt + 1, "one event per session");
        net.raw_close(raw);
    }
    let st = net.endpoint().stats();
    assert_eq!(st.sessions_ready, base.sessions_ready, "none was announced");
    assert_eq!(st.sessions_created, base.sessions_created + 3);
    assert_eq!(net.open_raw(77, false), Err(LinkRefusal::RateLimited), "the source spent its budget");
    assert!(net.open_raw(78, true).is_ok(), "other sources unaffected");
    assert!(exchange(&mut net, 0, 5, secs(1)), "the established session is unaffected");
}

/// A client that stops in the middle of the session handshake (Hello sent, HelloYourself
/// received, no LetsGo) is treated the same: freed at its link's handshake deadline, never
/// announced, charged.
#[test]
fn stopped_mid_session_hello_session_freed_at_deadline() {
    let mut cfg = NetConfig::small(0);
    cfg.endpoint.handshake_timeout = secs(2);
    cfg.endpoint.failure_budget = 1;
    cfg.endpoint.failure_period = secs(60);
    let mut net = Net::new(cfg);
    let t0 = net.now();
    let raw = unfinished_session(&mut net, 5, true);
    assert!(net.run_until(ms(10), |n| n.raw_session(raw).is_some()));
    let (h, _) = net.raw_session(raw).expect("bound");
    assert!(net.run_until(ms(10), |n| n.endpoint().session(h).is_some_and(|s| s.conduit().items_received() == 1)));
    net.run_for(ms(10));
    assert!(
        net.raw_received(raw).len() > LEN_PREFIX + ServerHello::rejected().encode().len(),
        "the HelloYourself came back: the session handshake is half done"
    );
    assert!(!net.endpoint().session(h).expect("live").is_ready());
    assert!(net.run_until(secs(5), |n| n.raw_eof(raw)));
    assert_eq!(net.now().saturating_duration_since(t0), cfg.endpoint.handshake_timeout.saturating_add(cfg.latency));
    assert!(net.endpoint().session(h).is_none(), "freed: the handle is stale");
    let st = net.endpoint().stats();
    assert_eq!((st.session_handshakes_expired, st.sessions_ready, st.sessions_live), (1, 0, 0));
    assert_eq!(net.open_raw(5, false), Err(LinkRefusal::RateLimited), "charged to the source");
}

/// Normal clients: each new session is announced once (`SessionReady`) as its session
/// handshake finishes, is never expired however long it lives, and a resume announces
/// nothing new.
#[test]
fn normal_sessions_are_announced_once_and_never_expired() {
    let cfg = NetConfig::small(2);
    let mut net = Net::connected(cfg);
    assert_eq!(net.server_counters.sessions_ready, 2);
    assert!(net.server_slot(0).is_some_and(|s| s.announced) && net.server_slot(1).is_some_and(|s| s.announced));
    net.run_for(cfg.endpoint.handshake_timeout.saturating_add(secs(5)));
    assert!(net.kill(0), "client 0 loses its link and resumes");
    assert!(net.run_until(secs(10), |n| n.client(0).counters.resumed == 1 && n.all_ready()));
    net.run_for(cfg.endpoint.handshake_timeout.saturating_add(secs(5)));
    assert!(exchange(&mut net, 0, 5, secs(1)) && exchange(&mut net, 1, 5, secs(1)));
    let st = net.endpoint().stats();
    assert_eq!((st.sessions_created, st.sessions_ready, st.session_handshakes_expired), (2, 2, 0));
    assert_eq!(net.server_counters.sessions_ready, 2);
    assert_eq!(net.server_counters.session_handshakes_expired, 0);
}
