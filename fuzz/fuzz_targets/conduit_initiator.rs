//! Fuzz target `conduit_initiator`: see `sotto_fuzz::single`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::single::run(sotto_proto::Role::Initiator, data));
