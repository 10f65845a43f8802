//! Fuzz target `frame_decode`: see `sotto_fuzz::codecs::frame_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::codecs::frame_decode(data));
