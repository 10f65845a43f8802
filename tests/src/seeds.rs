//! Seeds for randomized runs: how many (`SOTTO_SEEDS=N`), or exactly one (`SOTTO_SEED=x`),
//! and a runner that prints the failing seed and the command that reproduces it.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Environment variable: run exactly this seed (decimal or 0x-hex).
pub const SEED_VAR: &str = "SOTTO_SEED";
/// Environment variable: how many seeds to run.
pub const SEEDS_VAR: &str = "SOTTO_SEEDS";

fn parse(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The single seed asked for with `SOTTO_SEED`, if any.
#[must_use]
pub fn single_seed() -> Option<u64> {
    std::env::var(SEED_VAR).ok().as_deref().and_then(parse)
}

/// The seed count: `SOTTO_SEEDS` if set, else `default`.
#[must_use]
pub fn seed_count(default: u64) -> u64 {
    std::env::var(SEEDS_VAR).ok().as_deref().and_then(parse).unwrap_or(default)
}

/// Run `f` for each seed; on a panic print the seed and `SOTTO_SEED=<seed> <command>` (the
/// command that reruns it), then propagate the panic.
pub fn run_each(seeds: impl IntoIterator<Item = u64>, command: &str, mut f: impl FnMut(u64)) -> u64 {
    let mut ran = 0;
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(seed))) {
            eprintln!("\n*** randomized run failed for seed {seed}\n*** reproduce with: {SEED_VAR}={seed} {command}\n");
            resume_unwind(panic);
        }
        ran += 1;
    }
    ran
}
