//! Allocation follows live sessions, never work (DESIGN.md, contract 4): a counting global
//! allocator (this file only) watches long randomized runs of several initiator sessions
//! against one endpoint, with connections opened, accepted, rejected and closed by both sides
//! across hundreds of link deaths and resumes, then sessions abandoned and restarted
//! (endpoint slots evicted, freed and reused, `Session::reset`). The endpoint allocates
//! nothing up front: its tables grow to the most sessions and links live at once, and an
//! acceptor session's buffers are allocated when it is created (`Hosted` keeps freed ones
//! for reuse). So a run allocates at most what its high-water mark of sessions needs, and
//! once that is reached (a warm-up), the measured sections must allocate nothing at all.
//! Replay rings grow as items need room and are grown to their caps before counting
//! (`Net::reserve_buffers`; see no_alloc.rs for why that is the steady state the contract
//! speaks of).

use sotto_proto::session::ROOT;
use sotto_tests::counting_alloc::{allocations, Counting};
use sotto_tests::net::chaos::{random_setup, NetChaos};
use sotto_tests::net::{Net, Who};
use sotto_tests::secs;

#[global_allocator]
static GLOBAL: Counting = Counting;

const REPRO: &str = "cargo test -p sotto-tests --test no_alloc_sessions";

/// One test: the counter is global, so the measured sections must not run beside anything else.
#[test]
fn no_allocation_after_construction() {
    sessions_and_endpoint();
    pending_handshake_flood();
    unready_session_flood();
}

/// Allocations one acceptor session costs when it is created.
fn allocations_per_session(cfg: &sotto_tests::net::NetConfig) -> u64 {
    let before = allocations();
    let s = sotto_proto::session::Session::new(sotto_proto::Role::Acceptor, cfg.endpoint.session, b"server");
    let n = allocations() - before;
    drop(s);
    n
}

fn sessions_and_endpoint() {
    for seed in [21u64, 22] {
        let (mut cfg, mut plan) = random_setup(seed, REPRO);
        cfg.clients = 3;
        cfg.link_slots = 4 * 3 + 8;
        // Three live sessions and up to three detached ones (abandoned in the second phase):
        // past that the oldest detached one is evicted, so a slot is free for a fresh session.
        cfg.endpoint.max_sessions = 7;
        cfg.endpoint.max_detached_sessions = 3;
        cfg.endpoint.max_pending_handshakes = 4;
        plan.fault_phase = secs(240);
        plan.fault_gap_max = secs(1);
        let per_session = allocations_per_session(&cfg);
        let max_sessions = u64::from(cfg.endpoint.max_sessions);
        let start = allocations();
        let mut chaos = NetChaos::with(cfg, plan);
        chaos.net.reserve_buffers();
        let before = allocations();
        assert!(before > start, "the counter sees construction");
        let report = chaos.run();
        let during_run = allocations() - before;
        eprintln!("{report:?}");
        // Each session slot's session at most once (an evicted one keeps its number until
        // it is freed, so up to twice `max_sessions` numbers), plus each endpoint table
        // doubling to that size: nothing per message, per link or per resume.
        let bound = 2 * max_sessions * (per_session + 1) + 64;
        eprintln!("allocations during the run: {during_run} (bound {bound})");
        assert!(during_run <= bound, "allocations during the run (seed {seed}): {during_run} > {bound}: {report:?}");
        assert!(report.resumes >= 100, "too few resumes to mean much: {report:?}");
        assert!(report.opens >= 100 && report.closes >= 50, "too little connection churn: {report:?}");

        // Sessions abandoned and restarted: endpoint slots evicted, freed and reused; every
        // client session reset in place; connections opened and closed on each.
        let net: &mut Net = &mut chaos.net;
        let mut before = allocations();
        for round in 0..300 {
            if round == 100 {
                // Warmed up: from here on nothing may be allocated.
                before = allocations();
            }
            let i = round % 3;
            net.restart_client(i);
            if !net.run_until(secs(30), Net::all_ready) {
                net.fail("a fresh session did not come up");
            }
            if let Some(c) = net.open(i) {
                net.run_until(secs(5), Net::quiet);
                net.send(Who::Client(i), c, 3);
                net.send(Who::Server(i), c, 3);
                net.send(Who::Server(i), ROOT, 2);
                net.run_until(secs(5), Net::quiet);
                net.close(Who::Server(i), c);
            }
            net.kill((i + 1) % 3);
            net.run_until(secs(30), Net::quiet);
            for j in 0..3 {
                // A live session detached at the wrong moment may be the oldest detached one,
                // and evicted (the endpoint's limit at work): its client starts afresh.
                if net.client(j).session.is_ended() {
                    net.restart_client(j);
                }
            }
        }
        let during_restarts = allocations() - before;
        let ep = net.endpoint().stats();
        assert_eq!(during_restarts, 0, "allocations across session restarts (seed {seed}): {ep:?}");
        assert!(ep.evicted > 100, "slots were evicted and reused: {ep:?}");
    }
}

