//! Fuzz target `session_receive`: see `sotto_fuzz::session_single`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::session_single::run(data));
