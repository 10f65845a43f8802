//! Fuzz target `lending_batch`: see `sotto_fuzz::lending`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::lending::run(data));
