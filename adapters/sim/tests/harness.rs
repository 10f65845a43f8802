//! The simulated runtime itself: time jumps to the next timer, a hang is detected, a
//! cancelled task is dropped, links deliver what was written and fail as planned.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use sotto_driver::Runtime;
use sotto_sim::{Faults, Net, Sim, SimOptions, Stuck};

fn sim(seed: u64) -> Sim {
    let mut o = SimOptions::new(seed);
    o.max_poll_time = Duration::ZERO;
    Sim::new(o)
}

#[test]
fn the_clock_jumps_to_the_next_timer_when_nothing_is_ready() {
    let sim = sim(1);
    let rt = sim.runtime();
    let start = rt.now();
    let waited = sim
        .run(async {
            rt.sleep(Duration::from_secs(60)).await;
            rt.now() - start
        })
        .expect("the sleep ends");
    assert_eq!(waited, Duration::from_secs(60));
    assert!(sim.polls() < 10, "{} polls for one sleep", sim.polls());
}

#[test]
fn nothing_runnable_and_no_timer_is_a_hang() {
    let sim = sim(2);
    let r = sim.run(poll_fn(|_| Poll::<()>::Pending));
    assert!(matches!(r, Err(Stuck::Hang { .. })), "{r:?}");
}

#[test]
fn a_task_whose_guard_drops_is_cancelled() {
    let sim = sim(3);
    let rt = sim.runtime();
    let dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Flag(Arc::clone(&dropped));
    let guard = rt.spawn(Box::pin(async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    }));
    sim.run(async {
        rt.sleep(Duration::from_millis(1)).await;
        drop(guard);
    })
    .expect("runs");
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(sim.tasks(), 0);
}

#[test]
fn a_link_delivers_every_byte_in_order_through_short_io() {
    let sim = sim(4);
    let rt = sim.runtime();
    let mut f = Faults::none();
    f.short_io = 900;
    f.spurious = 200;
    f.stall = 50;
    f.max_stall = Duration::from_millis(5);
    f.max_buffer = 7;
    let net = Net::new(&rt, 4, f);
    let (mut a, mut b) = net.pair();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let sent = data.clone();
    let writer = rt.spawn_app(async move {
        a.write_all(&sent).await.expect("write");
        a.close().await.expect("close");
    });
    let got = sim
        .run(async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            writer.await;
            got
        })
        .expect("runs");
    assert_eq!(got, data);
}

/// Write 64-byte chunks until a write fails (`None` if 10 000 bytes went through).
/// Each write is followed by a 1 µs pause, so the two sides' writes interleave.
async fn write_until_error(rt: &sotto_sim::SimRuntime, s: &mut sotto_sim::SimStream) -> Option<usize> {
    let mut written = 0;
    while written < 10_000 {
        match s.write(&[1; 64]).await {
            Ok(0) => panic!("a write returned Ok(0)"),
            Ok(n) => written += n,
            Err(_) => return Some(written),
        }
        rt.sleep(Duration::from_micros(1)).await;
    }
    None
}

#[test]
fn a_killed_link_fails_both_ways_and_no_write_returns_zero() {
    for seed in 0..50 {
        let sim = sim(seed);
        let rt = sim.runtime();
        let mut f = Faults::none();
        f.faulty_links = 1;
        f.link_fault = 1000;
        f.half_open = 0;
        f.fault_within = 500;
        f.short_io = 500;
        let net = Net::new(&rt, seed, f);
        let (mut a, mut b) = net.pair();
        let rt2 = rt.clone();
        let other = rt.spawn_app(async move {
            let r = write_until_error(&rt2, &mut b).await;
            drop(b);
            r
        });
        let (mine, theirs) = sim.run(async { (write_until_error(&rt, &mut a).await, other.await) }).expect("runs");
        assert!(mine.is_some() && theirs.is_some(), "seed {seed}: a side wrote on: {mine:?} {theirs:?}");
        assert!(mine.min(theirs).is_some_and(|n| n <= 500), "seed {seed}: the kill came late: {mine:?} {theirs:?}");
    }
}

#[test]
fn a_half_open_link_swallows_writes_and_never_ends_reads() {
    let sim = sim(5);
    let rt = sim.runtime();
    let mut f = Faults::none();
    f.faulty_links = 1;
    f.link_fault = 1000;
    f.half_open = 1000;
    f.fault_within = 10;
    let net = Net::new(&rt, 5, f);
    let (mut a, mut b) = net.pair();
    let r = sim.run(async move {
        // Whichever direction carries the fault, it strikes within 10 bytes.
        b.write_all(&[3; 20]).await.expect("writes succeed");
        for _ in 0..100 {
            a.write_all(&[2; 100]).await.expect("writes succeed");
        }
        drop(a);
        let mut buf = [0u8; 64];
        let mut got = 0;
        loop {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    });
    assert!(matches!(r, Err(Stuck::Hang { .. })), "the read ended: {r:?}");
}
