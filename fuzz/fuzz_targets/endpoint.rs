//! Fuzz target `endpoint`: see `sotto_fuzz::endpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: sotto_fuzz::endpoint::EpInput| sotto_fuzz::endpoint::run(&input));
