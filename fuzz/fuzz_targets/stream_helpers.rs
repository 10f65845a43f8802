//! Fuzz target `stream_helpers`: see `sotto_fuzz::stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::stream::run(data));
