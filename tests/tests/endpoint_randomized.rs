//! Randomized multi-connection runs of initiator sessions against one endpoint, over many
//! seeds (see `sotto_tests::net::chaos`): connections opened, accepted, rejected and closed
//! by both sides, payloads both ways with slow readers, links failing in every way; exactly-once
//! in-order delivery per connection, credit, bounded state and liveness once faults stop.
//! `SOTTO_SEEDS=N` runs more seeds, `SOTTO_SEED=x` exactly one.

use sotto_tests::net::chaos::NetChaos;
use sotto_tests::seeds;

const REPRO: &str = "cargo test -p sotto-tests --test endpoint_randomized -- --nocapture";
const DEFAULT_SEEDS: u64 = 300;

fn run_half(half: u64) {
    if let Some(seed) = seeds::single_seed() {
        if half == 0 {
            let report = NetChaos::new(seed, REPRO).run();
            eprintln!("{report:?}");
        }
        return;
    }
    let n = seeds::seed_count(DEFAULT_SEEDS);
    let start = std::time::Instant::now();
    let mut total = sotto_tests::net::chaos::NetReport::default();
    let ran = seeds::run_each((0..n).filter(|s| s % 2 == half), REPRO, |seed| {
        let r = NetChaos::new(seed, REPRO).run();
        total.faults += r.faults;
        total.resumes += r.resumes;
        total.opens += r.opens;
        total.closes += r.closes;
        total.payloads += r.payloads;
    });
    eprintln!("endpoint randomized half {half}: {ran} seeds in {:?}; totals {total:?}", start.elapsed());
}

#[test]
fn endpoint_randomized_seeds_even() {
    run_half(0);
}

#[test]
fn endpoint_randomized_seeds_odd() {
    run_half(1);
}