/// H9's "memory stays flat": a flood of 1000 connections that never send a byte, refused past
/// `max_pending_handshakes` or expired at `handshake_timeout`, while two sessions keep
/// exchanging data, allocates nothing.
fn pending_handshake_flood() {
    let mut cfg = sotto_tests::net::NetConfig::small(2);
    cfg.endpoint.max_pending_handshakes = 8;
    cfg.endpoint.handshake_timeout = secs(2);
    let mut net = Net::connected(cfg);
    net.reserve_buffers();
    let mut before = allocations();
    let mut refused = 0;
    for k in 0..2000u64 {
        if k == 1000 {
            // Warmed up (the pending table at its most): from here on nothing is allocated.
            before = allocations();
        }
        if net.open_raw(1_000_000 + k, true).is_err() {
            refused += 1;
        }
        if k % 20 == 0 {
            for i in 0..2 {
                net.send(Who::Client(i), ROOT, 2);
                net.send(Who::Server(i), ROOT, 2);
            }
        }
        net.run_for(sotto_tests::ms(5));
    }
    assert!(net.run_until(secs(5), |n| n.quiet() && n.endpoint().stats().pending_links == 0));
    assert_eq!(allocations() - before, 0, "allocations during the flood");
    assert!(refused > 0);
}

/// Sessions that never finish their session handshake (a fresh ClientHello, then silence),
/// created until every slot is taken and freed by the endpoint at their links' handshake
/// deadline, over and over beside two working sessions, allocate nothing.
fn unready_session_flood() {
    let mut cfg = sotto_tests::net::NetConfig::small(2);
    cfg.endpoint.handshake_timeout = secs(2);
    let mut net = Net::connected(cfg);
    net.reserve_buffers();
    let hello = sotto_tests::wire_util::client_hello(None, None, true);
    let mut prefixed = (hello.len() as u32).to_le_bytes().to_vec();
    prefixed.extend_from_slice(&hello);
    let mut before = allocations();
    for k in 0..600u64 {
        if k == 300 {
            // Warmed up (every session slot has had its session): nothing more is allocated.
            before = allocations();
        }
        if let Ok(raw) = net.open_raw(2_000_000 + k, true) {
            net.raw_write(raw, &prefixed);
        }
        if k % 20 == 0 {
            for i in 0..2 {
                net.send(Who::Client(i), ROOT, 2);
                net.send(Who::Server(i), ROOT, 2);
            }
        }
        net.run_for(sotto_tests::ms(100));
    }
    assert!(net.run_until(secs(5), |n| n.quiet() && n.endpoint().stats().sessions_live == 2));
    assert_eq!(allocations() - before, 0, "allocations during the flood");
    let st = net.endpoint().stats();
    assert!(st.session_handshakes_expired >= 100, "too few expiries to mean much: {st:?}");
    assert_eq!(st.sessions_ready, 2);
}
