//! Fuzz target `session_pair`: see `sotto_fuzz::session_pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: sotto_fuzz::session_pair::SpInput| sotto_fuzz::session_pair::run(&input));
