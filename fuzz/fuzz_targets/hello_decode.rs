//! Fuzz target `hello_decode`: see `sotto_fuzz::codecs::hello_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::codecs::hello_decode(data));
