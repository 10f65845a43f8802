//! Resource limits and DoS scenarios (shared/SCENARIOS.md section 7: L1 to L4) against the
//! acceptor endpoint, on the session/endpoint harness.

use sotto_proto::endpoint::LinkRefusal;
use sotto_proto::session::{CommandError, ROOT};
use sotto_proto::wire::{ClientHello, ResumeKey, HELLO_LEN, LEN_PREFIX, MAX_DATA_HEADER_LEN};
use sotto_proto::{Duration, Instant, SessionEnd};
use sotto_tests::net::{AppPolicy, Net, NetConfig, Who, Writer};
use sotto_tests::{ms, secs, SimRng};

fn exchange(net: &mut Net, i: usize, n: usize) -> bool {
    assert_eq!(net.send(Who::Client(i), ROOT, n), n);
    assert_eq!(net.send(Who::Server(i), ROOT, n), n);
    net.run_until(secs(2), |x| x.pair_quiet(i))
}

/// L1: the client stops reading while the endpoint must send data, acks and pongs. The
/// endpoint's output stays bounded (its replay ring plus coalesced control frames), its
/// application is backpressured, and once reading resumes everything arrives.
#[test]
fn l1_peer_stops_reading() {
    let mut cfg = NetConfig::small(1);
    let mut s = cfg.client;
    s.initial_credit = 1 << 20;
    cfg = cfg.with_session(s);
    let ring = s.conduit;
    let mut net = Net::connected(cfg);
    let c = net.open(0).expect("open");
    assert!(net.run_until(secs(1), Net::quiet));
    let t0 = net.now();
    net.stall(0, Writer::Server, Instant::FAR_FUTURE);
    let bound = ring.replay_bytes as usize + ring.replay_frames as usize * (MAX_DATA_HEADER_LEN + LEN_PREFIX) + 4096;
    let mut most = 0;
    // For 25 s (less than ping_interval + pong_timeout: keepalive has not given up yet) the
    // endpoint's application sends as fast as it may and the client keeps sending too.
    while net.now().saturating_duration_since(t0) < secs(25) {
        net.send(Who::Server(0), ROOT, 50);
        net.send(Who::Server(0), c, 50);
        net.send(Who::Client(0), c, 5);
        net.run_for(ms(100));
        most = most.max(net.in_flight(0, Writer::Server));
        assert!(most <= bound, "the endpoint's output grew to {most} bytes (bound {bound})");
    }
    let app = net.app(Who::Server(0)).expect("live");
    assert!(app.blocked, "data backpressures the application");
    let st = net.session(Who::Server(0)).expect("live").conduit().stats();
    let full = st.replay_frames == u64::from(ring.replay_frames)
        || st.replay_bytes + u64::from(cfg.payload_max) + 8 > u64::from(ring.replay_bytes);
    assert!(full, "the ring filled (to a cap): {st:?}");
    assert!(most > 0);
    net.heal_links();
    assert!(net.run_until(secs(60), |n| n.quiet() && n.app(Who::Server(0)).is_some_and(|a| !a.blocked)));
    assert!(!net.client(0).session.is_ended());
}

