//! Fuzz target `state_import`: see `sotto_fuzz::state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::state::run(data));
