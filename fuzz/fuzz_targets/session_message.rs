//! Fuzz target `session_message`: see `sotto_fuzz::codecs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::codecs::session_message(data));