/// L2: many sessions opened and abandoned (30 000 by default, about a second; the
/// scenario's 100 000 with `SOTTO_L2_SESSIONS=100000`, about 7 s in debug). `max_detached_sessions`
/// evicts the oldest (its session ends with `Evicted`, SessionLost semantics), `resume_window`
/// ends the rest; live sessions never exceed `max_sessions` and detached ones
/// `max_detached_sessions` (checked after every input), and the endpoint allocates nothing on
/// the way (its slots are sized up front: see no_alloc_sessions.rs).
#[test]
fn l2_many_detached_sessions() {
    let n: u64 = std::env::var("SOTTO_L2_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let mut cfg = NetConfig::small(1);
    cfg.endpoint.max_sessions = 16;
    cfg.endpoint.max_detached_sessions = 8;
    cfg.endpoint.session.conduit.recovery_timeout = secs(120);
    cfg.client.conduit.replay_bytes = 4096;
    cfg.endpoint.session.conduit.replay_bytes = 4096;
    cfg.client.conduit.max_frame_len = 1024;
    cfg.endpoint.session.conduit.max_frame_len = 1024;
    let mut net = Net::connected(cfg);
    for _ in 1..n {
        net.restart_client(0);
        if !net.run_until(secs(5), |x| x.all_ready()) {
            net.fail("a fresh session did not come up");
        }
    }
    let s = net.endpoint().stats();
    assert_eq!(s.sessions_created, n);
    assert_eq!(s.evicted, n - 1 - 8, "all but the newest detached ones evicted");
    assert_eq!(s.sessions_live, 9, "8 detached + 1 attached");
    assert_eq!(net.server_counters.freed, n - 1 - 8);
    assert!(net.servers().iter().filter_map(|x| x.last_end).all(|e| e == SessionEnd::Evicted));
    assert!(exchange(&mut net, 0, 3));
    // resume_window ends the rest.
    net.run_for(secs(121));
    assert_eq!(net.endpoint().stats().sessions_live, 1);
    assert!(exchange(&mut net, 0, 3));
}

/// L3: a failed-resume flood from one source is rate-limited (refused unread past
/// `failure_budget`), every reply is the fixed REJECTED (never larger than the request), and
/// other sources and established sessions are unaffected. A lookup is one hash probe
/// sequence in the key index plus a constant-time compare: no work proportional to the number
/// of stored sessions.
#[test]
fn l3_failed_resume_flood() {
    let mut cfg = NetConfig::small(2);
    cfg.endpoint.failure_budget = 16;
    let mut net = Net::connected(cfg);
    let mut rng = SimRng::new(3);
    let (mut replies, mut refused) = (0u64, 0u64);
    for k in 0..1000 {
        match net.open_raw(7, false) {
            Ok(raw) => {
                let hello =
                    ClientHello { resume_key: Some(rng.key()), last_received: Some(k), ext: true, early: false }
                        .encode();
                net.raw_send(raw, &hello);
                assert!(net.run_until(secs(1), |x| x.raw_eof(raw)));
                assert!(net.raw_received(raw).len() <= LEN_PREFIX + hello.len(), "reply never larger than request");
                assert_eq!(net.raw_received(raw).len(), LEN_PREFIX + HELLO_LEN);
                net.raw_close(raw);
                replies += 1;
            }
            Err(e) => {
                assert_eq!(e, LinkRefusal::RateLimited);
                refused += 1;
            }
        }
        if k % 100 == 0 {
            assert!(exchange(&mut net, 0, 2) && exchange(&mut net, 1, 2));
        }
    }
    assert_eq!(replies, 16, "the budget, then refused unread");
    assert_eq!(refused, 1000 - 16);
    // Another source is served; after the failure period the source is served again.
    let other = net.open_raw(8, true).expect("other sources unaffected");
    net.raw_send(
        other,
        &ClientHello { resume_key: Some(ResumeKey([1; 16])), last_received: None, ext: true, early: false }.encode(),
    );
    net.run_for(cfg.endpoint.failure_period);
    assert!(net.open_raw(7, true).is_ok(), "the window rolls over");
}

/// L4: the per-session memory budget. A session's memory is its replay ring (unacked items),
/// its link decoder's reassembly buffer (one frame), its fixed tables, and what its
/// application holds unreleased per connection, which credit bounds by the initial window.
/// With every application reading slowly and every connection busy in both directions, the
/// sum stays within `replay_bytes + max_frame_len + (connections + 1) * initial_credit`
/// at every step (sending past it backpressures: `NoCredit` or `WouldBlock`); `max_memory`
/// caps the connections so that this stays within the configured budget.
#[test]
fn l4_per_session_memory_budget() {
    let mut cfg = NetConfig::small(1);
    let mut s = cfg.client;
    s.initial_credit = 2048;
    s.conduit.replay_bytes = 16 * 1024;
    // The budget, not `max_connections`, limits the connections: room for six.
    s.max_connections = 256;
    s.max_memory = Some(s.memory_for(6) + 100);
    assert_eq!(s.connection_cap(), Some(6));
    let budget = s.memory_bound();
    assert_eq!(budget, u64::from(s.conduit.replay_bytes) + u64::from(s.conduit.max_frame_len) + 7 * 2048);
    cfg = cfg.with_session(s);
    let mut net = Net::connected(cfg);
    let slow = AppPolicy { accept_per_mille: 1000, release_per_mille: 20 };
    net.client_mut(0).app.policy = slow;
    let mut conns = vec![ROOT];
    for _ in 0..3 {
        conns.push(net.open(0).expect("open"));
        conns.push(net.open_from(Who::Server(0)).expect("open"));
    }
    assert!(net.run_until(secs(1), Net::quiet));
    // A seventh is over the budget: refused locally.
    let r = net.act(Who::Client(0), |s, _, _| s.open(b"")).expect("live");
    assert_eq!(r, Err(CommandError::TooManyConnections));
    let used = |net: &Net, who: Who| -> u64 {
        let ring = net.session(who).map_or(0, |x| x.conduit().stats().replay_bytes);
        let held: u64 = net.app(who).map_or(0, |a| a.conns().iter().map(|c| c.held).sum());
        ring + u64::from(s.conduit.max_frame_len) + held
    };
    let mut most = 0;
    let mut refusals = 0;
    for step in 0..3000 {
        for &c in &conns {
            for who in [Who::Client(0), Who::Server(0)] {
                if net.send(who, c, 2) < 2 {
                    refusals += 1;
                }
            }
        }
        net.run_for(ms(3));
        if step % 7 == 0 {
            net.service(Who::Server(0), false);
            net.service(Who::Client(0), false);
        }
        for who in [Who::Client(0), Who::Server(0)] {
            let u = used(&net, who);
            most = most.max(u);
            assert!(u <= budget, "{who:?} uses {u} bytes, budget {budget}");
        }
    }
    assert!(refusals > 0, "backpressure happened");
    assert!(most > budget / 4, "the run came near the budget ({most} of {budget})");
    net.service_all();
    assert!(net.run_until(secs(10), |n| {
        n.quiet() && n.app(Who::Client(0)).is_some_and(|a| a.conns().iter().all(|c| c.held == 0))
    }));
    let _ = Duration::ZERO;
}
