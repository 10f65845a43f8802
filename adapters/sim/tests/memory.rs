//! Memory under simulation, measured with a live-bytes allocator on the simulation's
//! thread: a session's footprint does not grow with what it carries, and failed connects
//! give back everything they took.

use std::time::Duration;

use sotto_driver::{connect_session, serve_sessions, Config, ConnectError};
use sotto_sim::fixture::{config, connection, sessions};
use sotto_sim::live_alloc::{live, peak, reset_peak, Live};
use sotto_sim::workload::{check, message};
use sotto_sim::{Faults, Net, Sim, SimOptions};

#[global_allocator]
static GLOBAL: Live = Live;

/// Peak bytes above the start of one run carrying `n` messages of 500 B over a session whose
/// first links die, to a reader that pauses now and then.
fn peak_for(n: u32, seed: u64) -> isize {
    let start = live();
    reset_peak();
    {
        let sim = Sim::new(SimOptions::new(seed));
        let rt = sim.runtime();
        let mut f = Faults::none();
        f.faulty_links = 3;
        f.link_fault = 1000;
        f.fault_within = 200_000;
        let net = Net::new(&rt, seed, f);
        let r = sim.run(async {
            let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
            let (ca, cb) = connection(&a, &b).await?;
            let (mut tx, _ra) = ca.split();
            let (_tb, mut rb) = cb.split();
            let sender = rt.spawn_app(async move {
                for s in 0..n {
                    tx.send(message(0, s, 500)).await.map_err(|e| format!("send {s}: {e}"))?;
                }
                Ok::<_, String>(tx)
            });
            for s in 0..n {
                if s % 97 == 0 {
                    rt.sleep(Duration::from_millis(20)).await;
                }
                let m = rb.recv().await.map_err(|e| format!("recv {s}: {e}"))?;
                check(0, s, &m)?;
            }
            let mut tx = sender.await?;
            tx.close_with(&[]).await;
            drop((a, b));
            Ok::<_, String>(())
        });
        r.expect("runs").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        sim.run_to_quiescence().expect("winds down");
    }
    peak() - start
}

#[test]
fn a_sessions_memory_does_not_grow_with_what_it_carries() {
    for seed in 1..=3 {
        let small = peak_for(1_000, seed);
        let large = peak_for(10_000, seed);
        assert!(
            large <= small + small / 4 + (64 << 10),
            "seed {seed}: peak {small} B for 1000 messages, {large} B for 10000"
        );
    }
}

#[test]
fn failed_connects_give_back_everything_they_took() {
    let sim = Sim::new(SimOptions::new(9));
    let rt = sim.runtime();
    let mut f = Faults::none();
    f.dial_fail = 1000;
    let net = Net::new(&rt, 9, f);
    let mut cfg = Config::default();
    cfg.dial.connect_timeout = Duration::from_millis(300);
    let before = live();
    sim.run(async {
        let _acceptor = serve_sessions(rt.clone(), net.session_listener(), cfg).expect("serves");
        for _ in 0..3 {
            let attempts: Vec<_> = (0..10)
                .map(|_| {
                    let (rt, dial) = (rt.clone(), net.clone());
                    rt.clone().spawn_app(async move { connect_session(rt, move || dial.dial(), cfg).await.is_err() })
                })
                .collect();
            for a in attempts {
                assert!(a.await, "a connect with every dial failing succeeded");
            }
        }
    })
    .expect("runs");
    sim.run_to_quiescence().expect("winds down");
    drop(sim);
    let after = live();
    assert!(after - before <= 16 << 10, "{} B still held after 30 failed connects", after - before);
}

const ROUNDS: usize = 3;

/// The same with every connect refused by a full acceptor (`max_sessions` 1, taken).
#[test]
fn connects_refused_by_the_acceptor_give_back_everything_they_took() {
    let sim = Sim::new(SimOptions::new(10));
    let rt = sim.runtime();
    let net = Net::new(&rt, 10, Faults::none());
    let mut cfg = Config::default();
    cfg.dial.connect_timeout = Duration::from_millis(300);
    let mut full = cfg;
    full.acceptor.max_sessions = 1;
    let before = live();
    let refused = sim
        .run(async {
            let acceptor = serve_sessions(rt.clone(), net.session_listener(), full).expect("serves");
            let dial = net.clone();
            let first = connect_session(rt.clone(), move || dial.dial(), cfg).await.expect("the first connects");
            let held = acceptor.accept().await.expect("accepted");
            let mut refused = 0;
            for _ in 0..ROUNDS {
                let attempts: Vec<_> = (0..10)
                    .map(|_| {
                        let (rt, dial) = (rt.clone(), net.clone());
                        rt.clone().spawn_app(async move {
                            matches!(connect_session(rt, move || dial.dial(), cfg).await, Err(ConnectError::Full))
                        })
                    })
                    .collect();
                for a in attempts {
                    refused += usize::from(a.await);
                }
            }
            drop((first, held, acceptor));
            refused
        })
        .expect("runs");
    sim.run_to_quiescence().expect("winds down");
    drop(sim);
    let after = live();
    assert_eq!(refused, ROUNDS * 10, "connects to a full acceptor not refused");
    assert!(after - before <= 16 << 10, "{} B still held after 30 refused connects", after - before);
}
