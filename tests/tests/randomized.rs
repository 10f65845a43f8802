//! Randomized runs over many seeds (see `sotto_tests::chaos`): faults in both directions,
//! both sides sending, invariants after every input, exactly-once in-order delivery of
//! everything once faults stop. `SOTTO_SEEDS=N` runs more seeds, `SOTTO_SEED=x` exactly one.

use sotto_tests::chaos::Chaos;
use sotto_tests::seeds;

const REPRO: &str = "cargo test -p sotto-tests --test randomized -- --nocapture";
const DEFAULT_SEEDS: u64 = 2000;

fn run_half(half: u64) {
    if let Some(seed) = seeds::single_seed() {
        if half == 0 {
            let report = Chaos::new(seed, REPRO).run();
            eprintln!("{report:?}");
        }
        return;
    }
    let n = seeds::seed_count(DEFAULT_SEEDS);
    let start = std::time::Instant::now();
    let ran = seeds::run_each((0..n).filter(|s| s % 2 == half), REPRO, |seed| {
        Chaos::new(seed, REPRO).run();
    });
    eprintln!("randomized half {half}: {ran} seeds in {:?}", start.elapsed());
}

#[test]
fn randomized_seeds_even() {
    run_half(0);
}

#[test]
fn randomized_seeds_odd() {
    run_half(1);
}
