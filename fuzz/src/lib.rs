//! Checks behind the cargo-fuzz targets of the sotto core. Each target in `fuzz_targets/` is
//! a one-line wrapper around a function here, so the same checks run under libFuzzer
//! (`cargo +nightly fuzz run <target>`) and, replaying the committed seeds, under a plain
//! `cargo test` (see `tests/seeds.rs`). Every check panics on failure; libFuzzer reports the
//! panic as a crash and saves the input.
#![forbid(unsafe_code)]

pub mod codecs;
pub mod pair;
pub mod script;
pub mod single;

/// The target names, as listed by `cargo fuzz list` and used for `seeds/<target>/`.
pub const TARGETS: [&str; 6] =
    ["framing_chunks", "hello_decode", "frame_decode", "conduit_initiator", "conduit_acceptor", "pair"];

/// Run the check of target `name` on one input (what the fuzz target does). Unknown names
/// panic.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "framing_chunks" => codecs::framing_chunks(data),
        "hello_decode" => codecs::hello_decode(data),
        "frame_decode" => codecs::frame_decode(data),
        "conduit_initiator" => single::run(sotto::Role::Initiator, data),
        "conduit_acceptor" => single::run(sotto::Role::Acceptor, data),
        "pair" => pair::run_bytes(data),
        other => panic!("unknown fuzz target {other}"),
    }
}
