//! Checks behind the cargo-fuzz targets of the sotto core. Each target in `fuzz_targets/` is
//! a one-line wrapper around a function here, so the same checks run under libFuzzer
//! (`cargo +nightly fuzz run <target>`) and, replaying the committed seeds, under a plain
//! `cargo test` (see `tests/seeds.rs`). Every check panics on failure; libFuzzer reports the
//! panic as a crash and saves the input.
#![forbid(unsafe_code)]

pub mod codecs;
pub mod endpoint;
pub mod handoff;
pub mod lending;
pub mod pair;
pub mod script;
pub mod session_pair;
pub mod session_single;
mod shared;
pub mod single;
pub mod state;
pub mod stream;

/// The target names, as listed by `cargo fuzz list` and used for `seeds/<target>/`.
pub const TARGETS: [&str; 14] = [
    "framing_chunks",
    "hello_decode",
    "frame_decode",
    "conduit_initiator",
    "conduit_acceptor",
    "pair",
    "session_message",
    "session_receive",
    "endpoint",
    "session_pair",
    "stream_helpers",
    "lending_batch",
    "state_import",
    "handoff_frame",
];

/// Run the check of target `name` on one input (what the fuzz target does). Unknown names
/// panic.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "framing_chunks" => codecs::framing_chunks(data),
        "hello_decode" => codecs::hello_decode(data),
        "frame_decode" => codecs::frame_decode(data),
        "conduit_initiator" => single::run(sotto_proto::Role::Initiator, data),
        "conduit_acceptor" => single::run(sotto_proto::Role::Acceptor, data),
        "pair" => pair::run_bytes(data),
        "session_message" => codecs::session_message(data),
        "session_receive" => session_single::run(data),
        "endpoint" => endpoint::run_bytes(data),
        "session_pair" => session_pair::run_bytes(data),
        "stream_helpers" => stream::run(data),
        "lending_batch" => lending::run(data),
        "state_import" => state::run(data),
        "handoff_frame" => handoff::run(data),
        other => panic!("unknown fuzz target {other}"),
    }
}
