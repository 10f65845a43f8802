//! Support for the adapters' real-socket tests: a chaos proxy on plain threads, stream
//! wrappers that misbehave (one byte per call, writes returning 0), and a checked workload.
//! The tests themselves are in `tests/`.
#![forbid(unsafe_code)]

pub mod key_tap;
pub mod proxy;
pub mod scale;
pub mod sessions;
pub mod streams;
pub mod workload;
