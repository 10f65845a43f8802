//! Fuzz target `framing_chunks`: see `sotto_fuzz::codecs::framing_chunks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::codecs::framing_chunks(data));
