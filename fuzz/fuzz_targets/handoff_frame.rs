//! Fuzz target `handoff_frame`: see `sotto_fuzz::handoff`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::handoff::run(data));
