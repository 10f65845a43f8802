//! Fuzz target `pair`: see `sotto_fuzz::pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: sotto_fuzz::pair::PairInput| sotto_fuzz::pair::run(&input));
